"""
Test helper around the xl/xm stand-ins: a shared state directory holding the "hosts" of a test.

    cluster = StandinCluster(tmp_path)
    cluster.add_host("xen-host-a", memory_mib=2048)
    cfg = cluster.write_config("web01", memory_mib=256)
    subprocess.run(["xl", "create", cfg], env=cluster.env("xen-host-a"))
    cluster.set_fault("xen-host-b", "migrate-receive", "fail")

The stand-ins print Xen's formats; this helper reads and writes their JSON directly, so a test
can arrange a situation (a crashed domU, a host that is down) without going through the tool.
"""

import json
import os
from pathlib import Path

from tests.standins import xenstandin

STANDINS = Path(__file__).resolve().parent


class StandinCluster:
    """The hosts sharing one stand-in state directory."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.state = xenstandin.State(str(self.path))

    def add_host(self, name, memory_mib=4096, nr_cpus=2, xen_version="4.17.3", dom0_mib=512):
        """Create (or reset) host ``name``: Domain-0 only, ``memory_mib`` of RAM in total."""
        with self.state.lock():
            self.state.save(xenstandin.new_host(name, memory_mib, nr_cpus, xen_version, dom0_mib))
        return name

    def host(self, name):
        """The host's raw state (domains, memory, flags), shutdowns that are due applied."""
        with self.state.lock():
            return self.state.load(name)

    def domains(self, name):
        """``{domain name: raw record}`` on host ``name``."""
        return self.host(name)["domains"]

    def update_host(self, name, **fields):
        """Set top-level fields of a host: up, migrate_delay, shutdown_delay, relocation, ..."""
        with self.state.lock():
            data = self.state.load(name)
            data.update(fields)
            self.state.save(data)

    def set_up(self, name, up=True):
        """Mark a host reachable or unreachable (migrations to it fail like ssh would)."""
        self.update_host(name, up=up)

    def add_domain(self, host, name, memory_mib=256, vcpus=1, state=xenstandin.RUNNING):
        """Put a domain straight onto a host (any name, any state string), without ``create``."""
        with self.state.lock():
            data = self.state.load(host)
            dom = xenstandin.add_domain(data, name, memory_mib, vcpus, state=state)
            self.state.save(data)
        return dom["domid"]

    def set_state(self, host, name, state):
        """Overwrite a domain's six-letter state (e.g. ``---sc-`` crashed)."""
        with self.state.lock():
            data = self.state.load(host)
            data["domains"][name]["state"] = state
            self.state.save(data)

    def set_fault(self, host, verb, mode):
        """Make ``verb`` on ``host`` fail/hang/ignore/break (see xenstandin); None clears it."""
        path = self.path / "faults.json"
        with self.state.lock():
            faults = json.loads(path.read_text()) if path.exists() else {}
            if mode is None:
                faults.get(host, {}).pop(verb, None)
            else:
                faults.setdefault(host, {})[verb] = mode
            path.write_text(json.dumps(faults))

    def write_config(self, name, memory_mib=256, vcpus=1):
        """Write a minimal xl/xm domain config under the state dir; returns its path."""
        path = self.path / "configs" / f"{name}.cfg"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            f'# xenha stand-in domain\nname = "{name}"\nmemory = {memory_mib}\nvcpus = {vcpus}\n'
            'disk = [ "phy:/dev/xenha/disk,xvda,w" ]\n'
        )
        return str(path)

    def calls(self):
        """Every stand-in invocation so far: dicts with host, tool, argv."""
        log = self.path / "calls.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def env(self, host, base=None):
        """Environment for running the stand-ins as ``host``: PATH starts with tests/standins."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{STANDINS}{os.pathsep}{env.get('PATH', '')}"
        env["XENHA_STANDIN_DIR"] = str(self.path)
        env["XENHA_STANDIN_HOST"] = host
        return env
