"""Boot-time set-up of a lab VM host for the lab toolstack (run inside the host, as root).

Usage: hostsetup.py SPEC_JSON (see lab.toolstack.setup_spec). Runs before salt-minion and sshd
on every power-on, in the host's own mount namespace, so everything it changes is the host's:
/etc/xen/lab-toolstack.json, ``xl`` on /usr/local/sbin (bind mount), and root ssh between the VM
hosts (client and server drop-ins in /etc/ssh; the lab's migration key pair, made once if the
lab did not, authorized_keys and known_hosts in the lab's ssh folder). Standard library only.
"""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

SSH_CLIENT = """\
# Managed by the xenha lab (lab/toolstack/hostsetup.py): root ssh between lab VM hosts,
# the transport of `xl migrate`.
{aliases}
Host *
    IdentityFile {identity}
    UserKnownHostsFile {ssh_dir}/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
    ServerAliveInterval 5
    ServerAliveCountMax 3
"""
SSH_SERVER = """\
# Managed by the xenha lab (lab/toolstack/hostsetup.py): the lab keypair may log in as root.
AuthorizedKeysFile .ssh/authorized_keys {ssh_dir}/authorized_keys
PermitRootLogin prohibit-password
"""


def write(path, text, mode=0o644):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def ensure_keys(ssh_dir, key, peers):
    """The migration key pair (shared by the VM hosts), authorized_keys and known_hosts."""
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(ssh_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not key.exists():
            key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xenha-lab", "-f", str(key)],
                check=True,
            )
        write(ssh_dir / "authorized_keys", key.with_name(f"{key.name}.pub").read_text(), 0o600)
        lines = []
        for peer in peers:
            kind, blob = Path(peer["host_key"]).read_text().split()[:2]
            lines.append(f"{','.join(peer['names'])} {kind} {blob}\n")
        write(ssh_dir / "known_hosts", "".join(lines))


def main(spec):
    write("/etc/xen/lab-toolstack.json", json.dumps(spec["xl"], indent=1) + "\n")
    sbin = Path("/run/lab-sbin")
    sbin.mkdir(exist_ok=True)
    (sbin / "xl").unlink(missing_ok=True)
    (sbin / "xl").symlink_to(spec["xl_path"])
    subprocess.run(["mount", "--bind", str(sbin), "/usr/local/sbin"], check=True)
    ssh_dir = Path(spec["ssh_dir"])
    identity = Path(spec["identity"])
    ensure_keys(ssh_dir, identity, spec["peers"])
    aliases = "".join(
        f"Host {' '.join(p['names'])}\n    HostName {p['ip']}\n" for p in spec["peers"]
    )
    client = SSH_CLIENT.format(aliases=aliases, ssh_dir=ssh_dir, identity=identity)
    write("/etc/ssh/ssh_config.d/xenha-lab.conf", client)
    write("/etc/ssh/sshd_config.d/xenha-lab.conf", SSH_SERVER.format(ssh_dir=ssh_dir))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
