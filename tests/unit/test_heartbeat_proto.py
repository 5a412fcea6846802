"""The heartbeat's pure parts: packet codec, configuration check, loss detection, probe verdicts."""

import hashlib
import hmac

import msgpack
import pytest
import xenha_hbproto as hb
from hypothesis import given, settings
from hypothesis import strategies as st

KEY = b"0123456789abcdef-cluster-key"
PEERS = {"ServVirt1": "192.168.25.10", "ServVirt2": "192.168.25.11"}


def packet(sender="ServVirt2", boot=100, seq=1, cluster="ocfs2", key=KEY):
    return hb.encode(key, cluster, sender, boot, seq)


def detector(dead_time=3.0):
    return hb.Detector("ocfs2", PEERS, dead_time)


def feed(det, now, *, sender="ServVirt2", boot=100, seq=1, ip=None):
    det.accept(hb.decode(KEY, packet(sender, boot, seq)), ip or PEERS[sender], now)


# --- codec ---------------------------------------------------------------------------------


def test_round_trip():
    fields = hb.decode(KEY, packet(seq=7))
    assert fields == {"cluster": "ocfs2", "sender": "ServVirt2", "boot": 100, "seq": 7}


def test_wrong_key_is_refused():
    with pytest.raises(hb.ProtocolError, match="bad signature"):
        hb.decode(KEY, packet(key=b"another-key-of-the-right-size"))


@pytest.mark.parametrize("offset", [0, 4, 20, -1])
def test_any_flipped_bit_is_refused(offset):
    data = bytearray(packet())
    data[offset] ^= 0x01
    with pytest.raises(hb.ProtocolError):
        hb.decode(KEY, bytes(data))


def test_any_of_the_accepted_keys_verifies_and_open_packet_says_which():
    old, new = KEY, b"the-next-cluster-key-2027"
    assert hb.decode((new, old), packet(key=old)) == hb.decode(KEY, packet())
    assert hb.open_packet((new, old), packet(key=old))[1] == 1
    assert hb.open_packet((new, old), packet(key=new))[1] == 0
    with pytest.raises(hb.ProtocolError, match="bad signature"):
        hb.decode((new, old), packet(key=b"a-third-key-nobody-accepts"))


def test_key_id_names_a_key_without_revealing_it():
    assert hb.key_id(KEY) == hb.key_id(bytes(KEY))
    assert hb.key_id(KEY) != hb.key_id(b"the-next-cluster-key-2027")
    assert len(hb.key_id(KEY)) == 12 and KEY.hex()[:12] not in hb.key_id(KEY)


# the rotation from K1 to K2 in docs/detection.md: each host goes through these configurations
# (key, previous_key) in order, and a host starts step n+1 only when every host has done step n
K1, K2 = b"the-old-cluster-key-2026", b"the-new-cluster-key-2027"
ROTATION = [(K1, None), (K1, K2), (K2, K1), (K2, None)]


def _hears(receiver, sender):
    """Whether a host configured ``receiver`` accepts a keepalive of a host at ``sender``."""
    try:
        hb.decode([k for k in receiver if k], packet(key=sender[0]))
    except hb.ProtocolError:
        return False
    return True


@pytest.mark.parametrize("step", range(len(ROTATION) - 1))
def test_no_two_hosts_refuse_each_other_at_any_moment_of_a_rotation(step):
    # under the barrier, any two hosts are at most one step apart: checking every ordered pair
    # of the two adjacent configurations covers every moment, for any number of hosts
    here, ahead = ROTATION[step], ROTATION[step + 1]
    for sender, receiver in ((here, ahead), (ahead, here), (here, here), (ahead, ahead)):
        assert _hears(receiver, sender), (step, sender, receiver)


def test_a_rotation_that_skips_the_barrier_has_hosts_refuse_each_other():
    # the wait between the steps is what the argument rests on: two steps apart, hosts refuse
    assert not _hears(ROTATION[0], ROTATION[2]) and not _hears(ROTATION[3], ROTATION[1])
    # and replacing the key at once (no previous_key) is the window the rotation avoids
    assert not _hears((K2, None), (K1, None))


def test_truncated_and_oversized_are_refused():
    with pytest.raises(hb.ProtocolError, match="truncated"):
        hb.decode(KEY, packet()[:30])
    with pytest.raises(hb.ProtocolError, match="exceeds"):
        hb.decode(KEY, packet() + b"x" * hb.MAX_PACKET)


