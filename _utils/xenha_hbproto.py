"""
The xenha heartbeat: wire protocol, beacon configuration and loss detection (pure helpers).

Every VM host sends a keepalive to each peer every ``send_interval`` seconds over UDP. A packet is

    MAGIC (4 bytes) | msgpack {"cluster", "sender", "boot", "seq"} | HMAC-SHA256(key, MAGIC|payload)

``boot`` is the sender's wall-clock nanoseconds when its heartbeat started and ``seq`` counts up
from 1; a receiver accepts a sender's packet only if ``(boot, seq)`` is greater than the last one
it accepted from that sender, so a replayed packet (of this run or an earlier one) is refused. The
HMAC is checked before the payload is unpacked: nothing unauthenticated is parsed. The receiver
times packets with its own monotonic clock and never reads the sender's clock.

Key rotation: a host signs with ``key`` and accepts a packet signed with ``key`` or with the
optional ``previous_key`` (docs/detection.md, "Rotating the key", gives the order of the steps
that keeps every host's signing key among every host's accepted keys at every moment).

Nothing here touches sockets, threads or clocks: the caller passes ``now`` (a monotonic time), so
tests drive the detection with a fake clock. The sockets and threads live in the execution module
``_modules/xenha_heartbeat.py``.
"""

import hashlib
import hmac
import ipaddress

import msgpack
import xenha_names
import xenha_pillarcheck as pc
from salt.exceptions import CommandExecutionError

MAGIC = b"XHB1"
DIGEST_SIZE = hashlib.sha256().digest_size
MAX_PACKET = 512  # a keepalive is about 100 bytes; anything larger is refused unread
MIN_KEY_BYTES = pc.MIN_SHARED_KEY
UINT64_MAX = 2**64 - 1

DEFAULTS = {
    "port": 7788,
    "send_interval": 0.25,  # 8 keepalives per dead_time: 7 may be lost in a row without an alarm
    "dead_time": 2.0,  # a hint only: the runner corroborates and fences (docs/detection.md)
    "cluster": "xenha",
    "toolstack": "xl",
    "probe_interval": 5.0,  # 0 disables the toolstack probe
}
# keys the beacon framework reads itself (they may appear in the config validate() sees)
FRAMEWORK_KEYS = {
    "enabled",
    "beacon_module",
    "run_once",
    "disable_during_state_run",
    "_beacon_name",
}
TOOLSTACKS = ("xl", "xm")
PROBE_FAILURES = 2  # consecutive failed probes before toolstack_failed (one slow call is noise)

# peer states; a peer never heard since this detector started is UNKNOWN and never reported lost
UNKNOWN, ALIVE, LOST = "unknown", "alive", "lost"


class ProtocolError(ValueError):
    """A received packet was refused; the message says why."""


def encode(key, cluster, sender, boot, seq):
    """Return the signed keepalive packet (bytes) from ``sender`` of ``cluster``."""
    payload = msgpack.packb({"cluster": cluster, "sender": sender, "boot": boot, "seq": seq})
    body = MAGIC + payload
    return body + hmac.new(key, body, hashlib.sha256).digest()


def key_id(key):
    """A short fingerprint of ``key`` (bytes) that names it in status without revealing it."""
    return hmac.new(key, b"xenha heartbeat key id", hashlib.sha256).hexdigest()[:12]


def decode(keys, packet):
    """
    Verify ``packet`` (bytes) with ``keys`` (one key, or the accepted keys in order) and return
    its fields as a dict; raise ProtocolError saying why a packet is refused (size, magic,
    signature, layout).
    """
    return open_packet(keys, packet)[0]


