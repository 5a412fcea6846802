"""The real-kernel lab: ServVirt1 and ServVirt2 as QEMU/TCG guests on the lab segment.

The segment, the salt-master, ServDB (tgtd, chronyd), the client and the BMC endpoints are
those of :class:`lab.cluster.Lab`. Each VM host is a :class:`GuestHost` instead: its network
namespace ``<prefix>-<name>`` holds a bridge ``br0`` joining its segment port ``eth0`` and a
tap ``tap0``, without an address; QEMU runs there and the guest behind ``tap0`` carries the
host's IP. The guest boots a copy-on-write overlay of the base image
(:mod:`lab.realkernel.image`) with its name, IP and master on the kernel command line, and its
salt-minion talks to the lab's master, which accepts its key. Its power is its ipmi_sim BMC:
``chassis power on`` starts its QEMU, ``power off`` kills it (a real fence: every process and
the guest kernel die at once).

Command line (as root)::

    python -m lab.realkernel.cluster [--run-dir D --prefix P] up | down
    python -m lab.realkernel.cluster [...] chassis HOST get|set ...   (ipmi_sim's program)
"""

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import yaml

from lab import REPO, RUN_ROOT
from lab.bmc import BMC, ipmitool_argv, ipmitool_env
from lab.cluster import MASTER_IP, Lab, _write_yaml
from lab.hosts import Endpoint, LabError, identity, sh, wait_for
from lab.realkernel import image as base_image
from lab.vm import mac_for

HERE = Path(__file__).resolve().parent
PILLAR = HERE / "pillar" / "xenha" / "cluster.yaml"
DEFAULT_RUN_DIR = RUN_ROOT / "realkernel" / "lab"
DEFAULT_PREFIX = "xrk"
# what each VM host gets applied: the storage stack (the top's xen, sanlock and leases come next)
VMHOST_MODS = ["xenha", "ntp", "hosts", "iscsi.initiator", "ocfs2"]
LUN_SIZE = "512M"
GUEST_MEMORY_MIB = 1024
CHASSIS_CONTROL = """#!/bin/sh
# Managed by the xenha lab (lab/realkernel/cluster.py): ipmi_sim's chassis_control for {host}.
cd "{repo}" && exec "{python}" -m lab.realkernel.cluster --run-dir "{run_dir}" \\
  --prefix "{prefix}" chassis "{host}" "$@"
"""


class GuestHost(Endpoint):
    """A VM host that is a QEMU/TCG guest booting the base image's Debian kernel."""

    uplink = "br0"

    def __init__(self, name, ip, role, segment, *, hostname, master_ip=MASTER_IP):
        super().__init__(name, ip, segment)
        self.role = role
        self.hostname = hostname
        self.master_ip = master_ip
        self.root = segment.run_dir / "hosts" / name
        self.etc = self.root / "etc"  # only the ssh host key, which the lab's secrets name
        self.disk = self.root / "disk.qcow2"
        self.pidfile = self.root / "qemu.pid"
        self.console = self.root / "console.log"

    def create(self):
        """The namespace with br0{eth0, tap0} (no address: the guest has it) and its folder."""
        super().create()
        me = ["ip", "-n", self.netns]
        sh([*me, "addr", "flush", "dev", "br0"])
        sh([*me, "tuntap", "add", "dev", "tap0", "mode", "tap"])
        sh([*me, "link", "set", "tap0", "master", "br0", "up"])
        (self.etc / "ssh").mkdir(parents=True)
        sh(["ssh-keygen", "-A", "-f", str(self.root)])

    def qemu_argv(self, image):
        """QEMU for this host: TCG, one vCPU, the overlay as /dev/vda, the NIC on ``tap0``."""
        cmdline = (
            f"root=/dev/vda rw console=ttyS0 xenha.host={self.hostname} "
            f"xenha.ip={self.ip}/{self.segment.prefixlen} xenha.master={self.master_ip}"
        )
        return [
            "qemu-system-x86_64", "-name", self.name, "-machine", "q35", "-accel", "tcg",
            "-m", str(GUEST_MEMORY_MIB), "-smp", "1", "-nographic", "-nodefaults",
            "-no-user-config", "-serial", f"file:{self.console}",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline,
            "-drive", f"file={self.disk},format=qcow2,if=virtio,cache=unsafe",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac_for(self.ip)}",
            # the host's entropy: without it getrandom() blocks chronyd and the minion at boot
            "-object", "rng-random,id=rng0,filename=/dev/urandom",
            "-device", "virtio-rng-pci,rng=rng0",
            "-pidfile", str(self.pidfile),
        ]  # fmt: skip

    def qemu_pid(self):
        """The PID of this host's running QEMU, or None."""
        try:
            pid = int(self.pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.disk).encode() in cmdline and identity(pid) else None

    def is_powered(self):
        return self.qemu_pid() is not None

    def power_on(self, image):
        """Boot the guest from ``image`` (its overlay kept across power cycles); returns at once."""
        if self.is_powered():
            return
        self.require()
        base_image.overlay(image, self.disk)
        self.set_link(True)
        with open(self.console, "ab") as log:
            proc = self.spawn(self.qemu_argv(image), stdout=log)
        wait_for(lambda: self.is_powered() or proc.poll() is not None, 30, f"{self.name}'s QEMU")
        if proc.poll() is not None:
            tail = self.console.read_text(errors="replace")[-1000:]
            raise LabError(f"{self.name}: QEMU exited with {proc.returncode}: {tail}")

    def power_off(self, timeout=10):
        """Pull the plug: the link goes down and QEMU is killed (the guest gets no warning)."""
        self.set_link(False)
        pid = self.qemu_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not identity(pid), timeout, f"{self.name}'s QEMU to die")


