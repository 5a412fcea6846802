"""Automatic failover in the lab: real minions, heartbeat beacons, reactor and runner, real BMC
simulators, a real sanlock daemon in each VM host, and a real guest (slow: QEMU under TCG).

One module-scoped lab (prefix ``xfo``, or ``$XENHA_FAILOVER_TEST_PREFIX``) and one domU, web01,
which the tests hand from host to host in order: a crash fails it over by IPMI fence, the
crashed host comes back without it; a host that dies while the survivor cannot read the lease
area is not fenced (``blocked``, and the alert reaches a real SMTP server and webhook receiver
on the master's loopback); once it reads it, a host whose BMC cannot be reached is not failed
over until sanlock calls it dead, and an operator's acknowledgement ends that wait; a
partitioned host that still renews its sanlock
delta lease keeps its domUs, and once it loses the storage too its sanlock destroys them
(killpath) before the survivor takes over on the lease-only path; short heartbeat drops do
nothing; forged claims are ignored; a burst of claims and a master killed mid-failover still
give exactly one restart. ``Watch`` samples where web01's QEMU lives (from outside the hosts)
all along: never on two hosts at once.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from xenha_failover import ACTIVE

from lab import RUN_ROOT, bmc, toolstack, vm
from lab.cluster import Lab
from lab.failover import Failover, Watch, _daemon, enable_failover, forge_event, running_on
from lab.hosts import LabError, wait_for
from tests.support.receivers import http_receiver, smtp_receiver

pytestmark = [pytest.mark.root, pytest.mark.lab]

V1, V2, DB = "ServVirt1", "ServVirt2", "ServDB"
WEB01_IP = "10.99.0.100"
FAILOVER_TIMEOUT = 240  # s: detection, corroboration, fence and a TCG boot on a loaded machine
WATCH = []  # every Watch of the module: none may ever have seen web01 on two hosts
CRASH = {}  # the first crash's time, measured timeline and crash -> HTTP seconds
SLACK = 3.0  # s an event may be seen after its step was recorded (same clock: one machine)
PREFIX = os.environ.get("XENHA_FAILOVER_TEST_PREFIX", "xfo")  # another engineer's: their own
# the master alerts receivers on its own loopback (ports free in its fresh network namespace),
# with this run's made-up credentials
ALERT_SMTP_PORT, ALERT_HTTP_PORT = 2525, 8080
ALERT_HOOK = f"/hook/{secrets.token_hex(8)}"  # a chat webhook's token is in its path
ALERT_AUTH = f"Bearer {secrets.token_hex(8)}"
ALERTS = {
    "timeout": 5,
    "email": {
        "host": "127.0.0.1",
        "port": ALERT_SMTP_PORT,
        "from": "xenha@lab.example",
        "to": ["ops@lab.example"],
    },
    "webhook": {
        "url": f"http://127.0.0.1:{ALERT_HTTP_PORT}{ALERT_HOOK}",
        "headers": {"Authorization": ALERT_AUTH},
    },
}
FIGURES = RUN_ROOT / "figures" / "alert-latency.jsonl"  # one line per run: never asserted


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, QEMU taps, tgtd)")
    tools = ("qemu-system-x86_64", "ipmi_sim", "ipmitool", "tgtd", "iptables")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing lab tools {missing}: run `make deps`")
    suffix = "" if PREFIX == "xfo" else f"-{PREFIX}"
    the_lab = Lab(RUN_ROOT / f"test-failover-lab{suffix}", prefix=PREFIX, alerts=ALERTS)
    toolstack.attach(the_lab)
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.save_logs(RUN_ROOT / "logs" / f"test-failover-lab{suffix}")  # goes with it
        the_lab.down()


@pytest.fixture(scope="module")
def bmcs(lab):
    started = bmc.start_all(lab)
    yield started
    for b in started.values():
        b.stop()


@pytest.fixture(scope="module")
def alerts(lab):
    """The alert receivers on the master's loopback: ``{"mails": [...], "posts": [...]}``,
    filled as alerts arrive (from the test on; deliveries before it find nobody)."""
    netns = lab.master.netns
    with (
        smtp_receiver(ALERT_SMTP_PORT, netns) as (_, mails),
        http_receiver(port=ALERT_HTTP_PORT, netns=netns, path=ALERT_HOOK) as (_, posts),
    ):
        yield {"mails": mails, "posts": posts}


@pytest.fixture(scope="module")
def fo(lab, bmcs):
    failover = enable_failover(lab)
    failover.define_domu("web01", WEB01_IP, preferred_host=V1)
    return failover


@pytest.fixture(scope="module")
def web01(lab, fo):
    """web01 started on ServVirt1 as the product starts a domU; its first HTTP state."""
    fo.start_domu("web01", V1)
    state = vm.wait_guest(lab.cli, WEB01_IP)
    assert fo.holders().get("web01") == {"mode": "ex", "hosts": [V1]}
    return state


@contextmanager
def watch(lab):
    with Watch(lab, "web01") as w:
        WATCH.append(w)
        yield w
    assert not w.doubles, f"web01 ran on two hosts at once: {w.doubles[:3]}"


def new_boot(lab, old, timeout=FAILOVER_TIMEOUT, fo=None):
    """Wait until web01 answers HTTP with another boot id than ``old``; its state. On a
    timeout, fail with what explains it: where web01's QEMU runs, its last answer and (with
    ``fo``) the failover journals' domU entries and the audit trail's tail."""
    last = {}

    def answered():
        last.update(vm.guest_state(lab.cli, WEB01_IP))
        return last.get("bootid") not in (None, old) and dict(last)

    try:
        return wait_for(answered, timeout, "web01 to answer HTTP from a new boot", interval=0.3)
    except LabError as err:
        facts = {"running_on": sorted(running_on(lab, "web01")), "last_answer": last}
        if fo is not None:
            facts["journals"] = {h: fo.journal(h).get("domus") for h in (V1, V2)}
            facts["audit"] = fo.audit()[-10:]
        pytest.fail(f"{err}: {json.dumps(facts, indent=1)}")


def started(fo, host_id, since):
    """The ``domu_started`` events of ``host_id``'s failovers seen since ``since``."""
    return [e["data"] for e in fo.events(f"xenha/failover/{host_id}/domu_started", since)]


