"""
Failback: a domU with ``failback: true`` returns to its ``preferred_host`` once that host is up
again (``salt-run xenha.failback HOST``), and a VM host back from a shutdown drain
(``xenha.host_back``, from its ``xenha/shutdown/back`` event) leaves the maintenance the drain
put it in. Pure: the pillar's domUs, the snapshot (``xenha_snapshot``) and the master's
maintenance marks in, decisions out; the runner moves the domUs with the mover, lease hand-over
and journal that evacuate and restore use.
"""

import xenha_pillarcheck

DRAIN = "shutdown"  # a maintenance mark's "by" when the shutdown drain's evacuation set it
OPERATOR = "evacuate"  # ... when an operator's evacuate set it
# host_back's steps: nothing (policy), keep an operator's maintenance, lift the drain's then
# fail back, fail back (the host was not in maintenance)
NONE, KEEP, LIFT, FAILBACK = "none", "keep", "lift", "failback"


def maintenance_mark(current, drain, now):
    """
    The maintenance mark evacuate leaves on a host, given the ``current`` one (or None).
    ``drain``: the shutdown drain asked. A mark is kept as it is, except that an operator's
    evacuation takes a drain's mark over: a host's return lifts only what the drain alone set,
    never what an operator asked for.
    """
    if current and (drain or current.get("by") != DRAIN):
        return current
    since = (current or {}).get("since", now)
    return {"since": since, "by": DRAIN if drain else OPERATOR}


def refusal(host, mark, spec=None):
    """
    Why failback moves nothing onto ``host`` (one line), or None: it is in maintenance
    (``mark``: its maintenance mark; the operator's restore ends it), or (``spec``: its
    snapshot entry) it is not up.
    """
    if mark:
        return (
            f"{host} is in maintenance (set by {mark.get('by', 'evacuate')}): failback moves "
            f"nothing onto it; salt-run xenha.restore {host} move_back=True ends it"
        )
    if spec is not None and spec.get("state") != "up":
        why = f": {spec['error']}" if spec.get("error") else ""
        return (
            f"{host} is {spec.get('state')}{why}: failback moves domUs only onto a host that is up"
        )
    return None


def homeward(domus, snap, host):
    """
    The domUs to bring back to ``host``, sorted: ``failback`` true and ``preferred_host``
    ``host`` in the pillar's ``domus`` (each checked as the pillar check does: a bad value
    raises naming its key), and running on another host now, not mid-migration.
    """
    found = []
    for name, spec in sorted((domus or {}).items()):
        where = xenha_pillarcheck.ROOT / "domus" / name
        if not xenha_pillarcheck.failback(spec or {}, where):
            continue
        now = (snap["domus"].get(name) or {}).get("host")
        if spec.get("preferred_host") != host or now in (None, host):
            continue
        if not snap["domus"][name]["migrating"]:
            found.append(name)
    return found


def on_back(policy, mark):
    """
    What ``host_back`` does for a VM host back from a shutdown or reboot: NONE unless the
    ``shutdown_policy`` is migrate (freeze and failover change nothing), KEEP a maintenance
    ``mark`` not set by the shutdown drain (an operator's), LIFT the drain's and fail back, or
    FAILBACK when the host was not in maintenance.
    """
    if policy != "migrate":
        return NONE
    if not mark:
        return FAILBACK
    return LIFT if mark.get("by") == DRAIN else KEEP
