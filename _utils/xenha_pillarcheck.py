"""
Validation and normalisation of the ``xenha`` pillar tree (pure: pillar data in, cluster out).

``check(tree)`` takes the value of the ``xenha`` pillar key and returns a new dict with every
default filled in plus a few derived keys (``vmhosts``, ``storage_host``), or raises
``CommandExecutionError`` whose message starts with the offending key, e.g.
``xenha:hosts:ServVirt2:ip: missing``. Formulas call it (through the ``xenha_pillar`` execution
module) while rendering, so a bad pillar aborts the run before any state changes anything.
docs/pillar.md describes every key.

The checks of single values that runtime consumers repeat on their own inputs are public here
(``integer``, ``port``, ``seconds``, ``text``, ``address``, ``abspath``, ``domu_names``, ``bmc``,
``heartbeat_key``, ``heartbeat_timing``, ``failover_settings``, ``admission``,
``memory_reserve``): the heartbeat beacon, fencing, placement, the failover engine, the
preflight clock check and the domU state call the same functions, so the pillar check accepts
what they accept (tests/unit/test_pillar_consumers.py holds it to that). Each takes the value
and ``where`` (the key to name in the message) and raises CommandExecutionError.
``xenha:sanlock`` and the host_ids are checked by ``xenha_sanlockcfg.settings``, the function
the sanlock module, its formula and the runner run with.
"""

import copy
import ipaddress
import math
import re
import unicodedata

import xenha_names
import xenha_sanlockcfg
from salt.exceptions import CommandExecutionError

ROLES = ("vmhost", "storage")
NTP_IMPLEMENTATIONS = ("chrony", "ntpd", "ntpsec")
TARGET_IMPLEMENTATIONS = ("tgt", "lio", "iet")
TOOLSTACKS = ("xl", "xm")
BMC_INTERFACES = ("lan", "lanplus")
ADMISSIONS = ("off", "strict")  # xenha_domu.running: refuse a start that breaks N+1 (strict)
# iSCSI names (RFC 3720 3.2.6.3): iqn.YYYY-MM.reversed.domain[:anything] or eui.<16 hex>
IQN_RE = re.compile(r"iqn\.\d{4}-\d{2}\.[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[a-z0-9.:-]+)?")
EUI_RE = re.compile(r"eui\.[0-9A-F]{16}")
# Values end up in configuration files and command lines: paths, names and secrets are held to
# character sets that need no quoting (no blanks, quotes or shell metacharacters).
# Each rule: (pattern for fullmatch, what the message says a value must be).
PATH = (
    re.compile(r"/[A-Za-z0-9_.:+@,=/-]*"),
    "an absolute path of letters, digits and _ . : + @ , = / -",
)
CHAP_USER = (re.compile(r"[A-Za-z0-9_.:@-]{1,255}"), "letters, digits and _ . : @ -")
# tgt and IET split their configuration lines on blanks
SECRET = (re.compile(r"[\x21-\x7e]+"), "printable ASCII without blanks")
USER = (re.compile(r"[a-z_][a-z0-9_-]{0,31}"), "a user name")
SSH_KEY = (
    re.compile(r"(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+=*(?: [^\n]*)?"),
    "one OpenSSH public key line ('<type> <base64> [comment]')",
)
# OCFS2 volume labels as xenha_o2cb.format accepts them (mkfs.ocfs2 allows 63 bytes)
LABEL_RE = re.compile(r"[A-Za-z0-9_.-]{1,63}")
MIN_CHAP_SECRET = 12
MIN_SHARED_KEY = 16  # bytes of the heartbeat's HMAC key
MAX_PARALLEL = 64  # concurrent live migrations (xenha:evacuation:parallel)
MEMORY_RESERVE_MIB = 256  # a VM host's memory_reserve_mib when unset: dom0 and its toolstack
MIN_SEND_INTERVAL = 0.05  # s between keepalives: faster floods the link for nothing
BMC_USER_MAX = 16  # IPMI 2.0 user names are 16 bytes at most (ipmitool refuses longer ones)
# {{ }}, {% %} and {# #} would be evaluated when a template or the pillar renders the value
JINJA_RE = re.compile(r"\{[{%#]")
# Mounting the shared volume over one of these would hide the system's own files.
SYSTEM_DIRS = frozenset((
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",  # noqa: S108
))  # fmt: skip
HIDDEN = "<secret>"
SECRETS_HINT = "a secret: set it in the secrets pillar (pillar/xenha/secrets.yaml, docs/pillar.md)"
BMC_CONF = "/etc/salt/master.d/xenha-bmc.conf, docs/pillar.md"
BMC_HINT = f"BMC passwords are master configuration: xenha_bmc in {BMC_CONF}"

OCFS2_TIMEOUT_DEFAULTS = {
    "heartbeat_dead_threshold": 31,
    "idle_timeout_ms": 30000,
    "keepalive_delay_ms": 2000,
    "reconnect_delay_ms": 2000,
}


