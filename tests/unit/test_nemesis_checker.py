"""The nemesis's pure parts: what the checker calls a violation, how trials are picked and
summed up (lab/nemesis.py; the lab run itself is tests/lab/test_nemesis.py)."""

import inspect

import pytest

from lab import nemesis


def status_of(states):
    return lambda path: states.get(path, "unknown")


def test_two_hosts_without_a_migration_is_a_violation_whatever_qemu_says():
    copies = {"ServVirt1": [(11, "web01", "/a")], "ServVirt2": [(22, "web01", "/b")]}
    # a frozen copy (its monitor does not answer) still runs again once continued
    bad, why, states = nemesis.classify_double(copies, status_of({"/b": "running"}))
    assert bad is True and "none a migration" in why
    assert states == {"ServVirt1": ["unknown"], "ServVirt2": ["running"]}


def test_a_live_migration_in_flight_is_not_a_violation_until_both_copies_run():
    copies = {"ServVirt1": [(11, "web01", "/a")], "ServVirt2": [(22, "web01--incoming", "/b")]}
    paused = status_of({"/a": "running", "/b": "inmigrate"})
    assert nemesis.classify_double(copies, paused)[:2] == (False, "live migration in flight")
    both = status_of({"/a": "running", "/b": "running"})
    assert nemesis.classify_double(copies, both)[:2] == (True, "a migration's both copies run")


def test_a_switch_over_between_two_reads_is_no_violation():
    # long run seed 2404441372 trial 8: the source read "running" a moment before it stopped,
    # the target (two processes, one QEMU) "running" a moment after it started
    copies = {
        "ServVirt2": [(30339, "nem01", "/src")],
        "ServVirt1": [(31457, "nem01--incoming", "/dst"), (31461, "nem01--incoming", "/dst")],
    }
    reads = []

    def switching(path):
        reads.append(path)
        if len(reads) <= 2:  # source, then target: the switch-over happened between them
            return "running"
        return "postmigrate" if path == "/src" else "running"

    bad, why, states = nemesis.classify_double(copies, switching)
    assert (bad, why) == (False, "live migration in flight")
    assert reads == ["/src", "/dst", "/dst", "/src"]  # each QEMU once, then the reverse order
    assert states == {
        "ServVirt2": ["running", "then postmigrate"],
        "ServVirt1": ["running", "then running"],
    }
    # both still running when read the other way round: a violation
    both = status_of({"/src": "running", "/dst": "running"})
    assert nemesis.classify_double(copies, both)[:2] == (True, "a migration's both copies run")


def test_an_older_boot_answering_after_a_newer_one_is_a_violation():
    order = nemesis.BootOrder()
    assert order.see(1.0, "a") is None
    assert order.see(1.2, "a") is None
    assert order.see(5.0, "b") is None  # a restart after a failover: a new boot, fine
    assert order.see(5.2, "b") is None
    flip = order.see(5.4, "a")
    assert flip == {"older_boot": "a", "newer_boots": ["b"], "newer_seen": 5.2}


def test_the_qmp_probe_says_unknown_for_a_missing_socket(tmp_path):
    assert nemesis.qmp_status(str(tmp_path / "none.qmp"), timeout=0.2) == "unknown"
    assert nemesis.qmp_status(None) == "unknown"


def test_the_lease_daemon_is_the_sanlock_daemon_not_its_clients(monkeypatch):
    lines = {
        1: b"sanlock\0client\0status\0",
        2: b"sanlock\0daemon\0-l\0000\0-w\0000\0",
        3: b"/usr/bin/python3\0/srv/xenha_sanlockkeeper.py\0web01\0",
    }
    monkeypatch.setattr(nemesis, "_cmdline", lambda pid: lines.get(pid, b""))
    host = type("H", (), {"pids": lambda self: [1, 2, 3, 4]})()
    assert nemesis.LEASE_DAEMONS["sanlock"](host) == [2]


