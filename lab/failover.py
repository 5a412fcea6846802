"""Automatic failover in the lab: domUs in the pillar, their sanlock leases, events.

The product's failover needs, on top of what :class:`lab.cluster.Lab` builds (minions with the
heartbeat beacon, the master's reactor and schedule, BMCs from :mod:`lab.bmc`, a sanlock daemon
in every VM host from :mod:`lab.sanlock`):

- the ``xenha`` lockspace on the lab's lease area (``<run>/shared/sanlock/leases``) with every
  VM host joined (what the sanlock formula does at ``state.apply``; :meth:`Failover.enable`
  does it too, for labs that apply no formulas);
- the domUs under ``xenha:domus`` with their configs in ``<run>/shared/domus`` (the folder that
  stands in for the OCFS2 mount; ``xenha:domus`` and ``xenha:ocfs2:mount_point`` come from
  ``<run>/pillar/xenha/failover.yaml``, which ``lab/pillar/failover.sls`` merges in), and each
  domU's resource lease area (``xenha_sanlock.init``);
- an event recorder on the master (``<run>/failover/events.jsonl``: every ``xenha/*`` and
  ``xenha_heartbeat`` event with the time it was seen), from which :func:`timeline` reads.

:func:`isolate_storage` takes a host's storage away: an empty tmpfs over the shared folder in
the host's own mount namespace, and the I/O of its sanlock daemon fails (the daemon keeps the
lease area open, so the tmpfs alone would not reach it: the lab's sanlock shim fails its disk
I/O while ``/run/xenha-lab/storage-cut`` exists in the host, see :mod:`lab.sanlock`). Its
delta lease then stops; after 8 x io_timeout its sanlock runs the killpath of every domU it
holds, as on a host that lost its lease LUN. :func:`restore_storage` gives both back.
"""

import contextlib
import json
import shlex
import sys
import threading
import time
from pathlib import Path

import yaml

from lab import vm
from lab.cluster import merge
from lab.hosts import LabError, identity, kill_all, wait_for

RECORDER_PIDFILE = "/run/xenha-recorder.pid"
NO_STORAGE = "xenha-nostorage"  # the tmpfs that hides the shared folder from an isolated host
STORAGE_CUT = "/run/xenha-lab/storage-cut"  # while it exists, the host's sanlock I/O fails

# the master's event recorder (run inside the master host with the lab's Python, which has Salt)
RECORDER = """
import json, sys, time
import salt.config, salt.utils.event
opts = salt.config.master_config("/etc/salt/master")
with open(sys.argv[1], "a") as out:
    while True:
        try:
            bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
            while True:
                ev = bus.get_event(full=True, wait=1, auto_reconnect=True)
                if ev and (ev["tag"].startswith("xenha/") or "/xenha_heartbeat/" in ev["tag"]):
                    out.write(json.dumps({"t": time.time(), "tag": ev["tag"], "data": ev["data"]},
                                         default=str) + "\\n")
                    out.flush()
        except Exception as err:
            print(f"recorder: {err}; retrying", file=sys.stderr, flush=True)
            time.sleep(1)
"""


def _daemon(argv, pidfile, log):
    """A host service: ``argv`` in the background (its own session), restarted when it exits."""
    loop = f"while :; do {shlex.join(argv)}; sleep 1; done"
    return [
        "sh", "-c",
        f"setsid sh -c {shlex.quote(loop)} >>{log} 2>&1 </dev/null & echo $! >{pidfile}",
    ]  # fmt: skip


def _running(host, pidfile):
    check = f'pid=$(cat {pidfile} 2>/dev/null) && kill -0 "$pid" 2>/dev/null'
    return host.is_powered() and host.run(["sh", "-c", check], check=False).returncode == 0


