"""``xl`` verbs over QEMU: list, info, create, shutdown, destroy, pause, unpause, domid, domname,
migrate and migrate-receive, with the output formats and messages of Xen's tools/xl."""

import json
import os
import sys
import time
from pathlib import Path

from labxl.config import ConfigError, domain_settings, load_host_config, parse_cfg
from labxl.domains import Store, XLError, alive, cpu_seconds, running_now
from labxl.qmp import QMP, QMPError

XL_LIST_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
XL_LIST_ROW = "{:<40} {:5d} {:5d} {:5d}     {}  {:8.1f}"
XEN_VERSION = (4, 17, ".0-lab")


def err(*lines):
    """xl's messages go to stderr, each line in one write (the receiver's share the stream)."""
    sys.stderr.write("".join(f"{line}\n" for line in lines))
    sys.stderr.flush()


def list_rows(conf, store):
    """(name, domid, mem, vcpus, state, cpu time) for Domain-0 and each domain."""
    rows = [
        ("Domain-0", 0, conf["dom0_mib"], conf["nr_cpus"], "r-----", dom0_cpu_seconds()),
    ]
    for rec in store.domains():
        s = rec["settings"]
        cpu = cpu_seconds(rec["pid"])
        rows.append((rec["name"], rec["domid"], s["memory"], s["vcpus"], _state(rec), cpu))
    return rows


def _state(rec):
    if rec["paused"]:
        return "--p---"
    return "r-----" if running_now(rec["pid"]) else "-b----"


def format_list(rows):
    """``xl list`` text: its header and one ``%-40s %5d %5lu %5d     %s  %8.1f`` row each."""
    return "".join(f"{XL_LIST_ROW.format(*row)}\n" for row in rows)


def dom0_cpu_seconds():
    """CPU time of the host itself: its init and everything it has reaped."""
    try:
        fields = Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def info_fields(conf, free_memory):
    """``xl info``'s keys and values for this lab host."""
    uname = os.uname()
    major, minor, extra = XEN_VERSION
    return [
        ("host", conf["host"]),
        ("release", uname.release),
        ("version", uname.version),
        ("machine", uname.machine),
        ("nr_cpus", conf["nr_cpus"]),
        ("max_cpu_id", conf["nr_cpus"] - 1),
        ("nr_nodes", 1),
        ("cores_per_socket", conf["nr_cpus"]),
        ("threads_per_core", 1),
        ("cpu_mhz", _cpu_mhz()),
        ("hw_caps", "00000000:00000000:00000000:00000000:00000000:00000000:00000000:00000000"),
        ("virt_caps", " hvm"),
        ("total_memory", conf["memory_mib"]),
        ("free_memory", free_memory),
        ("sharing_freed_memory", 0),
        ("sharing_used_memory", 0),
        ("outstanding_claims", 0),
        ("free_cpus", 0),
        ("xen_major", major),
        ("xen_minor", minor),
        ("xen_extra", extra),
        ("xen_version", f"{major}.{minor}{extra}"),
        ("xen_caps", "xen-3.0-x86_64 hvm-3.0-x86_64"),
        ("xen_scheduler", "credit2"),
        ("xen_pagesize", 4096),
        ("platform_params", "virt_start=0xffff800000000000"),
        ("xen_changeset", ""),
        ("xen_commandline", f"xenha lab: QEMU/TCG stands in for Xen; dom0_mem={conf['dom0_mib']}M"),
        ("cc_compiler", "none (lab toolstack)"),
        ("cc_compile_by", ""),
        ("cc_compile_domain", ""),
        ("cc_compile_date", ""),
        ("build_id", ""),
        ("xend_config_format", 4),
    ]


def format_info(fields):
    """``key                    : value`` lines (xl's ``%-23s: %s``; virt_caps has no space)."""
    return "".join(
        f"{key:<23}:{value}\n" if key == "virt_caps" else f"{key:<23}: {value}\n"
        for key, value in fields
    )


def _cpu_mhz():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return line.split(":")[1].strip()
    except OSError:
        pass
    return "0.000"


def long_entries(recs):
    """``xl list -l``: libxl's domain configs as JSON."""
    return [
        {
            "domid": r["domid"],
            "config": {
                "c_info": {"type": "pvh", "name": r["name"], "uuid": r["uuid"]},
                "b_info": {
                    "max_vcpus": r["settings"]["vcpus"],
                    "max_memkb": r["settings"]["memory"] * 1024,
                    "target_memkb": r["settings"]["memory"] * 1024,
                    "kernel": r["settings"]["kernel"],
                    "ramdisk": r["settings"]["ramdisk"],
                    "cmdline": r["settings"]["extra"],
                },
                "disks": [{"pdev_path": _no_secret(d["target"])} for d in r["settings"]["disks"]],
                "nics": [{"mac": v["mac"], "bridge": v["bridge"]} for v in r["settings"]["vifs"]],
            },
        }
        for r in recs
    ]


def _no_secret(target):
    return target.split("://")[0] + "://" + target.split("@")[-1] if "@" in target else target


# --- verbs ---------------------------------------------------------------------------------------


def verb_list(conf, store, args):
    opts, params = _opts(args, "lvZ", ["long", "verbose", "context"])
    if params:
        recs = [store.find(p) for p in params]
    if "-l" in opts or "--long" in opts:
        print(json.dumps(long_entries(recs if params else store.domains()), indent=4))
        return 0
    rows = list_rows(conf, store)
    if params:
        wanted = {r["domid"] for r in recs}
        rows = [row for row in rows if row[1] in wanted]
    sys.stdout.write(XL_LIST_HEADER + "\n" + format_list(rows))
    return 0


