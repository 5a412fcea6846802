"""xenha_sanlock with Salt's loader mocked: cmd.run_all answers with recorded sanlock output,
so each test checks the result and what would have run (tests/hosts/test_sanlock.py runs the
same functions against real daemons)."""

import json
import shlex

import pytest
import xenha_sanlockcfg as cfg
from salt.exceptions import CommandExecutionError

from _modules import xenha_sanlock
from tests.unit.test_sanlockcfg import DUMP, PATH, STATUS, tree

XL_LIST = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
XL_LIST += "Domain-0                                     0  1024     2     r-----      9.0\n"


def ok(stdout="", retcode=0, stderr=""):
    return {"retcode": retcode, "stdout": stdout, "stderr": stderr}


class Fake:
    """Answers by argv prefix (the longest that matches); records every command."""

    def __init__(self):
        self.answers = {}
        self.calls = []

    def on(self, *prefix, answer):
        self.answers[prefix] = answer

    def __call__(self, argv, python_shell=None, ignore_retcode=None, timeout=None):
        assert isinstance(argv, list) and python_shell is False
        self.calls.append(argv)
        for size in range(len(argv), 0, -1):
            if tuple(argv[:size]) in self.answers:
                answer = self.answers[tuple(argv[:size])]
                # a list answers in turn, its last one repeated
                return (
                    answer.pop(0)
                    if isinstance(answer, list) and len(answer) > 1
                    else (answer[0] if isinstance(answer, list) else answer)
                )
        raise AssertionError(f"unexpected command {shlex.join(argv)}")

    def ran(self, *prefix):
        return [c for c in self.calls if tuple(c[: len(prefix)]) == prefix]


@pytest.fixture
def fake(monkeypatch):
    fake = Fake()
    data = tree(slots=8, toolstack_path="/usr/sbin/xl")
    monkeypatch.setattr(xenha_sanlock, "__salt__", {"cmd.run_all": fake}, raising=False)
    monkeypatch.setattr(xenha_sanlock, "__pillar__", {"xenha": data}, raising=False)
    monkeypatch.setattr(xenha_sanlock, "__opts__", {"id": "v2"}, raising=False)
    fake.on("sanlock", "client", "status", answer=ok(STATUS))
    fake.on("/usr/sbin/xl", "list", answer=ok(XL_LIST))
    fake.on("sanlock", "direct", "dump", answer=ok(dump(PLACED)))
    fake.on("stat", answer=ok(f"regular file {9 << 20}\n"))
    fake.on("sanlock", "direct", "read_leader", answer=ok("read_leader done 0\nspace_name xenha\n"))
    return fake


PLACED = cfg.plan(["web01", "db01"], {}, 8)  # where init puts them in an 8-slot area


def dump(placed):
    """`sanlock direct dump` output (its recorded format) of an area holding ``placed``."""
    lines = DUMP.splitlines()[:3]
    for name, slot in sorted(placed.items(), key=lambda item: item[1]):
        lines.append(f"{cfg.slot_offset(slot):08d} {'xenha':>40} {name:>48} 0000000771 0001 0001 1")
    return "\n".join(lines) + "\n"


def test_virtual_says_why_without_sanlock(monkeypatch):
    monkeypatch.setattr(xenha_sanlock.salt.utils.path, "which", lambda name: None)
    assert xenha_sanlock.__virtual__() == (
        False,
        "xenha_sanlock: the sanlock command is not installed (Debian package sanlock)",
    )


def test_acquire_refused_names_the_holder(fake):
    answer = {"error": -243, "message": "(-243, 'Sanlock resource not acquired')", "owners": [1]}
    fake.on("/usr/bin/python3", answer=ok(json.dumps(answer) + "\n", retcode=2))
    with pytest.raises(
        CommandExecutionError, match=r"acquire db01: .*-243 .*held by host_id 1 \(v1\)"
    ):
        xenha_sanlock.acquire("db01")
    (argv,) = fake.ran("/usr/bin/python3")
    assert argv[1] == xenha_sanlock.KEEPER and argv[1].endswith("_utils/xenha_sanlockkeeper.py")
    args = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert args["--resource"] == "db01"
    assert args["--offset"] == str(cfg.slot_offset(PLACED["db01"]))
    assert args["--path"] == PATH and args["--toolstack"] == "/usr/sbin/xl"