class _Path:
    """A position in the pillar tree, used to name the key in every message."""

    def __init__(self, *parts):
        self.parts = parts

    def __truediv__(self, part):
        return _Path(*self.parts, part)

    def __str__(self):
        return ":".join(str(p) for p in self.parts)

    def fail(self, problem):
        fail(self, problem)


ROOT = _Path("xenha")


def fail(where, problem):
    """Raise the one-line error ``<where>: <problem>``."""
    raise CommandExecutionError(f"{where}: {problem}")


def _bad_character(value, allowed=""):
    """The first control, format or line-separator character of ``value`` not in ``allowed``."""
    for char in value:
        if char not in allowed and unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs", "Cn",
                                                                 "Zl", "Zp"):  # fmt: skip
            return char
    return None


def text(value, where, *, argv=False, multiline=False, secret=False):
    """
    A non-empty string without control characters (``multiline``: newlines allowed); ``argv``:
    not starting with '-' either, as it is handed to a command as an argument. A ``secret`` is
    not repeated in the message.
    """
    if not isinstance(value, str) or value == "":
        fail(where, f"must be a non-empty string, got {type(value).__name__}")
    shown = "the secret" if secret else _show(value)
    bad = _bad_character(value, "\n" if multiline else "")
    if bad is not None:
        fail(where, f"{shown} contains the control character {bad!r}")
    if argv and value.startswith("-"):
        fail(where, f"{shown} must not start with '-' (a command would read it as an option)")
    return value


def _show(value):
    """repr of a value for a message, cut short (a pillar may hold a 400-digit number)."""
    try:
        shown = repr(value)
    except ValueError:  # an int with more digits than Python prints
        return f"an integer of {value.bit_length()} bits"
    return shown if len(shown) <= 60 else shown[:57] + "..."


