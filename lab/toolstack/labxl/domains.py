"""The lab host's domains: QEMU processes plus one JSON record each in the host's state folder.

A record is trusted only while its QEMU process lives (the pid's command line carries the
domain's uuid), so a host that lost power comes back with no domains, as after a real reboot.
"""

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from labxl.config import qemu_argv

VIF_SCRIPT = Path(__file__).resolve().parent.parent / "vif-bridge"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class XLError(RuntimeError):
    """A verb failed; the message is what xl prints on stderr."""


class Store:
    """Domain records of one lab host; mutate them only inside ``with store.lock():``."""

    def __init__(self, conf):
        self.conf = conf
        self.dir = Path(conf["state_dir"])
        self.dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self):
        with open(self.dir / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def path(self, domid, suffix):
        return self.dir / f"d{domid}.{suffix}"

    def files(self, domid):
        """The per-domain files QEMU is given (see config.qemu_argv)."""
        return {
            "qmp": str(self.path(domid, "qmp")),
            "pidfile": str(self.path(domid, "pid")),
            "console": str(self.path(domid, "console")),
            "chap": str(self.path(domid, "chap")),
            "vif_script": str(VIF_SCRIPT),
        }

    def qmp_path(self, rec):
        return str(self.path(rec["domid"], "qmp"))

    def alloc_domid(self):
        counter = self.dir / "next-domid"
        domid = int(counter.read_text()) if counter.exists() else 1
        counter.write_text(f"{domid + 1}\n")
        return domid

    def save(self, rec):
        tmp = self.path(rec["domid"], "json.tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        tmp.replace(self.path(rec["domid"], "json"))

    def forget(self, domid):
        for path in self.dir.glob(f"d{domid}.*"):
            path.unlink(missing_ok=True)

    def domains(self):
        """Live domain records by domid; records of dead QEMUs are dropped."""
        out = []
        for path in self.dir.glob("d*.json"):
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if alive(rec):
                out.append(rec)
            elif time.time() - rec.get("created", 0) > 60 or rec.get("pid"):
                self.forget(rec["domid"])
        return sorted(out, key=lambda r: r["domid"])

    def find(self, ident):
        """A live record by name or domid, as xl's find_domain; XLError when unknown."""
        for rec in self.domains():
            if rec["name"] == ident or (ident.isdigit() and rec["domid"] == int(ident)):
                return rec
        raise XLError(f"{ident} is an invalid domain identifier (rc=-6)")

    def ensure_unused(self, name):
        """XLError (xl's message) if a domain called ``name`` exists here."""
        if any(r["name"] == name for r in self.domains()):
            raise XLError(
                f"libxl: error: libxl_domain.c:457:libxl__domain_rename: Domain with name "
                f'"{name}" already exists.'
            )

    def free_memory(self):
        used = sum(r["settings"]["memory"] for r in self.domains())
        return self.conf["memory_mib"] - self.conf["dom0_mib"] - used

    def rename(self, rec, name):
        rec["name"] = name
        self.save(rec)

    def start(self, settings, name, incoming=False, paused=False, dom_uuid=None):
        """Start a QEMU for ``settings`` (config.domain_settings) and record it.

        Call with the lock held. QEMU daemonises only once it is set up (disk opened, tap on
        the bridge), so its own error message comes back here when it cannot start.
        """
        import subprocess  # noqa: PLC0415 - here, not for every verb: xl list starts faster
        import uuid  # noqa: PLC0415

        self.ensure_unused(name)
        if settings["memory"] > self.free_memory():
            raise XLError("failed to free memory for the domain")
        bridges = {v["bridge"] for v in settings["vifs"]}
        if len(bridges) > 1:
            raise XLError(f"the lab toolstack puts all vifs of a domain on one bridge: {bridges}")
        domid = self.alloc_domid()
        rec = {
            "domid": domid,
            "name": name,
            "uuid": dom_uuid or str(uuid.uuid4()),
            "settings": settings,
            "paused": paused or incoming,
            "created": time.time(),
            "pid": None,
        }
        files = self.files(domid)
        for i, disk in enumerate(settings["disks"]):
            if disk.get("secret"):
                fd = os.open(f"{files['chap']}.{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(disk["secret"])
        self.save(rec)
        argv = qemu_argv(self.conf, rec, files, incoming=incoming)
        if paused and not incoming:
            argv.append("-S")
        env = {**os.environ, "XL_VIF_BRIDGE": next(iter(bridges), "br0")}
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            self.forget(domid)
            raise XLError(f"libxl: error: cannot start QEMU for {name}: {err}") from err
        if proc.returncode != 0:
            self.forget(domid)
            raise XLError(
                f"libxl: error: QEMU for {name} exited with {proc.returncode}: "
                f"{proc.stderr.strip()}"
            )
        rec["pid"] = int(Path(files["pidfile"]).read_text())
        self.save(rec)
        return rec

    def kill(self, rec, timeout=10):
        """SIGKILL the domain's QEMU, wait for it to be gone, forget the record."""
        import signal  # noqa: PLC0415 - here, not for every verb: xl list starts faster

        if alive(rec):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec["pid"], signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while alive(rec) and time.monotonic() < deadline:
                time.sleep(0.02)
        self.forget(rec["domid"])


def alive(rec):
    """Whether the record's QEMU process exists (and is that domain's, by uuid)."""
    pid = rec.get("pid")
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return rec["uuid"].encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z"


def cpu_seconds(pid):
    """CPU time (user + system) of a process, seconds; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def running_now(pid):
    """Whether any thread of the process is on a CPU (xl's ``r``; otherwise ``b``)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R":
                return True
        except OSError:
            continue
    return False
