# ruff: noqa: UP031 -- printf-style formats are copied from Xen's C and Python 2 sources on purpose
"""
Stand-in for the Xen toolstack (``xl`` and the xend-era ``xm``) used by xenha's tests.

It is NOT Xen: no hypervisor, no guests. It keeps each "host"'s domains in a JSON file in a
directory shared by the hosts of a test and prints what the real tools print (formats and
messages taken from Xen's source: tools/xl/xl_info.c, xl_vmcontrol.c, xl_migrate.c,
tools/python/xen/xm/main.py), so the code under test parses real-looking output.

Environment:
  XENHA_STANDIN_DIR   shared state directory (``<host>.json`` per host, ``lock``, ``faults.json``,
                      ``calls.log``); create hosts with ``cluster.StandinCluster``
  XENHA_STANDIN_HOST  which host this process is

Fault injection (``faults.json``: ``{"host": {"verb": mode}}``): ``fail`` makes the verb fail
with the toolstack's own kind of message, ``hang`` makes it sleep until killed, ``ignore`` (for
``shutdown``) makes the guest ignore the request, ``break`` (for ``migrate``) fails xl's final
handshake and leaves ``<name>--migratedaway`` / ``<name>--incoming`` behind. A host with
``"up": false`` is unreachable for migrations.

Standard library only: the scripts run under any python3 on PATH.
"""

import contextlib
import fcntl
import json
import os
import re
import sys
import time
import uuid

XL_LIST_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
XL_LIST_ROW = "%-40s %5d %5lu %5d     %s  %8.1f"
XM_LIST_HEADER = "%-40s %5s %5s %5s %10s %9s" % ("Name", "ID", "Mem", "VCPUs", "State", "Time(s)")
XM_LIST_ROW = "%-40s %5s %5d %5d %10s %8.1f"
DOM0 = "Domain-0"
RUNNING, PAUSED, SUSPENDED = "-b----", "--p---", "---ss-"
INVALID_DOMAIN_EXIT = 3  # xm exits with xend's ERROR_INVALID_DOMAIN fault code


class Exit(Exception):
    """End the command with this status (messages are already printed)."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def err(*lines):
    for line in lines:
        print(line, file=sys.stderr)
    sys.stderr.flush()


# ---------------------------------------------------------------- state files


class State:
    """The shared state directory; every read-modify-write happens under ``lock()``."""

    def __init__(self, path):
        self.path = path

    def host_file(self, host):
        return os.path.join(self.path, f"{host}.json")

    def hosts(self):
        return sorted(
            f[:-5] for f in os.listdir(self.path) if f.endswith(".json") and f != "faults.json"
        )

    def exists(self, host):
        return os.path.isfile(self.host_file(host))

    def load(self, host):
        with open(self.host_file(host)) as fh:
            data = json.load(fh)
        # A shutdown request completes when its time comes (the guest powers off).
        now = time.time()
        for name in [
            n
            for n, d in data["domains"].items()
            if d.get("shutdown_at") and d["shutdown_at"] <= now
        ]:
            del data["domains"][name]
        return data

    def save(self, data):
        tmp = self.host_file(data["name"]) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.host_file(data["name"]))

    @contextlib.contextmanager
    def lock(self):
        with open(os.path.join(self.path, "lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def faults(self, host):
        try:
            with open(os.path.join(self.path, "faults.json")) as fh:
                return json.load(fh).get(host, {})
        except FileNotFoundError:
            return {}

    def log_call(self, host, tool, argv):
        with open(os.path.join(self.path, "calls.log"), "a") as fh:
            fh.write(
                json.dumps({"host": host, "tool": tool, "argv": argv, "time": time.time()}) + "\n"
            )


def new_host(name, memory_mib=4096, nr_cpus=2, xen_version="4.17.3", dom0_mib=512):
    """The JSON document of a host with no domUs."""
    return {
        "name": name,
        "up": True,
        "total_memory": memory_mib,
        "dom0_memory": dom0_mib,
        "nr_cpus": nr_cpus,
        "xen_version": xen_version,
        "next_domid": 1,
        "migrate_delay": 0.0,
        "shutdown_delay": 0.0,
        "relocation": {"port": 8002, "ssl_port": 8003, "server": True, "ssl_server": False},
        "domains": {},
        "booted": time.time(),
    }


def free_memory(host):
    return (
        host["total_memory"]
        - host["dom0_memory"]
        - sum(d["memory"] for d in host["domains"].values())
    )


def add_domain(host, name, memory, vcpus, *, state=RUNNING, dom_uuid=None, config=None, disks=None):
    """``disks``: libxl disk records (see :func:`parse_disk`), as ``xl list -l`` shows them."""
    domid = host["next_domid"]
    host["next_domid"] += 1
    host["domains"][name] = {
        "domid": domid,
        "memory": memory,
        "vcpus": vcpus,
        "state": state,
        "uuid": dom_uuid or str(uuid.uuid4()),
        "config": config,
        "disks": list(disks or []),
        "started": time.time(),
        "shutdown_at": None,
    }
    return host["domains"][name]


def copy_domain(host, name, dom):
    """The paused copy a migration target builds (same uuid and config, a new domid)."""
    return add_domain(
        host,
        name,
        dom["memory"],
        dom["vcpus"],
        state=PAUSED,
        dom_uuid=dom["uuid"],
        config=dom["config"],
        disks=dom.get("disks"),
    )


def cpu_time(dom):
    return max(0.0, time.time() - dom["started"]) * 0.05


def find(host, ident):
    """A domain by name or numeric domid, as xl's find_domain accepts; None when unknown."""
    if ident in host["domains"]:
        return ident
    if ident.isdigit():
        for name, dom in host["domains"].items():
            if dom["domid"] == int(ident):
                return name
    return None


