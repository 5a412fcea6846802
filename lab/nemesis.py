"""The nemesis: faults picked at random against a lab cluster, and a checker that proves (or
disproves) that xenha never runs a domU on two hosts at once (in the spirit of Jepsen).

- :class:`Checker` samples every 0.2 s, from outside the hosts, where each domU runs: the live
  QEMU processes carrying its name, mapped to their host by network namespace (what
  :func:`lab.failover.running_on` does, for all domUs in one pass over /proc), and the guest's
  own boot id over its network (a prober in the lab's client fetches ``/cgi-bin/state``). It
  records a **violation** whenever two hosts hold a copy of one domU that is not a live
  migration in flight (a paused ``--incoming`` copy beside its source; both copies running,
  asked over QMP, is a violation too), and whenever an older boot id of a domU answers after a
  newer one did (two copies alive on the network).
- The faults (:data:`FAULTS`): each injects, holds for its duration, and heals. The lease
  daemon that ``stop-lease`` freezes is the host's ``sanlock daemon`` (:data:`LEASE_DAEMONS`
  finds it); ``storage`` also fails that daemon's disk I/O (:func:`lab.failover.Failover.
  isolate_storage`).
- :func:`run` picks a fault, a host and a duration per trial from ``random.Random(f"{seed}/{i}")``
  (so trial ``i`` of seed ``S`` replays alone with ``start=i, trials=1``), injects it, heals it,
  then waits (``settle_timeout``) until every VM host is on and answers, no failover is under
  way and every domU runs exactly once and answers HTTP. A trial that does not settle is
  recorded with its evidence, and the harness repairs the cluster (starts what runs nowhere)
  so later trials still mean something.

``python -m lab nemesis --trials N --seed S`` builds a lab of its own, runs the trials, writes
``trials.json`` and ``summary.md`` and tears the lab down (docs/lab.md).
"""

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from lab import RUN_ROOT, demo, toolstack
from lab.bmc import BMC
from lab.failover import _cmdline, _qemu_guest
from lab.hosts import LabError, identity, wait_for

ACTIVE = ("received", "verified", "corroborated", "fenced", "restarting", "blocked")  # journals
GUESTS = {"nem01": "10.99.0.120", "nem02": "10.99.0.121"}
INTERVAL = 0.2
SETTLE_TIMEOUT = 300.0  # s: failover + a TCG boot, or the master's 60 s resume schedule + that
DURATION = (1.0, 20.0)  # s a fault holds (SIGSTOP 1-20 s, as every other fault)
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SKEW_S = 5
HEARTBEAT_DROP = 0.3
# the short run (CI): five different faults in five trials with this seed (a unit test checks)
SHORT_FAULTS = ("partition", "kill-master-failover", "stop-host", "power-off", "drop-heartbeat")
SHORT_SEED = 4
EVACUATION_WAIT = 120.0  # s an evacuation hit by a fault may take before it is interrupted
# s a settled cluster must stay settled: a sanlock daemon resumed after a long SIGSTOP fences
# its domUs a moment after the heal, which a single look can miss
CONFIRM_S = 5.0

# --- where each domU runs, seen from outside the hosts ---------------------------------------


def _netns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def locate(lab, names):
    """{domU: {host: [(pid, started as, qmp socket)]}} for every live (not zombie) QEMU of
    ``names`` on the lab's VM hosts (a SIGSTOPped one counts: it runs again when continued)."""
    hosts = {
        _netns_inode(f"/run/netns/{h.netns}"): hid
        for hid, h in lab.hosts.items()
        if h.role == "vmhost"
    }
    found = {name: {} for name in names}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        argv = _cmdline(entry.name).split(b"\0")
        started_as = _qemu_guest(argv)
        if started_as is None:
            continue
        name = started_as.removesuffix("--incoming")
        host = hosts.get(_netns_inode(f"/proc/{entry.name}/ns/net"))
        if name in found and host and identity(int(entry.name)):
            found[name].setdefault(host, []).append((int(entry.name), started_as, _qmp_of(argv)))
    return found


def _qmp_of(argv):
    for arg in argv:
        if arg.startswith(b"unix:") and b"server=on" in arg:
            return arg[5:].split(b",", 1)[0].decode()
    return None


