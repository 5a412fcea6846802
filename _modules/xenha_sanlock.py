"""
domU leases on sanlock: the lockspace of the VM hosts and one resource lease per domU.

Needs the ``sanlock`` daemon running on this host (Debian package ``sanlock``; ``wdmd`` with a
watchdog device on real hosts) and Debian's python3 with ``python3-sanlock`` for the per-domU
keeper (``_utils/xenha_sanlockkeeper.py``). Settings come from the pillar, checked by
``xenha_sanlockcfg.settings``: ``xenha:sanlock:lease_path`` (the lease LUN, or a file on shared
storage that is not the OCFS2 volume), ``io_timeout``, ``slots``, ``toolstack_path``,
``keeper_python``, and ``xenha:hosts:<host>:host_id`` for every VM host.
docs/design/leases-sanlock.md explains the layout, the keeper and its killpath.
"""

import contextlib
import json
import os
import shlex
import time

import salt.utils.path
import xenha_sanlockcfg as cfgmod
from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_sanlock"

SANLOCK = "sanlock"
COMMAND_TIMEOUT = 60
RELEASE_TIMEOUT = 30
POLL_INTERVAL = 0.2
KEEPER = os.path.join(os.path.dirname(os.path.abspath(cfgmod.__file__)), "xenha_sanlockkeeper.py")
ERR_EXIST = -17  # add_lockspace of a lockspace already joined
ERR_INPROGRESS = -115  # add_lockspace while another caller's add of it is under way
ERR_IDLIVE = -243  # SANLK_ACQUIRE_IDLIVE: the lease is held by a host that is alive
ERR_AGAIN = -11  # convert to exclusive while another host still shares the lease
EXCLUSIVE_WAIT = 60
WATCH_POLL = 0.25


def __virtual__():
    if salt.utils.path.which(SANLOCK):
        return __virtualname__
    return (False, "xenha_sanlock: the sanlock command is not installed (Debian package sanlock)")


# --- plumbing ---------------------------------------------------------------------------------


def _settings():
    # __pillar__ directly: Salt 3008's pillar.get masks values in its answer
    return cfgmod.settings(__pillar__.get("xenha"), __opts__.get("id"))


def _run(argv, timeout=COMMAND_TIMEOUT, ok=(0,)):
    ret = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True, timeout=timeout)
    if ret["retcode"] not in ok:
        said = (ret.get("stderr") or "").strip() or (ret.get("stdout") or "").strip()
        raise CommandExecutionError(f"{shlex.join(argv)}: exit {ret['retcode']}: {said}")
    return ret


def _my_host_id(cfg):
    if cfg["host_id"] is None:
        raise CommandExecutionError(
            f"xenha:hosts:{__opts__.get('id')}:host_id: this host is not a VM host with a host_id"
        )
    return cfg["host_id"]


def _check_area(cfg):
    """Refuse a lease area that is missing or too small for the pillar's slots."""
    path = cfg["lease_path"]
    ret = _run(["stat", "-L", "-c", "%F %s", path], ok=(0, 1))
    if ret["retcode"] != 0:
        raise CommandExecutionError(f"xenha:sanlock:lease_path: {path} does not exist")
    kind, size = ret["stdout"].strip().rsplit(" ", 1)
    if kind == "block special file":
        size = _run(["blockdev", "--getsize64", path])["stdout"].strip()
    cfgmod.settings(__pillar__.get("xenha"), __opts__.get("id"), device_size=int(size))


def _dump(cfg, size=None):
    """The parsed ``sanlock direct dump`` of the lease area's first ``size`` bytes (all of it
    by default); read from storage, no daemon needed."""
    size = cfgmod.area_size(cfg["slots"]) if size is None else size
    argv = [SANLOCK, "direct", "dump", f"{cfg['lease_path']}:0:{size}"]
    # the layout given, so that an area without a lockspace yet reads as empty, not an error
    argv += ["-Z", str(cfgmod.SECTOR), "-A", f"{cfgmod.ALIGN >> 20}M"]
    return cfgmod.parse_dump(_run(argv)["stdout"])


def _used(cfg):
    """{slot: lease name} of the initialised resource areas, read from the lease area."""
    return cfgmod.used_slots(_dump(cfg))


def _lockspace_ready(cfg):
    argv = [SANLOCK, "direct", "read_leader", "-s", cfgmod.lockspace_arg(1, cfg["lease_path"])]
    ret = _run(argv, ok=(0, 1))
    fields = dict(line.split(" ", 1) for line in ret["stdout"].splitlines() if " " in line)
    return ret["retcode"] == 0 and fields.get("space_name") == cfgmod.LOCKSPACE


