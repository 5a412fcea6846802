"""
What the lab benchmarks (``bench/lab_*.py``) share: one lab per ``python -m bench`` process,
its guests, and the moves they measure.

:func:`shared` builds the lab the first time a lab benchmark asks for it (``run/bench-lab``,
namespace prefix ``xbl`` or ``$XENHA_BENCH_PREFIX``: it never meets a lab of ``python -m lab``)
with the lab toolstack, BMCs and automatic failover, and tears it down when the process exits
(also on Ctrl-C or SIGTERM). Tests hand a :class:`LabBench` of their own lab to the benchmarks'
``run(bench=...)`` instead.
"""

import atexit
import math
import os
import shutil
import signal
import statistics
import sys
import time

from lab import RUN_ROOT, demo, toolstack, vm
from lab.cluster import Lab
from lab.hosts import LabError

V1, V2 = demo.V1, demo.V2
OTHER = {V1: V2, V2: V1}
GUEST = ("bench01", "10.99.0.110")  # the guest every lab benchmark moves (name, IP)
_SHARED = {}  # the process's LabBench, under "bench"
# what a guest kernel prints when it is broken (its console has only warnings and worse)
TROUBLE = ("Kernel panic", "BUG:", "kernel BUG", "general protection", "soft lockup", "Oops")

# what a guest that broke after the lab xl's live migration is said to have done: TCG's dirty
# page tracking can corrupt a migrated guest's memory (docs/lab.md), with a kernel message or
# silently (it stops answering). A lab artefact, not a fault of the code under test
TCG_ARTEFACT = "after its live migration"


