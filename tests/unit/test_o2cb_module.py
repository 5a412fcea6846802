"""The xenha_o2cb execution module with Salt's cmd.run_all replaced by a scripted fake."""

import pytest
from salt.exceptions import CommandExecutionError

from _modules import xenha_o2cb as o2cb
from tests.unit.test_o2cb_parse import (
    INIT_OFFLINE,
    INIT_ONLINE,
    LIST_CLUSTER_GLOBAL,
    LIST_CLUSTER_LOCAL,
    MOUNTED_D,
    MOUNTED_F,
    TUNEFS,
    WIPEFS_EMPTY,
    WIPEFS_TWO,
)

CONF = "/etc/ocfs2/cluster.conf"
WIPEFS_OCFS2 = WIPEFS_TWO.replace('"ext4"', '"ignored"').split("},{")[1]
WIPEFS_OCFS2 = '{"signatures": [{' + WIPEFS_OCFS2
WIPEFS_EXT4 = WIPEFS_TWO.split("},{")[0] + "}]}"


class FakeRun:
    """cmd.run_all stand-in: answers argv prefixes with scripted results, records every call."""

    def __init__(self):
        self.answers = []
        self.calls = []
        self.envs = []

    def on(self, *prefix, stdout="", stderr="", retcode=0):
        """Answer commands starting with prefix; a list of stdouts is served one per call."""
        outputs = stdout if isinstance(stdout, list) else [stdout]
        self.answers.append((list(prefix), outputs, {"stderr": stderr, "retcode": retcode}))

    def __call__(self, argv, **kwargs):
        assert kwargs["python_shell"] is False
        assert isinstance(argv, list)
        self.calls.append(argv)
        self.envs.append(kwargs.get("env"))
        for prefix, outputs, ret in self.answers:
            if argv[: len(prefix)] == prefix:
                stdout = outputs.pop(0) if len(outputs) > 1 else outputs[0]
                return {"pid": 1, "stdout": stdout, **ret}
        raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def run():
    return FakeRun()


@pytest.fixture
def configure_loader_modules(run):
    return {o2cb: {"__salt__": {"cmd.run_all": run}}}


def o2cb_argv(*args, config=CONF):
    return ["o2cb", f"--config-file={config}", *args]


# ---------------------------------------------------------------- __virtual__


def test_virtual_names_missing_binaries(monkeypatch):
    monkeypatch.setattr(o2cb.salt.utils.path, "which", lambda name: None if "ocfs2" in name else 1)
    ok, why = o2cb.__virtual__()
    assert ok is False
    assert "mkfs.ocfs2, tunefs.ocfs2, mounted.ocfs2" in why


def test_virtual_loads_with_binaries(monkeypatch):
    monkeypatch.setattr(o2cb.salt.utils.path, "which", lambda name: f"/usr/sbin/{name}")
    assert o2cb.__virtual__() == "xenha_o2cb"


# ---------------------------------------------------------------- cluster.conf


def test_list_clusters(run):
    run.on(*o2cb_argv("list-clusters"), stdout="ocfs2\nlabclu")
    assert o2cb.list_clusters() == ["ocfs2", "labclu"]


def test_list_clusters_other_config_file(run):
    run.on(*o2cb_argv("list-clusters", config="/tmp/c.conf"), stdout="")
    assert o2cb.list_clusters(config_file="/tmp/c.conf") == []
    assert run.calls == [["o2cb", "--config-file=/tmp/c.conf", "list-clusters"]]


@pytest.mark.parametrize("path", ["relative.conf", "/tmp/a b.conf", "/tmp/x\n", 7])
def test_bad_config_file_runs_nothing(run, path):
    with pytest.raises(CommandExecutionError, match="invalid config_file"):
        o2cb.list_clusters(config_file=path)
    assert run.calls == []


