"""The xenha_o2cb states over an in-memory stand-in for the xenha_o2cb execution module."""

import copy
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from salt.exceptions import CommandExecutionError

from _states import xenha_o2cb as states

NODES = {
    "ServVirt1": {"ip": "192.168.25.10", "number": 0},
    "ServVirt2": {"ip": "192.168.25.11", "number": 1, "port": 7777},
}


class FakeO2cb:
    """cluster.conf in a dict, with the module's semantics (and o2cb's refusals)."""

    def __init__(self):
        self.clusters = {}
        self.calls = []
        self.fail_on = None

    def _log(self, name, *args):
        self.calls.append((name, *args))
        if self.fail_on == name:
            raise CommandExecutionError(f"o2cb {name} failed: boom")

    def cluster_info(self, cluster, config_file=None):
        info = self.clusters.get(cluster)
        return copy.deepcopy({"name": cluster, **info}) if info else None

    def add_cluster(self, cluster, config_file=None):
        self._log("add_cluster", cluster)
        assert cluster not in self.clusters
        self.clusters[cluster] = {"heartbeat_mode": "local", "nodes": {}, "heartbeats": []}
        return True

    def add_node(self, cluster, name, ip, *, port=7777, number=None, config_file=None):
        self._log("add_node", cluster, name, ip, port, number)
        nodes = self.clusters[cluster]["nodes"]
        assert name not in nodes
        assert number not in [node["number"] for node in nodes.values()]
        nodes[name] = {"number": number, "ip": ip, "port": port}
        return nodes[name]

    def remove_node(self, cluster, name, config_file=None):
        self._log("remove_node", cluster, name)
        del self.clusters[cluster]["nodes"][name]
        return True

    def heartbeat_mode(self, cluster, mode=None, config_file=None):
        self._log("heartbeat_mode", cluster, mode)
        self.clusters[cluster]["heartbeat_mode"] = mode
        return mode

    def salt(self):
        return {
            f"xenha_o2cb.{name}": getattr(self, name)
            for name in ("cluster_info", "add_cluster", "add_node", "remove_node", "heartbeat_mode")
        }


@pytest.fixture
def fake():
    return FakeO2cb()


@pytest.fixture
def opts():
    return {"test": False}


@pytest.fixture
def configure_loader_modules(fake, opts):
    return {states: {"__salt__": fake.salt(), "__opts__": opts}}


def test_virtual_needs_the_module():
    assert states.__virtual__() == "xenha_o2cb"
    states.__salt__.clear()
    assert states.__virtual__()[0] is False


# ---------------------------------------------------------------- cluster_present


def test_cluster_present_creates_then_changes_nothing(fake):
    ret = states.cluster_present("ocfs2", NODES)
    assert ret["result"] is True
    assert ret["changes"]["cluster"] == {"old": None, "new": "present"}
    assert ret["changes"]["nodes"]["ServVirt1"] == {
        "old": None,
        "new": {"number": 0, "ip": "192.168.25.10", "port": 7777},
    }
    assert ret["changes"]["heartbeat_mode"] == {"old": None, "new": "local"}
    assert ret["comment"].startswith("Ran: o2cb add-cluster ocfs2; o2cb add-node ocfs2 ServVirt1")
    again = states.cluster_present("ocfs2", NODES)
    assert again == {
        "name": "ocfs2",
        "changes": {},
        "result": True,
        "comment": "OCFS2 cluster ocfs2 is configured as wanted",
    }


def test_cluster_present_test_mode_changes_nothing(fake, opts):
    opts["test"] = True
    ret = states.cluster_present("ocfs2", NODES, heartbeat_mode="global")
    assert ret["result"] is None
    assert ret["comment"] == (
        "Would run: o2cb add-cluster ocfs2; o2cb heartbeat-mode ocfs2 global;"
        " o2cb add-node ocfs2 ServVirt1 --ip 192.168.25.10 --port 7777 --number 0;"
        " o2cb add-node ocfs2 ServVirt2 --ip 192.168.25.11 --port 7777 --number 1"
    )
    assert ret["changes"]["heartbeat_mode"] == {"old": None, "new": "global"}
    assert fake.calls == []
    assert fake.clusters == {}


