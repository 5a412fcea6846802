"""The guest monitoring policy (_utils/xenha_guestmon.py) on a fake cluster."""

import json

import pytest
import xenha_guestmon
import xenha_store

HOSTS = ("ServVirt1", "ServVirt2")
MONITOR = {"restart": 2, "within": 600.0, "then": "relocate", "grace": 60.0, "check": None}


def row(name, *flags, transient=None):
    return {
        "name": name,
        "domid": 7,
        "flags": list(flags),
        "state": "-b----",
        "transient": transient,
    }


class Fake(xenha_guestmon.Adapter):
    """Two VM hosts; web01 crashed on ServVirt1 unless a test says otherwise."""

    def __init__(self, monitor=None):
        self.clock = 1000.0
        self.domus = {
            "web01": {"config": "/cluster/domus/web01.cfg", "monitor": dict(monitor or MONITOR)}
        }
        self.listed = {"ServVirt1": {"web01": row("web01", "shutdown", "crashed")}, "ServVirt2": {}}
        self.states = {}
        self.check = None
        self.calls, self.events, self.audits, self.alerts = [], [], [], []
        self.fail = {}  # method -> exception to raise
        self.target = "ServVirt2"
        self.toolstack_answer = (False, "xl info exited 1: libxl: cannot connect")

    def _maybe_fail(self, what):
        if what in self.fail:
            raise self.fail[what]

    def members(self):
        return {"vmhosts": {h: {} for h in HOSTS}, "domus": self.domus}

    def host_states(self):
        return dict(self.states)

    def inspect(self, host, name):
        self._maybe_fail("inspect")
        return {"row": self.listed[host].get(name), "check": self.check}

    def locate(self, name):
        return {h: rows[name] for h, rows in self.listed.items() if name in rows}

    def restart(self, host, name, config):
        self.calls.append(("restart", host, name, config))
        self._maybe_fail("restart")
        self.listed[host][name] = row(name, "blocked")
        return self.listed[host][name]

    def vacate(self, host, name):
        self.calls.append(("vacate", host, name))
        self._maybe_fail("vacate")
        self.listed[host].pop(name, None)

    def place(self, name, exclude):
        self.calls.append(("place", name, tuple(exclude)))
        return (self.target, None) if self.target else (None, "no room on ServVirt2")

    def start(self, host, name, config):
        self.calls.append(("start", host, name))
        self._maybe_fail("start")
        assert not any(name in rows for rows in self.listed.values()), "a second copy"
        self.listed[host][name] = row(name, "blocked")
        return self.listed[host][name]

    def toolstack(self, host):
        self._maybe_fail("toolstack")
        return self.toolstack_answer

    def alert(self, what, subject, text, data):
        self.alerts.append((what, subject))

    def fire(self, tag, data):
        self.events.append(tag)

    def audit(self, entry):
        self.audits.append(entry)

    def now(self):
        return self.clock

    def crash(self, host="ServVirt1"):
        self.listed[host]["web01"] = row("web01", "shutdown", "crashed")


@pytest.fixture
def io():
    return Fake()


@pytest.fixture
def engine(io, tmp_path):
    return xenha_guestmon.Engine(io, str(tmp_path))


def test_a_crash_is_restarted_in_place_up_to_n_times_then_relocated(io, engine, tmp_path):
    first = engine.failed("ServVirt1", "web01", "crashed")
    assert first["state"] == "restarted" and first["attempt"] == 1 and first["of"] == 2
    io.clock += 10
    io.crash()
    assert engine.failed("ServVirt1", "web01", "crashed")["state"] == "restarted"
    io.clock += 10
    io.crash()
    third = engine.failed("ServVirt1", "web01", "crashed")
    assert third["state"] == "relocated" and third["target"] == "ServVirt2"
    assert "2 restart(s) within 600.0 s" in third["reason"]
    # the local copy went (destroyed, lease released) before the start elsewhere
    assert io.calls[-3:] == [
        ("place", "web01", ("ServVirt1",)),
        ("vacate", "ServVirt1", "web01"),
        ("start", "ServVirt2", "web01"),
    ]
    assert io.listed == {"ServVirt1": {}, "ServVirt2": {"web01": row("web01", "blocked")}}
    assert io.events[-1] == "xenha/guest/ServVirt1/web01/relocated"
    steps = [a["step"] for a in io.audits]
    assert steps.count("guest-restarted") == 2 and steps[-1] == "guest-relocated"
    # the count starts afresh on the new host
    assert xenha_store.load(str(tmp_path), "guestmon")["web01"]["restarts"] == []


def test_restarts_older_than_the_window_do_not_count(io, engine):
    for _ in range(2):
        io.crash()
        assert engine.failed("ServVirt1", "web01", "crashed")["state"] == "restarted"
    io.clock += 601
    io.crash()
    again = engine.failed("ServVirt1", "web01", "crashed")
    assert again["state"] == "restarted" and again["attempt"] == 1


