"""
Plumbing checks on a cluster host, and the one-call host report the xenha runner builds its
cluster snapshot from (status, plan, evacuate).

Each check answers ``{"ok": bool, "detail": "..."}`` and never raises for a broken host: a
problem is data the runner reports. Checks:

- ``clock``: ``chronyc -n tracking`` offset within ``max_offset`` seconds and synchronised.
- ``iscsi``: an open-iscsi session (``iscsiadm -m session``) to the cluster target.
- ``ocfs2``: the OCFS2 volume mounted at the cluster mount point (``/proc/mounts``).
- ``transport``: the live-migration transport to each peer: ``ssh -o BatchMode=yes`` for ``xl``,
  a TCP connection to the xend relocation port for ``xm``.

Needs: chronyc, iscsiadm and ssh on PATH for the checks that use them (a missing binary is
reported as a problem, not an import failure); the ``xenha_xen`` module for the Xen report.
"""

import re
import socket
import time

import salt.utils.data
import salt.utils.path
import xenha_names
import xenha_pillarcheck
from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_preflight"

DEFAULT_MAX_OFFSET = 0.5  # seconds; OCFS2 and lease expiry want clocks close together
SSH_TIMEOUT = 5
# what `xl migrate-receive` prints first (tools/xl/xl_migrate.c, migrate_receiver_banner)
MIGRATE_BANNER = "xl migration receiver ready, send binary domain data."
ARRIVAL_POLL = 0.25  # seconds between looks at the toolstack while waiting for a domU to arrive


def __virtual__():
    return __virtualname__


# --- pure parsers (text in, data out) ---------------------------------------------------------

_SYSTEM_TIME_RE = re.compile(r"^System time\s*:\s*([0-9.]+) seconds (slow|fast) of NTP time", re.M)
_LEAP_RE = re.compile(r"^Leap status\s*:\s*(.+?)\s*$", re.M)
_SESSION_RE = re.compile(r"^\S+: \[\d+\] (\S+?),\d+ (\S+)", re.M)


def parse_tracking(text):
    """``chronyc -n tracking`` output -> {"offset": seconds (+ fast, - slow), "leap": str}."""
    match = _SYSTEM_TIME_RE.search(text)
    leap = _LEAP_RE.search(text)
    if not match or not leap:
        raise ValueError(f"unrecognised chronyc tracking output: {text.strip()[:200]!r}")
    value = float(match.group(1))
    return {"offset": value if match.group(2) == "fast" else -value, "leap": leap.group(1)}


def parse_sessions(text):
    """``iscsiadm -m session`` output -> [{"portal": "ip:port", "target": iqn}]."""
    return [{"portal": p, "target": t} for p, t in _SESSION_RE.findall(text)]


def parse_mounts(text):
    """/proc/mounts text -> {mount point: fstype} (octal escapes such as \\040 decoded)."""
    mounts = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
            mounts[point] = fields[2]
    return mounts


# --- checks -----------------------------------------------------------------------------------


def _pillar(key, default=None):
    # __pillar__ directly: Salt 3008's pillar.get masks values ("**********") in its answer
    return salt.utils.data.traverse_dict_and_list(__pillar__, key, default)


def _result(ok, detail):
    return {"ok": bool(ok), "detail": detail}


def _run(argv, timeout=None, stdin=None):
    """cmd.run_all without raising: (retcode, stdout, stderr); a missing binary is rc 127."""
    try:
        ret = __salt__["cmd.run_all"](
            argv,
            python_shell=False,
            ignore_retcode=True,
            timeout=timeout,
            output_loglevel="quiet",
            stdin=stdin,
        )
    except CommandExecutionError as err:  # e.g. the command is not on PATH
        return 127, "", str(err)
    return ret["retcode"], ret.get("stdout", ""), ret.get("stderr", "")


