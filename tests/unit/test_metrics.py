"""Prometheus metrics (_utils/xenha_metrics.py), checked by promtool, Prometheus's own linter."""

import json
import os
import re
import shutil
import subprocess

import pytest
import xenha_metrics as xm
import xenha_snapshot

CLUSTER = {
    "hosts": {
        "ServVirt1": {"role": "vmhost"},
        "ServVirt2": {"role": "vmhost"},
        "ServVirt3": {"role": "vmhost"},
        "ServDB": {"role": "storage"},
    },
    "domus": {"db01": {"memory_mib": 1024}, "web01": {"memory_mib": 512}},
}


def report(domus, free, leases=None):
    return {
        "info": {"total_memory_mib": 8192, "free_memory_mib": free},
        "domains": {"domus": {d: {"state": "running", "memory_mib": 512} for d in domus}},
        "leases": leases or {},
    }


def snapshot():
    reports = {
        "ServVirt2": report(
            ["db01", "web01", "test01"], 2048, {"ServVirt1": {"state": "dead", "host_id": 1}}
        ),
        "ServVirt3": report([], 8000, {"ServVirt1": {"error": "sanlock did not answer"}}),
        "ServDB": {},
    }
    snap = xenha_snapshot.build(
        CLUSTER, reports, {"ServVirt3": {}}, {"ServVirt1": {"state": "fenced"}}
    )
    snap["reports"] = reports
    for host in snap["hosts"]:
        snap["hosts"][host]["answered_s"] = None if host == "ServVirt1" else 0.2
    return snap


def audit(host, step, **details):
    return f"2026-11-26T08:40:02Z {host} {step} {json.dumps(details)}"


AUDIT = [
    audit("ServVirt1", "received", failover="a1"),
    audit("ServVirt1", "blocked", failover="a1", reason="IPMI"),
    audit("ServVirt1", "done", failover="a1", not_restarted={}),
    audit("ServVirt2", "received", failover="b2"),
    audit("ServVirt2", "done", failover="b2", not_restarted={"big01": "no room"}),
    audit("ServVirt3", "received", failover="c3"),
    audit("ServVirt3", "ignored", failover="c3", reason="its lease advances"),
    audit("ServVirt2", "ignored", reporter="x", reason="claim refused: not a VM host"),
    audit("ServVirt1", "received", failover="d4"),
    audit("ServVirt1", "blocked", failover="d4", reason="IPMI"),
    "a torn line",
]
JOURNALS = {
    "ServVirt1": {
        "state": "done",
        "started": 1000.0,
        "seconds": 4.06,
        "history": [
            {"state": "received", "time": 1000.0},
            {"state": "verified", "time": 1000.5},
            {"state": "corroborated", "time": 1001.6},
            {"state": "fenced", "time": 1002.0},
            {"state": "restarting", "time": 1002.3},
            {"state": "done", "time": 1004.06},
            {"state": "restarting", "time": 1100.0},  # replanned later: the first one counts
        ],
    }
}
HEARTBEAT = {
    "ServVirt2": {
        "peers": {
            "ServVirt1": {"state": "lost", "age": 31.5},
            "ServVirt3": {"state": "alive", "age": 0.4},
        }
    }
}


