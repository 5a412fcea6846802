"""
xenha's master-side runner: cluster status, what-if plans, maintenance (evacuate / restore).
The failover engineer's functions live in the marked section at the end of this file.

Policy is pure and lives in ``_utils``: ``xenha_snapshot`` turns minion answers into a cluster
snapshot, ``xenha_placement`` decides where domUs go. This module is the Salt edge: it reads the
cluster description from the master's pillar view, calls the minions (``xenha_preflight.report``,
``xenha_xen.migrate`` ...), fires events and keeps what must survive a master restart (the
maintenance flags and each evacuation's journal) in ``xenha_store`` under the master cachedir.

Results are data (lists of flat dicts), so ``--out=table``, ``--out=json`` and ``--out=yaml``
all work. See docs/runner.md.
"""

import contextlib
import logging
import posixpath
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import salt.client
import salt.key
import salt.pillar
import salt.utils.event
import salt.utils.jid
import salt.utils.minions
import xenha_names
import xenha_placement
import xenha_snapshot
import xenha_store
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "xenha"

CALL_TIMEOUT = 30  # seconds to wait for a report from a minion
MIGRATE_TIMEOUT = 900  # seconds one live migration may take before we stop waiting
DEFAULT_PARALLEL = 2  # concurrent migrations when pillar xenha:evacuation:parallel is unset
SETTLE_POLL = 0.5
# after the migrate call returned, how long the target's arrival watch may still take to answer
# before the runner asks the target again in a call of its own
ARRIVAL_GRACE = 15
KILL_TIMEOUT = 5  # seconds for saltutil.kill_job of a watch the runner no longer needs
WATCH_POLL = 0.01  # seconds between looks for the arrival watch's answer on the master bus
SHUTDOWN_TIMEOUT = 120  # seconds a domU gets to shut down cleanly for a cold move
MACHINE_OUTPUTS = ("json", "yaml", "raw", "pprint", "newline_values_only")
MAINTENANCE = "maintenance"
# plan's action per mode, for a domU that fits somewhere (True) or nowhere (False)
ACTIONS = {
    "maintenance": {True: "live-migrate", False: "stays"},
    "failure": {True: "restart", False: "stays down"},
}
HOSTSTATE = "hoststate"


def __virtual__():
    return __virtualname__


# --- Salt edge: pillar, minion calls, events, store --------------------------------------------


def _cachedir():
    return __opts__["cachedir"]


def _pillar_of(minion):
    _, grains, _ = salt.utils.minions.get_minion_data(minion, __opts__)
    pillar = salt.pillar.Pillar(__opts__, grains or {"id": minion}, minion, "base")
    return pillar.compile_pillar().get("xenha") or {}


def _cluster(host=None):
    """
    The ``xenha`` pillar as the master compiles it for ``host`` (or for the master option
    ``xenha_pillar_minion``, or the first accepted minion that has it).
    """
    candidates = [host] if host else []
    if __opts__.get("xenha_pillar_minion"):
        candidates.append(__opts__["xenha_pillar_minion"])
    candidates += sorted(salt.key.get_key(__opts__).list_status("acc").get("minions", []))
    for minion in candidates:
        cluster = _pillar_of(minion)
        if cluster.get("hosts"):
            return cluster
    raise SaltInvocationError("no minion has a xenha pillar with hosts (xenha:hosts)")


_CLIENTS = threading.local()  # .client: this thread's LocalClient inside _reused_clients()
_REUSE = {"on": False, "made": []}


@contextlib.contextmanager
def _reused_clients():
    """
    Within, each thread keeps one LocalClient for all its calls instead of making one per
    call (each reads the master config and opens the event bus anew: tens of ms, more under
    load, on every round trip of an evacuation). Closed on the way out.
    """
    _REUSE["on"] = True
    try:
        yield
    finally:
        _REUSE["on"] = False
        made, _REUSE["made"] = _REUSE["made"], []
        for client in made:
            with contextlib.suppress(Exception):  # closing is best effort
                client.destroy()
        _CLIENTS.__dict__.clear()


def _client():
    if not _REUSE["on"]:
        return salt.client.get_local_client(__opts__["conf_file"])
    client = getattr(_CLIENTS, "client", None)
    if client is None:
        client = _CLIENTS.client = salt.client.get_local_client(__opts__["conf_file"])
        _REUSE["made"].append(client)
    return client


def _answer(minion, fun, got, timeout):
    if not isinstance(got, dict) or "ret" not in got:
        return False, f"no answer from {minion} to {fun} within {timeout} s"
    if got.get("retcode", 0) != 0:
        return False, f"{fun} on {minion} failed: {got['ret']}"
    return True, got["ret"]


def _call(minions, fun, arg=(), kwarg=None, timeout=CALL_TIMEOUT, **client_kwargs):
    """
    Call ``fun`` on each of ``minions``: ``{minion: (ok, value or error text)}``. A minion
    that did not answer is reported as ``(False, "no answer ...")``, never silently left out.
    ``client_kwargs`` go to Salt's LocalClient (e.g. ``gather_job_timeout``).
    """
    minions = sorted(set(minions))
    if not minions:
        return {}
    client = _client()
    returns = client.cmd(
        minions,
        fun,
        arg=list(arg),
        kwarg=kwarg or {},
        tgt_type="list",
        timeout=timeout,
        full_return=True,
        **client_kwargs,
    )
    return {minion: _answer(minion, fun, returns.get(minion), timeout) for minion in minions}


def _call_one(minion, fun, arg=(), kwarg=None, timeout=CALL_TIMEOUT, **client_kwargs):
    return _call([minion], fun, arg, kwarg, timeout, **client_kwargs)[minion]


