"""
xenha.failover_report through a real salt-master: the journal and audit trail of a failover the
real engine ran (on the unit tests' fake cluster) are put in the master's store, then read back
by salt-run as text, as JSON and as a PNG.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import xenha_failover as xf
import xenha_report

from tests.support.failover_runs import AuditedIO, engine, stamped


@pytest.fixture
def recorded(salt_master, tmp_path):
    """A lease-fenced failover of A with one domU that fitted nowhere, in the master's store."""
    io = AuditedIO(tmp_path / "engine")
    io.ipmi = "fail"  # fenced through the lease instead: sanlock says A is dead
    io.lease_state["A"] = "dead"
    io.leases_of["A"].append("stray")
    result = engine(io, corroborate_window=0.5).handle("A", "B", stamped(io, 2.5))
    store = Path(salt_master.config["cachedir"]) / "xenha"
    store.mkdir(parents=True, exist_ok=True)
    audit = store / "audit.log"
    kept = audit.read_text() if audit.exists() else None
    shutil.copy(xf.audit_path(io.store), audit)
    shutil.copy(xf.store_dir(io.store) / "failover-A.json", store / "failover-A.json")
    yield result, io
    (store / "failover-A.json").unlink()
    if kept is None:
        audit.unlink()
    else:
        audit.write_text(kept)


def for_people(salt_master, *args):
    cli = salt_master.salt_run_cli(timeout=60)
    argv = [arg for arg in cli.cmdline(*args) if not arg.startswith("--out")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)


def test_failover_report_as_text_json_and_png(salt_master, recorded, tmp_path):
    result, io = recorded
    machine = salt_master.salt_run_cli(timeout=60).run("xenha.failover_report", "A")
    assert machine.returncode == 0, machine
    (report,) = machine.data["failovers"]
    assert report == json.loads(json.dumps(xenha_report.load(io.store)[0]))
    assert report["id"] == result["id"] and report["state"] == "done"
    assert [s["step"] for s in report["steps"]][:5] == [
        "last_heard", "received", "verified", "corroborated", "fenced"
    ]  # fmt: skip
    assert report["not_restarted"] == {"stray": "not in pillar: no config to start"}

    people = for_people(salt_master, "xenha.failover_report", result["id"])
    assert people.returncode == 0, people
    lines = people.stdout.splitlines()
    assert lines[0].startswith(f"failover {result['id']} of A: done in "), people.stdout
    assert "    stray: not in pillar: no config to start" in lines
    assert any(" corroborated  master cannot reach it; lease B: dead" in x for x in lines)
    assert "Traceback" not in people.stdout + people.stderr

    png = tmp_path / "timeline.png"
    drawn = salt_master.salt_run_cli(timeout=60).run("xenha.failover_report", f"png={png}")
    assert drawn.returncode == 0 and drawn.data["png"] == str(png), drawn
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("xenha.failover_report", "nosuchhost"), 1, "no failover of nosuchhost recorded"),
        (("xenha.failover_report", "A", "png=relative.png"), 2, "png: 'relative.png' is not"),
        (("xenha.failover_report", "A", "png=/nonexistent/x.png"), 2, "directory /nonexistent"),
    ],
)
def test_failover_report_refusals_are_one_line(salt_master, recorded, args, code, says):
    people = for_people(salt_master, *args)
    assert people.returncode == code, people
    assert says in people.stdout.strip().splitlines()[-1], people.stdout
