"""
xenha's alerts: a failover event a person must hear about (``blocked``, ``fenced``, ``done``
with domUs left down) goes out by email and/or to a webhook, as the master option
``xenha_alerts`` says (``_utils/xenha_alerting.py``: settings, wording, delivery).

The reactor (``reactor/failover_alert.sls``) hands each such event to :func:`failover_event`;
the runner runs in a reactor worker thread, beside the failover, which never waits for it. Any
minion can put an event on the master bus, so an event is alerted only when it names the
failover this master's journal holds for that host. See docs/operations.md.
"""

import logging

import xenha_alerting
import xenha_failover
import xenha_names
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "xenha_alert"

BAD_SETTING, NOT_SENT = 2, 1  # exit codes (as the xenha runner's)


def __virtual__():
    return __virtualname__


def _answer(data):
    return {"outputter": "xenha", "data": data}


def _settings():
    """The checked master option, or an error answer naming the bad key."""
    try:
        return xenha_alerting.settings(__opts__.get(xenha_alerting.KEY)), None
    except xenha_alerting.SettingError as err:
        log.error("xenha alerts: %s", err)
        return None, _answer({"error": str(err), "retcode": BAD_SETTING})


def _sent(result, what):
    failed = {channel: r for channel, r in result.items() if r != "sent"}
    for channel, outcome in failed.items():
        log.error("xenha alert (%s) by %s %s", what, channel, outcome)
    summary = "; ".join(f"{channel} {outcome}" for channel, outcome in result.items())
    data = {"sent": result, "summary": f"{what}: {summary}"}
    return {**data, "retcode": NOT_SENT} if failed else data


def _recorded(host, failover_id):
    """Why the event is not one this master recorded, or None if it is."""
    try:
        xenha_names.check("host", host)
    except CommandExecutionError as err:
        return str(err)
    journal = xenha_failover.load(__opts__["cachedir"], host)
    if not failover_id or journal.get("id") != failover_id:
        return f"failover {failover_id!r} of {host} is not in this master's journal"
    return None


def failover_event(tag, data):
    """
    Alert a person about failover event ``tag`` (``xenha/failover/<host>/<what>``) with its
    ``data``, if ``xenha_alerts:events`` names it (``done`` only with domUs not restarted,
    ``blocked`` on attempts 1, 2, 4 ...) and the event names the failover the journal holds.
    Returns what was sent where; a bad setting or a failed delivery is logged on the master.

    CLI Example:

    .. code-block:: bash

        salt-run xenha_alert.failover_event xenha/failover/ServVirt1/fenced \\
            '{"host": "ServVirt1", "failover": "3f2a9c0d1e4b", "method": "ipmi"}'
    """
    conf, error = _settings()
    if error:
        return error
    if conf is None:
        return _answer({"sent": {}, "summary": f"no alert: {xenha_alerting.KEY} is not set"})
    parsed = xenha_alerting.parse_tag(tag)
    if parsed is None or not isinstance(data, dict):
        why = f"not a failover event: {tag!r}"
        return _answer({"error": why, "retcode": BAD_SETTING})
    host, what = parsed
    send, why = xenha_alerting.wanted(what, data, conf["events"])
    why = why or _recorded(host, data.get("failover"))
    if not send or why:
        if send:  # forged or stale: worth a line in the log
            log.warning("xenha alert for %s refused: %s", tag, why)
        return _answer({"sent": {}, "summary": f"no alert for {tag}: {why}"})
    alert = xenha_alerting.message(host, what, data)
    payload = xenha_alerting.payload(host, what, data, alert)
    return _answer(_sent(xenha_alerting.deliver(conf, alert, payload), f"{host} {what}"))


def test(text="This is a test alert from xenha."):
    """
    Check the ``xenha_alerts`` settings and send ``text`` through every configured channel
    (email, webhook): what an operator runs after changing them. Exit code 2 for a bad
    setting (the error names the key), 1 if a channel failed.

    CLI Example:

    .. code-block:: bash

        salt-run xenha_alert.test
    """
    conf, error = _settings()
    if error:
        return error
    if conf is None:
        return _answer({"error": f"{xenha_alerting.KEY} is not set", "retcode": BAD_SETTING})
    alert = {"subject": "[xenha] test alert", "text": f"{text}\n"}
    payload = {"text": f"{alert['subject']}\n{alert['text']}", "event": "test"}
    return _answer(_sent(xenha_alerting.deliver(conf, alert, payload), "test"))
