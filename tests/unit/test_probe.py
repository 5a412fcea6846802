"""lab.probe's analysis: ping output and HTTP records in, the figures of Tables 5, 7 and 9 out."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab import probe

T0 = 1_700_000_000.0


def ping_text(times, transmitted=None, seq_of=None, extra=()):
    """iputils ``ping -D -n`` output with a reply at each of ``times``."""
    lines = ["PING 10.99.0.100 (10.99.0.100) 56(84) bytes of data."]
    for i, t in enumerate(times):
        seq = seq_of[i] if seq_of else i + 1
        lines.append(f"[{t:.6f}] 64 bytes from 10.99.0.100: icmp_seq={seq} ttl=64 time=0.512 ms")
    lines += list(extra)
    if transmitted is not None:
        lines += [
            "",
            "--- 10.99.0.100 ping statistics ---",
            f"{transmitted} packets transmitted, {len(times)} received, "
            f"{100 * (transmitted - len(times)) / transmitted:g}% packet loss, time 1234ms",
            "rtt min/avg/max/mdev = 0.401/0.512/0.889/0.050 ms",
        ]
    return "\n".join(lines) + "\n"


def test_a_blackout_shows_as_lost_replies_and_the_longest_gap():
    # replies every 10 ms, then 7 missing (the switch-over), then every 10 ms again
    times = [T0 + i * 0.01 for i in range(50)] + [T0 + 0.57 + i * 0.01 for i in range(50)]
    got = probe.analyze_ping(ping_text(times, transmitted=107))
    assert (got["sent"], got["received"], got["lost"]) == (107, 100, 7)
    assert got["loss_pct"] == pytest.approx(6.54, abs=0.01)
    assert got["longest_gap_ms"] == pytest.approx(80.0, abs=0.1)  # 0.49 -> 0.57
    assert got["gap_at"] == pytest.approx(T0 + 0.49)


def test_no_loss_gives_one_interval_and_zero_lost():
    times = [T0 + i * 0.01 for i in range(20)]
    got = probe.analyze_ping(ping_text(times, transmitted=20))
    assert got["lost"] == 0 and got["loss_pct"] == 0
    assert got["longest_gap_ms"] == pytest.approx(10.0, abs=0.01)


def test_duplicates_and_error_lines_are_not_replies():
    times = [T0, T0 + 0.01, T0 + 0.02]
    extra = [
        f"[{T0 + 0.021:.6f}] 64 bytes from 10.99.0.100: icmp_seq=3 ttl=64 time=0.6 ms (DUP!)",
        f"[{T0 + 0.5:.6f}] From 10.99.0.20 icmp_seq=9 Destination Host Unreachable",
        f"[{T0 + 0.6:.6f}] no answer yet for icmp_seq=10",
    ]
    replies, transmitted = probe.parse_ping(ping_text(times, transmitted=12, extra=extra))
    assert replies == times and transmitted == 12


def test_without_the_summary_sent_is_estimated_from_the_span():
    times = [T0 + i * 0.01 for i in range(10)] + [T0 + 0.19]  # 9 missing at the end
    got = probe.analyze_ping(ping_text(times))
    assert got["sent"] == 20 and got["lost"] == 9


def test_the_gap_counts_from_start_and_up_to_end():
    # a host that never came back: the last reply at +1 s, the probe ran until +30 s
    times = [T0 + 0.5, T0 + 1.0]
    gap, at = probe.longest_gap(times, start=T0, end=T0 + 30)
    assert gap == pytest.approx(29.0) and at == pytest.approx(T0 + 1.0)
    # no reply at all in the window: the whole window
    assert probe.longest_gap([], start=T0, end=T0 + 5) == (5, T0)
    assert probe.longest_gap([T0]) == (None, None)


@given(st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), min_size=2, max_size=60))
def test_longest_gap_is_the_largest_difference_between_neighbours(offsets):
    times = sorted(T0 + o for o in offsets)
    gap, at = probe.longest_gap(times)
    assert gap == max(b - a for a, b in zip(times, times[1:], strict=False))
    assert at in times
    # lost packets never shorten it: dropping a reply can only widen the longest gap
    fewer = times[:1] + times[2:] if len(times) > 2 else times
    assert probe.longest_gap(fewer)[0] >= gap


def http_records(n, start, every, dt, *, ok=lambda i: True, nbytes=512):
    return [
        {"t": start + i * every, "dt": dt, "ok": ok(i), "bytes": nbytes if ok(i) else 0}
        for i in range(n)
    ]


def test_http_figures_like_ab():
    # 10 clients, 1000 requests in 10 s, 100 ms each, 512 bytes each
    records = http_records(1000, T0, 0.01, 0.1)
    got = probe.analyze_http(records, start=T0, end=T0 + 10, concurrency=10)
    assert got["requests"] == 1000 and got["failed"] == 0
    assert got["requests_per_s"] == 100.0
    assert got["time_per_request_ms"] == 100.0  # ab: concurrency x duration / requests
    assert got["mean_ms"] == got["median_ms"] == got["max_ms"] == 100.0
    assert got["transfer_kib_s"] == pytest.approx(50.0)


def test_http_failures_are_counted_and_left_out_of_times_and_rates():
    records = http_records(10, T0, 1.0, 0.05, ok=lambda i: i != 3)
    records[5]["dt"] = 0.9  # the slow one across the switch-over
    got = probe.analyze_http(records, start=T0, end=T0 + 10)
    assert got["failed"] == 1 and got["requests"] == 10
    assert got["requests_per_s"] == 0.9
    assert got["max_ms"] == 900.0 and got["median_ms"] == 50.0


def test_http_window_selects_by_start_time():
    records = http_records(100, T0, 0.1, 0.01)
    got = probe.analyze_http(records, start=T0 + 2, end=T0 + 4)
    assert got["requests"] == 21  # starts at 2.0, 2.1, ... 4.0
    assert probe.analyze_http(records, start=T0 + 50) == {"requests": 0, "failed": 0}


def test_percentile_nearest_rank():
    assert probe.percentile([], 90) is None
    assert probe.percentile([5], 90) == 5
    assert probe.percentile(list(range(1, 11)), 90) == 9
    assert probe.percentile(list(range(1, 11)), 50) == 5


def test_rate_interpolates_between_samples():
    samples = [(T0, 0), (T0 + 1, 1000), (T0 + 2, 1000), (T0 + 4, 5000)]
    assert probe.rate(samples, T0, T0 + 1) == 1000
    assert probe.rate(samples, T0 + 1, T0 + 2) == 0  # a stall (the migration's blackout)
    assert probe.rate(samples, T0 + 0.5, T0 + 3) == pytest.approx((3000 - 500) / 2.5)
    assert probe.rate(samples, T0 - 1, T0 + 1) is None  # not covered
    assert probe.rate(samples, T0 + 2, T0 + 2) is None


def test_load_records_skips_a_torn_last_line(tmp_path):
    out = tmp_path / "http.out"
    out.write_text('{"t": 1, "dt": 0.1, "ok": true}\n{"t": 2, "dt": 0.1, "ok": tr')
    assert probe.load_records(out) == [{"t": 1, "dt": 0.1, "ok": True}]


def test_probe_refuses_an_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="probe mode 'flood'"):
        probe.Probe(None, "10.99.0.100", tmp_path, mode="flood")


def test_worker_refuses_bad_options(capsys):
    with pytest.raises(SystemExit):
        probe.main(["load", "10.99.0.100", "/", "--concurrency=0"])
    assert "--concurrency" in capsys.readouterr().err
