"""
Storage leases, the cluster's referee: pure file format and progress logic (no Salt, no clock).

Every VM host renews a lease for itself (``host-<id>.lease``) and for each domU it runs
(``domu-<name>.lease``) in a directory on the shared storage. A lease holds its owner, a counter
incremented on every renewal and the owner's boot id. Nobody ever compares timestamps across
hosts: an observer notes, on its OWN monotonic clock, when it last saw the counter (or boot id or
owner) change, and calls the lease expired once it has not changed for ``expiry`` seconds of that
clock. A renewer that cannot renew for ``self_fence_after`` seconds of its own clock destroys its
domUs; with ``self_fence_after + destroy_timeout < expiry`` (see :func:`check_timings`) those
domUs are gone before any observer may call their leases expired, so a survivor may take over.

The ``written`` field holds the writer's wall clock for humans reading the file; no decision uses
it, so a skewed clock can neither fake liveness nor fake death.
"""

import json
import os

import xenha_names
import xenha_pillarcheck
from salt.exceptions import CommandExecutionError

FORMAT = 1
KINDS = ("host", "domu")
# observation verdicts
ADVANCING = "advancing"  # the counter moved while we watched: the owner is alive
STALLED = "stalled"  # unchanged, but not yet for `expiry` seconds
EXPIRED = "expired"  # unchanged for at least `expiry` seconds of the observer's clock
RELEASED = "released"  # the owner gave it up cleanly (clean shutdown, migration handover)
MISSING = "missing"  # no lease file: proves nothing


class LeaseError(CommandExecutionError):
    """A lease file or a lease setting is malformed; the message names the file or setting."""


def lease_name(kind, name):
    """File name of the ``kind`` ('host' or 'domu') lease for ``name``, after validating it."""
    if kind not in KINDS:
        raise LeaseError(f"invalid lease kind {kind!r}: must be one of {', '.join(KINDS)}")
    xenha_names.check("host" if kind == "host" else "domain", name)
    return f"{kind}-{name}.lease"


def parse_lease_name(filename):
    """(kind, name) for a lease file name, or None for any other file (temp files, junk)."""
    for kind in KINDS:
        prefix = f"{kind}-"
        if filename.startswith(prefix) and filename.endswith(".lease"):
            return kind, filename[len(prefix) : -len(".lease")]
    return None


def encode(lease):
    """The bytes of a lease file."""
    return (json.dumps(lease, sort_keys=True) + "\n").encode()


def decode(data, source="lease"):
    """A lease dict from file bytes; LeaseError naming ``source`` if they are not a lease."""
    try:
        lease = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise LeaseError(f"{source}: not a lease file ({err})") from err
    if not isinstance(lease, dict) or lease.get("format") != FORMAT:
        raise LeaseError(f"{source}: not a format-{FORMAT} lease")
    counter = lease.get("counter")
    if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
        raise LeaseError(f"{source}: counter must be a non-negative integer, got {counter!r}")
    for key in ("owner", "boot_id"):
        if not isinstance(lease.get(key), str) or not lease[key]:
            raise LeaseError(f"{source}: {key} missing or not a string")
    return lease


def renewed(previous, owner, boot_id, written=None, released=False):
    """
    The next version of a lease: owned by ``owner``, counter one higher than ``previous`` (a dict
    or None). The counter keeps climbing across owners, so an observer always sees a change.
    """
    return {
        "format": FORMAT,
        "owner": owner,
        "counter": (previous["counter"] + 1) if previous else 1,
        "boot_id": boot_id,
        "released": bool(released),
        "written": written,
    }


def _signature(lease):
    return (lease["owner"], lease["boot_id"], lease["counter"], bool(lease.get("released")))


def observe(record, lease, now, expiry, observer_boot, *, fresh=None):
    """
    One observation of a lease at ``now`` (the observer's monotonic clock, seconds).

    record
        What this observer saw last time (returned by the previous call) or None.
    lease
        The lease as read now, or None when there is no file.
    observer_boot
        The observer's boot id: a record from another boot is meaningless (monotonic clocks
        restart at boot) and is discarded.
    fresh
        A change counts as ADVANCING only if the record was last looked at within ``fresh``
        seconds: a change since a look long ago says the owner renewed at some point since then,
        not that it is alive now (None: any record counts).

    Returns ``(record, verdict)``; verdict has ``state`` (one of ADVANCING, STALLED, EXPIRED,
    RELEASED, MISSING), ``unchanged_for`` (seconds), and the lease's owner/counter. Records only
    ever under-state ``unchanged_for``: ``changed`` is when this observer first saw the current
    signature, never before it was written.
    """
    if record and record.get("observer_boot") != observer_boot:
        record = None
    if lease is None:
        return None, {"state": MISSING, "unchanged_for": 0.0, "owner": None, "counter": None}
    sig = list(_signature(lease))
    state = None
    if record is None or record["signature"] != sig:
        last_look = record and record.get("seen", record["changed"])
        if record is not None and (fresh is None or now - last_look <= fresh):
            state = ADVANCING
        record = {"observer_boot": observer_boot, "signature": sig, "changed": now}
    record["seen"] = now
    unchanged = max(now - record["changed"], 0.0)
    if state is None:
        state = EXPIRED if unchanged >= expiry else STALLED
    if lease.get("released") and state != ADVANCING:
        state = RELEASED
    verdict = {
        "state": state,
        "unchanged_for": round(unchanged, 3),
        "owner": lease["owner"],
        "counter": lease["counter"],
    }
    return record, verdict


