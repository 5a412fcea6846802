"""Minion answers -> cluster snapshot (xenha_snapshot), and the preflight module's parsers."""

import importlib.util

import pytest
import xenha_placement
import xenha_snapshot

from tests.support.saltconf import REPO

CLUSTER = {
    "hosts": {
        "ServVirt1": {"hostname": "ServVirt1", "role": "vmhost", "memory_reserve_mib": 256},
        "ServVirt2": {"hostname": "ServVirt2", "role": "vmhost", "memory_reserve_mib": 256},
        "ServVirt3": {"hostname": "ServVirt3", "role": "vmhost"},
        "ServDB": {"hostname": "ServDB", "role": "storage"},
    },
    "domus": {
        "web01": {"memory_mib": 512, "priority": 100, "anti_affinity": ["db01"]},
        "db01": {"memory_mib": 768, "priority": 200, "preferred_host": "ServVirt2"},
        "idle01": {"memory_mib": 256},
    },
}


def report(free, total=4096, domus=None, version="4.17.3"):
    return {
        "info": {"free_memory_mib": free, "total_memory_mib": total, "xen_version": version},
        "info_error": None,
        "domains": {"dom0": {}, "domus": {n: {"memory_mib": m} for n, m in (domus or {}).items()}},
        "domains_error": None,
        "checks": {"clock": {"ok": True, "detail": "offset +0.000001 s"}},
    }


def test_hosts_states_and_memory():
    reports = {
        "ServVirt1": report(2000, domus={"web01": 512, "db01": 768}),
        "ServVirt2": report(3000),
        "ServVirt3": None,  # no answer
        "ServDB": {"info": None, "info_error": "no xl", "domains": None, "domains_error": "no xl"},
    }
    snap = xenha_snapshot.build(CLUSTER, reports, maintenance={"ServVirt2": {"since": 1}})
    hosts = snap["hosts"]
    assert {h: s["state"] for h, s in hosts.items()} == {
        "ServVirt1": "up",
        "ServVirt2": "maintenance",
        "ServVirt3": "down",
        "ServDB": "up",  # a storage host needs no toolstack
    }
    assert hosts["ServVirt1"]["free_memory_mib"] == 2000
    assert hosts["ServVirt1"]["memory_reserve_mib"] == 256
    # unset: the pillar check's default (what dom0-min-mem keeps), not 0; no domUs on storage
    assert hosts["ServVirt3"]["memory_reserve_mib"] == 256
    assert hosts["ServDB"]["memory_reserve_mib"] is None
    assert hosts["ServVirt2"]["maintenance"] is True
    assert hosts["ServDB"]["error"] is None
    assert hosts["ServVirt3"]["error"] == "no answer"
    assert snap["problems"] == [
        "host ServVirt3 is down: no answer",
        "domU idle01 is not running anywhere (no answer from ServVirt3)",
    ]

    domus = snap["domus"]
    assert domus["web01"]["host"] == "ServVirt1"
    assert domus["idle01"]["host"] is None and domus["idle01"]["state"] == "stopped"
    assert domus["db01"]["preferred_host"] == "ServVirt2"
    assert xenha_snapshot.on_host(snap, "ServVirt1") == ["db01", "web01"]
    assert xenha_snapshot.vmhosts(snap) == ["ServVirt1", "ServVirt2", "ServVirt3"]


def test_failover_marks_win_over_what_the_host_says():
    reports = {h: report(3000) for h in ("ServVirt1", "ServVirt2", "ServVirt3")}
    hoststate = {"ServVirt1": {"state": "fenced"}, "ServVirt2": {"state": "suspect"}}
    snap = xenha_snapshot.build(CLUSTER, reports, {"ServVirt1": {}}, hoststate)
    states = {h: s["state"] for h, s in snap["hosts"].items()}
    assert states["ServVirt1"] == "fenced"
    assert states["ServVirt2"] == "suspect"
    assert states["ServVirt3"] == "up"


def test_vmhost_without_toolstack_is_down_with_the_reason():
    broken = {**report(3000), "info": None, "info_error": "xenha_xen.info failed: xl: no"}
    snap = xenha_snapshot.build(CLUSTER, {"ServVirt1": broken})
    assert snap["hosts"]["ServVirt1"]["state"] == "down"
    assert snap["hosts"]["ServVirt1"]["error"] == "xenha_xen.info failed: xl: no"


def test_duplicate_domu_is_a_problem_and_never_planned():
    reports = {
        "ServVirt1": report(3000, domus={"web01": 512}),
        "ServVirt2": report(3000, domus={"web01": 512}),
    }
    snap = xenha_snapshot.build(CLUSTER, reports)
    web = snap["domus"]["web01"]
    assert web["host"] is None
    assert web["state"] == "DUPLICATE"
    assert web["running_on"] == ["ServVirt1", "ServVirt2"]
    assert "domU web01 runs on ServVirt1 and ServVirt2 at once" in snap["problems"]
    assert "web01" not in xenha_snapshot.on_host(snap, "ServVirt1")


@pytest.mark.parametrize(
    ("source_name", "target_name", "host"),
    [
        ("web01", "web01--incoming", "ServVirt1"),  # copying: the source is authoritative
        ("web01--migratedaway", "web01--incoming", "ServVirt1"),  # handshake
        ("web01--migratedaway", "web01", "ServVirt2"),  # the target took over
    ],
)
def test_mid_migration_is_migrating_not_duplicate(source_name, target_name, host):
    reports = {
        "ServVirt1": report(3000, domus={source_name: 512}),
        "ServVirt2": report(3000, domus={target_name: 512}),
    }
    snap = xenha_snapshot.build(CLUSTER, reports)
    web = snap["domus"]["web01"]
    assert web["migrating"] is True
    assert web["state"] == "migrating"
    assert web["host"] == host
    assert not [p for p in snap["problems"] if "web01" in p]


