"""The xenha runner's guest monitoring commands through their Salt adapter, with the minion
calls, the pillar and the bus faked: which minion is asked what, in which order."""

import importlib.util
import os

import pytest
import xenha_store

RUNNER = os.path.join(os.path.dirname(__file__), "..", "..", "_runners", "xenha.py")
A, B = "ServVirt1", "ServVirt2"
CONFIG = "/cluster/domus/web01.cfg"
CLUSTER = {
    "hosts": {A: {"role": "vmhost"}, B: {"role": "vmhost"}, "ServDB": {"role": "storage"}},
    "domus": {
        "web01": {"config": CONFIG, "memory_mib": 512, "monitor": {"restart": 1}},
        "db01": {"config": "/cluster/domus/db01.cfg", "memory_mib": 512},
    },
}
CRASHED = {"name": "web01", "domid": 3, "flags": ["shutdown", "crashed"], "state": "---sc-",
           "transient": None}  # fmt: skip


@pytest.fixture
def runner(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("xenha_runner_guestmon", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.calls, module.fired, module.sent = [], [], []
    module.listed = {A: CRASHED, B: None}
    module.toolstack_ok = False

    def call_one(minion, fun, arg=(), kwarg=None, timeout=None, **_):
        module.calls.append((minion, fun, list(arg)))
        if fun == "xenha_guest.inspect":
            return True, {"row": module.listed[minion], "check": None}
        if fun == "xenha_xen.info":
            if module.toolstack_ok:
                return True, {"xen_version": "4.17.3"}
            return False, "xenha_xen.info on ServVirt1 failed: xl info failed (exit 1)"
        if fun == "xenha_guest.vacate":
            module.listed[minion] = None
        if fun in ("xenha_guest.restart", "xenha_xen.start"):
            module.listed[minion] = {**CRASHED, "domid": 4, "flags": ["blocked"]}
        return True, module.listed.get(minion)

    def call(minions, fun, arg=(), kwarg=None, timeout=None, **_):
        assert fun == "xenha_xen.domain" and list(arg) == ["web01"]
        return {m: (True, module.listed[m]) for m in minions}

    def snapshot(cluster, **_):
        hosts = {h: {"state": "up", "role": "vmhost", "free_memory_mib": 2048} for h in (A, B)}
        return {"hosts": hosts, "domus": {"web01": {"host": A, "memory_mib": 512}}}

    monkeypatch.setattr(module, "__opts__", {"cachedir": str(tmp_path)}, raising=False)
    monkeypatch.setattr(module, "_cluster", lambda host=None: CLUSTER)
    monkeypatch.setattr(module, "_call_one", call_one)
    monkeypatch.setattr(module, "_call", call)
    monkeypatch.setattr(module, "_snapshot", snapshot)
    monkeypatch.setattr(module, "_fire", lambda tag, data: module.fired.append(tag))
    monkeypatch.setattr(module, "_for_people", lambda: False)
    return module


def test_a_crash_is_restarted_on_its_host_then_relocated(runner, tmp_path):
    first = runner.guest_failed(A, "web01", "crashed")["data"]
    assert first["state"] == "restarted", first
    assert runner.calls == [
        (A, "xenha_guest.inspect", ["web01"]),
        (A, "xenha_guest.restart", ["web01", CONFIG]),
    ]
    runner.calls.clear()
    runner.listed[A] = CRASHED
    second = runner.guest_failed(A, "web01", "crashed")["data"]
    assert second["state"] == "relocated" and second["target"] == B, second
    assert runner.calls == [
        (A, "xenha_guest.inspect", ["web01"]),
        (A, "xenha_guest.vacate", ["web01"]),
        (B, "xenha_xen.start", [CONFIG]),
    ]
    assert runner.fired == [f"xenha/guest/{A}/web01/restarted", f"xenha/guest/{A}/web01/relocated"]
    audit = (tmp_path / "xenha" / "guestmon.log").read_text().splitlines()
    assert [line.split(" ")[2] for line in audit] == [
        "guest-restarting", "guest-restarted", "guest-relocating", "guest-relocated",
    ]  # fmt: skip


def test_bad_arguments_are_one_line_with_exit_code_2(runner):
    got = runner.guest_failed(A, "web01;reboot", "crashed")["data"]
    assert got["retcode"] == 2 and "web01;reboot" in got["error"]
    got = runner.host_toolstack(A, "toolstack_exploded")["data"]
    assert got["retcode"] == 2 and "not one of toolstack_failed, toolstack_ok" in got["error"]
    assert runner.calls == []


def test_a_failing_toolstack_degrades_the_host_and_alerts(runner, tmp_path, monkeypatch):
    sent = []
    monkeypatch.setitem(runner.__opts__, "xenha_alerts", {"webhook": {"url": "http://hook/x"}})
    monkeypatch.setattr(
        runner.xenha_alerting, "deliver", lambda conf, alert, payload: sent.append(alert) or {}
    )
    got = runner.host_toolstack(A, "toolstack_failed")["data"]
    assert got["state"] == "degraded", got
    assert runner.calls == [(A, "xenha_xen.info", [])]
    assert xenha_store.load(str(tmp_path), "hoststate")[A]["state"] == "degraded"
    assert [a["subject"] for a in sent] == [f"[xenha] {A} is degraded: its toolstack fails"]
    # the degraded host's domUs are left alone
    assert runner.guest_failed(A, "web01", "crashed")["data"]["state"] == "ignored"
    runner.toolstack_ok = True
    assert runner.host_toolstack(A, "toolstack_ok")["data"]["state"] == "up"
    assert xenha_store.load(str(tmp_path), "hoststate") == {}
