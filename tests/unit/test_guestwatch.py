"""The guest watcher's rules (_utils/xenha_guestwatch.py): listings and checks in, findings out."""

import http.server
import socket
import threading

import pytest
import xenha_guestwatch

CHECK = {"http": "http://127.0.0.1:1/", "timeout": 1.0, "failures": 2}
MONITORS = {"web01": {"restart": 3, "within": 600.0, "then": "relocate", "grace": 30.0,
                      "check": CHECK}}  # fmt: skip


def row(name, *flags, domid=5, transient=None, state="-b----"):
    return {"name": name, "base_name": name.split("--")[0], "domid": domid,
            "flags": list(flags), "state": state, "transient": transient}  # fmt: skip


def never_stopped(name):
    return False


@pytest.fixture
def watcher():
    w = xenha_guestwatch.Watcher()
    assert w.round(0, {"web01": row("web01", "blocked")}, MONITORS, {}, never_stopped) == []
    return w


def test_a_crash_is_reported_once(watcher):
    crashed = {"web01": row("web01", "shutdown", "crashed", state="---sc-")}
    got = watcher.round(5, crashed, MONITORS, {}, never_stopped)
    assert got == [
        {"tag": "failed", "domu": "web01", "reason": "crashed", "detail": "state ---sc-"}
    ]
    assert watcher.round(10, crashed, MONITORS, {}, never_stopped) == []


def test_a_restarted_instance_is_watched_afresh(watcher):
    watcher.round(5, {"web01": row("web01", "crashed")}, MONITORS, {}, never_stopped)
    assert watcher.round(10, {"web01": row("web01", domid=6)}, MONITORS, {}, never_stopped) == []
    # its grace counts from the new instance
    assert watcher.due(39, MONITORS) == {} and watcher.due(40, MONITORS) == {"web01": CHECK}
    crashed = {"web01": row("web01", "crashed", domid=6)}
    assert [e["reason"] for e in watcher.round(45, crashed, MONITORS, {}, never_stopped)] == [
        "crashed"
    ]
    assert watcher.due(50, MONITORS) == {}  # a crashed domU is not checked


def test_dying_counts_only_when_it_lasts(watcher):
    dying = {"web01": row("web01", "dying")}
    assert watcher.round(5, dying, MONITORS, {}, never_stopped) == []
    assert [e["reason"] for e in watcher.round(10, dying, MONITORS, {}, never_stopped)] == ["dying"]


def test_a_domu_gone_without_a_stop_note_is_reported(watcher):
    got = watcher.round(5, {}, MONITORS, {}, never_stopped)
    assert got == [{"tag": "failed", "domu": "web01", "reason": "gone",
                    "detail": "no longer listed by the toolstack"}]  # fmt: skip
    assert watcher.round(10, {}, MONITORS, {}, never_stopped) == []


def test_a_stop_note_needs_a_watchers_directory(tmp_path):
    xenha_guestwatch.note_stop("web01", str(tmp_path / "none"))
    assert not (tmp_path / "none").exists()


def test_a_stop_through_xenha_or_a_migration_is_no_failure(watcher, tmp_path):
    xenha_guestwatch.note_stop("web01", str(tmp_path))
    stopped = lambda name: xenha_guestwatch.take_stop_note(name, str(tmp_path))  # noqa: E731
    assert watcher.round(5, {}, MONITORS, {}, stopped) == []
    assert not (tmp_path / "web01.stopped").exists()
    watcher.round(10, {"web01": row("web01")}, MONITORS, {}, never_stopped)
    away = {"web01--migratedaway": row("web01--migratedaway", transient="migratedaway")}
    assert watcher.round(15, away, MONITORS, {}, never_stopped) == []
    assert watcher.round(20, {}, MONITORS, {}, never_stopped) == []


def test_a_stale_stop_note_does_not_hide_a_failure(tmp_path):
    xenha_guestwatch.note_stop("web01", str(tmp_path))
    late = xenha_guestwatch.take_stop_note("web01", str(tmp_path), now=10**12)
    assert late is False and not (tmp_path / "web01.stopped").exists()


def test_a_listing_that_failed_reports_nothing(watcher):
    assert watcher.round(5, None, MONITORS, {}, never_stopped) == []
    assert watcher.round(10, {"web01": row("web01")}, MONITORS, {}, never_stopped) == []


def test_checks_wait_for_grace_and_count_failures_in_a_row(watcher):
    listing = {"web01": row("web01")}
    assert watcher.due(29, MONITORS) == {}
    assert watcher.due(30, MONITORS) == {"web01": CHECK}
    bad = {"web01": (False, "connection refused")}
    good = {"web01": (True, "HTTP 200")}
    assert watcher.round(30, listing, MONITORS, bad, never_stopped) == []
    assert watcher.round(35, listing, MONITORS, good, never_stopped) == []  # the count restarts
    assert watcher.round(40, listing, MONITORS, bad, never_stopped) == []
    got = watcher.round(45, listing, MONITORS, bad, never_stopped)
    assert got == [{"tag": "failed", "domu": "web01", "reason": "check",
                    "detail": "2 in a row: connection refused"}]  # fmt: skip
    assert watcher.round(50, listing, MONITORS, bad, never_stopped) == []  # once
    watcher.round(55, listing, MONITORS, good, never_stopped)
    watcher.round(60, listing, MONITORS, bad, never_stopped)
    assert len(watcher.round(65, listing, MONITORS, bad, never_stopped)) == 1  # failed anew


def test_an_unmonitored_domu_is_forgotten(watcher):
    assert watcher.round(5, {}, {}, {}, never_stopped) == []
    assert watcher.domus == {}


def test_probe_tcp_and_http_against_real_sockets():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        ok, detail = xenha_guestwatch.probe({"tcp": ["127.0.0.1", port], "timeout": 2.0})
    assert ok and f"tcp 127.0.0.1:{port} connected" in detail
    ok, detail = xenha_guestwatch.probe({"tcp": ["127.0.0.1", port], "timeout": 2.0})
    assert not ok and "ConnectionRefusedError" in detail

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_port}"
        ok, detail = xenha_guestwatch.probe({"http": f"{base}/ok", "timeout": 2.0})
        assert ok and "HTTP 200" in detail
        ok, detail = xenha_guestwatch.probe({"http": f"{base}/down", "timeout": 2.0})
        assert not ok and detail.endswith("HTTP 503 Service Unavailable")
    finally:
        httpd.shutdown()
        httpd.server_close()
