"""xenha_preflight.arrived's lease decision: on a sanlock cluster the target's shared lease
becomes exclusive only for a domU seen arriving (the runner's confirmation of a live move);
one that already ran here, or a cluster without sanlock, leaves the leases alone."""

import pytest
from salt.exceptions import CommandExecutionError

from _modules import xenha_preflight

RUNNING = {"name": "web01", "flags": []}
INCOMING = {"name": "web01", "transient": True, "flags": ["paused"]}


@pytest.fixture
def host(monkeypatch):
    """A target whose toolstack answers the rows in ``host.rows`` in turn (the last repeats)
    and whose sanlock records each ``exclusive`` in ``host.exclusive``."""
    state = type("Host", (), {"rows": [], "exclusive": [], "refuse": None})()

    def domain(name):
        assert name == "web01"
        return state.rows.pop(0) if len(state.rows) > 1 else state.rows[0]

    def exclusive(name):
        if state.refuse:
            raise CommandExecutionError(state.refuse)
        state.exclusive.append(name)

    salt = {"xenha_xen.domain": domain, "xenha_sanlock.exclusive": exclusive}
    monkeypatch.setattr(xenha_preflight, "__salt__", salt, raising=False)
    monkeypatch.setattr(
        xenha_preflight, "__pillar__", {"xenha": {"sanlock": {"io_timeout": 10}}}, raising=False
    )
    monkeypatch.setattr(xenha_preflight, "ARRIVAL_POLL", 0)
    return state


def test_a_domu_seen_arriving_takes_its_lease(host):
    host.rows = [None, INCOMING, RUNNING]
    got = xenha_preflight.arrived("web01", handover_from="ServVirt1", wait=30)
    assert (got["here"], got["arrival"], got["lease"], got["looks"]) == (True, True, "taken", 3)
    assert host.exclusive == ["web01"]


def test_a_domu_already_here_keeps_its_lease_as_it_is(host):
    host.rows = [RUNNING]
    got = xenha_preflight.arrived("web01", handover_from="ServVirt1", wait=30)
    assert (got["here"], got["arrival"]) == (True, False)
    assert got["lease"].startswith("not taken: it ran here before")
    assert host.exclusive == []


def test_without_a_wait_a_running_domu_takes_its_lease(host):
    # the runner's call after a resumed move: the row alone is the confirmation
    host.rows = [RUNNING]
    assert xenha_preflight.arrived("web01", handover_from="ServVirt1")["lease"] == "taken"
    assert host.exclusive == ["web01"]


def test_a_refused_handover_is_told_not_raised(host):
    host.rows, host.refuse = [None, RUNNING], "sanlock convert: -243"
    got = xenha_preflight.arrived("web01", handover_from="ServVirt1", wait=30)
    assert got["here"] is True
    assert got["lease"] == "lease handover failed: sanlock convert: -243"


@pytest.mark.parametrize("handover_from", [None, "ServVirt1"])
def test_no_sanlock_or_no_source_leaves_the_leases_alone(host, monkeypatch, handover_from):
    if handover_from:  # a cluster without xenha:sanlock
        monkeypatch.setattr(xenha_preflight, "__pillar__", {"xenha": {}}, raising=False)
    host.rows = [None, RUNNING]
    got = xenha_preflight.arrived("web01", handover_from=handover_from, wait=30)
    assert (got["here"], got["arrival"], got["lease"]) == (True, True, "not configured")
    assert host.exclusive == []
