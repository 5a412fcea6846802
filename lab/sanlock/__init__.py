"""A real ``sanlock daemon`` in each lab VM host, and the lab's lease area.

Each lab host has its own mount namespace and /run (:mod:`lab.hosts`), so each daemon has its
own ``/run/sanlock`` socket and its own log in the host's /var/log. Two things differ from a real
host, both because of this sandbox, not of sanlock:

- the daemon raises RLIMIT_MEMLOCK, RLIMIT_RTPRIO and RLIMIT_CORE at start and exits when it
  cannot (no CAP_SYS_RESOURCE here): ``rlimit_shim.c``, built with gcc into the run folder and
  loaded with LD_PRELOAD, lets those three calls succeed;
- ``-l 0 -w 0``: no mlockall, and no watchdog (there is no /dev/watchdog for wdmd).

The lease area is a file on the lab's shared folder (``<run>/shared/sanlock/leases``), the
fallback for a dedicated lease LUN; it is not under ``<run>/shared/domus``, the folder that
stands in for the OCFS2 volume. A host's power-off kills its daemon with everything else; power
on starts it again when :meth:`Sanlock.attach` added it to the host's services, and, given the
host's host_id, joins the lockspace as the sanlock formula's ``xenha-lockspace`` unit does at a
real host's boot (``sanlock client add_lockspace``, once the daemon answers).

The shim also stands in for a lost lease LUN: while ``/run/xenha-lab/storage-cut`` exists in a
host (its own /run), the daemon's disk I/O fails with EIO (``rlimit_shim.c``).
"""

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

from lab.hosts import LabError, wait_for

SHIM_SOURCE = Path(__file__).resolve().with_name("rlimit_shim.c")


def build_shim(run_dir):
    """The shim's shared object under ``<run_dir>/sanlock``, rebuilt when its source changed."""
    out = Path(run_dir) / "sanlock" / "rlimit_shim.so"
    stamp = out.with_suffix(".sha256")
    digest = hashlib.sha256(SHIM_SOURCE.read_bytes()).hexdigest()
    if out.exists() and stamp.exists() and stamp.read_text() == digest:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    argv = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp), str(SHIM_SOURCE), "-ldl"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"{shlex.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    os.replace(tmp, out)
    stamp.write_text(digest)
    return out


class Sanlock:
    """sanlock daemons in ``hosts`` (lab :class:`lab.hosts.Host` objects of one segment).

    ``env`` ({host name: {variable: value}}) is added to that host's daemon's environment,
    which its killpath programs inherit (tests point the Xen stand-in's state there).
    ``host_ids`` ({host name: host_id}) makes each power-on of those hosts join the lockspace
    with ``io_timeout``.
    """

    def __init__(self, run_dir, hosts, env=None, host_ids=None, io_timeout=10):
        self.run_dir = Path(run_dir)
        self.hosts = list(hosts)
        self.env = dict(env or {})
        self.host_ids = dict(host_ids or {})
        self.io_timeout = io_timeout
        self.lease_path = self.run_dir / "shared" / "sanlock" / "leases"

    def daemon_argv(self, host):
        shim = build_shim(self.run_dir)
        env = [
            f"{k}={v}" for k, v in {"LD_PRELOAD": str(shim), **self.env.get(host.name, {})}.items()
        ]
        daemon = ["sanlock", "daemon", "-l", "0", "-w", "0", "-U", "root", "-G", "root"]
        return ["env", *env, *daemon, "-e", host.name]

    def join_argv(self, host):
        """A boot-time job that joins ``host`` to the lockspace once its daemon answers
        (in the background: the first join takes about 2 x io_timeout); its output goes to
        the host's /var/log/sanlock-join.log."""
        space = f"xenha:{self.host_ids[host.name]}:{self.lease_path}:0"
        join = ["sanlock", "client", "add_lockspace", "-o", str(self.io_timeout), "-s", space]
        script = (
            "for i in $(seq 100); do sanlock client status >/dev/null 2>&1 && break; "
            f"sleep 0.2; done; exec {shlex.join(join)}"
        )
        log = "/var/log/sanlock-join.log"
        return ["sh", "-c", f"setsid sh -c {shlex.quote(script)} >>{log} 2>&1 </dev/null &"]

    def make_area(self, size):
        """Create the lease area file of ``size`` bytes (sparse) if it does not exist."""
        self.lease_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.lease_path.exists():
            with open(self.lease_path, "wb") as area:
                area.truncate(size)
        return self.lease_path

    def attach(self):
        """Start the daemon (and join, given the host_id) at every later power-on of each host
        (idempotent)."""
        for host in self.hosts:
            wanted = [self.daemon_argv(host)]
            if host.name in self.host_ids:
                wanted.append(self.join_argv(host))
            for argv in wanted:
                if argv not in host.services:
                    host.services.append(argv)

    def running(self, host):
        """Whether ``host``'s daemon answers on its socket."""
        if not host.is_powered():
            return False
        return host.run(["sanlock", "client", "status"], check=False).returncode == 0

    def wait(self, host, timeout=30):
        """Return once ``host``'s daemon answers (it answers a moment after it forked)."""
        wait_for(lambda: self.running(host), timeout, f"sanlock daemon in {host.name}")

    def start(self, host, timeout=30):
        """Start ``host``'s daemon unless it runs; return when it answers."""
        if not self.running(host):
            host.run(self.daemon_argv(host), timeout=timeout)
        self.wait(host, timeout)

    def stop(self, host, timeout=30):
        """Stop ``host``'s daemon cleanly (``sanlock client shutdown -f 1``: its lockspaces are
        left and the processes holding leases are killed first)."""
        if not self.running(host):
            return
        host.run(["sanlock", "client", "shutdown", "-f", "1"], timeout=timeout)
        wait_for(lambda: not self.running(host), timeout, f"sanlock daemon in {host.name} to stop")

    def start_all(self, timeout=30):
        for host in self.hosts:
            self.start(host, timeout)

    def stop_all(self, timeout=30):
        for host in self.hosts:
            if host.is_powered():
                self.stop(host, timeout)
