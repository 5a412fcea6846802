"""Storage leases: the pure progress logic, then the minion module on a real shared directory."""

import importlib.util
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
import xenha_lease as xl
from hypothesis import given
from hypothesis import strategies as st
from salt.exceptions import CommandExecutionError

REPO = Path(__file__).resolve().parents[2]


def lease(counter, owner="A", boot="boot-a", written=None, released=False):
    return {
        "format": 1,
        "owner": owner,
        "counter": counter,
        "boot_id": boot,
        "released": released,
        "written": written,
    }


# --- progress, not clocks ---


def test_a_skewed_writer_clock_changes_nothing():
    record, verdict = xl.observe(
        None, lease(5, written=1e9), now=100.0, expiry=10, observer_boot="o"
    )
    # same counter, the writer's clock jumps a year ahead: not a renewal
    record, verdict = xl.observe(
        record, lease(5, written=1e9 + 3e7), now=111.0, expiry=10, observer_boot="o"
    )
    assert verdict["state"] == xl.EXPIRED
    # the counter moves while the writer's clock runs backwards: a renewal
    record, verdict = xl.observe(
        record, lease(6, written=0.0), now=112.0, expiry=10, observer_boot="o"
    )
    assert verdict["state"] == xl.ADVANCING


def test_expiry_is_measured_on_the_observers_monotonic_clock():
    record, verdict = xl.observe(None, lease(1), now=50.0, expiry=10, observer_boot="o")
    assert verdict == {"state": xl.STALLED, "unchanged_for": 0.0, "owner": "A", "counter": 1}
    record, verdict = xl.observe(record, lease(1), now=59.9, expiry=10, observer_boot="o")
    assert verdict["state"] == xl.STALLED and verdict["unchanged_for"] == pytest.approx(9.9)
    record, verdict = xl.observe(record, lease(2), now=59.95, expiry=10, observer_boot="o")
    assert verdict["state"] == xl.ADVANCING
    record, verdict = xl.observe(record, lease(2), now=69.0, expiry=10, observer_boot="o")
    assert verdict["state"] == xl.STALLED
    record, verdict = xl.observe(record, lease(2), now=69.95, expiry=10, observer_boot="o")
    assert verdict["state"] == xl.EXPIRED


def test_owner_or_boot_change_is_progress_too():
    record, _ = xl.observe(None, lease(7), now=0, expiry=10, observer_boot="o")
    _, verdict = xl.observe(record, lease(7, boot="boot-b"), now=20, expiry=10, observer_boot="o")
    assert verdict["state"] == xl.ADVANCING
    _, verdict = xl.observe(record, lease(7, owner="B"), now=20, expiry=10, observer_boot="o")
    assert verdict["state"] == xl.ADVANCING


def test_an_observation_from_another_observer_boot_is_discarded():
    record, _ = xl.observe(None, lease(1), now=1000.0, expiry=10, observer_boot="old")
    # after a reboot the monotonic clock restarted near 0: the old record must not count
    record, verdict = xl.observe(record, lease(1), now=5.0, expiry=10, observer_boot="new")
    assert verdict["state"] == xl.STALLED and verdict["unchanged_for"] == 0.0
    assert record["observer_boot"] == "new"


def test_missing_and_released():
    assert xl.observe(None, None, now=0, expiry=1, observer_boot="o")[1]["state"] == xl.MISSING
    record, verdict = xl.observe(None, lease(3, released=True), 0, 1, "o")
    assert verdict["state"] == xl.RELEASED


@pytest.mark.parametrize(
    ("current", "state", "kwargs", "allowed", "why"),
    [
        (None, xl.MISSING, {}, True, "no lease yet"),
        (lease(4, owner="B"), xl.STALLED, {}, True, "already ours"),
        (lease(4, released=True), xl.STALLED, {}, True, "released by A"),
        (lease(4), xl.STALLED, {"fenced": "A"}, True, "owner A is fenced"),
        (lease(4), xl.STALLED, {"handover_from": "A"}, True, "handed over by A"),
        (lease(4), xl.EXPIRED, {}, True, "lease of A expired"),
        (lease(4), xl.STALLED, {}, False, "held by A (stalled"),
        (lease(4), xl.ADVANCING, {"fenced": "C"}, False, "held by A (advancing"),
    ],
)
def test_may_take(current, state, kwargs, allowed, why):
    ok, reason = xl.may_take(current, {"state": state, "unchanged_for": 1.0}, "B", **kwargs)
    assert ok is allowed and why in reason


