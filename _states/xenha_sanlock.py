"""
States for the domU leases on sanlock, built on the ``xenha_sanlock`` execution module.

- ``lockspace_present``: the lease area holds the ``xenha`` lockspace and a resource lease
  for every domU of the pillar; what is there is never written again (run it on one host).
- ``joined``: this host has joined the lockspace with its pillar host_id.

Both take their settings from the pillar (``xenha:sanlock``, docs/pillar.md) and support
``test=True``: they say what would be written or joined and change nothing.

.. code-block:: yaml

    sanlock-lockspace-xenha_sanlock-lockspace_present:
      xenha_sanlock.lockspace_present: []

    sanlock-lockspace-xenha_sanlock-joined:
      xenha_sanlock.joined: []
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_sanlock"

LOCKSPACE = "xenha"


def __virtual__():
    if "xenha_sanlock.init" in __salt__:
        return __virtualname__
    return (False, "the xenha_sanlock execution module is not available (sanlock missing?)")


def _ret(name):
    return {"name": name, "changes": {}, "result": True, "comment": ""}


def _check_name(name):
    if name != LOCKSPACE:
        raise CommandExecutionError(f"name: the lockspace is {LOCKSPACE!r}, got {name!r}")


def _describe(plan):
    parts = []
    if plan["lockspace"] == "initialised":
        parts.append(f"lockspace {LOCKSPACE}")
    parts += [f"{domu} (slot {slot})" for domu, slot in sorted(plan["resources"].items())]
    return ", ".join(parts)


def lockspace_present(name=LOCKSPACE):
    """
    Make sure the lease area (``xenha:sanlock:lease_path``) holds the ``xenha`` lockspace and a
    resource lease for every domU of ``xenha:domus``. Only what is missing is written
    (``xenha_sanlock.init``): an initialised lockspace is never initialised again, so hosts that
    joined keep their delta leases. A missing or too small area fails before anything is
    written.

    name
        The lockspace: ``xenha`` (the only one).
    """
    ret = _ret(name)
    try:
        _check_name(name)
        plan = __salt__["xenha_sanlock.init"](test=True)
        if plan["lockspace"] == "kept" and not plan["resources"]:
            ret["comment"] = f"lockspace {name} and every domU's lease area are initialised"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"would initialise {_describe(plan)}"
            ret["changes"] = plan
            return ret
        done = __salt__["xenha_sanlock.init"]()
    except CommandExecutionError as err:
        ret["result"] = False
        ret["comment"] = str(err)
        return ret
    ret["comment"] = f"initialised {_describe(done)}"
    ret["changes"] = done
    return ret


def joined(name=LOCKSPACE):
    """
    Make sure this host has joined the ``xenha`` lockspace with its host_id
    (``xenha_sanlock.join``; about 2 x io_timeout the first time). Needs the local sanlock
    daemon and the lockspace initialised (``lockspace_present`` on the init host).

    name
        The lockspace: ``xenha`` (the only one).
    """
    ret = _ret(name)
    try:
        _check_name(name)
        probe = __salt__["xenha_sanlock.join"](test=True)
        hid = probe["host_id"]
        if not probe["changed"]:
            ret["comment"] = f"joined lockspace {name} as host_id {hid}"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"would join lockspace {name} as host_id {hid}"
            ret["changes"] = {"joined": {"old": None, "new": hid}}
            return ret
        done = __salt__["xenha_sanlock.join"]()
    except CommandExecutionError as err:
        ret["result"] = False
        ret["comment"] = str(err)
        return ret
    ret["comment"] = f"joined lockspace {name} as host_id {hid}"
    if done["changed"]:
        ret["changes"] = {"joined": {"old": None, "new": hid}}
    return ret
