"""
The xenha runner (status, plan, evacuate, restore) against real Salt minions whose toolstack is
the xl stand-in: three minions (ServVirt1, ServVirt2 = VM hosts, ServDB = storage) described by
tests/functional/pillar/cluster.sls.
"""

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import salt.channel.client
import salt.config
import salt.loader
import salt.utils.event
import salt.utils.schedule
import xenha_seal
import yaml
from pytestshellutils.exceptions import FactoryTimeout

from tests.standins import xenstandin
from tests.standins.cluster import StandinCluster
from tests.support.saltconf import REPO, snippet

VMHOSTS = ("ServVirt1", "ServVirt2")
SCRATCH = Path("/tmp/xenha-functional-cluster")  # cluster.sls names it
CONFIGS = SCRATCH / "domus"  # where cluster.sls says the domU configs are
HOSTS = (*VMHOSTS, "ServDB")
# the domUs ServVirt1 starts with: name -> MiB (the pillar gives their priorities)
START = {"db01": 1024, "web01": 512, "web02": 512, "big01": 2048}

# chronyc / iscsiadm / ssh stand-ins: what each host answers comes from plumbing.json in the
# stand-in directory ({host: {"offset": s, "iscsi": bool, "ssh": bool}})
PLUMBING = r"""#!{python}
import json, os, sys
tool = os.path.basename(sys.argv[0])
try:
    with open(os.path.join(os.environ["XENHA_STANDIN_DIR"], "plumbing.json")) as fh:
        me = json.load(fh).get(os.environ["XENHA_STANDIN_HOST"], {{}})
except FileNotFoundError:
    me = {{}}
if tool == "chronyc":
    offset = me.get("offset", 0.000012)
    print("Reference ID    : C0A8190C (192.168.25.12)")
    side = "fast" if offset > 0 else "slow"
    print("System time     : %.9f seconds %s of NTP time" % (abs(offset), side))
    print("Leap status     : Normal")
elif tool == "iscsiadm":
    if not me.get("iscsi", True):
        print("iscsiadm: No active sessions.", file=sys.stderr)
        sys.exit(21)
    print("tcp: [1] 192.168.25.12:3260,1 iqn.2009-06.br.example:storage.cluster (non-flash)")
elif tool == "ssh":
    if not me.get("ssh", True):
        print("ssh: connect to host %s port 22: No route to host" % sys.argv[-3], file=sys.stderr)
        sys.exit(255)
    if sys.argv[-1] == "migrate-receive":  # the forced command lets only this through
        print("xl migration receiver ready, send binary domain data.")
        sys.exit(1)  # no domain data on stdin
"""


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    cluster = StandinCluster(tmp_path_factory.mktemp("xen"))
    bindir = tmp_path_factory.mktemp("bin")
    script = bindir / "plumbing"
    script.write_text(PLUMBING.format(python=sys.executable))
    script.chmod(0o755)
    for tool in ("chronyc", "iscsiadm", "ssh"):
        (bindir / tool).symlink_to(script)
    for host in VMHOSTS:
        cluster.add_host(host)
    return cluster, bindir


@pytest.fixture(scope="module")
def minions(salt_master, standins):
    """The three minions, loading xenha's modules straight from this checkout (no sync)."""
    cluster, bindir = standins
    overrides = {
        **snippet("minion"),
        "module_dirs": [str(REPO / "_modules")],
        "states_dirs": [str(REPO / "_states")],
        "utils_dirs": [str(REPO / "_utils")],
    }
    CONFIGS.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, SCRATCH, ignore_errors=True)
        started = {}
        for host in HOSTS:
            env = cluster.env(host)
            if host not in VMHOSTS:  # the storage host has no Xen toolstack
                env["PATH"] = os.environ["PATH"]
            env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
            minion = salt_master.salt_minion_daemon(host, overrides=overrides)
            minion.environ = {**minion.environ, **env}  # environ= clashes with the factory's
            started[host] = stack.enter_context(minion.started())
        yield started


