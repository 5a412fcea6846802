"""
The cluster as Prometheus metrics, in the text exposition format that node_exporter's textfile
collector reads (``salt-run xenha.metrics /var/lib/prometheus/node-exporter/xenha.prom``).

:func:`render` is pure: the runner's snapshot (hosts, domUs, the leases each host saw), the
heartbeat status each host reported, the failover journals, the audit trail and the N+1 answer
in, text out.
:func:`write` replaces the file atomically, so the collector never reads half of it.
"""

import json
import os
import tempfile
from pathlib import Path

HOST_STATES = ("up", "suspect", "fenced", "degraded", "down", "maintenance")
FAILOVER_STATES = ("received", "verified", "corroborated", "fenced", "restarting", "done")
FAILOVER_STATES += ("blocked", "ignored", "recovered")
# a failover's phases: from the first time the journal reached one state to the next
PHASES = (
    ("verify", "received", "verified"),
    ("corroborate", "verified", "corroborated"),
    ("fence", "corroborated", "fenced"),
    ("plan", "fenced", "restarting"),
    ("restart", "restarting", "done"),
)
OUTCOMES = ("restarted", "partial", "blocked", "ignored", "in_progress", "refused")


def _label(value):
    text = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'"{text}"'


class _Family:
    """One metric family: HELP, TYPE and its samples."""

    def __init__(self, name, kind, help_text):
        self.name, self.kind, self.help = name, kind, help_text
        self.samples = []

    def add(self, value, **labels):
        if value is None:
            return
        self.samples.append((labels, float(value)))

    def text(self):
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            inner = ",".join(f"{k}={_label(v)}" for k, v in labels.items())
            lines.append(f"{self.name}{{{inner}}} {value!r}" if inner else f"{self.name} {value!r}")
        return "\n".join(lines)


def _hosts(snapshot, families):
    state = families("xenha_host_state", "1 for the state xenha.status shows for the host")
    answered = families("xenha_host_answered", "1 if the host answered the report in time")
    free = families("xenha_host_memory_free_bytes", "Xen free memory of the VM host")
    total = families("xenha_host_memory_total_bytes", "Xen total memory of the VM host")
    domus = families("xenha_host_domus", "domUs running on the host")
    counts = {name: 0 for name in snapshot["hosts"]}
    for spec in snapshot["domus"].values():
        for host in spec.get("running_on") or ([spec["host"]] if spec.get("host") else []):
            counts[host] = counts.get(host, 0) + 1
    for name, spec in sorted(snapshot["hosts"].items()):
        for each in HOST_STATES:
            state.add(spec["state"] == each, host=name, role=spec["role"], state=each)
        answered.add(spec.get("answered_s") is not None, host=name)
        if spec["role"] == "vmhost":
            mib = 1024 * 1024
            if spec.get("free_memory_mib") is not None:
                free.add(spec["free_memory_mib"] * mib, host=name)
            if spec.get("total_memory_mib") is not None:
                total.add(spec["total_memory_mib"] * mib, host=name)
            domus.add(counts.get(name, 0), host=name)


def _domus(snapshot, families):
    running = families("xenha_domu_running", "1 if the domU runs (on host), 0 if nowhere")
    for name, spec in sorted(snapshot["domus"].items()):
        hosts = spec.get("running_on") or ([spec["host"]] if spec.get("host") else [])
        for host in hosts:
            running.add(1, domu=name, host=host, managed=str(spec["managed"]).lower())
        if not hosts:
            running.add(0, domu=name, host="", managed=str(spec["managed"]).lower())


LEASE_STATES = ("live", "fail", "dead", "free", "unknown")  # sanlock's view of a delta lease


def _leases(snapshot, families):
    state = families(
        "xenha_lease_state", "1 for the state the observer's sanlock gives the host's delta lease"
    )
    for observer, report in sorted((snapshot.get("reports") or {}).items()):
        for host, view in sorted(((report or {}).get("leases") or {}).items()):
            seen = (view or {}).get("state")
            if (view or {}).get("error") or seen not in LEASE_STATES:
                seen = "unknown"
            for name in LEASE_STATES:
                state.add(int(name == seen), host=host, observer=observer, state=name)


def _heartbeats(heartbeat, families):
    age = families("xenha_heartbeat_age_seconds", "seconds since the host last heard the peer")
    alive = families("xenha_heartbeat_peer_alive", "1 if the host's heartbeat hears the peer")
    for host, status in sorted((heartbeat or {}).items()):
        for peer, info in sorted(((status or {}).get("peers") or {}).items()):
            alive.add(info.get("state") == "alive", host=host, peer=peer)
            if isinstance(info.get("age"), (int, float)):
                age.add(info["age"], host=host, peer=peer)