def qmp_status(path, timeout=1.0):
    """QEMU's run state (``running``, ``paused``, ``inmigrate``...) over its QMP socket, or
    ``unknown`` when the monitor does not answer in time (busy with the toolstack, stopped)."""
    if not path:
        return "unknown"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            reader = sock.makefile("rb")
            reader.readline()  # greeting
            for cmd in ("qmp_capabilities", "query-status"):
                sock.sendall(json.dumps({"execute": cmd}).encode() + b"\n")
                while "return" not in (reply := json.loads(reader.readline() or b"{}")):
                    if "error" in reply or not reply:
                        return "unknown"
            return reply["return"].get("status", "unknown")
    except (OSError, ValueError):
        return "unknown"


def classify_double(copies, status=qmp_status):
    """Whether copies of one domU on several hosts (``{host: [(pid, started as, qmp)]}``) break
    the promise: (violation?, why, QMP states). A live migration shows its paused ``--incoming``
    copy beside the source; every other double is a violation, as is a migration whose both
    copies run.

    The states are read one QEMU after the other, not at one instant: read source first, a
    switch-over between the two reads shows both running though they never ran together
    (QEMU stops the source before it sends the last state, the target runs only after it).
    Both running is therefore read a second time in the reverse order, and each QEMU (one
    QMP socket, whatever processes share it) counts once."""
    sockets = {h: list(dict.fromkeys(q for _, _, q in procs)) for h, procs in copies.items()}
    states = {h: [status(q) for q in qmps] for h, qmps in sockets.items()}
    incoming = any(a.endswith("--incoming") for procs in copies.values() for _, a, _ in procs)
    if not incoming:
        return True, "copies on two hosts, none a migration's incoming copy", states
    if _running(states) > 1:
        reads = [(h, q) for h, qmps in sockets.items() for q in qmps]
        later = {(h, q): status(q) for h, q in reversed(reads)}
        again = {h: [later[h, q] for q in qmps] for h, qmps in sockets.items()}
        if _running(again) > 1:
            return True, "a migration's both copies run", again
        states = {h: [*states[h], *(f"then {s}" for s in again[h])] for h in sockets}
    return False, "live migration in flight", states


def _running(states):
    return sum(s.count("running") for s in states.values())


PROBER = """
import json, sys, threading, time, urllib.request
interval = float(sys.argv[1])
lock = threading.Lock()
def watch(ip):
    while True:
        t = time.time()
        try:
            with urllib.request.urlopen(f"http://{ip}/cgi-bin/state", timeout=2) as r:
                rec = {"t": t, "ip": ip, "bootid": json.loads(r.read()).get("bootid")}
        except Exception as err:
            rec = {"t": t, "ip": ip, "error": type(err).__name__}
        with lock:
            print(json.dumps(rec), flush=True)
        time.sleep(max(0.0, interval - (time.time() - t)))
for ip in sys.argv[2:]:
    threading.Thread(target=watch, args=(ip,), daemon=True).start()
threading.Event().wait()
"""


class BootOrder:
    """The boot ids one domU answered with, in order of first answer; an older one answering
    after a newer one means two copies were alive on the network."""

    def __init__(self):
        self.order = []  # boot ids, oldest first
        self.last = {}  # boot id -> time of its last answer

    def see(self, t, bootid):
        """Record an answer; returns the violation (dict) when it came from an older boot."""
        if bootid not in self.order:
            self.order.append(bootid)
        self.last[bootid] = t
        if bootid != self.order[-1]:
            newer = self.order[self.order.index(bootid) + 1 :]
            return {"older_boot": bootid, "newer_boots": newer, "newer_seen": self.last[newer[0]]}
        return None


