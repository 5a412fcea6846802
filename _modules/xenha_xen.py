"""
The Xen toolstack on this host: list domains, read host capacity, start, shut down, destroy,
pause and live-migrate domUs.

One contract, two toolstacks: ``xl`` (current Xen) and ``xm`` (xend era, Xen 3.x up to 4.4).
The choice comes from ``xenha:xen:toolstack`` (minion config or pillar), else from what is on
PATH (``xl`` preferred). Parsing lives in ``_utils/xenha_xenparse.py``; docs/xen.md has the
formats and the migration contract.

Needs: ``xl`` or ``xm`` on PATH, run as root. Migration with ``xl`` needs root ssh between the
hosts (``xenha:xen:ssh``); with ``xm`` the target's xend relocation server
(``xenha:xen:relocation``).
"""

import contextlib
import re
import shlex
import time

import salt.utils.path
import xenha_guestwatch
import xenha_names
import xenha_xenparse
from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_xen"

TOOLSTACKS = ("xl", "xm")
COMMAND_TIMEOUT = 60  # a toolstack that hangs (xend wedged, storage gone) must not hang the minion
POLL_INTERVAL = 0.2
# defaults of xenha:xen:ssh (docs/pillar.md); the xen formula installs the key there
SSH_IDENTITY_FILE = "/root/.ssh/xenha_migrate"
SSH_USER = "root"
# xl hands its -s argument to `sh -c "exec <ssh command> <host> xl migrate-receive"`: every
# piece xenha puts into it must be free of shell metacharacters.
_SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9_./-]+")
_SAFE_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def __virtual__():
    if any(salt.utils.path.which(tool) for tool in TOOLSTACKS):
        return __virtualname__
    return (False, "xenha_xen: neither xl nor xm is on PATH (the Xen toolstack is not installed)")


# --- plumbing ---


def _conf():
    conf = __salt__["config.get"]("xenha:xen", {})
    if not isinstance(conf, dict):
        raise CommandExecutionError(f"xenha:xen must be a mapping, got {conf!r}")
    return conf


def _show(argv):
    return shlex.join(argv)


def _exec(argv, timeout=None):
    """Run ``argv`` (no shell, ``COMMAND_TIMEOUT`` by default); returns (result, timed_out)."""
    timeout = COMMAND_TIMEOUT if timeout is None else timeout
    ret = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True, timeout=timeout)
    # cmd.run_all reports a timeout as retcode 1, empty stderr and "... Timed out after N seconds"
    timed_out = bool(
        timeout
        and ret.get("retcode") == 1
        and not ret.get("stderr")
        and "Timed out after" in (ret.get("stdout") or "")
    )
    return ret, timed_out


def _failure(argv, ret, timed_out, timeout):
    if timed_out:
        return f"{_show(argv)} timed out after {timeout} s and was killed"
    detail = (ret.get("stderr") or "").strip() or (ret.get("stdout") or "").strip()
    return f"{_show(argv)} failed (exit {ret.get('retcode')}): {detail or 'no output'}"


def _run(argv, timeout=None):
    timeout = COMMAND_TIMEOUT if timeout is None else timeout
    ret, timed_out = _exec(argv, timeout)
    if timed_out or ret.get("retcode") != 0:
        raise CommandExecutionError(_failure(argv, ret, timed_out, timeout))
    return ret


def _parse(parser, text, argv):
    try:
        return parser(text)
    except xenha_xenparse.XenParseError as err:
        raise CommandExecutionError(f"cannot parse the output of {_show(argv)}: {err}") from err


def _domu_name(name):
    """A valid domU name; Domain-0 and all-digit names (xl reads those as domids) are refused."""
    return xenha_names.check("domu", name)


def _describe(row):
    return f"{row['name']} (domid {row['domid']}, state {row['state']})"


# --- reading ---


def toolstack():
    """
    The toolstack this host uses: ``xl`` or ``xm``. ``xenha:xen:toolstack`` (minion config or
    pillar) decides; unset, the first of ``xl``, ``xm`` found on PATH.

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_xen.toolstack
    """
    choice = _conf().get("toolstack")
    if choice:
        if choice not in TOOLSTACKS:
            raise CommandExecutionError(f"xenha:xen:toolstack is {choice!r}: must be 'xl' or 'xm'")
        if not salt.utils.path.which(choice):
            raise CommandExecutionError(
                f"xenha:xen:toolstack is {choice} but {choice} is not on PATH"
            )
        return choice
    for tool in TOOLSTACKS:
        if salt.utils.path.which(tool):
            return tool
    raise CommandExecutionError("neither xl nor xm is on PATH")


