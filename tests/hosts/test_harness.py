"""The host harness itself: isolation, power, partition, spawn, and a clean `down`."""

import os
import subprocess
from pathlib import Path

import pytest

from lab import RUN_ROOT
from lab.hosts import LabError, Segment, identity, wait_for
from tests.hosts.conftest import make_lab

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab():
    lab = make_lab("xhh")
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def ping(endpoint, ip):
    return endpoint.run(["ping", "-c", "1", "-W", "1", ip], check=False).returncode == 0


def reachable(endpoint, ip, tries=10):
    """Whether ``ip`` answers within a few pings (a link just brought up may drop the first)."""
    return any(ping(endpoint, ip) for _ in range(tries))


def processes(host):
    """(pid, command) of every process inside the host's PID namespace, as the host sees them."""
    out = host.run(["ps", "-e", "-ww", "-o", "pid=,args="]).stdout
    return [(int(p), cmd) for p, cmd in (line.strip().split(None, 1) for line in out.splitlines())]


def sleeping(host):
    """Whether ``sleep 300`` (what the tests spawn) runs in the host."""
    return any(cmd == "sleep 300" for _, cmd in processes(host))


def test_each_host_has_its_own_etc_hostname_and_processes(lab):
    for mid, host in lab.hosts.items():
        assert host.run(["hostname"]).stdout.strip() == mid
        assert host.run(["cat", "/etc/hostname"]).stdout.strip() == mid
        others = [m for m in lab.hosts if m != mid]
        hosts_file = host.run(["cat", "/etc/hosts"]).stdout
        assert not any(o in hosts_file for o in others)
        procs = processes(host)
        assert procs[0] == (1, procs[0][1]) and "hostinit.py" in procs[0][1]
        assert any("salt-minion" in cmd for _, cmd in procs)
        assert not any("salt-master" in cmd for _, cmd in procs)
    # a file written in one host's /etc is not in the machine's nor in another host's
    lab.hosts["ServVirt1"].run(["sh", "-c", "echo one > /etc/xenha-harness-probe"])
    assert (lab.hosts["ServVirt1"].etc / "xenha-harness-probe").read_text() == "one\n"
    assert not Path("/etc/xenha-harness-probe").exists()
    probe = lab.hosts["ServVirt2"].run(["test", "-e", "/etc/xenha-harness-probe"], check=False)
    assert probe.returncode == 1


def test_hosts_reach_each_other_and_the_master_over_the_segment(lab):
    v1 = lab.hosts["ServVirt1"]
    assert reachable(v1, lab.hosts["ServDB"].ip)
    assert reachable(v1, lab.master.ip)
    assert reachable(lab.cli, lab.hosts["ServVirt2"].ip)
    # VM hosts carry their IP on a local bridge (guests' taps join it), with the uplink enslaved
    links = v1.run(["ip", "-o", "link", "show", "master", "br0"]).stdout
    assert "eth0" in links
    assert lab.hosts["ServVirt1"].ip in v1.run(["ip", "-o", "addr", "show", "br0"]).stdout


def test_state_runs_inside_the_host(lab):
    ret = lab.salt(
        "ServDB", "state.single", "file.managed", "name=/tmp/xenha-probe", "contents=from-salt"
    )
    (state,) = ret["ServDB"].values()
    assert state["result"] is True and state["changes"]
    assert (lab.hosts["ServDB"].root / "tmp" / "xenha-probe").read_text().strip() == "from-salt"
    assert not Path("/tmp/xenha-probe").exists()


def test_spawn_returns_a_process_that_terminate_stops(lab):
    host = lab.hosts["ServDB"]
    proc = host.spawn(["sleep", "300"])
    try:
        wait_for(lambda: sleeping(host), 30, "the spawned sleep to start")
    finally:
        proc.terminate()
    assert proc.wait(timeout=10) != 0
    assert not sleeping(host)


def test_power_off_kills_every_process_and_drops_the_link(lab):
    v2 = lab.hosts["ServVirt2"]
    # a process that left its parent (as a daemon does) must die too
    v2.run(["sh", "-c", "setsid sleep 600 >/dev/null 2>&1 < /dev/null &"])
    before = [identity(pid) for pid in v2.pids()]
    assert len(before) >= 3
    v2.power_off()
    assert not v2.is_powered()
    assert v2.pids() == []
    assert not set(before) & {identity(pid) for pid, _ in before}
    assert not v2.link_up()
    assert not ping(lab.cli, v2.ip)
    assert reachable(lab.cli, lab.bmcs["ServVirt2"].ip)  # its BMC stays up
    assert "ServVirt2" not in lab.salt("ServVirt2", "test.ping", timeout=3)
    with pytest.raises(LabError, match="powered off"):
        v2.run(["true"])


def test_power_on_brings_the_minion_back_but_not_old_processes(lab):
    v2 = lab.hosts["ServVirt2"]
    v2.power_on()
    assert v2.is_powered() and v2.link_up()
    lab.wait_minions(["ServVirt2"], timeout=120)
    cmds = [cmd for _, cmd in processes(v2)]
    assert any("sshd" in c for c in cmds)
    assert "sleep 600" not in cmds
    assert v2.run(["hostname"]).stdout.strip() == "ServVirt2"


def test_partition_cuts_the_link_but_keeps_the_host_running(lab):
    v1 = lab.hosts["ServVirt1"]
    v1.spawn(["sleep", "300"])
    wait_for(lambda: sleeping(v1), 30, "the spawned sleep to start")
    v1.partition()
    try:
        assert not ping(lab.cli, v1.ip)
        assert not ping(v1, lab.master.ip)
        assert v1.is_powered()
        assert sleeping(v1)
    finally:
        v1.heal()
    assert reachable(lab.cli, v1.ip)
    lab.wait_minions(["ServVirt1"], timeout=120)


def test_down_leaves_nothing_behind(lab):
    run_dir = lab.run_dir
    before = [identity(pid) for e in lab.segment.endpoints.values() for pid in e.pids()]
    assert before
    lab.down()
    lab.down()  # twice is fine
    assert lab.segment.netns_names() == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert "xhh-" not in netns.stdout
    assert not run_dir.exists()
    assert not set(before) & {identity(pid) for pid, _ in before}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert str(run_dir).encode() not in cmdline
    assert str(run_dir) not in Path("/proc/self/mountinfo").read_text()


def test_binds_share_a_folder_between_hosts_and_nothing_else():
    segment = Segment(RUN_ROOT / "test-xhb", prefix="xhb")
    shared = segment.run_dir / "shared"
    inside = "/var/lib/xenha-lab/shared"
    a = segment.host("a", "10.99.0.10", "vmhost", binds={inside: shared})
    b = segment.host("b", "10.99.0.11", "storage", binds={inside: shared})
    try:
        segment.create()
        shared.mkdir()
        a.power_on()
        b.power_on()
        a.run(["sh", "-c", f"echo from-a > {inside}/note"])
        assert b.run(["cat", f"{inside}/note"]).stdout == "from-a\n"
        assert (shared / "note").exists()
        assert not Path(inside).exists()  # the mount point is in the hosts' own /var
    finally:
        segment.down()
    with pytest.raises(LabError, match="must be under"):
        segment.host("c", "10.99.0.12", "vmhost", binds={"/srv/x": shared})
