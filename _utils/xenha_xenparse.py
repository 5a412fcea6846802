"""
Pure parsers for the Xen toolstack's output (``xl`` and the xend-era ``xm``): text in, data out.

Formats come from Xen's source (tools/xl/xl_info.c, tools/python/xen/xm/main.py); see
docs/xen.md. Rows are parsed from the right because a domain name longer than the 40-column
field simply pushes the other columns along. Every parser either returns data or raises
:class:`XenParseError` saying what it could not read; callers add the command that produced it.
"""

import json
import re

# Name suffixes xl gives a domain while it moves (tools/xl/xl_migrate.c, xl_vmcontrol.c);
# xend renamed the source copy with a prefix instead (XendCheckpoint.save).
XL_TRANSIENT_SUFFIXES = {"--migratedaway": "migratedaway", "--incoming": "incoming"}
XM_TRANSIENT_PREFIX = "migrating-"

# The six state letters, in column order (xl: "rbps" + shutdown reason + "d"; xm: "rbpscd").
_FLAG_NAMES = ("running", "blocked", "paused", "shutdown", None, "dying")
_FLAG_LETTERS = "rbps?d"
# Fifth column: xl prints the shutdown reason letter from "-rscwS"; xm prints 'c' for crashed.
_REASONS = {"r": "reboot", "s": "suspend", "c": "crash", "w": "watchdog", "S": "soft_reset"}
_STATE_RE = re.compile(r"[r-][b-][p-][s-][-rscwS?][d-]")
_INT_RE = re.compile(r"[0-9]{1,18}")
_TIME_RE = re.compile(r"-?[0-9]{1,18}\.[0-9]")
_INFO_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CFG_LINE_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*")
_CFG_QUOTED_RE = re.compile(r"""(['"])(.*?)\1\s*(?:#.*)?""")


class XenParseError(ValueError):
    """Toolstack output that does not have the expected shape."""


def decode_state(state):
    """
    Decode a six-letter state string (``-b----``, ``--p---``, ``---sc-``) into
    ``{"flags": [...], "shutdown_reason": str or None}``. ``crashed`` is added to the flags for a
    crash reason so xl and xm rows read the same.
    """
    if not isinstance(state, str) or not _STATE_RE.fullmatch(state):
        raise XenParseError(f"invalid domain state {state!r}: expected six letters like '-b----'")
    flags = [
        name
        for name, letter, want in zip(_FLAG_NAMES, state, _FLAG_LETTERS, strict=True)
        if name and letter == want
    ]
    reason = _REASONS.get(state[4]) if state[4] != "?" else "unknown"
    if reason == "crash":
        flags.append("crashed")
    return {"flags": flags, "shutdown_reason": reason}


def transient(name, toolstack="xl"):
    """
    Return ``(kind, base_name)`` for a name the toolstack uses while a domain migrates
    (``web01--migratedaway`` → ``("migratedaway", "web01")``), else ``(None, name)``.
    """
    if toolstack == "xm":
        if name.startswith(XM_TRANSIENT_PREFIX) and len(name) > len(XM_TRANSIENT_PREFIX):
            return "migrating", name[len(XM_TRANSIENT_PREFIX) :]
        return None, name
    for suffix, kind in XL_TRANSIENT_SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return kind, name[: -len(suffix)]
    return None, name


def _row(name, domid, *, mem, vcpus, state, cpu_time, toolstack):
    kind, base = transient(name, toolstack)
    row = {
        "name": name,
        "domid": domid,
        "memory_mib": mem,
        "vcpus": vcpus,
        "state": state,
        "cpu_time": cpu_time,
        "transient": kind,
        "base_name": base,
    }
    row.update(decode_state(state))
    return row


def _int(text, what, line):
    if not _INT_RE.fullmatch(text):
        raise XenParseError(f"bad {what} {text!r} in line {line!r}")
    return int(text)