@pytest.fixture
def xen(salt_master, standins, minions):
    """A fresh cluster: START's domUs on ServVirt1, ServVirt2 empty, no faults, no master marks."""
    cluster, _ = standins
    cluster.add_host("ServVirt1", memory_mib=8192)
    cluster.add_host("ServVirt2", memory_mib=4096)
    for name, memory in START.items():
        cluster.add_domain("ServVirt1", name, memory_mib=memory)
    for name in ("faults.json", "plumbing.json", "calls.log"):
        (cluster.path / name).unlink(missing_ok=True)
    for path in CONFIGS.iterdir():
        path.unlink()
    store = store_dir(salt_master)
    if store.exists():
        for doc in store.iterdir():
            doc.unlink()
    return cluster


def store_dir(salt_master):
    return Path(salt_master.config["cachedir"]) / "xenha"


def run(salt_master, *args, timeout=180, returncode=0):
    ret = salt_master.salt_run_cli(timeout=timeout).run(*args)
    assert ret.returncode == returncode, ret
    assert (ret.data or {}).get("retcode", 0) == returncode, ret
    return ret.data


def moves(salt_master, *args, returncode=0):
    """The result table of an evacuate or restore, after checking its exit code."""
    return run(salt_master, *args, returncode=returncode)["result"]


def placement(cluster):
    """{domU: host} from the stand-ins' state, asserting no domU is on two hosts."""
    where = {}
    for host in VMHOSTS:
        for name in cluster.domains(host):
            assert name not in where, f"{name} runs on {where[name]} and {host}"
            where[name] = host
    return where


def pinged(salt_master, host):
    with contextlib.suppress(FactoryTimeout):
        return salt_master.salt_cli(timeout=30).run("test.ping", minion_tgt=host).data is True
    return False


def rows_by_domu(rows):
    return {row["domu"]: row for row in rows}


def migrate_calls(cluster):
    return [c for c in cluster.calls() if c["argv"][:1] == ["migrate"]]


def test_plan_changes_nothing_and_reports_an_injected_plumbing_problem(salt_master, xen):
    (xen.path / "plumbing.json").write_text(json.dumps({"ServVirt2": {"offset": 2.5}}))
    before = {h: xen.domains(h) for h in VMHOSTS}
    calls_before = len(xen.calls())

    result = run(salt_master, "xenha.plan", "ServVirt1")

    plan = rows_by_domu(result["placement"])
    assert {d: r["to"] for d, r in plan.items()} == {
        "db01": "ServVirt2",
        "web01": "ServVirt2",
        "web02": "ServVirt2",
        "big01": "-",
    }
    assert plan["big01"]["reason"].startswith("no room: needs 2048 MiB")
    checks = {(r["target"], r["check"]): r for r in result["preflight"]}
    assert checks[("ServVirt2", "clock")]["ok"] is False
    assert "exceeds 0.5 s" in checks[("ServVirt2", "clock")]["detail"]
    assert checks[("ServVirt2", "iscsi")]["ok"] is True
    assert checks[("ServVirt2", "transport")]["ok"] is True
    assert checks[("ServVirt2", "toolstack")]["ok"] is True
    # room is left on ServVirt2, but big01 fits nowhere: the memory check says so and fails
    assert checks[("ServVirt2", "memory")] == {
        "target": "ServVirt2",
        "check": "memory",
        "ok": False,
        "detail": "1280 MiB left for domUs after the plan; no room anywhere for big01",
    }
    failed = sorted(f"{r['target']} {r['check']}" for r in result["preflight"] if not r["ok"])
    assert {"ServVirt2 clock", "ServVirt2 memory"} <= set(failed)
    assert result["summary"] == (
        "ServVirt1 maintenance: 3 of 4 domU(s) would move; big01 would not; "
        f"failed checks: {', '.join(failed)}"
    )

    # nothing changed: same domains, no toolstack verb but list/info, no maintenance, no journal
    assert {h: xen.domains(h) for h in VMHOSTS} == before
    verbs = {c["argv"][0] for c in xen.calls()[calls_before:]}
    assert verbs <= {"list", "info"}
    assert not store_dir(salt_master).exists() or not any(
        p.suffix == ".json" for p in store_dir(salt_master).iterdir()
    )


def test_plan_failure_mode_and_unreachable_transport(salt_master, xen):
    (xen.path / "plumbing.json").write_text(json.dumps({"ServVirt1": {"ssh": False}}))
    maintenance = run(salt_master, "xenha.plan", "ServVirt1")
    transport = [r for r in maintenance["preflight"] if r["check"] == "transport"]
    assert transport == [
        {
            "target": "ServVirt2",
            "check": "transport",
            "ok": False,
            "detail": transport[0]["detail"],
        }
    ]
    assert "No route to host" in transport[0]["detail"]

    failure = run(salt_master, "xenha.plan", "ServVirt1", "failure")
    assert {r["action"] for r in failure["placement"]} == {"restart", "stays down"}