class Failover:
    """Failover plumbing for ``lab`` (a :class:`lab.cluster.Lab` that is up)."""

    def __init__(self, lab):
        self.lab = lab
        self.shared = lab.run_dir / "shared"
        self.pillar_file = lab.run_dir / "pillar" / "xenha" / "failover.yaml"
        self.dir = lab.run_dir / "failover"
        self.events_file = self.dir / "events.jsonl"
        self.vmhosts = [h for h, s in lab.cluster["hosts"].items() if s.get("role") == "vmhost"]

    # --- set-up --------------------------------------------------------------------------------
    def enabled(self):
        return self.pillar_file.exists()

    def _pillar(self):
        return yaml.safe_load(self.pillar_file.read_text()) if self.enabled() else {}

    def _write_pillar(self, data):
        self.pillar_file.parent.mkdir(parents=True, exist_ok=True)
        self.pillar_file.write_text(yaml.safe_dump(data, default_flow_style=False))
        # pillar/xenha/init.sls derives the VM hosts' pillar beacons (xenha_guests once a domU
        # has a monitor) from xenha/cluster.yaml alone, where a real site keeps its domUs:
        # shadow the lab's with a copy holding the same keys (the run folder is the first
        # pillar root), so the merged pillar is unchanged and the derivation sees the domUs
        cluster = self.pillar_file.with_name("cluster.yaml")
        merged = merge(self.lab.cluster, data.get("xenha") or {})
        cluster.write_text(yaml.safe_dump(merged, default_flow_style=False))

    def recorder_argv(self):
        log = self.dir / "recorder.log"
        argv = [sys.executable, "-c", RECORDER, str(self.events_file)]
        return _daemon(argv, RECORDER_PIDFILE, log)

    def attach(self):
        """Add the event recorder to the master's services, so every later power-on starts
        it. Idempotent; a no-op unless failover is enabled."""
        if self.enabled() and self.recorder_argv() not in self.lab.master.services:
            self.lab.master.services.append(self.recorder_argv())

    def enable(self, timeout=120):
        """Switch failover on in a lab that is up: pillar, lockspace, recorder."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.events_file.touch()
        data = self._pillar() or {"xenha": {"domus": {}}}
        # the folder that stands in for the OCFS2 mount is the mount point: the pillar check
        # wants the domU configs inside it
        data["xenha"]["ocfs2"] = {"mount_point": str(self.shared)}
        self._write_pillar(data)
        self.attach()
        self.refresh(timeout)
        self.ensure_services()
        self.join(timeout)

    def join(self, timeout=120):
        """The lockspace on the lease area with every powered VM host in it (the sanlock
        formula's ``lockspace_present`` and ``joined``, for labs that apply no formulas)."""
        slots = self.lab.cluster["sanlock"]["slots"]
        self.lab.sanlock.make_area((1 + slots) << 20)  # 1 MiB for the lockspace, 1 per slot
        self.init_leases(timeout)
        hosts = [h for h in self.vmhosts if self.lab.hosts[h].is_powered()]
        for host in hosts:
            self.lab.sanlock.wait(self.lab.hosts[host], timeout)
        self.rejoin(hosts)

    def init_leases(self, timeout=120):
        """Write the lease area of every domU in the pillar that has none (and the lockspace
        if the area has none), on the first powered VM host; returns what was written."""
        host = self._reader()
        return self._call(host, "xenha_sanlock.init", timeout=timeout)

    def refresh(self, timeout=120):
        """Make the minions read the failover pillar (the master compiles it afresh anyway)."""
        got = self.lab.salt(self.vmhosts, "saltutil.refresh_pillar", "wait=True", timeout=timeout)
        missing = sorted(set(self.vmhosts) - set(got))
        if missing:
            raise LabError(f"saltutil.refresh_pillar: no answer from {', '.join(missing)}")

    def ensure_services(self):
        """Start the recorder if the master is on and it does not run."""
        master = self.lab.master
        if master.is_powered() and not _running(master, RECORDER_PIDFILE):
            master.run(self.recorder_argv(), timeout=30)

    def define_domu(self, name, ip, *, priority=100, preferred_host=None, memory=128):
        """Give domU ``name`` a disk and config (:class:`lab.vm.DomUs`), put it under
        ``xenha:domus`` and write its lease area (the VM hosts read the new pillar first);
        returns the config's path. Start it with :meth:`start_domu`."""
        cfg = vm.DomUs(self.lab).define(name, ip, memory=memory)
        data = self._pillar() or {"xenha": {}}
        entry = {"config": str(cfg), "memory_mib": memory, "priority": priority}
        if preferred_host:
            entry["preferred_host"] = preferred_host
        data["xenha"].setdefault("domus", {})[name] = entry
        self._write_pillar(data)
        self.refresh()
        self.init_leases()
        return cfg

    def update_domu(self, name, **fields):
        """Set ``fields`` (e.g. ``monitor={...}``) in domU ``name``'s ``xenha:domus`` entry of
        this run's pillar, a lab-only override, and make the VM hosts read it (their pillar
        beacons follow)."""
        data = self._pillar()
        try:
            data["xenha"]["domus"][name].update(fields)
        except (KeyError, TypeError):
            raise LabError(f"{self.pillar_file}: no domU {name!r} (define_domu first)") from None
        self._write_pillar(data)
        self.refresh()

    def start_domu(self, name, host_id, timeout=120):
        """Start ``name`` on ``host_id`` as the product does (``xenha_xen.start``: the domU's
        sanlock lease first, refused while a live host holds it); returns the xl row."""
        spec = self._pillar()["xenha"]["domus"][name]
        return self._call(host_id, "xenha_xen.start", spec["config"], timeout=timeout)

    # --- leases --------------------------------------------------------------------------------
    def _call(self, host_id, fun, *args, timeout=60):
        """``salt host_id fun args``: its answer, which must be a mapping (else LabError)."""
        got = self.lab.salt(host_id, fun, *args, timeout=timeout).get(host_id)
        if not isinstance(got, dict):
            raise LabError(f"{host_id}: {fun} {' '.join(args)}: {got}")
        return got

    def _reader(self, exclude=()):
        """A powered VM host that sees the storage, to read the lease area through."""
        for host_id in self.vmhosts:
            host = self.lab.hosts[host_id]
            if host_id not in exclude and host.is_powered() and not self.storage_isolated(host_id):
                return host_id
        raise LabError("no powered VM host with its storage to read the leases through")

    def holders(self, host_id=None):
        """``{domU: {"mode": "ex"|"sh", "hosts": [...]}}`` of the leases held now, as the
        lease area says (``xenha_sanlock.holders``); with ``host_id``, those it holds."""
        args = [f"host={host_id}"] if host_id else []
        return self._call(self._reader(), "xenha_sanlock.holders", *args)

    def holder(self, name):
        """The hosts holding domU ``name``'s lease ([] when free)."""
        return self.holders().get(name, {}).get("hosts", [])

    def renews(self, host_id):
        """Whether ``host_id``'s delta lease advances, watched from another VM host."""
        seen = self._call(self._reader(exclude=(host_id,)), "xenha_sanlock.observe", host_id)
        return seen["state"] == "advancing"

    def rejoin(self, host_ids=None):
        """Join the powered ``host_ids`` (default: every VM host) to the lockspace where their
        sanlock left it, as the sanlock formula's next ``state.apply`` does: a host whose
        storage came back after 8 x io_timeout lost its lockspace (its killpaths ran) and
        stays out until then. Returns the hosts that joined."""
        hosts = [h for h in host_ids or self.vmhosts if self.lab.hosts[h].is_powered()]
        got = self.lab.salt(hosts, "xenha_sanlock.join", timeout=120) if hosts else {}
        # -115 (EINPROGRESS): the boot-time join is still under way, which is no failure
        failed = {
            h: got.get(h)
            for h in hosts
            if not isinstance(got.get(h), dict) and "done -115" not in str(got.get(h))
        }
        if failed:
            raise LabError(f"xenha_sanlock.join: {failed}")
        return [h for h in hosts if isinstance(got[h], dict) and got[h]["changed"]]

    def release(self, name, host_id):
        """Let ``host_id``'s keeper of ``name`` go (the domU no longer runs there)."""
        return self._call(host_id, "xenha_sanlock.release", name)

    def bridge(self, name, src, dst):
        """Before a live migration ``src`` -> ``dst``: both hold the lease shared, as the
        evacuation mover hands it over (``share`` on the source, shared ``acquire`` on the
        target)."""
        self._call(src, "xenha_sanlock.share", name)
        self._call(dst, "xenha_sanlock.acquire", name, "shared=True")

    def arrived(self, name, src, dst):
        """After the migration: the target makes its lease exclusive once the source's keeper
        let go (``xenha_preflight.arrived handover_from=src``); LabError if it did not."""
        # no wait=: the migration has returned, the domU runs there already (with wait= that
        # reads as "ran here before", lease left alone); exclusive retries up to 60 s itself
        args = [name, f"handover_from={src}"]
        got = self._call(dst, "xenha_preflight.arrived", *args, timeout=180)
        if not got.get("here") or got.get("lease") != "taken":
            raise LabError(f"{dst}: xenha_preflight.arrived {name} handover_from={src}: {got}")
        return got

    # --- storage -------------------------------------------------------------------------------
    def storage_isolated(self, host_id):
        host = self.lab.host(host_id)
        mounts = host.run(["cat", "/proc/self/mounts"]).stdout.splitlines()
        return any(m.split()[:2] == [NO_STORAGE, str(self.shared)] for m in mounts)

    def isolate_storage(self, host_id, sanlock=True):
        """Take the shared storage away from ``host_id`` only: an empty read-only tmpfs over
        the shared folder (domU configs, lease area) in its own mount namespace, and its
        sanlock daemon's disk I/O fails (:data:`STORAGE_CUT`). With ``sanlock=False`` only
        the folder goes: the daemon renews through the lease area it holds open, while the
        host's readers of the lease area (``xenha_sanlock.observe``, ``holders``) fail."""
        host = self.lab.host(host_id)
        if sanlock:
            cut = STORAGE_CUT.rsplit("/", 1)[0]
            host.run(["sh", "-c", f"mkdir -p {cut} && touch {STORAGE_CUT}"])
        if not self.storage_isolated(host_id):
            argv = ["mount", "-t", "tmpfs", "-o", "ro,size=4k", NO_STORAGE, str(self.shared)]
            host.run(argv)

    def restore_storage(self, host_id):
        """Give ``host_id`` its view of the shared folder and its sanlock I/O back."""
        host = self.lab.host(host_id)
        if not host.is_powered():
            return  # a power-on starts with neither the tmpfs nor the cut
        host.run(["rm", "-f", STORAGE_CUT])
        if self.storage_isolated(host_id):
            host.run(["umount", str(self.shared)])

    # --- the master ----------------------------------------------------------------------------
    def master_pids(self):
        """Root-namespace PIDs of the salt-master processes (daemon, workers, reactor runs)."""
        return [p for p in self.lab.master.pids() if b"salt-master" in _cmdline(p)]

    def kill_master(self, timeout=30):
        """SIGKILL every salt-master process (the runners it runs die with it), as an OOM kill
        or a crash would; the master host and its network stay up."""
        pids = self.master_pids()
        kill_all(pids, timeout, "the salt-master processes to die")
        return pids

    def start_master(self, timeout=60):
        """Start salt-master again (its pillar, keys, cache and failover journals kept), and a
        new event recorder: the old one's bus subscription died with the master."""
        master = self.lab.master
        master.run([str(Path(sys.executable).with_name("salt-master")), "-d"], timeout=timeout)
        stop = f'kill -KILL -- "-$(cat {RECORDER_PIDFILE})" 2>/dev/null; rm -f {RECORDER_PIDFILE}'
        master.run(["sh", "-c", stop], check=False)
        self.ensure_services()

    # --- what happened -------------------------------------------------------------------------
    def events(self, tag_prefix="", since=0.0):
        """Recorded events (``{"t", "tag", "data"}``, oldest first) whose tag starts with
        ``tag_prefix`` and that were seen at or after ``since`` (time.time())."""
        if not self.events_file.exists():
            return []
        found = []
        for line in self.events_file.read_text().splitlines():
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if ev["tag"].startswith(tag_prefix) and ev["t"] >= since:
                    found.append(ev)
        return found

    def wait_event(self, tag_prefix, since, timeout, what=None):
        """Wait for the first event ``tag_prefix``... seen after ``since``; returns it."""
        return wait_for(
            lambda: (found := self.events(tag_prefix, since)) and found[0],
            timeout,
            what or f"event {tag_prefix}",
            interval=0.5,
        )

    def audit(self, since=None):
        """The master's audit trail (``xenha_failover.audit_line`` lines)."""
        path = self.lab.audit_log
        lines = path.read_text().splitlines() if path.exists() else []
        return lines if since is None else [x for x in lines if x[:20] >= _stamp(since)]

    def journal(self, host_id):
        """The master's failover journal for ``host_id`` ({} if none)."""
        path = self.lab.master.root / "var" / "cache" / "salt" / "master" / "xenha"
        path = path / f"failover-{host_id}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def timeline(self, host_id, since):
        """Seconds from ``since`` (e.g. the crash, time.time()) to each step of the failover
        of ``host_id``, from the recorded events: ``lost`` (first heartbeat loss reported),
        ``started``, ``verified``, ``corroborated``, ``fenced``, ``domu_started:<name>``,
        ``done``, ``blocked``, ``ignored``; plus ``fence`` (method), ``fence_s`` (the fence's own
        seconds), ``start_s:<name>`` (the start call's own seconds) and ``reporter``."""
        steps = {}
        for ev in self.events("", since):
            tag, data = ev["tag"], ev["data"]
            if tag.endswith("/xenha_heartbeat/lost") and data.get("peer") == host_id:
                steps.setdefault("lost", ev["t"] - since)
                steps.setdefault("reporter", data.get("id"))
            elif tag.startswith(f"xenha/failover/{host_id}/"):
                what = tag.rsplit("/", 1)[1]
                key = f"{what}:{data.get('domu')}" if what == "domu_started" else what
                steps.setdefault(key, ev["t"] - since)
                if what == "domu_started" and data.get("seconds") is not None:
                    steps.setdefault(f"start_s:{data.get('domu')}", data["seconds"])
                if what == "fenced":
                    steps.setdefault("fence", data.get("method"))
                    if data.get("seconds") is not None:
                        steps.setdefault("fence_s", data["seconds"])
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in steps.items()}


