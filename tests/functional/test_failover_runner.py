"""
The failover runner through a real salt-master and a real survivor minion (xha-fo-b, xl
stand-in, the xenha_sanlock stand-in for sanlock's view). xha-fo-a is the dead host: no minion
runs for it, its BMC address is a closed port, and the test sets the leases it held and what
the survivor's sanlock sees of it.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.standins.cluster import STANDINS, StandinCluster
from tests.support.daemons import synced_minion

pytestmark = pytest.mark.skipif(not shutil.which("ipmitool"), reason="needs ipmitool")

SCRATCH = Path("/tmp/xenha-functional-failover")  # fixed: the pillar names it
DEAD, SURVIVOR = "xha-fo-a", "xha-fo-b"
DOMUS = {"db01": 1024, "web01": 512, "big01": 8192}  # as in pillar/failover.sls
CLAIM = ("host=" + DEAD, "reporter=" + SURVIVOR, json.dumps({"id": SURVIVOR, "peer": DEAD}))


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    cluster = StandinCluster(tmp_path_factory.mktemp("xen"))
    cluster.add_host(SURVIVOR, memory_mib=4096)
    yield cluster
    shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture(scope="module")
def survivor(salt_master, standins):
    modules = {"module_dirs": [str(STANDINS / "modules")], "disable_modules": ["xenha_sanlock"]}
    with synced_minion(salt_master, SURVIVOR, standins.env(SURVIVOR), modules) as minion:
        yield minion


def sanlock_view(standins, dead_host_state, leases):
    """What the survivor's sanlock stand-in sees: DEAD's delta lease and the domU leases."""
    state = {"hosts": {DEAD: dead_host_state, SURVIVOR: "advancing"}, "leases": leases}
    (standins.path / "sanlock.json").write_text(json.dumps(state))


def sanlock_owner(standins, name):
    leases = json.loads((standins.path / "sanlock.json").read_text())["leases"]
    return leases[name]["hosts"][0]


@pytest.fixture
def cluster(salt_master, standins, survivor):
    """DEAD held leases on DOMUS and is gone; the survivor runs nothing; no failover journal."""
    standins.add_host(SURVIVOR, memory_mib=4096)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    (SCRATCH / "domus").mkdir(parents=True)
    for name, memory in DOMUS.items():
        (SCRATCH / "domus" / f"{name}.cfg").write_text(
            f'name = "{name}"\nmemory = {memory}\nvcpus = 1\n'
        )
    # DEAD held every domU lease and stopped renewing; sanlock does not call it dead yet
    sanlock_view(standins, "stopped", {n: {"mode": "ex", "hosts": [DEAD]} for n in DOMUS})
    store = Path(salt_master.config["cachedir"]) / "xenha"
    if store.exists():
        for doc in store.iterdir():
            if doc.name.startswith(("failover-", "hoststate", "audit")):
                doc.unlink()
    return standins


def run(salt_master, *args, timeout=240):
    ret = salt_master.salt_run_cli(timeout=timeout).run(*args)
    assert ret.returncode == 0, ret
    assert ret.data is not None, ret
    return ret.data


def audit(salt_master):
    path = Path(salt_master.config["cachedir"]) / "xenha" / "audit.log"
    return path.read_text().splitlines() if path.exists() else []


def events(event_listener, salt_master, since, what, count=1):
    """The ``what`` events for DEAD since ``since``, oldest first, once ``count`` have arrived."""
    pattern = [(salt_master.id, f"xenha/failover/{DEAD}/{what}")]
    deadline = time.monotonic() + 60
    while True:
        found = event_listener.get_events(pattern, after_time=since)
        if len(found) >= count or time.monotonic() > deadline:
            return sorted(found, key=lambda event: event.stamp)
        time.sleep(0.2)


def test_fence_failure_blocks_then_manual_ack_completes(salt_master, cluster, event_listener):
    since = time.time()
    result = run(salt_master, "xenha.failover", *CLAIM[:2], "event=" + CLAIM[2])

    assert result["state"] == "blocked"
    assert "IPMI: ipmitool" in result["reason"]  # ipmitool's own failure, then sanlock's view:
    assert f"{DEAD}'s sanlock lease: stopped for {SURVIVOR}" in result["reason"]
    assert cluster.domains(SURVIVOR) == {}  # nothing restarted
    assert {sanlock_owner(cluster, d) for d in DOMUS} == {DEAD}
    blocked = events(event_listener, salt_master, since, "blocked")
    assert "IPMI" in blocked[0].data["reason"]

    # a repeated claim while blocked resumes the same failover: still blocked, one journal
    again = run(salt_master, "xenha.failover", *CLAIM[:2], "event=" + CLAIM[2])
    assert again["state"] == "blocked" and again["id"] == result["id"]

    done = run(salt_master, "xenha.ack_fence", DEAD)
    assert done["acknowledged"] is True and done["state"] == "done"
    assert done["fence"]["method"] == "manual"
    assert sorted(cluster.domains(SURVIVOR)) == ["db01", "web01"]
    assert {d: sanlock_owner(cluster, d) for d in DOMUS} == {
        "db01": SURVIVOR,
        "web01": SURVIVOR,
        "big01": DEAD,
    }
    assert done["not_restarted"]["big01"].startswith("no room: needs 8192 MiB")
    started = events(event_listener, salt_master, since, "domu_started", count=2)
    assert [e.data["domu"] for e in started] == ["db01", "web01"]  # by priority
    assert all(e.data["target"] == SURVIVOR and e.data["seconds"] >= 0 for e in started)
    finished = events(event_listener, salt_master, since, "done")
    assert len(finished) == 1 and "big01" in finished[0].data["not_restarted"]

    status = run(salt_master, "xenha.failover_status", DEAD)
    row = status["failovers"][0]
    assert (row["state"], row["fence"]) == ("done", "manual")
    assert row["domus"]["db01"] == {
        "state": "started",
        "host": SURVIVOR,
        "target": SURVIVOR,
        "seconds": row["domus"]["db01"]["seconds"],
    }
    steps = [line.split()[2] for line in audit(salt_master)]
    for step in ("received", "verified", "corroborated", "blocked", "ack_fence", "fenced"):
        assert step in steps
    assert steps.count("domu_started") == 2 and steps[-1] == "done"

    # the same loss reported again: one failover, nothing started twice
    repeat = run(salt_master, "xenha.failover", *CLAIM[:2], "event=" + CLAIM[2])
    assert repeat["duplicate"] is True
    assert sorted(cluster.domains(SURVIVOR)) == ["db01", "web01"]


def test_forged_claims_are_ignored_and_logged(salt_master, cluster, event_listener):
    since = time.time()
    forged = [
        ("host=" + DEAD, "reporter=intruder", 'event={"id": "intruder", "peer": "xha-fo-a"}'),
        ("host=" + DEAD, "reporter=" + SURVIVOR, 'event={"id": "intruder", "peer": "xha-fo-a"}'),
        ("host=ServDB-not-member", "reporter=" + SURVIVOR, 'event={"id": "xha-fo-b"}'),
        ("host=bad;name", "reporter=" + SURVIVOR, 'event={"id": "xha-fo-b"}'),
    ]
    for claim in forged:
        assert run(salt_master, "xenha.failover", *claim)["state"] == "ignored"
    assert cluster.domains(SURVIVOR) == {}
    assert run(salt_master, "xenha.failover_status")["failovers"] == []
    lines = audit(salt_master)
    assert len(lines) == len(forged) and all(" ignored " in line for line in lines)
    assert "reporter 'intruder' is not a cluster VM host" in lines[0]
    assert "event id 'intruder' does not match 'xha-fo-b'" in lines[1]
    ignored = events(event_listener, salt_master, since, "ignored", count=2)
    assert len(ignored) == 2


def test_runner_killed_mid_failover_resumes_and_completes_once(salt_master, cluster):
    # the survivor's sanlock calls DEAD dead: its watchdog has fired, its leases may be taken
    leases = {n: {"mode": "ex", "hosts": [DEAD]} for n in DOMUS}
    sanlock_view(cluster, "dead", leases)
    calls_before = len(cluster.calls())
    cli = salt_master.salt_run_cli(timeout=240)
    argv = cli.cmdline("xenha.failover", *CLAIM[:2], "event=" + CLAIM[2])
    journal = Path(salt_master.config["cachedir"]) / "xenha" / f"failover-{DEAD}.json"
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (journal.exists() and json.loads(journal.read_text())["state"] == "corroborated"):
            assert time.monotonic() < deadline, "failover never reached the fence step"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the process running the failover dies mid-fence
        proc.wait(30)
    assert json.loads(journal.read_text())["state"] == "corroborated"
    assert cluster.domains(SURVIVOR) == {}

    rows = run(salt_master, "xenha.failover_resume")
    assert [(r["host"], r["state"]) for r in rows] == [(DEAD, "done")]
    assert rows[0]["fence"]["method"] == "lease"  # IPMI failed, sanlock calls DEAD dead
    assert sorted(cluster.domains(SURVIVOR)) == ["db01", "web01"]
    creates = [c for c in cluster.calls()[calls_before:] if c["argv"][:1] == ["create"]]
    assert sorted(Path(c["argv"][-1]).stem for c in creates) == ["db01", "web01"]
    # resuming again changes nothing
    assert run(salt_master, "xenha.failover_resume")[0]["state"] == "done"
    creates = [c for c in cluster.calls()[calls_before:] if c["argv"][:1] == ["create"]]
    assert len(creates) == 2