def test_evacuate_moves_what_fits_and_explains_what_stays(salt_master, xen):
    calls_before = len(xen.calls())
    table = moves(salt_master, "xenha.evacuate", "ServVirt1", returncode=1)
    source_calls = [c["argv"] for c in xen.calls()[calls_before:] if c["host"] == "ServVirt1"]

    rows = rows_by_domu(table)
    assert {d: r["outcome"] for d, r in rows.items()} == {
        "db01": "migrated",
        "web01": "migrated",
        "web02": "migrated",
        "big01": "stayed",
    }
    assert rows["big01"]["reason"].startswith("no room: needs 2048 MiB")
    assert all(rows[d]["to"] == "ServVirt2" for d in ("db01", "web01", "web02"))
    assert placement(xen) == {
        "db01": "ServVirt2",
        "web01": "ServVirt2",
        "web02": "ServVirt2",
        "big01": "ServVirt1",
    }

    # the source listed its domains once for the plan and once after each migration: no
    # listing before xl migrate (xl refuses a domain it does not have by itself)
    assert source_calls.count(["list"]) == 1 + 3, source_calls
    assert source_calls.count(["list", "-l"]) == 1, source_calls
    # each migrated move's timeline in the journal, in the order things happened
    journal = json.loads((store_dir(salt_master) / "evacuate-ServVirt1.json").read_text())
    for name in ("db01", "web01", "web02"):
        line = journal["domus"][name]["timeline"]
        marks = ["job_started", "toolstack_done", "listed", "migrate_returned", "confirmed"]
        assert [line[m] for m in marks] == sorted(line[m] for m in marks), line
        assert line["confirmed"] <= journal["domus"][name]["duration_s"] + 0.01, line
        assert line["target_looks"] >= 1, line
    assert "timeline" not in journal["domus"]["big01"]

    # (the sanlock lease hand-over is tested on real daemons: tests/hosts, tests/lab)
    assert all(rows[d]["reason"] == "" for d in ("db01", "web01", "web02"))

    status = run(salt_master, "xenha.status")
    hosts = {h["host"]: h for h in status["hosts"]}
    # no xenha:sanlock in this cluster: no host is asked for a lease view (tests/hosts and
    # tests/lab read real sanlock daemons' views)
    assert hosts["ServVirt1"]["lease"] == hosts["ServVirt2"]["lease"] == "-"
    assert hosts["ServVirt1"]["state"] == "maintenance"
    assert hosts["ServVirt2"]["state"] == "up"
    assert hosts["ServDB"]["role"] == "storage"
    assert hosts["ServVirt2"]["ntp"].startswith("ok: offset")
    assert {d["domu"]: d["host"] for d in status["domus"]} == placement(xen)

    # a second evacuation of a host in maintenance plans nothing onto it and moves nothing new
    again = rows_by_domu(moves(salt_master, "xenha.evacuate", "ServVirt1", returncode=1))
    assert again["big01"]["outcome"] == "stayed"

    restored = rows_by_domu(moves(salt_master, "xenha.restore", "ServVirt1", "move_back=True"))
    assert {d: r["outcome"] for d, r in restored.items()} == dict.fromkeys(
        ("db01", "web01", "web02"), "migrated"
    )
    assert set(placement(xen).values()) == {"ServVirt1"}
    status = run(salt_master, "xenha.status", "leases=False")
    assert {h["host"]: h["state"] for h in status["hosts"]}["ServVirt1"] == "up"


