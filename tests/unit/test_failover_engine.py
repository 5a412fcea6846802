"""The failover engine with a fake I/O adapter: every path, concurrency, and crash/resume."""

import contextlib
import datetime
import importlib.util
import os
import subprocess
import sys
import threading

import pytest
import xenha_failover as xf
import xenha_store
from salt.exceptions import CommandExecutionError

from tests.support.failover_fake import EVENT, QUICK, Crash, FakeIO, copies, engine

RUNNER = os.path.join(os.path.dirname(__file__), "..", "..", "_runners", "xenha.py")
PREFLIGHT = os.path.join(os.path.dirname(__file__), "..", "..", "_modules", "xenha_preflight.py")


@pytest.fixture
def io():
    return FakeIO()


# --- claims ---


@pytest.mark.parametrize(
    "claim",
    [
        ("A", "intruder", {"id": "intruder", "peer": "A"}, "reporter 'intruder' is not"),
        ("A", "B", {"id": "C", "peer": "A"}, "event id 'C' does not match 'B'"),
        ("A", "B", {"id": "B", "reporter": "C", "peer": "A"}, "event reporter 'C'"),
        ("A", "B", {"id": "B", "peer": "C"}, "event peer 'C' does not match 'A'"),
        ("ServDB", "B", {"id": "B", "peer": "ServDB"}, "'ServDB' is not a cluster VM host"),
        ("B", "B", {"id": "B", "peer": "B"}, "reports itself lost"),
        ("A", "B", None, "no event data"),
        ("A", "B", {"peer": "A"}, "event names no sender"),
        ("nobody", None, None, "'nobody' is not a cluster VM host"),
    ],
)
def test_forged_or_mismatched_claims_are_ignored_and_logged(io, tmp_path, claim):
    host, reporter, event, why = claim
    result = engine(io, tmp_path).handle(host, reporter, event)
    assert result["state"] == "ignored"
    assert why in result["reason"]
    assert io.tags() == ["ignored"]
    assert io.audits[-1]["step"] == "ignored" and why in io.audits[-1]["reason"]
    assert "ping" not in io.calls and "fence_ipmi" not in io.calls
    assert xf.load(str(tmp_path), host) == {}  # a forged claim touches no journal


def test_forged_claim_does_not_disturb_a_finished_failover(io, tmp_path):
    eng = engine(io, tmp_path)
    eng.handle("A", "B", EVENT)
    before = xf.load(str(tmp_path), "A")
    eng.handle("A", "intruder", {"id": "intruder", "peer": "A"})
    assert xf.load(str(tmp_path), "A") == before


# --- the happy path ---


def test_failover_fences_by_ipmi_and_restarts_by_priority(io, tmp_path):
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done"
    assert result["fence"]["method"] == "ipmi"
    # priority order: db01 (200), web01 (100), tiny (10)
    assert [name for name, _ in io.starts] == ["db01", "web01", "tiny"]
    assert all(len(hosts) == 1 for hosts in copies(io).values())
    tags = io.tags()
    assert tags[:5] == ["started", "verified", "corroborated", "fenced", "domu_started"]
    assert tags.count("domu_started") == 3 and tags[-1] == "done"
    done = io.events[-1][1]
    assert done["not_restarted"] == {} and done["seconds"] >= 0
    started = [d for t, d in io.events if t.endswith("/domu_started")]
    assert {d["domu"]: d["target"] for d in started} == dict(io.starts)
    assert all("seconds" in d for d in started)
    steps = [a["step"] for a in io.audits]
    assert steps[:4] == ["received", "verified", "corroborated", "fenced"]
    assert steps[-1] == "done"
    hoststate = xenha_store.load(str(tmp_path), "hoststate")
    assert hoststate["A"]["state"] == "fenced"


def test_a_lease_taken_between_the_first_listing_and_the_fence_is_not_left_behind(io, tmp_path):
    io.domus["late01"] = {"config": "/c/late01.cfg", "memory_mib": 128, "priority": 5}

    def fence():  # the leases were listed while corroborating; A took one more before it died
        io.leases_of["A"].append("late01")
        io.reachable.discard("A")
        return {"fenced": True, "seconds": 0.1}

    io.ipmi = fence
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done"
    assert sorted(name for name, _ in io.starts) == ["db01", "late01", "tiny", "web01"]
    assert any(a["step"] == "leases_missed" and a["domus"] == ["late01"] for a in io.audits)
    assert io.calls.count("leased_domus") == 2  # before the fence, and again after it


def test_operator_request_runs_a_failover(io, tmp_path):
    assert engine(io, tmp_path).handle("A")["state"] == "done"


def test_domus_that_fit_nowhere_are_reported_not_dropped(io, tmp_path):
    io.free = {"B": 600, "C": 200}
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done"
    assert dict(io.starts) == {"web01": "B", "tiny": "C"}
    assert "no room: needs 1024 MiB" in result["not_restarted"]["db01"]
    assert result["domus"]["db01"]["state"] == "unplaced"
    assert "db01" in io.events[-1][1]["not_restarted"]


def test_a_domu_that_fitted_nowhere_is_started_by_a_resume_once_there_is_room(io, tmp_path):
    io.free = {"B": 600, "C": 200}
    engine(io, tmp_path).handle("A", "B", EVENT)
    # no room yet: the resume changes nothing and fires nothing
    fired = len(io.events)
    assert engine(io, tmp_path).resume("A")["not_restarted"].keys() == {"db01"}
    assert len(io.events) == fired and xf.load(str(tmp_path), "A")["state"] == "done"
    io.free["C"] += 1024  # the operator stopped something on C
    result = engine(io, tmp_path).resume("A")
    assert result["state"] == "done" and result["not_restarted"] == {}
    assert result["domus"]["db01"]["state"] == "started" and result["domus"]["db01"]["host"] == "C"
    assert sorted(copies(io).items()) == [("db01", ["C"]), ("tiny", ["C"]), ("web01", ["B"])]
    assert [d["domu"] for t, d in io.events if t.endswith("/domu_started")][-1] == "db01"
    assert xenha_store.load(str(tmp_path), "hoststate")["A"]["state"] == "fenced"