def power_on(lab, bmcs, host_id):
    """Power a lab host on through its BMC (standard IPMI) and wait for its minion."""
    out = bmcs[host_id].ipmitool("chassis", "power", "on")
    assert out.returncode == 0, out.stderr
    lab.wait_minions([host_id], timeout=180)


def renews_after_resume(lab, fo, host_id):
    """Run the master's failover_resume (it joins a VM host whose sanlock left the lockspace);
    whether ``host_id`` renews now (False while its old lockspace is still being torn down)."""
    try:
        lab.salt_run("xenha.failover_resume", timeout=300)
        return fo.renews(host_id)
    except LabError:
        return False


def show(title, timeline, **extra):
    print(f"\n{title}: " + json.dumps({**timeline, **extra}))


def first(items, match, what, timeout=30):
    """The first of ``items`` (a list a receiver fills) that ``match`` accepts, waited for."""
    return wait_for(lambda: next((i for i in items if match(i)), None), timeout, what)


def blocked_alerts(alerts, event):
    """The mail and the webhook POST about blocked ``event`` (recorded on the bus), checked:
    subject, host, failover, reason, attempt, the way out; the seconds from the event to each
    receipt are printed and added to :data:`FIGURES`."""
    data = event["data"]
    host, failover, attempt = data["host"], data["failover"], data["attempt"]

    def body(mail):
        return mail["message"].get_content()

    mail = first(
        alerts["mails"],
        lambda m: f"failover id: {failover}" in body(m) and f"attempt: {attempt}," in body(m),
        f"the mail about {host}'s blocked failover",
    )
    post = first(
        alerts["posts"],
        lambda p: p["json"]["event"] == "blocked" and p["json"]["data"].get("attempt") == attempt,
        f"the webhook POST about {host}'s blocked failover",
    )
    assert mail["rcpt"] == ["ops@lab.example"]
    assert mail["message"]["Subject"] == f"[xenha] failover of {host} is blocked: nothing restarted"
    assert data["reason"] in body(mail) and f"salt-run xenha.ack_fence {host}" in body(mail)
    assert post["path"] == ALERT_HOOK and post["headers"]["Authorization"] == ALERT_AUTH
    assert (post["json"]["host"], post["json"]["failover"]) == (host, failover)
    assert post["json"]["data"]["reason"] == data["reason"]
    latency = {
        "mail": round(mail["time"] - event["t"], 3),
        "webhook": round(post["time"] - event["t"], 3),
    }
    print(f"\nblocked event on the bus -> alert received, s: {json.dumps(latency)}")
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    row = {"t": round(event["t"], 3), "load1": os.getloadavg()[0], **latency}
    with FIGURES.open("a") as out:
        out.write(json.dumps({"what": "blocked -> alert received (s)", **row}) + "\n")
    return latency


