"""
Guest monitoring's policy on the master: what to do when a VM host reports that one of its
domUs crashed, vanished or fails its application check, and when a host's toolstack fails or
answers again. Pure policy; every I/O goes through an :class:`Adapter` (the runner's Salt edge,
or a fake in the tests). See docs/guest-monitoring.md.

A domU (pillar ``xenha:domus:<name>:monitor``, checked by ``xenha_pillarcheck.monitor``) is
restarted in place up to ``restart`` times within ``within`` seconds, then ``relocate``\\ d (its
local copy destroyed and its lease released first, then started on the planner's target) or
left (``leave``) with an alert. A report is a claim: the engine asks the host what it sees now
and where else the domU runs before it acts, and never starts a copy while another may run.

A host whose toolstack fails is marked ``degraded`` in the master's ``hoststate`` document
(status shows it, the planner targets only ``up`` hosts) and an alert goes out; its domUs are
left alone. The mark is lifted when the toolstack answers again.

Restart times persist in the store document ``guestmon`` (``{domU: {"restarts": [epoch ...],
"host", "last_start", "gave_up"}}``), so a master restart does not reset the count. Every
action is an audit line (``<UTC time> <host> <step> <json>``) in ``<cachedir>/xenha/guestmon.log``.
"""

import contextlib
import fcntl
import time

import xenha_failover
import xenha_store

STORE = "guestmon"
HOSTSTATE = "hoststate"
DEGRADED = "degraded"
BY = "guestmon"
REASONS = ("crashed", "dying", "gone", "check")  # what the guest watcher reports
TROUBLE = ("crashed", "dying")  # toolstack flags of a domU that no longer runs
LEFT_ALONE = ("degraded", "fenced", "suspect")  # host marks under which nothing is restarted


class Adapter:
    """The I/O the engine needs. Every method may raise; the engine records the error."""

    def members(self):
        """{"vmhosts": {id: pillar host}, "domus": {name: checked pillar domU}}."""
        raise NotImplementedError

    def host_states(self):
        """{host: mark} from the master's hoststate document and maintenance flags."""
        raise NotImplementedError

    def inspect(self, host, name):
        """What ``host`` sees of ``name`` now: ``{"row": xenha_xen row or None, "check":
        {"ok", "detail"} or None}`` (the application check run once more)."""
        raise NotImplementedError

    def locate(self, name):
        """{host: row} of every VM host that lists ``name`` (or a migration copy of it)."""
        raise NotImplementedError

    def restart(self, host, name, config):
        """On ``host``: destroy its copy of ``name``, release the lease, start it again
        (leased); returns the new row."""
        raise NotImplementedError

    def vacate(self, host, name):
        """On ``host``: destroy its copy of ``name`` and release its lease."""
        raise NotImplementedError

    def place(self, name, exclude):
        """``(target, None)`` from the planner, or ``(None, why nowhere)``."""
        raise NotImplementedError

    def start(self, host, name, config):
        """Start ``name`` on ``host`` through the leased start path; returns its row."""
        raise NotImplementedError

    def toolstack(self, host):
        """``(True, detail)`` if the toolstack on ``host`` answers, ``(False, error)`` if the
        host answers that it does not; raises when the host does not answer at all."""
        raise NotImplementedError

    def alert(self, what, subject, text, data):
        """Tell a person (``what``: guest or degraded); never raises."""
        raise NotImplementedError

    def fire(self, tag, data):
        raise NotImplementedError

    def audit(self, entry):
        raise NotImplementedError

    def now(self):
        return time.time()


def audit_path(cachedir):
    return xenha_failover.store_dir(cachedir) / "guestmon.log"


@contextlib.contextmanager
def run_lock(cachedir, name):
    """Yield True holding the domU's run lock, or False while another handling holds it."""
    path = xenha_failover.store_dir(cachedir) / f"{STORE}-{name}.run.lock"
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


def confirmed(reason, seen, elsewhere):
    """
    Why the failure reported as ``reason`` stands after the engine's own look, or None.
    ``seen``: the host's answer to :meth:`Adapter.inspect`; ``elsewhere``: {host: row} of the
    other hosts that list the domU.
    """
    row = seen.get("row")
    if row is not None and row.get("transient"):
        return None  # mid-migration: the move decides
    if row is not None:
        trouble = [flag for flag in TROUBLE if flag in row.get("flags", ())]
        if trouble:
            return f"{'/'.join(trouble)} (state {row.get('state')})"
        check = seen.get("check")
        if reason == "check" and check and not check.get("ok"):
            return f"application check failed: {check.get('detail')}"
        return None
    if elsewhere:
        return None  # it left (a migration): not a failure here
    return "not running on any host"