# what any minion with its key can put on the master bus: events in a beacon's own layout
FORGER = """
import json, sys
import salt.channel.client, salt.config, salt.minion
opts = salt.config.minion_config("/etc/salt/minion")
opts.update(salt.minion.resolve_dns(opts))
with salt.channel.client.ReqChannel.factory(opts) as channel:
    channel.send({"id": opts["id"], "cmd": "_minion_event", "pretag": None,
                  "tok": channel.auth.gen_token(b"salt"),
                  "events": [{"tag": sys.argv[1], "data": json.loads(sys.argv[2])}]}, timeout=30)
"""


def forge_event(lab, minion_id, tag, data):
    """Send an event with ``tag`` and ``data`` to the master as minion ``minion_id`` does
    for its beacons (so the data sits directly under the tag): a forged claim."""
    argv = [sys.executable, "-c", FORGER, tag, json.dumps(data)]
    lab.host(minion_id).run(argv, timeout=60)


def _stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def enable_failover(lab, timeout=120):
    """Switch automatic failover on in ``lab`` (up): see :class:`Failover`; returns it."""
    fo = Failover(lab)
    fo.enable(timeout)
    return fo


def attach(lab):
    """At power-on time (e.g. a BMC's power on): start the failover services (the master's
    event recorder) if this lab has failover enabled."""
    Failover(lab).attach()