def open_packet(keys, packet):
    """``(fields, index)``: decode's fields and the index in ``keys`` of the key that signed."""
    keys = (keys,) if isinstance(keys, bytes | bytearray) else tuple(keys)
    if not isinstance(packet, bytes | bytearray):
        raise ProtocolError(f"packet is {type(packet).__name__}, not bytes")
    if len(packet) > MAX_PACKET:
        raise ProtocolError(f"packet of {len(packet)} bytes exceeds {MAX_PACKET}")
    if len(packet) < len(MAGIC) + 1 + DIGEST_SIZE:
        raise ProtocolError(f"packet of {len(packet)} bytes is truncated")
    if not packet.startswith(MAGIC):
        raise ProtocolError("bad magic: not a xenha heartbeat packet")
    body, digest = bytes(packet[:-DIGEST_SIZE]), bytes(packet[-DIGEST_SIZE:])
    # every key is tried, so the time taken does not tell which one matched
    matches = [
        hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), digest) for key in keys
    ]
    if not any(matches):
        raise ProtocolError("bad signature (wrong cluster key or altered packet)")
    try:
        fields = msgpack.unpackb(body[len(MAGIC) :], raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        # only a holder of the key can get here: a bug or a version mismatch, not an attack
        raise ProtocolError(f"signed payload is not msgpack: {err}") from err
    if not isinstance(fields, dict) or set(fields) != {"cluster", "sender", "boot", "seq"}:
        raise ProtocolError("signed payload does not have the keepalive fields")
    for name, kind in (("cluster", str), ("sender", str), ("boot", int), ("seq", int)):
        value = fields[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ProtocolError(f"field {name} is {type(value).__name__}, not {kind.__name__}")
    if not (0 < fields["boot"] <= UINT64_MAX and 0 < fields["seq"] <= UINT64_MAX):
        raise ProtocolError("boot and seq must be positive 64-bit integers")
    return fields, matches.index(True)


def _check_names_and_addresses(cfg):
    """Normalise cfg's bind and peers in place; raise ValueError naming a bad one."""
    cfg["bind"] = pc.address(cfg["bind"], "bind")
    bind = ipaddress.ip_address(cfg["bind"])
    peers = cfg["peers"]
    if not isinstance(peers, dict) or not peers:
        raise ValueError("peers must be a non-empty mapping of minion id to IP address")
    xenha_names.check("cluster", cfg["cluster"])
    cfg["peers"] = {
        xenha_names.check("host", peer): pc.address(ip, f"peers:{peer}")
        for peer, ip in peers.items()
    }
    if cfg["bind"] in cfg["peers"].values():
        raise ValueError(f"bind address {cfg['bind']} is also a peer's address")
    if any(ipaddress.ip_address(ip).version != bind.version for ip in cfg["peers"].values()):
        raise ValueError(f"peer addresses must be IPv{bind.version} like bind")


def parse_config(config):
    """
    Return the beacon configuration (the dict the beacon list turns into) checked and completed
    with DEFAULTS; raise ValueError with one sentence naming the first problem.
    """
    if not isinstance(config, dict):
        raise ValueError("configuration must be a list of one-key mappings")
    if "interval" in config:
        raise ValueError(
            "'interval' is Salt's beacon polling period, not the keepalive period: "
            "use send_interval"
        )
    options = {"key", "previous_key", "bind", "peers"}
    unknown = sorted(set(config) - set(DEFAULTS) - FRAMEWORK_KEYS - options)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(str, unknown))}")
    missing = [name for name in ("key", "bind", "peers") if name not in config]
    if missing:
        raise ValueError(f"missing required option(s) {', '.join(missing)}")
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if k not in FRAMEWORK_KEYS}}
    if cfg["toolstack"] not in TOOLSTACKS:
        raise ValueError(
            f"toolstack must be one of {', '.join(TOOLSTACKS)}, not {cfg['toolstack']!r}"
        )
    try:  # the pillar check's own rules for xenha:heartbeat, named by the beacon's options
        cfg["key"], cfg["previous_key"] = pc.heartbeat_keys(
            cfg["key"], cfg.get("previous_key"), "key", "previous_key"
        )
        cfg["port"] = pc.port(cfg["port"], "port")
        cfg["send_interval"], cfg["dead_time"] = pc.heartbeat_timing(
            cfg["send_interval"], cfg["dead_time"], "send_interval", "dead_time"
        )
        cfg["probe_interval"] = pc.seconds(cfg["probe_interval"], "probe_interval", 0)
        _check_names_and_addresses(cfg)
    except CommandExecutionError as err:
        raise ValueError(str(err)) from None
    return cfg


