"""
xenha_o2cb against the real ocfs2-tools, through Salt's loader (no daemons): cluster.conf
editing in a temp file, mkfs.ocfs2/tunefs.ocfs2/mounted.ocfs2/wipefs on image files and a loop
device. What needs the o2cb kernel stack (register-cluster, mount) is covered at the command
level by the unit tests.
"""

import shutil
import subprocess

import pytest
import salt.config
from salt.exceptions import CommandExecutionError
from saltfactories.utils.functional import Loaders

from tests.support.saltconf import REPO

pytestmark = pytest.mark.skipif(
    not shutil.which("o2cb") or not shutil.which("mkfs.ocfs2"), reason="needs ocfs2-tools"
)


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    root = tmp_path_factory.mktemp("o2cb-minion")
    conf = root / "minion"
    conf.write_text(
        "\n".join(
            [
                f"root_dir: {root}",
                "file_client: local",
                "id: o2cb-functional",
                f"module_dirs: [{REPO / '_modules'}]",
                f"states_dirs: [{REPO / '_states'}]",
                f"utils_dirs: [{REPO / '_utils'}]",
                f"file_roots: {{base: [{root / 'srv'}]}}",
                f"pillar_roots: {{base: [{root / 'pillar'}]}}",
                "",
            ]
        )
    )
    return Loaders(salt.config.minion_config(str(conf)))


@pytest.fixture
def mod(loaders):
    return loaders.modules.xenha_o2cb


@pytest.fixture
def conf(tmp_path):
    return str(tmp_path / "cluster.conf")  # absent: add-cluster creates it