def _status():
    return cfgmod.parse_status(_run([SANLOCK, "client", "status"])["stdout"])


def _toolstack():
    cfg = _settings()
    if cfg["toolstack_path"]:
        return cfg["toolstack_path"]
    tool = __salt__["config.get"]("xenha:xen:toolstack", "xl") or "xl"
    path = salt.utils.path.which(tool)
    if not path:
        raise CommandExecutionError(f"xenha:xen:toolstack: {tool} is not on PATH")
    return path


def _domu_runs(domu):
    ret = _run([_toolstack(), "list"])
    return domu in [line.split()[0] for line in ret["stdout"].splitlines()[1:] if line.strip()]


def _slot(cfg, domu):
    name = cfgmod.resource_name(domu)
    slot, _ = cfgmod.find_slot(name, _used(cfg), cfg["slots"])
    if slot is None:
        raise CommandExecutionError(
            f"domU {domu}: no lease area in {cfg['lease_path']}: run xenha_sanlock.init"
        )
    return name, slot


def _names(cfg):
    domus = (__pillar__.get("xenha") or {}).get("domus") or {}
    return {cfgmod.resource_name(d): d for d in domus}


# --- functions --------------------------------------------------------------------------------


def init(force=False, test=False):
    """
    Initialise the lease area directly on storage (no daemon needed): the ``xenha`` lockspace
    with the pillar's io_timeout, and a resource lease for every domU of ``xenha:domus`` that
    has none yet. An initialised lockspace and existing resource leases are kept; ``force=True``
    writes them afresh (only when no host has joined: it wipes every host's delta lease).
    ``test=True`` only reads: it returns what it would write (``lockspace``: ``kept`` or
    ``initialised``, ``resources``: {domU: slot}).

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_sanlock.init
        salt ServVirt1 xenha_sanlock.init test=True
        salt ServVirt1 xenha_sanlock.init force=True
    """
    cfg = _settings()
    path = cfg["lease_path"]
    _check_area(cfg)
    ready = _lockspace_ready(cfg)
    if ready and force and any(h["state"] == "live" for h in hosts().values()):
        raise CommandExecutionError(f"init force=True: hosts are live in the lockspace at {path}")
    result = {"lockspace": "kept", "resources": {}}
    if force or not ready:
        argv = [SANLOCK, "direct", "init", "-o", str(cfg["io_timeout"])]
        if not test:
            _run([*argv, "-s", cfgmod.lockspace_arg(0, path)])
        result["lockspace"] = "initialised"
    used = {} if force else _used(cfg)
    names = _names(cfg)
    for name, slot in sorted(cfgmod.plan(names, used, cfg["slots"]).items()):
        if not test:
            _run([SANLOCK, "direct", "init", "-r", cfgmod.resource_arg(name, path, slot)])
        result["resources"][names[name]] = slot
    return result


def join(test=False):
    """
    Join the lockspace with this host's host_id (``sanlock client add_lockspace``). Takes about
    2 x io_timeout on a free host_id, longer when the host_id's last owner may still be alive.
    Returns ``{"host_id", "changed"}``; ``test=True`` only asks the local daemon whether this
    host has joined (``changed``: it would join).

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_sanlock.join
        salt ServVirt1 xenha_sanlock.join test=True
    """
    cfg = _settings()
    hid = _my_host_id(cfg)
    if test:
        return {"host_id": hid, "changed": cfgmod.LOCKSPACE not in _status()["lockspaces"]}
    _check_area(cfg)
    if not _lockspace_ready(cfg):
        raise CommandExecutionError(
            f"xenha:sanlock:lease_path: no xenha lockspace in {cfg['lease_path']}: "
            "run xenha_sanlock.init"
        )
    io = cfg["io_timeout"]
    argv = [SANLOCK, "client", "add_lockspace", "-o", str(io)]
    argv += ["-s", cfgmod.lockspace_arg(hid, cfg["lease_path"])]
    # a host_id whose last owner stopped renewing is only taken after host_dead_seconds
    wait = 8 * io + 60 + 4 * io
    ret = _run(argv, timeout=wait + COMMAND_TIMEOUT, ok=(0, 1, 255))
    said = ret["stdout"] + ret["stderr"]
    if f"done {ERR_INPROGRESS}" in said and _joined_meanwhile(wait):
        # another add_lockspace (the boot unit's, the lab's) was under way, and joined
        return {"host_id": hid, "changed": False}
    if ret["retcode"] != 0 and f"done {ERR_EXIST}" not in said:
        raise CommandExecutionError(f"{shlex.join(argv)}: exit {ret['retcode']}: {said.strip()}")
    return {"host_id": hid, "changed": ret["retcode"] == 0}


