"""The lab's BMCs: one OpenIPMI ``ipmi_sim`` per VM host, reached with standard IPMI over LAN.

Each BMC runs in its own network namespace on the segment (the ``bmc-<host>`` endpoint of
:class:`lab.cluster.Lab`) at the pillar's ``bmc.address``, so it survives its host's power-off
as a real BMC does. Its configuration comes from the templates in ``lab/bmc/`` with the pillar's
user name and the password the lab master's configuration holds (``xenha_bmc``, a generated lab
secret: :meth:`lab.cluster.Lab.bmc`). ``chassis power off`` runs
:meth:`lab.hosts.Host.power_off` (every process of the host dies: salt-minion, sshd, QEMU
guests; its link goes down), ``chassis power on`` boots the host again (its services come back,
its guests do not) and ``chassis power status`` reports it.

ipmitool needs ``-C 3`` (cipher suite 3) with this ipmi_sim; without it every call stalls ~10 s.

Command line (``start`` for a lab that is up; ``chassis`` is ipmi_sim's chassis_control
program, also handy by hand)::

    python -m lab.bmc [--run-dir D --prefix P --pillar F] start
    python -m lab.bmc [...] chassis HOST get power
    python -m lab.bmc [...] chassis HOST set power 0|1
"""

import argparse
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from string import Template

from lab import DEFAULT_RUN_DIR, REPO
from lab.hosts import LabError, wait_for

TEMPLATES = Path(__file__).resolve().with_name("bmc")
IPMI_PORT = 623


def render(name, **values):
    """A template of lab/bmc/ with ``values`` filled in (every placeholder must be given)."""
    return Template((TEMPLATES / name).read_text()).substitute(values)


def ipmitool_argv(bmc, *command):
    """``ipmitool`` against a ``bmc`` (address, username, cipher_suite), the password read from
    the environment (``IPMI_PASSWORD``: see ``ipmitool_env``), never from the command line."""
    return [
        "ipmitool", "-I", bmc.get("interface", "lanplus"), "-C", str(bmc.get("cipher_suite", 3)),
        "-H", bmc["address"], "-U", bmc["username"], "-E", *command,
    ]  # fmt: skip


def ipmitool_env(bmc):
    """The environment ``ipmitool -E`` reads the password from."""
    return {"IPMI_PASSWORD": bmc["password"]}


