"""Salt daemons for the functional tests, from the shipped etc/ snippets."""

import contextlib
import json
import time

from tests.support.saltconf import snippet


@contextlib.contextmanager
def synced_minion(master, minion_id, environ=None, overrides=None):
    """
    A minion of ``master`` from the shipped minion snippet (plus ``overrides``), started,
    xenha's modules synced. ``environ`` is added to its environment (salt_minion_daemon(
    environ=...) clashes with the factory's own environ).
    """
    config = {**snippet("minion"), **(overrides or {})}
    minion = master.salt_minion_daemon(minion_id, overrides=config)
    minion.environ = {**minion.environ, **(environ or {})}
    with minion.started():
        # generous: sync_all walks the whole checkout, slow on a loaded machine
        ret = master.salt_cli(timeout=600).run("saltutil.sync_all", minion_tgt=minion_id)
        assert ret.returncode == 0, ret
        yield minion


def runner_calls(work, runner, timeout):
    """The calls a reactor made to a recording stand-in runner (one JSON line each in
    ``work/calls``), once there is at least one; AssertionError naming ``runner`` if none
    comes within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    calls = work / "calls"
    while time.monotonic() < deadline:
        if calls.exists() and calls.read_text().strip():
            return [json.loads(line) for line in calls.read_text().splitlines()]
        time.sleep(0.5)
    raise AssertionError(f"the reactor never called the {runner} runner")
