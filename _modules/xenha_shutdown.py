"""
What a VM host does when it is shut down or rebooted on purpose (``xenha:failover:
shutdown_policy``), and when it is back. The xenha formula's ``xenha-shutdown`` systemd unit
runs ``salt-call xenha_shutdown.drain`` as its ExecStop, ordered before the network, the minion
and the Xen services stop, and ``salt-call xenha_shutdown.back`` as its ExecStart at boot:

- ``migrate``: on the way down, fire ``xenha/shutdown/evacuate`` to the master (its reactor
  runs ``xenha.evacuate`` for the sender) and wait, at most ``shutdown_timeout`` seconds, until
  none of the cluster's domUs runs here; at boot, fire ``xenha/shutdown/back`` (its reactor
  runs ``xenha.host_back``: the drain's maintenance ends, ``failback: true`` domUs return);
- ``freeze`` and ``failover``: nothing; the domUs stop with the host.

Only while systemd is taking the system down (``systemctl is-system-running``: ``stopping``),
or bringing it up (``starting``): a restart of the unit (a formula update) does nothing. Needs
systemd and the Xen toolstack (xenha_xen).
"""

import time

import salt.utils.path
import xenha_drain
import xenha_pillarcheck
from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_shutdown"

EVENT_TAG = "xenha/shutdown/evacuate"
BACK_TAG = "xenha/shutdown/back"
BOOTING = ("initializing", "starting")  # systemctl is-system-running while the system comes up


def __virtual__():
    if not salt.utils.path.which("systemctl"):
        return (False, "xenha_shutdown: systemctl is not on PATH (it drains only under systemd)")
    return __virtualname__


def _system_state():
    argv = ["systemctl", "is-system-running"]
    # exit code 1 for every state but "running": read the state, not the code
    out = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    return out["stdout"].strip()


def stopping():
    """
    True if systemd is taking the system down (shutdown, reboot, halt).

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_shutdown.stopping
    """
    return _system_state() == "stopping"


def starting():
    """
    True if systemd is bringing the system up (boot, before it is ``running``).

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_shutdown.starting
    """
    return _system_state() in BOOTING


def _acting(moment, force):
    """
    ``(cluster, policy, None)`` when this VM host acts now under ``migrate``, else ``(cluster,
    policy, answer)`` with the answer saying why not: not a cluster VM host, not at
    ``moment`` (stopping() or starting()) unless ``force``, or freeze / failover.
    """
    cluster = __salt__["xenha_pillar.validate"]()
    idle = {"host": __opts__["id"], "action": "none"}
    if (cluster["hosts"].get(idle["host"]) or {}).get("role") != "vmhost":
        return cluster, None, {**idle, "reason": "not a VM host of the cluster"}
    policy = xenha_pillarcheck.shutdown_settings(cluster.get("failover"))["shutdown_policy"]
    idle["policy"] = policy
    if not force and not moment():
        why = "not shutting down" if moment is stopping else "not starting up"
        return cluster, policy, {**idle, "reason": why}
    if policy != "migrate":
        why = "domUs stop with it" if moment is stopping else "nothing to do at boot"
        return cluster, policy, {**idle, "reason": why}
    return cluster, policy, None


def drain(force=False, timeout=None):
    """
    Under the ``migrate`` policy, ask the master to evacuate this host and wait until none of
    the cluster's domUs runs here; nothing under ``freeze`` or ``failover``, or when the
    system is not shutting down. Raises CommandExecutionError if the master cannot be asked,
    or if domUs are still here when the wait ends (the unit's failure shows in the journal;
    the shutdown goes on).

    force
        Drain even though the system is not shutting down (to try the policy by hand).
    timeout
        Seconds to wait (default: pillar ``xenha:failover:shutdown_timeout``, else 600).

    CLI Example:

    .. code-block:: bash

        salt-call xenha_shutdown.drain force=True timeout=120
    """
    cluster, policy, idle = _acting(stopping, force)
    if idle:
        return idle
    me = __opts__["id"]
    if timeout is None:
        timeout = xenha_pillarcheck.shutdown_settings(cluster.get("failover"))["shutdown_timeout"]
    timeout = xenha_pillarcheck.seconds(timeout, "timeout")

    def look():
        return xenha_drain.staying(__salt__["xenha_xen.list_domains"]()["domus"], cluster["domus"])

    here = look()
    if not here:
        return {"host": me, "policy": policy, "action": "none", "reason": "no domU runs here"}
    if not __salt__["event.send"](EVENT_TAG, {"domus": here}):
        raise CommandExecutionError(
            f"event.send {EVENT_TAG}: the master did not take the evacuation request; "
            f"{', '.join(here)} stop with this host"
        )
    waited = xenha_drain.wait_gone(look, timeout, clock=time.monotonic, sleep=time.sleep)
    if not waited["gone"]:
        left = ", ".join(waited["left"] or ["(toolstack did not answer)"])
        raise CommandExecutionError(
            f"{left} still on {me} after {waited['waited']} s (shutdown_timeout {timeout} s)"
        )
    return {"host": me, "policy": policy, "action": "evacuated", "asked": here, **waited}


def back(force=False):
    """
    At boot, under the ``migrate`` policy: tell the master this host is back
    (``xenha/shutdown/back``); its reactor runs ``xenha.host_back`` for this host, which ends
    the maintenance the shutdown drain put it in (never an operator's) and brings back the
    domUs with ``failback: true`` and this host as ``preferred_host``. Nothing under
    ``freeze`` or ``failover``, or when the system is not starting up (a restart of the unit
    after a formula update). Raises CommandExecutionError if the master does not take the
    event (the unit's ExecStart ignores the failure: its stop must still drain).

    force
        Say so even though the system is not starting up (to try it by hand).

    CLI Example:

    .. code-block:: bash

        salt-call xenha_shutdown.back force=True
    """
    _, policy, idle = _acting(starting, force)
    if idle:
        return idle
    me = __opts__["id"]
    if not __salt__["event.send"](BACK_TAG, {}):
        raise CommandExecutionError(
            f"event.send {BACK_TAG}: the master did not take it; {me} stays as it is "
            f"(salt-run xenha.host_back {me} does the same by hand)"
        )
    return {"host": me, "policy": policy, "action": "announced"}
