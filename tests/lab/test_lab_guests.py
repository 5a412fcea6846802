"""The lab's real guests, toolstack and BMCs on one three-host lab (slow: QEMU under TCG).

One module-scoped lab: a domU boots on ServVirt1 with its disk on ServDB's iSCSI target and
answers HTTP on its fixed IP; the product's Xen module, run by ServVirt1's salt-minion, live-
migrates it to ServVirt2 (same boot, counters went on, same IP); a migration that cannot happen
leaves it running; ServVirt2's BMC, driven with standard IPMI, powers the host off (guest,
minion and sshd die) and on again (services back, guest not); the module then restarts the
guest on ServVirt1 from its disk and shuts it down cleanly.
"""

import json
import os
import shutil
import time

import pytest
import xenha_xenparse as xp

from lab import RUN_ROOT, bmc, guest, toolstack, vm
from lab.cluster import Lab, state_changes
from lab.hosts import wait_for

pytestmark = [pytest.mark.root, pytest.mark.lab]

WEB01_IP = "10.99.0.100"
V1, V2 = "ServVirt1", "ServVirt2"


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, QEMU taps, tgtd)")
    tools = ("qemu-system-x86_64", "ipmi_sim", "ipmitool", "tgtd")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing lab tools {missing}: run `make deps`")
    the_lab = Lab(RUN_ROOT / "test-lab-guests", prefix="xtg")
    toolstack.attach(the_lab)
    try:
        the_lab.up()
        state_changes(the_lab.converge())  # the xen formula sets up the migration ssh
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="module")
def bmcs(lab):
    started = bmc.start_all(lab)
    yield started
    for b in started.values():
        b.stop()


@pytest.fixture(scope="module")
def web01(lab):
    """web01 running on ServVirt1 and answering HTTP."""
    cfg = vm.DomUs(lab).define("web01", WEB01_IP)
    toolstack.xl(lab.hosts[V1], "create", str(cfg))
    return vm.wait_guest(lab.cli, WEB01_IP)


def xl_rows(lab, host_id):
    out = toolstack.xl(lab.hosts[host_id], "list").stdout
    return xp.split_dom0(xp.parse_xl_list(out))["domus"]


def test_guest_image_is_built_once(lab):
    first = guest.build(lab.run_dir / "guest")
    mtimes = (first.kernel.stat().st_mtime_ns, first.ramdisk.stat().st_mtime_ns)
    again = guest.build(lab.run_dir / "guest")
    assert again == first
    assert (again.kernel.stat().st_mtime_ns, again.ramdisk.stat().st_mtime_ns) == mtimes
    assert first.kernel.read_bytes()[:4] == b"\x7fELF"  # the PVH-bootable vmlinux


def test_guest_boots_and_serves_http_from_its_disk(lab, web01):
    assert web01["host"] == "web01"
    later = vm.wait_guest(lab.cli, WEB01_IP)
    assert later["bootid"] == web01["bootid"]
    assert later["counter"] > web01["counter"]
    # the disk writer's counter is on the LUN's backing file in ServDB
    wait_for(lambda: (vm.DomUs(lab).disk_seq("web01") or 0) >= later["disk_seq"], 10, "disk")


def test_xl_list_and_info_parse_with_xenhas_parsers(lab, web01):
    rows = xl_rows(lab, V1)
    assert rows["web01"]["memory_mib"] == 128
    assert rows["web01"]["vcpus"] == 1
    assert set(rows["web01"]["flags"]) <= {"running", "blocked"} and rows["web01"]["flags"]
    info = xp.summarize_info(xp.parse_info(toolstack.xl(lab.hosts[V1], "info").stdout))
    spec = lab.cluster["hosts"][V1]
    assert info["host"] == V1
    assert info["total_memory_mib"] == spec["memory_mib"]
    assert info["free_memory_mib"] == spec["memory_mib"] - toolstack.DOM0_MIB - 128
    details = xp.parse_xl_list_json(toolstack.xl(lab.hosts[V1], "list", "-l").stdout)
    assert details["web01"]["max_memkb"] == 128 * 1024
    unknown = toolstack.xl(lab.hosts[V1], "list", "nosuch", check=False)
    assert unknown.returncode == 1
    assert "nosuch is an invalid domain identifier" in unknown.stderr


def test_live_migration_through_the_xen_module_keeps_the_guest_running(lab, web01):
    before = vm.wait_guest(lab.cli, WEB01_IP)
    ret = lab.salt(V1, "xenha_xen.migrate", "web01", V2, timeout=180)[V1]
    assert isinstance(ret, dict), ret
    assert ret["result"] is True and ret["source_state"] == "gone"
    assert "Migration successful." in ret["stderr"]
    assert "web01" not in xl_rows(lab, V1)
    assert xl_rows(lab, V2)["web01"]["transient"] is None
    # the target's module sees it too
    assert lab.salt(V2, "xenha_xen.domain", "web01")[V2]["name"] == "web01"
    after = vm.wait_guest(lab.cli, WEB01_IP)  # same IP, now answered from ServVirt2
    assert after["bootid"] == before["bootid"]  # no reboot
    assert after["counter"] > before["counter"]  # RAM state came along and kept counting
    assert after["disk_seq"] > before["disk_seq"]  # disk writes went on from the new host
    time.sleep(1)
    assert vm.guest_state(lab.cli, WEB01_IP)["disk_seq"] > after["disk_seq"]


