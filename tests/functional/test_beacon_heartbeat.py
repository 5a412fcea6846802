"""
The heartbeat beacon on two real minions (127.0.0.11 and 127.0.0.12) and a real master that
runs the shipped reactor (etc/master.d/xenha.conf) against a stub ``xenha.failover`` runner which
records its arguments: stop a minion, the other reports it lost once, the reactor hands that to
the runner; start it again, it is reported recovered.
"""

import json
import os
import shutil
import socket
import time

import pytest
import xenha_hbproto as hb

from tests.support import daemons
from tests.support.saltconf import REPO, snippet

A, B = "xenha-hb-a", "xenha-hb-b"
IP = {A: "127.0.0.11", B: "127.0.0.12"}
PORT = 17788  # tests/functional/pillar/heartbeat.sls
DEAD_TIME = hb.DEFAULTS["dead_time"]

STUB_RUNNER = """
import json

def failover(host=None, reporter=None, event=None):
    with open({calls!r}, "a") as fh:
        fh.write(json.dumps({{"host": host, "reporter": reporter, "event": event}}) + "\\n")
    return True
"""

FAKE_XL = """#!/bin/sh
if [ -e {broken} ]; then echo "xl: cannot connect to xenstore" >&2; exit 1; fi
echo "host                   : fake"
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    path = tmp_path_factory.mktemp("heartbeat")
    (path / "runners").mkdir()
    (path / "runners" / "xenha.py").write_text(STUB_RUNNER.format(calls=str(path / "calls")))
    (path / "bin").mkdir()
    xl = path / "bin" / "xl"
    xl.write_text(FAKE_XL.format(broken=path / "xl-broken"))
    xl.chmod(0o755)
    # serve only the extension dirs: the shipped file_roots include the whole checkout (.venv,
    # lab run dirs), which makes saltutil.sync_all crawl tens of thousands of files
    (path / "srv").mkdir()
    for name in ("_modules", "_beacons", "_utils"):
        (path / "srv" / name).symlink_to(REPO / name)
    return path


@pytest.fixture(scope="module")
def master(salt_factories, work):
    overrides = snippet("master")  # keeps the shipped reactor mapping
    overrides["runner_dirs"] = [str(work / "runners")]
    overrides["file_roots"] = {"base": [str(work / "srv")]}
    overrides["pillar_roots"] = {"base": [str(REPO / "tests" / "functional" / "pillar")]}
    daemon = salt_factories.salt_master_daemon("xenha-hb-master", overrides=overrides)
    with daemon.started():
        yield daemon
    remove_root_dir(daemon)


def _minion(master, minion_id, path=None):
    daemon = master.salt_minion_daemon(minion_id, overrides=snippet("minion"))
    if path:  # salt_minion_daemon(environ=...) clashes with the factory's own environ
        daemon.environ = {**daemon.environ, "PATH": f"{path}:{os.environ['PATH']}"}
    return daemon


@pytest.fixture(scope="module")
def minions(master, work):
    a = _minion(master, A, path=work / "bin")
    b = _minion(master, B)
    with a.started(), b.started():
        ret = master.salt_cli(timeout=120).run(
            "saltutil.sync_all", "saltenv=base", minion_tgt="xenha-hb-*"
        )  # both at once
        assert ret.returncode == 0 and set(ret.data) == {A, B}, ret
        for daemon, peer in ((a, B), (b, A)):
            wait_for_peer_state(master, daemon.id, peer, "alive")
        yield {A: a, B: b}
    for daemon in (a, b):
        remove_root_dir(daemon)


def remove_root_dir(daemon):
    """The factories leave each daemon's /tmp/<id>_<n> behind; this test's go with it."""
    shutil.rmtree(daemon.config["root_dir"], ignore_errors=True)


def heartbeat_status(master, minion_id):
    ret = master.salt_cli().run("xenha_heartbeat.status", minion_tgt=minion_id)
    return ret.data if ret.returncode == 0 and isinstance(ret.data, dict) else None


def wait_for_peer_state(master, minion_id, peer, state, timeout=90):
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = heartbeat_status(master, minion_id)
        if status and status["peers"][peer]["state"] == state:
            return status
        time.sleep(1)
    raise AssertionError(f"{minion_id} never saw {peer} {state}: {status}")


def beacon_tag(minion_id, event):
    return f"salt/beacon/{minion_id}/xenha_heartbeat/{event}"


def wait_event(event_listener, master, tag, after, timeout=60):
    found = event_listener.wait_for_events([(master.id, tag)], after_time=after, timeout=timeout)
    assert found.found_all_events, f"no {tag} on the master bus"
    return next(iter(found.matches)).data


def count(event_listener, master, tag, after):
    return len(event_listener.get_events([(master.id, tag)], after_time=after))


def runner_calls(work):
    return daemons.runner_calls(work, "xenha.failover", timeout=30)


def forge_packets(n=20):
    """Keepalives claiming to be xenha-hb-b from its own address, signed with the wrong key."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((IP[B], 0))
        for seq in range(1, n + 1):
            packet = hb.encode(b"not-the-cluster-key!", "functional", B, time.time_ns(), seq)
            sock.sendto(packet, (IP[A], PORT))
            time.sleep(0.1)