# --- 1. crash -> fenced restart on the survivor, exactly once --------------------------------


def test_crash_restarts_its_domus_on_the_survivor_once(lab, bmcs, fo, web01):
    before = vm.wait_guest(lab.cli, WEB01_IP)
    with watch(lab) as w:
        t0 = time.time()
        lab.hosts[V1].power_off()  # `python -m lab crash ServVirt1`
        fo.wait_event(f"xenha/failover/{V1}/done", t0, FAILOVER_TIMEOUT)
        after = new_boot(lab, before["bootid"], fo=fo)
        http = time.time() - t0
    tl = fo.timeline(V1, t0)
    CRASH.update(at=t0, timeline=tl, http=http)
    show("crash -> restart", tl, http=round(http, 2))
    assert tl["fence"] == "ipmi"
    assert tl["reporter"] == V2
    order = ["lost", "started", "verified", "corroborated", "fenced", "domu_started:web01", "done"]
    assert [tl[k] for k in order] == sorted(tl[k] for k in order), tl
    assert [e["target"] for e in started(fo, V1, t0)] == [V2]  # exactly once, on the survivor
    journal = fo.journal(V1)
    assert journal["state"] == "done" and journal["domus"]["web01"]["host"] == V2
    audit = " ".join(fo.audit(t0))
    for step in ("received", "verified", "corroborated", "fenced", "domu_started", "done"):
        assert f" {V1} {step} " in audit
    assert running_on(lab, "web01") == {V2}
    assert w.last_on(V1) < w.first_on(V2)
    assert after["disk_seq"] > before["disk_seq"]  # booted from the same disk, writes went on
    assert fo.holders().get("web01") == {"mode": "ex", "hosts": [V2]}
    assert bmcs[V1].power_status() is False


def test_the_report_of_that_crash_matches_its_measured_timeline(lab):
    """``xenha.failover_report`` of the crash above agrees with the timeline measured from the
    master's events: each step recorded before its event was seen (the engine persists, then
    fires), and within SLACK s of it (whole seconds for the domU's start, delivery under
    load)."""
    if not CRASH:
        pytest.skip("runs after test_crash_restarts_its_domus_on_the_survivor_once")
    report = lab.salt_run("xenha.failover_report", V1, timeout=120)["failovers"][-1]
    assert report["state"] == "done" and report["fence"]["method"] == "ipmi", report
    assert report["restarted"]["web01"]["host"] == V2
    assert report["not_restarted"] == {}
    steps = {s["step"]: s for s in report["steps"]}
    pairs = [(name, name) for name in ("verified", "corroborated", "fenced", "done")]
    pairs.append(("domu_started", "domu_started:web01"))
    for step, event in pairs:
        recorded = steps[step]["time"] - CRASH["at"]
        seen = CRASH["timeline"][event]
        assert recorded <= seen + 0.01, (step, recorded, seen)
        assert seen - recorded < SLACK, (step, recorded, seen)
    # the claim comes after the crash; the heartbeat was last heard before it
    assert report["claim"] > CRASH["at"] - 1
    assert steps["last_heard"]["t"] < 0
    assert 0 < report["seconds"] < CRASH["http"]