def _cmd_problem(argv, retcode, stderr):
    return _result(False, f"{' '.join(argv)} failed (rc {retcode}): {stderr.strip()[:200]}")


def clock(max_offset=None):
    """
    Whether this host's clock is synchronised by chrony and within ``max_offset`` seconds
    (default: pillar ``xenha:ntp:max_offset``, else 0.5).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_preflight.clock max_offset=0.2
    """
    if max_offset is None:
        max_offset = _pillar("xenha:ntp:max_offset", DEFAULT_MAX_OFFSET)
    bound = xenha_pillarcheck.seconds(max_offset, "max_offset")  # NaN would accept any offset
    argv = ["chronyc", "-n", "tracking"]
    retcode, out, err = _run(argv)
    if retcode:
        return _cmd_problem(argv, retcode, err or out)
    try:
        tracking = parse_tracking(out)
    except ValueError as exc:
        return _result(False, str(exc))
    offset = tracking["offset"]
    if tracking["leap"] == "Not synchronised":
        return {**_result(False, "chrony is not synchronised"), "offset": offset}
    if abs(offset) > bound:
        return {
            **_result(False, f"clock offset {offset:+.3f} s exceeds {bound} s"),
            "offset": offset,
        }
    return {**_result(True, f"offset {offset:+.6f} s"), "offset": offset}


def iscsi(target_iqn=None):
    """
    Whether this host has an iSCSI session to ``target_iqn`` (default: pillar
    ``xenha:storage:target_iqn``).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_preflight.iscsi
    """
    target = target_iqn or _pillar("xenha:storage:target_iqn")
    if not target:
        return _result(False, "no iSCSI target configured (xenha:storage:target_iqn)")
    argv = ["iscsiadm", "-m", "session"]
    retcode, out, err = _run(argv)
    if retcode == 21:  # ISCSI_ERR_NO_OBJS_FOUND: no sessions at all
        return _result(False, f"no iSCSI session to {target}")
    if retcode:
        return _cmd_problem(argv, retcode, err or out)
    portals = [s["portal"] for s in parse_sessions(out) if s["target"] == target]
    if not portals:
        return _result(False, f"no iSCSI session to {target}")
    return _result(True, f"session to {target} via {', '.join(portals)}")


def ocfs2(mount_point=None):
    """
    Whether the OCFS2 volume is mounted at ``mount_point`` (default: pillar
    ``xenha:ocfs2:mount_point``, else /cluster).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_preflight.ocfs2
    """
    point = mount_point or _pillar("xenha:ocfs2:mount_point", "/cluster")
    try:
        with open("/proc/mounts", encoding="utf-8") as handle:
            mounts = parse_mounts(handle.read())
    except OSError as err:
        return _result(False, f"cannot read /proc/mounts: {err}")
    fstype = mounts.get(point)
    if fstype is None:
        return _result(False, f"{point} is not mounted")
    if fstype != "ocfs2":
        return _result(False, f"{point} is mounted as {fstype}, not ocfs2")
    return _result(True, f"{point} mounted (ocfs2)")


def _ssh(peer):
    """
    The check a live migration's own transport passes: ssh with the migration key and options
    (``xenha_xen.ssh_command``) to ``xl migrate-receive`` on the peer, which the peer's forced
    command allows and which answers with xl's receiver banner; with no domain data on stdin it
    then gives up and starts nothing. A plain ``ssh peer true`` is refused by that forced
    command although migrations work.
    """
    if "xenha_xen.ssh_command" not in __salt__:
        return _result(False, "no migration transport: xenha_xen is not loaded here (no xl)")
    try:
        argv = __salt__["xenha_xen.ssh_command"]().split()
    except CommandExecutionError as err:
        return _result(False, f"no migration transport: {err}")
    argv += [peer, "xl", "migrate-receive"]
    # no domain data on stdin: the receiver stops after its banner
    _, out, err = _run(argv, timeout=SSH_TIMEOUT * 3, stdin="")
    if MIGRATE_BANNER in out:
        return _result(True, f"xl migrate-receive on {peer} answers over ssh")
    return _result(False, f"{' '.join(argv)}: no receiver banner: {(err or out).strip()[:200]}")