def test_restore_settles_an_evacuation_cut_short_before_its_journal_goes(salt_master, xen):
    """The evacuation's runner died while web01 was in flight (its journal says migrating);
    the migration completed without it. restore records that first, then moves it back."""
    with xen.state.lock():  # web01 arrived on ServVirt2 after the runner died
        data = xen.state.load("ServVirt1")
        data["domains"].pop("web01")
        xen.state.save(data)
    xen.add_domain("ServVirt2", "web01", memory_mib=START["web01"])
    journal = {
        "host": "ServVirt1",
        "started": time.time() - 60,
        "finished": None,
        "runs": 1,
        "domus": {"web01": {"from": "ServVirt1", "to": "ServVirt2", "outcome": "migrating"}},
    }
    store = store_dir(salt_master)
    store.mkdir(parents=True, exist_ok=True)
    (store / "evacuate-ServVirt1.json").write_text(json.dumps(journal))
    answer = run(salt_master, "xenha.restore", "ServVirt1", "move_back=True")
    assert answer["settled"] == {"web01": "migrated"}
    assert rows_by_domu(answer["result"])["web01"]["outcome"] == "migrated"
    assert placement(xen)["web01"] == "ServVirt1"
    assert not (store / "evacuate-ServVirt1.json").exists()


def give_disks(cluster, host, name, *specs):
    """Back a stand-in domU with these xl disk specs, as `xl list -l` will show them."""
    with cluster.state.lock():
        data = cluster.state.load(host)
        data["domains"][name]["disks"] = [xenstandin.parse_disk(spec) for spec in specs]
        cluster.state.save(data)


def test_domu_on_a_local_disk_stays_and_says_so(salt_master, xen):
    """The toolstack tells the disks (xl list -l); the pillar does not list them."""
    give_disks(xen, "ServVirt1", "web02", "phy:/dev/vg0/web02,xvda,w")
    give_disks(xen, "ServVirt1", "db01", "format=raw, vdev=xvda, target=/cluster/domus/db01.img")
    shared_lun = "/dev/disk/by-path/ip-192.168.25.12:3260-iscsi-iqn.2009-06.br.example:"
    give_disks(xen, "ServVirt1", "web01", f"{shared_lun}storage.cluster-lun-1,xvda,w")
    # a path that only looks as if it were under the OCFS2 mount point
    give_disks(xen, "ServVirt1", "big01", "file:/cluster/../var/lib/xen/big01.img,xvda,w")

    plan = rows_by_domu(run(salt_master, "xenha.plan", "ServVirt1")["placement"])
    assert plan["web02"]["action"] == "stays"
    assert plan["web02"]["reason"] == "disk not on shared storage: /dev/vg0/web02"
    assert plan["big01"]["reason"] == (
        "disk not on shared storage: /cluster/../var/lib/xen/big01.img"
    )
    assert {d: plan[d]["action"] for d in ("db01", "web01")} == dict.fromkeys(
        ("db01", "web01"), "live-migrate"
    )

    rows = rows_by_domu(moves(salt_master, "xenha.evacuate", "ServVirt1", returncode=1))
    assert {d: r["outcome"] for d, r in rows.items()} == {
        "db01": "migrated",
        "web01": "migrated",
        "web02": "stayed",
        "big01": "stayed",
    }
    assert rows["web02"]["reason"] == "disk not on shared storage: /dev/vg0/web02"
    assert placement(xen)["web02"] == "ServVirt1"
    assert sorted(c["argv"][-2] for c in migrate_calls(xen)) == ["db01", "web01"]


