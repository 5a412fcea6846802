"""
The xenha heartbeat engine: UDP keepalives between VM hosts, and a probe of the local toolstack.

The ``xenha_heartbeat`` beacon calls :py:func:`poll` every minion loop; the first call starts a
background thread that sends a signed keepalive to every peer each ``send_interval`` seconds and
records, on this host's monotonic clock, when each peer was last heard (protocol and rules:
``_utils/xenha_hbproto.py``). A second thread runs ``xl info`` (or ``xm info``) every
``probe_interval`` seconds. The heartbeat thread fires a peer's ``lost``/``recovered`` the moment
it sees the transition, in the beacon's own event layout (Salt polls beacons only once a second:
that would add up to a second to every failover); :py:func:`poll` returns the rest (toolstack
transitions, and heartbeat events the thread could not fire), one per state transition.

The threads outlive Salt's module reloads (a pillar refresh reloads every loader): they are found
again by name, and are replaced only when the beacon configuration changes, keeping what they knew
about the peers. A thread nobody polls for ORPHAN_AFTER seconds (the beacon was removed) stops.

Needs: a UDP port (7788 by default) open between the VM hosts on the cluster network.
"""

import json
import logging
import os
import socket
import threading
import time

import salt.utils.event
import xenha_hbproto as hb
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "xenha_heartbeat"

THREAD_PREFIX = "xenha-heartbeat/"
ORPHAN_AFTER = 60.0  # seconds without a poll before a thread decides its beacon is gone
BIND_RETRY = 5.0  # seconds between attempts to bind the heartbeat socket
SNAPSHOT = "xenha_heartbeat-{id}.json"  # in sock_dir (a tmpfs under /run); minions may share it
CHECK_EVERY = 0.1  # s: how often the thread looks for a peer falling silent


def __virtual__():
    return __virtualname__