def list_domains(disks=False):
    """
    Every domain on this host: ``{"toolstack", "dom0": row, "domus": {name: row}}``. A row has
    name, domid, memory_mib, vcpus, state (the six letters), flags (running, blocked, paused,
    shutdown, crashed, dying), shutdown_reason, cpu_time (s), and ``transient``: None, or
    ``migratedaway``/``incoming`` (xl) or ``migrating`` (xm) for the copies a migration leaves
    under a temporary name (``base_name`` is the domU's own name). Transient rows are listed, not
    hidden: they are a domU in flight.

    disks
        Also give each domU row ``disks``: the paths backing its disks (``pdev_path`` from
        ``xl list -l``), or None when the toolstack cannot tell (``xm``, or a domain that left
        between the two listings); ``disks_error`` says why ``xl list -l`` could not be used.

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_xen.list_domains
        salt '*' xenha_xen.list_domains disks=True
    """
    tool = toolstack()
    argv = [tool, "list"]
    parser = xenha_xenparse.parse_xl_list if tool == "xl" else xenha_xenparse.parse_xm_list
    result = xenha_xenparse.split_dom0(_parse(parser, _run(argv)["stdout"], argv))
    result["toolstack"] = tool
    if disks:
        _add_disks(tool, result)
    return result


def _add_disks(tool, result):
    """Give each domU row of a :func:`list_domains` result its ``disks`` (None: unknown)."""
    for row in result["domus"].values():
        row["disks"] = None
    result["disks_error"] = None
    if tool != "xl":
        result["disks_error"] = "xm cannot tell a domain's disks (no xl list -l)"
        return
    argv = ["xl", "list", "-l"]
    try:
        details = _parse(xenha_xenparse.parse_xl_list_json, _run(argv)["stdout"], argv)
    except CommandExecutionError as err:
        # the listing above stands; the runner treats unknown disks as unknown, not as shared
        result["disks_error"] = str(err)
        return
    for name, row in result["domus"].items():
        # xl list -l names a domain as libxl holds it: the same name as xl list, suffix included
        if name in details:
            row["disks"] = details[name]["disks"]


def _find(domus, name):
    """The row for ``name``: its own, else a transient copy of it, else None."""
    if name in domus:
        return domus[name]
    copies = [row for row in domus.values() if row["transient"] and row["base_name"] == name]
    return copies[0] if copies else None


def domain(name):
    """
    One domU on this host as a :func:`list_domains` row, or None when it is not here. While the
    domU migrates the row may be its transient copy (``transient`` tells).

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.domain web01
    """
    name = _domu_name(name)
    return _find(list_domains()["domus"], name)


def info():
    """
    Host capacity from ``xl info`` / ``xm info``: ``{"toolstack", "host", "total_memory_mib",
    "free_memory_mib", "nr_cpus", "xen_version", "fields"}`` (fields: every key : value line).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_xen.info
    """
    tool = toolstack()
    argv = [tool, "info"]
    fields = _parse(xenha_xenparse.parse_info, _run(argv)["stdout"], argv)
    result = xenha_xenparse.summarize_info(fields)
    result.update(toolstack=tool, fields=fields)
    return result


def details(name=None):
    """
    The domain configurations libxl holds (``xl list -l``, JSON): ``{name: {"domid", "uuid",
    "type", "max_memkb", "target_memkb", "max_vcpus", "config"}}``; one domain with ``name``.
    xl only (xm prints SXP).

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.details web01
    """
    argv = ["xl", "list", "-l"]
    if name is not None:
        argv.append(_domu_name(name))
    if toolstack() != "xl":
        raise CommandExecutionError("xenha_xen.details needs the xl toolstack (xm has no JSON)")
    return _parse(xenha_xenparse.parse_xl_list_json, _run(argv)["stdout"], argv)


