"""
Unavailability while a domU moves (the thesis's Table 5), measured in the lab: the client pings
the guest every 10 ms (and GETs /cgi-bin/state every 20 ms) while it is (a) rebooted (clean
shutdown and start on the same host), (b) moved cold (shutdown, start on the other host), (c)
live-migrated by xenha (``xenha_xen.migrate``): the live migration 10 times by default, the
reboot and the cold move 3 times (a full boot each). Per case, over the runs: sent, received, lost,
loss %, the longest time without a reply (mean, std dev, median) and failed HTTP requests.
Target: live-migration blackout <= 50 ms median with no failed HTTP request.
"""

import time

from bench import lab_common
from lab import vm
from lab.probe import Probe, analyze_http

TARGET_MS = 50.0
CASES = ("reboot", "cold migration", "live migration")


def _move(bench, guest, case, host):
    """Do one ``case`` to the guest on ``host``; returns (its host afterwards, how it was
    stopped: ``live``, ``shutdown`` or ``destroy`` when ACPI did not stop it in time)."""
    other = lab_common.OTHER[host]
    if case == "live migration":
        bench.migrate(guest[0], host, other, guest[1])
        return other, "live"
    how = bench.stop(guest[0], host)
    target = host if case == "reboot" else other
    bench.start(guest[0], target)
    vm.wait_guest(bench.lab.cli, guest[1], timeout=300)
    return target, how


def measure(bench, guest, case, host, out_dir):
    """One run of ``case``; returns (row, host afterwards)."""
    with Probe(bench.lab.cli, guest[1], out_dir, "watch", interval=0.02, timeout=2) as probe:
        time.sleep(1)
        start = time.time()
        host, how = _move(bench, guest, case, host)
        end = time.time()
        time.sleep(1.5)
    ping = probe.ping(start=start - 1)
    http = analyze_http(probe.records())
    row = {
        "sent": ping["sent"],
        "received": ping["received"],
        "lost": ping["lost"],
        "loss_pct": ping["loss_pct"],
        "longest_gap_ms": ping["longest_gap_ms"],
        "http_requests": http["requests"],
        "http_failed": http["failed"],
        "move_s": round(end - start, 2),
        "stopped_by": how,
    }
    return row, host


def run(runs=10, bench=None, guest=lab_common.GUEST, *, boot_runs=10, cases=CASES, deadline=None):
    """The live migration ``runs`` times, the reboot and the cold move ``boot_runs`` times
    (each a full boot of an emulated guest), only ``cases``; a broken run is recorded and the
    guest started afresh; no new round starts after ``deadline`` (epoch s). Returns the result
    `python -m bench` records."""
    bench = bench or lab_common.shared()
    bench.alone(guest[0])
    host = bench.guest(*guest)
    raw = {case: [] for case in cases}
    failures, cut = [], None
    for i in range(runs):
        if lab_common.out_of_time(deadline):
            cut = f"time budget: stopped after {i} of {runs} rounds"
            break
        for case in cases if i < boot_runs else [c for c in cases if c == "live migration"]:
            out = bench.out / "unavailability" / f"{case.replace(' ', '-')}-{i}"
            row, host = bench.attempt(guest, out, failures, measure, bench, guest, case, host, out)
            if row:
                raw[case].append(row)
    cases = []
    for case, rows in raw.items():
        if not rows:
            cases.append(
                {"case": case, "runs": 0, "ok": False if case == "live migration" else None}
            )
            continue
        gap = lab_common.stats([r["longest_gap_ms"] for r in rows])
        mean = {
            k: lab_common.stats([r[k] for r in rows])["mean"] for k in rows[0] if k != "stopped_by"
        }
        cases.append(
            {
                "case": case,
                "runs": len(rows),
                "sent": mean["sent"],
                "received": mean["received"],
                "lost": mean["lost"],
                "loss_pct": mean["loss_pct"],
                "blackout_mean_ms": gap["mean"],
                "blackout_stdev_ms": gap["stdev"],
                "blackout_median_ms": gap["median"],
                "blackout_max_ms": gap["max"],
                "http_failed": sum(r["http_failed"] for r in rows),
                "http_requests": sum(r["http_requests"] for r in rows),
                "move_s_mean": mean["move_s"],
                "destroyed": sum(r["stopped_by"] == "destroy" for r in rows),
                "target": f"<= {TARGET_MS:g} ms, 0 failed" if case == "live migration" else "",
                "ok": (
                    gap["median"] is not None
                    and gap["median"] <= TARGET_MS
                    and sum(r["http_failed"] for r in rows) == 0
                )
                if case == "live migration"
                else None,
            }
        )
    about = (
        "Ping every 10 ms from the lab's client while the domU (128 MiB, QEMU/TCG, iSCSI disk) "
        "is rebooted, moved cold or live-migrated by xenha_xen.migrate; blackout = the longest "
        "time without a ping reply (one interval when nothing is lost); means over the runs."
    )
    return {
        "benchmark": "lab_unavailability",
        "about": about,
        "cases": cases,
        "runs": raw,
        "broken_runs": failures,
        "cut": cut,
    }