def test_arrival_watch_confirms_only_an_arrival(salt_master, xen):
    """xenha_preflight.arrived wait=...: what the runner runs on the target during a move
    (which lease it takes on a sanlock cluster: tests/unit/test_preflight_arrived.py)."""
    xen.add_domain("ServVirt2", "web09", memory_mib=128)  # already there, not brought by a move
    cli = salt_master.salt_cli(timeout=60)
    ret = cli.run(
        "xenha_preflight.arrived", "web09", "handover_from=ServVirt1", "wait=5",
        minion_tgt="ServVirt2",
    )  # fmt: skip
    assert ret.data["here"] is True and ret.data["arrival"] is False, ret
    assert ret.data["lease"] == "not configured"  # no xenha:sanlock here

    ret = cli.run("xenha_preflight.arrived", "db01", "wait=1", minion_tgt="ServVirt2")
    assert ret.data["here"] is False and ret.data["waited"] >= 1, ret

    # during a real move: the watch sees db01 arrive
    xen.update_host("ServVirt1", migrate_delay=2.0)
    watch = subprocess.Popen(
        cli.cmdline(
            "xenha_preflight.arrived", "db01", "handover_from=ServVirt1", "wait=60",
            minion_tgt="ServVirt2",
        ),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any(  # the watch has looked at least once before the move starts
            job.get("fun") == "xenha_preflight.arrived"
            for job in cli.run("saltutil.running", minion_tgt="ServVirt2").data or []
        ):
            assert time.monotonic() < deadline, "the arrival watch never started"
            time.sleep(0.2)
        moved = cli.run("xenha_xen.migrate", "db01", "ServVirt2", minion_tgt="ServVirt1")
        assert moved.returncode == 0, moved
        out, _ = watch.communicate(timeout=60)
    finally:
        watch.kill()
    answer = json.loads(out)["ServVirt2"]
    assert (answer["here"], answer["arrival"]) == (True, True), answer
    assert answer["lease"] == "not configured", answer


def test_unreachable_target_every_domu_stays_with_the_reason(salt_master, xen):
    xen.set_up("ServVirt2", up=False)
    table = rows_by_domu(
        moves(salt_master, "xenha.evacuate", "ServVirt1", "parallel=3", returncode=1)
    )
    assert {d: r["outcome"] for d, r in table.items()} == dict.fromkeys(START, "stayed")
    for name in ("db01", "web01", "web02"):
        assert table[name]["reason"].startswith("target unreachable"), table[name]
    assert set(placement(xen).values()) == {"ServVirt1"}
    assert len(migrate_calls(xen)) == 3  # each was tried once, one failure stopped no other


def test_interrupted_evacuation_completes_on_rerun(salt_master, xen):
    """The runner and the whole master are killed mid-migration; a re-run finishes the job."""
    xen.update_host("ServVirt1", migrate_delay=3.0)
    cli = salt_master.salt_run_cli(timeout=180)
    argv = cli.cmdline("xenha.evacuate", "ServVirt1", "parallel=1")
    journal = store_dir(salt_master) / "evacuate-ServVirt1.json"
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            entries = json.loads(journal.read_text())["domus"] if journal.exists() else {}
            if any(e.get("outcome") == "migrating" for e in entries.values()):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the evacuation never started a migration")
        time.sleep(0.5)  # the runner dies while the migration is in flight
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    # ... and the master with it, every process at once; the minion's migration job goes on
    main = psutil.Process(salt_master.pid)
    for process in [main, *main.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    salt_master.terminate()  # let the factory notice
    assert json.loads(journal.read_text())["finished"] is None
    salt_master.start()  # stopped again by the package fixture
    deadline = time.monotonic() + 180
    for host in HOSTS:  # the minions authenticate again with the new master
        while not pinged(salt_master, host):
            assert time.monotonic() < deadline, f"{host} did not come back to the master"
            time.sleep(1)

    xen.update_host("ServVirt1", migrate_delay=0.0)
    rows = rows_by_domu(moves(salt_master, "xenha.evacuate", "ServVirt1", returncode=1))
    assert {d: r["outcome"] for d, r in rows.items()} == {
        "db01": "migrated",
        "web01": "migrated",
        "web02": "migrated",
        "big01": "stayed",
    }
    # nothing lost, nothing doubled, each domU migrated exactly once
    assert placement(xen) == {
        "db01": "ServVirt2",
        "web01": "ServVirt2",
        "web02": "ServVirt2",
        "big01": "ServVirt1",
    }
    moved = sorted(c["argv"][-2] for c in migrate_calls(xen))
    assert moved == ["db01", "web01", "web02"]
    # and no arrival watch of the killed runner is left running on the target
    running = salt_master.salt_cli(timeout=60).run("saltutil.running", minion_tgt="ServVirt2")
    assert [j["fun"] for j in running.data or [] if j["fun"] != "saltutil.running"] == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("xenha.evacuate", "ServDB"), "host 'ServDB' has role 'storage', not vmhost"),
        (
            ("xenha.plan", "NoSuchHost"),
            "host 'NoSuchHost' is not in xenha:hosts (VM hosts: ServVirt1, ServVirt2)",
        ),
        (("xenha.plan", "ServVirt1", "sideways"), "mode must be 'maintenance' or 'failure'"),
        (("xenha.plan", "Serv;Virt1"), "Serv;Virt1"),
        (("xenha.plan",), "missing a required argument: 'host'"),
        (("xenha.evacuate", "ServVirt1", "parallel=0"), "parallel must be a whole number"),
        (("xenha.evacuate", "ServVirt1", "parallel=abc"), "got 'abc'"),
        (("xenha.restore", "ServVirt1", "parallel=-1"), "got -1"),
        (("xenha.failover_status", "ServVirt9"), "host 'ServVirt9' is not in xenha:hosts"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_code_2(salt_master, xen, args, error):
    cli = salt_master.salt_run_cli(timeout=60)
    people = subprocess.run(
        [arg for arg in cli.cmdline(*args) if not arg.startswith("--out")],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert people.returncode == 2, people
    lines = people.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: xenha."), people.stdout
    assert error in lines[0], lines
    assert "Traceback" not in people.stdout + people.stderr
    assert "unclosed" not in people.stderr
    machine = cli.run(*args)  # --out=json: the same error as data, still parseable
    assert machine.returncode == 2 and error in machine.data["error"], machine


def test_a_move_waits_for_a_suspect_target_to_be_cleared(salt_master, xen):
    """A failover check of the target (a heartbeat missed under load) ends within seconds:
    the evacuation waits for it instead of leaving every domU behind."""
    store = store_dir(salt_master)
    store.mkdir(parents=True, exist_ok=True)
    marks = store / "hoststate.json"
    marks.write_text(json.dumps({"ServVirt2": {"state": "suspect", "since": time.time()}}))
    cli = salt_master.salt_run_cli(timeout=180)
    argv = [a for a in cli.cmdline("xenha.evacuate", "ServVirt1") if not a.startswith("--out")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []  # the progress lines as they come
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("waiting for the failover's check of ServVirt2 (suspect)" in x for x in lines):
        assert time.monotonic() < deadline and proc.poll() is None, (lines, proc.stderr.read())
        time.sleep(0.2)
    journal = json.loads((store / "evacuate-ServVirt1.json").read_text())
    assert not journal["domus"]  # nothing planned or moved while it waits
    marks.write_text(json.dumps({}))  # the ping answered: the claim is cleared
    proc.wait(timeout=120)
    reader.join(30)
    out = "".join(lines)
    assert proc.returncode == 1, out  # big01 still fits nowhere
    assert out.splitlines()[-1].startswith("ServVirt1 in maintenance with 1 of 4 domU(s) not moved")
    assert placement(xen)["web01"] == "ServVirt2"


def test_documented_nightly_schedule_runs_evacuate(salt_master, xen):
    """The schedule block of docs/runner.md, in Salt's scheduler with the master's runners."""
    text = (REPO / "docs" / "runner.md").read_text()
    block = re.search(r"```yaml\n(# xenha nightly maintenance window\n.*?)```", text, re.S)
    entries = yaml.safe_load(block.group(1))["schedule"]
    opts = salt.config.master_config(salt_master.config_file)
    opts["schedule"] = entries
    opts["multiprocessing"] = False  # run the job in a thread here, so the test can wait for it
    schedule = salt.utils.schedule.Schedule(
        opts,
        salt.loader.runner(opts),
        returners=salt.loader.returners(opts, {}),
        new_instance=True,
    )

    schedule.eval(now=datetime.datetime(2030, 1, 1, 1, 59, 0))
    job = opts["schedule"]["xenha-nightly-evacuate-servvirt1"]
    assert "_error" not in job
    assert job["_next_fire_time"] == datetime.datetime(2030, 1, 1, 2, 0)
    assert not (store_dir(salt_master) / "maintenance.json").exists()  # not yet

    schedule.eval(now=datetime.datetime(2030, 1, 1, 2, 0, 0))
    journal = store_dir(salt_master) / "evacuate-ServVirt1.json"
    deadline = time.monotonic() + 180
    while not (journal.exists() and json.loads(journal.read_text()).get("finished")):
        assert time.monotonic() < deadline, "the scheduled evacuation did not finish"
        time.sleep(0.5)
    assert placement(xen) == {
        "db01": "ServVirt2",
        "web01": "ServVirt2",
        "web02": "ServVirt2",
        "big01": "ServVirt1",
    }
    # the morning restore was not due at 02:00
    assert "ServVirt1" in json.loads((store_dir(salt_master) / "maintenance.json").read_text())


def test_cold_move_only_when_asked(salt_master, xen):
    xen.set_fault("ServVirt1", "migrate", "fail")
    warm = rows_by_domu(moves(salt_master, "xenha.evacuate", "ServVirt1", returncode=1))
    assert {d: r["outcome"] for d, r in warm.items()} == dict.fromkeys(START, "stayed")
    assert warm["db01"]["reason"].startswith("migration failed:")
    assert not [c for c in xen.calls() if c["argv"][0] in ("shutdown", "create")]

    for name in ("db01", "web01", "web02"):  # the configs live on the "shared storage"
        config = xen.write_config(name, memory_mib=START[name])
        (CONFIGS / f"{name}.cfg").write_text(Path(config).read_text())
    cold = moves(salt_master, "xenha.evacuate", "ServVirt1", "cold=True", returncode=1)
    cold = rows_by_domu(cold)
    assert {d: r["outcome"] for d, r in cold.items()} == {
        "db01": "cold-migrated",
        "web01": "cold-migrated",
        "web02": "cold-migrated",
        "big01": "stayed",
    }, cold
    assert cold["db01"]["reason"].startswith("migration failed:")
    assert placement(xen) == {
        "db01": "ServVirt2",
        "web01": "ServVirt2",
        "web02": "ServVirt2",
        "big01": "ServVirt1",
    }


# --- forged answers: a compromised cluster member speaks in a stopped host's name -------------


class Forger:
    """
    What root on ``minion`` can send the master with that minion's own key (what
    ``salt-call event.send TAG preload=...`` sends): for every call the runner publishes to
    ``victim``, the moment it is published, an answer in the victim's name of each kind Salt
    lets through: an event tagged as the victim's return, and a return that Salt 3008's
    ``_return`` files under the victim (``resource_id``), job cache included. The forged value
    is ``forge(fun)``, also sealed with the forger's own key and the call's real nonce (it sees
    the publication). ``forged`` lists the jids answered.
    """

    def __init__(self, salt_master, minion, victim, forge):
        self.victim, self.forge, self.forged = victim, forge, []
        self.opts = salt.config.minion_config(minion.config_file)
        self.opts["master_uri"] = f"tcp://127.0.0.1:{self.opts['master_port']}"
        self.master_opts = salt_master.config
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(60), "the forger did not start"
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)

    def _run(self):
        key = (Path(self.opts["pki_dir"]) / "minion.pem").read_bytes()
        sock_dir = self.master_opts["sock_dir"]
        with (
            salt.utils.event.get_master_event(self.master_opts, sock_dir, listen=True) as bus,
            salt.channel.client.ReqChannel.factory(self.opts) as channel,
        ):
            channel.send({"cmd": "_minion_event", "id": self.opts["id"], "tag": "forger/up",
                          "data": {}})  # fmt: skip
            self.ready.set()
            while not self.stop.is_set():
                event = bus.get_event(wait=0.2, tag="salt/job/", full=True) or {}
                data = event.get("data") or {}
                if event.get("tag", "").endswith("/new") and self.victim in data.get("minions", []):
                    self._answer(channel, key, data)

    def _answer(self, channel, key, new):
        jid, (nonce, fun, *_) = new["jid"], new["arg"]
        value = self.forge(fun)
        sealed = xenha_seal.seal(key, self.victim, nonce, fun, {"ok": True, "value": value})
        for ret in (value, sealed):
            answer = {"return": ret, "retcode": 0, "success": True, "jid": jid,
                      "fun": new["fun"], "id": self.opts["id"]}  # fmt: skip
            tag = f"salt/job/{jid}/ret/{self.victim}"
            channel.send({**answer, "cmd": "_minion_event", "tag": tag, "data": answer})
            channel.send({**answer, "cmd": "_return", "resource_id": self.victim})
        self.forged.append(jid)


@contextlib.contextmanager
def frozen(minion):
    """``minion``'s processes stopped (SIGSTOP): it hears nothing and answers nothing."""
    procs = [psutil.Process(minion.pid)]
    procs += procs[0].children(recursive=True)
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)


def _fake_report(fun):
    if fun == "test.ping":
        return True
    return {"info": {"free_memory_mib": 65536, "total_memory_mib": 65536}, "domains": {}}


def _failover_steps(salt_master, claim, until):
    """Run a failover of ServVirt2 until its audit trail has a step in ``until``; its steps."""
    audit = store_dir(salt_master) / "audit.log"
    argv = salt_master.salt_run_cli().cmdline(
        "xenha.failover", "ServVirt2", "reporter=ServVirt1", "event=" + claim
    )
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = audit.read_text().splitlines() if audit.exists() else []
            steps = [line.split(" ", 3)[2:] for line in lines if " ServVirt2 " in line]
            if any(step[0] in until for step in steps):
                return steps
            time.sleep(0.2)
        pytest.fail(f"the failover did not get past its claim: {lines}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # what comes after the ping is not this test's
        proc.wait(30)


def test_forged_reports_and_pings_for_a_stopped_host_are_ignored(salt_master, xen, minions):
    cli = salt_master.salt_run_cli(timeout=240)
    claim = json.dumps({"id": "ServVirt1", "peer": "ServVirt2"})
    # a loss claim about a host that is up changes nothing: its signed ping answer is believed
    alive = cli.run("xenha.failover", "ServVirt2", "reporter=ServVirt1", "event=" + claim).data
    assert alive["state"] == "ignored", alive
    assert "the master still reaches the host's minion" in json.dumps(alive), alive
    (store_dir(salt_master) / "audit.log").unlink()
    with Forger(salt_master, minions["ServDB"], "ServVirt2", _fake_report) as forger:
        with frozen(minions["ServVirt2"]):
            status = cli.run("xenha.status", "leases=False").data
            steps = _failover_steps(salt_master, claim, ("ignored", "corroborated", "blocked"))
        forged = list(forger.forged)
    hosts = {h["host"]: h for h in status["hosts"]}
    assert hosts["ServVirt1"]["state"] == "up"
    # the stopped host did not answer: each forgery was seen and named, none believed
    assert hosts["ServVirt2"]["state"] != "up", hosts["ServVirt2"]
    assert "ignored: an answer in its name was not signed by it" in json.dumps(status)
    # the master's ping of the claimed host: a forged 'alive' does not end the failover, which
    # goes on to the survivors' lease looks (this cluster has no sanlock: they read nothing,
    # and unreadable is no proof of death, so it blocks)
    assert [step[0] for step in steps][-1] == "blocked", steps
    assert "no evidence that ServVirt2 is down" in json.dumps(steps), steps
    assert "still reaches the host's minion" not in json.dumps(steps), steps
    # the forgeries were real: the report's jid and the ping's, and Salt filed the forged report
    # under the stopped host in its job cache
    assert len(forged) >= 2, forged
    cached = json.dumps(cli.run("jobs.lookup_jid", forged[0]).data)
    assert "ServVirt2" in cached and "65536" in cached, cached


def test_n_plus_1_in_status_and_strict_admission_through_peer_run(salt_master, xen):
    """
    ServVirt2 can take 3328 MiB: ServVirt1's loss would leave big01 unplaced. Starting a
    2048 MiB domU on ServVirt2 would leave web01 and web02 unplaced too: xenha.admission
    refuses it, and so does xenha_domu.running with admission strict, which asks the master
    through publish.runner (the shipped peer_run); with test=True nothing starts.
    """
    status = run(salt_master, "xenha.status", "leases=False")
    rows = {h["host"]: h["n_plus_1"] for h in status["hosts"]}
    assert rows == {"ServVirt1": "at risk: big01", "ServVirt2": "ok", "ServDB": "-"}
    assert status["n_plus_1"] == "at risk (ServVirt1 -> [big01])"

    ask = ("xenha.admission", "extra01", "ServVirt2")
    refused = run(salt_master, *ask, "memory_mib=2048", returncode=1)
    assert (refused["admit"], refused["broken"]) == (False, {"ServVirt1": ["web01", "web02"]})
    assert run(salt_master, *ask, "memory_mib=256")["admit"] is True

    config = xen.write_config("extra01", memory_mib=2048)
    args = ("xenha_domu.running", "name=extra01", f"config={config}", "admission=strict")
    cli = salt_master.salt_cli(timeout=120)
    ret = cli.run("state.single", *args, "test=True", minion_tgt="ServVirt2")
    (state,) = ret.data.values()
    assert state["result"] is False, state
    assert "losing ServVirt1 would leave web01, web02 unplaced" in state["comment"], state
    assert "extra01" not in xen.domains("ServVirt2")
