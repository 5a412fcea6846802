"""PID 1 of a lab host: mount the host's own /etc, /run, /tmp and /var, then reap orphans.

Started by :class:`lab.hosts.Host` inside the host's network namespace and fresh mount, UTS, IPC
and PID namespaces. Killing this process ("power off") makes the kernel kill every process of
the host and drops its mounts with the mount namespace.
Usage: hostinit.py ROOT HOSTNAME [SOURCE TARGET]... (extra bind mounts, made last)
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lab import HIDDEN  # noqa: E402  (run as a script: the checkout is not on sys.path)


def mount(*args):
    subprocess.run(["mount", *args], check=True)


def main(root, hostname, *binds):
    root = Path(root)
    mount("-t", "sysfs", "sysfs", "/sys")  # this netns's view of /sys/class/net
    # drop this namespace's copies of the machine's netns handles, which would keep them alive
    umount = ["umount", "--recursive", "--lazy", "/run/netns"]
    subprocess.run(umount, check=False, capture_output=True)
    # a checkout under /tmp or /var (a CI clone, say) would vanish under the host's own folders,
    # and with it this lab's code and virtualenv: park it, then put it back at the same path
    hidden = any(REPO.is_relative_to(h) for h in HIDDEN)
    parked = root / ".host" / "checkout"
    if hidden:
        parked.mkdir(exist_ok=True)
        mount("--bind", str(REPO), str(parked))
    mount("--bind", str(root / "etc"), "/etc")
    mount("--bind", str(root / "run"), "/run")
    mount("--bind", str(root / "tmp"), "/tmp")
    # /var stays the machine's (dpkg, apt) but writes land in the host's own layer
    overlay = f"lowerdir=/var,upperdir={root / 'var'},workdir={root / '.host' / 'var-work'}"
    mount("-t", "overlay", "overlay", "-o", overlay, "/var")
    mount("--bind", str(root / "log"), "/var/log")
    if hidden:
        REPO.mkdir(parents=True, exist_ok=True)
        mount("--bind", str(parked), str(REPO))
    for source, target in zip(binds[::2], binds[1::2], strict=True):
        Path(target).mkdir(parents=True, exist_ok=True)
        mount("--bind", source, target)
    socket.sethostname(hostname)
    (root / ".host" / "ready").write_text(f"{os.getpid()}\n")
    while True:  # PID 1 inherits every orphan: reap them
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:])
