"""
Secrets per role: the shipped pillar tree (pillar/top.sls, pillar/xenha/init.sls and
cluster.yaml) compiled by Salt's own pillar compiler, as the master compiles it for each minion,
with a secrets.yaml that holds a marker in every secret. Each minion may see exactly the
markers of its role: a VM host the heartbeat keys, the migration keys and the CHAP secret; the
storage host the CHAP secret; a minion outside xenha:hosts nothing; nobody a BMC password.
"""

import json

import pytest
import salt.config
import salt.pillar
import xenha_pillarcheck
import yaml
from salt.exceptions import CommandExecutionError

from tests.support.saltconf import REPO

MARKERS = {
    "chap": "MARKER-chap-secret",
    "heartbeat": "MARKER-heartbeat-key",
    "heartbeat-previous": "MARKER-heartbeat-previous-key",
    "migration": "MARKER-migration-private-key",
    "ssl": "MARKER-xm-ssl-key",
    "bmc-ServVirt1": "MARKER-bmc-ServVirt1",
    "bmc-ServVirt2": "MARKER-bmc-ServVirt2",
}
SECRETS = {
    "storage": {"chap": {"secret": MARKERS["chap"]}},
    "heartbeat": {"key": MARKERS["heartbeat"], "previous_key": MARKERS["heartbeat-previous"]},
    "xen": {
        "ssh": {
            "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n"
            f"{MARKERS['migration']}\n-----END OPENSSH PRIVATE KEY-----\n",
            "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH4GzFVZfp9b3zECPFE xenha-migrate",
            "host_keys": {
                "ServVirt1": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtJz5OZqVmTGtlDwT4",
                "ServVirt2": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBd1yiv9ooCsbnkAkAc",
            },
        },
        "relocation": {"ssl_key": MARKERS["ssl"], "ssl_cert": "CERT"},
    },
    "hosts": {
        host: {"bmc": {"address": address, "username": "admin", "password": MARKERS[f"bmc-{host}"]}}
        for host, address in (("ServVirt1", "192.168.26.10"), ("ServVirt2", "192.168.26.11"))
    },
}
VMHOST_SEES = {"chap", "heartbeat", "heartbeat-previous", "migration", "ssl"}
SEES = {"ServVirt1": VMHOST_SEES, "ServVirt2": VMHOST_SEES, "ServDB": {"chap"}, "web9": set()}


def _without_bmc_passwords(secrets):
    out = json.loads(json.dumps(secrets))
    for host in out["hosts"].values():
        del host["bmc"]["password"]
    return out


@pytest.fixture(scope="module")
def compile_pillar(tmp_path_factory):
    """compile_pillar(minion_id, secrets): that minion's pillar, as the master compiles it
    from the shipped tree with ``secrets`` as xenha/secrets.yaml."""
    cache = {}

    def compile_for(minion_id, secrets=SECRETS):
        key = (minion_id, json.dumps(secrets, sort_keys=True))
        if key not in cache:
            root = tmp_path_factory.mktemp("pillar")
            (root / "xenha").mkdir()
            (root / "xenha" / "secrets.yaml").write_text(yaml.safe_dump(secrets))
            opts = salt.config.minion_config(None)
            opts.update(
                id=minion_id,
                file_client="local",
                root_dir=str(root),
                cachedir=str(root / "cache"),
                log_file=str(root / "minion.log"),
                file_roots={"base": [str(REPO / "salt")]},
                pillar_roots={"base": [str(root), str(REPO / "pillar")]},
            )
            pillar = salt.pillar.Pillar(opts, {"id": minion_id}, minion_id, "base")
            cache[key] = pillar.compile_pillar()
            assert "_errors" not in cache[key], cache[key]
        return cache[key]

    return compile_for


@pytest.mark.parametrize("minion", SEES)
def test_each_minion_sees_exactly_the_secrets_of_its_role(compile_pillar, minion):
    shown = json.dumps(compile_pillar(minion))
    seen = {name for name, marker in MARKERS.items() if marker in shown}
    assert seen == SEES[minion]


def test_a_minion_outside_the_cluster_gets_nothing_of_xenha(compile_pillar):
    assert compile_pillar("web9") == {}


def test_the_non_secret_bmc_settings_stay_and_the_password_is_named(compile_pillar):
    """The pillar keeps address and user name; a password given in it reaches no minion, and
    the check then says where it belongs."""
    tree = compile_pillar("ServDB")["xenha"]
    bmc = tree["hosts"]["ServVirt1"]["bmc"]
    assert bmc == {"address": "192.168.26.10", "username": "admin", "password": None}
    with pytest.raises(CommandExecutionError) as err:
        xenha_pillarcheck.check(tree, "ServDB")
    assert str(err.value) == (
        "xenha:hosts:ServVirt1:bmc:password: BMC passwords are not pillar data (every minion"
        " could read them): move it to xenha_bmc:ServVirt1:password in the master"
        " configuration (/etc/salt/master.d/xenha-bmc.conf, docs/pillar.md)"
    )


@pytest.mark.parametrize("minion", ["ServVirt1", "ServDB"])
def test_each_role_pillar_passes_the_check_of_its_role(compile_pillar, minion):
    tree = compile_pillar(minion, _without_bmc_passwords(SECRETS))["xenha"]
    cluster = xenha_pillarcheck.check(tree, minion)
    assert cluster["storage"]["chap"]["secret"] == MARKERS["chap"]
    assert cluster["hosts"]["ServVirt2"]["bmc"]["username"] == "admin"
    if minion == "ServDB":
        # what the storage host lacks is what the VM hosts' check requires
        with pytest.raises(CommandExecutionError, match=r"^xenha:xen:ssh:private_key: missing"):
            xenha_pillarcheck.check(tree, "ServVirt1")


def test_a_vm_host_gets_the_heartbeat_beacon_and_the_storage_host_does_not(compile_pillar):
    beacon = dict(kv for item in compile_pillar("ServVirt1")["beacons"]["xenha_heartbeat"]
                  for kv in item.items())  # fmt: skip
    assert beacon["key"] == MARKERS["heartbeat"]
    assert beacon["previous_key"] == MARKERS["heartbeat-previous"]
    assert beacon["peers"] == {"ServVirt2": "192.168.25.11"}
    assert "beacons" not in compile_pillar("ServDB")
