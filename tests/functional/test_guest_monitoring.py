"""
Guest monitoring end to end on a real master (the shipped reactor and the real xenha runner)
and two real minions whose toolstack is the xl stand-in: a monitored domU that crashes on its
host is found by the xenha_guests beacon, restarted in place once (restart: 1), and relocated
to the other host when it crashes again, each step an audit line.
"""

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.standins.cluster import StandinCluster
from tests.support.daemons import synced_minion
from tests.support.saltconf import REPO, snippet

A, B = "xha-gm-a", "xha-gm-b"
CRASHED = "---sc-"

PILLAR = """\
xenha:
  hosts:
    {a}: {{hostname: {a}, ip: 127.0.0.41, role: vmhost, memory_mib: 4096, memory_reserve_mib: 0}}
    {b}: {{hostname: {b}, ip: 127.0.0.42, role: vmhost, memory_mib: 4096, memory_reserve_mib: 0}}
  domus:
    web01:
      config: {config}
      memory_mib: 256
      preferred_host: {a}
      monitor: {{restart: 1, within: 600, then: relocate, grace: 0}}
beacons:
  xenha_guests: [{{every: 1}}]
"""


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    cluster = StandinCluster(tmp_path_factory.mktemp("xen"))
    for host in (A, B):
        cluster.add_host(host, memory_mib=4096)
    return cluster


@pytest.fixture(scope="module")
def master(salt_factories, tmp_path_factory, standins):
    root = tmp_path_factory.mktemp("guestmon")
    (root / "pillar").mkdir()
    (root / "pillar" / "top.sls").write_text("base:\n  '*':\n    - guestmon\n")
    config = standins.write_config("web01", memory_mib=256)
    text = PILLAR.format(a=A, b=B, config=config)
    (root / "pillar" / "guestmon.sls").write_text(text)
    # serve only the extension dirs: sync_all of the whole checkout crawls for minutes
    (root / "srv").mkdir()
    for name in ("_modules", "_beacons", "_utils"):
        (root / "srv" / name).symlink_to(REPO / name)
    overrides = snippet("master")  # the shipped reactor and the real xenha runner
    overrides.pop("schedule", None)
    overrides["pillar_roots"] = {"base": [str(root / "pillar")]}
    overrides["file_roots"] = {"base": [str(root / "srv")]}
    daemon = salt_factories.salt_master_daemon("xenha-gm-master", overrides=overrides)
    with daemon.started():
        yield daemon
    shutil.rmtree(daemon.config["root_dir"], ignore_errors=True)


@pytest.fixture(scope="module")
def minions(master, standins, tmp_path_factory):
    with (
        synced_minion(master, A, standins.env(A)) as a,
        synced_minion(master, B, standins.env(B)) as b,
    ):
        yield a, b
    for daemon in (a, b):
        shutil.rmtree(daemon.config["root_dir"], ignore_errors=True)


def audit_steps(path):
    if not path.exists():
        return []
    return [
        (line.split(" ")[2], json.loads(line.split(" ", 3)[3]))
        for line in path.read_text().splitlines()
    ]


def wait_for_step(path, step, count, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = audit_steps(path)
        if [s for s, _ in steps].count(step) >= count:
            return steps
        time.sleep(0.5)
    raise AssertionError(
        f"no {step} (x{count}) in the audit within {timeout} s: {audit_steps(path)}"
    )


def test_a_crashed_domu_is_restarted_in_place_then_relocated(master, minions, standins):
    audit = Path(master.config["cachedir"]) / "xenha" / "guestmon.log"
    first = standins.add_domain(A, "web01", memory_mib=256, state=CRASHED)

    steps = wait_for_step(audit, "guest-restarted", 1)
    restarted = dict(steps)["guest-restarted"]
    assert restarted["attempt"] == 1 and restarted["of"] == 1, steps
    again = standins.domains(A)["web01"]
    assert again["domid"] != first and again["state"] != CRASHED
    assert "web01" not in standins.domains(B)

    standins.set_state(A, "web01", CRASHED)
    steps = wait_for_step(audit, "guest-relocated", 1)
    relocated = dict(steps)["guest-relocated"]
    assert relocated["target"] == B and "1 restart(s) within 600.0 s" in relocated["reason"]
    assert "web01" not in standins.domains(A)
    assert "web01" in standins.domains(B)
    creates = [c["host"] for c in standins.calls() if c["argv"][:1] == ["create"]]
    assert creates == [A, B]  # one restart in place, one start elsewhere: never two copies
