"""
A master killed in the middle of a failover finishes it after it restarts. This master is our
own (the package one runs without reactor and schedule): it runs the shipped config snippet
with its reactor (heartbeat loss -> xenha.failover inside the master) and its schedule
(xenha.failover_resume, here every 3 s), and a pillar generated for this test.
"""

import contextlib
import json
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.standins.cluster import STANDINS, StandinCluster
from tests.support.daemons import synced_minion
from tests.support.saltconf import snippet

pytestmark = pytest.mark.skipif(not shutil.which("ipmitool"), reason="needs ipmitool")

DEAD, SURVIVOR = "xha-fr-a", "xha-fr-b"
DOMUS = {"db01": 1024, "web01": 512}

PILLAR = """\
xenha:
  hosts:
    {dead}: {{hostname: {dead}, ip: 127.0.0.31, role: vmhost, host_id: 1,
             bmc: {{address: 127.0.0.1, port: 9, username: admin}}}}
    {survivor}: {{hostname: {survivor}, ip: 127.0.0.32, role: vmhost, host_id: 2,
                 memory_reserve_mib: 0}}
  sanlock: {{lease_path: {root}/leases.img, io_timeout: 1}}
  failover: {{corroborate_window: 0.5, retry_base: 2.0, retry_max: 2.0, retry_for: 600}}
  domus:
    db01: {{config: {domus}/db01.cfg, memory_mib: 1024, priority: 100}}
    web01: {{config: {domus}/web01.cfg, memory_mib: 512, priority: 50}}
"""


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("failover-restart")
    (root / "domus").mkdir()
    pillar = root / "pillar"
    pillar.mkdir()
    (pillar / "top.sls").write_text("base:\n  '*':\n    - failover\n")
    text = PILLAR.format(dead=DEAD, survivor=SURVIVOR, root=root, domus=root / "domus")
    (pillar / "failover.sls").write_text(text)
    for name, memory in DOMUS.items():
        (root / "domus" / f"{name}.cfg").write_text(f'name = "{name}"\nmemory = {memory}\n')
    return root


def sanlock_view(standins, dead_host_state):
    """The survivor's sanlock stand-in: DEAD holds every domU lease, its delta lease as given."""
    leases = {n: {"mode": "ex", "hosts": [DEAD]} for n in DOMUS}
    state = {"hosts": {DEAD: dead_host_state, SURVIVOR: "advancing"}, "leases": leases}
    (standins.path / "sanlock.json").write_text(json.dumps(state))


@pytest.fixture(scope="module")
def master(salt_factories, scratch):
    overrides = snippet("master")  # reactor and schedule included
    overrides["schedule"]["xenha-failover-resume"]["seconds"] = 3
    overrides["pillar_roots"] = {"base": [str(scratch / "pillar")]}
    overrides["xenha_bmc"] = {DEAD: {"password": "none-here"}}  # master configuration
    daemon = salt_factories.salt_master_daemon("xenha-fo-restart-master", overrides=overrides)
    with daemon.started():
        yield daemon


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    cluster = StandinCluster(tmp_path_factory.mktemp("xen"))
    cluster.add_host(SURVIVOR, memory_mib=4096)
    sanlock_view(cluster, "stopped")  # DEAD stopped renewing; sanlock does not call it dead yet
    return cluster


@pytest.fixture(scope="module")
def survivor(master, standins):
    modules = {"module_dirs": [str(STANDINS / "modules")], "disable_modules": ["xenha_sanlock"]}
    with synced_minion(master, SURVIVOR, standins.env(SURVIVOR), modules) as minion:
        yield minion


def journal_state(path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_master_killed_mid_failover_finishes_it_after_restart(master, survivor, standins, scratch):
    journal = Path(master.config["cachedir"]) / "xenha" / f"failover-{DEAD}.json"
    loss = {"peer": DEAD, "id": SURVIVOR, "reporter": SURVIVOR, "age": 3.1}
    tag = f"salt/beacon/{SURVIVOR}/xenha_heartbeat/lost"
    ret = master.salt_run_cli(timeout=60).run("event.send", tag, f"data={json.dumps(loss)}")
    assert ret.returncode == 0, ret

    # the reactor's failover runs inside the master: the BMC is a closed port, and sanlock
    # does not call DEAD dead, so the lease-only path waits (8 x io_timeout + 60 s)
    fencing = ("corroborated", "blocked")
    wait_for(lambda: journal_state(journal).get("state") in fencing, 120, "the fence step")
    assert standins.domains(SURVIVOR) == {}

    # the master dies mid-failover (in its back-off): every process of it, at once
    main = psutil.Process(master.pid)
    for proc in [main, *main.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    master.terminate()  # let the factory notice
    record = journal_state(journal)
    assert record["state"] in ("blocked", "verified", "corroborated")
    # meanwhile the survivor's sanlock calls DEAD dead: its watchdog has fired
    sanlock_view(standins, "dead")

    with master.started():
        wait_for(lambda: journal_state(journal).get("state") == "done", 240, "done")
        done = journal_state(journal)
    assert done["id"] == record["id"]  # the same failover, resumed, not a new one
    assert done["fence"]["method"] == "lease"
    assert sorted(standins.domains(SURVIVOR)) == sorted(DOMUS), done.get("domus")
    creates = [c for c in standins.calls() if c["argv"][:1] == ["create"]]
    assert len(creates) == len(DOMUS)  # each domU started exactly once
    audit = (journal.parent / "audit.log").read_text()
    assert "resume" in audit and " done " in audit