def test_unmanaged_domu_is_listed_with_its_memory():
    snap = xenha_snapshot.build(CLUSTER, {"ServVirt1": report(3000, domus={"stray": 300})})
    assert snap["domus"]["stray"]["managed"] is False
    assert snap["domus"]["stray"]["memory_mib"] == 300


def test_snapshot_feeds_the_planner():
    reports = {
        "ServVirt1": report(1000, domus={"web01": 512, "db01": 768, "idle01": 256}),
        "ServVirt2": report(1100),
        "ServVirt3": report(1156),
    }
    snap = xenha_snapshot.build(CLUSTER, reports, maintenance={"ServVirt1": {}})
    plan = xenha_placement.place(
        snap, xenha_snapshot.on_host(snap, "ServVirt1"), exclude=["ServVirt1"]
    )
    # db01 first (priority 200) on its preferred ServVirt2 (1100-256=844 MiB); web01 must avoid
    # db01 so it goes to ServVirt3 (1156 less the default 256 = 900); idle01 fits only where
    # 256 MiB are left: ServVirt3
    assert plan == {
        "placement": {"db01": "ServVirt2", "web01": "ServVirt3", "idle01": "ServVirt3"},
        "unplaced": {},
    }


# --- the preflight module's pure parsers --------------------------------------------------------


def _preflight():
    spec = importlib.util.spec_from_file_location(
        "xenha_preflight", REPO / "_modules" / "xenha_preflight.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRACKING = """Reference ID    : C0A8190C (192.168.25.12)
Stratum         : 3
Ref time (UTC)  : Thu Nov 26 08:00:00 2026
System time     : 0.000123456 seconds slow of NTP time
Last offset     : -0.000012345 seconds
RMS offset      : 0.000045678 seconds
Frequency       : 1.234 ppm fast
Leap status     : Normal
"""


def test_parse_tracking():
    pre = _preflight()
    assert pre.parse_tracking(TRACKING) == {"offset": -0.000123456, "leap": "Normal"}
    fast = TRACKING.replace("slow of", "fast of").replace("Normal", "Not synchronised")
    assert pre.parse_tracking(fast) == {"offset": 0.000123456, "leap": "Not synchronised"}
    with pytest.raises(ValueError, match="unrecognised chronyc tracking output"):
        pre.parse_tracking("506 Cannot talk to daemon")


def test_parse_sessions_and_mounts():
    pre = _preflight()
    text = (
        "tcp: [1] 192.168.25.12:3260,1 iqn.2009-06.br.example:storage.cluster (non-flash)\n"
        "tcp: [2] [fd00::12]:3260,1 iqn.2009-06.br.example:other (non-flash)\n"
    )
    assert pre.parse_sessions(text) == [
        {"portal": "192.168.25.12:3260", "target": "iqn.2009-06.br.example:storage.cluster"},
        {"portal": "[fd00::12]:3260", "target": "iqn.2009-06.br.example:other"},
    ]
    mounts = "/dev/sdc /cluster ocfs2 rw,relatime 0 0\n/dev/sdd /mnt/with\\040space ext4 rw 0 0\n"
    assert pre.parse_mounts(mounts) == {"/cluster": "ocfs2", "/mnt/with space": "ext4"}


def test_problems_name_every_failed_check_and_every_marked_host():
    bad = report(2000, domus={"web01": 512, "db01": 768, "idle01": 128})
    bad["checks"] = {
        "clock": {"ok": True, "detail": "offset +0.000001 s"},
        "iscsi": {"ok": False, "detail": "no iSCSI session"},
        "ocfs2": {"ok": True, "detail": "/cluster mounted (ocfs2)"},
    }
    reports = {"ServVirt1": bad, "ServVirt2": report(3000), "ServVirt3": report(3000)}
    reports["ServDB"] = {"info": None, "domains": None, "checks": {"clock": {"ok": False}}}
    hoststate = {"ServVirt2": {"state": "fenced"}, "ServVirt3": {"state": "suspect"}}
    snap = xenha_snapshot.build(CLUSTER, reports, hoststate=hoststate)
    assert snap["problems"] == [
        "host ServDB: clock: failed",
        "host ServVirt1: iscsi: no iSCSI session",
        "host ServVirt2 is fenced (failover)",
        "host ServVirt3 is suspect (failover)",
    ]


def test_an_unmanaged_domu_lost_with_its_host_is_named_from_its_last_answer():
    before = {"ServVirt1": report(2000, domus={"web01": 512, "scratch": 64}), "ServVirt2": None}
    last_seen = xenha_snapshot.seen(before, 1_796_000_000.0)
    assert last_seen == {"ServVirt1": {"time": 1_796_000_000.0, "domus": ["scratch", "web01"]}}
    now = {"ServVirt1": None, "ServVirt2": report(3000), "ServVirt3": report(3000)}
    now["ServDB"] = {"info": None, "domains": None, "checks": {}}
    snap = xenha_snapshot.build(CLUSTER, now, last_seen=last_seen)
    assert (
        "domU scratch (not in the pillar) was last seen on ServVirt1 at 2026-11-30 "
        "00:53:20 UTC; ServVirt1 does not answer"
    ) in snap["problems"]
    assert not any("web01 (not in the pillar)" in p for p in snap["problems"])  # it is managed
    assert "domU web01 is not running anywhere (no answer from ServVirt1)" in snap["problems"]
