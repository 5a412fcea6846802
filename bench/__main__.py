"""
Run benchmarks and record their results: ``python -m bench [name ...]`` (default: all).

A benchmark is a module ``bench/<name>.py`` with ``run() -> dict`` whose result holds a
``cases`` list of flat dicts; each result is written to ``bench/results/<name>.json`` and as a
markdown table to ``bench/results/<name>.md``. Register new benchmarks in BENCHMARKS.

The whole run keeps to a time budget (``--budget`` minutes): each benchmark that takes a
``deadline`` gets its share of what is left (by ESTIMATE_S) and starts no run after it; a
benchmark that fails is recorded with its error and the next one runs.
"""

import argparse
import importlib
import inspect
import json
import platform
import signal
import sys
import time
import traceback
from pathlib import Path

from bench import report

RESULTS = Path(__file__).resolve().parent / "results"
# those that take no deadline first: the lab benchmarks that do take one (their runs stop at
# their share of the budget) soak up what is left, so the whole run ends within the budget
BENCHMARKS = ["planner", "evacuation", "lab_status", "lab_evacuation", "lab_failover"]
BENCHMARKS += ["lab_unavailability", "lab_bulk", "lab_http"]
# seconds each takes with its default runs on the 2-core machine, quiet (the lab's start-up in
# the first lab benchmark): the budget is shared out in these proportions
ESTIMATE_S = {
    "planner": 30,
    "evacuation": 300,
    "lab_unavailability": 420,
    "lab_bulk": 90,
    "lab_http": 90,
    "lab_evacuation": 300,
    "lab_status": 90,  # 12 status calls and a host's power-off and -on
    "lab_failover": 450,  # 10 crashes, each host powered on again after it
}
BUDGET_MIN = 27.0  # make bench must end within 30 minutes, the lab's teardown included


def markdown(name, result):
    """The result's cases as a markdown table (columns in the order of the first case)."""
    cases = result.get("cases") or []
    lines = [f"# {name}", "", result.get("about", ""), ""]
    if cases:
        cols = list(cases[0])
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for case in cases:
            lines.append("| " + " | ".join(str(case.get(c, "")) for c in cols) + " |")
    if result.get("error"):
        lines += ["", f"Not completed: {result['error']}"]
    for broken in result.get("broken_runs") or []:
        lines += ["", f"Broken run {broken['run']} (left out, guest restarted): {broken['reason']}"]
    if result.get("cut"):
        lines += ["", f"Cut short: {result['cut']}."]
    lines += [
        "",
        f"Recorded {result['recorded']} on {result['machine']} in {result['wall_s']} s.",
        "",
    ]
    return "\n".join(lines)


class OutOfBudget(BaseException):  # noqa: N818 -- not an Exception: no run may retry past it
    """The whole run's time budget ran out while a benchmark was running."""


def _out_of_budget(*_):
    raise OutOfBudget("the time budget ran out while it ran")


def run_one(name, runs, deadline, end=None):
    """One benchmark's result; a failure becomes a result that says why (no cases). At ``end``
    (epoch s) a benchmark still running is interrupted (SIGALRM), so the run keeps its budget."""
    module = importlib.import_module(f"bench.{name}")
    params = inspect.signature(module.run).parameters
    kwargs = {"runs": runs} if runs and "runs" in params else {}
    if deadline and "deadline" in params:
        kwargs["deadline"] = deadline
    if end:
        signal.signal(signal.SIGALRM, _out_of_budget)
        signal.setitimer(signal.ITIMER_REAL, max(end - time.time(), 1))
    try:
        return module.run(**kwargs)
    except (Exception, OutOfBudget) as err:  # noqa: BLE001 -- recorded; the others still run
        traceback.print_exc()
        return {"benchmark": name, "about": "did not complete", "cases": [], "error": repr(err)}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(BENCHMARKS))
    parser.add_argument("--runs", type=int, help="runs per case, for benchmarks that take it")
    parser.add_argument(
        "--budget",
        type=float,
        default=BUDGET_MIN,
        help=f"minutes for the whole run (default {BUDGET_MIN:g}; 0: no limit)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    RESULTS.mkdir(exist_ok=True)
    names = args.names or BENCHMARKS
    end = time.time() + 60 * args.budget if args.budget else None
    failed, timings = [], {}
    for i, name in enumerate(names):
        started = time.time()
        deadline = None
        if end:  # this benchmark's share of what is left, the rest kept for those after it
            share = ESTIMATE_S[name] / sum(ESTIMATE_S[n] for n in names[i:])
            deadline = started + (end - started) * share
        if end and end - started < ESTIMATE_S[name] / 2:  # would overrun the budget
            result = {"benchmark": name, "about": "not run", "cases": [], "error": "time budget"}
        else:
            result = run_one(name, args.runs, deadline, end)
        timings[name] = round(time.time() - started, 1)
        result["recorded"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        result["machine"] = f"{platform.node()} ({platform.machine()}, {platform.python_version()})"
        result["wall_s"] = timings[name]
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / f"{name}.md").write_text(markdown(name, result))
        print(markdown(name, result), flush=True)
        failed += [f"{name}: {c['case']}" for c in result["cases"] if c.get("ok") is False]
        failed += [f"{name}: {result['error']}"] if result.get("error") else []
    print(f"report: {report.write(RESULTS)}")
    print("wall time per benchmark (s): " + ", ".join(f"{n} {t}" for n, t in timings.items()))
    if failed:  # targets are reported, not asserted: the report says by how much and why
        print("missed target or not completed: " + "; ".join(failed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
