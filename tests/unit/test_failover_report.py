"""Failover reports rebuilt from journals and audit lines that the real engine wrote."""

import pytest
import xenha_failover as xf
import xenha_report

from tests.support.failover_runs import AuditedIO, engine, stamped


@pytest.fixture
def io(tmp_path):
    return AuditedIO(tmp_path)


def steps_of(report):
    return [s["step"] for s in report["steps"]]


def at(report, step):
    return next(s for s in report["steps"] if s["step"] == step)


def test_an_ipmi_failover_reads_as_steps_with_evidence_and_exact_seconds(io):
    claim = stamped(io, age=3.2, before=0.25)
    engine(io, corroborate_window=0.4).handle("A", "B", claim)
    (report,) = xenha_report.load(io.store)
    assert report["host"] == "A" and report["state"] == "done"
    assert report["id"] == xf.load(io.store, "A")["id"]
    assert steps_of(report)[:6] == [
        "last_heard", "received", "verified", "corroborated", "fenced", "restarting"
    ]  # fmt: skip
    assert steps_of(report)[-1] == "done"
    # the audit trail has whole seconds; the journal gives the sub-second times
    assert at(report, "last_heard")["t"] == -3.2
    assert at(report, "received")["t"] == 0.25
    assert at(report, "corroborated")["t"] == pytest.approx(0.65)
    assert at(report, "corroborated")["evidence"] == (
        "master cannot reach it; lease B: stopped, unchanged for 3 s; C: stopped, unchanged for 3 s"
    )
    assert at(report, "fenced")["evidence"] == (
        "powered off through its BMC in 0.1 s; A's sanlock lease: stopped for B, C"
    )
    assert report["fence"]["method"] == "ipmi"
    plan = at(report, "restarting")["evidence"]
    assert plan == "plan: db01 -> C; web01 -> B; tiny -> B"  # by priority
    assert {n: r["host"] for n, r in report["restarted"].items()} == dict(io.starts)
    assert report["not_restarted"] == {}
    assert report["seconds"] == xf.load(io.store, "A")["seconds"]


def test_what_was_not_restarted_says_why_and_retries_show_in_order(io):
    io.ipmi = "fail"  # fenced through the lease instead: sanlock says A is dead
    io.lease_state["A"] = "dead"
    io.leases_of["A"].append("stray")
    io.start_fail.add("web01")
    engine(io, retry_base=2).handle("A", "B", stamped(io, age=1.5))
    (report,) = xenha_report.load(io.store, "A")
    assert report["fence"]["evidence"] == "A's sanlock lease: dead for B, C"
    assert "stray not placed: not in pillar" in at(report, "restarting")["evidence"]
    failures = [s for s in report["steps"] if s["step"] == "domu_failed"]
    assert len(failures) == 3  # start_tries
    assert [s["t"] for s in failures] == sorted(s["t"] for s in failures)
    assert failures[-1]["t"] - failures[0]["t"] >= 4  # two back-offs of 2 s
    assert failures[0]["evidence"] == ("web01 failed to start on B: xl create /c/web01.cfg failed")
    assert sorted(report["restarted"]) == ["db01", "tiny"]
    assert report["not_restarted"] == {
        "stray": "not in pillar: no config to start",
        "web01": "xl create /c/web01.cfg failed",
    }
    text = xenha_report.text([report])
    assert text[0].startswith(f"failover {report['id']} of A: done in ")
    assert "  not restarted:" in text and "    web01: xl create /c/web01.cfg failed" in text
    assert any(line.startswith("  restarted: db01 on ") for line in text)
    assert text[-1].startswith("~ whole seconds")  # the domU steps are from the audit trail


def test_a_blocked_failover_then_an_ack_is_one_timeline(io):
    io.ipmi = "fail"
    engine(io, retry_base=5, retry_max=20, retry_for=30).handle("A", "B", stamped(io, 2.0))
    (blocked,) = xenha_report.load(io.store)
    assert blocked["state"] == "blocked" and blocked["restarted"] == {}
    assert "IPMI: Error: Unable to establish IPMI v2" in blocked["reason"]
    assert "  blocked: not fenced, nothing restarted: IPMI" in "\n".join(
        xenha_report.text([blocked])
    )
    engine(io).ack("A", by="salt-run xenha.ack_fence")
    (done,) = xenha_report.load(io.store)
    assert done["id"] == blocked["id"] and done["state"] == "done"
    assert done["fence"]["evidence"] == "fence acknowledged by salt-run xenha.ack_fence"
    assert "ack_fence" in steps_of(done) and len(done["restarted"]) == 3
    assert steps_of(done).index("ack_fence") < steps_of(done).index("fenced")


def test_every_failover_is_kept_and_found_by_host_or_id(io):
    first = engine(io).handle("A", "B", stamped(io, 2.0))
    io.leases_of["A"] = []  # its domUs run on the survivors now
    io.clock += 120  # A came back
    # a forged claim and a late copy of the old one: neither is a failover of its own
    engine(io).handle("A", "C", {"id": "B", "reporter": "B", "peer": "A"})
    late = {**stamped(io, 70.0, reporter="C", before=60)}
    assert engine(io).handle("A", "C", late)["duplicate"] is True
    io.clock += 30
    io.leases_of = {"A": ["web01"], "B": ["db01", "tiny"]}  # web01 went back to A
    io.running = {"B": ["db01", "tiny"], "C": []}
    io.generation["A"] = 2  # A rejoined the lockspace in between: a new death
    second = engine(io).handle("A", "B", stamped(io, 1.0))
    assert second["id"] != first["id"]
    both = xenha_report.load(io.store, "A")
    assert [r["id"] for r in both] == [first["id"], second["id"]]
    old, new = both
    # the journal now holds the second failover: the first keeps the audit trail's seconds
    assert all(s["exact"] for s in new["steps"] if s["step"] in ("received", "done"))
    assert not at(old, "done")["exact"]
    assert old["state"] == "done" and "ignored" not in steps_of(old)  # refused, after done
    assert "repeat" in steps_of(old) and "repeat" not in steps_of(new)
    assert list(new["restarted"]) == ["web01"]
    assert xenha_report.load(io.store, second["id"]) == [new]
    assert xenha_report.load(io.store, "B") == []


def test_audit_lines_that_are_not_entries_are_skipped_and_fractions_read():
    lines = [
        "garbage",
        '2026-12-03T10:00:00Z A received {"failover": "f1", "reporter": "B"}',
        '2026-12-03T10:00:01.250Z A verified {"failover": "f1"}',
        "2026-12-03T10:00:02Z A corroborated {not json}",
    ]
    entries = xenha_report.parse_audit(lines)
    assert [e["step"] for e in entries] == ["received", "verified"]
    assert entries[1]["time"] - entries[0]["time"] == 1.25 and entries[1]["exact"]
    (report,) = xenha_report.reports(lines, {})
    assert report["state"] == "verified" and report["steps"][1]["t"] == 1.25


def test_the_png_timeline_is_written(io, tmp_path):
    pytest.importorskip("matplotlib")
    engine(io).handle("A", "B", stamped(io, 2.0))
    path = tmp_path / "timeline.png"
    assert xenha_report.plot(xenha_report.load(io.store), str(path)) == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