@pytest.mark.parametrize("fun", [nemesis.run, nemesis.Nemesis])
def test_the_default_lease_daemon_is_one_the_nemesis_can_find(fun):
    # `python -m lab nemesis` and CI pass none: the default must be a known daemon
    default = inspect.signature(fun).parameters["lease_daemon"].default
    assert default in nemesis.LEASE_DAEMONS


def fake_nemesis(busy):
    nem = nemesis.Nemesis.__new__(nemesis.Nemesis)
    nem.vmhosts = ["ServVirt1", "ServVirt2"]
    nem.busy_hosts = lambda: busy
    return nem


def test_a_trial_is_replayed_from_its_seed_and_index_alone():
    faults = list(nemesis.FAULTS)
    first = [fake_nemesis(["ServVirt2"]).pick(i, 42, faults) for i in range(6)]
    again = fake_nemesis(["ServVirt2"]).pick(3, 42, faults)
    assert again == first[3]
    assert {host for _, host, _ in first} == {"ServVirt2"}  # the host that runs the domUs
    lo, hi = nemesis.DURATION
    assert all(lo <= d <= hi for _, _, d in first)
    assert fake_nemesis([]).pick(0, 42, faults)[1] in ("ServVirt1", "ServVirt2")


def row(replay, fault, settle, violations=0):
    return {
        "replay": replay,
        "fault": fault,
        "host": "ServVirt1",
        "duration_s": 3.0,
        "settled": settle is not None,
        "settle_s": settle,
        "violations": [{"t": 1}] * violations,
    }


def test_the_summary_counts_violations_unsettled_trials_and_settle_times():
    rows = [
        row("7/0", "partition", 10.0),
        row("7/1", "partition", 30.0, 2),
        row("7/2", "skew", None),
    ]
    summary = nemesis.summarize(rows, 7, ["partition", "skew"], samples=99)
    assert nemesis.final_line(summary) == "3 trials, 2 violations, 1 unsettled"
    assert summary["unsettled"] == ["7/2"] and summary["with_violations"] == ["7/1"]
    assert summary["per_fault"]["partition"] == {
        "trials": 2,
        "violations": 2,
        "unsettled": 0,
        "settle_s_median": 20.0,
        "settle_s_max": 30.0,
    }
    text = nemesis.markdown(summary, rows)
    assert "| 7/2 | skew | ServVirt1 | 3.0 | NOT SETTLED | 0 |" in text


def test_an_unknown_fault_is_refused_by_name():
    with pytest.raises(nemesis.LabError, match="unknown faults \\['melt'\\]"):
        nemesis.run(None, None, trials=1, seed=1, out_dir="/nonexistent", faults=["melt"])


def test_the_short_runs_seed_gives_five_different_faults():
    faults = nemesis.SHORT_FAULTS
    nem = fake_nemesis(["ServVirt1"])
    assert sorted(nem.pick(i, nemesis.SHORT_SEED, faults)[0] for i in range(5)) == sorted(faults)


def test_an_unsettled_trials_digest_names_placement_journal_path_and_audit():
    row = {
        "trial": 1, "replay": "4/1", "fault": "kill-master-failover", "host": "ServVirt1",
        "duration_s": 11.6, "facts": {"killed": 14}, "placed": {"nem01": ["ServVirt1"]},
        "unsettled_reason": "not running exactly once: {'nem01': []}",
        "evidence": {
            "running_on": {"nem01": []},
            "domu_leases": {"nem01": None},
            "journals": {
                "ServVirt1": {
                    "history": [{"state": "received"}, {"state": "fenced"}, {"state": "done"}],
                    "not_restarted": {"nem01": "running nowhere"},
                }
            },
            "audit": ["2026-12-04T00:26:59Z fenced ServVirt1 " + "x" * 500],
        },
    }  # fmt: skip
    text = nemesis.digest(row)
    assert "placed before: {'nem01': ['ServVirt1']}; after: {'nem01': []}" in text
    assert "journal ServVirt1: received > fenced > done" in text
    assert "not_restarted {'nem01': 'running nowhere'}" in text
    assert max(len(line) for line in text.splitlines()) < 320  # audit lines are cut
