"""
xenha's master-side runner: cluster status, what-if plans, maintenance (evacuate / restore /
failback), then the failover, its report and metrics, and guest monitoring, each in a section.

Policy is pure and lives in ``_utils``: ``xenha_snapshot`` turns minion answers into a cluster
snapshot, ``xenha_placement`` decides where domUs go. This module is the Salt edge: it reads the
cluster description from the master's pillar view, calls the minions (``xenha_preflight.report``,
``xenha_xen.migrate`` ...), fires events and keeps what must survive a master restart (the
maintenance flags and each evacuation's journal) in ``xenha_store`` under the master cachedir.

Every command answers with a dict of data. Without ``--out`` salt-run prints it through the
``xenha`` outputter (``_output/xenha.py``: one-line errors, aligned tables, a summary line);
``--out=json|yaml`` gives the data itself. A bad argument or an outcome short of what was asked
sets ``retcode`` in the data, which salt-run turns into its exit code. See docs/runner.md.
"""

import contextlib
import functools
import inspect
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
import xenha_alerting
import xenha_capacity
import xenha_failback
import xenha_failover
import xenha_fence
import xenha_guestmon
import xenha_metrics
import xenha_moves
import xenha_names
import xenha_pillarcheck
import xenha_placement
import xenha_report
import xenha_sanlockcfg
import xenha_seal
import xenha_snapshot
import xenha_store
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "xenha"

CALL_TIMEOUT = 30  # seconds to wait for a minion's answer to a call that does work
# seconds status and plan wait for a host's report; hosts the failover marked fenced or suspect
# are not waited for at all (an incident is when an operator needs a quick, true answer)
REPORT_WAIT = 10
# seconds a move waits for a target under a failover check (suspect: a claim being checked, which
# ends within seconds, e.g. a heartbeat missed under load) before it plans without that target
SUSPECT_WAIT = 30
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
BAD_ARGUMENT, SHORT_OF_ASKED = 2, 1  # exit codes: the call was wrong; it did not achieve all
MARKED_DOWN = ("fenced", "suspect")  # failover marks of hosts a report is not waited for
MAINTENANCE = "maintenance"
# plan's action per mode, for a domU that fits somewhere (True) or nowhere (False)
ACTIONS = {
    "maintenance": {True: "live-migrate", False: "stays"},
    "failure": {True: "restart", False: "stays down"},
}
HOSTSTATE = "hoststate"
LAST_SEEN = "lastseen"  # store document: {host: {"time", "domus"}} from its last answer


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


PROVE = "xenha_proof.call"  # the minion function that signs an answer with the minion's key


def _sealed(fun, arg=(), kwarg=None):
    """``(nonce, arguments of xenha_proof.call)`` that run ``fun`` and seal its answer."""
    nonce = xenha_seal.nonce()
    return nonce, [nonce, fun, list(arg), kwarg or {}]


def _accepted_key(minion):
    """The public key the master accepted for ``minion`` (PEM text), or None."""
    return salt.key.get_key(__opts__).key_str(minion).get("minions", {}).get(minion)


def _proven(minion, fun, nonce, got):
    """
    The one rule for a return the runner takes as evidence from the bus: ``(ok, value or error
    text)`` of an answer that ``minion`` sealed with its own key for this call's ``nonce``
    (xenha_proof.call); ``(None, why)`` for anything else, which the caller ignores as if it
    had not come. Any minion can put a return in another's name on the bus, and have the master
    store it in the job cache under that name (_utils/xenha_seal.py, docs/runner.md).
    """
    if not isinstance(got, dict):
        return None, "no answer"
    ret = got["ret"] if "ret" in got else got.get("return")
    try:
        outcome = xenha_seal.unseal(_accepted_key(minion), minion, nonce, fun, ret)
    except xenha_seal.ProofError as err:
        log.warning("xenha: ignored an answer to %s in the name of %s: %s", fun, minion, err)
        return None, f"an answer in its name was not signed by it ({err})"
    if outcome.get("ok") is True:
        return True, outcome.get("value")
    return False, f"{fun} on {minion} failed: {outcome.get('error')}"


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


def _call_proven(minion, fun, arg=(), kwarg=None, timeout=CALL_TIMEOUT):
    """
    ``(ok, value or error text)`` of ``fun`` on ``minion`` for answers taken as evidence: asked
    through xenha_proof.call and believed only when ``minion`` signed it for this call's nonce.
    An answer in its name that it did not sign counts as no answer.
    """
    if _accepted_key(minion) is None:
        # nothing it answers could be proven; and a call to an unknown minion would have
        # Salt print "No minions matched the target" into the runner's --out=json output
        return False, f"{minion} has no Salt key the master accepted: no answer is evidence"
    nonce, args = _sealed(fun, arg, kwarg)
    with _client_for_call() as client:
        returns = client.cmd(
            [minion], PROVE, arg=args, tgt_type="list", timeout=timeout, full_return=True
        )
    got = returns.get(minion)
    if not isinstance(got, dict) or "ret" not in got or got.get("retcode", 0) != 0:
        # no answer, or Salt's own failure text ("Minion did not return. [Not connected]"):
        # said as it is, and like any failure it proves nothing
        return _answer(minion, fun, got, timeout)
    ok, value = _proven(minion, fun, nonce, got)
    return (False, value) if ok is None else (ok, value)


_PRINT = threading.Lock()


def _for_people():
    """Whether salt-run prints for a person (no ``--out`` naming a machine format)."""
    return __opts__.get("output") not in MACHINE_OUTPUTS


def _progress(message, **data):
    """
    One progress line for the operator, and the same as an event under the runner's job tag.
    Never through ``__jid_event__``: the movers' worker threads report here, and that shared
    event object's loop is not thread-safe (fired from two threads at once it stopped the
    loop under salt-run's own final event: "RuntimeError: Event loop stopped before Future
    completed", the run lost with its result table).
    """
    log.info("xenha: %s", message)
    jid = globals().get("__jid__")
    if jid:
        _fire(f"salt/run/{jid}/progress", {"message": message, **data})
    if _for_people():
        with _PRINT:
            print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _answer_for(data):
    """A command's answer: its data, printed by the xenha outputter unless --out says else."""
    return {"outputter": "xenha", "data": data}


def _command(fun):
    """
    A public command: arguments bound before it runs, SaltInvocationError (a bad argument) and
    CommandExecutionError (a failure) turned into one line with an exit code, instead of Salt's
    docstring dump or traceback.
    """
    signature = inspect.signature(fun)

    @functools.wraps(fun)
    def command(*args, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("__")}
        try:
            signature.bind(*args, **kwargs)
        except TypeError as err:
            error = f"xenha.{fun.__name__}: {err} (salt-run -d xenha.{fun.__name__} shows usage)"
            return _answer_for({"error": error, "retcode": BAD_ARGUMENT})
        try:
            return _answer_for(fun(*args, **kwargs))
        except SaltInvocationError as err:
            return _answer_for({"error": f"xenha.{fun.__name__}: {err}", "retcode": BAD_ARGUMENT})
        except CommandExecutionError as err:
            return _answer_for({"error": f"xenha.{fun.__name__}: {err}", "retcode": SHORT_OF_ASKED})

    return command


def _short_of(data, summary):
    """``data`` with its one-line ``summary`` and the exit code of an outcome short of asked."""
    return {**data, "summary": summary, "retcode": SHORT_OF_ASKED}


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
        self.nonce, self.arg = _sealed(fun, arg, kwarg)
        self.jid = salt.utils.jid.gen_jid(__opts__)
        self.answer = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"xenha-watch-{minion}", daemon=True)
        self.thread.start()

    def _run(self):
        # a client of its own: an abandoned iteration must not leave a shared one half-read
        client = salt.client.get_local_client(__opts__["conf_file"])
        returns = None
        try:
            returns = client.cmd_iter_no_block(
                [self.minion],
                PROVE,
                arg=self.arg,
                tgt_type="list",
                timeout=self.timeout,
                jid=self.jid,
            )
            for ret in returns:
                if ret and self.minion in ret:
                    ok, value = _proven(self.minion, self.fun, self.nonce, ret[self.minion])
                    if ok is not None:  # a forged answer is no answer: Salt may end the
                        self.answer = (ok, value)  # iteration on it, then result() asks again
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


