"""
The failover engine's fake cluster: a FakeIO adapter (VM hosts A, the dead suspect with a BMC,
B and C; three domUs leased by A), the claim A's loss arrives with, and helpers. Shared by the
engine's unit tests, its scenario tests (tests/scenarios) and the failover-report tests.
"""

import xenha_failover as xf


class Crash(BaseException):  # noqa: N818 - stands for the master being killed (not an Exception)
    """Raised by the fake adapter to simulate the master dying right after a call's effect."""


class FakeIO(xf.Adapter):
    """A cluster of VM hosts A (dead suspect, with BMC), B and C; domUs leased by A."""

    def __init__(self):
        self.vmhosts = {
            "A": {"bmc": {"address": "10.98.0.31", "username": "u", "password": "p"}},
            "B": {"memory_reserve_mib": 0},
            "C": {"memory_reserve_mib": 0},
        }
        self.domus = {
            "web01": {"config": "/c/web01.cfg", "memory_mib": 512, "priority": 100},
            "db01": {"config": "/c/db01.cfg", "memory_mib": 1024, "priority": 200},
            "tiny": {"config": "/c/tiny.cfg", "memory_mib": 128, "priority": 10},
        }
        self.reachable = {"B", "C"}
        # xenha_sanlock.observe verdicts seen by survivors; a host not named renews (advancing)
        self.lease_state = {"A": "stopped"}
        self.view = {}  # {observer: {host: state}}: what one survivor says, beside lease_state
        self.generation = {}  # sanlock generation of each host's delta lease (default 1)
        self.ipmi = "ok"  # ok | fail | callable
        self.leases_of = {"A": ["web01", "db01", "tiny"]}  # exclusive domU leases
        self.shared = {}  # {domU: [holders]}: leases held shared (a live migration)
        self.stale = set()  # exclusive leases whose holder joined sanlock again since
        self.out_of_lockspace = set()  # hosts whose sanlock left the lockspace (rejoin joins)
        self.fenced_args = []  # the fenced= of each start
        self.free = {"B": 2048, "C": 1024}
        self.running = {"B": [], "C": []}
        self.events, self.audits, self.calls, self.starts = [], [], [], []
        self.start_fail = set()
        self.clock = 0.0
        self.crash_at = None  # crash right after the n-th adapter call's effect
        self.crash_on = None  # crash right after the first call of that name (order-proof)

    def _call(self, name):
        self.calls.append(name)
        if self.crash_at is not None and len(self.calls) == self.crash_at:
            self.crash_at = None
            raise Crash(name)
        if self.crash_on == name:
            self.crash_on = None
            raise Crash(name)

    def members(self):
        return {"vmhosts": self.vmhosts, "domus": self.domus}

    def ping(self, host):
        self._call("ping")
        return host in self.reachable

    def observe(self, observer, host, duration):
        if observer not in self.reachable:
            raise RuntimeError(f"minion {observer} did not answer")
        if observer == min(self.reachable - {host}):  # the survivors watch side by side
            self.clock += 11.0 if duration is None else duration  # default: io_timeout + 1
        state = self.view.get(observer, {}).get(host, self.lease_state.get(host, "advancing"))
        self._call("observe")
        seen = {"state": state.upper(), "generation": self.generation.get(host, 1)}
        return {"state": state, "host_id": ord(host[0]) - 64, "sanlock": seen, "unchanged_for": 3}

    def fence_ipmi(self, host, bmc):
        self._call("fence_ipmi")
        if callable(self.ipmi):
            return self.ipmi()
        if self.ipmi != "ok":
            raise RuntimeError("Error: Unable to establish IPMI v2 / RMCP+ session")
        self.reachable.discard(host)
        return {"fenced": True, "seconds": 0.1}

    def leased_domus(self, observer, host):
        if observer not in self.reachable:
            raise RuntimeError("no answer")
        self._call("leased_domus")
        held = {n: {"mode": "ex", "hosts": [h]} for h, ns in self.leases_of.items() for n in ns}
        held.update({n: {"mode": "sh", "hosts": list(hs)} for n, hs in self.shared.items()})
        for name in self.stale & set(held):
            held[name]["stale"] = True
        return {n: e for n, e in held.items() if host is None or host in e["hosts"]}

    def snapshot(self, hosts):
        self._call("snapshot")
        return {
            h: {"free_memory_mib": self.free[h], "total_memory_mib": 4096, "domus": self.running[h]}
            for h in hosts
            if h in self.reachable
        }

    def rejoin(self, host):
        if host not in self.reachable:
            raise RuntimeError(f"minion {host} did not answer")
        self._call("rejoin")
        out = host in self.out_of_lockspace
        if out:  # a new generation: the leases it held under the old one are free to take
            self.out_of_lockspace.discard(host)
            self.stale |= set(self.leases_of.get(host, ()))
        return {"host_id": ord(host[0]) - 64, "changed": out}

    def host_states(self):
        return {}

    def start_domu(self, host, name, spec, fenced):
        # the contract of xenha_sanlock.start_domu: a holder's lease is taken only if sanlock
        # calls it dead, or it is ``fenced`` and its delta lease is proven stopped
        self.fenced_args.append(fenced)
        holders = [h for h, names in self.leases_of.items() if name in names]
        for holder in {*holders, *self.shared.get(name, ())} - {host}:
            if name in self.stale:  # sanlock: held in an old generation of its holder, free
                break
            state = self.lease_state.get(holder, "advancing")
            if holder == fenced and state == "advancing":
                raise RuntimeError(f"{holder} still renews its sanlock delta lease")
            if state not in ("dead", "free") and holder != fenced:
                raise RuntimeError(f"lease of {name} held by live host {holder}")
        if name in self.start_fail:
            raise RuntimeError(f"xl create {spec['config']} failed")
        for names in self.leases_of.values():
            if name in names:
                names.remove(name)
        self.stale.discard(name)
        self.shared.pop(name, None)
        self.leases_of.setdefault(host, []).append(name)
        self.starts.append((name, host))
        self.running[host].append(name)
        self.free[host] -= spec["memory_mib"]
        self._call("start_domu")
        return {"started": True}

    def fire(self, tag, data):
        self.events.append((tag, data))
        self._call("fire")

    def audit(self, entry):
        self.audits.append(entry)
        self._call("audit")  # the audit line is written: the master may die right after

    def now(self):
        return 1_700_000_000.0 + self.clock

    def mono(self):
        return self.clock

    def sleep(self, seconds):
        self.clock += seconds

    def tags(self):
        return [tag.rsplit("/", 1)[1] for tag, _ in self.events]


EVENT = {"id": "B", "reporter": "B", "peer": "A", "age": 3.2}
QUICK = {"io_timeout": 1, "watchdog_fire": 10}  # sanlock timings of the lab


def engine(io, tmp_path, **settings):
    return xf.Engine(io, str(tmp_path), settings)


def copies(io):
    """Where each domU runs; a domU on two hosts would show up twice."""
    seen = {}
    for host, names in io.running.items():
        for name in names:
            seen.setdefault(name, []).append(host)
    return seen