def _n_plus_1(result, families):
    """``result``: xenha_capacity.n_plus_1's answer (None: not computed, nothing exported)."""
    checked = {h: r for h, r in sorted((result or {}).items()) if r["checked"]}
    if not checked:
        return
    whole = families("xenha_n_plus_1", "1 if the loss of any one VM host leaves no domU unplaced")
    whole.add(not any(r["unplaced"] for r in checked.values()))
    per_host = families(
        "xenha_n_plus_1_unplaced_domus", "domUs the loss of the host would leave unplaced"
    )
    for host, entry in checked.items():
        per_host.add(len(entry["unplaced"]), host=host)


def _first_times(history):
    first = {}
    for step in history or ():
        first.setdefault(step.get("state"), step.get("time"))
    return first


def _journals(journals, families):
    state = families("xenha_failover_state", "1 for the state of the host's latest failover")
    started = families(
        "xenha_failover_last_start_timestamp_seconds", "when the host's latest failover began"
    )
    took = families(
        "xenha_failover_last_duration_seconds", "claim to done of the host's latest failover"
    )
    phase = families(
        "xenha_failover_last_phase_seconds", "seconds each phase of the latest failover took"
    )
    for host, journal in sorted(journals.items()):
        for each in FAILOVER_STATES:
            state.add(journal.get("state") == each, host=host, state=each)
        started.add(journal.get("started"), host=host)
        took.add(journal.get("seconds"), host=host)
        first = _first_times(journal.get("history"))
        for name, begin, end in PHASES:
            if first.get(begin) is not None and first.get(end) is not None:
                phase.add(round(max(0.0, first[end] - first[begin]), 3), host=host, phase=name)


def outcomes(audit_lines):
    """
    ``{outcome: failovers}`` from audit lines (``<time> <host> <step> <json>``): each failover
    id counts once, by its latest step: ``restarted`` (done, every domU back), ``partial``
    (done, some left down), ``blocked``, ``ignored``, ``in_progress``; claims refused before a
    failover began (no id) count as ``refused``.
    """
    latest, refused = {}, 0
    for line in audit_lines:
        parts = line.split(" ", 3)
        if len(parts) < 4:
            continue
        step = parts[2]
        try:
            details = json.loads(parts[3])
        except ValueError:
            continue
        failover = details.get("failover") if isinstance(details, dict) else None
        if not failover:
            refused += step == "ignored"
            continue
        if step == "done":
            latest[failover] = "partial" if details.get("not_restarted") else "restarted"
        elif step in ("blocked", "ignored"):
            latest[failover] = step
        elif step in ("received", "verified", "corroborated", "fenced", "restarting"):
            latest[failover] = "in_progress"
    counts = {outcome: 0 for outcome in OUTCOMES}
    for outcome in latest.values():
        counts[outcome] += 1
    counts["refused"] = refused
    return counts


def render(snapshot, journals, audit_lines, heartbeat=None, now=None, *, n_plus_1=None):
    """The exposition text (ends with a newline); ``n_plus_1``: xenha_capacity.n_plus_1's."""
    families = {}

    def family(name, help_text, kind="gauge"):
        return families.setdefault(name, _Family(name, kind, help_text))

    _hosts(snapshot, family)
    _domus(snapshot, family)
    _leases(snapshot, family)
    _heartbeats(heartbeat, family)
    _n_plus_1(n_plus_1, family)
    _journals(journals, family)
    by_outcome = family("xenha_failovers", "failovers in the audit trail, by latest outcome")
    for outcome, count in outcomes(audit_lines).items():
        by_outcome.add(count, outcome=outcome)
    if now is not None:
        family("xenha_metrics_timestamp_seconds", "when these metrics were taken").add(now)
    return "\n".join(f.text() for f in families.values() if f.samples) + "\n"


def check_path(path):
    """``path`` as a Path if it can take the metrics (``*.prom`` in an existing directory)."""
    path = Path(path)
    if path.suffix != ".prom":
        raise ValueError(f"path {str(path)!r}: the textfile collector reads *.prom files only")
    if not path.parent.is_dir():
        raise ValueError(f"path {str(path)!r}: directory {str(path.parent)!r} does not exist")
    return path


def write(path, text):
    """Replace ``path`` (see :func:`check_path`) atomically, mode 0644."""
    path = check_path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