def test_the_dead_host_comes_back_without_its_old_domus_and_shows_healthy(lab, bmcs, fo):
    t0 = time.time()
    with watch(lab):
        power_on(lab, bmcs, V1)
        # its sanlock joined again at boot (delta lease advancing) and it takes nothing: web01
        # stays on V2, whose live lease sanlock refuses to V1
        wait_for(lambda: fo.renews(V1), 60, "V1's delta lease to advance")
        refused = lab.salt(V1, "xenha_sanlock.acquire", "web01", "start_grace=5")[V1]
        assert isinstance(refused, str) and "-243" in refused and V2 in refused, refused
        rows = lab.salt_run("xenha.failover_resume")
        assert {r["host"]: r["state"] for r in rows}[V1] == "recovered"
        status = lab.salt_run("xenha.status", leases=False)
        assert {h["host"]: h["state"] for h in status["hosts"]}[V1] == "up"
        assert {d["domu"]: d["host"] for d in status["domus"]}["web01"] == V2
    assert running_on(lab, "web01") == {V2}
    assert fo.events(f"xenha/failover/{V1}/recovered", t0)


# --- 2. no BMC -> wait for sanlock's dead; the operator's ack ends the wait ------------------


def test_an_unreachable_bmc_waits_for_sanlock_until_the_operator_acknowledges(
    lab, bmcs, fo, alerts
):
    before = vm.wait_guest(lab.cli, WEB01_IP)
    lab.bmcs[V2].partition()  # V2 dies with its BMC cut off: no IPMI fence
    # and the survivor cannot read the lease area at first (its sanlock renews on): no
    # evidence that V2 is down, so nothing is fenced, the failover is blocked and alerted
    fo.isolate_storage(V1, sanlock=False)
    try:
        with watch(lab) as w:
            t0 = time.time()
            lab.hosts[V2].power_off()
            blocked = fo.wait_event(f"xenha/failover/{V2}/blocked", t0, FAILOVER_TIMEOUT)
            fo.restore_storage(V1)  # the retry (5 s later) reads the lease stopped
            assert blocked["data"]["attempt"] == 1
            assert f"unreadable on {V1}" in blocked["data"]["reason"], blocked
            assert not fo.events(f"xenha/failover/{V2}/corroborated", t0)
            fo.wait_event(f"xenha/failover/{V2}/corroborated", t0, FAILOVER_TIMEOUT)
            # the lease-only path waits for sanlock's dead (8 x io_timeout + 60 s after V2's
            # last renewal): nothing is started meanwhile
            time.sleep(10)
            assert not fo.events(f"xenha/failover/{V2}/fenced", t0)
            assert not started(fo, V2, t0)
            assert running_on(lab, "web01") == set()
            assert fo.journal(V2)["state"] == "corroborated"
            t_ack = time.time()
            ack = lab.salt_run("xenha.ack_fence", V2)
            assert ack["acknowledged"] is True
            fenced = fo.wait_event(f"xenha/failover/{V2}/fenced", t_ack, FAILOVER_TIMEOUT)
            fo.wait_event(f"xenha/failover/{V2}/done", t_ack, FAILOVER_TIMEOUT)
            new_boot(lab, before["bootid"], fo=fo)
        tl = fo.timeline(V2, t0)
        show("no BMC -> ack_fence -> restart", tl, ack=round(t_ack - t0, 2))
        assert tl["blocked"] < tl["corroborated"] < tl["fenced"], tl
        blocked_alerts(alerts, blocked)
        # the ack came before sanlock could call V2 dead (68 s at io_timeout 1)
        assert fenced["data"]["method"] == "manual", fenced
        assert [e["target"] for e in started(fo, V2, t0)] == [V1]
        assert w.first_on(V1) > t_ack
        assert any(f" {V2} ack_fence " in line for line in fo.audit(t0))
        assert fo.holders().get("web01") == {"mode": "ex", "hosts": [V1]}
    finally:
        fo.restore_storage(V1)
        lab.bmcs[V2].heal()
    power_on(lab, bmcs, V2)
    assert running_on(lab, "web01") == {V1}


