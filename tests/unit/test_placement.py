"""The pure placement planner: examples, then properties over random clusters (hypothesis)."""

import pytest
import xenha_placement as xp
from hypothesis import given, settings
from hypothesis import strategies as st


def host(free, state="up", reserve=0):
    return {"state": state, "free_memory_mib": free, "memory_reserve_mib": reserve}


def domu(mem, where=None, priority=0, preferred=None, avoid=()):
    return {
        "host": where,
        "memory_mib": mem,
        "priority": priority,
        "preferred_host": preferred,
        "anti_affinity": list(avoid),
    }


def test_best_fit_and_reserve():
    snap = {
        "hosts": {"a": host(0, "maintenance"), "b": host(1200, reserve=200), "c": host(2000)},
        "domus": {"web": domu(1000, "a"), "db": domu(900, "a")},
    }
    plan = xp.place(snap, ["web", "db"], exclude=["a"])
    # web (larger) first: b can take exactly 1000 after its reserve, the tightest fit
    assert plan == {"placement": {"web": "b", "db": "c"}, "unplaced": {}}


def test_no_room_reason_names_the_numbers():
    snap = {
        "hosts": {"a": host(0, "maintenance"), "b": host(600, reserve=100)},
        "domus": {"big": domu(1024, "a"), "small": domu(256, "a")},
    }
    plan = xp.place(snap, ["big", "small"], exclude=["a"])
    assert plan["placement"] == {"small": "b"}
    assert plan["unplaced"]["big"] == (
        "no room: needs 1024 MiB, the most any eligible host can take is 500 MiB"
    )


def test_a_host_without_a_reserve_keeps_the_pillar_checks_default():
    # no memory_reserve_mib: 256 MiB stay free (xenha_pillarcheck.MEMORY_RESERVE_MIB), not 0
    snap = {
        "hosts": {"b": {"state": "up", "free_memory_mib": 1000}, "c": host(900, reserve=None)},
        "domus": {"big": domu(800), "small": domu(744)},
    }
    plan = xp.place(snap, ["big", "small"])
    assert plan["placement"] == {"small": "b"}
    assert plan["unplaced"]["big"] == (
        "no room: needs 800 MiB, the most any eligible host can take is 744 MiB"
    )


def test_priority_wins_scarce_memory():
    snap = {
        "hosts": {"a": host(0, "fenced"), "b": host(512)},
        "domus": {"low": domu(512, "a", priority=1), "high": domu(512, "a", priority=9)},
    }
    plan = xp.place(snap, ["low", "high"], exclude=["a"])
    assert plan["placement"] == {"high": "b"}
    assert "low" in plan["unplaced"]


def test_a_null_priority_is_the_default_as_the_pillar_check_reads_it():
    # found by the pillar-consumers property test: `priority: null` passed the check (unset,
    # 0) and failed the placement ("priority must be a number, got None")
    snap = {
        "hosts": {"a": host(0, "fenced"), "b": host(512)},
        "domus": {"null": domu(512, "a", priority=None), "one": domu(512, "a", priority=1)},
    }
    plan = xp.place(snap, ["null", "one"], exclude=["a"])
    assert plan["placement"] == {"one": "b"} and "null" in plan["unplaced"]
    with pytest.raises(xp.PlacementError, match="priority must be a number, got 'high'"):
        xp.place({**snap, "domus": {"x": domu(1, priority="high")}}, ["x"])


def test_preferred_host_beats_best_fit():
    snap = {
        "hosts": {"b": host(600), "c": host(4000)},
        "domus": {"web": domu(512, preferred="c")},
    }
    assert xp.place(snap, ["web"])["placement"] == {"web": "c"}


def test_anti_affinity_is_symmetric_and_explained():
    # only db01 declares the rule; web01 must still avoid db01's host
    snap = {
        "hosts": {"a": host(0, "maintenance"), "b": host(4000), "c": host(100)},
        "domus": {"db01": domu(512, "b", avoid=["web01"]), "web01": domu(512, "a")},
    }
    plan = xp.place(snap, ["web01"], exclude=["a"])
    assert plan["placement"] == {}
    assert plan["unplaced"]["web01"] == "anti-affinity: every host with 512 MiB free (b) runs db01"


def test_anti_affinity_between_domus_being_placed():
    snap = {
        "hosts": {"a": host(0, "down"), "b": host(4000), "c": host(4000)},
        "domus": {"x": domu(512, "a", avoid=["y"]), "y": domu(512, "a")},
    }
    placement = xp.place(snap, ["x", "y"], exclude=["a"])["placement"]
    assert placement["x"] != placement["y"]


def test_only_and_no_eligible_reason():
    snap = {
        "hosts": {"a": host(4000, "maintenance"), "b": host(4000)},
        "domus": {"web": domu(512, "b")},
    }
    plan = xp.place(snap, ["web"], only=["a"])
    assert plan["unplaced"] == {"web": "no eligible target host (candidates: a maintenance)"}


