"""``xl migrate`` / ``xl migrate-receive`` as a real QEMU live migration.

As in Xen's tools/xl/xl_migrate.c, the sender runs ``ssh HOST xl migrate-receive`` and talks to
the receiver over that channel: the receiver prints xl's banner, gets the domain's config, starts
a paused QEMU listening for the stream (``-incoming``) and says where; the sender drives QMP
``migrate``. Once the receiver's QEMU has the whole stream it reports ready (xl's
``migrate_receiver_report``) and the source is renamed ``<name>--migratedaway``; the target,
``<name>--incoming`` until then, may start only when the sender gives permission (xl's final
handshake), so the domain never runs in two places. A failed migration leaves the domain
running on the source; only an interrupted final handshake leaves it paused at both ends, as xl.
The control messages are JSON lines; the receiver's stderr reaches the sender's through ssh.

QEMU's migration defaults are not Xen's and are set per migration (see the constants below):
Xen's sender copies at link speed, stops the domain once few pages stay dirty (or after its
last iteration) and the resumed guest announces itself (netfront's gratuitous ARP) at once.
Each migration's timeline (QEMU's downtime, when the target was let run and announced) is
appended to ``migrations.jsonl`` in the sender's state folder: lab diagnostics, not xl's.
"""

import contextlib
import json
import os
import select
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from labxl.domains import XLError, alive
from labxl.qmp import QMP, QMPError

BANNER = "xl migration receiver ready, send binary domain data."
POLL = 0.25  # the receiver's status check between QMP events
ITERATION_POLL = 0.01  # the sender counts QEMU's passes (no event tells)
TRANSFER_TIMEOUT = 600.0
HANDSHAKE_TIMEOUT = 60.0
# QEMU throttles the stream to 32 MiB/s by default; Xen sends as fast as the link goes: the
# lab's veths are as fast as memcpy, so a gigabit segment's 125 MB/s, the speed of a Xen cluster
# of today (the thesis's was 100 Mbit/s)
MAX_BANDWIDTH = 125_000_000
# QEMU stops the guest for the last copy once what is left fits DOWNTIME_LIMIT_MS at that rate
# (about 10 MB here: the end of the first pass plus what it dirtied, sent at full speed while
# stopped, a few tens of ms). It checks right after syncing its dirty map while the guest runs:
# if it goes on instead, the lab's xl stops the guest at once (QMP ``stop``), as Xen suspends
# the domain for its final iteration (Xen after a few passes, the lab after one). A sync while
# a TCG guest runs followed by pages sent while it still runs loses guest writes (a vCPU held
# off the CPU between marking a page dirty and writing it): with the stream unthrottled and 3-8
# passes per migration, guest kernels broke after a few migrations here (list and slab
# corruption, a GPF, a spinlock never released). KVM and Xen log dirty pages in the hypervisor
# and do not race. Once the guest is stopped QEMU finishes at once (its default 300 ms limit).
DOWNTIME_LIMIT_MS = 80
MAX_ITERATIONS = 2
SUSPENDED_LIMIT_MS = 300
# Xen runs a migration in dom0, beside the guest's own vCPUs; here the source's stream thread
# shares the host's cores with the TCG guest, so it runs at a lower priority while the guest
# runs: the guest keeps its CPU (fewer held-off vCPUs too). The target QEMU keeps up at 0: a
# target lagging behind the stream lengthens the blackout.
MIGRATION_NICE = 10
# the resumed guest is announced (RARP) at once and again, as netfront's ARP after a Xen resume,
# so the segment's bridges learn its new port before a client's frame is lost
ANNOUNCE = {"initial": 1, "max": 60, "rounds": 5, "step": 15}
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


def threads(pid):
    """{thread id: name} of process ``pid`` (QEMU names them with ``debug-threads=on``)."""
    out = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            continue
    return out


def renice(pid, nice, only=None):
    """Set the nice value of the threads of ``pid`` (those called ``only``, else all); how many."""
    done = 0
    for tid, name in threads(pid).items():
        if only is None or name == only:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                done += 1
    return done