def verb_info(conf, store, args):
    _opts(args, "n", ["numa"])
    sys.stdout.write(format_info(info_fields(conf, store.free_memory())))
    return 0


def verb_create(conf, store, args):
    opts, params = _opts(args, "pqnFecdV", ["quiet", "vncviewer", "defconfig="])
    if not params:
        raise XLError("Usage: xl create <ConfigFile> [options] [vars]")
    path = params[0]
    err(f"Parsing config from {path}")
    settings = read_settings(path)
    with store.lock():
        store.start(settings, settings["name"], paused="-p" in opts)
    return 0


def read_settings(path):
    """The domain settings of config file ``path`` (XLError with xl's message on failure)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise XLError(f"Failed to read config file: {path}: {exc.strerror}") from exc
    try:
        return domain_settings(parse_cfg(text, path), path)
    except ConfigError as exc:
        raise XLError(str(exc)) from exc


def verb_shutdown(conf, store, args):
    opts, params = _opts(args, "awFRH", ["all", "wait"])
    wait = "-w" in opts or "--wait" in opts
    if "-a" in opts or "--all" in opts:
        recs = store.domains()
    elif len(params) == 1:
        recs = [store.find(params[0])]
    else:
        raise XLError("Usage: xl shutdown [options] <Domain>")
    for rec in recs:
        err(f"Shutting down domain {rec['domid']}")
        try:
            with QMP(store.qmp_path(rec)) as q:
                q.cmd("system_powerdown")
        except QMPError as exc:
            raise XLError(f"shutdown failed (rc=-3): {exc}") from exc
    if wait:
        err(f"Waiting for {len(recs)} domains")
        for rec in recs:
            while alive(rec):
                time.sleep(0.1)
            store.forget(rec["domid"])
            err(f"Domain {rec['domid']} has been destroyed.")
    return 0


def verb_destroy(conf, store, args):
    _, params = _opts(args, "f", [])
    if len(params) != 1:
        raise XLError("Usage: xl destroy <Domain>")
    with store.lock():
        store.kill(store.find(params[0]))
    return 0


def _pause(store, args, verb, command, paused):
    if len(args) != 1:
        raise XLError(f"Usage: xl {verb} <Domain>")
    with store.lock():
        rec = store.find(args[0])
        with QMP(store.qmp_path(rec)) as q:
            q.cmd(command)
        rec["paused"] = paused
        store.save(rec)
    return 0


def verb_pause(conf, store, args):
    return _pause(store, args, "pause", "stop", True)


def verb_unpause(conf, store, args):
    return _pause(store, args, "unpause", "cont", False)


def verb_domid(conf, store, args):
    if len(args) != 1:
        raise XLError("Usage: xl domid <DomainName>")
    for rec in store.domains():
        if rec["name"] == args[0]:
            print(rec["domid"])
            return 0
    raise XLError(f"Can't get domid of domain name '{args[0]}', maybe this domain does not exist.")


def verb_domname(conf, store, args):
    if len(args) != 1 or not args[0].isdigit():
        raise XLError("Usage: xl domname <DomainId>")
    if int(args[0]) == 0:
        print("Domain-0")
        return 0
    for rec in store.domains():
        if rec["domid"] == int(args[0]):
            print(rec["name"])
            return 0
    raise XLError(
        f"Can't get domain name of domain id '{args[0]}', maybe this domain does not exist."
    )


def verb_migrate(conf, store, args):
    from labxl import migrate  # noqa: PLC0415 - only these two verbs need it (start-up time)

    opts, params = _opts(args, "FC:s:epD", ["debug", "live"])
    if len(params) != 2:
        raise XLError("Usage: xl [-vf] migrate <Domain> <host>")
    settings = read_settings(opts["-C"]) if "-C" in opts else None
    return migrate.send(
        store,
        params[0],
        params[1],
        ssh_command=opts.get("-s", "ssh"),
        paused="-p" in opts,
        settings=settings,
    )


def verb_migrate_receive(conf, store, args):
    from labxl import migrate  # noqa: PLC0415 - only these two verbs need it (start-up time)

    _opts(args, "Fedp", ["debug"])
    return migrate.receive(conf, store)


VERBS = {
    "list": verb_list,
    "info": verb_info,
    "create": verb_create,
    "shutdown": verb_shutdown,
    "destroy": verb_destroy,
    "pause": verb_pause,
    "unpause": verb_unpause,
    "domid": verb_domid,
    "domname": verb_domname,
    "migrate": verb_migrate,
    "migrate-receive": verb_migrate_receive,
}


def _opts(args, short, long):
    if not any(arg.startswith("-") for arg in args):
        return {}, list(args)  # what getopt says of no options, without its start-up cost
    import getopt  # noqa: PLC0415 - it brings gettext and locale: only when there are options

    try:
        pairs, params = getopt.gnu_getopt(args, short, long)
    except getopt.GetoptError as exc:
        raise XLError(f"xl: {exc}") from exc
    return dict(pairs), params


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    while argv and argv[0].startswith("-"):
        argv.pop(0)  # global options (-v, -f, -N, -t, -T) change nothing here
    if not argv or argv[0] not in VERBS:
        err("Usage: xl [-vfNtT] <subcommand> [args]" if not argv else "command not implemented")
        return 1
    try:
        conf = load_host_config()
        return VERBS[argv[0]](conf, Store(conf), argv[1:])
    except (XLError, ConfigError, QMPError) as exc:
        err(str(exc))
        return 1
