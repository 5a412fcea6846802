"""
Bulk transfer during a live migration (the thesis's Table 7), measured in the lab: the client
downloads a 16 MiB file the guest serves from RAM (``/big``, busybox httpd), one download after
the other, sampling the bytes received every 0.1 s. Per run: the rate over a quiet window, then
the rate while ``xenha_xen.migrate`` runs (from the salt call's start to its end). Reported: mean
rates, the ratio, stalls; target >= 80 % of the throughput kept.
"""

import time

from bench import lab_common
from lab.hosts import wait_for
from lab.probe import Probe, rate

QUIET_S = 6.0
TARGET = 0.80


def measure(bench, guest, host, out_dir):
    """One run; returns (row, host afterwards)."""
    opts = {"ping": False, "interval": 0.1, "timeout": 5}
    with Probe(bench.lab.cli, guest[1], out_dir, "bulk", **opts) as probe:
        # the guest writes /big a few seconds after boot: wait until data flows
        wait_for(lambda: probe.bulk() and probe.bulk()[-1][1] > 1 << 20, 60, "/big to flow")
        quiet = time.time()
        time.sleep(QUIET_S)
        start, end, xl_s = bench.migrate(guest[0], host, lab_common.OTHER[host], guest[1])
        time.sleep(1)
    samples = sorted(probe.bulk())
    errors = [r for r in probe.records() if "error" in r and r["t"] >= start]
    quiet_rate = rate(samples, quiet, quiet + QUIET_S)
    during = rate(samples, start, end)
    return {
        "quiet_mb_s": round(quiet_rate / 1e6, 2) if quiet_rate else None,
        "migrating_mb_s": round(during / 1e6, 2) if during is not None else None,
        "ratio": round(during / quiet_rate, 3) if quiet_rate and during is not None else None,
        "window_s": round(end - start, 2),
        "xl_migrate_s": xl_s,
        "download_errors": len(errors),
    }, lab_common.OTHER[host]


def run(runs=4, bench=None, guest=lab_common.GUEST, *, deadline=None):
    """``runs`` migrations under a download (a broken run is recorded and the guest started
    afresh; none starts after ``deadline``); returns the result `python -m bench` records."""
    bench = bench or lab_common.shared()
    bench.alone(guest[0])
    rows, failures, cut = bench.repeat("bulk", runs, guest, measure, deadline)
    quiet = lab_common.stats([r["quiet_mb_s"] for r in rows])
    during = lab_common.stats([r["migrating_mb_s"] for r in rows])
    ratio = lab_common.stats([r["ratio"] for r in rows])
    cases = [
        {
            "case": "16 MiB downloads, live migration under way vs quiet",
            "runs": len(rows),
            "quiet_mb_s": quiet["mean"],
            "migrating_mb_s": during["mean"],
            "ratio_mean": ratio["mean"],
            "ratio_min": ratio["min"],
            "window_s_mean": lab_common.stats([r["window_s"] for r in rows])["mean"],
            "broken_runs": len(failures),
            "download_errors": sum(r["download_errors"] for r in rows),
            "target": f">= {TARGET:.0%}",
            "ok": ratio["mean"] is not None and ratio["mean"] >= TARGET,
        }
    ]
    about = (
        "HTTP downloads of a 16 MiB file held in the guest's RAM, back to back from the lab's "
        "client; rate over a quiet 6 s window vs over the salt xenha_xen.migrate call "
        f"(includes Salt's job round trip); means of {len(rows)} runs."
    )
    return {
        "benchmark": "lab_bulk",
        "about": about,
        "cases": cases,
        "runs": rows,
        "broken_runs": failures,
        "cut": cut,
    }