def events_on(q):
    """Have QEMU report migration state changes as MIGRATION events."""
    q.cmd("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])


class Channel:
    """JSON lines over a pair of pipes, each read bounded by a timeout."""

    def __init__(self, rfd, wfd):
        self.rfd, self.wfd, self.buf = rfd, wfd, b""
        self.eof = False

    def line(self, timeout=HANDSHAKE_TIMEOUT):
        """The next line, or None when the other end has gone or stayed silent for ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if self.eof or left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                return None
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                self.eof = True
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
    sender = Sender(store, rec, proc)
    try:
        return sender.run(settings or rec["settings"], paused)
    finally:
        proc.stdin.close()
        proc.stdout.close()
        try:
            proc.wait(timeout=HANDSHAKE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sender.log(host)


class Sender:
    """The source end of one migration, talking to the receiver process ``proc``."""

    def __init__(self, store, rec, proc):
        self.store, self.rec, self.proc = store, rec, proc
        self.name = rec["name"]
        self.qmp = store.qmp_path(rec)
        self.chan = Channel(proc.stdout.fileno(), proc.stdin.fileno())
        self.timeline = {"start": time.time()}
        self.stats = {}

    def mark(self, what):
        self.timeline.setdefault(what, time.time())

    def log(self, host):
        """Append this migration's timeline to the state folder's migrations.jsonl."""
        entry = {"name": self.name, "to": host, **self.stats, "timeline": self.timeline}
        try:
            with open(self.store.dir / "migrations.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        except OSError:
            pass  # diagnostics only

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
        self.mark("target_ready")
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
        forced = False
        try:
            with QMP(self.qmp) as q:
                events_on(q)
                q.cmd(
                    "migrate-set-parameters",
                    **{"downtime-limit": DOWNTIME_LIMIT_MS, "max-bandwidth": MAX_BANDWIDTH},
                )
                q.cmd("migrate", uri=uri)
                reniced = seen = False
                begun = time.monotonic()
                while True:
                    if not reniced:  # the stream's thread starts with the migrate command
                        reniced = renice(self.rec["pid"], MIGRATION_NICE, "live_migration") > 0
                    # a state change, or count the passes; until this migration's first event,
                    # a domain that came here by migration may still report that one's status
                    seen = q.event("MIGRATION", ITERATION_POLL) is not None or seen
                    seen = seen or time.monotonic() - begun > HANDSHAKE_TIMEOUT
                    info = q.cmd("query-migrate")
                    status = info.get("status") if seen else "setup"
                    if status in ("completed", "failed", "cancelled"):
                        self.mark("source_done")
                        self.stats = _stats(info, forced)  # again after the handshake
                        return status, why or info.get("error-desc")
                    iterations = info.get("ram", {}).get("dirty-sync-count", 0)
                    if not forced and status == "active" and iterations >= MAX_ITERATIONS:
                        forced = True  # as Xen's last iteration: suspend, then copy the rest
                        q.cmd("stop")
                        self.mark("suspended")
                        # nothing gets dirty any more: finish at once, not after another pass
                        q.cmd("migrate-set-parameters", **{"downtime-limit": SUSPENDED_LIMIT_MS})
                        # the rest is the blackout: the stream at full priority
                        reniced = renice(self.rec["pid"], 0, "live_migration") >= 0
                    if why is None and self.proc.poll() is not None:
                        why = "the receiver has gone"
                    elif why is None and time.monotonic() > deadline:
                        why = f"not done after {TRANSFER_TIMEOUT:.0f} s"
                    if why and status != "cancelling":
                        q.cmd("migrate_cancel")
        except QMPError as exc:
            return "failed", str(exc)

    def handover(self):
        """xl's final handshake: the target reports the stream in, we stop ours, it starts."""
        ack = self.chan.recv()
        if ack is None:
            return self.failed_badly()
        if not ack.get("ready"):
            return self.target_failed()
        self.mark("target_has_stream")
        err("migration sender: Target has acknowledged transfer.")
        with self.store.lock():
            self.store.rename(self.rec, f"{self.name}--migratedaway")
        err("migration sender: Giving target permission to start.")
        self.chan.send(go=True)
        self.mark("go_sent")
        self.final_stats()
        started = self.chan.recv()
        if started is None:
            return self.failed_badly()
        if not started.get("started"):
            return self.target_failed()
        self.timeline.update({f"target_{k}": v for k, v in started.get("timeline", {}).items()})
        err("migration sender: Target reports successful startup.")
        with self.store.lock():
            self.store.kill(self.rec)
        self.mark("source_killed")
        err("Migration successful.")
        return 0

    def final_stats(self):
        """QEMU's figures of the finished migration (it fills them in just after it reports
        ``completed``), read while the target starts."""
        try:
            with QMP(self.qmp) as q:
                self.stats = _stats(q.cmd("query-migrate"), self.stats.get("forced_stop"))
        except QMPError:
            pass  # diagnostics only

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


def _stats(info, forced):
    """What QEMU says of a finished migration (ms, bytes), for migrations.jsonl."""
    ram = info.get("ram", {})
    return {
        "status": info.get("status"),
        "downtime_ms": info.get("downtime"),
        "total_ms": info.get("total-time"),
        "setup_ms": info.get("setup-time"),
        "ram_bytes": ram.get("transferred"),
        "iterations": ram.get("dirty-sync-count"),
        "forced_stop": forced,
    }


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
    timeline = {}
    try:
        with QMP(store.qmp_path(rec)) as q:
            events_on(q)
            q.cmd("migrate-incoming", uri=uri)
            err("migration target: Ready to receive domain.")
            chan.send(uri=uri)
            status = _incoming_status(q, rec, chan)
            timeline["stream_in"] = time.time()
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
            timeline["go"] = time.time()
            if not paused:
                q.cmd("cont")
                timeline["cont"] = time.time()
                q.cmd("announce-self", **ANNOUNCE)
                timeline["announced"] = time.time()
            err("migration target: Got permission, starting domain.")
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
    chan.send(started=True, timeline=timeline)
    return 0


def _incoming_status(q, rec, chan):
    """Wait until QEMU has loaded the whole stream: ``completed``, ``failed``, ``gone`` (QEMU
    exited), ``aborted`` (the sender gave up or went away) or ``timed out``."""
    deadline = time.monotonic() + TRANSFER_TIMEOUT
    while time.monotonic() < deadline:
        if not alive(rec):
            return "gone"
        status = q.cmd("query-migrate").get("status")
        if status in ("completed", "failed", "cancelled"):
            return status
        if q.pending():  # QEMU said something already: look before waiting
            q.event("MIGRATION", 0)
            continue
        ready = select.select([q, chan.rfd], [], [], POLL)[0]
        if chan.rfd in ready:
            msg = chan.recv(timeout=1)
            if chan.eof or not msg or msg.get("abort"):
                return "aborted"
        if q in ready:
            q.event("MIGRATION", 0)
    return "timed out"
