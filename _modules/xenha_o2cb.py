"""
OCFS2 cluster configuration and volumes through ocfs2-tools (``o2cb``, ``mkfs.ocfs2``,
``tunefs.ocfs2``, ``mounted.ocfs2``) and util-linux ``wipefs``.

Edits and reads ``cluster.conf`` (default ``/etc/ocfs2/cluster.conf``; every function takes
``config_file`` for another path), reports the cluster stack's status, brings a cluster online,
lists OCFS2 volumes and the nodes that mount them, inspects devices and formats an empty one.

Needs the ocfs2-tools package (Debian/SUSE: ocfs2-tools). Registering a cluster and mounting
also need the configfs and ocfs2 kernel modules.
"""

import os
import re
import shlex

import salt.utils.path
import xenha_names
import xenha_o2cbparse as parse
from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_o2cb"
__func_alias__ = {"format_": "format"}

BINARIES = ("o2cb", "mkfs.ocfs2", "tunefs.ocfs2", "mounted.ocfs2", "wipefs")
INIT_SCRIPT = "/etc/init.d/o2cb"
DEFAULT_CONFIG = "/etc/ocfs2/cluster.conf"

_PATH_RE = re.compile(r"/[^\s\x00-\x1f]*")
_LABEL_RE = re.compile(r"[A-Za-z0-9_.-]{1,63}")
_CLUSTER_SIZES = ("4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M")
_BLOCK_SIZES = ("512", "1K", "2K", "4K")
_FEATURE_LEVELS = ("default", "max-compat", "max-features")
# o2cb answers "o2cb: Unknown cluster 'x'" or "... already exists" on stderr with exit code 0
_O2CB_ERROR = re.compile(r"^o2cb: ", re.MULTILINE)
# Debian's LSB hook (init-functions.d/40-systemd) runs "systemctl status o2cb" for the init
# script's status, which prints no cluster state, unless SYSTEMCTL_SKIP_REDIRECT is set
_ENV = {"LC_ALL": "C", "SYSTEMCTL_SKIP_REDIRECT": "1"}


def __virtual__():
    missing = [name for name in BINARIES if not salt.utils.path.which(name)]
    if missing:
        return (False, f"xenha_o2cb needs {', '.join(missing)} (install ocfs2-tools, util-linux)")
    return __virtualname__


# ---------------------------------------------------------------- validation


def _path(value, what):
    """An absolute path with no whitespace or control characters (one argv element)."""
    if not isinstance(value, str) or not _PATH_RE.fullmatch(value):
        raise CommandExecutionError(
            f"invalid {what} {value!r}: must be an absolute path without spaces or control"
            " characters"
        )
    return value


def _int(value, low, high, what):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CommandExecutionError(f"invalid {what} {value!r}: must be an integer")
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise CommandExecutionError(f"invalid {what} {value!r}: must be {low}..{high}")
    return number


def _ip(value):
    try:
        return parse.ipv4(str(value), "node IP")
    except parse.ParseError as err:
        raise CommandExecutionError(f"invalid node IP {value!r}: must be an IPv4 address") from err


def _node_name(name):
    # the OCFS2 node name is the host's short hostname; the kernel keeps at most 64 characters
    xenha_names.check("host", name)
    if len(name) > 64:
        raise CommandExecutionError(f"invalid node name {name!r}: longer than 64 characters")
    return name


def _choice(value, allowed, what):
    if value not in allowed:
        raise CommandExecutionError(
            f"invalid {what} {value!r}: must be one of {', '.join(allowed)}"
        )
    return value


# ---------------------------------------------------------------- running commands


def _run(argv):
    """Run argv without a shell; return Salt's run_all dict."""
    return __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True, env=_ENV)


def _fail(argv, ret, why="failed"):
    output = (ret.get("stderr") or ret.get("stdout") or "").strip()
    return CommandExecutionError(
        f"{shlex.join(argv)} {why} (exit code {ret.get('retcode')}): {output}"
    )


def _check(argv, ret):
    if ret["retcode"] != 0:
        raise _fail(argv, ret)
    return ret["stdout"]


def _parsed(parser, argv, text):
    try:
        return parser(text)
    except parse.ParseError as err:
        raise CommandExecutionError(
            f"cannot parse the output of {shlex.join(argv)}: {err}"
        ) from err


