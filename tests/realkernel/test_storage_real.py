"""The storage stack for real: open-iscsi, o2cb and OCFS2 in two Debian guests under TCG.

One module-scoped real-kernel lab (lab/realkernel): ServVirt1 and ServVirt2 boot the base
image's Debian kernel through their BMCs, their minions join the lab's master, and the
unchanged formulas log in to ServDB's tgtd with CHAP, bring o2cb online, format the LUN once
and mount it at /cluster on both; a file written on one host is read on the other, a second
apply changes nothing, and a host reset through its BMC mounts /cluster again at boot.
"""

import os
import secrets
import shutil
import subprocess

import pytest

from lab import RUN_ROOT
from lab.cluster import state_changes
from lab.hosts import LabError, wait_for
from lab.realkernel.cluster import RealKernelLab

pytestmark = [pytest.mark.root, pytest.mark.realkernel]

GUESTS = ["ServVirt1", "ServVirt2"]
# the volume's UUID as each VM host sees it mounted (the pillar check derives its device path)
UUID = "findmnt -n -o UUID /cluster"
TOOLS = ("qemu-system-x86_64", "qemu-img", "ipmi_sim", "ipmitool", "tgtd", "debootstrap")


@pytest.fixture(scope="module")
def lab():
    if not os.environ.get("XENHA_REALKERNEL"):
        # 20+ minutes on a loaded 2-core machine: not part of `make test` until it is budgeted
        pytest.skip("the real-kernel tier runs with XENHA_REALKERNEL=1")
    if os.geteuid() != 0:
        pytest.skip("the real-kernel lab needs root (namespaces, taps, debootstrap)")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing real-kernel lab tools {missing}: run `make deps`")
    the_lab = RealKernelLab(RUN_ROOT / "test-realkernel", prefix="xrk")
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down()


def _each(lab, command):
    """{guest: output of ``command``} from both VM hosts' minions (cmd.run)."""
    got = lab.salt(GUESTS, "cmd.run", command, timeout=120)
    assert sorted(got) == GUESTS, f"{command}: no answer from {set(GUESTS) - set(got)}"
    return got


@pytest.fixture(scope="module")
def applied(lab):
    """Two converges of the bare hosts, and the volume's UUID on each VM host in between."""
    first, took = lab.converge()
    print("\nstate.apply: " + ", ".join(f"{step} {s:.0f} s" for step, s in took.items()))
    changed = state_changes(first)  # raises, naming them, when states failed
    uuids = _each(lab, UUID)
    second, took = lab.converge()
    print("second state.apply: " + ", ".join(f"{step} {s:.0f} s" for step, s in took.items()))
    return {"first": first, "changed": changed, "uuids": uuids, "second": second}


def test_formulas_converge_a_real_ocfs2_cluster_over_iscsi(applied):
    changed = applied["changed"]
    assert any("ocfs2-mount-mount-mounted" in sid for sid in changed["ServVirt2"]), changed


def test_each_vm_host_logs_in_with_chap(lab, applied):
    storage = lab.cluster["storage"]
    for mid, out in _each(lab, "iscsiadm -m session -P 2").items():
        assert storage["target_iqn"] in out, f"{mid}: no session to {storage['target_iqn']}: {out}"
        assert f"username: {storage['chap']['user']}" in out, f"{mid}: not CHAP: {out}"


def test_o2cb_is_online_on_each_vm_host(lab, applied):
    cluster = lab.cluster["ocfs2"]["cluster"]
    for mid, out in _each(lab, f"o2cb cluster-status {cluster}").items():
        assert f"Cluster '{cluster}' is online" in out, f"{mid}: o2cb: {out}"


def test_the_lun_is_formatted_once_by_the_format_host(lab, applied):
    format_host = lab.cluster["ocfs2"]["format_host"]
    formats = {
        mid: [s for sid, s in states.items() if "ocfs2-format-xenha_o2cb-formatted" in sid]
        for mid, states in applied["first"].items()
    }
    assert {mid for mid, found in formats.items() if found} == {format_host}, formats
    (formatted,) = formats[format_host]
    uuid = formatted["changes"]["formatted"]["uuid"].lower()
    assert {mid: u.strip().lower() for mid, u in applied["uuids"].items()} == dict.fromkeys(
        GUESTS, uuid
    )
    # the second apply left the volume alone: the same UUID after it
    assert _each(lab, UUID) == applied["uuids"]


def test_cluster_is_mounted_and_shared_by_both_vm_hosts(lab, applied):
    for mid, out in _each(lab, "findmnt -n -o FSTYPE,SOURCE /cluster").items():
        assert out.split()[0] == "ocfs2", f"{mid}: /cluster: {out!r}"
    token = secrets.token_hex(8)
    lab.salt(["ServVirt1"], "file.write", "/cluster/realkernel-check", token)
    got = lab.salt(["ServVirt2"], "file.read", "/cluster/realkernel-check")
    assert got["ServVirt2"].strip() == token


def test_a_second_apply_changes_nothing(lab, applied):
    changed = state_changes(applied["second"])
    assert changed == {mid: [] for mid in ["ServDB", *GUESTS]}


def _answer(lab, mid, command):
    """``command``'s output on ``mid``, or None while its minion does not answer."""
    try:
        return lab.salt([mid], "cmd.run", command, timeout=20).get(mid)
    except (LabError, subprocess.TimeoutExpired):
        return None


def test_a_vm_host_reset_through_its_bmc_comes_back_with_cluster_mounted(lab, applied):
    # last: it reboots ServVirt2 (node 1: ServVirt1, node 0, keeps the volume meanwhile)
    token = secrets.token_hex(8)
    lab.salt(["ServVirt1"], "file.write", "/cluster/before-reset", token)
    boot_id = _answer(lab, "ServVirt2", "cat /proc/sys/kernel/random/boot_id")
    assert boot_id
    lab.ipmitool("ServVirt2", "chassis", "power", "reset")
    # a new boot, then the boot-time login, o2cb and fstab mount with no Salt run
    wait_for(
        lambda: (
            _answer(lab, "ServVirt2", "cat /proc/sys/kernel/random/boot_id") not in (None, boot_id)
        ),
        600,
        "ServVirt2 to boot again after its BMC's reset",
        interval=5,
    )
    mounted = wait_for(
        lambda: "ocfs2" in (_answer(lab, "ServVirt2", "findmnt -n -o FSTYPE /cluster") or ""),
        300,
        "ServVirt2 to mount /cluster at boot",
        interval=5,
    )
    assert mounted
    assert "is on" in lab.ipmitool("ServVirt2", "chassis", "power", "status")
    assert _each(lab, "cat /cluster/before-reset") == dict.fromkeys(GUESTS, token)
    target = lab.cluster["storage"]["target_iqn"]
    assert target in _answer(lab, "ServVirt2", "iscsiadm -m session")
    cluster = lab.cluster["ocfs2"]["cluster"]
    assert "online" in _answer(lab, "ServVirt2", f"o2cb cluster-status {cluster}")