# --- 3. partition: no restart while it renews; storage lost too -> killpath, then takeover ---


def test_partitioned_host_keeps_its_domus_while_it_renews_its_lease(lab, fo):
    t0 = time.time()
    with watch(lab):
        lab.hosts[V1].partition()
        try:
            ignored = fo.wait_event(f"xenha/failover/{V1}/ignored", t0, FAILOVER_TIMEOUT)
            assert "still renews its sanlock delta lease" in ignored["data"]["reason"]
            journal = fo.journal(V1)
            assert journal["state"] == "ignored" and journal["recheck"] is True
            time.sleep(3)
            assert running_on(lab, "web01") == {V1}
            assert not started(fo, V1, t0)
        finally:
            lab.hosts[V1].heal()
    lab.wait_minions([V1])


def test_partitioned_host_that_loses_storage_fences_itself_before_the_takeover(lab, fo):
    before = vm.wait_guest(lab.cli, WEB01_IP)
    try:
        with watch(lab) as w:
            t0 = time.time()
            # the whole host is cut off (its BMC too) and loses the shared storage: after
            # 8 x io_timeout without a renewal its sanlock runs web01's killpath
            lab.hosts[V1].partition()
            lab.bmcs[V1].partition()
            fo.isolate_storage(V1)
            wait_for(lambda: running_on(lab, "web01") == set(), 60, "V1's killpath for web01")
            t_self = time.time()
            # the loss claim was ignored while it renewed; resume (also scheduled) looks again
            lab.salt_run("xenha.failover_resume", timeout=FAILOVER_TIMEOUT)
            fo.wait_event(f"xenha/failover/{V1}/done", t0, FAILOVER_TIMEOUT)
            new_boot(lab, before["bootid"], fo=fo)
        tl = fo.timeline(V1, t0)
        show("partition + storage lost -> killpath -> takeover", tl, killpath=t_self - t0)
        # no BMC: the lease-only path, once V2's sanlock called V1 dead
        assert tl["fence"] == "lease"
        assert [e["target"] for e in started(fo, V1, t0)] == [V2]
        assert w.last_on(V1) < w.first_on(V2)  # gone from V1 before V2 started it
        log = lab.hosts[V1].run(["cat", "/var/log/sanlock.log"]).stdout
        assert "check_our_lease failed" in log, log[-2000:]
    finally:
        fo.restore_storage(V1)
        lab.bmcs[V1].heal()
        lab.hosts[V1].heal()
    # back on the network and the storage: it lost the lockspace, and the master's resume
    # (scheduled each minute; called here) joins it again; it renews, web01 stays on V2
    lab.wait_minions([V1], timeout=300)
    wait_for(lambda: renews_after_resume(lab, fo, V1), 120, "V1 renewing again")
    assert any(f" {V1} lockspace_joined " in line for line in fo.audit()), fo.audit()[-10:]
    time.sleep(3)
    assert running_on(lab, "web01") == {V2}


# --- 4. heartbeat drops shorter than the dead time ---------------------------------------------


def settle(lab, fo):
    """Let the claims left from earlier faults run out: a host back from a partition delivers
    the loss events it raised while cut off once its minion hears the master again (within
    seconds: the minion snippet's keepalive); the runner then ignores them."""
    lab.wait_minions(timeout=300)
    time.sleep(5)
    wait_for(
        lambda: all(fo.journal(h).get("state") not in ACTIVE for h in (V1, V2)),
        120,
        "earlier claims to be settled",
        interval=1,
    )


