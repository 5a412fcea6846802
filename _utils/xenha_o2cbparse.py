"""
Pure parsers for the text printed by ocfs2-tools 1.8 and util-linux (text in, data out).

Every parser either returns data or raises ``ParseError`` naming the offending line, so that a
truncated or unexpected answer never surfaces as an unrelated exception. The execution module
``xenha_o2cb`` turns a ParseError into a CommandExecutionError that names the command.
"""

import ipaddress
import json
import re


class ParseError(ValueError):
    """Output that does not have the expected shape."""


def _int(text, low, high, what):
    if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= high:
        raise ParseError(f"{what} {text!r} is not an integer in {low}..{high}")
    return int(text)


def ipv4(text, what):
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError as err:
        raise ParseError(f"{what} {text!r} is not an IPv4 address") from err


def normalize_uuid(text):
    """
    Return an OCFS2 volume UUID as blkid prints it (lowercase, 8-4-4-4-12), whether given in
    that form or as the 32 uppercase hex digits of ``mounted.ocfs2``/``tunefs.ocfs2 -Q %U``.
    """
    digits = text.replace("-", "").lower()
    if not re.fullmatch(r"[0-9a-f]{32}", digits):
        raise ParseError(f"{text!r} is not a volume UUID")
    return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))


def parse_clusters(text):
    """
    Parse ``o2cb list-clusters``: one cluster name per line. Return the names in file order.
    """
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if not re.fullmatch(r"[0-9A-Za-z]{1,16}", name):
            raise ParseError(f"line {number}: {line!r} is not an OCFS2 cluster name")
        names.append(name)
    return names


def parse_oneline(text):
    """
    Parse the ``--oneline`` form of ``o2cb list-cluster``, ``list-nodes`` and ``list-heartbeats``:

        node: <number> <name> <ip>:<port> <cluster>
        cluster: <node_count> <heartbeat_mode> <name>
        heartbeat: <region> <cluster>

    Return ``{"clusters": {name: {"node_count", "heartbeat_mode"}},
    "nodes": {name: {"number", "ip", "port", "cluster"}}, "heartbeats": [{"region", "cluster"}]}``.
    """
    data = {"clusters": {}, "nodes": {}, "heartbeats": []}
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {lineno} ({line.strip()!r})"
        kind, args = fields[0], fields[1:]
        if kind == "node:" and len(args) == 4:
            number, name, address, cluster = args
            ip, sep, port = address.rpartition(":")
            if not sep:
                raise ParseError(f"{where}: node address {address!r} has no ':port'")
            if name in data["nodes"]:
                raise ParseError(f"{where}: node {name!r} is listed twice")
            data["nodes"][name] = {
                "number": _int(number, 0, 254, f"{where}: node number"),
                "ip": ipv4(ip, f"{where}: node address"),
                "port": _int(port, 1, 65535, f"{where}: node port"),
                "cluster": cluster,
            }
        elif kind == "cluster:" and len(args) == 3:
            count, mode, name = args
            if mode not in ("local", "global"):
                raise ParseError(f"{where}: unknown heartbeat mode {mode!r}")
            data["clusters"][name] = {
                "node_count": _int(count, 0, 255, f"{where}: node count"),
                "heartbeat_mode": mode,
            }
        elif kind == "heartbeat:" and len(args) == 2:
            data["heartbeats"].append({"region": args[0], "cluster": args[1]})
        else:
            raise ParseError(f"{where}: not a node:, cluster: or heartbeat: line")
    return data


_INIT_CLUSTER = re.compile(r'Checking O2CB cluster "([^"]*)": (Online|Offline)')
_INIT_HEARTBEAT = re.compile(r"Checking O2CB heartbeat: (Active|Not active)")
_INIT_DRIVER = re.compile(r'Driver for "([^"]+)": (Loaded|Not loaded)')
_INIT_MODE = re.compile(r"Heartbeat mode: (Local|Global)")
_INIT_TIMEOUTS = {
    "Heartbeat dead threshold": "heartbeat_dead_threshold",
    "Network idle timeout": "idle_timeout_ms",
    "Network keepalive delay": "keepalive_delay_ms",
    "Network reconnect delay": "reconnect_delay_ms",
}


def parse_init_status(text):
    """
    Parse ``/etc/init.d/o2cb status [cluster]`` (o2cb.init). The script exits 0 whether the
    cluster is online or not, so the answer is in the text:

        Driver for "configfs": Loaded
        Checking O2CB cluster "ocfs2": Online
          Heartbeat dead threshold: 31
          Network idle timeout: 30000
          ...
          Heartbeat mode: Local
        Checking O2CB heartbeat: Active

    Return ``{"cluster", "online", "heartbeat_active", "heartbeat_mode", "timeouts", "drivers"}``;
    ``heartbeat_active`` and ``heartbeat_mode`` are None when the script did not get that far
    (it stops after "Offline"), ``timeouts`` holds only the values it printed.
    """
    status = {
        "cluster": None,
        "online": None,
        "heartbeat_active": None,
        "heartbeat_mode": None,
        "timeouts": {},
        "drivers": {},
    }
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if match := _INIT_CLUSTER.fullmatch(stripped):
            status["cluster"] = match.group(1)
            status["online"] = match.group(2) == "Online"
        elif match := _INIT_HEARTBEAT.fullmatch(stripped):
            status["heartbeat_active"] = match.group(1) == "Active"
        elif match := _INIT_DRIVER.fullmatch(stripped):
            status["drivers"][match.group(1)] = match.group(2) == "Loaded"
        elif match := _INIT_MODE.fullmatch(stripped):
            status["heartbeat_mode"] = match.group(1).lower()
        else:
            key, sep, value = stripped.partition(":")
            if sep and key in _INIT_TIMEOUTS:
                status["timeouts"][_INIT_TIMEOUTS[key]] = _int(
                    value.strip(), 0, 2**31, f"line {lineno}: {key}"
                )
    if status["online"] is None:
        raise ParseError("no 'Checking O2CB cluster \"<name>\": Online|Offline' line")
    return status


