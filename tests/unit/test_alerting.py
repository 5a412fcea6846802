"""Alert settings, wording and delivery (_utils/xenha_alerting.py) against real local receivers."""

import pytest
import xenha_alerting as al

from tests.support.receivers import (
    closed_port,
    http_receiver,
    silent_server,
    smtp_receiver,
    wait_for,
)

EMAIL = {"host": "127.0.0.1", "port": 25, "from": "xenha@example.org", "to": ["ops@example.org"]}
WEBHOOK = {"url": "https://hooks.example.org/services/T0/B0/token"}
BLOCKED = {
    "host": "ServVirt1",
    "failover": "3f2a9c0d1e4b",
    "reason": "not fenced, nothing restarted: IPMI: Unable to establish IPMI v2 session",
    "attempt": 1,
    "retry_in": 5.0,
}


def conf(**overrides):
    return al.settings({"email": dict(EMAIL), "webhook": dict(WEBHOOK), **overrides})


def test_settings_defaults_and_none():
    assert al.settings(None) is None
    got = conf()
    assert got["events"] == ["blocked", "fenced", "done", "guest", "degraded"]
    assert got["timeout"] == 10.0
    assert got["email"]["port"] == 25 and got["email"]["to"] == ["ops@example.org"]
    ssl = al.settings({"email": {k: v for k, v in EMAIL.items() if k != "port"} | {"ssl": True}})
    assert ssl["email"]["port"] == 465 and ssl["webhook"] is None


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("not a mapping", "xenha_alerts: must be a mapping"),
        ({"email": dict(EMAIL), "colour": "red"}, "xenha_alerts:colour: unknown key"),
        ({}, "xenha_alerts:email: set email or webhook"),
        ({"email": {**EMAIL, "port": "smtp"}}, "xenha_alerts:email:port: must be a whole number"),
        ({"email": {**EMAIL, "port": 70000}}, "xenha_alerts:email:port"),
        ({"email": {**EMAIL, "host": ""}}, "xenha_alerts:email:host: must be a non-empty"),
        ({"email": {**EMAIL, "to": []}}, "xenha_alerts:email:to: must be an address"),
        ({"email": {**EMAIL, "to": ["ops"]}}, "xenha_alerts:email:to: 'ops' is not an email"),
        ({"email": {**EMAIL, "from": "a@b\nBcc: x@y"}}, "xenha_alerts:email:from"),
        ({"email": {**EMAIL, "password": "pw"}}, "xenha_alerts:email:password: needs"),
        ({"email": {**EMAIL, "ssl": True, "starttls": True}}, "xenha_alerts:email:starttls"),
        ({"email": {**EMAIL, "ssl": "yes"}}, "xenha_alerts:email:ssl: must be true or false"),
        ({"email": {**EMAIL, "smtp": 1}}, "xenha_alerts:email:smtp: unknown key"),
        ({"webhook": {"url": "file:///etc/passwd"}}, "xenha_alerts:webhook:url: must be an http"),
        (
            {"webhook": {"url": "https://h/x", "headers": {"A b": "c"}}},
            "xenha_alerts:webhook:headers",
        ),
        ({"webhook": {**WEBHOOK, "headers": {"X-T": 5}}}, "xenha_alerts:webhook:headers:X-T"),
        ({"webhook": WEBHOOK, "events": ["started"]}, "xenha_alerts:events: must be"),
        ({"webhook": WEBHOOK, "timeout": 0}, "xenha_alerts:timeout: must be a number"),
        ({"webhook": WEBHOOK, "timeout": True}, "xenha_alerts:timeout"),
    ],
)
def test_bad_settings_name_the_key(setting, key):
    with pytest.raises(al.SettingError) as err:
        al.settings(setting)
    assert str(err.value).startswith(key), err.value
    assert "\n" not in str(err.value)


