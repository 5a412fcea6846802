"""Lab hosts: network namespaces on one L2 segment, each host with its own /etc and PID namespace.

Layout (``prefix`` defaults to ``xha``; tests use another so they never meet a running lab)::

    netns <prefix>-sw   bridge br0: the segment (the thesis's switch), one veth port per endpoint
    netns <prefix>-<n>  eth0 = the other end of port <n>; a VM host puts eth0 on its own br0
                        (guests' taps join it later) and carries its IP there

An :class:`Endpoint` is a bare network namespace (a client, a BMC). A :class:`Host` is also a
machine: its init (``lab/hostinit.py``) runs in fresh mount, UTS, IPC and PID namespaces with the
host's own ``etc/`` (a copy of the machine's /etc made at creation), ``run/``, ``tmp/``, ``log/``
and a ``var/`` layer over the machine's /var, all under ``<run_dir>/hosts/<name>/``. Killing the
init powers the host off: the kernel kills every process in its PID namespace. Power on starts a
new init and the host's services (never its guests). State lives in files, so a new process (the
``python -m lab`` CLI) can drive a lab that another process built.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import HIDDEN

HOSTINIT = Path(__file__).resolve().with_name("hostinit.py")
SWITCH = "sw"


class LabError(RuntimeError):
    """A lab operation failed; the message names the command or object and what went wrong."""


def sh(argv, check=True, timeout=60):
    """Run a command in the root namespaces (ip plumbing only); LabError when it fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout} s") from err
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def wait_for(predicate, timeout, what, interval=0.1):
    """Poll ``predicate`` until it returns a true value (returned), else raise LabError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class CommandFailed(subprocess.CalledProcessError, LabError):
    """A command run inside a lab endpoint exited non-zero (carries returncode, stdout, stderr)."""

    def __str__(self):
        said = (self.stderr or "").strip() or (self.stdout or "").strip()
        return f"{' '.join(self.cmd)}: exit {self.returncode}: {said}"


class GroupPopen(subprocess.Popen):
    """A Popen whose signals go to its whole process group.

    ``nsenter`` forks to enter a PID namespace and does not forward signals, so terminate()/kill()
    must reach the forked child too; both share the group made by ``start_new_session``.
    """

    def send_signal(self, sig):
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)


def _run(argv, check, timeout, input, env):
    with GroupPopen(
        argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    if check and proc.returncode != 0:
        raise CommandFailed(proc.returncode, argv, out, err)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def identity(pid):
    """(pid, start time) of a live process; None once it is gone or a zombie (dead, unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if stat[0] in "ZX" else (pid, stat[19])


def children(pid):
    """The PIDs of ``pid``'s child processes ([] once it is gone)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def kill(pid):
    """SIGKILL ``pid`` and, if it is our child (an init's unshare), reap it: no zombies left."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def kill_all(pids, timeout, what):
    """SIGKILL ``pids`` and wait until each is really gone (a dying process can outlive its
    namespace links for a moment)."""
    live = {identity(pid) for pid in pids} - {None}
    for pid, _ in live:
        kill(pid)
    wait_for(lambda: not any(identity(i[0]) == i for i in live), timeout, what)


def _env(extra):
    return {**os.environ, **extra} if extra else None


class Endpoint:
    """A network namespace with one port on the segment (a client, a BMC)."""

    def __init__(self, name, ip, segment):
        if not (0 < len(name) <= 15 and name.replace("-", "").isalnum()):
            raise LabError(f"endpoint name {name!r}: 1-15 letters, digits or '-' (it names a port)")
        self.name = name
        self.ip = ip
        self.segment = segment
        self.port = name.lower()
        self.netns = f"{segment.prefix}-{self.port}"

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.ip}>"

    @property
    def uplink(self):
        """The interface that carries the IP: ``br0`` on VM hosts, else ``eth0``."""
        return "eth0"

    def exists(self):
        return Path("/run/netns", self.netns).exists()

    def require(self):
        """Raise LabError unless the namespace exists (the lab is up)."""
        if not self.exists():
            raise LabError(f"{self.netns} does not exist: is the lab up? (python -m lab up)")

    def create(self):
        """Make the namespace and its port on the segment, with the IP on the uplink."""
        if self.exists():
            raise LabError(f"{self.netns} already exists: run `python -m lab down` first")
        sw = ["ip", "-n", self.segment.switch_netns]
        me = ["ip", "-n", self.netns]
        sh(["ip", "netns", "add", self.netns])
        peer = ["peer", "name", "eth0", "netns", self.netns]
        sh([*sw, "link", "add", "name", self.port, "type", "veth", *peer])
        sh([*sw, "link", "set", "dev", self.port, "master", "br0", "up"])
        sh([*me, "link", "set", "lo", "up"])
        if self.uplink != "eth0":
            sh([*me, "link", "add", self.uplink, "type", "bridge"])
            sh([*me, "link", "set", "eth0", "master", self.uplink])
        sh([*me, "link", "set", "eth0", "up"])
        sh([*me, "link", "set", self.uplink, "up"])
        sh([*me, "addr", "add", f"{self.ip}/{self.segment.prefixlen}", "dev", self.uplink])

    def link_up(self):
        """Whether this endpoint's port on the switch is administratively up."""
        sw = self.segment.switch_netns
        out = sh(["ip", "-n", sw, "-o", "link", "show", "dev", self.port]).stdout
        return "UP" in out.split("<", 1)[1].split(">", 1)[0].split(",")

    def set_link(self, up):
        self.require()
        state = "up" if up else "down"
        sh(["ip", "-n", self.segment.switch_netns, "link", "set", "dev", self.port, state])

    def partition(self):
        """Cut this endpoint off the segment; its processes keep running."""
        self.set_link(False)

    def heal(self):
        """Reconnect it to the segment."""
        self.set_link(True)

    def _prefix(self):
        self.require()
        return ["ip", "netns", "exec", self.netns]

    def run(self, argv, check=True, timeout=60, input=None, env=None):
        """Run ``argv`` inside and wait: a CompletedProcess with text stdout/stderr.

        Raises CommandFailed (a CalledProcessError) when ``check`` and it fails, and
        TimeoutExpired after ``timeout`` (the command is killed).
        """
        return _run([*self._prefix(), *argv], check, timeout, input, _env(env))

    def spawn(self, argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=None):
        """Start ``argv`` inside and return its GroupPopen (terminate()/kill() reach it)."""
        return GroupPopen(
            [*self._prefix(), *argv],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=_env(env),
            start_new_session=True,
        )

    def pids(self):
        """Root-namespace PIDs of every process in this network namespace."""
        if not self.exists():
            return []
        return [int(p) for p in sh(["ip", "netns", "pids", self.netns]).stdout.split()]


class Host(Endpoint):
    """A lab machine: its own namespaces and folders, an init, services, a power switch.

    ``services`` are argv lists of self-daemonising programs (the Lab sets salt-minion and sshd)
    started, in order, by :meth:`power_on`. ``binds`` ({path inside: folder outside}) shares
    folders between hosts (e.g. a stand-in for a shared filesystem); the inside path must be
    under /run, /tmp or /var, which are the host's own, so its mount point is made there.
    """

    def __init__(self, name, ip, role, segment, *, hostname=None, services=(), binds=None):
        super().__init__(name, ip, segment)
        self.role = role
        self.hostname = hostname or name
        self.services = list(services)
        self.binds = dict(binds or {})
        for inside in self.binds:
            if not any(Path(inside).is_relative_to(p) for p in HIDDEN if p != Path("/etc")):
                raise LabError(f"{name}: bind target {inside}: must be under /run, /tmp or /var")
        self.root = segment.run_dir / "hosts" / name
        self.etc = self.root / "etc"
        self._state = self.root / ".host"

    @property
    def uplink(self):
        return "br0" if self.role == "vmhost" else "eth0"

    def create(self):
        """Make the namespace, link and folders (a fresh copy of the machine's /etc)."""
        super().create()
        if self.root.exists():
            shutil.rmtree(self.root)
        for sub in ("run", "tmp", "log", "var", ".host/var-work"):
            (self.root / sub).mkdir(parents=True)
        (self.root / "tmp").chmod(0o1777)
        shutil.copytree("/etc", self.etc, symlinks=True)
        (self.etc / "hostname").write_text(f"{self.hostname}\n")
        # peers are not known here: the formulas add them
        (self.etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.hostname}\n")
        for key in self.etc.glob("ssh/ssh_host_*"):
            key.unlink()
        sh(["ssh-keygen", "-A", "-f", str(self.root)])

    def start(self):
        """Create the host and power it on."""
        self.create()
        self.power_on()

    # --- power -------------------------------------------------------------------------------
    def init_pid(self):
        """The root-namespace PID of the running init, or None when powered off."""
        try:
            pid = int((self._state / "init.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        ours = str(self.root).encode() in cmdline and str(HOSTINIT).encode() in cmdline
        return pid if ours else None

    def is_powered(self):
        return self.init_pid() is not None

    def power_on(self, timeout=30):
        """Boot: a new init with empty /run and /tmp, the link up, then the services."""
        if self.is_powered():
            return
        self.require()
        for sub in ("run", "tmp"):
            for entry in (self.root / sub).iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        (self._state / "ready").unlink(missing_ok=True)
        ns_flags = ["--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child", "--mount-proc"]
        argv = [
            "nsenter", f"--net=/run/netns/{self.netns}", "--",
            "unshare", *ns_flags, "--propagation", "private",
            sys.executable, str(HOSTINIT), str(self.root), self.hostname,
            *[str(p) for pair in self.binds.items() for p in reversed(pair)],
        ]  # fmt: skip
        with open(self._state / "init.log", "ab") as log:
            unshare = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        wait_for(
            lambda: (self._state / "ready").exists() or unshare.poll() is not None,
            timeout,
            f"{self.name}'s init",
        )
        if unshare.poll() is not None:
            log = (self._state / "init.log").read_text()[-2000:]
            raise LabError(f"{self.name}: init exited with {unshare.returncode}: {log}")
        (self._state / "init.pid").write_text(f"{children(unshare.pid)[0]}\n")
        (self._state / "unshare.pid").write_text(f"{unshare.pid}\n")
        self.set_link(True)
        (self.root / "run" / "sshd").mkdir(exist_ok=True)  # sshd's privilege separation dir
        for service in self.services:
            self.run(service, timeout=timeout)

    def power_off(self, timeout=10):
        """Pull the plug: the link goes down and every process of the host dies at once."""
        self.set_link(False)
        pids = self.pids()
        pid = self.init_pid()
        if pid is not None:
            kill(pid)
            # its unshare parent exits with it; reap it if this process started it
            with contextlib.suppress(FileNotFoundError, ValueError, ChildProcessError):
                os.waitpid(int((self._state / "unshare.pid").read_text()), 0)
        kill_all(pids, timeout, f"every process of {self.name} to die")
        wait_for(lambda: not self.pids(), timeout, f"every process of {self.name} to die")

    def _prefix(self):
        self.require()
        pid = self.init_pid()
        if pid is None:
            raise LabError(f"{self.name} is powered off")
        return ["nsenter", "-t", str(pid), "-n", "-m", "-p", "-u", "-i", "--wd=/"]

    def call(self, argv, env=None):
        """Run ``argv`` inside in the foreground with this process's stdin, stdout and stderr
        (its output streams as it comes); returns its exit status as a shell reports it
        (128 + N when signal N ended it).

        Ctrl-C is handed to the command alone: nsenter, which waits for it outside the host's
        PID namespace, would die of the terminal's SIGINT and leave the command unwaited.
        """
        with subprocess.Popen([*self._prefix(), *argv], env=_env(env), start_new_session=True) as p:
            while True:
                try:
                    code = p.wait()
                    break
                except KeyboardInterrupt:
                    for child in children(p.pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(child, signal.SIGINT)
        return 128 - code if code < 0 else code


class Segment:
    """The switch plus every endpoint and host on it; :meth:`down` removes all of it."""

    def __init__(self, run_dir, prefix="xha", subnet="10.99.0", prefixlen=24):
        if not (prefix.isalnum() and len(prefix) <= 5):
            raise LabError(f"netns prefix {prefix!r}: 1-5 letters or digits")
        self.run_dir = Path(run_dir).resolve()
        for hidden in HIDDEN:  # a host mounts its own copies over these
            if self.run_dir.is_relative_to(hidden):
                raise LabError(f"run folder {self.run_dir}: must not be under {hidden}")
        self.prefix = prefix
        self.subnet = subnet  # the first three octets: endpoints' IPs are given whole
        self.prefixlen = prefixlen
        self.switch_netns = f"{prefix}-{SWITCH}"
        self.endpoints = {}

    def _add(self, endpoint):
        if endpoint.name in self.endpoints or endpoint.port == SWITCH:
            raise LabError(f"endpoint name {endpoint.name!r} is taken")
        self.endpoints[endpoint.name] = endpoint
        return endpoint

    def host(self, name, ip, role, **kwargs):
        """Declare a Host (created by :meth:`up`)."""
        return self._add(Host(name, ip, role, self, **kwargs))

    def endpoint(self, name, ip):
        """Declare a bare netns Endpoint (created by :meth:`up`)."""
        return self._add(Endpoint(name, ip, self))

    def hosts(self):
        return [e for e in self.endpoints.values() if isinstance(e, Host)]

    def create_switch(self):
        sh(["ip", "netns", "add", self.switch_netns])
        sh(["ip", "-n", self.switch_netns, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", self.switch_netns, "link", "set", "br0", "up"])

    def create(self):
        """Start afresh: remove any lab of this prefix, then make the switch and every endpoint."""
        self.down()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.create_switch()
        for endpoint in self.endpoints.values():
            endpoint.create()

    def up(self):
        """:meth:`create`, then power the hosts on in declaration order."""
        self.create()
        for host in self.hosts():
            host.power_on()

    def netns_names(self):
        """Every network namespace of this prefix, declared or left over from a crashed run."""
        out = sh(["ip", "netns", "list"]).stdout.split("\n")
        return [line.split()[0] for line in out if line.startswith(f"{self.prefix}-")]

    def down(self):
        """Kill every process, remove every namespace of this prefix and the run folder.

        Safe to call twice and after a crashed run: it works from what exists, not from memory.
        """
        names = self.netns_names()
        pids = [int(p) for n in names for p in sh(["ip", "netns", "pids", n]).stdout.split()]
        kill_all(pids, 10, f"the processes of {', '.join(names)} to die")
        for name in names:
            wait_for(
                lambda n=name: not sh(["ip", "netns", "pids", n]).stdout.split(),
                10,
                f"the processes of {name} to die",
            )
            sh(["ip", "netns", "del", name])
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