def test_acquire_of_a_domu_without_a_lease_area(fake):
    with pytest.raises(
        CommandExecutionError, match="domU mail: no lease area .* xenha_sanlock.init"
    ):
        xenha_sanlock.acquire("mail")
    assert not fake.ran("/usr/bin/python3")


def test_acquire_refuses_a_bad_name_before_running_anything(fake):
    with pytest.raises(CommandExecutionError, match="invalid domain name"):
        xenha_sanlock.acquire("web01; reboot")
    assert fake.calls == []


def test_acquire_of_a_lease_held_here_is_no_change(fake):
    got = xenha_sanlock.acquire("web01")
    assert got == {
        "domu": "web01",
        "pid": 28,
        "slot": PLACED["web01"],
        "mode": "ex",
        "changed": False,
    }
    assert not fake.ran("/usr/bin/python3")


def test_held_and_release_refused_while_the_domu_runs(fake):
    held = {"web01": {"pid": 28, "lver": 1, "offset": 1048576, "mode": "ex"}}
    assert xenha_sanlock.held() == held
    fake.on("/usr/sbin/xl", "list", answer=ok(XL_LIST + "web01  3  256  1  -b----  1.0\n"))
    with pytest.raises(CommandExecutionError, match="release web01: the domU runs on this host"):
        xenha_sanlock.release("web01")
    assert not fake.ran("kill")
    assert xenha_sanlock.release("db01") == {"domu": "db01", "changed": False}


def test_join_again_is_no_change(fake):
    said = "add_lockspace_timeout 10\nadd_lockspace_timeout done -17\n"
    fake.on("sanlock", "client", "add_lockspace", answer=ok(said, retcode=1))
    assert xenha_sanlock.join() == {"host_id": 2, "changed": False}
    (argv,) = fake.ran("sanlock", "client", "add_lockspace")
    assert argv[3:] == ["-o", "10", "-s", f"xenha:2:{PATH}:0"]
    fake.on("sanlock", "client", "add_lockspace", answer=ok("done -19\n", retcode=1))
    with pytest.raises(CommandExecutionError, match="add_lockspace .* exit 1: .*done -19"):
        xenha_sanlock.join()


def test_join_while_another_add_is_under_way_waits_for_it(fake):
    """The boot unit, the formula and the lab may each add the lockspace: sanlock
    answers -115 to the second; join then waits for the first and reports no change."""
    fake.on("sanlock", "client", "add_lockspace", answer=ok("done -115\n", retcode=1))
    adding, joined = f"s xenha:2:{PATH}:0 ADD\n", f"s xenha:2:{PATH}:0\n"
    fake.on("sanlock", "client", "gets", answer=[ok(adding), ok(adding), ok(joined)])
    assert xenha_sanlock.join() == {"host_id": 2, "changed": False}
    assert len(fake.ran("sanlock", "client", "gets")) == 3
    fake.on("sanlock", "client", "gets", answer=ok(""))  # that add failed: say so
    with pytest.raises(CommandExecutionError, match="add_lockspace .* exit 1: done -115"):
        xenha_sanlock.join()


def test_leave_refused_while_leases_are_held(fake):
    with pytest.raises(CommandExecutionError, match="holds the leases of web01"):
        xenha_sanlock.leave()
    assert not fake.ran("sanlock", "client", "rem_lockspace")


