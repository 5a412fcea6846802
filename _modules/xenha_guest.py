"""
Guest monitoring on a VM host: watch the monitored domUs (pillar ``xenha:domus:<name>:monitor``)
for the ``xenha_guests`` beacon, and the host's half of the master's reactions: look at a domU
again, restart it in place, or vacate it (destroy it and release its lease) before it is
started elsewhere. Rules: ``_utils/xenha_guestwatch.py``; policy: ``_utils/xenha_guestmon.py``
on the master; docs/guest-monitoring.md.

The watcher runs in a thread of the minion (found again by name after Salt reloads its
modules), one round every ``every`` seconds: one toolstack listing plus the application checks
that are due, side by side, each bounded by its timeout. The beacon only collects the findings,
so a slow check never holds up the minion's loop. A thread nobody polls for ORPHAN_AFTER
seconds (the beacon was removed) stops.

Needs: the ``xenha_xen`` module (``xl`` or ``xm``); on a lease-managed cluster ``xenha_sanlock``.
"""

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import xenha_guestwatch
import xenha_names
import xenha_pillarcheck
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "xenha_guest"

THREAD_PREFIX = "xenha-guests/"
ORPHAN_AFTER = 60.0  # s without a poll before the watcher decides its beacon is gone
DEFAULT_EVERY = 5.0  # s between rounds
MAX_CHECKS = 8  # application checks run side by side


def __virtual__():
    if "xenha_xen.list_domains" in __salt__:
        return __virtualname__
    return (False, "xenha_guest: the xenha_xen execution module is not available")


def _monitors():
    """{domU: checked monitor} from this minion's pillar; a bad entry is logged and skipped."""
    domus = (__pillar__.get("xenha") or {}).get("domus") or {}
    found = {}
    for name, spec in domus.items() if isinstance(domus, dict) else ():
        if not isinstance(spec, dict) or spec.get("monitor") is None:
            continue
        try:
            found[name] = xenha_pillarcheck.monitor(spec["monitor"], f"xenha:domus:{name}:monitor")
        except CommandExecutionError as err:
            log.error("xenha guest monitoring: %s", err)
    return found


def _checks(due):
    """{domU: (ok, detail)} of the due application checks, run side by side."""
    if not due:
        return {}
    with ThreadPoolExecutor(min(len(due), MAX_CHECKS)) as pool:
        return dict(zip(due, pool.map(xenha_guestwatch.probe, due.values()), strict=True))


class _Rounds(threading.Thread):
    """The watcher's thread: one listing and the due checks per round."""

    xenha_guests = True  # how a reloaded module recognises a thread started by an older copy

    def __init__(self, name, every, list_domains, reporter):
        super().__init__(name=name, daemon=True)
        self.every = every
        self.list_domains = list_domains  # xenha_xen.list_domains, bound to its loader
        self.reporter = reporter
        self.watcher = xenha_guestwatch.Watcher()
        self.monitors = {}
        self.found = []
        self.lock = threading.Lock()
        self.polled = time.monotonic()
        self.stopping = threading.Event()

    def run(self):
        try:  # where xenha_xen leaves its stop notes (only while a watcher reads them)
            os.makedirs(xenha_guestwatch.STOP_DIR, mode=0o700, exist_ok=True)
        except OSError as err:
            log.error("xenha guests: cannot make %s: %s", xenha_guestwatch.STOP_DIR, err)
        while not self.stopping.wait(self.every):
            if time.monotonic() - self.polled > ORPHAN_AFTER:
                log.warning("xenha guests: not polled for %s s, stopping", ORPHAN_AFTER)
                return
            self.round()

    def round(self):
        monitors = self.monitors
        try:
            listing = self.list_domains()["domus"]
        except CommandExecutionError as err:  # the heartbeat's toolstack probe reports this
            log.debug("xenha guests: no listing: %s", err)
            listing = None
        now = time.monotonic()
        checks = _checks(self.watcher.due(now, monitors)) if listing is not None else {}
        found = self.watcher.round(now, listing, monitors, checks)
        with self.lock:
            self.found += [{**event, "reporter": self.reporter} for event in found]

    def take(self, monitors):
        """The findings since the last call; ``monitors`` apply from the next round."""
        with self.lock:
            self.polled = time.monotonic()
            self.monitors = monitors
            found, self.found = self.found, []
        return found