def _progress(message, **data):
    log.info("xenha: %s", message)
    jid_event = globals().get("__jid_event__")
    # salt-run prints progress events through the outputter: with --out=json/yaml that would
    # interleave documents with the result, so scripts get the result alone (the named events
    # on the bus still fire)
    if jid_event is not None and __opts__.get("output") not in MACHINE_OUTPUTS:
        jid_event.fire_event({"message": message, **data}, "progress")


def _fire(tag, data):
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:
        bus.fire_event(data, tag)


def _marks():
    cachedir = _cachedir()
    return xenha_store.load(cachedir, MAINTENANCE), xenha_store.load(cachedir, HOSTSTATE)


class _Watch:
    """
    One call started now and collected later, or abandoned: the runner starts the target's
    arrival watch together with the migration on the source and needs it only if the
    migration succeeds. Abandoned, the job is killed on the minion, so nothing is left
    running there.
    """

    def __init__(self, minion, fun, arg, kwarg, timeout):
        self.minion, self.fun, self.timeout = minion, fun, timeout
        self.jid = salt.utils.jid.gen_jid(__opts__)
        self.answer = None
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(arg, kwarg), name=f"xenha-watch-{minion}", daemon=True
        )
        self.thread.start()

    def _run(self, arg, kwarg):
        # a client of its own: an abandoned iteration must not leave a shared one half-read
        client = salt.client.get_local_client(__opts__["conf_file"])
        returns = None
        try:
            returns = client.cmd_iter_no_block(
                [self.minion],
                self.fun,
                arg=list(arg),
                kwarg=kwarg,
                tgt_type="list",
                timeout=self.timeout,
                jid=self.jid,
            )
            for ret in returns:
                if ret and self.minion in ret:
                    self.answer = _answer(self.minion, self.fun, ret[self.minion], self.timeout)
                    return
                if self.stop.is_set():
                    return
                # Salt's non-blocking iterator does not wait by itself; the answer is the end of
                # a move when it comes after the migration's, so look often (a cheap check)
                time.sleep(WATCH_POLL)
            self.answer = _answer(self.minion, self.fun, None, self.timeout)
        except Exception as err:  # noqa: BLE001 - reported as the call's answer, never lost
            self.answer = (False, f"{self.fun} on {self.minion}: {err}")
        finally:
            with contextlib.suppress(Exception):  # best effort: the answer is already kept
                if returns is not None:
                    returns.close()  # the generator first: it unsubscribes from the bus
                client.destroy()

    def result(self, within):
        """The answer ``(ok, value)`` if it comes ``within`` seconds, else None (abandoned)."""
        self.thread.join(within)
        if self.answer is None:
            self.stop.set()
            self.thread.join()
        if self.answer is None:
            ok, value = _call_one(
                self.minion,
                "saltutil.kill_job",
                [self.jid],
                timeout=KILL_TIMEOUT,
                gather_job_timeout=1,
            )
            if not ok:
                log.warning("xenha: could not stop job %s on %s: %s", self.jid, self.minion, value)
        return self.answer


def _snapshot(cluster, checks=False, hosts=None, disks=False):
    """
    Ask cluster hosts (all, or ``hosts``) for their report and build the snapshot; a host not
    asked is left as if it had not answered. ``disks``: with each domU's disk paths.
    """
    kwarg = {"checks": checks, **({"disks": True} if disks else {})}
    asked = cluster["hosts"] if hosts is None else hosts
    answers = _call(asked, "xenha_preflight.report", kwarg=kwarg)
    reports = {h: value if ok else None for h, (ok, value) in answers.items()}
    maintenance, hoststate = _marks()
    snap = xenha_snapshot.build(cluster, reports, maintenance, hoststate)
    for host, (ok, value) in answers.items():
        if not ok:
            snap["hosts"][host]["error"] = value
    return snap


def _vmhost(cluster, host):
    xenha_names.check("host", host)
    spec = (cluster.get("hosts") or {}).get(host)
    if spec is None:
        raise SaltInvocationError(f"host {host!r} is not in xenha:hosts")
    if spec.get("role", "vmhost") != "vmhost":
        raise SaltInvocationError(f"host {host!r} has role {spec.get('role')!r}, not vmhost")
    return spec


def _vmhost_names(cluster):
    return sorted(
        h for h, spec in cluster["hosts"].items() if spec.get("role", "vmhost") == "vmhost"
    )


def _place(snap, domus, exclude=(), only=None):
    only = xenha_snapshot.vmhosts(snap) if only is None else only
    try:
        return xenha_placement.place(snap, domus, exclude=exclude, only=only)
    except xenha_placement.PlacementError as err:
        raise CommandExecutionError(f"cannot plan: {err}") from err


# --- status ------------------------------------------------------------------------------------


def _check_text(check):
    if not check:
        return "-"
    return ("ok: " if check.get("ok") else "PROBLEM: ") + check.get("detail", "")


def _lease_states(snap):
    """{host: lease verdict text}, each host's lease watched from one up peer (if any)."""
    up = [h for h in xenha_snapshot.vmhosts(snap) if snap["hosts"][h]["state"] != "down"]
    states = {}

    def watch(host):
        peers = [p for p in up if p != host]
        if not peers:
            return "no peer to watch it"
        ok, verdict = _call_one(peers[0], "xenha_lease.observe", [host])
        if not ok:
            return f"unknown ({verdict})"
        return f"{verdict.get('state')} (counter {verdict.get('counter')}, seen by {peers[0]})"

    hosts = xenha_snapshot.vmhosts(snap)
    with ThreadPoolExecutor(max(1, min(8, len(hosts)))) as pool:
        for host, text in zip(hosts, pool.map(watch, hosts), strict=True):
            states[host] = text
    return states


