"""The xenha outputter: what salt-run prints for people."""

import importlib.util
import time
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "_output" / "xenha.py"


@pytest.fixture(scope="module")
def output():
    spec = importlib.util.spec_from_file_location("xenha_output", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_error_is_one_line(output):
    text = output.output({"error": "xenha.plan: host 'X' is not in xenha:hosts", "retcode": 2})
    assert text == "ERROR: xenha.plan: host 'X' is not in xenha:hosts"


def test_tables_cut_nothing_and_the_summary_comes_last(output):
    reason = "no room: needs 2048 MiB, the most any eligible host can take is 1280 MiB " * 3
    rows = [
        {"domu": "web01", "to": "ServVirt2", "outcome": "migrated", "reason": ""},
        {"domu": "big01", "to": None, "outcome": "stayed", "reason": reason},
    ]
    lines = output.output({"host": "ServVirt1", "result": rows, "summary": "1 of 2"}).splitlines()
    assert lines[0] == "host: ServVirt1"
    assert lines[1] == "result:"
    header, first, second = lines[2:5]
    assert header.split() == ["domu", "to", "outcome", "reason"]
    assert first.split()[:3] == ["web01", "ServVirt2", "migrated"]
    assert second.endswith(reason.rstrip()) and " - " in second  # None shows as "-"
    assert header.index("outcome") == first.index("migrated") == second.index("stayed")
    assert lines[-1] == "1 of 2" and "retcode" not in "\n".join(lines)


def test_times_are_clock_times_and_nested_data_one_line(output):
    now = time.time()
    text = output.output(
        {
            "failovers": [
                {"host": "ServVirt1", "started": now, "domus": {"web01": {"state": "started"}}}
            ],
            "audit": ["2026-12-03T10:00:00Z ServVirt1 blocked {} (x75, last ...)"],
        }
    )
    assert time.strftime("%H:%M:%S", time.localtime(now)) in text
    assert str(int(now)) not in text
    assert "web01: state: started" in text
    assert "  - 2026-12-03T10:00:00Z ServVirt1 blocked {} (x75, last ...)" in text.splitlines()


def test_booleans_and_empty_values_read_as_words(output):
    text = output.output({"acknowledged": False, "problems": [], "summary": "not acknowledged"})
    assert text.splitlines() == ["acknowledged: no", "problems: -", "not acknowledged"]


def test_a_laid_out_report_prints_as_it_is(output):
    report = ["failover f1 of A: done in 4.2 s (ipmi)", "      +0.0 s  received  loss claimed by B"]
    text = output.output({"report": report, "png": "/tmp/f.png", "summary": "1 failover"})
    assert text.splitlines() == [*report, "png: /tmp/f.png", "1 failover"]
    assert output.output({"report": [], "summary": "no failover recorded"}) == (
        "no failover recorded"
    )
