"""The lab's stand-in for the Xen hypervisor and toolstack on the lab's VM hosts.

``lab/toolstack/xl`` is an ``xl`` command (verbs list, info, create, shutdown, destroy, pause,
unpause, domid, domname, migrate, migrate-receive) implemented over QEMU/TCG: each domU is a
QEMU process on the lab host, ``xl migrate`` a real QEMU live migration negotiated over ssh as
xl does it. It is not Xen; it exists so the product's unchanged Xen module has real guests to
drive in the lab.

:func:`attach` makes every VM host of a :class:`lab.cluster.Lab` boot with it: a first boot
service (``hostsetup.py``, run inside the host) writes the host's toolstack settings to
``/etc/xen/lab-toolstack.json`` and puts ``xl`` on ``/usr/local/sbin`` (a bind mount private to the
host), before salt-minion and sshd start. Root ssh between the VM hosts, the transport of
``xl migrate``, is the product's xen formula's (``Lab.converge``).
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
XL = HERE / "xl"
HOSTSETUP = HERE / "hostsetup.py"
MEMORY_MIB = 1024  # a lab VM host's "physical" memory (xl info) unless its memory_mib says
DOM0_MIB = 256


def setup_spec(lab, host_id, specs):
    """What hostsetup.py needs inside VM host ``host_id`` (JSON-able)."""
    spec = specs[host_id]
    host = lab.hosts[host_id]
    return {
        "xl": {
            "host": spec.get("hostname", host_id),
            "ip": spec["ip"],
            "state_dir": str(host.root / "xl"),
            "memory_mib": spec.get("memory_mib", MEMORY_MIB),
            "dom0_mib": DOM0_MIB,
            "initiator": spec.get("iqn") or f"iqn.2025-01.lab.xenha:{host_id.lower()}",
            "bridge": host.uplink,
        },
        "xl_path": str(XL),
    }


def attach(lab):
    """Make every VM host of ``lab`` run the lab toolstack from its next power-on (idempotent)."""
    specs = lab.cluster["hosts"]
    for host_id, spec in specs.items():
        if spec.get("role") != "vmhost":
            continue
        host = lab.hosts[host_id]
        host.services = [s for s in host.services if str(HOSTSETUP) not in s]
        argv = [sys.executable, str(HOSTSETUP), json.dumps(setup_spec(lab, host_id, specs))]
        host.services.insert(0, argv)


def xl(host, *args, check=True, timeout=120):
    """Run the lab ``xl`` inside lab host ``host``; a CompletedProcess."""
    return host.run(["xl", *args], check=check, timeout=timeout)
