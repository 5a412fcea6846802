"""
Planner benchmark: time xenha_placement.place on a synthetic cluster of 1,000 hosts running
20,000 domUs, placing the domUs of evacuated/failed hosts (the runner's real use) and, as the
worst case, all 20,000 at once. Several runs, median reported; target <= 1 s.
"""

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_utils"))

import xenha_placement  # noqa: E402

TARGET_S = 1.0


def synthetic(n_hosts=1000, n_domus=20000, seed=1):
    """A reproducible cluster: 64-256 GiB hosts, 256 MiB-8 GiB domUs, some anti-affinity pairs."""
    rng = random.Random(seed)
    hosts = {}
    for i in range(n_hosts):
        total = rng.choice([65536, 131072, 262144])
        hosts[f"host{i:04d}"] = {
            "state": "up" if rng.random() > 0.02 else rng.choice(["maintenance", "fenced"]),
            "total_memory_mib": total,
            "free_memory_mib": total,
            "memory_reserve_mib": 1024,
        }
    names = list(hosts)
    domus = {}
    for i in range(n_domus):
        where = names[i % n_hosts]
        mem = rng.choice([256, 512, 1024, 2048, 4096, 8192])
        hosts[where]["free_memory_mib"] = max(hosts[where]["free_memory_mib"] - mem, 0)
        domus[f"vm{i:05d}"] = {
            "host": where,
            "memory_mib": mem,
            "priority": rng.randint(0, 100),
            "preferred_host": rng.choice(names) if rng.random() < 0.3 else None,
            "anti_affinity": [f"vm{rng.randrange(n_domus):05d}"] if rng.random() < 0.1 else [],
        }
    return {"hosts": hosts, "domus": domus}


def _median_time(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def run(runs=5, n_hosts=1000, n_domus=20000):
    """Run the planner benchmark; returns a result dict (also what `python -m bench` records)."""
    snap = synthetic(n_hosts, n_domus)
    hosts = snap["hosts"]
    squeezed = {h: {**s, "free_memory_mib": s["free_memory_mib"] // 40} for h, s in hosts.items()}
    tight = {"hosts": squeezed, "domus": snap["domus"]}
    failed = sorted(snap["hosts"])[:50]
    gone = set(failed)
    scenarios = [
        # the runner's real use: all domUs of 50 failed hosts (~1,000) go elsewhere
        ("50 hosts fail", snap, [d for d, s in snap["domus"].items() if s["host"] in gone], failed),
        # the worst cases: every domU at once, with room, and with most finding none
        ("replan all domUs", snap, list(snap["domus"]), []),
        ("replan all, memory tight", tight, list(snap["domus"]), []),
    ]
    cases = []
    for label, cluster, todo, exclude in scenarios:
        median, times, plan = _median_time(
            lambda c=cluster, t=todo, e=exclude: xenha_placement.place(c, t, exclude=e), runs
        )
        cases.append(
            {
                "case": label,
                "hosts": n_hosts,
                "domus_in_cluster": n_domus,
                "domus_to_place": len(todo),
                "placed": len(plan["placement"]),
                "unplaced": len(plan["unplaced"]),
                "median_s": round(median, 4),
                "max_s": round(max(times), 4),
                "target_s": TARGET_S,
                "ok": median <= TARGET_S,
            }
        )
    about = (
        "xenha_placement.place on a synthetic, seeded cluster: time to plan, median of "
        f"{runs} runs; target <= {TARGET_S} s."
    )
    return {"benchmark": "planner", "about": about, "cases": cases}
