"""The pure sanlock helpers: pillar checks, the slot layout, and parsers fed with output
recorded from sanlock 3.8.5 in the lab (two hosts, web01 held by host 1, db01 by host 2)."""

import pytest
import xenha_sanlockcfg as cfg
from salt.exceptions import CommandExecutionError

PATH = "/srv/xenha/leases"
STATUS = f"""daemon A
p -1 helper
p -1 listener
p 28 
p -1 status
s xenha:1:{PATH}:0
r xenha:web01:{PATH}:1048576:1 p 28
"""  # noqa: W291  (sanlock prints "p 28 " for a client without a name)
GETS = f"""s xenha:1:{PATH}:0 
h 1 gen 1 timestamp 768 LIVE
h 2 gen 1 timestamp 768 LIVE
h 3 gen 2 timestamp 12 DEAD
"""  # noqa: W291
DUMP = """  offset                            lockspace                                         resource  timestamp  own  gen lver
00000000                                xenha                                                A 0000000770 0001 0001
00000512                                xenha                                                B 0000000771 0002 0001
01048576                                xenha                                            web01 0000000771 0001 0001 1
05242880                                xenha                                             db01 0000000771 0002 0001 1
"""  # noqa: E501


def tree(**sanlock):
    return {
        "sanlock": {"lease_path": PATH, **sanlock},
        "hosts": {
            "v1": {"role": "vmhost", "host_id": 1},
            "v2": {"role": "vmhost", "host_id": 2},
            "db": {"role": "storage"},
        },
        "domus": {"web01": {}, "db01": {}},
    }


def test_settings_defaults_and_host_ids():
    got = cfg.settings(tree(), "v2", device_size=65 << 20)
    assert got == {
        "lease_path": PATH,
        "io_timeout": 10,
        "slots": 64,
        "toolstack_path": None,
        "keeper_python": "/usr/bin/python3",
        "watchdog": "auto",
        "host_ids": {"v1": 1, "v2": 2},
        "host_id": 2,
        "init_host": "v1",
        "lease_lun": None,
    }
    assert cfg.settings(tree(), "db")["host_id"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sanlock": None}, "^xenha:sanlock: must be a mapping"),
        ({"lease_path": "leases"}, "^xenha:sanlock:lease_path: must be an absolute path"),
        ({"lease_path": "/dev/disk/by-id/a:b"}, "^xenha:sanlock:lease_path: must be an abs"),
        ({"lease_path": "/srv/../etc/x"}, "^xenha:sanlock:lease_path: must be an absolute"),
        ({"io_timeout": 0}, r"^xenha:sanlock:io_timeout: must be an integer from 1 to 255"),
        ({"io_timeout": 256}, "^xenha:sanlock:io_timeout: must be an integer from 1 to 255"),
        ({"io_timeout": "10"}, "^xenha:sanlock:io_timeout: must be an integer"),
        ({"io_timeout": True}, "^xenha:sanlock:io_timeout: must be an integer"),
        ({"slots": 1}, "^xenha:sanlock:slots: 1 slots cannot hold 2 domUs' leases"),
        ({"toolstack_path": "xl"}, "^xenha:sanlock:toolstack_path: must be an absolute"),
        ({"keeper_python": "/usr/bin/python 3"}, "^xenha:sanlock:keeper_python: must be"),
        ({"watchdog": "yes"}, "^xenha:sanlock:watchdog: must be one of auto, softdog, hardware"),
        ({"init_host": "db"}, "^xenha:sanlock:init_host: 'db' is not a VM host"),
        ({"init_host": ["v1"]}, r"^xenha:sanlock:init_host: \['v1'\] is not a VM host"),
        ({"init_host": None}, "^xenha:sanlock:init_host: None is not a VM host"),
        ({"lease_lun": "/dev/sdb"}, "^xenha:sanlock:lease_lun: must be a mapping"),
        ({"lease_lun": {}}, "^xenha:sanlock:lease_lun:backing_device: must be an absolute"),
        (
            {"lease_lun": {"backing_device": "/dev/sdb", "lun": 1}},
            "^xenha:sanlock:lease_lun:lun: 1 is xenha:storage:lun",
        ),
        (
            {"lease_lun": {"backing_device": "/dev/sdb", "lun": 0}},
            "^xenha:sanlock:lease_lun:lun: must be an integer from 1 to 255",
        ),
        (
            {"lease_lun": {"backing_device": "/dev/sdb", "size_mib": 64}},
            "^xenha:sanlock:lease_lun:size_mib: must be an integer from 65 to",
        ),
        (
            {"lease_lun": {"backing_device": "/dev/sda4"}},
            "^xenha:sanlock:lease_lun:backing_device: is xenha:storage:backing_device",
        ),
        (
            {"lease_lun": {"backing_device": "/dev/sdb"}, "lease_path": "/srv/leases"},
            "^xenha:sanlock:lease_path: /srv/leases must be a name under /dev/",
        ),
    ],
)
def test_settings_refuse_bad_sanlock_keys(change, message):
    data = tree()
    data["storage"] = {"implementation": "tgt", "lun": 1, "backing_device": "/dev/sda4"}
    if "sanlock" in change:
        data["sanlock"] = change["sanlock"]
    else:
        if "lease_lun" in change:  # a lease LUN brings its default lease_path
            del data["sanlock"]["lease_path"]
        data["sanlock"].update(change)
    with pytest.raises(CommandExecutionError, match=message):
        cfg.settings(data)


