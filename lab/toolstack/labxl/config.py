"""Pure helpers: xl domain config files, the lab host's toolstack settings, QEMU's command line."""

import json
import os
import re

HOST_CONFIG = "/etc/xen/lab-toolstack.json"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


class ConfigError(ValueError):
    """A domain config or host setting that cannot be used (the message says which and why)."""


def parse_cfg(text, source="<config>"):
    """Parse an xl domain config (``key = value`` lines, Python-like literals) into a dict.

    Values may be strings, numbers or lists, and a list may span lines. Comments start with ``#``.
    """
    import ast  # noqa: PLC0415 - only the verbs that read a config need it (start-up time)

    cfg, pending, start = {}, "", 0
    for lineno, line in enumerate(text.splitlines(), 1):
        pending += _strip_comment(line) + "\n"
        if not pending.strip():
            pending = ""
            continue
        start = start or lineno
        if pending.count("[") > pending.count("]"):
            continue  # a list goes on
        key, eq, value = pending.partition("=")
        key = key.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{source}:{start}: expected key = value, got {pending.strip()!r}")
        try:
            cfg[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as err:
            raise ConfigError(f"{source}:{start}: bad value for {key}: {value.strip()!r}") from err
        pending, start = "", 0
    if pending.strip():
        raise ConfigError(f"{source}:{start}: unterminated list")
    return cfg


def _strip_comment(line):
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def parse_spec(spec):
    """``"mac=52:54:00:00:00:01, bridge=br0"`` → ``{"mac": ..., "bridge": "br0"}`` (xl vif/disk)."""
    out = {}
    for item in spec.split(","):
        key, eq, value = item.strip().partition("=")
        if not eq:
            raise ConfigError(f"{spec!r}: expected key=value items, got {item.strip()!r}")
        out[key.strip()] = value.strip()
    return out


def domain_settings(cfg, source="<config>"):
    """Check a parsed config and return what the lab toolstack needs from it.

    Keys: name, memory (MiB), vcpus, kernel, ramdisk, extra, vifs [{mac, bridge}], disks
    [{target}]. Errors name the config and the key.
    """
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("Domain name must be specified.")
    if not NAME_RE.fullmatch(name) or "--" in name:
        raise ConfigError(f"{source}: invalid domain name {name!r}")
    out = {"name": name}
    for key, default in (("memory", 128), ("vcpus", 1)):
        value = cfg.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{source}: {key} must be a positive integer, got {value!r}")
        out[key] = value
    for key in ("kernel", "ramdisk"):
        if not isinstance(cfg.get(key), str):
            raise ConfigError(
                f'{source}: {key} = "/path" is required (lab guests boot PVH kernels)'
            )
        out[key] = cfg[key]
    out["extra"] = str(cfg.get("extra", ""))
    out["vifs"] = [_vif(v, source) for v in _list(cfg, "vif", source)]
    out["disks"] = [_disk(d, source) for d in _list(cfg, "disk", source)]
    return out


def _list(cfg, key, source):
    value = cfg.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: {key} must be a list of strings")
    return value


def _vif(spec, source):
    vif = parse_spec(spec)
    mac = vif.get("mac", "")
    if not MAC_RE.fullmatch(mac):
        raise ConfigError(f"{source}: vif {spec!r} needs mac=xx:xx:xx:xx:xx:xx")
    return {"mac": mac.lower(), "bridge": vif.get("bridge", "br0")}


def _disk(spec, source):
    disk = parse_spec(spec)
    target = disk.get("target", "")
    if not target:
        raise ConfigError(f"{source}: disk {spec!r} needs target=iscsi://... or a file path")
    if disk.get("format", "raw") != "raw":
        raise ConfigError(f"{source}: disk {spec!r}: only format=raw is supported")
    if target.startswith("iscsi://"):
        return {"target": target, **iscsi_url(target)}
    if not os.path.isabs(target):
        raise ConfigError(f"{source}: disk target {target!r} must be iscsi://... or absolute")
    return {"target": target}


def iscsi_url(url):
    """``iscsi://[user%secret@]host[:port]/iqn/lun`` → portal, target, lun, user, secret."""
    from urllib.parse import unquote, urlsplit  # noqa: PLC0415 - only create and migrate need it

    parts = urlsplit(url)
    path = parts.path.strip("/").split("/")
    if parts.scheme != "iscsi" or not parts.hostname or len(path) != 2 or not path[1].isdigit():
        raise ConfigError(f"bad iSCSI URL {url!r}: expected iscsi://host[:port]/<target iqn>/<lun>")
    # libiscsi's URL form is user%secret@host: split on the literal "%" before unquoting
    user, _, secret = (parts.username or "").partition("%")
    user, secret = unquote(user), unquote(parts.password or secret)
    return {
        "portal": f"{parts.hostname}:{parts.port or 3260}",
        "iqn": path[0],
        "lun": int(path[1]),
        "user": user or None,
        "secret": secret or None,
    }


def load_host_config(path=None):
    """The lab host's toolstack settings (JSON written when the lab host boots)."""
    path = path or os.environ.get("XL_LAB_CONFIG", HOST_CONFIG)
    try:
        with open(path, encoding="utf-8") as fh:
            conf = json.load(fh)
    except OSError as err:
        raise ConfigError(f"not a lab Xen host: cannot read {path}: {err.strerror}") from err
    for key in ("host", "ip", "state_dir", "memory_mib", "dom0_mib"):
        if key not in conf:
            raise ConfigError(f"{path}: missing {key!r}")
    conf.setdefault("initiator", f"iqn.2025-01.lab.xenha:{conf['host'].lower()}")
    conf.setdefault("qemu", "qemu-system-x86_64")
    conf.setdefault("nr_cpus", os.cpu_count() or 1)
    return conf


def qemu_argv(host, dom, paths, incoming=False):
    """QEMU's command line for domain record ``dom`` on ``host`` (see load_host_config).

    ``paths`` gives the per-domain files: qmp, pidfile, console, vif_script, chap (secret file).
    An incoming domain waits for a migration stream (``-incoming defer``) and stays paused (``-S``)
    until the sender's final handshake, as xl's receiver does.
    """
    s = dom["settings"]
    argv = [
        host["qemu"], "-name", f"guest={dom['name']}", "-name", "debug-threads=on",
        "-uuid", dom["uuid"],
        "-machine", "pc", "-accel", "tcg", "-m", str(s["memory"]), "-smp", str(s["vcpus"]),
        "-display", "none", "-nodefaults", "-no-user-config",
        "-serial", f"file:{paths['console']}",
        "-kernel", s["kernel"], "-initrd", s["ramdisk"],
        "-append", f"console=ttyS0 quiet {s['extra']}".strip(),
        "-qmp", f"unix:{paths['qmp']},server=on,wait=off",
        "-daemonize", "-pidfile", paths["pidfile"],
    ]  # fmt: skip
    for i, vif in enumerate(s["vifs"]):
        tap = f"vif{dom['domid']}.{i}"
        argv += [
            "-netdev", f"tap,id=net{i},ifname={tap},script={paths['vif_script']},downscript=no",
            "-device", f"virtio-net-pci,netdev=net{i},mac={vif['mac']}",
        ]  # fmt: skip
    for i, disk in enumerate(s["disks"]):
        if "iqn" not in disk:
            argv += ["-drive", f"if=virtio,format=raw,cache=none,file={disk['target']}"]
            continue
        opts = [
            "if=virtio", "format=raw", "cache=none", "file.driver=iscsi", "file.transport=tcp",
            f"file.portal={disk['portal']}", f"file.target={disk['iqn']}",
            f"file.lun={disk['lun']}", f"file.initiator-name={host['initiator']}",
        ]  # fmt: skip
        if disk["user"]:
            argv += ["-object", f"secret,id=chap{i},format=raw,file={paths['chap']}.{i}"]
            opts += [f"file.user={disk['user']}", f"file.password-secret=chap{i}"]
        argv += ["-drive", ",".join(opts)]
    if incoming:
        argv += ["-incoming", "defer", "-S"]
    return argv
