"""The heartbeat threads of _modules/xenha_heartbeat.py over real UDP sockets on 127.0.0.x."""

import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
import xenha_hbproto as hb

from tests.support.saltconf import REPO

KEY = "0123456789abcdef-unit"
A, B = "127.0.0.11", "127.0.0.12"


@pytest.fixture
def mod(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "xenha_heartbeat_under_test", REPO / "_modules" / "xenha_heartbeat.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # its warnings would reach Salt's start-up log handler, which prints them at exit
    module.log = logging.getLogger("tests.xenha_heartbeat")
    module.log.propagate = False
    module.__opts__ = {"id": "hostA", "sock_dir": str(tmp_path)}
    module.__salt__ = {"cmd.run_all": lambda argv, **kw: {"retcode": 0, "stdout": "", "stderr": ""}}
    yield module
    for thread in threading.enumerate():
        if getattr(thread, "xenha_engine", False):
            thread.stop()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((A, 0))
        return sock.getsockname()[1]


def config(port, bind, peer_id, peer_ip, **extra):
    return {
        "key": KEY,
        "bind": bind,
        "peers": {peer_id: peer_ip},
        "port": port,
        "send_interval": 0.1,
        "dead_time": 1.0,  # generous: the test machine is shared and busy
        "probe_interval": 0,
        **extra,
    }


def engine(mod, tmp_path, name, cfg, run_all=None, *, fire=None):
    run_all = run_all or mod.__salt__["cmd.run_all"]
    eng = mod._Engine(
        f"xenha-heartbeat/{name}",
        hb.parse_config(cfg),
        name,
        run_all,
        str(tmp_path / name),
        fire=fire,
    )
    eng.start()
    return eng


def wait_until(check, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def wait_alive(eng, peer):
    wait_until(lambda: eng.detector.state(peer, time.monotonic())[0] == hb.ALIVE, f"{peer} alive")


def wait_events(eng, tag, timeout=10.0):
    """Poll like the minion loop (every 0.05 s) until an event with ``tag``; return all seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += eng.poll()
        if any(e["tag"] == tag for e in seen):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"no {tag} event within {timeout} s; saw {seen}")


def test_two_hosts_hear_each_other_then_lost_once_and_recovered(mod, tmp_path):
    port = free_port()
    a = engine(mod, tmp_path, "hostA", config(port, A, "hostB", B))
    b = engine(mod, tmp_path, "hostB", config(port, B, "hostA", A))
    wait_alive(a, "hostB")
    wait_alive(b, "hostA")
    assert a.poll() == [] and b.poll() == []  # first heard: no event

    b.stop()
    events = wait_events(a, "lost")
    assert [(e["tag"], e["peer"], e["reporter"]) for e in events] == [("lost", "hostB", "hostA")]
    assert events[0]["age"] >= 1.0
    assert events[0]["seq"] == b.seq  # the last keepalive b sent
    for _ in range(10):  # still silent: no repeat
        assert a.poll() == []
        time.sleep(0.05)

    b2 = engine(mod, tmp_path, "hostB", config(port, B, "hostA", A))
    events = wait_events(a, "recovered")
    assert [(e["tag"], e["peer"]) for e in events] == [("recovered", "hostB")]
    b2.stop()


def test_the_thread_fires_a_loss_at_once_and_poll_does_not_repeat_it(mod, tmp_path):
    fired, refuse = [], threading.Event()

    def fire(events):
        if refuse.is_set():
            return False
        fired.extend(events)
        return True

    port = free_port()
    a = engine(mod, tmp_path, "hostA", config(port, A, "hostB", B), fire=fire)
    b = engine(mod, tmp_path, "hostB", config(port, B, "hostA", A))
    wait_alive(a, "hostB")
    b.stop()
    # nobody polls: the thread itself fires, in the beacon's layout
    wait_until(lambda: fired, "the thread to fire the loss")
    assert [(e["tag"], e["peer"], e["reporter"]) for e in fired] == [("lost", "hostB", "hostA")]
    assert a.poll() == []
    # a bus that refuses: the event waits for the beacon's poll instead of being lost
    refuse.set()
    b2 = engine(mod, tmp_path, "hostB", config(port, B, "hostA", A))
    events = wait_events(a, "recovered")
    assert [(e["tag"], e["peer"]) for e in events] == [("recovered", "hostB")]
    assert len(fired) == 1
    b2.stop()


def test_forged_and_misaddressed_packets_do_not_count_as_heard(mod, tmp_path):
    port = free_port()
    a = engine(mod, tmp_path, "hostA", config(port, A, "hostB", B))
    wait_until(lambda: a.seq > 0, "a bound socket")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
        forger.bind((B, 0))
        for seq in range(1, 20):
            forged = hb.encode(b"wrong-key-of-enough-size", "xenha", "hostB", 1, seq)
            forger.sendto(forged, (A, port))
            time.sleep(0.01)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere:
        elsewhere.bind(("127.0.0.13", 0))  # right key, wrong source address
        elsewhere.sendto(hb.encode(KEY.encode(), "xenha", "hostB", 1, 1), (A, port))
    wait_until(lambda: a.rejected == 20, "20 refused packets")
    assert a.poll() == []
    assert a.detector.state("hostB", time.monotonic()) == (hb.UNKNOWN, None)
    assert "127.0.0.13" in a.last_rejected


def test_toolstack_probe_transitions(mod, tmp_path):
    answers = iter([1, 1, 1, 0, 0] + [0] * 1000)
    calls = []

    def run_all(argv, **kwargs):
        calls.append((argv, kwargs["python_shell"]))
        return {"retcode": next(answers), "stdout": "", "stderr": "xl: cannot connect"}

    port = free_port()
    a = engine(mod, tmp_path, "hostA", config(port, A, "hostB", B, probe_interval=0.05), run_all)
    failed = wait_events(a, "toolstack_failed")
    assert failed == [
        {
            "tag": "toolstack_failed",
            "error": "xl info exited 1: xl: cannot connect",
            "toolstack": "xl",
            "reporter": "hostA",
        }
    ]
    assert wait_events(a, "toolstack_ok") == [
        {"tag": "toolstack_ok", "toolstack": "xl", "reporter": "hostA"}
    ]
    assert calls[0] == (["xl", "info"], False)


def test_missing_toolstack_is_a_failed_probe(mod, tmp_path):
    def run_all(argv, **kwargs):
        raise mod.CommandExecutionError(
            "Unable to run command 'REDACTED' with the context '{...}', reason: [Errno 2] "
            "No such file or directory: 'xm'"
        )

    cfg = config(free_port(), A, "hostB", B, probe_interval=0.05, toolstack="xm")
    failed = wait_events(engine(mod, tmp_path, "hostA", cfg, run_all), "toolstack_failed")
    assert failed[0]["error"] == "xm info could not run: [Errno 2] No such file or directory: 'xm'"


class FlakySocket:
    """A socket whose receives fail (as queued ICMP errors do) and that never blocks."""

    def __init__(self, engine, sends):
        self.engine, self.sends, self.timeouts = engine, sends, []

    def settimeout(self, value):
        self.timeouts.append(value)

    def sendto(self, packet, address):
        self.sends.append(address)
        if len(self.sends) >= 5:
            self.engine.stopping.set()

    def recvfrom(self, size):
        time.sleep(0.01)
        raise ConnectionRefusedError("queued ICMP port unreachable")


def test_receive_errors_do_not_stop_the_keepalives(mod, tmp_path):
    cfg = hb.parse_config(config(7788, A, "hostB", B))
    eng = mod._Engine("xenha-heartbeat/flaky", cfg, "hostA", None, str(tmp_path / "s"))
    sends = []
    sock = FlakySocket(eng, sends)
    eng._serve(sock)
    assert sends == [(B, 7788)] * 5
    assert min(sock.timeouts) > 0  # 0 would turn the socket non-blocking


def test_poll_reuses_the_thread_and_restarts_it_on_a_config_change(mod, tmp_path):
    port = free_port()
    peer = engine(mod, tmp_path, "hostB", config(port, B, "hostA", A))
    cfg = {**config(port, A, "hostB", B), "_beacon_name": "xenha_heartbeat"}
    assert mod.poll(cfg) == []
    first = mod._running("xenha-heartbeat/xenha_heartbeat")
    wait_alive(first, "hostB")
    mod.poll(cfg)
    assert mod._running("xenha-heartbeat/xenha_heartbeat") is first

    mod.poll({**cfg, "dead_time": 1.5})  # a pillar change: new thread, same knowledge
    second = mod._running("xenha-heartbeat/xenha_heartbeat")
    assert second is not first and not first.is_alive()
    assert second.detector.state("hostB", time.monotonic())[0] == hb.ALIVE

    status = mod.status()
    assert status["reporter"] == "hostA"
    assert status["peers"]["hostB"]["state"] == "alive"
    assert status["dead_time"] == 1.5
    peer.stop()


def test_a_key_rotation_step_by_step_never_refuses_a_packet(mod, tmp_path):
    # docs/detection.md's procedure on two hosts, one step on one host at a time: hostA through
    # poll (the beacon's path: a new thread per configuration), hostB restarted by hand
    old, new = KEY, "the-next-cluster-key-2027"
    port = free_port()
    cfg_a = {**config(port, A, "hostB", B), "_beacon_name": "xenha_heartbeat"}
    engines = [engine(mod, tmp_path, "hostB", config(port, B, "hostA", A))]
    mod.poll(cfg_a)
    engines.append(mod._running("xenha-heartbeat/xenha_heartbeat"))
    lost = []

    def hears(eng, peer, key):
        lost.extend(e for e in eng.poll() if e["tag"] == "lost")
        return eng.peer_key.get(peer) is not None and eng.keys[eng.peer_key[peer]] == key

    def step_a(key, previous):
        lost.extend(mod.poll({**cfg_a, "key": key, "previous_key": previous}))
        engines.append(mod._running("xenha-heartbeat/xenha_heartbeat"))
        wait_until(lambda: hears(engines[-1], "hostB", engines[0].keys[0]), "A hears B")
        wait_until(lambda: hears(engines[0], "hostA", key.encode()), "B hears A's new key")

    def step_b(key, previous):
        engines[0].stop()
        fresh = engine(mod, tmp_path, "hostB", {**config(port, B, "hostA", A), "key": key,
                                                "previous_key": previous})  # fmt: skip
        fresh.detector.adopt(engines[0].detector)
        engines.insert(0, fresh)
        wait_until(lambda: hears(engines[-1], "hostB", key.encode()), "A hears B's new key")
        wait_until(lambda: hears(fresh, "hostA", engines[-1].keys[0]), "B hears A")

    for key, previous in ((old, new), (new, old), (new, None)):
        step_a(key, previous)
        step_b(key, previous)
    assert lost == [] and sum(e.rejected for e in engines) == 0
    status = mod.status()
    assert status["signs_with"] == hb.key_id(new.encode()) and status["accepts"] == [
        status["signs_with"]
    ]
    assert status["peers"]["hostB"]["key_id"] == hb.key_id(new.encode())
    assert old not in repr(status) and new not in repr(status)

    # the window the procedure avoids: hostB replaced its key at once, and hostA refuses it
    engines[0].stop()
    naive = engine(
        mod, tmp_path, "hostB", {**config(port, B, "hostA", A), "key": "a-third-key-at-once"}
    )
    wait_until(lambda: engines[-1].rejected > 0, "A refuses B's packets")
    naive.stop()


def test_unusable_address_is_reported_and_retried(mod, tmp_path):
    a = engine(mod, tmp_path, "hostA", config(free_port(), "192.0.2.1", "hostB", B))
    wait_until(lambda: a.error, "a socket error")
    assert a.poll() == []
    assert a.error.startswith("cannot use UDP 192.0.2.1:")
    assert a.is_alive()  # keeps retrying: the address may come up later


def test_bad_config_raises_a_clear_error(mod):
    with pytest.raises(mod.CommandExecutionError, match="key: the key is 5 bytes"):
        mod.poll(config(7788, A, "hostB", B, key="short"))
    assert mod.validate(config(7788, A, "hostB", B, key="short"))[0] is False
    assert mod.validate(config(7788, A, "hostB", B)) == (True, "valid")


def iptables(action, port, *match, check=True):
    """Add or remove a rule on keepalives from B to A (and nothing else)."""
    rule = ["INPUT", "-i", "lo", "-p", "udp", "-s", B, "-d", A, "--dport", str(port), *match]
    subprocess.run(["iptables", action, *rule], check=check, capture_output=not check)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables"), reason="needs root iptables")
def test_default_timings_ride_out_heavy_loss_and_catch_a_real_outage(mod, tmp_path):
    """With the shipped defaults (0.25 s / 2.0 s), losing 3 keepalives in 4 raises no alarm;
    losing all of them raises exactly one."""
    port = free_port()
    defaults = {k: hb.DEFAULTS[k] for k in ("send_interval", "dead_time")}
    a = engine(mod, tmp_path, "hostA", config(port, A, "hostB", B, **defaults))
    b = engine(mod, tmp_path, "hostB", config(port, B, "hostA", A, **defaults))
    wait_alive(a, "hostB")
    one_in_4 = ["-m", "statistic", "--mode", "nth", "--every", "4", "--packet", "0", "-j", "ACCEPT"]
    drop = ["-j", "DROP"]
    try:
        iptables("-I", port, *drop)
        iptables("-I", port, *one_in_4)  # inserted above the DROP
        seen, heard, sent = [], set(), b.seq
        for _ in range(40):  # 10 s of polling, like the minion loop but finer
            seen += a.poll()
            heard.add(a.detector.last["hostB"][1])
            time.sleep(0.25)
        assert seen == []
        assert len(heard) <= (b.seq - sent) / 2  # the drops did happen
        iptables("-D", port, *one_in_4)  # now every keepalive is dropped
        lost = wait_events(a, "lost")
        assert [e["tag"] for e in lost] == ["lost"]
    finally:
        for rule in (one_in_4, drop):
            iptables("-D", port, *rule, check=False)
    assert [e["tag"] for e in wait_events(a, "recovered")] == ["recovered"]
    b.stop()