# --- never two copies ----------------------------------------------------------------------------


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _qemu_guest(argv):
    """The domain name a lab QEMU was started as (``-name guest=NAME``), or None."""
    for arg in argv:
        if arg.startswith(b"guest="):
            return arg[len(b"guest=") :].decode(errors="replace")
    return None


def running_on(lab, name):
    """The VM hosts where a QEMU of domU ``name`` is alive right now (not a zombie).

    A QEMU started by ``xl migrate-receive`` keeps ``name--incoming`` on its command line after
    it took the name, so it counts too; a live migration therefore shows two copies (one paused)
    while it lasts."""
    where = set()
    for host_id, host in lab.hosts.items():
        if host.role != "vmhost":
            continue
        for pid in host.pids():
            started_as = _qemu_guest(_cmdline(pid).split(b"\0"))
            if started_as in (name, f"{name}--incoming") and identity(pid):
                where.add(host_id)
    return where


class Watch:
    """Samples where domU ``name`` runs (every ``interval`` s, from outside the hosts) until
    stopped; ``samples`` is [(time, sorted hosts)], ``doubles`` those with two or more."""

    def __init__(self, lab, name, interval=0.2):
        self.lab, self.name, self.interval = lab, name, interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), sorted(running_on(self.lab, self.name))))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def doubles(self):
        return [s for s in self.samples if len(s[1]) > 1]

    def last_on(self, host_id):
        """Time of the last sample that saw it on ``host_id`` (None if never)."""
        times = [t for t, hosts in self.samples if host_id in hosts]
        return times[-1] if times else None

    def first_on(self, host_id, after=0.0):
        times = [t for t, hosts in self.samples if host_id in hosts and t >= after]
        return times[0] if times else None