def _reports(hosts, kwarg, wait=REPORT_WAIT, patient=False):
    """
    Each host's ``xenha_preflight.report``, asked of all at once: ``{host: (ok, value, s)}``
    with the seconds its answer took. Waits at most ``wait`` s, and (unless ``patient``) not
    at all for a host the failover marked fenced or suspect (its answer counts if it comes
    while others are awaited).
    """
    hosts = sorted(set(hosts))
    marks = {} if patient else _marks()[1]
    needed = {h for h in hosts if (marks.get(h) or {}).get("state") not in MARKED_DOWN}
    with _client_for_call() as client:
        return _gather(client, hosts, needed, kwarg=kwarg, wait=wait, marks=marks)


@contextlib.contextmanager
def _client_for_call():
    """This thread's reused client (inside _reused_clients), else one closed after the call."""
    client = _client()
    try:
        yield client
    finally:
        if not _REUSE["on"]:
            client.destroy()


def _gather(client, hosts, needed, *, kwarg, wait, marks):
    """
    Publish the report call once and collect answers until ``needed`` all came, or ``wait``.
    A needed host silent halfway through is asked once more (the report only reads): a
    publish a minion never received, e.g. while it reconnected, costs no more than that.
    """
    started = time.monotonic()
    fun = "xenha_preflight.report"
    asked = {}  # jid: the nonce its answers must be sealed with

    def publish(targets):
        nonce, arg = _sealed(fun, kwarg=kwarg)
        pub = client.run_job(
            sorted(targets), PROVE, arg=arg, tgt_type="list", timeout=wait, listen=True
        )
        if pub and "jid" in pub:
            asked[pub["jid"]] = nonce

    publish(hosts)
    if not asked:
        return {h: (False, "the master could not publish the report call", None) for h in hosts}
    again, got, ignored = started + wait / 2, {}, {}
    while not needed <= set(got) and (left := started + wait - time.monotonic()) > 0:
        silent = needed - set(got) - set(ignored)
        if again is not None and time.monotonic() >= again and silent:
            log.warning("xenha: no report from %s in %.0f s: asked again", sorted(silent), wait / 2)
            publish(silent)
            again = None  # once
        # wait must stay above 0: get_event(wait=0) blocks for ever
        event = client.event.get_event(wait=max(min(left, 0.5), 0.01), tag="salt/job/", full=True)
        _, _, jid, ret, minion = ((event or {}).get("tag", "").split("/") + [""] * 5)[:5]
        if ret == "ret" and jid in asked and minion in hosts and minion not in got:
            ok, value = _proven(minion, fun, asked[jid], event["data"])
            if ok is None:
                ignored[minion] = value
                continue
            got[minion] = (ok, value, round(time.monotonic() - started, 2))
    for host in hosts:
        if host not in got:
            mark = (marks.get(host) or {}).get("state")
            why = (
                f"not waited for: marked {mark} by the failover"
                if mark in MARKED_DOWN
                else f"no answer within {wait} s"
            )
            if host in ignored:
                why += f"; ignored: {ignored[host]}"
            got[host] = (False, why, None)
    return got


def _snapshot(cluster, checks=False, hosts=None, disks=False, *, wait=CALL_TIMEOUT, **asks):
    """
    Ask cluster hosts (all, or ``hosts``) for their report and build the snapshot; a host not
    asked is left as if it had not answered. ``disks``: with each domU's disk paths. Each host
    gets ``answered_s`` (how long its answer took; None: none came). ``wait``: seconds for the
    answers (status and plan: REPORT_WAIT; moves, which need every target: CALL_TIMEOUT);
    ``patient``: wait for hosts the failover marked too (see _reports); ``leases``: with each
    host's view of its peers' leases; ``remember``: keep what each host runs (status only:
    plan writes nothing).
    """
    kwarg = {"checks": checks, **({"disks": True} if disks else {})}
    kwarg.update({"leases": True} if asks.get("leases") else {})
    asked = cluster["hosts"] if hosts is None else hosts
    answers = _reports(asked, kwarg, wait, asks.get("patient", False))
    reports = {h: value if ok else None for h, (ok, value, _) in answers.items()}
    maintenance, hoststate = _marks()
    # what each host ran when it last answered: a domU nobody manages, lost with its host, is
    # still named (status's problems) instead of vanishing from every answer
    if asks.get("remember"):
        with xenha_store.edit(_cachedir(), LAST_SEEN) as doc:
            doc.update(xenha_snapshot.seen(reports, time.time()))
            last_seen = dict(doc)
    else:
        last_seen = xenha_store.load(_cachedir(), LAST_SEEN)
    snap = xenha_snapshot.build(cluster, reports, maintenance, hoststate, last_seen)
    snap["reports"] = reports
    for host, (ok, value, seconds) in answers.items():
        snap["hosts"][host]["answered_s"] = seconds
        if not ok:
            snap["hosts"][host]["error"] = value
    return snap


def _host_arg(host):
    """A host argument with a valid name, else a bad-argument error naming it."""
    try:
        return xenha_names.check("host", host)
    except CommandExecutionError as err:
        raise SaltInvocationError(str(err)) from err


def _vmhost(cluster, host):
    _host_arg(host)
    spec = (cluster.get("hosts") or {}).get(host)
    known = ", ".join(_vmhost_names(cluster)) or "none"
    if spec is None:
        raise SaltInvocationError(f"host {host!r} is not in xenha:hosts (VM hosts: {known})")
    if spec.get("role", "vmhost") != "vmhost":
        raise SaltInvocationError(
            f"host {host!r} has role {spec.get('role')!r}, not vmhost (VM hosts: {known})"
        )
    return spec


def _room(reports):
    """
    The restart planner's view of hosts from their reports (None: no answer): ``{host:
    {free_memory_mib, total_memory_mib, domus}}`` for each host whose toolstack answered. The
    failover and ``plan HOST failure`` both read hosts through this.
    """
    found = {}
    for host, report in reports.items():
        info = (report or {}).get("info")
        if not info:
            continue
        names = ((report.get("domains") or {}).get("domus") or {}).keys()
        found[host] = {
            "free_memory_mib": info["free_memory_mib"],
            "total_memory_mib": info.get("total_memory_mib"),
            # a live migration's copies (paused --incoming, --migratedaway) run nothing: the
            # lease, held shared during the hand-over, says who completes it
            "domus": sorted(n for n in names if not xenha_snapshot.split_name(n)[1]),
        }
    return found


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


def _watches_leases(cluster, asked=True):
    """Whether to ask the VM hosts for their sanlock view of each other's delta lease: only
    where the cluster has sanlock (``xenha:sanlock``)."""
    return bool(asked and cluster.get("sanlock"))


def _lease_states(snap):
    """
    {VM host: lease text}: each host's sanlock delta lease as a live peer's daemon saw it in
    the report it has just sent (no second round of calls). A host the failover marked is no
    observer; a peer that sees it ``dead`` outweighs one still counting down, one that sees it
    ``live`` outweighs both.
    """
    hosts = xenha_snapshot.vmhosts(snap)
    live = [h for h in hosts if snap["hosts"][h]["answered_s"] is not None]
    live = [h for h in live if snap["hosts"][h]["state"] not in (*MARKED_DOWN, "down")]
    rank = {"live": 0, "dead": 1, "fail": 2, "free": 3, "unknown": 4}
    states = {}
    for host in hosts:
        views = [(p, (snap["reports"][p] or {}).get("leases", {}).get(host)) for p in live]
        views = [(p, v) for p, v in views if p != host and v]
        read = [(p, v) for p, v in views if not v.get("error")]
        if read:
            peer, view = min(read, key=lambda pv: rank.get(pv[1].get("state"), 5))
            ids = f"host_id {view.get('host_id')}, generation {view.get('generation')}"
            states[host] = f"{view.get('state')} ({ids}, seen by {peer})"
        elif views:
            peer, view = views[0]
            states[host] = f"unknown ({view['error']}, seen by {peer})"
        else:
            states[host] = "unknown: no live peer reported it"
    return states


