"""
The failover engine: a persisted, resumable state machine, one journal per suspect host. Its
states, their next states and the fields a journal carries in each are the table ``MACHINE``;
:func:`change` is the one place a journal changes state.

All I/O goes through an adapter object (see :class:`Adapter` for the contract); the journal and
the audit trail are files on the master under ``<cachedir>/xenha/`` (``xenha_store``). Safety:

- A claim (a loss event) is checked before anything is touched: any minion can put events on the
  bus.
- One failover per host: the whole run holds an exclusive ``flock`` on the host's run lock;
  concurrent calls join it (return at once), repeated ones after ``done`` are ignored until the
  host has come back.
- Every step is persisted before the next starts; a master killed in the middle resumes from the
  journal. A domU is marked ``starting`` before its start is attempted; on resume it is looked
  for on the survivors before it is started again, and the target's lease check refuses a
  second copy anyway.
- Nothing restarts unless the host is fenced: its BMC confirmed the power-off and a survivor
  saw its sanlock delta lease stopped (the target proves that again before it frees a lease), a
  survivor's sanlock calls it ``dead``, or an operator acknowledged a manual fence. The
  target's sanlock refuses a lease that a live host holds, whatever the runner believes.
- Evidence is what the runner reads itself: every survivor is asked (none first and believed),
  one that sees the lease advance outweighs any that do not, and no readable lease is no
  evidence (never "down"). A lease held shared by the dead host and another (a live migration)
  is never started while the other holder is live.
"""

import contextlib
import fcntl
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import xenha_pillarcheck
import xenha_placement
import xenha_store

RECEIVED = "received"
VERIFIED = "verified"
CORROBORATED = "corroborated"
FENCED = "fenced"
RESTARTING = "restarting"
DONE = "done"
BLOCKED = "blocked"
IGNORED = "ignored"
RECOVERED = "recovered"
ACTIVE = (RECEIVED, VERIFIED, CORROBORATED, FENCED, RESTARTING, BLOCKED)
IN_PROGRESS = "in_progress"  # the answer to a call that joins a running failover: no state
PENDING = ("pending", "starting", "failed")  # domU entries not started (yet)
PREFETCH_FOR = 60.0  # s the plan inputs read while corroborating stay good (lease watches: 3T + 2)
HISTORY_KEPT = 200  # state changes kept in a journal (the audit trail keeps them all)

LEASE_STATES = ("advancing", "stopped", "dead", "free")  # xenha_sanlock.observe verdicts
TRANSIENT_SUFFIXES = ("--incoming", "--migratedaway")  # a live migration's copies: not running


class State(NamedTuple):
    """One row of :data:`MACHINE`."""

    next: tuple  # the states a journal in this one may change to
    fields: tuple = ()  # what a journal in it carries beside COMMON
    keeps: tuple = ()  # of those, what it takes over from the state before; the rest is new


# every journal, whatever its state
COMMON = ("host", "id", "state", "reporters", "event", "started", "attempts", "history")
COMMON += ("outbox", "updated")
_DOMUS = ("domus", "order")  # the restart plan and each domU's outcome
# None: no journal yet, or a finished one (done, ignored, recovered) that a new failover replaces
MACHINE = {
    None: State((RECEIVED,)),
    RECEIVED: State((VERIFIED, FENCED), ("reporter",)),
    VERIFIED: State((CORROBORATED, IGNORED, BLOCKED, FENCED), ("reason",)),
    CORROBORATED: State((FENCED, IGNORED, BLOCKED), ("observations", "reason")),
    BLOCKED: State((VERIFIED, CORROBORATED), ("reason", "retry_in")),
    # reason, plan_attempts, leases_read: written while the planning is blocked or waits
    FENCED: State((RESTARTING, RECOVERED), ("fence", "reason", "plan_attempts", "leases_read")),
    RESTARTING: State(
        (DONE, RECOVERED),
        ("fence", *_DOMUS, "leases_read", "reason"),
        ("fence", *_DOMUS, "leases_read"),
    ),
    DONE: State(
        (RESTARTING, RECOVERED),
        ("fence", *_DOMUS, "seconds", "not_restarted"),
        ("fence", *_DOMUS),
    ),
    IGNORED: State((VERIFIED,), ("reason", "recheck", "observations")),
    RECOVERED: State(
        (),
        ("fence", *_DOMUS, "seconds", "not_restarted", "reason", "state_before"),
        ("fence", *_DOMUS, "seconds", "not_restarted"),
    ),
}


class IllegalTransition(RuntimeError):
    """A journal asked to change to a state its own may not change to (a bug, never data)."""


DEFAULTS = {
    "io_timeout": 10,  # xenha:sanlock:io_timeout (delta leases renew every 2 x io_timeout)
    "watchdog_fire": 60,  # sanlock 3.8.5's fixed watchdog_fire_timeout
    **xenha_pillarcheck.FAILOVER_DEFAULTS,  # xenha:failover, one table with the pillar check
}


class Failure(str):
    """An adapter call that raised: its message. Never mistaken for an answer."""


class Adapter:
    """
    The I/O the engine needs; the runner implements it with Salt, tests with fakes. Every
    method may raise; the engine records the error and decides (a failed check never counts as
    a proof).
    """

    def members(self):
        """{"vmhosts": {id: pillar host dict}, "domus": {name: pillar domU dict}}."""
        raise NotImplementedError

    def ping(self, host):
        """True if the master reaches the host's minion (short timeout)."""
        raise NotImplementedError

    def observe(self, observer, host, duration):
        """
        ``host``'s sanlock delta lease watched from minion ``observer`` for ``duration`` s (None:
        the module's default, one io_timeout + 1): ``{"state": advancing|stopped|dead|free,
        ...}`` (xenha_sanlock.observe). Raises when the lease cannot be read.
        """
        raise NotImplementedError

    def fence_ipmi(self, host, bmc):
        """Power ``host`` off through its BMC and confirm; returns timings, raises on failure."""
        raise NotImplementedError

    def leased_domus(self, observer, host):
        """
        The domU leases ``host`` holds, read from the lease area on ``observer``
        (xenha_sanlock.holders): ``{domU: {"mode": "ex"|"sh", "hosts": [holders]}}``.
        """
        raise NotImplementedError

    def snapshot(self, hosts):
        """{host: {"free_memory_mib", "total_memory_mib", "domus": [names]}} of those answering."""
        raise NotImplementedError

    def rejoin(self, host):
        """
        Join ``host`` to the lockspace if its sanlock is out of it (xenha_sanlock.join):
        ``{"host_id", "changed"}``; raises when the host does not answer or the join fails.
        """
        raise NotImplementedError

    def host_states(self):
        """{host: state} from the master's store (maintenance etc.); missing means up."""
        raise NotImplementedError

    def start_domu(self, host, name, spec, fenced):
        """
        Take the domU's lease on ``host`` and start it (xenha_sanlock.start_domu). With
        ``fenced``: a lease that host holds is freed once ``host`` proved its delta lease of
        ``fenced`` stopped; refused while ``fenced`` renews or another live host holds it.
        """
        raise NotImplementedError

    def fire(self, tag, data):
        """Fire an event on the master bus."""
        raise NotImplementedError

    def audit(self, entry):
        """Append one entry (dict) to the audit trail."""
        raise NotImplementedError

    def now(self):
        """Wall clock (for humans: journal and audit timestamps)."""
        return time.time()

    def mono(self):
        """Monotonic clock (for durations and back-off)."""
        return time.monotonic()

    def sleep(self, seconds):
        time.sleep(seconds)