def merge_records(own, watched):
    """
    ``own`` observation records, each replaced by the ``watched`` one (the renewer's continuous
    watch of its peers) when that was looked at more recently: a fresher last look tells a
    recent renewal from an old one, and an earlier ``changed`` of the same signature is longer
    proof of silence (both are lower bounds, see :func:`observe`).
    """
    merged = dict(own)
    for key, theirs in (watched or {}).items():
        mine = merged.get(key)
        if mine is None or theirs.get("seen", 0) > mine.get("seen", mine.get("changed", 0)):
            merged[key] = dict(theirs)
    return merged


def may_take(lease, verdict, me, fenced=None, handover_from=None):
    """
    Whether host ``me`` may take the domU lease now: ``(allowed, reason)``.

    Allowed when there is no lease, it is released, already ours, owned by ``fenced`` (a host the
    master has fenced), owned by ``handover_from`` (the source of a confirmed migration), or
    provably expired on this observer's clock.
    """
    if lease is None:
        return True, "no lease yet"
    owner = lease["owner"]
    grounds = [
        (owner == me, "already ours"),
        (bool(lease.get("released")), f"released by {owner}"),
        (fenced is not None and owner == fenced, f"owner {owner} is fenced"),
        (handover_from is not None and owner == handover_from, f"handed over by {owner}"),
        (
            verdict["state"] == EXPIRED,
            f"lease of {owner} expired ({verdict['unchanged_for']} s unchanged)",
        ),
    ]
    for allowed, reason in grounds:
        if allowed:
            return True, reason
    return False, (
        f"held by {owner} ({verdict['state']}, unchanged for {verdict['unchanged_for']} s;"
        " it expires only after the owner stops renewing)"
    )


def self_fence_due(last_renewal_issued, now, self_fence_after):
    """
    True when the renewer must destroy its domUs: its last successful renewal was ISSUED (not
    completed) more than ``self_fence_after`` seconds ago on its own monotonic clock. Counting from
    the issue time is conservative: observers cannot have seen that write before it was issued.
    """
    return now - last_renewal_issued >= self_fence_after


DEFAULTS = {
    "dir": "/cluster/.xenha/leases",
    "renew_interval": 1.0,
    "expiry": 10.0,
    "self_fence_after": None,  # default: half of expiry
    "destroy_timeout": 3.0,
}


def settings(leases=None, **overrides):
    """
    Lease settings from pillar ``xenha:leases`` plus overrides, defaults filled in and checked.
    """
    conf = dict(DEFAULTS)
    conf.update({k: v for k, v in (leases or {}).items() if v is not None})
    conf.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("renew_interval", "expiry", "destroy_timeout"):
        conf[key] = _seconds(key, conf[key])
    if conf["self_fence_after"] is None:
        conf["self_fence_after"] = conf["expiry"] / 2
    conf["self_fence_after"] = _seconds("self_fence_after", conf["self_fence_after"])
    try:  # the pillar check's own rule (it also keeps the directory on the shared volume)
        xenha_pillarcheck.abspath(conf["dir"], "xenha:leases:dir")
    except CommandExecutionError as err:
        raise LeaseError(str(err)) from None
    check_timings(conf)
    return conf


def _seconds(key, value):
    """A finite positive number of seconds, as the pillar check wants it (NaN never expires)."""
    try:
        return xenha_pillarcheck.seconds(value, f"xenha:leases:{key}")
    except CommandExecutionError as err:
        raise LeaseError(str(err)) from None


def check_timings(conf):
    """
    Raise LeaseError unless the timings are safe:
    ``self_fence_after + destroy_timeout < expiry`` (domUs die before observers may call their
    leases expired) and ``self_fence_after >= 2 * renew_interval`` (one slow write does not
    self-fence a healthy host).
    """
    sfa, destroy, expiry = conf["self_fence_after"], conf["destroy_timeout"], conf["expiry"]
    if sfa + destroy >= expiry:
        raise LeaseError(
            f"unsafe lease timings: self_fence_after ({sfa} s) + destroy_timeout ({destroy} s)"
            f" must be less than expiry ({expiry} s)"
        )
    if sfa < 2 * conf["renew_interval"]:
        raise LeaseError(
            f"lease timings: self_fence_after ({sfa} s) must be at least twice renew_interval"
            f" ({conf['renew_interval']} s)"
        )


def write_atomic(path, data):
    """Write ``data`` to ``path`` through a temp file, fsync and rename (atomic on OCFS2 too)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
