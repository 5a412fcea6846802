"""The shipped pillar (pillar/xenha) gives each VM host a beacon config the beacon accepts."""

import salt.config
import salt.pillar
import salt.utils.beacons
import xenha_hbproto as hb

from tests.support.saltconf import REPO

KEY = "a-shared-key-of-24-chars"


def compile_pillar(tmp_path, minion_id):
    secrets = tmp_path / "secrets" / "xenha" / "secrets.yaml"
    secrets.parent.mkdir(parents=True, exist_ok=True)
    secrets.write_text(f"heartbeat:\n  key: {KEY}\n")
    opts = salt.config.minion_config(None)
    opts.update(
        id=minion_id,
        file_client="local",
        root_dir=str(tmp_path),
        cachedir=str(tmp_path / "cache"),
        file_roots={"base": [str(tmp_path / "secrets")]},
        # a root listed first shadows pillar/xenha/secrets.yaml, as init.sls documents
        pillar_roots={"base": [str(tmp_path / "secrets"), str(REPO / "pillar")]},
    )
    pillar = salt.pillar.get_pillar(opts, {"id": minion_id}, minion_id).compile_pillar()
    assert "_errors" not in pillar, pillar["_errors"]
    return pillar


def test_vm_hosts_get_a_valid_beacon_and_storage_gets_none(tmp_path):
    configs = {}
    for minion_id in ("ServVirt1", "ServVirt2"):
        beacon = compile_pillar(tmp_path, minion_id)["beacons"]["xenha_heartbeat"]
        configs[minion_id] = hb.parse_config(salt.utils.beacons.list_to_dict(beacon))
    one, two = configs["ServVirt1"], configs["ServVirt2"]
    assert one["peers"] == {"ServVirt2": two["bind"]}
    assert two["peers"] == {"ServVirt1": one["bind"]}
    assert one["key"] == two["key"] == KEY
    assert one["port"] == two["port"]
    assert one["cluster"] == two["cluster"]
    assert "beacons" not in compile_pillar(tmp_path, "ServDB")