@pytest.mark.parametrize(
    ("host_id", "message"),
    [
        (None, "^xenha:hosts:v2:host_id: missing"),
        (0, "^xenha:hosts:v2:host_id: must be an integer from 1 to 2000, got 0"),
        (2001, "^xenha:hosts:v2:host_id: must be an integer from 1 to 2000"),
        (1, "^xenha:hosts:v2:host_id: 1 is also v1's: host_ids must be unique"),
    ],
)
def test_settings_refuse_bad_host_ids(host_id, message):
    data = tree()
    if host_id is None:
        del data["hosts"]["v2"]["host_id"]
    else:
        data["hosts"]["v2"]["host_id"] = host_id
    with pytest.raises(CommandExecutionError, match=message):
        cfg.settings(data)


def test_settings_lease_lun_defaults_and_init_host():
    data = tree(init_host="v2", lease_lun={"backing_device": "/srv/leases.img"})
    del data["sanlock"]["lease_path"]
    data["storage"] = {"implementation": "lio", "lun": 0}
    got = cfg.settings(data)
    assert got["lease_path"] == "/dev/xenha-leases"
    assert got["lease_lun"] == {"backing_device": "/srv/leases.img", "lun": 1, "size_mib": 65}
    assert got["init_host"] == "v2"
    data["sanlock"]["lease_lun"]["lun"] = 0  # LIO numbers from 0, but 0 is the OCFS2 LUN here
    with pytest.raises(CommandExecutionError, match="^xenha:sanlock:lease_lun:lun: 0 is"):
        cfg.settings(data)


def test_settings_refuse_a_lease_device_too_small():
    cfg.settings(tree(slots=4), device_size=5 << 20)
    with pytest.raises(CommandExecutionError, match=r"^xenha:sanlock:lease_path: .* need 5242880"):
        cfg.settings(tree(slots=4), device_size=(5 << 20) - 1)


def test_resource_names_fit_sanlock():
    assert cfg.resource_name("web01") == "web01"
    assert cfg.resource_name("a" * 48) == "a" * 48
    long = cfg.resource_name("a" * 64)
    assert len(long) == 48 and long.startswith("a" * 39 + "~")
    assert cfg.resource_name("a" * 63 + "b") != long
    with pytest.raises(CommandExecutionError, match="invalid domain name 'web:01'"):
        cfg.resource_name("web:01")


def test_probe_starts_at_a_stable_home_and_visits_every_slot():
    order = cfg.probe("web01", 16)
    assert sorted(order) == list(range(16))
    assert order == cfg.probe("web01", 16)
    assert order[1:] == [(order[0] + i) % 16 for i in range(1, 16)]


def test_plan_keeps_placed_slots_when_domus_are_added():
    first = cfg.plan(["web01", "db01"], {}, 8)
    used = {slot: name for name, slot in first.items()}
    more = cfg.plan(["web01", "db01", "mail", "dns", "proxy"], used, 8)
    assert set(more) == {"mail", "dns", "proxy"}
    used.update({slot: name for name, slot in more.items()})
    assert len(used) == 5
    for name, slot in {**first, **more}.items():
        assert cfg.find_slot(name, used, 8) == (slot, None)


def test_plan_probes_past_a_collision_and_lookup_checks_the_name():
    home = cfg.probe("web01", 4)[0]
    used = {home: "other"}
    (slot,) = cfg.plan(["web01"], used, 4).values()
    assert slot == (home + 1) % 4
    used[slot] = "web01"
    assert cfg.find_slot("web01", used, 4) == (slot, None)
    # a name that is not there stops at the first free slot of its path
    assert cfg.find_slot("nothere", {}, 4) == (None, cfg.probe("nothere", 4)[0])


def test_plan_refuses_a_full_area_and_a_changed_slot_count():
    full = {i: f"d{i}" for i in range(4)}
    with pytest.raises(CommandExecutionError, match="^xenha:sanlock:slots: no free slot left"):
        cfg.plan(["web01"], full, 4)
    home8 = cfg.probe("web01", 8)[0]
    other = (home8 + 3) % 8  # where a 4-slot or 16-slot layout may have put it
    with pytest.raises(CommandExecutionError, match="off its probe path for 8 slots"):
        cfg.plan(["web01"], {other: "web01"}, 8)


