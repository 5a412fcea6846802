"""
Per-domU lease keeper: holds one domU's sanlock resource lease for as long as the domU may run.

Not a Salt utility: ``xenha_sanlock.acquire`` runs it as a program with Debian's python3 (the one
with python3-sanlock); only the standard library and ``sanlock`` are used, imported at run time::

    python3 xenha_sanlockkeeper.py --lockspace xenha --resource NAME --path PATH --offset N \
        --domu NAME --toolstack /usr/sbin/xl [--shared] [--poll 1] [--start-grace 600] \
        [--log FILE]

``--shared`` takes the lease in shared mode (the target's side of a live migration's
hand-over; ``xenha_sanlock.exclusive`` converts it afterwards).

The command returns once the lease is held or refused, printing one JSON line: ``{"pid": N}``
(exit 0; the holder lives on in the background, in a session of its own) or ``{"error": rc,
"message": ..., "owners": [host_id, ...]}`` (exit 2; sanlock's rc, e.g. -243: held by a live
host). The holder:

- registers with the local sanlock daemon and sets the killpath ``<toolstack> destroy <domu>``,
  which sanlock runs when the lease must go (its lockspace fails, or another host requests it);
- restricts SIGKILL, so sanlock's escalation sends SIGTERM: on SIGTERM the holder destroys the
  domU itself and exits only when the toolstack no longer lists it. If that never happens it
  holds on, sanlock stops renewing the watchdog, and the watchdog resets the host: the lease is
  never freed while the domU may still run;
- asks the OOM killer to spare it (oom_score_adj -1000);
- releases the lease and exits when the domU, once seen running, is gone (shut down, migrated
  away, destroyed), when it never appears within ``--start-grace`` seconds, or on SIGUSR1
  (``xenha_sanlock.release``, which first checks that the domU is not running here).
"""

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

RESTRICT_SIGKILL = 0x2  # SANLK_RESTRICT_SIGKILL (sanlock_resource.h)
LIST_TIMEOUT = 30


def listed(toolstack, domu):
    """Whether the toolstack lists ``domu`` (True/False), or None when it cannot tell."""
    try:
        proc = subprocess.run(
            [toolstack, "list"], capture_output=True, text=True, timeout=LIST_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()]
    # a migration's copies count: the lease stays while any copy of the domU is here
    return bool(
        {domu, f"{domu}--incoming", f"{domu}--migratedaway", f"migrating-{domu}"} & set(names)
    )


class Keeper:
    def __init__(self, args, sanlock):
        self.args = args
        self.sanlock = sanlock
        self.lockspace = args.lockspace.encode()
        self.resource = args.resource.encode()
        self.disks = [(args.path, args.offset)]
        self.fd = None
        self.signal = None
        self.seen = False  # the toolstack has listed the domU since the lease was taken
        self.start = None

    def log(self, text):
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.args.domu}: {text}", flush=True)

    def acquire(self):
        sl = self.sanlock
        self.fd = sl.register()
        sl.killpath(self.args.toolstack, ["destroy", self.args.domu], slkfd=self.fd)
        lib = ctypes.CDLL("libsanlock.so.1")
        rv = lib.sanlock_restrict(self.fd, RESTRICT_SIGKILL)
        if rv < 0:
            raise sl.SanlockException(rv, "sanlock_restrict failed", os.strerror(-rv))
        sl.acquire(
            self.lockspace, self.resource, self.disks, slkfd=self.fd, shared=self.args.shared
        )

    def owners(self):
        with contextlib.suppress(Exception):  # only decorates an error report
            got = self.sanlock.read_resource_owners(self.lockspace, self.resource, self.disks)
            return sorted(o["host_id"] for o in got)
        return []

    def release(self, why):
        self.log(f"releasing: {why}")
        with contextlib.suppress(self.sanlock.SanlockException):
            self.sanlock.release(self.lockspace, self.resource, self.disks, slkfd=self.fd)
        os.close(self.fd)

    def on_signal(self, signum, frame):
        self.signal = signum

    def look(self, now):
        """One look at the domU: why to let the lease go now, or None to keep holding it."""
        args = self.args
        state = listed(args.toolstack, args.domu)
        if self.signal == signal.SIGTERM:
            if state is False:
                return "fenced: the domU is gone"
            self.log("SIGTERM: destroying the domU")
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [args.toolstack, "destroy", args.domu],
                    capture_output=True,
                    timeout=LIST_TIMEOUT,
                    check=False,
                )
            return None
        if state:
            self.seen = True
        elif state is False and self.seen:
            return "the domU is gone"
        elif state is False and now - self.start > args.start_grace:
            return f"the domU did not start in {args.start_grace} s"
        return None

    def hold(self):
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGUSR1, self.on_signal)
        self.start = next_check = time.monotonic()
        fencing = False
        while True:
            if self.signal == signal.SIGUSR1:
                return self.release("asked to release")
            now = time.monotonic()
            if now >= next_check or (self.signal == signal.SIGTERM and not fencing):
                fencing = self.signal == signal.SIGTERM
                next_check = now + self.args.poll
                try:
                    why = self.look(now)
                except Exception as err:  # noqa: BLE001 -- a bug must never let go of a lease
                    self.log(f"holding on after an error: {err!r}")
                    why = None
                if why:
                    return self.release(why)
            time.sleep(0.1)


def report(fd, message):
    os.write(fd, json.dumps(message).encode())
    os.close(fd)


def main(argv=None):
    parser = argparse.ArgumentParser(description="hold one domU's sanlock lease")
    for name in ("--lockspace", "--resource", "--path", "--domu", "--toolstack"):
        parser.add_argument(name, required=True)
    parser.add_argument("--offset", type=int, required=True)
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--start-grace", type=float, default=600.0)
    parser.add_argument("--log", default=os.devnull)
    args = parser.parse_args(argv)
    import sanlock  # noqa: PLC0415  (Debian's python3-sanlock; absent from Salt's own Python)

    rfd, wfd = os.pipe()
    if os.fork():
        os.close(wfd)
        with os.fdopen(rfd, "rb") as pipe:
            data = pipe.read()
        message = json.loads(data) if data else {"error": -1, "message": "keeper died"}
        print(json.dumps(message))
        return 0 if "pid" in message else 2
    os.close(rfd)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.makedirs(os.path.dirname(args.log) or ".", exist_ok=True)
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for fd, source in ((0, null), (1, log), (2, log)):
        os.dup2(source, fd)
    # the OOM killer must not free a lease whose domU runs on (sanlock protects itself the same)
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("-1000")
    keeper = Keeper(args, sanlock)
    try:
        keeper.acquire()
    except sanlock.SanlockException as err:
        keeper.log(f"acquire failed: {err}")
        report(wfd, {"error": err.errno, "message": str(err), "owners": keeper.owners()})
        return 2
    keeper.log(f"holding {args.resource} at {args.path}:{args.offset}")
    report(wfd, {"pid": os.getpid()})
    keeper.hold()
    return 0


if __name__ == "__main__":
    sys.exit(main())
