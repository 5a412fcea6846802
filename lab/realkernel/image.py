"""Builds the real-kernel hosts' base image: a Debian 12 root file system with salt inside.

``debootstrap`` (minbase plus :data:`PACKAGES`) makes the root; salt goes into a venv at
``/opt/salt`` from wheels built on this machine (the root has no compiler, and salt's
``timelib`` ships no wheel), so the machine's CPython must be 3.11 like Debian 12's. The guest
files of ``guest/`` (identity from the kernel command line, the salt-minion unit) are added, the
root's own kernel is unpacked to an uncompressed ``vmlinux`` (QEMU boots it through its PVH note,
seconds faster under TCG than the xz bzImage), and ``mkfs.ext4 -d`` turns the root into
``root.img``. Everything is cached under ``<cache>/<key>/``, where the key hashes the package
list, the suite, the salt version and this builder's source: a build runs only when one of them
changes. Each host boots a qcow2 overlay of ``root.img`` (:func:`overlay`), so the base stays
clean. Command line: ``python -m lab.realkernel.image [--cache DIR]`` builds and prints the paths.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab import RUN_ROOT
from lab.guest import extract_vmlinux

HERE = Path(__file__).resolve().parent
GUEST = HERE / "guest"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SALT_VERSION = "3008.4"
PACKAGES = (
    "systemd-sysv", "udev", "kmod", "iproute2", "iputils-ping", "procps", "linux-image-amd64",
    "initramfs-tools", "open-iscsi", "ocfs2-tools", "python3", "python3-venv", "chrony",
    "sanlock", "python3-sanlock",
)  # fmt: skip
ROOT_SIZE = "3G"
DEFAULT_CACHE = RUN_ROOT / "realkernel" / "image"
# a clean environment for commands inside the root: the machine's pip settings must not leak in
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
# timers that would wake up a TCG guest for nothing (no mirror to reach, nothing to trim)
MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer")


class ImageBuildError(RuntimeError):
    """The image cannot be built (the message names the step or command and why)."""


@dataclass(frozen=True)
class Image:
    """A built base image: ``root_img`` (raw ext4) booted as ``kernel`` with ``initrd``."""

    root_img: Path
    kernel: Path
    initrd: Path
    key: str


def input_key(packages=PACKAGES, salt_version=SALT_VERSION):
    """The cache key: a digest of everything that goes into the image."""
    h = hashlib.sha256()
    spec = {"suite": SUITE, "mirror": MIRROR, "packages": sorted(packages), "salt": salt_version}
    h.update(json.dumps(spec, sort_keys=True).encode())
    for path in [Path(__file__).resolve(), *sorted(GUEST.iterdir())]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _run(argv, what, timeout=1200, env=None):
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise ImageBuildError(f"{what}: {argv[0]} timed out after {timeout} s") from err
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:]
        raise ImageBuildError(f"{what}: {' '.join(argv[:3])} ...: exit {proc.returncode}: {tail}")
    return proc


def _unmount_under(path):
    """Unmount whatever a broken build left mounted under ``path`` (debootstrap mounts /proc
    and /sys in the root), so that removing the folder never reaches into them."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mnt in sorted((m for m in mounts if Path(m).is_relative_to(path)), reverse=True):
        subprocess.run(["umount", "--lazy", mnt], capture_output=True, check=False)


def _chroot(root, *argv, what):
    return _run(["chroot", str(root), *argv], what, env=CHROOT_ENV)


def debootstrap(root, debs, packages=PACKAGES):
    """Debian ``SUITE`` into ``root``; downloaded .debs stay in ``debs`` for the next build."""
    if not shutil.which("debootstrap"):
        raise ImageBuildError("debootstrap not found (apt-get install debootstrap)")
    debs.mkdir(parents=True, exist_ok=True)
    argv = [
        "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
        f"--cache-dir={debs}", SUITE, str(root), MIRROR,
    ]  # fmt: skip
    _run(argv, "debootstrap")


def salt_wheels(out):
    """Wheels of salt and its dependencies for CPython 3.11, built once per salt version."""
    if (out / ".complete").exists():
        return out
    if sys.version_info[:2] != (3, 11):
        raise ImageBuildError(
            f"salt wheels for Debian 12 need CPython 3.11, this is {sys.version.split()[0]}"
        )
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(out), f"salt=={SALT_VERSION}"]
    _run(argv, "building the salt wheels")
    (out / ".complete").touch()
    return out


def install_salt(root, wheels):
    """A venv at /opt/salt (seeing Debian's python3-sanlock) with salt from ``wheels``."""
    _chroot(root, "python3", "-m", "venv", "--system-site-packages", "/opt/salt", what="salt venv")
    shutil.copytree(wheels, root / "tmp" / "wheels")
    _chroot(
        root, "/opt/salt/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/wheels",
        f"salt=={SALT_VERSION}", what="installing salt",
    )  # fmt: skip
    shutil.rmtree(root / "tmp" / "wheels")
    for tool in ("salt-call", "salt-minion"):
        (root / "usr" / "local" / "bin" / tool).symlink_to(f"/opt/salt/bin/{tool}")