def parse_cfg(path):
    """
    The few keys a stand-in needs from an xl/xm config: name, memory (MiB), vcpus, and the
    ``disk = [ '...', ... ]`` list as libxl disk records (:func:`parse_disk`).
    """
    values = {}
    with open(path) as fh:
        text = fh.read()
    for line in text.splitlines():
        match = re.match(r"\s*([A-Za-z_]\w*)\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|(\d+))", line)
        if match:
            key, dq, sq, num = match.groups()
            values[key] = int(num) if num is not None else (dq if dq is not None else sq)
    disks = re.search(r"^\s*disk\s*=\s*\[(.*?)\]", text, re.M | re.S)
    if disks:
        specs = re.findall(r"\"([^\"]*)\"|'([^']*)'", disks.group(1))
        values["disk"] = [parse_disk(dq or sq) for dq, sq in specs]
    return values


DISK_FORMATS = ("raw", "qcow", "qcow2", "vhd", "qed")
# xl's deprecated target prefixes (docs/man/xl-disk-configuration.5.pod): backend, format
DISK_PREFIXES = {
    "phy:": ("phy", "raw"),
    "file:": ("unknown", "raw"),
    "tap:aio:": ("tap", "raw"),
    "tap:qcow:": ("tap", "qcow"),
    "tap:qcow2:": ("tap", "qcow2"),
    "tap:vhd:": ("tap", "vhd"),
    "aio:": ("tap", "raw"),
    "raw:": ("unknown", "raw"),
    "qcow2:": ("unknown", "qcow2"),
}


def _disk_keyword(disk, key, value):
    if key in ("vdev", "format"):
        disk[key] = value
    elif key == "backendtype":
        disk["backend"] = value
    elif key == "access":
        disk["readwrite"] = 0 if value in ("r", "ro") else 1
    elif key == "devtype" and value == "cdrom":
        disk.update(is_cdrom=1, removable=1, readwrite=0)


def parse_disk(spec):
    """
    One xl disk spec (``phy:/dev/vg/web01,xvda,w`` or ``format=raw, vdev=xvda, access=rw,
    target=/cluster/web01.img``) as the libxl_device_disk record ``xl list -l`` prints: the
    subset pdev_path, vdev, backend, format, readwrite, removable, is_cdrom. ``target=`` takes
    the rest of the spec, as in xl; positional items are target, then format, vdev, access.
    """
    disk = {"pdev_path": None, "vdev": None, "backend": "unknown", "format": "raw"}
    disk.update({"readwrite": 1, "removable": 0, "is_cdrom": 0})
    head, _, rest = spec.partition("target=")
    target = rest.strip() if rest else None
    positional = [] if rest else [None]  # without target=, the first positional is the target
    for item in (i.strip() for i in head.split(",")) if head.strip() else ():
        key, eq, value = item.partition("=")
        if eq:
            _disk_keyword(disk, key, value)
        elif item == "cdrom":
            disk.update(is_cdrom=1, removable=1, readwrite=0)
        elif positional == [None]:
            positional, target = [item], item
        elif item in ("r", "ro", "w", "rw"):
            disk["readwrite"] = 0 if item in ("r", "ro") else 1
        elif item in DISK_FORMATS:
            disk["format"] = item
        elif item:
            disk["vdev"] = item
    for prefix, (backend, fmt) in DISK_PREFIXES.items():
        if target and target.startswith(prefix):
            target = target[len(prefix) :]
            disk["backend"], disk["format"] = backend, fmt
            break
    # an empty CD-ROM drive has no backing path: libxl keeps pdev_path null
    disk["pdev_path"] = target or None
    return disk