# --- pure decisions ---


def verify_claim(vmhosts, host, reporter, event):
    """
    Check a loss claim: ``(ok, reason)``. The reporter must be a cluster VM host, the event's
    own ids (``id``, ``reporter``, ``peer``) must match the reporter and the host, and the host
    must be another VM host. ``reporter=None`` and ``event=None`` is an operator's salt-run.

    Every field checked here is one the event's sender chose (a minion picks its event's tag
    and data), so an accepted claim is a hint that starts the checks, never evidence: nothing
    later reads the reporter, the event or its times to decide (see ``lease_evidence``).
    """
    if reporter is None and event is None:
        refusals = [(host not in vmhosts, f"{host!r} is not a cluster VM host")]
        accepted = "operator request"
    else:
        data = event if isinstance(event, dict) else {}
        refusals = [
            (reporter not in vmhosts, f"reporter {reporter!r} is not a cluster VM host"),
            (not isinstance(event, dict), "no event data with the claim"),
            ("id" not in data and "reporter" not in data, "event names no sender"),
        ]
        for key, want in (("id", reporter), ("reporter", reporter), ("peer", host)):
            got = data.get(key, want)
            refusals.append((got != want, f"event {key} {got!r} does not match {want!r}"))
        refusals += [
            (host not in vmhosts, f"{host!r} is not a cluster VM host"),
            (host == reporter, f"{reporter!r} reports itself lost"),
        ]
        accepted = f"loss of {host} claimed by {reporter} (a hint: corroboration decides)"
    for refused, reason in refusals:
        if refused:
            return False, reason
    return True, accepted


def lease_evidence(answers):
    """
    Sort the survivors' answers about one host's sanlock delta lease: ``{"advancing",
    "stopped", "dead", "free": [observers], "unreadable": {observer: why}}``. An answer that is
    not a verdict (a failed call, a malformed reply) is unreadable: never a sign of death.
    """
    found = {state: [] for state in LEASE_STATES}
    found["unreadable"] = {}
    for observer, verdict in answers.items():
        state = verdict.get("state") if isinstance(verdict, dict) else None
        if isinstance(verdict, Failure) or state not in LEASE_STATES:
            why = verdict if isinstance(verdict, Failure) else f"not a lease verdict: {verdict!r}"
            found["unreadable"][observer] = str(why)[:300]
        else:
            found[state].append(observer)
    return found


def readable(evidence):
    """True if at least one survivor read the lease."""
    return any(evidence[state] for state in LEASE_STATES)


def evidence_text(host, evidence):
    """One line for humans: who saw what of ``host``'s lease."""
    parts = [
        f"{state} for {', '.join(evidence[state])}" for state in LEASE_STATES if evidence[state]
    ]
    parts += [f"unreadable on {o} ({why})" for o, why in sorted(evidence["unreadable"].items())]
    return f"{host}'s sanlock lease: " + ("; ".join(parts) or "no survivor to read it")


def holdings(got, host):
    """
    The leases ``host`` holds from a ``holders`` answer: ``{domU: {"mode", "hosts"}}``, or
    None if ``got`` is not such an answer. A plain list (names only) reads as exclusive.
    """
    if isinstance(got, (list, tuple)) and all(isinstance(n, str) for n in got):
        return {name: {"mode": "ex", "hosts": [host]} for name in got}
    if not isinstance(got, dict):
        return None
    held = {}
    for name, entry in got.items():
        hosts = entry.get("hosts") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(hosts, list):
            return None
        if host in hosts:
            held[name] = {"mode": entry.get("mode", "ex"), "hosts": list(hosts)}
            if entry.get("stale") is True:  # lost with the holder's old sanlock generation
                held[name]["stale"] = True
    return held


def stale(leased):
    """The names of the leases in ``leased`` (from :func:`holdings`) marked stale, sorted."""
    return sorted(name for name, held in (leased or {}).items() if held.get("stale"))


def blocked_since(record):
    """When ``record`` last became ``blocked`` (``io.now()`` time), or None."""
    last = (record.get("history") or [{}])[-1]
    return last.get("time") if last.get("state") == BLOCKED else None


def powered_off(record):
    """True if ``record``'s host was fenced by a confirmed power-off (BMC, or the operator)."""
    return (record.get("fence") or {}).get("method") in ("ipmi", "manual")


def rejoined(record):
    """True if ``record`` is a failover of a host that came back under a new generation."""
    return (record.get("fence") or {}).get("method") == "rejoined"


def _generation(verdict):
    """The sanlock generation of the host in an observe answer, or None."""
    seen = verdict.get("sanlock") if isinstance(verdict, dict) else None
    got = seen.get("generation") if isinstance(seen, dict) else None
    return got if isinstance(got, int) and not isinstance(got, bool) else None


def _generations(answers):
    """The sanlock generations of the host that the observers' answers report (a set)."""
    return {_generation(v) for v in (answers or {}).values()} - {None}


def change(record, state, fields):
    """
    Move ``record`` to ``state`` as :data:`MACHINE` allows: the fields of its old state that
    ``state`` does not keep are dropped, then ``fields`` are set. Raises IllegalTransition,
    naming both states and the failover, for a change the table has no edge for or a field
    ``state`` does not carry; ``record`` is then untouched.
    """
    old = record.get("state")
    row = MACHINE.get(state)
    where = f"failover {record.get('id')} of {record.get('host')}"
    if old not in MACHINE:
        raise IllegalTransition(f"{where}: {old} -> {state}: {old!r} is no journal state")
    if row is None or state not in MACHINE[old].next:
        allowed = ", ".join(MACHINE[old].next) or "nothing"
        raise IllegalTransition(f"{where}: {old} -> {state} is illegal ({old} goes to {allowed})")
    stray = sorted(set(fields) - set(row.fields))
    if stray:
        raise IllegalTransition(f"{where}: {old} -> {state}: {state} carries no {stray}")
    for key in [k for k in record if k not in COMMON and k not in row.keeps]:
        del record[key]
    record.update(fields)
    record["state"] = state


def backoff(attempt, base, cap):
    """Seconds to wait after the ``attempt``-th failed fence (1-based): base * 2^(n-1), capped."""
    return min(base * 2 ** max(attempt - 1, 0), cap)