def _tcp(peer, port):
    try:
        with socket.create_connection((peer, int(port)), timeout=SSH_TIMEOUT):
            return _result(True, f"{peer}:{port} accepts connections")
    except OSError as err:
        return _result(False, f"cannot connect to {peer}:{port}: {err}")


def transport(peers, toolstack=None):
    """
    Whether live migration from this host can reach each of ``peers`` (host names as the
    toolstack addresses them): ``{peer: {"ok", "detail"}}``. ``xl`` migrates over root ssh
    with the migration key, so the check asks the peer's ``xl migrate-receive`` for its banner
    the same way; ``xm`` migrates over the xend relocation port (pillar ``xenha:xen``).

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_preflight.transport '[ServVirt2]'
    """
    xen = _pillar("xenha:xen", {})
    stack = toolstack or xen.get("toolstack", "xl")
    if isinstance(peers, str):
        peers = [peers]
    results = {}
    for peer in peers:
        xenha_names.check("host", peer)
        if stack == "xm":
            relocation = xen.get("relocation") or {}
            ssl = relocation.get("ssl", False)
            port = relocation.get("ssl_port", 8003) if ssl else relocation.get("port", 8002)
            results[peer] = _tcp(peer, port)
        else:
            results[peer] = _ssh(peer)
    return results


def _xen(function, **kwargs):
    """A xenha_xen call as data: (value, None) or (None, error message)."""
    # xenha_xen loads only where xl or xm is on PATH; asking Salt's loader for a function it
    # cannot load makes it rescan every module directory (about a second per report on a
    # storage host), so look at PATH first, as xenha_xen's __virtual__ does
    if not any(salt.utils.path.which(tool) for tool in ("xl", "xm")) or function not in __salt__:
        return None, f"{function} is not available on this host"
    try:
        return __salt__[function](**kwargs), None
    except CommandExecutionError as err:
        return None, f"{function} failed: {err}"


def _settled_here(row):
    """A domU row that a live migration has finished bringing here: own name, unpaused."""
    # xl renames the incoming copy to its own name, then unpauses it; only a failed unpause
    # makes the target destroy its copy again (and the source resume), so an unpaused row
    # under its own name is a migration the target will not undo
    return bool(row) and not row.get("transient") and "paused" not in (row.get("flags") or [])


def arrived(name, handover_from=None, wait=0):
    """
    After a live migration, on the target: whether domU ``name`` runs here under its own name
    (not as a migration's transient copy), and if so, with ``handover_from`` (the source), end
    the lease hand-over: the shared sanlock lease this host took before the migration becomes
    exclusive once the source let go (``xenha_sanlock.exclusive``). One call, so the runner
    confirms a move and hands the lease over in a single round trip. Answers
    ``{"here": bool, "row": list_domains row or None, "lease": "taken" / "not configured" /
    problem sentence, "arrival": bool, "waited": seconds, "looks": listings made}``.

    wait
        Seconds to keep looking (every 0.25 s) until the domU runs here under its own name and
        unpaused: the runner starts this on the target together with the migration on the
        source, so the confirmation and the lease handover cost no round trip after the
        migration. With ``wait``, ``here`` (and the lease handover) needs the domU unpaused
        and seen arriving: absent or only the incoming copy at some look before. A domU that
        already ran here at the first look is answered at once with ``arrival`` False and its
        lease left alone (it did not come from this migration, or the call started too late
        to tell). A listing that fails while waiting is retried until the time is up.

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_preflight.arrived web01 handover_from=ServVirt1
        salt ServVirt2 xenha_preflight.arrived web01 handover_from=ServVirt1 wait=300
    """
    xenha_names.check("domain", name)
    wait = float(wait)
    started = time.monotonic()
    settled = away = False  # away: seen absent or in flight, so a settled row is an arrival
    looks = 0
    while True:
        looks += 1
        try:
            row = __salt__["xenha_xen.domain"](name)
        except CommandExecutionError:
            if time.monotonic() - started >= wait:
                raise
            row = None  # e.g. the toolstack busy with the incoming migration: look again
        else:
            settled = _settled_here(row)
            away = away or not settled
        if wait <= 0 or settled or time.monotonic() - started >= wait:
            break
        time.sleep(ARRIVAL_POLL)
    arrival = wait > 0 and away and settled
    here = settled if wait > 0 else bool(row) and not row.get("transient")
    lease = "not configured"
    leased = bool(_pillar("xenha:sanlock"))
    if here and handover_from and (wait <= 0 or arrival) and leased:
        try:
            __salt__["xenha_sanlock.exclusive"](name)
            lease = "taken"
        except (CommandExecutionError, KeyError) as err:
            lease = f"lease handover failed: {err}"
    elif here and handover_from and leased:
        lease = "not taken: it ran here before the migration could have brought it"
    waited = round(time.monotonic() - started, 3)
    return {
        "here": here,
        "row": row,
        "lease": lease,
        "arrival": arrival,
        "waited": waited,
        "looks": looks,
    }