def _joined_meanwhile(timeout):
    """Wait while another caller's add_lockspace of the lockspace is under way (sanlock
    answers -115 to a second one): True once this host is in it, False if that add failed."""
    deadline = time.monotonic() + timeout
    while True:
        spaces = cfgmod.parse_gets(_run([SANLOCK, "client", "gets"])["stdout"])
        space = spaces.get(cfgmod.LOCKSPACE)
        if space is None:
            return False
        if "ADD" not in space["flags"].split():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)


def leave(force=False):
    """
    Leave the lockspace (``sanlock client rem_lockspace``). Refused while this host holds domU
    leases: sanlock would fence their keepers, which destroy the domUs; ``force=True`` does it.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_sanlock.leave
    """
    cfg = _settings()
    hid = _my_host_id(cfg)
    status = _status()
    if cfgmod.LOCKSPACE not in status["lockspaces"]:
        return {"host_id": hid, "changed": False}
    mine = held()
    if mine and not force:
        raise CommandExecutionError(
            f"leave: this host holds the leases of {', '.join(sorted(mine))}: release them first"
        )
    argv = [SANLOCK, "client", "rem_lockspace", "-s", cfgmod.lockspace_arg(hid, cfg["lease_path"])]
    _run(argv, timeout=8 * cfg["io_timeout"] + COMMAND_TIMEOUT)
    return {"host_id": hid, "changed": True}


def hosts():
    """
    sanlock's view of every host in the lockspace, as this host's daemon sees it:
    ``{host_id: {"host", "state", "generation", "timestamp"}}``; ``state`` is ``live``, ``fail``
    (renewals stopped longer than 8 x io_timeout ago), ``dead`` (its leases may be taken),
    ``free`` or ``unknown`` (not watched long enough yet); ``timestamp`` is the host's last
    renewal in its own monotonic seconds; ``host`` is the pillar host with that host_id.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_sanlock.hosts
    """
    cfg = _settings()
    spaces = cfgmod.parse_gets(_run([SANLOCK, "client", "gets", "-h", "1"])["stdout"])
    if cfgmod.LOCKSPACE not in spaces:
        raise CommandExecutionError("hosts: this host has not joined lockspace xenha")
    names = {hid: host for host, hid in cfg["host_ids"].items()}
    found = spaces[cfgmod.LOCKSPACE]["hosts"]
    out = {hid: {"host": names.get(hid), **row} for hid, row in found.items()}
    for hid, host in names.items():
        out.setdefault(hid, {"host": host, "state": "free", "generation": 0, "timestamp": 0})
    return dict(sorted(out.items()))


def held():
    """
    The domU leases held on this host: ``{domu: {"pid", "lver", "offset", "mode"}}`` (``pid``
    is the keeper's, ``mode`` "ex" or "sh"), from the local sanlock daemon.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_sanlock.held
    """
    names = _names(_settings())
    out = {}
    for (space, name), res in _status()["resources"].items():
        if space == cfgmod.LOCKSPACE:
            out[names.get(name, name)] = {k: res[k] for k in ("pid", "lver", "offset", "mode")}
    return out