@pytest.mark.parametrize(
    ("snap", "names", "message"),
    [
        ({"hosts": {}, "domus": {}}, ["ghost"], "domU 'ghost' is not in the snapshot"),
        ({"hosts": {"b": host(-1)}, "domus": {"w": domu(1)}}, ["w"], "host b: free_memory_mib"),
        ({"hosts": {"b": host(9)}, "domus": {"w": domu("1")}}, ["w"], "domU w: memory_mib"),
        (
            {"hosts": {"b": host(9, reserve="0")}, "domus": {"w": domu(1)}},
            ["w"],
            "host b: memory_reserve_mib: must be an integer, got '0'",
        ),
        (
            {"hosts": {"b": host(9)}, "domus": {"w": {**domu(1), "anti_affinity": "x"}}},
            ["w"],
            "domU w: anti_affinity: must be a list of domU names, got 'x'",
        ),
        (  # an unhashable item is named, not a TypeError
            {"hosts": {"b": host(9)}, "domus": {"w": {**domu(1), "anti_affinity": [{"x": 1}]}}},
            ["w"],
            "domU w: anti_affinity:0: invalid domain name {'x': 1}",
        ),
    ],
)
def test_bad_input_is_named(snap, names, message):
    with pytest.raises(xp.PlacementError, match=message):
        xp.place(snap, names)


def test_unknown_excluded_host_is_named():
    with pytest.raises(xp.PlacementError, match="host 'nope'"):
        xp.place({"hosts": {}, "domus": {}}, [], exclude=["nope"])


# --- properties --------------------------------------------------------------------------------

STATES = ["up", "up", "up", "suspect", "fenced", "maintenance", "down"]


@st.composite
def clusters(draw):
    hosts = {
        f"h{i}": host(
            draw(st.integers(0, 4096)),
            draw(st.sampled_from(STATES)),
            draw(st.integers(0, 512)),
        )
        for i in range(draw(st.integers(1, 8)))
    }
    names = [f"d{i}" for i in range(draw(st.integers(0, 30)))]
    domus = {}
    for name in names:
        domus[name] = domu(
            draw(st.integers(0, 2048)),
            draw(st.sampled_from([None, *hosts])),
            draw(st.integers(0, 3)),
            draw(st.sampled_from([None, *hosts])),
            draw(st.lists(st.sampled_from(names), max_size=3)),
        )
    snap = {"hosts": hosts, "domus": domus}
    todo = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    exclude = draw(st.lists(st.sampled_from(sorted(hosts)), unique=True, max_size=2))
    return snap, todo, exclude


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_properties(case):
    snap, todo, exclude = case
    plan = xp.place(snap, todo, exclude=exclude)
    placement, unplaced = plan["placement"], plan["unplaced"]

    # every domU asked for is either placed or explained, never both
    assert set(placement) | set(unplaced) == set(todo)
    assert not set(placement) & set(unplaced)
    assert all(isinstance(r, str) and r for r in unplaced.values())

    # only hosts that are up and not excluded are targeted
    for target in placement.values():
        assert snap["hosts"][target]["state"] == "up"
        assert target not in exclude

    # never over-commits: what lands on a host fits in its free memory minus its reserve
    for name, spec in snap["hosts"].items():
        landed = sum(snap["domus"][d]["memory_mib"] for d, t in placement.items() if t == name)
        assert landed <= max(spec["free_memory_mib"] - spec["memory_reserve_mib"], 0)

    # anti-affinity (either direction) holds among placed domUs and those staying put
    final = {d: s["host"] for d, s in snap["domus"].items() if d not in todo}
    final.update(placement)
    for name, spec in snap["domus"].items():
        for other in spec["anti_affinity"]:
            if other != name and name in placement and other in final:
                assert final[other] != placement[name]
            if other != name and other in placement and name in final:
                assert final[name] != placement[other]

    # deterministic: same input (in any order) gives the same plan
    assert xp.place(snap, list(reversed(todo)), exclude=exclude) == plan
    shuffled = {
        "hosts": dict(reversed(list(snap["hosts"].items()))),
        "domus": dict(reversed(list(snap["domus"].items()))),
    }
    assert xp.place(shuffled, todo, exclude=list(reversed(exclude))) == plan


@settings(max_examples=200, deadline=None)
@given(clusters())
def test_unplaced_really_fit_nowhere_for_memory(case):
    """A domU left out for 'no room' is bigger than every eligible host's remaining capacity."""
    snap, todo, exclude = case
    plan = xp.place(snap, todo, exclude=exclude)
    remaining = {
        h: max(s["free_memory_mib"] - s["memory_reserve_mib"], 0)
        for h, s in snap["hosts"].items()
        if s["state"] == "up" and h not in exclude
    }
    for d, t in plan["placement"].items():
        remaining[t] -= snap["domus"][d]["memory_mib"]
    for d, reason in plan["unplaced"].items():
        if reason.startswith("no room"):
            assert all(snap["domus"][d]["memory_mib"] > cap for cap in remaining.values())