def test_command_failure_names_command_and_stderr(run):
    message = "o2cb: Unknown code ____ 251 while loading cluster configuration file"
    run.on("o2cb", stderr=message, retcode=1)
    with pytest.raises(CommandExecutionError) as err:
        o2cb.list_clusters()
    assert f"o2cb --config-file={CONF} list-clusters" in str(err.value)
    assert "exit code 1" in str(err.value)
    assert message in str(err.value)


def test_unparseable_output_names_command(run):
    run.on("o2cb", stdout="what is this")
    with pytest.raises(CommandExecutionError, match="cannot parse the output of o2cb .*line 1"):
        o2cb.list_clusters()


def test_cluster_info(run):
    run.on(*o2cb_argv("list-cluster", "labclu", "--oneline"), stdout=LIST_CLUSTER_GLOBAL)
    assert o2cb.cluster_info("labclu") == {
        "name": "labclu",
        "node_count": 1,
        "heartbeat_mode": "global",
        "nodes": {"v1": {"number": 3, "ip": "10.99.0.10", "port": 7778}},
        "heartbeats": ["0123456789ABCDEF0123456789ABCDEF"],
    }


def test_cluster_info_unknown_cluster_is_none(run):
    # o2cb prints this on stderr and exits 0
    run.on("o2cb", stderr="o2cb: Unknown cluster 'nope'")
    assert o2cb.cluster_info("nope") is None


def test_cluster_info_without_cluster_line(run):
    run.on("o2cb", stdout="node: 0 a 10.0.0.1:7777 ocfs2\n")
    with pytest.raises(CommandExecutionError, match="printed no 'cluster: ... ocfs2' line"):
        o2cb.cluster_info("ocfs2")


def test_cluster_info_other_error_raises(run):
    run.on("o2cb", stderr="o2cb: Unknown code ____ 251 while loading", retcode=1)
    with pytest.raises(CommandExecutionError, match="251"):
        o2cb.cluster_info("ocfs2")


@pytest.mark.parametrize("name", ["has-dash", "a" * 17, "", None, "x y", "-c"])
def test_bad_cluster_name_runs_nothing(run, name):
    for call in (
        lambda: o2cb.cluster_info(name),
        lambda: o2cb.add_cluster(name),
        lambda: o2cb.remove_cluster(name),
        lambda: o2cb.add_node(name, "n", "10.0.0.1"),
        lambda: o2cb.remove_node(name, "n"),
        lambda: o2cb.heartbeat_mode(name),
        lambda: o2cb.status(name or "-"),  # None is allowed: the boot cluster
        lambda: o2cb.online(name),
    ):
        with pytest.raises(CommandExecutionError, match="invalid cluster name"):
            call()
    assert run.calls == []


def test_list_nodes(run):
    run.on("o2cb", stdout=LIST_CLUSTER_LOCAL)
    assert o2cb.list_nodes("ocfs2") == {
        "ServVirt1": {"number": 0, "ip": "192.168.25.10", "port": 7777},
        "ServVirt2": {"number": 1, "ip": "192.168.25.11", "port": 7777},
    }


def test_list_nodes_unknown_cluster(run):
    run.on("o2cb", stderr="o2cb: Unknown cluster 'nope'")
    with pytest.raises(CommandExecutionError, match=f"'nope' is not defined in {CONF}"):
        o2cb.list_nodes("nope")


def test_add_and_remove_cluster(run):
    run.on("o2cb")
    assert o2cb.add_cluster("ocfs2") is True
    assert o2cb.remove_cluster("ocfs2") is True
    assert run.calls == [o2cb_argv("add-cluster", "ocfs2"), o2cb_argv("remove-cluster", "ocfs2")]


def test_add_cluster_that_exists_raises(run):
    # o2cb exits 0 here: only stderr tells
    run.on("o2cb", stderr="o2cb: Cluster 'ocfs2' already exists")
    with pytest.raises(CommandExecutionError, match="already exists"):
        o2cb.add_cluster("ocfs2")