def acquire(domu, poll=1, start_grace=600, shared=False):
    """
    Take domU ``domu``'s lease on this host and keep it: a keeper process holds it until the
    domU (or a migration's copy of it), once seen here, is gone (or never appears within
    ``start_grace`` seconds, or ``release`` is called). Returns ``{"domu", "pid", "slot",
    "mode", "changed"}`` once the lease is held; raises when sanlock refuses it, naming the
    holder's host_id (e.g. -243: held by a live host). Start the domU only after this
    returned. ``shared=True`` takes it in shared mode: the target's side of a live
    migration's hand-over (see :func:`share`, :func:`exclusive`).

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.acquire web01
        salt ServVirt2 xenha_sanlock.acquire web01 shared=True
    """
    cfg = _settings()
    _my_host_id(cfg)
    name, slot = _slot(cfg, domu)
    mode = "sh" if shared else "ex"
    mine = held()
    if domu in mine:
        if mine[domu]["mode"] != mode:
            raise CommandExecutionError(
                f"acquire {domu}: this host already holds its lease {mine[domu]['mode']}, "
                f"not {mode}"
            )
        return {
            "domu": domu,
            "pid": mine[domu]["pid"],
            "slot": slot,
            "mode": mode,
            "changed": False,
        }
    argv = [
        cfg["keeper_python"], KEEPER,
        "--lockspace", cfgmod.LOCKSPACE, "--resource", name,
        "--path", cfg["lease_path"], "--offset", str(cfgmod.slot_offset(slot)),
        "--domu", domu, "--toolstack", _toolstack(),
        "--poll", str(float(poll)), "--start-grace", str(float(start_grace)),
        "--log", f"{cfgmod.STATE_DIR}/{domu}.log", *(["--shared"] if shared else []),
    ]  # fmt: skip
    ret = _run(argv, timeout=COMMAND_TIMEOUT + 4 * cfg["io_timeout"], ok=(0, 2))
    try:
        answer = json.loads(ret["stdout"].strip().splitlines()[-1])
    except (ValueError, IndexError) as err:
        raise CommandExecutionError(
            f"{shlex.join(argv)}: no answer from the keeper: {ret['stderr'].strip()}"
        ) from err
    if "pid" in answer:
        return {"domu": domu, "pid": answer["pid"], "slot": slot, "mode": mode, "changed": True}
    names = {hid: host for host, hid in cfg["host_ids"].items()}
    owners = ", ".join(f"host_id {o} ({names.get(o, '?')})" for o in answer.get("owners", []))
    why = f"held by {owners}" if answer.get("error") == ERR_IDLIVE and owners else owners
    raise CommandExecutionError(
        f"acquire {domu}: sanlock refused the lease: {answer.get('error')} "
        f"{answer.get('message', '')}{'; ' + why if why else ''}"
    )


def release(domu, timeout=RELEASE_TIMEOUT):
    """
    Release domU ``domu``'s lease held on this host (its keeper lets go and exits). Refused
    while the domU runs here: a running domU always holds its lease.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_sanlock.release web01
    """
    cfgmod.resource_name(domu)
    mine = held()
    if domu not in mine:
        return {"domu": domu, "changed": False}
    if _domu_runs(domu):
        raise CommandExecutionError(f"release {domu}: the domU runs on this host")
    _run(["kill", "-USR1", str(mine[domu]["pid"])])
    deadline = time.monotonic() + timeout
    while domu in held():
        if time.monotonic() > deadline:
            raise CommandExecutionError(f"release {domu}: still held after {timeout} s")
        time.sleep(POLL_INTERVAL)
    return {"domu": domu, "changed": True}


def _host_id_of(cfg, host):
    if host not in cfg["host_ids"]:
        raise CommandExecutionError(f"host {host!r} is not a VM host with a host_id in xenha:hosts")
    return cfg["host_ids"][host]


def _min_watch(cfg):
    """The shortest watch that tells a stopped delta lease from a live one: a live host renews
    every 2 x io_timeout and a renewal's write may take up to another io_timeout."""
    return 3 * cfg["io_timeout"]


def _delta(cfg, hid):
    """(timestamp, generation, owner_id) of host_id ``hid``'s delta lease, read from storage."""
    row = _dump(cfg, cfgmod.ALIGN).get((hid - 1) * cfgmod.SECTOR)
    if row is None or row["lockspace"] != cfgmod.LOCKSPACE:
        return (0, 0, 0)
    return (row["timestamp"], row["generation"], row["owner_id"])


def observe(host, duration=None):
    """
    Whether VM host ``host`` still renews its delta lease in the lockspace, read from storage:
    ``{"state", "host_id", "sanlock", "unchanged_for"}``. ``state`` is ``advancing`` (its
    timestamp changed while watched: it is alive; returns as soon as seen), ``stopped``
    (unchanged over the whole watch), ``dead`` (this host's sanlock daemon says so: its leases
    may be taken) or ``free`` (never joined, or left). ``sanlock`` is the local daemon's view
    (as :func:`hosts` gives it), ``unchanged_for`` the seconds watched without a change.
    ``duration`` defaults to 3 x io_timeout + 1 and may not be shorter than 3 x io_timeout
    (a live host renews every 2 x io_timeout, a renewal may take one more io_timeout).
    No daemon or an unreadable lease area raises: never a verdict.

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.observe ServVirt1
        salt ServVirt2 xenha_sanlock.observe ServVirt1 duration=40
    """
    cfg = _settings()
    hid = _host_id_of(cfg, host)
    shortest = _min_watch(cfg)
    duration = shortest + 1 if duration is None else duration
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < shortest:
        raise CommandExecutionError(
            f"observe: duration must be at least {shortest} s (3 x io_timeout), got {duration!r}"
        )
    view = hosts()[hid]
    out = {"host_id": hid, "sanlock": view, "unchanged_for": 0.0}
    if view["state"] == "dead":
        return {"state": "dead", **out}
    first = _delta(cfg, hid)
    if not first[0]:
        return {"state": "free", **out}
    start = time.monotonic()
    while True:
        time.sleep(WATCH_POLL)
        now = _delta(cfg, hid)
        waited = round(time.monotonic() - start, 2)
        if now != first:
            return {**out, "state": "advancing", "unchanged_for": waited}
        if waited >= duration:
            return {**out, "state": "stopped", "unchanged_for": waited}