def _target(name, spec, answer, state):
    """A VM host as the planner sees it, from its snapshot ``answer``."""
    return {
        "state": state,
        "free_memory_mib": int(answer["free_memory_mib"]),
        "memory_reserve_mib": xenha_pillarcheck.memory_reserve(
            spec.get("memory_reserve_mib"), f"xenha:hosts:{name}:memory_reserve_mib"
        ),
        "total_memory_mib": int(answer.get("total_memory_mib", 0)),
    }


def restart_plan(host, members, snapshot, host_states, leased, *, back=False):
    """
    What to restart where: ``{"domus": {name: entry}, "order": [names]}``, entries with
    ``state`` pending (with ``target``), running (already somewhere, ``host``) or unplaced
    (with ``reason``). ``back``: ``host`` is back and healthy (a rejoined failover; its own
    answer in ``snapshot``): what fits on no survivor is planned there again rather than
    nowhere. Pure: members/snapshot/host_states/leased in, plan out.
    """
    pillar_domus = members["domus"]
    running = {
        d: h
        for h, info in snapshot.items()
        for d in info.get("domus", ())
        if not d.endswith(TRANSIENT_SUFFIXES)  # a paused incoming copy is no running domU
    }
    hosts = {}
    for name, spec in members["vmhosts"].items():
        if name == host or name not in snapshot:
            hosts[name] = {"state": "down" if name != host else "fenced", "free_memory_mib": 0}
            continue
        hosts[name] = _target(name, spec, snapshot[name], host_states.get(name, "up"))
    domus = {}
    for name, spec in pillar_domus.items():
        domus[name] = {
            "host": running.get(name, host if name in leased else None),
            "memory_mib": int(spec.get("memory_mib", 0)),
            "priority": spec.get("priority", 0),
            "preferred_host": spec.get("preferred_host"),
            "anti_affinity": list(spec.get("anti_affinity") or []),
        }
    entries, todo = {}, []
    for name in sorted(leased):
        if name not in pillar_domus:
            entries[name] = {"state": "unplaced", "reason": "not in pillar: no config to start"}
        elif name in running:
            entries[name] = {"state": "running", "host": running[name]}
        else:
            todo.append(name)
    plan = xenha_placement.place({"hosts": hosts, "domus": domus}, todo, exclude=[host])
    if back and plan["unplaced"] and host in snapshot:
        # e.g. the only survivor is in maintenance: better on the host that lost them (it
        # rejoined and is healthy) than down; what it runs again already is charged to it
        hosts[host] = _target(host, members["vmhosts"][host], snapshot[host], "up")
        for name in todo:
            domus[name]["host"] = plan["placement"].get(name)
        again = xenha_placement.place(
            {"hosts": hosts, "domus": domus}, list(plan["unplaced"]), only=[host]
        )
        placed = {**plan["placement"], **again["placement"]}
        plan = {"placement": placed, "unplaced": again["unplaced"]}
    for name, target in plan["placement"].items():
        entries[name] = {"state": "pending", "target": target}
    for name, reason in plan["unplaced"].items():
        entries[name] = {"state": "unplaced", "reason": reason}
    order = list(plan["placement"]) + sorted(set(entries) - set(plan["placement"]))
    return {"domus": entries, "order": order}


# --- journal, lock, audit ---


def store_dir(cachedir):
    """``<cachedir>/xenha``, where the journals, locks and the audit trail live."""
    return xenha_store._dir(cachedir)


def audit_path(cachedir):
    return store_dir(cachedir) / "audit.log"


def journal_name(host):
    return f"failover-{host}"


def ack_name(host):
    return f"failover-ack-{host}"


def claims_name(host):
    return f"claims-{host}"


def claimed_hosts(cachedir):
    """The hosts whose loss claims wait in the queue (see :meth:`Engine.handle`), sorted."""
    names = (p.stem for p in store_dir(cachedir).glob("claims-*.json"))
    return sorted(n[len("claims-") :] for n in names if xenha_store.load(cachedir, n).get("claims"))


def load(cachedir, host):
    return xenha_store.load(cachedir, journal_name(host))


def journals(cachedir):
    """{host: journal} for every failover journal in the store."""
    found = {}
    base = store_dir(cachedir)
    for path in sorted(base.glob("failover-*.json")):
        name = path.stem
        if name.startswith("failover-ack-"):
            continue
        found[name[len("failover-") :]] = xenha_store.load(cachedir, name)
    return found


