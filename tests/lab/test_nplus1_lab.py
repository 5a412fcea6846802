"""
N+1 in the lab (prefix ``xgm``), on real daemons: web01 runs on ServVirt1 and ServVirt2 has
room for it, so ``salt-run xenha.status`` says N+1 ``ok``. A domU outside the pillar (``hog``,
started paused on ServVirt2 with the lab ``xl``, which counts its memory as used, as Xen would)
takes ServVirt2's memory down to less than web01 needs above the host's reserve: status says
``at risk``, naming ServVirt1 and web01. Beforehand ``xenha.admission`` and a
``xenha_domu.running`` state with ``admission: strict`` (through the master's ``peer_run``)
refuse that very start. With ``hog`` destroyed, N+1 is ``ok`` again.
"""

import json

import pytest

from lab import demo, toolstack, vm
from lab.hosts import LabError, wait_for
from tests.support.labs import prepared_lab

pytestmark = [pytest.mark.root, pytest.mark.lab]

V1, V2 = demo.V1, demo.V2
NAME, IP = "web01", "10.99.0.100"
HOG = "hog"
WEB01_MIB = 128  # Failover.define_domu's default
SHORT = 64  # MiB that ServVirt2 lacks for web01 (above its reserve) while hog runs
AT_RISK = f"at risk ({V1} -> [{NAME}])"


@pytest.fixture(scope="module")
def lab_fo():
    with prepared_lab("test-nplus1-lab", "xgm", {NAME: IP}) as (the_lab, fo):
        yield the_lab, fo


def status(lab):
    return lab.salt_run("xenha.status", "leases=False", timeout=300)


def wait_n_plus_1(lab, verdict, what):
    """Poll ``xenha.status`` until its N+1 verdict is ``verdict``; returns that status (on
    timeout the last status is in the failure message)."""
    last = {}

    def reached():
        last.update(status(lab))
        return last.get("n_plus_1") == verdict and dict(last)

    try:
        return wait_for(reached, 120, what, interval=2)
    except LabError as err:
        pytest.fail(f"{err}; last status:\n{json.dumps(last, indent=1)}")


def rows(answer):
    return {h["host"]: h["n_plus_1"] for h in answer["hosts"]}


def free_mib(answer, host):
    row = next(h for h in answer["hosts"] if h["host"] == host)
    return int(row["memory_free_total_mib"].split("/")[0])


def hog_config(lab, fo, memory):
    """An xl config for ``HOG`` (the lab guest's kernel, no NIC, no disk) in the shared folder."""
    image = vm.DomUs(lab).image()
    cfg = fo.shared / "domus" / f"{HOG}.cfg"
    cfg.write_text(
        f'name = "{HOG}"\nmemory = {memory}\nvcpus = 1\n'
        f'kernel = "{image.kernel}"\nramdisk = "{image.ramdisk}"\n'
    )
    return cfg


def test_n_plus_1_goes_at_risk_when_memory_is_taken_and_back_when_freed(lab_fo):
    lab, fo = lab_fo
    vm.wait_guest(lab.cli, IP)
    first = wait_n_plus_1(lab, "ok", "N+1 ok with web01 on ServVirt1")
    assert rows(first) == {V1: "ok", V2: "ok", "ServDB": "-"}, first["hosts"]

    # take all but SHORT MiB of what web01 needs on ServVirt2, above its reserve
    reserve = lab.cluster["hosts"][V2]["memory_reserve_mib"]
    hog_mib = free_mib(first, V2) - reserve - WEB01_MIB + SHORT
    cfg = hog_config(lab, fo, hog_mib)

    refused = lab.salt_run("xenha.admission", HOG, V2, f"memory_mib={hog_mib}", timeout=300)
    assert (refused["admit"], refused["broken"]) == (False, {V1: [NAME]}), refused
    assert refused["after"] == AT_RISK, refused
    state_args = (f"name={HOG}", f"config={cfg}", "admission=strict", "test=True")
    got = lab.salt(V2, "state.single", "xenha_domu.running", *state_args, timeout=300)[V2]
    (state,) = got.values()
    assert state["result"] is False, state
    assert f"losing {V1} would leave {NAME} unplaced" in state["comment"], state

    toolstack.xl(lab.hosts[V2], "create", "-p", str(cfg))
    try:
        risky = wait_n_plus_1(lab, AT_RISK, f"N+1 at risk with {hog_mib} MiB taken on {V2}")
        assert rows(risky) == {V1: f"at risk: {NAME}", V2: "ok", "ServDB": "-"}, risky["hosts"]
        assert free_mib(risky, V2) - reserve == WEB01_MIB - SHORT, risky["hosts"]
    finally:
        toolstack.xl(lab.hosts[V2], "destroy", HOG)

    again = wait_n_plus_1(lab, "ok", f"N+1 ok again once {HOG} was destroyed")
    assert rows(again) == {V1: "ok", V2: "ok", "ServDB": "-"}, again["hosts"]
