"""
Failover reports: one timeline per failover, rebuilt from what the failover engine
(``xenha_failover``) leaves on the master: the audit trail (every failover, one line per step,
``<UTC time> <host> <step> <json details>``, whole seconds) and the journals (the last failover
of each host, its state changes with sub-second times and the claim's event).

Each step carries its evidence as one line and its time in seconds since the claim (the
reporter's event stamp when the journal has it, else the failover's first step); the heartbeat's
last sighting is a step before the claim (negative seconds). Steps the journal also recorded get
its exact time; the others (domU starts, retries) keep the audit trail's whole seconds.

Pure functions (lines and journals in, report dicts or text out), but :func:`load` (reads the
store) and :func:`plot` (writes a PNG with matplotlib, when it is installed).
"""

import calendar
import datetime
import json
import re
import time

import xenha_failover

_LINE_RE = re.compile(
    r"(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z"
    r" (?P<host>\S+) (?P<step>\S+) (?P<json>\{.*\})$"
)
_PHASES = ("received", "verified", "corroborated", "fenced", "restarting", "done")
_CLOSED = ("done", "ignored", "recovered")  # a failover's audit entries end with these
_STATES = (*_PHASES, "blocked", "ignored")


def parse_audit(lines):
    """Audit lines -> entries ``{"time", "host", "step", **details}``; unreadable lines skipped."""
    entries = []
    for line in lines:
        match = _LINE_RE.match(line.strip())
        if not match:
            continue
        try:
            details = json.loads(match["json"])
        except ValueError:
            continue
        whole, _, frac = match["stamp"].partition(".")
        stamp = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        entry = {**details, "host": match["host"], "step": match["step"]}
        entry["time"] = stamp + (float(f"0.{frac}") if frac else 0)
        entry["exact"] = bool(frac)
        entries.append(entry)
    return entries


def group(entries):
    """
    {failover id: [entries]} in audit order. Entries without an id (domU starts and failures,
    acks, joins) belong to the failover of their host still open at that point.
    """
    found, current = {}, {}
    for entry in entries:
        host, fid = entry["host"], entry.get("failover")
        if not fid:
            fid = current.get(host)
        elif entry["step"] in _CLOSED:
            current[host] = None
        elif entry["step"] != "repeat":  # a late copy of a finished failover's claim
            current[host] = fid
        if fid:
            found.setdefault(fid, []).append(entry)
    return found


def _exact_times(steps, journal):
    """Give audit steps the journal's sub-second time of the same state change (same second)."""
    unused = list((journal or {}).get("history") or [])
    for step in steps:
        if step["exact"]:
            continue
        for change in unused:
            if change["state"] == step["step"] and int(change["time"]) == int(step["time"]):
                step["time"], step["exact"] = change["time"], True
                unused.remove(change)
                break


def _verdict(verdict):
    if not isinstance(verdict, dict):
        return f"no answer ({verdict})"
    text = str(verdict.get("state"))
    if verdict.get("unchanged_for") is not None:
        text += f", unchanged for {verdict['unchanged_for']} s"
    return text


def _fence(fence):
    method = (fence or {}).get("method")
    if method == "ipmi":
        took = fence.get("seconds")
        lease = f"; {fence['lease']}" if fence.get("lease") else ""
        return "powered off through its BMC" + (f" in {took} s" if took is not None else "") + lease
    if method == "lease":
        return str(fence.get("lease"))
    if method == "manual":
        return f"fence acknowledged by {(fence.get('ack') or {}).get('by', 'an operator')}"
    return f"fenced ({method})"


def _plan(domus, order):
    parts = []
    for name in order or sorted(domus or {}):
        entry = (domus or {}).get(name) or {}
        if entry.get("state") == "pending":
            parts.append(f"{name} -> {entry.get('target')}")
        elif entry.get("state") == "running":
            parts.append(f"{name} already runs on {entry.get('host')}")
        else:
            parts.append(f"{name} not placed: {entry.get('reason')}")
    return "; ".join(parts) or "nothing to restart"


def _other(step):
    skip = ("time", "host", "step", "failover", "exact")
    return ", ".join(f"{k}: {v}" for k, v in step.items() if k not in skip and v is not None)


def _received(step):
    who = step.get("reporter")
    return f"loss claimed by {who}" if who else "failover requested by an operator"


def _corroborated(step):
    seen = [
        f"{o.get('observer')}: {_verdict(o.get('verdict'))}" for o in step.get("observations") or []
    ]
    return "master cannot reach it; lease " + ("; ".join(seen) or "not read by any survivor")