def test_remove_unknown_cluster_raises(run):
    run.on("o2cb", stderr="o2cb: Unknown cluster 'nope'", retcode=1)
    with pytest.raises(CommandExecutionError, match="remove-cluster nope failed"):
        o2cb.remove_cluster("nope")


def test_add_node(run):
    run.on(*o2cb_argv("add-node"))
    run.on(*o2cb_argv("list-cluster"), stdout=LIST_CLUSTER_LOCAL)
    node = o2cb.add_node("ocfs2", "ServVirt2", "192.168.25.11", number=1)
    assert node == {"number": 1, "ip": "192.168.25.11", "port": 7777}
    assert run.calls[0] == o2cb_argv(
        "add-node", "ocfs2", "ServVirt2", "--ip", "192.168.25.11", "--port", "7777",
        "--number", "1",
    )  # fmt: skip


def test_add_node_lets_o2cb_pick_the_number(run):
    run.on(*o2cb_argv("add-node"))
    run.on(*o2cb_argv("list-cluster"), stdout=LIST_CLUSTER_LOCAL)
    o2cb.add_node("ocfs2", "ServVirt1", "192.168.25.10", port="7777")
    assert "--number" not in run.calls[0]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": "bad name"}, "invalid host name"),
        ({"name": "a" * 40 + "." + "b" * 30}, "longer than 64"),
        ({"ip": "10.0.0.256"}, "invalid node IP"),
        ({"ip": "fe80::1"}, "invalid node IP"),
        ({"port": 0}, "invalid port"),
        ({"port": "http"}, "invalid port"),
        ({"port": True}, "invalid port"),
        ({"number": 255}, "invalid node number"),
        ({"number": -1}, "invalid node number"),
        ({"number": 1.5}, "invalid node number"),
    ],
)
def test_add_node_bad_input_runs_nothing(run, kwargs, problem):
    args = {"name": "n1", "ip": "10.0.0.1", **kwargs}
    with pytest.raises(CommandExecutionError, match=problem):
        o2cb.add_node("ocfs2", **args)
    assert run.calls == []


def test_add_node_taken_raises(run):
    run.on("o2cb", stderr="o2cb: Choose another node number as '1' is in use", retcode=1)
    with pytest.raises(CommandExecutionError, match="node number as '1' is in use"):
        o2cb.add_node("ocfs2", "n3", "10.0.0.3", number=1)


def test_remove_node(run):
    run.on("o2cb")
    assert o2cb.remove_node("ocfs2", "ServVirt2") is True
    assert run.calls == [o2cb_argv("remove-node", "ocfs2", "ServVirt2")]


def test_remove_unknown_node_raises(run):
    run.on("o2cb", stderr="o2cb: Unknown node 'zz'", retcode=1)
    with pytest.raises(CommandExecutionError, match="Unknown node 'zz'"):
        o2cb.remove_node("ocfs2", "zz")


def test_heartbeat_mode_get(run):
    run.on("o2cb", stdout=LIST_CLUSTER_LOCAL)
    assert o2cb.heartbeat_mode("ocfs2") == "local"
    assert len(run.calls) == 1


def test_heartbeat_mode_set(run):
    run.on(*o2cb_argv("heartbeat-mode"))
    run.on(*o2cb_argv("list-cluster"), stdout=LIST_CLUSTER_GLOBAL)
    assert o2cb.heartbeat_mode("labclu", "global") == "global"
    assert run.calls[0] == o2cb_argv("heartbeat-mode", "labclu", "global")


def test_heartbeat_mode_bad_mode_runs_nothing(run):
    with pytest.raises(CommandExecutionError, match="invalid mode 'disk'"):
        o2cb.heartbeat_mode("ocfs2", "disk")
    assert run.calls == []


# ---------------------------------------------------------------- cluster stack


@pytest.fixture
def init_script(tmp_path, monkeypatch):
    script = tmp_path / "o2cb"
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(o2cb, "INIT_SCRIPT", str(script))
    return str(script)