def report(peers=None, checks=True, max_offset=None, disks=False, leases=False):
    """
    Everything the master needs to know about this host in one call: the Xen host info and
    domain list (``xenha_xen.info`` / ``xenha_xen.list_domains``, with each domU's ``disks``
    when ``disks=True``), and the plumbing checks (clock, iscsi, ocfs2; ``transport`` to
    ``peers`` when given); with ``leases=True`` this host's sanlock daemon's view of every
    other VM host's delta lease (``xenha_sanlock.hosts``, no waiting: the daemon watches the
    lockspace all the time).
    Problems are reported in the answer, not raised.

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_preflight.report
        salt ServVirt1 xenha_preflight.report peers='[ServVirt2]'
        salt ServVirt1 xenha_preflight.report checks=False disks=True
        salt ServVirt1 xenha_preflight.report leases=True
    """
    answer = {"id": __grains__.get("id") or __opts__.get("id")}
    answer["info"], answer["info_error"] = _xen("xenha_xen.info")
    answer["domains"], answer["domains_error"] = _xen(
        "xenha_xen.list_domains", **({"disks": True} if disks else {})
    )
    if checks:
        answer["checks"] = {"clock": clock(max_offset), "iscsi": iscsi(), "ocfs2": ocfs2()}
    if peers:
        answer["transport"] = transport(peers)
    if leases:
        answer["leases"] = _lease_views(answer["id"])
    return answer


def _lease_views(me):
    """
    {peer VM host: {"state": live|fail|dead|free|unknown, "host_id", "generation"}, or
    {"error": text}} as this host's sanlock daemon sees them now.
    """
    if "xenha_sanlock.hosts" not in __salt__ or not _pillar("xenha:sanlock", None):
        return {}
    try:
        rows = __salt__["xenha_sanlock.hosts"]()
    except CommandExecutionError as err:
        rows = {"error": str(err)}
    hosts = _pillar("xenha:hosts", {}) or {}
    peers = sorted(h for h, spec in hosts.items() if (spec or {}).get("role", "vmhost") == "vmhost")
    by_host = {r.get("host"): {**r, "host_id": i} for i, r in rows.items() if i != "error"}
    views = {}
    for peer in peers:
        if peer == me:
            continue
        if "error" in rows:
            views[peer] = {"error": rows["error"]}
        elif peer in by_host:
            row = by_host[peer]
            views[peer] = {k: row.get(k) for k in ("state", "host_id", "generation")}
        else:
            views[peer] = {"error": f"{peer} has no host_id in sanlock's view"}
    return views