class LabBench:
    """A lab that is up (``fo``: its :class:`lab.failover.Failover`) and the benchmarks' guests."""

    def __init__(self, lab, fo):
        self.lab = lab
        self.fo = fo
        self.out = lab.run_dir.parent / f"{lab.run_dir.name}-bench"
        self.broken = 0  # broken runs in a row (attempt)

    def where(self, name):
        """The powered VM host whose ``xl list`` shows domU ``name``, also mid-migration as
        ``name--incoming``/``--migratedaway`` (None if none; LabError if several)."""
        hosts = {
            host_id
            for host_id in (V1, V2)
            if self.lab.hosts[host_id].is_powered()
            and name in _listed(toolstack.xl(self.lab.hosts[host_id], "list", check=False).stdout)
        }
        if len(hosts) > 1:
            raise LabError(f"{name} runs on {sorted(hosts)} at once")
        return next(iter(hosts), None)

    def fresh(self, name, ip, host=V1):
        """Start ``name`` anew on ``host`` (shut down first wherever it runs); returns host."""
        where = self.where(name)
        if where:
            self.stop(name, where)
        return self.guest(name, ip, host)

    def guest(self, name, ip, host=V1):
        """Make sure domU ``name`` (at ``ip``) runs, starting it on ``host`` if it runs nowhere;
        returns the host it runs on, once it answers HTTP."""
        where = self.where(name)
        if where is None:
            self.fo.define_domu(name, ip, preferred_host=host)
            self.fo.refresh()
            self.fo.start_domu(name, host)
            where = host
        vm.wait_guest(self.lab.cli, ip, timeout=180)
        return where

    def alone(self, name):
        """Destroy every other domU of the lab (and release its lease): what an earlier
        benchmark that broke off left running would take CPU from this one's guest."""
        for host_id in (V1, V2):
            host = self.lab.hosts[host_id]
            if not host.is_powered():
                continue
            for other in sorted(_listed(toolstack.xl(host, "list", check=False).stdout) - {name}):
                print(f"bench: {other} left running on {host_id}; destroying it", flush=True)
                for row in toolstack.xl(host, "list", check=False).stdout.splitlines()[1:]:
                    if row.split() and row.split()[0].split("--")[0] == other:
                        toolstack.xl(host, "destroy", row.split()[0], check=False)
                self.fo.release(other, host_id)

    def migrate(self, name, src, dst, ip=None):
        """``xenha_xen.migrate`` run by ``src``'s minion, the sanlock lease handed to ``dst``
        around it as the runner does; returns (start, end, xl migrate seconds). With ``ip``,
        the guest must answer HTTP again within 60 s, or LabError: later runs would measure a
        dead guest."""
        self.fo.bridge(name, src, dst)
        start = time.time()
        ret = self.lab.salt(src, "xenha_xen.migrate", name, dst, timeout=300).get(src)
        end = time.time()
        if not (isinstance(ret, dict) and ret.get("result")):
            raise LabError(f"{src}: xenha_xen.migrate {name} {dst}: {ret}")
        self.fo.arrived(name, src, dst)
        if ip:
            self.answering(name, ip, dst, TCG_ARTEFACT)
        return start, end, ret.get("seconds")

    def answering(self, name, ip, host, when, timeout=60):
        """Wait until the guest answers HTTP again (it does within a second or two when all is
        well), or LabError quoting its kernel's complaint as soon as its console shows one."""
        deadline = time.time() + timeout
        while True:
            state = vm.guest_state(self.lab.cli, ip)
            if "error" not in state:
                return state
            trouble = self.console_trouble(name, host)
            if trouble or time.time() > deadline:
                said = f"{name} on {host} stopped answering {when}"
                why = f"its kernel: {trouble}" if trouble else f"{state['error']}, {timeout} s"
                raise LabError(f"{said} ({why}); console under {host}'s xl/")
            time.sleep(0.5)

    def console_trouble(self, name, host):
        """The first line of a kernel panic, BUG or lockup on ``name``'s console on ``host``."""
        for rec in sorted((self.lab.hosts[host].root / "xl").glob("d*.json")):
            console = rec.with_suffix(".console")
            try:
                if f'"{name}' not in rec.read_text() or not console.exists():
                    continue
                lines = console.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                if any(mark in line for mark in TROUBLE):
                    return line.strip()[:300]
        return None

    def stop(self, name, host):
        """Shut ``name`` down on ``host`` (ACPI; destroyed if still up after 120 s) and release
        its lease; returns how (``shutdown`` or ``destroy``)."""
        ret = self.lab.salt(
            host, "xenha_xen.shutdown", name, "timeout=120", "force=True", timeout=300
        ).get(host)
        if not isinstance(ret, dict):
            raise LabError(f"{host}: xenha_xen.shutdown {name}: {ret}")
        self.fo.release(name, host)
        return ret["method"]

    def start(self, name, host):
        """Start ``name`` on ``host`` as the product does (``xenha_xen.start``: lease first)."""
        self.fo.start_domu(name, host)

    def power_on(self, host_id, timeout=300):
        """Power a crashed VM host on, wait for its minion and let the runner see it is back."""
        host = self.lab.hosts[host_id]
        if not host.is_powered():
            host.power_on()
        self.lab.wait_minions([host_id], timeout=timeout)
        self.fo.ensure_services()
        self.lab.salt_run("xenha.failover_resume", timeout=timeout)

    def all_up(self):
        for host_id in (V1, V2):
            self.power_on(host_id)

    def recover(self, name, ip, out_dir):
        """After a broken run: keep the consoles of every copy of ``name`` in ``out_dir``,
        destroy them, release the lease and start it afresh on V1 (a guest that wedged would
        make every later run measure nothing); returns the host, once it answers HTTP."""
        out_dir.mkdir(parents=True, exist_ok=True)
        self.all_up()
        for host_id in (V1, V2):
            host = self.lab.hosts[host_id]
            for rec in sorted((host.root / "xl").glob("d*.json")):
                console = rec.with_suffix(".console")
                if f'"{name}' in rec.read_text() and console.exists():
                    shutil.copy(console, out_dir / f"{host_id}-{console.name}")
            listed = toolstack.xl(host, "list", check=False).stdout
            for row in [line.split()[0] for line in listed.splitlines()[1:] if line.strip()]:
                if row.split("--")[0] == name:
                    toolstack.xl(host, "destroy", row, check=False)
            if host.is_powered():
                self.fo.release(name, host_id)
        return self.guest(name, ip, V1)

    def repeat(self, kind, runs, guest, measure, deadline=None):
        """``measure(self, guest, host, out_dir)`` ``runs`` times (each through :meth:`attempt`,
        into ``<out>/<kind>/run-<i>``), from wherever the guest runs; none starts after
        ``deadline``. Returns (what the unbroken runs returned, failures, why cut short or
        None)."""
        host = self.guest(*guest)
        results, failures, cut = [], [], None
        for i in range(runs):
            if out_of_time(deadline):
                cut = f"time budget: stopped after {i} of {runs} runs"
                break
            out = self.out / kind / f"run-{i}"
            got, host = self.attempt(guest, out, failures, measure, self, guest, host, out)
            if got:
                results.append(got)
        return results, failures, cut

    def attempt(self, guest, out_dir, failures, measure, *args):
        """``measure(*args)`` (one run; returns (row, host afterwards)) that may break: on an error
        its reason goes to ``failures``, the guest is started afresh and (None, its host) is
        returned. Three broken runs in a row stop the benchmark (LabError)."""
        try:
            got = measure(*args)
        except Exception as err:  # noqa: BLE001 -- a broken run is recorded, not fatal
            self.broken += 1
            reason = f"{type(err).__name__}: {err}"[:600]
            failures.append({"run": out_dir.name, "reason": reason, "at": _now()})
            print(f"bench: run {out_dir} broken ({reason}); starting the guest afresh", flush=True)
            if self.broken >= 3:
                raise LabError(f"three broken runs in a row; the last: {reason}") from err
            try:
                return None, self.recover(guest[0], guest[1], out_dir / "recovery")
            except Exception as again:  # noqa: BLE001
                raise LabError(f"{reason}; then the guest could not be restarted: {again}") from err
        self.broken = 0
        return got


