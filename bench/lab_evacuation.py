"""
Evacuation overhead in the lab (the stand-in version is bench/evacuation.py): ``GUESTS`` domUs
run on ServVirt1. Per run: each is moved to ServVirt2 and back with the lab's ``xl migrate``
alone, run inside the host (the raw migration time, no Salt); then ``salt-run xenha.evacuate
ServVirt1 parallel=1`` (its makespan: wall clock of the whole call, planning, Salt round trips,
confirmations, lease hand-over) and ``salt-run xenha.restore ServVirt1 move_back=True``.
Overhead = makespan / sum of the raw ServVirt1 -> ServVirt2 times - 1; target <= 10 %. Also
``moves_sum_s``: the sum of the result table's ``duration_s`` (each move from its journal entry
to its confirmation on the target, lease handed over), i.e. the runner's own time per move
without the salt-run start-up, pillar compile and snapshot; ``moves_overhead_pct`` against the
same raw sum.

``per_move_s``: where a move's time went, the median over every move of the run's phases,
from the timeline the runner keeps in the evacuation journal (``timeline``, docs/runner.md):
``job_start`` (the migrate job's publication and start on the source minion, from the move's
journal entry), ``toolstack`` (``xl migrate`` inside the job), ``source_listing`` (the
listing that confirms the domU left), ``return`` (the job's answer back in the runner),
``arrival_wait`` (waiting for the target's arrival watch after that), ``journal`` (the
move's journal entries and events); ``target_looks``: the watch's listings on the target.
``fixed_s``: the whole call's time outside the moves (startup: salt-run's start, the pillar
and the maintenance mark; planning: the snapshot and the plan; other; exit: salt-run's end).
"""

import json
import time

from bench import lab_common
from lab import toolstack, vm
from lab.hosts import LabError

V1, V2 = lab_common.V1, lab_common.V2
GUESTS = {f"evac{i}": f"10.99.0.{120 + i}" for i in range(1, 4)}
TARGET = 0.10


def _raw(bench, name, src, dst):
    """Seconds the lab's xl alone takes to live-migrate ``name`` (inside ``src``). The sanlock
    lease goes with it, handed over outside the timed part as the runner does: moved without
    it, the guest would come back to a host whose keeper let its lease go, and the
    evacuation's own hand-over would then refuse to move it."""
    bench.fo.bridge(name, src, dst)
    start = time.perf_counter()
    toolstack.xl(bench.lab.hosts[src], "migrate", name, dst, timeout=300)
    took = time.perf_counter() - start
    bench.fo.arrived(name, src, dst)
    return took


def _runner(bench, fun, *args):
    start = time.perf_counter()
    answer = bench.lab.salt_run(fun, *args, timeout=900)
    if not isinstance(answer, dict) or not isinstance(answer.get("result"), list):
        raise LabError(f"salt-run {fun} {' '.join(args)}: {answer}")
    return time.perf_counter() - start, answer["result"]


PHASES = (
    ("job_start", None, "job_started"),
    ("toolstack", "job_started", "toolstack_done"),
    ("source_listing", "toolstack_done", "listed"),
    ("return", "listed", "migrate_returned"),
    ("arrival_wait", "migrate_returned", "confirmed"),
)


def phases(entry):
    """One migrated move's journal entry -> {phase: seconds} (empty without a timeline)."""
    line = entry.get("timeline") or {}
    if not all(mark in line for _, _, mark in PHASES):
        return {}
    out = {name: round(line[end] - (line[start] if start else 0), 3) for name, start, end in PHASES}
    out["journal"] = round(entry.get("duration_s", 0) - line["confirmed"], 3)
    out["target_looks"] = line.get("target_looks")
    return out


def _journal(bench, host):
    path = bench.lab.master.root / "var/cache/salt/master/xenha" / f"evacuate-{host}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fixed(journal, called, ended, moves):
    """The whole call's time outside the moves: ``startup`` (salt-run's start, the pillar, the
    maintenance mark: from the call to the journal's start), ``planning`` (snapshot and plan),
    ``other`` (the rest in the runner: records, events), ``exit`` (the end of the journal to
    salt-run's exit and its output)."""
    if not all(isinstance(journal.get(k), float) for k in ("started", "planned", "finished")):
        return {}
    return {
        "startup": round(journal["started"] - called, 3),
        "planning": round(journal["planned"] - journal["started"], 3),
        "other": round(journal["finished"] - journal["planned"] - moves, 3),
        "exit": round(ended - journal["finished"], 3),
    }


