"""``xenha.plan HOST failure`` predicts what a failover of HOST then does: both commands run
through the runner's real Salt adapter (``_SaltFailoverIO``, ``_snapshot``, ``_room``) with the
minions' answers faked, on a cluster where priority, memory reserve and anti-affinity decide
who goes where and one domU fits nowhere."""

import importlib.util
import os

import pytest

RUNNER = os.path.join(os.path.dirname(__file__), "..", "..", "_runners", "xenha.py")
A, B, C = "ServVirt1", "ServVirt2", "ServVirt3"
# name: (MiB, priority, anti_affinity)
DOMUS = {
    "db01": (1024, 300, []),
    "web01": (512, 200, ["web02"]),
    "web02": (512, 200, ["web01"]),
    "mail01": (1024, 100, []),
    "big01": (4096, 50, []),
    "tiny01": (128, 10, []),
}
FREE = {B: 1792, C: 1536}
CLUSTER = {
    "hosts": {
        A: {"role": "vmhost", "host_id": 1},
        B: {"role": "vmhost", "host_id": 2, "memory_reserve_mib": 512},
        C: {"role": "vmhost", "host_id": 3},
        "ServDB": {"role": "storage"},
    },
    "domus": {
        name: {
            "config": f"/cluster/domus/{name}.cfg",
            "memory_mib": mib,
            "priority": priority,
            "anti_affinity": others,
        }
        for name, (mib, priority, others) in DOMUS.items()
    },
}


def report(host, domus):
    rows = {name: {"memory_mib": DOMUS[name][0], "state": "running"} for name in domus}
    free = FREE.get(host, 0)
    info = {"free_memory_mib": free, "total_memory_mib": 8192, "xen_version": "4.17.3"}
    return {"id": host, "info": info, "domains": {"domus": rows}}


@pytest.fixture
def runner(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("xenha_runner_plan_failover", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.down = set()  # hosts whose minion does not answer
    module.started = {}

    def reports(hosts, kwarg, wait=None, patient=False):
        running = {A: sorted(DOMUS), B: [], C: []}
        return {
            h: (False, "no answer", None)
            if h in module.down
            else (True, report(h, running[h]), 0.1)
            for h in hosts
            if h in running
        } | {h: (True, {"id": h}, 0.1) for h in hosts if h == "ServDB"}

    def call_proven(minion, fun, arg=(), kwarg=None, timeout=None):
        if fun == "xenha_sanlock.observe":  # the dead host's delta lease, as sanlock says it
            return True, {"state": "dead", "host_id": 1, "unchanged_for": 30,
                          "sanlock": {"state": "DEAD", "generation": 1}}  # fmt: skip
        if fun == "xenha_sanlock.holders":
            return True, {name: {"mode": "ex", "hosts": [A]} for name in DOMUS}
        if fun == "xenha_sanlock.start_domu":
            module.started[arg[0]] = minion
            return True, {"started": True}
        raise AssertionError(f"unexpected call {fun} on {minion}")

    monkeypatch.setattr(module, "__opts__", {"cachedir": str(tmp_path)}, raising=False)
    monkeypatch.setattr(module, "_cluster", lambda host=None: CLUSTER)
    monkeypatch.setattr(module, "_reports", reports)
    monkeypatch.setattr(module, "_call_proven", call_proven)
    monkeypatch.setattr(module, "_answers_ping", lambda host, timeout: host not in module.down)
    monkeypatch.setattr(module, "_fire", lambda tag, data: None)
    monkeypatch.setattr(module, "_for_people", lambda: False)
    return module


def test_plan_failure_predicts_exactly_what_the_failover_restarts_where(runner):
    plan = runner.plan(A, "failure")["data"]
    predicted = {row["domu"]: row["to"] for row in plan["placement"]}
    # the case is not trivial: both survivors are used, anti-affinity splits the web pair,
    # and one domU fits nowhere
    assert set(predicted.values()) == {B, C, "-"}, predicted
    assert predicted["web01"] != predicted["web02"], predicted
    assert predicted["big01"] == "-"

    runner.down.add(A)
    claim = {"id": B, "peer": A, "reporter": B}
    done = runner.failover(A, reporter=B, event=claim)["data"]
    assert done["state"] == "done", done
    assert runner.started == {d: t for d, t in predicted.items() if t != "-"}
    assert set(done["not_restarted"]) == {d for d, t in predicted.items() if t == "-"}
