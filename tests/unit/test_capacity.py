"""
N+1 (_utils/xenha_capacity.py): each VM host's loss planned by the failover's own planner, and
the admission of a start that would break it.
"""

import copy

import pytest
import xenha_capacity as cap
import xenha_failover

MEMBERS = {
    "vmhosts": {
        "A": {"memory_reserve_mib": 100},
        "B": {"memory_reserve_mib": 100},
        "C": {"memory_reserve_mib": 0},
    },
    "domus": {
        "web01": {"memory_mib": 1000},
        "web02": {"memory_mib": 1000},
        "db01": {"memory_mib": 2000},
    },
}


def room(**hosts):
    """{host: {"free_memory_mib", "total_memory_mib", "domus"}} from host=(free, [domUs])."""
    return {
        h: {"free_memory_mib": free, "total_memory_mib": 8192, "domus": list(domus)}
        for h, (free, domus) in hosts.items()
    }


@pytest.fixture
def members():
    return copy.deepcopy(MEMBERS)


def test_every_loss_fits(members):
    rooms = room(A=(3100, ["web01"]), B=(3100, ["web02"]), C=(3000, ["db01"]))
    result = cap.n_plus_1(members, rooms, {})
    assert result == {h: {"checked": True, "unplaced": {}} for h in "ABC"}
    assert cap.verdict(result) == "ok"
    assert cap.host_text(result["A"]) == "ok"


def test_a_loss_that_does_not_fit_names_the_host_and_the_domus(members):
    # db01 (2000 MiB) fits on neither A nor B once C is gone: 1500 - 100 reserve each
    rooms = room(A=(1600, ["web01"]), B=(1600, ["web02"]), C=(3000, ["db01"]))
    result = cap.n_plus_1(members, rooms, {})
    assert sorted(result["C"]["unplaced"]) == ["db01"]
    assert result["C"]["unplaced"]["db01"].startswith("no room: needs 2000 MiB")
    assert result["A"]["unplaced"] == result["B"]["unplaced"] == {}
    assert cap.at_risk(result) == {"C": ["db01"]}
    assert cap.verdict(result) == "at risk (C -> [db01])"
    assert cap.host_text(result["C"]) == "at risk: db01"


def test_the_answer_is_the_failovers_own_plan(members):
    """For each host, what N+1 calls unplaced is what restart_plan leaves unplaced."""
    rooms = room(A=(1600, ["web01"]), B=(1100, ["web02"]), C=(3000, ["db01"]))
    result = cap.n_plus_1(members, rooms, {"B": "maintenance"})
    for host in "ABC":
        survivors = {h: i for h, i in rooms.items() if h != host}
        marks = {"B": "maintenance"}
        plan = xenha_failover.restart_plan(host, members, survivors, marks, rooms[host]["domus"])
        unplaced = {d for d, e in plan["domus"].items() if e["state"] == "unplaced"}
        assert set(result[host]["unplaced"]) == unplaced
    assert cap.at_risk(result) == {"C": ["db01"]}


def test_anti_affinity_leaves_a_domu_unplaced_with_room_to_spare(members):
    members["domus"]["web01"]["anti_affinity"] = ["web02"]
    rooms = room(A=(5000, ["web01"]), B=(5000, ["web02"]), C=(5000, []))
    assert cap.at_risk(cap.n_plus_1(members, rooms, {})) == {}
    rooms = room(A=(5000, ["web01"]), B=(5000, ["web02"]))  # C gone: B is the only survivor
    result = cap.n_plus_1(members, rooms, {})
    assert result["A"]["unplaced"]["web01"].startswith("anti-affinity: ")
    assert cap.at_risk(result) == {"A": ["web01"], "B": ["web02"]}


def test_the_preferred_host_is_taken_first_and_can_crowd_out_another(members):
    # A dies: web01 prefers C, so db01 (placed first: larger) takes C and web01 goes to B ...
    members["domus"]["web01"]["preferred_host"] = "C"
    rooms = room(A=(0, ["web01", "db01"]), B=(1200, []), C=(2100, []))
    assert cap.n_plus_1(members, rooms, {})["A"]["unplaced"] == {}
    # ... but a priority makes web01 take its preferred C first, and db01 fits nowhere
    members["domus"]["web01"]["priority"] = 10
    result = cap.n_plus_1(members, rooms, {})
    assert sorted(result["A"]["unplaced"]) == ["db01"]


