"""The lab CLI: ``python -m lab up|down|status|demo``, ``python -m lab VERB HOST`` and
``python -m lab salt|salt-run|salt-key ARGS...`` (run on the lab's master)."""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from lab import DEFAULT_RUN_DIR, RUN_ROOT, bmc, demo, failover, nemesis, toolstack
from lab.cluster import SALT_CLIS, Lab
from lab.hosts import LabError

DEFAULT_PREFIX = "xha"
NEMESIS_PREFIX = "xnm"  # `nemesis` builds a lab of its own unless --run-dir/--prefix say otherwise
NEMESIS_RUN_DIR = RUN_ROOT / "nemesis-lab"
WIDE = 64  # longest command `up` aligns its notes after
GLOBAL_OPTIONS = ("--run-dir", "--prefix")  # the options before the command, each with a value
# what `up` suggests next, after the lab's own options: (command, what it shows)
NEXT = [
    ("status", "power and link of every lab host"),
    ("salt-run xenha.status", "hosts, domUs, problems"),
    (f"salt-run xenha.plan {demo.V1}", f"what evacuating {demo.V1} would do"),
    (f"salt-run xenha.plan {demo.V1} failure", f"what a crash of {demo.V1} would do"),
    (f"salt-run xenha.evacuate {demo.V1}", "maintenance: live-migrate its domUs away"),
    (f"salt-run xenha.restore {demo.V1} move_back=True", "end it, bring them back"),
    (f"crash {demo.V1}", f"power it off: failover restarts its domUs on {demo.V2}"),
    ("salt-run xenha.failover_status", "the failover's progress and audit trail"),
    (f"restore {demo.V1}", "power it on again (its domUs stay where they are)"),
    ("down", "remove the lab"),
]


def summary(ret):
    """One line per minion: how many states ran, changed and failed."""
    for mid, states in sorted(ret.items()):
        if not isinstance(states, dict):
            print(f"{mid}: state.apply failed: {states}")
            continue
        changed = sum(1 for s in states.values() if s.get("changes"))
        failed = [sid.split("_|-")[1] for sid, s in states.items() if not s.get("result")]
        print(f"{mid}: {len(states)} states, {changed} changed, {len(failed)} failed", *failed)
    return all(
        isinstance(states, dict) and all(s.get("result") for s in states.values())
        for states in ret.values()
    )


def cmd_up(lab, args):
    """Build the lab, apply the formulas, switch failover on, start web01 and web02 on ServVirt1."""
    start = time.monotonic()
    step("building the lab: segment, master, hosts, minions, BMCs")
    lab.up()
    bmc.start_all(lab)
    fo = None
    if not args.no_apply:
        if not args.no_failover:
            step("switching failover on: lockspace, domUs in the pillar, the event recorder")
            fo = failover.enable_failover(lab)
        step("applying the formulas")
        if not summary(lab.converge()):
            sys.exit("lab up: state.apply failed (see above)")
        if not args.no_guests:
            step(f"starting {', '.join(demo.GUESTS)} on {demo.V1} and waiting for their HTTP")
            demo.start_guests(lab, fo)
    print(ready(lab, args, fo, time.monotonic() - start))


def step(what):
    print(f"lab up: {what} ...", flush=True)


def lab_command(args, module="lab"):
    """``python -m lab`` with the options that select this lab (none for the default lab)."""
    words = ["python", "-m", module]
    if Path(args.run_dir).resolve() != DEFAULT_RUN_DIR.resolve():
        words += ["--run-dir", args.run_dir]
    if args.prefix != DEFAULT_PREFIX:
        words += ["--prefix", args.prefix]
    return shlex.join(words)


def ready(lab, args, fo, seconds):
    """What ``up`` prints at the end: where the lab is, what runs, what to try next."""
    applied = "formulas applied" if not args.no_apply else "nothing applied (--no-apply)"
    lines = [
        f"lab up in {seconds:.0f} s: run folder {lab.run_dir}, namespaces {args.prefix}-*",
        f"{applied}; failover {'on' if fo else 'off'}",
    ]
    guests = not (args.no_apply or args.no_guests)
    if guests:
        managed = "managed by xenha" if fo else "not in the pillar: failover leaves them down"
        where = ", ".join(f"{name} {ip}" for name, ip in demo.GUESTS.items())
        lines.append(f"guests on {demo.V1}: {where} ({managed})")
    cmd = lab_command(args)
    shown = [
        (f"{cmd} {what}", note)
        for what, note in NEXT
        if fo or not what.startswith(("crash", "salt-run xenha.failover_status"))
    ]
    if guests:
        ip = next(iter(demo.GUESTS.values()))
        shown.insert(1, (f"{lab_command(args, 'lab.vm')} state {ip}", "a guest's own answer"))
    width = max(len(c) for c, _ in shown)
    if width <= WIDE:
        lines += ["next:"] + [f"  {c:<{width}}  # {note}" for c, note in shown]
    else:  # a lab with its own options: the notes go above the (long) commands
        lines += ["next:"] + [line for c, note in shown for line in (f"  # {note}", f"  {c}")]
    return "\n".join(lines)


