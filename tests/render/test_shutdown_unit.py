"""The shutdown drain's systemd unit, rendered through real Salt for the three OS families."""

import pytest

from tests.render.conftest import FAMILIES
from tests.render.test_render import lines, show


@pytest.mark.parametrize("family", FAMILIES)
def test_vm_hosts_get_a_unit_that_drains_on_stop(highstate, family):
    rendered = highstate(family, "ServVirt1")
    unit = rendered["xenha-shutdown-file-managed-unit"][1]
    assert unit["name"] == "/etc/systemd/system/xenha-shutdown.service"
    text = lines(unit["contents"])
    assert "ExecStop=/usr/bin/salt-call --retcode-passthrough xenha_shutdown.drain" in text
    assert {"Type=oneshot", "RemainAfterExit=yes", "WantedBy=multi-user.target"} <= set(text)
    assert "TimeoutStopSec=660" in text  # the default shutdown_timeout 600 s, plus 60 s
    # the start at boot says the host is back, bounded, and never fails the unit: a unit that
    # did not start would not be stopped, and its stop is the drain
    assert (
        "ExecStart=-/usr/bin/timeout -k 10 60 /usr/bin/salt-call --retcode-passthrough"
        " xenha_shutdown.back"
    ) in text
    # stopped in reverse start order: the drain runs while these still run
    (after,) = [line for line in text if line.startswith("After=")]
    for needed in ("network-online.target", "salt-minion.service", "xendomains.service"):
        assert needed in after.split("=", 1)[1].split()
    fun, service = rendered["xenha-shutdown-service-running"]
    assert (fun, service["name"], service["enable"]) == ("service.running", "xenha-shutdown", True)
    assert {"file": "xenha-shutdown-file-managed-unit"} in service["watch"]
    assert "xenha-shutdown-file-managed-unit" not in highstate(family, "ServDB")


def test_the_pillars_policy_and_timeout_shape_the_unit(salt_call):
    failover = {"failover": {"shutdown_policy": "freeze", "shutdown_timeout": 120}}
    rendered = show(salt_call, "ServVirt2", "Debian", "xenha.shutdown", xenha=failover)
    contents = rendered["xenha-shutdown-file-managed-unit"][1]["contents"]
    assert "TimeoutStopSec=180" in lines(contents)
    assert "xenha:failover:shutdown_policy\n# freeze;" in contents


def test_a_bad_policy_stops_the_render_naming_the_key(salt_call):
    bad = {"failover": {"shutdown_policy": "conditional"}}
    code, out = salt_call("ServVirt2", "Debian", "state.show_low_sls", "xenha.shutdown", xenha=bad)
    assert code != 0
    message = "xenha:failover:shutdown_policy: unknown value 'conditional'"
    assert any(message in str(line) for line in out), out


def test_clean_removes_the_unit(salt_call):
    rendered = show(salt_call, "ServVirt1", "Debian", "xenha.clean")
    assert rendered["xenha-clean-service-dead-shutdown"][1]["name"] == "xenha-shutdown"
    absent = rendered["xenha-clean-file-absent-shutdown-unit"][1]
    assert absent["name"] == "/etc/systemd/system/xenha-shutdown.service"