def test_a_domu_that_fitted_nowhere_stays_down_once_its_host_is_back(io, tmp_path):
    io.free = {"B": 600, "C": 200}
    engine(io, tmp_path).handle("A", "B", EVENT)
    io.free["C"] += 1024
    io.reachable.add("A")  # powered on again: its domUs are its operator's again
    assert engine(io, tmp_path).resume("A")["state"] == "recovered"
    assert "db01" not in copies(io)


def test_unknown_domu_and_failed_start_are_reported(io, tmp_path):
    io.leases_of["A"].append("stray")
    io.start_fail.add("web01")
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done"
    assert "not in pillar" in result["not_restarted"]["stray"]
    assert "xl create /c/web01.cfg failed" in result["not_restarted"]["web01"]
    assert result["domus"]["web01"]["tries"] == 3  # start_tries, each after a back-off
    assert sorted(n for n, _ in io.starts) == ["db01", "tiny"]


def test_a_start_whose_answer_was_lost_is_found_running_not_started_twice(io, tmp_path):
    start = io.start_domu

    def answer_lost(host, name, spec, fenced):
        start(host, name, spec, fenced)
        if name == "web01" and len(io.starts) <= 3:  # the first start of web01: no answer
            raise RuntimeError(f"no answer from {host} to xenha_sanlock.start_domu within 20 s")
        return {"started": True}

    io.start_domu = answer_lost
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done" and result["not_restarted"] == {}
    assert [n for n, _ in io.starts].count("web01") == 1
    assert "found running after a failed start: no answer" in result["domus"]["web01"]["note"]
    announced = [d["domu"] for t, d in io.events if t.endswith("/domu_started")]
    assert sorted(announced) == ["db01", "tiny", "web01"]


def test_a_start_that_failed_while_the_survivor_was_away_is_tried_again(io, tmp_path):
    io.start_fail.add("web01")
    start, tried = io.start_domu, []

    def back_later(host, name, spec, fenced):
        tried.append(name)
        if tried.count("web01") == 3:  # the survivor's minion is back for the last try
            io.start_fail.discard("web01")
        return start(host, name, spec, fenced)

    io.start_domu = back_later
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done" and result["not_restarted"] == {}
    assert result["domus"]["web01"]["state"] == "started"
    assert "xl create" in result["domus"]["web01"]["last_error"]
    assert sorted(copies(io)) == ["db01", "tiny", "web01"]


def test_a_suspect_survivor_is_waited_for_not_taken_for_no_room(io, tmp_path):
    # an isolated host also claimed B and C lost: their own checks run while A's plan is made
    looks = []
    io.host_states = lambda: (
        looks.append(1) or ({"B": "suspect", "C": "suspect"} if len(looks) < 2 else {})
    )
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done" and result["not_restarted"] == {}
    assert sorted(copies(io)) == ["db01", "tiny", "web01"]
    blocked = [d["reason"] for t, d in io.events if t.endswith("/blocked")]
    assert blocked == ["fenced, but survivors B, C are suspect (their check runs)"]


def fenced_earlier(io, tmp_path, host):
    """``host`` fenced by an earlier, finished failover, as the store keeps it; the store dir."""
    cachedir = str(tmp_path)
    xenha_store.save(cachedir, "hoststate", {host: {"state": "fenced", "by": "failover"}})
    old = {"host": host, "id": f"{host}-old", "state": "done", "started": 1.0, "history": []}
    xenha_store.save(cachedir, xf.journal_name(host), old)
    io.host_states = lambda: {
        h: m["state"] for h, m in xenha_store.load(cachedir, "hoststate").items()
    }
    return cachedir


def test_a_survivor_back_from_its_own_failover_is_a_target_before_the_resume_sees_it(io, tmp_path):
    # B was fenced by an earlier failover and powered on again; the scheduled resume has not
    # marked it healthy yet when A dies: without B, C has room for only part of A's domUs
    cachedir = fenced_earlier(io, tmp_path, "B")
    result = engine(io, tmp_path).handle("A", "C", {**EVENT, "id": "C", "reporter": "C"})
    assert result["state"] == "done" and result["not_restarted"] == {}
    assert sorted(copies(io)) == ["db01", "tiny", "web01"]
    assert xf.load(cachedir, "B")["state"] == "recovered"
    recovered = [d for t, d in io.events if t == "xenha/failover/B/recovered"]
    assert [d["failover"] for d in recovered] == ["B-old"]
    assert "its minion answers the master" in recovered[0]["reason"]
    assert xenha_store.load(cachedir, "hoststate")["A"]["state"] == "fenced"


def test_a_survivor_still_down_after_its_failover_stays_out_of_the_plan(io, tmp_path):
    cachedir = fenced_earlier(io, tmp_path, "B")
    io.ping = lambda host: False  # B's snapshot answer came, but B does not answer pings
    io.lease_state["B"] = "dead"
    result = engine(io, tmp_path).handle("A", "C", {**EVENT, "id": "C", "reporter": "C"})
    assert xf.load(cachedir, "B")["state"] == "done"
    assert not any(host == "B" for _, host in io.starts)
    assert result["not_restarted"]


def test_no_survivor_answering_the_plan_blocks_and_retries_instead_of_ending(io, tmp_path):
    snapshot, silent = io.snapshot, [{}, {}]  # the prefetch and the plan's own read
    io.snapshot = lambda hosts: silent.pop() if silent else snapshot(hosts)
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done" and result["not_restarted"] == {}
    assert sorted(copies(io)) == ["db01", "tiny", "web01"]
    blocked = [d["reason"] for t, d in io.events if t.endswith("/blocked")]
    assert blocked == ["fenced, but no survivor answered with its free memory"]


def test_domu_already_running_elsewhere_is_not_started_again(io, tmp_path):
    io.running["C"].append("web01")
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["domus"]["web01"] == {"state": "running", "host": "C"}
    assert "web01" not in [n for n, _ in io.starts]


# --- corroboration ---


def test_host_answering_the_master_is_not_fenced(io, tmp_path):
    io.reachable.add("A")
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "ignored"
    assert "reaches the host" in result["reason"]
    assert "fence_ipmi" not in io.calls and io.starts == []
    assert "A" not in xenha_store.load(str(tmp_path), "hoststate")


