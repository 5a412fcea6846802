"""Boot-time set-up of a lab VM host for the lab toolstack (run inside the host, as root).

Usage: hostsetup.py SPEC_JSON (see lab.toolstack.setup_spec). Runs before salt-minion and sshd
on every power-on, in the host's own mount namespace, so everything it changes is the host's:
/etc/xen/lab-toolstack.json and ``xl`` on /usr/local/sbin (bind mount), where root's PATH, the
minion's and the xen formula's forced migration command find it. Root ssh between the VM hosts
(key pair, authorized key, forced command, pinned host keys) is the product's xen formula's
work (``Lab.converge``). Standard library only.
"""

import json
import os
import subprocess
import sys
from pathlib import Path


def write(path, text, mode=0o644):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def main(spec):
    write("/etc/xen/lab-toolstack.json", json.dumps(spec["xl"], indent=1) + "\n")
    sbin = Path("/run/lab-sbin")
    sbin.mkdir(exist_ok=True)
    (sbin / "xl").unlink(missing_ok=True)
    (sbin / "xl").symlink_to(spec["xl_path"])
    subprocess.run(["mount", "--bind", str(sbin), "/usr/local/sbin"], check=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