def _restarting(step):
    if not step.get("domus"):
        return str(step.get("reason") or "restarting")
    return "plan: " + _plan(step["domus"], step.get("order"))


def _started(step):
    took = f" (start took {step['seconds']} s)" if step.get("seconds") is not None else ""
    note = f"; {step['note']}" if step.get("note") else ""
    return f"{step.get('domu')} running on {step.get('target')}{took}{note}"


_EVIDENCE = {
    "received": _received,
    "verified": lambda s: "claim checked against the cluster's VM hosts",
    "corroborated": _corroborated,
    "fenced": lambda s: _fence(s.get("fence")),
    "restarting": _restarting,
    "domu_started": _started,
    "domu_failed": lambda s: (
        f"{s.get('domu')} failed to start on {s.get('target')}: {s.get('error')}"
    ),
    "done": lambda s: f"finished in {s.get('seconds')} s",
}


def evidence(step):
    """The one-line evidence of an audit step."""
    if step["step"] in _EVIDENCE:
        return _EVIDENCE[step["step"]](step)
    return str(step.get("reason") or _other(step) or step["step"])


def _fired(event, default):
    """When the reporter says it fired ``event`` (its ``_stamp``, UTC if no zone), or
    ``default``. Shown, never acted on: the engine does not trust a reporter's clock."""
    try:
        fired = datetime.datetime.fromisoformat(event["_stamp"])
    except (KeyError, TypeError, ValueError):
        return default
    if fired.tzinfo is None:
        fired = fired.replace(tzinfo=datetime.timezone.utc)
    return fired.timestamp()


def _claim(journal, steps):
    """(claim epoch, seconds the heartbeat had been silent at the claim or None)."""
    first = steps[0]["time"] if steps else None
    event = (journal or {}).get("event") if journal else None
    if not isinstance(event, dict):
        return first, None
    started = journal.get("started", first)
    claim = _fired(event, started)
    if claim > started or (first is not None and claim < first - 3600):
        claim = started  # a reporter's clock ahead of the master's, or a stamp from elsewhere
    age = event.get("age")
    if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
        age = None
    return claim, age


def timeline(fid, steps, journal=None):
    """One failover's report from its audit entries and (if it is the same failover) journal."""
    steps = [dict(s) for s in steps]
    journal = journal if (journal or {}).get("id") == fid else None
    _exact_times(steps, journal)
    claim, age = _claim(journal, steps)
    host = steps[0]["host"] if steps else (journal or {}).get("host")
    rows = []
    if age is not None:
        reporter = (journal.get("reporters") or [None])[0]
        rows.append(
            {
                "t": round(-age, 3),
                "time": claim - age,
                "step": "last_heard",
                "evidence": f"{reporter} last heard {host}'s heartbeat",
                "exact": True,
            }
        )
    latest = None
    for step in steps:  # in audit order, the order they happened in
        if not step["exact"] and latest is not None:
            step["time"] = max(step["time"], latest)  # whole seconds: at most this early
        latest = step["time"]
        rows.append(
            {
                "t": round(step["time"] - claim, 3),
                "time": step["time"],
                "step": step["step"],
                "evidence": evidence(step),
                "exact": step["exact"],
            }
        )
    report = {"id": fid, "host": host, "claim": claim, "steps": rows}
    report.update(_outcome(steps, journal, claim))
    return report


def _outcome(steps, journal, claim):
    """State, fence, total seconds, what was restarted where and what was not, and why."""
    last = {}
    for step in steps:
        last[step["step"]] = step
    # the failover's own state changes: an id-less "ignored" is another, refused claim
    phases = [s["step"] for s in steps if s.get("failover") and s["step"] in _STATES]
    state = phases[-1] if phases else None
    restarted, failed = {}, {}
    for step in steps:
        name = step.get("domu")
        if step["step"] == "domu_started" and name:
            restarted[name] = {
                "host": step.get("target"),
                "t": round(step["time"] - claim, 3),
                "start_seconds": step.get("seconds"),
            }
            failed.pop(name, None)
        elif step["step"] == "domu_failed" and name:
            failed[name] = step.get("error")
    done = last.get("done") or {}
    not_restarted = dict(done.get("not_restarted") or {})
    if not done:  # under way or stopped short: what the plan could not place, what failed
        for name, entry in ((last.get("restarting") or {}).get("domus") or {}).items():
            if entry.get("state") == "unplaced":
                not_restarted[name] = entry.get("reason")
        not_restarted.update({n: e for n, e in failed.items() if n not in restarted})
    fence = (last.get("fenced") or {}).get("fence")
    return {
        "state": state,
        "reason": (last.get(state) or {}).get("reason") if state != "done" else None,
        "fence": fence and {"method": fence.get("method"), "evidence": _fence(fence)},
        "seconds": done.get("seconds"),
        "restarted": restarted,
        "not_restarted": not_restarted,
    }