def signed(payload):
    body = hb.MAGIC + payload
    return body + hmac.new(KEY, body, hashlib.sha256).digest()


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1, 2]), "keepalive fields"),
        (msgpack.packb({"cluster": "c", "sender": "s", "boot": 1}), "keepalive fields"),
        (msgpack.packb({"cluster": "c", "sender": "s", "boot": 1, "seq": "1"}), "seq is str"),
        (msgpack.packb({"cluster": "c", "sender": "s", "boot": 1, "seq": True}), "seq is bool"),
        (msgpack.packb({"cluster": "c", "sender": "s", "boot": 1, "seq": 0}), "positive"),
        (msgpack.packb({"cluster": "c", "sender": "s", "boot": -1, "seq": 1}), "positive"),
    ],
)
def test_signed_but_malformed_payloads_are_refused(payload, why):
    with pytest.raises(hb.ProtocolError, match=why):
        hb.decode(KEY, signed(payload))


@settings(max_examples=400)
@given(st.binary(max_size=hb.MAX_PACKET + 20))
def test_random_bytes_never_crash_and_never_pass(data):
    with pytest.raises(hb.ProtocolError):
        hb.decode(KEY, data)


@settings(max_examples=300)
@given(st.data())
def test_mutated_packets_never_crash_and_never_pass(data):
    good = packet(seq=data.draw(st.integers(1, 2**64 - 1)))
    cut = data.draw(st.integers(0, len(good)))
    junk = data.draw(st.binary(min_size=1, max_size=40))
    bad = good[:cut] + junk + good[cut + len(junk) :]
    if bad == good:
        return
    with pytest.raises(hb.ProtocolError):
        hb.decode(KEY, bad)


# --- detector: who is heard --------------------------------------------------------------


def test_stranger_wrong_address_and_wrong_cluster_are_refused():
    det = detector()
    with pytest.raises(hb.ProtocolError, match="not a configured peer"):
        det.accept(hb.decode(KEY, packet(sender="Intruder")), "192.168.25.11", 1.0)
    with pytest.raises(hb.ProtocolError, match="came from 192.168.25.99"):
        feed(det, 1.0, ip="192.168.25.99")
    with pytest.raises(hb.ProtocolError, match="cluster 'other'"):
        det.accept(hb.decode(KEY, packet(cluster="other")), "192.168.25.11", 1.0)
    assert det.state("ServVirt2", 1.0) == (hb.UNKNOWN, None)


def test_replay_is_refused_and_a_new_boot_is_accepted():
    det = detector()
    feed(det, 1.0, seq=5)
    for seq in (5, 4):
        with pytest.raises(hb.ProtocolError, match="replayed"):
            feed(det, 2.0, seq=seq)
    with pytest.raises(hb.ProtocolError, match="replayed"):
        feed(det, 2.0, boot=99, seq=50)  # an earlier run of the sender, replayed
    assert det.state("ServVirt2", 2.0) == (hb.ALIVE, 1.0)  # refused packets are not heard
    feed(det, 2.5, boot=101, seq=1)  # the sender restarted
    assert det.state("ServVirt2", 2.5) == (hb.ALIVE, 0.0)


# --- detector: transitions ---------------------------------------------------------------


def test_lost_once_then_recovered_once():
    det = detector()
    feed(det, 0.0, seq=1)
    assert det.poll(1.0, "ServVirt1") == []  # first heard: no event
    assert det.poll(2.9, "ServVirt1") == []
    lost = det.poll(3.2, "ServVirt1")
    assert lost == [
        {
            "tag": "lost",
            "peer": "ServVirt2",
            "age": 3.2,
            "reporter": "ServVirt1",
            "dead_time": 3.0,
            "seq": 1,
        }
    ]
    assert det.poll(4.0, "ServVirt1") == []  # no flood while it stays silent
    assert det.poll(60.0, "ServVirt1") == []
    feed(det, 61.0, boot=200, seq=1)
    recovered = det.poll(61.5, "ServVirt1")
    assert [(e["tag"], e["peer"], e["age"], e["seq"]) for e in recovered] == [
        ("recovered", "ServVirt2", 0.5, 1)
    ]
    assert det.poll(62.0, "ServVirt1") == []


def test_never_heard_peer_is_never_reported_lost():
    det = detector()
    assert det.poll(1000.0, "ServVirt1") == []
    assert det.state("ServVirt2", 1000.0) == (hb.UNKNOWN, None)


@settings(max_examples=200)
@given(st.lists(st.floats(0.0, 2.99), min_size=1, max_size=60))
def test_gaps_below_dead_time_never_fire(gaps):
    """Jitter, drops and delays that keep every silence under dead_time raise no alarm."""
    det = detector()
    now, seq = 0.0, 1
    feed(det, now)
    for gap in gaps:
        # poll often in between, as the minion loop does
        for step in (gap / 3, gap / 3, gap / 3):
            now += step
            assert det.poll(now, "ServVirt1") == []
        seq += 1
        feed(det, now, seq=seq)
    assert det.poll(now, "ServVirt1") == []