def test_cluster_present_fixes_nodes_by_remove_and_add(fake):
    states.cluster_present("ocfs2", {**NODES, "Old": {"ip": "192.168.25.99", "number": 2}})
    fake.calls.clear()
    wanted = {
        "ServVirt1": {"ip": "192.168.25.10", "number": 1},  # swaps numbers with ServVirt2
        "ServVirt2": {"ip": "192.168.25.12", "number": 0},
    }
    ret = states.cluster_present("ocfs2", wanted)
    assert ret["result"] is True
    # removals first, so the numbers are free when the nodes come back
    assert fake.calls == [
        ("remove_node", "ocfs2", "Old"),
        ("remove_node", "ocfs2", "ServVirt1"),
        ("remove_node", "ocfs2", "ServVirt2"),
        ("add_node", "ocfs2", "ServVirt2", "192.168.25.12", 7777, 0),
        ("add_node", "ocfs2", "ServVirt1", "192.168.25.10", 7777, 1),
    ]
    assert ret["changes"]["nodes"]["Old"]["new"] is None
    assert ret["changes"]["nodes"]["ServVirt2"]["old"]["ip"] == "192.168.25.11"
    assert states.cluster_present("ocfs2", wanted)["changes"] == {}


def test_cluster_present_heartbeat_mode(fake):
    states.cluster_present("ocfs2", NODES)
    ret = states.cluster_present("ocfs2", NODES, heartbeat_mode="global")
    assert ret["changes"] == {"heartbeat_mode": {"old": "local", "new": "global"}}
    assert fake.calls[-1] == ("heartbeat_mode", "ocfs2", "global")


def test_cluster_present_reports_partial_failure(fake):
    fake.fail_on = "add_node"
    ret = states.cluster_present("ocfs2", NODES)
    assert ret["result"] is False
    assert "add-node ocfs2 ServVirt1" in ret["comment"]
    assert "after running o2cb add-cluster ocfs2" in ret["comment"]
    assert "boom" in ret["comment"]
    # what really changed: the cluster, no nodes
    assert ret["changes"] == {
        "cluster": {"old": None, "new": "present"},
        "heartbeat_mode": {"old": None, "new": "local"},
    }


@pytest.mark.parametrize(
    ("name", "nodes", "mode", "problem"),
    [
        ("bad-name", NODES, "local", "invalid cluster name"),
        ("ocfs2", ["ServVirt1"], "local", "nodes must be a mapping"),
        ("ocfs2", {"bad name": {"ip": "10.0.0.1", "number": 0}}, "local", "invalid host name"),
        ("ocfs2", {"a": {"ip": "10.0.0.1"}}, "local", "needs 'ip' and 'number'"),
        ("ocfs2", {"a": {"ip": "10.0.0.1", "number": 0, "nmbr": 1}}, "local", "unknown keys"),
        ("ocfs2", {"a": {"ip": "10.0.0.1", "number": 255}}, "local", "number 255"),
        ("ocfs2", {"a": {"ip": "10.0.0.01", "number": 0}}, "local", "not an IPv4 address"),
        ("ocfs2", {"a": {"ip": "10.0.0.1", "number": 0, "port": "x"}}, "local", "port 'x'"),
        (
            "ocfs2",
            {"a": {"ip": "10.0.0.1", "number": 0}, "b": {"ip": "10.0.0.2", "number": 0}},
            "local",
            "node numbers must be unique",
        ),
        ("ocfs2", NODES, "disk", "invalid heartbeat_mode"),
    ],
)
def test_cluster_present_bad_input(fake, name, nodes, mode, problem):
    ret = states.cluster_present(name, nodes, heartbeat_mode=mode)
    assert ret["result"] is False
    assert problem in ret["comment"]
    assert fake.calls == []