def _every(config):
    every = config.get("every", DEFAULT_EVERY)
    xenha_pillarcheck.seconds(every, "xenha_guests beacon: every", 0.5)
    if every > 300:
        raise CommandExecutionError(f"xenha_guests beacon: every: {every} s is more than 300 s")
    return float(every)


def validate(config):
    """
    Check a ``xenha_guests`` beacon configuration (its options merged into one mapping):
    ``(True, "valid")`` or ``(False, "<one sentence>")``.

    CLI Example:

    .. code-block:: bash

        salt-call xenha_guest.validate '{every: 5}'
    """
    unknown = sorted(set(config) - {"every", "interval", "_beacon_name"}, key=str)
    if unknown:
        return False, f"xenha_guests beacon: unknown option {unknown[0]!r} (known: every)"
    try:
        _every(config)
    except CommandExecutionError as err:
        return False, str(err)
    return True, "valid"


def poll(config):
    """
    Start (or find again) the guest watcher for ``config`` (``every``: seconds between
    rounds, default 5) and return its findings since the last call: ``{"tag": "failed",
    "domu", "reason": crashed|dying|gone|check, "detail", "reporter"}``. Called by the
    ``xenha_guests`` beacon every minion loop.

    CLI Example:

    .. code-block:: bash

        salt-call xenha_guest.poll '{every: 5}'
    """
    every = _every(config)
    name = THREAD_PREFIX + config.get("_beacon_name", "xenha_guests")
    rounds = next(
        (t for t in threading.enumerate() if t.name == name and getattr(t, "xenha_guests", 0)),
        None,
    )
    if rounds is None or rounds.every != every:
        fresh = _Rounds(name, every, __salt__["xenha_xen.list_domains"], __opts__["id"])
        if rounds is not None:
            rounds.stopping.set()
            fresh.watcher = rounds.watcher  # keeps what it knew of each domU
        fresh.start()
        rounds = fresh
    return rounds.take(_monitors())


def inspect(name):
    """
    What this host sees of domU ``name`` now: ``{"row": its xenha_xen row or None, "check":
    {"ok", "detail"} or None}``; the application check (when its monitor has one) is run once
    more if the domU is listed. The master looks before it acts on a report.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_guest.inspect web01
    """
    name = xenha_names.check("domu", name)
    row = __salt__["xenha_xen.domain"](name)
    monitor = _monitors().get(name) or {}
    check = None
    if row is not None and not row["transient"] and monitor.get("check"):
        ok, detail = xenha_guestwatch.probe(monitor["check"])
        check = {"ok": ok, "detail": detail}
    return {"row": row, "check": check}


def _leased():
    xenha = __pillar__.get("xenha") or {}
    return bool(xenha.get("sanlock")) and __opts__.get("id") in (xenha.get("hosts") or {})


def vacate(name):
    """
    Make sure domU ``name`` no longer runs here and this host holds no lease on it: destroy
    the local copy (crashed, dying or running) and release its sanlock lease, waiting until
    sanlock let it go. Refused while the domU is mid-migration here. Returns ``{"name",
    "destroyed", "released"}``.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_guest.vacate web01
    """
    name = xenha_names.check("domu", name)
    row = __salt__["xenha_xen.domain"](name)
    if row is not None and row["transient"]:
        raise CommandExecutionError(
            f"domU {name} is mid-migration here as {row['name']}: not destroying it"
        )
    if row is not None:
        __salt__["xenha_xen.destroy"](name)
    released = False
    if _leased():
        try:
            released = __salt__["xenha_sanlock.release"](name)["changed"]
        except CommandExecutionError:
            # its keeper may have let go by itself between the look and the signal
            if name in __salt__["xenha_sanlock.held"]():
                raise
    return {"name": name, "destroyed": row is not None, "released": released}


def restart(name, config):
    """
    Restart domU ``name`` in place: :func:`vacate` its old copy, then start it from
    ``config`` through ``xenha_xen.start``, which takes its sanlock lease for this host first
    (the lease a live host holds is refused: never a second copy). Returns the new row.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_guest.restart web01 /cluster/domus/web01.cfg
    """
    name = xenha_names.check("domu", name)
    defined = __salt__["xenha_xen.read_config"](config)["name"]
    if defined != name:
        raise CommandExecutionError(f"{config} defines domU {defined!r}, not {name!r}")
    vacate(name)
    return __salt__["xenha_xen.start"](config)
