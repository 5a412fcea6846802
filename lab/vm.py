"""The lab's domUs: their disks on ServDB's iSCSI target and their xl configs in the shared folder.

Each domU gets its own iSCSI target (one LUN, CHAP with the pillar's ``xenha:storage:chap``)
on a tgtd of its own inside the storage host (control port 2, portal ``<ip>:3261``), so the
product's storage formula, which owns ServDB's main tgtd and rewrites its targets, never touches
the guests' disks. The domU's config is an xl-style file in the shared folder that stands in for
the OCFS2 mount (``<run>/shared/domus/<name>.cfg``): name, memory, vcpus, the lab kernel and
initramfs (:mod:`lab.guest`), its NIC (fixed MAC on the VM host's bridge) and its IP on the
kernel command line. :func:`guest_state` reads the guest's HTTP service from the lab's client.
Command line (a lab that is up): ``python -m lab.vm define web01 10.99.0.100``, ``... state IP``.
"""

import json
import sys

from lab import guest
from lab.hosts import LabError, wait_for

DISK_PORT = 3261
# tgtd's management socket is /run/tgtd/socket.<n> inside the host; the lab's main tgtd has 1
DISK_CONTROL_PORT = 2
DISK_IQN = "iqn.2025-01.lab.xenha:domu"


def mac_for(ip):
    """A fixed locally administered MAC from the guest's IPv4 address (52:54:00 + last 3 bytes)."""
    octets = [int(o) for o in ip.split(".")]
    return "52:54:00:" + ":".join(f"{o:02x}" for o in octets[1:])


def render_cfg(name, ip, prefixlen, image, disk_url, *, memory=128, vcpus=1, bridge="br0"):
    """The xl config of a lab domU (xl syntax; the disk target is an iSCSI URL)."""
    return (
        "# xenha lab domU: a QEMU/TCG guest run by the lab toolstack (lab/toolstack)\n"
        f'name = "{name}"\n'
        'type = "pvh"\n'
        f"memory = {memory}\n"
        f"vcpus = {vcpus}\n"
        f'kernel = "{image.kernel}"\n'
        f'ramdisk = "{image.ramdisk}"\n'
        f'extra = "labip={ip}/{prefixlen} labhost={name}"\n'
        f"vif = [ 'mac={mac_for(ip)}, bridge={bridge}' ]\n"
        f"disk = [ 'format=raw, vdev=xvda, access=rw, target={disk_url}' ]\n"
    )