# ---------------------------------------------------------------- online


def _status(online):
    return {"cluster": "ocfs2", "online": online}


def test_online_already():
    calls = []
    states.__salt__["xenha_o2cb.status"] = lambda name, config_file=None: _status(True)
    states.__salt__["xenha_o2cb.online"] = lambda *a, **k: calls.append(a)
    ret = states.online("ocfs2")
    assert ret["result"] is True
    assert ret["changes"] == {}
    assert calls == []


def test_online_test_mode(opts):
    opts["test"] = True
    states.__salt__["xenha_o2cb.status"] = lambda name, config_file=None: _status(False)
    ret = states.online("ocfs2")
    assert ret["result"] is None
    assert "o2cb register-cluster ocfs2" in ret["comment"]
    assert ret["changes"] == {"online": {"old": False, "new": True}}


def test_online_brings_up():
    answers = iter([_status(False), _status(True)])
    calls = []
    states.__salt__["xenha_o2cb.status"] = lambda name, config_file=None: next(answers)
    states.__salt__["xenha_o2cb.online"] = lambda name, config_file=None: calls.append(name)
    ret = states.online("ocfs2")
    assert ret["result"] is True
    assert ret["changes"] == {"online": {"old": False, "new": True}}
    assert calls == ["ocfs2"]


def test_online_still_offline_after_register():
    states.__salt__["xenha_o2cb.status"] = lambda name, config_file=None: _status(False)
    states.__salt__["xenha_o2cb.online"] = lambda name, config_file=None: True
    ret = states.online("ocfs2")
    assert ret["result"] is False
    assert "still offline" in ret["comment"]


def test_online_failure():
    def refuse(name, config_file=None):
        raise CommandExecutionError("o2cb register-cluster ocfs2 failed: Unable to access")

    states.__salt__["xenha_o2cb.status"] = lambda name, config_file=None: _status(False)
    states.__salt__["xenha_o2cb.online"] = refuse
    ret = states.online("ocfs2")
    assert ret["result"] is False
    assert "Unable to access" in ret["comment"]


def test_online_through_init_script(opts):
    answers = iter([_status(False), _status(True)])
    calls = []
    states.__salt__["xenha_o2cb.status"] = lambda name, config_file=None: next(answers)
    states.__salt__["xenha_o2cb.online"] = lambda name, **kwargs: calls.append((name, kwargs))
    ret = states.online("ocfs2", init_script="/etc/init.d/o2cb")
    assert ret["result"] is True
    assert calls == [("ocfs2", {"config_file": None, "init_script": "/etc/init.d/o2cb"})]
    opts["test"] = True
    states.__salt__["xenha_o2cb.status"] = lambda name, config_file=None: _status(False)
    ret = states.online("ocfs2", init_script="/etc/init.d/o2cb")
    assert ret["result"] is None
    assert ret["comment"] == "Would run: /etc/init.d/o2cb load; /etc/init.d/o2cb online ocfs2"


# ---------------------------------------------------------------- formatted

OCFS2 = {"device": "/dev/sdb", "types": ["ocfs2"], "content": "ocfs2", "label": "cluster_home",
         "uuid": "a7485037-d798-40a1-98b3-4a5b1356dc3f", "slots": 2}  # fmt: skip
EMPTY = {"device": "/dev/sdb", "types": [], "content": "empty", "label": None, "uuid": None}
EXT4 = {"device": "/dev/sdb", "types": ["ext4"], "content": "other", "label": "d", "uuid": None}


@pytest.fixture
def formats():
    calls = []

    def fake_format(device, label, slots, **kwargs):
        calls.append((device, label, slots, kwargs))
        return OCFS2

    states.__salt__["xenha_o2cb.format"] = fake_format
    return calls


def device_is(info):
    states.__salt__["xenha_o2cb.device_info"] = lambda device: info


