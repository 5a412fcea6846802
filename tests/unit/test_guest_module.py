"""xenha_guest (the VM host's half of guest monitoring) with Salt's loader mocked: each test
checks what would have run, in which order, and what is refused."""

import threading
import time

import pytest
from salt.exceptions import CommandExecutionError

from _beacons import xenha_guests
from _modules import xenha_guest

CONFIG = "/cluster/domus/web01.cfg"
MONITOR = {"restart": 3, "check": {"tcp": "127.0.0.1:1", "timeout": 1}}


def row(*flags, transient=None, name="web01"):
    return {"name": name, "base_name": "web01", "domid": 9, "flags": list(flags),
            "state": "-b----", "transient": transient}  # fmt: skip


class Host:
    """The toolstack and the lease of one domU on one host, as the mocked functions see them."""

    def __init__(self):
        self.row = row("shutdown", "crashed")
        self.held = True
        self.calls = []

    def domain(self, name):
        return self.row

    def destroy(self, name):
        self.calls.append("destroy")
        self.row = None

    def release(self, name):
        self.calls.append("release")
        if self.row is not None:
            raise CommandExecutionError(f"release {name}: the domU runs on this host")
        changed, self.held = self.held, False
        return {"domu": name, "changed": changed}

    def start(self, config):
        self.calls.append("start")
        assert self.row is None and not self.held, "started over a copy or a held lease"
        self.row, self.held = row("blocked"), True
        return self.row


@pytest.fixture
def host(monkeypatch):
    host = Host()
    salt = {
        "xenha_xen.domain": host.domain,
        "xenha_xen.destroy": host.destroy,
        "xenha_xen.start": host.start,
        "xenha_xen.read_config": lambda path: {"name": "web01", "path": path},
        "xenha_xen.list_domains": lambda: {"domus": {"web01": host.row}},
        "xenha_sanlock.release": host.release,
        "xenha_sanlock.held": lambda: {"web01": {}} if host.held else {},
    }
    pillar = {"xenha": {"sanlock": {"io_timeout": 10}, "hosts": {"ServVirt1": {}},
                        "domus": {"web01": {"config": CONFIG, "monitor": MONITOR}}}}  # fmt: skip
    for name, value in (
        ("__salt__", salt),
        ("__pillar__", pillar),
        ("__opts__", {"id": "ServVirt1"}),
    ):
        monkeypatch.setattr(xenha_guest, name, value, raising=False)
    monkeypatch.setattr(xenha_guests, "__salt__", {
        "xenha_guest.validate": xenha_guest.validate, "xenha_guest.poll": xenha_guest.poll,
    }, raising=False)  # fmt: skip
    return host


def test_restart_destroys_releases_then_starts_leased(host):
    assert xenha_guest.restart("web01", CONFIG)["flags"] == ["blocked"]
    assert host.calls == ["destroy", "release", "start"]


def test_a_lease_its_keeper_already_let_go_is_no_error(host, monkeypatch):
    def gone(name):
        host.calls.append("release")
        host.held = False
        raise CommandExecutionError("kill -USR1 4242: exit 1: No such process")

    monkeypatch.setitem(xenha_guest.__salt__, "xenha_sanlock.release", gone)
    assert xenha_guest.vacate("web01") == {"name": "web01", "destroyed": True, "released": False}


def test_a_lease_still_held_after_a_failed_release_stops_the_restart(host, monkeypatch):
    def stuck(name):
        raise CommandExecutionError("release web01: still held after 30 s")

    monkeypatch.setitem(xenha_guest.__salt__, "xenha_sanlock.release", stuck)
    with pytest.raises(CommandExecutionError, match="still held after 30 s"):
        xenha_guest.restart("web01", CONFIG)
    assert "start" not in host.calls


def test_a_domu_mid_migration_is_not_touched(host):
    host.row = row(transient="incoming", name="web01--incoming")
    with pytest.raises(CommandExecutionError, match="mid-migration here as web01--incoming"):
        xenha_guest.vacate("web01")
    assert host.calls == []


def test_restart_refuses_a_config_of_another_domu(host):
    with pytest.raises(CommandExecutionError, match="defines domU 'web01', not 'db01'"):
        xenha_guest.restart("db01", CONFIG)
    assert host.calls == []


def test_without_sanlock_no_lease_is_released(host, monkeypatch):
    monkeypatch.setitem(xenha_guest.__pillar__["xenha"], "sanlock", None)
    host.held = False
    xenha_guest.restart("web01", CONFIG)
    assert host.calls == ["destroy", "start"]


def test_inspect_runs_the_check_of_a_listed_domu(host):
    host.row = row("blocked")
    seen = xenha_guest.inspect("web01")
    assert seen["row"] == host.row
    assert seen["check"]["ok"] is False and "127.0.0.1:1" in seen["check"]["detail"]
    host.row = None
    assert xenha_guest.inspect("web01") == {"row": None, "check": None}


def test_a_bad_monitor_in_the_pillar_is_skipped_and_logged(host, monkeypatch):
    logged = []
    monkeypatch.setattr(xenha_guest.log, "error", lambda fmt, *args: logged.append(fmt % args))
    monkeypatch.setitem(xenha_guest.__pillar__["xenha"]["domus"]["web01"], "monitor", {"then": 1})
    assert xenha_guest._monitors() == {}
    assert logged == [
        "xenha guest monitoring: xenha:domus:web01:monitor:then: unknown value 1: must be one "
        "of relocate, leave"
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([{"every": 0.1}], "every: must be at least 0.5"),
        ([{"every": 900}], "every: 900 s is more than 300 s"),
        ([{"evrey": 5}], "unknown option 'evrey'"),
        ({"every": 5}, "must be a list of one-key mappings"),
    ],
)
def test_the_beacon_explains_a_bad_configuration(host, config, message):
    ok, why = xenha_guests.validate(config)
    assert not ok and message in why


def test_the_beacon_reports_a_crash_found_by_the_watcher_thread(host, monkeypatch, tmp_path):
    monkeypatch.setattr(xenha_guest.xenha_guestwatch, "STOP_DIR", str(tmp_path / "guests"))
    host.row = row("blocked")
    config = [{"every": 0.5}, {"_beacon_name": "xenha_guests_test"}]
    assert xenha_guests.validate([{"every": 0.5}]) == (True, "valid")
    try:
        assert xenha_guests.beacon(config) == []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the thread has seen web01 running
            thread = next(t for t in threading.enumerate() if t.name.endswith("_test"))
            if "web01" in thread.watcher.domus:
                break
            time.sleep(0.1)
        host.row = row("shutdown", "crashed")
        found = []
        while not found and time.monotonic() < deadline:
            found = xenha_guests.beacon(config)
            time.sleep(0.1)
        assert found == [{"tag": "failed", "domu": "web01", "reason": "crashed",
                          "detail": "state -b----", "reporter": "ServVirt1"}]  # fmt: skip
        assert (tmp_path / "guests").is_dir()  # where xenha_xen's stop notes go now
    finally:
        for thread in threading.enumerate():
            if thread.name.endswith("_test"):
                thread.stopping.set()


def test_the_pillar_gives_vm_hosts_a_guest_beacon_the_beacon_accepts(tmp_path, host):
    from tests.unit.test_heartbeat_pillar import compile_pillar  # noqa: PLC0415

    config = compile_pillar(tmp_path, "ServVirt1")["beacons"]["xenha_guests"]
    assert xenha_guests.validate(config) == (True, "valid")
    assert "beacons" not in compile_pillar(tmp_path, "ServDB")
