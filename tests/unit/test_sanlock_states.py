"""The xenha_sanlock states over the real execution module, whose commands answer with
recorded sanlock output (the ``fake`` of test_sanlock_module): each test checks the state's
answer and which sanlock commands ran, in normal and in test mode."""

import pytest
import xenha_sanlockcfg as cfg

from _modules import xenha_sanlock
from _states import xenha_sanlock as states
from tests.unit.test_sanlock_module import DUMP, PATH, PLACED, fake, ok  # noqa: F401

NO_LOCKSPACE = ok("read_leader done -223\n", retcode=1)
EMPTY_DUMP = ok(DUMP.splitlines()[0] + "\n")
STATUS_ALONE = "daemon A\np -1 helper\np -1 listener\np -1 status\n"


@pytest.fixture
def state(fake, monkeypatch):  # noqa: F811
    funcs = {"xenha_sanlock.init": xenha_sanlock.init, "xenha_sanlock.join": xenha_sanlock.join}
    monkeypatch.setattr(states, "__salt__", funcs, raising=False)
    monkeypatch.setattr(states, "__opts__", {"test": False}, raising=False)
    fake.on("sanlock", "direct", "init", answer=ok("init done 0\n"))
    return fake


def writes(recorder):
    init = recorder.ran("sanlock", "direct", "init")
    return init + recorder.ran("sanlock", "client", "add_lockspace")


def test_virtual_needs_the_execution_module(monkeypatch):
    monkeypatch.setattr(states, "__salt__", {}, raising=False)
    assert states.__virtual__() == (
        False,
        "the xenha_sanlock execution module is not available (sanlock missing?)",
    )


def test_an_initialised_area_is_left_alone(state):
    ret = states.lockspace_present()
    assert ret["result"] is True and ret["changes"] == {}
    assert "are initialised" in ret["comment"]
    assert not writes(state)


def test_a_fresh_area_in_test_mode_says_what_and_writes_nothing(state):
    state.on("sanlock", "direct", "read_leader", answer=NO_LOCKSPACE)
    state.on("sanlock", "direct", "dump", answer=EMPTY_DUMP)
    states.__opts__["test"] = True
    ret = states.lockspace_present()
    assert ret["result"] is None
    assert ret["changes"] == {"lockspace": "initialised", "resources": PLACED}
    slots = ", ".join(f"{d} (slot {s})" for d, s in sorted(PLACED.items()))
    assert ret["comment"] == f"would initialise lockspace xenha, {slots}"
    assert not writes(state)


def test_a_fresh_area_is_initialised_once_with_the_io_timeout(state):
    state.on("sanlock", "direct", "read_leader", answer=NO_LOCKSPACE)
    state.on("sanlock", "direct", "dump", answer=EMPTY_DUMP)
    ret = states.lockspace_present()
    assert ret["result"] is True
    assert ret["changes"] == {"lockspace": "initialised", "resources": PLACED}
    lockspace_inits = [c for c in writes(state) if "-s" in c]
    assert lockspace_inits == [["sanlock", "direct", "init", "-o", "10", "-s", f"xenha:0:{PATH}:0"]]


def test_a_new_domu_gets_its_lease_area_and_the_lockspace_stays(state):
    xenha_sanlock.__pillar__["xenha"]["domus"]["mail"] = {}
    (slot,) = cfg.plan(["mail"], {s: n for n, s in PLACED.items()}, 8).values()
    ret = states.lockspace_present()
    assert ret["changes"] == {"lockspace": "kept", "resources": {"mail": slot}}
    assert ret["comment"] == f"initialised mail (slot {slot})"
    assert [c[3:] for c in writes(state)] == [["-r", cfg.resource_arg("mail", PATH, slot)]]


def test_a_missing_area_fails_naming_the_key(state):
    state.on("stat", answer=ok("", retcode=1, stderr="No such file"))
    ret = states.lockspace_present()
    assert ret["result"] is False
    assert ret["comment"] == f"xenha:sanlock:lease_path: {PATH} does not exist"
    assert not writes(state)


def test_another_lockspace_name_is_refused(state):
    ret = states.joined("vdsm")
    assert ret["result"] is False
    assert ret["comment"] == "name: the lockspace is 'xenha', got 'vdsm'"


def test_joined_host_is_no_change(state):
    ret = states.joined()
    assert ret == {
        "name": "xenha",
        "changes": {},
        "result": True,
        "comment": "joined lockspace xenha as host_id 2",
    }
    assert not writes(state)


def test_join_in_test_mode_only_asks_the_daemon(state):
    state.on("sanlock", "client", "status", answer=ok(STATUS_ALONE))
    states.__opts__["test"] = True
    ret = states.joined()
    assert ret["result"] is None
    assert ret["comment"] == "would join lockspace xenha as host_id 2"
    assert not writes(state)


def test_join_adds_the_lockspace_with_the_host_id(state):
    state.on("sanlock", "client", "status", answer=ok(STATUS_ALONE))
    state.on("sanlock", "client", "add_lockspace", answer=ok("add_lockspace done 0\n"))
    ret = states.joined()
    assert ret["result"] is True
    assert ret["changes"] == {"joined": {"old": None, "new": 2}}
    (argv,) = writes(state)
    assert argv[3:] == ["-o", "10", "-s", f"xenha:2:{PATH}:0"]


def test_join_before_init_fails_naming_the_key(state):
    state.on("sanlock", "client", "status", answer=ok(STATUS_ALONE))
    state.on("sanlock", "direct", "read_leader", answer=NO_LOCKSPACE)
    ret = states.joined()
    assert ret["result"] is False
    assert ret["comment"].startswith("xenha:sanlock:lease_path: no xenha lockspace")
    assert not writes(state)