@contextlib.contextmanager
def run_lock(cachedir, host):
    """Yield True holding the host's run lock, or False if another failover holds it."""
    path = store_dir(cachedir) / f"{journal_name(host)}.run.lock"
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def audit_line(path, entry):
    """Append one audit entry as a readable line: ``<UTC time> <host> <step> <json details>``."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.get("time", time.time())))
    details = {k: v for k, v in entry.items() if k not in ("time", "host", "step")}
    line = f"{stamp} {entry.get('host', '-')} {entry.get('step', '-')} {json.dumps(details)}\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()


# --- the engine ---


class Engine:
    """Drives one host's failover through its journal. ``settings`` override DEFAULTS."""

    def __init__(self, io, cachedir, settings=None):
        self.io = io
        self.cachedir = cachedir
        self.conf = dict(DEFAULTS)
        self.conf.update({k: v for k, v in (settings or {}).items() if v is not None})
        self._prefetched = None  # (when, leased, snapshot futures): read while corroborating
        self._pool = None  # the executor of _drive

    # small helpers

    def _queue(self, record, what, **data):
        """Add an event to the journal's outbox; the next :meth:`_set` saves it with the new
        state and then fires it. A master killed in between fires it on resume (_flush): no
        event is lost (one may come twice)."""
        data = {"host": record["host"], "failover": record["id"], **data}
        record.setdefault("outbox", []).append([what, data])

    def _emit(self, record, what, **data):
        """An event on its own: saved with the journal, then fired."""
        self._queue(record, what, **data)
        self._save(record)
        self._flush(record)

    def _flush(self, record):
        """Fire the journal's events not fired yet, then record them as fired."""
        outbox = record.get("outbox")
        if not outbox:
            return
        for what, data in outbox:
            self.io.fire(f"xenha/failover/{record['host']}/{what}", data)
        outbox.clear()
        self._save(record)

    def _audit(self, host, step, **details):
        self.io.audit({"time": self.io.now(), "host": host, "step": step, **details})

    def _save(self, record):
        record["updated"] = self.io.now()
        xenha_store.save(self.cachedir, journal_name(record["host"]), record)

    def _set(self, record, state, **fields):
        """The one place the journal changes state (:func:`change`): then saved, audited and
        its events fired."""
        change(record, state, fields)
        history = record.setdefault("history", [])
        history.append({"state": state, "time": self.io.now()})
        del history[:-HISTORY_KEPT]  # a long-blocked failover must not grow without bound
        self._save(record)
        self._audit(record["host"], state, failover=record["id"], **fields)
        self._flush(record)

    def _host_state(self, host, state):
        with xenha_store.edit(self.cachedir, "hoststate") as doc:
            if state is None:
                doc.pop(host, None)
            else:
                doc[host] = {"state": state, "since": self.io.now(), "by": "failover"}

    # entry points

    def handle(self, host, reporter=None, event=None):
        """
        A loss claim (reactor or operator). Returns a summary dict with ``state``.

        The claim is queued, then taken under the host's run lock. One that comes while
        another run holds the lock (e.g. a resume finishing on older evidence) is taken by
        that run once it lets go of the lock: a beacon says "lost" once, so a claim joined and
        dropped would leave a dead host's domUs down.
        """
        members = self.io.members()
        ok, reason = verify_claim(members["vmhosts"], host, reporter, event)
        if not ok:
            self._audit(host, "ignored", reporter=reporter, reason=f"claim refused: {reason}")
            self.io.fire(
                f"xenha/failover/{host}/ignored",
                {"host": host, "reporter": reporter, "reason": reason},
            )
            return {"host": host, "state": IGNORED, "reason": reason}
        with xenha_store.edit(self.cachedir, claims_name(host)) as doc:
            doc.setdefault("claims", []).append({"reporter": reporter, "event": event})
        summary = self._take_claims(host, members)
        if summary is None:
            self._audit(host, "joined", reporter=reporter, reason="failover in progress")
            return {"host": host, "state": IN_PROGRESS, "joined": True}
        return summary

    def take_claims(self):
        """Take every queued claim whose host's run lock is free (the scheduled resume's
        backstop: a claim queued while a run held the lock of another host's survivor)."""
        ran = [self._take_claims(host) for host in claimed_hosts(self.cachedir)]
        return [summary for summary in ran if summary]

    def _take_claims(self, host, members=None):
        """
        Run ``host``'s queued claims, one after the other, until none is left (the lock is
        let go between rounds, so a claim queued meanwhile is never missed: its sender takes
        the lock itself, or the holder finds it in the next round). The first claim's
        summary; None if another run holds the lock or nothing was queued.
        """
        first = None
        while True:
            with run_lock(self.cachedir, host) as mine:
                if not mine:
                    return first
                with xenha_store.edit(self.cachedir, claims_name(host)) as doc:
                    claims = doc.pop("claims", [])
                if not claims:
                    return first
                members = members or self.io.members()
                for claim in claims:
                    summary = self._claim(host, claim["reporter"], claim["event"], members)
                    first = first or summary

    def _claim(self, host, reporter, event, members):
        """One claim, under the host's run lock."""
        record = load(self.cachedir, host)
        self._flush(record)
        if record.get("state") == DONE:
            back = self._seen_back(record, members)
            if not back:
                self._audit(host, "repeat", reporter=reporter, failover=record["id"])
                return {"host": host, "state": DONE, "duplicate": True, "id": record["id"]}
            self._mark_recovered(record, reason=back)
            record = {}
        if record.get("state") in ACTIVE:
            self._audit(host, "resume", reporter=reporter, failover=record["id"])
            record.setdefault("reporters", []).append(reporter)
        else:
            record = self._new(host, reporter, event)
        return self._drive(record, members)

    def resume(self, host):
        """Continue a journal left active (master restart, give-up while blocked), then take
        the claims queued while it ran."""
        summary = self._resume(host)
        self._take_claims(host)
        return summary

    def _resume(self, host):
        with run_lock(self.cachedir, host) as mine:
            if not mine:
                return {"host": host, "state": IN_PROGRESS, "joined": True}
            record = load(self.cachedir, host)
            self._flush(record)
            members = self.io.members()
            if record.get("state") == DONE:
                back = self._seen_back(record, members)
                if back:
                    self._mark_recovered(record, reason=back)
                elif self._replan(record, *self._room_now(record, members)):
                    return self._drive(record, members)
                return self._summary(load(self.cachedir, host) or record)
            if record.get("state") == IGNORED and record.get("recheck"):
                # an isolated host that still renewed: is it still unreachable, lease stopped?
                self._set(record, VERIFIED, reason="re-checking an isolated host")
            elif record.get("state") not in ACTIVE:
                return self._summary(record) if record else {"host": host, "state": None}
            self._audit(host, "resume", failover=record["id"])
            return self._drive(record, members)

    def reclaim(self, host, leased=None):
        """
        Restart the domUs whose leases ``host`` lost with an old sanlock generation (see
        :meth:`_rejoin`) when no failover of ``host`` is under way: a host reset and back
        before its failover decided, or one that lost its lockspace (a storage cut) and
        joined again. ``leased``: its leases if already read. Returns the failover's summary,
        or None when there is nothing to do. Then takes the claims queued while it ran.
        """
        summary = self._reclaim(host, leased)
        self._take_claims(host)
        return summary

    def _reclaim(self, host, leased):
        with run_lock(self.cachedir, host) as mine:
            last = load(self.cachedir, host) if mine else {}
            if not mine or last.get("state") in ACTIVE:
                return None
            members = self.io.members()
            if host not in members["vmhosts"]:
                return None
            leased = self._leased({"host": host}, members) if leased is None else leased
            lost = stale(leased)
            if not lost:
                return None
            if rejoined(last) and set(lost) <= set(last.get("not_restarted") or ()):
                return None  # tried, and said in its ``done``: not every minute again
            record = self._new(host, "xenha", None)
            self._rejoin(record, lost)
            return self._drive(record, members)

    def reclaim_all(self):
        """:meth:`reclaim` for every VM host, on one reading of the lease area; returns the
        summaries of the failovers it ran."""
        members = self.io.members()
        hosts = sorted(members["vmhosts"])
        # every VM host is asked side by side: a host that is down must not hold up the
        # scheduled resume by a whole call timeout; the first readable answer counts
        with ThreadPoolExecutor(len(hosts) or 1) as pool:
            # first, a host whose sanlock left the lockspace (its storage was gone longer than
            # 8 x io_timeout: sanlock fenced its domUs) joins it again, as its boot would: out
            # of it, the leases it lost never read stale and nothing restarts its domUs
            joins = list(pool.map(lambda h: self._safe(self.io.rejoin, h), hosts))
            answers = list(pool.map(lambda h: self._safe(self.io.leased_domus, h, None), hosts))
        for host, joined in zip(hosts, joins, strict=True):
            if isinstance(joined, dict) and joined.get("changed"):
                self._audit(host, "lockspace_joined", host_id=joined.get("host_id"))
        got = next((a for a in answers if holdings(a, "") is not None), None)
        if got is None:
            return []
        held = {h: holdings(got, h) for h in hosts}  # each host's share, parsed once
        ran = [self.reclaim(h, held[h]) for h in hosts if stale(held[h])]
        return [summary for summary in ran if summary]

    def ack(self, host, by="operator"):
        """
        Record an operator's manual fence of ``host``, then complete a blocked failover. Only
        while a failover of ``host`` is under way: an ack is for that failover (a new one
        forgets old acks), so one given with none running would be a false record.
        """
        record = load(self.cachedir, host)
        if record.get("state") not in ACTIVE:
            state = record.get("state") or "none recorded"
            reason = f"no failover of {host} is waiting for a fence (last failover: {state})"
            return {
                "host": host,
                "acknowledged": False,
                "state": record.get("state"),
                "reason": reason,
            }
        xenha_store.save(
            self.cachedir, ack_name(host), {"host": host, "time": self.io.now(), "by": by}
        )
        self._audit(host, "ack_fence", by=by)
        return {"acknowledged": True, **self.resume(host)}

    # the machine

    def _new(self, host, reporter, event):
        record = {
            "host": host,
            "id": uuid.uuid4().hex[:12],
            "reporters": [reporter],
            "event": event,
            "started": self.io.now(),
            "attempts": 0,
            "history": [],
        }
        xenha_store.delete(self.cachedir, ack_name(host))  # an old ack is not for this failover
        self._queue(record, "started", reporter=reporter)
        self._set(record, RECEIVED, reporter=reporter)
        return record

    def _seen_back(self, record, members):
        """
        Why a failed-over host counts as back, or None: its minion answers, its delta lease
        advances, or it joined sanlock again since the fence (a generation above the fenced
        one: it came back and maybe died again, a new incident). The runner's own reads only;
        a claim's times or ``age`` are the sender's word. Looks only: the caller marks it.
        """
        host = record["host"]
        if self._safe(self.io.ping, host) is True:
            return "its minion answers the master"
        evidence, answers = self._look(members, host)
        if evidence["advancing"]:
            return f"its lease advances ({evidence_text(host, evidence)})"
        fenced = (record.get("fence") or {}).get("generation")
        now = _generations(answers)
        if isinstance(fenced, int) and now and max(now) > fenced:
            return f"joined sanlock again since the fence (generation {max(now)} > {fenced})"
        return None

    def _back(self, record, members):
        """True if the fenced host answers or renews again (a resume or a wait: time passed).
        Never for a rejoined host: being back is what its failover is about. After a confirmed
        power-off, only if it renews under the generation it was fenced in (it never went
        down): powered on again, it booted afresh, runs none of its domUs (they never start at
        boot) and lost their leases with its old generation, so they are still restarted."""
        if self._fresh or rejoined(record):
            return False
        host = record["host"]
        if powered_off(record):
            evidence, answers = self._look(members, host)
            fenced = record["fence"].get("generation")
            now = _generations(answers)
            return bool(evidence["advancing"]) and (fenced is None or now <= {fenced})
        if self._safe(self.io.ping, host) is True:
            return True
        return bool(self._look(members, host)[0]["advancing"])

    def _stop_restarting(self, record, members):
        """The fenced host is back before all its domUs ran elsewhere: start no more of them."""
        entries = record.get("domus") or {}
        for name, entry in entries.items():
            where = self._locate(name, record, members) if entry["state"] == "starting" else None
            if where:  # started just before the runner died
                entry.update(state="started", host=where, note="found running on resume")
                self._announce(record, name, target=where, note=entry["note"])
        left = sorted(n for n, e in entries.items() if e["state"] in PENDING)
        reason = f"{record['host']} came back before its domUs were restarted elsewhere"
        self._mark_recovered(record, reason=reason, not_restarted=left)
        return True

    def _revive(self, host, members):
        """Mark ``host``'s finished failover ``recovered`` if the host is back; True if so."""
        with run_lock(self.cachedir, host) as mine:
            record = load(self.cachedir, host) if mine else {}
            back = self._seen_back(record, members) if record.get("state") == DONE else None
            if back:
                self._mark_recovered(record, reason=back)
            return bool(back)

    def _rejoin(self, record, lost):
        """
        The journal at ``fenced``, method ``rejoined``: the host holds the leases ``lost``
        (:func:`stale`) from an older sanlock generation than its current one: it joined the
        lockspace again (a reset, a lost lockspace), and lost them with the old generation.
        sanlock itself lets any host take such a lease, so no domU runs under it: they are
        restarted as a fenced host's are (those it runs again are left). The host is back and
        stays healthy. Returns True (the journal moved on).
        """
        host = record["host"]
        reason = (
            f"{host} joined sanlock again and lost the leases of {', '.join(lost)} with its"
            " old generation: they run nowhere, sanlock frees them"
        )
        fence = {"method": "rejoined", "domus": lost, "reason": reason}
        self._host_state(host, None)
        self._queue(record, "rejoined", **fence)
        self._set(record, FENCED, fence=fence)
        return True

    def _mark_recovered(self, record, **fields):
        self._host_state(record["host"], None)
        self._queue(record, RECOVERED, **fields)
        self._set(record, RECOVERED, state_before=record["state"], **fields)

    def _acked(self, host):
        """The operator's manual-fence acknowledgement (written by :meth:`ack`) or None."""
        return xenha_store.load(self.cachedir, ack_name(host)) or None

    def _safe(self, func, *args):
        """Call an adapter method; an exception becomes a Failure (recorded, never a proof)."""
        try:
            return func(*args)
        except Exception as err:  # noqa: BLE001 - any adapter failure is data here
            return Failure(str(err) or type(err).__name__)

    def _look(self, members, host, duration=None, exclude=()):
        """
        Ask every VM host but ``host`` (and ``exclude``) about ``host``'s delta lease, side by
        side: ``(lease_evidence, {observer: answer})``. No reporter is asked first or believed
        first: one survivor that sees the lease advance outweighs any that do not.
        """
        observers = [h for h in sorted(members["vmhosts"]) if h != host and h not in exclude]
        if not observers:
            return lease_evidence({}), {}
        with ThreadPoolExecutor(len(observers)) as pool:
            futures = [
                pool.submit(self._safe, self.io.observe, o, host, duration) for o in observers
            ]
            answers = dict(zip(observers, (f.result() for f in futures), strict=True))
        return lease_evidence(answers), answers

    def _summary(self, record):
        keys = ("host", "id", "state", "reason", "fence", "domus", "order", "seconds")
        keys += ("not_restarted", "attempts", "started")
        return {k: record[k] for k in keys if k in record}

    def _drive(self, record, members):
        steps = {
            RECEIVED: self._verified,
            VERIFIED: self._corroborate,
            CORROBORATED: self._fence,
            BLOCKED: self._retry,
            FENCED: self._plan,
            RESTARTING: self._restart,
        }
        self._retry_until = self.io.mono() + self.conf["retry_for"]
        # True once this call fenced the host: until time passes (a wait, a resume) nothing
        # needs to ask whether it is back
        self._fresh = False
        # reads that change nothing run beside the steps (ping, plan inputs, lease re-listing)
        with ThreadPoolExecutor(4) as self._pool:
            # each step persists its outcome and returns False to stop here (resume continues)
            while record["state"] in steps and steps[record["state"]](record, members):
                pass
        return self._summary(record)

    def _verified(self, record, members):
        self._host_state(record["host"], "suspect")
        self._queue(record, VERIFIED, reporters=record["reporters"])
        self._set(record, VERIFIED)
        return True

    def _corroborate(self, record, members):
        host = record["host"]
        # the master's ping and the survivors' look at the lease run side by side; meanwhile
        # the restart plan's inputs are read (reading changes nothing; the leases are read
        # again after the fence, see _restart)
        pinged = self._pool.submit(self._safe, self.io.ping, host)
        self._prefetched = (
            self.io.mono(),
            self._pool.submit(self._leased, record, members),
            self._pool.submit(self._survivors, record, members),
        )
        watched = self._pool.submit(self._watch_lease, record, members)
        # an answered ping clears the suspicion without waiting for the lease watch, which
        # (through a reporter that may itself be cut off) can take its whole timeout: another
        # host's failover does not target a suspect host meanwhile
        if pinged.result() is True:
            lost = stale(self._prefetched[1].result())
            if lost:
                return self._rejoin(record, lost)
            return self._ignore(record, "the master still reaches the host's minion")
        evidence, answers = watched.result()
        seen = [{"observer": o, "verdict": v} for o, v in answers.items()]
        if evidence["advancing"]:
            lost = stale(self._prefetched[1].result())
            if lost:
                return self._rejoin(record, lost)
            # alive but cut off: resume() looks again
            return self._ignore(
                record,
                f"{host} still renews its sanlock delta lease (seen by "
                f"{', '.join(evidence['advancing'])}): it is alive, maybe isolated; its domUs"
                " are not restarted elsewhere",
                observations=seen,
                recheck=True,
            )
        if not readable(evidence):
            # unreadable is not dead: an unreachable minion plus unreadable leases fences nothing
            why = f"no evidence that {host} is down: {evidence_text(host, evidence)}"
            return self._block(record, f"not fenced, nothing restarted: {why}")
        self._queue(record, CORROBORATED, observations=seen)
        self._set(record, CORROBORATED, observations=seen)
        return True

    def _watch_lease(self, record, members):
        """(evidence, answers): every survivor watches the lease for one renewal interval."""
        window = self.conf["corroborate_window"] or 2 * self.conf["io_timeout"] + 1
        return self._look(members, record["host"], window)

    def _ignore(self, record, reason, recheck=False, **fields):
        self._host_state(record["host"], None)
        self._queue(record, IGNORED, reason=reason)
        self._set(record, IGNORED, reason=reason, recheck=recheck, **fields)
        return True

    def _fence(self, record, members):
        """
        IPMI path: the BMC confirms the power-off and a survivor sees the delta lease stopped
        (advancing: the BMC switched off another machine, nothing restarts). Lease-only path
        (no BMC, or it failed): wait until a survivor's sanlock calls the host ``dead``
        (8 x io_timeout + watchdog_fire after its last renewal: its watchdog has fired).
        """
        ack = self._acked(record["host"])
        if isinstance(ack, dict):
            return self._fenced(record, {"method": "manual", "ack": ack})
        moved, tried = self._fence_ipmi(record, members)
        if moved:
            return True
        moved, why = self._await_dead(record, members)
        if moved:
            return True
        return self._block(record, "not fenced, nothing restarted: " + "; ".join([tried, why]))

    def _fence_ipmi(self, record, members):
        """(True: the journal moved on, or False, what was tried) for the IPMI path."""
        host = record["host"]
        bmc = members["vmhosts"][host].get("bmc")
        if not bmc:
            return False, "IPMI: no BMC configured"
        start = self.io.mono()
        result = self._safe(self.io.fence_ipmi, host, bmc)
        if not isinstance(result, dict):
            return False, f"IPMI: {result}"
        took = round(self.io.mono() - start, 3)
        evidence, answers = self._look(members, host)
        text = evidence_text(host, evidence)
        if evidence["advancing"]:
            why = f"the BMC confirmed power off, but {text}: it may control another machine"
            return self._block(record, f"not fenced, nothing restarted: {why}"), None
        if not readable(evidence):
            return False, f"IPMI: powered off, but {text}"
        fence = {"method": "ipmi", "seconds": took, **result, "lease": text}
        return self._fenced(record, fence, answers), None

    def _await_dead(self, record, members):
        """(True: the journal moved on, or False, why not) for the lease-only path."""
        host, conf = record["host"], self.conf
        deadline = self.io.mono() + 8 * conf["io_timeout"] + conf["watchdog_fire"]
        deadline += conf["expiry_margin"]
        while True:
            evidence, answers = self._look(members, host)
            text = evidence_text(host, evidence)
            if evidence["advancing"]:
                lost = stale(self._leased(record, members))
                if lost:
                    return self._rejoin(record, lost), None
                return self._ignore(record, f"{host} renews again ({text})", recheck=True), None
            if evidence["dead"] or evidence["free"]:
                # the target's sanlock takes these leases only because it also sees them dead
                return self._fenced(record, {"method": "lease", "lease": text}, answers), None
            if self.io.mono() >= deadline:
                return False, f"lease: not dead after 8 x io_timeout + watchdog_fire: {text}"
            self.io.sleep(min(conf["io_timeout"], max(deadline - self.io.mono(), 0)))
            ack = self._acked(host)  # the operator's word ends the wait (8T + W is long)
            if isinstance(ack, dict):
                return self._fenced(record, {"method": "manual", "ack": ack}), None

    def _block(self, record, reason):
        """Blocked: nothing restarted, retried after a back-off (an ack_fence ends it)."""
        record["attempts"] = record.get("attempts", 0) + 1
        wait = backoff(record["attempts"], self.conf["retry_base"], self.conf["retry_max"])
        self._host_state(record["host"], "suspect")
        self._queue(record, BLOCKED, reason=reason, attempt=record["attempts"], retry_in=wait)
        self._set(record, BLOCKED, reason=reason, retry_in=wait)
        return True

    def _retry(self, record, members):
        """Wait out the back-off (an ack ends it at once), then corroborate and fence again."""
        host = record["host"]
        if not self._acked(host):
            wait = record.get("retry_in", self.conf["retry_base"])
            # the back-off counts from the block: a resume once it is over (the scheduled
            # one, every minute) retries at once, also with retry_for 0
            since = blocked_since(record)
            left = wait if since is None else max(0.0, min(wait, since + wait - self.io.now()))
            if self.io.mono() + left > self._retry_until:
                self._audit(host, "blocked_left", failover=record["id"], retry_in=left)
                return False
            deadline = self.io.mono() + left
            while self.io.mono() < deadline:
                if self._acked(host):
                    break
                self.io.sleep(min(1.0, deadline - self.io.mono()))
        if self._acked(host):
            self._set(record, CORROBORATED, reason="manual fence acknowledged")
        else:
            self._set(record, VERIFIED, reason=f"retry after attempt {record['attempts']}")
        return True

    def _fenced(self, record, fence, answers=None):
        generations = _generations(answers)
        if generations:  # a later, higher one: the host joined sanlock again (_seen_back)
            fence["generation"] = max(generations)
        self._fresh = True
        self._host_state(record["host"], "fenced")
        self._queue(record, FENCED, **fence)
        self._set(record, FENCED, fence=fence)
        return True

    def _leased(self, record, members):
        """The dead host's domU leases ``{name: {"mode", "hosts"}}`` as a survivor reads them
        from the lease area, or None if none could."""
        return self._leased_or_why(record, members)[0]

    def _leased_or_why(self, record, members):
        """``(leases, None)`` as :meth:`_leased`, or ``(None, why)``: each survivor's error."""
        host = record["host"]
        errors = []
        for observer in sorted(h for h in members["vmhosts"] if h != host):
            answer = self._safe(self.io.leased_domus, observer, host)
            got = holdings(answer, host)
            if got is not None:
                return got, None
            why = answer if isinstance(answer, Failure) else f"not a lease list: {answer!r:.80}"
            errors.append(f"{observer}: {why}")
        return None, "; ".join(errors) or "no survivor"

    def _in_flight(self, record, members, leased):
        """
        ``(names to restart, {name: entry})``: a lease the dead host holds shared with another
        host is a live migration in flight; it is left to that holder (``migrating``) unless a
        survivor's sanlock calls every other holder dead, or every holder lost it (stale).
        """
        host = record["host"]
        todo, migrating = [], {}
        for name, held in sorted(leased.items()):
            others = sorted(set(held["hosts"]) - {host})
            if held.get("stale"):  # every holder joined again since: no copy runs under it
                others = []
            live = [o for o in others if not self._look(members, o, exclude=(host,))[0]["dead"]]
            if not live:
                todo.append(name)
                continue
            reason = (
                f"lease held shared by {', '.join(held['hosts'])} (a live migration): not"
                f" started while {', '.join(live)} is live"
            )
            migrating[name] = {"state": "migrating", "holders": held["hosts"], "reason": reason}
        return todo, migrating

    def _survivors(self, record, members):
        """The survivors' snapshot ({} when none answers)."""
        survivors = [h for h in members["vmhosts"] if h != record["host"]]
        snapshot = self._safe(self.io.snapshot, survivors)
        return snapshot if isinstance(snapshot, dict) else {}

    def _host_states(self):
        states = self._safe(self.io.host_states)
        return states if isinstance(states, dict) else {}

    def _target_states(self, snapshot, members):
        """
        The host marks a restart plan reads. A survivor in ``snapshot`` still marked fenced by
        its own, finished failover answered: if it is back (as the scheduled resume would find
        a minute later), it is marked healthy and is a target now.
        """
        states = self._host_states()
        revived = False
        for host in [h for h in snapshot if states.get(h) == FENCED]:
            revived = self._revive(host, members) or revived  # every one, not the first only
        return self._host_states() if revived else states

    def _plan(self, record, members):
        host = record["host"]
        leased = snapshot = None
        # read while corroborating and fencing; not after a long block (free memory moves on)
        if self._prefetched and self.io.mono() - self._prefetched[0] < PREFETCH_FOR:
            leased, snapshot = (future.result() for future in self._prefetched[1:])
        self._prefetched = None  # a retry or a resume reads again
        why = None
        if leased is None:
            leased, why = self._leased_or_why(record, members)
        else:
            record["leases_read"] = "before the fence"  # _restart reads them again
        if leased is None:
            return self._plan_blocked(
                record, f"no survivor could list the dead host's leases ({why})"
            )
        if self._back(record, members):
            return self._stop_restarting(record, members)
        if not snapshot:
            snapshot = self._survivors(record, members)
        if not snapshot:
            # e.g. a master restarted before its minions reconnected: "no room anywhere" now
            # would end the failover with nothing restarted
            return self._plan_blocked(record, "no survivor answered with its free memory")
        if rejoined(record):
            own = self._safe(self.io.snapshot, [host])
            if isinstance(own, dict) and host in own:
                # only what it lost; one it runs again (e.g. started at boot) is left there
                leased = {n: h for n, h in leased.items() if h.get("stale")}
                snapshot = {**snapshot, host: own[host]}
            elif not self._died_again(members, host):
                return self._plan_blocked(record, f"{host} is back but did not list its domUs")
            # else it died again: sanlock itself frees every lease it held, old or new
        states = self._target_states(snapshot, members)
        todo, migrating = self._in_flight(record, members, leased)
        back = rejoined(record) and host in snapshot
        plan = restart_plan(host, members, snapshot, states, todo, back=back)
        plan["domus"].update(migrating)
        plan["order"] += sorted(migrating)
        unplaced = any(e["state"] == "unplaced" for e in plan["domus"].values())
        suspects = sorted(h for h in snapshot if states.get(h) == "suspect")
        if unplaced and suspects:
            # a survivor under a claim still being checked (e.g. one an isolated host made):
            # it is cleared or fenced within seconds, so wait for that, not "no room"
            return self._plan_blocked(
                record, f"survivors {', '.join(suspects)} are suspect (their check runs)"
            )
        self._set(record, RESTARTING, domus=plan["domus"], order=plan["order"])
        return True

    def _died_again(self, members, host):
        """True if a rejoined host's delta lease is dead again for a survivor's sanlock and
        advances for none: then none of its domUs runs (its watchdog saw to it)."""
        evidence = self._look(members, host)[0]
        return bool(evidence["dead"]) and not evidence["advancing"]

    def _room_now(self, record, members):
        """
        ``(placed, handed)`` for a finished failover: ``placed`` the plan entries of its domUs
        that fitted nowhere and have room now (e.g. an operator freed memory), ``handed``
        ``{name: why}`` its migrating domUs the other holder took over. Writes nothing of the
        journal (a survivor back from its own failover is marked so: ``_target_states``).
        """
        entries = record.get("domus") or {}
        unplaced = [
            name
            for name, entry in entries.items()
            if entry["state"] == "unplaced" and name in members["domus"]
        ]
        ended, handed = self._migrations_ended(record, members)
        unplaced += ended
        snapshot = self._survivors(record, members) if unplaced else {}
        if not snapshot:
            return {}, handed
        states = self._target_states(snapshot, members)
        plan = restart_plan(record["host"], members, snapshot, states, unplaced)
        placed = {n: e for n, e in plan["domus"].items() if e["state"] != "unplaced"}
        return placed, handed

    def _replan(self, record, placed, handed):
        """
        Back to ``restarting`` with ``placed`` (from :meth:`_room_now`), if any; True if so.
        Only while the dead host stays down: once it is back, its domUs are its operator's.
        """
        if not placed:
            return False
        for name, why in handed.items():
            record["domus"][name].update(state="handed_over", reason=why)
        record["domus"].update(placed)
        self._audit(record["host"], "replanned", failover=record["id"], domus=sorted(placed))
        self._set(record, RESTARTING, reason="room for domUs that fitted nowhere")
        return True

    def _migrations_ended(self, record, members):
        """
        ``(names, handed)`` from the ``migrating`` domUs of a finished failover: ``names``
        those whose lease the dead host now holds alone (the other holder gave its share up:
        the migration failed), to be placed; ``handed`` ``{name: why}`` those whose lease it
        no longer holds: they went to the other holder and stay theirs.
        """
        waiting = [n for n, e in (record.get("domus") or {}).items() if e["state"] == "migrating"]
        leased = self._leased(record, members) if waiting else None
        if leased is None:
            return [], {}
        todo, _ = self._in_flight(record, members, {n: leased[n] for n in waiting if n in leased})
        why = f"{record['host']} no longer holds its lease"
        handed = {name: why for name in waiting if name not in leased}
        return [n for n in todo if n in members["domus"]], handed

    def _plan_blocked(self, record, why):
        """
        The host stays fenced; only the planning is retried, after a back-off that doubles up
        to ``retry_max`` (now, or by a resume). ``blocked`` fires when the reason is new: the
        audit trail has every retry, the bus is not flooded with the same news.
        """
        reason = f"fenced, but {why}"
        record["plan_attempts"] = record.get("plan_attempts", 0) + 1
        self._audit(record["host"], "blocked", failover=record["id"], reason=reason)
        if record.get("reason") != reason:
            record["reason"] = reason
            self._emit(record, "blocked", reason=reason)
        wait = backoff(record["plan_attempts"], self.conf["retry_base"], self.conf["retry_max"])
        self._fresh = False  # the host may be back after the wait
        return self._wait_or_leave(record, wait)

    def _wait_or_leave(self, record, wait=None):
        """Sleep ``wait`` (default ``retry_base``) and return True, or False if that passes
        this call's retry window (the journal stays as saved; a resume goes on from there)."""
        wait = self.conf["retry_base"] if wait is None else wait
        if self.io.mono() + wait > self._retry_until:
            return False
        self.io.sleep(wait)
        return True

    def _restart(self, record, members):
        if self._back(record, members):
            # a resume, or a wait: a host that came back keeps its domUs
            return self._stop_restarting(record, members)
        # leases listed before the fence: list them again (beside the first start) so that one
        # taken in the meantime is not left behind
        again = None
        if record.get("leases_read") == "before the fence":
            again = self._pool.submit(self._leased, record, members)
        self._start_pending(record, members)
        if again is not None:
            self._add_missed(record, members, again.result())
            self._start_pending(record, members)
        while self._retry_failed(record, members):
            if self._back(record, members):
                return self._stop_restarting(record, members)
            self._start_pending(record, members)
        total = round(self.io.now() - record["started"], 3)
        down = {
            n: e.get("reason") or e.get("error")
            for n, e in record["domus"].items()
            if e["state"] not in ("started", "running", "handed_over")
        }
        down.update(self._unaccounted(record, members))
        self._queue(record, DONE, seconds=total, domus=record["domus"], not_restarted=down)
        self._set(record, DONE, seconds=total, not_restarted=down)
        return True

    def _unaccounted(self, record, members):
        """
        Pillar domUs that run on no survivor and that the dead host held no lease for: maybe
        stopped on purpose, maybe lost with it (started without a lease). Never restarted on
        that doubt, never left silent: ``done`` names them.
        """
        if rejoined(record):  # the host is up: what else it runs or not is its own
            return {}
        others = sorted(set(members["domus"]) - set(record.get("domus") or {}))
        snapshot = self._survivors(record, members) if others else {}
        running = {d for info in snapshot.values() for d in info.get("domus", ())}
        why = f"running nowhere, and {record['host']} held no lease for it: not restarted"
        return {name: why for name in others if snapshot and name not in running}

    def _retry_failed(self, record, members):
        """
        After a back-off, look for each domU whose start failed (the call may have started it
        and lost the answer): found running, it is started; else it is tried again, up to
        ``start_tries`` starts. True if any is to be started again.
        """
        failed = [
            (name, entry)
            for name, entry in record["domus"].items()
            if entry["state"] == "failed" and entry.get("tries", 1) < self.conf["start_tries"]
        ]
        if not failed or not self._wait_or_leave(record):
            return False
        self._fresh = False
        again = False
        for name, entry in failed:
            where = self._locate(name, record, members)
            if where:
                note = f"found running after a failed start: {entry.get('error')}"
                entry.update(state="started", host=where, note=note)
                self._announce(record, name, target=where, note=note)
            else:
                error = entry.pop("error", None)
                entry.update(state="pending", tries=entry.get("tries", 1) + 1, last_error=error)
                again = True
        self._save(record)
        return again

    def _add_missed(self, record, members, leased):
        """Plan the domUs whose leases the fenced host held but the first listing missed."""
        host = record["host"]
        record["leases_read"] = "after the fence"
        if leased is None:
            self._audit(host, "leases_not_reread", failover=record["id"])
            self._save(record)
            return
        missed = {n: h for n, h in leased.items() if n not in record["domus"]}
        if rejoined(record):  # a lease it took since it is back is its own
            missed = {n: h for n, h in missed.items() if h.get("stale")}
        if missed:
            todo, migrating = self._in_flight(record, members, missed)
            snapshot = self._survivors(record, members)
            plan = restart_plan(host, members, snapshot, self._host_states(), todo)
            record["domus"].update(plan["domus"], **migrating)
            record["order"] += plan["order"] + sorted(migrating)
            self._audit(host, "leases_missed", failover=record["id"], domus=sorted(missed))
        self._save(record)

    def _start_pending(self, record, members):
        """Start every planned domU not started yet, in order, each step persisted."""
        host = record["host"]
        # powered off (BMC, or the operator's word): the target may free the host's leases once
        # it proved its delta lease stopped; lease-only: sanlock's own "dead" frees them
        fenced = host if powered_off(record) else None
        for name in record["order"]:
            entry = record["domus"][name]
            if entry["state"] == "starting":
                where = self._locate(name, record, members)
                if where:
                    # started just before the runner died: no second start, but the same event
                    note = "found running on resume"
                    entry.update(state="started", host=where, note=note)
                    self._announce(record, name, target=where, note=note)
                    continue
            if entry["state"] not in ("pending", "starting"):
                continue
            entry["state"] = "starting"
            self._save(record)
            start = self.io.mono()
            spec = members["domus"][name]
            result = self._safe(self.io.start_domu, entry["target"], name, spec, fenced)
            took = round(self.io.mono() - start, 3)
            if isinstance(result, Failure):
                entry.update(state="failed", error=result, seconds=took)
                self._save(record)
                self._audit(host, "domu_failed", domu=name, target=entry["target"], error=result)
                continue
            entry.update(state="started", host=entry["target"], seconds=took)
            self._announce(record, name, target=entry["target"], seconds=took)

    def _announce(self, record, name, **data):
        """Audit ``domu_started`` and fire it; the entry's new state is saved together with
        the event (see _emit), so a master killed in between fires it on resume."""
        self._audit(record["host"], "domu_started", domu=name, **data)
        self._emit(record, "domu_started", domu=name, **data)

    def _locate(self, name, record, members):
        for where, info in self._survivors(record, members).items():
            if name in info.get("domus", ()):
                return where
        return None
