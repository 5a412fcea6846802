"""The failover journal's transition table: enforced by ``change``, and complete for the engine."""

import copy
import inspect

import pytest
import xenha_failover as xf

from tests.support import failover_fake as scenarios
from tests.unit import test_failover_engine as engine_tests

EDGES = {(old, new) for old, row in xf.MACHINE.items() for new in row.next}


def journal(state, **fields):
    return {"host": "A", "id": "3f2a9c0d1e4b", "state": state, "attempts": 1, **fields}


# --- the table ---


def test_every_state_is_a_row_and_reachable_from_a_new_journal():
    named = {new for _, new in EDGES}
    assert named <= set(xf.MACHINE)
    seen, todo = set(), [None]
    while todo:
        state = todo.pop()
        seen.add(state)
        todo += [new for new in xf.MACHINE[state].next if new not in seen]
    assert seen == set(xf.MACHINE)
    constants = {xf.RECEIVED, xf.VERIFIED, xf.CORROBORATED, xf.BLOCKED, xf.FENCED}
    constants |= {xf.RESTARTING, xf.DONE, xf.IGNORED, xf.RECOVERED}
    assert set(xf.MACHINE) - {None} == constants
    # the finished ones, which a new failover replaces (the None row)
    assert constants - set(xf.ACTIVE) == {xf.DONE, xf.IGNORED, xf.RECOVERED}
    assert xf.IN_PROGRESS not in xf.MACHINE


def test_a_state_keeps_only_fields_it_carries_and_none_of_the_common_ones():
    for state, row in xf.MACHINE.items():
        assert set(row.keeps) <= set(row.fields), state
        assert not set(row.fields) & set(xf.COMMON), state


# --- change ---


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        (xf.VERIFIED, xf.DONE, "verified -> done is illegal (verified goes to corroborated,"),
        (xf.RECOVERED, xf.RESTARTING, "recovered -> restarting is illegal (recovered goes to"),
        (None, xf.FENCED, "None -> fenced is illegal (None goes to received)"),
        (xf.DONE, "finished", "done -> finished is illegal"),
        ("in_progress", xf.DONE, "'in_progress' is no journal state"),
    ],
)
def test_an_illegal_transition_is_refused_and_names_both_states_and_the_failover(old, new, why):
    record = journal(old, reason="kept as it was")
    before = copy.deepcopy(record)
    with pytest.raises(xf.IllegalTransition, match="failover 3f2a9c0d1e4b of A: ") as err:
        xf.change(record, new, {})
    assert why in str(err.value)
    assert record == before


def test_a_field_the_new_state_does_not_carry_is_refused():
    record = journal(xf.CORROBORATED)
    with pytest.raises(xf.IllegalTransition, match=r"fenced carries no \['domus'\]"):
        xf.change(record, xf.FENCED, {"fence": {"method": "ipmi"}, "domus": {}})
    assert record == journal(xf.CORROBORATED)


def test_a_change_drops_the_fields_of_the_state_before_and_keeps_the_common_ones():
    record = journal(xf.BLOCKED, reason="not fenced", retry_in=5.0, reporters=["B"], event={})
    xf.change(record, xf.VERIFIED, {"reason": "retry after attempt 1"})
    assert record == {
        **journal(xf.VERIFIED, reporters=["B"], event={}),
        "reason": "retry after attempt 1",
    }
    # the corroboration's reason is its own, not the retry's
    xf.change(record, xf.CORROBORATED, {"observations": []})
    assert "reason" not in record and record["observations"] == []