def test_failed_migrations_leave_the_guest_running_on_the_source(lab, web01):
    before = vm.wait_guest(lab.cli, WEB01_IP)
    # ServDB is no VM host: ssh finds no receiver there, xl fails before anything moved
    ret = lab.salt(V2, "xenha_xen.migrate", "web01", "ServDB", timeout=120)[V2]
    assert isinstance(ret, str) and "web01 is still running on the source" in ret, ret
    assert "reading banner from migration receiver stream" in ret
    # ServVirt1's toolstack refuses it (no room): the receiver says so over the ssh channel
    conf_file = lab.hosts[V1].etc / "xen" / "lab-toolstack.json"
    conf = conf_file.read_text()
    conf_file.write_text(json.dumps({**json.loads(conf), "memory_mib": 300}))
    try:
        ret = lab.salt(V2, "xenha_xen.migrate", "web01", V1, timeout=120)[V2]
    finally:
        conf_file.write_text(conf)
    assert isinstance(ret, str) and "web01 is still running on the source" in ret, ret
    assert "failed to free memory for the domain" in ret
    assert "Migration failed, resuming at sender." in ret
    assert "web01" not in xl_rows(lab, V1)  # no half-built copy left behind
    assert xl_rows(lab, V2)["web01"]["transient"] is None
    after = vm.wait_guest(lab.cli, WEB01_IP)
    assert after["bootid"] == before["bootid"] and after["counter"] > before["counter"]


def test_bmc_power_off_kills_the_host_and_its_guests(lab, bmcs, web01):
    host = lab.hosts[V2]
    qemu = [p for p in host.pids() if b"qemu" in _cmdline(p)]
    assert qemu, "web01's QEMU should run on ServVirt2"
    out = bmcs[V2].ipmitool("chassis", "power", "off")
    assert out.returncode == 0, out.stderr
    assert "Down/Off" in out.stdout
    assert not host.is_powered() and not host.link_up()
    assert host.pids() == []  # minion, sshd, QEMU: every process of the host is gone
    assert "error" in vm.guest_state(lab.cli, WEB01_IP, timeout=2)
    assert V2 not in lab.salt(V2, "test.ping", timeout=5)
    assert bmcs[V2].power_status() is False
    # the other host and its BMC are untouched
    assert lab.hosts[V1].is_powered() and bmcs[V1].power_status() is True


def test_bmc_power_on_brings_services_back_but_not_guests(lab, bmcs, web01):
    out = bmcs[V2].ipmitool("chassis", "power", "on")
    assert out.returncode == 0, out.stderr
    lab.wait_minions([V2], timeout=180)
    assert bmcs[V2].power_status() is True
    assert lab.hosts[V2].link_up()
    assert xl_rows(lab, V2) == {}  # guests do not come back by themselves
    info = xp.summarize_info(xp.parse_info(toolstack.xl(lab.hosts[V2], "info").stdout))
    assert info["free_memory_mib"] == lab.cluster["hosts"][V2]["memory_mib"] - toolstack.DOM0_MIB
    assert "error" in vm.guest_state(lab.cli, WEB01_IP, timeout=2)


def test_guest_restarts_on_the_survivor_from_its_disk_and_shuts_down(lab, web01):
    # the guest brought up elsewhere from its disk, as a failover's start does; this lab has no
    # sanlock lockspace (no failover), so the lab xl starts it: the leased start through
    # xenha_xen is the failover lab's (tests/lab/test_failover_lab.py)
    last = vm.DomUs(lab).disk_seq("web01")
    cfg = vm.DomUs(lab).shared / "web01.cfg"
    toolstack.xl(lab.hosts[V1], "create", str(cfg))
    assert "web01" in xl_rows(lab, V1)
    state = vm.wait_guest(lab.cli, WEB01_IP)
    assert state["bootid"] != web01["bootid"]  # a new boot, not the old instance
    assert state["disk_seq"] > last  # the disk writer went on from what the disk held
    ret = lab.salt(V1, "xenha_xen.shutdown", "web01", timeout=120)[V1]
    assert isinstance(ret, dict) and ret["method"] == "shutdown", ret  # ACPI, not destroy
    assert "web01" not in xl_rows(lab, V1)
    assert "error" in vm.guest_state(lab.cli, WEB01_IP, timeout=2)


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""