def _freshness(spec):
    seconds = spec.get("answered_s")
    return f"answered in {seconds} s" if seconds is not None else (spec["error"] or "no answer")


def _capacity_inputs(cluster, snap):
    """
    ``(members, room, host marks)`` as the failover's restart plan reads them (``plan HOST
    failure`` too), from the reports ``snap`` already holds: N+1 costs no further call.
    """
    io = _SaltFailoverIO(cluster)
    return io.members(), _room(snap["reports"]), io.host_states()


@_command
def status(leases=True):
    """
    One table of the cluster: every host (state up / suspect / fenced / down, maintenance,
    free/total memory, lease, NTP offset, iSCSI session, OCFS2 mount, how fresh its answer
    is) and every domU (where it runs, state, memory), plus every problem seen (a failed check,
    a host fenced, suspect or down, a domU running twice or nowhere). N+1: for every VM host,
    ``ok`` or the domUs its loss would leave unplaced, planned by the failover's own planner
    from the same reports; ``n_plus_1`` sums it up (``ok`` or ``at risk (host -> [domUs])``).
    Answers within a few seconds also while a host is down: a host the failover marked is not
    waited for, the others get ``REPORT_WAIT`` seconds.

    leases
        Also show each VM host's sanlock delta lease as a live peer's daemon sees it
        (``xenha_sanlock.hosts``: live, fail, dead, free); ``leases=False`` skips it.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.status
        salt-run xenha.status --out=json
    """
    started = time.monotonic()
    cluster = _cluster()
    watch = _watches_leases(cluster, leases)
    snap = _snapshot(cluster, checks=True, wait=REPORT_WAIT, leases=watch, remember=True)
    lease_text = _lease_states(snap) if watch else {}
    n_plus_1 = xenha_capacity.n_plus_1(*_capacity_inputs(cluster, snap))
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
                "n_plus_1": xenha_capacity.host_text(n_plus_1[name]) if name in n_plus_1 else "-",
                "lease": lease_text.get(name, "-"),
                "ntp": _check_text(checks.get("clock")),
                "iscsi": _check_text(checks.get("iscsi")) if spec["role"] == "vmhost" else "-",
                "ocfs2": _check_text(checks.get("ocfs2")) if spec["role"] == "vmhost" else "-",
                "seen": _freshness(spec),
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
    problems = snap["problems"]
    taken = round(time.monotonic() - started, 2)
    summary = f"{len(problems)} problem(s)" if problems else "no problems"
    return {
        "hosts": hosts,
        "domus": domus,
        "problems": problems,
        "n_plus_1": xenha_capacity.verdict(n_plus_1),
        "as_of": time.time(),
        "summary": f"{summary}; asked at {time.strftime('%H:%M:%S')}, answered in {taken} s",
    }


@_command
def admission(domu, host, memory_mib=None):
    """
    Whether starting ``domu`` on ``host`` now keeps N+1 (changes nothing): refused when it does
    not fit there, or when afterwards the loss of some VM host would leave a domU unplaced that
    it would not leave now; the reason names that host and those domUs. ``xenha_domu.running``
    with ``admission: strict`` asks this through ``publish.runner`` (the master's ``peer_run``
    in etc/master.d/xenha.conf allows it). Exit code 1 when refused.

    domu
        The domU to start.
    host
        The VM host to start it on.
    memory_mib
        Its memory, for a domU the pillar does not list (the pillar's value wins).

    CLI Example:

    .. code-block:: bash

        salt-run xenha.admission web01 ServVirt2
    """
    try:
        xenha_names.check("domu", domu)
    except CommandExecutionError as err:
        raise SaltInvocationError(str(err)) from err
    cluster = _cluster(_host_arg(host))
    _vmhost(cluster, host)
    memory = ((cluster.get("domus") or {}).get(domu) or {}).get("memory_mib", memory_mib)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
        raise SaltInvocationError(
            f"memory_mib: {domu} is not in xenha:domus with a memory_mib, and memory_mib="
            f"{memory!r} is not a whole number of MiB"
        )
    snap = _snapshot(cluster, hosts=_vmhost_names(cluster), wait=REPORT_WAIT)
    got = xenha_capacity.admission(
        *_capacity_inputs(cluster, snap), domu=domu, host=host, memory_mib=memory
    )
    answer = {"domu": domu, "host": host, **got}
    return (
        {**answer, "summary": got["reason"]} if got["admit"] else _short_of(answer, got["reason"])
    )


# --- plan (what-if) ----------------------------------------------------------------------------


def _preflight(snap, source, targets, transport, plan):
    """
    Rows (target, check, ok, detail) for the plumbing every target needs; ``plan``: the
    memory left per target and the unplaced domUs. The memory check fails on every target when
    a domU fits nowhere for lack of room.
    """
    memory_after, unplaced = plan
    no_room = sorted(d for d, reason in unplaced.items() if reason.startswith("no room"))
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
        detail = f"{left} MiB left for domUs after the plan" if left is not None else "unknown"
        if no_room:
            detail += f"; no room anywhere for {', '.join(no_room)}"
        checks["memory"] = {"ok": left is not None and left >= 0 and not no_room, "detail": detail}
        for name in ("clock", "iscsi", "ocfs2", "transport", "toolstack", "memory"):
            check = checks.get(name) or {"ok": False, "detail": "no answer"}
            rows.append(
                {"target": target, "check": name, "ok": check["ok"], "detail": check["detail"]}
            )
    return rows


