"""
The xenha_domu state with the xenha_xen module mocked: what it does, what it reports as
changes, and that test=True says what would happen while calling nothing that acts.
"""

import pytest
from salt.exceptions import CommandExecutionError, SaltClientError

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
        self.admission = None  # what publish.runner xenha.admission answers

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

        def publish_runner(fun, arg=None, timeout=5):
            self.calls.append(("publish.runner", (fun, *arg), {}))
            if isinstance(self.admission, Exception):
                raise self.admission
            return self.admission

        return {
            "publish.runner": publish_runner,
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


# --- admission: strict ---

ADMITTED = {"admit": True, "reason": "N+1 after starting web01 on ServVirt2: ok"}
BREAKS = (
    "starting web01 on ServVirt2 breaks N+1: losing ServVirt2 would leave web01 unplaced "
    "(no room: needs 256 MiB, the most any eligible host can take is 100 MiB)"
)
REFUSED = {"admit": False, "reason": BREAKS, "broken": {"ServVirt2": ["web01"]}}
ASKED = ("publish.runner", ("xenha.admission", "web01", "ServVirt2", "memory_mib=256"), {})


def test_strict_refuses_a_start_that_breaks_n_plus_1_naming_host_and_domus(xen):
    xen.admission = {"outputter": "xenha", "data": REFUSED}  # as the _command wrapper returns
    ret = xenha_domu.running("web01", CFG, admission="strict")
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert ret["comment"] == f"domU web01 not started: {BREAKS}"
    assert xen.calls == [ASKED]  # asked the master, started nothing


def test_strict_starts_what_keeps_n_plus_1(xen):
    xen.admission = ADMITTED
    ret = xenha_domu.running("web01", CFG, admission="strict")
    assert ret["result"] is True
    assert ret["comment"].endswith("(admission strict: N+1 after starting web01 on ServVirt2: ok)")
    assert xen.calls == [ASKED, ("start", (CFG,), {})]


def test_strict_test_mode_says_so_and_starts_nothing(xen, opts):
    opts["test"] = True
    xen.admission = REFUSED
    ret = xenha_domu.running("web01", CFG, admission="strict")
    assert ret["result"] is False
    assert ret["comment"] == f"domU web01 would not be started: {BREAKS}"
    xen.admission = ADMITTED
    ret = xenha_domu.running("web01", CFG, admission="strict")
    assert ret["result"] is None
    assert "would be started from" in ret["comment"]
    assert "admission strict: N+1 after" in ret["comment"]
    assert [c[0] for c in xen.calls] == ["publish.runner", "publish.runner"]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({}, "the master does not let ServVirt2 run xenha.admission (peer_run"),
        ("'xenha.admission' runner publish timed out", "no answer from the master's"),
        (SaltClientError("channel closed"), "no answer from the master's xenha.admission: "
         "'SaltClientError: channel closed'"),
        ({"error": "xenha.admission: host 'ServVirt2' is not in xenha:hosts", "retcode": 2},
         "xenha.admission: host 'ServVirt2' is not in xenha:hosts"),
    ],
)  # fmt: skip
def test_strict_without_an_answer_refuses(xen, answer, why):
    xen.admission = answer
    ret = xenha_domu.running("web01", CFG, admission="strict")
    assert ret["result"] is False
    assert ret["comment"].startswith("domU web01 not started: N+1 could not be checked: " + why)
    assert [c[0] for c in xen.calls] == ["publish.runner"]


def test_the_pillar_entry_sets_the_policy_and_the_argument_overrides_it(xen, pillar):
    pillar.update({"xenha": {"domus": {"web01": {"admission": "strict"}}}})
    xen.admission = REFUSED
    assert xenha_domu.running("web01", CFG)["result"] is False
    ret = xenha_domu.running("web01", CFG, admission="off")
    assert ret["result"] is True
    assert [c[0] for c in xen.calls] == ["publish.runner", "start"]


def test_off_by_default_asks_nobody(xen):
    xen.admission = REFUSED
    assert xenha_domu.running("web01", CFG)["result"] is True
    assert [c[0] for c in xen.calls] == ["start"]


def test_a_running_domu_is_not_judged(xen):
    xen.here = row()
    xen.admission = REFUSED
    assert xenha_domu.running("web01", CFG, admission="strict")["result"] is True
    assert xen.calls == []


@pytest.mark.parametrize(
    ("admission", "pillar_value", "message"),
    [
        ("yes", None, "admission: unknown value 'yes': must be one of off, strict"),
        (None, "Strict", "xenha:domus:web01:admission: unknown value 'Strict': must be one of"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_key(xen, pillar, admission, pillar_value, message):
    pillar.update({"xenha": {"domus": {"web01": {"admission": pillar_value}}}})
    ret = xenha_domu.running("web01", CFG, admission=admission)
    assert ret["result"] is False
    assert ret["comment"].startswith(message)
    assert xen.calls == []