def test_offsets_and_sanlock_arguments():
    assert cfg.slot_offset(0) == 1 << 20
    assert cfg.offset_slot(5 << 20) == 4
    assert cfg.offset_slot(0) is None and cfg.offset_slot(512) is None
    assert cfg.lockspace_arg(2, PATH) == f"xenha:2:{PATH}:0"
    assert cfg.resource_arg("web01", PATH, 0) == f"xenha:web01:{PATH}:1048576"
    assert cfg.area_size(64) == 65 << 20


def test_parse_dump_and_used_slots():
    dump = cfg.parse_dump(DUMP)
    assert dump[512] == {
        "lockspace": "xenha",
        "resource": "B",
        "timestamp": 771,
        "owner_id": 2,
        "generation": 1,
        "lver": None,
        "shared": [],
        "shared_gen": {},
    }
    assert dump[5242880]["lver"] == 1
    assert cfg.used_slots(dump) == {0: "web01", 4: "db01"}
    assert cfg.lease_holders(dump[5242880]) == ("ex", [2])


# recorded after A converted its exclusive lease on db01 to shared and B took it shared too
DUMP_SHARED = """  offset                            lockspace                                         resource  timestamp  own  gen lver
00000000                                xenha                                                A 0000011311 0001 0001
01048576                                xenha                                            web01 0000000000 0000 0000 0
05242880                                xenha                                             db01 0000000000 0001 0001 1
                                                                                                          0001 0001 SH
                                                                                                          0002 0001 SH
"""  # noqa: E501


def test_parse_dump_reads_shared_holders_and_free_leases():
    dump = cfg.parse_dump(DUMP_SHARED)
    assert dump[5242880]["shared"] == [1, 2]
    assert cfg.lease_holders(dump[5242880]) == ("sh", [1, 2])
    assert cfg.lease_holders(dump[1048576]) == (None, [])
    assert dump[0]["shared"] == []


def test_parse_gets():
    spaces = cfg.parse_gets(GETS)
    space = spaces["xenha"]
    assert (space["host_id"], space["path"], space["offset"]) == (1, PATH, 0)
    assert space["hosts"] == {
        1: {"state": "live", "generation": 1, "timestamp": 768},
        2: {"state": "live", "generation": 1, "timestamp": 768},
        3: {"state": "dead", "generation": 2, "timestamp": 12},
    }


def test_parse_status():
    status = cfg.parse_status(STATUS)
    assert status == {
        "lockspaces": ["xenha"],
        "resources": {
            ("xenha", "web01"): {
                "path": PATH,
                "offset": 1048576,
                "lver": 1,
                "mode": "ex",
                "pid": 28,
            }
        },
    }
    shared = cfg.parse_status(f"s xenha:1:{PATH}:0\nr xenha:db01:{PATH}:5242880:SH p 31\n")
    assert shared["resources"][("xenha", "db01")] == {
        "path": PATH,
        "offset": 5242880,
        "lver": None,
        "mode": "sh",
        "pid": 31,
    }


def test_a_shared_lease_is_stale_once_every_holder_joined_again():
    """Seen in the nemesis: an evacuation's migration cut short by a power-off left db01 held
    shared by the reset source alone; nobody restarted it until the lease read as stale."""
    dump = cfg.parse_dump(DUMP_SHARED)
    db01 = dump[5242880]  # shared by host_ids 1 and 2, both in generation 1
    assert db01["shared_gen"] == {1: 1, 2: 1}
    dump[512] = {**dump[0], "resource": "B", "owner_id": 2}  # B's delta lease, generation 1
    assert not cfg.stale(db01, dump)
    dump[0] = {**dump[0], "generation": 2}  # A reset and joined again; B still in generation 1
    assert not cfg.stale(db01, dump)  # B may still complete the migration: not free
    dump[512] = {**dump[512], "generation": 3}  # B too
    assert cfg.stale(db01, dump)
    alone = {**db01, "shared": [1], "shared_gen": {1: 1}}  # the target let its share go
    dump[512] = {**dump[512], "generation": 1}
    assert cfg.stale(alone, dump)


def test_a_lease_is_stale_once_its_owner_joined_again_under_a_newer_generation():
    dump = cfg.parse_dump(DUMP)
    web01 = dump[1048576]  # owner host_id 1, generation 1; A's delta lease: generation 1
    assert not cfg.stale(web01, dump)
    dump[0] = {**dump[0], "generation": 2}  # A was reset and joined again
    assert cfg.stale(web01, dump)
    assert not cfg.stale({**web01, "timestamp": 0}, dump)  # released: free, not stale
    del dump[0]
    assert not cfg.stale(web01, dump)  # no delta lease to compare with: not stale