def status(leases=True):
    """
    One table of the cluster: every host (state up / suspect / fenced / down, maintenance,
    free/total memory, lease, NTP offset, iSCSI session, OCFS2 mount) and every domU (where it
    runs, state, memory), plus any problem seen (a domU running twice, a host down).

    leases
        Also watch each VM host's storage lease from a peer (``xenha_lease.observe``);
        ``leases=False`` skips it.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.status
        salt-run xenha.status --out=json
    """
    cluster = _cluster()
    snap = _snapshot(cluster, checks=True)
    lease_text = _lease_states(snap) if leases else {}
    hosts = []
    for name, spec in sorted(snap["hosts"].items()):
        checks = spec["checks"]
        free, total = spec["free_memory_mib"], spec["total_memory_mib"]
        hosts.append(
            {
                "host": name,
                "role": spec["role"],
                "state": spec["state"],
                "maintenance": spec["maintenance"],
                "memory_free_total_mib": f"{free}/{total}" if total is not None else "-",
                "lease": lease_text.get(name, "-"),
                "ntp": _check_text(checks.get("clock")),
                "iscsi": _check_text(checks.get("iscsi")) if spec["role"] == "vmhost" else "-",
                "ocfs2": _check_text(checks.get("ocfs2")) if spec["role"] == "vmhost" else "-",
                "error": spec["error"] or "",
            }
        )
    domus = [
        {
            "domu": name,
            "host": spec["host"] or ",".join(spec["running_on"]) or "-",
            "state": spec["state"],
            "memory_mib": spec["memory_mib"],
            "priority": spec["priority"],
            "managed": spec["managed"],
        }
        for name, spec in sorted(snap["domus"].items())
    ]
    return {"hosts": hosts, "domus": domus, "problems": snap["problems"]}


# --- plan (what-if) ----------------------------------------------------------------------------


def _preflight(snap, source, targets, transport, memory_after):
    """Rows (target, check, ok, detail) for the plumbing every target needs."""
    # compare with the source; when it does not answer (failure), with the most common version
    versions = sorted(v for v in (snap["hosts"][h]["xen_version"] for h in targets) if v)
    reference = snap["hosts"][source]["xen_version"] or (
        max(versions, key=versions.count) if versions else None
    )
    rows = []
    for target in targets:
        host = snap["hosts"][target]
        checks = dict(host["checks"])
        checks["transport"] = transport.get(target) or {
            "ok": False,
            "detail": f"not checked: {source} did not answer",
        }
        version = host["xen_version"]
        checks["toolstack"] = {
            "ok": version is not None and version == reference,
            "detail": f"xen {version} here, {reference} on {source}",
        }
        left = memory_after.get(target)
        checks["memory"] = {
            "ok": left is not None and left >= 0,
            "detail": f"{left} MiB left for domUs after the plan"
            if left is not None
            else "unknown",
        }
        for name in ("clock", "iscsi", "ocfs2", "transport", "toolstack", "memory"):
            check = checks.get(name) or {"ok": False, "detail": "no answer"}
            rows.append(
                {"target": target, "check": name, "ok": check["ok"], "detail": check["detail"]}
            )
    return rows


def plan(host, mode="maintenance"):
    """
    What-if, changing nothing: where every domU of ``host`` would go if the host were put in
    maintenance (live migration) or died now (restart elsewhere), which would not fit and why,
    and a plumbing preflight on every candidate target: clock offset within bound, iSCSI
    session up, OCFS2 mounted, migration transport from ``host`` reachable, same toolstack
    version, enough memory.

    host
        The VM host (Salt minion id) to evacuate or lose.
    mode
        ``maintenance`` (default) or ``failure``.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.plan ServVirt1
        salt-run xenha.plan ServVirt1 failure --out=json
    """
    if mode not in ACTIONS:
        raise SaltInvocationError(f"mode must be 'maintenance' or 'failure', got {mode!r}")
    cluster = _cluster(host)
    _vmhost(cluster, host)
    snap = _snapshot(cluster, checks=True, disks=mode == "maintenance")
    moving = xenha_snapshot.on_host(snap, host)
    # a live migration needs the disks on shared storage; a restart after a failure is the
    # failover's business (docs/failover.md)
    stays = {
        d: _shared_storage_problem(cluster, snap["domus"][d]) if mode == "maintenance" else None
        for d in moving
    }
    result = _place(snap, [d for d in moving if not stays[d]], exclude=[host])
    result["unplaced"].update({d: reason for d, reason in stays.items() if reason})
    targets = [
        h for h in xenha_snapshot.vmhosts(snap) if h != host and snap["hosts"][h]["state"] == "up"
    ]
    transport = {}
    if mode == "maintenance" and targets:
        names = {t: snap["hosts"][t]["hostname"] for t in targets}
        ok, value = _call_one(host, "xenha_preflight.transport", [sorted(names.values())])
        if ok:
            transport = {t: value.get(names[t]) for t in targets}
    elif mode == "failure":
        transport = {
            t: {"ok": True, "detail": "not needed: restart, not migration"} for t in targets
        }
    memory_after = _memory_after(snap, result["placement"], targets)
    placement = [
        {
            "domu": name,
            "from": host,
            "to": result["placement"].get(name, "-"),
            "memory_mib": snap["domus"][name]["memory_mib"],
            "priority": snap["domus"][name]["priority"],
            "action": ACTIONS[mode][name in result["placement"]],
            "reason": result["unplaced"].get(name, ""),
        }
        for name in moving
    ]
    return {
        "host": host,
        "mode": mode,
        "placement": placement,
        "preflight": _preflight(snap, host, targets, transport, memory_after),
        "problems": snap["problems"],
    }


def _memory_after(snap, placement, targets):
    left = {}
    for target in targets:
        spec = snap["hosts"][target]
        if spec["free_memory_mib"] is None:
            continue
        landed = sum(snap["domus"][d]["memory_mib"] for d, t in placement.items() if t == target)
        left[target] = spec["free_memory_mib"] - spec["memory_reserve_mib"] - landed
    return left


# --- moving domUs (evacuate, restore) ----------------------------------------------------------