class Detector:
    """
    Per-peer bookkeeping of one heartbeat receiver: which packets to accept and which state
    transitions to report. ``now`` is always this host's monotonic time in seconds.
    """

    def __init__(self, cluster, peers, dead_time):
        self.cluster = cluster
        self.peers = dict(peers)  # minion id -> IP address
        self.dead_time = dead_time
        self.last = {}  # peer -> (boot, seq) of the newest accepted packet
        self.heard = {}  # peer -> monotonic time that packet arrived
        self.reported = dict.fromkeys(self.peers, UNKNOWN)  # peer -> state last reported

    def adopt(self, old):
        """Carry over what ``old`` knew about peers that kept their address (config changes)."""
        for peer, ip in self.peers.items():
            if old.peers.get(peer) == ip:
                for mine, theirs in (
                    (self.last, old.last),
                    (self.heard, old.heard),
                    (self.reported, old.reported),
                ):
                    if peer in theirs:
                        mine[peer] = theirs[peer]

    def accept(self, fields, source_ip, now):
        """
        Record a verified packet's ``fields`` (from decode) received from ``source_ip``; raise
        ProtocolError if it is for another cluster, from a stranger or a wrong address, or a
        replay.
        """
        sender = fields["sender"]
        if fields["cluster"] != self.cluster:
            raise ProtocolError(f"packet for cluster {fields['cluster']!r}, not {self.cluster!r}")
        if sender not in self.peers:
            raise ProtocolError(f"sender {sender!r} is not a configured peer")
        if source_ip != self.peers[sender]:
            raise ProtocolError(
                f"packet from {sender!r} came from {source_ip}, not {self.peers[sender]}"
            )
        stamp = (fields["boot"], fields["seq"])
        if sender in self.last and stamp <= self.last[sender]:
            raise ProtocolError(f"replayed or reordered packet from {sender!r} (seq {stamp[1]})")
        self.last[sender] = stamp
        self.heard[sender] = now

    def state(self, peer, now):
        """Return (state, age in seconds or None) of ``peer`` at ``now``."""
        if peer not in self.heard:
            return UNKNOWN, None
        age = max(0.0, now - self.heard[peer])
        return (LOST if age >= self.dead_time else ALIVE), age

    def poll(self, now, reporter):
        """
        Return the beacon events (dicts with a ``tag``) for peers whose state changed since the
        last poll: ``lost`` when heard once and silent for dead_time, ``recovered`` when a lost
        peer is heard again. Being heard for the first time is no event.
        """
        events = []
        for peer in self.peers:
            state, age = self.state(peer, now)
            before, self.reported[peer] = self.reported[peer], state
            if state == before or (before, state) == (UNKNOWN, ALIVE):
                continue
            events.append(
                {
                    "tag": "lost" if state == LOST else "recovered",
                    "peer": peer,
                    "age": round(age, 3),
                    "reporter": reporter,
                    "dead_time": self.dead_time,
                    "seq": self.last[peer][1],
                }
            )
        return events


class ProbeTracker:
    """Turns toolstack probe results into toolstack_failed / toolstack_ok transitions."""

    def __init__(self, toolstack):
        self.toolstack = toolstack
        self.failures = 0
        self.failed = False
        self.pending = []

    def record(self, ok, detail=""):
        """Record one probe result; ``detail`` says what went wrong when ``ok`` is false."""
        self.failures = 0 if ok else self.failures + 1
        if not ok and not self.failed and self.failures >= PROBE_FAILURES:
            self.failed = True
            self.pending.append({"tag": "toolstack_failed", "error": detail})
        elif ok and self.failed:
            self.failed = False
            self.pending.append({"tag": "toolstack_ok"})

    def poll(self, reporter):
        """Return and forget the transitions recorded since the last poll."""
        events, self.pending = self.pending, []
        return [{**e, "toolstack": self.toolstack, "reporter": reporter} for e in events]
