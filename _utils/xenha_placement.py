"""
Placement: where domUs go when a host is evacuated or dies. A pure function, shared by the
runner's evacuate/plan/restore and by failover: a cluster snapshot (plain data) in, a plan out.
No I/O (the anti-affinity lists are checked by the pillar check's own ``domu_names``), so it can
be tested exhaustively and benchmarked at scale.

Snapshot shape::

    {"hosts": {name: {"state": "up",              # up | suspect | fenced | maintenance | down
                      "free_memory_mib": 3072,    # what Xen reports free now
                      "memory_reserve_mib": 256,  # never given to domUs (default 256)
                      "total_memory_mib": 4096}}, # informative only
     "domus": {name: {"host": "ServVirt1",        # where it runs now (None: nowhere)
                      "memory_mib": 512,
                      "priority": 100,            # higher is placed first (default 0)
                      "preferred_host": None,     # tried first when eligible
                      "anti_affinity": []}}}      # never on the same host as these (symmetric)

Only hosts in state ``up`` are targets. Capacity of a host = free - reserve; a domU fits when its
memory is at most that. DomUs are placed in a fixed order (priority desc, memory desc, name), each
on its preferred host if that is eligible, else on the eligible host that fits it most tightly
(best fit; ties by host name), skipping hosts that run a domU it must avoid. The result is fully
determined by the input.
"""

import bisect

import xenha_pillarcheck
from salt.exceptions import CommandExecutionError

TARGET_STATE = "up"


class PlacementError(ValueError):
    """The snapshot or the request is malformed; the message names the bad value."""


def _mib(owner, key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlacementError(f"{owner}: {key} must be a non-negative integer (MiB), got {value!r}")
    return value


def _capacities(hosts, eligible):
    """{host: MiB a domU may still take} for the eligible hosts."""
    caps = {}
    for name in eligible:
        spec = hosts[name]
        free = _mib(f"host {name}", "free_memory_mib", spec.get("free_memory_mib"))
        try:  # unset: the pillar check's default, the reserve dom0 keeps
            reserve = xenha_pillarcheck.memory_reserve(
                spec.get("memory_reserve_mib"), f"host {name}: memory_reserve_mib"
            )
        except CommandExecutionError as err:
            raise PlacementError(str(err)) from None
        caps[name] = max(free - reserve, 0)
    return caps


def _avoid_sets(domus):
    """{domU: set of domUs it must not share a host with}: anti-affinity made symmetric."""
    avoid = {}
    for name, spec in domus.items():
        try:
            others = xenha_pillarcheck.domu_names(
                spec.get("anti_affinity") or [], f"domU {name}: anti_affinity"
            )
        except CommandExecutionError as err:
            raise PlacementError(str(err)) from None
        for other in others:
            if other != name:
                avoid.setdefault(name, set()).add(other)
                avoid.setdefault(other, set()).add(name)
    return avoid


def _order_key(domus):
    def key(name):
        spec = domus[name]
        priority = spec.get("priority")
        priority = 0 if priority is None else priority  # a null is unset, as the check reads it
        if isinstance(priority, bool) or not isinstance(priority, (int, float)):
            raise PlacementError(f"domU {name}: priority must be a number, got {priority!r}")
        return (-priority, -_mib(f"domU {name}", "memory_mib", spec.get("memory_mib")), name)

    return key


def place(snapshot, domus, exclude=(), only=None):
    """
    Plan where each domU named in ``domus`` goes.

    snapshot
        The cluster snapshot (see the module docstring).
    domus
        Names (keys of ``snapshot["domus"]``) of the domUs to place. Their current host is not
        charged for them; every other domU stays where it is.
    exclude
        Hosts never to target (e.g. the host being evacuated), whatever their state.
    only
        If given, the only hosts that may be targeted (e.g. restore: back to one host).

    Returns ``{"placement": {domU: host}, "unplaced": {domU: reason}}``. Raises PlacementError
    naming the bad value when the input is malformed.
    """
    hosts = snapshot.get("hosts") or {}
    all_domus = snapshot.get("domus") or {}
    todo = list(dict.fromkeys(domus))
    for name in todo:
        if name not in all_domus:
            raise PlacementError(f"domU {name!r} is not in the snapshot")
    for name in [*exclude, *(only or ())]:
        if name not in hosts:
            raise PlacementError(f"host {name!r} is not in the snapshot")

    allowed = set(hosts) if only is None else set(only)
    allowed -= set(exclude)
    eligible = sorted(h for h in allowed if hosts[h].get("state") == TARGET_STATE)
    caps = _capacities(hosts, eligible)
    avoid = _avoid_sets(all_domus)

    moving = set(todo)
    targets = _Targets(caps, avoid)
    for name, spec in all_domus.items():
        if name not in moving:
            targets.occupy(spec.get("host"), name)

    states = ", ".join(f"{h} {hosts[h].get('state')}" for h in sorted(allowed)) or "none"
    nowhere = f"no eligible target host (candidates: {states})"
    placement, unplaced = {}, {}
    for name in sorted(todo, key=_order_key(all_domus)):
        spec = all_domus[name]
        target = targets.pick(name, spec["memory_mib"], spec.get("preferred_host"))
        if target is None:
            unplaced[name] = targets.why(name, spec["memory_mib"]) or nowhere
        else:
            targets.take(target, name, spec["memory_mib"])
            placement[name] = target
    return {"placement": placement, "unplaced": unplaced}


class _Targets:
    """The eligible hosts, their remaining capacity and who runs there (for anti-affinity)."""

    def __init__(self, caps, avoid):
        self.caps = caps
        self.avoid = avoid
        self.residents = {}  # host -> domUs on it that some domU must avoid
        # (capacity, host) kept sorted: bisect finds the tightest fit, ties broken by name
        self.ladder = sorted((cap, host) for host, cap in caps.items())

    def occupy(self, host, name):
        if host in self.caps and name in self.avoid:
            self.residents.setdefault(host, set()).add(name)

    def _clashes(self, host, shun):
        return bool(shun) and not self.residents.get(host, set()).isdisjoint(shun)

    def _roomy(self, need):
        return self.ladder[bisect.bisect_left(self.ladder, (need, "")) :]

    def pick(self, name, need, preferred):
        shun = self.avoid.get(name, ())
        if self.caps.get(preferred, -1) >= need and not self._clashes(preferred, shun):
            return preferred
        return next((h for _, h in self._roomy(need) if not self._clashes(h, shun)), None)

    def take(self, host, name, need):
        cap = self.caps[host]
        del self.ladder[bisect.bisect_left(self.ladder, (cap, host))]
        self.caps[host] = cap - need
        bisect.insort(self.ladder, (cap - need, host))
        self.occupy(host, name)

    def why(self, name, need):
        """Why a domU fits nowhere, in one sentence; None when there is no eligible host."""
        if not self.ladder:
            return None
        roomy = [h for _, h in self._roomy(need)]
        if not roomy:
            most = self.ladder[-1][0]
            return f"no room: needs {need} MiB, the most any eligible host can take is {most} MiB"
        shun = self.avoid.get(name, set())
        blockers = sorted(set().union(*(self.residents.get(h, set()) & shun for h in roomy)))
        return (
            f"anti-affinity: every host with {need} MiB free ({', '.join(roomy)}) runs "
            f"{', '.join(blockers)}"
        )
