"""Builds the lab domU image: the host's Debian kernel and a busybox initramfs.

The kernel is the uncompressed ``vmlinux`` taken out of ``/boot/vmlinuz-*`` (QEMU boots it
through its PVH note, several seconds faster under TCG than the xz bzImage). The initramfs holds
busybox-static, the virtio/ACPI-button modules of that kernel (with their dependencies) and the
guest programs of this folder: ``init``, the ``state`` CGI and the power-button action.
Both are cached in the run folder and rebuilt only when an input changes.
"""

import gzip
import hashlib
import io
import lzma
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# what the guest needs: disk, NIC, and the ACPI power button (xl shutdown)
MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "button", "evdev")
XZ_MAGIC = b"\xfd7zXZ\x00"


class GuestBuildError(RuntimeError):
    """The guest image cannot be built on this machine (the message says why)."""


@dataclass(frozen=True)
class GuestImage:
    """Paths to a built guest: boot ``kernel`` with ``ramdisk`` as initrd."""

    kernel: Path
    ramdisk: Path
    release: str


def kernel_release(boot=Path("/boot"), modules=Path("/lib/modules")):
    """Newest kernel that has both a /boot/vmlinuz and its modules installed."""
    releases = sorted(
        p.name.removeprefix("vmlinuz-")
        for p in boot.glob("vmlinuz-*")
        if (modules / p.name.removeprefix("vmlinuz-") / "modules.dep").is_file()
    )
    if not releases:
        raise GuestBuildError(f"no /boot/vmlinuz-* with modules in {modules} (linux-image-amd64)")
    return releases[-1]


def extract_vmlinux(bzimage):
    """The uncompressed kernel inside a bzImage whose payload is xz (Debian's default)."""
    start = bzimage.find(XZ_MAGIC)
    if start < 0:
        raise GuestBuildError("the kernel image has no xz payload; cannot extract vmlinux")
    return lzma.LZMADecompressor().decompress(bzimage[start:])


def module_order(modules_dep, wanted):
    """Module paths (relative to the modules dir) to insmod, dependencies first.

    ``modules_dep`` is the text of ``modules.dep``; ``wanted`` are module names as ``modprobe``
    takes them.
    """
    deps = {}
    for line in modules_dep.splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {_module_name(path): path for path in deps}
    order = []

    def visit(path):
        if path in order:
            return
        for dep in reversed(deps[path]):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise GuestBuildError(f"kernel module {name!r} not found in modules.dep")
        visit(by_name[name])
    return order


def _module_name(path):
    return Path(path).name.split(".ko")[0].replace("-", "_")


def _module_bytes(path):
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if not path.name.endswith(".ko"):
        raise GuestBuildError(f"cannot unpack kernel module {path} (only .ko and .ko.xz)")
    return data


class Cpio:
    """A gzip'ed cpio archive in the kernel's "newc" format, built in memory."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 0

    def _entry(self, name, mode, data=b""):
        self.ino += 1
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf.write(header + name.encode() + b"\0")
        self.buf.write(b"\0" * (-self.buf.tell() % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name):
        self._entry(name, 0o040755)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def gz(self):
        self._entry("TRAILER!!!", 0)
        return gzip.compress(self.buf.getvalue(), compresslevel=6, mtime=0)


def initramfs(release, busybox, modules_dir):
    """The initramfs (gzip'ed newc cpio) as bytes."""
    order = module_order((modules_dir / "modules.dep").read_text(), MODULES)
    arc = Cpio()
    for d in ("bin", "dev", "etc", "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules", "proc"):
        arc.dir(d)
    for d in ("run", "sys", "tmp", "www", "www/cgi-bin"):
        arc.dir(d)
    arc.file("bin/busybox", busybox.read_bytes(), 0o755)
    arc.file("init", (HERE / "init").read_bytes(), 0o755)
    arc.file("www/cgi-bin/state", (HERE / "cgi-bin" / "state").read_bytes(), 0o755)
    arc.file("etc/acpi/PWRF/00000080", (HERE / "power-button").read_bytes(), 0o755)
    names = [Path(p).name.removesuffix(".xz") for p in order]
    for path, name in zip(order, names, strict=True):
        arc.file(f"lib/modules/{name}", _module_bytes(modules_dir / path))
    arc.file("etc/modules", "".join(f"{n}\n" for n in names).encode())
    arc.file("etc/release", f"{release}\n".encode())
    return arc.gz()


def _inputs_digest(*paths):
    h = hashlib.sha256()
    for path in paths:
        st = path.stat()
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and path.suffix != ".pyc":
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _write_atomic(path, data):
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def build(out_dir, busybox=None, boot=Path("/boot"), modules=Path("/lib/modules")):
    """Build (or reuse) the guest kernel and initramfs in ``out_dir``; returns a GuestImage."""
    busybox = Path(busybox or shutil.which("busybox") or "/bin/busybox")
    if not busybox.is_file():
        raise GuestBuildError(f"busybox not found at {busybox} (apt busybox-static)")
    release = kernel_release(boot, modules)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bzimage = boot / f"vmlinuz-{release}"
    kernel = out_dir / f"vmlinux-{release}"
    if not kernel.exists() or kernel.stat().st_mtime_ns < bzimage.stat().st_mtime_ns:
        _write_atomic(kernel, extract_vmlinux(bzimage.read_bytes()))
    modules_dir = modules / release
    digest = _inputs_digest(busybox, modules_dir / "modules.dep")
    ramdisk = out_dir / f"initramfs-{release}-{digest}.cpio.gz"
    if not ramdisk.exists():
        for old in out_dir.glob(f"initramfs-{release}-*.cpio.gz"):
            old.unlink()
        _write_atomic(ramdisk, initramfs(release, busybox, modules_dir))
    return GuestImage(kernel=kernel, ramdisk=ramdisk, release=release)
