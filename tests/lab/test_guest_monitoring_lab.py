"""
Guest monitoring and N+1 in the lab (prefix ``xgm``), on real daemons, one lab for both.

N+1 first: web01 runs on ServVirt1 and ServVirt2 has room for it, so ``salt-run
xenha.status`` says N+1 ``ok``. A domU outside the pillar (``hog``, started paused on
ServVirt2 with the lab ``xl``, which counts its memory as used, as Xen would) takes
ServVirt2's memory down to less than web01 needs above the host's reserve: status says ``at
risk``, naming ServVirt1 and web01. Beforehand ``xenha.admission`` and a
``xenha_domu.running`` state with ``admission: strict`` (through the master's ``peer_run``)
refuse that very start. With ``hog`` destroyed, N+1 is ``ok`` again.

Then guest monitoring: a ``monitor`` policy (restart 2 within 3600 s, then relocate) is given
to web01 through the run's own pillar (``Failover.update_domu``), so no other lab sees it.
The VM hosts get the ``xenha_guests`` beacon only then. Its QEMU is SIGKILLed inside
ServVirt1, which the lab toolstack sees as a domain gone: the beacon reports it, the shipped
reactor hands it to ``xenha.guest_failed``, which restarts web01 in place (same host, a new
boot over its network), twice; the third crash relocates it to ServVirt2. ``xl list`` on both
hosts never shows it twice at any poll, and the master's audit trail (``guestmon.log``) names
each action.
"""

import json
import time

import pytest

from lab import demo, toolstack, vm
from lab.failover import Watch
from lab.hosts import LabError, wait_for
from tests.support.labs import prepared_lab

pytestmark = [pytest.mark.root, pytest.mark.lab]

V1, V2 = demo.V1, demo.V2
NAME, IP = "web01", "10.99.0.100"
RESTARTS = 2
MONITOR = {"restart": RESTARTS, "within": 3600, "then": "relocate"}
STEP_TIMEOUT = 300  # s from a crash to the guest answering again (detection, restart, TCG boot)
# the watcher learns a domU in a round (the pillar's beacon has every: 5) and reports only one
# it saw listed: each crash waits until at least two rounds saw the running instance
SEEN = 12
NO_ACTION_TIMEOUT = 120  # s from a crash to the master's first action on it (detection ~6 s)
HOG = "hog"
WEB01_MIB = 128  # Failover.define_domu's default
SHORT = 64  # MiB that ServVirt2 lacks for web01 (above its reserve) while hog runs
AT_RISK = f"at risk ({V1} -> [{NAME}])"


@pytest.fixture(scope="module")
def lab_fo():
    with prepared_lab("test-guest-monitoring-lab", "xgm", {NAME: IP}) as (the_lab, fo):
        yield the_lab, fo


def audit_path(lab):
    return lab.master.root / "var" / "cache" / "salt" / "master" / "xenha" / "guestmon.log"


def audit(lab):
    """The guest monitoring audit trail: [(host, step, details)], oldest first."""
    path = audit_path(lab)
    lines = path.read_text().splitlines() if path.exists() else []
    return [(x.split(" ")[1], x.split(" ")[2], json.loads(x.split(" ", 3)[3])) for x in lines]


def actions(lab):
    """The guest actions of the audit trail: no ``guest-ignored`` lines (a second report while
    one is handled) and no host marks."""
    return [
        (host, step, d)
        for host, step, d in audit(lab)
        if step.startswith("guest-") and step != "guest-ignored"
    ]


def listed(lab):
    """{VM host: domUs its ``xl list`` shows (migration suffixes stripped)}: the lab's own
    listing, asked on both hosts."""
    out = {}
    for host_id in (V1, V2):
        text = toolstack.xl(lab.hosts[host_id], "list").stdout
        rows = [line.split()[0] for line in text.splitlines()[1:] if line.strip()]
        out[host_id] = {row.split("--")[0] for row in rows} - {"Domain-0"}
    return out


def beacons(lab):
    """{minion: names of its beacons} (pillar and configuration)."""
    got = lab.salt("*", "beacons.list", "return_yaml=False", timeout=60)
    return {mid: sorted(b) if isinstance(b, dict) else [repr(b)] for mid, b in got.items()}


