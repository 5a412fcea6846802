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


class LabBench:
    """A lab that is up (``fo``: its :class:`lab.failover.Failover`) and the benchmarks' guests."""

    def __init__(self, lab, fo):
        self.lab = lab
        self.fo = fo
        self.out = lab.run_dir.parent / f"{lab.run_dir.name}-bench"

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

    def migrate(self, name, src, dst, ip=None):
        """``xenha_xen.migrate`` run by ``src``'s minion, then the lease handed to ``dst`` as
        the runner does; returns (start, end, xl migrate seconds). With ``ip``, the guest must
        answer HTTP again within 120 s, or LabError: later runs would measure a dead guest."""
        start = time.time()
        ret = self.lab.salt(src, "xenha_xen.migrate", name, dst, timeout=300).get(src)
        end = time.time()
        if not (isinstance(ret, dict) and ret.get("result")):
            raise LabError(f"{src}: xenha_xen.migrate {name} {dst}: {ret}")
        self.lab.salt(dst, "xenha_lease.acquire_domu", name, f"handover_from={src}", timeout=60)
        if ip:
            try:
                vm.wait_guest(self.lab.cli, ip, timeout=120)
            except LabError as err:
                said = f"{name} runs on {dst} but stopped answering after its live migration"
                raise LabError(f"{said} ({err}); see its console under {dst}'s xl/") from err
        return start, end, ret.get("seconds")

    def stop(self, name, host):
        """Shut ``name`` down on ``host`` (ACPI; destroyed if still up after 120 s) and release
        its lease; returns how (``shutdown`` or ``destroy``)."""
        ret = self.lab.salt(
            host, "xenha_xen.shutdown", name, "timeout=120", "force=True", timeout=300
        ).get(host)
        if not isinstance(ret, dict):
            raise LabError(f"{host}: xenha_xen.shutdown {name}: {ret}")
        self.lab.salt(host, "xenha_lease.release_domu", name, timeout=60)
        return ret["method"]

    def start(self, name, host):
        """Start ``name`` on ``host`` as the product does (lease, then ``xenha_xen.start``)."""
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