def iptables(host, *rule):
    host.run(["iptables", "-w", *rule])


def test_heartbeat_drops_below_the_dead_time_fail_nothing_over(lab, fo):
    hb = ["INPUT", "-p", "udp", "--dport", "7788"]
    every4 = [*hb, "-m", "statistic", "--mode", "nth", "--every", "4", "--packet", "0"]
    settle(lab, fo)
    t0 = time.time()
    with watch(lab):
        for host_id in (V1, V2):
            host = lab.hosts[host_id]
            try:
                iptables(host, "-A", *hb, "-j", "DROP")  # all keepalives lost for half the
                time.sleep(1)  # dead time (2 s): four in a row
                iptables(host, "-D", *hb, "-j", "DROP")
                iptables(host, "-A", *every4, "-j", "ACCEPT")  # 3 in 4 lost for 8 s
                iptables(host, "-A", *hb, "-j", "DROP")
                time.sleep(8)
            finally:
                host.run(["iptables", "-w", "-F", "INPUT"], check=False)
        time.sleep(5)  # longer than the dead time: a late alarm would show
    assert fo.events("salt/beacon/", t0) == []
    # the scheduled resume may still mark an earlier test's fenced host as recovered: that is
    # bookkeeping, not a failover; any other failover event here would be a false alarm
    failovers = fo.events("xenha/failover/", t0)
    assert [e for e in failovers if not e["tag"].endswith("/recovered")] == []
    assert running_on(lab, "web01") == {V2}


# --- 5. forged and repeated claims ---------------------------------------------------------


def test_forged_claims_are_ignored_and_logged(lab, fo):
    settle(lab, fo)
    t0 = time.time()
    forged = [
        # a non-member minion speaks for the cluster
        (DB, f"salt/beacon/{DB}/xenha_heartbeat/lost", {"peer": V2, "id": DB, "reporter": DB}),
        # a member's tag, with the data claiming another sender
        (V1, f"salt/beacon/{V1}/xenha_heartbeat/lost", {"peer": V2, "id": V2, "reporter": V2}),
        # a member reporting a peer other than the one in the data's id
        (V1, f"salt/beacon/{V1}/xenha_heartbeat/lost", {"peer": V2, "id": DB, "reporter": V1}),
    ]
    for minion, tag, data in forged:
        forge_event(lab, minion, tag, data)
    wait_for(
        lambda: len(fo.events(f"xenha/failover/{V2}/ignored", t0)) >= len(forged),
        60,
        "every forged claim to be refused",
    )
    reasons = [e["data"]["reason"] for e in fo.events(f"xenha/failover/{V2}/ignored", t0)]
    assert any(f"reporter '{DB}' is not a cluster VM host" in r for r in reasons), reasons
    assert any("does not match" in r for r in reasons), reasons
    refused = [line for line in fo.audit(t0) if "claim refused" in line]
    assert len(refused) == len(forged)
    assert not fo.events(f"xenha/failover/{V2}/started", t0)
    assert running_on(lab, "web01") == {V2}


