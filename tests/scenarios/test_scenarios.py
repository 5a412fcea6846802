"""
Failover scenarios with golden logs. Each folder here is one story on the fake cluster
(tests/support/failover_fake.py: A the suspect with a BMC, B and C; web01, db01 and tiny leased
by A) run by the real engine at fake-clock speed:

- ``scenario.yaml``: ``about`` (one line), ``settings`` (the engine's), ``given`` (what differs
  from the fake cluster), ``steps`` (what happens, in order);
- ``expected.log``: each step, the audit trail it wrote (seconds on the fake clock, the
  failover's random id left out), its result, and at the end where each domU runs and each
  journal's state.

A change of behaviour shows up in review as a diff of ``expected.log``.
``XENHA_GOLDEN=update pytest tests/scenarios`` rewrites the logs from what the engine does now.

Steps (one key each): ``claim: A`` (reported by B) or ``claim: {host, reporter, event}``
(``reporter: null``: the operator's request);
``resume: A``; ``ack: A``; ``sweep:`` (``reclaim_all``, the scheduled resume's); ``set:`` (as
``given``); ``wait: S`` (the clock moves on); ``when: {CALL: SET}`` (applies SET right after the
adapter's next CALL, e.g. the cluster changing while a fence runs); ``crash_on: CALL`` (the
master dies right after the adapter's next CALL: the step ends there).

``given``/``set``: fake attributes; a mapping is updated key by key (``vmhosts: {A: {}}`` makes
A a host without a BMC, ``vmhosts: {C: null}`` removes C), a list replaces the value
(``reachable``, ``stale``: sets).
"""

import json
import os
import threading
from pathlib import Path

import pytest
import xenha_failover as xf
import yaml

from tests.support.failover_fake import Crash, FakeIO

HERE = Path(__file__).resolve().parent
CASES = sorted(p.name for p in HERE.iterdir() if (p / "scenario.yaml").is_file())
EPOCH = FakeIO().now()  # the fake clock's 0
STEPS = ("claim", "resume", "ack", "sweep", "set", "wait", "when", "crash_on")


class ScenarioIO(FakeIO):
    """The fake cluster; writes each audit entry as a log line the moment it is written."""

    def __init__(self, log):
        super().__init__()
        self.log = log
        self.hooks = {}
        # the engine pings a suspect and watches its lease side by side, and a ping answered
        # ends the claim at once: a ping that will answer waits for the watch of its round to
        # have moved the fake clock, so that the log's times do not depend on thread timing
        self.pinged = self.watched = 0
        self.moved = threading.Condition()

    def ping(self, host):
        with self.moved:
            self.pinged += 1
            if host in self.reachable:
                self.moved.wait_for(lambda: self.watched >= self.pinged, timeout=0.3)
        return super().ping(host)

    def observe(self, observer, host, duration):
        answer = super().observe(observer, host, duration)
        if observer != min(self.reachable - {host}):
            return answer  # FakeIO moves the clock in the first observer's call only
        with self.moved:
            self.watched = self.pinged
            self.moved.notify_all()
        return answer

    def _call(self, name):
        if name in self.hooks:
            apply(self, self.hooks.pop(name))
        super()._call(name)

    def audit(self, entry):
        self.log.append(line(entry))
        super().audit(entry)


def value(v):
    return v if isinstance(v, str) and v and " " not in v else json.dumps(v, sort_keys=True)


def seen(observations):
    """``B:stopped/1 C:stopped/1``: each survivor's verdict on the lease and the generation."""
    shown = []
    for o in observations:
        verdict = o.get("verdict") if isinstance(o.get("verdict"), dict) else {}
        generation = (verdict.get("sanlock") or {}).get("generation")
        shown.append(f"{o.get('observer')}:{verdict.get('state', o.get('verdict'))}/{generation}")
    return " ".join(shown)