def _tail(line, what):
    """Split the four right-hand columns (Mem VCPUs State Time) off a list row."""
    parts = line.rsplit(None, 4)
    if len(parts) != 5:
        raise XenParseError(f"truncated {what} row {line!r}")
    head, mem, vcpus, state, cpu_time = parts
    if not _TIME_RE.fullmatch(cpu_time):
        raise XenParseError(f"bad cpu time {cpu_time!r} in line {line!r}")
    if not _STATE_RE.fullmatch(state):
        raise XenParseError(f"bad state {state!r} in line {line!r}")
    return head, _int(mem, "memory", line), _int(vcpus, "vcpu count", line), state, float(cpu_time)


def _body(text, what):
    """Return the non-empty lines after the header, checking the header is there."""
    if not isinstance(text, str):
        raise XenParseError(f"{what} output must be text, got {type(text).__name__}")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise XenParseError(f"empty {what} output (not even the header)")
    header = lines[0].split()
    if header[:3] != ["Name", "ID", "Mem"]:
        raise XenParseError(f"{what} output does not start with its header: {lines[0]!r}")
    return lines[1:]


def parse_xl_list(text):
    """
    Parse ``xl list`` output (``%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f`` rows) into a list of
    row dicts: name, domid, memory_mib, vcpus, state, flags, shutdown_reason, cpu_time,
    transient (``migratedaway``/``incoming``/None) and base_name.
    """
    rows = []
    for line in _body(text, "xl list"):
        head, mem, vcpus, state, cpu_time = _tail(line, "xl list")
        name_domid = head.rsplit(None, 1)
        if len(name_domid) != 2:
            raise XenParseError(f"truncated xl list row {line!r}")
        name, domid = name_domid
        rows.append(
            _row(
                name,
                _int(domid, "domid", line),
                mem=mem,
                vcpus=vcpus,
                state=state,
                cpu_time=cpu_time,
                toolstack="xl",
            )
        )
    return rows


def parse_xm_list(text):
    """
    Parse ``xm list`` output (``%-40s %5s %5d %5d %10s %8.1f`` rows) like :func:`parse_xl_list`.
    xend also lists managed domains that are not running: their ID column is blank and their
    domid is None.
    """
    rows = []
    for line in _body(text, "xm list"):
        head, mem, vcpus, state, cpu_time = _tail(line, "xm list")
        # The name is padded to 40 columns and followed by " %5s": a domid ends at column 46 or
        # later, so a short name that merely ends in digits is not mistaken for one.
        match = re.fullmatch(r"(.*\S)\s+([0-9]{1,18})", head)
        if match and len(head) >= 46:
            name, domid = match.group(1), int(match.group(2))
        else:
            name, domid = head.strip(), None
        if not name:
            raise XenParseError(f"xm list row without a name: {line!r}")
        rows.append(
            _row(name, domid, mem=mem, vcpus=vcpus, state=state, cpu_time=cpu_time, toolstack="xm")
        )
    return rows


def split_dom0(rows):
    """Return ``{"dom0": row or None, "domus": {name: row}}`` from parsed list rows."""
    result = {"dom0": None, "domus": {}}
    for row in rows:
        if row["domid"] == 0:
            result["dom0"] = row
        else:
            result["domus"][row["name"]] = row
    return result


def parse_info(text):
    """
    Parse ``xl info`` / ``xm info`` (``key : value`` lines, keys padded to 23 columns) into a
    dict of strings. Other lines (the NUMA tables of ``xl info -n``) are skipped; the result
    must hold total_memory and free_memory.
    """
    if not isinstance(text, str):
        raise XenParseError(f"info output must be text, got {type(text).__name__}")
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        # keys are printed "%-23s:", so the colon of a real field is at column 23 or later
        if sep and len(key) >= 23 and _INFO_KEY_RE.fullmatch(key.strip()):
            fields[key.strip()] = value.strip()
    for key in ("total_memory", "free_memory"):
        if key not in fields:
            raise XenParseError(f"info output has no {key} line")
        if not _INT_RE.fullmatch(fields[key]):
            raise XenParseError(f"info {key} is not a number of MiB: {fields[key]!r}")
    return fields


def summarize_info(fields):
    """The capacity figures xenha uses, from :func:`parse_info`'s dict."""

    def number(key):
        value = fields.get(key, "")
        return int(value) if _INT_RE.fullmatch(value) else None

    version = fields.get("xen_version")
    if version is None and "xen_major" in fields:
        version = (
            f"{fields['xen_major']}.{fields.get('xen_minor', '?')}{fields.get('xen_extra', '')}"
        )
    return {
        "host": fields.get("host"),
        "total_memory_mib": number("total_memory"),
        "free_memory_mib": number("free_memory"),
        "nr_cpus": number("nr_cpus"),
        "xen_version": version,
    }