def o2cb(conf, *args):
    return subprocess.run(
        ["o2cb", f"--config-file={conf}", *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def image(tmp_path):
    def make(name, size="64M"):
        path = tmp_path / name
        subprocess.run(["truncate", "-s", size, str(path)], check=True)
        return str(path)

    return make


# ---------------------------------------------------------------- cluster.conf


def test_cluster_conf_round_trip(mod, conf):
    assert mod.list_clusters(config_file=conf) == []
    assert mod.add_cluster("ocfs2", config_file=conf) is True
    assert mod.add_node("ocfs2", "ServVirt1", "192.168.25.10", number=0, config_file=conf) == {
        "number": 0,
        "ip": "192.168.25.10",
        "port": 7777,
    }
    # o2cb picks the lowest free number when none is given
    assert (
        mod.add_node("ocfs2", "ServVirt2", "192.168.25.11", port=7778, config_file=conf)["number"]
        == 1
    )
    assert mod.list_clusters(config_file=conf) == ["ocfs2"]
    assert mod.cluster_info("ocfs2", config_file=conf) == {
        "name": "ocfs2",
        "node_count": 2,
        "heartbeat_mode": "local",
        "nodes": {
            "ServVirt1": {"number": 0, "ip": "192.168.25.10", "port": 7777},
            "ServVirt2": {"number": 1, "ip": "192.168.25.11", "port": 7778},
        },
        "heartbeats": [],
    }
    assert mod.heartbeat_mode("ocfs2", "global", config_file=conf) == "global"
    assert "cluster: 2 global ocfs2" in o2cb(conf, "list-cluster", "ocfs2", "--oneline")
    assert mod.remove_node("ocfs2", "ServVirt1", config_file=conf) is True
    assert list(mod.list_nodes("ocfs2", config_file=conf)) == ["ServVirt2"]
    assert mod.remove_cluster("ocfs2", config_file=conf) is True
    assert mod.cluster_info("ocfs2", config_file=conf) is None


def test_o2cb_errors_surface(mod, conf):
    mod.add_cluster("ocfs2", config_file=conf)
    mod.add_node("ocfs2", "ServVirt1", "192.168.25.10", number=0, config_file=conf)
    # exit code 0 from o2cb, but an error all the same
    with pytest.raises(CommandExecutionError, match="Cluster 'ocfs2' already exists"):
        mod.add_cluster("ocfs2", config_file=conf)
    with pytest.raises(CommandExecutionError, match="'0' is in use"):
        mod.add_node("ocfs2", "ServVirt2", "192.168.25.11", number=0, config_file=conf)
    with pytest.raises(CommandExecutionError, match="Unknown node 'nobody'"):
        mod.remove_node("ocfs2", "nobody", config_file=conf)
    with pytest.raises(CommandExecutionError, match="'nope' is not defined"):
        mod.list_nodes("nope", config_file=conf)
    with pytest.raises(CommandExecutionError, match="invalid cluster name"):
        mod.add_cluster("no-dashes", config_file=conf)
    assert mod.list_clusters(config_file=conf) == ["ocfs2"]


def test_status_and_online_without_kernel_stack(mod, conf):
    """This kernel has no configfs/ocfs2: status says offline, online raises o2cb's reason."""
    mod.add_cluster("ocfs2", config_file=conf)
    status = mod.status("ocfs2", config_file=conf)
    assert status["online"] is False
    assert status["source"] == "o2cb cluster-status"
    with pytest.raises(CommandExecutionError, match="register-cluster ocfs2 failed.*cluster"):
        mod.online("ocfs2", config_file=conf)


# ---------------------------------------------------------------- states


def test_cluster_present_state(loaders, conf):
    nodes = {
        "ServVirt1": {"ip": "192.168.25.10", "number": 0},
        "ServVirt2": {"ip": "192.168.25.11", "number": 1},
    }
    state = loaders.states.xenha_o2cb
    dry = state.cluster_present(name="ocfs2", nodes=nodes, config_file=conf, test=True)
    assert dry.result is None
    assert "o2cb add-cluster ocfs2" in dry.comment
    assert o2cb(conf, "list-clusters") == ""

    first = state.cluster_present(name="ocfs2", nodes=nodes, config_file=conf)
    assert first.result is True
    assert set(first.changes["nodes"]) == {"ServVirt1", "ServVirt2"}
    assert o2cb(conf, "list-cluster", "ocfs2", "--oneline").splitlines() == [
        "node: 0 ServVirt1 192.168.25.10:7777 ocfs2",
        "node: 1 ServVirt2 192.168.25.11:7777 ocfs2",
        "cluster: 2 local ocfs2",
    ]

    second = state.cluster_present(name="ocfs2", nodes=nodes, config_file=conf)
    assert second.result is True
    assert second.changes == {}

    # ServVirt2 moves to another address: o2cb cannot edit, so remove + add
    moved = {**nodes, "ServVirt2": {"ip": "192.168.25.21", "number": 1}}
    third = state.cluster_present(name="ocfs2", nodes=moved, config_file=conf)
    assert third.result is True
    assert list(third.changes["nodes"]) == ["ServVirt2"]
    assert "node: 1 ServVirt2 192.168.25.21:7777 ocfs2" in o2cb(
        conf, "list-cluster", "ocfs2", "--oneline"
    )


def test_online_state_without_kernel_stack(loaders, conf):
    loaders.modules.xenha_o2cb.add_cluster("ocfs2", config_file=conf)
    state = loaders.states.xenha_o2cb
    dry = state.online(name="ocfs2", config_file=conf, test=True)
    assert dry.result is None
    assert "o2cb register-cluster ocfs2" in dry.comment
    real = state.online(name="ocfs2", config_file=conf)
    assert real.result is False
    assert "Unable to access cluster service" in real.comment
    assert real.changes == {}


def test_formatted_state_on_images(loaders, image):
    state = loaders.states.xenha_o2cb
    home = image("home.img", "256M")

    dry = state.formatted(name=home, label="cluster_home", slots=2, test=True)
    assert dry.result is None
    assert loaders.modules.xenha_o2cb.device_info(home)["content"] == "empty"

    first = state.formatted(name=home, label="cluster_home", slots=2)
    assert first.result is True, first.comment
    uuid = first.changes["formatted"]["uuid"]
    info = loaders.modules.xenha_o2cb.device_info(home)
    assert info["content"] == "ocfs2"
    assert info["label"] == "cluster_home"
    assert info["slots"] == 2
    assert info["cluster_size"] == 32768
    assert info["uuid"] == uuid

    second = state.formatted(name=home, label="cluster_home", slots=2)
    assert second.result is True
    assert second.changes == {}
    assert loaders.modules.xenha_o2cb.device_info(home)["uuid"] == uuid  # not reformatted

    relabel = state.formatted(name=home, label="other", slots=2)
    assert relabel.result is False
    assert "label 'cluster_home', not 'other'" in relabel.comment

    ext4 = image("ext4.img")
    subprocess.run(["mkfs.ext4", "-q", "-L", "data", ext4], check=True)
    refused = state.formatted(name=ext4, label="cluster_home", slots=2)
    assert refused.result is False
    assert "holds ext4, not OCFS2" in refused.comment
    assert loaders.modules.xenha_o2cb.device_info(ext4)["types"] == ["ext4"]


def test_format_refuses_ext4_with_an_ocfs2_superblock_copied_in(mod, image):
    home, mixed = image("home.img", "256M"), image("mixed.img")
    mod.format(home, "cluster_home", 2)
    subprocess.run(["mkfs.ext4", "-q", mixed], check=True)
    # the OCFS2 superblock lives in block 2 (4K blocks): tunefs.ocfs2 alone would call it OCFS2
    subprocess.run(
        ["dd", f"if={home}", f"of={mixed}", "bs=4096", "skip=2", "seek=2", "count=1",
         "conv=notrunc", "status=none"],
        check=True,
    )  # fmt: skip
    info = mod.device_info(mixed)
    assert info["content"] == "other"
    assert info["types"] == ["ext4", "ocfs2"]
    with pytest.raises(CommandExecutionError, match="refusing to format .*ext4, ocfs2"):
        mod.format(mixed, "cluster_home", 2)


# ---------------------------------------------------------------- mounted.ocfs2


def test_mounted_on_an_image_file(mod, image):
    home = image("home.img", "256M")
    formatted = mod.format(home, "cluster_home", 2)
    assert mod.mounted(home) == {
        home: {
            "stack": "o2cb",
            "cluster": None,
            "global_heartbeat": False,
            "uuid": formatted["uuid"],
            "label": "cluster_home",
            "mounted": False,
            "nodes": [],
        }
    }


@pytest.mark.root
def test_mounted_scan_finds_a_loop_device(mod, image):
    home = image("home.img", "256M")
    mod.format(home, "loopvol", 2)
    try:
        loop = subprocess.run(
            ["losetup", "--find", "--show", home], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"no loop devices here: {err}")
    try:
        volumes = mod.mounted()
        assert volumes[loop]["label"] == "loopvol"
        assert volumes[loop]["mounted"] is False
        assert mod.device_info(loop)["label"] == "loopvol"
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)


# ---------------------------------------------------------------- through a real minion


def test_synced_to_a_real_minion(salt_master, salt_minion, tmp_path):
    """The module and state as a stock minion gets them: saltutil.sync_all from the master."""
    conf = str(tmp_path / "cluster.conf")
    cli = salt_master.salt_cli(timeout=120)  # a loaded 2-core CI box is slow to answer
    nodes = '{"ServVirt1": {"ip": "192.168.25.10", "number": 0}}'
    args = ["xenha_o2cb.cluster_present", "name=ocfs2", f"nodes={nodes}", f"config_file={conf}"]
    first = cli.run("state.single", *args, minion_tgt=salt_minion.id)
    assert first.returncode == 0, first
    (result,) = first.data.values()
    assert result["result"] is True
    assert list(result["changes"]["nodes"]) == ["ServVirt1"]
    second = cli.run("state.single", *args, minion_tgt=salt_minion.id)
    (result,) = second.data.values()
    assert result["changes"] == {}
    listed = cli.run(
        "xenha_o2cb.list_nodes", "ocfs2", f"config_file={conf}", minion_tgt=salt_minion.id
    )
    assert listed.data == {"ServVirt1": {"number": 0, "ip": "192.168.25.10", "port": 7777}}