def test_a_burst_of_claims_and_a_master_killed_mid_failover_give_one_restart(lab, fo):
    before = vm.wait_guest(lab.cli, WEB01_IP)
    settle(lab, fo)
    claim = {"peer": V2, "id": V1, "reporter": V1, "age": 3.2, "dead_time": 3.0}
    with watch(lab):
        t0 = time.time()
        lab.hosts[V2].power_off()
        for _ in range(3):  # on top of V1's own beacon event
            forge_event(lab, V1, f"salt/beacon/{V1}/xenha_heartbeat/lost", claim)
        fo.wait_event(f"xenha/failover/{V2}/verified", t0, FAILOVER_TIMEOUT)
        # the master dies mid-failover: the runner (inside it) dies with it
        assert fo.kill_master()
        t_kill = time.time()
        assert fo.journal(V2)["state"] in ACTIVE
        fo.start_master()
        lab.wait_minions([V1, DB], timeout=180)
        # the master's schedule (xenha.failover_resume, every 60 s) completes it
        try:
            fo.wait_event(f"xenha/failover/{V2}/done", t_kill, FAILOVER_TIMEOUT)
        except LabError as err:
            tail = "\n".join(fo.audit()[-8:])
            pytest.fail(f"{err}; journal state {fo.journal(V2).get('state')}; audit:\n{tail}")
        new_boot(lab, before["bootid"], fo=fo)
    tl = fo.timeline(V2, t0)
    show("burst + master killed -> resumed", tl, master_killed=round(t_kill - t0, 2))
    # announced on V1 (twice at most, if the master died right after firing it)
    assert {e["target"] for e in started(fo, V2, t0)} == {V1}
    journal = fo.journal(V2)
    assert journal["state"] == "done"
    # one failover for every claim; the first claim may first mark the previous failover of
    # V2 (done, V2 back since) as recovered, if the master's schedule had not done so yet
    lines = [line.split(" ", 3) for line in fo.audit(t0)]
    ids = {json.loads(rest).get("failover") for _, _, step, rest in lines if step != "recovered"}
    assert ids - {None} == {journal["id"]}
    steps = [line.split(" ")[2] for line in fo.audit(t0)]
    assert "resume" in steps
    assert steps.count("received") == 1
    assert running_on(lab, "web01") == {V1}


# --- the plumbing's pure parts (no lab needed) ------------------------------------------------


def test_timeline_reads_the_first_of_each_step_of_one_hosts_failover(tmp_path):
    fo = Failover(SimpleNamespace(run_dir=tmp_path, cluster={"hosts": {}}))
    fo.events_file.parent.mkdir(parents=True)
    rows = [
        (99.0, f"xenha/failover/{V1}/started", {}),  # before the crash: not this failover
        (103.5, f"salt/beacon/{V2}/xenha_heartbeat/lost", {"peer": V1, "id": V2}),
        (104.0, f"salt/beacon/{V1}/xenha_heartbeat/lost", {"peer": V2, "id": V1}),
        (104.5, f"xenha/failover/{V1}/started", {}),
        (110.0, f"xenha/failover/{V1}/fenced", {"method": "ipmi", "seconds": 0.4}),
        (111.0, f"xenha/failover/{V2}/fenced", {"method": "lease"}),
        (112.25, f"xenha/failover/{V1}/domu_started", {"domu": "web01", "seconds": 1.5}),
        (113.0, f"xenha/failover/{V1}/done", {}),
    ]
    lines = [json.dumps({"t": t, "tag": tag, "data": data}) for t, tag, data in rows]
    fo.events_file.write_text("\n".join([*lines[:3], "{half a line", *lines[3:]]) + "\n")
    assert fo.timeline(V1, since=100.0) == {
        "lost": 3.5,
        "reporter": V2,
        "started": 4.5,
        "fenced": 10.0,
        "fence": "ipmi",
        "fence_s": 0.4,
        "domu_started:web01": 12.25,
        "start_s:web01": 1.5,
        "done": 13.0,
    }
    assert [e["t"] for e in fo.events("xenha/failover/", since=105)] == [
        110.0,
        111.0,
        112.25,
        113.0,
    ]


def ran(log):
    """How often the service ran: 0 until the background shell (it outlives the launcher)
    has opened its log."""
    return log.read_text().count("ran") if log.exists() else 0


def test_a_lab_service_is_restarted_when_it_exits(tmp_path):
    pidfile, log = tmp_path / "pid", tmp_path / "log"
    subprocess.run(_daemon(["echo", "ran"], pidfile, log), check=True, timeout=10)
    pid = int(pidfile.read_text())
    try:
        wait_for(lambda: ran(log) >= 2, 20, "the service to run twice")
    finally:
        os.killpg(pid, signal.SIGKILL)  # the loop is its own session: its group is ours
