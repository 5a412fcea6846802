"""Bad input to the harness and the lab CLI gets a clear error naming the problem."""

import json
from types import SimpleNamespace

import pytest

from lab import DEFAULT_RUN_DIR, RUN_ROOT
from lab.__main__ import main, ready, split_salt_args
from lab.hosts import LabError, Segment

RUN = RUN_ROOT / "test-inputs"


@pytest.mark.parametrize("run_dir", ["/tmp/lab", "/var/tmp/lab", "/run/lab", "/etc/lab"])
def test_run_folder_under_a_host_private_tree_is_refused(run_dir):
    with pytest.raises(LabError, match=f"run folder {run_dir}: must not be under"):
        Segment(run_dir)


@pytest.mark.parametrize("prefix", ["", "x-y", "toolong"])
def test_bad_netns_prefix_is_refused(prefix):
    with pytest.raises(LabError, match="netns prefix"):
        Segment(RUN, prefix=prefix)


@pytest.mark.parametrize("name", ["", "a" * 16, "has space", "sw"])
def test_bad_or_taken_endpoint_names_are_refused(name):
    segment = Segment(RUN, prefix="xhi")
    with pytest.raises(LabError, match=repr(name)):
        segment.endpoint(name, "10.99.0.5")


def test_a_name_is_used_once():
    segment = Segment(RUN, prefix="xhi")
    segment.endpoint("cli", "10.99.0.20")
    with pytest.raises(LabError, match="'cli' is taken"):
        segment.host("cli", "10.99.0.21", "vmhost")


def test_cli_names_an_unknown_host(capsys):
    with pytest.raises(SystemExit, match="no lab host 'Nope'; hosts: ServVirt1, ServVirt2, ServDB"):
        main(["--run-dir", str(RUN), "crash", "Nope"])


def test_cli_on_a_lab_that_is_not_up(capsys):
    with pytest.raises(SystemExit, match="is the lab up"):
        main(["--run-dir", str(RUN), "--prefix", "xhi", "partition", "ServVirt1"])
    main(["--run-dir", str(RUN), "--prefix", "xhi", "status"])
    status = json.loads(capsys.readouterr().out)
    assert {"master", "ServVirt1", "ServVirt2", "ServDB", "cli"} <= set(status)
    assert not any(entry["powered"] or entry["link"] for entry in status.values())


@pytest.mark.parametrize(
    ("argv", "lab_args", "salt_args"),
    [
        (["salt-run", "-h"], ["salt-run"], ["-h"]),
        (
            ["--prefix", "xhc", "salt-run", "--prefix", "x"],
            ["--prefix", "xhc", "salt-run"],
            ["--prefix", "x"],
        ),
        (
            ["--run-dir=/srv/l", "salt", "*", "test.ping"],
            ["--run-dir=/srv/l", "salt"],
            ["*", "test.ping"],
        ),
        (["salt-key"], ["salt-key"], []),
        (["up", "--no-guests"], ["up", "--no-guests"], None),
        (["--run-dir", "salt", "status"], ["--run-dir", "salt", "status"], None),
    ],
)
def test_the_salt_commands_arguments_are_theirs(argv, lab_args, salt_args):
    assert split_salt_args(argv) == (lab_args, salt_args)


def test_cli_salt_run_on_a_lab_that_is_not_up():
    with pytest.raises(SystemExit, match="lab salt-run: xhi-master does not exist: is the lab up"):
        main(["--run-dir", str(RUN), "--prefix", "xhi", "salt-run", "xenha.status"])


def up_args(run_dir=DEFAULT_RUN_DIR, prefix="xha", **flags):
    flags = {"no_apply": False, "no_guests": False, **flags}
    return SimpleNamespace(run_dir=str(run_dir), prefix=prefix, **flags)


def test_up_says_where_the_lab_is_and_what_to_run_next():
    lab = SimpleNamespace(run_dir=DEFAULT_RUN_DIR)
    text = ready(lab, up_args(), object(), 70.4)
    assert f"lab up in 70 s: run folder {DEFAULT_RUN_DIR}, namespaces xha-*" in text
    assert "failover on" in text
    assert "web01 10.99.0.100, web02 10.99.0.101 (managed by xenha)" in text
    for command in (
        "salt-run xenha.status",
        "salt-run xenha.plan ServVirt1 failure",
        "crash ServVirt1",
        "salt-run xenha.failover_status",
        "down",
    ):
        assert f"  python -m lab {command}  " in text


def test_up_names_another_labs_options_and_no_crash_without_failover():
    other = RUN_ROOT / "lab-other"
    text = ready(SimpleNamespace(run_dir=other), up_args(other, "xo"), None, 70)
    assert "failover off" in text
    assert f"  python -m lab --run-dir {other} --prefix xo salt-run xenha.status\n" in text
    assert f"  python -m lab.vm --run-dir {other} --prefix xo state 10.99.0.100\n" in text
    assert "not in the pillar" in text
    assert " crash ServVirt1" not in text and "failover_status" not in text
    bare = ready(SimpleNamespace(run_dir=other), up_args(other, "xo", no_apply=True), None, 9)
    assert "nothing applied" in bare and "guests" not in bare