def _where(name, hosts):
    """The hosts among ``hosts`` that list domU ``name`` (any xl migration suffix counts)."""
    found = set()
    for host, (ok, value) in _call(hosts, "xenha_xen.list_domains").items():
        if not ok:
            raise CommandExecutionError(f"cannot confirm where {name} runs: {value}")
        for raw in (value or {}).get("domus") or {}:
            if xenha_snapshot.split_name(raw)[0] == name:
                found.add((host, raw != name))
    return found


def _migration_running(source, name):
    """Whether a xenha_xen.migrate job for ``name`` still runs on ``source`` (unknown: yes)."""
    ok, jobs = _call_one(source, "saltutil.running")
    return not ok or any(
        j.get("fun") == "xenha_xen.migrate" and (j.get("arg") or [None])[0] == name
        for j in jobs or []
    )


def _settle(name, source, target, timeout, *, job_done=False):
    """
    Where ``name`` runs once its move from ``source`` to ``target`` is over: the one host that
    lists it under its plain name, or None (on neither, on both, or still in flight when
    ``timeout`` runs out). ``job_done``: the migrate call returned, so look once; otherwise wait
    for the job (it may outlive a killed runner) to finish on the source first.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy = not job_done and _migration_running(source, name)
        seen = set() if busy else _where(name, [source, target])
        plain = [h for h, transient in seen if not transient]
        if not busy and len(plain) == 1 and len(seen) == 1:
            return plain[0]
        if job_done or (not busy and not seen) or time.monotonic() > deadline:
            return None
        time.sleep(SETTLE_POLL)


def _classify(error):
    """A short reason from a failed migration's error text (xl / xm messages)."""
    text = error or ""
    for needle, reason in (
        ("No route to host", "target unreachable"),
        ("Could not resolve hostname", "target unreachable"),
        ("Connection refused", "target unreachable"),
        ("failed to free memory", "no room on target"),
        ("already exists", "a domain of that name already runs on the target"),
    ):
        if needle in text:
            return f"{reason}: {text.strip().splitlines()[-1][:300]}"
    last = text.strip().splitlines()[-1] if text.strip() else "no output"
    return f"migration failed: {last[:300]}"


class _Mover:
    """Runs and journals the moves of one evacuation or restore; thread-safe."""

    def __init__(self, cluster, host, kind, timeout, cold=False):
        self.cluster = cluster
        self.cold = cold  # the operator allows a cold move when a live one fails
        self.host = host
        self.kind = kind  # "evacuate" | "restore": names the journal and the event tags
        self.journal = f"{kind}-{host}"
        self.timeout = timeout
        self.lock = threading.Lock()

    def start(self, fresh=False):
        """Open (or resume) the journal, emptied first if ``fresh``; returns it."""
        with xenha_store.edit(_cachedir(), self.journal) as journal:
            if fresh:
                journal.clear()
            journal.setdefault("host", self.host)
            journal.setdefault("started", time.time())
            journal.setdefault("domus", {})
            journal["runs"] = journal.get("runs", 0) + 1
            journal["finished"] = None
        return journal

    def finish(self):
        """Close the journal; returns the result table."""
        with xenha_store.edit(_cachedir(), self.journal) as journal:
            journal["finished"] = time.time()
            return _table(journal)

    def record(self, name, **fields):
        with self.lock, xenha_store.edit(_cachedir(), self.journal) as journal:
            entry = journal.setdefault("domus", {}).setdefault(name, {})
            entry.update(fields)
            row = _row(name, entry)
        _fire(f"xenha/{self.kind}/{self.host}/domu/{name}", row)
        _progress(
            f"{self.kind} {self.host}: {name} {entry.get('outcome')} "
            f"{entry.get('from')} -> {entry.get('to')} {entry.get('reason', '')}".rstrip(),
            domu=name,
        )
        return row

    def move(self, name, source, target):
        """Live-migrate ``name`` from ``source`` to ``target`` and confirm where it runs."""
        hostname = self.cluster["hosts"][target].get("hostname", target)
        started = time.time()
        self.record(name, **{"from": source, "to": target, "outcome": "migrating", "reason": ""})
        # the target watches for the domU's arrival while the source migrates it, and takes
        # its lease over as soon as it runs there: no round trip after the migration
        watch = _Watch(
            target,
            "xenha_preflight.arrived",
            [name],
            {"handover_from": self.handover(source), "wait": self.timeout},
            self.timeout + CALL_TIMEOUT,
        )
        ok, value = _call_one(
            source, "xenha_xen.migrate", [name, hostname], {"timeout": self.timeout}, self.timeout
        )
        returned = time.time()
        seen = watch.result(ARRIVAL_GRACE if ok else 0)
        arrival = seen[1] if seen and seen[0] and isinstance(seen[1], dict) else {}
        if ok and arrival.get("here") and arrival.get("arrival"):
            # xenha_xen.migrate returned only once the source no longer listed the domU, and
            # the target saw it arrive and run under its own name
            where, lease = target, self.lease_problem(arrival)
        elif ok:  # the watch did not see the arrival (late, paused domU, no answer): ask now
            where, lease = self.arrived(name, source, target)
        else:
            answered = not value.startswith("no answer")
            where, lease = _settle(name, source, target, self.timeout, job_done=answered), ""
            if where == target:
                lease = self.arrived(name, source, target)[1]
            elif arrival.get("lease") == "taken":
                lease = f"{target} took its lease when it saw {name} run there"
        extra = {}
        if ok and isinstance(value, dict):
            extra["toolstack_s"] = value.get("seconds")
            extra["timeline"] = _timeline(started, value.get("timeline"), returned, arrival)
        duration = round(time.time() - started, 3)
        if where == target:
            outcome, reason = "migrated", "" if ok else f"confirmed on {target} after: {value}"
            reason = "; ".join(r for r in (reason, lease) if r)
        elif where == source:
            outcome, reason = "stayed", "; ".join(r for r in (_classify(value), lease) if r)
            if self.cold:
                return self.cold_move(name, source, target, reason, started)
        else:
            outcome = "UNCERTAIN"
            reason = f"{name} not seen running on exactly one of {source}, {target}: check both"
            reason += "".join(f"; {r}" for r in ("" if ok else value, lease) if r)
        return self.record(name, outcome=outcome, reason=reason, duration_s=duration, **extra)

    def cold_move(self, name, source, target, why, started):
        """
        The live move failed and the operator asked for cold moves: shut the domU down cleanly
        on the source (confirmed gone), take its lease for the target, start it there from its
        config on the shared storage and confirm. If it cannot start there, start it back on the
        source. Never forced: a domU that does not shut down stays running where it is.
        """
        config = ((self.cluster.get("domus") or {}).get(name) or {}).get("config")
        if not config:
            reason = f"{why}; no cold move: xenha:domus:{name}:config is not set"
            return self.record(name, outcome="stayed", reason=reason)
        self.record(name, outcome="cold-moving", reason=why)
        ok, value = _call_one(source, "xenha_xen.shutdown", [name], {"timeout": SHUTDOWN_TIMEOUT})
        if not ok:
            reason = f"{why}; cold move: clean shutdown failed, still on {source}: {value}"
            return self.record(name, outcome="stayed", reason=reason)
        problem = self.start_on(name, config, target, source)
        if problem is None:
            duration = round(time.time() - started, 3)
            return self.record(name, outcome="cold-migrated", reason=why, duration_s=duration)
        back = self.start_on(name, config, source, target)
        outcome, reason = ("stayed", f"{why}; cold move: {problem}; restarted on {source}")
        if back is not None:
            outcome, reason = "DOWN", f"{why}; cold move: {problem}; restart on {source}: {back}"
        return self.record(name, outcome=outcome, reason=reason)

    def start_on(self, name, config, host, previous):
        """Take the lease from ``previous`` and start ``name`` on ``host``; None or the problem."""
        if self.cluster.get("leases"):
            ok, value = _call_one(
                host, "xenha_lease.acquire_domu", [name], {"handover_from": previous}
            )
            if not ok:
                return f"lease not taken on {host}: {value}"
        ok, value = _call_one(host, "xenha_xen.start", [config])
        if not ok:
            return f"start on {host} failed: {value}"
        return None

    def handover(self, source):
        return source if self.cluster.get("leases") else None

    @staticmethod
    def lease_problem(answer):
        lease = answer.get("lease", "")
        return "" if lease in ("taken", "not configured") else lease

    def arrived(self, name, source, target):
        """(target or None, lease problem or ""): the domU on the target, lease handed over."""
        ok, value = _call_one(
            target, "xenha_preflight.arrived", [name], {"handover_from": self.handover(source)}
        )
        if not ok or not value.get("here"):
            return None, ""
        return target, self.lease_problem(value)


