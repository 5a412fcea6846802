"""The storage stack for real: open-iscsi, o2cb and OCFS2 in two Debian guests under TCG.

One module-scoped real-kernel lab (lab/realkernel): ServVirt1 and ServVirt2 boot the base
image's Debian kernel through their BMCs, their minions join the lab's master, and the
unchanged formulas log in to ServDB's tgtd with CHAP, bring o2cb online, format the LUN once
and mount it at /cluster on both; a file written on one host is read on the other.
"""

import os
import secrets
import shutil

import pytest

from lab import RUN_ROOT
from lab.cluster import state_changes
from lab.realkernel.cluster import RealKernelLab

pytestmark = [pytest.mark.root, pytest.mark.realkernel]

GUESTS = ["ServVirt1", "ServVirt2"]
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


def test_formulas_converge_a_real_ocfs2_cluster_over_iscsi(lab):
    ret, took = lab.converge()
    changed = state_changes(ret)  # raises, naming them, when states failed
    print("\nstate.apply: " + ", ".join(f"{step} {s:.0f} s" for step, s in took.items()))
    assert any("mount" in sid for sid in changed["ServVirt2"]), changed
    target = lab.cluster["storage"]["target_iqn"]
    for mid, out in _each(lab, "iscsiadm -m session").items():
        assert target in out, f"{mid}: no session to {target}: {out}"
    for mid, out in _each(lab, "o2cb cluster-status ocfs2").items():
        assert "online" in out.lower(), f"{mid}: o2cb: {out}"
    for mid, out in _each(lab, "findmnt -n -o FSTYPE,SOURCE /cluster").items():
        assert out.split()[0] == "ocfs2", f"{mid}: /cluster: {out!r}"
    token = secrets.token_hex(8)
    lab.salt(["ServVirt1"], "file.write", "/cluster/realkernel-check", token)
    got = lab.salt(["ServVirt2"], "file.read", "/cluster/realkernel-check")
    assert got["ServVirt2"].strip() == token
