"""
Alerts and metrics through a real salt-master running the shipped reactor: a failover event on
the master bus goes to the xenha_alert runner, which mails a real SMTP server (aiosmtpd) and
posts to a local HTTP server; xenha.metrics writes a textfile promtool accepts. The master has
no minions: the alert runner needs only its journal and options, and the metrics show the
failover test's cluster (pillar failover.sls) with both hosts silent.
"""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import xenha_store

from tests.support.receivers import http_receiver, smtp_receiver, wait_for
from tests.support.saltconf import REPO, snippet

HOST, FAILOVER = "ServVirt1", "3f2a9c0d1e4b"
REASON = "not fenced, nothing restarted: IPMI: Error: Unable to establish IPMI v2 / RMCP+ session"


@pytest.fixture(scope="module")
def receivers():
    with smtp_receiver() as (port, mails), http_receiver() as (url, posts):
        yield {"port": port, "mails": mails, "url": url, "posts": posts}


@pytest.fixture(scope="module")
def master(salt_factories, receivers):
    overrides = snippet("master")  # the shipped reactor mapping included
    overrides.pop("schedule", None)  # failover_resume has no minions to look at here
    overrides["pillar_roots"] = {"base": [str(REPO / "tests" / "functional" / "pillar")]}
    overrides["xenha_pillar_minion"] = "xha-fo-a"  # the cluster of pillar/failover.sls
    overrides["xenha_alerts"] = {
        "timeout": 5,
        "email": {
            "host": "127.0.0.1",
            "port": receivers["port"],
            "from": "xenha@example.org",
            "to": ["ops@example.org", "oncall@example.org"],
        },
        "webhook": {"url": receivers["url"], "headers": {"Authorization": "Bearer t0k"}},
    }
    daemon = salt_factories.salt_master_daemon("xenha-alert-master", overrides=overrides)
    with daemon.started():
        xenha_store.save(
            daemon.config["cachedir"],
            f"failover-{HOST}",
            {"host": HOST, "id": FAILOVER, "state": "blocked", "reason": REASON},
        )
        yield daemon


@pytest.fixture
def fresh(receivers):
    receivers["mails"].clear()
    receivers["posts"].clear()
    return receivers


def fire(master, what, **data):
    """Put a failover event on the master bus; return the time it was fired."""
    fired = time.time()
    payload = json.dumps({"host": HOST, "failover": FAILOVER, **data})
    tag = f"xenha/failover/{HOST}/{what}"
    ret = master.salt_run_cli().run("event.send", tag, f"data={payload}")
    assert ret.returncode == 0, ret
    return fired