@_command
def plan(host, mode="maintenance"):
    """
    What-if, changing nothing: where every domU of ``host`` would go if the host were put in
    maintenance (live migration) or died now (restart elsewhere: the failover's own planner,
    so a domU it would not restart, e.g. one not in the pillar, is shown staying down), which
    would not fit and why, and a plumbing preflight on every candidate target: clock offset
    within bound, iSCSI session up, OCFS2 mounted, migration transport from ``host`` (ssh to
    ``xl migrate-receive``, as a migration runs it), same toolstack version, enough memory.

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
    cluster = _cluster(_host_arg(host))
    _vmhost(cluster, host)
    snap = _snapshot(cluster, checks=True, disks=mode == "maintenance", wait=REPORT_WAIT)
    moving = xenha_snapshot.on_host(snap, host)
    if mode == "failure":
        placed, unplaced = _failure_plan(cluster, snap, host, moving)
    else:
        placed, unplaced = _maintenance_plan(cluster, snap, host, moving)
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
    memory_after = _memory_after(snap, placed, targets)
    placement = [
        {
            "domu": name,
            "from": host,
            "to": placed.get(name, "-"),
            "memory_mib": snap["domus"][name]["memory_mib"],
            "priority": snap["domus"][name]["priority"],
            "action": ACTIONS[mode][name in placed],
            "reason": unplaced.get(name, ""),
        }
        for name in moving
    ]
    preflight = _preflight(snap, host, targets, transport, (memory_after, unplaced))
    stays = [row["domu"] for row in placement if row["to"] == "-"]
    failed = sorted({f"{row['target']} {row['check']}" for row in preflight if not row["ok"]})
    summary = f"{host} {mode}: {len(moving) - len(stays)} of {len(moving)} domU(s) would " + (
        "move" if mode == "maintenance" else "restart"
    )
    summary += f"; {', '.join(stays)} would not" if stays else ""
    summary += f"; failed checks: {', '.join(failed)}" if failed else ""
    return {
        "host": host,
        "mode": mode,
        "placement": placement,
        "preflight": preflight,
        "problems": snap["problems"],
        "summary": summary,
    }


def _maintenance_plan(cluster, snap, host, moving):
    """({domU: target}, {domU: reason}) for live migrations off ``host``."""
    # a live migration needs the disks on shared storage
    stays = {d: _shared_storage_problem(cluster, snap["domus"][d]) for d in moving}
    result = _place(snap, [d for d in moving if not stays[d]], exclude=[host])
    result["unplaced"].update({d: reason for d, reason in stays.items() if reason})
    return result["placement"], result["unplaced"]


def _failure_plan(cluster, snap, host, moving):
    """({domU: target}, {domU: reason}) from the failover's own planner, as if ``host`` died."""
    io = _SaltFailoverIO(cluster)
    survivors = [h for h in io.members()["vmhosts"] if h != host]
    room = _room({h: snap["reports"].get(h) for h in survivors})
    plan = xenha_failover.restart_plan(host, io.members(), room, io.host_states(), moving)
    placed = {d: e["target"] for d, e in plan["domus"].items() if e["state"] == "pending"}
    unplaced = {
        d: e.get("reason") or f"already runs on {e.get('host')}"
        for d, e in plan["domus"].items()
        if e["state"] != "pending"
    }
    return placed, unplaced


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
        self.kind = kind  # "evacuate" | "restore" | "failback": the journal and event tags
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
            xenha_moves.change(entry, fields)  # refuses a step no move takes
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
        problem = self.bridge(name, source, target)
        if problem:
            return self.record(name, outcome="stayed", reason=problem)
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
            lease = "; ".join(r for r in (lease, self.unbridge(name, source, target)) if r)
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
        """Start ``name`` on ``host`` (``xenha_xen.start`` takes its lease) once ``previous``,
        where it was shut down, let its lease go; None or the problem."""
        if self.leased():
            # its keeper lets go by itself once it sees the domU gone; this makes it now
            ok, value = _call_one(previous, "xenha_sanlock.release", [name])
            if not ok:
                return f"lease not released on {previous}: {value}"
        ok, value = _call_one(host, "xenha_xen.start", [config])
        if not ok:
            return f"start on {host} failed: {value}"
        return None

    def leased(self):
        return bool(self.cluster.get("sanlock"))

    def handover(self, source):
        return source if self.leased() else None

    def bridge(self, name, source, target):
        """
        Before a live migration on a lease-managed cluster: the source shares its lease and
        the target takes it shared, so that from now until the target's ``exclusive`` (at the
        arrival) no third host can take it. None, or why the domU must stay.
        """
        if not self.leased():
            return None
        ok, value = _call_one(source, "xenha_sanlock.share", [name])
        if not ok:
            return f"lease not shared on {source}: {value}"
        ok, value = _call_one(target, "xenha_sanlock.acquire", [name], {"shared": True})
        if not ok:
            back = self.unbridge(name, source, target)
            return "; ".join(r for r in (f"lease not taken shared on {target}: {value}", back) if r)
        return None

    def unbridge(self, name, source, target):
        """The domU stayed on the source: the target lets its share go and the source takes
        the lease back exclusive. "" or the problem (the lease then stays shared: safe, no
        third host can take it)."""
        if not self.leased():
            return ""
        problems = []
        for host, fun in ((target, "xenha_sanlock.release"), (source, "xenha_sanlock.unshare")):
            ok, value = _call_one(host, fun, [name])
            if not ok:
                problems.append(f"{fun} on {host}: {value}")
        return "; ".join(problems)

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
            problem = mover.unbridge(name, source, target)
            reason = "; ".join(r for r in ("interrupted; will retry", problem) if r)
            mover.record(name, outcome="pending", reason=reason)
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
    where = "parallel"
    value = parallel
    if value is None:
        where, value = (
            "xenha:evacuation:parallel",
            (cluster.get("evacuation") or {}).get("parallel"),
        )
    value = DEFAULT_PARALLEL if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SaltInvocationError(
            f"{where} must be a whole number of migrations at once, 1 or more (e.g. "
            f"parallel=2), got {value!r}"
        )
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


MOVED = ("migrated", "cold-migrated")  # outcomes of a move that happened


