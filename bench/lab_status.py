"""
``salt-run xenha.status`` as an operator runs it during an incident: wall clock of the whole
call (salt-run's start-up included) with every host up, then with one VM host powered off
without warning, from right after the power-off on (the first calls come before the failover
has marked the host, the later ones after). Median of each; target with a host down <= 3 s
median. The powered-off host is the one without the benchmark guest, and is powered on again.
"""

import time

from bench import lab_common

TARGET_S = 3.0


def _timed_status(bench):
    start = time.perf_counter()
    status = bench.lab.salt_run("xenha.status", timeout=120)
    return round(time.perf_counter() - start, 3), status


def _marks(bench):
    journal = bench.lab.master.root / "var/cache/salt/master/xenha/hoststate.json"
    return journal.read_text() if journal.exists() else ""


def run(runs=6, bench=None, guest=lab_common.GUEST):
    """``runs`` status calls all up, then ``runs`` with a host off; the recorded result."""
    bench = bench or lab_common.shared()
    name, ip = guest
    host = bench.where(name) or bench.guest(name, ip, lab_common.V1)
    down = lab_common.OTHER[host]
    up_s = [_timed_status(bench)[0] for _ in range(runs)]
    bench.lab.hosts[down].power_off()
    off_s, rows = [], []
    try:
        for _ in range(runs):
            seconds, status = _timed_status(bench)
            row = next(h for h in status.get("hosts", []) if h["host"] == down)
            off_s.append(seconds)
            rows.append({"seconds": seconds, "state": row["state"], "seen": row["seen"]})
    finally:
        bench.power_on(down)
    cases = []
    for case, values in (("all up", up_s), (f"{down} powered off", off_s)):
        st = lab_common.stats(values)
        target = case != "all up"
        cases.append(
            {
                "case": case,
                "runs": len(values),
                "median_s": st["median"],
                "p90_s": lab_common.p90(values),
                "min_s": st["min"],
                "max_s": st["max"],
                "target": f"<= {TARGET_S:g} s median" if target else "",
                "ok": (st["median"] is not None and st["median"] <= TARGET_S) if target else None,
            }
        )
    return {
        "about": __doc__.strip(),
        "cases": cases,
        "down_calls": rows,
        "marks_after": _marks(bench),
    }