def test_an_answered_ping_clears_the_suspicion_before_the_lease_watch_ends(io, tmp_path):
    # the reporter is cut off: its look at the lease hangs until its call times out
    io.reachable.add("A")
    order, released = [], threading.Event()
    observe = io.observe

    def slow_observe(observer, host, duration):
        released.wait(10)
        order.append("lease watch ended")
        return observe(observer, host, duration)

    def fire(tag, data):
        order.append(tag)
        if tag.endswith("/ignored"):
            released.set()

    io.observe, io.fire = slow_observe, fire
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "ignored" and "reaches the host" in result["reason"]
    assert order.index("xenha/failover/A/ignored") < order.index("lease watch ended")


def test_isolated_host_that_still_renews_keeps_its_domus(io, tmp_path):
    io.lease_state["A"] = "advancing"
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "ignored"
    assert "still renews its sanlock delta lease" in result["reason"]
    assert "fence_ipmi" not in io.calls and io.starts == []
    assert io.tags()[-1] == "ignored"


def test_isolated_host_is_rechecked_on_resume_and_failed_over_once_its_lease_stops(io, tmp_path):
    io.lease_state["A"] = "advancing"
    assert engine(io, tmp_path).handle("A", "B", EVENT)["state"] == "ignored"
    assert engine(io, tmp_path).resume("A")["state"] == "ignored"  # still renewing
    assert io.starts == []
    io.lease_state["A"] = "dead"  # o2cb rebooted it, or it lost the storage and self-fenced
    assert engine(io, tmp_path).resume("A")["state"] == "done"
    assert len(io.starts) == 3


def test_host_that_answered_the_master_is_not_rechecked(io, tmp_path):
    io.reachable.add("A")
    engine(io, tmp_path).handle("A", "B", EVENT)
    io.reachable.discard("A")
    assert engine(io, tmp_path).resume("A")["state"] == "ignored"
    assert "fence_ipmi" not in io.calls


def test_unreachable_observer_falls_back_to_another(io, tmp_path):
    io.reachable.discard("B")  # the reporter cannot answer; C observes
    io.lease_state["A"] = "advancing"
    assert engine(io, tmp_path).handle("A", "B", EVENT)["state"] == "ignored"


# --- fencing ---


def test_no_bmc_fences_by_lease_expiry(io, tmp_path):
    del io.vmhosts["A"]["bmc"]
    io.lease_state["A"] = "dead"
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done"
    assert result["fence"]["method"] == "lease"
    assert "fence_ipmi" not in io.calls


def test_bmc_failure_falls_back_to_lease_expiry(io, tmp_path):
    io.ipmi = "fail"
    io.lease_state["A"] = "dead"
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["fence"]["method"] == "lease"
    assert len(io.starts) == 3


def test_fence_failure_blocks_retries_with_backoff_then_ack_completes(io, tmp_path):
    io.ipmi = "fail"
    io.lease_state["A"] = "stopped"
    # lease-only: waits 8 x 1 + 10 s + margin for "dead" on each attempt
    eng = engine(io, tmp_path, retry_base=5, retry_max=20, retry_for=150, **QUICK)
    result = eng.handle("A", "B", EVENT)
    assert result["state"] == "blocked"
    assert "IPMI: Error: Unable to establish IPMI v2" in result["reason"]
    assert "not dead after 8 x io_timeout + watchdog_fire" in result["reason"]
    assert "stopped for B, C" in result["reason"]
    assert io.starts == []  # nothing restarts
    blocked = [d for t, d in io.events if t == "xenha/failover/A/blocked"]
    assert [d["retry_in"] for d in blocked] == [5, 10, 20, 20][: len(blocked)]
    assert len(blocked) >= 3
    assert io.calls.count("fence_ipmi") == len(blocked)
    assert xenha_store.load(str(tmp_path), "hoststate")["A"]["state"] == "suspect"
    # resuming without an ack keeps it blocked, still nothing restarted
    assert engine(io, tmp_path, retry_for=0).resume("A")["state"] == "blocked"
    assert io.starts == []
    # the operator confirms a manual fence: the failover completes
    result = engine(io, tmp_path).ack("A")
    assert result["acknowledged"] is True and result["state"] == "done"
    assert result["fence"]["method"] == "manual"
    assert len(io.starts) == 3 and io.tags()[-1] == "done"
    assert any(a["step"] == "ack_fence" for a in io.audits)


def test_ack_during_backoff_is_picked_up_by_the_running_failover(io, tmp_path):
    io.ipmi = "fail"
    io.lease_state["A"] = "stopped"
    real_sleep = io.sleep

    def sleep_then_ack(seconds):
        real_sleep(seconds)
        # the operator's salt-run while the failover backs off: it only records the ack
        if "blocked" in io.tags() and not acks:
            acks.append(engine(io, tmp_path).ack("A"))

    acks = []
    io.sleep = sleep_then_ack
    result = engine(io, tmp_path, retry_base=5, **QUICK).handle("A", "B", EVENT)
    assert result["state"] == "done" and result["fence"]["method"] == "manual"
    assert acks[0]["acknowledged"] is True and acks[0]["state"] == "in_progress"
    assert io.tags().count("blocked") == 1


def test_host_that_returns_while_blocked_is_not_fenced(io, tmp_path):
    io.ipmi = "fail"
    io.lease_state["A"] = "stopped"
    eng = engine(io, tmp_path, retry_base=5, retry_for=6)
    assert eng.handle("A", "B", EVENT)["state"] == "blocked"
    io.reachable.add("A")  # the network blip is over
    assert engine(io, tmp_path).resume("A")["state"] == "ignored"
    assert io.starts == []


def test_stale_ack_from_an_earlier_failover_does_not_count(io, tmp_path):
    xenha_store.save(str(tmp_path), xf.ack_name("A"), {"host": "A", "by": "old"})
    io.ipmi = "fail"
    io.lease_state["A"] = "stopped"
    assert engine(io, tmp_path, retry_for=0).handle("A", "B", EVENT)["state"] == "blocked"
    assert xenha_store.load(str(tmp_path), xf.ack_name("A")) == {}


# --- exactly once ---


def test_repeated_events_after_done_are_one_failover(io, tmp_path):
    eng = engine(io, tmp_path)
    first = eng.handle("A", "B", EVENT)
    again = eng.handle("A", "C", {"id": "C", "peer": "A"})
    assert again == {"host": "A", "state": "done", "duplicate": True, "id": first["id"]}
    assert len(io.starts) == 3 and io.tags().count("started") == 1


