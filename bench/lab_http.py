"""
HTTP under live migration (the thesis's Table 9 and Gráfico 1), measured in the lab: 10
concurrent clients from the lab's client GET a 512-byte page (busybox httpd in the guest) in a
closed loop, as ``ab -c 10`` does. Per run: a quiet window, then the window of the salt
``xenha_xen.migrate`` call. Reported as ab does: requests/s, time per request (concurrency x
time / requests), transfer rate, failed requests, and the response-time series (plotted by
bench/report.py). Target: >= 90 % of the requests/s kept, no failed request.
"""

import time

from bench import lab_common
from lab.probe import Probe, analyze_http

CONCURRENCY = 10
QUIET_S = 8.0
TARGET = 0.90


def measure(bench, guest, host, out_dir):
    """One run; returns ((row, response-time series), host afterwards)."""
    opts = {"concurrency": CONCURRENCY, "timeout": 10}
    with Probe(bench.lab.cli, guest[1], out_dir, "load", ping=False, **opts) as probe:
        time.sleep(2)  # clients connected and going
        quiet = time.time()
        time.sleep(QUIET_S)
        start, end, xl_s = bench.migrate(guest[0], host, lab_common.OTHER[host], guest[1])
        time.sleep(2)
    records = probe.records()
    normal = analyze_http(records, quiet, quiet + QUIET_S, CONCURRENCY)
    during = analyze_http(records, start, end, CONCURRENCY)
    series = [
        [round(r["t"] - quiet, 3), round(r["dt"] * 1000, 1), r["ok"]]
        for r in sorted(records, key=lambda r: r["t"])
        if r["t"] >= quiet
    ]
    row = {"normal": normal, "migrating": during, "window": [quiet, start, end], "xl_s": xl_s}
    series = {"t0": quiet, "migration": [start - quiet, end - quiet], "points": series}
    return (row, series), lab_common.OTHER[host]


def run(runs=4, bench=None, guest=lab_common.GUEST, *, deadline=None):
    """``runs`` migrations under load (a broken run is recorded and the guest started afresh;
    none starts after ``deadline``); returns the result `python -m bench` records."""
    bench = bench or lab_common.shared()
    bench.alone(guest[0])
    done, failures, cut = bench.repeat("http", runs, guest, measure, deadline)
    rows = [row for row, _ in done]
    series = done[-1][1] if done else None  # the last unbroken run's response times
    cases = []
    for phase in ("normal", "migrating"):
        got = [r[phase] for r in rows]

        def mean(key, got=got):
            return lab_common.stats([g.get(key) for g in got])["mean"]

        cases.append(
            {
                "case": phase,
                "runs": len(rows),
                "test_time_s": mean("duration_s"),
                "requests": sum(g["requests"] for g in got),
                "failed": sum(g["failed"] for g in got),
                "requests_per_s": mean("requests_per_s"),
                "time_per_request_ms": mean("time_per_request_ms"),
                "transfer_kib_s": mean("transfer_kib_s"),
                "median_ms": mean("median_ms"),
                "max_ms": lab_common.stats([g.get("max_ms") for g in got])["max"],
            }
        )
    kept = (
        cases[1]["requests_per_s"] / cases[0]["requests_per_s"]
        if cases[0]["requests_per_s"]
        else None
    )
    cases[1]["kept"] = round(kept, 3) if kept is not None else None
    cases[1]["target"] = f">= {TARGET:.0%} requests/s, 0 failed"
    cases[1]["ok"] = kept is not None and kept >= TARGET and cases[1]["failed"] == 0
    cases[0]["kept"], cases[0]["target"], cases[0]["ok"] = None, "", None
    about = (
        f"{CONCURRENCY} concurrent HTTP clients (Python, closed loop, a new connection per "
        "request) against busybox httpd in the QEMU/TCG guest; a quiet 8 s window vs the salt "
        f"xenha_xen.migrate call window; means of {len(rows)} runs. Series: the last run."
    )
    return {
        "benchmark": "lab_http",
        "about": about,
        "cases": cases,
        "runs": rows,
        "series": series,
        "broken_runs": failures,
        "cut": cut,
    }