class _Engine(threading.Thread):
    """The sender/receiver thread of one beacon configuration (plus its probe thread)."""

    xenha_engine = True  # how a reloaded module recognises an engine started by an older copy

    def __init__(self, name, cfg, reporter, run_all, snapshot_path, *, fire=None):
        super().__init__(name=name, daemon=True)
        self.fire = fire  # fire(beacon events) -> bool, on the minion bus; None: poll() only
        self.unfired = []  # heartbeat events the thread could not fire: poll() returns them
        self.cfg = cfg
        # signs with the first, accepts any (the second only during a key rotation)
        self.keys = tuple(k.encode() for k in (cfg["key"], cfg["previous_key"]) if k)
        self.peer_key = {}  # peer -> index in keys of the key its newest packet was signed with
        self.reporter = reporter
        self.run_all = run_all  # cmd.run_all, bound to its loader so it works from a thread
        self.snapshot_path = snapshot_path
        self.detector = hb.Detector(cfg["cluster"], cfg["peers"], cfg["dead_time"])
        self.probe = hb.ProbeTracker(cfg["toolstack"])
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.polled = time.monotonic()
        self.boot = time.time_ns()  # (boot, seq) only grows, across restarts too
        self.seq = 0
        self.error = None
        self.rejected = 0
        self.last_rejected = None

    def stop(self):
        """Stop the threads and wait until the socket is closed."""
        self.stopping.set()
        self.join(timeout=self.cfg["send_interval"] + 2)

    def run(self):
        if self.cfg["probe_interval"] > 0:
            threading.Thread(
                target=self._probe_loop, name=f"{self.name}:probe", daemon=True
            ).start()
        family = socket.AF_INET6 if ":" in self.cfg["bind"] else socket.AF_INET
        while not self.stopping.is_set():
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as sock:
                    sock.bind((self.cfg["bind"], self.cfg["port"]))
                    self.error = None
                    self._serve(sock)
            except OSError as err:
                error = f"cannot use UDP {self.cfg['bind']}:{self.cfg['port']}: {err}"
                if error != self.error:
                    log.error("xenha heartbeat: %s (retrying every %s s)", error, BIND_RETRY)
                self.error = error
                self.stopping.wait(BIND_RETRY)

    def _serve(self, sock):
        interval = self.cfg["send_interval"]
        next_send = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - self.polled > ORPHAN_AFTER:
                log.warning("xenha heartbeat: not polled for %s s, stopping", ORPHAN_AFTER)
                self.stopping.set()
                return
            if now >= next_send:
                self._send(sock)
                # keep the cadence, but never burst to catch up after a stall
                next_send = max(next_send + interval, now)
            self._fire_transitions()
            wait = min(next_send - time.monotonic(), CHECK_EVERY)
            # a timeout of 0 would make the socket non-blocking (BlockingIOError, not a timeout)
            sock.settimeout(max(0.001, wait))
            try:
                packet, source = sock.recvfrom(hb.MAX_PACKET + 1)
            except TimeoutError:
                continue
            except OSError as err:  # e.g. an ICMP error queued on the socket: keep sending
                log.debug("xenha heartbeat: receive failed: %s", err)
                continue
            self._receive(packet, source[0])

    def _fire_transitions(self):
        if self.fire is None:
            return
        with self.lock:
            events = self.detector.poll(time.monotonic(), self.reporter)
        if events and not self.fire(events):
            with self.lock:
                self.unfired += events

    def _send(self, sock):
        self.seq += 1
        packet = hb.encode(self.keys[0], self.cfg["cluster"], self.reporter, self.boot, self.seq)
        for peer, ip in self.cfg["peers"].items():
            try:
                sock.sendto(packet, (ip, self.cfg["port"]))
            except OSError as err:  # an unreachable peer is what the heartbeat is there to see
                log.debug("xenha heartbeat: send to %s (%s) failed: %s", peer, ip, err)

    def _receive(self, packet, source_ip):
        try:
            fields, index = hb.open_packet(self.keys, packet)
            with self.lock:
                self.detector.accept(fields, source_ip, time.monotonic())
                self.peer_key[fields["sender"]] = index
        except hb.ProtocolError as err:
            log.debug("xenha heartbeat: refused packet from %s: %s", source_ip, err)
            with self.lock:
                self.rejected += 1
                self.last_rejected = f"{source_ip}: {err}"

    def _probe_loop(self):
        argv = [self.cfg["toolstack"], "info"]
        timeout = self.cfg["probe_interval"]
        while not self.stopping.wait(timeout):
            try:
                ret = self.run_all(
                    argv,
                    python_shell=False,
                    timeout=timeout,
                    ignore_retcode=True,
                    output_loglevel="quiet",
                )
                ok = ret["retcode"] == 0
                detail = (
                    f"{' '.join(argv)} exited {ret['retcode']}: {ret['stderr'] or ret['stdout']}"
                )
            except CommandExecutionError as err:  # e.g. not installed
                reason = str(err).rpartition("reason: ")[2]  # the rest is cmd.run_all's context
                ok, detail = False, f"{' '.join(argv)} could not run: {reason}"
            with self.lock:
                self.probe.record(ok, detail.strip()[-400:])

    def poll(self):
        """Return the beacon events since the last poll, and refresh the status snapshot."""
        with self.lock:
            now = time.monotonic()
            self.polled = now
            events, self.unfired = self.unfired, []
            events += self.detector.poll(now, self.reporter) + self.probe.poll(self.reporter)
            snapshot = self._snapshot(now)
        for event in events:
            log.warning("xenha heartbeat: %s", event)
        _write_json(self.snapshot_path, snapshot)
        return events

    def _snapshot(self, now):
        peers = {}
        for peer, ip in self.cfg["peers"].items():
            state, age = self.detector.state(peer, now)
            seq = self.detector.last.get(peer, (None, None))[1]
            key = self.peer_key.get(peer)
            key = None if key is None else hb.key_id(self.keys[key])
            peers[peer] = {"ip": ip, "state": state, "age": age, "seq": seq, "key_id": key}
        return {
            "reporter": self.reporter,
            "cluster": self.cfg["cluster"],
            "listen": f"{self.cfg['bind']}:{self.cfg['port']}",
            "send_interval": self.cfg["send_interval"],
            "dead_time": self.cfg["dead_time"],
            "sent": self.seq,
            # fingerprints, never the keys: where a rotation stands on this host
            "signs_with": hb.key_id(self.keys[0]),
            "accepts": [hb.key_id(k) for k in self.keys],
            "error": self.error,
            "rejected": self.rejected,
            "last_rejected": self.last_rejected,
            "toolstack": {"name": self.cfg["toolstack"], "failed": self.probe.failed},
            "peers": peers,
            "written": time.time(),
        }


