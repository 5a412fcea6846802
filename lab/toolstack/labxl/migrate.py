"""``xl migrate`` / ``xl migrate-receive`` as a real QEMU live migration.

As in Xen's tools/xl/xl_migrate.c, the sender runs ``ssh HOST xl migrate-receive`` and talks to
the receiver over that channel: the receiver prints xl's banner, gets the domain's config, starts
a paused QEMU listening for the stream (``-incoming``) and says where; the sender drives QMP
``migrate`` and polls. After the transfer the source is renamed ``<name>--migratedaway`` and the
target, ``<name>--incoming`` until then, may start only when the sender gives permission (xl's
final handshake), so the domain never runs in two places. A failed migration leaves the domain
running on the source; only an interrupted final handshake leaves it paused at both ends, as xl.
The control messages are JSON lines; the receiver's stderr reaches the sender's through ssh.
"""

import json
import os
import select
import shlex
import socket
import subprocess
import sys
import time

from labxl.domains import XLError, alive
from labxl.qmp import QMP, QMPError

BANNER = "xl migration receiver ready, send binary domain data."
POLL = 0.01
TRANSFER_TIMEOUT = 600.0
HANDSHAKE_TIMEOUT = 60.0
FAILED_BADLY = (
    "** Migration failed during final handshake **",
    "Domain state is now undefined !",
    "Please CHECK AT BOTH ENDS for running instances, before renaming and",
    " resuming at most one instance.  Two simultaneous instances of the domain",
    " would probably result in SEVERE DATA LOSS and it is now your",
    " responsibility to avoid that.  Sorry.",
)


def err(*lines):
    """xl's messages go to stderr, each line in one write (the receiver's share the stream)."""
    sys.stderr.write("".join(f"{line}\n" for line in lines))
    sys.stderr.flush()


def receiver_argv(ssh_command, host, paused=False):
    """The receiver's command: ``<ssh> HOST xl migrate-receive`` (xl's ``-s``; empty: HOST)."""
    if ssh_command == "":
        return shlex.split(host)
    return [*shlex.split(ssh_command), host, "xl", "migrate-receive", *(["-p"] if paused else [])]


class Channel:
    """JSON lines over a pair of pipes, each read bounded by a timeout."""

    def __init__(self, rfd, wfd):
        self.rfd, self.wfd, self.buf = rfd, wfd, b""

    def line(self, timeout=HANDSHAKE_TIMEOUT):
        """The next line, or None when the other end has gone or stayed silent for ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                return None
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def recv(self, timeout=HANDSHAKE_TIMEOUT):
        line = self.line(timeout)
        try:
            return json.loads(line) if line else None
        except ValueError:
            return None

    def send(self, **msg):
        try:
            os.write(self.wfd, json.dumps(msg).encode() + b"\n")
        except OSError:
            return False
        return True


# --- sender --------------------------------------------------------------------------------------


def send(store, ident, host, *, ssh_command="ssh", paused=False, settings=None):
    """Live-migrate domain ``ident`` to ``host``; 0 on success, 1 (domain kept here) on failure."""
    rec = store.find(ident)
    argv = receiver_argv(ssh_command, host, paused)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    except OSError as exc:
        raise XLError(f"cannot run migration transport {argv[0]}: {exc.strerror}") from exc
    try:
        return Sender(store, rec, proc).run(settings or rec["settings"], paused)
    finally:
        proc.stdin.close()
        proc.stdout.close()
        try:
            proc.wait(timeout=HANDSHAKE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Sender:
    """The source end of one migration, talking to the receiver process ``proc``."""

    def __init__(self, store, rec, proc):
        self.store, self.rec, self.proc = store, rec, proc
        self.name = rec["name"]
        self.qmp = store.qmp_path(rec)
        self.chan = Channel(proc.stdout.fileno(), proc.stdin.fileno())

    def run(self, settings, paused):
        if self.chan.line() != BANNER:
            self.transport_died("banner")
            return 1
        self.chan.send(name=self.name, uuid=self.rec["uuid"], settings=settings, paused=paused)
        err("Saving to migration stream new xl format (info 0x3/0x0/1284)")
        reply = self.chan.recv()
        if not reply or "uri" not in reply:
            self.transport_died("ready message")
            err("Migration failed, resuming at sender.")
            return 1
        status, error = self.transfer(reply["uri"])
        if status != "completed":
            err(f"migration sender: QEMU migration {status}: {error or 'no reason given'}")
            self.chan.send(abort=True)
            self.resume()
            err("migration sender: libxl_domain_suspend failed (rc=-8)")
            err("Migration failed, resuming at sender.")
            return 1
        return self.handover()

    def transport_died(self, what):
        err(
            "libxl: error: libxl_utils.c:510:libxl_read_exactly: file/stream truncated reading "
            f"{what} from migration receiver stream"
        )
        try:
            status = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return
        err(
            "libxl: info: libxl_exec.c:117:libxl_report_child_exitstatus: migration transport "
            f"process [{self.proc.pid}] exited with error status {status}"
        )

    def transfer(self, uri):
        """Drive QMP ``migrate`` to ``uri`` until it ends: (final status, error text)."""
        deadline = time.monotonic() + TRANSFER_TIMEOUT
        why = None
        try:
            with QMP(self.qmp) as q:
                q.cmd("migrate", uri=uri)
                while True:
                    info = q.cmd("query-migrate")
                    if info.get("status") in ("completed", "failed", "cancelled"):
                        return info["status"], why or info.get("error-desc")
                    if why is None and self.proc.poll() is not None:
                        why = "the receiver has gone"
                    elif why is None and time.monotonic() > deadline:
                        why = f"not done after {TRANSFER_TIMEOUT:.0f} s"
                    if why and info.get("status") != "cancelling":
                        q.cmd("migrate_cancel")
                    time.sleep(POLL)
        except QMPError as exc:
            return "failed", str(exc)

    def handover(self):
        """xl's final handshake, once the stream is through and the source has stopped."""
        self.chan.send(transferred=True)
        ack = self.chan.recv()
        if ack is None:
            return self.failed_badly()
        if not ack.get("ready"):
            return self.target_failed()
        err("migration sender: Target has acknowledged transfer.")
        with self.store.lock():
            self.store.rename(self.rec, f"{self.name}--migratedaway")
        err("migration sender: Giving target permission to start.")
        self.chan.send(go=True)
        started = self.chan.recv()
        if started is None:
            return self.failed_badly()
        if not started.get("started"):
            return self.target_failed()
        err("migration sender: Target reports successful startup.")
        with self.store.lock():
            self.store.kill(self.rec)
        err("Migration successful.")
        return 0

    def resume(self):
        """Make sure the source runs again after a failed move (unless it was paused)."""
        try:
            with QMP(self.qmp) as q:
                if q.cmd("query-status").get("status") != "running" and not self.rec["paused"]:
                    q.cmd("cont")
        except QMPError as exc:
            err(f"migration sender: cannot resume the domain: {exc}")

    def target_failed(self):
        err("migration sender: Target reports startup failure (status code 3).")
        err("migration sender: Trying to resume at our end.")
        self.resume()
        with self.store.lock():
            self.store.rename(self.rec, self.name)
        err("migration sender: Resumed OK.", "Migration failed due to problems at target.")
        return 1

    @staticmethod
    def failed_badly():
        """No word from the target after the transfer: it may run; keep ours stopped (as xl)."""
        err(*FAILED_BADLY)
        return 1


