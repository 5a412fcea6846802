"""Real alert receivers on 127.0.0.1: an SMTP server (aiosmtpd) and an HTTP server for webhooks.

Given ``netns`` (a network namespace's name, as ``ip netns`` names it), a receiver listens on
that namespace's loopback instead, e.g. a lab master's, while this process reads what came.
"""

import contextlib
import ctypes
import email
import email.policy
import http.server
import json
import os
import socket
import threading
import time

from aiosmtpd.controller import Controller

CLONE_NEWNET = 0x40000000  # setns(2): the file must be a network namespace


@contextlib.contextmanager
def in_netns(netns):
    """
    Run the block in network namespace ``netns`` (None: where we are). Only this thread
    moves; the sockets it makes there, and the threads it starts, stay in that namespace.
    """
    if netns is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)

    def enter(fd, what):
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {what}: {os.strerror(err)}")

    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{netns}") as there:
        enter(there.fileno(), f"network namespace {netns}")
        try:
            yield
        finally:
            enter(home.fileno(), "this process's network namespace")


class _Collect:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        got = {"rcpt": list(envelope.rcpt_tos), "message": parsed, "time": time.time()}
        self.messages.append(got)
        return "250 OK"


@contextlib.contextmanager
def smtp_receiver(port=None, netns=None):
    """Yield ``(port, messages)``: a real SMTP server on ``port`` (default: a free one) in
    ``netns``; ``messages`` fills as mail arrives."""
    handler = _Collect()
    with in_netns(netns):
        controller = Controller(handler, hostname="127.0.0.1", port=port or free_port())
        controller.start()  # its thread, and so its socket, in netns
    try:
        yield controller.port, handler.messages
    finally:
        controller.stop()


@contextlib.contextmanager
def http_receiver(status=200, port=0, netns=None, path="/hook/SECRET-TOKEN"):
    """Yield ``(url, posts)``: an HTTP server on ``port`` (0: a free one) in ``netns``,
    answering ``status``; ``posts`` gets each POST."""
    posts = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            post = {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
            posts.append({**post, "time": time.time()})
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    with in_netns(netns):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{path}", posts
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_server():
    """Yield the port of a server that accepts connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port():
    """A local port nothing listens on (connections are refused)."""
    return free_port()


def wait_for(items, count=1, timeout=30):
    """Wait until ``items`` (a list a receiver fills) holds ``count`` entries; return them."""
    deadline = time.monotonic() + timeout
    while len(items) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(items) >= count, f"expected {count} deliveries, got {len(items)}: {items}"
    return items
