"""``make demo`` (``python -m lab demo``): xenha's two promises, shown and measured in the lab.

1. Build the lab (:mod:`lab.cluster`), apply the formulas, start the BMCs and switch automatic
   failover on (:mod:`lab.failover`).
2. Start two domUs on ServVirt1: web01 and web02 (disks on ServDB's iSCSI target, configs in
   the shared folder, under ``xenha:domus``).
3. Live-migrate web01 to ServVirt2 with the product's Xen module while the client pings it
   every 10 ms and fetches its state every 20 ms (:mod:`lab.probe`); its sanlock lease goes
   with it as ``salt-run xenha.evacuate`` hands it over.
4. Power ServVirt1 off without warning: the heartbeat beacon on ServVirt2 reports the loss,
   the reactor hands it to the runner, which verifies, fences through the BMC (IPMI) and
   restarts web02 on ServVirt2. The client measures until web02 answers HTTP again.
5. Print what was measured, beside the thesis's Table 5, and tear the lab down (also on error
   or Ctrl-C).

Every figure printed is measured in this run. :func:`live_migration` and :func:`failover` are
the demo's core; ``tests/lab/test_demo_bench.py`` runs them on a lab of its own.
"""

import json
import os
import shutil
import time

from lab import bmc, toolstack, vm
from lab.cluster import Lab, state_changes
from lab.hosts import LabError, wait_for
from lab.probe import Probe, analyze_http

try:  # automatic failover in the lab (crash -> beacon -> reactor -> runner -> fence -> restart)
    from lab import failover as lab_failover
except ImportError:  # pragma: no cover - only before lab/failover.py existed
    lab_failover = None

V1, V2 = "ServVirt1", "ServVirt2"
GUESTS = {"web01": "10.99.0.100", "web02": "10.99.0.101"}
TOOLS = ("qemu-system-x86_64", "ipmi_sim", "ipmitool", "tgtd", "ping")
FAILOVER_TIMEOUT = 240.0  # seconds from the crash to web02 answering before the demo gives up

# the seed thesis, Table 5: ping while the machine moves, means of 10 runs (2009 hardware)
THESIS_TABLE5 = [
    ("physical machine reboot", 187.3, 124.56, 62.74, 33.49, "51.7 s"),
    ("VM, cold migration", 201.5, 163.2, 38.3, 19.0, "38.7 s"),
    ("VM, live migration", 214.7, 213.3, 1, 0.46, "1 s"),
]


def missing_tools():
    """The lab tools (:data:`TOOLS`) not on PATH (``make deps`` installs them)."""
    return [t for t in TOOLS if not shutil.which(t)]


def prepare(lab):
    """Bring ``lab`` up with the lab toolstack, BMCs and (when available) failover, and apply
    the formulas (the xen formula sets up the ssh that ``xl migrate`` needs); returns the
    :class:`lab.failover.Failover` or None."""
    toolstack.attach(lab)
    lab.up()
    bmc.start_all(lab)
    fo = lab_failover.enable_failover(lab) if lab_failover else None
    state_changes(lab.converge())  # raises, naming the states that failed
    return fo


def start_guests(lab, fo, host=V1, guests=GUESTS):
    """Define and start ``guests`` ({name: ip}) on ``host``; returns {name: first state}."""
    for name, ip in guests.items():
        if fo:
            fo.define_domu(name, ip, preferred_host=host)
            fo.start_domu(name, host)
        else:
            cfg = vm.DomUs(lab).define(name, ip)
            row = lab.salt(host, "xenha_xen.start", str(cfg), timeout=180).get(host)
            if not isinstance(row, dict):
                raise LabError(f"{host}: xenha_xen.start {name}: {row}")
    return {name: vm.wait_guest(lab.cli, ip, timeout=180) for name, ip in guests.items()}


def continuity(before, after):
    """Did the guest keep running (same boot, RAM counter went on) and did its disk go on?"""
    ok = "error" not in after
    return {
        "same_boot": ok and after["bootid"] == before["bootid"],
        "counter": [before.get("counter"), after.get("counter")],
        "counter_continued": ok and after["counter"] > before["counter"],
        "disk_seq": [before.get("disk_seq"), after.get("disk_seq")],
        "disk_continued": ok and (after["disk_seq"] or 0) > (before["disk_seq"] or 0),
    }


