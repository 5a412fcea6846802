"""
The shutdown drain: the bounded wait for a VM host's domUs to leave (xenha_drain), and the
xenha_shutdown module's policy with the toolstack, the event bus and systemd faked.
"""

import pytest
import xenha_drain
from salt.exceptions import CommandExecutionError

from _modules import xenha_shutdown


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_staying_counts_a_migrating_copy_and_only_the_clusters_domus():
    rows = {
        "web01--migratedaway": {"name": "web01--migratedaway", "base_name": "web01"},
        "db01": {"name": "db01"},
        "scratch": {"name": "scratch"},
    }
    assert xenha_drain.staying(rows, {"web01": {}, "db01": {}, "mail01": {}}) == ["db01", "web01"]


def test_wait_ends_when_the_last_domu_has_left():
    clock = Clock()
    answers = iter([["db01", "web01"], ["web01"], ["web01"], []])
    got = xenha_drain.wait_gone(
        lambda: next(answers), 60, clock=clock, sleep=clock.sleep, interval=2
    )
    assert got == {"gone": True, "left": [], "waited": 6.0, "errors": 0}


def test_wait_is_bounded_and_says_what_stayed():
    clock = Clock()
    got = xenha_drain.wait_gone(lambda: ["db01"], 5, clock=clock, sleep=clock.sleep, interval=2)
    assert got == {"gone": False, "left": ["db01"], "waited": 5.0, "errors": 0}


def test_a_failing_toolstack_is_looked_at_again_never_taken_for_gone():
    clock = Clock()

    def look():
        if clock.now < 4:
            raise RuntimeError("xl list: timed out")
        return ["db01"] if clock.now < 8 else []

    got = xenha_drain.wait_gone(look, 60, clock=clock, sleep=clock.sleep, interval=2)
    assert got["gone"] is True and got["errors"] == 2 and got["waited"] == 8.0
    never = xenha_drain.wait_gone(lambda: 1 / 0, 3, clock=clock, sleep=clock.sleep, interval=2)
    assert never["gone"] is False and never["left"] is None
    assert never["last_error"] == "division by zero"


class Host:
    """The minion's world: pillar, systemd's state, the toolstack, the master's event bus."""

    def __init__(self):
        self.policy = {"shutdown_policy": "migrate", "shutdown_timeout": 30}
        self.system = "stopping"
        self.running = ["db01", "web01", "scratch"]
        self.sent = []
        self.master_takes = True
        self.evacuated_after = 2  # looks at the toolstack before the master has moved them

    def salt(self):
        return {
            "xenha_pillar.validate": self.validate,
            "cmd.run_all": self.run_all,
            "xenha_xen.list_domains": self.list_domains,
            "event.send": self.send,
        }

    def validate(self):
        return {
            "hosts": {"ServVirt1": {"role": "vmhost"}, "ServDB": {"role": "storage"}},
            "failover": self.policy,
            "domus": {"db01": {}, "web01": {}},
        }

    def run_all(self, argv, python_shell=True, ignore_retcode=False):
        assert argv == ["systemctl", "is-system-running"] and python_shell is False
        return {"retcode": 0 if self.system == "running" else 1, "stdout": self.system + "\n"}

    def list_domains(self):
        if self.sent:
            self.evacuated_after -= 1
            if self.evacuated_after <= 0:
                self.running = [n for n in self.running if n == "scratch"]
        return {"domus": {n: {"name": n} for n in self.running}}

    def send(self, tag, data):
        self.sent.append((tag, data))
        return self.master_takes


@pytest.fixture
def host():
    return Host()


@pytest.fixture
def configure_loader_modules(host):
    return {xenha_shutdown: {"__salt__": host.salt(), "__opts__": {"id": "ServVirt1"}}}


@pytest.fixture(autouse=True)
def no_real_sleep(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(xenha_shutdown.time, "monotonic", clock)
    monkeypatch.setattr(xenha_shutdown.time, "sleep", clock.sleep)


def test_migrate_asks_the_master_once_and_waits_for_the_clusters_domus(host):
    got = xenha_shutdown.drain()
    assert host.sent == [("xenha/shutdown/evacuate", {"domus": ["db01", "web01"]})]
    assert got["action"] == "evacuated" and got["gone"] is True
    assert got["asked"] == ["db01", "web01"] and host.running == ["scratch"]


def test_a_unit_restart_while_the_system_runs_moves_nothing(host):
    host.system = "running"
    assert xenha_shutdown.drain()["reason"] == "not shutting down"
    assert host.sent == []
    assert xenha_shutdown.drain(force=True)["action"] == "evacuated"


@pytest.mark.parametrize("policy", ["freeze", "failover"])
def test_freeze_and_failover_let_the_domus_stop_with_the_host(host, policy):
    host.policy = {"shutdown_policy": policy}
    got = xenha_shutdown.drain()
    assert (got["policy"], got["action"]) == (policy, "none") and host.sent == []


def test_domus_still_here_when_the_wait_ends_fail_the_unit(host):
    host.evacuated_after = 10**6
    with pytest.raises(CommandExecutionError, match=r"db01, web01 still on ServVirt1 after 30"):
        xenha_shutdown.drain()


def test_a_master_that_does_not_take_the_request_fails_at_once(host):
    host.master_takes = False
    with pytest.raises(CommandExecutionError, match="the master did not take the evacuation"):
        xenha_shutdown.drain()


def test_nothing_to_move_asks_nothing_and_bad_timeout_names_it(host):
    host.running = ["scratch"]
    assert xenha_shutdown.drain()["reason"] == "no domU runs here" and host.sent == []
    host.running = ["db01"]
    with pytest.raises(CommandExecutionError, match="timeout: must be a positive number"):
        xenha_shutdown.drain(timeout=0)


# --- at boot: the host says it is back (xenha_shutdown.back, the unit's ExecStart) ---


def test_boot_under_migrate_tells_the_master_the_host_is_back(host):
    host.system = "starting"
    got = xenha_shutdown.back()
    assert host.sent == [("xenha/shutdown/back", {})]
    assert (got["action"], got["policy"]) == ("announced", "migrate")


def test_a_unit_restart_while_the_system_runs_announces_nothing(host):
    for state in ("running", "degraded", "stopping"):
        host.system = state
        assert xenha_shutdown.back()["reason"] == "not starting up"
    assert host.sent == []
    assert xenha_shutdown.back(force=True)["action"] == "announced"


@pytest.mark.parametrize("policy", ["freeze", "failover"])
def test_freeze_and_failover_announce_nothing_at_boot(host, policy):
    host.system, host.policy = "starting", {"shutdown_policy": policy}
    got = xenha_shutdown.back()
    assert (got["policy"], got["action"]) == (policy, "none") and host.sent == []


def test_a_master_that_does_not_take_the_return_fails_naming_the_way_out(host):
    host.system, host.master_takes = "initializing", False
    with pytest.raises(CommandExecutionError, match="salt-run xenha.host_back ServVirt1"):
        xenha_shutdown.back()