def _stamped(seconds, **data):
    """A claim as the reactor hands it over: Salt's _stamp (the reporter's clock, UTC)."""
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()
    return {"id": "B", "reporter": "B", "peer": "A", "_stamp": stamp, **data}


def test_a_new_loss_after_the_host_came_back_is_not_taken_for_a_repeat(io, tmp_path):
    eng = engine(io, tmp_path)
    first = eng.handle("A", "B", EVENT)
    assert first["fence"]["generation"] == 1
    io.clock += 120  # A came back, nobody marked it recovered yet (the schedule runs later)
    late = eng.handle("A", "C", {**_stamped(io.now() - 60, age=70.0), "id": "C", "reporter": "C"})
    assert late["duplicate"] is True and late["id"] == first["id"]
    # it rejoined sanlock (a new generation of its delta lease) and died again: a new incident,
    # seen in the runner's own read, whatever the claim says
    io.generation["A"] = 2
    io.leases_of["A"] = ["web01"]  # a domU it ran since
    io.running["B"].remove("web01")
    again = eng.handle("A", "B", _stamped(io.now() - 3600, age=9999.0))
    assert again["state"] == "done" and again["id"] != first["id"]
    assert io.calls.count("fence_ipmi") == 2  # corroborated and fenced afresh
    recovered = [d for t, d in io.events if t.endswith("/recovered")]
    assert [d["failover"] for d in recovered] == [first["id"]]
    assert "joined sanlock again since the fence (generation 2 > 1)" in recovered[0]["reason"]


def test_a_forged_fresh_claim_does_not_mark_a_dead_host_recovered(io, tmp_path):
    """issue 12: the claim's ``_stamp``/``age`` are the sender's; a forged "heard it just now"
    must not clear the fenced mark (which would make the dead host a restart target)."""
    eng = engine(io, tmp_path)
    first = eng.handle("A", "B", EVENT)
    io.clock += 120
    forged = eng.handle("A", "C", {**_stamped(io.now(), age=0.1), "id": "C", "reporter": "C"})
    assert forged["duplicate"] is True and forged["id"] == first["id"]
    assert xenha_store.load(str(tmp_path), "hoststate")["A"]["state"] == "fenced"
    assert not [t for t, _ in io.events if t.endswith("/recovered")]


def test_host_back_after_failover_rejoins_healthy(io, tmp_path):
    eng = engine(io, tmp_path)
    eng.handle("A", "B", EVENT)
    io.reachable.add("A")  # powered on again, minion answers
    assert eng.resume("A")["state"] == "recovered"
    assert "A" not in xenha_store.load(str(tmp_path), "hoststate")
    assert io.tags()[-1] == "recovered"
    # a later loss of A is a new failover (corroborated again: A answers, so ignored)
    assert eng.handle("A", "B", EVENT)["state"] == "ignored"
    assert len(io.starts) == 3


def test_concurrent_events_for_one_host_make_one_failover(io, tmp_path):
    gate, entered = threading.Event(), threading.Event()

    def slow_ipmi():
        entered.set()
        assert gate.wait(10)
        io.reachable.discard("A")
        return {"fenced": True}

    io.ipmi = slow_ipmi
    results = {}
    first = threading.Thread(
        target=lambda: results.setdefault("first", engine(io, tmp_path).handle("A", "B", EVENT))
    )
    first.start()
    assert entered.wait(10)
    joined = [engine(io, tmp_path).handle("A", r, {"id": r, "peer": "A"}) for r in "BCB"]
    gate.set()
    first.join(10)
    assert [j["state"] for j in joined] == ["in_progress"] * 3
    assert results["first"]["state"] == "done"
    assert io.calls.count("fence_ipmi") == 1 and len(io.starts) == 3


def _run_to_completion(io, tmp_path):
    """Like the master: run the failover; after each crash, restart and resume it."""
    with contextlib.suppress(Crash):
        engine(io, tmp_path).handle("A", "B", EVENT)
    for _ in range(5):
        try:
            return engine(io, tmp_path).resume("A")
        except Crash:
            continue
    raise AssertionError("never completed")


def test_crash_at_every_step_resumes_and_completes_exactly_once(tmp_path):
    clean = FakeIO()
    engine(clean, tmp_path / "clean").handle("A", "B", EVENT)
    assert len(clean.calls) > 10
    for point in range(1, len(clean.calls) + 1):
        io = FakeIO()
        io.crash_at = point
        result = _run_to_completion(io, tmp_path / f"crash{point}")
        assert result["state"] == "done", (point, clean.calls[point - 1], result)
        assert sorted(copies(io)) == ["db01", "tiny", "web01"], point
        assert all(len(h) == 1 for h in copies(io).values()), (point, io.running)
        assert len(io.starts) == 3, (point, clean.calls[point - 1], io.starts)
        assert io.calls.count("fence_ipmi") <= 2  # a crash may repeat the fence, never a start
        # no event is lost; one comes twice only if the master died right after firing it
        # (this run's call: reads beside the steps run in threads, so the clean run's order
        # is not always this one's)
        tags = io.tags()
        twice = {t for t in set(tags) if tags.count(t) > clean.tags().count(t)}
        assert tags.count("done") >= 1
        assert len(twice) <= (io.calls[point - 1] == "fire"), (point, twice)
        announced = {d["domu"] for t, d in io.events if t.endswith("/domu_started")}
        assert announced == {"db01", "tiny", "web01"}, (point, clean.calls[point - 1])


def test_resume_with_nothing_to_do(io, tmp_path):
    assert engine(io, tmp_path).resume("A") == {"host": "A", "state": None}


# --- pure parts ---


