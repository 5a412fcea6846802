"""
Run benchmarks and record their results: ``python -m bench [name ...]`` (default: all).

A benchmark is a module ``bench/<name>.py`` with ``run() -> dict`` whose result holds a
``cases`` list of flat dicts; each result is written to ``bench/results/<name>.json`` and as a
markdown table to ``bench/results/<name>.md``. Register new benchmarks in BENCHMARKS.
"""

import argparse
import importlib
import inspect
import json
import platform
import sys
import time
from pathlib import Path

from bench import report

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = ["planner", "evacuation"]
BENCHMARKS += ["lab_unavailability", "lab_bulk", "lab_http", "lab_evacuation", "lab_failover"]


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
    lines += ["", f"Recorded {result['recorded']} on {result['machine']}.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(BENCHMARKS))
    parser.add_argument("--runs", type=int, help="runs per case, for benchmarks that take it")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        takes_runs = args.runs and "runs" in inspect.signature(module.run).parameters
        result = module.run(**({"runs": args.runs} if takes_runs else {}))
        result["recorded"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        result["machine"] = f"{platform.node()} ({platform.machine()}, {platform.python_version()})"
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / f"{name}.md").write_text(markdown(name, result))
        print(markdown(name, result))
        failed += [f"{name}: {c['case']}" for c in result["cases"] if c.get("ok") is False]
    print(f"report: {report.write(RESULTS)}")
    if failed:  # targets are reported, not asserted: the report says by how much and why
        print("missed target: " + "; ".join(failed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