class BMC:
    """The BMC of lab host ``host_id`` (``lab``: a :class:`lab.cluster.Lab`)."""

    def __init__(self, lab, host_id, spec):
        self.lab = lab
        self.host_id = host_id
        self.spec = spec
        self.endpoint = lab.bmcs[host_id]
        self.dir = lab.run_dir / "bmc" / host_id
        self.proc = None

    def write_config(self):
        """lan.conf, bmc.emu and the chassis_control program, from the templates."""
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        control = self.dir / "chassis-control"
        control.write_text(
            render(
                "chassis-control",
                host=self.host_id,
                repo=REPO,
                python=sys.executable,
                run_dir=self.lab.run_dir,
                prefix=self.lab.segment.prefix,
                pillar=self.lab.cluster_file.resolve(),
            )
        )
        control.chmod(0o755)
        (self.dir / "lan.conf").write_text(
            render(
                "lan.conf",
                host=self.host_id,
                address=self.spec["address"],
                guid=uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.host_id}.bmc.xenha.lab").hex,
                chassis_control=control,
                username=self.spec["username"],
                password=self.spec["password"],
            )
        )
        (self.dir / "bmc.emu").write_text(render("bmc.emu", host=self.host_id))
        (self.dir / "lan.conf").chmod(0o600)

    def start(self, timeout=30):
        """Start ipmi_sim in the BMC's namespace and wait until it answers IPMI."""
        if shutil.which("ipmi_sim") is None:
            raise LabError("ipmi_sim not found (apt openipmi)")
        self.write_config()
        log = open(self.dir / "ipmi_sim.log", "ab")  # noqa: SIM115 -- the child keeps it
        with log:
            self.proc = self.endpoint.spawn(
                [
                    "ipmi_sim", "-n",
                    "-c", str(self.dir / "lan.conf"),
                    "-f", str(self.dir / "bmc.emu"),
                    "-s", str(self.dir / "state"),
                ],
                stdout=log,
            )  # fmt: skip
        wait_for(
            lambda: self.power_status(timeout=5) is not None or self.proc.poll() is not None,
            timeout,
            f"the BMC of {self.host_id} at {self.spec['address']}",
            interval=0.3,
        )
        if self.proc.poll() is not None:
            tail = (self.dir / "ipmi_sim.log").read_text()[-1000:]
            raise LabError(
                f"ipmi_sim for {self.host_id} exited with {self.proc.returncode}: {tail}"
            )

    def ipmitool(self, *command, timeout=20):
        """Run ipmitool against this BMC from the lab's client endpoint (standard IPMI/LAN)."""
        argv, env = ipmitool_argv(self.spec, *command), ipmitool_env(self.spec)
        return self.lab.cli.run(argv, check=False, timeout=timeout, env=env)

    def power_status(self, timeout=20):
        """True/False from ``chassis power status``; None when the BMC does not answer."""
        try:
            out = self.ipmitool("chassis", "power", "status", timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if out.returncode != 0:
            return None
        return out.stdout.strip().endswith("on")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_all(lab):
    """Start the BMC of every host whose pillar entry has ``bmc``; returns {host id: BMC}."""
    bmcs = {}
    for host_id, spec in lab.pillar()["hosts"].items():
        if spec.get("bmc"):
            bmcs[host_id] = BMC(lab, host_id, lab.bmc(host_id))
            bmcs[host_id].start()
    return bmcs


# --- chassis_control program (run by ipmi_sim) -------------------------------------------------


def chassis(lab, host_id, request):
    """Carry out one ipmi_sim chassis request (``get power``, ``set power 0|1``, ``set reset 1``).

    Returns the text ipmi_sim expects on stdout. Power on returns at once, as a BMC does, and
    boots the host in the background (its minion takes seconds to start).
    """
    host = lab.host(host_id)
    with open(lab.run_dir / "bmc" / host_id / "chassis.log", "a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {' '.join(request)}\n")
    if request == ["get", "power"]:
        return f"power:{1 if host.is_powered() else 0}\n"
    if request == ["set", "power", "0"]:
        host.power_off()
        return ""
    if request in (["set", "power", "1"], ["set", "reset", "1"]):
        if request[1] == "reset":
            host.power_off()
        if not host.is_powered():
            _detach(lab, "power-on", host_id)
        return ""
    if request[:1] == ["set"]:
        return ""  # boot device and the like: nothing to do in the lab
    raise LabError(f"chassis {host_id}: unsupported request {' '.join(request)!r}")


def power_on(lab, host_id):
    """Boot a lab host the way the lab built it (its VM-host toolstack set-up included)."""
    from lab import failover, toolstack  # noqa: PLC0415 -- only the power-on path needs them

    toolstack.attach(lab)
    lab.sanlock.attach()  # a VM host's sanlock daemon, which joins the lockspace
    failover.attach(lab)  # the master's event recorder, if this lab has failover switched on
    lab.host(host_id).power_on()


def _detach(lab, command, host_id):
    log = lab.run_dir / "bmc" / host_id / "power-on.log"
    with open(log, "ab") as out:
        subprocess.Popen(
            [
                sys.executable, "-m", "lab.bmc", "--run-dir", str(lab.run_dir),
                "--prefix", lab.segment.prefix, "--pillar", str(lab.cluster_file), command, host_id,
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )  # fmt: skip


def main(argv=None):
    from lab.cluster import LAB_PILLAR, Lab  # noqa: PLC0415 -- keeps `import lab.bmc` light

    parser = argparse.ArgumentParser(prog="python -m lab.bmc", description=__doc__)
    parser.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR))
    parser.add_argument("--prefix", default="xha")
    parser.add_argument("--pillar", default=str(LAB_PILLAR))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start the BMCs of a lab that is up (they keep running)")
    p = sub.add_parser("chassis", help="ipmi_sim's chassis_control: HOST get|set ...")
    p.add_argument("host")
    p.add_argument("request", nargs="+")
    sub.add_parser("power-on", help="boot HOST (what chassis power on starts)").add_argument("host")
    args = parser.parse_args(argv)
    lab = Lab(args.run_dir, pillar=args.pillar, prefix=args.prefix)
    try:
        if args.command == "start":
            for host_id, b in start_all(lab).items():
                print(f"{host_id}: BMC at {b.spec['address']}")
        elif args.command == "chassis":
            sys.stdout.write(chassis(lab, args.host, args.request))
        else:
            power_on(lab, args.host)
    except LabError as err:
        sys.exit(f"lab.bmc {args.command}: {err}")


if __name__ == "__main__":
    main()
