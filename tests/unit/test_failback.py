"""
Failback: the pure decisions (_utils/xenha_failback.py) and the runner's failback and host_back
commands through the runner's own planner, mover and store, with the minions faked (their
reports in, each move recorded as migrated).
"""

import importlib.util
import os

import pytest
import xenha_failback
import xenha_snapshot
import xenha_store
from salt.exceptions import CommandExecutionError

RUNNER = os.path.join(os.path.dirname(__file__), "..", "..", "_runners", "xenha.py")
A, B, C = "ServVirt1", "ServVirt2", "ServVirt3"


def domu(memory, preferred=None, failback=None):
    spec = {"config": f"/cluster/domus/{memory}.cfg", "memory_mib": memory}
    spec.update({"preferred_host": preferred} if preferred else {})
    spec.update({} if failback is None else {"failback": failback})
    return spec


CLUSTER = {
    "hosts": {h: {"role": "vmhost"} for h in (A, B, C)} | {"ServDB": {"role": "storage"}},
    "domus": {
        "web01": domu(512, A, True),  # home A, runs on B: returns
        "web02": domu(512, A),  # home A, failback false: stays
        "db01": domu(1024, A, True),  # home A, runs on C: returns
        "big01": domu(4096, A, True),  # home A: no room there
        "mail01": domu(256, B, True),  # home B: not A's business
    },
}


# --- the pure decisions ------------------------------------------------------------------------


def test_the_drain_marks_only_a_host_nobody_put_in_maintenance():
    drained = xenha_failback.maintenance_mark(None, True, 10.0)
    assert drained == {"since": 10.0, "by": "shutdown"}
    operator = xenha_failback.maintenance_mark(None, False, 10.0)
    assert operator == {"since": 10.0, "by": "evacuate"}
    # an operator's maintenance stays the operator's when the drain evacuates it again
    assert xenha_failback.maintenance_mark(operator, True, 20.0) is operator
    assert xenha_failback.maintenance_mark(drained, True, 20.0) is drained
    # an operator's evacuation of a drained host makes its maintenance the operator's
    assert xenha_failback.maintenance_mark(drained, False, 20.0) == {
        "since": 10.0,
        "by": "evacuate",
    }


@pytest.mark.parametrize(
    ("policy", "mark", "step"),
    [
        ("migrate", {"by": "shutdown"}, "lift"),
        ("migrate", {"by": "evacuate"}, "keep"),
        ("migrate", {"since": 1.0}, "keep"),  # a mark from before marks said who set them
        ("migrate", None, "failback"),
        ("freeze", {"by": "shutdown"}, "none"),
        ("failover", None, "none"),
    ],
)
def test_what_a_hosts_return_does(policy, mark, step):
    assert xenha_failback.on_back(policy, mark) == step


def test_refusals_are_one_line_naming_the_way_out():
    why = xenha_failback.refusal(A, {"by": "evacuate"})
    assert why == (
        "ServVirt1 is in maintenance (set by evacuate): failback moves nothing onto it; "
        "salt-run xenha.restore ServVirt1 move_back=True ends it"
    )
    down = xenha_failback.refusal(A, None, {"state": "down", "error": "no answer within 30 s"})
    assert down == (
        "ServVirt1 is down: no answer within 30 s: failback moves domUs only onto a host that is up"
    )
    assert xenha_failback.refusal(A, None, {"state": "up"}) is None
    assert xenha_failback.refusal(A, None) is None


def snapshot(where, marks=None, migrating=()):
    """The snapshot of CLUSTER with each domU of ``where`` running there."""
    reports = {}
    for host in (A, B, C):
        rows = {d: {"state": "running"} for d, h in where.items() if h == host}
        rows.update({f"{d}--incoming": {} for d in migrating if where.get(d) != host})
        free = {A: 2048, B: 8192, C: 8192}[host]
        reports[host] = {
            "info": {"free_memory_mib": free, "total_memory_mib": 16384},
            "domains": {"domus": rows},
        }
    reports["ServDB"] = {}
    return xenha_snapshot.build(CLUSTER, reports, marks or {})


