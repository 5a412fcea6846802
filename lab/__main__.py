"""The lab CLI: ``python -m lab up|down|status|crash HOST|partition HOST|restore HOST|demo``."""

import argparse
import json
import sys

from lab import DEFAULT_RUN_DIR
from lab.cluster import Lab
from lab.hosts import LabError


def cmd_up(lab, args):
    lab.up()
    print(json.dumps(lab.status(), indent=1))


def cmd_down(lab, args):
    lab.down()


def cmd_status(lab, args):
    print(json.dumps(lab.status(), indent=1))


def cmd_crash(lab, args):
    """Power the host off without warning (every process dies, its link goes down)."""
    lab.host(args.host).power_off()


def cmd_partition(lab, args):
    """Cut the host's link; it keeps running."""
    lab.host(args.host).partition()


def cmd_restore(lab, args):
    """Power the host on if it is off, and reconnect it."""
    host = lab.host(args.host)
    host.power_on()
    host.heal()


def cmd_demo(lab, args):
    """Build the lab, apply the formulas everywhere, show the status, tear down."""
    lab.up()
    try:
        ret = lab.apply("*")
        for mid, states in sorted(ret.items()):
            ok = isinstance(states, dict) and all(s.get("result") for s in states.values())
            print(f"{mid}: state.apply {'ok' if ok else 'FAILED'}")
        print(json.dumps(lab.status(), indent=1))
    finally:
        lab.down()


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "crash": cmd_crash,
    "partition": cmd_partition,
    "restore": cmd_restore,
    "demo": cmd_demo,
}
NEEDS_HOST = {"crash", "partition", "restore"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help="the lab's folder")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fun in COMMANDS.items():
        p = sub.add_parser(name, help=(fun.__doc__ or name).splitlines()[0])
        if name in NEEDS_HOST:
            p.add_argument("host", help="a minion id, e.g. ServVirt1")
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](Lab(args.run_dir), args)
    except LabError as err:
        sys.exit(f"lab {args.command}: {err}")


if __name__ == "__main__":
    main()