def test_status_from_init_script_online(run, init_script):
    run.on(init_script, stdout=INIT_ONLINE)
    status = o2cb.status("ocfs2")
    assert run.calls == [[init_script, "status", "ocfs2"]]
    # not redirected to "systemctl status o2cb" by Debian's LSB hook
    assert run.envs[-1]["SYSTEMCTL_SKIP_REDIRECT"] == "1"
    assert status["online"] is True
    assert status["heartbeat_active"] is True
    assert status["timeouts"]["heartbeat_dead_threshold"] == 31
    assert status["source"] == init_script


def test_status_from_init_script_offline_exit_0(run, init_script):
    run.on(init_script, stdout=INIT_OFFLINE, stderr="stat: cannot read '/dlm'")
    status = o2cb.status()
    assert run.calls == [[init_script, "status"]]
    assert status["online"] is False
    assert status["cluster"] == "ocfs2"


def test_status_init_script_without_cluster(run, init_script):
    run.on(init_script, stdout='Driver for "configfs": Not loaded', retcode=1)
    with pytest.raises(CommandExecutionError, match=r"status gave no cluster status"):
        o2cb.status()


def test_status_without_init_script_uses_cluster_status(run, monkeypatch):
    monkeypatch.setattr(o2cb, "INIT_SCRIPT", "/nonexistent/o2cb")
    run.on(
        *o2cb_argv("cluster-status", "ocfs2"),
        stdout="offline",
        stderr="o2cb: Unable to access cluster service while initializing the cluster",
        retcode=1,
    )
    status = o2cb.status("ocfs2")
    assert status["online"] is False
    assert status["cluster"] == "ocfs2"
    assert status["source"] == "o2cb cluster-status"


def test_status_with_config_file_uses_cluster_status(run, init_script):
    run.on("o2cb", stdout="Cluster 'ocfs2' is online")
    assert o2cb.status(config_file="/tmp/c.conf")["online"] is True
    assert run.calls == [["o2cb", "--config-file=/tmp/c.conf", "cluster-status"]]


def test_status_cluster_status_error(run, monkeypatch):
    monkeypatch.setattr(o2cb, "INIT_SCRIPT", "/nonexistent/o2cb")
    run.on("o2cb", stderr="o2cb: invalid option", retcode=2)
    with pytest.raises(CommandExecutionError, match="cluster-status failed"):
        o2cb.status()


def test_online_local(run):
    run.on(*o2cb_argv("list-cluster"), stdout=LIST_CLUSTER_LOCAL)
    run.on(*o2cb_argv("register-cluster"))
    assert o2cb.online("ocfs2") is True
    assert run.calls[-1] == o2cb_argv("register-cluster", "ocfs2")


def test_online_global_starts_heartbeat(run):
    run.on(*o2cb_argv("list-cluster"), stdout=LIST_CLUSTER_GLOBAL)
    run.on(*o2cb_argv("register-cluster"))
    run.on(*o2cb_argv("start-heartbeat"))
    o2cb.online("labclu")
    assert run.calls[1:] == [
        o2cb_argv("register-cluster", "labclu"),
        o2cb_argv("start-heartbeat", "labclu"),
    ]


def test_online_without_kernel_support_raises(run):
    run.on(*o2cb_argv("list-cluster"), stdout=LIST_CLUSTER_LOCAL)
    run.on(
        *o2cb_argv("register-cluster"),
        stderr="o2cb: Unable to access cluster service while initializing the cluster",
        retcode=1,
    )
    with pytest.raises(CommandExecutionError, match="register-cluster ocfs2 failed.*Unable"):
        o2cb.online("ocfs2")


def test_online_through_init_script_loads_then_onlines(run):
    run.on("/etc/init.d/o2cb", stdout='Registering O2CB cluster "ocfs2": OK')
    assert o2cb.online("ocfs2", init_script="/etc/init.d/o2cb") is True
    assert run.calls == [["/etc/init.d/o2cb", "load"], ["/etc/init.d/o2cb", "online", "ocfs2"]]


