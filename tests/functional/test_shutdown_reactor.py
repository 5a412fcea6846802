"""
The shutdown drain's request through a real master running the shipped reactor
(etc/master.d/xenha.conf) against a stub ``xenha.evacuate`` runner that records its arguments:
a minion's ``xenha/shutdown/evacuate`` event evacuates that minion, whatever host its payload
names, as the drain's (``drain=True``: its maintenance is the one the host's return lifts).
"""

import shutil

import pytest

from tests.support import daemons
from tests.support.saltconf import REPO, snippet

MINION = "xenha-sd-a"

STUB_RUNNER = """
import json

def evacuate(host=None, drain=False, **kwargs):
    with open({calls!r}, "a") as fh:
        fh.write(json.dumps({{"host": host, "drain": drain}}) + "\\n")
    return True
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    path = tmp_path_factory.mktemp("shutdown")
    (path / "runners").mkdir()
    (path / "runners" / "xenha.py").write_text(STUB_RUNNER.format(calls=str(path / "calls")))
    (path / "srv").mkdir()  # no file_roots crawl: event.send is Salt's own
    return path


@pytest.fixture(scope="module")
def master(salt_factories, work):
    overrides = snippet("master")  # keeps the shipped reactor mapping
    overrides.pop("schedule", None)
    overrides["runner_dirs"] = [str(work / "runners")]
    overrides["file_roots"] = {"base": [str(work / "srv")]}
    overrides["pillar_roots"] = {"base": [str(REPO / "tests" / "functional" / "pillar")]}
    daemon = salt_factories.salt_master_daemon("xenha-sd-master", overrides=overrides)
    with daemon.started():
        yield daemon
    shutil.rmtree(daemon.config["root_dir"], ignore_errors=True)


@pytest.fixture(scope="module")
def minion(master):
    daemon = master.salt_minion_daemon(MINION, overrides=snippet("minion"))
    with daemon.started():
        yield daemon
    shutil.rmtree(daemon.config["root_dir"], ignore_errors=True)


def runner_calls(work):
    return daemons.runner_calls(work, "xenha.evacuate", timeout=60)


def test_a_shutdown_request_evacuates_its_sender_only(master, minion, work):
    payload = 'data={"id": "ServVirt9", "domus": ["db01"]}'  # a forged host in the payload
    ret = master.salt_cli(timeout=60).run(
        "event.send", "xenha/shutdown/evacuate", payload, minion_tgt=MINION
    )
    assert ret.returncode == 0 and ret.data is True, ret
    assert runner_calls(work) == [{"host": MINION, "drain": True}]
