"""
Failback through a real master with the shipped reactor (etc/master.d/xenha.conf) and the real
runner, and three minions on the xl stand-in: the cluster and fixtures of test_runner_xenha, with
a pillar where web01 (preferred_host ServVirt1) has ``failback: true`` and web02 has the same
preferred host without it.
"""

import json
import shutil
import subprocess
import time

import pytest
import yaml

from tests.functional import test_runner_xenha as cluster_tests
from tests.support.saltconf import REPO, snippet

# the stand-in cluster's fixtures (they take this module's salt_master: its reactor is on)
standins, minions, xen = cluster_tests.standins, cluster_tests.minions, cluster_tests.xen
START, placement, run, store_dir = (
    cluster_tests.START,
    cluster_tests.placement,
    cluster_tests.run,
    cluster_tests.store_dir,
)
A, B = cluster_tests.VMHOSTS
TOP = "base:\n  'ServVirt1,ServVirt2,ServDB':\n    - match: list\n    - cluster\n"


@pytest.fixture(scope="module")
def salt_master(salt_factories, tmp_path_factory):
    """A master with the shipped reactor, serving the cluster pillar with failback set."""
    pillar = tmp_path_factory.mktemp("pillar")
    cluster = yaml.safe_load((REPO / "tests/functional/pillar/cluster.sls").read_text())
    domus = cluster["xenha"]["domus"]
    assert domus["web01"]["preferred_host"] == A
    domus["web01"]["failback"] = True
    domus["web02"]["preferred_host"] = A  # failback false (the default): it stays where it runs
    (pillar / "cluster.sls").write_text(yaml.safe_dump(cluster))
    (pillar / "top.sls").write_text(TOP)
    overrides = snippet("master")  # the shipped reactor mapping, shutdown events included
    overrides.pop("schedule", None)
    overrides["pillar_roots"] = {"base": [str(pillar)]}
    master = salt_factories.salt_master_daemon("xenha-fb-master", overrides=overrides)
    with master.started():
        yield master
    shutil.rmtree(master.config["root_dir"], ignore_errors=True)


def arrange(cluster, where):
    """Both VM hosts reset (as the xen fixture makes them), each domU of ``where`` there."""
    cluster.add_host(A, memory_mib=8192)
    cluster.add_host(B, memory_mib=4096)
    for name, host in where.items():
        cluster.add_domain(host, name, memory_mib=START[name])


def maintenance(salt_master):
    path = store_dir(salt_master) / "maintenance.json"
    return json.loads(path.read_text()) if path.exists() else {}


def send(salt_master, minion, tag, data=None):
    """``minion`` fires ``tag`` onto the master bus, as its unit's salt-call does."""
    args = ["event.send", tag] + ([f"data={json.dumps(data)}"] if data else [])
    ret = salt_master.salt_cli(timeout=60).run(*args, minion_tgt=minion)
    assert ret.returncode == 0 and ret.data is True, ret


def back(salt_master, event_listener, minion, data=None):
    """``minion`` says it is back; the reactor's host_back answer for it."""
    after = time.time()
    send(salt_master, minion, "xenha/shutdown/back", data)
    tag = f"xenha/shutdown/{minion}/back"
    found = event_listener.wait_for_events([(salt_master.id, tag)], after_time=after, timeout=240)
    assert found.found_all_events, f"no {tag} on the master bus"
    return next(iter(found.matches)).data


def test_failback_brings_home_only_failback_domus_and_refuses_maintenance(salt_master, xen):
    arrange(xen, {"db01": B, "web01": B, "web02": B, "big01": A})
    store_dir(salt_master).mkdir(parents=True, exist_ok=True)
    operator = {A: {"since": time.time(), "by": "evacuate"}}
    (store_dir(salt_master) / "maintenance.json").write_text(json.dumps(operator))

    cli = salt_master.salt_run_cli(timeout=180)
    people = subprocess.run(
        [arg for arg in cli.cmdline("xenha.failback", A) if not arg.startswith("--out")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert people.returncode == 1, people
    assert people.stdout.strip().splitlines() == [
        "ERROR: xenha.failback: ServVirt1 is in maintenance (set by evacuate): failback moves "
        "nothing onto it; salt-run xenha.restore ServVirt1 move_back=True ends it"
    ], people.stdout
    assert placement(xen)["web01"] == B and maintenance(salt_master) == operator

    run(salt_master, "xenha.restore", A)  # the operator ends it; nothing moves back with it
    got = run(salt_master, "xenha.failback", A)
    assert [(r["domu"], r["from"], r["to"], r["outcome"]) for r in got["result"]] == [
        ("web01", B, A, "migrated")
    ]
    assert got["summary"] == "failback ServVirt1: 1 domU(s) moved back"
    assert placement(xen) == {"db01": B, "web01": A, "web02": B, "big01": A}

    again = run(salt_master, "xenha.failback", A)
    assert again == {"host": A, "result": [], "summary": "failback ServVirt1: nothing to move back"}


def test_a_hosts_return_lifts_only_the_drains_maintenance(salt_master, xen, event_listener):
    # the drain asks (its reactor evacuates the sender, drain=True): maintenance by shutdown
    send(salt_master, A, "xenha/shutdown/evacuate", {"domus": sorted(START)})
    journal = store_dir(salt_master) / "evacuate-ServVirt1.json"
    deadline = time.monotonic() + 240
    while not (journal.exists() and json.loads(journal.read_text()).get("finished")):
        assert time.monotonic() < deadline, "the drain's evacuation did not finish"
        time.sleep(0.5)
    assert placement(xen) == {"db01": B, "web01": B, "web02": B, "big01": A}
    assert maintenance(salt_master)[A]["by"] == "shutdown"

    # another host's return, naming ServVirt1 in its payload, is that host's own
    other = back(salt_master, event_listener, B, {"id": A})
    assert (other["host"], other["step"]) == (B, "failback"), other
    assert maintenance(salt_master)[A]["by"] == "shutdown"

    home = back(salt_master, event_listener, A)
    assert (home["step"], home["summary"]) == (
        "lift",
        "ServVirt1 back: the shutdown drain's maintenance ended; failback ServVirt1: 1 domU(s) "
        "moved back",
    ), home
    assert A not in maintenance(salt_master)
    assert placement(xen) == {"db01": B, "web01": A, "web02": B, "big01": A}

    # an operator's maintenance outlives the host's return; nothing moves
    run(salt_master, "xenha.evacuate", A, returncode=1)  # big01 fits nowhere else
    assert maintenance(salt_master)[A]["by"] == "evacuate"
    kept = back(salt_master, event_listener, A)
    assert kept["step"] == "keep" and kept["summary"].startswith(
        "ServVirt1 back; kept in maintenance (set by evacuate, not by the shutdown drain)"
    ), kept
    assert maintenance(salt_master)[A]["by"] == "evacuate"
    assert placement(xen)["web01"] == B
