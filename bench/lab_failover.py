"""
Automatic failover in the lab: the VM host running the guest is powered off without warning,
``runs`` times (alternating hosts). Per crash, from the recorded events (lab/failover.py) and
the client: detection (crash -> the heartbeat beacon's loss event), verification (-> the
runner's ``corroborated``: claim checked, master ping and lease look), fencing (-> ``fenced``,
IPMI through the host's BMC), restart (-> the domU started on the survivor) and HTTP (-> the
guest answers again). Median and p90 of each;
target crash -> restart <= 5 s median. The crashed host is powered on again after each run.
"""

from bench import lab_common, report
from lab import demo
from lab.hosts import LabError, wait_for

TARGET_S = 5.0
# for the lease the crashed host held to become free: its next join (a new generation) frees it
LEASE_WAIT_S = 30
STEPS = report.STEPS


def split(timeline, name, crash_to_http):
    """The failover's phases in seconds from a :meth:`lab.failover.Failover.timeline` (seconds
    since the crash for ``lost``, ``corroborated``, ``fenced``, ``domu_started:<name>``)."""
    marks = [
        timeline.get("lost"),
        timeline.get("corroborated"),
        timeline.get("fenced"),
        timeline.get(f"domu_started:{name}"),
        crash_to_http,
    ]
    phases, last = {}, 0.0
    for step, mark in zip(STEPS, marks, strict=True):
        phases[step] = round(mark - last, 2) if mark is not None and last is not None else None
        last = mark
    phases["crash_to_restart"] = marks[3]
    phases["crash_to_http"] = crash_to_http
    return phases


def _started(bench, name, host):
    """Start ``name`` on ``host``; False while sanlock refuses its lease (still held)."""
    try:
        bench.fo.start_domu(name, host)
    except LabError as err:
        if "sanlock" in str(err):
            return False
        raise
    return True


def run(runs=10, bench=None, guest=lab_common.GUEST):
    """``runs`` crashes; returns the result `python -m bench` records."""
    bench = bench or lab_common.shared()
    name, ip = guest
    # a fresh start: a migrated QEMU keeps its ``--incoming`` name, which the two-copies watch
    # (lab.failover.running_on) does not match
    host = bench.fresh(name, ip, lab_common.V1)
    rows, broken = [], []
    for i in range(runs):
        got = demo.failover(
            bench.lab, bench.fo, name, host, out_dir=bench.out / "failover" / str(i)
        )
        rows.append(
            {
                **split(got["timeline"], name, got["crash_to_http_s"]),
                "back": got["back"],
                "fence": got["timeline"].get("fence"),
                "ipmi_s": got["timeline"].get("fence_s"),
                "doubles": got["doubles"],
                # a host fenced that was not the one crashed: a false failover
                "false_failovers": sum(
                    "/fenced" in e["tag"] and not e["tag"].startswith(f"xenha/failover/{host}/")
                    for e in bench.fo.events("xenha/failover/", got["crash_at"])
                ),
                "crashed": host,
                "timeline": got["timeline"],
            }
        )
        bench.power_on(host)
        host = lab_common.OTHER[host]
        if not got["back"]:
            # not restarted in time: the crashed host, back, joined sanlock again under a new
            # generation, which frees the lease it held; start the domU on the survivor for the
            # next run (unless the runner did after all), or stop here keeping what was measured
            try:
                if bench.where(name) is None:
                    wait_for(
                        lambda h=host: _started(bench, name, h),
                        LEASE_WAIT_S,
                        f"{name}'s lease to be free for {host}",
                    )
                host = bench.guest(name, ip, host)
            except LabError as err:
                broken.append({"run": i, "reason": f"not back, and not restarted by hand: {err}"})
                break
    cases = []
    for key in (*STEPS, "crash_to_restart", "crash_to_http"):
        values = [r[key] for r in rows]
        st = lab_common.stats(values)
        is_target = key == "crash_to_restart"
        cases.append(
            {
                "case": key,
                "runs": len(rows),
                "measured": sum(v is not None for v in values),
                "median_s": st["median"],
                "p90_s": lab_common.p90(values),
                "min_s": st["min"],
                "max_s": st["max"],
                "target": f"<= {TARGET_S:g} s median" if is_target else "",
                "ok": (st["median"] is not None and st["median"] <= TARGET_S)
                if is_target
                else None,
            }
        )
    about = (
        "Power off (no warning) of the VM host running a 128 MiB QEMU/TCG guest; heartbeat "
        "beacon -> reactor -> salt-run xenha failover -> IPMI fence -> restart on the survivor. "
        f"Phases from the master's recorded events and the client's HTTP probe; {runs} crashes; "
        f"{sum(r['back'] for r in rows)} came back, {sum(r['doubles'] for r in rows)} samples "
        f"with two copies, {sum(r['false_failovers'] for r in rows)} false failovers (a host "
        "fenced that was not crashed)."
    )
    result = {"benchmark": "lab_failover", "about": about, "cases": cases, "runs": rows}
    return {**result, "broken_runs": broken} if broken else result
