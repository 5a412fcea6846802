"""
Storage leases on a VM host: renew this host's and its domUs' leases, watch peers' leases,
take a domU's lease before starting it, and self-fence when the storage is lost.

Leases live in ``xenha:leases:dir`` (pillar; the OCFS2 mount in production, a shared directory
in the lab). The file format and the progress logic are in ``_utils/xenha_lease.py``; the safety
argument is in ``docs/failover.md``.

The renew loop runs as its own process, ``salt-call xenha_lease.serve`` (the ``xenha-leased``
service), not inside the minion: a renewer that died with the minion while the domUs keep
running would let a survivor start them a second time.

Needs: the lease directory and the ``xenha_xen`` module (to list and destroy local domUs).
"""

import contextvars
import json
import logging
import os
import socket
import threading
import time

import xenha_lease
import xenha_names
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "xenha_lease"

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
READ_TIMEOUT = 5.0  # a hung read (storage gone, OCFS2 recovery) must not hang the caller


def __virtual__():
    return __virtualname__


def _settings(**overrides):
    # __pillar__ directly: Salt 3008's pillar.get returns masked ("**********") values
    leases = (__pillar__.get("xenha") or {}).get("leases") or {}
    return xenha_lease.settings(dict(leases), **overrides)


def _me():
    return xenha_names.check("host", __opts__["id"])


def _boot_id():
    path = __opts__.get("xenha_boot_id_path", BOOT_ID_PATH)
    with open(path, encoding="ascii") as fh:
        return fh.read().strip()


def _thread(func, *args, name=None):
    """
    A daemon thread running ``func(*args)`` in a copy of this context: the loader's dunders
    (__pillar__, __opts__, __salt__) live in context variables, and a bare thread sees none of
    them (renewals then fail and the host self-fences: found in the lab).
    """
    context = contextvars.copy_context()
    return threading.Thread(target=context.run, args=(func, *args), name=name, daemon=True)


