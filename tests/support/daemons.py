"""Salt daemons for the functional tests, from the shipped etc/ snippets."""

import contextlib

from tests.support.saltconf import snippet


@contextlib.contextmanager
def synced_minion(master, minion_id, environ=None):
    """
    A minion of ``master`` from the shipped minion snippet, started, xenha's modules synced.
    ``environ`` is added to its environment (salt_minion_daemon(environ=...) clashes with the
    factory's own environ).
    """
    minion = master.salt_minion_daemon(minion_id, overrides=snippet("minion"))
    minion.environ = {**minion.environ, **(environ or {})}
    with minion.started():
        # generous: sync_all walks the whole checkout, slow on a loaded machine
        ret = master.salt_cli(timeout=600).run("saltutil.sync_all", minion_tgt=minion_id)
        assert ret.returncode == 0, ret
        yield minion
