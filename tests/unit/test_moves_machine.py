"""The evacuation/restore journal's outcome machine (_utils/xenha_moves.py): every outcome the
runner's mover records is in the table, each step a move takes is allowed, and a step no move
takes is refused with both outcomes named and the entry left as it was."""

import pathlib
import re

import pytest
import xenha_moves as moves

RUNNER = pathlib.Path(__file__).parents[2] / "_runners" / "xenha.py"


def recorded_outcomes():
    """Every literal outcome the runner records: ``outcome="x"``, ``"outcome": "x"`` and
    ``outcome, reason = ("x", ...)`` (the mover's whole vocabulary)."""
    pattern = r'outcome(?:"\s*:\s*|\s*=\s*|, reason = \(?)"([A-Za-z-]+)"'
    return set(re.findall(pattern, RUNNER.read_text()))


def test_every_outcome_the_runner_records_is_a_state_of_the_machine():
    found = recorded_outcomes()
    assert {"migrating", "migrated", "stayed", "cold-moving", "cold-migrated"} <= found
    assert found <= set(moves.MACHINE) - {None}, found - set(moves.MACHINE)
    for after in moves.MACHINE.values():
        assert set(after) <= set(moves.MACHINE)  # no step leads out of the table


@pytest.mark.parametrize(
    "path",
    [
        ["migrating", "migrated", "migrating", "stayed"],  # moved, came back, could not go again
        ["stayed", "migrating", "cold-moving", "cold-migrated"],
        ["migrating", "pending", "migrating", "UNCERTAIN"],  # interrupted, resumed
        ["migrating", "cold-moving", "DOWN"],
    ],
)
def test_the_steps_moves_take_are_allowed(path):
    entry = {}
    for outcome in path:
        moves.change(entry, {"outcome": outcome, "reason": outcome})
    assert entry == {"outcome": path[-1], "reason": path[-1]}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "migrated"),
        ("stayed", "cold-migrated"),
        ("migrated", "UNCERTAIN"),
        ("DOWN", "pending"),
    ],
)
def test_a_step_no_move_takes_is_refused_and_changes_nothing(before, after):
    entry = {"outcome": before} if before else {}
    with pytest.raises(moves.MoveError, match=f"{before or 'a new entry'} -> {after}"):
        moves.change(entry, {"outcome": after, "reason": "x"})
    assert entry == ({"outcome": before} if before else {})


def test_fields_without_an_outcome_change_nothing_of_it():
    entry = moves.change({"outcome": "migrating"}, {"duration_s": 1.5})
    assert entry == {"outcome": "migrating", "duration_s": 1.5}