class RealBMC(BMC):
    """A lab BMC whose chassis control powers a :class:`GuestHost`."""

    def write_config(self):
        super().write_config()
        (self.dir / "chassis-control").write_text(
            CHASSIS_CONTROL.format(
                host=self.host_id,
                repo=REPO,
                python=sys.executable,
                run_dir=self.lab.run_dir,
                prefix=self.lab.segment.prefix,
            )
        )


class RealKernelLab(Lab):
    """:class:`lab.cluster.Lab` with its VM hosts as :class:`GuestHost` QEMU guests."""

    def __init__(self, run_dir=DEFAULT_RUN_DIR, prefix=DEFAULT_PREFIX, image_cache=None):
        super().__init__(run_dir, pillar=PILLAR, prefix=prefix)
        self.image_cache = Path(image_cache or base_image.DEFAULT_CACHE)
        for mid, spec in self.cluster["hosts"].items():
            if spec["role"] == "vmhost":
                guest = GuestHost(
                    mid, spec["ip"], "vmhost", self.segment, hostname=spec.get("hostname", mid)
                )
                self.segment.endpoints[mid] = self.hosts[mid] = guest
        self.guests = {m: h for m, h in self.hosts.items() if isinstance(h, GuestHost)}

    def image(self):
        """The base image (built on first use, then taken from the cache)."""
        return base_image.build(self.image_cache)

    def _write_master_config(self):
        """The lab's master configuration with this tier's pillar root before the lab's, and
        without the failover reactor and schedule: the guests run no heartbeat daemon yet, so
        the xenha formula's beacon reports its peer lost and the reactor fences both guests
        through their BMCs in the middle of the apply."""
        super()._write_master_config()
        path = self.master.etc / "salt" / "master"
        conf = yaml.safe_load(path.read_text())
        conf.pop("reactor", None)
        conf.pop("schedule", None)
        roots = conf["pillar_roots"]["base"]
        roots.insert(2, str(REPO / "lab" / "pillar"))  # lab_timeserver.sls
        _write_yaml(path, conf)

    def up(self, timeout=900):
        """Build the segment, master and ServDB, start the BMCs, power the guests on through
        them and wait until their minions answer (keys accepted by the master)."""
        self.image()  # built here, never inside a BMC's chassis control
        self.segment.create()
        self._write_secrets()
        self._write_master_config()
        netns_hosts = {m: h for m, h in self.hosts.items() if m not in self.guests}
        for mid, host in netns_hosts.items():
            self._write_minion_config(mid, host)
        self.master.power_on()
        for host in netns_hosts.values():
            host.power_on()
        storage = next(h for h in netns_hosts.values() if h.role == "storage")
        backing = self.cluster["storage"]["backing_device"]
        storage.run(["mkdir", "-p", str(Path(backing).parent)])
        storage.run(["truncate", "-s", LUN_SIZE, backing])
        for mid in self.guests:
            RealBMC(self, mid, self.bmc(mid)).start()
        for mid in self.guests:
            self.ipmitool(mid, "chassis", "power", "on")
        # a TCG guest's minion, on a loaded machine, answers its first jobs in tens of seconds
        self.wait_minions(timeout=timeout, ping_timeout=60)
        synced = self.salt(sorted(self.hosts), "saltutil.sync_all", timeout=timeout)
        missing = sorted(set(self.hosts) - set(synced))
        if missing:
            raise LabError(f"saltutil.sync_all: no answer from {', '.join(missing)}")

    def ipmitool(self, mid, *command, timeout=30):
        """ipmitool against host ``mid``'s BMC from the lab's client; LabError when it fails."""
        bmc = self.bmc(mid)
        proc = self.cli.run(
            ipmitool_argv(bmc, *command), check=False, timeout=timeout, env=ipmitool_env(bmc)
        )
        if proc.returncode != 0:
            raise LabError(f"ipmitool {' '.join(command)} for {mid}: {proc.stderr.strip()}")
        return proc.stdout

    def converge(self, timeout=1800):
        """``state.apply`` on ServDB (its top), then on the VM hosts (:data:`VMHOST_MODS`):
        the OCFS2 format host first, which formats the LUN, then the others, which only mount
        it (applied together, a peer would try to mount a LUN not formatted yet).
        Returns ({minion id: {state id: result}}, seconds per step)."""
        took = {}
        first = self.cluster["ocfs2"]["format_host"]
        steps = [
            ("storage", ["ServDB"], ()),
            ("format host", [first], VMHOST_MODS),
            ("other VM hosts", sorted(set(self.guests) - {first}), VMHOST_MODS),
        ]
        ret = {}
        for name, targets, mods in steps:
            t0 = time.monotonic()
            ret.update(self.apply(targets, *mods, timeout=timeout))
            took[name] = time.monotonic() - t0
        return ret, took