def cmd_down(lab, args):
    """Remove every process, namespace and file of the lab (safe to repeat)."""
    lab.down()


def cmd_status(lab, args):
    """Power and link of every lab host and endpoint (JSON)."""
    print(json.dumps(lab.status(), indent=1))


def cmd_crash(lab, args):
    """Power the host off without warning (every process dies, its link goes down)."""
    lab.host(args.host).power_off()
    print(f"{args.host}: powered off without warning (every process killed, its link down)")


def cmd_partition(lab, args):
    """Cut the host's link; it keeps running."""
    lab.host(args.host).partition()


def cmd_isolate_storage(lab, args):
    """Take the shared storage (lease area, domU configs) from the host; it keeps running."""
    failover.Failover(lab).isolate_storage(args.host)


def cmd_restore(lab, args):
    """Power the host on if it is off, reconnect it and give its storage back."""
    host = lab.host(args.host)
    lab.sanlock.attach()  # a VM host's sanlock daemon, which joins the lockspace
    failover.attach(lab)
    host.power_on()
    host.heal()
    fo = failover.Failover(lab)
    fo.restore_storage(args.host)
    if fo.enabled() and args.host in fo.vmhosts:
        # its sanlock left the lockspace if the storage was gone longer than 8 x io_timeout
        lab.wait_minions([args.host])
        fo.rejoin([args.host])
    print(f"{args.host}: powered on, link up, shared storage visible; no domU started there")


def cmd_salt(lab, args):
    """Run a Salt command on the lab's master: its arguments go through as given."""
    sys.exit(lab.salt_cli(args.command, args.salt_args))


def cmd_demo(lab, args):
    """Build the lab, migrate a guest live, crash a host, fail over, report, tear down."""
    demo.main(lab)


def cmd_nemesis(lab, args):
    """Random faults against a lab of its own; checks that no domU ever runs twice."""
    faults = args.faults.split(",") if args.faults else None
    sys.exit(
        nemesis.main(
            lab,
            trials=args.trials,
            seed=args.seed,
            faults=faults,
            start=args.start,
            out_dir=args.out,
            settle_timeout=args.settle_timeout,
        )
    )


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "crash": cmd_crash,
    "partition": cmd_partition,
    "isolate-storage": cmd_isolate_storage,
    "restore": cmd_restore,
    "demo": cmd_demo,
    "nemesis": cmd_nemesis,
    **{name: cmd_salt for name in SALT_CLIS},
}
NEEDS_HOST = {"crash", "partition", "isolate-storage", "restore"}


def split_salt_args(argv):
    """(the lab's arguments, the Salt command's) where ``argv`` runs one of :data:`SALT_CLIS`:
    every word after the command is the Salt command's, untouched (``-h``, ``--out=json``...);
    otherwise (``argv``, None)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in GLOBAL_OPTIONS else 1
    if i < len(argv) and argv[i] in SALT_CLIS:
        return argv[: i + 1], argv[i + 1 :]
    return argv, None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, salt_args = split_salt_args(argv)
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR), help="the lab's folder")
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help="network namespace prefix (<prefix>-sw)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fun in COMMANDS.items():
        summary_line = (fun.__doc__ or name).splitlines()[0]
        if name in SALT_CLIS:
            summary_line = f"`{name} ARGS...` on the lab's master (arguments as given)"
        p = sub.add_parser(name, help=summary_line)
        if name in NEEDS_HOST:
            p.add_argument("host", help="a minion id, e.g. ServVirt1")
        if name == "up":
            p.add_argument(
                "--no-apply", action="store_true", help="only build: no formulas, failover, guests"
            )
            p.add_argument("--no-failover", action="store_true", help="leave failover off")
            p.add_argument("--no-guests", action="store_true", help="start no guests")
        if name == "nemesis":
            p.add_argument("--trials", type=int, default=10, help="how many (default 10)")
            p.add_argument("--seed", type=int, help="replay this seed (default: a random one)")
            p.add_argument("--start", type=int, default=0, help="first trial index (replay one)")
            p.add_argument("--faults", help=f"comma-separated subset of {','.join(nemesis.FAULTS)}")
            p.add_argument("--out", help="results folder (default run/nemesis/<time>-seed<S>)")
            p.add_argument(
                "--settle-timeout",
                type=float,
                default=nemesis.SETTLE_TIMEOUT,
                help="seconds a healed cluster has to settle (default %(default)s)",
            )
    args = parser.parse_args(argv)
    args.salt_args = salt_args or []
    if args.command == "nemesis" and args.prefix == DEFAULT_PREFIX:
        args.prefix = NEMESIS_PREFIX
        if Path(args.run_dir).resolve() == DEFAULT_RUN_DIR.resolve():
            args.run_dir = str(NEMESIS_RUN_DIR)
    try:
        lab = Lab(args.run_dir, prefix=args.prefix)
        toolstack.attach(lab)  # VM hosts boot with the lab xl (up, restore)
        COMMANDS[args.command](lab, args)
    except LabError as err:
        sys.exit(f"lab {args.command}: {err}")


if __name__ == "__main__":
    main()