def holders(host=None):
    """
    The domU leases held now, read from storage (``sanlock direct dump``): ``{domu: {"mode":
    "ex"|"sh", "hosts": [host]}}`` (a host with no pillar name shows as ``host_id N``). A dead
    host's lease stays listed until another host takes it. A lease whose every holder joined
    the lockspace again since it took it (exclusive, or shared: a migration cut short) also
    carries ``"stale": True``: they lost it with their old generation, and sanlock lets any
    host take it. With ``host``, only the leases that ``host`` holds.

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.holders
        salt ServVirt2 xenha_sanlock.holders host=ServVirt1
    """
    cfg = _settings()
    if host is not None:
        _host_id_of(cfg, host)
    names = _names(cfg)
    by_id = {hid: name for name, hid in cfg["host_ids"].items()}
    out, dump = {}, _dump(cfg)
    for offset, row in sorted(dump.items()):
        if cfgmod.offset_slot(offset) is None or row["lockspace"] != cfgmod.LOCKSPACE:
            continue
        mode, ids = cfgmod.lease_holders(row)
        if mode is None:
            continue
        found = [by_id.get(i, f"host_id {i}") for i in ids]
        if host is None or host in found:
            entry = {"mode": mode, "hosts": found}
            if cfgmod.stale(row, dump):
                entry["stale"] = True
            out[names.get(row["resource"], row["resource"])] = entry
    return out


def _free_fenced(cfg, domu, fenced):
    """
    Free domU ``domu``'s lease if host ``fenced`` holds it and sanlock does not call that host
    dead yet: only after proving that its delta lease stopped. Returns what was done.
    """
    hid = _host_id_of(cfg, fenced)
    name, slot = _slot(cfg, domu)
    dump = _dump(cfg)
    row = dump.get(cfgmod.slot_offset(slot))
    mode, ids = cfgmod.lease_holders(row) if row else (None, [])
    if hid not in ids:
        return {"freed": False, "why": f"{fenced} does not hold the lease"}
    if cfgmod.stale(row, dump):
        # it came back (a fenced host powered on again) and lost the lease with its old
        # generation: sanlock grants it to the next acquire, nothing to free or to watch
        return {"freed": False, "why": f"{fenced} holds it from an older sanlock generation"}
    by_id = {i: h for h, i in cfg["host_ids"].items()}
    others = [by_id.get(i, f"host_id {i}") for i in ids if i != hid]
    if others:
        raise CommandExecutionError(
            f"start {domu}: its lease is also held ({mode}) by {', '.join(others)}, "
            f"not only by the fenced host {fenced}"
        )
    seen = observe(fenced)
    if seen["state"] == "dead":
        return {"freed": False, "why": f"sanlock calls {fenced} dead", "observed": seen}
    if seen["state"] == "advancing":
        raise CommandExecutionError(
            f"start {domu}: {fenced} still renews its sanlock delta lease (host_id {hid}): "
            "not taking its lease"
        )
    # the holder is proven gone: write the resource area afresh (lver 0, no owner, no shared
    # holders), sanlock 3.8.5's only direct way to clear one lease; the lockspace is untouched
    if _dump(cfg).get(cfgmod.slot_offset(slot)) != row:
        raise CommandExecutionError(f"start {domu}: its lease changed while {fenced} was watched")
    _run([SANLOCK, "direct", "init", "-r", cfgmod.resource_arg(name, cfg["lease_path"], slot)])
    return {"freed": True, "why": f"{fenced}'s delta lease is {seen['state']}", "observed": seen}