def chassis(lab, host_id, request):
    """One ipmi_sim chassis request for guest ``host_id``; returns what ipmi_sim reads."""
    host = lab.guests.get(host_id)
    if host is None:
        raise LabError(
            f"chassis: {host_id!r} is not a real-kernel VM host ({', '.join(lab.guests)})"
        )
    with open(lab.run_dir / "bmc" / host_id / "chassis.log", "a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {' '.join(request)}\n")
    if request == ["get", "power"]:
        return f"power:{1 if host.is_powered() else 0}\n"
    if request == ["set", "power", "0"]:
        host.power_off()
    elif request in (["set", "power", "1"], ["set", "reset", "1"]):
        if request[1] == "reset":
            host.power_off()
        host.power_on(lab.image())
    elif request[:1] != ["set"]:  # a boot device and the like: nothing to do
        raise LabError(f"chassis {host_id}: unsupported request {' '.join(request)!r}")
    return ""


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab.realkernel.cluster", description=__doc__)
    parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR))
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build the tier and boot the VM hosts through their BMCs")
    sub.add_parser("down", help="remove every process, namespace and file of the tier")
    p = sub.add_parser("chassis", help="ipmi_sim's chassis_control: HOST get|set ...")
    p.add_argument("host")
    p.add_argument("request", nargs="+")
    args = parser.parse_args(argv)
    lab = RealKernelLab(args.run_dir, prefix=args.prefix)
    try:
        if args.command == "up":
            t0 = time.monotonic()
            lab.up()
            print(f"real-kernel lab up in {time.monotonic() - t0:.0f} s, prefix {args.prefix}")
        elif args.command == "down":
            lab.down()
        else:
            sys.stdout.write(chassis(lab, args.host, args.request))
    except (LabError, base_image.ImageBuildError) as err:
        sys.exit(f"lab.realkernel {args.command}: {err}")


if __name__ == "__main__":
    main()
