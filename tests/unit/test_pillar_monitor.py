"""Guest monitoring settings in the pillar (xenha:domus:<name>:monitor), as the check reads them."""

import pytest
import xenha_pillarcheck
from salt.exceptions import CommandExecutionError


def _monitor(tree, value):
    tree["domus"]["db01"]["monitor"] = value
    return xenha_pillarcheck.check(tree)["domus"]["db01"]["monitor"]


def _error(tree, value):
    with pytest.raises(CommandExecutionError) as err:
        _monitor(tree, value)
    return str(err.value)


def test_the_example_monitors_web01_over_http(tree):
    got = xenha_pillarcheck.check(tree)["domus"]["web01"]["monitor"]
    assert got["then"] == "relocate"
    assert got["check"]["http"].startswith("http://")
    assert "monitor" not in xenha_pillarcheck.check(tree)["domus"]["db01"]


def test_an_empty_monitor_takes_every_default(tree):
    assert _monitor(tree, {}) == {
        "restart": 3,
        "within": 3600.0,
        "then": "relocate",
        "grace": 60.0,
        "check": None,
    }


def test_a_tcp_check_is_split_into_address_and_port(tree):
    got = _monitor(tree, {"restart": 0, "then": "leave", "check": {"tcp": "[fd00::5]:5432"}})
    assert got["restart"] == 0 and got["then"] == "leave"
    assert got["check"] == {"tcp": ["fd00::5", 5432], "timeout": 5.0, "failures": 3}
    assert _monitor(tree, {"check": {"tcp": "db01.example:5432", "failures": 1}})["check"] == {
        "tcp": ["db01.example", 5432],
        "timeout": 5.0,
        "failures": 1,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "xenha:domus:db01:monitor: must be a mapping"),
        ({"restarts": 2}, "xenha:domus:db01:monitor:restarts: unknown setting"),
        ({"restart": -1}, "xenha:domus:db01:monitor:restart: -1 is out of range 0..100"),
        ({"restart": True}, "xenha:domus:db01:monitor:restart: must be an integer"),
        ({"within": 0}, "xenha:domus:db01:monitor:within: must be a positive number"),
        ({"within": float("nan")}, "xenha:domus:db01:monitor:within: must be a finite number"),
        ({"then": "migrate"}, "xenha:domus:db01:monitor:then: unknown value 'migrate'"),
        ({"grace": -5}, "xenha:domus:db01:monitor:grace: must be at least 0"),
        ({"check": {}}, "xenha:domus:db01:monitor:check: set exactly one of tcp"),
        (
            {"check": {"tcp": "a:1", "http": "http://a/"}},
            "xenha:domus:db01:monitor:check: set exactly one of tcp",
        ),
        ({"check": {"tcp": "10.0.0.5"}}, "xenha:domus:db01:monitor:check:tcp: '10.0.0.5' must be"),
        ({"check": {"tcp": "10.0.0.5:0"}}, "xenha:domus:db01:monitor:check:tcp: 0 is out of range"),
        ({"check": {"tcp": "bad host:80"}}, "xenha:domus:db01:monitor:check:tcp: invalid host"),
        ({"check": {"tcp": "-x:80"}}, "xenha:domus:db01:monitor:check:tcp: '-x:80' must not start"),
        ({"check": {"http": "ftp://a/"}}, "xenha:domus:db01:monitor:check:http: 'ftp://a/' must"),
        (
            {"check": {"http": "http://a/", "timeout": 61}},
            "xenha:domus:db01:monitor:check:timeout: 61.0 s is more than 60 s",
        ),
        (
            {"check": {"http": "http://a/", "failures": 0}},
            "xenha:domus:db01:monitor:check:failures: 0 is out of range 1..100",
        ),
        (
            {"check": {"http": "http://a/", "every": 5}},
            "xenha:domus:db01:monitor:check:every: unknown setting",
        ),
    ],
)
def test_a_bad_value_is_named(tree, value, message):
    assert _error(tree, value).startswith(message)