@_command
def evacuate(host, parallel=None, timeout=MIGRATE_TIMEOUT, cold=False, drain=False):
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
    drain
        ``True`` when the host's shutdown drain asks (the reactor passes it): a maintenance it
        sets is marked as the drain's, which the host's return lifts (``host_back``); a host
        already in maintenance keeps its mark, and an operator's evacuation takes a drain's
        mark over.

    Returns ``{"host", "result", "summary"}``: the result table has one row per domU (domu,
    from, to, duration_s, outcome, reason), outcome ``migrated``, ``cold-migrated``,
    ``stayed``, ``UNCERTAIN`` or ``DOWN`` (a cold move that could start the domU neither on
    the target nor back on the source). Exit code 1 when not every domU left the host (it
    stays in maintenance with them running; the summary names them), and when the host did
    not list its domUs (no answer, toolstack error: nothing is planned).

    CLI Example:

    .. code-block:: bash

        salt-run xenha.evacuate ServVirt1
        salt-run xenha.evacuate ServVirt1 parallel=1 --out=table
        salt-run xenha.evacuate ServVirt1 cold=True
    """
    cluster = _cluster(_host_arg(host))
    _vmhost(cluster, host)
    parallel = _parallel(cluster, parallel)
    with xenha_store.edit(_cachedir(), MAINTENANCE) as doc:
        doc[host] = xenha_failback.maintenance_mark(doc.get(host), bool(drain), time.time())
    with _reused_clients():
        table, unknown = _evacuate(cluster, host, parallel, timeout, cold)
    answer = {"host": host, "result": table}
    left, which = _not_moved(table)
    if unknown:
        return _short_of(
            answer,
            f"{host} in maintenance; what runs on it is unknown ({unknown}): nothing was"
            " planned, run the evacuation again",
        )
    if not table:
        return {**answer, "summary": f"{host} in maintenance; nothing to move: no domU runs there"}
    if not left:
        return {**answer, "summary": f"{host} in maintenance and empty: {len(table)} domU(s) moved"}
    return _short_of(
        answer,
        f"{host} in maintenance with {left} of {len(table)} domU(s) not moved: {which}",
    )


def _not_moved(table):
    """(how many, one line naming each): the rows of ``table`` whose move did not happen."""
    rows = [row for row in table if row["outcome"] not in MOVED]
    return len(rows), "; ".join(f"{row['domu']} {row['outcome']}: {row['reason']}" for row in rows)


def _evacuate(cluster, host, parallel, timeout, cold):
    mover = _Mover(cluster, host, "evacuate", timeout, cold=bool(cold))
    journal = mover.start()
    _fire(f"xenha/evacuate/{host}/start", {"host": host, "parallel": parallel})
    _progress(f"evacuate {host}: in maintenance, planning")
    _resolve_in_flight(mover, journal)

    # only the VM hosts matter here (the storage host has no domUs), with each domU's disks
    targets = [h for h in _vmhost_names(cluster) if h != host]
    snap = _targets_settled(cluster, targets, disks=True)
    unknown = None  # why the host's own domain list is missing: "no domU there" is a guess
    report = snap["reports"].get(host)
    if report is None or report.get("domains_error"):
        unknown = snap["hosts"][host].get("error") or "no answer"
    todo = [] if unknown else xenha_snapshot.on_host(snap, host)
    todo = [d for d in todo if not snap["domus"][d]["migrating"]]
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
    _fire(f"xenha/evacuate/{host}/done", {"host": host, "result": table, "unknown": unknown})
    return table, unknown


@_command
def restore(host, move_back=False, parallel=None, timeout=MIGRATE_TIMEOUT):
    """
    End maintenance of ``host``; with ``move_back=True`` also live-migrate back the domUs that
    its last evacuation moved away (those still running elsewhere and fitting on it), with the
    same confirm-and-explain rules as evacuate. Returns ``{"host", "result", "summary"}``; exit
    code 1 when ``host`` was not in maintenance or a domU did not come back.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.restore ServVirt1
        salt-run xenha.restore ServVirt1 move_back=True
    """
    cluster = _cluster(_host_arg(host))
    _vmhost(cluster, host)
    parallel = _parallel(cluster, parallel)
    with xenha_store.edit(_cachedir(), MAINTENANCE) as doc:
        was = doc.pop(host, None)
    _fire(f"xenha/restore/{host}/start", {"host": host, "move_back": bool(move_back)})
    _progress(
        f"restore {host}: maintenance ended" if was else f"restore {host}: not in maintenance"
    )
    table = []
    with _reused_clients():
        evacuation, settled = _settle_evacuation(cluster, host, timeout)
        if move_back:
            table = _move_back(cluster, host, evacuation, parallel, timeout)
    xenha_store.delete(_cachedir(), f"evacuate-{host}")
    _fire(f"xenha/restore/{host}/done", {"host": host, "result": table})
    answer = {"host": host, "result": table, **({"settled": settled} if settled else {})}
    left, which = _not_moved(table)
    if not was and not table:
        return _short_of(answer, f"{host} was not in maintenance: nothing to restore")
    if left:
        return _short_of(
            answer,
            f"{host} out of maintenance; {left} of {len(table)} domU(s) not moved back: {which}",
        )
    back = f"; {len(table)} domU(s) moved back" if table else ""
    if move_back and not table:
        back = "; nothing to move back"
    return {**answer, "summary": f"{host} out of maintenance{back}"}


def _targets_settled(cluster, targets, disks=False):
    """
    The VM hosts' snapshot for a move, taken once no target is suspect, or after SUSPECT_WAIT
    (then the suspect target is left out, and the result says so): a claim being checked
    ends within seconds, and a move planned meanwhile would leave domUs behind for nothing.
    """
    deadline = time.monotonic() + SUSPECT_WAIT
    while True:
        snap = _snapshot(cluster, hosts=_vmhost_names(cluster), disks=disks, patient=True)
        suspect = [h for h in targets if snap["hosts"][h]["state"] == "suspect"]
        if not suspect or time.monotonic() > deadline:
            return snap
        _progress(f"waiting for the failover's check of {', '.join(suspect)} (suspect)")
        while time.monotonic() < deadline and any(
            (_marks()[1].get(h) or {}).get("state") == "suspect" for h in suspect
        ):
            time.sleep(SETTLE_POLL)


def _settle_evacuation(cluster, host, timeout):
    """
    ``host``'s evacuation journal, and ``{domU: outcome}`` of the moves it had in flight (its
    runner died mid-move), each settled first as a re-run of the evacuation would: the
    journal goes with the restore, and no move may be forgotten half done.
    """
    evacuation = xenha_store.load(_cachedir(), f"evacuate-{host}")
    in_flight = [
        name
        for name, entry in sorted((evacuation.get("domus") or {}).items())
        if entry.get("outcome") in (xenha_moves.MIGRATING, xenha_moves.COLD_MOVING)
    ]
    if not in_flight:
        return evacuation, {}
    _resolve_in_flight(_Mover(cluster, host, "evacuate", timeout), evacuation)
    evacuation = xenha_store.load(_cachedir(), f"evacuate-{host}")
    settled = {name: evacuation["domus"][name]["outcome"] for name in in_flight}
    _progress(f"restore {host}: settled the evacuation's interrupted moves: {settled}")
    return evacuation, settled


def _move_back(cluster, host, evacuation, parallel, timeout):
    """restore's move_back: the domUs the evacuation migrated away, back onto ``host``."""

    def pick(snap):
        return [
            d
            for d, entry in sorted((evacuation.get("domus") or {}).items())
            if entry.get("outcome") == "migrated"
            and snap["domus"].get(d, {}).get("host") not in (None, host)
            and not snap["domus"][d]["migrating"]
        ]

    return _bring_home(_Mover(cluster, host, "restore", timeout), pick, parallel)


def _bring_home(mover, pick, parallel):
    """
    Live-migrate onto the ``mover``'s host the domUs ``pick(snapshot)`` names (restore's
    move_back, failback): planned with ``only=[host]``, each move run, confirmed and journaled
    by the mover as evacuate's are; a domU that does not fit stays and its row says why.
    ``pick`` may raise CommandExecutionError to refuse: nothing moves then. Returns the result
    table.
    """
    cluster, host = mover.cluster, mover.host
    journal = xenha_store.load(_cachedir(), mover.journal)
    # a finished journal is history; an unfinished one is resumed
    _resolve_in_flight(mover, mover.start(fresh=bool(journal.get("finished"))))
    snap = _targets_settled(cluster, [host])
    try:
        left = pick(snap)
    except CommandExecutionError:
        mover.finish()
        raise
    result = _place(snap, left, only=[host])
    for name, reason in sorted(result["unplaced"].items()):
        where = snap["domus"][name]["host"]
        mover.record(name, **{"from": where, "to": None, "outcome": "stayed", "reason": reason})
    moves = [(d, snap["domus"][d]["host"], host) for d in sorted(result["placement"])]
    _run_moves(mover, moves, parallel)
    return mover.finish()


# --- failback ----------------------------------------------------------------------------------

BACK_WAIT = 120  # s host_back waits for a host that has just booted to answer before failback
BACK_PING = 5  # s one ping of that wait may take


@_command
def failback(host, parallel=None, timeout=MIGRATE_TIMEOUT):
    """
    Live-migrate back to ``host`` every domU whose ``preferred_host`` is ``host``, with
    ``failback: true`` in the pillar, that runs on another host now; only when ``host`` is up
    (it answers) and not in maintenance. The same planner (``only=[host]``: room, reserve,
    anti-affinity), mover, lease hand-over and journal (``failback-<host>``) as restore's
    move_back: a domU that does not fit stays where it runs and its row says why.

    Events: ``xenha/failback/<host>/start``, ``.../domu/<domU>`` per step, ``.../done``.

    host
        The VM host (Salt minion id) the domUs return to.
    parallel
        Concurrent migrations (default: pillar ``xenha:evacuation:parallel``, else 2).
    timeout
        Seconds one migration may take before it is reported UNCERTAIN.

    Returns ``{"host", "result", "summary"}``, the result table as evacuate's. Exit code 1
    when ``host`` is in maintenance or not up (refused, one line: the operator's
    ``xenha.restore HOST move_back=True`` ends maintenance) or a domU did not come back.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.failback ServVirt1
        salt-run xenha.failback ServVirt1 parallel=1 --out=json
    """
    cluster = _cluster(_host_arg(host))
    _vmhost(cluster, host)
    return _failback(cluster, host, _parallel(cluster, parallel), timeout)


def _failback(cluster, host, parallel, timeout):
    why = xenha_failback.refusal(host, _marks()[0].get(host))  # no call to refuse it
    if why:
        raise CommandExecutionError(why)

    def pick(snap):
        why = xenha_failback.refusal(host, _marks()[0].get(host), snap["hosts"][host])
        if why:
            raise CommandExecutionError(why)
        return xenha_failback.homeward(cluster.get("domus"), snap, host)

    _fire(f"xenha/failback/{host}/start", {"host": host, "parallel": parallel})
    _progress(f"failback {host}: planning")
    with _reused_clients():
        table = _bring_home(_Mover(cluster, host, "failback", timeout), pick, parallel)
    _fire(f"xenha/failback/{host}/done", {"host": host, "result": table})
    answer = {"host": host, "result": table}
    left, which = _not_moved(table)
    if not table:
        return {**answer, "summary": f"failback {host}: nothing to move back"}
    if left:
        return _short_of(
            answer, f"failback {host}: {left} of {len(table)} domU(s) not moved back: {which}"
        )
    return {**answer, "summary": f"failback {host}: {len(table)} domU(s) moved back"}