# ---------------------------------------------------------------- the tools


class Tool:
    """Verbs shared by xl and xm; subclasses print each tool's own formats and messages."""

    name = "?"

    def __init__(self, state, host):
        self.state = state
        self.host = host

    def run(self, argv):
        if not argv:
            self.usage()
            raise Exit(1)
        verb, args = argv[0], argv[1:]
        method = getattr(self, "verb_" + verb.replace("-", "_"), None)
        if method is None:
            self.unknown_verb(verb)
            raise Exit(1)
        mode = self.state.faults(self.host).get(verb)
        if mode == "hang":
            while True:
                time.sleep(3600)
        return method(args, mode)

    def load(self):
        if not self.state.exists(self.host):
            err(f"xenha stand-in: host {self.host!r} has no state file in {self.state.path}")
            raise Exit(1)
        return self.state.load(self.host)

    def lookup(self, host, ident):
        name = find(host, ident)
        if name is None:
            self.no_such_domain(ident)
        return name

    # -- verbs with the same semantics in both tools

    def verb_list(self, args, mode):
        opts, params, values = split_opts(args, "lvZcn", {"long": "l"})
        if mode == "fail":
            self.fail("list")
        with self.state.lock():
            host = self.load()
            names = (
                [self.lookup(host, p) for p in params]
                if params
                else sorted(host["domains"], key=lambda n: host["domains"][n]["domid"])
            )
            if "l" in opts:
                self.print_long(host, names)
            else:
                self.print_list(host, names, dom0=not params)
        return 0

    def verb_info(self, args, mode):
        if mode == "fail":
            self.fail("info")
        with self.state.lock():
            host = self.load()
        for key, value in self.info_fields(host):
            self.print_info_line(key, value)
        return 0

    def verb_create(self, args, mode):
        opts, params, values = split_opts(args, "pqnFecdV", {})
        if not params:
            self.usage("create")
            raise Exit(1)
        path = params[0]
        self.announce_config(path)
        try:
            cfg = parse_cfg(path)
        except OSError as exc:
            self.config_unreadable(path, exc)
        if not cfg.get("name"):
            self.config_without_name()
        with self.state.lock():
            host = self.load()
            need = cfg.get("memory", 128)
            if cfg["name"] in host["domains"]:
                self.name_taken(host, cfg["name"])
            if need > free_memory(host):
                self.out_of_memory(need, free_memory(host))
            if mode == "fail":
                self.fail("create")
            state = PAUSED if "p" in opts else RUNNING
            dom = add_domain(
                host,
                cfg["name"],
                need,
                cfg.get("vcpus", 1),
                state=state,
                config=os.path.abspath(path),
                disks=cfg.get("disk"),
            )
            self.state.save(host)
        self.created(cfg["name"], dom["domid"])
        return 0

    def verb_shutdown(self, args, mode):
        opts, params, values = split_opts(args, "awFRH", {"wait": "w", "all": "a"})
        if not params:
            self.usage("shutdown")
            raise Exit(1)
        with self.state.lock():
            host = self.load()
            name = self.lookup(host, params[0])
            dom = host["domains"][name]
            self.shutting_down(name, dom)
            if mode == "fail":
                self.fail("shutdown")
            if mode != "ignore" and not dom.get("shutdown_at"):
                dom["shutdown_at"] = time.time() + host.get("shutdown_delay", 0.0)
                self.state.save(host)
        if "w" in opts:
            self.wait_for_death(name, dom["domid"])
        return 0

    def wait_for_death(self, name, domid):
        self.waiting(name, domid)
        while True:
            with self.state.lock():
                host = self.load()
                current = host["domains"].get(name)
            if current is None or current["domid"] != domid:
                self.died(name, domid)
                return
            time.sleep(0.05)

    def verb_destroy(self, args, mode):
        opts, params, values = split_opts(args, "f", {})
        if not params:
            self.usage("destroy")
            raise Exit(1)
        with self.state.lock():
            host = self.load()
            name = self.lookup(host, params[0])
            if mode == "fail":
                self.fail("destroy")
            del host["domains"][name]
            self.state.save(host)
        return 0

    def _set_paused(self, args, mode, verb, paused):
        if len(args) != 1:
            self.usage(verb)
            raise Exit(1)
        with self.state.lock():
            host = self.load()
            name = self.lookup(host, args[0])
            if mode == "fail":
                return self.fail(verb)
            host["domains"][name]["state"] = PAUSED if paused else RUNNING
            self.state.save(host)
        return 0

    def verb_pause(self, args, mode):
        return self._set_paused(args, mode, "pause", True)

    def verb_unpause(self, args, mode):
        return self._set_paused(args, mode, "unpause", False)

    def verb_domid(self, args, mode):
        if len(args) != 1:
            self.usage("domid")
            raise Exit(1)
        with self.state.lock():
            host = self.load()
        if args[0] not in host["domains"]:
            self.domid_unknown(args[0])
        print(host["domains"][args[0]]["domid"])
        return 0

    # -- migration plumbing shared by both tools

    def migration_target(self, target):
        """The target's state, or None after printing how reaching it failed."""
        if not self.state.exists(target):
            return self.unreachable(target, "unknown")
        target_host = self.state.load(target)
        if not target_host.get("up", True):
            return self.unreachable(target, "down")
        return target_host

    def pause_unlocked(self, seconds):
        if seconds > 0:
            time.sleep(seconds)