def test_the_count_survives_a_new_engine(io, tmp_path):
    """A master restart builds a new engine: the count lives in the store."""
    for _ in range(2):
        io.crash()
        xenha_guestmon.Engine(io, str(tmp_path)).failed("ServVirt1", "web01", "crashed")
    io.crash()
    out = xenha_guestmon.Engine(io, str(tmp_path)).failed("ServVirt1", "web01", "crashed")
    assert out["state"] == "relocated"


def test_leave_gives_up_with_an_alert_and_touches_nothing(tmp_path):
    io = Fake({**MONITOR, "restart": 0, "then": "leave"})
    out = xenha_guestmon.Engine(io, str(tmp_path)).failed("ServVirt1", "web01", "crashed")
    assert out["state"] == "gave_up" and "then: leave" in out["reason"]
    assert io.calls == []
    assert io.alerts == [("guest", "[xenha] domU web01 on ServVirt1 is down and stays down")]
    assert io.events == ["xenha/guest/ServVirt1/web01/gave_up"]


def test_relocate_with_no_room_gives_up_and_keeps_the_local_copy(io, engine):
    io.domus["web01"]["monitor"]["restart"] = 0
    io.target = None
    out = engine.failed("ServVirt1", "web01", "crashed")
    assert out["state"] == "gave_up" and "no room on ServVirt2" in out["reason"]
    assert ("vacate", "ServVirt1", "web01") not in io.calls
    assert io.alerts and io.alerts[0][0] == "guest"


def test_a_local_copy_that_cannot_be_destroyed_is_never_started_twice(io, engine):
    io.domus["web01"]["monitor"]["restart"] = 0
    io.fail["vacate"] = RuntimeError("xl destroy web01 timed out")
    out = engine.failed("ServVirt1", "web01", "crashed")
    assert out["state"] == "gave_up" and "xl destroy web01 timed out" in out["reason"]
    assert not any(call[0] == "start" for call in io.calls)


def test_a_failed_restart_goes_on_to_the_then_policy(io, engine):
    io.fail["restart"] = RuntimeError("acquire web01: sanlock refused the lease")
    out = engine.failed("ServVirt1", "web01", "crashed")
    assert out["state"] == "relocated" and "restart failed: acquire web01" in out["reason"]


def test_a_check_failure_is_acted_on_only_when_the_host_confirms_it(io, engine):
    io.listed["ServVirt1"]["web01"] = row("web01", "blocked")
    io.check = {"ok": True, "detail": "HTTP 200"}
    assert engine.failed("ServVirt1", "web01", "check")["state"] == "ignored"
    io.check = {"ok": False, "detail": "connection refused"}
    out = engine.failed("ServVirt1", "web01", "check")
    assert out["state"] == "restarted" and "connection refused" in out["reason"]


def test_grace_after_a_start_ignores_check_failures_not_crashes(io, engine):
    assert engine.failed("ServVirt1", "web01", "crashed")["state"] == "restarted"
    io.clock += 30  # within the 60 s grace
    io.check = {"ok": False, "detail": "connection refused"}
    out = engine.failed("ServVirt1", "web01", "check")
    assert out["state"] == "ignored" and "within 60.0 s of its last start" in out["reason"]
    io.crash()
    assert engine.failed("ServVirt1", "web01", "crashed")["state"] == "restarted"
    io.clock += 61
    io.listed["ServVirt1"]["web01"] = row("web01", "blocked")
    assert engine.failed("ServVirt1", "web01", "check")["state"] == "relocated"


def test_a_domu_that_left_for_another_host_is_no_failure(io, engine):
    io.listed = {"ServVirt1": {}, "ServVirt2": {"web01": row("web01", "blocked")}}
    out = engine.failed("ServVirt1", "web01", "gone")
    assert out["state"] == "ignored" and "listed on ServVirt2" in out["reason"]
    assert io.calls == []


def test_a_crashed_copy_beside_a_running_one_is_not_restarted(io, engine):
    io.listed["ServVirt2"]["web01"] = row("web01", "blocked")
    out = engine.failed("ServVirt1", "web01", "crashed")
    assert out["state"] == "ignored" and "listed on ServVirt2" in out["reason"]
    assert io.calls == []


def test_a_gone_domu_is_restarted_where_it_ran(io, engine):
    io.listed["ServVirt1"] = {}
    out = engine.failed("ServVirt1", "web01", "gone")
    assert out["state"] == "restarted" and out["reason"] == "not running on any host"


@pytest.mark.parametrize(
    ("claim", "why"),
    [
        (("ServVirt1", "db01", "crashed"), "not monitored"),
        (("ServDB", "web01", "crashed"), "ServDB is not a VM host"),
        (("ServVirt1", "web01", "exploded"), "unknown reason 'exploded'"),
    ],
)
def test_claims_outside_the_policy_are_ignored(io, engine, claim, why):
    out = engine.failed(*claim)
    assert out["state"] == "ignored" and why in out["reason"]
    assert io.calls == [] and io.audits[-1]["step"] == "guest-ignored"