@_command
def host_back(host):
    """
    Handle a VM host's report that it is back from a shutdown or reboot (the reactor calls
    this for the ``xenha/shutdown/back`` event its ``xenha-shutdown`` unit fires at boot,
    with the event's sender). Under ``shutdown_policy`` migrate: a maintenance the shutdown
    drain's evacuation set ends, then failback runs for the host (after waiting up to
    ``BACK_WAIT`` s for it to answer); a maintenance an operator set is kept, and nothing
    moves. Under freeze and failover nothing changes. Fires ``xenha/shutdown/<host>/back``
    with the answer.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.host_back ServVirt1
    """
    cluster = _cluster(_host_arg(host))
    _vmhost(cluster, host)
    policy = xenha_pillarcheck.shutdown_settings(cluster.get("failover"))["shutdown_policy"]
    with xenha_store.edit(_cachedir(), MAINTENANCE) as doc:
        mark = doc.get(host)
        step = xenha_failback.on_back(policy, mark)
        if step == xenha_failback.LIFT:
            doc.pop(host)
    if step == xenha_failback.LIFT:  # the drain's evacuation is over, as restore ends one
        xenha_store.delete(_cachedir(), f"evacuate-{host}")
    answer = {"host": host, "policy": policy, "step": step}
    if step == xenha_failback.NONE:
        answer["summary"] = f"{host} back; shutdown_policy {policy}: nothing changes"
    elif step == xenha_failback.KEEP:
        answer["summary"] = (
            f"{host} back; kept in maintenance (set by {mark.get('by')}, not by the shutdown "
            f"drain): salt-run xenha.restore {host} ends it"
        )
    else:
        answer = _back_failback(cluster, host, answer)
    _fire(f"xenha/shutdown/{host}/back", answer)
    return answer


def _back_failback(cluster, host, answer):
    """host_back's failback, once the host answers (it fired the event early in its boot)."""
    lifted = "the shutdown drain's maintenance ended; " if answer["step"] == "lift" else ""
    deadline = time.monotonic() + BACK_WAIT
    while not _answers_ping(host, BACK_PING) and time.monotonic() < deadline:
        time.sleep(1)
    try:
        got = _failback(cluster, host, _parallel(cluster, None), MIGRATE_TIMEOUT)
    except CommandExecutionError as err:
        return _short_of(answer, f"{host} back: {lifted}no failback: {err}")
    return {**answer, **got, "summary": f"{host} back: {lifted}{got['summary']}"}


# --- failover ---
# Heartbeat loss -> verify the claim, corroborate, fence (IPMI + lease stopped / sanlock dead /
# operator ack), restart the dead host's domUs on survivors. The state machine is
# _utils/xenha_failover.py; this is its Salt adapter and the operator's commands. See
# docs/failover.md.

PING_TIMEOUT = xenha_pillarcheck.FAILOVER_DEFAULTS["ping_timeout"]  # s: the early ping's wait
START_TIMEOUT = 120  # s: taking a domU's lease and starting it on a survivor
REJOIN_ASK = 10  # s: the sweep's question whether a VM host's sanlock is in the lockspace


def _answers_ping(minion, timeout):
    """
    Whether ``minion`` returns test.ping, signed by its own key, within ``timeout`` seconds.
    Waits for the return event itself: LocalClient.cmd would add a find_job round
    (gather_job_timeout) to every ping of a dead minion, and it counts its timeout from a whole
    second.
    """
    client = salt.client.get_local_client(__opts__["conf_file"])
    deadline = time.monotonic() + timeout
    nonce, arg = _sealed("test.ping")
    try:
        pub = client.run_job(
            [minion], PROVE, arg=arg, tgt_type="list", timeout=timeout, listen=True
        )
        if not pub or "jid" not in pub:
            return False
        tag = f"salt/job/{pub['jid']}/ret/{minion}"
        while (left := deadline - time.monotonic()) > 0:
            # wait must stay above 0: get_event(wait=0) blocks for ever
            got = client.event.get_event(wait=max(left, 0.01), tag=tag, full=True)
            # an answer in its name is not its answer unless it signed it (_proven)
            if got and _proven(minion, "test.ping", nonce, got.get("data")) == (True, True):
                return True
        return False
    finally:
        client.destroy()


class _SaltFailoverIO(xenha_failover.Adapter):
    """The failover engine's I/O through this runner's Salt edge."""

    def __init__(
        self,
        cluster,
        early_ping=None,
        io_timeout=xenha_failover.DEFAULTS["io_timeout"],
        ping_timeout=PING_TIMEOUT,
    ):
        self.cluster = cluster
        self.io_timeout = io_timeout
        self.ping_timeout = ping_timeout  # the checked xenha:failover:ping_timeout
        # (host, future) of a ping sent as the claim came in, while the pillar compiled: the
        # first corroboration uses it, every later one (a retry) pings afresh
        self.early_ping = early_ping

    def members(self):
        hosts = self.cluster.get("hosts") or {}
        vmhosts = {h: s for h, s in hosts.items() if s.get("role", "vmhost") == "vmhost"}
        # BMC passwords are master configuration (xenha_bmc:<host>:password), never pillar
        # data a minion could read; a missing one fails that host's IPMI fence, naming the key
        for host, spec in vmhosts.items():
            if spec.get("bmc"):
                bmc = xenha_fence.credentials(spec["bmc"], __opts__.get("xenha_bmc"), host)
                vmhosts[host] = {**spec, "bmc": bmc}
        return {"vmhosts": vmhosts, "domus": self.cluster.get("domus") or {}}

    def ping(self, host):
        early, self.early_ping = self.early_ping, None
        if early and early[0] == host and self.ping_timeout == PING_TIMEOUT:
            return early[1].result()
        return _answers_ping(host, self.ping_timeout)

    def _must(self, minion, fun, arg=(), kwarg=None, timeout=CALL_TIMEOUT):
        # evidence about a peer (a lease verdict, its holdings): only an answer the survivor
        # signed counts, a forged one would otherwise let a dead-looking verdict through
        ok, value = _call_proven(minion, fun, arg, kwarg, timeout)
        if not ok:
            raise CommandExecutionError(value)
        return value

    def observe(self, observer, host, duration):
        # the runner's own job on that survivor (its reply matched by the jid it published)
        kwarg = {} if duration is None else {"duration": duration}
        watch = self.io_timeout + 1 if duration is None else duration
        return self._must(observer, "xenha_sanlock.observe", [host], kwarg, watch + CALL_TIMEOUT)

    def fence_ipmi(self, host, bmc):
        return xenha_fence.power_off(bmc)

    def leased_domus(self, observer, host):
        return self._must(observer, "xenha_sanlock.holders", [], {"host": host})

    def snapshot(self, hosts):
        # patient: a suspect survivor's answer decides whether planning waits for its check
        answers = _reports(hosts, {"checks": False}, CALL_TIMEOUT, patient=True)
        return _room({h: value if ok else None for h, (ok, value, _) in answers.items()})

    def rejoin(self, host):
        # an action, not evidence: a plain call (xenha_proof seals only what a decision rests
        # on). Asked first: a host that is down costs the sweep one short call, not a join's
        if _accepted_key(host) is None:
            raise CommandExecutionError(f"{host} has no Salt key the master accepted")
        ok, out = _call_one(host, "xenha_sanlock.join", kwarg={"test": True}, timeout=REJOIN_ASK)
        if ok and isinstance(out, dict) and out.get("changed"):
            # a host_id whose last owner may be alive is taken after 8 x io_timeout + 60 s
            timeout = 12 * self.io_timeout + 60 + CALL_TIMEOUT
            ok, out = _call_one(host, "xenha_sanlock.join", timeout=timeout)
        if not ok or not isinstance(out, dict):
            raise CommandExecutionError(str(out))
        return out

    def host_states(self):
        maintenance, hoststate = _marks()
        states = {h: "maintenance" for h in maintenance}
        states.update({h: m.get("state", "suspect") for h, m in hoststate.items()})
        return states

    def start_domu(self, host, name, spec, fenced):
        # lease and start in one round trip: this is the last step before the domU is back
        # with fenced: the target proves the delta lease stopped (two reads an io_timeout apart)
        kwarg = {"fenced": fenced} if fenced else {}
        arg = [name, spec["config"]]
        timeout = START_TIMEOUT + 2 * self.io_timeout
        return self._must(host, "xenha_sanlock.start_domu", arg, kwarg, timeout=timeout)

    def fire(self, tag, data):
        # master bus only: progress events would break `salt-run --out=json` for scripts
        _fire(tag, data)

    def audit(self, entry):
        xenha_failover.audit_line(_audit_path(), entry)