def measure(bench, guests):
    """One run with every guest on ServVirt1; returns the row."""
    before = {n: vm.wait_guest(bench.lab.cli, ip) for n, ip in guests.items()}
    raw = []
    for name in guests:
        raw.append(_raw(bench, name, V1, V2))
        _raw(bench, name, V2, V1)
    called = time.time()
    makespan, table = _runner(bench, "xenha.evacuate", V1, "parallel=1")
    ended = time.time()
    moved = [r["domu"] for r in table if r["outcome"] == "migrated" and r["to"] == V2]
    moves = sum(r.get("duration_s") or 0 for r in table if r["domu"] in guests)
    journal = _journal(bench, V1)  # restore removes it
    entries = (journal.get("domus") or {}).items()
    split = [phases(e) for n, e in sorted(entries) if n in guests and e["outcome"] == "migrated"]
    toolstack_sum = sum(e.get("toolstack_s") or 0 for n, e in entries if n in guests)
    after = {n: vm.wait_guest(bench.lab.cli, ip) for n, ip in guests.items()}
    kept = all(after[n]["bootid"] == before[n]["bootid"] for n in guests)
    back_s, back = _runner(bench, "xenha.restore", V1, "move_back=True")
    returned = [r["domu"] for r in back if r["outcome"] == "migrated" and r["to"] == V1]
    return {
        "raw_s": [round(r, 3) for r in raw],
        "raw_sum_s": round(sum(raw), 3),
        "makespan_s": round(makespan, 3),
        "overhead_pct": round(100 * (makespan / sum(raw) - 1), 1),
        "moves_sum_s": round(moves, 3),
        "moves_overhead_pct": round(100 * (moves / sum(raw) - 1), 1),
        "toolstack_sum_s": round(toolstack_sum, 3),
        "per_move_s": [p for p in split if p],
        "fixed_s": _fixed(journal, called, ended, moves),
        "migrated": len(moved),
        "kept_running": kept,
        "restore_s": round(back_s, 3),
        "moved_back": len(returned),
        "table": table,
    }


def _medians(split):
    """{phase: median seconds} over the moves' phase splits ({} when there are none)."""
    names = [name for name, _, _ in PHASES] + ["journal", "target_looks"]
    medians = {n: lab_common.stats([p.get(n) for p in split])["median"] for n in names}
    return {n: m for n, m in medians.items() if m is not None}


def run(runs=2, bench=None, guests=GUESTS):
    """``runs`` evacuations of ``guests``; returns the result `python -m bench` records."""
    bench = bench or lab_common.shared()
    # ServVirt1 runs exactly ``guests``: others would be evacuated too and skew the makespan
    listed = bench.lab.salt(V1, "xenha_xen.list_domains", timeout=60).get(V1) or {}
    for name in set(listed.get("domus") or {}) - set(guests):
        bench.migrate(name, V1, V2)
    started = [name for name in guests if bench.where(name) is None]
    for name, ip in guests.items():
        where = bench.guest(name, ip, V1)
        if where != V1:
            bench.migrate(name, where, V1)
    rows = [measure(bench, guests) for _ in range(runs)]
    for name in started:  # the guests it started go: they would load the later benchmarks
        bench.stop(name, bench.where(name))
    over = lab_common.stats([r["overhead_pct"] for r in rows])
    per_move = _medians([p for r in rows for p in r["per_move_s"]])
    fixed = {
        k: lab_common.stats([r["fixed_s"].get(k) for r in rows])["median"]
        for k in ("startup", "planning", "other", "exit")
    }
    cases = [
        {
            "case": f"{len(guests)} domUs, parallel 1",
            "runs": len(rows),
            "raw_sum_s": lab_common.stats([r["raw_sum_s"] for r in rows])["mean"],
            "makespan_s": lab_common.stats([r["makespan_s"] for r in rows])["mean"],
            "overhead_pct_mean": over["mean"],
            "overhead_pct_median": over["median"],
            "moves_sum_s": lab_common.stats([r["moves_sum_s"] for r in rows])["mean"],
            "moves_overhead_pct_median": lab_common.stats([r["moves_overhead_pct"] for r in rows])[
                "median"
            ],
            "toolstack_sum_s": lab_common.stats([r["toolstack_sum_s"] for r in rows])["mean"],
            # one cell in the .md table: "phase seconds, ..." (the numbers: per_move_s below)
            "per_move_median_s": ", ".join(f"{k} {v}" for k, v in per_move.items()),
            "fixed_median_s": ", ".join(f"{k} {v}" for k, v in fixed.items()),
            "per_domu_overhead_s": round(
                sum(r["makespan_s"] - r["raw_sum_s"] for r in rows) / len(rows) / len(guests), 3
            ),
            "all_migrated_and_kept": all(
                r["migrated"] == len(guests) and r["kept_running"] for r in rows
            ),
            "restore_s": lab_common.stats([r["restore_s"] for r in rows])["mean"],
            "target_pct": round(100 * TARGET),
            "ok": over["median"] is not None and over["median"] <= 100 * TARGET,
        }
    ]
    about = (
        "salt-run xenha.evacuate ServVirt1 parallel=1 (makespan, whole call) against the sum of "
        "the same live migrations done by the lab's xl alone inside the host; moves_sum_s: the "
        "runner's per-move durations summed (no salt-run start-up, pillar or snapshot); "
        "toolstack_sum_s: xl migrate's own time inside the evacuation; per_move_s: median "
        "seconds of each phase of a move (job_start, toolstack, source_listing, return, "
        "arrival_wait, journal) and the arrival watch's listings; "
        f"QEMU/TCG guests, 128 MiB, iSCSI disks; {runs} runs."
    )
    return {
        "benchmark": "lab_evacuation",
        "about": about,
        "cases": cases,
        "per_move_s": per_move,
        "fixed_s": fixed,
        "runs": rows,
    }