def test_homeward_takes_failback_domus_of_the_host_running_elsewhere():
    snap = snapshot({"web01": B, "web02": B, "db01": C, "big01": B, "mail01": A})
    assert xenha_failback.homeward(CLUSTER["domus"], snap, A) == ["big01", "db01", "web01"]
    assert xenha_failback.homeward(CLUSTER["domus"], snap, B) == ["mail01"]
    home = snapshot({"web01": A, "db01": C}, migrating=["db01"])
    assert xenha_failback.homeward(CLUSTER["domus"], home, A) == []  # home, and mid-move


def test_homeward_refuses_a_bad_failback_naming_the_key():
    domus = {"web01": domu(512, A, "yes")}
    with pytest.raises(CommandExecutionError, match=r"^xenha:domus:web01:failback: must be true"):
        xenha_failback.homeward(domus, snapshot({"web01": B}), A)


# --- the runner: failback and host_back --------------------------------------------------------


@pytest.fixture
def runner(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("xenha_runner_failback", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.where = {"web01": B, "web02": B, "db01": C, "big01": B, "mail01": A}
    module.moved, module.fired, module.asked = [], [], []
    module.policy = {}
    module.silent = set()

    def cluster(host=None):
        return {**CLUSTER, "failover": module.policy}

    def fake_snapshot(cluster, **kwargs):
        module.asked.append(kwargs.get("hosts"))
        snap = snapshot(module.where, module._marks()[0])
        reports = dict.fromkeys(snap["hosts"], {})  # as _snapshot: every host answered ...
        for host in module.silent:  # ... but these: what they run is unknown
            reports[host] = None
            snap["hosts"][host]["error"] = "no answer within 30 s"
            for entry in snap["domus"].values():
                if entry["host"] == host:
                    entry["host"] = None
        return {**snap, "reports": reports}

    def move(mover, name, source, target):
        module.moved.append((mover.kind, name, source, target))
        module.where[name] = target
        mover.record(name, **{"from": source, "to": target, "outcome": "migrating"})
        return mover.record(name, outcome="migrated")  # as the real move records it

    monkeypatch.setattr(module, "__opts__", {"cachedir": str(tmp_path)}, raising=False)
    monkeypatch.setattr(module, "_cluster", cluster)
    monkeypatch.setattr(module, "_snapshot", fake_snapshot)
    monkeypatch.setattr(module._Mover, "move", move)
    monkeypatch.setattr(module, "_answers_ping", lambda host, timeout: True)
    monkeypatch.setattr(module, "_fire", lambda tag, data: module.fired.append((tag, data)))
    monkeypatch.setattr(module, "_for_people", lambda: False)
    return module


def test_failback_moves_home_what_fits_and_says_why_the_rest_stays(runner, tmp_path):
    got = runner.failback(A)["data"]
    rows = {row["domu"]: row for row in got["result"]}
    assert {d: r["outcome"] for d, r in rows.items()} == {
        "db01": "migrated",
        "web01": "migrated",
        "big01": "stayed",
    }
    assert rows["big01"]["reason"].startswith("no room: needs 4096 MiB"), rows
    assert sorted(runner.moved) == [("failback", "db01", C, A), ("failback", "web01", B, A)]
    assert got["retcode"] == 1 and got["summary"].startswith(
        "failback ServVirt1: 1 of 3 domU(s) not moved back: big01 stayed: no room"
    )
    journal = xenha_store.load(str(tmp_path), "failback-ServVirt1")
    assert journal["finished"] and set(journal["domus"]) == {"big01", "db01", "web01"}
    tags = [tag for tag, _ in runner.fired]
    assert (
        tags[0] == "xenha/failback/ServVirt1/start" and tags[-1] == "xenha/failback/ServVirt1/done"
    )


def test_failback_with_nothing_to_do_is_one_line_and_exit_0(runner):
    runner.where.update(web01=A, db01=A, big01=A)
    got = runner.failback(A)["data"]
    assert got == {"host": A, "result": [], "summary": "failback ServVirt1: nothing to move back"}


def test_failback_refuses_a_host_in_maintenance_without_asking_anyone(runner, tmp_path):
    xenha_store.save(str(tmp_path), "maintenance", {A: {"since": 1.0, "by": "evacuate"}})
    got = runner.failback(A)["data"]
    assert got["retcode"] == 1 and "\n" not in got["error"]
    assert got["error"].startswith("xenha.failback: ServVirt1 is in maintenance (set by evacuate)")
    assert runner.asked == [] and runner.moved == []


def test_failback_refuses_a_host_that_is_not_up(runner, monkeypatch):
    monkeypatch.setattr(
        runner, "_snapshot", lambda cluster, **_: snapshot(runner.where) | {"hosts": {
            **snapshot(runner.where)["hosts"], A: {"state": "down", "error": "no answer"},
        }}
    )  # fmt: skip
    got = runner.failback(A)["data"]
    assert got["error"] == (
        "xenha.failback: ServVirt1 is down: no answer: failback moves domUs only onto a host "
        "that is up"
    )
    assert runner.moved == []


def test_host_back_lifts_the_drains_maintenance_then_fails_back(runner, tmp_path):
    xenha_store.save(str(tmp_path), "maintenance", {A: {"since": 1.0, "by": "shutdown"}, C: {}})
    xenha_store.save(str(tmp_path), "evacuate-ServVirt1", {"domus": {"web01": {}}})
    got = runner.host_back(A)["data"]
    assert xenha_store.load(str(tmp_path), "maintenance") == {C: {}}
    assert xenha_store.load(str(tmp_path), "evacuate-ServVirt1") == {}  # ended, as restore does
    assert got["step"] == "lift" and got["summary"].startswith(
        "ServVirt1 back: the shutdown drain's maintenance ended; failback ServVirt1: 1 of 3"
    )
    assert ("failback", "web01", B, A) in runner.moved
    assert runner.fired[-1] == ("xenha/shutdown/ServVirt1/back", got)


def test_host_back_keeps_an_operators_maintenance_and_moves_nothing(runner, tmp_path):
    xenha_store.save(str(tmp_path), "maintenance", {A: {"since": 1.0, "by": "evacuate"}})
    got = runner.host_back(A)["data"]
    assert got["step"] == "keep" and "retcode" not in got
    assert got["summary"] == (
        "ServVirt1 back; kept in maintenance (set by evacuate, not by the shutdown drain): "
        "salt-run xenha.restore ServVirt1 ends it"
    )
    assert xenha_store.load(str(tmp_path), "maintenance") == {A: {"since": 1.0, "by": "evacuate"}}
    assert runner.asked == [] and runner.moved == []


@pytest.mark.parametrize("policy", ["freeze", "failover"])
def test_host_back_changes_nothing_under_freeze_and_failover(runner, tmp_path, policy):
    runner.policy = {"shutdown_policy": policy}
    xenha_store.save(str(tmp_path), "maintenance", {A: {"since": 1.0, "by": "shutdown"}})
    got = runner.host_back(A)["data"]
    assert got["summary"] == f"ServVirt1 back; shutdown_policy {policy}: nothing changes"
    assert xenha_store.load(str(tmp_path), "maintenance") == {A: {"since": 1.0, "by": "shutdown"}}
    assert runner.asked == [] and runner.moved == []


def test_evacuate_marks_the_drains_maintenance_as_the_drains(runner, tmp_path):
    runner.evacuate(B, drain=True)
    runner.evacuate(C)
    marks = xenha_store.load(str(tmp_path), "maintenance")
    assert (marks[B]["by"], marks[C]["by"]) == ("shutdown", "evacuate")


def test_evacuate_of_a_host_that_did_not_list_its_domus_plans_nothing_and_says_so(runner):
    """Seen in CI: the source's report was late and evacuate said 'nothing to move: no domU
    runs there' with exit 0, leaving its domUs on a host in maintenance."""
    runner.silent = {B}
    got = runner.evacuate(B)["data"]
    assert got["retcode"] == 1, got
    assert got["summary"] == (
        "ServVirt2 in maintenance; what runs on it is unknown (no answer within 30 s): nothing"
        " was planned, run the evacuation again"
    )
    assert got["result"] == [] and runner.moved == []
    done = [data for tag, data in runner.fired if tag == "xenha/evacuate/ServVirt2/done"]
    assert done == [{"host": B, "result": [], "unknown": "no answer within 30 s"}]
    runner.silent = set()  # it answers again: the re-run moves its domUs
    again = runner.evacuate(B)["data"]
    assert "retcode" not in again and {row["domu"] for row in again["result"]} == {
        "web01",
        "web02",
        "big01",
    }
