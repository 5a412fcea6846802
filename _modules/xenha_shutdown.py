"""
What a VM host does when it is shut down or rebooted on purpose (``xenha:failover:
shutdown_policy``). The xenha formula's ``xenha-shutdown`` systemd unit runs
``salt-call xenha_shutdown.drain`` as its ExecStop, ordered before the network, the minion and
the Xen services stop:

- ``migrate``: fire ``xenha/shutdown/evacuate`` to the master (its reactor runs
  ``xenha.evacuate`` for the sender) and wait, at most ``shutdown_timeout`` seconds, until none
  of the cluster's domUs runs here;
- ``freeze`` and ``failover``: nothing; the domUs stop with the host.

Only while systemd is taking the system down (``systemctl is-system-running``: ``stopping``):
a restart of the unit (a formula update) evacuates nothing. Needs systemd and the Xen
toolstack (xenha_xen).
"""

import time

import salt.utils.path
import xenha_drain
import xenha_pillarcheck
from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_shutdown"

EVENT_TAG = "xenha/shutdown/evacuate"


def __virtual__():
    if not salt.utils.path.which("systemctl"):
        return (False, "xenha_shutdown: systemctl is not on PATH (it drains only under systemd)")
    return __virtualname__


def stopping():
    """
    True if systemd is taking the system down (shutdown, reboot, halt).

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_shutdown.stopping
    """
    argv = ["systemctl", "is-system-running"]
    # exit code 1 for every state but "running": read the state, not the code
    out = __salt__["cmd.run_all"](argv, python_shell=False, ignore_retcode=True)
    return out["stdout"].strip() == "stopping"


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
    cluster = __salt__["xenha_pillar.validate"]()
    me = __opts__["id"]
    if (cluster["hosts"].get(me) or {}).get("role") != "vmhost":
        return {"host": me, "action": "none", "reason": "not a VM host of the cluster"}
    settings = xenha_pillarcheck.shutdown_settings(cluster.get("failover"))
    policy = settings["shutdown_policy"]
    if not force and not stopping():
        return {"host": me, "policy": policy, "action": "none", "reason": "not shutting down"}
    if policy != "migrate":
        return {"host": me, "policy": policy, "action": "none", "reason": "domUs stop with it"}
    if timeout is None:
        timeout = settings["shutdown_timeout"]
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