def test_a_host_already_down_is_not_checked_and_is_no_target(members):
    rooms = room(A=(3100, ["web01"]), B=(3100, ["web02"]))  # C did not answer
    result = cap.n_plus_1(members, rooms, {})
    assert result["C"] == {"checked": False, "unplaced": {}}
    assert cap.host_text(result["C"]) == "not checked (down)"
    assert cap.at_risk(result) == {}
    # fenced by the failover: not checked even if a report were there
    rooms["C"] = room(C=(8000, []))["C"]
    assert cap.n_plus_1(members, rooms, {"C": "fenced"})["C"]["checked"] is False
    # with B also down, A's web01 has nowhere to go
    result = cap.n_plus_1(members, room(A=(3100, ["web01"])), {})
    assert result["A"]["unplaced"]["web01"].startswith("no eligible target host")
    assert cap.verdict(result) == "at risk (A -> [web01])"


def test_nothing_checked_is_unknown_not_ok(members):
    assert cap.verdict(cap.n_plus_1(members, {}, {})).startswith("unknown")


def test_domus_the_pillar_does_not_manage_do_not_count(members):
    rooms = room(A=(3100, ["web01", "scratch"]), B=(3100, []), C=(3100, []))
    assert cap.n_plus_1(members, rooms, {})["A"]["unplaced"] == {}


def test_admission_allows_a_start_that_keeps_n_plus_1(members):
    rooms = room(A=(3100, []), B=(3100, []), C=(3100, []))
    got = cap.admission(members, rooms, {}, domu="web01", host="A", memory_mib=1000)
    assert got["admit"] is True
    assert got["broken"] == {}
    assert (got["before"], got["after"]) == ("ok", "ok")


def test_admission_refuses_a_start_that_breaks_n_plus_1_naming_the_loss(members):
    # db01 on A fits (1900 MiB after the reserve), but then A's loss leaves it unplaced
    rooms = room(A=(2100, []), B=(1100, ["web01"]), C=(1100, ["web02"]))
    got = cap.admission(members, rooms, {}, domu="db01", host="A", memory_mib=2000)
    assert got["admit"] is False
    assert got["broken"] == {"A": ["db01"]}
    assert got["reason"].startswith(
        "starting db01 on A breaks N+1: losing A would leave db01 unplaced (no room: needs 2000"
    )
    assert (got["before"], got["after"]) == ("ok", "at risk (A -> [db01])")


def test_admission_refuses_a_start_that_crowds_out_another_hosts_domus(members):
    # web02 on C takes the room web01 would need if B died
    rooms = room(A=(100, []), B=(2100, ["web01"]), C=(1100, []))
    got = cap.admission(members, rooms, {}, domu="web02", host="C", memory_mib=1000)
    assert got["admit"] is False
    assert got["broken"] == {"B": ["web01"]}
    assert "losing B would leave web01 unplaced" in got["reason"]


def test_admission_does_not_blame_a_start_for_what_is_already_at_risk(members):
    # C's db01 fits nowhere already; web01 on A leaves that as it is and breaks nothing else
    rooms = room(A=(1100, []), B=(1100, []), C=(3000, ["db01"]))
    got = cap.admission(members, rooms, {}, domu="web01", host="A", memory_mib=1000)
    assert got["admit"] is True
    assert got["before"] == got["after"] == "at risk (C -> [db01])"


def test_admission_refuses_what_does_not_fit_or_cannot_be_judged(members):
    rooms = room(A=(1000, []), B=(5000, []))
    got = cap.admission(members, rooms, {}, domu="web01", host="A", memory_mib=1000)
    assert got["admit"] is False
    assert got["reason"] == "web01 needs 1000 MiB, A has 900 MiB"
    got = cap.admission(members, rooms, {}, domu="web01", host="C", memory_mib=1000)
    assert got["admit"] is False
    assert got["reason"] == "C did not report its free memory: N+1 cannot be judged"


def test_a_host_without_a_reserve_keeps_the_pillar_checks_default(members):
    # C leaves memory_reserve_mib out: N+1 and admission keep 256 MiB there, as the check does
    del members["vmhosts"]["C"]["memory_reserve_mib"]
    rooms = room(A=(0, ["db01"]), B=(0, []), C=(2255, []))
    result = cap.n_plus_1(members, rooms, {})
    assert result["A"]["unplaced"] == {
        "db01": "no room: needs 2000 MiB, the most any eligible host can take is 1999 MiB"
    }
    got = cap.admission(members, room(A=(0, []), C=(2255, [])), {}, domu="x", host="C",
                        memory_mib=2000)  # fmt: skip
    assert got["reason"] == "x needs 2000 MiB, C has 1999 MiB"


def test_admission_does_not_change_its_input(members):
    rooms = room(A=(3100, ["web02"]), B=(3100, []), C=(3100, []))
    kept = copy.deepcopy(rooms)
    cap.admission(members, rooms, {}, domu="web01", host="A", memory_mib=1000)
    assert rooms == kept
