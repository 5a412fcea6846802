"""
Answers the xenha runner can trust: a call's result signed with this minion's own Salt key.

The runner asks ``xenha_proof.call`` instead of the function itself when it takes the answer as
evidence (is the host alive, what does it run, did a domU arrive): any minion can put a return
in another minion's name on the master bus, only this minion holds its private key
(``<pki_dir>/minion.pem``). The signature covers this minion's id, the runner's one-time nonce,
the function and its result (``_utils/xenha_seal.py``, docs/runner.md "Trusted answers").

Needs: the minion's key (it has one once the master accepted it) and Python's ``cryptography``
(which Salt itself uses).
"""

import os

import xenha_seal
from salt.exceptions import CommandExecutionError

__virtualname__ = "xenha_proof"

# what the runner takes as evidence; nothing else is run through here
FUNCTIONS = (
    "test.ping",
    "xenha_preflight.report",
    "xenha_preflight.arrived",
    "xenha_sanlock.observe",
    "xenha_sanlock.holders",
    "xenha_sanlock.start_domu",
)


def __virtual__():
    return __virtualname__


def _private_key():
    path = os.path.join(__opts__["pki_dir"], "minion.pem")
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise CommandExecutionError(f"cannot read this minion's key {path}: {err}") from err


def call(nonce, fun, arg=None, kwarg=None):
    """
    Run ``fun`` (one of FUNCTIONS) with ``arg`` and ``kwarg`` and return its outcome sealed:
    ``{"sealed", "proof"}`` (base64), the outcome ``{"ok": True, "value": ...}`` or
    ``{"ok": False, "error": "..."}`` signed with this minion's key together with its id,
    ``nonce`` (hex, the runner's, one per call) and ``fun``. A failure of ``fun`` is sealed
    too, so that the runner can tell it from a forged one.

    CLI Example:

    .. code-block:: bash

        salt ServVirt1 xenha_proof.call 00112233445566778899aabbccddeeff test.ping
    """
    try:
        xenha_seal.check_nonce(nonce)
    except xenha_seal.ProofError as err:
        raise CommandExecutionError(f"xenha_proof.call: {err}") from None
    if fun not in FUNCTIONS:
        raise CommandExecutionError(
            f"xenha_proof.call: {fun!r} is not one of {', '.join(FUNCTIONS)}"
        )
    try:
        outcome = {"ok": True, "value": __salt__[fun](*(arg or []), **(kwarg or {}))}
    except Exception as err:  # noqa: BLE001 - the runner gets the failure, sealed like a result
        outcome = {"ok": False, "error": str(err) or type(err).__name__}
    return xenha_seal.seal(_private_key(), __opts__["id"], nonce, fun, outcome)