def test_hosts_lists_every_pillar_host(fake):
    gets = f"s xenha:2:{PATH}:0 \nh 1 gen 1 timestamp 768 LIVE\nh 2 gen 1 timestamp 769 LIVE\n"
    fake.on("sanlock", "client", "gets", answer=ok(gets))
    seen = xenha_sanlock.hosts()
    assert seen[1] == {"host": "v1", "state": "live", "generation": 1, "timestamp": 768}
    fake.on(
        "sanlock", "client", "gets", answer=ok(f"s xenha:2:{PATH}:0 \nh 2 gen 1 timestamp 9 LIVE\n")
    )
    assert xenha_sanlock.hosts()[1] == {
        "host": "v1",
        "state": "free",
        "generation": 0,
        "timestamp": 0,
    }
    fake.on("sanlock", "client", "gets", answer=ok(""))
    with pytest.raises(CommandExecutionError, match="not joined lockspace xenha"):
        xenha_sanlock.hosts()


def test_init_keeps_what_is_there(fake):
    fake.on("sanlock", "direct", "init", answer=ok("init done 0\n"))
    assert xenha_sanlock.init() == {"lockspace": "kept", "resources": {}}
    assert not fake.ran("sanlock", "direct", "init")
    # a new domU in the pillar gets the first free slot of its probe path
    xenha_sanlock.__pillar__["xenha"]["domus"]["mail"] = {}
    (slot,) = cfg.plan(["mail"], {s: n for n, s in PLACED.items()}, 8).values()
    assert xenha_sanlock.init() == {"lockspace": "kept", "resources": {"mail": slot}}
    (argv,) = fake.ran("sanlock", "direct", "init")
    assert argv[3:] == ["-r", cfg.resource_arg("mail", PATH, slot)]


def test_init_writes_a_new_lockspace_with_the_io_timeout(fake):
    fake.on("sanlock", "direct", "read_leader", answer=ok("read_leader done -223\n", retcode=1))
    fake.on("sanlock", "direct", "dump", answer=ok(DUMP.splitlines()[0] + "\n"))
    fake.on("sanlock", "direct", "init", answer=ok("init done 0\n"))
    got = xenha_sanlock.init()
    assert got == {"lockspace": "initialised", "resources": PLACED}
    inits = [c[3:] for c in fake.ran("sanlock", "direct", "init")]
    assert inits[0] == ["-o", "10", "-s", f"xenha:0:{PATH}:0"]
    assert inits[1:] == [["-r", cfg.resource_arg(n, PATH, PLACED[n])] for n in ("db01", "web01")]


def test_a_missing_or_small_lease_area_is_refused_before_any_write(fake):
    fake.on("stat", answer=ok("", retcode=1, stderr="stat: cannot statx: No such file"))
    with pytest.raises(
        CommandExecutionError, match=f"^xenha:sanlock:lease_path: {PATH} does not exist"
    ):
        xenha_sanlock.init()
    fake.on("stat", answer=ok("block special file 0\n"))
    fake.on("blockdev", answer=ok(f"{8 << 20}\n"))
    with pytest.raises(
        CommandExecutionError, match=r"^xenha:sanlock:lease_path: .* holds 8388608 bytes"
    ):
        xenha_sanlock.init()
    with pytest.raises(CommandExecutionError, match="holds 8388608 bytes"):
        xenha_sanlock.join()
    assert fake.ran("blockdev", "--getsize64", PATH)
    assert not fake.ran("sanlock", "direct", "init")
    assert not fake.ran("sanlock", "client", "add_lockspace")


def test_join_refuses_an_area_without_the_lockspace(fake):
    fake.on("sanlock", "direct", "read_leader", answer=ok("read_leader done -223\n", retcode=1))
    with pytest.raises(
        CommandExecutionError, match="^xenha:sanlock:lease_path: no xenha lockspace"
    ):
        xenha_sanlock.join()
    assert not fake.ran("sanlock", "client", "add_lockspace")


def delta_dump(timestamp, host_id=1):
    """`sanlock direct dump` of the lockspace area with host_id's delta lease at ``timestamp``."""
    head = DUMP.splitlines()[0]
    row = f"{(host_id - 1) * 512:08d} {'xenha':>40} {'v1':>48} {timestamp:010d} 0001 0001"
    return f"{head}\n{row}\n"


