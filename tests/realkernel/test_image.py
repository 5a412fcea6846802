"""The real-kernel tier's image cache and overlays, and its guests' QEMU and BMC plumbing
(no debootstrap, no boot: qemu-img on a small file stands in for the base image)."""

import json
import shutil
import subprocess

import pytest

from lab import RUN_ROOT
from lab.hosts import LabError
from lab.realkernel import cluster, image

pytestmark = pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img (qemu-utils)")


def test_key_is_stable_and_follows_every_input():
    key = image.input_key()
    assert key == image.input_key()
    assert image.input_key(packages=(*image.PACKAGES, "strace")) != key
    assert image.input_key(salt_version="3008.3") != key
    # the order of the package list is not an input
    assert image.input_key(packages=tuple(reversed(image.PACKAGES))) == key


def test_a_cached_image_is_reused_without_building(tmp_path):
    key = image.input_key()
    (tmp_path / key).mkdir()
    manifest = {"kernel": "vmlinux-6.1", "initrd": "initrd.img-6.1"}
    (tmp_path / key / "manifest.json").write_text(json.dumps(manifest))
    got = image.build(tmp_path, log=pytest.fail)
    assert got.root_img == tmp_path / key / "root.img"
    assert got.kernel == tmp_path / key / "vmlinux-6.1"
    assert got.key == key


def _base(tmp_path, name):
    root = tmp_path / name
    root.write_bytes(b"B" * 65536)
    return image.Image(root, tmp_path / "k", tmp_path / "i", name)


def test_overlay_writes_never_reach_the_base(tmp_path):
    base = _base(tmp_path, "root.img")
    disk = image.overlay(base, tmp_path / "host" / "disk.qcow2")
    io = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 4k", str(disk)]
    subprocess.run(io, check=True, capture_output=True)
    read = ["qemu-io", "-f", "qcow2", "-c", "read -P 0x41 0 4k", str(disk)]
    out = subprocess.run(read, check=True, capture_output=True, text=True).stdout
    assert "Pattern verification failed" not in out
    assert base.root_img.read_bytes() == b"B" * 65536


def test_overlay_is_kept_for_its_base_and_made_anew_for_another(tmp_path):
    disk = tmp_path / "disk.qcow2"
    first = _base(tmp_path, "a.img")
    image.overlay(first, disk)
    subprocess.run(["qemu-io", "-c", "write 0 4k", str(disk)], check=True, capture_output=True)
    size = disk.stat().st_size
    image.overlay(first, disk)
    assert disk.stat().st_size == size  # kept, with the host's writes
    image.overlay(_base(tmp_path, "b.img"), disk)
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(disk)], check=True, capture_output=True, text=True
    )
    assert json.loads(info.stdout)["full-backing-filename"] == str(tmp_path / "b.img")


def test_guest_qemu_gets_its_identity_and_overlay(tmp_path):
    lab = cluster.RealKernelLab(RUN_ROOT / "test-xrku", prefix="xrku")  # nothing is made
    host = lab.guests["ServVirt2"]
    argv = host.qemu_argv(_base(tmp_path, "root.img"))
    cmdline = argv[argv.index("-append") + 1].split()
    assert {"xenha.host=ServVirt2", "xenha.ip=10.99.0.11/24", "xenha.master=10.99.0.2"} <= set(
        cmdline
    )
    assert f"file={host.disk},format=qcow2,if=virtio,cache=unsafe" in argv
    assert "virtio-net-pci,netdev=n0,mac=52:54:00:63:00:0b" in argv
    assert sorted(lab.guests) == ["ServVirt1", "ServVirt2"]
    assert not host.is_powered()


def test_chassis_refuses_a_host_that_is_no_guest(tmp_path):
    lab = cluster.RealKernelLab(RUN_ROOT / "test-xrku", prefix="xrku")  # nothing is made
    with pytest.raises(LabError, match="'ServDB' is not a real-kernel VM host"):
        cluster.chassis(lab, "ServDB", ["get", "power"])
