"""
Validation of the ``xenha`` pillar (the one description of the cluster).

Every xenha formula calls ``xenha_pillar.validate`` while it renders, so a bad pillar stops
``state.apply`` before any state runs, with a message naming the key (for example
``xenha:hosts:ServVirt2:ip: missing``). The checks themselves are pure functions in
``_utils/xenha_pillarcheck.py``; docs/pillar.md describes the keys.
"""

import xenha_pillarcheck
import xenha_sanlockcfg

__virtualname__ = "xenha_pillar"


def __virtual__():
    return __virtualname__


def _tree(pillar):
    source = __pillar__ if pillar is None else pillar
    return source.get("xenha")


def validate(pillar=None, secrets=False, minion_id=None):
    """
    Check the ``xenha`` pillar and return the normalised cluster: every default filled in,
    plus ``vmhosts`` (VM host minion ids ordered by OCFS2 node number) and ``storage_host``.
    Raises CommandExecutionError naming the first bad key. The secrets required are those of
    the minion's role (each minion's pillar holds only those: docs/pillar.md).

    pillar
        A whole pillar dict to check instead of this minion's pillar.
    secrets
        Return the secrets too (the formulas need them); by default they are shown as
        ``<secret>``, so the command line never prints keys or passwords.
    minion_id
        The minion whose pillar this is (default: this minion).

    CLI Example:

    .. code-block:: bash

        salt '*' xenha_pillar.validate
    """
    cluster = xenha_pillarcheck.check(_tree(pillar), minion_id or __opts__["id"])
    return cluster if secrets else xenha_pillarcheck.redact(cluster)


def member(minion_id=None, pillar=None):
    """
    Return the checked ``xenha:hosts`` entry of ``minion_id`` (default: this minion), raising
    CommandExecutionError when the pillar is bad or the minion is not a cluster member.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_pillar.member
    """
    cluster = validate(pillar)  # redacted: the secrets are not for showing
    return xenha_pillarcheck.member(cluster, minion_id or __opts__["id"])


def sanlock(minion_id=None, pillar=None, required=True):
    """
    Return the checked sanlock settings (``xenha_sanlockcfg.settings``: ``lease_path``,
    ``io_timeout``, ``slots``, ``watchdog``, ``init_host``, ``lease_lun``, the VM hosts'
    ``host_ids`` and this minion's ``host_id``), raising CommandExecutionError naming the
    first bad key. The sanlock and iscsi formulas render from this.

    minion_id
        The host whose ``host_id`` to return (default: this minion).
    pillar
        A whole pillar dict to check instead of this minion's pillar.
    required
        False: return None when ``xenha:sanlock`` is not set at all.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_pillar.sanlock
    """
    tree = _tree(pillar) or {}
    if not required and isinstance(tree, dict) and tree.get("sanlock") is None:
        return None
    return xenha_sanlockcfg.settings(tree, minion_id or __opts__["id"])


def shutdown(pillar=None):
    """
    Return what a VM host does on a clean shutdown or reboot, defaults filled in:
    ``{"shutdown_policy": "migrate" | "freeze" | "failover", "shutdown_timeout": seconds}``
    (pillar ``xenha:failover``), raising CommandExecutionError naming a bad key. The xenha
    formula's shutdown unit renders from this; ``xenha_shutdown.drain`` acts on it.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_pillar.shutdown
    """
    return xenha_pillarcheck.shutdown_settings(validate(pillar).get("failover"))
