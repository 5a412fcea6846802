"""
Turning what the minions said into one cluster snapshot: the input of the placement planner
(``xenha_placement``) and of the runner's status table. Pure: pillar, minion answers and the
master's own marks in, plain data out.

Inputs:

- ``cluster``: the ``xenha`` pillar (hosts, domus; see docs/pillar.md).
- ``reports``: ``{minion id: answer of xenha_preflight.report, or None when it did not answer}``.
- ``maintenance``: the store's maintenance document, ``{host: {...}}``.
- ``hoststate``: the store's hoststate document (failover), ``{host: {"state": ...}}``.

Host state, most serious first: ``fenced`` (failover fenced it), ``degraded`` (its toolstack
failed: no target), ``down`` (no answer, or no working toolstack on a VM host), ``suspect``
(failover suspects it), ``maintenance``, ``up``.
Only ``up`` hosts are placement targets.
"""

import time

import xenha_pillarcheck

MIGRATING_SUFFIXES = ("--migratedaway", "--incoming")  # names xl uses during a live migration


def split_name(name):
    """("web01", "--incoming") for "web01--incoming"; ("web01", "") for "web01"."""
    for suffix in MIGRATING_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _host_state(name, spec, report, maintenance, hoststate):
    marked = (hoststate.get(name) or {}).get("state")
    if marked in ("fenced", "degraded"):
        return marked
    if report is None:
        return "down"
    if spec.get("role") == "vmhost" and not report.get("info"):
        return "down"
    if marked == "suspect":
        return "suspect"
    if name in maintenance:
        return "maintenance"
    return "up"


def _reserve(name, spec):
    """A VM host's reserve with the pillar check's default; a storage host takes no domUs."""
    if spec.get("role", "vmhost") != "vmhost":
        return None
    where = f"xenha:hosts:{name}:memory_reserve_mib"
    return xenha_pillarcheck.memory_reserve(spec.get("memory_reserve_mib"), where)


def _host(name, spec, report, maintenance, hoststate):
    info = (report or {}).get("info") or {}
    if report is None:
        errors = ["no answer"]
    elif spec.get("role", "vmhost") == "vmhost":
        errors = [report.get("info_error"), report.get("domains_error")]
    else:  # a storage host has no toolstack to report on
        errors = []
    return {
        "role": spec.get("role", "vmhost"),
        "hostname": spec.get("hostname", name),
        "state": _host_state(name, spec, report, maintenance, hoststate),
        "maintenance": name in maintenance,
        "total_memory_mib": info.get("total_memory_mib"),
        "free_memory_mib": info.get("free_memory_mib"),
        "memory_reserve_mib": _reserve(name, spec),
        "xen_version": info.get("xen_version"),
        "checks": (report or {}).get("checks") or {},
        "transport": (report or {}).get("transport") or {},
        "error": "; ".join(e for e in errors if e) or None,
    }


def _domu(name, spec):
    return {
        "host": None,
        "running_on": [],
        "state": "stopped",
        "migrating": False,
        "memory_mib": spec.get("memory_mib"),
        "priority": spec.get("priority", 0),
        "preferred_host": spec.get("preferred_host"),
        "anti_affinity": list(spec.get("anti_affinity") or []),
        "config": spec.get("config"),
        "managed": True,
    }


