"""Bring up a salt-master and the cluster hosts that a pillar describes, on one lab segment.

The master is a lab host of its own (``master``, 10.99.0.2) serving this checkout through the
shipped ``etc/master.d/xenha.conf`` (relocated), keys auto-accepted and the reactor as shipped.
Its pillar roots are, in order: ``<run>/pillar`` (``xenha/secrets.yaml``, generated at ``up``),
``lab/pillar`` (the lab's top file, ``xenha/cluster.yaml`` and formula lookups) and the repo's
``pillar/``; the BMC passwords, generated at ``up`` too, are in the master's own configuration
(``/etc/salt/master.d/xenha-bmc.conf`` inside the master host), as on a real master; so are
the alert settings a lab is given (``xenha-alerts.conf``, the ``xenha_alerts`` option). Every host
of the cluster file becomes a lab host running its own salt-minion, sshd and chronyd (``-x``:
the machine clock is never touched), plus tgtd on the storage host; a client endpoint ``cli``
and one BMC endpoint per host with a ``bmc`` complete the segment. The salt CLIs run inside
the master host.
"""

import json
import secrets
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from lab import DEFAULT_RUN_DIR, REPO
from lab.hosts import LabError, Segment, sh, wait_for
from lab.saltconf import snippet
from lab.sanlock import Sanlock

LAB_PILLAR = REPO / "lab" / "pillar" / "xenha" / "cluster.yaml"
TGT_CONTROL_PORT = 1  # lab/pillar/lab_lookups.sls tells the iscsi formula the same
CHRONYD = ["chronyd", "-x"]
CHRONYD_PIDFILE = "/run/chrony/chronyd.pid"
# tgtd forgets its targets when it stops: load the configuration at start, as its init script does
TGTD = [
    "sh", "-c",
    f"tgtd -C {TGT_CONTROL_PORT} && for i in $(seq 100); do "
    f"tgtadm -C {TGT_CONTROL_PORT} --mode sys --op show >/dev/null 2>&1 && break; sleep 0.1; done"
    f" && tgt-admin -C {TGT_CONTROL_PORT} -e -c /etc/tgt/targets.conf",
]  # fmt: skip
# what each role gets applied: the whole top on the storage host; on VM hosts the top but
# xenha.shutdown and xenha.retired (systemd units), with lookups for what the lab lacks (iSCSI
# login, OCFS2 mount, Xen packages, systemd for sanlock: lab_lookups.sls)
ROLE_MODS = {
    "storage": [],
    "vmhost": ["xenha", "ntp", "hosts", "iscsi.initiator", "ocfs2", "xen", "sanlock"],
}
# root's authorized keys where the xen formula puts them in the lab (lab/pillar/lab_lookups.sls):
# the default, ~root/.ssh, is the machine's own /root
SSHD = ["/usr/sbin/sshd", "-o", "AuthorizedKeysFile=/etc/xenha/ssh/authorized_keys"]
MASTER_IP = "10.99.0.2"
CLI_IP = "10.99.0.20"
VENV_BIN = Path(sys.executable).parent
SALT_CLIS = ("salt", "salt-run", "salt-key")  # what an operator runs on the master