def _timeline(started, job, returned, arrival):
    """
    Where a move's time went, seconds from its start (docs/runner.md, "where the time goes"):
    the migrate job's start on the source, the toolstack's end, the source's listing (these
    three by the source's clock), the answer back in the runner, the move confirmed on the
    target (the arrival watch's answer, or the call after it), and the watch's looks there.
    """
    now = time.time()
    marks = {"job_started": "entry", "toolstack_done": "toolstack_done", "listed": "listed"}
    job = job if isinstance(job, dict) else {}
    line = {mark: job.get(key) for mark, key in marks.items() if isinstance(job.get(key), float)}
    line.update(migrate_returned=returned, confirmed=now)
    line = {mark: round(at - started, 3) for mark, at in line.items()}
    if arrival.get("looks") is not None:
        line["target_looks"] = arrival["looks"]
    return line


def _resolve_in_flight(mover, journal):
    """
    An earlier run died while these moves were in flight: wait for each to settle (the
    migration job may still run on the source minion) and record where the domU ended up.
    """
    for name, entry in sorted((journal.get("domus") or {}).items()):
        if entry.get("outcome") == "cold-moving":
            _finish_cold_move(mover, name, entry["from"], entry["to"])
        if entry.get("outcome") != "migrating":
            continue
        _progress(f"resuming: waiting for the interrupted move of {name} to settle")
        source, target = entry["from"], entry["to"]
        where = _settle(name, source, target, mover.timeout)
        _stop_watches(target, name)
        if where == target:
            lease = mover.arrived(name, source, target)[1]
            reason = "; ".join(r for r in ("completed while the runner was away", lease) if r)
            mover.record(name, outcome="migrated", reason=reason)
        elif where == source:
            mover.record(name, outcome="pending", reason="interrupted; will retry")
        else:
            mover.record(name, outcome="UNCERTAIN", reason="interrupted; not found on either host")


def _stop_watches(host, name):
    """Kill the arrival watches for ``name`` a killed runner left running on ``host``."""
    ok, jobs = _call_one(host, "saltutil.running")
    if not ok:  # the target does not answer: its watches end by themselves after their wait
        return
    for job in jobs or []:
        if job.get("fun") == "xenha_preflight.arrived" and (job.get("arg") or [None])[0] == name:
            _call_one(host, "saltutil.kill_job", [job["jid"]], timeout=KILL_TIMEOUT)


def _finish_cold_move(mover, name, source, target):
    """A cold move was interrupted: record where the domU runs, or start it on the target."""
    seen = _where(name, [source, target])
    plain = [h for h, transient in seen if not transient]
    if len(plain) == 1 and len(seen) == 1:
        outcome = "cold-migrated" if plain[0] == target else "pending"
        mover.record(name, outcome=outcome, reason="interrupted cold move, found on " + plain[0])
    elif seen:
        mover.record(name, outcome="UNCERTAIN", reason="interrupted cold move: check both hosts")
    else:  # shut down on the source and not started yet: finish the job
        config = ((mover.cluster.get("domus") or {}).get(name) or {}).get("config")
        problem = mover.start_on(name, config, target, source) if config else "no config"
        outcome = "cold-migrated" if problem is None else "DOWN"
        mover.record(
            name, outcome=outcome, reason=f"interrupted cold move resumed: {problem or 'ok'}"
        )