def install_guest_files(root):
    """The lab's units and setup script, enabled; fstab; a console root login without password
    (a lab guest's serial console, for debugging); no apt sources."""
    units = root / "etc" / "systemd" / "system"
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    shutil.copy2(GUEST / "xenha-lab-setup", root / "usr" / "local" / "sbin" / "xenha-lab-setup")
    for unit in ("xenha-lab-setup.service", "salt-minion.service"):
        shutil.copy2(GUEST / unit, units / unit)
        (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
    for unit in MASKED:
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    (root / "etc" / "fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    # each host's first boot makes its own machine id (the overlays share this file)
    (root / "etc" / "machine-id").write_text("")
    _chroot(root, "passwd", "-d", "root", what="console login")
    # no mirror is reachable from the lab segment: salt's first pkg state refreshes nothing
    (root / "etc" / "apt" / "sources.list").write_text("")
    for cache in (root / "var" / "cache" / "apt").glob("*.bin"):
        cache.unlink()


def boot_files(root, out):
    """Copy the root's kernel (unpacked to vmlinux) and initrd to ``out``; returns both paths."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageBuildError(f"{root}/boot has no vmlinuz-* (linux-image-amd64 not installed?)")
    release = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{release}"
    if not initrd.exists():
        raise ImageBuildError(f"{initrd} missing (initramfs-tools did not run)")
    kernel = out / f"vmlinux-{release}"
    kernel.write_bytes(extract_vmlinux(kernels[-1].read_bytes()))
    shutil.copy2(initrd, out / initrd.name)
    return kernel, out / initrd.name


def build(cache=DEFAULT_CACHE, log=print):
    """Build (or reuse) the base image under ``cache``; returns an :class:`Image`."""
    cache = Path(cache)
    key = input_key()
    final = cache / key
    manifest = final / "manifest.json"
    if manifest.exists():
        info = json.loads(manifest.read_text())
        return Image(final / "root.img", final / info["kernel"], final / info["initrd"], key)
    if os.geteuid() != 0:
        raise ImageBuildError("building the image needs root (debootstrap, chroot)")
    work = cache / f".build-{key}"
    _unmount_under(work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root = work / "root"
    took = {}

    def step(name, fn, *args):
        log(f"realkernel image {key}: {name} ...")
        t0 = time.monotonic()
        value = fn(*args)
        took[name] = round(time.monotonic() - t0, 1)
        return value

    step("debootstrap", debootstrap, root, cache / "debs")
    wheels = step("salt wheels", salt_wheels, cache / f"wheels-salt-{SALT_VERSION}")
    step("salt", install_salt, root, wheels)
    step("guest files", install_guest_files, root)
    kernel, initrd = step("kernel", boot_files, root, work)
    step("mkfs", _run, ["mkfs.ext4", "-q", "-L", "xenha-root", "-d", str(root),
                        str(work / "root.img"), ROOT_SIZE], "mkfs.ext4 -d")  # fmt: skip
    shutil.rmtree(root)
    info = {"key": key, "kernel": kernel.name, "initrd": initrd.name, "salt": SALT_VERSION,
            "packages": list(PACKAGES), "seconds": took}  # fmt: skip
    (work / "manifest.json").write_text(json.dumps(info, indent=1) + "\n")
    work.rename(final)
    for old in cache.iterdir():
        if old.is_dir() and len(old.name) == len(key) and old.name != key and "-" not in old.name:
            shutil.rmtree(old)
    return Image(final / "root.img", final / kernel.name, final / initrd.name, key)


def overlay(image, path):
    """A qcow2 at ``path`` whose backing file is the base ``root.img`` (made anew if it was
    made over another base); writes of the host that boots it never reach the base."""
    path = Path(path)
    if path.exists():
        info = json.loads(
            _run(["qemu-img", "info", "--output=json", str(path)], "qemu-img info").stdout
        )
        if info.get("full-backing-filename") == str(image.root_img):
            return path
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
            "-b", str(image.root_img), str(path)]  # fmt: skip
    _run(argv, "qemu-img create overlay")
    return path


def main(argv=None):
    """``python -m lab.realkernel.image [--cache DIR]``: build (or reuse), print the paths."""
    import argparse  # noqa: PLC0415 -- command line only

    parser = argparse.ArgumentParser(prog="python -m lab.realkernel.image", description=__doc__)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        image = build(args.cache)
    except ImageBuildError as err:
        sys.exit(f"realkernel image: {err}")
    print(json.dumps({k: str(v) for k, v in image.__dict__.items()}, indent=1))
    print(f"in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