def test_peers_hear_each_other_across_a_pillar_refresh(master, minions):
    status = heartbeat_status(master, A)
    assert status["reporter"] == A
    assert status["listen"] == f"{IP[A]}:{PORT}"
    assert status["peers"][B]["ip"] == IP[B]
    assert status["peers"][B]["age"] < DEAD_TIME
    assert status["error"] is None
    # a pillar refresh reloads every loader; the heartbeat thread must carry on, not restart
    ret = master.salt_cli().run("saltutil.refresh_pillar", "wait=True", minion_tgt=A)
    assert ret.returncode == 0, ret
    time.sleep(2)
    after = heartbeat_status(master, A)
    assert after["sent"] > status["sent"] + 2
    assert after["peers"][B]["state"] == "alive"


def test_stopped_peer_is_lost_once_forgeries_do_not_revive_it_and_restart_recovers(
    master, minions, event_listener, work
):
    start = time.time()
    minions[B].terminate()
    lost = wait_event(event_listener, master, beacon_tag(A, "lost"), start)
    # the beacon's data arrives flat on the master bus (not under data["data"])
    assert lost["peer"] == B
    assert lost["reporter"] == A
    assert lost["id"] == A
    assert lost["dead_time"] == DEAD_TIME
    assert lost["age"] >= DEAD_TIME
    assert lost["seq"] >= 1
    print(f"lost fired after {lost['age']} s of silence")  # a measurement for the report

    # the shipped reactor handed it to the runner, one call, with the event
    calls = runner_calls(work)
    assert len(calls) == 1
    assert calls[0]["host"] == B
    assert calls[0]["reporter"] == A
    assert calls[0]["event"]["peer"] == B
    assert calls[0]["event"]["seq"] == lost["seq"]

    rejected_before = heartbeat_status(master, A)["rejected"]
    forge_packets()
    time.sleep(DEAD_TIME)  # several beacon loops with the peer still silent
    status = heartbeat_status(master, A)
    assert status["peers"][B]["state"] == "lost"
    assert status["rejected"] >= rejected_before + 20
    assert "bad signature" in status["last_rejected"]
    assert count(event_listener, master, beacon_tag(A, "lost"), start) == 1
    assert count(event_listener, master, beacon_tag(A, "recovered"), start) == 0

    restart = time.time()
    minions[B].start()
    recovered = wait_event(event_listener, master, beacon_tag(A, "recovered"), restart)
    assert recovered["peer"] == B
    assert recovered["reporter"] == A
    assert recovered["age"] < DEAD_TIME
    wait_for_peer_state(master, B, A, "alive")
    assert count(event_listener, master, beacon_tag(A, "lost"), start) == 1
    assert len(runner_calls(work)) == 1  # recovery is no failover


def test_toolstack_probe_reports_failure_and_recovery(master, minions, event_listener, work):
    start = time.time()
    broken = work / "xl-broken"
    broken.touch()
    try:
        failed = wait_event(event_listener, master, beacon_tag(A, "toolstack_failed"), start)
    finally:
        broken.unlink()
    assert failed["toolstack"] == "xl"
    assert failed["reporter"] == A
    assert "cannot connect to xenstore" in failed["error"]
    ok = wait_event(event_listener, master, beacon_tag(A, "toolstack_ok"), start)
    assert ok == {**ok, "toolstack": "xl", "reporter": A}
    assert count(event_listener, master, beacon_tag(A, "toolstack_failed"), start) == 1


def test_reactor_passes_hostile_event_values_verbatim(master, minions, work):
    """A forged loss event reaches the runner as data: a value cannot add YAML to the reaction."""
    calls_before = len(runner_calls(work)) if (work / "calls").exists() else 0
    peer = 'ServVirt2"\n      - reporter: evil'
    ret = master.salt_run_cli().run(
        "event.send",
        beacon_tag("ServVirt1", "lost"),
        f"data={json.dumps({'peer': peer, 'note': '{{ 7 * 7 }}'})}",
    )
    assert ret.returncode == 0, ret
    deadline = time.monotonic() + 30
    while len(runner_calls(work)) == calls_before and time.monotonic() < deadline:
        time.sleep(0.5)
    call = runner_calls(work)[-1]
    assert call["host"] == peer
    assert call["reporter"] == "ServVirt1"
    assert call["event"]["note"] == "{{ 7 * 7 }}"