def read_config(config):
    """
    Read a domU config file: ``{"path", "name", "memory_mib", "vcpus"}``. xl's syntax, or an xm
    config of plain data (its Python is never run); an error names the file and the line. The
    path must be absolute and the name a valid domain name.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.read_config /cluster/domus/web01.cfg
    """
    if not isinstance(config, str) or not config.startswith("/") or "\0" in config:
        raise CommandExecutionError(f"invalid domU config path {config!r}: must be absolute")
    try:
        with open(config, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise CommandExecutionError(f"cannot read domU config {config}: {err}") from err
    try:
        cfg = xenha_xenparse.parse_cfg(text, config)
    except xenha_xenparse.XenParseError as err:  # its message starts with the path (and line)
        raise CommandExecutionError(f"bad domU config {err}") from err
    _domu_name(cfg["name"])
    cfg["path"] = config
    return cfg


# --- acting ---


def start(config, paused=False, timeout=COMMAND_TIMEOUT):
    """
    Start a domU from its config file (``xl create`` / ``xm create``; ``paused=True`` leaves it
    paused) and return its row once it is listed. Refuses when a domain of that name, or a
    migration copy of it, is already on this host.

    This is the only way xenha starts a domU (the ``xenha_domu.running`` state, the evacuation
    and ``xenha_sanlock.start_domu`` call it). On a cluster member of a lease-managed cluster
    (pillar ``xenha:sanlock`` set, this minion in ``xenha:hosts``) it first takes the domU's
    sanlock lease (``xenha_sanlock.acquire``): a domU whose lease a live host holds is refused,
    never started twice. A lease taken here is released again when the start fails.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.start /cluster/domus/web01.cfg
    """
    cfg = read_config(config)
    name = cfg["name"]
    tool = toolstack()
    existing = domain(name)
    if existing is not None:
        raise CommandExecutionError(
            f"domU {name} is already on this host as {_describe(existing)}: not starting it again"
        )
    taken = _take_lease(name)
    try:
        argv = [tool, "create", *(["-p"] if paused else []), config]
        ret = _run(argv, timeout)
        row = domain(name)
        if row is None:
            raise CommandExecutionError(
                f"{_show(argv)} exited 0 but {name} is not listed afterwards: "
                f"{ret.get('stderr', '')}"
            )
    except CommandExecutionError:
        if taken:
            _drop_lease(name)
        raise
    return row


def _take_lease(name):
    """Take domU ``name``'s sanlock lease when this host is lease-managed; True when this call
    took it (False: not lease-managed, or already held here)."""
    xenha = __pillar__.get("xenha") or {}
    if not xenha.get("sanlock") or __opts__.get("id") not in (xenha.get("hosts") or {}):
        return False
    if "xenha_sanlock.acquire" not in __salt__:
        raise CommandExecutionError(
            f"domU {name} not started: xenha:sanlock is set but the xenha_sanlock module is not "
            "loaded here (is sanlock installed?)"
        )
    return __salt__["xenha_sanlock.acquire"](name)["changed"]


def _drop_lease(name):
    # the start failed; a lease that cannot be released now is let go by its keeper anyway once
    # the domU has not appeared within its start grace
    with contextlib.suppress(CommandExecutionError):
        __salt__["xenha_sanlock.release"](name)


def _running_row(name):
    row = domain(name)
    if row is None:
        raise CommandExecutionError(f"domU {name} is not on this host")
    if row["transient"]:
        raise CommandExecutionError(
            f"domU {name} is mid-migration here as {_describe(row)}: leaving it alone"
        )
    return row


def destroy(name, timeout=COMMAND_TIMEOUT):
    """
    Stop a domU at once (``xl destroy`` / ``xm destroy``: pulls the plug, no guest shutdown) and
    confirm it is gone. Returns ``{"name", "result": True, "domid"}``.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.destroy web01
    """
    name = _domu_name(name)
    tool = toolstack()
    argv = [tool, "destroy", name]
    xenha_guestwatch.note_stop(name)  # on purpose: guest monitoring must not restart it
    _run(argv, timeout)
    deadline = time.monotonic() + timeout
    while True:
        row = list_domains()["domus"].get(name)
        if row is None:
            return {"name": name, "result": True}
        if time.monotonic() >= deadline:
            raise CommandExecutionError(
                f"{_show(argv)} exited 0 but {_describe(row)} is still listed after {timeout} s"
            )
        time.sleep(POLL_INTERVAL)


def shutdown(name, timeout=60, force=False):
    """
    Shut a domU down cleanly (``xl shutdown`` / ``xm shutdown``) and wait up to ``timeout``
    seconds for it to go. If it does not, or the toolstack refuses, ``force=True`` destroys it
    instead; without force that is an error saying the domU still runs here. Returns
    ``{"name", "result": True, "method": "shutdown"|"destroy", "seconds", "reason"}``.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.shutdown web01 timeout=120 force=True
    """
    name = _domu_name(name)
    tool = toolstack()
    row = _running_row(name)
    started = time.monotonic()
    argv = [tool, "shutdown", name]
    xenha_guestwatch.note_stop(name)
    ret, timed_out = _exec(argv, timeout)
    if timed_out or ret.get("retcode") != 0:
        reason = _failure(argv, ret, timed_out, timeout)
    else:
        while time.monotonic() - started < timeout:
            if name not in list_domains()["domus"]:
                return {
                    "name": name,
                    "result": True,
                    "method": "shutdown",
                    "seconds": round(time.monotonic() - started, 1),
                    "reason": None,
                }
            time.sleep(POLL_INTERVAL)
        reason = f"domU {name} did not shut down within {timeout} s"
    if not force:
        raise CommandExecutionError(
            f"{reason}; {_describe(row)} is still running on this host (force=True destroys it)"
        )
    destroy(name)
    return {
        "name": name,
        "result": True,
        "method": "destroy",
        "seconds": round(time.monotonic() - started, 1),
        "reason": reason,
    }


def _set_paused(name, paused):
    name = _domu_name(name)
    tool = toolstack()
    _running_row(name)
    argv = [tool, "pause" if paused else "unpause", name]
    ret = _run(argv)
    row = domain(name)
    # xl ignores libxl's return code for pause/unpause (exit 0 either way): check the state.
    if row is None or ("paused" in row["flags"]) != paused:
        now = _describe(row) if row else "gone"
        raise CommandExecutionError(f"{_show(argv)} did not take effect ({now}): {ret['stderr']}")
    return row


def pause(name):
    """
    Pause a domU (it keeps its memory, gets no CPU); returns its row.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.pause web01
    """
    return _set_paused(name, True)


def unpause(name):
    """
    Let a paused domU run again; returns its row.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.unpause web01
    """
    return _set_paused(name, False)


# --- migration ---


def _port(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise CommandExecutionError(f"{what} must be a TCP port number, got {value!r}")
    return value


def ssh_command(conf=None):
    """
    The transport command ``xl migrate -s`` gets, from ``xenha:xen:ssh`` (port, user,
    identity_file, connect_timeout). xl runs it through ``sh -c``, so every part is checked
    against a strict pattern first.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.ssh_command
    """
    ssh = (_conf() if conf is None else conf).get("ssh") or {}
    if not isinstance(ssh, dict):
        raise CommandExecutionError(f"xenha:xen:ssh must be a mapping, got {ssh!r}")
    port = _port(ssh.get("port", 22), "xenha:xen:ssh:port")
    wait = ssh.get("connect_timeout", 10)
    if isinstance(wait, bool) or not isinstance(wait, int) or wait <= 0:
        raise CommandExecutionError(f"xenha:xen:ssh:connect_timeout must be seconds, got {wait!r}")
    parts = ["ssh", "-p", str(port), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={wait}"]
    identity = ssh.get("identity_file", SSH_IDENTITY_FILE)
    if not isinstance(identity, str) or not _SAFE_PATH_RE.fullmatch(identity):
        raise CommandExecutionError(
            f"xenha:xen:ssh:identity_file {identity!r} must be an absolute path of "
            "letters, digits and _ . / -"
        )
    parts += ["-i", identity]
    user = ssh.get("user", SSH_USER)
    if not isinstance(user, str) or not _SAFE_USER_RE.fullmatch(user):
        raise CommandExecutionError(f"xenha:xen:ssh:user {user!r} is not a valid user name")
    parts += ["-l", user]
    return " ".join(parts)


def _migrate_argv(tool, name, target, live):
    conf = _conf()
    if tool == "xl":
        # One argv element: xl itself builds `exec <this> <target> xl migrate-receive`.
        return ["xl", "migrate", "-s", ssh_command(conf), name, target]
    relocation = conf.get("relocation") or {}
    if not isinstance(relocation, dict):
        raise CommandExecutionError(f"xenha:xen:relocation must be a mapping, got {relocation!r}")
    ssl = bool(relocation.get("ssl", False))
    key = "ssl_port" if ssl else "port"
    port = _port(relocation.get(key, 8003 if ssl else 8002), f"xenha:xen:relocation:{key}")
    # xm's -s means SSL to the relocation server (not ssh); without -l xm migrates non-live.
    return [
        "xm",
        "migrate",
        *(["-l"] if live else []),
        "-p",
        str(port),
        *(["-s"] if ssl else []),
        name,
        target,
    ]


def _whereabouts(name, domus, target):
    """Where ``name`` is after a migration attempt, said from the source's side; None if gone."""
    row = _find(domus, name)
    if row is None:
        return None
    if row["transient"] == "migratedaway":
        return (
            f"{name} is left on the source as {_describe(row)}: xl's final handshake failed, so "
            f"{name} may also exist on {target} as {name} or {name}--incoming. Check both hosts "
            "and resume at most one copy"
        )
    if row["transient"]:
        return f"{name} is still on the source under a temporary name as {_describe(row)}"
    return f"{name} is still running on the source as {_describe(row)}"


# what xl (find_domain) and xm (xend) say of a domain name they do not know: they stop there
_UNKNOWN_DOMAIN = {
    "xl": "{name} is an invalid domain identifier",
    "xm": "Domain '{name}' does not exist",
}


def _refused(name, tool, ret, timed_out, domus):
    """
    Why the toolstack would not even start migrating ``name`` (it does not know that name
    here), from its message and the listing after; None when it tried.
    """
    said = (ret.get("stderr") or "") + (ret.get("stdout") or "")
    if timed_out or _UNKNOWN_DOMAIN[tool].format(name=name) not in said:
        return None
    row = _find(domus or {}, name)
    if row is not None and row["transient"]:
        return f"domU {name} is mid-migration here as {_describe(row)}: leaving it alone"
    return f"domU {name} is not on this host"


def migrate(name, target, live=True, timeout=300):
    """
    Live-migrate a domU from this host to ``target`` and confirm it left. xl: ``xl migrate -s
    "<ssh command>" NAME TARGET`` (:func:`ssh_command`; xl migrations are always live). xm:
    ``xm migrate -l -p PORT [-s] NAME TARGET`` through the target's xend relocation server
    (``xenha:xen:relocation``: port, ssl, ssl_port; ``live=False`` drops ``-l``).

    Returns only when the toolstack reported success and this host no longer lists the domU,
    not even as ``NAME--migratedaway``: ``{"result": True, "name", "source", "target",
    "toolstack", "source_state": "gone", "confirmed_on_target": False, "seconds", "stderr",
    "command", "timeline"}`` (``timeline``: epoch seconds of the call's start, the toolstack's
    end and the listing's end). The toolstack itself refuses a domU that is not here or only
    here as a migration's transient copy; the error then says so. This module runs on the
    source and cannot see the target: the caller (the xenha runner) confirms the arrival on
    the target (``xenha_preflight.arrived``). On failure it raises with the toolstack's stderr
    verbatim and where the domU now is on this host.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_xen.migrate web01 ServVirt2
    """
    name = _domu_name(name)
    target = xenha_names.check("host", target)
    if target in (__opts__.get("id"), __grains__.get("host"), __grains__.get("fqdn")):
        raise CommandExecutionError(f"cannot migrate {name} to {target}: that is this host")
    tool = toolstack()
    argv = _migrate_argv(tool, name, target, live)
    # no listing first: the toolstack looks the domain up by name before anything else and
    # refuses one that is not here (a migration's transient copy has another name); the one
    # listing afterwards tells what happened, so a move costs one listing, not two
    entered = time.time()
    started = time.monotonic()
    xenha_guestwatch.note_stop(name)  # gone from here when it works: moved, not failed
    ret, timed_out = _exec(argv, timeout)
    seconds = round(time.monotonic() - started, 2)
    toolstack_done = time.time()
    try:
        domus = list_domains()["domus"]
    except CommandExecutionError as err:
        domus, where = None, f"where {name} is now is unknown: listing this host failed ({err})"
    else:
        where = _whereabouts(name, domus, target)
    if not timed_out and ret.get("retcode") == 0 and where is None:
        return {
            "result": True,
            "name": name,
            "source": __opts__.get("id"),
            "target": target,
            "toolstack": tool,
            "source_state": "gone",
            "confirmed_on_target": False,
            "seconds": seconds,
            "stderr": ret.get("stderr", ""),
            "command": argv,
            # epoch seconds on this host: the job's start, the toolstack's end, the listing's
            # end (the runner's per-move timeline, docs/runner.md "where the time goes")
            "timeline": {"entry": entered, "toolstack_done": toolstack_done, "listed": time.time()},
        }
    refused = _refused(name, tool, ret, timed_out, domus)
    if refused:
        raise CommandExecutionError(f"{refused}: {_failure(argv, ret, timed_out, timeout)}")
    if not timed_out and ret.get("retcode") == 0:
        problem = f"{_show(argv)} reported success, but {where}: {ret.get('stderr', '')}"
    else:
        problem = (
            _failure(argv, ret, timed_out, timeout)
            + "\n"
            + (
                where
                or f"{name} is no longer on the source: it may be running on {target} (check there)"
            )
        )
    raise CommandExecutionError(problem)
