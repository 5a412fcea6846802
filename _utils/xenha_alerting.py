"""
Alerts for people: which failover events deserve one, what it says, and its delivery by email
(``smtplib``) and to a webhook (an HTTP POST of JSON, ``urllib``).

The settings are master configuration (``xenha_alerts`` in ``/etc/salt/master.d/``), never
pillar data: an SMTP password or a chat webhook's URL (its token is in the path) would be
readable by every minion. :func:`settings` checks them and names the offending key.

Each delivery is bounded by ``timeout`` per network operation and runs beside the other, so a
dead SMTP server costs one reactor worker thread that long and nothing else.
"""

import json
import re
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

KEY = "xenha_alerts"
# failover events that may alert, and guest monitoring's: a domU it gave up on, a host degraded
EVENTS = ("blocked", "fenced", "done", "guest", "degraded")
DEFAULT_TIMEOUT = 10.0
_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")
_HEADER = re.compile(r"[A-Za-z0-9-]{1,64}")


class SettingError(ValueError):
    """A bad ``xenha_alerts`` setting; the message starts with the key."""


def _fail(path, message):
    raise SettingError(f"{KEY}:{path}: {message}" if path else f"{KEY}: {message}")


def _mapping(value, path):
    if not isinstance(value, dict):
        _fail(path, f"must be a mapping, not {value!r}")
    return value


def _known(value, path, allowed):
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        where = f"{path}:{unknown[0]}" if path else unknown[0]
        _fail(where, f"unknown key (known: {', '.join(allowed)})")


def _text(value, path, required=True):
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        _fail(path, f"must be a non-empty one-line string, not {value!r}")
    return value.strip()


def _number(value, path, low, high, whole=False):
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        _fail(path, f"must be {kind} from {low} to {high}, not {value!r}")
    return value


def _flag(value, path):
    if not isinstance(value, bool):
        _fail(path, f"must be true or false, not {value!r}")
    return value


def _addresses(value, path):
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        _fail(path, f"must be an address or a non-empty list of addresses, not {value!r}")
    for item in values:
        if not isinstance(item, str) or not _ADDRESS.fullmatch(item):
            _fail(path, f"{item!r} is not an email address (name@domain)")
    return list(values)


def _email(conf):
    conf = _mapping(conf, "email")
    keys = ("host", "port", "ssl", "starttls", "username", "password", "from", "to")
    _known(conf, "email", keys)
    out = {
        "host": _text(conf.get("host"), "email:host"),
        "ssl": _flag(conf.get("ssl", False), "email:ssl"),
        "starttls": _flag(conf.get("starttls", False), "email:starttls"),
        "username": _text(conf.get("username"), "email:username", required=False),
        "password": conf.get("password"),
        "from": _addresses(conf.get("from"), "email:from")[0],
        "to": _addresses(conf.get("to"), "email:to"),
    }
    if out["ssl"] and out["starttls"]:
        _fail("email:starttls", "cannot be true together with email:ssl (choose one)")
    out["port"] = _number(conf.get("port", 465 if out["ssl"] else 25), "email:port", 1, 65535, True)
    if out["password"] is not None:
        if out["username"] is None:
            _fail("email:password", "needs email:username")
        _text(out["password"], "email:password")
    return out


def _webhook(conf):
    conf = _mapping(conf, "webhook")
    _known(conf, "webhook", ("url", "headers"))
    url = _text(conf.get("url"), "webhook:url")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _fail("webhook:url", "must be an http:// or https:// URL with a host")
    headers = _mapping(conf.get("headers") or {}, "webhook:headers")
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER.fullmatch(name):
            _fail("webhook:headers", f"{name!r} is not an HTTP header name")
        _text(value, f"webhook:headers:{name}")
    return {"url": url, "headers": dict(headers)}


def settings(conf):
    """
    The checked ``xenha_alerts`` master option: ``{"events", "timeout", "email", "webhook"}``
    (a channel not configured is None), or None when alerts are not configured at all. Raises
    :class:`SettingError` naming the key of the first bad value.
    """
    if conf is None:
        return None
    conf = _mapping(conf, "")
    _known(conf, "", ("events", "timeout", "email", "webhook"))
    events = conf.get("events", list(EVENTS))
    if not isinstance(events, list) or not events or not set(events) <= set(EVENTS):
        _fail("events", f"must be a non-empty list of {', '.join(EVENTS)}, not {events!r}")
    out = {
        "events": list(events),
        "timeout": _number(conf.get("timeout", DEFAULT_TIMEOUT), "timeout", 0.1, 300),
        "email": _email(conf["email"]) if conf.get("email") is not None else None,
        "webhook": _webhook(conf["webhook"]) if conf.get("webhook") is not None else None,
    }
    if not out["email"] and not out["webhook"]:
        _fail("email", "set email or webhook (or both): alerts have nowhere to go")
    return out


# --- which events, what they say ----------------------------------------------------------------


def parse_tag(tag):
    """``xenha/failover/<host>/<what>`` -> ``(host, what)``, else None."""
    parts = tag.split("/") if isinstance(tag, str) else []
    if len(parts) != 4 or parts[:2] != ["xenha", "failover"] or not parts[2] or not parts[3]:
        return None
    return parts[2], parts[3]


