"""
A domU's presence on this host: ``running`` (started from its config file) or ``absent``
(shut down cleanly, destroyed if asked to). Built on the ``xenha_xen`` execution module.

.. code-block:: yaml

    xenha-domu-web01-running:
      xenha_domu.running:
        - name: web01
        - config: /cluster/domus/web01.cfg

    xenha-domu-web01-absent:
      xenha_domu.absent:
        - name: web01
        - timeout: 120
        - force: true

A domU caught mid-migration (``web01--incoming``, ``web01--migratedaway``, xm's
``migrating-web01``) is reported and left alone by both states.

With ``admission: strict`` (the state's argument, else ``xenha:domus:<name>:admission``)
``running`` first asks the master (``publish.runner xenha.admission``, allowed by the master's
``peer_run``) whether the start keeps N+1, and refuses it when the loss of some VM host would
then leave domUs unplaced, naming that host and those domUs:

.. code-block:: yaml

    xenha-domu-web01-running:
      xenha_domu.running:
        - name: web01
        - config: /cluster/domus/web01.cfg
        - admission: strict
"""

import xenha_names
import xenha_pillarcheck
from salt.exceptions import CommandExecutionError, SaltException

__virtualname__ = "xenha_domu"

_TROUBLE = ("shutdown", "crashed", "dying")
ADMISSION_RUNNER = "xenha.admission"
ADMISSION_TIMEOUT = 30  # s for the master's answer (it asks every VM host for its room)


def __virtual__():
    if "xenha_xen.domain" in __salt__:
        return __virtualname__
    return (False, "xenha_domu: the xenha_xen execution module is not available")


def _ret(name):
    return {"name": name, "changes": {}, "result": False, "comment": ""}


def _current(ret, name):
    """The domU's row here (or None); on trouble fills ``ret`` and returns False."""
    try:
        xenha_names.check("domu", name)
        row = __salt__["xenha_xen.domain"](name)
    except CommandExecutionError as err:
        ret["comment"] = str(err)
        return False
    if row is not None and row["transient"]:
        ret["comment"] = (
            f"domU {name} is mid-migration on this host as {row['name']} (state {row['state']}): "
            "not touching it"
        )
        return False
    return row


def _keep_running(ret, name, row):
    """The domU is here: fine if it runs, unpause it if paused, report anything worse."""
    trouble = [flag for flag in _TROUBLE if flag in row["flags"]]
    if trouble:
        ret["comment"] = (
            f"domU {name} is here but {', '.join(trouble)} (state {row['state']}): "
            "destroy it first to restart it"
        )
    elif "paused" not in row["flags"]:
        ret.update(result=True, comment=f"domU {name} is running (domid {row['domid']})")
    elif __opts__["test"]:
        ret.update(result=None, comment=f"domU {name} is paused and would be unpaused")
        ret["changes"] = {"state": {"old": "paused", "new": "running"}}
    else:
        try:
            __salt__["xenha_xen.unpause"](name)
        except CommandExecutionError as err:
            ret["comment"] = f"domU {name} is paused and unpausing it failed: {err}"
        else:
            ret.update(result=True, comment=f"domU {name} was paused and now runs")
            ret["changes"] = {"state": {"old": "paused", "new": "running"}}
    return ret


def _lease_refusal(name):
    """
    With test=True on a member of a lease-managed cluster (``xenha:sanlock`` set, this minion
    in ``xenha:hosts``): why the start would be refused (another host holds the domU's sanlock
    lease), or None. A real start needs no look first: ``xenha_xen.start`` takes the lease
    before the toolstack runs and refuses when a live host holds it.
    """
    xenha = __pillar__.get("xenha") or {}
    me = __opts__["id"]
    if not __opts__["test"] or not xenha.get("sanlock") or me not in (xenha.get("hosts") or {}):
        return None
    try:
        held = __salt__["xenha_sanlock.holders"]().get(name)
    except (CommandExecutionError, KeyError) as err:
        return f"its sanlock lease cannot be read: {err}"
    others = [h for h in (held or {}).get("hosts", []) if h != me]
    return f"its sanlock lease is held ({held['mode']}) by {', '.join(others)}" if others else None


def _policy(name, admission):
    """The admission policy: the state's argument, else the domU's pillar entry, else off."""
    if admission is not None:
        return xenha_pillarcheck.admission(admission, "admission")
    domus = (__pillar__.get("xenha") or {}).get("domus") or {}
    spec = domus.get(name) if isinstance(domus, dict) else None
    value = spec.get("admission") if isinstance(spec, dict) else None
    return xenha_pillarcheck.admission(value, f"xenha:domus:{name}:admission")