class DomUs:
    """DomU provisioning for a :class:`lab.cluster.Lab` (storage host from the pillar)."""

    def __init__(self, lab):
        self.lab = lab
        pillar = lab.pillar()
        storage = [mid for mid, h in pillar["hosts"].items() if h.get("role") == "storage"]
        if not storage:
            raise LabError(f"{lab.cluster_file}: no host with role storage for the domU disks")
        self.db = lab.hosts[storage[0]]
        self.chap = (pillar.get("storage") or {}).get("chap")
        self.shared = lab.run_dir / "shared" / "domus"
        self.disks = lab.run_dir / "disks"

    def image(self):
        """The guest kernel and initramfs (built once, cached in the run folder)."""
        return guest.build(self.lab.run_dir / "guest")

    def _tgtadm(self, *args, check=True):
        argv = ["tgtadm", "-C", str(DISK_CONTROL_PORT), "--lld", "iscsi", *args]
        return self.db.run(argv, check=check, timeout=30)

    def ensure_store(self):
        """Start the domU disks' tgtd in the storage host unless it runs."""
        if self._tgtadm("--mode", "system", "--op", "show", check=False).returncode == 0:
            return
        portal = f"portal={self.db.ip}:{DISK_PORT}"
        self.db.run(["tgtd", "-C", str(DISK_CONTROL_PORT), "--iscsi", portal], timeout=30)
        wait_for(
            lambda: self._tgtadm("--mode", "system", "--op", "show", check=False).returncode == 0,
            10,
            f"tgtd for domU disks in {self.db.name}",
        )
        if self.chap:
            self._tgtadm(
                "--mode", "account", "--op", "new",
                "--user", self.chap["user"], "--password", self.chap["secret"],
            )  # fmt: skip

    def _targets(self):
        out = self._tgtadm("--mode", "target", "--op", "show").stdout
        return {
            line.split(": ", 1)[1].strip(): int(line.split()[1].rstrip(":"))
            for line in out.splitlines()
            if line.startswith("Target ")
        }

    def define(self, name, ip, memory=128, disk_mib=64):
        """Give domU ``name`` a disk target and write its config; returns the config's path."""
        self.ensure_store()
        iqn = f"{DISK_IQN}.{name.lower()}"
        targets = self._targets()
        if iqn not in targets:
            tid = max(targets.values(), default=0) + 1
            image = self.disks / f"{name}.img"
            self.disks.mkdir(parents=True, exist_ok=True)
            with open(image, "wb") as fh:
                fh.truncate(disk_mib << 20)
            self._tgtadm("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", iqn)
            self._tgtadm(
                "--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", "1",
                "--backing-store", str(image),
            )  # fmt: skip
            subnet = f"{self.lab.segment.subnet}.0/{self.lab.segment.prefixlen}"
            self._tgtadm(
                "--mode", "target", "--op", "bind", "--tid", str(tid),
                "--initiator-address", subnet,
            )  # fmt: skip
            if self.chap:
                self._tgtadm(
                    "--mode", "account", "--op", "bind", "--tid", str(tid),
                    "--user", self.chap["user"],
                )  # fmt: skip
        cred = f"{self.chap['user']}%{self.chap['secret']}@" if self.chap else ""
        url = f"iscsi://{cred}{self.db.ip}:{DISK_PORT}/{iqn}/1"
        cfg = self.shared / f"{name}.cfg"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(
            render_cfg(name, ip, self.lab.segment.prefixlen, self.image(), url, memory=memory)
        )
        return cfg

    def disk_seq(self, name):
        """The disk writer's counter as stored in sector 0 of the domU's disk image."""
        head = (self.disks / f"{name}.img").read_bytes()[:32]
        text = head.split(b"\n", 1)[0].decode(errors="replace")
        return int(text[4:]) if text.startswith("seq=") else None


STATE_PROBE = """
import json, sys, urllib.request
url, timeout = f"http://{sys.argv[1]}/cgi-bin/state", float(sys.argv[2])
try:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        print(r.read().decode())
except OSError as err:
    print(json.dumps({"error": str(err)}))
"""


def guest_state(endpoint, ip, timeout=3.0):
    """The guest's ``/cgi-bin/state`` (bootid, uptime, counter, disk_seq) fetched from
    ``endpoint`` (e.g. the lab's client); ``{"error": ...}`` when it does not answer."""
    out = endpoint.run([sys.executable, "-c", STATE_PROBE, ip, str(timeout)], timeout=timeout + 30)
    return json.loads(out.stdout)


def wait_guest(endpoint, ip, timeout=90.0):
    """Wait until the guest at ``ip`` answers HTTP; returns its state."""
    return wait_for(
        lambda: (s := guest_state(endpoint, ip)) and "error" not in s and s,
        timeout,
        f"the guest at {ip} to answer HTTP",
        interval=0.5,
    )


def main(argv=None):
    """``python -m lab.vm define NAME IP`` / ``python -m lab.vm state IP`` on a lab that is up."""
    import argparse  # noqa: PLC0415 -- command line only

    from lab import DEFAULT_RUN_DIR  # noqa: PLC0415
    from lab.cluster import LAB_PILLAR, Lab  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m lab.vm", description=__doc__)
    parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR))
    parser.add_argument("--prefix", default="xha")
    parser.add_argument("--pillar", default=str(LAB_PILLAR))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("define", help="give domU NAME a disk and an xl config; print its path")
    p.add_argument("name")
    p.add_argument("ip", help="its fixed address on the lab segment, e.g. 10.99.0.100")
    p.add_argument("--memory", type=int, default=128, help="MiB (default 128)")
    sub.add_parser("state", help="the guest's /cgi-bin/state, from the client").add_argument("ip")
    args = parser.parse_args(argv)
    lab = Lab(args.run_dir, pillar=args.pillar, prefix=args.prefix)
    try:
        if args.command == "define":
            print(DomUs(lab).define(args.name, args.ip, memory=args.memory))
        else:
            print(json.dumps(guest_state(lab.cli, args.ip)))
    except LabError as err:
        sys.exit(f"lab.vm {args.command}: {err}")


if __name__ == "__main__":
    main()