def _o2cb_argv(config_file, *args):
    config = DEFAULT_CONFIG if config_file is None else _path(config_file, "config_file")
    return ["o2cb", f"--config-file={config}", *args]


def _o2cb(config_file, *args, parser=None):
    """
    Run an o2cb config command and return its output, through ``parser`` when given. o2cb
    reports some errors only on stderr, with exit code 0: those raise as well.
    """
    argv = _o2cb_argv(config_file, *args)
    ret = _run(argv)
    if ret["retcode"] != 0 or _O2CB_ERROR.search(ret["stderr"] or ""):
        raise _fail(argv, ret)
    return ret["stdout"] if parser is None else _parsed(parser, argv, ret["stdout"])


# ---------------------------------------------------------------- cluster.conf


def list_clusters(config_file=None):
    """
    List the cluster names in cluster.conf (an absent file has none).

    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.list_clusters
    """
    return _o2cb(config_file, "list-clusters", parser=parse.parse_clusters)


def cluster_info(cluster, config_file=None):
    """
    Describe one cluster of cluster.conf, or return None when the file does not define it:
    ``{"name", "node_count", "heartbeat_mode", "nodes": {name: {"number", "ip", "port"}},
    "heartbeats": [region, ...]}``.

    cluster
        Cluster name (1-16 letters or digits).
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.cluster_info ocfs2
    """
    xenha_names.check("cluster", cluster)
    argv = _o2cb_argv(config_file, "list-cluster", cluster, "--oneline")
    ret = _run(argv)
    stderr = ret["stderr"] or ""
    if ret["retcode"] == 0 and stderr.strip() == f"o2cb: Unknown cluster '{cluster}'":
        return None
    if ret["retcode"] != 0 or _O2CB_ERROR.search(stderr):
        raise _fail(argv, ret)
    data = _parsed(parse.parse_oneline, argv, ret["stdout"])
    if cluster not in data["clusters"]:
        raise _fail(argv, ret, f"printed no 'cluster: ... {cluster}' line")
    return {
        "name": cluster,
        **data["clusters"][cluster],
        "nodes": {
            name: {k: node[k] for k in ("number", "ip", "port")}
            for name, node in data["nodes"].items()
            if node["cluster"] == cluster
        },
        "heartbeats": [hb["region"] for hb in data["heartbeats"] if hb["cluster"] == cluster],
    }


def _known(cluster, config_file):
    info = cluster_info(cluster, config_file)
    if info is None:
        path = config_file or DEFAULT_CONFIG
        raise CommandExecutionError(f"cluster {cluster!r} is not defined in {path}")
    return info


def list_nodes(cluster, config_file=None):
    """
    List a cluster's nodes: ``{name: {"number", "ip", "port"}}``. Raises when the cluster is
    not defined.

    cluster
        Cluster name.
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.list_nodes ocfs2
    """
    return _known(cluster, config_file)["nodes"]


def add_cluster(cluster, config_file=None):
    """
    Add a cluster to cluster.conf (creating the file). Raises when it already exists.

    cluster
        Cluster name (1-16 letters or digits).
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.add_cluster ocfs2
    """
    _o2cb(config_file, "add-cluster", xenha_names.check("cluster", cluster))
    return True


def remove_cluster(cluster, config_file=None):
    """
    Remove a cluster and its nodes and heartbeat regions from cluster.conf.

    cluster
        Cluster name.
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.remove_cluster ocfs2
    """
    _o2cb(config_file, "remove-cluster", xenha_names.check("cluster", cluster))
    return True


def add_node(cluster, name, ip, *, port=7777, number=None, config_file=None):
    """
    Add a node to a cluster in cluster.conf and return it as written
    (``{"number", "ip", "port"}``; o2cb picks the lowest free number when none is given).
    Raises when the name or number is taken.

    cluster
        Cluster name.
    name
        Node name: the host's short hostname.
    ip
        IPv4 address of the cluster interconnect.
    port
        o2net TCP port (default 7777).
    number
        Node number 0-254.
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.add_node ocfs2 ServVirt1 192.168.25.10 number=0
    """
    xenha_names.check("cluster", cluster)
    args = ["add-node", cluster, _node_name(name), "--ip", _ip(ip)]
    args += ["--port", str(_int(port, 1, 65535, "port"))]
    if number is not None:
        args += ["--number", str(_int(number, 0, 254, "node number"))]
    _o2cb(config_file, *args)
    return list_nodes(cluster, config_file)[name]