def test_which_events_alert():
    events = list(al.EVENTS)
    assert al.wanted("fenced", {"method": "ipmi"}, events) == (True, "")
    assert al.wanted("done", {"not_restarted": {"big01": "no room"}}, events) == (True, "")
    assert al.wanted("done", {"not_restarted": {}}, events) == (False, "every domU was restarted")
    sent = [n for n in range(1, 40) if al.wanted("blocked", {"attempt": n}, events)[0]]
    assert sent == [1, 2, 4, 8, 16, 32]
    assert al.wanted("blocked", {"reason": "fenced, but no survivor answered"}, events)[0]
    assert not al.wanted("fenced", {}, ["blocked"])[0]
    assert al.parse_tag("xenha/failover/ServVirt1/done") == ("ServVirt1", "done")
    assert al.parse_tag("xenha/failover/done") is None
    assert al.parse_tag(None) is None


def test_messages_say_what_happened():
    blocked = al.message("ServVirt1", "blocked", BLOCKED)
    assert blocked["subject"] == "[xenha] failover of ServVirt1 is blocked: nothing restarted"
    assert "Unable to establish IPMI v2 session" in blocked["text"]
    assert "salt-run xenha.ack_fence ServVirt1" in blocked["text"]
    done = al.message(
        "ServVirt1",
        "done",
        {
            "failover": "f1",
            "seconds": 4.2,
            "not_restarted": {"big01": "no room: needs 2048 MiB"},
            "domus": {"db01": {"state": "started", "host": "ServVirt2"}},
        },
    )
    assert "1 domU(s) NOT restarted" in done["subject"]
    assert "big01: no room: needs 2048 MiB" in done["text"]
    assert "db01: ServVirt2" in done["text"]
    fenced = al.message("ServVirt1", "fenced", {"failover": "f1", "method": "ipmi", "seconds": 0.3})
    assert (
        fenced["subject"] == "[xenha] ServVirt1 was fenced (ipmi)"
        and "seconds: 0.3" in fenced["text"]
    )


def test_delivery_reaches_real_smtp_and_http_receivers():
    with smtp_receiver() as (port, mails), http_receiver() as (url, posts):
        settings = conf(
            email={**EMAIL, "port": port},
            webhook={"url": url, "headers": {"Authorization": "Bearer t0k"}},
        )
        alert = al.message("ServVirt1", "blocked", BLOCKED)
        payload = al.payload("ServVirt1", "blocked", BLOCKED, alert)
        assert al.deliver(settings, alert, payload) == {"email": "sent", "webhook": "sent"}
        mail = wait_for(mails)[0]
        post = wait_for(posts)[0]
    assert mail["rcpt"] == ["ops@example.org"]
    assert mail["message"]["Subject"] == alert["subject"]
    assert "Unable to establish IPMI v2 session" in mail["message"].get_content()
    assert post["headers"]["Authorization"] == "Bearer t0k"
    assert post["json"]["event"] == "blocked" and post["json"]["failover"] == "3f2a9c0d1e4b"
    assert post["json"]["data"]["reason"] == BLOCKED["reason"]
    assert post["json"]["text"].startswith(alert["subject"])


def test_failed_deliveries_are_reported_not_raised():
    port = closed_port()
    with http_receiver(status=500) as (url, posts):
        settings = conf(email={**EMAIL, "port": port}, webhook={"url": url})
        got = al.deliver(settings, {"subject": "s", "text": "t"}, {"text": "t"})
        assert len(posts) == 1
    assert got["email"].startswith(f"failed: 127.0.0.1:{port}: ConnectionRefusedError")
    assert got["webhook"].startswith("failed: http://127.0.0.1:")
    assert "HTTP 500" in got["webhook"]
    assert "SECRET-TOKEN" not in got["webhook"]  # the URL's path may carry a token


def test_a_silent_smtp_server_costs_the_timeout_only():
    with silent_server() as port:
        settings = conf(email={**EMAIL, "port": port}, webhook=None, timeout=0.5)
        got = al.deliver(settings, {"subject": "s", "text": "t"}, {})
    assert list(got) == ["email"]
    assert got["email"].startswith(f"failed: 127.0.0.1:{port}:") and "timed out" in got["email"]
