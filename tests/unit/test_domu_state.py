"""
The xenha_domu state with the xenha_xen module mocked: what it does, what it reports as
changes, and that test=True says what would happen while calling nothing that acts.
"""

import pytest
from salt.exceptions import CommandExecutionError

from _states import xenha_domu

CFG = "/cluster/domus/web01.cfg"


def row(name="web01", state="-b----", flags=("blocked",), transient=None, domid=3):
    return {
        "name": name,
        "domid": domid,
        "state": state,
        "flags": list(flags),
        "transient": transient,
    }


class FakeXen:
    """xenha_xen stand-in: ``here`` is what domain() returns; acting calls are recorded."""

    def __init__(self):
        self.here = None
        self.config_name = "web01"
        self.fail = {}
        self.calls = []
        self.lease_refusal = None  # the reason another host's live lease gives, or None

    def _act(self, fun, *args, **kwargs):
        self.calls.append((fun, args, kwargs))
        if fun in self.fail:
            raise CommandExecutionError(self.fail[fun])

    def salt(self):
        def domain(name):
            return self.here

        def read_config(path):
            if "read_config" in self.fail:
                raise CommandExecutionError(self.fail["read_config"])
            return {"name": self.config_name, "path": path, "memory_mib": 256, "vcpus": 1}

        def start(path):
            self._act("start", path)
            if self.lease_refusal:  # as xenha_xen.start's own acquire answers
                raise CommandExecutionError(f"acquire web01: {self.lease_refusal}")
            return row(domid=7)

        def unpause(name):
            self._act("unpause", name)
            return row()

        def shutdown(name, timeout, force):
            self._act("shutdown", name, timeout=timeout, force=force)
            method = "destroy" if force else "shutdown"
            return {
                "name": name,
                "result": True,
                "method": method,
                "seconds": 1.5,
                "reason": "slow",
            }

        def holders():
            self.calls.append(("holders", (), {}))
            return {"web01": {"mode": "ex", "hosts": ["ServVirt1"]}} if self.lease_refusal else {}

        return {
            "xenha_sanlock.holders": holders,
            "xenha_xen.domain": domain,
            "xenha_xen.read_config": read_config,
            "xenha_xen.start": start,
            "xenha_xen.unpause": unpause,
            "xenha_xen.shutdown": shutdown,
        }


@pytest.fixture
def xen():
    return FakeXen()


@pytest.fixture
def opts():
    return {"test": False, "id": "ServVirt2"}


@pytest.fixture
def pillar():
    return {}


@pytest.fixture
def configure_loader_modules(xen, opts, pillar):
    return {xenha_domu: {"__salt__": xen.salt(), "__opts__": opts, "__pillar__": pillar}}


MEMBER = {
    "xenha": {
        "sanlock": {"lease_path": "/dev/xenha-leases"},
        "hosts": {"ServVirt2": {"role": "vmhost"}},
    }
}
LIVE_PEER = "sanlock refused the lease: -243; held by host_id 1 (ServVirt1)"


def test_member_start_goes_straight_to_the_leased_start(xen, pillar):
    pillar.update(MEMBER)
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is True
    assert [c[0] for c in xen.calls] == ["start"]


def test_member_refused_by_a_live_lease_starts_nothing(xen, pillar):
    pillar.update(MEMBER)
    xen.lease_refusal = LIVE_PEER
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert LIVE_PEER in ret["comment"]


def test_member_test_mode_only_looks_at_the_lease(xen, opts, pillar):
    pillar.update(MEMBER)
    opts["test"] = True
    xen.lease_refusal = LIVE_PEER
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is False
    assert "held (ex) by ServVirt1" in ret["comment"]
    assert [c[0] for c in xen.calls] == ["holders"]


def test_test_mode_outside_a_lease_managed_cluster_reads_no_lease(xen, opts, pillar):
    pillar.update({"xenha": {"hosts": {"ServVirt2": {"role": "vmhost"}}}})
    opts["test"] = True
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is None
    assert xen.calls == []