def log_tail(lab, words=("guest", "ERROR", "Error", "Traceback"), lines=25):
    """The lines of the master's and ServVirt1's Salt logs that mention ``words`` (last
    ``lines`` of each): what the beacon, the reactor and the runner said."""
    out = []
    for who, path in (
        ("master", lab.master.root / "var" / "log" / "salt" / "master"),
        (V1, lab.hosts[V1].root / "var" / "log" / "salt" / "minion"),
    ):
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        hits = [x for x in text if any(w in x for w in words)][-lines:]
        out += [f"--- {who} ({path}):", *hits]
    return "\n".join(out)


def crash(lab, host_id):
    """SIGKILL ``NAME``'s QEMU inside ``host_id`` once the guest watcher saw it (:data:`SEEN`):
    the toolstack sees the domain gone."""
    time.sleep(SEEN)
    host = lab.hosts[host_id]
    domid = toolstack.xl(host, "domid", NAME).stdout.strip()
    pidfile = host.root / "xl" / f"d{domid}.pid"
    host.run(["kill", "-KILL", pidfile.read_text().strip()])


def wait_back(lab, before, expect_on, what):
    """Poll until ``NAME`` answers over its network with a boot id other than ``before``'s,
    listed on ``expect_on`` alone; at each poll ``xl list`` of both hosts shows it at most
    once. Returns its state; on timeout the audit trail and the listing are in the message."""
    seen, acted, t0 = [], len(actions(lab)), time.monotonic()

    def back():
        if len(actions(lab)) == acted and time.monotonic() - t0 > NO_ACTION_TIMEOUT:
            raise LabError(f"no guest action in the audit trail {NO_ACTION_TIMEOUT} s on")
        where = listed(lab)
        hosts = sorted(h for h, names in where.items() if NAME in names)
        seen.append(hosts)
        assert len(hosts) <= 1, f"{NAME} listed on {hosts} at once; audit: {audit(lab)}"
        if hosts != [expect_on]:
            return None
        state = vm.guest_state(lab.cli, IP)
        return "error" not in state and state["bootid"] != before["bootid"] and state

    try:
        return wait_for(back, STEP_TIMEOUT, what, interval=1)
    except LabError as err:
        trail = "\n".join(f"  {h} {s} {json.dumps(d)}" for h, s, d in audit(lab))
        pytest.fail(
            f"{err}; listed last on {seen[-1:]}, audit trail:\n{trail}\nSalt logs:\n{log_tail(lab)}"
        )


def status(lab):
    return lab.salt_run("xenha.status", "leases=False", timeout=300)


def wait_n_plus_1(lab, verdict, what):
    """Poll ``xenha.status`` until its N+1 verdict is ``verdict``; returns that status (on
    timeout the last status is in the failure message)."""
    last = {}

    def reached():
        last.update(status(lab))
        return last.get("n_plus_1") == verdict and dict(last)

    try:
        return wait_for(reached, 120, what, interval=2)
    except LabError as err:
        pytest.fail(f"{err}; last status:\n{json.dumps(last, indent=1)}")


def rows(answer):
    return {h["host"]: h["n_plus_1"] for h in answer["hosts"]}


def free_mib(answer, host):
    row = next(h for h in answer["hosts"] if h["host"] == host)
    return int(row["memory_free_total_mib"].split("/")[0])


def hog_config(lab, fo, memory):
    """An xl config for ``HOG`` (the lab guest's kernel, no NIC, no disk) in the shared folder."""
    image = vm.DomUs(lab).image()
    cfg = fo.shared / "domus" / f"{HOG}.cfg"
    cfg.write_text(
        f'name = "{HOG}"\nmemory = {memory}\nvcpus = 1\n'
        f'kernel = "{image.kernel}"\nramdisk = "{image.ramdisk}"\n'
    )
    return cfg