def test_self_fence_deadline_counts_from_the_issue_of_the_last_good_renewal():
    assert not xl.self_fence_due(last_renewal_issued=100.0, now=104.9, self_fence_after=5)
    assert xl.self_fence_due(last_renewal_issued=100.0, now=105.0, self_fence_after=5)


def test_counter_keeps_climbing_across_owners():
    first = xl.renewed(None, "A", "boot-a")
    taken = xl.renewed(first, "B", "boot-b")
    assert (first["counter"], taken["counter"], taken["owner"]) == (1, 2, "B")


def test_settings_defaults_and_unsafe_timings():
    conf = xl.settings({"dir": "/cluster/.xenha/leases", "expiry": 10.0})
    assert conf["self_fence_after"] == 5.0
    with pytest.raises(xl.LeaseError, match=r"self_fence_after \(8.0 s\) \+ destroy_timeout"):
        xl.settings({"expiry": 10}, self_fence_after=8)
    with pytest.raises(xl.LeaseError, match="at least twice renew_interval"):
        xl.settings({"renew_interval": 3, "expiry": 10})
    with pytest.raises(xl.LeaseError, match="^xenha:leases:expiry: must be a number, got '10'$"):
        xl.settings({"expiry": "10"})
    with pytest.raises(xl.LeaseError, match="^xenha:leases:expiry: must be a finite number"):
        xl.settings({"expiry": float("nan")})  # every comparison with NaN is false
    with pytest.raises(xl.LeaseError, match="^xenha:leases:dir: 'leases' must be an absolute"):
        xl.settings({"dir": "leases"})
    with pytest.raises(xl.LeaseError, match="^xenha:leases:dir: .* must be a plain path"):
        xl.settings({"dir": "/cluster/../leases"})


def test_decode_names_the_file_and_the_problem():
    assert xl.decode(xl.encode(lease(3)))["counter"] == 3
    with pytest.raises(xl.LeaseError, match="x.lease: not a lease file"):
        xl.decode(b"\x00garbage", "x.lease")
    with pytest.raises(xl.LeaseError, match="counter must be a non-negative integer"):
        xl.decode(xl.encode(lease(-1)), "x.lease")
    with pytest.raises(xl.LeaseError, match="owner missing"):
        xl.decode(xl.encode(lease(1, owner="")), "x.lease")


def test_lease_names_are_validated():
    assert xl.lease_name("domu", "web01") == "domu-web01.lease"
    assert xl.parse_lease_name("host-ServVirt1.lease") == ("host", "ServVirt1")
    assert xl.parse_lease_name("domu-web01.lease.tmp.12") is None
    with pytest.raises(CommandExecutionError, match="invalid domain name 'web;rm -rf /'"):
        xl.lease_name("domu", "web;rm -rf /")
    with pytest.raises(xl.LeaseError, match="invalid lease kind"):
        xl.lease_name("disk", "x")


# --- the minion module, two "hosts" sharing one lease directory ---

# short, yet with room for a loaded CI machine: one renewal must take less than self_fence_after
FAST = {"renew_interval": 0.25, "self_fence_after": 1.5, "destroy_timeout": 0.5, "expiry": 2.5}


def rounds(seconds):
    """serve()'s fence checks in ``seconds`` (it checks every min(0.1, renew_interval / 4) s)."""
    return int(seconds / min(0.1, FAST["renew_interval"] / 4))


