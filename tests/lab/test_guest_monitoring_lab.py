"""
Guest monitoring in the lab (prefix ``xgm``), on real daemons: web01 runs on ServVirt1; a
``monitor`` policy (restart 2 within 3600 s, then relocate) is given to it through the run's own
pillar (``Failover.update_domu``), so no other lab sees it. The VM hosts get the
``xenha_guests`` beacon only then. Its QEMU is SIGKILLed inside ServVirt1, which the lab
toolstack sees as a domain gone: the beacon reports it, the shipped reactor hands it to
``xenha.guest_failed``, which restarts web01 in place (same host, a new boot over its network),
twice; the third crash relocates it to ServVirt2. ``xl list`` on both hosts never shows it twice
at any poll, and the master's audit trail (``guestmon.log``) names each action.
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