def test_online_through_init_script_failure_names_the_command(run):
    run.on("/etc/init.d/o2cb", "load")
    run.on("/etc/init.d/o2cb", "online", stdout="Setting cluster stack: Failed", retcode=1)
    with pytest.raises(CommandExecutionError, match=r"o2cb online ocfs2 failed.*Failed"):
        o2cb.online("ocfs2", init_script="/etc/init.d/o2cb")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"init_script": "o2cb; reboot"}, "invalid init_script"),
        ({"init_script": "/etc/init.d/o2cb", "config_file": "/tmp/c.conf"}, "invalid config_file"),
    ],
)
def test_online_through_init_script_refuses_bad_arguments(run, kwargs, problem):
    with pytest.raises(CommandExecutionError, match=problem):
        o2cb.online("ocfs2", **kwargs)
    assert run.calls == []


# ---------------------------------------------------------------- volumes


def test_mounted_merges_quick_and_full_detect(run):
    run.on("mounted.ocfs2", "-d", stdout=MOUNTED_D)
    run.on("mounted.ocfs2", "-f", stdout=MOUNTED_F)
    assert o2cb.mounted() == {
        "/dev/loop0": {
            "stack": "o2cb",
            "cluster": None,
            "global_heartbeat": False,
            "uuid": "a7485037-d798-40a1-98b3-4a5b1356dc3f",
            "label": "cluster_home",
            "mounted": False,
            "nodes": [],
        }
    }
    assert run.calls == [["mounted.ocfs2", "-d"], ["mounted.ocfs2", "-f"]]


def test_mounted_one_device(run):
    run.on("mounted.ocfs2", stdout="Device   Stack  Cluster  F  Nodes")
    assert o2cb.mounted("/dev/sdb") == {}
    assert run.calls[0] == ["mounted.ocfs2", "-d", "/dev/sdb"]


def test_mounted_bad_device_runs_nothing(run):
    with pytest.raises(CommandExecutionError, match="invalid device"):
        o2cb.mounted("sdb")
    assert run.calls == []


def test_mounted_failure(run):
    run.on(
        "mounted.ocfs2", stderr="mounted.ocfs2: I/O error while building partiton list", retcode=1
    )
    with pytest.raises(CommandExecutionError, match="mounted.ocfs2 -d failed"):
        o2cb.mounted()


@pytest.fixture
def device(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"")
    return str(path)


def test_device_info_empty(run, device):
    run.on("wipefs", stdout=WIPEFS_EMPTY)
    assert o2cb.device_info(device) == {
        "device": device,
        "types": [],
        "label": None,
        "uuid": None,
        "content": "empty",
    }
    assert run.calls == [["wipefs", "--no-act", "--json", device]]


def test_device_info_ocfs2(run, device):
    run.on("wipefs", stdout=WIPEFS_OCFS2)
    run.on("tunefs.ocfs2", stdout=TUNEFS)
    info = o2cb.device_info(device)
    assert info["content"] == "ocfs2"
    assert info["label"] == "cluster_home"
    assert info["slots"] == 2
    assert run.calls[1] == ["tunefs.ocfs2", "-Q", o2cb.parse.TUNEFS_QUERY, device]


def test_device_info_other_filesystem(run, device):
    run.on("wipefs", stdout=WIPEFS_EXT4)
    info = o2cb.device_info(device)
    assert info["content"] == "other"
    assert info["types"] == ["ext4"]
    assert info["label"] == "data"


def test_device_info_ocfs2_mixed_with_ext4_is_other(run, device):
    run.on("wipefs", stdout=WIPEFS_TWO)
    info = o2cb.device_info(device)
    assert info["content"] == "other"
    assert info["types"] == ["ext4", "ocfs2"]
    assert len(run.calls) == 1