def test_fence_plan_and_outcome_last_while_the_rest_goes():
    fence = {"method": "ipmi"}
    record = journal(xf.FENCED, fence=fence, reason="fenced, but no survivor answered")
    record.update(plan_attempts=2, leases_read="before the fence")
    xf.change(record, xf.RESTARTING, {"domus": {"web01": {}}, "order": ["web01"]})
    assert record == journal(
        xf.RESTARTING,
        fence=fence,
        leases_read="before the fence",
        domus={"web01": {}},
        order=["web01"],
    )
    xf.change(record, xf.DONE, {"seconds": 9.5, "not_restarted": {}})
    assert "leases_read" not in record and record["fence"] == fence
    xf.change(record, xf.RESTARTING, {"reason": "room for domUs that fitted nowhere"})
    assert "seconds" not in record and "not_restarted" not in record
    xf.change(record, xf.DONE, {"seconds": 70.0, "not_restarted": {}})
    xf.change(record, xf.RECOVERED, {"reason": "back", "state_before": xf.DONE})
    assert record["seconds"] == 70.0 and record["domus"] == {"web01": {}}


# --- the engine's own scenarios ---


class RenewsAgain(scenarios.FakeIO):
    """A's lease stops, then advances again once the claim is corroborated (a sanlock daemon
    that was paused, a storage blip): the lease-only path sees it renew while it waits."""

    def fire(self, tag, data):
        super().fire(tag, data)
        if tag == "xenha/failover/A/corroborated":
            self.lease_state["A"] = "advancing"


def test_a_host_that_renews_again_while_the_lease_only_path_waits_is_left_alone(tmp_path):
    io = RenewsAgain()
    del io.vmhosts["A"]["bmc"]
    result = scenarios.engine(io, tmp_path, **scenarios.QUICK).handle("A", "B", scenarios.EVENT)
    assert result["state"] == xf.IGNORED and "A renews again" in result["reason"]
    assert io.starts == [] and "fenced" not in io.tags()
    record = xf.load(str(tmp_path), "A")
    assert record["recheck"] is True and "observations" not in record  # not the stopped ones
    assert [step["state"] for step in record["history"]][-2:] == [xf.CORROBORATED, xf.IGNORED]


def _scenarios():
    """The engine tests (and this file's) that need nothing but the fake cluster and a store."""
    found = []
    for name, func in sorted({**vars(engine_tests), **globals()}.items()):
        params = set(inspect.signature(func).parameters) if name.startswith("test_") else None
        if params is not None and params <= {"io", "tmp_path"} and "tmp_path" in params:
            found.append((name, func, params))
    return found


def test_every_change_the_engine_makes_is_an_edge_and_every_edge_is_made(tmp_path, monkeypatch):
    made, saved = [], []
    change, save = xf.change, xf.Engine._save

    def spy_change(record, state, fields):
        made.append((record.get("state"), state))
        change(record, state, fields)

    def spy_save(self, record):
        saved.append((record.get("state"), set(record)))
        save(self, record)

    monkeypatch.setattr(xf, "change", spy_change)
    monkeypatch.setattr(xf.Engine, "_save", spy_save)
    runs = _scenarios()
    assert len(runs) > 50, "the engine tests changed shape: this test drives them"
    every = set()
    for name, func, params in runs:
        store = tmp_path / name
        store.mkdir()
        kwargs = {"io": scenarios.FakeIO(), "tmp_path": store}
        del made[:], saved[:]
        func(**{k: kwargs[k] for k in params})
        illegal = [edge for edge in made if edge not in EDGES]
        assert not illegal, (name, illegal)
        for state, keys in saved:
            stray = keys - set(xf.COMMON) - set(xf.MACHINE[state].fields)
            assert not stray, (name, state, stray)
        for host, record in xf.journals(str(store)).items():
            # a journal the scenario wrote itself has no history before the engine's
            steps = [step["state"] for step in record.get("history", [])]
            steps = [None, *steps] if steps[:1] == [xf.RECEIVED] else steps
            assert set(zip(steps, steps[1:], strict=False)) <= EDGES, (name, host, steps)
        every |= set(made)
    # an edge no scenario makes is one the table allows for nothing
    assert sorted(EDGES - every, key=str) == []
