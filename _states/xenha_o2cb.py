"""
OCFS2 cluster states built on the ``xenha_o2cb`` execution module.

- ``cluster_present``: cluster.conf defines the cluster with exactly the given nodes and
  heartbeat mode.
- ``online``: the cluster is registered with the kernel (o2cb stack online).
- ``formatted``: a device holds OCFS2 with the given label; an empty device is formatted once,
  anything else is refused.

.. code-block:: yaml

    ocfs2-config-o2cb-cluster-present:
      xenha_o2cb.cluster_present:
        - name: ocfs2
        - nodes:
            ServVirt1: {ip: 192.168.25.10, number: 0}
            ServVirt2: {ip: 192.168.25.11, number: 1}
"""

import xenha_names
import xenha_o2cbparse
from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_o2cb"

DEFAULT_PORT = 7777


def __virtual__():
    if "xenha_o2cb.cluster_info" in __salt__:
        return __virtualname__
    return (False, "the xenha_o2cb execution module is not available (ocfs2-tools missing?)")


def _ret(name):
    return {"name": name, "changes": {}, "result": True, "comment": ""}


def _want_nodes(nodes):
    """Normalise and validate the wanted nodes: {name: {"number", "ip", "port"}}."""
    if not isinstance(nodes, dict):
        raise CommandExecutionError(f"nodes must be a mapping of node name to settings: {nodes!r}")
    wanted = {}
    for name, spec in nodes.items():
        xenha_names.check("host", name)
        if not isinstance(spec, dict) or "ip" not in spec or "number" not in spec:
            raise CommandExecutionError(f"node {name!r} needs 'ip' and 'number': {spec!r}")
        unknown = set(spec) - {"ip", "number", "port"}
        if unknown:
            raise CommandExecutionError(f"node {name!r}: unknown keys {sorted(unknown)}")
        try:
            ip = xenha_o2cbparse.ipv4(str(spec["ip"]), f"node {name!r}: ip")
        except xenha_o2cbparse.ParseError as err:
            raise CommandExecutionError(str(err)) from err
        wanted[name] = {
            "number": spec["number"],
            "ip": ip,
            "port": spec.get("port", DEFAULT_PORT),
        }
        for key, low, high in (("number", 0, 254), ("port", 1, 65535)):
            value = wanted[name][key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise CommandExecutionError(
                    f"node {name!r}: {key} {value!r} is not in {low}..{high}"
                )
    numbers = [node["number"] for node in wanted.values()]
    if len(numbers) != len(set(numbers)):
        raise CommandExecutionError(f"node numbers must be unique: {sorted(numbers)}")
    return wanted


def _plan(name, info, wanted, mode):
    """
    The o2cb edits that turn ``info`` (cluster_info, None when absent) into the wanted cluster,
    as (description, function, args, kwargs). o2cb cannot edit a node in place, so a node that
    differs is removed and added again; removals come first so numbers are free to reuse.
    """
    current = info["nodes"] if info else {}
    steps = []
    if info is None:
        steps.append((f"add-cluster {name}", "add_cluster", [name], {}))
    for node in sorted(set(current) - set(wanted)) + sorted(
        n for n in set(current) & set(wanted) if current[n] != wanted[n]
    ):
        steps.append((f"remove-node {name} {node}", "remove_node", [name, node], {}))
    if (info["heartbeat_mode"] if info else "local") != mode:
        steps.append((f"heartbeat-mode {name} {mode}", "heartbeat_mode", [name, mode], {}))
    for node in sorted(wanted, key=lambda n: wanted[n]["number"]):
        if current.get(node) != wanted[node]:
            spec = wanted[node]
            steps.append(
                (
                    f"add-node {name} {node} --ip {spec['ip']} --port {spec['port']}"
                    f" --number {spec['number']}",
                    "add_node",
                    [name, node, spec["ip"]],
                    {"port": spec["port"], "number": spec["number"]},
                )
            )
    return steps


def _changes(old, new):
    """Changes between two cluster_info answers (None: cluster absent)."""
    changes = {}
    if (old is None) != (new is None):
        changes["cluster"] = {"old": old and "present", "new": new and "present"}
    old_nodes, new_nodes = (info["nodes"] if info else {} for info in (old, new))
    nodes = {
        node: {"old": old_nodes.get(node), "new": new_nodes.get(node)}
        for node in sorted(set(old_nodes) | set(new_nodes))
        if old_nodes.get(node) != new_nodes.get(node)
    }
    if nodes:
        changes["nodes"] = nodes
    old_mode, new_mode = (info and info["heartbeat_mode"] for info in (old, new))
    if old_mode != new_mode:
        changes["heartbeat_mode"] = {"old": old_mode, "new": new_mode}
    return changes


def cluster_present(name, nodes, heartbeat_mode="local", config_file=None):
    """
    Make cluster.conf define cluster ``name`` with exactly ``nodes`` (nodes not listed are
    removed, nodes whose number, ip or port differ are removed and added again) and the given
    heartbeat mode. Heartbeat regions (global mode) are left as they are.

    name
        Cluster name (1-16 letters or digits).
    nodes
        ``{node name: {"ip": ..., "number": ..., "port": 7777}}``; node names are the hosts'
        short hostnames.
    heartbeat_mode
        ``local`` (default) or ``global``.
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).
    """
    ret = _ret(name)
    try:
        xenha_names.check("cluster", name)
        wanted = _want_nodes(nodes)
        if heartbeat_mode not in ("local", "global"):
            raise CommandExecutionError(
                f"invalid heartbeat_mode {heartbeat_mode!r}: must be local or global"
            )
        info = __salt__["xenha_o2cb.cluster_info"](name, config_file=config_file)
    except CommandExecutionError as err:
        return {**ret, "result": False, "comment": str(err)}
    steps = _plan(name, info, wanted, heartbeat_mode)
    if not steps:
        return {**ret, "comment": f"OCFS2 cluster {name} is configured as wanted"}
    commands = [f"o2cb {description}" for description, *_ in steps]
    changes = _changes(info, {"nodes": wanted, "heartbeat_mode": heartbeat_mode})
    if __opts__["test"]:
        return {
            **ret,
            "result": None,
            "changes": changes,
            "comment": "Would run: " + "; ".join(commands),
        }
    done = []
    for (description, function, args, kwargs), command in zip(steps, commands, strict=True):
        try:
            __salt__[f"xenha_o2cb.{function}"](*args, config_file=config_file, **kwargs)
        except CommandExecutionError as err:
            return {
                **ret,
                "result": False,
                "changes": _changes(info, _current(name, config_file)),
                "comment": f"o2cb {description} failed after running"
                f" {'; '.join(done) or 'nothing'}: {err}",
            }
        done.append(command)
    return {**ret, "changes": changes, "comment": "Ran: " + "; ".join(done)}


def _current(name, config_file):
    """cluster_info after a partial run, for honest change reporting."""
    try:
        return __salt__["xenha_o2cb.cluster_info"](name, config_file=config_file)
    except CommandExecutionError:
        return None


def online(name, config_file=None, init_script=None):
    """
    Bring OCFS2 cluster ``name`` online (``o2cb register-cluster``, plus ``start-heartbeat`` in
    global heartbeat mode) unless it already is. Needs the configfs and ocfs2 kernel modules.

    name
        Cluster name.
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).
    init_script
        Path of o2cb's init script: its ``load`` and ``online`` verbs do the work instead,
        kernel modules and the settings file's timeouts included (excludes ``config_file``).
    """
    ret = _ret(name)
    if init_script is None:
        commands = f"o2cb register-cluster {name} (and start-heartbeat in global heartbeat mode)"
        kwargs = {"config_file": config_file}
    else:
        commands = f"{init_script} load; {init_script} online {name}"
        kwargs = {"config_file": config_file, "init_script": init_script}
    try:
        before = __salt__["xenha_o2cb.status"](name, config_file=config_file)
        if before["online"]:
            return {**ret, "comment": f"OCFS2 cluster {name} is online"}
        if __opts__["test"]:
            return {
                **ret,
                "result": None,
                "changes": {"online": {"old": False, "new": True}},
                "comment": f"Would run: {commands}",
            }
        __salt__["xenha_o2cb.online"](name, **kwargs)
        after = __salt__["xenha_o2cb.status"](name, config_file=config_file)
    except CommandExecutionError as err:
        return {**ret, "result": False, "comment": str(err)}
    if not after["online"]:
        return {
            **ret,
            "result": False,
            "comment": f"{commands} succeeded but the cluster is still offline",
        }
    return {
        **ret,
        "changes": {"online": {"old": False, "new": True}},
        "comment": f"OCFS2 cluster {name} brought online",
    }


def _refusal(name, info, label, slots):
    """Why a device that is not empty cannot be used as wanted (None: it already is)."""
    if info["content"] != "ocfs2":
        return f"{name} holds {', '.join(info['types'])}, not OCFS2: refusing to format"
    problems = []
    if info["label"] != label:
        problems.append(f"label {info['label']!r}, not {label!r}")
    if info["slots"] < slots:
        problems.append(f"{info['slots']} node slots, fewer than {slots}")
    if problems:
        return (
            f"{name} already holds OCFS2 with {' and '.join(problems)}; not reformatting"
            " (tunefs.ocfs2 -L/-N can change it while the cluster is online)"
        )
    return None


def formatted(
    name, label, slots, *, cluster_size="32K", block_size="4K", feature_level="max-compat"
):
    """
    Make device ``name`` hold OCFS2 labelled ``label`` with at least ``slots`` node slots.
    An empty device (no signature at all) is formatted once with mkfs.ocfs2; OCFS2 with the
    right label is left alone; anything else (another filesystem, a partition table, OCFS2 with
    another label or too few slots) is refused with result False and nothing is written.

    name
        Block device or image path.
    label
        Volume label.
    slots
        Node slots (how many nodes may mount at once).
    cluster_size, block_size, feature_level
        mkfs.ocfs2 options for a new volume (defaults 32K, 4K, max-compat).
    """
    ret = _ret(name)
    options = {"cluster_size": cluster_size, "block_size": block_size,
               "feature_level": feature_level}  # fmt: skip
    wanted = {"label": label, "slots": slots, **options}
    try:
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 255:
            raise CommandExecutionError(f"slots {slots!r} is not an integer in 1..255")
        info = __salt__["xenha_o2cb.device_info"](name)
        if info["content"] != "empty":
            refusal = _refusal(name, info, label, slots)
            ret["result"] = refusal is None
            ret["comment"] = refusal or f"{name} holds OCFS2 labelled {label}"
        elif __opts__["test"]:
            ret["result"] = None
            ret["changes"] = {"formatted": wanted}
            ret["comment"] = (
                f"Would format {name} as OCFS2 with mkfs.ocfs2 (label {label}, {slots} slots,"
                f" cluster size {cluster_size}, block size {block_size},"
                f" feature level {feature_level})"
            )
        else:
            after = __salt__["xenha_o2cb.format"](name, label, slots, **options)
            ret["changes"] = {"formatted": {**wanted, "uuid": after["uuid"]}}
            ret["comment"] = f"Formatted {name} as OCFS2 labelled {label}"
    except CommandExecutionError as err:
        return {**ret, "result": False, "comment": str(err)}
    return ret