def test_formatted_formats_an_empty_device(formats):
    device_is(EMPTY)
    ret = states.formatted("/dev/sdb", "cluster_home", 2)
    assert ret["result"] is True
    assert ret["changes"]["formatted"]["uuid"] == OCFS2["uuid"]
    assert formats == [
        (
            "/dev/sdb",
            "cluster_home",
            2,
            {"cluster_size": "32K", "block_size": "4K", "feature_level": "max-compat"},
        )
    ]


def test_formatted_test_mode(formats, opts):
    opts["test"] = True
    device_is(EMPTY)
    ret = states.formatted("/dev/sdb", "cluster_home", 2)
    assert ret["result"] is None
    assert ret["comment"].startswith("Would format /dev/sdb as OCFS2")
    assert ret["changes"]["formatted"]["label"] == "cluster_home"
    assert formats == []


@pytest.mark.parametrize("test", [False, True])
def test_formatted_ocfs2_with_the_label_is_left_alone(formats, opts, test):
    opts["test"] = test
    device_is(OCFS2)
    ret = states.formatted("/dev/sdb", "cluster_home", 2)
    assert ret == {
        "name": "/dev/sdb",
        "changes": {},
        "result": True,
        "comment": "/dev/sdb holds OCFS2 labelled cluster_home",
    }
    assert formats == []


@pytest.mark.parametrize(
    ("info", "label", "slots", "problem"),
    [
        (EXT4, "cluster_home", 2, "holds ext4, not OCFS2: refusing to format"),
        (OCFS2, "other_label", 2, "label 'cluster_home', not 'other_label'"),
        (OCFS2, "cluster_home", 4, "2 node slots, fewer than 4"),
    ],
)
def test_formatted_refuses(formats, info, label, slots, problem):
    device_is(info)
    ret = states.formatted("/dev/sdb", label, slots)
    assert ret["result"] is False
    assert problem in ret["comment"]
    assert ret["changes"] == {}
    assert formats == []


def test_formatted_bad_slots(formats):
    device_is(EMPTY)
    ret = states.formatted("/dev/sdb", "cluster_home", "2")
    assert ret["result"] is False
    assert "slots '2'" in ret["comment"]


def test_formatted_module_error(formats):
    def broken(device):
        raise CommandExecutionError("device '/dev/sdz' does not exist")

    states.__salt__["xenha_o2cb.device_info"] = broken
    ret = states.formatted("/dev/sdz", "cluster_home", 2)
    assert ret["result"] is False
    assert "does not exist" in ret["comment"]


# ---------------------------------------------------------------- property: any start converges

_node_sets = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.fixed_dictionaries(
        {
            "number": st.integers(0, 5),
            "ip": st.sampled_from(["10.0.0.1", "10.0.0.2"]),
            "port": st.sampled_from([7777, 7778]),
        }
    ),
).filter(lambda nodes: len({n["number"] for n in nodes.values()}) == len(nodes))


@settings(deadline=None)
@given(
    start=st.none() | _node_sets,
    wanted=_node_sets,
    modes=st.tuples(st.sampled_from(["local", "global"]), st.sampled_from(["local", "global"])),
)
def test_cluster_present_converges_from_any_start(start, wanted, modes):
    """Whatever cluster.conf holds, one run reaches the wanted nodes without ever asking o2cb
    for a taken name or number (FakeO2cb asserts that), and a second run changes nothing."""
    fake = FakeO2cb()
    if start is not None:
        fake.clusters["ocfs2"] = {"heartbeat_mode": modes[0], "nodes": start, "heartbeats": []}
    with patch.dict(states.__salt__, fake.salt()), patch.dict(states.__opts__, {"test": False}):
        ret = states.cluster_present("ocfs2", wanted, heartbeat_mode=modes[1])
        assert ret["result"] is True, ret["comment"]
        assert fake.clusters["ocfs2"]["nodes"] == wanted
        assert fake.clusters["ocfs2"]["heartbeat_mode"] == modes[1]
        assert states.cluster_present("ocfs2", wanted, heartbeat_mode=modes[1])["changes"] == {}