def _on_shared_storage(path, mount):
    """Whether a disk path (``pdev_path``) is one every VM host reaches the same way."""
    if path.startswith("iscsi://"):  # QEMU's own iSCSI initiator: network storage
        return True
    if not path.startswith("/"):
        return False
    path = posixpath.normpath(path)  # "/cluster/../var/x.img" is not under /cluster
    return path.startswith(mount) or (
        path.startswith("/dev/disk/by-path/ip-") and "-iscsi-" in path
    )


def _shared_storage_problem(cluster, domu):
    """
    Why a domU's disks keep it from moving live, or None. Shared: files under the OCFS2 mount
    point, iSCSI by-path devices, ``iscsi://`` URLs; anything else is local to its host. Known
    from the toolstack (``xl list -l``); unknown disks (``xm``) are not checked.
    """
    mount = (cluster.get("ocfs2") or {}).get("mount_point", "/cluster").rstrip("/") + "/"
    local = [str(d) for d in domu.get("disks") or [] if not _on_shared_storage(str(d), mount)]
    return f"disk not on shared storage: {', '.join(local)}" if local else None


def _run_moves(mover, moves, parallel):
    """Run ``moves`` ([(domU, source, target)]) with at most ``parallel`` at once."""
    if not moves:
        return []
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        futures = [pool.submit(mover.move, *move) for move in moves]
    rows = []
    for (name, source, target), future in zip(moves, futures, strict=True):
        try:
            rows.append(future.result())
        except (CommandExecutionError, SaltInvocationError) as err:  # one failure stops no other
            rows.append(mover.record(name, outcome="UNCERTAIN", reason=str(err)))
            log.error("xenha: moving %s from %s to %s: %s", name, source, target, err)
    return rows


def _parallel(cluster, parallel):
    value = parallel if parallel is not None else (cluster.get("evacuation") or {}).get("parallel")
    value = DEFAULT_PARALLEL if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SaltInvocationError(f"parallel must be a positive integer, got {value!r}")
    return value


def _row(name, entry):
    return {
        "domu": name,
        "from": entry.get("from"),
        "to": entry.get("to") or "-",
        "duration_s": entry.get("duration_s", 0),
        "outcome": entry.get("outcome"),
        "reason": entry.get("reason", ""),
    }


def _table(journal):
    return [_row(name, entry) for name, entry in sorted((journal.get("domus") or {}).items())]


def evacuate(host, parallel=None, timeout=MIGRATE_TIMEOUT, cold=False):
    """
    Put ``host`` in maintenance (failover and placement stop choosing it) and live-migrate its
    domUs away: placement picks each target (free memory, priorities, anti-affinity), at most
    ``parallel`` migrations run at once, and each move is confirmed on the target before it is
    reported. A domU that cannot move live (no room, target unreachable, disk not on shared
    storage, migration failed) stays running where it is and the result says why; one failure
    does not stop the others. Re-running after an interruption finishes the job (the journal
    under the master cachedir remembers what was in flight).

    Events: ``xenha/evacuate/<host>/start``, ``.../domu/<domU>`` per step, ``.../done``;
    progress through the runner's job events.

    host
        The VM host (Salt minion id) to empty.
    parallel
        Concurrent migrations (default: pillar ``xenha:evacuation:parallel``, else 2).
    timeout
        Seconds one migration may take before it is reported UNCERTAIN.
    cold
        ``True``: when a live migration fails (target unreachable, migration failed), shut the
        domU down cleanly and start it on the target instead (outcome ``cold-migrated``). Off by
        default: nothing is ever stopped unless the operator asks.

    Returns the result table: one row per domU (domu, from, to, duration_s, outcome, reason),
    outcome ``migrated``, ``cold-migrated``, ``stayed``, ``UNCERTAIN`` or ``DOWN`` (a cold
    move that could start the domU neither on the target nor back on the source).

    CLI Example:

    .. code-block:: bash

        salt-run xenha.evacuate ServVirt1
        salt-run xenha.evacuate ServVirt1 parallel=1 --out=table
        salt-run xenha.evacuate ServVirt1 cold=True
    """
    cluster = _cluster(host)
    _vmhost(cluster, host)
    parallel = _parallel(cluster, parallel)
    with xenha_store.edit(_cachedir(), MAINTENANCE) as doc:
        doc.setdefault(host, {"since": time.time(), "by": "evacuate"})
    with _reused_clients():
        return _evacuate(cluster, host, parallel, timeout, cold)


def _evacuate(cluster, host, parallel, timeout, cold):
    mover = _Mover(cluster, host, "evacuate", timeout, cold=bool(cold))
    journal = mover.start()
    _fire(f"xenha/evacuate/{host}/start", {"host": host, "parallel": parallel})
    _progress(f"evacuate {host}: in maintenance, planning")
    _resolve_in_flight(mover, journal)

    # only the VM hosts matter here (the storage host has no domUs), with each domU's disks
    snap = _snapshot(cluster, hosts=_vmhost_names(cluster), disks=True)
    todo = [d for d in xenha_snapshot.on_host(snap, host) if not snap["domus"][d]["migrating"]]
    stays = {d: _shared_storage_problem(cluster, snap["domus"][d]) for d in todo}
    result = _place(snap, [d for d in todo if not stays[d]], exclude=[host])
    with xenha_store.edit(_cachedir(), mover.journal) as doc:
        doc["planned"] = time.time()  # the snapshot and the plan took from "started" to here
    stays.update(result["unplaced"])
    for name, reason in sorted(stays.items()):
        if reason:
            mover.record(name, **{"from": host, "to": None, "outcome": "stayed", "reason": reason})
    _run_moves(mover, [(d, host, t) for d, t in result["placement"].items()], parallel)

    table = mover.finish()
    _fire(f"xenha/evacuate/{host}/done", {"host": host, "result": table})
    return table


