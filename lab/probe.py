"""What a client of a domU sees while it moves: probes run from the lab's client (``cli``).

:class:`Probe` runs, inside the client's network namespace, iputils ``ping -D`` every 10 ms and
one HTTP worker (``python -m lab.probe MODE ...``, standard library only) that writes one JSON
line per request or sample:

* ``watch``: one GET at a time every ``interval`` (``/cgi-bin/state``: is the guest answering?);
* ``load``: ``concurrency`` clients in a closed loop, each GET right after the last (the
  thesis's ``ab -c 10``);
* ``bulk``: downloads of a large file, one after the other, sampling the bytes received.

The analysis is pure (text or records in, figures out) and shared by the demo, the benchmarks
and the unit tests: :func:`analyze_ping`, :func:`longest_gap`, :func:`analyze_http`,
:func:`rate`.
"""

import argparse
import http.client
import json
import math
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from lab import REPO

PING_INTERVAL = 0.01
REPLY = re.compile(r"^\[(\d+(?:\.\d+)?)\] \d+ bytes from [^:]+: icmp_seq=(\d+)")
TRANSMITTED = re.compile(r"(\d+) packets transmitted, (\d+) received")
MODES = ("watch", "load", "bulk")


# --- analysis (pure) -----------------------------------------------------------------------------
def parse_ping(text):
    """``ping -D`` output -> (reply timestamps in order, packets transmitted or None).

    Duplicate replies (``DUP!``) are not counted; ``transmitted`` comes from ping's summary,
    which it prints when it is interrupted (None when the summary is missing)."""
    times = []
    transmitted = None
    for line in text.splitlines():
        match = REPLY.match(line)
        if match and "DUP!" not in line:
            times.append(float(match.group(1)))
        elif summary := TRANSMITTED.search(line):
            transmitted = int(summary.group(1))
    return times, transmitted


def longest_gap(times, start=None, end=None):
    """(seconds, at) of the longest stretch without a reply among sorted reply ``times``,
    counting from ``start`` and up to ``end`` when given; (None, None) with nothing to compare.

    With a reply every interval and none lost the gap is about one interval, so it is the time
    a client went without an answer, never less."""
    points = sorted(times)
    if start is not None:
        points = [start, *[t for t in points if t >= start]]
    if end is not None:
        points = [*[t for t in points if t <= end], end]
    if len(points) < 2:
        return None, None
    gap, at = max((b - a, a) for a, b in zip(points, points[1:], strict=False))
    return gap, at


def analyze_ping(text, interval=PING_INTERVAL, start=None, end=None):
    """Figures of one ping run: sent, received, lost, loss %, the longest time without a reply
    (``longest_gap_ms``, from ``start`` to ``end`` when given) and when it began (``gap_at``).

    ``sent`` is ping's own count; without its summary, the replies' time span / ``interval``."""
    times, transmitted = parse_ping(text)
    received = len(times)
    if transmitted is None:
        span = (times[-1] - times[0]) if len(times) > 1 else 0.0
        transmitted = max(received, round(span / interval) + 1 if times else 0)
    gap, at = longest_gap(times, start, end)
    return {
        "sent": transmitted,
        "received": received,
        "lost": max(transmitted - received, 0),
        "loss_pct": round(100.0 * (transmitted - received) / transmitted, 2)
        if transmitted
        else None,
        "longest_gap_ms": None if gap is None else round(gap * 1000, 1),
        "gap_at": at,
    }