def _with_timeout(func, timeout, what):
    """Run ``func`` in a thread; raise CommandExecutionError if it takes longer than timeout."""
    box = {}

    def target():
        try:
            box["value"] = func()
        except BaseException as err:  # noqa: BLE001 - handed to the caller below
            box["error"] = err

    worker = _thread(target)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise CommandExecutionError(f"{what}: no answer within {timeout} s (storage hung?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _path(conf, kind, name):
    return os.path.join(conf["dir"], xenha_lease.lease_name(kind, name))


def _read(conf, kind, name):
    """The lease (dict) or None when there is no file; raises on a hung or bad file."""
    path = _path(conf, kind, name)

    def read():
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            # "no lease" only counts when the directory is there: an unmounted shared
            # storage must not look like a domU nobody holds
            if not os.path.isdir(conf["dir"]):
                raise CommandExecutionError(
                    f"lease directory {conf['dir']} is missing (storage lost?)"
                ) from None
            return None

    data = _with_timeout(read, READ_TIMEOUT, f"reading {path}")
    return None if data is None else xenha_lease.decode(data, path)


def _write(conf, kind, name, previous, released=False):
    lease = xenha_lease.renewed(
        previous, _me(), _boot_id(), written=round(time.time(), 3), released=released
    )
    path = _path(conf, kind, name)
    _with_timeout(
        lambda: xenha_lease.write_atomic(path, xenha_lease.encode(lease)),
        READ_TIMEOUT,
        f"writing {path}",
    )
    return lease


# --- observations: persisted so repeated calls do not restart the observer's clock ---
# observations.json: observe()'s own records; watch.json: the renewer's continuous watch of the
# peers' host leases (written by xenha-leased only, so the two processes never lose each
# other's updates), which lets observe() answer at once how long a peer has been silent.


def _obs_path(name="observations"):
    return os.path.join(__opts__["cachedir"], "xenha_lease", f"{name}.json")


def _obs_load(name="observations"):
    try:
        with open(_obs_path(name), encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return {}


def _obs_save(records, name="observations"):
    path = _obs_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    xenha_lease.write_atomic(path, json.dumps(records).encode())


def _fresh(conf):
    """How recent a last look must be for a change since it to prove the owner alive now."""
    return 2 * conf["renew_interval"] + 1.0


def _look(conf, kind, name, records):
    key = f"{kind}:{name}"
    lease = _read(conf, kind, name)
    record, verdict = xenha_lease.observe(
        records.get(key), lease, time.monotonic(), conf["expiry"], _boot_id(), fresh=_fresh(conf)
    )
    if record is None:
        records.pop(key, None)
    else:
        records[key] = record
    return lease, verdict


def _listing(conf):
    """``[(filename, (kind, name))]`` of the lease directory (a hung listing times out)."""
    filenames = _with_timeout(
        lambda: sorted(os.listdir(conf["dir"])), READ_TIMEOUT, f"listing {conf['dir']}"
    )
    parsed = ((f, xenha_lease.parse_lease_name(f)) for f in filenames)
    return [(filename, lease) for filename, lease in parsed if lease]


def _named(conf, kind):
    """The names that have a ``kind`` lease in the lease directory."""
    return [name for _, (found, name) in _listing(conf) if found == kind]


def _watch_peers(conf):
    """One look at every peer's host lease, recorded in watch.json (see above)."""
    records = _obs_load("watch")
    peers = [name for name in _named(conf, "host") if name != _me()]
    for name in peers:
        _look(conf, "host", name, records)
    keys = {f"host:{name}" for name in peers}
    _obs_save({k: v for k, v in records.items() if k in keys}, "watch")


def observe(host, duration=0, kind="host", settled=None, **overrides):
    """
    Watch a peer's lease (or a domU's, ``kind=domu``) for up to ``duration`` seconds from this
    host, returning early once it advances. The verdict's ``state`` is ``advancing`` (the owner
    renewed within the last few renew intervals: alive), ``stalled`` (unchanged, not yet for
    ``expiry`` s), ``expired`` (unchanged for at least ``expiry`` s of THIS host's monotonic
    clock), ``released`` or ``missing``. Observations are remembered, and this host's lease
    renewer watches its peers all the time, so a call continues what was seen before.
    ``settled``: also return early once the lease has been unchanged for that many seconds.

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_lease.observe ServVirt1 duration=12
        salt ServVirt2 xenha_lease.observe ServVirt1 duration=2 settled=2
    """
    conf = _settings(**overrides)
    name = xenha_names.check("host" if kind == "host" else "domain", host)
    duration = float(duration)
    settled = None if settled is None else float(settled)
    poll = min(0.2, conf["renew_interval"] / 2)
    deadline = time.monotonic() + duration
    records = xenha_lease.merge_records(_obs_load(), _obs_load("watch"))
    try:
        while True:
            _, verdict = _look(conf, kind, name, records)
            # a verdict that more watching cannot change ends the watch
            if verdict["state"] in (
                xenha_lease.ADVANCING,
                xenha_lease.EXPIRED,
                xenha_lease.MISSING,
            ):
                break
            if settled is not None and verdict["unchanged_for"] >= settled:
                break
            if time.monotonic() + poll > deadline:
                break
            time.sleep(poll)
    finally:
        _obs_save(records)
    verdict.update({"kind": kind, "name": name, "observer": _me(), "expiry": conf["expiry"]})
    return verdict


def owned(host, **overrides):
    """
    The domUs whose leases ``host`` holds (not released), as ``{name: counter}``: what it ran.

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_lease.owned ServVirt1
    """
    conf = _settings(**overrides)
    xenha_names.check("host", host)
    found = {}
    for name in _named(conf, "domu"):
        lease = _read(conf, "domu", name)
        if lease and lease["owner"] == host and not lease.get("released"):
            found[name] = lease["counter"]
    return found


def show(**overrides):
    """
    Every lease in the lease directory: ``{file: lease}``.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_lease.show
    """
    conf = _settings(**overrides)
    return {filename: _read(conf, *parsed) for filename, parsed in _listing(conf)}


def check_start(name, fenced=None, handover_from=None, **overrides):
    """
    Whether this host may start domU ``name`` now (changes nothing): ``{"ok", "reason",
    "owner"}``. A lease held by a live peer refuses; ``fenced`` names a host the master has
    fenced, ``handover_from`` the source of a confirmed migration. The domU state and the
    runners call this before starting a domU; ``acquire_domu`` then takes the lease.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_lease.check_start web01
    """
    conf = _settings(**overrides)
    xenha_names.check("domain", name)
    records = _obs_load()
    lease, verdict = _look(conf, "domu", name, records)
    _obs_save(records)
    ok, reason = xenha_lease.may_take(lease, verdict, _me(), fenced, handover_from)
    return {"ok": ok, "reason": reason, "owner": lease["owner"] if lease else None}


def acquire_domu(name, fenced=None, handover_from=None, wait=0, **overrides):
    """
    Take domU ``name``'s lease for this host before starting it. Allowed when there is no lease,
    it is released or ours, its owner is ``fenced`` (by the master) or ``handover_from`` (a
    confirmed migration source), or it has provably expired; with ``wait`` seconds, keep
    watching a stalled lease that long for it to expire. Raises CommandExecutionError with the
    reason when refused.

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_lease.acquire_domu web01 fenced=ServVirt1
    """
    conf = _settings(**overrides)
    xenha_names.check("domain", name)
    deadline = time.monotonic() + float(wait)
    records = _obs_load()
    try:
        while True:
            lease, verdict = _look(conf, "domu", name, records)
            ok, reason = xenha_lease.may_take(lease, verdict, _me(), fenced, handover_from)
            if ok or verdict["state"] == xenha_lease.ADVANCING or time.monotonic() >= deadline:
                break
            time.sleep(min(0.2, conf["renew_interval"] / 2))
    finally:
        _obs_save(records)
    if not ok:
        raise CommandExecutionError(f"domU {name}: lease not taken: {reason}")
    new = _write(conf, "domu", name, lease)
    return {"acquired": True, "reason": reason, "counter": new["counter"]}


def start_domu(name, config, fenced=None, handover_from=None, **overrides):
    """
    Take domU ``name``'s lease (as :func:`acquire_domu`) and start it from ``config``
    (``xenha_xen.start``), in one call: what a failover does on a survivor. Refuses a config
    that defines another domU (the lease taken would not be the one that guards it).

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_lease.start_domu web01 /cluster/domus/web01.cfg fenced=ServVirt1
    """
    defined = __salt__["xenha_xen.read_config"](config)["name"]
    if defined != name:
        raise CommandExecutionError(f"{config} defines domU {defined!r}, not {name!r}")
    lease = acquire_domu(name, fenced=fenced, handover_from=handover_from, **overrides)
    return {"lease": lease, "domu": __salt__["xenha_xen.start"](config)}


def release_domu(name, **overrides):
    """
    Release this host's lease on domU ``name`` (after a clean shutdown or a migration away), so
    it is not restarted elsewhere as if it had failed. A lease held by another host is left alone.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_lease.release_domu web01
    """
    conf = _settings(**overrides)
    xenha_names.check("domain", name)
    lease = _read(conf, "domu", name)
    if lease is None or lease["owner"] != _me():
        return {"released": False, "owner": lease["owner"] if lease else None}
    _write(conf, "domu", name, lease, released=True)
    return {"released": True, "owner": _me()}


# --- the renewer ---


def _local_domus():
    """Names of the domUs running here; transient migration copies are not ours to claim."""
    domus = __salt__["xenha_xen.list_domains"]()["domus"]
    return sorted(n for n in domus if "--" not in n)


def _renew_host(conf):
    # never create the directory: with the shared storage unmounted that would renew on the
    # local disk, where nobody else sees it, and hide the loss from the self-fence
    if not os.path.isdir(conf["dir"]):
        raise CommandExecutionError(f"lease directory {conf['dir']} is missing (storage lost?)")
    return _write(conf, "host", _me(), _read(conf, "host", _me()))["counter"]


def _renew_domus(conf, names):
    """
    Renew the leases of ``names`` that are ours or unclaimed (no lease, released): returns
    ``({name: counter}, {name: owner})``, the second for leases another host holds (untouched).
    Storage only: no toolstack call.
    """
    me = _me()
    renewed, foreign = {}, {}
    for name in names:
        lease = _read(conf, "domu", name)
        if lease is None or lease["owner"] == me or lease.get("released"):
            renewed[name] = _write(conf, "domu", name, lease)["counter"]
        else:
            foreign[name] = lease["owner"]
            log.error("domU %s runs here but its lease is held by %s", name, lease["owner"])
    return renewed, foreign


def renew(**overrides):
    """
    One renewal round: this host's lease, then the lease of every domU running here that is
    ours (or unclaimed: no lease or released). A domU whose lease another host holds is reported
    under ``foreign`` and left alone.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_lease.renew
    """
    conf = _settings(**overrides)
    result = {"host": _renew_host(conf)}
    result["domus"], result["foreign"] = _renew_domus(conf, _local_domus())
    return result


def _destroy_all(names, timeout):
    """Destroy ``names`` in parallel; returns the names not confirmed destroyed in time."""
    threads = {}
    for name in names:
        t = _thread(__salt__["xenha_xen.destroy"], name)
        t.start()
        threads[name] = t
    deadline = time.monotonic() + timeout
    for t in threads.values():
        t.join(max(deadline - time.monotonic(), 0))
    return sorted(n for n, t in threads.items() if t.is_alive())


def _sd_notify(message):
    """Tell systemd (``Type=notify``, ``WatchdogSec=``) we live; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as err:
        log.warning("xenha-leased: cannot notify systemd at %s: %s", address, err)


class _Renewer:
    """xenha-leased's two loops and what they share: the domU leases held, the last success."""

    def __init__(self, conf):
        self.conf = conf
        self.stop = False
        self.lock = threading.Lock()  # guards self.owned and self.local
        self.owned = set()  # domUs whose leases we hold and renew
        self.local = set()  # domUs running here, as last listed
        try:
            self.owned = self.local = set(_local_domus())
        except Exception as err:  # noqa: BLE001 - start renewing the host lease anyway
            log.error("xenha-leased: cannot list local domUs at start: %s", err)
        self.ok_issued = time.monotonic()  # issue time of the last successful renewal

    def holding(self):
        with self.lock:
            return sorted(self.owned)

    def victims(self):
        """What a self-fence destroys: everything running here, leased or not (once our leases
        stop, anything here may be started elsewhere: one just started, one just migrated in)."""
        with self.lock:
            return sorted(self.owned | self.local)

    def _pause(self, since):
        time.sleep(max(self.conf["renew_interval"] - (time.monotonic() - since), 0))

    def renew_loop(self):
        """Storage only: this host's lease and the domU leases it holds."""
        while not self.stop:
            issued = time.monotonic()
            try:
                _renew_host(self.conf)
                _, foreign = _renew_domus(self.conf, self.holding())
            except Exception as err:  # noqa: BLE001 - the renew loop must outlive any failure
                log.warning("xenha-leased: renewal failed: %s", err)
            else:
                self.ok_issued = issued
                if foreign:  # handed over to another host: no longer ours to renew
                    with self.lock:
                        self.owned = self.owned - set(foreign)
            self._pause(issued)

    def peers_loop(self):
        """The peers' host leases, looked at every renew interval (its own thread: a hung peer
        file must not delay our renewals)."""
        while not self.stop:
            started = time.monotonic()
            try:
                _watch_peers(self.conf)
            except Exception as err:  # noqa: BLE001 - observe() then watches on its own
                log.warning("xenha-leased: cannot watch the peers' leases: %s", err)
            self._pause(started)

    def watch_loop(self):
        """The toolstack, in its own thread so that a slow one cannot delay the renewals."""
        while not self.stop:
            started = time.monotonic()
            try:
                local = set(_local_domus())
                adopted, _ = _renew_domus(self.conf, sorted(local - set(self.holding())))
                with self.lock:
                    self.owned = (self.owned & local) | set(adopted)
                    self.local = local
            except Exception as err:  # noqa: BLE001
                log.warning("xenha-leased: cannot refresh the local domUs: %s", err)
            self._pause(started)


def serve(rounds=None, **overrides):
    """
    The renew daemon (run as the ``xenha-leased`` service: ``salt-call xenha_lease.serve``).
    Every ``renew_interval`` one worker thread renews this host's lease and the domU leases it
    holds (storage only); another asks the toolstack what runs here (to claim new domUs, drop
    gone ones); a third notes the progress of the peers' host leases (for observe). The main
    thread self-fences (destroys every domU running here) when no renewal issued within
    ``self_fence_after`` seconds has succeeded, so neither a hung write nor a slow toolstack
    can delay the fence. Under systemd (``Type=notify``) it reports
    ready and pets ``WatchdogSec=`` from the fencing thread. ``rounds`` stops after that many
    checks (tests).

    CLI Example:

    .. code-block:: bash

        salt-call xenha_lease.serve
    """
    conf = _settings(**overrides)
    renewer = _Renewer(conf)
    workers = [
        _thread(renewer.renew_loop, name="xenha-leased-renew"),
        _thread(renewer.watch_loop, name="xenha-leased-watch"),
        _thread(renewer.peers_loop, name="xenha-leased-peers"),
    ]
    for worker in workers:
        worker.start()
    _sd_notify("READY=1")
    fenced, checks = None, 0
    try:
        while rounds is None or checks < int(rounds):
            checks += 1
            _sd_notify("WATCHDOG=1")  # from the fencing thread: its hang is what must reboot
            due = xenha_lease.self_fence_due(
                renewer.ok_issued, time.monotonic(), conf["self_fence_after"]
            )
            if due and fenced is None:
                victims = renewer.victims()
                log.critical("xenha-leased: no lease renewal, self-fencing: destroying %s", victims)
                left = _destroy_all(victims, conf["destroy_timeout"])
                fenced = {"destroyed": victims, "not_confirmed": left}
            elif not due and fenced is not None:
                log.warning("xenha-leased: renewing again; self-fenced domUs stay down")
                fenced = None
            time.sleep(min(0.1, conf["renew_interval"] / 4))
    finally:
        renewer.stop = True
        for worker in workers:
            worker.join(conf["renew_interval"] + 3 * READ_TIMEOUT)
    return {"self_fenced": fenced, "owned": renewer.holding()}
