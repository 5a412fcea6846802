"""
Stand-in for the failover's part of ``xenha_sanlock`` in functional tests: ``observe``,
``holders``, ``start_domu`` and the ``acquire`` / ``release`` that ``xenha_xen.start`` calls on a
lease-managed host, following the module's contract (docs/failover.md, "Interfaces"),
on a JSON file the test writes: ``$XENHA_STANDIN_DIR/sanlock.json`` =
``{"hosts": {host: advancing|stopped|dead|free}, "generation": {host: n},
"leases": {domU: {"mode": "ex"|"sh", "hosts": [...]}}}``. A missing file is an unreadable
lease area. The minion loads it through ``module_dirs`` with ``disable_modules:
[xenha_sanlock]``: the synced real module (extension modules come before ``module_dirs`` in
Salt's search order) is disabled by its file name, this file gives the same virtual name.
"""

import json
import os
import time

from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_sanlock"

WATCH = 2.0  # s observe watches by default (io_timeout 1 + 1)


def __virtual__():
    if os.environ.get("XENHA_STANDIN_DIR"):
        return __virtualname__
    return (False, "xenha_sanlock stand-in: XENHA_STANDIN_DIR is not set")


def _path():
    return os.path.join(os.environ["XENHA_STANDIN_DIR"], "sanlock.json")


def _load():
    try:
        with open(_path(), encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise CommandExecutionError(f"sanlock direct dump {_path()}: no such file") from None


def _save(state):
    tmp = _path() + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh)
    os.replace(tmp, _path())


def observe(host, duration=None):
    """
    ``host``'s delta lease as the test set it, after watching ``duration`` s.

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.observe ServVirt1
    """
    _load()
    time.sleep(WATCH if duration is None else float(duration))
    state = _load()
    verdict = state["hosts"].get(host, "free")
    generation = state.get("generation", {}).get(host, 1)
    return {"state": verdict, "host_id": 0, "sanlock": {"generation": generation}}


def holders(host=None):
    """
    The domU leases held (by ``host`` only, when given).

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.holders host=ServVirt1
    """
    leases = _load()["leases"]
    return {n: e for n, e in leases.items() if host is None or host in e["hosts"]}


def _take(state, name, me, fenced=None):
    """Refuse while a live holder other than a stopped ``fenced`` one holds ``name``'s lease."""
    held = state["leases"].get(name, {"hosts": []})
    for holder in set(held["hosts"]) - {me}:
        seen = state["hosts"].get(holder, "free")
        if holder == fenced and seen == "advancing":
            raise CommandExecutionError(f"{holder} still renews its sanlock delta lease")
        if holder != fenced and seen not in ("dead", "free"):
            raise CommandExecutionError(f"lease of {name} is held by live host {holder}")
    changed = held["hosts"] != [me]
    state["leases"][name] = {"mode": "ex", "hosts": [me]}
    _save(state)
    return changed


def start_domu(name, config, fenced=None):
    """
    Take ``name``'s lease as the real module would (refused while a live holder other than a
    stopped ``fenced`` holds it), then start it with ``xenha_xen.start`` (whose own ``acquire``
    then finds the lease held here).

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.start_domu web01 /cluster/domus/web01.cfg fenced=ServVirt1
    """
    _take(_load(), name, __opts__["id"], fenced)  # noqa: F821 - injected by the Salt loader
    state = _load()
    return {"lease": state["leases"][name], "domu": __salt__["xenha_xen.start"](config)}  # noqa: F821


def acquire(name, shared=False):
    """
    Take ``name``'s lease here, as ``xenha_xen.start`` does before it starts a domU: already
    held here is no change; held by a host the test did not call dead or free is refused.

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.acquire web01
    """
    me = __opts__["id"]  # noqa: F821 - injected by the Salt loader
    state = _load()
    held = state["leases"].get(name, {"hosts": []})
    if me in held["hosts"]:
        return {"changed": False, "lease": held}
    for holder in held["hosts"]:
        if state["hosts"].get(holder, "free") not in ("dead", "free"):
            raise CommandExecutionError(f"lease of {name} is held by live host {holder}")
    state["leases"][name] = {"mode": "sh" if shared else "ex", "hosts": [me]}
    _save(state)
    return {"changed": True, "lease": state["leases"][name]}


def release(name):
    """
    Let ``name``'s lease go here (``xenha_xen.start`` does after a start that failed).

    CLI Example:

    .. code-block:: bash

        salt ServVirt2 xenha_sanlock.release web01
    """
    me = __opts__["id"]  # noqa: F821 - injected by the Salt loader
    state = _load()
    held = state["leases"].get(name)
    if not held or me not in held["hosts"]:
        return {"changed": False}
    held["hosts"].remove(me)
    if not held["hosts"]:
        del state["leases"][name]
    _save(state)
    return {"changed": True}
