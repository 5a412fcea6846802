"""
``Failover.update_domu`` (no root): a domU's extra pillar keys go to the run's own
``xenha/failover.yaml`` only, and into its shadow of ``xenha/cluster.yaml`` (the lab's own
with the same keys merged in, which ``pillar/xenha/init.sls`` derives the beacons from); the VM
hosts are told to read it.
"""

import pytest
import yaml

from lab.failover import Failover
from lab.hosts import LabError


class FakeLab:
    """What Failover reads of a lab: its run folder, its hosts, and salt calls (recorded)."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.cluster = {
            "hosts": {"ServVirt1": {"role": "vmhost"}, "ServDB": {"role": "storage"}},
            "ocfs2": {"cluster": "ocfs2", "mount_point": "/cluster"},
            "domus": {},
        }
        self.calls = []

    def salt(self, tgt, fun, *args, timeout=60):
        self.calls.append((tgt, fun, args))
        return {mid: True for mid in tgt}


def test_update_domu_sets_keys_in_the_runs_pillar_and_refreshes(tmp_path):
    lab = FakeLab(tmp_path)
    fo = Failover(lab)
    web01 = {"config": "/c/web01.cfg"}
    fo._write_pillar({"xenha": {"ocfs2": {"mount_point": "/run/x"}, "domus": {"web01": web01}}})
    fo.update_domu("web01", monitor={"restart": 2})
    data = yaml.safe_load(fo.pillar_file.read_text())
    monitored = {"web01": {"config": "/c/web01.cfg", "monitor": {"restart": 2}}}
    assert data["xenha"]["domus"] == monitored
    shadow = yaml.safe_load(fo.pillar_file.with_name("cluster.yaml").read_text())
    assert shadow == {
        "hosts": lab.cluster["hosts"],
        "ocfs2": {"cluster": "ocfs2", "mount_point": "/run/x"},
        "domus": monitored,
    }
    assert lab.cluster["domus"] == {}, "the lab's own cluster is left as it is"
    assert lab.calls == [(["ServVirt1"], "saltutil.refresh_pillar", ("wait=True",))]


def test_update_domu_of_an_unknown_domu_names_it(tmp_path):
    fo = Failover(FakeLab(tmp_path))
    fo._write_pillar({"xenha": {"domus": {}}})
    with pytest.raises(LabError, match="no domU 'db01'"):
        fo.update_domu("db01", monitor={})
