"""
sanlock settings and lease layout for xenha (pure: pillar data or command output in, data out).

``settings(tree, minion_id)`` checks ``xenha:sanlock`` and the VM hosts' ``host_id`` and returns
the normalised settings, or raises ``CommandExecutionError`` whose one-line message starts with
the offending pillar key. The execution module ``xenha_sanlock`` and the pillar check call the
same function, so a value the check accepts never makes the runtime refuse it.

Layout of the lease area (a dedicated LUN, or a file on shared storage), 512-byte sectors and
1 MiB alignment (sanlock's default, good for 2000 host_ids)::

    offset 0                  the delta leases of lockspace ``xenha`` (one sector per host_id)
    offset (1 + slot) MiB     the Paxos resource lease of one domU, slot 0 .. slots-1

A domU's slot is found by hashing its lease name into ``slots`` and probing linearly; every
initialised slot carries its resource name on disk, so a lookup checks the name it reads and a
slot, once written, never moves when domUs are added (docs/design/leases-sanlock.md).
"""

import hashlib
import re

import xenha_names
from salt.exceptions import CommandExecutionError

LOCKSPACE = "xenha"
SECTOR = 512
ALIGN = 1 << 20
MAX_HOST_ID = 2000  # sanlock's limit for 512-byte sectors and 1 MiB alignment
# sanlock keeps a lockspace's io_timeout in one byte of each delta lease (leader.io_timeout)
IO_TIMEOUT_RANGE = (1, 255)
IO_TIMEOUT_DEFAULT = 10
SLOTS_DEFAULT = 64
SLOTS_RANGE = (1, 100000)
NAME_MAX = 48  # sanlock's limit for lockspace and resource names
KEEPER_PYTHON = "/usr/bin/python3"  # Debian's, which has python3-sanlock
STATE_DIR = "/run/xenha/sanlock"
LEASE_DEVICE = "/dev/xenha-leases"  # lease_path's default with a lease LUN (udev link)
# auto: the hardware watchdog where one exists, softdog otherwise; none: no wdmd, no reset (labs)
WATCHDOGS = ("auto", "softdog", "hardware", "none")
LUN_RANGE = (0, 255)
# the lease path goes into sanlock's "NAME:ID:PATH:OFFSET" strings: no ':' and no blanks
_PATH_RE = re.compile(r"/[A-Za-z0-9_./+-]{1,1023}")
_HOST_STATES = ("FREE", "LIVE", "FAIL", "DEAD", "UNKNOWN")


def _fail(key, why):
    raise CommandExecutionError(f"{key}: {why}")