class Lab:
    """The lab cluster: ``hosts`` (minion id -> Host), ``master``, ``cli``, ``bmcs`` (id -> BMC).

    ``alerts``: the master's ``xenha_alerts`` option (docs/operations.md), written before the
    master starts (the reactor reads it then); None gives a master without alerts.
    """

    def __init__(self, run_dir=DEFAULT_RUN_DIR, pillar=LAB_PILLAR, prefix="xha", alerts=None):
        self.alerts = alerts
        self.cluster_file = Path(pillar)
        self.cluster = yaml.safe_load(self.cluster_file.read_text())
        spec = self.cluster["hosts"]
        self.segment = Segment(run_dir, prefix)
        master = [str(VENV_BIN / "salt-master"), "-d"]
        self.master = self.segment.host(
            "master", MASTER_IP, "master", hostname="salt", services=[master]
        )
        common = [SSHD, CHRONYD, [str(VENV_BIN / "salt-minion"), "-d"]]
        self.hosts = {
            mid: self.segment.host(
                mid,
                h["ip"],
                h["role"],
                hostname=h.get("hostname", mid),
                services=([TGTD] if h["role"] == "storage" else []) + common,
            )
            for mid, h in spec.items()
        }
        # each VM host's sanlock daemon starts at its power-on and joins the lockspace on the
        # lease area file (the run's xenha/sanlock.yaml names it) once the sanlock formula or
        # lab/failover.py wrote it
        vmhosts = [h for h in self.hosts.values() if h.role == "vmhost"]
        self.sanlock = Sanlock(
            self.segment.run_dir,
            vmhosts,
            host_ids={
                h.name: spec[h.name]["host_id"] for h in vmhosts if "host_id" in spec[h.name]
            },
            io_timeout=self.cluster.get("sanlock", {}).get("io_timeout", 10),
        )
        self.cli = self.segment.endpoint("cli", CLI_IP)
        self.bmcs = {
            mid: self.segment.endpoint(f"bmc-{mid.lower()}", h["bmc"]["address"])
            for mid, h in spec.items()
            if h.get("bmc")
        }

    @property
    def run_dir(self):
        return self.segment.run_dir

    @property
    def secrets_file(self):
        return self.run_dir / "pillar" / "xenha" / "secrets.yaml"

    @property
    def bmc_conf(self):
        """The master's BMC passwords (``xenha_bmc``), where the master reads them."""
        return self.master.etc / "salt" / "master.d" / "xenha-bmc.conf"

    def bmc(self, mid):
        """Host ``mid``'s BMC settings as fencing uses them: the pillar's, with the password
        from the master's configuration."""
        passwords = yaml.safe_load(self.bmc_conf.read_text())["xenha_bmc"]
        return {**self.cluster["hosts"][mid]["bmc"], **passwords[mid]}

    def pillar(self):
        """The lab's ``xenha`` pillar: the cluster file merged with this run's secrets."""
        return merge(self.cluster, yaml.safe_load(self.secrets_file.read_text()))

    def host(self, name):
        """The Host called ``name`` (a minion id or ``master``), or LabError naming it."""
        if name == "master":
            return self.master
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no lab host {name!r}; hosts: {', '.join(self.hosts)}") from None

    # --- configuration -------------------------------------------------------------------------
    def _write_master_config(self):
        conf = snippet("master")
        conf.update(
            {
                "interface": "0.0.0.0",  # noqa: S104 - inside the master's own netns
                "auto_accept": True,
                "pillar_roots": {
                    "base": [
                        str(self.run_dir / "pillar"),
                        str(self.cluster_file.parent.parent),
                        str(REPO / "pillar"),
                    ]
                },
                "log_level_logfile": "info",
            }
        )
        _write_yaml(self.master.etc / "salt" / "master", conf)

    def _write_minion_config(self, mid, host):
        conf = snippet("minion")
        conf.update(
            {
                "id": mid,
                "master": MASTER_IP,
                "acceptance_wait_time": 1,
                "random_reauth_delay": 0,
                "log_level_logfile": "info",
            }
        )
        _write_yaml(host.etc / "salt" / "minion", conf)

    def _write_secrets(self):
        """Fresh lab secrets, the migration key pair and the hosts' new ssh host keys (pillar);
        the BMC passwords (master configuration)."""
        key = self.run_dir / "keys" / "migrate"
        key.parent.mkdir(parents=True, exist_ok=True)
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xenha-migrate", "-f", str(key)])
        host_keys = {
            mid: " ".join((h.etc / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2])
            for mid, h in self.hosts.items()
        }
        data = {
            "storage": {"chap": {"secret": secrets.token_hex(8)}},
            "heartbeat": {"key": secrets.token_hex(16)},
            "xen": {
                "ssh": {
                    "private_key": key.read_text(),
                    "public_key": key.with_suffix(".pub").read_text().strip(),
                    "host_keys": host_keys,
                }
            },
        }
        _write_yaml(self.secrets_file, data)
        self.secrets_file.chmod(0o600)
        passwords = {mid: {"password": secrets.token_hex(8)} for mid in self.bmcs}
        _write_yaml(self.bmc_conf, {"xenha_bmc": passwords})
        self.bmc_conf.chmod(0o600)

    @property
    def alerts_conf(self):
        """The master's alert settings file (written only for a lab given ``alerts``)."""
        return self.master.etc / "salt" / "master.d" / "xenha-alerts.conf"

    def _write_alerts(self):
        if self.alerts is not None:
            _write_yaml(self.alerts_conf, {"xenha_alerts": self.alerts})
            self.alerts_conf.chmod(0o600)  # as on a real master: it may hold an SMTP password

    def _write_sanlock_pillar(self):
        """The lease area's path, which depends on the run folder (lab/pillar/lab_sanlock.sls)."""
        data = {"lease_path": str(self.sanlock.lease_path)}
        _write_yaml(self.run_dir / "pillar" / "xenha" / "sanlock.yaml", data)

    def _make_devices(self):
        """The image files that stand in for the LUN's disk and the OCFS2 device."""
        storage = next(h for h in self.hosts.values() if h.role == "storage")
        ocfs2 = self.cluster["ocfs2"]
        images = [
            (storage, self.cluster["storage"]["backing_device"], "64M"),
            (self.hosts[ocfs2["format_host"]], ocfs2["device"], "64M"),
        ]
        for host, path, size in images:
            host.run(["mkdir", "-p", str(Path(path).parent)])
            host.run(["truncate", "-s", size, path])

    # --- life cycle ----------------------------------------------------------------------------
    def up(self, timeout=120):
        """Build everything from scratch (after removing any previous lab of this prefix)."""
        self.segment.create()
        self._write_secrets()
        self._write_sanlock_pillar()
        self.sanlock.attach()
        self._write_master_config()
        self._write_alerts()
        for mid, host in self.hosts.items():
            self._write_minion_config(mid, host)
        self.master.power_on()
        for host in self.hosts.values():
            host.power_on()
        self._make_devices()
        self.wait_minions(timeout=timeout)
        # the xenha modules the formulas call while rendering (Salt syncs them only on highstate)
        synced = self.salt(sorted(self.hosts), "saltutil.sync_all", timeout=timeout)
        missing = sorted(set(self.hosts) - set(synced))
        if missing:
            raise LabError(f"saltutil.sync_all: no answer from {', '.join(missing)}")

    @property
    def audit_log(self):
        """The master's failover audit trail (``xenha_failover.audit_line`` lines)."""
        return self.master.root / "var" / "cache" / "salt" / "master" / "xenha" / "audit.log"

    def save_logs(self, dest):
        """Copy the master's and the minions' Salt logs, each host's sanlock log and the
        failover audit trail into ``dest`` (made if missing): the evidence of a failed run
        outlives :meth:`down`."""
        # a host's /var/log is its folder's log/
        logs = {"master.log": self.master.root / "log" / "salt" / "master"}
        logs["audit.log"] = self.audit_log
        for name, host in self.hosts.items():
            logs[f"minion-{name}.log"] = host.root / "log" / "salt" / "minion"
            logs[f"sanlock-{name}.log"] = host.root / "log" / "sanlock.log"
        Path(dest).mkdir(parents=True, exist_ok=True)
        for name, src in logs.items():
            if src.exists():
                shutil.copy(src, Path(dest) / name)

    def down(self):
        """Remove every process, namespace and file of this lab. Safe to call twice."""
        self.segment.down()

    def wait_minions(self, ids=None, timeout=120, ping_timeout=5):
        """Wait until every minion in ``ids`` (default: all hosts) answers test.ping (each
        ping waited for ``ping_timeout`` s)."""
        ids = sorted(ids or self.hosts)

        def answered():
            try:
                got = self.salt(ids, "test.ping", timeout=ping_timeout)
            except (LabError, subprocess.TimeoutExpired):  # a loaded master may miss the deadline
                return False
            return all(got.get(i) is True for i in ids)

        wait_for(answered, timeout, f"minions {', '.join(ids)} to answer", interval=1)

    # --- salt ----------------------------------------------------------------------------------
    def salt(self, tgt, fun, *args, timeout=60, **kwargs):
        """Run ``salt tgt fun args k=v`` on the master; return {minion id: return}.

        ``tgt`` is a glob or a list of ids. Minions that did not answer are absent from the result.
        """
        target = ["-L", ",".join(tgt)] if isinstance(tgt, list | tuple) else [tgt]
        argv = [
            str(VENV_BIN / "salt"), "--out=json", "--static", f"--timeout={timeout}",
            *target, fun, *args, *_kwargs(kwargs),
        ]  # fmt: skip
        return self._salt_cli(argv, timeout)

    def salt_run(self, fun, *args, timeout=120, **kwargs):
        """Run ``salt-run fun args k=v`` on the master and return its parsed JSON output."""
        argv = [str(VENV_BIN / "salt-run"), "--out=json", fun, *args, *_kwargs(kwargs)]
        return self._salt_cli(argv, timeout)

    def salt_cli(self, name, args):
        """Run the Salt command ``name`` (one of :data:`SALT_CLIS`) on the master with ``args``
        as given (an argv list, no shell), as an operator would there: its output streams to
        ours. Returns its exit status."""
        if name not in SALT_CLIS:
            raise LabError(f"{name!r} is not one of the master's commands {', '.join(SALT_CLIS)}")
        return self.master.call([str(VENV_BIN / name), *args])

    def _salt_cli(self, argv, timeout):
        proc = self.master.run(argv, check=False, timeout=timeout + 30)
        try:
            return json.loads(proc.stdout) if proc.stdout.strip() else {}
        except json.JSONDecodeError as err:
            detail = f"exit {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
            raise LabError(f"{' '.join(argv)}: {detail}") from err

    def apply(self, tgt="*", *mods, timeout=600, **kwargs):
        """``state.apply`` (highstate when no ``mods``); return {minion id: {state id: result}}."""
        args = [",".join(mods)] if mods else []
        return self.salt(tgt, "state.apply", *args, timeout=timeout, **kwargs)

    def converge(self, timeout=600):
        """Apply each host's formulas (:data:`ROLE_MODS`), all hosts at once, then restart
        chronyd where its configuration changed and start it where it is not running (the
        lab's stand-in for the formulas' ``service.running`` with ``watch``).
        Returns {minion id: {state id: result}}."""
        groups = [
            ([mid for mid, h in self.hosts.items() if h.role == role], mods)
            for role, mods in ROLE_MODS.items()
        ]
        with ThreadPoolExecutor() as pool:
            jobs = [pool.submit(self.apply, i, *mods, timeout=timeout) for i, mods in groups if i]
            ret = {}
            for job in jobs:
                ret.update(job.result())
        for mid, states in ret.items():
            changed = isinstance(states, dict) and any(
                s.get("changes") and "ntp-config" in sid for sid, s in states.items()
            )
            self.daemon(mid, CHRONYD, CHRONYD_PIDFILE, restart=changed)
        return ret

    def daemon(self, mid, argv, pidfile, restart=False, timeout=30):
        """Make sure the daemon ``argv`` (which writes ``pidfile``) runs in host ``mid``;
        with ``restart``, stop a running one first and wait until it is gone."""
        stop = (
            f'pid=$(cat {pidfile} 2>/dev/null) && kill -0 "$pid" 2>/dev/null || exit 0; '
            'kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done'
        )
        running = f'pid=$(cat {pidfile} 2>/dev/null) && kill -0 "$pid" 2>/dev/null'
        host = self.host(mid)
        if restart:
            host.run(["sh", "-c", stop], timeout=timeout)
        if host.run(["sh", "-c", running], check=False).returncode != 0:
            host.run(argv, timeout=timeout)

    def status(self):
        """{name: {"ip", "role", "powered", "link"}} for the master and every host and endpoint."""
        return {
            e.name: {
                "ip": e.ip,
                "role": getattr(e, "role", "endpoint"),
                "powered": e.is_powered() if hasattr(e, "is_powered") else e.exists(),
                "link": e.exists() and e.link_up(),
            }
            for e in self.segment.endpoints.values()
        }


def merge(base, extra):
    """``extra`` merged over ``base``, mappings recursively (a copy)."""
    if not isinstance(base, dict) or not isinstance(extra, dict):
        return extra
    return {k: merge(base.get(k), v) if k in base else v for k, v in extra.items()} | {
        k: v for k, v in base.items() if k not in extra
    }


def _kwargs(kwargs):
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in kwargs.items()]


def _write_yaml(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, default_flow_style=False))


def state_changes(ret):
    """{minion: [state ids that reported changes]} from an ``apply`` return (failures raise)."""
    changed = {}
    for mid, states in ret.items():
        if not isinstance(states, dict):
            raise LabError(f"{mid}: state.apply failed: {states}")
        failed = [k for k, v in states.items() if not v.get("result", True)]
        if failed:
            details = {k: states[k].get("comment") for k in failed}
            raise LabError(f"{mid}: states failed: {json.dumps(details, indent=1)}")
        changed[mid] = sorted(k for k, v in states.items() if v.get("changes"))
    return changed