def runner_return(event_listener, master, after, tag, failover=FAILOVER):
    """The alert runner's answer about ``tag`` and ``failover``, from its job's return event."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for event in event_listener.get_events([(master.id, "salt/run/*/ret")], after_time=after):
            args = (event.data.get("fun_args") or [{}])[0]
            if not isinstance(args, dict) or args.get("tag") != tag:
                continue
            if (args.get("data") or {}).get("failover") != failover:
                continue
            if event.data.get("fun") == "runner.xenha_alert.failover_event":
                answer = event.data["return"]  # {"outputter": "xenha", "data": ...}
                return answer.get("data", answer)
        time.sleep(0.2)
    raise AssertionError("the reactor never ran the alert runner")


def test_blocked_fence_reaches_mail_and_webhook(master, fresh, event_listener):
    after = fire(master, "blocked", reason=REASON, attempt=1, retry_in=5.0)
    mail = wait_for(fresh["mails"])[0]
    post = wait_for(fresh["posts"])[0]
    tag = f"xenha/failover/{HOST}/blocked"
    # the listener may hand the bus event over after the deliveries came: wait for it too
    found = event_listener.wait_for_events([(master.id, tag)], after_time=after, timeout=30)
    bus = next(iter(found.matches))
    for name, got in (("mail", mail), ("webhook", post)):
        print(f"{name} received {got['time'] - bus.stamp.timestamp():.2f} s after the event")
    assert sorted(mail["rcpt"]) == ["oncall@example.org", "ops@example.org"]
    assert mail["message"]["Subject"] == f"[xenha] failover of {HOST} is blocked: nothing restarted"
    body = mail["message"].get_content()
    assert REASON in body and FAILOVER in body and f"xenha.ack_fence {HOST}" in body
    assert post["headers"]["Authorization"] == "Bearer t0k"
    assert post["json"]["event"] == "blocked" and post["json"]["host"] == HOST
    assert post["json"]["data"]["reason"] == REASON


def test_done_alerts_only_when_domus_were_left_down(master, fresh, event_listener):
    after = fire(master, "done", seconds=4.1, not_restarted={}, domus={})
    done = f"xenha/failover/{HOST}/done"
    assert runner_return(event_listener, master, after, done)["summary"].endswith(
        "every domU was restarted"
    )
    assert fresh["mails"] == [] and fresh["posts"] == []
    fire(master, "done", seconds=4.1, not_restarted={"big01": "no room: needs 2048 MiB"})
    mail = wait_for(fresh["mails"])[0]
    assert "big01: no room: needs 2048 MiB" in mail["message"].get_content()
    assert wait_for(fresh["posts"])[0]["json"]["data"]["not_restarted"] == {
        "big01": "no room: needs 2048 MiB"
    }


def test_an_event_the_journal_does_not_hold_is_not_alerted(master, fresh, event_listener):
    after = fire(master, "fenced", failover="forged000000", method="manual")
    tag = f"xenha/failover/{HOST}/fenced"
    summary = runner_return(event_listener, master, after, tag, "forged000000")["summary"]
    assert "'forged000000' of ServVirt1 is not in this master's journal" in summary
    assert fresh["mails"] == [] and fresh["posts"] == []


def test_operator_test_alert_and_a_bad_setting(master, fresh):
    ret = master.salt_run_cli().run("xenha_alert.test", "--out=json")
    assert ret.returncode == 0, ret
    assert ret.data["sent"] == {"email": "sent", "webhook": "sent"}
    assert wait_for(fresh["mails"])[0]["message"]["Subject"] == "[xenha] test alert"
    assert wait_for(fresh["posts"])[0]["json"]["event"] == "test"
    # salt-run reads the master's config files itself: a bad value dropped into master.d
    extra = Path(master.config_dir) / "master.d" / "zz-bad-alerts.conf"
    extra.parent.mkdir(exist_ok=True)
    # (an included file replaces the option whole: Salt merges master.d shallowly)
    bad = {"email": {"host": "127.0.0.1", "port": "smtp", "from": "a@b.c", "to": "d@e.f"}}
    extra.write_text(json.dumps({"xenha_alerts": bad}))
    try:
        ret = master.salt_run_cli().run("xenha_alert.test")
    finally:
        extra.unlink()
    assert ret.returncode == 2, ret
    assert "xenha_alerts:email:port: must be a whole number from 1 to 65535, not 'smtp'" in (
        ret.stdout
    ), ret


@pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool (Debian: prometheus)")
def test_metrics_textfile_of_a_cluster_with_a_fenced_host(master, tmp_path):
    store = master.config["cachedir"]
    xenha_store.save(store, "hoststate", {"xha-fo-a": {"state": "fenced", "since": 1.0}})
    history = [{"state": s, "time": 1000.0 + i} for i, s in enumerate(("received", "verified"))]
    journal = {"host": "xha-fo-a", "id": "m1", "state": "blocked", "started": 1000.0}
    xenha_store.save(store, "failover-xha-fo-a", {**journal, "history": history})
    try:
        ret = master.salt_run_cli(timeout=120).run("xenha.metrics", str(tmp_path / "xenha.prom"))
    finally:
        xenha_store.save(store, f"failover-{HOST}", {"host": HOST, "id": FAILOVER})
        xenha_store.delete(store, "failover-xha-fo-a")
        xenha_store.delete(store, "hoststate")
    assert ret.returncode == 0, ret
    text = (tmp_path / "xenha.prom").read_text()
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = text.splitlines()
    assert 'xenha_host_state{host="xha-fo-a",role="vmhost",state="fenced"} 1.0' in lines
    assert 'xenha_host_state{host="xha-fo-b",role="vmhost",state="down"} 1.0' in lines
    assert 'xenha_failover_state{host="xha-fo-a",state="blocked"} 1.0' in lines
    assert 'xenha_failover_last_phase_seconds{host="xha-fo-a",phase="verify"} 1.0' in lines
    assert 'xenha_domu_running{domu="db01",host="",managed="true"} 0.0' in lines
    bad = master.salt_run_cli(timeout=120).run("xenha.metrics", str(tmp_path / "xenha.txt"))
    assert bad.returncode == 2, bad
    assert "the textfile collector reads *.prom files only" in bad.stdout, bad