def live_migration(lab, name, src, dst, *, out_dir, fo=None, settle=1.5):
    """Live-migrate ``name`` from ``src`` to ``dst`` with ``xenha_xen.migrate`` (run by the
    source's minion) while the client pings every 10 ms and GETs /cgi-bin/state every 20 ms.
    With ``fo``, the sanlock lease goes along as ``salt-run xenha.evacuate`` hands it over
    (shared by both hosts during the migration, the target's alone after its arrival)."""
    ip = GUESTS.get(name) or vm_ip(lab, name)
    before = vm.wait_guest(lab.cli, ip)
    if fo:
        fo.bridge(name, src, dst)
    with Probe(lab.cli, ip, out_dir, "watch", interval=0.02, timeout=2) as probe:
        time.sleep(settle)
        start = time.time()
        ret = lab.salt(src, "xenha_xen.migrate", name, dst, timeout=300).get(src)
        end = time.time()
        time.sleep(settle)
    if not (isinstance(ret, dict) and ret.get("result")):
        raise LabError(f"{src}: xenha_xen.migrate {name} {dst}: {ret}")
    if fo:
        fo.arrived(name, src, dst)
    after = vm.wait_guest(lab.cli, ip)
    return {
        "domu": name,
        "from": src,
        "to": dst,
        "migrate_s": ret.get("seconds"),
        "call_s": round(end - start, 2),
        "ping": probe.ping(),
        "http": analyze_http(probe.records()),
        **continuity(before, after),
    }


def vm_ip(lab, name):
    """The IP on the kernel command line of ``name``'s config in the shared folder."""
    cfg = (vm.DomUs(lab).shared / f"{name}.cfg").read_text()
    return cfg.split("labip=", 1)[1].split("/", 1)[0]


def failover(lab, fo, name, crashed, *, out_dir, timeout=FAILOVER_TIMEOUT):
    """Power ``crashed`` off (no warning) and measure until ``name`` answers HTTP again, now
    from a new boot on a survivor: crash -> HTTP seconds, the runner's timeline (heartbeat
    loss reported, confirmed unreachable, fenced, domU started), and that no two copies ever ran."""
    ip = GUESTS.get(name) or vm_ip(lab, name)
    before = vm.wait_guest(lab.cli, ip)
    with (
        lab_failover.Watch(lab, name) as watch,
        Probe(lab.cli, ip, out_dir, "watch", interval=0.1, timeout=3) as probe,
    ):
        time.sleep(1)
        crash = time.time()
        lab.hosts[crashed].power_off()
        try:
            back = wait_for(
                lambda: (
                    (s := vm.guest_state(lab.cli, ip, timeout=3))
                    and "error" not in s
                    and s["bootid"] != before["bootid"]
                    and s
                ),
                timeout,
                f"{name} to answer again after {crashed} went down",
                interval=0.2,
            )
        except LabError:
            back = None
        answered = time.time()
        time.sleep(0.5)
    http = [r for r in probe.records() if r.get("ok") and r["t"] >= crash]
    first_ok = min((r["t"] + r["dt"] for r in http), default=None)
    steps = fo.timeline(crashed, crash)
    return {
        "domu": name,
        "crashed": crashed,
        "crash_at": crash,
        "back": back is not None,
        "on": sorted(lab_failover.running_on(lab, name)),
        "crash_to_http_s": round((first_ok or answered) - crash, 2) if back else None,
        "timeline": steps,
        "doubles": len(watch.doubles),
        "samples": len(watch.samples),
        "ping": probe.ping(start=crash),
        "new_boot": bool(back),
        "disk_seq": [before.get("disk_seq"), back.get("disk_seq") if back else None],
        "disk_continued": bool(back) and (back["disk_seq"] or 0) >= (before["disk_seq"] or 0),
    }


def _yes(flag):
    return "yes" if flag else "NO"


