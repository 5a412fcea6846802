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
import xenha_lease

from tests.standins.cluster import StandinCluster
from tests.support.daemons import synced_minion
from tests.support.saltconf import snippet

pytestmark = pytest.mark.skipif(not shutil.which("ipmitool"), reason="needs ipmitool")

DEAD, SURVIVOR = "xha-fr-a", "xha-fr-b"
DOMUS = {"db01": 1024, "web01": 512}

PILLAR = """\
xenha:
  hosts:
    {dead}: {{hostname: {dead}, ip: 127.0.0.31, role: vmhost,
             bmc: {{address: 127.0.0.1, port: 9, username: admin}}}}
    {survivor}: {{hostname: {survivor}, ip: 127.0.0.32, role: vmhost, memory_reserve_mib: 0}}
  leases: {{dir: {leases}, renew_interval: 0.5, expiry: 3.0, self_fence_after: 1.0,
           destroy_timeout: 1.0}}
  failover: {{corroborate_window: 0.5, retry_base: 2.0, retry_max: 2.0, retry_for: 600}}
  domus:
    db01: {{config: {domus}/db01.cfg, memory_mib: 1024, priority: 100}}
    web01: {{config: {domus}/web01.cfg, memory_mib: 512, priority: 50}}
"""


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("failover-restart")
    (root / "leases").mkdir()
    (root / "domus").mkdir()
    pillar = root / "pillar"
    pillar.mkdir()
    (pillar / "top.sls").write_text("base:\n  '*':\n    - failover\n")
    text = PILLAR.format(dead=DEAD, survivor=SURVIVOR, leases=root / "leases", domus=root / "domus")
    (pillar / "failover.sls").write_text(text)
    for name, memory in DOMUS.items():
        (root / "domus" / f"{name}.cfg").write_text(f'name = "{name}"\nmemory = {memory}\n')
        write_lease(root / "leases", "domu", name, DEAD, 3)
    return root


def write_lease(leases, kind, name, owner, counter):
    lease = xenha_lease.renewed(None, owner, "boot-of-" + owner)
    lease["counter"] = counter
    xenha_lease.write_atomic(leases / f"{kind}-{name}.lease", xenha_lease.encode(lease))


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
    return cluster


@pytest.fixture(scope="module")
def survivor(master, standins):
    with synced_minion(master, SURVIVOR, standins.env(SURVIVOR)) as minion:
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

    # the reactor's failover runs inside the master: fencing fails (BMC closed, no host lease)
    wait_for(lambda: journal_state(journal).get("state") == "blocked", 120, "blocked")
    assert standins.domains(SURVIVOR) == {}

    # the master dies mid-failover (in its back-off): every process of it, at once
    main = psutil.Process(master.pid)
    for proc in [main, *main.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    master.terminate()  # let the factory notice
    record = journal_state(journal)
    assert record["state"] in ("blocked", "verified", "corroborated")
    # meanwhile the dead host's lease becomes provable: it exists and no longer moves
    write_lease(scratch / "leases", "host", DEAD, DEAD, 99)

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