def split_opts(args, short, long_map):
    """
    getopt-like: returns (set of option letters, params, {letter: value}); options may follow
    params (GNU style); letters followed by ':' in ``short`` take a value.
    """
    opts, params, values = set(), [], {}
    it = iter(args)
    for arg in it:
        if arg == "--":
            params.extend(it)
            break
        if arg.startswith("--") and arg[2:].split("=")[0] in long_map:
            opts.add(long_map[arg[2:].split("=")[0]])
        elif arg.startswith("-") and len(arg) > 1 and not arg[1:].isdigit():
            letters = arg[1:]
            for i, letter in enumerate(letters):
                if letter + ":" in short:
                    value = letters[i + 1 :] or next(it, "")
                    values[letter] = value
                    opts.add(letter)
                    break
                opts.add(letter)
        else:
            params.append(arg)
    return opts, params, values


# ---------------------------------------------------------------- xl


class XL(Tool):
    name = "xl"
    LOG = "libxl: error: {file}:{line}:{func}: {msg}"

    def usage(self, verb=None):
        print(
            "Usage: xl [-vfNtT] <subcommand> [args]"
            if verb is None
            else f"Usage: xl {verb} <Domain>"
        )

    def unknown_verb(self, verb):
        err("command not implemented")

    def no_such_domain(self, ident):
        err(f"{ident} is an invalid domain identifier (rc=-6)")
        raise Exit(1)

    def fail(self, verb):
        messages = {
            "list": ["libxl_list_domain failed."],
            "info": ["libxl_physinfo failed."],
            "create": [
                "libxl: error: libxl_create.c:1640:domcreate_rebuild_done: "
                "Domain 0:cannot (re-)build domain: -3",
                "libxl: error: libxl_domain.c:1183:libxl__destroy_domid: "
                "Domain 0:Non-existent domain",
            ],
            "shutdown": ["shutdown failed (rc=-3)"],
            "destroy": ["destroy failed (rc=-3)"],
            "pause": ["libxl: error: libxl_domain.c:621:libxl_domain_pause: Pausing domain failed"],
            "unpause": [
                "libxl: error: libxl_domain.c:651:libxl_domain_unpause: Unpausing domain failed"
            ],
        }
        err(*messages.get(verb, [f"{verb} failed (rc=-3)"]))
        # xl's pause/unpause ignore libxl's return code and exit 0 (xl_vmcontrol.c).
        if verb in ("pause", "unpause"):
            return 0
        raise Exit(1)

    def print_list(self, host, names, dom0):
        print(XL_LIST_HEADER)
        if dom0:
            uptime = max(0.0, time.time() - host.get("booted", time.time()))
            print(
                XL_LIST_ROW
                % (DOM0, 0, host["dom0_memory"], host["nr_cpus"], "r-----", uptime * 0.1)
            )
        for name in names:
            dom = host["domains"][name]
            print(
                XL_LIST_ROW
                % (name, dom["domid"], dom["memory"], dom["vcpus"], dom["state"], cpu_time(dom))
            )

    def print_long(self, host, names):
        # Domain-0's configuration is not retrievable, so xl leaves it out of `xl list -l`.
        entries = [
            {
                "domid": host["domains"][n]["domid"],
                "config": {
                    "c_info": {"type": "pvh", "name": n, "uuid": host["domains"][n]["uuid"]},
                    "b_info": {
                        "max_vcpus": host["domains"][n]["vcpus"],
                        "max_memkb": host["domains"][n]["memory"] * 1024,
                        "target_memkb": host["domains"][n]["memory"] * 1024,
                    },
                    "disks": host["domains"][n].get("disks") or [],
                    "nics": [],
                },
            }
            for n in names
        ]
        print(json.dumps(entries, indent=4))

    def info_fields(self, host):
        major, minor, extra = split_version(host["xen_version"])
        used = sum(d["memory"] for d in host["domains"].values())
        return [
            ("host", host["name"]),
            ("release", "6.1.0-xenha-standin"),
            ("version", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.0"),
            ("machine", "x86_64"),
            ("nr_cpus", host["nr_cpus"]),
            ("max_cpu_id", host["nr_cpus"] - 1),
            ("nr_nodes", 1),
            ("cores_per_socket", host["nr_cpus"]),
            ("threads_per_core", 1),
            ("cpu_mhz", "2394.454"),
            ("hw_caps", "bfebfbff:77fafbff:2c100800:00000121:0000000f:009c6fbf:00000000:00000100"),
            ("virt_caps", " hvm"),
            ("total_memory", host["total_memory"]),
            ("free_memory", host["total_memory"] - host["dom0_memory"] - used),
            ("sharing_freed_memory", 0),
            ("sharing_used_memory", 0),
            ("outstanding_claims", 0),
            ("free_cpus", 0),
            ("xen_major", major),
            ("xen_minor", minor),
            ("xen_extra", extra),
            ("xen_version", host["xen_version"]),
            ("xen_caps", "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"),
            ("xen_scheduler", "credit2"),
            ("xen_pagesize", 4096),
            ("platform_params", "virt_start=0xffff800000000000"),
            ("xen_changeset", ""),
            (
                "xen_commandline",
                "placeholder dom0_mem=%dM,max:%dM" % (host["dom0_memory"], host["dom0_memory"]),
            ),
            ("cc_compiler", "x86_64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0"),
            ("cc_compile_by", "pkg-xen-devel"),
            ("cc_compile_domain", "lists.alioth.debian.org"),
            ("cc_compile_date", "Thu Jan  1 00:00:00 UTC 2026"),
            ("build_id", "0123456789abcdef0123456789abcdef01234567"),
            ("xend_config_format", 4),
        ]

    def print_info_line(self, key, value):
        # maybe_printf("%-23s: %s\n") in xl_info.c; virt_caps has no space after the colon
        print(f"{key:<23}:{value}" if key == "virt_caps" else f"{key:<23}: {value}")

    def announce_config(self, path):
        err(f"Parsing config from {path}")

    def config_unreadable(self, path, exc):
        err(f"Failed to read config file: {path}: {exc.strerror}")
        raise Exit(1)

    def config_without_name(self):
        err("Domain name must be specified.")
        raise Exit(1)

    def name_taken(self, host, name):
        err(
            "libxl: error: libxl_domain.c:457:libxl__domain_rename: Domain %d:Domain with name "
            '"%s" already exists.' % (host["next_domid"], name),
            "libxl: error: libxl_create.c:695:libxl__domain_make: Domain %d:cannot make domain: -6"
            % host["next_domid"],
        )
        raise Exit(1)

    def out_of_memory(self, need, free):
        err("failed to free memory for the domain")
        raise Exit(1)

    def created(self, name, domid):
        pass  # xl create prints nothing more once the domain runs (it daemonizes)

    def shutting_down(self, name, dom):
        err(f"Shutting down domain {dom['domid']}")

    def waiting(self, name, domid):
        err("Waiting for 1 domains")

    def died(self, name, domid):
        err(f"Domain {domid} has been destroyed.")

    def domid_unknown(self, name):
        err(f"Can't get domid of domain name '{name}', maybe this domain does not exist.")
        raise Exit(1)

    # -- xl migrate (tools/xl/xl_migrate.c), over ssh

    def unreachable(self, target, why):
        port = ssh_port(self.ssh_command)
        if why == "unknown":
            err(f"ssh: Could not resolve hostname {target.lower()}: Name or service not known")
        else:
            err(f"ssh: connect to host {target} port {port}: No route to host")
        err(
            "libxl: error: libxl_utils.c:510:libxl_read_exactly: file/stream truncated reading "
            "banner from migration receiver stream",
            "libxl: info: libxl_exec.c:117:libxl_report_child_exitstatus: migration transport "
            f"process [{os.getpid() + 1}] exited with error status 255",
        )
        raise Exit(1)

    def verb_migrate(self, args, mode):
        opts, params, values = split_opts(args, "FC:s:epD", {"live": "L", "debug": "d"})
        if len(params) != 2:
            print("Usage: xl [-vf] migrate <Domain> <host>")
            raise Exit(1)
        ident, target = params
        self.ssh_command = values.get("s", "ssh")
        with self.state.lock():
            source = self.load()
            name = self.lookup(source, ident)
            if self.ssh_command == "":
                err(f"sh: 1: {target}: not found")
                self.unreachable(target, "command")
            target_host = self.migration_target(target)
            dom = dict(source["domains"][name])
            delay = source.get("migrate_delay", 0.0) / 2
            err("migration target: Ready to receive domain.")
            err("Saving to migration stream new xl format (info 0x3/0x0/1284)")
            err("Loading new save file <incoming migration stream> (new xl fmt info 0x3/0x0/1284)")
            err(" Savefile contains xl domain config in JSON format")
            err("Parsing config from <saved>")
            if mode == "fail":
                err(
                    "migration sender: libxl_domain_suspend failed (rc=-8)",
                    "Migration failed, failed to suspend at sender.",
                )
                raise Exit(1)
            if dom["memory"] > free_memory(target_host):
                err(
                    "failed to free memory for the domain",
                    "migration target: Domain creation failed (code -3).",
                    "libxl: error: libxl_utils.c:510:libxl_read_exactly: file/stream truncated "
                    "reading ready message from migration receiver stream",
                    "libxl: info: libxl_exec.c:117:libxl_report_child_exitstatus: migration "
                    f"transport process [{os.getpid() + 1}] exited with error status 1",
                    "Migration failed, resuming at sender.",
                )
                raise Exit(1)
            incoming = name + "--incoming"
            copy_domain(target_host, incoming, dom)
            self.state.save(target_host)
        self.pause_unlocked(delay)

        with self.state.lock():
            source, target_host = self.state.load(self.host), self.state.load(target)
            err("migration target: Transfer complete, requesting permission to start domain.")
            err("migration sender: Target has acknowledged transfer.")
            away = name + "--migratedaway"
            if name not in source["domains"] or incoming not in target_host["domains"]:
                return self.failed_badly()
            source["domains"][away] = dict(source["domains"].pop(name), state=SUSPENDED)
            self.state.save(source)
            err("migration sender: Giving target permission to start.")
        self.pause_unlocked(delay)

        with self.state.lock():
            source, target_host = self.state.load(self.host), self.state.load(target)
            if (
                mode == "break"
                or away not in source["domains"]
                or incoming not in target_host["domains"]
            ):
                return self.failed_badly()
            err("migration target: Got permission, starting domain.")
            receive_fault = self.state.faults(target).get("migrate-receive")
            if receive_fault == "fail" or name in target_host["domains"]:
                code = 3
                if name in target_host["domains"]:
                    code = 6
                    err(
                        "libxl: error: libxl_domain.c:457:libxl__domain_rename: "
                        "Domain %d:Domain with "
                        'name "%s" already exists.'
                        % (target_host["domains"][incoming]["domid"], name)
                    )
                del target_host["domains"][incoming]
                source["domains"][name] = dict(source["domains"].pop(away), state=RUNNING)
                self.state.save(target_host)
                self.state.save(source)
                err(
                    "migration target: Failure, destroying our copy.",
                    "migration target: Cleanup OK, granting sender permission to resume.",
                    f"migration sender: Target reports startup failure (status code {code}).",
                    "migration sender: Trying to resume at our end.",
                    "migration sender: Resumed OK.",
                    "Migration failed due to problems at target.",
                )
                raise Exit(1)
            moved = target_host["domains"].pop(incoming)
            moved["state"] = PAUSED if "p" in opts else RUNNING
            target_host["domains"][name] = moved
            del source["domains"][away]
            self.state.save(target_host)
            self.state.save(source)
        err(
            "migration target: Domain started successsfully.",  # sic, as in xl_migrate.c
            "migration sender: Target reports successful startup.",
            "Migration successful.",
        )
        return 0

    def failed_badly(self):
        err(
            "** Migration failed during final handshake **",
            "Domain state is now undefined !",
            "Please CHECK AT BOTH ENDS for running instances, before renaming and",
            " resuming at most one instance.  Two simultaneous instances of the domain",
            " would probably result in SEVERE DATA LOSS and it is now your",
            " responsibility to avoid that.  Sorry.",
        )
        raise Exit(1)


# ---------------------------------------------------------------- xm


class XM(Tool):
    name = "xm"

    def usage(self, verb=None):
        if verb is None:
            print(
                "Usage: xm <subcommand> [args]\n\n"
                "Control, list, and manipulate Xen guest instances.\n"
            )
        else:
            print(f"Usage: xm {verb} <Domain>\n")

    def unknown_verb(self, verb):
        err(f"Error: Subcommand {verb} not found!")
        self.usage()

    def no_such_domain(self, ident):
        err(f"Error: Domain '{ident}' does not exist.")
        raise Exit(INVALID_DOMAIN_EXIT)

    def fail(self, verb):
        err(f"Error: (1, 'Internal error', '{verb} failed (xenha stand-in fault)')")
        self.usage(verb)
        raise Exit(1)

    def print_list(self, host, names, dom0):
        print(XM_LIST_HEADER)
        if dom0:
            uptime = max(0.0, time.time() - host.get("booted", time.time()))
            print(
                XM_LIST_ROW
                % (DOM0, 0, host["dom0_memory"], host["nr_cpus"], "r-----", uptime * 0.1)
            )
        for name in names:
            dom = host["domains"][name]
            print(
                XM_LIST_ROW
                % (name, dom["domid"], dom["memory"], dom["vcpus"], dom["state"], cpu_time(dom))
            )

    def print_long(self, host, names):
        for name in names:
            dom = host["domains"][name]
            print(
                f"(domain\n    (domid {dom['domid']})\n    (uuid {dom['uuid']})\n"
                f"    (vcpus {dom['vcpus']})\n"
                f"    (memory {dom['memory']})\n    (name {name})\n    (state {dom['state']})\n)"
            )

    def info_fields(self, host):
        major, minor, extra = split_version(host["xen_version"])
        return [
            ("host", host["name"]),
            ("release", "2.6.18.8-xen"),
            ("version", "#1 SMP Tue Jan 1 00:00:00 UTC 2009"),
            ("machine", "x86_64"),
            ("nr_cpus", host["nr_cpus"]),
            ("nr_nodes", 1),
            ("cores_per_socket", host["nr_cpus"]),
            ("threads_per_core", 1),
            ("cpu_mhz", 2194),
            ("hw_caps", "bfebfbff:20100800:00000000:00000140:0000e3bd:00000000:00000001:00000000"),
            ("virt_caps", ""),
            ("total_memory", host["total_memory"]),
            ("free_memory", free_memory(host)),
            ("node_to_cpu", "node0:0-%d" % (host["nr_cpus"] - 1)),
            ("node_to_memory", "node0:%d" % free_memory(host)),
            ("xen_major", major),
            ("xen_minor", minor),
            ("xen_extra", extra),
            ("xen_caps", "xen-3.0-x86_64 xen-3.0-x86_32p"),
            ("xen_scheduler", "credit"),
            ("xen_pagesize", 4096),
            ("platform_params", "virt_start=0xffff800000000000"),
            ("xen_changeset", "unavailable"),
            ("cc_compiler", "gcc version 4.3.2 (Debian 4.3.2-1.1)"),
            ("cc_compile_by", "root"),
            ("cc_compile_domain", ""),
            ("cc_compile_date", "Tue Jan 13 00:00:00 BRST 2009"),
            ("xend_config_format", 4),
        ]

    def print_info_line(self, key, value):
        print("%-23s:" % key, value)

    def announce_config(self, path):
        print(f'Using config file "{path}".')

    def config_unreadable(self, path, exc):
        err(f"Error: Unable to open config file: {path}")
        raise Exit(1)

    def config_without_name(self):
        err("Error: Missing VM Name")  # XendDomainInfo._checkName
        raise Exit(1)

    def name_taken(self, host, name):
        err(
            "Error: VM name '%s' already exists as domain %d"
            % (name, host["domains"][name]["domid"])
        )
        raise Exit(1)

    def out_of_memory(self, need, free):
        err(
            "Error: Not enough free memory and dom0_min_mem is 0, so I cannot release any more.  "
            "I need %d KiB but only have %d." % (need * 1024, max(free, 0) * 1024)
        )
        raise Exit(1)

    def created(self, name, domid):
        print(f"Started domain {name} (id={domid})")

    def shutting_down(self, name, dom):
        pass

    def waiting(self, name, domid):
        pass

    def died(self, name, domid):
        print(f"Domain {name} terminated")
        print("All domains terminated")

    def domid_unknown(self, name):
        self.no_such_domain(name)

    # -- xm migrate (tools/python/xen/xm/migrate.py) through the target's xend relocation server

    def unreachable(self, target, why):
        reason = {"unknown": "Name or service not known", "down": "No route to host"}[why]
        err(f"Error: can't connect: {reason}")
        self.usage("migrate")
        raise Exit(1)

    def verb_migrate(self, args, mode):
        opts, params, values = split_opts(args, "lp:n:sr:c", {"live": "l", "ssl": "s"})
        if len(params) != 2:
            err("Error: 'xm migrate' requires 2 arguments.\n")
            self.usage("migrate")
            raise Exit(1)
        ident, target = params
        with self.state.lock():
            source = self.load()
            name = self.lookup(source, ident)
            target_host = self.migration_target(target)
            relocation = target_host.get("relocation", {})
            ssl = "s" in opts
            default_port = relocation.get("ssl_port", 8003) if ssl else relocation.get("port", 8002)
            port = int(values.get("p") or default_port)
            listening = relocation.get("ssl_server") if ssl else relocation.get("server", True)
            wanted = relocation.get("ssl_port", 8003) if ssl else relocation.get("port", 8002)
            if not listening or port != wanted:
                err("Error: can't connect: Connection refused")
                self.usage("migrate")
                raise Exit(1)
            dom = source["domains"][name]
            if mode == "fail":
                err(
                    "Error: /usr/lib/xen/bin/xc_save 27 %d 0 0 %d failed"
                    % (dom["domid"], 1 if "l" in opts else 0)
                )
                self.usage("migrate")
                raise Exit(1)
            if dom["memory"] > free_memory(target_host):
                self.out_of_memory(dom["memory"], free_memory(target_host))
            # xend renames the source "migrating-<name>" while it saves (XendCheckpoint.save);
            # without -l the domain is paused for the whole copy.
            away = "migrating-" + name
            source["domains"][away] = dict(
                source["domains"].pop(name), state=RUNNING if "l" in opts else PAUSED
            )
            copy_domain(target_host, name, dom)
            self.state.save(source)
            self.state.save(target_host)
        self.pause_unlocked(source.get("migrate_delay", 0.0))
        with self.state.lock():
            source, target_host = self.state.load(self.host), self.state.load(target)
            source["domains"].pop(away, None)
            if name in target_host["domains"]:
                target_host["domains"][name]["state"] = RUNNING
            self.state.save(source)
            self.state.save(target_host)
        return 0


# ---------------------------------------------------------------- helpers and entry point


def split_version(version):
    match = re.match(r"(\d+)\.(\d+)(.*)", version)
    return (match.group(1), match.group(2), match.group(3)) if match else ("0", "0", "")


def ssh_port(ssh_command):
    match = re.search(r"(?:^|\s)-p\s*(\d+)", ssh_command)
    return match.group(1) if match else "22"


def main(tool, argv):
    path = os.environ.get("XENHA_STANDIN_DIR")
    host = os.environ.get("XENHA_STANDIN_HOST")
    if not path or not host:
        err(f"{tool} (xenha stand-in): XENHA_STANDIN_DIR and XENHA_STANDIN_HOST must be set")
        return 1
    state = State(path)
    state.log_call(host, tool, argv)
    cls = XL if tool == "xl" else XM
    try:
        return cls(state, host).run(argv)
    except Exit as done:
        return done.status
