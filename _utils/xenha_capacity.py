"""
N+1: could the cluster lose any one VM host and restart all of its domUs elsewhere? Answered,
host by host, by the failover's own planner (``xenha_failover.restart_plan``) on the same
inputs the failover reads, so the answer and a real failover never disagree. Pure: the pillar's
members, the hosts' room and the master's host marks in, plain data out.

Inputs (the shapes ``restart_plan`` takes):

- ``members``: ``{"vmhosts": {host: pillar host}, "domus": {name: pillar domU}}``;
- ``room``: ``{host: {"free_memory_mib", "total_memory_mib", "domus": [names]}}`` for every VM
  host whose toolstack answered (the runner's ``_room``); a host missing here is down;
- ``host_states``: ``{host: mark}`` (maintenance, suspect, fenced, degraded): only unmarked
  hosts are targets.

Only domUs the pillar manages count: the failover restarts no other (it has no config for it).
"""

import xenha_failover
import xenha_pillarcheck

GONE = ("fenced",)  # marks of a host whose failure has already happened


def host_loss(members, room, host_states, host):
    """
    What losing ``host`` now would leave unplaced: ``{domU: reason}`` (empty: all restart),
    planned as the failover plans the domUs of a dead host on the survivors in ``room``.
    """
    survivors = {h: info for h, info in room.items() if h != host}
    managed = [d for d in room[host].get("domus", ()) if d in members["domus"]]
    plan = xenha_failover.restart_plan(host, members, survivors, host_states, managed)
    return {d: e["reason"] for d, e in plan["domus"].items() if e["state"] == "unplaced"}


def n_plus_1(members, room, host_states):
    """
    ``{host: {"checked": bool, "unplaced": {domU: reason}}}`` for every VM host. A host that
    did not report its room (down) or that the failover fenced is not checked (``checked``
    False, ``unplaced`` empty): its loss has already happened, and it is no target for the
    others' domUs either.
    """
    result = {}
    for host in sorted(members["vmhosts"]):
        if host not in room or host_states.get(host) in GONE:
            result[host] = {"checked": False, "unplaced": {}}
        else:
            result[host] = {
                "checked": True,
                "unplaced": host_loss(members, room, host_states, host),
            }
    return result


def at_risk(result):
    """``{host: [domUs]}``: the checked hosts whose loss would leave domUs unplaced."""
    return {h: sorted(r["unplaced"]) for h, r in sorted(result.items()) if r["unplaced"]}


def verdict(result):
    """``ok``, ``at risk (ServVirt1 -> [web01, db01])``, or ``unknown (...)`` if none checked."""
    if not any(r["checked"] for r in result.values()):
        return "unknown (no VM host reported its memory)"
    risky = at_risk(result)
    if not risky:
        return "ok"
    return "at risk (" + "; ".join(f"{h} -> [{', '.join(d)}]" for h, d in risky.items()) + ")"


def host_text(entry):
    """One host's cell in status: ``ok``, ``at risk: web01, db01``, ``not checked (down)``."""
    if not entry["checked"]:
        return "not checked (down)"
    return f"at risk: {', '.join(sorted(entry['unplaced']))}" if entry["unplaced"] else "ok"


def with_start(room, host, domu, memory_mib):
    """``room`` as it would be once ``domu`` (``memory_mib``) runs on ``host`` (a copy)."""
    after = {
        h: {**info, "domus": [d for d in info.get("domus", ()) if d != domu]}
        for h, info in room.items()
    }
    target = after[host]
    target["free_memory_mib"] = int(target["free_memory_mib"]) - memory_mib
    target["domus"] = sorted([*target["domus"], domu])
    return after


def admission(members, room, host_states, *, domu, host, memory_mib):
    """
    Whether starting ``domu`` (``memory_mib``) on ``host`` keeps N+1: refused when it does not
    fit there (free memory minus the pillar's reserve), or when afterwards the loss of some host
    would leave a domU unplaced that it would not leave now (a cluster already at risk is not
    made worse; what it already lacks does not block unrelated starts).

    Returns ``{"admit", "reason", "broken": {host: [domUs newly unplaced]}, "before",
    "after"}`` (``before``/``after``: :func:`verdict` texts).
    """
    before = n_plus_1(members, room, host_states)
    spec = members["vmhosts"].get(host) or {}
    if host not in room:
        reason = f"{host} did not report its free memory: N+1 cannot be judged"
        return _refused(reason, before)
    reserve = xenha_pillarcheck.memory_reserve(
        spec.get("memory_reserve_mib"), f"xenha:hosts:{host}:memory_reserve_mib"
    )
    free = int(room[host]["free_memory_mib"]) - reserve
    if memory_mib > free:
        return _refused(f"{domu} needs {memory_mib} MiB, {host} has {max(free, 0)} MiB", before)
    after = n_plus_1(members, with_start(room, host, domu, memory_mib), host_states)
    broken = {}
    for lost, entry in after.items():
        new = sorted(set(entry["unplaced"]) - set(before[lost]["unplaced"]))
        if new:
            broken[lost] = new
    answer = {"broken": broken, "before": verdict(before), "after": verdict(after)}
    if broken:
        losses = "; ".join(
            f"losing {lost} would leave {', '.join(names)} unplaced "
            f"({after[lost]['unplaced'][names[0]]})"
            for lost, names in broken.items()
        )
        return {
            "admit": False,
            "reason": f"starting {domu} on {host} breaks N+1: {losses}",
            **answer,
        }
    return {
        "admit": True,
        "reason": f"N+1 after starting {domu} on {host}: {answer['after']}",
        **answer,
    }


def _refused(reason, before):
    text = verdict(before)
    return {"admit": False, "reason": reason, "broken": {}, "before": text, "after": text}
