"""Bad input to the harness and the lab CLI gets a clear error naming the problem."""

import json

import pytest

from lab import RUN_ROOT
from lab.__main__ import main
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