class Checker:
    """Samples where each domU of ``guests`` ({name: ip}) runs until stopped (a context manager).

    ``violations`` (each {"t", "domu", "kind", "hosts"/..., evidence}), ``overlaps`` (live
    migrations seen in flight), ``answers`` ({name: the latest prober record}) and ``samples``
    (how many process samples were taken)."""

    def __init__(self, lab, guests, interval=INTERVAL, out_dir=None):
        self.lab, self.guests, self.interval = lab, dict(guests), interval
        self.by_ip = {ip: name for name, ip in self.guests.items()}
        self.out = Path(out_dir) if out_dir else None
        self.violations, self.overlaps = [], []
        self.answers, self.boots = {}, {name: BootOrder() for name in self.guests}
        self.samples = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._prober = None
        self._threads = [
            threading.Thread(target=self._sample, name="checker-qemu", daemon=True),
            threading.Thread(target=self._listen, name="checker-http", daemon=True),
        ]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._prober is not None:
            self._prober.kill()
        for thread in self._threads:
            thread.join(10)

    def _record(self, kind, entry):
        with self.lock:
            getattr(self, kind).append(entry)
        if self.out is not None:
            with open(self.out / f"{kind}.jsonl", "a") as fh:
                fh.write(json.dumps(entry, default=str) + "\n")

    def _sample(self):
        while not self._stop.is_set():
            t = time.time()
            try:
                where = locate(self.lab, self.guests)
            except OSError:
                where = {}
            self.samples += 1
            for name, copies in where.items():
                if len(copies) > 1:
                    bad, why, states = classify_double(copies)
                    entry = {
                        "t": round(t, 3),
                        "domu": name,
                        "kind": "two hosts" if bad else "migration",
                        "why": why,
                        "hosts": sorted(copies),
                        "processes": {h: [p[:2] for p in c] for h, c in copies.items()},
                        "qemu_status": states,
                    }
                    self._record("violations" if bad else "overlaps", entry)
            self._stop.wait(max(0.0, self.interval - (time.time() - t)))

    def _listen(self):
        argv = [sys.executable, "-c", PROBER, str(self.interval), *self.guests.values()]
        import subprocess  # noqa: PLC0415 -- only the prober's pipe needs it

        while not self._stop.is_set():
            self._prober = self.lab.cli.spawn(argv, stdout=subprocess.PIPE, stderr=None)
            for line in self._prober.stdout:
                with contextlib.suppress(ValueError, KeyError):
                    self._answer(json.loads(line))
                if self._stop.is_set():
                    break
            self._prober.wait()

    def _answer(self, rec):
        name = self.by_ip[rec["ip"]]
        with self.lock:
            self.answers[name] = rec
        if "bootid" in rec:
            flip = self.boots[name].see(rec["t"], rec["bootid"])
            if flip:
                self._record(
                    "violations",
                    {"t": round(rec["t"], 3), "domu": name, "kind": "older boot answered", **flip},
                )

    def since(self, t0, kind="violations"):
        with self.lock:
            return [v for v in getattr(self, kind) if v["t"] >= t0]

    def answering(self, name, fresh=2.0):
        """The domU's latest answer if it is recent and carries a boot id, else None."""
        with self.lock:
            rec = self.answers.get(name)
        ok = rec and "bootid" in rec and time.time() - rec["t"] <= fresh + self.interval
        return rec if ok else None


# --- the lease daemon (pluggable) ----------------------------------------------------------------


def sanlock_pids(host):
    """The sanlock daemon of a lab host (``sanlock daemon ...``), as root-namespace PIDs."""
    return [p for p in host.pids() if _cmdline(p).startswith(b"sanlock\0daemon")]


LEASE_DAEMONS = {"sanlock": sanlock_pids}


# --- faults: each injects, holds ``duration`` s, heals; returns facts for the record ----------


def _signal_all(pids, sig):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def fault_power_off(nem, host, duration):
    """Power the host off through its BMC (IPMI), keep it off, power it on again."""
    nem.ipmi(host, "off")
    time.sleep(duration)
    nem.ipmi(host, "on")
    return {}


def fault_partition(nem, host, duration):
    """Cut the host's network link (the shared storage stays visible to it), then heal."""
    nem.lab.hosts[host].partition()
    time.sleep(duration)
    nem.lab.hosts[host].heal()
    return {}


def fault_storage(nem, host, duration):
    """Take the shared storage (domU configs, and the lease area from its sanlock daemon) away
    from the host only, then give it back."""
    nem.fo.isolate_storage(host)
    time.sleep(duration)
    nem.fo.restore_storage(host)
    return {}


def fault_stop_lease(nem, host, duration):
    """SIGSTOP the host's lease daemon (:data:`LEASE_DAEMONS`), then SIGCONT it."""
    pids = nem.lease_pids(nem.lab.hosts[host])
    if not pids:
        raise LabError(f"{host}: no lease daemon process to stop")
    _signal_all(pids, signal.SIGSTOP)
    time.sleep(duration)
    _signal_all(pids, signal.SIGCONT)
    return {"pids": pids}


def fault_stop_host(nem, host, duration):
    """SIGSTOP every process of the host (init, minion, sanlock, QEMU guests...), then SIGCONT
    them: a host that hangs and comes back."""
    stopped = set()
    for _ in range(3):  # a process forked while the first pass ran
        pids = set(nem.lab.hosts[host].pids()) - stopped
        _signal_all(pids, signal.SIGSTOP)
        stopped |= pids
    time.sleep(duration)
    _signal_all(stopped, signal.SIGCONT)
    return {"processes": len(stopped)}