# --- receiver ------------------------------------------------------------------------------------


def receive(conf, store):
    """The target end (run by the sender through ssh); 0 once the domain runs here."""
    chan = Channel(sys.stdin.fileno(), sys.stdout.fileno())
    os.write(chan.wfd, f"{BANNER}\n".encode())
    msg = chan.recv()
    if not msg:
        return 1
    name = msg["name"]
    err(
        "Loading new save file <incoming migration stream> (new xl fmt info 0x3/0x0/1284)",
        " Savefile contains xl domain config in JSON format",
        "Parsing config from <saved>",
    )
    try:
        with store.lock():
            store.ensure_unused(name)  # never a second copy of a domain that runs here
            rec = store.start(
                msg["settings"], f"{name}--incoming", incoming=True, dom_uuid=msg["uuid"]
            )
    except XLError as exc:
        err(str(exc), "migration target: Domain creation failed (code -3).")
        chan.send(error=str(exc))
        return 1
    try:
        return _receive(conf, store, chan, rec, msg.get("paused", False))
    finally:
        if rec["name"] != name:
            with store.lock():
                store.kill(rec)


def _free_port(ip):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def _receive(conf, store, chan, rec, paused):
    name = rec["name"].removesuffix("--incoming")
    uri = f"tcp:{conf['ip']}:{_free_port(conf['ip'])}"
    try:
        with QMP(store.qmp_path(rec)) as q:
            # announce the moved MAC at once, not after QEMU's default 50 ms (shorter blackout)
            q.cmd("migrate-set-parameters", **{"announce-initial": 1})
            q.cmd("migrate-incoming", uri=uri)
            err("migration target: Ready to receive domain.")
            chan.send(uri=uri)
            msg = chan.recv(TRANSFER_TIMEOUT + HANDSHAKE_TIMEOUT)
            if not msg or not msg.get("transferred"):
                return 1
            status = _incoming_status(q, rec)
            if status != "completed":
                err(f"migration target: incoming stream {status}, destroying our copy.")
                with store.lock():
                    store.kill(rec)
                chan.send(ready=False)
                return 1
            err("migration target: Transfer complete, requesting permission to start domain.")
            chan.send(ready=True)
            msg = chan.recv()
            if not msg or not msg.get("go"):
                return 1
            err("migration target: Got permission, starting domain.")
            if not paused:
                q.cmd("cont")
            with store.lock():
                rec["paused"] = paused
                store.rename(rec, name)
    except QMPError as exc:
        err(f"migration target: {exc}", "migration target: Failure, destroying our copy.")
        with store.lock():
            store.kill(rec)  # before the sender resumes its copy
        err("migration target: Cleanup OK, granting sender permission to resume.")
        chan.send(ready=False, started=False)
        return 1
    err("migration target: Domain started successsfully.")  # sic, as in xl_migrate.c
    chan.send(started=True)
    return 0


def _incoming_status(q, rec):
    """Wait for QEMU to finish loading the stream: ``completed``, ``failed`` or ``gone``."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    while time.monotonic() < deadline and alive(rec):
        status = q.cmd("query-migrate").get("status")
        if status in ("completed", "failed", "cancelled"):
            return status
        time.sleep(POLL)
    return "gone" if not alive(rec) else "timed out"
