"""xenha_pillar.sanlock, the formulas' way to the checked sanlock settings."""

import pytest
from salt.exceptions import CommandExecutionError

from _modules import xenha_pillar
from tests.unit.test_sanlockcfg import PATH, tree


@pytest.fixture(autouse=True)
def minion(monkeypatch):
    monkeypatch.setattr(xenha_pillar, "__opts__", {"id": "v2"}, raising=False)
    monkeypatch.setattr(xenha_pillar, "__pillar__", {"xenha": tree()}, raising=False)


def test_settings_of_this_minion():
    got = xenha_pillar.sanlock()
    assert (got["lease_path"], got["host_id"], got["init_host"]) == (PATH, 2, "v1")
    assert xenha_pillar.sanlock(minion_id="v1")["host_id"] == 1


def test_without_sanlock_only_the_optional_call_passes():
    data = tree()
    del data["sanlock"]
    assert xenha_pillar.sanlock(pillar={"xenha": data}, required=False) is None
    with pytest.raises(CommandExecutionError, match="^xenha:sanlock: must be a mapping"):
        xenha_pillar.sanlock(pillar={"xenha": data})


def test_a_bad_key_is_named_even_when_optional():
    data = tree(io_timeout=0)
    with pytest.raises(CommandExecutionError, match="^xenha:sanlock:io_timeout: "):
        xenha_pillar.sanlock(pillar={"xenha": data}, required=False)