def start_domu(name, config, fenced=None):
    """
    Take domU ``name``'s lease and only then start it from ``config`` (``xenha_xen.start``);
    the lease is released again when the start fails: ``{"lease": {"domu", "pid", "slot",
    "changed", "fenced"}, "domu": <xenha_xen.start answer>}``. Refuses a config
    that defines another domU. With ``fenced=HOST`` (a host whose power-off was confirmed): if
    HOST holds the lease and sanlock does not call it dead yet, HOST's delta lease must be seen
    stopped (unchanged over 3 x io_timeout) before that one lease is freed on storage; a HOST
    that still renews is refused, and so is a lease held by any other live host.

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.start_domu web01 /cluster/domus/web01.cfg
        salt ServVirt2 xenha_sanlock.start_domu web01 /cluster/domus/web01.cfg fenced=ServVirt1
    """
    cfg = _settings()
    _my_host_id(cfg)
    defined = __salt__["xenha_xen.read_config"](config)["name"]
    if defined != name:
        raise CommandExecutionError(f"{config} defines domU {defined!r}, not {name!r}")
    freed = None if fenced is None else _free_fenced(cfg, name, fenced)
    lease = acquire(name)
    try:
        row = __salt__["xenha_xen.start"](config)
    except CommandExecutionError:
        if lease["changed"]:
            with contextlib.suppress(CommandExecutionError):  # the keeper's start grace ends it
                release(name)
        raise
    return {"lease": {**lease, "fenced": freed}, "domu": row}


# --- the live-migration hand-over (docs/design/leases-sanlock.md) ----------------------------


def _convert(cfg, domu, mode):
    """Convert this host's lease on ``domu`` to ``mode`` ("ex"/"sh"); sanlock's rc on -11."""
    mine = held().get(domu)
    if mine is None:
        raise CommandExecutionError(f"convert {domu}: this host holds no lease on it")
    if mine["mode"] == mode:
        return {"domu": domu, "pid": mine["pid"], "mode": mode, "changed": False}
    name, slot = _slot(cfg, domu)
    res = cfgmod.resource_arg(name, cfg["lease_path"], slot) + (":SH" if mode == "sh" else "")
    argv = [SANLOCK, "client", "convert", "-r", res, "-p", str(mine["pid"])]
    ret = _run(argv, timeout=COMMAND_TIMEOUT + 4 * cfg["io_timeout"], ok=(0, 1, 255))
    said = ret["stdout"] + ret["stderr"]
    if ret["retcode"] == 0 and "convert done 0" in said:
        return {"domu": domu, "pid": mine["pid"], "mode": mode, "changed": True}
    if f"convert done {ERR_AGAIN}" in said:
        return None
    raise CommandExecutionError(f"{shlex.join(argv)}: exit {ret['retcode']}: {said.strip()}")


def share(domu):
    """
    On a live migration's source, before ``xl migrate``: turn this host's exclusive lease on
    ``domu`` into a shared one, so the target can take it shared too. From then until the
    target's :func:`exclusive`, the two hosts share it and no third host can take it.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_sanlock.share web01
    """
    return _convert(_settings(), domu, "sh")


def _exclusive(domu, wait):
    cfg = _settings()
    deadline = time.monotonic() + float(wait)
    while True:
        done = _convert(cfg, domu, "ex")
        if done is not None:
            return done
        if time.monotonic() >= deadline:
            raise CommandExecutionError(
                f"convert {domu} to exclusive: another host still shares its lease after {wait} s"
            )
        time.sleep(POLL_INTERVAL)


def exclusive(domu, wait=EXCLUSIVE_WAIT):
    """
    On a live migration's target, once the domU arrived: turn this host's shared lease on
    ``domu`` into an exclusive one. sanlock refuses (-11) while the source still shares it;
    the source's keeper lets go once the domU left the source, so this retries for up to
    ``wait`` seconds (a dead source's shared lease is cleared by sanlock once it is dead).

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.exclusive web01
        salt ServVirt2 xenha_sanlock.exclusive web01 wait=120
    """
    return _exclusive(domu, wait)


def unshare(domu, wait=EXCLUSIVE_WAIT):
    """
    On a live migration's source, when the migration failed and the domU stayed: take the
    lease back from shared to exclusive, once the target let go of its shared one (its keeper
    does when the domU never arrived; ``release`` on the target makes it at once). Retries for
    up to ``wait`` seconds.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_sanlock.unshare web01
    """
    return _exclusive(domu, wait)