def line(entry):
    rest = {k: v for k, v in entry.items() if k not in ("time", "host", "step", "failover")}
    if isinstance(rest.get("observations"), list):
        rest["observations"] = seen(rest["observations"])
    fields = " ".join(f"{k}={value(v)}" for k, v in rest.items())
    return f"{entry['time'] - EPOCH:7.1f} {entry['host']} {entry['step']} {fields}".rstrip()


def apply(io, changes):
    for attr, new in (changes or {}).items():
        if not hasattr(io, attr):
            raise AssertionError(f"the fake cluster has no {attr!r}")
        old = getattr(io, attr)
        if isinstance(old, dict) and isinstance(new, dict):
            old.update(new)
            for key in [k for k, v in new.items() if v is None]:
                del old[key]
        elif isinstance(old, set):
            setattr(io, attr, set(new))
        else:
            setattr(io, attr, new)


def run_step(io, store, settings, step, log):
    ((what, arg),) = step.items()
    engine = xf.Engine(io, str(store), settings)
    if what == "claim":
        arg = {"host": arg} if isinstance(arg, str) else arg
        host, reporter = arg["host"], arg.get("reporter", "B")
        if reporter is None:  # an operator's request: salt-run xenha.failover HOST
            log.append(f"## claim {host} by the operator")
            return engine.handle(host)
        event = arg.get("event", {"id": reporter, "reporter": reporter, "peer": host, "age": 3.2})
        log.append(f"## claim {host} by {reporter}")
        return engine.handle(host, reporter, event)
    if what in ("resume", "ack"):
        log.append(f"## {what} {arg}")
        return getattr(engine, what)(arg)
    if what == "sweep":
        log.append("## sweep")
        return [summary["state"] for summary in engine.reclaim_all()]
    if what == "set":
        apply(io, arg)
    elif what == "wait":
        io.sleep(arg)
    elif what == "when":
        io.hooks.update(arg)
    elif what == "crash_on":
        io.crash_on = arg
    log.append(f"## {what} {value(arg)}")
    return None


def result_line(result):
    if isinstance(result, dict):
        shown = {k: result[k] for k in ("state", "reason", "not_restarted") if result.get(k)}
        if "acknowledged" in result:
            shown["acknowledged"] = result["acknowledged"]
        return "=> " + " ".join(f"{k}={value(v)}" for k, v in shown.items())
    return f"=> {value(result)}"


def play(case, store):
    spec = yaml.safe_load((HERE / case / "scenario.yaml").read_text())
    unknown = set(spec) - {"about", "settings", "given", "steps"}
    assert not unknown, f"{case}: unknown keys {sorted(unknown)}"
    log = [f"# {spec['about']}"]
    io = ScenarioIO(log)
    apply(io, spec.get("given"))
    for step in spec["steps"]:
        assert isinstance(step, dict) and len(step) == 1 and set(step) <= set(STEPS), step
        try:
            result = run_step(io, store, spec.get("settings") or {}, step, log)
        except Crash as crash:
            log.append(f"!! the master died after {crash}")
            continue
        if result is not None:
            log.append(result_line(result))
    running = {h: sorted(names) for h, names in sorted(io.running.items()) if names}
    log.append(f"running {value(running)}")
    for host, record in sorted(xf.journals(str(store)).items()):
        log.append(f"journal {host} {record.get('state')}")
    return "\n".join(log) + "\n", io


@pytest.mark.parametrize("case", CASES)
def test_scenario(case, tmp_path):
    got, io = play(case, tmp_path)
    golden = HERE / case / "expected.log"
    if os.environ.get("XENHA_GOLDEN") == "update":
        golden.write_text(got)
    assert golden.is_file(), f"{case}: no expected.log (XENHA_GOLDEN=update writes it)"
    assert got == golden.read_text()
    # never two copies, whatever the story
    running = [n for names in io.running.values() for n in names]
    assert len(running) == len(set(running))


def test_scenarios_are_many_and_replay_the_same(tmp_path):
    assert len(CASES) >= 10
    first, again = (play(CASES[0], tmp_path / run)[0] for run in ("one", "two"))
    assert first == again  # no wall clock, no random id in a golden log