def restore(host, move_back=False, parallel=None, timeout=MIGRATE_TIMEOUT):
    """
    End maintenance of ``host``; with ``move_back=True`` also live-migrate back the domUs that
    its last evacuation moved away (those still running elsewhere and fitting on it), with the
    same confirm-and-explain rules as evacuate.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.restore ServVirt1
        salt-run xenha.restore ServVirt1 move_back=True
    """
    cluster = _cluster(host)
    _vmhost(cluster, host)
    with xenha_store.edit(_cachedir(), MAINTENANCE) as doc:
        was = doc.pop(host, None)
    evacuation = xenha_store.load(_cachedir(), f"evacuate-{host}")
    _fire(f"xenha/restore/{host}/start", {"host": host, "move_back": bool(move_back)})
    _progress(
        f"restore {host}: maintenance ended" if was else f"restore {host}: not in maintenance"
    )
    table = []
    if move_back:
        with _reused_clients():
            table = _move_back(cluster, host, evacuation, parallel, timeout)
    xenha_store.delete(_cachedir(), f"evacuate-{host}")
    _fire(f"xenha/restore/{host}/done", {"host": host, "result": table})
    return table


def _move_back(cluster, host, evacuation, parallel, timeout):
    """restore's move_back: the domUs the evacuation migrated away, back onto ``host``."""
    mover = _Mover(cluster, host, "restore", timeout)
    journal = xenha_store.load(_cachedir(), mover.journal)
    # a finished restore journal is history; an unfinished one is resumed
    _resolve_in_flight(mover, mover.start(fresh=bool(journal.get("finished"))))
    snap = _snapshot(cluster, hosts=_vmhost_names(cluster))
    left = [
        d
        for d, entry in sorted((evacuation.get("domus") or {}).items())
        if entry.get("outcome") == "migrated"
        and snap["domus"].get(d, {}).get("host") not in (None, host)
        and not snap["domus"][d]["migrating"]
    ]
    result = _place(snap, left, only=[host])
    for name, reason in sorted(result["unplaced"].items()):
        where = snap["domus"][name]["host"]
        mover.record(name, **{"from": where, "to": None, "outcome": "stayed", "reason": reason})
    moves = [(d, snap["domus"][d]["host"], host) for d in sorted(result["placement"])]
    _run_moves(mover, moves, _parallel(cluster, parallel))
    return mover.finish()


# =============================================================================================
# Failover (owned by the failover engineer): append failover functions below this line.
# =============================================================================================
# --- failover ---
# Heartbeat loss -> verify the claim, corroborate, fence (IPMI / lease expiry / operator ack),
# restart the dead host's domUs on survivors. The state machine is _utils/xenha_failover.py;
# this is its Salt adapter and the operator's commands. See docs/failover.md.

import xenha_failover  # noqa: E402 - the failover section keeps its imports with it
import xenha_fence  # noqa: E402

PING_TIMEOUT = 1.0  # s: does the master still reach the suspect's minion? (xenha:failover)
START_TIMEOUT = 120  # s: taking a domU's lease and starting it on a survivor


def _answers_ping(minion, timeout):
    """
    Whether ``minion`` returns test.ping within ``timeout`` seconds. Waits for the return event
    itself: LocalClient.cmd would add a find_job round (gather_job_timeout) to every ping of a
    dead minion, and it counts its timeout from a whole second.
    """
    client = salt.client.get_local_client(__opts__["conf_file"])
    deadline = time.monotonic() + timeout
    try:
        pub = client.run_job([minion], "test.ping", tgt_type="list", timeout=timeout, listen=True)
        if not pub or "jid" not in pub:
            return False
        tag = f"salt/job/{pub['jid']}/ret/{minion}"
        while (left := deadline - time.monotonic()) > 0:
            # wait must stay above 0: get_event(wait=0) blocks for ever
            got = client.event.get_event(wait=max(left, 0.01), tag=tag, full=True)
            if got and (got.get("data") or {}).get("return") is True:
                return True
        return False
    finally:
        client.destroy()


class _SaltFailoverIO(xenha_failover.Adapter):
    """The failover engine's I/O through this runner's Salt edge."""

    def __init__(self, cluster, early_ping=None):
        self.cluster = cluster
        # (host, future) of a ping sent as the claim came in, while the pillar compiled: the
        # first corroboration uses it, every later one (a retry) pings afresh
        self.early_ping = early_ping

    def members(self):
        hosts = self.cluster.get("hosts") or {}
        return {
            "vmhosts": {h: s for h, s in hosts.items() if s.get("role", "vmhost") == "vmhost"},
            "domus": self.cluster.get("domus") or {},
        }

    def ping(self, host):
        timeout = (self.cluster.get("failover") or {}).get("ping_timeout", PING_TIMEOUT)
        early, self.early_ping = self.early_ping, None
        if early and early[0] == host and timeout == PING_TIMEOUT:
            return early[1].result()
        return _answers_ping(host, timeout)

    def _must(self, minion, fun, arg=(), kwarg=None, timeout=CALL_TIMEOUT):
        ok, value = _call_one(minion, fun, arg, kwarg, timeout)
        if not ok:
            raise CommandExecutionError(value)
        return value

    def observe(self, observer, host, duration):
        # settled: the observer's lease renewer has watched the peer all along, so a lease seen
        # unchanged that long before the call already counts
        kwarg = {"duration": duration, "settled": duration}
        return self._must(observer, "xenha_lease.observe", [host], kwarg, duration + CALL_TIMEOUT)

    def fence_ipmi(self, host, bmc):
        return xenha_fence.power_off(bmc)

    def leased_domus(self, observer, host):
        return sorted(self._must(observer, "xenha_lease.owned", [host]))

    def snapshot(self, hosts):
        found = {}
        answers = _call(hosts, "xenha_preflight.report", kwarg={"checks": False})
        for host, (ok, report) in answers.items():
            info = (report or {}).get("info") if ok else None
            if not info:
                continue
            names = ((report.get("domains") or {}).get("domus") or {}).keys()
            found[host] = {
                "free_memory_mib": info["free_memory_mib"],
                "total_memory_mib": info.get("total_memory_mib"),
                "domus": sorted({xenha_snapshot.split_name(n)[0] for n in names}),
            }
        return found

    def host_states(self):
        maintenance, hoststate = _marks()
        states = {h: "maintenance" for h in maintenance}
        states.update({h: m.get("state", "suspect") for h, m in hoststate.items()})
        return states

    def start_domu(self, host, name, spec, fenced):
        # lease and start in one round trip: this is the last step before the domU is back
        kwarg = {"fenced": fenced}
        arg = [name, spec["config"]]
        return self._must(host, "xenha_lease.start_domu", arg, kwarg, timeout=START_TIMEOUT)

    def fire(self, tag, data):
        # master bus only: progress events would break `salt-run --out=json` for scripts
        _fire(tag, data)

    def audit(self, entry):
        xenha_failover.audit_line(_audit_path(), entry)


