"""
The failover engine: a persisted, resumable state machine, one journal per suspect host.

    received -> verified -> corroborated -> fenced -> restarting -> done
                          \\-> ignored      \\-> blocked (retried with back-off; ack -> fenced)

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
- Nothing restarts unless the host is fenced: BMC power-off confirmed, its storage lease
  provably expired, or an operator acknowledged a manual fence.
"""

import contextlib
import datetime
import fcntl
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

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
ACTIVE = (RECEIVED, VERIFIED, CORROBORATED, FENCED, RESTARTING, BLOCKED)
PREFETCH_FOR = 30.0  # s a restart plan's inputs read while corroborating stay good for
HISTORY_KEPT = 200  # state changes kept in a journal (the audit trail keeps them all)

DEFAULTS = {
    "corroborate_window": 2.0,  # s the suspect's lease must be seen unchanged (2 renewals)
    "expiry": 10.0,  # xenha:leases:expiry
    "expiry_margin": 1.0,  # extra s of watching before a lease counts as expired
    "retry_base": 5.0,  # blocked: first back-off (s), doubled each attempt ...
    "retry_max": 300.0,  # ... up to this
    "retry_for": 600.0,  # one runner call keeps retrying this long, then leaves it to resume
    "start_tries": 3,  # starts of one domU (a survivor that did not answer, e.g. reconnecting)
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
        """Lease verdict of ``host`` seen from minion ``observer`` (xenha_lease.observe)."""
        raise NotImplementedError

    def fence_ipmi(self, host, bmc):
        """Power ``host`` off through its BMC and confirm; returns timings, raises on failure."""
        raise NotImplementedError

    def leased_domus(self, observer, host):
        """Names of the domUs whose leases ``host`` holds, read on ``observer``."""
        raise NotImplementedError

    def snapshot(self, hosts):
        """{host: {"free_memory_mib", "total_memory_mib", "domus": [names]}} of those answering."""
        raise NotImplementedError

    def host_states(self):
        """{host: state} from the master's store (maintenance etc.); missing means up."""
        raise NotImplementedError

    def start_domu(self, host, name, spec, fenced):
        """Take the domU's lease on ``host`` (owner ``fenced`` may be overridden) and start it."""
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
        accepted = f"loss of {host} reported by {reporter}"
    for refused, reason in refusals:
        if refused:
            return False, reason
    return True, accepted


def claim_time(event, default):
    """When the reporter fired ``event`` (its ``_stamp``, UTC if no zone given), or ``default``."""
    try:
        fired = datetime.datetime.fromisoformat(event["_stamp"])
    except (KeyError, TypeError, ValueError):
        return default
    if fired.tzinfo is None:
        fired = fired.replace(tzinfo=datetime.timezone.utc)
    return fired.timestamp()


def backoff(attempt, base, cap):
    """Seconds to wait after the ``attempt``-th failed fence (1-based): base * 2^(n-1), capped."""
    return min(base * 2 ** max(attempt - 1, 0), cap)


def restart_plan(host, members, snapshot, host_states, leased):
    """
    What to restart where: ``{"domus": {name: entry}, "order": [names]}``, entries with
    ``state`` pending (with ``target``), running (already somewhere, ``host``) or unplaced
    (with ``reason``). Pure: members/snapshot/host_states/leased in, plan out.
    """
    pillar_domus = members["domus"]
    running = {d: h for h, info in snapshot.items() for d in info.get("domus", ())}
    hosts = {}
    for name, spec in members["vmhosts"].items():
        if name == host or name not in snapshot:
            hosts[name] = {"state": "down" if name != host else "fenced", "free_memory_mib": 0}
            continue
        hosts[name] = {
            "state": host_states.get(name, "up"),
            "free_memory_mib": int(snapshot[name]["free_memory_mib"]),
            "memory_reserve_mib": int(spec.get("memory_reserve_mib", 0)),
            "total_memory_mib": int(snapshot[name].get("total_memory_mib", 0)),
        }
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
        record.update(fields)
        record["state"] = state
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
        """A loss claim (reactor or operator). Returns a summary dict with ``state``."""
        members = self.io.members()
        ok, reason = verify_claim(members["vmhosts"], host, reporter, event)
        if not ok:
            self._audit(host, "ignored", reporter=reporter, reason=f"claim refused: {reason}")
            self.io.fire(
                f"xenha/failover/{host}/ignored",
                {"host": host, "reporter": reporter, "reason": reason},
            )
            return {"host": host, "state": IGNORED, "reason": reason}
        with run_lock(self.cachedir, host) as mine:
            if not mine:
                self._audit(host, "joined", reporter=reporter, reason="failover in progress")
                return {"host": host, "state": "in_progress", "joined": True}
            record = load(self.cachedir, host)
            self._flush(record)
            if record.get("state") == DONE:
                back = self._heard_since(record, event) or self._recovered(record, members)
                if not back:
                    self._audit(host, "repeat", reporter=reporter, failover=record["id"])
                    return {"host": host, "state": DONE, "duplicate": True, "id": record["id"]}
                record = {}
            if record.get("state") in ACTIVE:
                self._audit(host, "resume", reporter=reporter, failover=record["id"])
                record.setdefault("reporters", []).append(reporter)
            else:
                record = self._new(host, reporter, event)
            return self._drive(record, members)

    def resume(self, host):
        """Continue a journal left active (master restart, give-up while blocked)."""
        with run_lock(self.cachedir, host) as mine:
            if not mine:
                return {"host": host, "state": "in_progress", "joined": True}
            record = load(self.cachedir, host)
            self._flush(record)
            members = self.io.members()
            if record.get("state") == DONE:
                if not self._recovered(record, members) and self._replanned(record, members):
                    return self._drive(record, members)
                return self._summary(load(self.cachedir, host) or record)
            if record.get("state") == IGNORED and record.get("recheck"):
                # an isolated host that still renewed: is it still unreachable, lease stopped?
                self._set(record, VERIFIED, reason="re-checking an isolated host")
            elif record.get("state") not in ACTIVE:
                return self._summary(record) if record else {"host": host, "state": None}
            self._audit(host, "resume", failover=record["id"])
            return self._drive(record, members)

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
            "state": RECEIVED,
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

    def _recovered(self, record, members):
        """True (and the host marked healthy) if a failed-over host is back."""
        host = record["host"]
        back = self._safe(self.io.ping, host) is True
        if not back:
            for observer in self._observers(record, members):
                verdict = self._safe(self.io.observe, observer, host, 0)
                if isinstance(verdict, dict) and verdict.get("state") == "advancing":
                    back = True
                    break
        if back:
            self._mark_recovered(record)
        return back

    def _revived(self, host, members):
        """True (and ``host`` marked healthy) if its finished failover's host is back."""
        with run_lock(self.cachedir, host) as mine:
            record = load(self.cachedir, host) if mine else {}
            return record.get("state") == DONE and self._recovered(record, members)

    def _heard_since(self, record, event):
        """
        True (and the old failover marked recovered) if the claim's reporter last heard the
        host after that failover began: the host was back in between and died again, a new
        incident. A late copy of the old claim heard it before. Without the master's schedule
        having marked the return yet, the new loss would otherwise pass for a repeat.
        """
        age = (event or {}).get("age")
        if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
            return False
        # the event's own time (Salt's _stamp, the reporter's clock, NTP-synced): a copy of the
        # old claim handled late must not look recent; the margin is the dead time (>= 0.5 s)
        if claim_time(event, self.io.now()) - age <= record["started"]:
            return False
        self._mark_recovered(record, reason=f"heard again {age} s before a new loss")
        return True

    def _mark_recovered(self, record, **fields):
        record["state_before"] = record["state"]
        self._host_state(record["host"], None)
        self._queue(record, "recovered", **fields)
        self._set(record, "recovered", **fields)

    def _acked(self, host):
        """The operator's manual-fence acknowledgement (written by :meth:`ack`) or None."""
        return xenha_store.load(self.cachedir, ack_name(host)) or None

    def _safe(self, func, *args):
        """Call an adapter method; an exception becomes a Failure (recorded, never a proof)."""
        try:
            return func(*args)
        except Exception as err:  # noqa: BLE001 - any adapter failure is data here
            return Failure(str(err) or type(err).__name__)

    def _observers(self, record, members):
        """Survivor minions that can read the lease directory, reporters first."""
        host = record["host"]
        names = [r for r in record.get("reporters", []) if r in members["vmhosts"]]
        names += sorted(members["vmhosts"])
        return [n for n in dict.fromkeys(names) if n != host]

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
        # reads that change nothing run beside the steps (ping, plan inputs, lease re-listing)
        with ThreadPoolExecutor(4) as self._pool:
            # each step persists its outcome and returns False to stop here (resume continues)
            while record["state"] in steps and steps[record["state"]](record, members):
                pass
        return self._summary(record)

    def _verified(self, record, members):
        self._host_state(record["host"], "suspect")
        self._queue(record, "verified", reporters=record["reporters"])
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
            return self._ignore(record, "the master still reaches the host's minion")
        seen, alive = watched.result()
        if alive:
            # alive but cut off: resume() looks again (o2cb may still fence it)
            return self._ignore(
                record,
                f"{host} still renews its storage lease (seen by {alive}): it is alive,"
                " maybe isolated; its domUs are not restarted elsewhere",
                observations=seen,
                recheck=True,
            )
        self._queue(record, "corroborated", observations=seen)
        self._set(record, CORROBORATED, observations=seen)
        return True

    def _watch_lease(self, record, members):
        """([observations], observer that saw the lease advance or None)."""
        seen = []
        for observer in self._observers(record, members):
            window = self.conf["corroborate_window"]
            verdict = self._safe(self.io.observe, observer, record["host"], window)
            seen.append({"observer": observer, "verdict": verdict})
            if isinstance(verdict, dict):
                return seen, observer if verdict.get("state") == "advancing" else None
        return seen, None

    def _ignore(self, record, reason, recheck=False, **fields):
        self._host_state(record["host"], None)
        self._queue(record, "ignored", reason=reason)
        self._set(record, IGNORED, reason=reason, recheck=recheck, **fields)
        return True

    def _fence(self, record, members):
        host = record["host"]
        tried = []
        ack = self._acked(host)
        if isinstance(ack, dict):
            return self._fenced(record, {"method": "manual", "ack": ack})
        bmc = members["vmhosts"][host].get("bmc")
        if bmc:
            start = self.io.mono()
            result = self._safe(self.io.fence_ipmi, host, bmc)
            if isinstance(result, dict):
                took = round(self.io.mono() - start, 3)
                return self._fenced(record, {"method": "ipmi", "seconds": took, **result})
            tried.append(f"IPMI: {result}")
        else:
            tried.append("IPMI: no BMC configured")
        window = self.conf["expiry"] + self.conf["expiry_margin"]
        for observer in self._observers(record, members):
            verdict = self._safe(self.io.observe, observer, host, window)
            if not isinstance(verdict, dict):
                tried.append(f"lease via {observer}: {verdict}")
                continue
            if verdict.get("state") == "expired":
                return self._fenced(
                    record, {"method": "lease", "observer": observer, "verdict": verdict}
                )
            tried.append(
                f"lease via {observer}: {verdict.get('state')}, unchanged for "
                f"{verdict.get('unchanged_for')} s (expiry {self.conf['expiry']} s)"
            )
            break
        else:
            tried.append("lease: no survivor could read it")
        record["attempts"] = record.get("attempts", 0) + 1
        wait = backoff(record["attempts"], self.conf["retry_base"], self.conf["retry_max"])
        reason = "not fenced, nothing restarted: " + "; ".join(tried)
        self._host_state(host, "suspect")
        self._queue(record, "blocked", reason=reason, attempt=record["attempts"], retry_in=wait)
        self._set(record, BLOCKED, reason=reason, retry_in=wait)
        return True

    def _retry(self, record, members):
        """Wait out the back-off (an ack ends it at once), then corroborate and fence again."""
        host = record["host"]
        if not self._acked(host):
            wait = record.get("retry_in", self.conf["retry_base"])
            if self.io.mono() + wait > self._retry_until:
                self._audit(host, "blocked_left", failover=record["id"], retry_in=wait)
                return False
            deadline = self.io.mono() + wait
            while self.io.mono() < deadline:
                if self._acked(host):
                    break
                self.io.sleep(min(1.0, deadline - self.io.mono()))
        if self._acked(host):
            self._set(record, CORROBORATED, reason="manual fence acknowledged")
        else:
            self._set(record, VERIFIED, reason=f"retry after attempt {record['attempts']}")
        return True

    def _fenced(self, record, fence):
        self._host_state(record["host"], "fenced")
        self._queue(record, "fenced", **fence)
        self._set(record, FENCED, fence=fence, reason=None)
        return True

    def _leased(self, record, members):
        """The dead host's domU leases as a survivor lists them (sorted), or None."""
        for observer in self._observers(record, members):
            got = self._safe(self.io.leased_domus, observer, record["host"])
            if isinstance(got, (list, dict)):
                return sorted(got)
        return None

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
        if any([self._revived(h, members) for h in snapshot if states.get(h) == FENCED]):
            states = self._host_states()
        return states

    def _plan(self, record, members):
        host = record["host"]
        leased = snapshot = None
        # read while corroborating and fencing; not after a long block (free memory moves on)
        if self._prefetched and self.io.mono() - self._prefetched[0] < PREFETCH_FOR:
            leased, snapshot = (future.result() for future in self._prefetched[1:])
        self._prefetched = None  # a retry or a resume reads again
        if leased is None:
            leased = self._leased(record, members)
        else:
            record["leases_read"] = "before the fence"  # _restart reads them again
        if leased is None:
            return self._plan_blocked(record, "no survivor could list the dead host's leases")
        if not snapshot:
            snapshot = self._survivors(record, members)
        if not snapshot:
            # e.g. a master restarted before its minions reconnected: "no room anywhere" now
            # would end the failover with nothing restarted
            return self._plan_blocked(record, "no survivor answered with its free memory")
        states = self._target_states(snapshot, members)
        plan = restart_plan(host, members, snapshot, states, leased)
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

    def _replanned(self, record, members):
        """
        True (journal back to ``restarting``) if domUs of a finished failover that fitted
        nowhere now have room, e.g. after an operator freed memory. Only while the dead host
        stays down: once it is back, its domUs are its operator's again.
        """
        unplaced = [
            name
            for name, entry in (record.get("domus") or {}).items()
            if entry["state"] == "unplaced" and name in members["domus"]
        ]
        snapshot = self._survivors(record, members) if unplaced else {}
        if not snapshot:
            return False
        states = self._target_states(snapshot, members)
        plan = restart_plan(record["host"], members, snapshot, states, unplaced)
        placed = {n: e for n, e in plan["domus"].items() if e["state"] != "unplaced"}
        if not placed:
            return False
        record["domus"].update(placed)
        self._audit(record["host"], "replanned", failover=record["id"], domus=sorted(placed))
        self._set(record, RESTARTING, reason="room for domUs that fitted nowhere")
        return True

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
            self._start_pending(record, members)
        total = round(self.io.now() - record["started"], 3)
        down = {
            n: e.get("reason") or e.get("error")
            for n, e in record["domus"].items()
            if e["state"] not in ("started", "running")
        }
        down.update(self._unaccounted(record, members))
        self._queue(record, "done", seconds=total, domus=record["domus"], not_restarted=down)
        self._set(record, DONE, seconds=total, not_restarted=down)
        return True

    def _unaccounted(self, record, members):
        """
        Pillar domUs that run on no survivor and that the dead host held no lease for: maybe
        stopped on purpose, maybe lost with it (started without a lease). Never restarted on
        that doubt, never left silent: ``done`` names them.
        """
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
        missed = sorted(set(leased) - set(record["domus"]))
        if missed:
            snapshot = self._survivors(record, members)
            plan = restart_plan(host, members, snapshot, self._host_states(), missed)
            record["domus"].update(plan["domus"])
            record["order"] += plan["order"]
            self._audit(host, "leases_missed", failover=record["id"], domus=missed)
        self._save(record)

    def _start_pending(self, record, members):
        """Start every planned domU not started yet, in order, each step persisted."""
        host = record["host"]
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
            result = self._safe(self.io.start_domu, entry["target"], name, spec, host)
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