def _listed(xl_list):
    """Domain names (migration suffixes stripped) in ``xl list`` output, Domain-0 left out."""
    rows = [line.split()[0] for line in xl_list.splitlines()[1:] if line.strip()]
    return {row.split("--")[0] for row in rows} - {"Domain-0"}


def shared():
    """The process's lab for the benchmarks, built on first use, removed at exit."""
    if "bench" not in _SHARED:
        prefix = os.environ.get("XENHA_BENCH_PREFIX", "xbl")  # two engineers, two bench labs
        lab = Lab(RUN_ROOT / f"bench-lab{'' if prefix == 'xbl' else '-' + prefix}", prefix=prefix)
        atexit.register(lab.down)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so atexit runs on a kill too
        _SHARED["bench"] = LabBench(lab, demo.prepare(lab))
    _SHARED["bench"].all_up()
    return _SHARED["bench"]


def _now():
    return time.strftime("%H:%M:%S", time.gmtime())


def out_of_time(deadline):
    """Whether the benchmark's share of the time budget (an epoch time or None) is used up."""
    return deadline is not None and time.time() > deadline


def stats(values):
    """mean, std dev (sample), median, min, max of ``values`` (None entries left out)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "stdev": None, "median": None, "min": None, "max": None}
    return {
        "mean": _r(statistics.fmean(vals)),
        "stdev": _r(statistics.stdev(vals)) if len(vals) > 1 else 0.0,
        "median": _r(statistics.median(vals)),
        "min": _r(min(vals)),
        "max": _r(max(vals)),
    }


def p90(values):
    vals = sorted(v for v in values if v is not None)
    return _r(vals[max(0, math.ceil(0.9 * len(vals)) - 1)]) if vals else None


def _r(x):
    return round(x, 3)