def wanted(what, data, events):
    """
    ``(True, "")`` if event ``what`` with ``data`` deserves an alert, else ``(False, why not)``.
    ``done`` only when domUs were left down; ``blocked`` on attempts 1, 2, 4, 8 ...: the fence
    is retried with a doubling back-off, and so the alerts thin out with it.
    """
    if what not in events:
        return False, f"{what} is not in {KEY}:events"
    if what == "done" and not data.get("not_restarted"):
        return False, "every domU was restarted"
    attempt = data.get("attempt")
    if what == "blocked" and isinstance(attempt, int) and attempt & (attempt - 1):
        return False, f"blocked attempt {attempt}: alerts go out on attempts 1, 2, 4, 8 ..."
    return True, ""


def _lines(mapping):
    return [f"  {key}: {value}" for key, value in sorted(mapping.items())]


def message(host, what, data):
    """``{"subject", "text"}`` of an alert about failover event ``what`` of ``host``."""
    down = len(data.get("not_restarted") or {})
    headline = {
        "blocked": f"failover of {host} is blocked: nothing restarted",
        "fenced": f"{host} was fenced ({data.get('method', 'unknown method')})",
        "done": f"failover of {host} done: {down} domU(s) NOT restarted",
    }.get(what, f"failover of {host}: {what}")
    lines = [headline, "", f"failover id: {data.get('failover', '-')}"]
    if what == "blocked":
        lines += [f"reason: {data.get('reason', '-')}"]
        if data.get("attempt") is not None:
            lines += [f"attempt: {data['attempt']}, next try in {data.get('retry_in')} s"]
        lines += ["", f"If {host} is really off: salt-run xenha.ack_fence {host}"]
    elif what == "fenced":
        evidence = {k: v for k, v in data.items() if k not in ("host", "failover", "method")}
        lines += ["evidence:"] + _lines({k: json.dumps(v) for k, v in evidence.items()})
    elif what == "done":
        lines += [f"seconds since the claim: {data.get('seconds', '-')}", "not restarted:"]
        lines += _lines(data.get("not_restarted") or {})
        started = {
            name: entry.get("host")
            for name, entry in (data.get("domus") or {}).items()
            if isinstance(entry, dict) and entry.get("state") in ("started", "running")
        }
        if started:
            lines += ["restarted:"] + _lines(started)
    lines += ["", f"salt-run xenha.failover_status {host}"]
    return {"subject": f"[xenha] {headline}", "text": "\n".join(lines) + "\n"}


def payload(host, what, data, alert):
    """The webhook's JSON: ``text`` (what chat webhooks show) and the event itself."""
    text = f"{alert['subject']}\n{alert['text']}"
    failover = data.get("failover")
    return {"text": text, "event": what, "host": host, "failover": failover, "data": data}


# --- delivery ----------------------------------------------------------------------------------


def send_email(conf, subject, text, timeout):
    """Send one mail through ``conf`` (checked email settings); raises OSError/SMTPException."""
    mail = EmailMessage()
    mail["From"] = conf["from"]
    mail["To"] = ", ".join(conf["to"])
    mail["Subject"] = subject
    mail.set_content(text)
    if conf["ssl"]:
        server = smtplib.SMTP_SSL(conf["host"], conf["port"], timeout=timeout)
    else:
        server = smtplib.SMTP(conf["host"], conf["port"], timeout=timeout)
    with server:
        if conf["starttls"]:
            server.starttls(context=ssl.create_default_context())
        if conf["username"] and conf["password"] is not None:
            server.login(conf["username"], conf["password"])
        server.send_message(mail)


def where(url):
    """``scheme://host[:port]`` of a URL: its path and query may hold a token, never shown."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def send_webhook(conf, payload, timeout):
    """POST ``payload`` as JSON to the webhook; raises OSError naming the status on non-2xx."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **conf["headers"]}
    # settings() allows http and https URLs only
    request = urllib.request.Request(conf["url"], data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read(4096)
    except urllib.error.HTTPError as err:
        raise OSError(f"HTTP {err.code} {err.reason}") from None


def deliver(conf, alert, payload):
    """
    Send ``alert`` (:func:`message`) by email and ``payload`` to the webhook, side by side:
    ``{channel: "sent" | "failed: <error>"}`` for each configured channel. Never raises.
    """
    jobs = {}
    if conf["email"]:
        jobs["email"] = (send_email, conf["email"], alert["subject"], alert["text"])
    if conf["webhook"]:
        jobs["webhook"] = (send_webhook, conf["webhook"], payload)

    def run(channel):
        func, *args = jobs[channel]
        try:
            func(*args, conf["timeout"])
        except Exception as err:  # noqa: BLE001 - a delivery's failure is its result
            target = (
                f"{conf['email']['host']}:{conf['email']['port']}"
                if channel == "email"
                else where(conf["webhook"]["url"])
            )
            return f"failed: {target}: {type(err).__name__}: {err}"
        return "sent"

    with ThreadPoolExecutor(len(jobs)) as pool:
        return dict(zip(jobs, pool.map(run, jobs), strict=True))