def _audit_path():
    return xenha_failover.audit_path(_cachedir())


def _failover_engine(cluster, early_ping=None):
    # the pillar check's own validation: a value it accepts is one the engine runs with
    settings = xenha_pillarcheck.failover_settings(cluster.get("failover"))
    # the lockspace's io_timeout, checked as xenha_sanlock checks it (one validation). Without
    # xenha:sanlock no survivor can read a lease: every look fails, and as unreadable is never
    # proof of death, such a failover blocks (ack_fence is the operator's way out)
    if cluster.get("sanlock") is not None:
        settings["io_timeout"] = xenha_sanlockcfg.settings(cluster)["io_timeout"]
    io_timeout = settings.get("io_timeout", xenha_failover.DEFAULTS["io_timeout"])
    ping_timeout = settings.get("ping_timeout", PING_TIMEOUT)
    io = _SaltFailoverIO(cluster, early_ping, io_timeout, ping_timeout)
    return xenha_failover.Engine(io, _cachedir(), settings)


@_command
def failover(host, reporter=None, event=None):
    """
    Handle a heartbeat-loss claim about ``host`` (the reactor calls this with the reporting
    minion and the event data; an operator may call it with ``host`` alone). The claim is
    verified (the reporter is a cluster VM host, the event's ids match: a hint, nothing more),
    corroborated (the master cannot reach ``host``, every survivor is asked about its sanlock
    delta lease, and at least one reads it and none sees it advance), the host is fenced (BMC
    power-off confirmed and the delta lease stopped, else sanlock calls it dead; otherwise
    ``blocked`` and retried with back-off), then its domUs are restarted on survivors by
    priority, each lease taken by the target's sanlock. Concurrent and
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


@_command
def ack_fence(host):
    """
    Confirm that ``host`` has been fenced by hand (powered off, unplugged): a failover blocked
    on fencing then restarts its domUs. Only say so when it is true: the domUs are started
    elsewhere on your word. Refused (exit code 1, nothing recorded) when no failover of
    ``host`` is under way.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.ack_fence ServVirt1
    """
    cluster = _cluster(_host_arg(host))
    _vmhost(cluster, host)
    result = _failover_engine(cluster).ack(host, by="salt-run xenha.ack_fence")
    if not result.get("acknowledged"):
        return _short_of(result, f"not acknowledged: {result['reason']}")
    return {**result, "summary": f"fence of {host} acknowledged; failover {result.get('state')}"}


@_command
def failover_resume():
    """
    Continue every failover left unfinished (master restart, blocked past its retry window),
    look again at isolated hosts that still renewed their lease, mark failed-over hosts that
    are back as healthy, start the domUs of a host still down that fitted nowhere once a
    survivor has room, restart the domUs a host lost with an old sanlock generation (reset
    and back before its failover decided, or a lockspace lost and joined again; docs/
    failover.md), and run loss claims still queued. Safe to run at any time (e.g. from the
    master's schedule); returns one row per journal, and one per such restart or claim.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.failover_resume
    """
    journals = xenha_failover.journals(_cachedir())
    rows = []
    if journals:
        # side by side: one failover blocked in its back-off (up to retry_for) must not hold
        # up another host's, e.g. the stale claim whose resume clears the survivor the first
        # waits for
        with ThreadPoolExecutor(len(journals)) as pool:
            rows = list(pool.map(_resume_one, journals.items()))
    return rows + _reclaim() + _queued_claims()


def _queued_claims():
    """The loss claims left queued when a run held their host's lock (``Engine.take_claims``;
    the holder takes them as it ends, this is the backstop)."""
    if not xenha_failover.claimed_hosts(_cachedir()):
        return []
    return _failover_engine(_cluster()).take_claims()


def _reclaim():
    """The failovers of hosts that lost leases with an old sanlock generation (a reset before
    their failover decided, a lost lockspace): ``Engine.reclaim_all``."""
    try:
        cluster = _cluster()
    except SaltInvocationError:
        return []
    if not _watches_leases(cluster):
        return []
    return _failover_engine(cluster).reclaim_all()


def _resume_one(item):
    host, journal = item
    recheck = journal.get("state") == xenha_failover.IGNORED and journal.get("recheck")
    if recheck or journal.get("state") in (*xenha_failover.ACTIVE, xenha_failover.DONE):
        return _failover_engine(_cluster(host)).resume(host)
    return {k: journal.get(k) for k in ("host", "id", "state", "reason")}


@_command
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
        _vmhost(_cluster(_host_arg(host)), host)
        journals = {host: journals[host]} if host in journals else {}
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
                "not_restarted": journal.get("not_restarted") or {},
                "seconds": journal.get("seconds"),
                "started": journal.get("started"),
                "updated": journal.get("updated"),
            }
        )
    try:
        with open(_audit_path(), encoding="utf-8") as fh:
            audit = _folded(fh.read().splitlines()[-AUDIT_TAIL:])
    except FileNotFoundError:
        audit = []
    if host is not None and not rows:
        return {"failovers": [], "audit": audit, "summary": f"no failover of {host} recorded"}
    return {"failovers": rows, "audit": audit[-20:]}


AUDIT_TAIL = 500  # audit lines read for the folded tail of failover_status


def _folded(lines):
    """
    Audit lines (``<UTC time> <host> <step> <details>``) with runs of the same entry but for
    its time folded into one line with a count and the last time: a failover blocked for
    minutes writes one line per retry.
    """
    folded = []  # [first line, rest, count, last time]
    for line in lines:
        stamp, _, rest = line.partition(" ")
        if folded and folded[-1][1] == rest:
            folded[-1][2] += 1
            folded[-1][3] = stamp
            continue
        folded.append([line, rest, 1, stamp])
    return [
        first if count == 1 else f"{first} (x{count}, last {last})"
        for first, _, count, last in folded
    ]


# --- failover report ---


@_command
def failover_report(target=None, png=None):
    """
    One timeline per failover, from the audit trail and the journals: each step with its
    evidence and its seconds since the claim, what was restarted where, what was not and why.
    ``target``: a host (its failovers) or a failover id; all failovers without it.
    ``png=PATH`` also draws the timelines into a PNG on the master (needs matplotlib).

    CLI Example:

    .. code-block:: bash

        salt-run xenha.failover_report
        salt-run xenha.failover_report ServVirt1 --out=json
        salt-run xenha.failover_report 4fdd5aed4c51 png=/tmp/failover.png
    """
    target = None if target is None else _host_arg(str(target))  # an id is a valid name too
    found = xenha_report.load(_cachedir(), target)
    data = {"failovers": found}
    if _for_people():
        data = {"report": xenha_report.text(found)}
    if png is not None and found:
        data["png"] = _report_png(found, png)
    if not found:
        return _short_of(data, f"no failover{f' of {target}' if target else ''} recorded")
    return data


def _report_png(found, path):
    if not isinstance(path, str) or not path.endswith(".png") or not posixpath.isabs(path):
        raise SaltInvocationError(f"png: {path!r} is not an absolute path ending in .png")
    if not posixpath.isdir(posixpath.dirname(path)):
        raise SaltInvocationError(f"png: directory {posixpath.dirname(path)} does not exist")
    try:
        return xenha_report.plot(found, path)
    except ImportError as err:
        raise CommandExecutionError(f"png: matplotlib is not installed: {err}") from err


# --- metrics ---


@_command
def metrics(path=None):
    """
    The cluster as Prometheus metrics (``_utils/xenha_metrics.py``): host states, domUs per
    host, lease and heartbeat ages, failovers by outcome, the latest failover's phases, N+1. With
    ``path`` (``*.prom``) the text replaces that file for node_exporter's textfile collector;
    without, it is returned. See docs/operations.md.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.metrics /var/lib/prometheus/node-exporter/xenha.prom
    """
    try:
        if path is not None:  # before asking the hosts: a bad path fails at once
            xenha_metrics.check_path(path)
    except ValueError as err:
        raise SaltInvocationError(str(err)) from err
    cluster = _cluster()
    snap = _snapshot(cluster, wait=REPORT_WAIT, leases=_watches_leases(cluster))
    live = [h for h in _vmhost_names(cluster) if snap["hosts"][h].get("answered_s") is not None]
    heard = _call(live, "xenha_heartbeat.status", timeout=REPORT_WAIT)
    try:
        with open(_audit_path(), encoding="utf-8") as fh:
            audit = fh.read().splitlines()
    except FileNotFoundError:
        audit = []
    journals = xenha_failover.journals(_cachedir())
    heartbeat = {h: value for h, (ok, value) in heard.items() if ok}
    n_plus_1 = xenha_capacity.n_plus_1(*_capacity_inputs(cluster, snap))
    text = xenha_metrics.render(snap, journals, audit, heartbeat, time.time(), n_plus_1=n_plus_1)
    if path is None:
        return {"metrics": text}
    try:
        xenha_metrics.write(path, text)
    except (ValueError, OSError) as err:
        raise SaltInvocationError(str(err)) from err
    return {"path": path, "summary": f"{text.count(chr(10))} lines written to {path}"}


# --- guest monitoring ---
# A VM host's report of a failed monitored domU (the xenha_guests beacon) or of its toolstack
# (the heartbeat beacon's toolstack_failed / toolstack_ok) goes to the engine in
# _utils/xenha_guestmon.py; this is its Salt adapter. See docs/guest-monitoring.md.

GUEST_RESTART_TIMEOUT = START_TIMEOUT + 90  # s: destroy (60) and lease release (30), then start
TOOLSTACK_EVENTS = {"toolstack_failed": True, "toolstack_ok": False}


class _SaltGuestIO(xenha_guestmon.Adapter):
    """The guest monitoring engine's I/O through this runner's Salt edge."""

    def __init__(self, cluster):
        self.cluster = cluster

    def members(self):
        domus = {}
        for name, spec in (self.cluster.get("domus") or {}).items():
            if isinstance(spec, dict) and spec.get("monitor") is not None:
                where = f"xenha:domus:{name}:monitor"
                domus[name] = {**spec, "monitor": xenha_pillarcheck.monitor(spec["monitor"], where)}
        hosts = self.cluster.get("hosts") or {}
        return {"vmhosts": {h: hosts[h] for h in _vmhost_names(self.cluster)}, "domus": domus}

    def host_states(self):
        maintenance, hoststate = _marks()
        states = {h: MAINTENANCE for h in maintenance}
        states.update({h: m.get("state") for h, m in hoststate.items()})
        return states

    @staticmethod
    def _must(minion, fun, arg=(), timeout=CALL_TIMEOUT):
        ok, value = _call_one(minion, fun, arg, timeout=timeout)
        if not ok:
            raise CommandExecutionError(value)
        return value

    def inspect(self, host, name):
        return self._must(host, "xenha_guest.inspect", [name], REPORT_WAIT + 60)

    def locate(self, name):
        answers = _call(
            _vmhost_names(self.cluster), "xenha_xen.domain", [name], timeout=REPORT_WAIT
        )
        return {h: row for h, (ok, row) in answers.items() if ok and row}

    def restart(self, host, name, config):
        return self._must(host, "xenha_guest.restart", [name, config], GUEST_RESTART_TIMEOUT)

    def vacate(self, host, name):
        return self._must(host, "xenha_guest.vacate", [name], GUEST_RESTART_TIMEOUT)

    def place(self, name, exclude):
        snap = _snapshot(self.cluster, wait=REPORT_WAIT)
        plan = _place(snap, [name], exclude=exclude)
        return plan["placement"].get(name), plan["unplaced"].get(name)

    def start(self, host, name, config):
        return self._must(host, "xenha_xen.start", [config], START_TIMEOUT)

    def toolstack(self, host):
        ok, value = _call_one(host, "xenha_xen.info", timeout=REPORT_WAIT)
        if ok:
            return True, f"xen {value.get('xen_version')} answers"
        if value.startswith("no answer"):
            raise CommandExecutionError(value)
        return False, value

    def alert(self, what, subject, text, data):
        try:
            conf = xenha_alerting.settings(__opts__.get(xenha_alerting.KEY))
        except xenha_alerting.SettingError as err:
            log.error("xenha alerts: %s", err)
            return
        if conf is None or what not in conf["events"]:
            return
        payload = {
            "text": f"{subject}\n{text}",
            "event": what,
            "host": data.get("host"),
            "data": data,
        }
        sent = xenha_alerting.deliver(conf, {"subject": subject, "text": text}, payload)
        for channel, outcome in sent.items():
            if outcome != "sent":
                log.error("xenha alert (%s) by %s %s", subject, channel, outcome)

    def fire(self, tag, data):
        _fire(tag, data)

    def audit(self, entry):
        xenha_failover.audit_line(xenha_guestmon.audit_path(_cachedir()), entry)


def _guest_engine(host):
    return xenha_guestmon.Engine(_SaltGuestIO(_cluster(host)), _cachedir())


@_command
def guest_failed(host, domu, reason, detail=None):
    """
    Handle a VM host's report that its monitored domU ``domu`` failed (``reason``: crashed,
    dying, gone or check; the reactor calls this for the ``xenha_guests`` beacon's events).
    The host is asked again first; then, by the domU's ``monitor`` policy, the domU is
    restarted in place (its crashed copy destroyed and its lease released first), relocated
    to the planner's target, or left with an alert. Events ``xenha/guest/<host>/<domu>/...``;
    audit trail ``<cachedir>/xenha/guestmon.log``.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.guest_failed ServVirt1 web01 crashed
    """
    _host_arg(host)
    try:
        xenha_names.check("domu", domu)
    except CommandExecutionError as err:
        raise SaltInvocationError(str(err)) from err
    return _guest_engine(host).failed(host, domu, reason, detail)


@_command
def host_toolstack(host, event):
    """
    Handle a VM host's toolstack report (``event``: toolstack_failed or toolstack_ok, from the
    heartbeat beacon through the reactor), checked by asking the host for ``xenha_xen.info``:
    a failing toolstack marks the host degraded (status shows it, nothing is placed there, an
    alert goes out; its domUs are left running), one that answers again lifts the mark.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.host_toolstack ServVirt1 toolstack_failed
    """
    _host_arg(host)
    if event not in TOOLSTACK_EVENTS:
        raise SaltInvocationError(f"event {event!r} is not one of {', '.join(TOOLSTACK_EVENTS)}")
    return _guest_engine(host).toolstack(host, TOOLSTACK_EVENTS[event])