def test_virtual_needs_the_module(xen):
    assert xenha_domu.__virtual__() == "xenha_domu"


def test_running_starts_an_absent_domu(xen):
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is True
    assert ret["changes"] == {"state": {"old": "absent", "new": "running"}, "domid": 7}
    assert xen.calls == [("start", (CFG,), {})]


def test_running_test_mode_changes_nothing(xen, opts):
    opts["test"] = True
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is None
    assert ret["changes"] == {"state": {"old": "absent", "new": "running"}}
    assert "would be started from" in ret["comment"]
    assert xen.calls == []


def test_running_already_running_is_no_change(xen, opts):
    xen.here = row()
    for test in (False, True):
        opts["test"] = test
        ret = xenha_domu.running("web01", CFG)
        assert (ret["result"], ret["changes"]) == (True, {})
    assert xen.calls == []


def test_running_unpauses(xen, opts):
    xen.here = row(state="--p---", flags=("paused",))
    opts["test"] = True
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is None and xen.calls == []
    opts["test"] = False
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is True
    assert ret["changes"] == {"state": {"old": "paused", "new": "running"}}
    assert xen.calls == [("unpause", ("web01",), {})]


@pytest.mark.parametrize(
    ("state", "flags"), [("---sc-", ("shutdown", "crashed")), ("-----d", ("dying",))]
)
def test_running_reports_a_broken_domu(xen, state, flags):
    xen.here = row(state=state, flags=flags)
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is False and "destroy it first" in ret["comment"]
    assert xen.calls == []


def test_running_leaves_a_migrating_domu_alone(xen):
    xen.here = row(name="web01--incoming", state="--p---", flags=("paused",), transient="incoming")
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is False and "mid-migration" in ret["comment"]
    assert xen.calls == []


def test_running_config_for_another_domu(xen):
    xen.config_name = "db01"
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is False and "defines domU 'db01'" in ret["comment"]
    assert xen.calls == []


def test_running_failures_are_reported(xen):
    xen.fail["start"] = "xl create /cluster/domus/web01.cfg failed (exit 1): failed to free memory"
    ret = xenha_domu.running("web01", CFG)
    assert ret["result"] is False and "failed to free memory" in ret["comment"]
    assert ret["changes"] == {}
    xen.fail["read_config"] = "cannot read domU config"
    assert "cannot read" in xenha_domu.running("web01", CFG)["comment"]


def test_bad_name_is_refused(xen):
    ret = xenha_domu.running("web;touch /tmp/x", CFG)
    assert ret["result"] is False and "invalid domain name" in ret["comment"]
    assert xen.calls == []


def test_absent_when_absent(xen):
    ret = xenha_domu.absent("web01")
    assert (ret["result"], ret["changes"]) == (True, {})


def test_absent_shuts_down(xen, opts):
    xen.here = row()
    opts["test"] = True
    ret = xenha_domu.absent("web01", timeout=30, force=True)
    assert ret["result"] is None and "then destroyed" in ret["comment"]
    assert ret["changes"] == {"state": {"old": "running", "new": "absent"}}
    assert xen.calls == []
    opts["test"] = False
    ret = xenha_domu.absent("web01", timeout=30)
    assert ret["result"] is True
    assert ret["changes"] == {"state": {"old": "running", "new": "absent"}, "method": "shutdown"}
    assert xen.calls == [("shutdown", ("web01",), {"timeout": 30, "force": False})]
    ret = xenha_domu.absent("web01", timeout=30, force=True)
    assert ret["changes"]["method"] == "destroy" and "destroyed (slow)" in ret["comment"]


def test_absent_failure(xen):
    xen.here = row()
    xen.fail["shutdown"] = "domU web01 did not shut down within 60 s; still running"
    ret = xenha_domu.absent("web01")
    assert ret["result"] is False and "still running" in ret["comment"]
    assert ret["changes"] == {}