def parse_cluster_status(text):
    """
    Parse ``o2cb cluster-status [cluster]``: ``Cluster '<name>' is online|offline`` or a bare
    ``online``/``offline``. Return ``{"cluster": name or None, "online": bool}``.
    """
    for line in text.splitlines():
        stripped = line.strip()
        if match := re.fullmatch(r"Cluster '([^']*)' is (online|offline)", stripped):
            return {"cluster": match.group(1), "online": match.group(2) == "online"}
        if stripped in ("online", "offline"):
            return {"cluster": None, "online": stripped == "online"}
    raise ParseError("no 'online' or 'offline' answer")


def _columns(header, names):
    """Start offsets of the named columns in a fixed-width header line."""
    starts = []
    for name in names:
        match = re.search(rf"(?:^|  ){re.escape(name)}(?:  |$)", header)
        if not match:
            raise ParseError(f"header {header!r} has no {name!r} column")
        starts.append(match.start() + (2 if match.group().startswith("  ") else 0))
    if starts != sorted(starts):
        raise ParseError(f"header {header!r}: columns out of order")
    return starts


def parse_mounted(text):
    """
    Parse ``mounted.ocfs2 -d`` (quick detect) or ``mounted.ocfs2 -f`` (full detect). Both print a
    fixed-width table whose column widths follow the header:

        Device      Stack  Cluster  F  UUID                              Label
        /dev/loop0  o2cb               A7485037D79840A198B34A5B1356DC3F  cluster_home

        Device      Stack  Cluster  F  Nodes
        /dev/sdb    o2cb   ocfs2       ServVirt1, ServVirt2

    Return ``{device: {"stack", "cluster", "global_heartbeat", ...}}`` plus ``uuid`` and
    ``label`` (-d) or ``mounted`` and ``nodes`` (-f; nodes are names, or node numbers as
    strings when the node is not in cluster.conf; ``nodes`` is None when mounted.ocfs2 could not
    read the slot map).
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Device"):
        raise ParseError("no 'Device ...' header line")
    header = lines[0]
    full = "Nodes" in header.split()
    names = (
        ["Stack", "Cluster", "F", "Nodes"] if full else ["Stack", "Cluster", "F", "UUID", "Label"]
    )
    starts = _columns(header, names)
    devices = {}
    for line in lines[1:]:
        cells = [line[: starts[0]]]
        cells += [line[a:b] for a, b in zip(starts, [*starts[1:], len(line)], strict=True)]
        cells = [cell.strip() for cell in cells]
        device, stack, cluster, flag = cells[:4]
        if not device.startswith("/") or not stack or flag not in ("", "G"):
            raise ParseError(f"line {line!r} is not a device row under {header!r}")
        entry = {"stack": stack, "cluster": cluster or None, "global_heartbeat": flag == "G"}
        if full:
            entry.update(_nodes_cell(cells[4]))
        else:
            entry["uuid"] = normalize_uuid(cells[4])
            entry["label"] = cells[5]
        devices[device] = entry
    return devices


def _nodes_cell(cell):
    if cell == "Not mounted":
        return {"mounted": False, "nodes": []}
    if cell == "Heartbeat device":
        return {"mounted": False, "nodes": [], "heartbeat_device": True}
    if not cell:
        # mounted.ocfs2 printed its error on stderr instead of the node list
        return {"mounted": None, "nodes": None}
    return {"mounted": True, "nodes": [node.strip() for node in cell.split(",")]}


def parse_wipefs(text):
    """
    Parse ``wipefs --no-act --json DEVICE``: the signatures libblkid finds (filesystems,
    partition tables, RAID/LVM members). Return a list of ``{"type", "offset", "uuid",
    "label"}`` (uuid/label None when absent); an empty list means no known signature.
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ParseError(f"not JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("signatures"), list):
        raise ParseError("no 'signatures' list")
    signatures = []
    for entry in data["signatures"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise ParseError(f"signature {entry!r} has no type")
        signatures.append(
            {key: entry.get(key) or None for key in ("type", "offset", "uuid", "label")}
        )
    return signatures


# tunefs.ocfs2 -Q format used by the module: one key=value per line (1.8.7 rejects %B)
TUNEFS_QUERY = (
    "label=%V\\nuuid=%U\\nslots=%N\\ncluster_size=%T\\ncompat=%M\\nincompat=%H\\nro_compat=%O\\n"
)


def parse_tunefs_query(text):
    """
    Parse ``tunefs.ocfs2 -Q TUNEFS_QUERY DEVICE``. Return ``{"label", "uuid", "slots",
    "cluster_size", "features": {"compat", "incompat", "ro_compat"}}`` with feature lists
    (empty for "None").
    """
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    missing = [
        k
        for k in ("label", "uuid", "slots", "cluster_size", "compat", "incompat", "ro_compat")
        if k not in values
    ]
    if missing:
        raise ParseError(f"missing {', '.join(missing)}")

    def features(value):
        return [] if value.strip() == "None" else value.split()

    return {
        "label": values["label"],
        "uuid": normalize_uuid(values["uuid"]),
        "slots": _int(values["slots"], 1, 255, "slots"),
        "cluster_size": _int(values["cluster_size"], 4096, 1 << 20, "cluster size"),
        "features": {k: features(values[k]) for k in ("compat", "incompat", "ro_compat")},
    }
