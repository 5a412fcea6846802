"""The nemesis, short: five trials of random faults against a lab of its own (prefix ``xnmt``)
with one domU, checked every 0.2 s from outside the hosts. Never two copies of the domU, and
the cluster settles (the domU runs exactly once and answers) after every healed fault.

The seed is fixed and gives five different faults of :data:`lab.nemesis.SHORT_FAULTS` (a
unit test checks that); ``python -m lab nemesis --seed 4 --faults <SHORT_FAULTS>`` replays it.
"""

import json
import os

import pytest

from lab import RUN_ROOT, demo, nemesis
from lab.cluster import Lab

pytestmark = [pytest.mark.root, pytest.mark.lab]
OUT = RUN_ROOT / "test-nemesis"


@pytest.fixture(scope="module")
def run():
    """The five trials' summary and records (the lab is removed once they ran)."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, QEMU taps, tgtd)")
    if missing := demo.missing_tools():
        pytest.fail(f"missing lab tools {missing}: run `make deps`")
    lab = Lab(RUN_ROOT / "test-nemesis-lab", prefix="xnmt")
    try:
        fo = demo.prepare(lab)
        summary = nemesis.run(
            lab,
            fo,
            trials=5,
            seed=nemesis.SHORT_SEED,
            faults=nemesis.SHORT_FAULTS,
            guests=dict(list(nemesis.GUESTS.items())[:1]),
            out_dir=OUT,
        )
    finally:
        nemesis.keep(lab, OUT)
        lab.down()
    print("\n" + (OUT / "summary.md").read_text())
    return summary, json.loads((OUT / "trials.json").read_text())


def test_five_different_faults_ran_and_the_checker_looked_all_along(run):
    summary, rows = run
    assert sorted(r["fault"] for r in rows) == sorted(nemesis.SHORT_FAULTS)
    assert not [r for r in rows if r.get("fault_error")], [r.get("fault_error") for r in rows]
    assert summary["samples"] > 100


def test_no_domu_ever_runs_on_two_hosts(run):
    summary, rows = run
    assert summary["violations"] == 0, json.dumps([r["violations"] for r in rows])[:4000]


def test_every_healed_fault_settles(run):
    summary, rows = run
    unsettled = [r for r in rows if not r["settled"]]
    assert not unsettled, "\n".join(nemesis.digest(r) for r in unsettled)
    assert nemesis.final_line(summary) == "5 trials, 0 violations, 0 unsettled"
