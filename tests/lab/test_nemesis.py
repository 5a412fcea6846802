"""The nemesis, short: five trials of random faults against a lab of its own (prefix ``xnmt``)
with one domU, checked every 0.2 s from outside the hosts. Never two copies of the domU, and
the cluster settles (the domU runs exactly once and answers) after every healed fault.

The seed is fixed and gives five different faults of :data:`lab.nemesis.SHORT_FAULTS` (a
unit test checks that); ``python -m lab nemesis --seed <SHORT_SEED> --faults ...`` replays it.
"""

import json
import os

import pytest

from lab import RUN_ROOT, demo, nemesis
from lab.cluster import Lab

pytestmark = [pytest.mark.root, pytest.mark.lab]


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, QEMU taps, tgtd)")
    if missing := demo.missing_tools():
        pytest.fail(f"missing lab tools {missing}: run `make deps`")
    the_lab = Lab(RUN_ROOT / "test-nemesis-lab", prefix="xnmt")
    try:
        yield the_lab, demo.prepare(the_lab)
    finally:
        the_lab.down()


def test_five_random_faults_never_two_copies_and_every_trial_settles(lab):
    the_lab, fo = lab
    out = RUN_ROOT / "test-nemesis"
    summary = nemesis.run(
        the_lab,
        fo,
        trials=5,
        seed=nemesis.SHORT_SEED,
        faults=nemesis.SHORT_FAULTS,
        guests=dict(list(nemesis.GUESTS.items())[:1]),
        out_dir=out,
    )
    rows = json.loads((out / "trials.json").read_text())
    print("\n" + (out / "summary.md").read_text())
    assert sorted(r["fault"] for r in rows) == sorted(nemesis.SHORT_FAULTS)
    assert summary["samples"] > 100  # the checker did look, all along
    assert summary["violations"] == 0, json.dumps(summary["with_violations"])
    unsettled = [r for r in rows if not r["settled"]]
    assert not unsettled, json.dumps(unsettled, indent=1, default=str)[:4000]
    assert nemesis.final_line(summary) == "5 trials, 0 violations, 0 unsettled"