@pytest.fixture
def watched(fake, monkeypatch):
    monkeypatch.setattr(xenha_sanlock, "WATCH_POLL", 0.01)
    monkeypatch.setattr(xenha_sanlock.time, "sleep", lambda s: None)
    clock = iter(range(1000))
    monkeypatch.setattr(xenha_sanlock.time, "monotonic", lambda: float(next(clock)))
    gets = f"s xenha:2:{PATH}:0 \nh 1 gen 1 timestamp 768 LIVE\nh 2 gen 1 timestamp 769 LIVE\n"
    fake.on("sanlock", "client", "gets", answer=ok(gets))
    return fake


def test_observe_sees_a_renewal_as_advancing(watched):
    watched.on("sanlock", "direct", "dump", answer=[ok(delta_dump(770)), ok(delta_dump(772))])
    seen = xenha_sanlock.observe("v1")
    assert seen["state"] == "advancing" and seen["host_id"] == 1
    assert seen["sanlock"]["state"] == "live"


def test_observe_calls_a_delta_lease_unchanged_over_the_watch_stopped(watched):
    watched.on("sanlock", "direct", "dump", answer=ok(delta_dump(770)))
    seen = xenha_sanlock.observe("v1")  # io_timeout 10: watched at least 30 s
    assert seen["state"] == "stopped" and seen["unchanged_for"] >= 31


def test_observe_free_and_dead_and_bad_durations(watched):
    watched.on("sanlock", "direct", "dump", answer=ok(DUMP.splitlines()[0] + "\n"))
    assert xenha_sanlock.observe("v1")["state"] == "free"
    dead = f"s xenha:2:{PATH}:0 \nh 1 gen 1 timestamp 768 DEAD\n"
    watched.on("sanlock", "client", "gets", answer=ok(dead))
    assert xenha_sanlock.observe("v1")["state"] == "dead"
    with pytest.raises(CommandExecutionError, match=r"at least 30 s \(3 x io_timeout\)"):
        xenha_sanlock.observe("v1", duration=11)
    with pytest.raises(CommandExecutionError, match="'db' is not a VM host with a host_id"):
        xenha_sanlock.observe("db")


def test_holders_marks_a_lease_its_holder_lost_with_an_old_generation(fake):
    # v2 (host_id 2) joined again (generation 2) since it took web01 in generation 1
    head, a, b = DUMP.splitlines()[:3]
    lines = [head, a, b.replace(" 0002 0001", " 0002 0002")]
    owners = {"web01": "0002 0001", "db01": "0001 0001"}
    for name, slot in sorted(PLACED.items(), key=lambda item: item[1]):
        lines.append(
            f"{cfg.slot_offset(slot):08d} {'xenha':>40} {name:>48} 0000000771 {owners[name]} 1"
        )
    fake.on("sanlock", "direct", "dump", answer=ok("\n".join(lines) + "\n"))
    assert xenha_sanlock.holders() == {
        "web01": {"mode": "ex", "hosts": ["v2"], "stale": True},
        "db01": {"mode": "ex", "hosts": ["v1"]},
    }


def test_holders_reads_exclusive_and_shared_holders(fake):
    rows = {"web01": "0000000771 0002 0001 1", "db01": "0000000000 0001 0001 1"}
    lines = DUMP.splitlines()[:3]
    for name, slot in sorted(PLACED.items(), key=lambda item: item[1]):
        lines.append(f"{cfg.slot_offset(slot):08d} {'xenha':>40} {name:>48} {rows[name]}")
        if name == "db01":
            lines += [f"{'':>100}0001 0001 SH", f"{'':>100}0002 0001 SH"]
    fake.on("sanlock", "direct", "dump", answer=ok("\n".join(lines) + "\n"))
    assert xenha_sanlock.holders() == {
        "web01": {"mode": "ex", "hosts": ["v2"]},
        "db01": {"mode": "sh", "hosts": ["v1", "v2"]},
    }
    assert xenha_sanlock.holders(host="v1") == {"db01": {"mode": "sh", "hosts": ["v1", "v2"]}}