def _audit_path():
    return xenha_failover.audit_path(_cachedir())


def _failover_engine(cluster, early_ping=None):
    settings = dict(cluster.get("failover") or {})
    settings.setdefault("expiry", (cluster.get("leases") or {}).get("expiry"))
    return xenha_failover.Engine(_SaltFailoverIO(cluster, early_ping), _cachedir(), settings)


def failover(host, reporter=None, event=None):
    """
    Handle a heartbeat-loss claim about ``host`` (the reactor calls this with the reporting
    minion and the event data; an operator may call it with ``host`` alone). The claim is
    verified (the reporter is a cluster VM host, the event's ids match), corroborated (the master
    cannot reach ``host`` and no survivor sees its storage lease advance), the host is fenced
    (BMC power-off confirmed, else its lease provably expired; otherwise ``blocked`` and retried
    with back-off), then its domUs are restarted on survivors by priority. Concurrent and
    repeated calls for one host join the one failover; events ``xenha/failover/<host>/...``;
    audit trail ``<cachedir>/xenha/audit.log``.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.failover ServVirt1
    """
    try:
        xenha_names.check("host", host)
    except CommandExecutionError as err:
        entry = {"time": time.time(), "host": "-", "step": "ignored", "reporter": reporter}
        xenha_failover.audit_line(_audit_path(), {**entry, "reason": str(err)})
        _fire("xenha/failover/invalid/ignored", {"reporter": reporter, "reason": str(err)})
        return {"host": host, "state": "ignored", "reason": str(err)}
    # a ping changes nothing: send it now and compile the pillar (a good part of a second)
    # while it runs; the engine still verifies the claim before it looks at the answer
    with ThreadPoolExecutor(1) as pool:
        early = (host, pool.submit(_answers_ping, host, PING_TIMEOUT))
        return _failover_engine(_cluster(host), early).handle(host, reporter, event)


def ack_fence(host):
    """
    Confirm that ``host`` has been fenced by hand (powered off, unplugged): a failover blocked
    on fencing then restarts its domUs. Only say so when it is true: the domUs are started
    elsewhere on your word.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.ack_fence ServVirt1
    """
    cluster = _cluster(xenha_names.check("host", host))
    _vmhost(cluster, host)
    return _failover_engine(cluster).ack(host, by="salt-run xenha.ack_fence")


def failover_resume():
    """
    Continue every failover left unfinished (master restart, blocked past its retry window),
    look again at isolated hosts that still renewed their lease, mark failed-over hosts that
    are back as healthy, and start the domUs of a host still down that fitted nowhere once a
    survivor has room. Safe to run at any time (e.g. from the master's schedule); returns one
    row per journal.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.failover_resume
    """
    journals = xenha_failover.journals(_cachedir())
    if not journals:
        return []
    rows = []
    for host, journal in journals.items():
        recheck = journal.get("state") == xenha_failover.IGNORED and journal.get("recheck")
        if recheck or journal.get("state") in (*xenha_failover.ACTIVE, xenha_failover.DONE):
            rows.append(_failover_engine(_cluster(host)).resume(host))
        else:
            rows.append({k: journal.get(k) for k in ("host", "id", "state", "reason")})
    return rows


def failover_status(host=None):
    """
    The failover journals (one row per host, or the one for ``host``): state, fence method,
    reason, each domU's outcome, times; plus the last lines of the audit trail.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.failover_status
        salt-run xenha.failover_status ServVirt1 --out=json
    """
    journals = xenha_failover.journals(_cachedir())
    if host is not None:
        xenha_names.check("host", host)
        journals = {host: journals.get(host) or {"host": host, "state": None}}
    rows = []
    for name, journal in sorted(journals.items()):
        domus = journal.get("domus") or {}
        rows.append(
            {
                "host": name,
                "state": journal.get("state"),
                "id": journal.get("id"),
                "fence": (journal.get("fence") or {}).get("method"),
                "reason": journal.get("reason"),
                "domus": {
                    d: {
                        k: e[k]
                        for k in ("state", "host", "target", "reason", "error", "seconds")
                        if e.get(k) is not None
                    }
                    for d, e in domus.items()
                },
                "seconds": journal.get("seconds"),
                "started": journal.get("started"),
                "updated": journal.get("updated"),
            }
        )
    try:
        with open(_audit_path(), encoding="utf-8") as fh:
            audit = fh.read().splitlines()[-20:]
    except FileNotFoundError:
        audit = []
    return {"failovers": rows, "audit": audit}