def parse_xl_list_json(text):
    """
    Parse ``xl list -l`` JSON (an array of ``{"domid": N, "config": {...}}``) into
    ``{name: {"domid", "uuid", "type", "max_memkb", "target_memkb", "max_vcpus", "disks",
    "config"}}``; ``disks`` is :func:`disk_paths` of the config.
    """
    try:
        data = json.loads(text)
    except (TypeError, ValueError, RecursionError) as err:
        raise XenParseError(f"xl list -l output is not JSON: {err}") from err
    if not isinstance(data, list):
        raise XenParseError("xl list -l output is not a JSON array")
    result = {}
    for entry in data:
        config = entry.get("config") if isinstance(entry, dict) else None
        c_info = config.get("c_info") if isinstance(config, dict) else None
        name = c_info.get("name") if isinstance(c_info, dict) else None
        if not isinstance(name, str):
            raise XenParseError(f"xl list -l entry without config.c_info.name: {entry!r}"[:200])
        b_info = config.get("b_info")
        b_info = b_info if isinstance(b_info, dict) else {}
        result[name] = {
            "domid": entry.get("domid"),
            "uuid": c_info.get("uuid"),
            "type": c_info.get("type"),
            "max_memkb": b_info.get("max_memkb"),
            "target_memkb": b_info.get("target_memkb"),
            "max_vcpus": b_info.get("max_vcpus"),
            "disks": disk_paths(config),
            "config": config,
        }
    return result


def disk_paths(config):
    """
    The backing paths of a domain's disks from its libxl config (``xl list -l``): each
    ``disks[].pdev_path`` (a file, a block device, or a URL such as ``iscsi://...`` for QEMU's
    own initiator), in order. An empty CD-ROM drive has no path and is left out. A malformed
    ``disks`` value is an error: guessing "no disks" would let a local disk pass as none.
    """
    disks = config.get("disks") if isinstance(config, dict) else None
    if disks is None:
        return []
    if not isinstance(disks, list):
        raise XenParseError(f"xl list -l: disks is not a list: {disks!r}"[:200])
    paths = []
    for disk in disks:
        path = disk.get("pdev_path") if isinstance(disk, dict) else None
        if path is None or path == "":
            if isinstance(disk, dict) and disk.get("is_cdrom"):
                continue  # an empty CD-ROM drive
            raise XenParseError(f"xl list -l: disk without pdev_path: {disk!r}"[:200])
        if not isinstance(path, str):
            raise XenParseError(f"xl list -l: pdev_path is not text: {path!r}"[:200])
        paths.append(path)
    return paths


def _cfg_value(raw):
    quoted = _CFG_QUOTED_RE.fullmatch(raw)
    if quoted:
        return quoted.group(2)
    value = raw.split("#", 1)[0].strip()
    return int(value) if _INT_RE.fullmatch(value) else value


def parse_cfg(text):
    """
    Read the scalar settings xenha needs (name, memory, vcpus) from an xl/xm domain config file
    (``key = value`` lines, Python-like). Returns ``{"name", "memory_mib", "vcpus"}``; lists and
    other keys are ignored. A config without a name is an error, as it is for xl.
    """
    if not isinstance(text, str):
        raise XenParseError(f"config must be text, got {type(text).__name__}")
    values = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _CFG_LINE_RE.fullmatch(line)
        if match:
            values[match.group(1)] = _cfg_value(match.group(2))
    name = values.get("name")
    if not isinstance(name, str) or not name:
        raise XenParseError('domain config has no name = "..." line')
    memory = values.get("memory", 128)
    vcpus = values.get("vcpus", 1)
    if not isinstance(memory, int) or not isinstance(vcpus, int):
        raise XenParseError(f"domain config memory/vcpus must be integers: {memory!r}, {vcpus!r}")
    return {"name": name, "memory_mib": memory, "vcpus": vcpus}