def test_n_plus_1_goes_at_risk_when_memory_is_taken_and_back_when_freed(lab_fo):
    lab, fo = lab_fo
    vm.wait_guest(lab.cli, IP)
    first = wait_n_plus_1(lab, "ok", "N+1 ok with web01 on ServVirt1")
    assert rows(first) == {V1: "ok", V2: "ok", "ServDB": "-"}, first["hosts"]

    # take all but SHORT MiB of what web01 needs on ServVirt2, above its reserve
    reserve = lab.cluster["hosts"][V2]["memory_reserve_mib"]
    hog_mib = free_mib(first, V2) - reserve - WEB01_MIB + SHORT
    cfg = hog_config(lab, fo, hog_mib)

    refused = lab.salt_run("xenha.admission", HOG, V2, f"memory_mib={hog_mib}", timeout=300)
    assert (refused["admit"], refused["broken"]) == (False, {V1: [NAME]}), refused
    assert refused["after"] == AT_RISK, refused
    state_args = (f"name={HOG}", f"config={cfg}", "admission=strict", "test=True")
    got = lab.salt(V2, "state.single", "xenha_domu.running", *state_args, timeout=300)[V2]
    (state,) = got.values()
    assert state["result"] is False, state
    assert f"losing {V1} would leave {NAME} unplaced" in state["comment"], state

    toolstack.xl(lab.hosts[V2], "create", "-p", str(cfg))
    try:
        risky = wait_n_plus_1(lab, AT_RISK, f"N+1 at risk with {hog_mib} MiB taken on {V2}")
        assert rows(risky) == {V1: f"at risk: {NAME}", V2: "ok", "ServDB": "-"}, risky["hosts"]
        assert free_mib(risky, V2) - reserve == WEB01_MIB - SHORT, risky["hosts"]
    finally:
        toolstack.xl(lab.hosts[V2], "destroy", HOG)

    again = wait_n_plus_1(lab, "ok", f"N+1 ok again once {HOG} was destroyed")
    assert rows(again) == {V1: "ok", V2: "ok", "ServDB": "-"}, again["hosts"]


def test_a_crashed_guest_is_restarted_in_place_then_relocated(lab_fo):
    lab, fo = lab_fo
    before = vm.wait_guest(lab.cli, IP)
    assert listed(lab) == {V1: {NAME}, V2: set()}
    # without a monitored domU no host runs the guest beacon
    assert not [m for m, names in beacons(lab).items() if "xenha_guests" in names]

    fo.update_domu(NAME, monitor=MONITOR)
    got = beacons(lab)
    assert [m for m, names in sorted(got.items()) if "xenha_guests" in names] == [V1, V2], got

    with Watch(lab, NAME, interval=0.5) as watch:
        for attempt in range(1, RESTARTS + 1):
            crash(lab, V1)
            what = f"{NAME} restarted in place on {V1} after crash {attempt}"
            before = wait_back(lab, before, V1, what)
            done = [d for _, s, d in actions(lab) if s == "guest-restarted"]
            assert len(done) == attempt, actions(lab)
            assert (done[-1]["attempt"], done[-1]["of"]) == (attempt, RESTARTS), done[-1]
        crash(lab, V1)
        wait_back(lab, before, V2, f"{NAME} relocated to {V2} after {RESTARTS} restarts")
    assert not watch.doubles, f"{NAME} ran on two hosts at once: {watch.doubles[:3]}"
    assert listed(lab) == {V1: set(), V2: {NAME}}

    trail = actions(lab)
    restart = ["guest-restarting", "guest-restarted"]
    expected = restart * RESTARTS + ["guest-relocating", "guest-relocated"]
    assert [s for _, s, _ in trail] == expected, trail
    assert {(h, d["domu"]) for h, _, d in trail} == {(V1, NAME)}, trail
    # the host confirmed the beacon's "gone": no copy listed anywhere
    assert all(d["reason"].startswith("not running on any host") for _, _, d in trail), trail
    relocated = trail[-1][2]
    assert relocated["target"] == V2, relocated
    assert f"{RESTARTS} restart(s) within 3600" in relocated["reason"], relocated
    # what the master told the bus matches the trail
    events = [e["tag"].rsplit("/", 1)[1] for e in fo.events(f"xenha/guest/{V1}/{NAME}/")]
    assert events == ["restarted"] * RESTARTS + ["relocated"], events