def _window(restarts, now, within):
    return [t for t in restarts if now - t < within]


class Engine:
    """Applies a domU's monitor policy to one report; see the module docstring."""

    def __init__(self, io, cachedir):
        self.io = io
        self.cachedir = cachedir

    def _audit(self, host, step, **details):
        self.io.audit({"time": self.io.now(), "host": host, "step": step, **details})

    def _record(self, name, **fields):
        with xenha_store.edit(self.cachedir, STORE) as doc:
            record = doc.setdefault(name, {"restarts": []})
            record.update(fields)
            return dict(record)

    def _answer(self, host, name, state, reason, **data):
        """Audit, event and the answer of one outcome."""
        self._audit(host, f"guest-{state}", domu=name, reason=reason, **data)
        self.io.fire(f"xenha/guest/{host}/{name}/{state}", {"reason": reason, **data})
        return {"host": host, "domu": name, "state": state, "reason": reason, **data}

    def _ignored(self, host, name, reason):
        self._audit(host, "guest-ignored", domu=name, reason=reason)
        return {"host": host, "domu": name, "state": "ignored", "reason": reason}

    # --- a domU reported failed ---

    def failed(self, host, name, reason, detail=None):
        """A VM host's report that domU ``name`` failed (``reason`` one of REASONS)."""
        members = self.io.members()
        spec = (members.get("domus") or {}).get(name)
        if reason not in REASONS:
            return self._ignored(host, name, f"unknown reason {reason!r}")
        if host not in (members.get("vmhosts") or {}):
            return self._ignored(host, name, f"{host} is not a VM host in xenha:hosts")
        if not spec or not spec.get("monitor"):
            return self._ignored(host, name, "not monitored (no xenha:domus:<name>:monitor)")
        with run_lock(self.cachedir, name) as mine:
            if not mine:
                return self._ignored(host, name, "already being handled")
            return self._handle(host, name, spec, reason, detail)

    def _confirm(self, host, name, reason):
        """``(why it failed, None)`` after the engine's own look, or ``(None, why ignored)``."""
        mark = self.io.host_states().get(host)
        if mark in LEFT_ALONE:
            return None, f"{host} is {mark}: its domUs are left alone"
        try:
            seen = self.io.inspect(host, name)
            elsewhere = {h: r for h, r in self.io.locate(name).items() if h != host}
        except Exception as err:  # noqa: BLE001 - an unverified claim is no reason to act
            return None, f"cannot verify the report: {err}"
        why = confirmed(reason, seen, elsewhere)
        where = ", ".join(sorted(elsewhere))
        if why is None:
            also = f"; listed on {where}" if where else ""
            return None, f"{host} does not confirm {reason}{also}"
        if elsewhere:  # listed elsewhere too (e.g. restarted there): its lease is there, and
            return None, f"{why} here, but listed on {where}"  # this copy is debris
        return why, None

    def _handle(self, host, name, spec, reason, detail):
        why, refusal = self._confirm(host, name, reason)
        if refusal:
            said = f"{reason}: {detail}" if detail else reason
            return self._ignored(host, name, f"{refusal} (reported {said})")
        monitor = spec["monitor"]
        now = self.io.now()
        record = self._record(name)
        if reason == "check" and now - (record.get("last_start") or 0) < monitor["grace"]:
            return self._ignored(host, name, f"within {monitor['grace']} s of its last start")
        restarts = _window(record.get("restarts") or [], now, monitor["within"])
        if len(restarts) < monitor["restart"]:
            return self._restart(host, name, spec, why, restarts)
        why = f"{why}; {len(restarts)} restart(s) within {monitor['within']} s"
        if monitor["then"] == "relocate":
            return self._relocate(host, name, spec, why)
        return self._give_up(host, name, spec, f"{why}, then: leave")

    def _restart(self, host, name, spec, why, restarts):
        attempt = len(restarts) + 1
        self._audit(host, "guest-restarting", domu=name, reason=why, attempt=attempt)
        try:
            row = self.io.restart(host, name, spec["config"])
        except Exception as err:  # noqa: BLE001 - a failed restart is the next step's reason
            if spec["monitor"]["then"] == "relocate":
                return self._relocate(host, name, spec, f"{why}; restart failed: {err}")
            return self._give_up(host, name, spec, f"{why}; restart failed: {err}")
        now = self.io.now()
        self._record(name, restarts=[*restarts, now], host=host, last_start=now, gave_up=None)
        return self._answer(
            host, name, "restarted", why, attempt=attempt, of=spec["monitor"]["restart"],
            domid=(row or {}).get("domid"),
        )  # fmt: skip

    def _relocate(self, host, name, spec, why):
        try:
            target, nowhere = self.io.place(name, [host])
        except Exception as err:  # noqa: BLE001
            target, nowhere = None, f"planning failed: {err}"
        if target is None:
            return self._give_up(host, name, spec, f"{why}; no other host: {nowhere}")
        try:
            self.io.vacate(host, name)
        except Exception as err:  # noqa: BLE001 - never start a second copy
            return self._give_up(host, name, spec, f"{why}; its copy on {host} stays: {err}")
        self._audit(host, "guest-relocating", domu=name, reason=why, target=target)
        try:
            row = self.io.start(target, name, spec["config"])
        except Exception as err:  # noqa: BLE001
            return self._give_up(host, name, spec, f"{why}; start on {target} failed: {err}")
        now = self.io.now()
        self._record(name, restarts=[], host=target, last_start=now, gave_up=None)
        domid = (row or {}).get("domid")
        return self._answer(host, name, "relocated", why, target=target, domid=domid)

    def _give_up(self, host, name, spec, why):
        self._record(name, gave_up=self.io.now())
        answer = self._answer(host, name, "gave_up", why)
        subject = f"[xenha] domU {name} on {host} is down and stays down"
        text = (
            f"domU {name} failed on {host} and guest monitoring gave up:\n  {why}\n\n"
            f"policy: {spec['monitor']}\nAfter fixing it: salt {host} state.single "
            f"xenha_domu.running {name} config={spec['config']}\n"
        )
        self.io.alert("guest", subject, text, answer)
        return answer

    # --- a host's toolstack ---

    def toolstack(self, host, failed, detail=None):
        """A VM host's report that its toolstack failed (``failed``) or answers again."""
        said, refusal = self._toolstack_verified(host, failed)
        refusal = refusal or self._mark(host, failed, said)
        if refusal:
            return self._host_ignored(host, refusal)
        state = DEGRADED if failed else "up"
        data = {"host": host, "state": state, "reason": said or detail}
        self._audit(host, f"host-{state}", reason=data["reason"])
        self.io.fire(f"xenha/host/{host}/{state}", data)
        if failed:
            subject = f"[xenha] {host} is degraded: its toolstack fails"
            text = (
                f"The Xen toolstack on {host} fails: {said}\n\n{host}'s domUs are left running; "
                "no domU is started or moved there until it answers again.\n"
            )
            self.io.alert("degraded", subject, text, data)
        return data

    def _toolstack_verified(self, host, failed):
        """``(what the host said, None)`` when it confirms the report, else ``(None, why)``."""
        if host not in (self.io.members().get("vmhosts") or {}):
            return None, f"{host} is not a VM host in xenha:hosts"
        try:
            answers, said = self.io.toolstack(host)
        except Exception as err:  # noqa: BLE001 - a silent host is the heartbeat's business
            return None, f"cannot verify: {err}"
        if failed and answers:
            return None, f"its toolstack answers the master: {said}"
        if not failed and not answers:
            return None, f"its toolstack still fails: {said}"
        return said, None

    def _mark(self, host, failed, said):
        """Set or lift the degraded mark; why not, or None. The failover's marks (suspect,
        fenced) come first: never overwritten or lifted here."""
        with xenha_store.edit(self.cachedir, HOSTSTATE) as doc:
            mark = doc.get(host) or {}
            if mark and mark.get("by") != BY:
                return f"{host} is marked {mark.get('state')} by the failover"
            if failed and mark:
                return f"{host} is already {DEGRADED}"
            if not failed and not mark:
                return f"{host} was not marked {DEGRADED}"
            if failed:
                doc[host] = {"state": DEGRADED, "since": self.io.now(), "by": BY, "error": said}
            else:
                doc.pop(host)
        return None

    def _host_ignored(self, host, reason):
        self._audit(host, "host-ignored", reason=reason)
        return {"host": host, "state": "ignored", "reason": reason}