class Host:
    """One minion's view: the module loaded with its own __opts__ and a fake toolstack."""

    def __init__(self, name, shared, tmp, boot="boot"):
        spec = importlib.util.spec_from_file_location(
            f"xenha_lease_mod_{name}", REPO / "_modules" / "xenha_lease.py"
        )
        self.mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.mod)
        # keep the renewer's warnings out of Salt's deferred root handler (flushed at exit)
        self.mod.log = logging.getLogger(f"xenha_lease_test.{name}")
        self.mod.log.propagate = False
        self.mod.log.addHandler(logging.NullHandler())
        (tmp / name).mkdir()
        boot_file = tmp / name / "boot_id"
        boot_file.write_text(boot + "\n")
        self.domus, self.destroyed = [], []
        self.mod.__pillar__ = {"xenha": {"leases": {"dir": str(shared), **FAST}}}
        self.mod.__opts__ = {
            "id": name,
            "cachedir": str(tmp / name / "cache"),
            "xenha_boot_id_path": str(boot_file),
        }
        self.mod.__salt__ = {
            "xenha_xen.list_domains": lambda: {"dom0": {}, "domus": {d: {} for d in self.domus}},
            "xenha_xen.destroy": self._destroy,
        }

    def _destroy(self, name):
        self.destroyed.append(name)
        self.domus.remove(name)


@pytest.fixture
def shared(tmp_path):
    path = tmp_path / "leases"
    path.mkdir()
    return path


@pytest.fixture
def hosts(shared, tmp_path):
    return Host("A", shared, tmp_path), Host("B", shared, tmp_path)


def test_renew_claims_local_domus_and_leaves_foreign_ones(hosts, shared):
    a, b = hosts
    b.domus = ["db01"]
    b.mod.renew()
    a.domus = ["web01", "db01", "web02--incoming"]
    first = a.mod.renew()
    assert first == {"host": 1, "domus": {"web01": 1}, "foreign": {"db01": "B"}}
    assert a.mod.renew()["host"] == 2
    names = sorted(p.name for p in shared.iterdir())
    assert names == ["domu-db01.lease", "domu-web01.lease", "host-A.lease", "host-B.lease"]
    assert a.mod.owned("A") == {"web01": 2}
    assert b.mod.owned("B") == {"db01": 1}


def test_observe_sees_renewals_and_expiry_and_remembers_between_calls(hosts):
    a, b = hosts
    a.mod.renew()
    assert b.mod.observe("A")["state"] == xl.STALLED  # first sight proves nothing
    a.mod.renew()
    assert b.mod.observe("A", duration=1)["state"] == xl.ADVANCING
    time.sleep(0.35)
    half = b.mod.observe("A")
    assert half["state"] == xl.STALLED and half["unchanged_for"] >= 0.35  # clock kept running
    expired = b.mod.observe("A", duration=2 * FAST["expiry"])
    assert expired["state"] == xl.EXPIRED and expired["unchanged_for"] >= FAST["expiry"]


def test_a_change_since_an_old_look_is_not_proof_of_life():
    record, _ = xl.observe(None, lease(1), now=0.0, expiry=10, observer_boot="o", fresh=3)
    # renewed at some point in the last 60 s, then silent: that says nothing about now
    old, verdict = xl.observe(record, lease(9), now=60.0, expiry=10, observer_boot="o", fresh=3)
    assert verdict["state"] == xl.STALLED and verdict["unchanged_for"] == 0
    _, verdict = xl.observe(old, lease(10), now=62.0, expiry=10, observer_boot="o", fresh=3)
    assert verdict["state"] == xl.ADVANCING  # looked 2 s ago, changed since: alive now


def test_merge_prefers_the_record_looked_at_last():
    own = {"host:A": {"signature": [1], "changed": 5.0, "seen": 6.0}}
    watched = {
        "host:A": {"signature": [2], "changed": 7.0, "seen": 9.0},
        "host:B": {"signature": [3], "changed": 1.0, "seen": 2.0},
    }
    merged = xl.merge_records(own, watched)
    assert merged == watched
    assert xl.merge_records(watched, own) == watched  # an older look never wins
    assert xl.merge_records(own, {}) == own


