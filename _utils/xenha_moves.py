"""
The journal of an evacuation, restore or failback (``<kind>-<host>.json`` in the master's
store): one entry per domU whose ``outcome`` moves only along :data:`MACHINE`. The runner's
mover changes an outcome through :func:`change` only, which refuses any other step: a bug
that would record, say, ``migrated`` for a domU never sent off shows up as an error naming
both outcomes instead of a journal that says something that did not happen.

Pure: no I/O.
"""

MIGRATING = "migrating"
COLD_MOVING = "cold-moving"
PENDING = "pending"  # an interrupted move found the domU still on its source: it goes again
ENDED = ("migrated", "cold-migrated", "stayed", "UNCERTAIN", "DOWN")
# a later run of the same journal (an evacuation re-run, a resume) may move an ended domU again
_AGAIN = (MIGRATING, "stayed")

MACHINE = {
    None: _AGAIN,
    PENDING: _AGAIN,
    MIGRATING: ("migrated", "stayed", "UNCERTAIN", COLD_MOVING, PENDING),
    COLD_MOVING: ("cold-migrated", "stayed", "DOWN", "UNCERTAIN", PENDING),
    **dict.fromkeys(ENDED, _AGAIN),
}


class MoveError(ValueError):
    """An outcome change the machine does not allow."""


def change(entry, fields):
    """Update the journal ``entry`` with ``fields``; an ``outcome`` among them must be one
    :data:`MACHINE` allows after the entry's own, else :class:`MoveError` naming both."""
    if "outcome" in fields:
        before, after = entry.get("outcome"), fields["outcome"]
        allowed = MACHINE.get(before, ())
        if after not in allowed:
            raise MoveError(
                f"{before or 'a new entry'} -> {after}: not a step of a move (after"
                f" {before or 'a new entry'}: {', '.join(allowed) or 'nothing'})"
            )
    entry.update(fields)
    return entry