def test_device_info_missing_device(run, tmp_path):
    with pytest.raises(CommandExecutionError, match="does not exist"):
        o2cb.device_info(str(tmp_path / "nothing"))
    assert run.calls == []


def test_device_info_wipefs_failure(run, device):
    run.on("wipefs", stderr="wipefs: error: probing initialization failed", retcode=1)
    with pytest.raises(CommandExecutionError, match="wipefs --no-act --json .* failed"):
        o2cb.device_info(device)


def test_device_info_tunefs_error_with_exit_0(run, device):
    run.on("wipefs", stdout=WIPEFS_OCFS2)
    run.on("tunefs.ocfs2", stderr="tunefs.ocfs2: Device name specified was not found")
    with pytest.raises(CommandExecutionError, match="Device name specified was not found"):
        o2cb.device_info(device)


def test_format_empty_device(run, device):
    run.on("wipefs", stdout=[WIPEFS_EMPTY, WIPEFS_OCFS2])
    run.on("mkfs.ocfs2", stdout="mkfs.ocfs2 successful")
    run.on("tunefs.ocfs2", stdout=TUNEFS)
    info = o2cb.format_(device, "cluster_home", 2)
    assert info["content"] == "ocfs2"
    assert info["label"] == "cluster_home"
    assert [argv[0] for argv in run.calls] == ["wipefs", "mkfs.ocfs2", "wipefs", "tunefs.ocfs2"]
    assert run.calls[1] == [
        "mkfs.ocfs2", "--fs-feature-level=max-compat", "-b", "4K", "-C", "32K", "-N", "2",
        "-L", "cluster_home", device,
    ]  # fmt: skip


def test_format_options(run, device):
    run.on("wipefs", stdout=[WIPEFS_EMPTY, WIPEFS_OCFS2])
    run.on("mkfs.ocfs2")
    run.on("tunefs.ocfs2", stdout=TUNEFS)
    o2cb.format_(device, "v", "4", cluster_size="1M", block_size=512, feature_level="default")
    assert run.calls[1][1:8] == ["--fs-feature-level=default", "-b", "512", "-C", "1M", "-N", "4"]


@pytest.mark.parametrize("wipefs", [WIPEFS_OCFS2, WIPEFS_EXT4, WIPEFS_TWO])
def test_format_refuses_a_device_with_a_signature(run, device, wipefs):
    run.on("wipefs", stdout=wipefs)
    run.on("tunefs.ocfs2", stdout=TUNEFS)
    with pytest.raises(CommandExecutionError, match=f"refusing to format {device}: it holds"):
        o2cb.format_(device, "cluster_home", 2)
    assert not [argv for argv in run.calls if argv[0] == "mkfs.ocfs2"]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"label": "two words"}, "invalid label"),
        ({"label": ""}, "invalid label"),
        ({"label": "x" * 64}, "invalid label"),
        ({"slots": 0}, "invalid slots"),
        ({"slots": 256}, "invalid slots"),
        ({"cluster_size": "3K"}, "invalid cluster_size"),
        ({"block_size": "8K"}, "invalid block_size"),
        ({"feature_level": "newest"}, "invalid feature_level"),
        ({"device": "-L"}, "invalid device"),
    ],
)
def test_format_bad_input_runs_nothing(run, device, kwargs, problem):
    args = {"device": device, "label": "cluster_home", "slots": 2, **kwargs}
    with pytest.raises(CommandExecutionError, match=problem):
        o2cb.format_(**args)
    assert run.calls == []


def test_format_mkfs_failure(run, device):
    run.on("wipefs", stdout=WIPEFS_EMPTY)
    run.on("mkfs.ocfs2", stderr="mkfs.ocfs2: Could not open device", retcode=1)
    with pytest.raises(CommandExecutionError, match="mkfs.ocfs2 .* failed.*Could not open"):
        o2cb.format_(device, "cluster_home", 2)