def test_the_renewers_watch_answers_at_once_how_long_a_peer_is_silent(hosts):
    a, b = hosts
    a.mod.renew()
    b.mod.serve(rounds=rounds(0.6))  # B's renewer watches A's lease, which stops advancing
    time.sleep(0.3)
    started = time.monotonic()
    verdict = b.mod.observe("A", duration=2 * FAST["expiry"], settled=0.5)
    took = time.monotonic() - started
    # A's silence began before this call: only the renewer's watch can have seen that
    assert verdict["state"] == xl.STALLED and verdict["unchanged_for"] > took + 0.5


def test_observe_returns_advancing_while_the_owner_renews(hosts):
    a, b = hosts
    a.mod.renew()
    stop = threading.Event()

    def renewer():
        while not stop.is_set():
            a.mod.renew()
            time.sleep(0.1)

    thread = threading.Thread(target=renewer)
    thread.start()
    try:
        assert b.mod.observe("A", duration=2)["state"] == xl.ADVANCING
    finally:
        stop.set()
        thread.join()


def test_domu_lease_acquire_check_and_release(hosts):
    a, b = hosts
    a.domus = ["web01"]
    a.mod.renew()
    refused = b.mod.check_start("web01")
    assert refused["ok"] is False and "held by A" in refused["reason"]
    with pytest.raises(CommandExecutionError, match="domU web01: lease not taken: held by A"):
        b.mod.acquire_domu("web01")
    # the master fenced A: B may take it at once
    assert b.mod.acquire_domu("web01", fenced="A")["reason"] == "owner A is fenced"
    assert b.mod.owned("B") == {"web01": 2} and a.mod.owned("A") == {}
    # A may not take it back while B holds it; after B releases it, A may
    assert a.mod.check_start("web01")["ok"] is False
    assert b.mod.release_domu("web01") == {"released": True, "owner": "B"}
    assert a.mod.release_domu("web01")["released"] is False  # not A's to release
    assert a.mod.acquire_domu("web01")["reason"] == "released by B"


def test_acquire_waits_for_provable_expiry(hosts):
    a, b = hosts
    a.domus = ["web01"]
    a.mod.renew()
    got = b.mod.acquire_domu("web01", wait=2 * FAST["expiry"])
    assert got["acquired"] and "lease of A expired" in got["reason"]


def test_check_start_changes_nothing(hosts, shared):
    a, _ = hosts
    assert a.mod.check_start("web01") == {"ok": True, "reason": "no lease yet", "owner": None}
    assert not (shared / "domu-web01.lease").exists()


def test_missing_lease_directory_is_an_error_not_a_free_lease(hosts, shared):
    a, b = hosts
    shared.rename(shared.with_name("unmounted"))
    with pytest.raises(CommandExecutionError, match="is missing"):
        b.mod.check_start("web01")
    with pytest.raises(CommandExecutionError, match="is missing"):
        a.mod.renew()
    with pytest.raises(CommandExecutionError, match="is missing"):
        b.mod.observe("A")


def test_serve_renews_and_self_fences_when_the_storage_goes(hosts, shared):
    a, b = hosts
    a.domus = ["web01", "db01"]
    result = a.mod.serve(rounds=rounds(1.0))
    assert result == {"self_fenced": None, "owned": ["db01", "web01"]}
    renewed = b.mod.owned("A")
    assert sorted(renewed) == ["db01", "web01"] and min(renewed.values()) > 1
    shared.rename(shared.with_name("gone"))  # storage lost
    started = time.monotonic()
    result = a.mod.serve(rounds=rounds(3.5))
    assert result["self_fenced"] == {"destroyed": ["db01", "web01"], "not_confirmed": []}
    assert sorted(a.destroyed) == ["db01", "web01"] and a.domus == []
    assert time.monotonic() - started >= FAST["self_fence_after"]


def test_self_fence_happens_even_when_a_write_hangs(hosts, monkeypatch):
    a, _ = hosts
    a.domus = ["web01"]
    a.mod.renew()
    monkeypatch.setattr(a.mod, "READ_TIMEOUT", 0.05)
    release = threading.Event()
    monkeypatch.setattr(xl, "write_atomic", lambda path, data: release.wait(5))
    try:
        result = a.mod.serve(rounds=rounds(3.0))
    finally:
        release.set()
    assert result["self_fenced"]["destroyed"] == ["web01"]