def _admission(name, cfg):
    """
    ``(admitted, why)``: the master's ``xenha.admission`` answer for starting ``name`` here.
    No answer is a refusal: strict admission that cannot check does not start.
    """
    me = __opts__["id"]
    arg = [name, me, f"memory_mib={cfg['memory_mib']}"]
    try:
        got = __salt__["publish.runner"](ADMISSION_RUNNER, arg=arg, timeout=ADMISSION_TIMEOUT)
    except SaltException as err:  # e.g. the master's channel closed: no answer, no start
        got = f"{type(err).__name__}: {err}"
    if isinstance(got, dict) and set(got) == {"outputter", "data"}:
        got = got["data"]
    if isinstance(got, dict) and "admit" in got:
        return bool(got["admit"]), str(got.get("reason"))
    if got == {}:
        why = f"the master does not let {me} run {ADMISSION_RUNNER} (peer_run, etc/master.d)"
    elif isinstance(got, dict) and got.get("error"):
        why = got["error"]
    else:
        why = f"no answer from the master's {ADMISSION_RUNNER}: {got!r}"
    return False, f"N+1 could not be checked: {why}"


def _start(ret, name, config, policy):
    try:
        cfg = __salt__["xenha_xen.read_config"](config)
    except CommandExecutionError as err:
        ret["comment"] = str(err)
        return ret
    if cfg["name"] != name:
        ret["comment"] = f"{config} defines domU {cfg['name']!r}, not {name!r}"
        return ret
    refusal, admitted = _lease_refusal(name), ""
    if not refusal and policy == "strict":
        ok, why = _admission(name, cfg)
        refusal, admitted = (None, f" (admission strict: {why})") if ok else (why, "")
    if refusal:
        would = "would not be started" if __opts__["test"] else "not started"
        ret["comment"] = f"domU {name} {would}: {refusal}"
    elif __opts__["test"]:
        ret.update(result=None, comment=f"domU {name} would be started from {config}{admitted}")
        ret["changes"] = {"state": {"old": "absent", "new": "running"}}
    else:
        try:
            started = __salt__["xenha_xen.start"](config)
        except CommandExecutionError as err:
            ret["comment"] = f"starting domU {name} failed: {err}"
        else:
            ret.update(
                result=True,
                comment=f"domU {name} started from {config} (domid {started['domid']}){admitted}",
            )
            ret["changes"] = {
                "state": {"old": "absent", "new": "running"},
                "domid": started["domid"],
            }
    return ret


def running(name, config, admission=None):
    """
    Make sure domU ``name`` runs on this host, starting it from ``config`` (an absolute path to
    its xl/xm config file, whose ``name`` must be ``name``) when it is not here. A paused domU
    is unpaused; one that is shut down, crashed or dying is reported, not restarted.

    On a member of a lease-managed cluster the domU's sanlock lease is taken first (by
    ``xenha_xen.start``): a domU whose lease a live host holds is refused, never started twice.

    admission
        ``strict``: refuse a start after which the loss of some VM host would leave domUs
        unplaced that it would not leave now (the master's ``xenha.admission`` judges, with the
        failover's own planner); ``off``: start regardless. Default: the domU's
        ``xenha:domus:<name>:admission``, else ``off``.
    """
    ret = _ret(name)
    try:
        policy = _policy(name, admission)
    except CommandExecutionError as err:
        ret["comment"] = str(err)
        return ret
    row = _current(ret, name)
    if row is False:
        return ret
    if row is not None:
        return _keep_running(ret, name, row)
    return _start(ret, name, config, policy)


def absent(name, timeout=60, force=False):
    """
    Make sure domU ``name`` does not run on this host: shut it down cleanly, waiting up to
    ``timeout`` seconds; with ``force`` destroy it if it does not go (otherwise that fails).
    """
    ret = _ret(name)
    row = _current(ret, name)
    if row is False:
        return ret
    if row is None:
        ret.update(result=True, comment=f"domU {name} is not on this host")
        return ret
    how = f"shut down (timeout {timeout} s{', then destroyed' if force else ''})"
    if __opts__["test"]:
        ret.update(result=None, comment=f"domU {name} (domid {row['domid']}) would be {how}")
        ret["changes"] = {"state": {"old": "running", "new": "absent"}}
        return ret
    try:
        done = __salt__["xenha_xen.shutdown"](name, timeout=timeout, force=force)
    except CommandExecutionError as err:
        ret["comment"] = str(err)
        return ret
    verb = "shut down" if done["method"] == "shutdown" else f"destroyed ({done['reason']})"
    ret.update(result=True, comment=f"domU {name} {verb} in {done['seconds']} s")
    ret["changes"] = {"state": {"old": "running", "new": "absent"}, "method": done["method"]}
    return ret
