"""bench/lab_evacuation.py's split of an evacuation's time, from the runner's journal."""

import pytest

from bench import lab_evacuation

ENTRY = {
    "outcome": "migrated",
    "duration_s": 2.5,
    "toolstack_s": 1.6,
    "timeline": {
        "job_started": 0.4,
        "toolstack_done": 2.0,
        "listed": 2.15,
        "migrate_returned": 2.25,
        "confirmed": 2.49,
        "target_looks": 6,
    },
}


def test_phases_of_a_move_add_up_to_its_duration():
    split = lab_evacuation.phases(ENTRY)
    assert split == {
        "job_start": 0.4,
        "toolstack": 1.6,
        "source_listing": 0.15,
        "return": 0.1,
        "arrival_wait": 0.24,
        "journal": 0.01,
        "target_looks": 6,
    }
    seconds = sum(v for k, v in split.items() if k != "target_looks")
    assert seconds == pytest.approx(ENTRY["duration_s"])


def test_a_move_without_a_timeline_has_no_phases():
    assert lab_evacuation.phases({"outcome": "migrated", "duration_s": 3.0}) == {}
    partial = {"timeline": {"job_started": 0.4, "confirmed": 2.0}, "duration_s": 2.1}
    assert lab_evacuation.phases(partial) == {}


def test_medians_per_phase():
    fast = {**lab_evacuation.phases(ENTRY), "job_start": 0.2}
    slow = {**lab_evacuation.phases(ENTRY), "job_start": 0.9, "target_looks": 8}
    medians = lab_evacuation._medians([fast, slow, lab_evacuation.phases(ENTRY)])
    assert medians["job_start"] == 0.4 and medians["target_looks"] == 6
    assert lab_evacuation._medians([]) == {}


def test_fixed_part_of_the_call():
    journal = {"started": 101.5, "planned": 102.25, "finished": 110.0}
    fixed = lab_evacuation._fixed(journal, called=100.0, ended=110.5, moves=7.5)
    assert fixed == {"startup": 1.5, "planning": 0.75, "other": 0.25, "exit": 0.5}
    assert lab_evacuation._fixed({"started": 1.0}, 0.0, 2.0, 0.5) == {}