def integer(value, where, low, high):
    """An int (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        fail(where, f"must be an integer, got {_show(value)}")
    if not low <= value <= high:
        fail(where, f"{_show(value)} is out of range {low}..{high}")
    return value


def memory_reserve(value, where):
    """
    The MiB a VM host keeps from domUs: its ``memory_reserve_mib``, ``MEMORY_RESERVE_MIB`` when
    unset (None). The planners (placement, N+1, admission, the failover's restart plan) read
    the raw pillar through this, so they keep what the check and ``dom0-min-mem`` keep.
    """
    return MEMORY_RESERVE_MIB if value is None else integer(value, where, 0, 2**31)


def port(value, where):
    """A TCP/UDP port number, 1..65535."""
    return integer(value, where, 1, 65535)


def seconds(value, where, minimum=None):
    """
    A finite number (int or float, not a bool) as a float: above 0, or at least ``minimum``.
    NaN and infinity are refused: every comparison with NaN is false, so a NaN timeout never
    expires and a NaN bound never trips.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(where, f"must be a number, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        fail(where, f"must be a finite number, got {_show(value)}")
    if minimum is None and number <= 0:
        fail(where, f"must be a positive number, got {_show(value)}")
    if minimum is not None and number < minimum:
        fail(where, f"must be at least {minimum}, got {_show(value)}")
    return number


def admission(value, where):
    """A domU start's admission policy: ``off`` (None too) or ``strict`` (keep N+1)."""
    if value is None:
        return "off"
    if value not in ADMISSIONS:
        fail(where, f"unknown value {_show(value)}: must be one of {', '.join(ADMISSIONS)}")
    return value


def address(value, where):
    """A host's own IP address, normalised: not a wildcard, broadcast or multicast address."""
    try:
        ip = ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        fail(where, f"{_show(value)} is not an IP address")
    if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip.is_reserved):
        fail(
            where, f"{_show(value)} is a wildcard, broadcast or multicast address, not a host's own"
        )
    return str(ip)


def abspath(value, where, *, under=None):
    """
    An absolute path of the characters in PATH without '.', '..' or empty components (so it
    names what it says, and its last component is a file name); with ``under``, a path inside
    that directory.
    """
    pattern, description = PATH
    if not isinstance(value, str) or not pattern.fullmatch(value):
        fail(where, f"{_show(value)} must be {description}")
    if value != "/" and any(part in ("", ".", "..") for part in value.split("/")[1:]):
        fail(where, f"{_show(value)} must be a plain path (no '.', '..', '//' or trailing '/')")
    if under is not None and not value.startswith(under.rstrip("/") + "/"):
        fail(where, f"{_show(value)} is not inside {under}")
    return value


def domu_names(value, where):
    """A list of domU names (anti-affinity)."""
    if not isinstance(value, list):
        fail(where, f"must be a list of domU names, got {_show(value)}")
    for index, name in enumerate(value):
        try:
            xenha_names.check("domu", name)
        except CommandExecutionError as err:
            fail(_Path(where, index), str(err))
    return value


def _mapping(value, path, required=True):
    if value is None and not required:
        return {}
    if value is None:
        path.fail("missing")
    if not isinstance(value, dict):
        path.fail(f"must be a mapping, got {type(value).__name__}")
    return value


def _get(data, key, path, default=None, *, required=False):
    value = data.get(key)
    if value is None:
        if required:
            (path / key).fail("missing")
        return default
    return value


def _string(data, key, path, default=None, *, required=False, secret=False, multiline=False):
    """A string setting; every one is held to ``text``: no control characters, and no leading
    '-' unless it is a secret or key material (PEM starts with '-----'), which never go on a
    command line."""
    value = data.get(key)
    if value is None or value == "":
        if secret and required:
            (path / key).fail(f"missing ({SECRETS_HINT})")
        if required:
            (path / key).fail("missing")
        return default
    if not isinstance(value, str):
        (path / key).fail(f"must be a string, got {type(value).__name__}")
    return text(
        value, path / key, argv=not (secret or multiline), multiline=multiline, secret=secret
    )


def _integer(data, key, path, low, high, *, default=None, required=False):
    value = _get(data, key, path, default, required=required)
    return None if value is None else integer(value, path / key, low, high)


def _number(data, key, path, default):
    return seconds(_get(data, key, path, default), path / key)


def _boolean(data, key, path, default):
    value = _get(data, key, path, default)
    if not isinstance(value, bool):
        (path / key).fail(f"must be true or false, got {value!r}")
    return value


def _port(data, key, path, default):
    return port(_get(data, key, path, default), path / key)


def _choice(data, key, path, choices, default):
    value = _get(data, key, path, default)
    if value not in choices:
        (path / key).fail(f"unknown value {value!r}: must be one of {', '.join(choices)}")
    return value


def _ip(data, key, path, required=True):
    value = _get(data, key, path, required=required)
    if value is None:
        return None
    return address(value, path / key)


def _abspath(data, key, path, default=None, *, required=False, under=None):
    value = _string(data, key, path, default, required=required)
    return None if value is None else abspath(value, path / key, under=under)


def _matching(data, key, path, rule, default=None, *, required=False, secret=False):
    value = _string(data, key, path, default, required=required, secret=secret)
    pattern, description = rule
    if value is not None and not pattern.fullmatch(value):
        shown = "the secret" if secret else _show(value)
        (path / key).fail(f"{shown} must be {description}")
    return value


def _name(kind, value, path):
    try:
        return xenha_names.check(kind, value)
    except CommandExecutionError as err:
        path.fail(str(err))


def _iqn(data, key, path, required=True):
    value = _string(data, key, path, required=required)
    if value is not None and not (IQN_RE.fullmatch(value) or EUI_RE.fullmatch(value)):
        (path / key).fail(f"{value!r} is not an iSCSI name (iqn.YYYY-MM.reversed.domain[:id])")
    return value


def _unique(seen, value, path, what):
    """Record value as used by path; fail naming both keys when it is already taken."""
    if value in seen:
        path.fail(f"duplicate {what} {value!r} (also used by {seen[value]})")
    seen[value] = str(path)


def _host(minion_id, data, path, seen_ips):
    _name("host", minion_id, path)
    data = _mapping(data, path)
    host = dict(data)
    host["id"] = minion_id
    host["hostname"] = _name("host", _string(data, "hostname", path, minion_id), path / "hostname")
    if "." in host["hostname"]:
        (path / "hostname").fail(f"{host['hostname']!r} must be a short host name (no dots)")
    host["ip"] = _ip(data, "ip", path)
    _unique(seen_ips, host["ip"], path / "ip", "IP address")
    host["role"] = _choice(data, "role", path, ROLES, None)
    host["bmc"] = _bmc(minion_id, data.get("bmc"), path / "bmc", seen_ips)
    if host["role"] == "vmhost":
        if ipaddress.ip_address(host["ip"]).version != 4:
            (path / "ip").fail(
                f"{host['ip']!r} must be an IPv4 address (o2net, OCFS2's network, speaks IPv4"
                " only; the heartbeat peers share its address family)"
            )
        host["ocfs2_node"] = _integer(data, "ocfs2_node", path, 0, 254, required=True)
        ocfs2_name = _string(data, "ocfs2_name", path, host["hostname"])
        if ocfs2_name != host["hostname"]:
            (path / "ocfs2_name").fail(
                f"OCFS2 node name {ocfs2_name!r} differs from hostname {host['hostname']!r} "
                "(o2cb finds its own node by hostname)"
            )
        host["iqn"] = _iqn(data, "iqn", path)
        host["memory_mib"] = _integer(data, "memory_mib", path, 64, 2**31, required=True)
        host["memory_reserve_mib"] = _integer(
            data, "memory_reserve_mib", path, 0, host["memory_mib"] - 1, default=MEMORY_RESERVE_MIB
        )
    return host


def bmc(data, where, *, password=True):
    """
    A host's BMC settings, checked and completed, as fencing uses them (xenha_fence builds
    ipmitool's argv from the result): ``address`` (an IP address: fencing must not depend on
    DNS), ``username``, ``password``, ``interface`` (lanplus), ``cipher_suite`` (3), ``port``
    (623). ``password=False``: the settings as the pillar holds them, without the password (the
    master configuration holds it, see ``master_bmc``).
    """
    path = where if isinstance(where, _Path) else _Path(where)
    data = _mapping(data, path)
    settings = dict(data)
    settings["address"] = _ip(data, "address", path)
    username = _string(data, "username", path, required=True)
    if len(username.encode()) > BMC_USER_MAX:
        (path / "username").fail(f"{username!r} is longer than {BMC_USER_MAX} bytes (IPMI)")
    settings["username"] = username
    if password:
        if data.get("password") is None or data.get("password") == "":
            (path / "password").fail(f"missing ({BMC_HINT})")
        settings["password"] = text(data["password"], path / "password", secret=True)
    settings["interface"] = _choice(data, "interface", path, BMC_INTERFACES, "lanplus")
    settings["cipher_suite"] = _integer(data, "cipher_suite", path, 0, 17, default=3)
    settings["port"] = _integer(data, "port", path, 1, 65535, default=623)
    return settings


def _bmc(minion_id, data, path, seen_ips):
    if data is None:
        return None
    # every minion could read a password here (pillar/xenha/init.sls leaves a null in its place)
    if isinstance(data, dict) and "password" in data:
        (path / "password").fail(
            "BMC passwords are not pillar data (every minion could read them): move it to"
            f" xenha_bmc:{minion_id}:password in the master configuration ({BMC_CONF})"
        )
    settings = bmc(data, path, password=False)
    _unique(seen_ips, settings["address"], path / "address", "IP address")
    return settings


def master_bmc(settings, master, minion_id):
    """
    The BMC settings fencing uses for ``minion_id``: the pillar's ``settings`` (no password)
    completed with the password in ``master``, the master configuration's ``xenha_bmc``
    (``{minion id: {password: ...}}``), checked by ``bmc``. Raises naming
    ``xenha_bmc:<minion_id>...`` when that entry is missing or bad,
    ``xenha:hosts:<minion_id>:bmc...`` when the pillar's part is.
    """
    path = ROOT / "hosts" / minion_id / "bmc"
    settings = _mapping(settings, path)
    master = _mapping(master, _Path("xenha_bmc"), required=False)
    where = _Path("xenha_bmc", minion_id)
    entry = master.get(minion_id)
    if entry is None:
        where.fail(f"missing ({BMC_HINT})")
    entry = _mapping(entry, where)
    unknown = sorted(set(entry) - {"password"}, key=str)
    if unknown:
        (where / unknown[0]).fail(
            f"not read here: only password (the pillar's xenha:hosts:{minion_id}:bmc holds"
            " the rest)"
        )
    if entry.get("password") is None or entry.get("password") == "":
        (where / "password").fail(f"missing ({BMC_HINT})")
    password = text(entry["password"], where / "password", secret=True)
    settings = {k: v for k, v in settings.items() if k != "password"}
    return bmc({**settings, "password": password}, path)


def _hosts(data):
    path = ROOT / "hosts"
    data = _mapping(data, path)
    if not data:
        path.fail("no hosts defined")
    seen_ips, seen_nodes, seen_iqns, seen_names = {}, {}, {}, {}
    hosts = {}
    for minion_id, entry in data.items():
        host = _host(minion_id, entry, path / minion_id, seen_ips)
        _unique(seen_names, host["hostname"].lower(), path / minion_id / "hostname", "hostname")
        if host["role"] == "vmhost":
            _unique(seen_nodes, host["ocfs2_node"], path / minion_id / "ocfs2_node", "node number")
            _unique(seen_iqns, host["iqn"], path / minion_id / "iqn", "initiator name")
        hosts[minion_id] = host
    return hosts


def _storage(data):
    path = ROOT / "storage"
    data = _mapping(data, path)
    storage = dict(data)
    storage["implementation"] = _choice(data, "implementation", path, TARGET_IMPLEMENTATIONS, "tgt")
    storage["target_iqn"] = _iqn(data, "target_iqn", path)
    storage["backing_device"] = _abspath(data, "backing_device", path, required=True)
    # tgt reserves LUN 0 for its controller; IET and LIO number data LUNs from 0
    low = 1 if storage["implementation"] == "tgt" else 0
    storage["lun"] = _integer(data, "lun", path, low, 255, default=1)
    storage["port"] = _port(data, "port", path, 3260)
    chap = data.get("chap")
    if chap is not None:
        chap = dict(_mapping(chap, path / "chap"))
        chap["user"] = _matching(chap, "user", path / "chap", CHAP_USER, required=True)
        chap["secret"] = _matching(
            chap, "secret", path / "chap", SECRET, required=True, secret=True
        )
        if len(chap["secret"]) < MIN_CHAP_SECRET:
            (path / "chap" / "secret").fail(
                f"CHAP secret is {len(chap['secret'])} characters, at least "
                f"{MIN_CHAP_SECRET} are required (RFC 3720 and most initiators)"
            )
    storage["chap"] = chap
    return storage


def _ocfs2(data, hosts, vmhosts, storage, storage_ip):
    path = ROOT / "ocfs2"
    data = _mapping(data, path, required=False)
    ocfs2 = dict(data)
    ocfs2["cluster"] = _name("cluster", _string(data, "cluster", path, "ocfs2"), path / "cluster")
    ocfs2["label"] = _string(data, "label", path, "cluster_home")
    if not LABEL_RE.fullmatch(ocfs2["label"]):
        (path / "label").fail(
            f"invalid label {ocfs2['label']!r}: must be 1-63 letters, digits, '_', '.' or '-'"
        )
    ocfs2["mount_point"] = _abspath(data, "mount_point", path, "/cluster")
    if ocfs2["mount_point"] == "/" or ocfs2["mount_point"] in SYSTEM_DIRS:
        (path / "mount_point").fail(
            f"{ocfs2['mount_point']!r} is a system directory: the volume needs one of its own"
        )
    ocfs2["slots"] = _integer(data, "slots", path, 1, 255, default=max(2, len(vmhosts)))
    if ocfs2["slots"] < len(vmhosts):
        (path / "slots").fail(f"{ocfs2['slots']} slots for {len(vmhosts)} VM hosts")
    default_device = (
        f"/dev/disk/by-path/ip-{storage_ip}:{storage['port']}-iscsi-"
        f"{storage['target_iqn']}-lun-{storage['lun']}"
    )
    ocfs2["device"] = _abspath(data, "device", path, default_device)
    ocfs2["format_host"] = _string(data, "format_host", path, vmhosts[0])
    if hosts.get(ocfs2["format_host"], {}).get("role") != "vmhost":
        (path / "format_host").fail(f"{ocfs2['format_host']!r} is not a VM host in xenha:hosts")
    ocfs2["port"] = _port(data, "port", path, 7777)
    timeouts = _mapping(data.get("timeouts"), path / "timeouts", required=False)
    ocfs2["timeouts"] = {
        key: _integer(timeouts, key, path / "timeouts", 1, 10**6, default=default)
        for key, default in OCFS2_TIMEOUT_DEFAULTS.items()
    }
    return ocfs2


def _ntp(data):
    path = ROOT / "ntp"
    data = _mapping(data, path, required=False)
    ntp = dict(data)
    ntp["implementation"] = _choice(data, "implementation", path, NTP_IMPLEMENTATIONS, "chrony")
    servers = _get(data, "servers", path, [])
    if not isinstance(servers, list):
        (path / "servers").fail("must be a list of server names or addresses")
    for index, server in enumerate(servers):
        _name("host", server, path / "servers" / index)
    ntp["servers"] = servers
    if data.get("max_offset") is not None:  # xenha_preflight.clock's bound
        ntp["max_offset"] = _number(data, "max_offset", path, None)
    return ntp


def _evacuation(data):
    path = ROOT / "evacuation"
    evacuation = dict(_mapping(data, path, required=False))
    if evacuation.get("parallel") is not None:  # the runner's concurrent migrations
        evacuation["parallel"] = integer(evacuation["parallel"], path / "parallel", 1, MAX_PARALLEL)
    return evacuation


def _xen(data, vmhosts, keys=True):
    path = ROOT / "xen"
    data = _mapping(data, path, required=False)
    xen = dict(data)
    xen["toolstack"] = _choice(data, "toolstack", path, TOOLSTACKS, "xl")
    spath, rpath = path / "ssh", path / "relocation"
    ssh = dict(_mapping(data.get("ssh"), spath, required=False))
    relocation = dict(_mapping(data.get("relocation"), rpath, required=False))
    ssh["port"] = _port(ssh, "port", spath, 22)
    relocation["port"] = _port(relocation, "port", rpath, 8002)
    relocation["ssl"] = _boolean(relocation, "ssl", rpath, False)
    relocation["ssl_port"] = _port(relocation, "ssl_port", rpath, 8003)
    if xen["toolstack"] == "xl":
        # xl migrates over root ssh: a key pair shared by the VM hosts, host keys pinned
        # where the key lives and who receives: shared with xenha_xen's `xl migrate -s ssh ...`
        ssh["identity_file"] = _abspath(ssh, "identity_file", spath, "/root/.ssh/xenha_migrate")
        ssh["user"] = _matching(ssh, "user", spath, USER, "root")
        ssh["private_key"] = _string(
            ssh, "private_key", spath, required=keys, secret=True, multiline=True
        )
        ssh["public_key"] = _matching(ssh, "public_key", spath, SSH_KEY, required=True)
        host_keys = _mapping(ssh.get("host_keys"), spath / "host_keys")
        for minion_id in vmhosts:
            _matching(host_keys, minion_id, spath / "host_keys", SSH_KEY, required=True)
        ssh["host_keys"] = host_keys
    else:
        if len(vmhosts) < 2:
            (path / "toolstack").fail("xm relocation needs at least two VM hosts to allow")
        if relocation["ssl"]:
            relocation["ssl_key"] = _string(
                relocation, "ssl_key", rpath, required=keys, secret=True, multiline=True
            )
            relocation["ssl_cert"] = _string(
                relocation, "ssl_cert", rpath, required=True, multiline=True
            )
    xen["ssh"], xen["relocation"] = ssh, relocation
    return xen


def heartbeat_key(value, where):
    """The heartbeat's shared HMAC key: at least 16 bytes, no control characters, no Jinja."""
    key = text(value, where, secret=True)
    if JINJA_RE.search(key):
        fail(where, "the key must not contain '{{', '{%' or '{#' (Jinja would evaluate it)")
    if len(key.encode()) < MIN_SHARED_KEY:
        fail(where, f"the key is {len(key.encode())} bytes, at least {MIN_SHARED_KEY} required")
    return key


def heartbeat_keys(key, previous, where_key, where_previous):
    """
    ``(key, previous)``: the key a host signs with and accepts, and the optional key it only
    accepts during a rotation (None when unset or empty), each checked as ``heartbeat_key``.
    """
    key = heartbeat_key(key, where_key)
    if previous is None or previous == "":
        return key, None
    previous = heartbeat_key(previous, where_previous)
    if previous == key:
        fail(where_previous, f"is the same as {str(where_key).rsplit(':', 1)[-1]}: unset it")
    return key, previous


def heartbeat_timing(interval, dead_time, where_interval, where_dead_time):
    """(interval, dead_time) of the heartbeat as floats: the keepalive period (at least 0.05 s)
    and the silence after which a peer is lost (more than two periods)."""
    interval = seconds(interval, where_interval, MIN_SEND_INTERVAL)
    dead_time = seconds(dead_time, where_dead_time)
    if dead_time <= 2 * interval:
        fail(
            where_dead_time,
            f"{dead_time} s must be more than twice {str(where_interval).rsplit(':', 1)[-1]}"
            f" ({interval} s), or one lost packet raises a false alarm",
        )
    return interval, dead_time


def _heartbeat(data, keys=True):
    path = ROOT / "heartbeat"
    data = _mapping(data, path, required=False)
    heartbeat = dict(data)
    heartbeat["port"] = _port(data, "port", path, 7788)
    heartbeat["interval"], heartbeat["dead_time"] = heartbeat_timing(
        _get(data, "interval", path, 0.25),
        _get(data, "dead_time", path, 2.0),
        path / "interval",
        path / "dead_time",
    )
    key = _get(data, "key", path)
    if key is None or key == "":
        if keys:
            (path / "key").fail(f"missing ({SECRETS_HINT})")
        # a pillar without the key (the storage host's) has no previous key either
        heartbeat["key"] = heartbeat["previous_key"] = None
        return heartbeat
    heartbeat["key"], heartbeat["previous_key"] = heartbeat_keys(
        key, data.get("previous_key"), path / "key", path / "previous_key"
    )
    return heartbeat


# xenha:failover: every setting's default, in seconds unless said. The one table: the engine
# (xenha_failover.DEFAULTS) and the runner take their defaults from it, the check below the keys.
FAILOVER_DEFAULTS = {
    "corroborate_window": None,  # a suspect's lease is watched; None: 2 x io_timeout + 1
    "ping_timeout": 1.0,  # the master waits this long for the suspect's minion to answer
    "expiry_margin": 1.0,  # lease-only path: waited for "dead" beyond 8 x io_timeout + fire
    "retry_base": 5.0,  # blocked: the first back-off, doubled each attempt ...
    "retry_max": 300.0,  # ... up to this
    "retry_for": 600.0,  # one runner call retries this long (0: not at all), then the resume
    "start_tries": 3,  # starts of one domU (a count, 1..100) before it is given up
}
FAILOVER_SECONDS = tuple(key for key in FAILOVER_DEFAULTS if key != "start_tries")
SHUTDOWN_POLICIES = ("migrate", "freeze", "failover")  # Proxmox ha-manager's names
SHUTDOWN_DEFAULTS = {"shutdown_policy": "migrate", "shutdown_timeout": 600.0}
FAILOVER_KEYS = (*FAILOVER_DEFAULTS, *SHUTDOWN_DEFAULTS)


def failover_settings(data, where=ROOT / "failover"):
    """The failover engine's settings (pillar ``xenha:failover``), checked: only those given
    (the engine has the defaults)."""
    path = where if isinstance(where, _Path) else _Path(where)
    data = _mapping(data, path, required=False)
    unknown = sorted(set(data) - set(FAILOVER_KEYS), key=str)
    if unknown:
        (path / unknown[0]).fail(f"unknown setting (known: {', '.join(FAILOVER_KEYS)})")
    # retry_for 0: a runner call does not retry by itself, the scheduled resume does
    minimum = {"retry_for": 0}
    failover = {
        key: seconds(_get(data, key, path, None), path / key, minimum.get(key))
        for key in FAILOVER_SECONDS
        if key in data
    }
    if "start_tries" in data:
        failover["start_tries"] = _integer(data, "start_tries", path, 1, 100)
    given = shutdown_settings(data, path)
    failover.update({key: given[key] for key in SHUTDOWN_DEFAULTS if key in data})
    return failover


def shutdown_settings(data, where=ROOT / "failover"):
    """
    What a VM host does when it is shut down or rebooted on purpose (pillar ``xenha:failover``,
    defaults filled in): ``shutdown_policy`` migrate (ask the master to evacuate it and wait
    up to ``shutdown_timeout`` s for its domUs to leave), freeze or failover (nothing on the
    way down: the domUs stop with the host).
    """
    path = where if isinstance(where, _Path) else _Path(where)
    data = _mapping(data, path, required=False)
    defaults = SHUTDOWN_DEFAULTS
    return {
        "shutdown_policy": _choice(
            data, "shutdown_policy", path, SHUTDOWN_POLICIES, defaults["shutdown_policy"]
        ),
        "shutdown_timeout": _number(data, "shutdown_timeout", path, defaults["shutdown_timeout"]),
    }


MONITOR_THEN = ("relocate", "leave")
MONITOR_DEFAULTS = {"restart": 3, "within": 3600.0, "then": "relocate", "grace": 60.0}
MONITOR_KEYS = (*MONITOR_DEFAULTS, "check")
CHECK_DEFAULTS = {"timeout": 5.0, "failures": 3}
CHECK_KEYS = ("tcp", "http", *CHECK_DEFAULTS)


def _tcp_target(value, where):
    """``HOST:PORT`` (``[v6]:PORT``) of a TCP check -> ``(host, port)``."""
    text(value, where, argv=True)
    host, _, number = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not number.isdigit():
        fail(where, f"{_show(value)} must be HOST:PORT (e.g. 192.168.25.20:80)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        _name("host", host, where if isinstance(where, _Path) else _Path(where))
    return host, port(int(number), where)


def _http_target(value, where):
    text(value, where, argv=True)
    match = re.fullmatch(r"https?://[^\s/?#]+(?:[/?#][^\s]*)?", value)
    if not match:
        fail(where, f"{_show(value)} must be an http:// or https:// URL")
    return value


def monitor(data, where):
    """
    A domU's guest monitoring (pillar ``xenha:domus:<name>:monitor``), checked and completed:
    ``restart`` (restarts in place, 0..100) ``within`` seconds, ``then`` relocate or leave,
    ``grace`` (seconds after a start before the application check counts) and ``check``
    (None, or ``{"tcp": (host, port)} | {"http": URL}`` with ``timeout`` and ``failures``).
    The guest watcher on the VM host and the master's policy run with what this returns.
    """
    path = where if isinstance(where, _Path) else _Path(where)
    data = _mapping(data, path)
    unknown = sorted(set(data) - set(MONITOR_KEYS), key=str)
    if unknown:
        (path / unknown[0]).fail(f"unknown setting (known: {', '.join(MONITOR_KEYS)})")
    out = {
        "restart": _integer(data, "restart", path, 0, 100, default=MONITOR_DEFAULTS["restart"]),
        "within": _number(data, "within", path, MONITOR_DEFAULTS["within"]),
        "then": _choice(data, "then", path, MONITOR_THEN, MONITOR_DEFAULTS["then"]),
        "grace": seconds(_get(data, "grace", path, MONITOR_DEFAULTS["grace"]), path / "grace", 0),
        "check": None,
    }
    if data.get("check") is None:
        return out
    cpath = path / "check"
    check = _mapping(data["check"], cpath)
    unknown = sorted(set(check) - set(CHECK_KEYS), key=str)
    if unknown:
        (cpath / unknown[0]).fail(f"unknown setting (known: {', '.join(CHECK_KEYS)})")
    kinds = [k for k in ("tcp", "http") if check.get(k) is not None]
    if len(kinds) != 1:
        cpath.fail("set exactly one of tcp (HOST:PORT) or http (URL)")
    kind = kinds[0]
    target = (_tcp_target if kind == "tcp" else _http_target)(check[kind], cpath / kind)
    out["check"] = {
        kind: list(target) if kind == "tcp" else target,
        "timeout": _number(check, "timeout", cpath, CHECK_DEFAULTS["timeout"]),
        "failures": _integer(check, "failures", cpath, 1, 100, default=CHECK_DEFAULTS["failures"]),
    }
    if out["check"]["timeout"] > 60:
        (cpath / "timeout").fail(f"{out['check']['timeout']} s is more than 60 s")
    return out


def failback(domu, where):
    """
    Whether a domU returns to its ``preferred_host`` when that host is back (pillar
    ``xenha:domus:<name>:failback``, default false; ``salt-run xenha.failback``): true needs
    a ``preferred_host``, the host it returns to.
    """
    path = where if isinstance(where, _Path) else _Path(where)
    value = _boolean(domu, "failback", path, False)
    if value and domu.get("preferred_host") in (None, ""):
        (path / "failback").fail("true needs preferred_host (the host the domU returns to)")
    return value


def _domus(data, hosts, vmhosts, mount):
    path = ROOT / "domus"
    data = _mapping(data, path, required=False)
    room = {h: hosts[h]["memory_mib"] - hosts[h]["memory_reserve_mib"] for h in vmhosts}
    largest = max(room.values())
    domus = {}
    for name, entry in data.items():
        dpath = path / name
        _name("domu", name, dpath)
        domu = dict(_mapping(entry, dpath))
        # on the volume, where every VM host finds it (and its file name is a file's name)
        domu["config"] = _abspath(domu, "config", dpath, required=True, under=mount)
        domu["memory_mib"] = _integer(domu, "memory_mib", dpath, 1, 2**31, required=True)
        if domu["memory_mib"] > largest:
            (dpath / "memory_mib").fail(
                f"{domu['memory_mib']} MiB fits no VM host (the largest offers {largest} MiB "
                "after its memory_reserve_mib)"
            )
        domu["priority"] = _integer(domu, "priority", dpath, -(10**6), 10**6, default=0)
        preferred = _string(domu, "preferred_host", dpath)
        if preferred is not None and preferred not in room:
            (dpath / "preferred_host").fail(f"{preferred!r} is not a VM host in xenha:hosts")
        domu["preferred_host"] = preferred
        domu["failback"] = failback(domu, dpath)
        if domu.get("monitor") is not None:
            domu["monitor"] = monitor(domu["monitor"], dpath / "monitor")
        domu["admission"] = admission(domu.get("admission"), dpath / "admission")
        domus[name] = domu
    for name, domu in domus.items():
        apath = path / name / "anti_affinity"
        others = domu_names(_get(domu, "anti_affinity", apath, []), apath)
        for other in others:
            if other == name or other not in domus:
                apath.fail(f"{other!r} is not another domU in xenha:domus")
        domu["anti_affinity"] = others
    return domus


def check(tree, minion_id=None):
    """
    Validate the ``xenha`` pillar value and return it normalised (defaults filled in, plus
    ``vmhosts``: VM host minion ids by OCFS2 node number, and ``storage_host``: the storage
    host's minion id). Raise CommandExecutionError naming the first bad key.

    ``minion_id``: the pillar is that minion's, which holds only the secrets of its role
    (pillar/xenha/init.sls): the storage host's lacks the VM hosts' heartbeat key and
    migration keys, so they are checked when present and not required. Without it (or for a
    VM host, or a minion outside ``xenha:hosts``) every secret is required.
    """
    tree = _mapping(tree, ROOT)
    if "leases" in tree:
        # the file leases' settings: kept, they would look in force while nothing reads them
        (ROOT / "leases").fail(
            "no longer used: domU leases are sanlock's (xenha:sanlock); remove this key"
        )
    hosts = _hosts(tree.get("hosts"))
    storage_hosts = sorted(h for h, d in hosts.items() if d["role"] == "storage")
    if not storage_hosts:
        (ROOT / "hosts").fail("no host has role 'storage' (the iSCSI target)")
    if len(storage_hosts) > 1:
        (ROOT / "hosts").fail(f"more than one host has role 'storage': {', '.join(storage_hosts)}")
    vmhosts = sorted(
        (h for h, d in hosts.items() if d["role"] == "vmhost"), key=lambda h: hosts[h]["ocfs2_node"]
    )
    if not vmhosts:
        (ROOT / "hosts").fail("no host has role 'vmhost'")
    # the VM hosts' keys: a storage host's own pillar does not hold them
    keys = hosts.get(minion_id, {}).get("role") != "storage"
    storage = _storage(tree.get("storage"))
    ocfs2 = _ocfs2(tree.get("ocfs2"), hosts, vmhosts, storage, hosts[storage_hosts[0]]["ip"])
    result = dict(tree)
    result.update(
        hosts=hosts,
        vmhosts=vmhosts,
        storage_host=storage_hosts[0],
        storage=storage,
        ocfs2=ocfs2,
        ntp=_ntp(tree.get("ntp")),
        evacuation=_evacuation(tree.get("evacuation")),
        xen=_xen(tree.get("xen"), vmhosts, keys),
        heartbeat=_heartbeat(tree.get("heartbeat"), keys),
        failover=failover_settings(tree.get("failover")),
        domus=_domus(tree.get("domus"), hosts, vmhosts, ocfs2["mount_point"]),
    )
    if tree.get("sanlock") is not None:
        # the same function the sanlock module runs with: accepted here, never refused there
        result["sanlock"] = xenha_sanlockcfg.settings(tree, minion_id)
    return result


def member(cluster, minion_id):
    """Return the ``hosts`` entry of ``minion_id`` in a checked cluster, or raise naming it."""
    if minion_id not in cluster["hosts"]:
        (ROOT / "hosts").fail(f"this minion ({minion_id!r}) is not a cluster member")
    return cluster["hosts"][minion_id]


def redact(cluster):
    """A copy of a checked cluster with every secret replaced by ``<secret>`` (for display)."""
    shown = copy.deepcopy(cluster)
    places = [
        (shown["storage"]["chap"] or {}, "secret"),
        (shown["heartbeat"], "key"),
        (shown["heartbeat"], "previous_key"),
        (shown["xen"]["ssh"], "private_key"),
        (shown["xen"]["relocation"], "ssl_key"),
    ]
    for parent, key in places:
        if parent.get(key) is not None:
            parent[key] = HIDDEN
    return shown