def test_an_unverifiable_claim_changes_nothing(io, engine):
    io.fail["inspect"] = RuntimeError("no answer within 30 s")
    out = engine.failed("ServVirt1", "web01", "crashed")
    assert out["state"] == "ignored" and "no answer within 30 s" in out["reason"]
    assert io.calls == []


def test_a_host_under_a_mark_keeps_its_domus(io, engine):
    for mark in ("degraded", "suspect", "fenced"):
        io.states = {"ServVirt1": mark}
        out = engine.failed("ServVirt1", "web01", "crashed")
        assert out["state"] == "ignored" and f"ServVirt1 is {mark}" in out["reason"]
    assert io.calls == []


def test_one_domu_is_handled_once_at_a_time(io, engine, tmp_path):
    with xenha_guestmon.run_lock(str(tmp_path), "web01") as mine:
        assert mine
        out = engine.failed("ServVirt1", "web01", "crashed")
    assert out["state"] == "ignored" and out["reason"] == "already being handled"


def test_a_failing_toolstack_marks_the_host_degraded_and_back(io, engine, tmp_path):
    out = engine.toolstack("ServVirt1", failed=True)
    assert out["state"] == "degraded"
    mark = xenha_store.load(str(tmp_path), "hoststate")["ServVirt1"]
    assert mark["state"] == "degraded" and mark["by"] == "guestmon"
    assert io.alerts == [("degraded", "[xenha] ServVirt1 is degraded: its toolstack fails")]
    assert io.events == ["xenha/host/ServVirt1/degraded"]
    assert io.calls == []  # its domUs are left running
    # a repeat sends no second alert
    assert engine.toolstack("ServVirt1", failed=True)["state"] == "ignored"
    assert len(io.alerts) == 1
    io.toolstack_answer = (True, "xen 4.17")
    assert engine.toolstack("ServVirt1", failed=False)["state"] == "up"
    assert "ServVirt1" not in xenha_store.load(str(tmp_path), "hoststate")


def test_the_degraded_mark_excludes_the_host_from_placement(io, engine, tmp_path):
    import xenha_placement  # noqa: PLC0415
    import xenha_snapshot  # noqa: PLC0415

    engine.toolstack("ServVirt2", failed=True)
    hoststate = xenha_store.load(str(tmp_path), "hoststate")
    report = {"info": {"free_memory_mib": 4096, "total_memory_mib": 8192}, "domains": {}}
    cluster = {
        "hosts": {h: {"role": "vmhost"} for h in HOSTS},
        "domus": {"web01": {"memory_mib": 512}},
    }
    snap = xenha_snapshot.build(cluster, {h: report for h in HOSTS}, {}, hoststate)
    assert snap["hosts"]["ServVirt2"]["state"] == "degraded"
    assert (
        "host ServVirt2 is degraded (its toolstack fails: no domU goes there)" in snap["problems"]
    )
    plan = xenha_placement.place(snap, ["web01"], exclude=["ServVirt1"])
    assert plan["placement"] == {} and "ServVirt2 degraded" in plan["unplaced"]["web01"]


def test_toolstack_reports_are_verified(io, engine, tmp_path):
    io.toolstack_answer = (True, "xen 4.17")
    assert engine.toolstack("ServVirt1", failed=True)["state"] == "ignored"
    io.fail["toolstack"] = RuntimeError("no answer")
    assert "cannot verify" in engine.toolstack("ServVirt1", failed=True)["reason"]
    assert engine.toolstack("ServDB", failed=True)["state"] == "ignored"
    assert xenha_store.load(str(tmp_path), "hoststate") == {}
    assert io.alerts == []


def test_the_failovers_mark_is_never_overwritten_or_lifted(io, engine, tmp_path):
    with xenha_store.edit(str(tmp_path), "hoststate") as doc:
        doc["ServVirt1"] = {"state": "suspect", "by": "failover"}
    assert engine.toolstack("ServVirt1", failed=True)["state"] == "ignored"
    io.toolstack_answer = (True, "xen 4.17")
    assert engine.toolstack("ServVirt1", failed=False)["state"] == "ignored"
    assert xenha_store.load(str(tmp_path), "hoststate")["ServVirt1"]["state"] == "suspect"


def test_every_action_is_one_readable_audit_line(io, tmp_path):
    """The runner's audit writes the failover's line format into guestmon.log."""
    import xenha_failover  # noqa: PLC0415

    path = xenha_guestmon.audit_path(str(tmp_path))
    io.audit = lambda entry: xenha_failover.audit_line(path, entry)
    xenha_guestmon.Engine(io, str(tmp_path)).failed("ServVirt1", "web01", "crashed")
    lines = path.read_text().splitlines()
    assert [line.split(" ")[2] for line in lines] == ["guest-restarting", "guest-restarted"]
    assert json.loads(lines[-1].split(" ", 3)[3])["domu"] == "web01"
