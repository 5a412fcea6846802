"""
The shutdown policy in the lab (prefix ``xrp``): the drain that ``xenha-shutdown.service``
runs as its ExecStop, called with ``force=True`` (the lab's hosts have no systemd of their own),
asks the real master through its shipped reactor to evacuate ServVirt1 and returns once the
guest has left: live-migrated (same boot, RAM and disk counters went on), the host in
maintenance.
"""

import pytest

from bench.lab_common import LabBench
from lab import demo, vm
from tests.support.labs import prepared_lab

pytestmark = [pytest.mark.root, pytest.mark.lab]

V1, V2 = demo.V1, demo.V2
GUESTS = {"web01": "10.99.0.100"}


@pytest.fixture(scope="module")
def lab():
    with prepared_lab("test-shutdown-lab", "xrp", GUESTS) as (the_lab, _):
        yield the_lab


def test_drain_under_migrate_evacuates_the_host_before_it_goes_down(lab):
    before = vm.wait_guest(lab.cli, GUESTS["web01"])
    answer = lab.salt(V1, "xenha_shutdown.drain", "force=True", "timeout=600", timeout=700)[V1]
    assert isinstance(answer, dict), answer
    assert (answer["policy"], answer["action"], answer["gone"]) == ("migrate", "evacuated", True)
    assert answer["asked"] == ["web01"]
    assert LabBench(lab, None).where("web01") == V2
    after = vm.wait_guest(lab.cli, GUESTS["web01"])
    assert after["bootid"] == before["bootid"], "web01 was rebooted"
    assert after["counter"] > before["counter"], "web01 lost its RAM state"
    status = lab.salt_run("xenha.status", "leases=False", timeout=300)
    row = next(h for h in status["hosts"] if h["host"] == V1)
    assert row["maintenance"] is True
    # nothing left to move: a second drain (a unit restarted on the way down) asks nothing
    again = lab.salt(V1, "xenha_shutdown.drain", "force=True", timeout=120)[V1]
    assert again["reason"] == "no domU runs here", again
