"""A real salt-master and salt-minion serving this checkout through the shipped etc/ snippets."""

import pytest

from tests.support.daemons import synced_minion
from tests.support.saltconf import REPO, snippet


@pytest.fixture(scope="package")
def salt_master(salt_factories):
    overrides = snippet("master")
    overrides.pop("reactor", None)  # reactions are exercised by the failover tests
    overrides.pop("schedule", None)  # so is the scheduled failover_resume
    overrides["pillar_roots"] = {"base": [str(REPO / "tests" / "functional" / "pillar")]}
    # the failover test's BMC password: master configuration, as shipped (xenha-bmc.conf)
    overrides["xenha_bmc"] = {"xha-fo-a": {"password": "not-a-real-bmc"}}
    master = salt_factories.salt_master_daemon("xenha-func-master", overrides=overrides)
    with master.started():
        yield master


@pytest.fixture(scope="package")
def salt_minion(salt_master):
    with synced_minion(salt_master, "xenha-func-minion") as minion:
        yield minion