def build(cluster, reports, maintenance=None, hoststate=None, last_seen=None):
    """
    Build the snapshot ``{"hosts": {...}, "domus": {...}, "problems": [...]}`` (see the module
    docstring). A domU running on two hosts at once is listed under both in ``running_on``,
    left with ``host`` None so nothing plans to move it, and reported in ``problems``; one
    caught mid-migration is ``migrating``, its ``host`` the side that is authoritative now.
    ``last_seen`` (``{host: {"time", "domus"}}``, see :func:`seen`): a domU the pillar does not
    manage that was last seen on a host that does not answer now is a problem too (it may be
    lost with that host, and nothing else knows it existed).
    """
    maintenance = maintenance or {}
    hoststate = hoststate or {}
    host_specs = cluster.get("hosts") or {}
    hosts = {
        name: _host(name, spec, reports.get(name), maintenance, hoststate)
        for name, spec in host_specs.items()
    }
    domus = {name: _domu(name, spec) for name, spec in (cluster.get("domus") or {}).items()}

    seen = {}  # domU -> [(host, suffix or "")]
    for host in sorted(hosts):
        listed = ((reports.get(host) or {}).get("domains") or {}).get("domus") or {}
        for raw, facts in sorted(listed.items()):
            name, suffix = split_name(raw)
            seen.setdefault(name, []).append((host, suffix))
            entry = domus.setdefault(name, {**_domu(name, {}), "managed": False})
            if suffix == "" or entry["state"] == "stopped":
                entry["state"] = facts.get("state", "running")
            if facts.get("memory_mib") is not None:
                entry["memory_mib"] = facts["memory_mib"]
            if facts.get("disks") is not None:
                entry["disks"] = facts["disks"]

    problems = [_locate(name, domus[name], where) for name, where in sorted(seen.items())]
    problems = [p for p in problems if p]
    for name, entry in sorted(domus.items()):
        if entry["memory_mib"] is None:
            entry["memory_mib"] = 0
            problems.append(f"domU {name}: memory unknown (set xenha:domus:{name}:memory_mib)")
    for name, host in sorted(hosts.items()):
        problems += _host_problems(name, host)
    silent = sorted(h for h, host in hosts.items() if host["error"] == "no answer")
    for name, entry in sorted(domus.items()):
        if entry["managed"] and not entry["running_on"]:
            unknown = f" (no answer from {', '.join(silent)})" if silent else ""
            problems.append(f"domU {name} is not running anywhere{unknown}")
    for host in silent:
        last = (last_seen or {}).get(host) or {}
        for name in sorted(set(last.get("domus") or ()) - set(domus)):
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last.get("time") or 0))
            problems.append(
                f"domU {name} (not in the pillar) was last seen on {host} at {when}; "
                f"{host} does not answer"
            )
    return {"hosts": hosts, "domus": domus, "problems": problems}


def seen(reports, now):
    """``{host: {"time": now, "domus": [names]}}`` for each host whose toolstack answered."""
    found = {}
    for host, report in reports.items():
        listed = ((report or {}).get("domains") or {}).get("domus")
        if listed is not None:
            found[host] = {"time": now, "domus": sorted({split_name(n)[0] for n in listed})}
    return found


# the plumbing checks that matter per role (a storage host has no iSCSI session or OCFS2 mount)
ROLE_CHECKS = {"vmhost": ("clock", "iscsi", "ocfs2"), "storage": ("clock",)}


def _host_problems(name, host):
    """Every reason a host is not a healthy member: its state, then each failed check."""
    problems = []
    if host["state"] == "down" and host["role"] == "vmhost":
        problems.append(f"host {name} is down: {host['error'] or 'no working toolstack'}")
    elif host["state"] == "degraded":
        problems.append(f"host {name} is degraded (its toolstack fails: no domU goes there)")
    elif host["state"] in ("fenced", "suspect"):
        problems.append(f"host {name} is {host['state']} (failover)")
    elif host["state"] == "down":
        problems.append(f"host {name} does not answer")
    for check in ROLE_CHECKS.get(host["role"], ()):
        result = host["checks"].get(check)
        if result and not result.get("ok"):
            problems.append(f"host {name}: {check}: {result.get('detail', 'failed')}")
    return problems


def _locate(name, entry, where):
    """Set where a domU runs from where it was seen; returns a problem sentence or None."""
    entry["running_on"] = [h for h, _ in where]
    plain = [h for h, suffix in where if not suffix]
    away = [h for h, suffix in where if suffix == "--migratedaway"]
    entry["migrating"] = len(plain) < len(where)
    if entry["migrating"]:
        entry["state"] = "migrating"
    if len(plain) > 1:
        entry["state"] = "DUPLICATE"
        return f"domU {name} runs on {' and '.join(plain)} at once"
    if plain or away:
        # mid-migration the source (--migratedaway) is authoritative until the target renames
        # its copy (--incoming) back to the plain name
        entry["host"] = (plain or away)[0]
    return None


def vmhosts(snapshot):
    """The VM hosts (placement candidates whatever their state), sorted."""
    return sorted(h for h, spec in snapshot["hosts"].items() if spec["role"] == "vmhost")


def on_host(snapshot, host):
    """The domUs that run (only) on ``host`` now, sorted."""
    return sorted(d for d, spec in snapshot["domus"].items() if spec["host"] == host)