def report(mig, fo_result, note=""):
    """The demo's printed report (plain text)."""
    p, h = mig["ping"], mig["http"]
    lines = [
        "",
        "xenha demo: every figure below was measured in this run",
        f"(lab: QEMU/TCG guests on network namespaces, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f})",
        "",
        f"1. Live migration of {mig['domu']} {mig['from']} -> {mig['to']} "
        f"(salt {mig['from']} xenha_xen.migrate)",
        f"   xl migrate took {mig['migrate_s']} s; the whole salt call {mig['call_s']} s",
        f"   ping every 10 ms: sent {p['sent']}, received {p['received']}, lost {p['lost']} "
        f"({p['loss_pct']} %), longest time without a reply {p['longest_gap_ms']} ms",
        f"   HTTP GET /cgi-bin/state every 20 ms: {h['requests']} requests, {h['failed']} failed, "
        f"slowest {h.get('max_ms')} ms",
        f"   state kept: same boot id {_yes(mig['same_boot'])}; RAM counter "
        f"{mig['counter'][0]} -> {mig['counter'][1]} ({_yes(mig['counter_continued'])}); "
        f"disk counter {mig['disk_seq'][0]} -> {mig['disk_seq'][1]} "
        f"({_yes(mig['disk_continued'])})",
        "",
    ]
    if fo_result is None:
        lines += [f"2. Failover: not run. {note}", ""]
    elif not fo_result["back"]:
        lines += [
            f"2. Failover of {fo_result['domu']} after {fo_result['crashed']} was powered off: "
            f"it did NOT answer again within {FAILOVER_TIMEOUT:.0f} s "
            f"(runner timeline: {json.dumps(fo_result['timeline'])}).",
            "",
        ]
    else:
        t = fo_result["timeline"]
        steps = ", ".join(
            f"{label} +{t[key]} s"
            for key, label in (
                ("lost", "heartbeat loss reported"),
                ("corroborated", "confirmed unreachable"),
                ("fenced", f"fenced ({t.get('fence', '?')})"),
                (f"domu_started:{fo_result['domu']}", f"{fo_result['domu']} started"),
            )
            if key in t
        )
        lines += [
            f"2. Failover of {fo_result['domu']} after {fo_result['crashed']} was powered off "
            "without warning",
            f"   {steps or 'no runner events recorded'}; HTTP answering again "
            f"+{fo_result['crash_to_http_s']} s, on {', '.join(fo_result['on'])}",
            f"   a restart, not a migration: new boot (RAM state lost, as expected); disk counter "
            f"{fo_result['disk_seq'][0]} -> {fo_result['disk_seq'][1]} "
            f"(disk kept: {_yes(fo_result['disk_continued'])})",
            f"   never on two hosts at once: {_yes(not fo_result['doubles'])} "
            f"({fo_result['samples']} samples)",
            "",
        ]
    lines += [
        "Beside the thesis's Table 5 (ping during a move; thesis: means of 10 runs on 2009",
        "hardware, pinging about once a second, so compare loss % and time without replies):",
        "",
        "| case | sent | received | lost | loss % | without replies |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| thesis: {c} | {s} | {r} | {lo} | {pct} | {u} |" for c, s, r, lo, pct, u in THESIS_TABLE5
    ]
    lines.append(
        f"| this run: live migration (xenha) | {p['sent']} | {p['received']} | {p['lost']} | "
        f"{p['loss_pct']} | {p['longest_gap_ms']} ms |"
    )
    if fo_result and fo_result["back"]:
        q = fo_result["ping"]
        lines.append(
            f"| this run: host crash, automatic failover | {q['sent']} | {q['received']} | "
            f"{q['lost']} | {q['loss_pct']} | {q['longest_gap_ms'] / 1000:.1f} s |"
        )
    return "\n".join(lines) + "\n"


def run(lab, fo, out_dir):
    """The demo's core on a lab that is up: guests, live migration, failover; returns
    (migration result, failover result or None, note)."""
    start_guests(lab, fo)
    mig = live_migration(lab, "web01", V1, V2, out_dir=out_dir / "migration", fo=fo)
    if fo is None:
        return mig, None, "lab/failover.py is not in this checkout: the demo stops here."
    fo_result = failover(lab, fo, "web02", V1, out_dir=out_dir / "failover")
    return mig, fo_result, ""


def main(lab=None):
    """``python -m lab demo``: build, apply, migrate, crash, fail over, report, tear down."""
    lab = lab or Lab()
    if missing := missing_tools():
        raise LabError(f"missing lab tools {', '.join(missing)}: run `make deps` as root")
    out_dir = lab.run_dir.parent / f"{lab.run_dir.name}-demo"
    try:
        print("building the lab (hosts, salt-master, minions), applying the formulas ...")
        fo = prepare(lab)
        print("starting web01 and web02 on ServVirt1, migrating web01, crashing ServVirt1 ...")
        mig, fo_result, note = run(lab, fo, out_dir)
        text = report(mig, fo_result, note)
        print(text)
        (out_dir / "report.txt").write_text(text)
        (out_dir / "report.json").write_text(
            json.dumps({"migration": mig, "failover": fo_result}, indent=1, default=str)
        )
        print(f"(raw probe output and this report: {out_dir})")
    finally:
        print("tearing the lab down ...", flush=True)
        lab.down()