def percentile(values, pct):
    """The ``pct`` percentile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def analyze_http(records, start=None, end=None, concurrency=1):
    """Figures of HTTP request records (``{"t", "dt", "ok", "bytes"}``) that started within
    [``start``, ``end``]: requests, failed, requests/s, time per request (ab's mean:
    concurrency x duration / requests), response time mean/median/p90/max, transfer rate."""
    reqs = [
        r
        for r in records
        if "dt" in r and (start is None or r["t"] >= start) and (end is None or r["t"] <= end)
    ]
    if not reqs:
        return {"requests": 0, "failed": 0}
    t0 = start if start is not None else min(r["t"] for r in reqs)
    t1 = end if end is not None else max(r["t"] + r["dt"] for r in reqs)
    duration = max(t1 - t0, 1e-9)
    done = [r for r in reqs if r["ok"]]
    times = [r["dt"] * 1000 for r in done]
    per_request = concurrency * duration * 1000 / len(done) if done else None
    nbytes = sum(r.get("bytes", 0) for r in done)
    return {
        "requests": len(reqs),
        "failed": len(reqs) - len(done),
        "duration_s": round(duration, 3),
        "requests_per_s": round(len(done) / duration, 1),
        "time_per_request_ms": round(per_request, 2) if done else None,
        "mean_ms": round(statistics.fmean(times), 1) if times else None,
        "median_ms": round(statistics.median(times), 1) if times else None,
        "p90_ms": round(percentile(times, 90), 1) if times else None,
        "max_ms": round(max(times), 1) if times else None,
        "transfer_kib_s": round(nbytes / duration / 1024, 1),
    }


def rate(samples, start, end):
    """Bytes per second received between ``start`` and ``end`` from sorted (t, cumulative
    bytes) ``samples``, interpolating linearly between samples; None if they do not cover it."""
    if not samples or end <= start or samples[0][0] > start or samples[-1][0] < end:
        return None
    return (_at(samples, end) - _at(samples, start)) / (end - start)


def _at(samples, t):
    for (t0, b0), (t1, b1) in zip(samples, samples[1:], strict=False):
        if t0 <= t <= t1:
            return b0 if t1 == t0 else b0 + (b1 - b0) * (t - t0) / (t1 - t0)
    return samples[-1][1]


def load_records(path):
    """The JSON lines a worker wrote (a torn last line is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# --- the probe (run by the demo and the benchmarks) ----------------------------------------------
class Probe:
    """Ping and one HTTP worker from ``endpoint`` (the lab's client) against a guest at ``ip``.

    ``with Probe(lab.cli, ip, out_dir, mode="watch") as probe: ...``; then ``probe.ping()``
    (analyze_ping of the run), ``probe.records()`` (the worker's JSON lines) and ``probe.bulk()``
    ([(t, bytes)] in ``bulk`` mode). ``mode=None`` pings only; ``ping=False`` runs no ping."""

    def __init__(self, endpoint, ip, out_dir, mode="watch", path=None, *, ping=True, **opts):
        if mode is not None and mode not in MODES:
            raise ValueError(f"probe mode {mode!r}: one of {', '.join(MODES)}")
        self.endpoint = endpoint
        self.ip = ip
        self.out_dir = Path(out_dir)
        self.mode = mode
        self.path = path or {"watch": "/cgi-bin/state", "load": "/", "bulk": "/big"}.get(mode)
        self.use_ping = ping
        self.opts = opts
        self.procs = {}
        self.started = self.stopped = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _file(self, kind):
        return self.out_dir / f"{kind}.out"

    def start(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        if self.use_ping:
            with open(self._file("ping"), "w") as out:
                argv = ["ping", "-D", "-n", "-i", str(PING_INTERVAL), self.ip]
                self.procs["ping"] = self.endpoint.spawn(argv, stdout=out)
        if self.mode:
            opts = [f"--{k.replace('_', '-')}={v}" for k, v in self.opts.items()]
            argv = [sys.executable, "-m", "lab.probe", self.mode, self.ip, self.path, *opts]
            with open(self._file("http"), "w") as out:
                env = {"PYTHONPATH": str(REPO)}
                self.procs["http"] = self.endpoint.spawn(argv, stdout=out, stderr=None, env=env)

    def stop(self):
        """Stop ping (SIGINT: it prints its summary) and the worker (SIGTERM); idempotent."""
        if self.stopped is None:
            self.stopped = time.time()
        for name, sig in (("ping", signal.SIGINT), ("http", signal.SIGTERM)):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            proc.send_signal(sig)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)

    def ping(self, start=None, end=None):
        """analyze_ping of this run (gaps from ``start``/``end``, default the probe's own)."""
        text = self._file("ping").read_text()
        return analyze_ping(text, start=start or self.started, end=end or self.stopped)

    def records(self):
        return load_records(self._file("http"))

    def bulk(self):
        return [(r["t"], r["bytes"]) for r in self.records() if "total" in r]


# --- the worker (inside the client's netns) ------------------------------------------------------
class _Worker:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def emit(self, record):
        with self.lock:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()

    def get(self, sink=None):
        """One GET; returns (ok, bytes, error). ``sink(n)`` sees each chunk (bulk)."""
        conn = http.client.HTTPConnection(self.args.ip, 80, timeout=self.args.timeout)
        try:
            conn.request("GET", self.args.path)
            resp = conn.getresponse()
            total = 0
            while chunk := resp.read(65536):
                total += len(chunk)
                if sink:
                    sink(total)
                if self.stop.is_set() and sink:
                    break
            return resp.status == 200, total, "" if resp.status == 200 else f"HTTP {resp.status}"
        except (OSError, http.client.HTTPException) as err:
            return False, 0, f"{type(err).__name__}: {err}"
        finally:
            conn.close()

    def request(self):
        t = time.time()
        ok, n, err = self.get()
        record = {"t": t, "dt": round(time.time() - t, 6), "ok": ok, "bytes": n}
        self.emit({**record, "error": err} if err else record)

    def watch(self):
        while not self.stop.is_set():
            self.request()
            self.stop.wait(self.args.interval)

    def load(self):
        def client():
            while not self.stop.is_set():
                self.request()

        threads = [threading.Thread(target=client) for _ in range(self.args.concurrency)]
        for thread in threads:
            thread.start()
        self.stop.wait()
        for thread in threads:
            thread.join()

    def bulk(self):
        done = 0
        last = [0.0]

        def sample(n, force=False):
            now = time.time()
            if force or now - last[0] >= self.args.interval:
                last[0] = now
                self.emit({"t": now, "bytes": done + n, "total": True})

        while not self.stop.is_set():
            ok, n, err = self.get(sink=sample)
            done += n
            sample(0, force=True)
            if not ok and not self.stop.is_set():
                self.emit({"t": time.time(), "error": err})
                self.stop.wait(self.args.interval)

    def run(self):
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        job = threading.Thread(target=getattr(self, self.args.mode))
        job.start()
        while job.is_alive():
            job.join(0.2)


def main(argv=None):
    """``python -m lab.probe watch|load|bulk IP PATH [options]``: JSON lines on stdout until
    SIGTERM (run inside the client by :class:`Probe`)."""
    parser = argparse.ArgumentParser(prog="python -m lab.probe", description=main.__doc__)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("ip")
    parser.add_argument("path")
    parser.add_argument("--interval", type=float, default=0.02, help="watch pause, bulk sampling")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=10, help="load clients")
    args = parser.parse_args(argv)
    if args.interval <= 0 or args.timeout <= 0 or args.concurrency < 1:
        parser.error("--interval and --timeout must be > 0 and --concurrency >= 1")
    _Worker(args).run()


if __name__ == "__main__":
    main()