def remove_node(cluster, name, config_file=None):
    """
    Remove a node from a cluster in cluster.conf. Raises when it is not there.

    cluster
        Cluster name.
    name
        Node name.
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.remove_node ocfs2 ServVirt2
    """
    _o2cb(config_file, "remove-node", xenha_names.check("cluster", cluster), _node_name(name))
    return True


def heartbeat_mode(cluster, mode=None, config_file=None):
    """
    Return a cluster's heartbeat mode (``local`` or ``global``); with ``mode``, set it first.

    cluster
        Cluster name.
    mode
        ``local`` or ``global`` to set; omit to read.
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.heartbeat_mode ocfs2
        salt '*' xenha_o2cb.heartbeat_mode ocfs2 local
    """
    xenha_names.check("cluster", cluster)
    if mode is not None:
        _o2cb(config_file, "heartbeat-mode", cluster, _choice(mode, ("local", "global"), "mode"))
    return _known(cluster, config_file)["heartbeat_mode"]


# ---------------------------------------------------------------- cluster stack


def status(cluster=None, config_file=None):
    """
    Report the cluster stack: ``{"cluster", "online", "heartbeat_active", "heartbeat_mode",
    "timeouts", "drivers", "source"}``. Uses the o2cb init script's ``status`` when it exists
    (it also shows timeouts and heartbeat), else ``o2cb cluster-status``. A stack that cannot
    be reached (no configfs or ocfs2 modules) is reported as offline, not raised.

    cluster
        Cluster name (default: the init script's O2CB_BOOTCLUSTER, or the registered cluster).
    config_file
        Path of cluster.conf; when given, ``o2cb cluster-status`` is used because the init
        script only knows /etc/ocfs2/cluster.conf.

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.status ocfs2
    """
    names = [] if cluster is None else [xenha_names.check("cluster", cluster)]
    if config_file is None and os.path.exists(INIT_SCRIPT):
        argv = [INIT_SCRIPT, "status", *names]
        ret = _run(argv)
        try:
            result = parse.parse_init_status(ret["stdout"])
        except parse.ParseError as err:
            raise _fail(argv, ret, f"gave no cluster status ({err})") from err
        return {**result, "source": INIT_SCRIPT}
    argv = _o2cb_argv(config_file, "cluster-status", *names)
    ret = _run(argv)
    # exit code 1 means offline; "Unable to access cluster service" is offline as well
    if ret["retcode"] not in (0, 1):
        raise _fail(argv, ret)
    result = _parsed(parse.parse_cluster_status, argv, ret["stdout"])
    return {
        "cluster": result["cluster"] or cluster,
        "online": result["online"],
        "heartbeat_active": None,
        "heartbeat_mode": None,
        "timeouts": {},
        "drivers": {},
        "source": "o2cb cluster-status",
    }


def online(cluster, config_file=None, init_script=None):
    """
    Bring a cluster online: ``o2cb register-cluster`` pushes cluster.conf into configfs, and
    in global heartbeat mode ``o2cb start-heartbeat`` starts the heartbeat regions. Needs the
    configfs and o2cb kernel modules; raises with o2cb's message otherwise.

    With ``init_script``, runs its ``load`` (kernel modules, configfs, dlmfs) and
    ``online CLUSTER`` (register, the timeouts of its settings file, heartbeat) instead: what
    the o2cb service's start does, for a service that already ran with o2cb disabled.

    cluster
        Cluster name.
    config_file
        Path of cluster.conf (default /etc/ocfs2/cluster.conf).
    init_script
        Path of o2cb's init script (e.g. /etc/init.d/o2cb); it reads only the default
        cluster.conf, so it excludes ``config_file``.

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.online ocfs2
        salt '*' xenha_o2cb.online ocfs2 init_script=/etc/init.d/o2cb
    """
    if init_script is not None:
        if config_file is not None:
            raise CommandExecutionError(
                "invalid config_file: init_script reads only /etc/ocfs2/cluster.conf"
            )
        script = _path(init_script, "init_script")
        for argv in ([script, "load"], [script, "online", xenha_names.check("cluster", cluster)]):
            _check(argv, _run(argv))
        return True
    mode = heartbeat_mode(cluster, config_file=config_file)
    _o2cb(config_file, "register-cluster", cluster)
    if mode == "global":
        _o2cb(config_file, "start-heartbeat", cluster)
    return True