def sample(text, name, **labels):
    """The value of one sample, found by name and labels."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1).split(",") for k, v in labels.items()):
            return float(match.group(2))
    raise AssertionError(f"no sample {name} {labels} in\n{text}")


N_PLUS_1 = {  # xenha_capacity.n_plus_1's answer: ServVirt2's loss leaves db01 unplaced
    "ServVirt1": {"checked": False, "unplaced": {}},
    "ServVirt2": {"checked": True, "unplaced": {"db01": "no room: needs 1024 MiB"}},
    "ServVirt3": {"checked": True, "unplaced": {}},
}


@pytest.fixture
def text():
    return xm.render(snapshot(), JOURNALS, AUDIT, HEARTBEAT, 1700000000.0, n_plus_1=N_PLUS_1)


def test_host_and_domu_metrics(text):
    assert sample(text, "xenha_host_state", host="ServVirt1", state="fenced") == 1
    assert sample(text, "xenha_host_state", host="ServVirt1", state="up") == 0
    assert sample(text, "xenha_host_state", host="ServVirt3", state="maintenance") == 1
    assert sample(text, "xenha_host_state", host="ServVirt2", state="up") == 1
    assert sample(text, "xenha_host_answered", host="ServVirt1") == 0
    assert sample(text, "xenha_host_domus", host="ServVirt2") == 3
    assert sample(text, "xenha_host_domus", host="ServVirt1") == 0
    assert sample(text, "xenha_host_memory_free_bytes", host="ServVirt2") == 2048 * 2**20
    assert sample(text, "xenha_domu_running", domu="test01", managed="false") == 1
    lease = {"host": "ServVirt1", "observer": "ServVirt2"}
    assert sample(text, "xenha_lease_state", state="dead", **lease) == 1
    assert sample(text, "xenha_lease_state", state="live", **lease) == 0
    unread = {"host": "ServVirt1", "observer": "ServVirt3"}
    assert sample(text, "xenha_lease_state", state="unknown", **unread) == 1
    assert sample(text, "xenha_heartbeat_age_seconds", host="ServVirt2", peer="ServVirt1") == 31.5
    assert sample(text, "xenha_heartbeat_peer_alive", host="ServVirt2", peer="ServVirt3") == 1


def test_failover_metrics(text):
    assert sample(text, "xenha_failover_state", host="ServVirt1", state="done") == 1
    assert sample(text, "xenha_failover_last_duration_seconds", host="ServVirt1") == 4.06
    assert sample(text, "xenha_failover_last_phase_seconds", host="ServVirt1", phase="fence") == 0.4
    restart = sample(text, "xenha_failover_last_phase_seconds", host="ServVirt1", phase="restart")
    assert restart == 1.76
    assert xm.outcomes(AUDIT) == {
        "restarted": 1,
        "partial": 1,
        "blocked": 1,
        "ignored": 1,
        "in_progress": 0,
        "refused": 1,
    }
    assert sample(text, "xenha_failovers", outcome="partial") == 1


def test_n_plus_1_metrics(text):
    assert sample_plain(text, "xenha_n_plus_1") == 0
    assert sample(text, "xenha_n_plus_1_unplaced_domus", host="ServVirt2") == 1
    assert sample(text, "xenha_n_plus_1_unplaced_domus", host="ServVirt3") == 0
    assert 'xenha_n_plus_1_unplaced_domus{host="ServVirt1"}' not in text  # down: not checked
    fine = {**N_PLUS_1, "ServVirt2": {"checked": True, "unplaced": {}}}
    assert sample_plain(xm.render(snapshot(), {}, [], n_plus_1=fine), "xenha_n_plus_1") == 1
    # none checked, or not computed: no N+1 sample at all (absent, never a false "ok")
    for result in (None, {"ServVirt1": {"checked": False, "unplaced": {}}}):
        assert "xenha_n_plus_1" not in xm.render(snapshot(), {}, [], n_plus_1=result)


def sample_plain(text, name):
    """The value of a sample without labels."""
    values = [line.split()[1] for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(values) == 1, f"no sample {name} in\n{text}"
    return float(values[0])


def test_label_values_are_escaped():
    snap = {"hosts": {}, "domus": {'we"ird\\1': {"host": None, "managed": False}}}
    text = xm.render(snap, {}, [])
    assert 'domu="we\\"ird\\\\1"' in text


@pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool (Debian: prometheus)")
def test_promtool_accepts_the_metrics(text):
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_write_replaces_the_file_and_refuses_bad_paths(tmp_path, text):
    target = tmp_path / "xenha.prom"
    xm.write(target, text)
    xm.write(target, text)
    assert target.read_text() == text
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["xenha.prom"]
    with pytest.raises(ValueError, match=r"path '.*xenha.txt': the textfile collector reads"):
        xm.write(tmp_path / "xenha.txt", text)
    with pytest.raises(ValueError, match="does not exist"):
        xm.write(tmp_path / "missing" / "xenha.prom", text)


@pytest.mark.parametrize(
    ("cluster", "asked"), [({"sanlock": {"io_timeout": 1}}, True), ({}, False)]
)
def test_the_runner_asks_for_lease_views_where_sanlock_runs(monkeypatch, cluster, asked):
    """xenha.metrics asks each VM host for its sanlock view of its peers (the lease gauge)
    exactly when the cluster has sanlock."""
    from _runners import xenha as runner  # noqa: PLC0415 - the runner's Salt imports, here only

    seen = {}

    def snapshot(cluster, **kwargs):
        seen.update(kwargs)
        raise runner.CommandExecutionError("stop here")

    monkeypatch.setattr(runner, "_cluster", lambda: dict(CLUSTER, **cluster))
    monkeypatch.setattr(runner, "_snapshot", snapshot)
    monkeypatch.setattr(runner, "_answer_for", lambda answer: answer)
    assert runner.metrics() == {
        "error": "xenha.metrics: stop here",
        "retcode": runner.SHORT_OF_ASKED,
    }
    assert seen["leases"] is asked