def _bus_firer(opts, beacon_name):
    """fire(events) -> bool: put heartbeat events on the minion bus as the beacon's own would be
    (``__beacons_return``: the minion forwards them to the master as
    ``salt/beacon/<id>/<beacon name>/<tag>``)."""

    def fire(events):
        beacons = []
        for event in events:
            data = {k: v for k, v in event.items() if k != "tag"}
            data.setdefault("id", opts["id"])
            tag = f"salt/beacon/{opts['id']}/{beacon_name}/{event['tag']}"
            beacons.append({"tag": tag, "data": data, "beacon_name": beacon_name})
        try:
            with salt.utils.event.get_event("minion", opts=opts, listen=False) as bus:
                return bool(bus.fire_event({"beacons": beacons}, "__beacons_return"))
        except Exception as err:  # noqa: BLE001 - the beacon's next poll returns them instead
            log.warning("xenha heartbeat: cannot fire %s now: %s", events, err)
            return False

    return fire


def _write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _parse(config):
    try:
        return hb.parse_config(config)
    except ValueError as err:
        raise CommandExecutionError(f"xenha_heartbeat beacon: {err}") from err


def _snapshot_path():
    return os.path.join(__opts__["sock_dir"], SNAPSHOT.format(id=__opts__["id"]))


def _running(name):
    for thread in threading.enumerate():
        if thread.name == name and getattr(thread, "xenha_engine", False):
            return thread
    return None


def validate(config):
    """
    Check a heartbeat beacon configuration (the beacon's option list merged into one mapping);
    return ``(True, "valid")`` or ``(False, "<one sentence naming the problem>")``.

    CLI Example:

    .. code-block:: bash

        salt-call xenha_heartbeat.validate \
            '{key: sixteen+bytes..., bind: 10.0.0.1, peers: {b: 10.0.0.2}}'
    """
    try:
        hb.parse_config(config)
    except ValueError as err:
        return False, f"xenha_heartbeat beacon: {err}"
    return True, "valid"


def poll(config):
    """
    Start (or re-find, or restart after a configuration change) the heartbeat threads for
    ``config`` and return the events since the last call. Called by the ``xenha_heartbeat``
    beacon every minion loop; running it from the command line starts threads in a short-lived
    process and is only useful to check a configuration.

    config
        The beacon's options as one mapping: ``key``, ``bind``, ``peers`` (minion id: IP) and
        optionally ``previous_key`` (accepted, never signed with: a key rotation), ``port``,
        ``send_interval``, ``dead_time``, ``cluster``, ``toolstack``, ``probe_interval``.

    CLI Example:

    .. code-block:: bash

        salt-call xenha_heartbeat.poll \
            '{key: sixteen+bytes..., bind: 10.0.0.1, peers: {b: 10.0.0.2}}'
    """
    cfg = _parse(config)
    beacon_name = config.get("_beacon_name", __virtualname__)
    name = THREAD_PREFIX + beacon_name
    engine = _running(name)
    if engine is None or engine.cfg != cfg:
        path = _snapshot_path()
        fire = _bus_firer(__opts__, beacon_name)
        fresh = _Engine(name, cfg, __opts__["id"], __salt__["cmd.run_all"], path, fire=fire)
        if engine is not None:
            log.info("xenha heartbeat: configuration changed, restarting %s", name)
            engine.stop()  # frees the port before the new thread binds it
            fresh.detector.adopt(engine.detector)
        fresh.start()
        engine = fresh
    return engine.poll()


def status():
    """
    Show what this host's heartbeat hears: for each peer its address, state (``alive``,
    ``lost``, or ``unknown`` = not heard since the minion started), seconds since it was last
    heard, its last sequence number and the fingerprint (``key_id``) of the key it signed with;
    the fingerprints of the key this host signs with (``signs_with``) and of the keys it accepts
    (``accepts``); plus packets refused, socket errors and the toolstack probe's verdict. Read
    from the snapshot the beacon refreshes every minion loop.

    CLI Example:

    .. code-block:: bash

        salt 'ServVirt*' xenha_heartbeat.status
    """
    path = _snapshot_path()
    try:
        with open(path, encoding="utf-8") as fh:
            snap = json.load(fh)
    except FileNotFoundError:
        raise CommandExecutionError(
            f"no heartbeat status at {path}: is the xenha_heartbeat beacon configured here?"
        ) from None
    stale = max(0.0, time.time() - snap["written"])
    for peer in snap["peers"].values():
        if peer["age"] is not None:
            peer["age"] = round(peer["age"] + stale, 3)
    snap["snapshot_age"] = round(stale, 3)
    return snap
