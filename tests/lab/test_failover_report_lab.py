"""
``xenha.failover_report`` of a real crash in the lab (prefix ``xrp``): ServVirt1 is powered
off with web01 on it, the failover restarts web01 on ServVirt2, and the report's timeline
agrees with the one measured from the master's events (``lab.failover.Failover.timeline``):
each step recorded before its event was seen (the engine persists, then fires), and within a
few seconds of it (whole seconds for the domU's start, event delivery under load).
"""

import pytest

from lab import demo
from tests.support.labs import prepared_lab

pytestmark = [pytest.mark.root, pytest.mark.lab]

V1, V2 = demo.V1, demo.V2
GUESTS = {"web01": "10.99.0.100"}
SLACK = 3.0  # s an event may be seen after its step was recorded (same clock: one machine)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    with prepared_lab("test-failover-report-lab", "xrp", GUESTS) as (lab, fo):
        measured = demo.failover(lab, fo, "web01", V1, out_dir=tmp_path_factory.mktemp("fo"))
        assert measured["back"] and measured["on"] == [V2], measured
        yield lab, measured


def test_the_report_of_a_crash_matches_the_measured_timeline(crashed):
    lab, measured = crashed
    report = lab.salt_run("xenha.failover_report", V1, timeout=120)["failovers"][-1]
    assert report["state"] == "done" and report["fence"]["method"] == "ipmi", report
    assert report["restarted"]["web01"]["host"] == V2
    assert report["not_restarted"] == {}
    timeline = measured["timeline"]
    steps = {s["step"]: s for s in report["steps"]}
    pairs = [(name, name) for name in ("verified", "corroborated", "fenced", "done")]
    pairs.append(("domu_started", "domu_started:web01"))
    for step, event in pairs:
        recorded = steps[step]["time"] - measured["crash_at"]
        seen = timeline[event]
        assert recorded <= seen + 0.01, (step, recorded, seen)
        assert seen - recorded < SLACK, (step, recorded, seen)
    # the claim comes after the crash; the heartbeat was last heard before it
    assert report["claim"] > measured["crash_at"] - 1
    assert steps["last_heard"]["t"] < 0
    assert 0 < report["seconds"] < measured["crash_to_http_s"]