def _kill_master(nem):
    """SIGKILL the salt-master and the runners the master host runs (``salt-run``)."""
    runners = [p for p in nem.lab.master.pids() if b"salt-run" in _cmdline(p)]
    _signal_all(runners, signal.SIGKILL)
    return len(nem.fo.kill_master()) + len(runners)


def _restart_master(nem):
    nem.fo.start_master()
    nem.lab.wait_minions([h for h in nem.lab.hosts if nem.lab.hosts[h].is_powered()], 300)


def fault_kill_master_failover(nem, host, duration):
    """Power the host off through its BMC; once its failover started, SIGKILL the master
    (the runner dies with it), keep it down, start it again; power the host on."""
    t0 = time.time()
    nem.ipmi(host, "off")
    try:
        ev = nem.fo.wait_event(f"xenha/failover/{host}/started", t0, 120)
        seen = round(ev["t"] - t0, 2)
    except LabError:
        seen = None  # no failover started (yet): kill the master anyway
    time.sleep(nem.rng.uniform(0, 3))  # somewhere in the failover's steps
    killed = _kill_master(nem)
    time.sleep(duration)
    _restart_master(nem)
    nem.ipmi(host, "on")
    return {"failover_started_s": seen, "killed": killed}


def _evacuate(nem, host):
    box = {"started": time.time()}

    def call():
        try:
            box["answer"] = nem.lab.salt_run("xenha.evacuate", host, "parallel=1", timeout=600)
        except Exception as err:  # noqa: BLE001 -- the fault may break it: recorded
            box["error"] = f"{type(err).__name__}: {err}"[:300]

    thread = threading.Thread(target=call, name=f"evacuate-{host}", daemon=True)
    thread.start()
    return thread, box


def _migration_in_flight(nem, host, timeout):
    """Wait (up to ``timeout`` s) for a migration away from ``host`` to show; whether it did."""
    with contextlib.suppress(LabError):
        return wait_for(
            lambda: any(host in c and len(c) > 1 for c in locate(nem.lab, nem.guests).values()),
            timeout,
            "a migration in flight",
            interval=0.1,
        )
    return False


def _end_maintenance(nem, host, thread, box):
    """Wait (up to :data:`EVACUATION_WAIT` s) for the evacuation's answer, interrupt it as an
    operator's Ctrl-C would when it has none by then, and end the host's maintenance."""
    t0 = time.time()
    thread.join(max(0.0, EVACUATION_WAIT - (time.time() - box["started"])))
    facts = {"evacuation_s": round(time.time() - box["started"], 1)}
    if thread.is_alive():
        runners = [p for p in nem.lab.master.pids() if b"xenha.evacuate" in _cmdline(p)]
        _signal_all(runners, signal.SIGINT)
        thread.join(30)
        facts["evacuation"] = f"no answer after {EVACUATION_WAIT:.0f} s: interrupted"
    else:
        answer = box.get("answer") or {}
        facts["evacuation"] = answer.get("summary") or box.get("error") or "no summary"
    nem.lab.salt_run("xenha.restore", host, timeout=300)  # the operator ends maintenance
    facts["restore_s"] = round(time.time() - t0, 1)
    return facts


def fault_kill_master_evacuation(nem, host, duration):
    """Evacuate the host; mid-migration, SIGKILL the master and the runner, keep it down,
    start it again; end the host's maintenance."""
    thread, box = _evacuate(nem, host)
    migrating = _migration_in_flight(nem, host, 60)
    killed = _kill_master(nem)
    time.sleep(duration)
    _restart_master(nem)
    return {
        "migrating": bool(migrating),
        "killed": killed,
        **_end_maintenance(nem, host, thread, box),
    }


def fault_evacuate_failover(nem, host, duration):
    """Evacuate the host and, mid-migration, power it off through its BMC (its failover starts
    while the evacuation runs); power it on, end its maintenance."""
    thread, box = _evacuate(nem, host)
    migrating = _migration_in_flight(nem, host, 60)
    nem.ipmi(host, "off")
    time.sleep(duration)
    nem.ipmi(host, "on")
    return {"migrating": bool(migrating), **_end_maintenance(nem, host, thread, box)}


def _restart_clocked(nem, host, env):
    """Restart the host's salt-minion (whose beacon sends the heartbeats) with ``env`` added
    (libfaketime's, or none)."""
    h = nem.lab.hosts[host]
    minions = [p for p in h.pids() if b"salt-minion" in _cmdline(p)]
    _signal_all(minions, signal.SIGKILL)
    wait_for(lambda: not any(identity(p) for p in minions), 30, f"{host}'s salt-minion to die")
    h.run([str(Path(sys.executable).with_name("salt-minion")), "-d"], env=env, timeout=60)