def reports(lines, journals, target=None):
    """
    The failovers (oldest first) recorded in audit ``lines``, with ``journals`` ({host:
    journal}) for exact times; ``target`` is a failover id or a host name, None for all.
    """
    grouped = group(parse_audit(lines))
    found = []
    for fid, steps in grouped.items():
        host = steps[0]["host"]
        if target is not None and target not in (fid, host):
            continue
        found.append(timeline(fid, steps, journals.get(host)))
    return sorted(found, key=lambda r: r["claim"])


def load(cachedir, target=None):
    """:func:`reports` of the master's store under ``cachedir``."""
    try:
        with open(xenha_failover.audit_path(cachedir), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        lines = []
    return reports(lines, xenha_failover.journals(cachedir), target)


def _utc(epoch):
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S") + f".{int(epoch % 1 * 10):d}Z"


def text(found):
    """The reports as lines for people."""
    lines = []
    for report in found:
        fence = (report.get("fence") or {}).get("method") or "not fenced"
        took = f" in {report['seconds']} s" if report.get("seconds") is not None else ""
        lines.append(
            f"failover {report['id']} of {report['host']}: {report['state']}{took} ({fence});"
            f" claim at {_utc(report['claim'])}"
        )
        width = max([len(s["step"]) for s in report["steps"]] + [4])
        for step in report["steps"]:
            mark = "" if step["exact"] else "~"
            at = f"{mark}{step['t']:+.1f} s"
            lines.append(f"  {at:>10}  {step['step']:<{width}}  {step['evidence']}")
        restarted = [
            f"{n} on {r['host']} at +{r['t']:.1f} s" for n, r in report["restarted"].items()
        ]
        lines.append("  restarted: " + (", ".join(restarted) or "none"))
        if report["not_restarted"]:
            lines.append("  not restarted:")
            lines += [f"    {n}: {why}" for n, why in report["not_restarted"].items()]
        if report.get("reason"):
            lines.append(f"  {report['state']}: {report['reason']}")
        lines.append("")
    if any(not s["exact"] for r in found for s in r["steps"]):
        lines.append("~ whole seconds from the audit trail (the journal keeps exact times)")
    return lines[:-1] if lines and lines[-1] == "" else lines


_COLOURS = {
    "received": "#9ecae1",
    "verified": "#6baed6",
    "corroborated": "#fdae6b",
    "fenced": "#e6550d",
    "restarting": "#74c476",
    "blocked": "#de2d26",
}


def plot(found, path):
    """
    A PNG timeline of the reports at ``path``: one row per failover, its phases as bars from
    the claim (0 s), domU starts and failures as marks. Returns ``path``; raises ImportError
    without matplotlib.
    """
    import matplotlib  # noqa: PLC0415 - optional, only for png=

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(10, 1.2 + 1.0 * len(found)))
    try:
        for row, report in enumerate(found):
            steps = report["steps"]
            phases = [s for s in steps if s["step"] in _COLOURS or s["step"] in _CLOSED]
            for step, nxt in zip(phases, phases[1:], strict=False):
                colour = _COLOURS.get(step["step"])
                if colour and nxt["t"] > step["t"]:
                    ax.barh(row, nxt["t"] - step["t"], left=step["t"], color=colour, height=0.5)
            for step in steps:
                if step["step"] in ("domu_started", "domu_failed"):
                    good = step["step"] == "domu_started"
                    ax.plot(step["t"], row, "o" if good else "x", color="k" if good else "red")
                    ax.annotate(
                        step["evidence"].split()[0],
                        (step["t"], row),
                        xytext=(2, 8),
                        textcoords="offset points",
                        fontsize=7,
                        rotation=30,
                    )
                if step["step"] == "last_heard":
                    ax.plot(step["t"], row, "|", color="grey", markersize=20)
        ax.set_yticks(range(len(found)), [f"{r['host']}\n{r['id']}" for r in found])
        ax.axvline(0, color="grey", linewidth=0.8)
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _COLOURS.values()]
        ax.legend(handles, list(_COLOURS), fontsize=7, loc="lower right", ncol=3)
        ax.set(xlabel="seconds since the claim", title="xenha failovers")
        ax.set_ylim(-0.8, len(found) - 0.2)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
