"""Real alert receivers on 127.0.0.1: an SMTP server (aiosmtpd) and an HTTP server for webhooks."""

import contextlib
import email
import email.policy
import http.server
import json
import socket
import threading
import time

from aiosmtpd.controller import Controller


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
def smtp_receiver():
    """Yield ``(port, messages)``: a real SMTP server; ``messages`` fills as mail arrives."""
    handler = _Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, handler.messages
    finally:
        controller.stop()


@contextlib.contextmanager
def http_receiver(status=200):
    """Yield ``(url, posts)``: an HTTP server answering ``status``; ``posts`` gets each POST."""
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

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook/SECRET-TOKEN", posts
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