def fault_skew(nem, host, duration):
    """Skew the host's wall clock by +-5 s for the process that keeps wall time for xenha (its
    salt-minion, restarted under libfaketime; the monotonic clock stays true, and sanlock
    renews on the monotonic clock only), then restart it on the true clock. The machine's
    clock is one for every network namespace, and a time namespace offsets only the monotonic
    and boot clocks, so a real skew of one lab host is impossible here: this is the nearest
    honest thing."""
    skew = nem.rng.choice((SKEW_S, -SKEW_S))
    env = {
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME": f"{skew:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }
    _restart_clocked(nem, host, env)
    time.sleep(duration)
    _restart_clocked(nem, host, None)
    return {"skew_s": skew}


def fault_drop_heartbeat(nem, host, duration):
    """Drop 30 % of the heartbeat packets the host sends and receives (iptables in its
    network namespace), then remove the rules."""
    port = str(nem.lab.pillar()["heartbeat"]["port"])
    rules = [
        [chain, "-p", "udp", "--dport", port, "-m", "statistic", "--mode", "random",
         "--probability", str(HEARTBEAT_DROP), "-j", "DROP"]
        for chain in ("INPUT", "OUTPUT")
    ]  # fmt: skip
    h = nem.lab.hosts[host]
    try:
        for rule in rules:
            h.run(["iptables", "-w", "-A", *rule])
        time.sleep(duration)
    finally:
        for rule in rules:
            h.run(["iptables", "-w", "-D", *rule], check=False)
    return {"drop": HEARTBEAT_DROP}


FAULTS = {
    "power-off": fault_power_off,
    "partition": fault_partition,
    "storage": fault_storage,
    "stop-lease": fault_stop_lease,
    "stop-host": fault_stop_host,
    "kill-master-failover": fault_kill_master_failover,
    "kill-master-evacuation": fault_kill_master_evacuation,
    "evacuate-failover": fault_evacuate_failover,
    "skew": fault_skew,
    "drop-heartbeat": fault_drop_heartbeat,
}


def available_faults():
    """The faults this machine can inject (``skew`` needs libfaketime: apt libfaketime)."""
    return [f for f in FAULTS if f != "skew" or FAKETIME.exists()]


# --- the run -----------------------------------------------------------------------------------


class Nemesis:
    """Trials against ``lab`` (up, failover on, ``guests`` started); ``fo``: its Failover."""

    def __init__(self, lab, fo, guests, *, lease_daemon="sanlock", out_dir, checker):
        self.lab, self.fo, self.guests = lab, fo, dict(guests)
        self.lease_pids = LEASE_DAEMONS[lease_daemon]
        self.out = Path(out_dir)
        self.checker = checker
        self.last_end = time.time()
        self.waited = {}  # what the last settle waited on: {reason: seconds}
        self.rng = random.Random(0)  # noqa: S311 -- replayable faults, not secrets
        self.vmhosts = sorted(h for h, x in lab.hosts.items() if x.role == "vmhost")
        spec = lab.pillar()["hosts"]
        # the pillar has no BMC password (it is the master's): lab.bmc() adds it
        self.bmcs = {h: BMC(lab, h, lab.bmc(h)) for h in self.vmhosts if spec[h].get("bmc")}

    def ipmi(self, host, state):
        out = self.bmcs[host].ipmitool("chassis", "power", state, timeout=60)
        if out.returncode != 0:
            raise LabError(f"ipmitool chassis power {state} {host}: {out.stderr.strip()}")

    def busy_hosts(self):
        where = locate(self.lab, self.guests)
        return sorted({h for copies in where.values() for h in copies})

    def pick(self, index, seed, faults, duration=DURATION):
        """(fault, host, duration) of trial ``index``, from ``random.Random(f"{seed}/{index}")``;
        the host is one running a domU (any VM host if none does)."""
        self.rng = random.Random(f"{seed}/{index}")  # noqa: S311 -- replayable
        fault = self.rng.choice(sorted(faults))
        host = self.rng.choice(self.busy_hosts() or self.vmhosts)
        return fault, host, round(self.rng.uniform(*duration), 1)

    # --- settling ------------------------------------------------------------------------------
    def _hosts_back(self):
        """Power on (BMC) any VM host that is off (fenced by a failover after the heal):
        what an operator does; returns the hosts powered on."""
        off = [h for h in self.vmhosts if not self.lab.hosts[h].is_powered()]
        for host in off:
            with contextlib.suppress(LabError):
                self.ipmi(host, "on")
        return off

    def settled(self):
        """Why the cluster has not settled yet (a string), or None when it has: every VM host
        on, its minion answering and its sanlock in the lockspace, every domU running on
        exactly one host and answering.
        (A failover journal still active is no reason: one may stay blocked for long; what it
        does later is checked all along.)"""
        off = [h for h in self.vmhosts if not self.lab.hosts[h].is_powered()]
        if off:
            return f"powered off: {off}"
        where = locate(self.lab, self.guests)
        wrong = {n: sorted(c) for n, c in where.items() if len(c) != 1}
        if wrong:
            return f"not running exactly once: {wrong}"
        silent = [n for n in self.guests if not self.checker.answering(n)]
        if silent:
            return f"not answering: {silent}"
        return self._hosts_unready()

    def _hosts_unready(self):
        """Why a VM host is not ready yet (its minion, then its sanlock's lockspace), or None."""
        checks = (
            ("test.ping", (), lambda got: got is True, "minions not answering"),
            (
                "xenha_sanlock.join",
                ("test=True",),
                lambda got: isinstance(got, dict) and got.get("changed") is False,
                "sanlock not in the lockspace",
            ),
        )
        for fun, args, ready, what in checks:
            try:
                got = self.lab.salt(self.vmhosts, fun, *args, timeout=10)
            except LabError as err:
                return f"{fun}: {err}"
            unready = [h for h in self.vmhosts if not ready(got.get(h))]
            if unready:
                return f"{what}: {unready}"
        return None

    def settle(self, timeout):
        """Wait until :meth:`settled`; (seconds, None) or (None, the last reason). What it
        waited on is kept in ``self.waited`` ({reason: seconds seen}): a slow settle says why."""
        t0 = time.time()
        reason, powered = "not checked", []
        self.waited = {}
        while time.time() - t0 < timeout:
            powered += self._hosts_back()
            # a host whose sanlock lost the lockspace (storage cut longer than 8 x io_timeout)
            # is joined again by the master's scheduled failover_resume: the product's work
            checked = time.time()
            reason = self.settled()
            if reason is not None:
                key = reason[:120]
                self.waited[key] = round(self.waited.get(key, 0) + time.time() - checked + 1, 1)
            if reason is None:
                settled = round(time.time() - t0, 1)
                time.sleep(CONFIRM_S)
                reason = self.settled()
                if reason is None:
                    self.fo.ensure_services()
                    return settled, None, powered
                key = f"settled, then {reason}"[:120]
                self.waited[key] = self.waited.get(key, 0) + CONFIRM_S
            time.sleep(1)
        return None, reason, powered

    def evidence(self, since):
        """What explains an unsettled trial: where each domU runs, its last answer, the
        failover journals and the audit trail from ``since`` on (its last 40 lines)."""
        where = locate(self.lab, self.guests)
        return {
            "running_on": {n: sorted(c) for n, c in where.items()},
            "last_answer": {n: self.checker.answers.get(n) for n in self.guests},
            "powered": {h: self.lab.hosts[h].is_powered() for h in self.vmhosts},
            "journals": {h: self.fo.journal(h) for h in self.vmhosts},
            "domu_leases": self._leases(),
            "audit": self.fo.audit(since)[-40:],
        }

    def _leases(self):
        """Who holds each domU's sanlock lease, or why that cannot be read."""
        try:
            held = self.fo.holders()
        except LabError as err:
            return f"unreadable: {err}"[:300]
        return {n: held.get(n) for n in self.guests}

    def repair(self):
        """Start every domU that runs nowhere (on its lease's holder if that host is on, else
        the first VM host on): later trials need the guests; returns what was started."""
        started = {}
        for name, copies in locate(self.lab, self.guests).items():
            if copies:
                continue
            holders = []
            with contextlib.suppress(LabError):
                holders = self.fo.holder(name)
            on = [h for h in self.vmhosts if self.lab.hosts[h].is_powered()]
            host = next((h for h in holders if h in on), on[0])
            try:
                self.fo.start_domu(name, host, timeout=180)
                started[name] = host
            except LabError as err:
                started[name] = f"failed on {host}: {err}"[:300]
        return started

    # --- one trial -----------------------------------------------------------------------------
    def trial(self, index, seed, faults, settle_timeout):
        fault, host, duration = self.pick(index, seed, faults)
        row = {"trial": index, "seed": seed, "replay": f"{seed}/{index}", "fault": fault}
        row.update({"host": host, "duration_s": duration, "started": _stamp(time.time())})
        print(f"nemesis: trial {index}: {fault} {host} {duration} s", flush=True)
        row["placed"] = {n: sorted(c) for n, c in locate(self.lab, self.guests).items()}
        t0 = time.time()
        try:
            row["facts"] = FAULTS[fault](self, host, duration)
        except Exception as err:  # noqa: BLE001 -- the trial records it; the cluster still settles
            row["fault_error"] = f"{type(err).__name__}: {err}"[:500]
        t_heal = time.time()
        row["fault_s"] = round(t_heal - t0, 1)
        settle_s, reason, powered = self.settle(settle_timeout)
        row.update({"settle_s": settle_s, "settled": settle_s is not None})
        if self.waited:
            row["waited_on"] = self.waited
        if powered:
            row["powered_on_after_heal"] = powered
        active = {h: j for h in self.vmhosts if (j := self.fo.journal(h).get("state")) in ACTIVE}
        if active:
            row["failovers_active_at_settle"] = active
        if reason:
            row["unsettled_reason"] = reason
            row["evidence"] = self.evidence(since=t0)
            row["repair"] = self.repair()
            self.settle(settle_timeout)
        # from the previous trial's end: a late effect of it (a stale claim) belongs here
        row["violations"] = self.checker.since(self.last_end)
        row["migrations_seen"] = len(self.checker.since(self.last_end, "overlaps"))
        self.last_end = time.time()
        verdict = (
            f"settled {settle_s} s after the heal"
            if row["settled"]
            else f"NOT SETTLED within {settle_timeout:.0f} s ({reason})"
        )
        print(f"nemesis: trial {index}: {verdict}; {len(row['violations'])} violations", flush=True)
        return row


def _stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def start_guests(lab, fo, guests):
    """Define and start ``guests`` spread over the VM hosts (round robin); wait for HTTP."""
    vmhosts = sorted(h for h, x in lab.hosts.items() if x.role == "vmhost")
    for i, (name, ip) in enumerate(sorted(guests.items())):
        demo.start_guests(lab, fo, vmhosts[i % len(vmhosts)], {name: ip})


def run(lab, fo, *, trials, seed, out_dir, faults=None, start=0, guests=None,
        settle_timeout=SETTLE_TIMEOUT, lease_daemon="sanlock"):  # fmt: skip
    """Run trials ``start .. start+trials-1`` of ``seed`` on ``lab`` (up, failover on; the
    guests are started here); write ``trials.json`` and ``summary.md`` into ``out_dir``;
    returns the summary (dict)."""
    guests = dict(guests or GUESTS)
    faults = list(faults or available_faults())
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise LabError(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    if "skew" in faults and not FAKETIME.exists():
        raise LabError(f"fault skew needs {FAKETIME} (apt install libfaketime)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"nemesis: seed {seed}, trials {start}..{start + trials - 1}, faults {faults}")
    print(f"nemesis: replay: python -m lab nemesis --seed {seed} --start {start} --trials {trials}")
    start_guests(lab, fo, guests)
    rows = []
    with Checker(lab, guests, out_dir=out_dir) as checker:
        nem = Nemesis(lab, fo, guests, lease_daemon=lease_daemon, out_dir=out_dir, checker=checker)
        _, reason, _ = nem.settle(settle_timeout)
        if reason:
            raise LabError(f"the cluster did not settle before the first trial: {reason}")
        for index in range(start, start + trials):
            try:
                rows.append(nem.trial(index, seed, faults, settle_timeout))
            except KeyboardInterrupt:  # Ctrl-C: report the trials done so far
                print(f"nemesis: interrupted in trial {index}", flush=True)
                break
            (out_dir / "trials.json").write_text(json.dumps(rows, indent=1, default=str))
        samples = checker.samples
    summary = summarize(rows, seed, faults, samples)
    (out_dir / "summary.md").write_text(markdown(summary, rows))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def summarize(rows, seed, faults, samples=None):
    """Totals and settle times per fault type of ``rows`` (the trials' records)."""
    per_fault = {}
    for row in rows:
        per_fault.setdefault(row["fault"], []).append(row)
    return {
        "seed": seed,
        "faults": faults,
        "trials": len(rows),
        "violations": sum(len(r["violations"]) for r in rows),
        "unsettled": [r["replay"] for r in rows if not r["settled"]],
        "with_violations": [r["replay"] for r in rows if r["violations"]],
        "samples": samples,
        "per_fault": {
            fault: {
                "trials": len(rs),
                "violations": sum(len(r["violations"]) for r in rs),
                "unsettled": sum(1 for r in rs if not r["settled"]),
                "settle_s_median": _median([r["settle_s"] for r in rs]),
                "settle_s_max": max(
                    (r["settle_s"] for r in rs if r["settle_s"] is not None), default=None
                ),  # fmt: skip
            }
            for fault, rs in sorted(per_fault.items())
        },
    }


def _median(values):
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 1) if vals else None


def digest(row):
    """A few lines that explain an unsettled trial (its record holds the rest): where the
    guests ran before and after, the leases, each journal's path, and the audit trail."""
    ev = row.get("evidence") or {}
    lines = [
        f"trial {row['trial']} ({row['replay']}): {row['fault']} {row['host']} "
        f"{row['duration_s']} s, facts {row.get('facts')}: {row.get('unsettled_reason')}",
        f"  placed before: {row.get('placed')}; after: {ev.get('running_on')}; "
        f"leases: {ev.get('domu_leases')}; powered: {ev.get('powered')}",
    ]
    for host, j in (ev.get("journals") or {}).items():
        path = " > ".join(h["state"] for h in j.get("history", []))
        lines.append(
            f"  journal {host}: {path}; fence {j.get('fence')}; leases_read "
            f"{j.get('leases_read')}; domus {j.get('domus')}; "
            f"not_restarted {j.get('not_restarted')}"
        )
    lines += [f"  {line[:300]}" for line in ev.get("audit", [])]
    return "\n".join(lines)


def final_line(summary):
    return (
        f"{summary['trials']} trials, {summary['violations']} violations, "
        f"{len(summary['unsettled'])} unsettled"
    )


def markdown(summary, rows):
    """The short markdown summary of a run."""
    lines = [
        f"# Nemesis run, seed {summary['seed']}",
        "",
        f"{final_line(summary)} (checker: {summary['samples']} process samples).",
        "",
        "| trial | fault | host | hold s | settled after heal s | violations | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = r.get("unsettled_reason") or r.get("fault_error") or ""
        settle = r["settle_s"] if r["settled"] else "NOT SETTLED"
        lines.append(
            f"| {r['replay']} | {r['fault']} | {r['host']} | {r['duration_s']} | {settle} | "
            f"{len(r['violations'])} | {note} |"
        )
    lines += [
        "",
        "| fault | trials | violations | unsettled | settle s median | settle s max |",
        "|---|---|---|---|---|---|",
    ]
    for fault, f in summary["per_fault"].items():
        lines.append(
            f"| {fault} | {f['trials']} | {f['violations']} | {f['unsettled']} | "
            f"{f['settle_s_median']} | {f['settle_s_max']} |"
        )
    return "\n".join(lines) + "\n"


def keep(lab, out_dir):
    """Copy the Salt logs, the failover audit trail and the recorded events into ``out_dir``
    (the evidence behind the trials' records outlives the lab)."""
    if not Path(out_dir).exists():
        return
    lab.save_logs(out_dir)
    events = lab.run_dir / "failover" / "events.jsonl"
    if events.exists():
        shutil.copy(events, Path(out_dir) / events.name)


def main(lab, *, trials, seed, faults=None, start=0, out_dir=None, settle_timeout=SETTLE_TIMEOUT):
    """``python -m lab nemesis``: build ``lab``, run the trials, report, tear it down; returns
    the process exit status (0 only with no violation and every trial settled)."""
    if missing := demo.missing_tools():
        raise LabError(f"missing lab tools {', '.join(missing)}: run `make deps` as root")
    seed = secrets.randbelow(1 << 32) if seed is None else seed
    out_dir = Path(out_dir or RUN_ROOT / "nemesis" / f"{_stamp(time.time())}-seed{seed}")
    print(f"nemesis: seed {seed} (replay with --seed {seed}); results in {out_dir}", flush=True)
    try:
        print("nemesis: building the lab, applying the formulas ...", flush=True)
        toolstack.attach(lab)
        fo = demo.prepare(lab)
        summary = run(lab, fo, trials=trials, seed=seed, out_dir=out_dir, faults=faults,
                      start=start, settle_timeout=settle_timeout)  # fmt: skip
    finally:
        keep(lab, out_dir)
        print("nemesis: tearing the lab down ...", flush=True)
        lab.down()
    print(f"results: {out_dir / 'trials.json'}, {out_dir / 'summary.md'}")
    print(final_line(summary))
    return 0 if not summary["violations"] and not summary["unsettled"] else 1