# ---------------------------------------------------------------- volumes


def mounted(device=None):
    """
    List OCFS2 volumes (all block devices, or one device) and the nodes that mount them:
    ``{device: {"stack", "cluster", "global_heartbeat", "uuid", "label", "mounted",
    "nodes"}}``, from ``mounted.ocfs2 -d`` and ``mounted.ocfs2 -f``. A device that does not
    hold OCFS2 is absent from the answer.

    device
        Block device or image path (default: scan /proc/partitions).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.mounted
        salt '*' xenha_o2cb.mounted /dev/sdb
    """
    target = [] if device is None else [_path(device, "device")]
    volumes = {}
    for flag in ("-d", "-f"):
        argv = ["mounted.ocfs2", flag, *target]
        for dev, entry in _parsed(parse.parse_mounted, argv, _check(argv, _run(argv))).items():
            volumes.setdefault(dev, {"mounted": None, "nodes": None}).update(entry)
    return volumes


def device_info(device):
    """
    Say what a device holds, from the signatures libblkid finds (``wipefs --no-act``):
    ``content`` is ``empty`` (no known signature), ``ocfs2`` (OCFS2 and nothing else) or
    ``other`` (another filesystem, a partition table, RAID/LVM metadata, or OCFS2 mixed with
    another signature). ``types`` lists every signature found. For OCFS2 the answer adds
    ``label``, ``uuid``, ``slots``, ``cluster_size`` and ``features`` from ``tunefs.ocfs2 -Q``.

    device
        Block device or image path.

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_o2cb.device_info /dev/sdb
    """
    _path(device, "device")
    if not os.path.exists(device):
        raise CommandExecutionError(f"device {device!r} does not exist")
    argv = ["wipefs", "--no-act", "--json", device]
    signatures = _parsed(parse.parse_wipefs, argv, _check(argv, _run(argv)))
    types = [sig["type"] for sig in signatures]
    info = {"device": device, "types": types, "label": None, "uuid": None}
    if not types:
        return {**info, "content": "empty"}
    if types != ["ocfs2"]:
        # label/uuid of the first signature help the operator recognise what is there
        return {
            **info,
            "content": "other",
            "label": signatures[0]["label"],
            "uuid": signatures[0]["uuid"],
        }
    argv = ["tunefs.ocfs2", "-Q", parse.TUNEFS_QUERY, device]
    ret = _run(argv)
    if ret["retcode"] != 0 or ret["stderr"]:  # tunefs.ocfs2 exits 0 on some open errors
        raise _fail(argv, ret)
    return {**info, "content": "ocfs2", **_parsed(parse.parse_tunefs_query, argv, ret["stdout"])}


def format_(
    device, label, slots, *, cluster_size="32K", block_size="4K", feature_level="max-compat"
):
    """
    Format an empty device as OCFS2 with ``mkfs.ocfs2`` and return ``device_info`` of the result.
    Refuses (raises) unless the device holds no signature at all: it never reformats OCFS2 and
    never overwrites another filesystem.

    device
        Block device or image path.
    label
        Volume label (1-63 letters, digits, '_', '.', '-').
    slots
        Node slots: how many nodes may mount at once (1-255).
    cluster_size
        4K to 1M (default 32K).
    block_size
        512, 1K, 2K or 4K (default 4K).
    feature_level
        default, max-compat or max-features (default max-compat).

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_o2cb.format /dev/sdb cluster_home 2
    """
    if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
        raise CommandExecutionError(
            f"invalid label {label!r}: must be 1-63 letters, digits, '_', '.' or '-'"
        )
    argv = [
        "mkfs.ocfs2",
        f"--fs-feature-level={_choice(feature_level, _FEATURE_LEVELS, 'feature_level')}",
        "-b", _choice(str(block_size), _BLOCK_SIZES, "block_size"),
        "-C", _choice(str(cluster_size), _CLUSTER_SIZES, "cluster_size"),
        "-N", str(_int(slots, 1, 255, "slots")),
        "-L", label,
        _path(device, "device"),
    ]  # fmt: skip
    before = device_info(device)
    if before["content"] != "empty":
        raise CommandExecutionError(
            f"refusing to format {device}: it holds {', '.join(before['types'])}"
            + (f" (label {before['label']!r})" if before["label"] else "")
        )
    _check(argv, _run(argv))
    return device_info(device)