def _int(value, key, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _fail(key, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def _path(value, key):
    if not isinstance(value, str) or not _PATH_RE.fullmatch(value) or "/../" in f"{value}/":
        _fail(key, f"must be an absolute path of letters, digits and _ . / + - , got {value!r}")
    return value


def _lease_lun(conf, tree, out):
    """The storage host's dedicated lease LUN, or None: ``{"backing_device", "lun",
    "size_mib"}``; the VM hosts see it as ``lease_path`` (a udev link under /dev)."""
    lun = conf.get("lease_lun")
    if lun is None:
        return None
    key = "xenha:sanlock:lease_lun"
    if not isinstance(lun, dict):
        _fail(key, f"must be a mapping with backing_device, got {lun!r}")
    if not out["lease_path"].startswith("/dev/") or out["lease_path"].count("/") < 2:
        _fail(
            "xenha:sanlock:lease_path",
            f"{out['lease_path']} must be a name under /dev/ with a lease LUN (the VM hosts' "
            "udev link to it)",
        )
    storage = tree.get("storage") if isinstance(tree.get("storage"), dict) else {}
    data_lun = storage.get("lun")
    # the OCFS2 LUN's number as the pillar check completes it (unset or null: 1)
    data_lun = data_lun if isinstance(data_lun, int) and not isinstance(data_lun, bool) else 1
    low = LUN_RANGE[0] if storage.get("implementation", "tgt") != "tgt" else 1
    got = {"backing_device": _path(lun.get("backing_device"), f"{key}:backing_device")}
    got["lun"] = _int(lun.get("lun", data_lun + 1), f"{key}:lun", low, LUN_RANGE[1])
    if got["lun"] == data_lun:
        _fail(f"{key}:lun", f"{got['lun']} is xenha:storage:lun, the OCFS2 LUN's number")
    if got["backing_device"] == storage.get("backing_device"):
        _fail(f"{key}:backing_device", "is xenha:storage:backing_device, the OCFS2 LUN's disk")
    need = area_size(out["slots"]) // ALIGN
    got["size_mib"] = _int(lun.get("size_mib", need), f"{key}:size_mib", need, 1 << 20)
    return got


def area_size(slots):
    """Bytes the lease area needs: the lockspace plus ``slots`` resource areas."""
    return (1 + slots) * ALIGN


def settings(tree, minion_id=None, device_size=None):
    """
    Checked sanlock settings from the ``xenha`` pillar tree: ``{"lease_path", "io_timeout",
    "slots", "toolstack_path", "keeper_python", "watchdog", "host_ids": {host: id}, "host_id",
    "init_host", "lease_lun"}`` (``host_id`` is ``minion_id``'s, or None; ``init_host`` the VM
    host that initialises the lease area, by default the first by name; ``lease_lun`` None or
    the storage host's lease LUN). ``device_size`` (bytes), when given, must hold the area.
    """
    tree = tree if isinstance(tree, dict) else {}
    conf = tree.get("sanlock")
    if not isinstance(conf, dict):
        _fail("xenha:sanlock", f"must be a mapping with at least lease_path, got {conf!r}")
    key = "xenha:sanlock"
    default_path = LEASE_DEVICE if conf.get("lease_lun") is not None else None
    out = {"lease_path": _path(conf.get("lease_path", default_path), f"{key}:lease_path")}
    out["io_timeout"] = _int(
        conf.get("io_timeout", IO_TIMEOUT_DEFAULT), f"{key}:io_timeout", *IO_TIMEOUT_RANGE
    )
    out["slots"] = _int(conf.get("slots", SLOTS_DEFAULT), f"{key}:slots", *SLOTS_RANGE)
    tool = conf.get("toolstack_path")
    out["toolstack_path"] = None if tool is None else _path(tool, f"{key}:toolstack_path")
    out["keeper_python"] = _path(conf.get("keeper_python", KEEPER_PYTHON), f"{key}:keeper_python")
    out["watchdog"] = conf.get("watchdog", "auto")
    if out["watchdog"] not in WATCHDOGS:
        _fail(f"{key}:watchdog", f"must be one of {', '.join(WATCHDOGS)}, got {out['watchdog']!r}")
    hosts = tree.get("hosts") or {}
    ids, seen = {}, {}
    for host, spec in hosts.items() if isinstance(hosts, dict) else ():
        if not isinstance(spec, dict) or spec.get("role", "vmhost") != "vmhost":
            continue
        hkey = f"xenha:hosts:{host}:host_id"
        if "host_id" not in spec:
            _fail(hkey, "missing (every VM host needs a sanlock host_id from 1 to 2000)")
        hid = _int(spec["host_id"], hkey, 1, MAX_HOST_ID)
        if hid in seen:
            _fail(hkey, f"{hid} is also {seen[hid]}'s: host_ids must be unique")
        ids[host], seen[hid] = hid, host
    out["host_ids"] = ids
    out["host_id"] = ids.get(minion_id)
    out["init_host"] = conf.get("init_host", min(ids, default=None))
    if not isinstance(out["init_host"], str) or out["init_host"] not in ids:
        _fail(f"{key}:init_host", f"{out['init_host']!r} is not a VM host in xenha:hosts")
    out["lease_lun"] = _lease_lun(conf, tree, out)
    domus = tree.get("domus") or {}
    if isinstance(domus, dict) and len(domus) > out["slots"]:
        _fail(f"{key}:slots", f"{out['slots']} slots cannot hold {len(domus)} domUs' leases")
    if device_size is not None and device_size < area_size(out["slots"]):
        _fail(
            f"{key}:lease_path",
            f"{out['lease_path']} holds {device_size} bytes; the lockspace and "
            f"{out['slots']} slots need {area_size(out['slots'])} (1 MiB each)",
        )
    return out


# --- names and layout -------------------------------------------------------------------------


def resource_name(domu):
    """The lease name of domU ``domu``: the name itself when it fits sanlock's 48 bytes, else
    its first 39 characters, '~' and 8 hex digits of its SHA-256 ('~' is never in a domU name,
    so a shortened name cannot meet a real one)."""
    xenha_names.check("domain", domu)
    if len(domu) <= NAME_MAX:
        return domu
    return f"{domu[:39]}~{hashlib.sha256(domu.encode()).hexdigest()[:8]}"


def slot_offset(slot):
    return (1 + slot) * ALIGN


def offset_slot(offset):
    """The slot at byte ``offset``, or None for the lockspace area or an unaligned offset."""
    slot, rest = divmod(offset, ALIGN)
    return slot - 1 if slot >= 1 and not rest else None


def probe(name, slots):
    """The slots to look at for lease name ``name``, in order (home slot first)."""
    home = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % slots
    return [(home + i) % slots for i in range(slots)]


def find_slot(name, used, slots):
    """
    ``(slot, free)`` for lease name ``name`` given ``used`` ({slot: resource name} of the
    initialised slots): ``slot`` holds the name (None if not on its probe path before the first
    free slot), ``free`` is that first free slot (None when the area is full).
    """
    for slot in probe(name, slots):
        if slot not in used:
            return None, slot
        if used[slot] == name:
            return slot, None
    return None, None


def plan(names, used, slots):
    """
    ``{name: slot}`` for the lease names that need a resource area written (already placed
    names are left alone). Raises when a name sits off its probe path (the area was made with
    another slot count) or when the area is full.
    """
    used = dict(used)
    placed = {n: s for s, n in used.items()}
    todo = {}
    for name in sorted(names):
        slot, free = find_slot(name, used, slots)
        if slot is not None:
            continue
        if name in placed:
            _fail(
                "xenha:sanlock:slots",
                f"lease {name!r} sits in slot {placed[name]}, off its probe path for "
                f"{slots} slots: the area was initialised with another slot count",
            )
        if free is None:
            _fail("xenha:sanlock:slots", f"no free slot left for lease {name!r}")
        todo[name] = free
        used[free] = name
    return todo


def lockspace_arg(host_id, path):
    return f"{LOCKSPACE}:{host_id}:{path}:0"


def resource_arg(name, path, slot):
    return f"{LOCKSPACE}:{name}:{path}:{slot_offset(slot)}"


# --- sanlock output ---------------------------------------------------------------------------


def parse_dump(text):
    """``sanlock direct dump`` -> {offset: {"lockspace", "resource", "timestamp", "owner_id",
    "generation", "lver", "shared", "shared_gen"}} for every initialised leader (lver is None
    for delta leases; ``shared`` lists the host_ids whose mode block says they hold it shared,
    ``shared_gen`` their generations there: dump prints each as an indented ``<host_id>
    <generation> SH`` line under its resource)."""
    rows, last = {}, None
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[2] == "SH" and parts[0].isdigit() and last is not None:
            last["shared"].append(int(parts[0]))
            last["shared_gen"][int(parts[0])] = int(parts[1]) if parts[1].isdigit() else 0
            continue
        if len(parts) < 6 or not parts[0].isdigit():
            continue
        last = rows[int(parts[0])] = {
            "lockspace": parts[1],
            "resource": parts[2],
            "timestamp": int(parts[3]),
            "owner_id": int(parts[4]),
            "generation": int(parts[5]),
            "lver": int(parts[6]) if len(parts) > 6 else None,
            "shared": [],
            "shared_gen": {},
        }
    return rows


def lease_holders(row):
    """``(mode, [host_id])`` of a parsed resource row: ``("ex", [owner])`` while its leader
    carries a timestamp (sanlock zeroes it on release and on a conversion to shared),
    ``("sh", [...])`` for shared holders, ``(None, [])`` when free."""
    if row["timestamp"] and row["owner_id"]:
        return "ex", [row["owner_id"]]
    if row["shared"]:
        return "sh", sorted(row["shared"])
    return None, []


def stale(row, dump):
    """
    True if every holder of a lease (a parsed resource row) joined the lockspace again since
    it took the lease: its delta lease in ``dump`` carries a newer generation than the lease
    (exclusive) or its mode block (shared). sanlock then treats the lease as free ("owned the
    lease in a previous generation without freeing it", paxos_lease.c; a shared holder of an
    old generation is cleared as dead, resource.c ``clear_dead_shared``): the holders lost it
    with their old generation (a reset, a lost lockspace). A migration's shared lease whose
    source and target both rejoined is such a lease; one still held by a live generation is not.
    """
    mode, ids = lease_holders(row)
    if mode == "ex":
        return _rejoined(dump, row["lockspace"], row["owner_id"], row["generation"])
    gens = row.get("shared_gen") or {}
    return mode == "sh" and all(
        i in gens and _rejoined(dump, row["lockspace"], i, gens[i]) for i in ids
    )


def _rejoined(dump, lockspace, host_id, generation):
    """True if ``host_id``'s delta lease in ``dump`` has a generation above ``generation``."""
    delta = dump.get((host_id - 1) * SECTOR) if host_id else None
    return bool(
        delta is not None
        and delta["lockspace"] == lockspace
        and delta["owner_id"] == host_id
        and delta["generation"] > generation
    )


def used_slots(dump):
    """{slot: resource name} of the resource areas in a parsed dump of lockspace ``xenha``."""
    used = {}
    for offset, row in dump.items():
        slot = offset_slot(offset)
        if slot is not None and row["lockspace"] == LOCKSPACE:
            used[slot] = row["resource"]
    return used


def parse_gets(text):
    """``sanlock client gets -h 1`` -> {lockspace: {"host_id", "path", "offset", "flags",
    "hosts": {host_id: {"state", "generation", "timestamp"}}}}."""
    spaces, current = {}, None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "s":
            name, hid, rest = parts[1].split(":", 2)
            path, offset = rest.rsplit(":", 1)
            current = spaces[name] = {
                "host_id": int(hid),
                "path": path,
                "offset": int(offset),
                "flags": " ".join(parts[2:]),
                "hosts": {},
            }
        elif len(parts) == 7 and parts[0] == "h" and current is not None:
            state = parts[6] if parts[6] in _HOST_STATES else "UNKNOWN"
            current["hosts"][int(parts[1])] = {
                "state": state.lower(),
                "generation": int(parts[3]),
                "timestamp": int(parts[5]),
            }
    return spaces


def parse_status(text):
    """``sanlock client status`` -> {"lockspaces": [name], "resources": {(lockspace,
    resource): {"path", "offset", "lver", "mode", "pid"}}} (resources held by local processes;
    ``mode`` "ex" or "sh", ``lver`` None for a shared one)."""
    out = {"lockspaces": [], "resources": {}}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "s":
            out["lockspaces"].append(parts[1].split(":", 1)[0])
        elif len(parts) >= 4 and parts[0] == "r" and parts[2] == "p":
            fields = parts[1].split(":")
            if len(fields) < 5:
                continue
            # an exclusive lease ends in ":<lver>", a shared one in ":SH" (no lver)
            lver = fields[-1]
            out["resources"][(fields[0], fields[1])] = {
                "path": ":".join(fields[2:-2]),
                "offset": int(fields[-2]),
                "lver": int(lver) if lver.isdigit() else None,
                "mode": "sh" if lver == "SH" else "ex",
                "pid": int(parts[3]),
            }
    return out