def test_show_lists_every_lease_and_a_hung_listing_times_out(hosts, monkeypatch):
    a, b = hosts
    a.domus = ["web01"]
    a.mod.renew()
    b.mod.renew()
    shown = a.mod.show()
    assert sorted(shown) == ["domu-web01.lease", "host-A.lease", "host-B.lease"]
    assert shown["domu-web01.lease"]["owner"] == "A"
    monkeypatch.setattr(a.mod, "READ_TIMEOUT", 0.05)
    release = threading.Event()
    monkeypatch.setattr(a.mod.os, "listdir", lambda path: release.wait(5) and [])
    try:
        with pytest.raises(CommandExecutionError, match="listing"):
            a.mod.show()
    finally:
        release.set()


def test_serve_reports_to_the_systemd_watchdog(hosts, tmp_path, monkeypatch):
    a, _ = hosts
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        a.mod.serve(rounds=3)
        got = [sock.recv(64) for _ in range(4)]
    assert got == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1", b"WATCHDOG=1"]


@given(
    st.lists(
        st.tuples(st.floats(0, 5, allow_nan=False), st.booleans(), st.floats(-1e9, 1e9)),
        min_size=1,
        max_size=40,
    )
)
def test_verdicts_follow_progress_and_the_observers_clock_only(steps):
    """Random renewals and pauses, with a wild writer clock: expired iff unchanged >= expiry."""
    expiry, now, counter, changed_at, record = 10.0, 0.0, 0, 0.0, None
    for i, (pause, renews, writer_clock) in enumerate(steps):
        now += pause
        if renews:
            counter += 1
        record, verdict = xl.observe(
            record, lease(counter, written=writer_clock), now, expiry, observer_boot="o"
        )
        if i == 0 or renews:
            changed_at = now
        if renews and i > 0:
            assert verdict["state"] == xl.ADVANCING
        else:
            want = xl.EXPIRED if now - changed_at >= expiry else xl.STALLED
            assert verdict["state"] == want


def test_a_slow_toolstack_does_not_delay_renewals(hosts):
    a, _ = hosts
    a.domus = ["web01"]
    listing = a.mod.__salt__["xenha_xen.list_domains"]

    def slow_listing():
        time.sleep(FAST["self_fence_after"] + 0.5)  # longer than the self-fence deadline
        return listing()

    a.mod.__salt__["xenha_xen.list_domains"] = slow_listing
    before = a.mod.renew()["domus"]["web01"]
    result = a.mod.serve(rounds=rounds(3.0))
    assert result == {"self_fenced": None, "owned": ["web01"]}
    assert a.mod.owned("A")["web01"] >= before + 5  # renewed on time all along
    assert a.destroyed == []


def test_serve_claims_new_domus_and_drops_handed_over_ones(hosts):
    a, b = hosts
    a.domus = ["web01"]
    a.mod.renew()
    b.mod.acquire_domu("web01", handover_from="A")  # migrated away: B holds it now
    a.domus = ["db01"]  # and db01 was started here meanwhile
    result = a.mod.serve(rounds=rounds(1.0))
    assert result == {"self_fenced": None, "owned": ["db01"]}
    assert a.mod.owned("A") == {"db01": a.mod.owned("A")["db01"]}
    assert b.mod.owned("B") == {"web01": 2}  # A never wrote it again


def test_self_fence_also_destroys_a_domu_it_had_no_lease_for_yet(hosts, shared):
    a, b = hosts
    b.domus = ["db01"]
    b.mod.renew()  # B holds db01's lease (say: A is the target of a migration not yet handed over)
    a.domus = ["db01", "web01"]

    def lose_storage():
        time.sleep(0.5)  # A has renewed web01 (and left db01 alone) a few times by then
        shared.rename(shared.with_name("gone"))

    loss = threading.Thread(target=lose_storage)
    loss.start()
    result = a.mod.serve(rounds=rounds(3.5))
    loss.join()
    # once A cannot renew, a survivor may start anything A runs: all of it goes
    assert result["self_fenced"]["destroyed"] == ["db01", "web01"]
    assert a.domus == []