@settings(max_examples=100)
@given(st.lists(st.tuples(st.booleans(), st.floats(0.1, 10.0)), max_size=40))
def test_events_alternate_lost_recovered(steps):
    """Whatever the pattern of silences, events strictly alternate and start with lost."""
    det = detector()
    now, seq, tags = 0.0, 1, []
    feed(det, now)
    for heard, gap in steps:
        now += gap
        if heard:
            seq += 1
            feed(det, now, seq=seq)
        tags += [e["tag"] for e in det.poll(now, "ServVirt1")]
    assert tags == ["lost", "recovered"] * (len(tags) // 2) + ["lost"] * (len(tags) % 2)


def test_adopt_keeps_peers_whose_address_did_not_change():
    old = detector()
    feed(old, 0.0, sender="ServVirt1", seq=3)
    feed(old, 0.0, sender="ServVirt2", seq=4)
    new = hb.Detector("ocfs2", {**PEERS, "ServVirt2": "192.168.25.99"}, 3.0)
    new.adopt(old)
    assert new.state("ServVirt1", 1.0) == (hb.ALIVE, 1.0)
    assert new.state("ServVirt2", 1.0) == (hb.UNKNOWN, None)
    with pytest.raises(hb.ProtocolError, match="replayed"):
        feed(new, 1.0, sender="ServVirt1", seq=3)


# --- toolstack probe ---------------------------------------------------------------------


def test_probe_failed_after_two_failures_then_ok_once():
    probe = hb.ProbeTracker("xl")
    probe.record(True)
    probe.record(False, "xl info exited 1: no xend")
    assert probe.poll("ServVirt1") == []  # one failure is noise
    probe.record(False, "xl info exited 1: still broken")
    probe.record(False, "xl info exited 1: still broken")
    assert probe.poll("ServVirt1") == [
        {
            "tag": "toolstack_failed",
            "error": "xl info exited 1: still broken",
            "toolstack": "xl",
            "reporter": "ServVirt1",
        }
    ]
    probe.record(True)
    probe.record(True)
    assert probe.poll("ServVirt1") == [
        {"tag": "toolstack_ok", "toolstack": "xl", "reporter": "ServVirt1"}
    ]
    assert probe.poll("ServVirt1") == []


# --- configuration -----------------------------------------------------------------------

GOOD = {"key": "k" * 16, "bind": "192.168.25.10", "peers": {"ServVirt2": "192.168.25.11"}}


def test_config_defaults():
    cfg = hb.parse_config({**GOOD, "_beacon_name": "xenha_heartbeat", "enabled": True})
    assert cfg == {**hb.DEFAULTS, **GOOD, "previous_key": None}
    assert cfg["dead_time"] / cfg["send_interval"] == 8


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"key": None}, "missing required option.*key"),
        ({"key": "short"}, "key: the key is 5 bytes, at least 16 required"),
        ({"interval": 0.5}, "use send_interval"),
        ({"dead-time": 3}, "unknown option"),
        ({"dead_time": 0.5}, "more than twice send_interval"),
        ({"dead_time": "3"}, "dead_time: must be a number"),
        ({"send_interval": float("nan")}, "send_interval: must be a finite number, got nan"),
        ({"send_interval": 0.001}, "at least 0.05"),
        ({"port": 70000}, "port: 70000 is out of range 1..65535"),
        ({"bind": "servvirt1"}, "bind: 'servvirt1' is not an IP address"),
        ({"peers": {}}, "non-empty mapping"),
        (
            {"peers": {"ServVirt2": "10.0.0.300"}},
            "peers:ServVirt2: '10.0.0.300' is not an IP address",
        ),
        ({"peers": {"bad name!": "10.0.0.3"}}, "invalid host name"),
        ({"peers": {"ServVirt1": "192.168.25.10"}}, "also a peer's address"),
        ({"peers": {"ServVirt2": "fd00::11"}}, "must be IPv4 like bind"),
        ({"bind": "0.0.0.0"}, "bind: '0.0.0.0' is a wildcard, broadcast or multicast address"),  # noqa: S104
        ({"cluster": "has space"}, "invalid cluster name"),
        ({"toolstack": "virsh"}, "toolstack must be one of"),
        ({"probe_interval": -1}, "probe_interval: must be at least 0"),
        ({"key": "{{ pillar.x }}-sixteen-bytes"}, "key: the key must not contain '{{'"),
        ({"key": "sixteen-bytes-and\na-newline"}, "key: the secret contains the control"),
        ({"dead_time": float("inf")}, "dead_time: must be a finite number, got inf"),
        ({"port": True}, "port: must be an integer, got True"),
        ({"previous_key": "short"}, "previous_key: the key is 5 bytes, at least 16 required"),
        ({"previous_key": "k" * 16}, "previous_key: is the same as key: unset it"),
        ({"previous_key": "{% if %}-sixteen-bytes"}, "previous_key: the key must not contain"),
    ],
)
def test_bad_config_is_explained(change, why):
    config = {**GOOD, **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(ValueError, match=why):
        hb.parse_config(config)