def test_backoff_doubles_and_is_bounded():
    assert [xf.backoff(n, 5, 60) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_restart_plan_honours_anti_affinity_and_host_states():
    members = {
        "vmhosts": {"A": {}, "B": {}, "C": {}},
        "domus": {
            "web01": {"memory_mib": 100, "anti_affinity": ["web02"]},
            "web02": {"memory_mib": 100},
        },
    }
    snap = {
        "B": {"free_memory_mib": 1000, "domus": ["web02"]},
        "C": {"free_memory_mib": 1000, "domus": []},
    }
    plan = xf.restart_plan("A", members, snap, {"C": "maintenance"}, ["web01"])
    assert plan["domus"]["web01"]["state"] == "unplaced"
    assert "anti-affinity" in plan["domus"]["web01"]["reason"]
    plan = xf.restart_plan("A", members, snap, {}, ["web01"])
    assert plan["domus"]["web01"] == {"state": "pending", "target": "C"}


def test_restart_plan_keeps_the_pillar_checks_reserve_on_a_host_without_one():
    # B leaves memory_reserve_mib out: the restart keeps 256 MiB for dom0 as the check does
    members = {"vmhosts": {"A": {}, "B": {}}, "domus": {"db01": {"memory_mib": 1000}}}
    snap = {"B": {"free_memory_mib": 1255, "domus": []}}
    plan = xf.restart_plan("A", members, snap, {}, ["db01"])
    assert plan["domus"]["db01"] == {
        "state": "unplaced",
        "reason": "no room: needs 1000 MiB, the most any eligible host can take is 999 MiB",
    }
    snap["B"]["free_memory_mib"] = 1256
    plan = xf.restart_plan("A", members, snap, {}, ["db01"])
    assert plan["domus"]["db01"] == {"state": "pending", "target": "B"}


def test_audit_line_is_readable(tmp_path):
    path = tmp_path / "audit.log"
    xf.audit_line(path, {"time": 0, "host": "A", "step": "fenced", "method": "ipmi"})
    assert path.read_text() == '1970-01-01T00:00:00Z A fenced {"method": "ipmi"}\n'


def test_a_claim_made_while_a_resume_decides_on_older_evidence_is_run_after_it(io, tmp_path):
    """
    Seen in the nemesis: a scheduled resume re-checked A (its minion answered: ignored) and
    still held A's run lock when A lost power and the beacon's one "lost" claim came. The
    claim was joined to the resume and dropped: A's domUs stayed down. It is queued and run
    once the resume lets go of the lock.
    """
    io.lease_state["A"] = "advancing"  # partitioned, still renewing: ignored, to re-check
    assert engine(io, tmp_path).handle("A", "B", EVENT)["state"] == "ignored"
    gate, entered = threading.Event(), threading.Event()
    ping = io.ping

    def slow_ping(host):
        if not entered.is_set():  # the resume's ping: A still answers, then A powers off
            entered.set()
            assert gate.wait(10)
            return True
        return ping(host)

    io.ping = slow_ping
    resumed = {}
    holder = threading.Thread(target=lambda: resumed.update(engine(io, tmp_path).resume("A")))
    holder.start()
    assert entered.wait(10)
    io.lease_state["A"] = "stopped"
    claim = engine(io, tmp_path).handle("A", "B", EVENT)
    assert claim == {"host": "A", "state": "in_progress", "joined": True}
    gate.set()
    holder.join(10)
    assert resumed["state"] == "ignored"  # the resume decided on what it saw
    journal = xf.load(str(tmp_path), "A")
    assert journal["state"] == "done", journal  # the claim ran after it: fenced, restarted
    assert sorted(name for name, _ in io.starts) == ["db01", "tiny", "web01"]
    assert xf.claimed_hosts(str(tmp_path)) == []


def test_a_failover_held_by_another_process_is_joined(io, tmp_path):
    """The run lock is an flock: another process (a second salt-run) holding it makes us join."""
    xf.store_dir(str(tmp_path))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, xenha_failover as xf\n"
            "with xf.run_lock(sys.argv[1], 'A') as mine:\n"
            "    print(mine, flush=True)\n"
            "    time.sleep(30)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        result = engine(io, tmp_path).handle("A", "B", EVENT)
        assert result == {"host": "A", "state": "in_progress", "joined": True}
        assert set(io.calls) <= {"audit"} and io.starts == []  # audited as joined, nothing done
    finally:
        holder.kill()
        holder.wait()
    assert engine(io, tmp_path).handle("A", "B", EVENT)["state"] == "done"  # lock gone with it


# --- operator-facing truth ---


def test_an_ack_with_no_failover_under_way_is_refused_and_not_recorded(io, tmp_path):
    result = engine(io, tmp_path).ack("B")
    assert result["acknowledged"] is False
    assert "no failover of B is waiting for a fence" in result["reason"]
    assert io.audits == [] and io.events == []
    assert xenha_store.load(str(tmp_path), xf.ack_name("B")) == {}
    engine(io, tmp_path).handle("A", "B", EVENT)  # a finished failover takes no ack either
    audits = len(io.audits)
    assert engine(io, tmp_path).ack("A")["acknowledged"] is False
    assert len(io.audits) == audits


def test_a_blocked_planning_backs_off_and_fires_blocked_once_per_reason(io, tmp_path):
    def unreadable(observer, host):
        raise RuntimeError("lease directory unreadable")

    io.leased_domus = unreadable
    eng = engine(io, tmp_path, retry_base=5, retry_max=40, retry_for=120)
    result = eng.handle("A", "B", EVENT)
    assert result["state"] == "fenced"  # fenced, planning left to a resume
    blocked = [d["reason"] for t, d in io.events if t.endswith("/blocked")]
    # each survivor's error is named: the reason says what to look at
    assert blocked == [
        "fenced, but no survivor could list the dead host's leases (B: lease directory"
        " unreadable; C: lease directory unreadable)"
    ]
    audited = [a for a in io.audits if a["step"] == "blocked"]
    assert len(audited) >= 4  # 5 + 10 + 20 + 40 s fit in 120 s; every retry is audited
    assert io.starts == []


def test_done_names_pillar_domus_that_run_nowhere_and_had_no_lease(io, tmp_path):
    io.domus["orphan"] = {"config": "/c/orphan.cfg", "memory_mib": 64}
    io.domus["elsewhere"] = {"config": "/c/elsewhere.cfg", "memory_mib": 64}
    io.running["C"].append("elsewhere")
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done"
    assert sorted(result["not_restarted"]) == ["orphan"]
    assert "A held no lease for it: not restarted" in result["not_restarted"]["orphan"]
    assert io.events[-1][1]["not_restarted"] == result["not_restarted"]
    assert "orphan" not in [name for name, _ in io.starts]


# --- regressions: the reviewer's scenarios (issue 11) and the nemesis's findings ---


def test_resume_rechecks_a_host_that_came_back_before_starting_its_domus_elsewhere(io, tmp_path):
    # fenced, then planning blocked (no survivor answered); A comes back meanwhile
    snapshot, silent = io.snapshot, [{}, {}]
    io.snapshot = lambda hosts: silent.pop() if silent else snapshot(hosts)
    assert engine(io, tmp_path, retry_for=0).handle("A", "B", EVENT)["state"] == "fenced"
    io.lease_state["A"] = "advancing"  # powered on again, rejoined sanlock
    result = engine(io, tmp_path).resume("A")
    assert result["state"] == "recovered"
    assert io.fenced_args == [] and io.starts == []  # no start was even tried
    assert "A" not in xenha_store.load(str(tmp_path), "hoststate")


def test_resume_of_a_restart_cut_short_stops_once_the_host_is_back(io, tmp_path):
    # the master dies right after the first start; by name, as the reads beside the steps
    # run in threads and move a call's position in the sequence
    io.crash_on = "start_domu"
    with contextlib.suppress(Crash):
        engine(io, tmp_path).handle("A", "B", EVENT)
    assert xf.load(str(tmp_path), "A")["state"] == "restarting"
    # A answers and renews again under the generation it was fenced in: the power-off did
    # not take it down (a frozen host that woke up), so it still runs its domUs
    io.reachable.add("A")
    io.lease_state["A"] = "advancing"
    assert engine(io, tmp_path).resume("A")["state"] == "recovered"
    assert len(io.starts) == 1  # the one started before the crash; none after
    assert sorted(xf.load(str(tmp_path), "A")["not_restarted"]) == ["tiny", "web01"]


def test_a_host_powered_on_again_mid_restart_still_gets_its_domus_restarted(io, tmp_path):
    # nemesis seed 998974194 trial 15: A fenced by its BMC, then powered on before its domUs
    # ran elsewhere; booted afresh under a new generation it runs none of them, and holds their
    # leases from the old one (free for sanlock): they are restarted, none left down
    io.crash_on = "start_domu"
    with contextlib.suppress(Crash):
        engine(io, tmp_path).handle("A", "B", EVENT)
    io.reachable.add("A")
    io.lease_state["A"] = "advancing"
    io.generation["A"] = 2
    io.stale = {"web01", "tiny"}
    result = engine(io, tmp_path).resume("A")
    assert result["state"] == "done" and result["not_restarted"] == {}
    assert sorted(name for name, _ in io.starts) == ["db01", "tiny", "web01"]
    assert io.fenced_args == ["A", "A", "A"]


def test_a_bmc_that_powered_off_another_machine_restarts_nothing(io, tmp_path):
    # the BMC says off, but A's delta lease still advances: A runs, its domUs with it
    def wrong_machine():
        io.lease_state["A"] = "advancing"  # (stopped while corroborating: a pause)
        return {"fenced": True}

    io.ipmi = wrong_machine
    result = engine(io, tmp_path, retry_for=0).handle("A", "B", EVENT)
    assert result["state"] == "blocked"
    assert "BMC confirmed power off, but A's sanlock lease: advancing" in result["reason"]
    assert io.fenced_args == [] and io.starts == []


def test_the_lease_only_path_never_overrides_a_holder(io, tmp_path):
    # no BMC: the leases are taken the normal way, once sanlock itself calls A dead
    del io.vmhosts["A"]["bmc"]
    io.lease_state["A"] = "dead"
    assert engine(io, tmp_path).handle("A", "B", EVENT)["state"] == "done"
    assert io.fenced_args == [None, None, None]


def test_the_lease_only_path_waits_for_dead_not_for_stopped(io, tmp_path):
    del io.vmhosts["A"]["bmc"]  # A stopped renewing (SIGSTOP, a cut): its domUs may still run
    result = engine(io, tmp_path, retry_for=0, **QUICK).handle("A", "B", EVENT)
    assert result["state"] == "blocked" and io.starts == [] and io.fenced_args == []


def test_an_ack_ends_the_wait_for_sanlocks_dead(io, tmp_path):
    del io.vmhosts["A"]["bmc"]  # stopped, not dead yet: the lease-only path waits 8T + W
    looks = []
    real_observe = io.observe

    def observe(observer, host, duration):
        looks.append(host)
        if len(looks) == 6:  # a few looks into the wait, the operator powers A off by hand
            assert engine(io, tmp_path).ack("A")["acknowledged"] is True
        return real_observe(observer, host, duration)

    io.observe = observe
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done" and result["fence"]["method"] == "manual"
    assert io.fenced_args == ["A", "A", "A"]


def test_a_fenced_start_while_the_owner_still_renews_is_refused(io, tmp_path):
    # the target's own proof (start_domu) sees A renew again after the engine fenced it
    start = io.start_domu

    def renewing(host, name, spec, fenced):
        io.lease_state["A"] = "advancing"
        return start(host, name, spec, fenced)

    io.start_domu = renewing
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert io.starts == []
    assert result["state"] == "recovered"  # the engine asks, finds A back, stops
    assert xf.load(str(tmp_path), "A")["not_restarted"] == ["db01", "tiny", "web01"]


def test_a_late_claim_with_its_only_observer_dead_fences_nobody(io, tmp_path):
    # nemesis: the reporter died after its claim; A is healthy but its ping got lost
    del io.vmhosts["C"]
    io.reachable.discard("B")
    result = engine(io, tmp_path, retry_for=0).handle("A", "B", EVENT)
    assert result["state"] == "blocked"
    assert "no evidence that A is down" in result["reason"]
    assert "fence_ipmi" not in io.calls and io.starts == []


def test_the_reporters_verdict_is_never_believed_first(io, tmp_path):
    # B (the reporter) says A's lease stopped; C, asked too, sees it advance: A is alive
    io.view["B"] = {"A": "stopped"}
    io.lease_state["A"] = "advancing"
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "ignored" and "seen by C" in result["reason"]
    assert "fence_ipmi" not in io.calls


def test_a_malformed_verdict_is_no_evidence(io, tmp_path):
    io.observe = lambda observer, host, duration: {"state": "expired"}  # not a sanlock verdict
    result = engine(io, tmp_path, retry_for=0).handle("A", "B", EVENT)
    assert result["state"] == "blocked" and "not a lease verdict" in result["reason"]
    assert "fence_ipmi" not in io.calls


def test_a_lease_shared_by_a_migration_in_flight_is_not_started(io, tmp_path):
    # A died while migrating web01 to B: the lease is held shared by A and B, B is live
    io.leases_of["A"].remove("web01")
    io.shared["web01"] = ["A", "B"]
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done"
    assert result["domus"]["web01"]["state"] == "migrating"
    assert "not started while B is live" in result["not_restarted"]["web01"]
    assert "web01" not in [n for n, _ in io.starts]
    # the migration failed: B gave its share up, A (dead) holds it alone: a resume starts it
    io.shared.pop("web01")
    io.leases_of["A"].append("web01")
    result = engine(io, tmp_path).resume("A")
    assert result["domus"]["web01"]["state"] == "started" and result["not_restarted"] == {}


def test_a_lease_shared_with_a_dead_holder_is_started(io, tmp_path):
    io.leases_of["A"].remove("web01")
    io.shared["web01"] = ["A", "C"]
    io.lease_state["C"] = "dead"
    io.reachable.discard("C")
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["domus"]["web01"]["state"] == "started"


def test_an_incoming_migration_copy_is_not_running():
    members = {"vmhosts": {"A": {}, "B": {}}, "domus": {"web01": {"memory_mib": 100}}}
    snap = {"B": {"free_memory_mib": 1000, "domus": ["web01--incoming"]}}
    plan = xf.restart_plan("A", members, snap, {}, ["web01"])
    assert plan["domus"]["web01"] == {"state": "pending", "target": "B"}


def _runner():
    spec = importlib.util.spec_from_file_location("xenha_runner_under_test", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_failover_snapshot_does_not_count_an_incoming_copy_as_running():
    # nemesis: "failover counted a <name>--incoming copy as running" (the runner's _room)
    info = {"free_memory_mib": 900, "total_memory_mib": 2048}
    report = {"info": info, "domains": {"domus": {"web01--incoming": {}, "db01": {}}}}
    room = _runner()._room({"B": report, "C": None})
    assert room == {"B": {**info, "domus": ["db01"]}}


# --- the status lease column, from sanlock's view ---


def _preflight(pillar, hosts_answer):
    spec = importlib.util.spec_from_file_location("xenha_preflight_under_test", PREFLIGHT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def hosts():
        if isinstance(hosts_answer, Exception):
            raise hosts_answer
        return hosts_answer

    module.__pillar__ = pillar
    module.__salt__ = {"xenha_sanlock.hosts": hosts}
    return module


PILLAR = {
    "xenha": {
        "sanlock": {"lease_path": "/dev/xenha-leases"},
        "hosts": {"A": {"role": "vmhost"}, "B": {}, "S": {"role": "storage"}},
    }
}


def test_the_report_gives_each_peers_delta_lease_as_the_daemon_sees_it():
    rows = {
        1: {"host": "A", "state": "dead", "generation": 4, "timestamp": 9},
        2: {"host": "B", "state": "live", "generation": 2, "timestamp": 7},
    }
    views = _preflight(PILLAR, rows)._lease_views("B")
    assert views == {"A": {"state": "dead", "host_id": 1, "generation": 4}}
    error = _preflight(PILLAR, CommandExecutionError("hosts: not joined"))._lease_views("B")
    assert error == {"A": {"error": "hosts: not joined"}}
    assert _preflight({"xenha": {"hosts": {}}}, rows)._lease_views("B") == {}  # no sanlock


def test_the_lease_column_prefers_a_live_verdict_and_names_its_observer():
    def host(state="up"):
        return {"role": "vmhost", "answered_s": 0.2, "state": state}

    snap = {
        "hosts": {"A": host("fenced"), "B": host(), "C": host()},
        "reports": {
            "A": {"leases": {"B": {"state": "dead", "host_id": 2, "generation": 1}}},
            "B": {"leases": {"A": {"state": "dead", "host_id": 1, "generation": 3}}},
            "C": {
                "leases": {
                    "A": {"error": "hosts: this host has not joined lockspace xenha"},
                    "B": {"state": "live", "host_id": 2, "generation": 1},
                }
            },
        },
    }
    states = _runner()._lease_states(snap)
    assert states["A"] == "dead (host_id 1, generation 3, seen by B)"
    assert states["B"] == "live (host_id 2, generation 1, seen by C)"  # A is fenced: no observer
    assert states["C"] == "unknown: no live peer reported it"


def back_under_a_new_generation(io, stale=("web01", "db01", "tiny"), runs=()):
    """A was reset and joined sanlock again: it answers and renews, its domUs died with it,
    and the leases it held went with its old generation (sanlock lets any host take them)."""
    io.reachable.add("A")
    io.lease_state["A"] = "advancing"
    io.running["A"], io.free["A"] = list(runs), 4096
    io.stale = set(stale)


def test_a_host_reset_and_back_before_its_failover_decides_gets_its_domus_back(io, tmp_path):
    # the nemesis's power-off and kill-master-failover: the claim finds A alive again
    back_under_a_new_generation(io)
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done" and result["fence"]["method"] == "rejoined"
    assert result["fence"]["domus"] == ["db01", "tiny", "web01"]
    assert sorted(n for n, _ in io.starts) == ["db01", "tiny", "web01"]
    assert {h for _, h in io.starts} <= {"B", "C"}  # A is back, but not a restart target
    assert io.fenced_args == [None, None, None]  # sanlock frees them itself: nothing forced
    assert "fence_ipmi" not in io.calls
    assert "A" not in xenha_store.load(str(tmp_path), "hoststate")  # back, and healthy
    assert io.tags()[-2:] == ["domu_started", "done"] and "rejoined" in io.tags()


def test_a_domu_the_reset_host_runs_again_is_left_there(io, tmp_path):
    # e.g. started at boot outside xenha: its lease is the old one, but it runs on A
    back_under_a_new_generation(io, runs=["tiny"])
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["domus"]["tiny"] == {"state": "running", "host": "A"}
    assert sorted(n for n, _ in io.starts) == ["db01", "web01"]
    assert copies(io)["tiny"] == ["A"]


def test_a_reset_host_that_does_not_list_its_domus_restarts_nothing(io, tmp_path):
    back_under_a_new_generation(io)
    snapshot = io.snapshot
    io.snapshot = lambda hosts: {} if hosts == ["A"] else snapshot(hosts)
    result = engine(io, tmp_path, retry_for=0).handle("A", "B", EVENT)
    assert result["state"] == "fenced" and "did not list its domUs" in result["reason"]
    assert io.starts == []


def test_a_reset_host_that_dies_again_before_listing_gets_all_its_leases_restarted(io, tmp_path):
    # the nemesis's kill-master-failover: A came back, took db01 under its new generation,
    # and died again before the runner asked it what it runs; sanlock now calls it dead
    back_under_a_new_generation(io, stale=("web01", "tiny"))
    io.leases_of["A"] = ["web01", "tiny", "db01"]
    snapshot = io.snapshot

    def dies_when_asked(hosts):
        if hosts == ["A"]:
            io.reachable.discard("A")
            io.lease_state["A"] = "dead"
        return snapshot(hosts)

    io.snapshot = dies_when_asked
    result = engine(io, tmp_path).handle("A", "B", EVENT)
    assert result["state"] == "done" and result["fence"]["method"] == "rejoined"
    assert sorted(n for n, _ in io.starts) == ["db01", "tiny", "web01"]
    assert {h for _, h in io.starts} <= {"B", "C"}
    assert all(len(hosts) == 1 for hosts in copies(io).values())


def test_a_host_back_with_only_leases_of_its_new_generation_is_left_alone(io, tmp_path):
    back_under_a_new_generation(io, stale=())
    assert engine(io, tmp_path).handle("A", "B", EVENT)["state"] == "ignored"
    assert engine(io, tmp_path).reclaim_all() == [] and io.starts == []


def test_the_sweep_restarts_what_a_host_lost_with_its_lockspace_once(io, tmp_path):
    # a storage cut longer than 8 x io_timeout: A's killpath destroyed its domUs, A joined
    # the lockspace again; nobody ever claimed A lost (the network stayed up)
    back_under_a_new_generation(io, stale=("web01", "tiny"))
    io.leases_of["A"] = ["web01", "tiny", "db01"]  # db01 runs on A under its new generation
    io.running["A"] = ["db01"]
    (ran,) = engine(io, tmp_path).reclaim_all()
    assert ran["state"] == "done" and ran["fence"]["method"] == "rejoined"
    assert sorted(n for n, _ in io.starts) == ["tiny", "web01"]
    assert engine(io, tmp_path).reclaim_all() == []  # their leases are the survivors' now
    assert len(io.starts) == 2 and set(copies(io)) == {"db01", "tiny", "web01"}


def test_the_sweep_joins_a_host_that_lost_its_lockspace_and_restarts_its_domus(io, tmp_path):
    # nemesis storage cuts: A's storage came back after 8 x io_timeout; its sanlock fenced its
    # domUs and left the lockspace, and A stays out of it until something joins it again
    io.reachable.add("A")
    io.lease_state["A"] = "stopped"
    io.running["A"], io.free["A"] = [], 4096
    io.out_of_lockspace = {"A"}
    (ran,) = engine(io, tmp_path).reclaim_all()
    assert io.calls[:1] == ["rejoin"] and not io.out_of_lockspace
    assert ran["state"] == "done" and ran["fence"]["method"] == "rejoined"
    assert sorted(n for n, _ in io.starts) == ["db01", "tiny", "web01"]
    assert any(a["step"] == "lockspace_joined" and a["host"] == "A" for a in io.audits)
    assert engine(io, tmp_path).reclaim_all() == []  # in the lockspace: nothing more to do
    assert io.calls.count("rejoin") == 6  # one question to each VM host per sweep


def test_the_sweep_leaves_a_failover_under_way_alone(io, tmp_path):
    io.crash_on = "start_domu"
    with contextlib.suppress(Crash):
        engine(io, tmp_path).handle("A", "B", EVENT)
    back_under_a_new_generation(io)
    assert engine(io, tmp_path).reclaim("A") is None
    assert xf.load(str(tmp_path), "A")["state"] == "restarting"


def test_the_sweep_does_not_retry_every_minute_what_fitted_nowhere(io, tmp_path):
    back_under_a_new_generation(io, stale=("db01",))
    io.free.update(A=0, B=0, C=0)  # no room anywhere, on A itself neither
    (ran,) = engine(io, tmp_path).reclaim_all()
    assert ran["state"] == "done" and list(ran["not_restarted"]) == ["db01"]
    fired = len(io.events)
    assert engine(io, tmp_path).reclaim_all() == []
    assert len(io.events) == fired and io.starts == []


def test_what_fits_on_no_survivor_restarts_on_the_host_that_lost_it(io, tmp_path):
    # nemesis seed 134647738 trial 9: A lost its lockspace while B was being evacuated (in
    # maintenance); A rejoined and is healthy: its domUs run there again rather than nowhere
    back_under_a_new_generation(io, stale=("web01", "db01"))
    io.free.update(C=0)
    states = {"B": "maintenance"}
    io.host_states = lambda: states
    (ran,) = engine(io, tmp_path).reclaim_all()
    assert ran["state"] == "done" and ran["not_restarted"] == {}
    assert sorted(io.starts) == [("db01", "A"), ("web01", "A")]
    assert io.fenced_args == [None, None]  # the normal way: sanlock grants stale leases


def test_holdings_keep_the_stale_mark():
    got = {"web01": {"mode": "ex", "hosts": ["A"], "stale": True}, "db01": {"hosts": ["A"]}}
    assert xf.holdings(got, "A") == {
        "web01": {"mode": "ex", "hosts": ["A"], "stale": True},
        "db01": {"mode": "ex", "hosts": ["A"]},
    }
    assert xf.stale(xf.holdings(got, "A")) == ["web01"]


def test_the_sweep_reads_the_leases_from_any_host_that_answers(io, tmp_path):
    # A is down (its failover is another matter); C was reset and lost tiny's lease
    io.leases_of = {"A": ["web01", "db01"], "C": ["tiny"]}
    io.stale = {"tiny"}
    (ran,) = engine(io, tmp_path).reclaim_all()
    assert (ran["host"], ran["fence"]["method"]) == ("C", "rejoined")
    assert io.starts == [("tiny", "B")]
    assert xf.load(str(tmp_path), "A") == {}  # A's own leases are no business of the sweep
