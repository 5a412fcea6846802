"""
Signed answers: how the runner tells a minion's own answer from one any minion could forge.

A return on the master bus proves nothing about who sent it. Any minion can fire an event with
any tag, ``salt/job/<jid>/ret/<other minion>`` included (masterapi ``_minion_event`` filters
only ``salt/job/*/new|return|publish`` and only in the multi-event form), and Salt 3008's
``_return`` replaces the sender's authenticated id by the ``resource_id`` the load names, so a
minion can even have the master store and announce a return as another minion's, job cache
included. What no other minion has is the answering minion's private key: the minion signs its
answer with it (``seal``), bound to its id, the runner's fresh nonce and the function, and the
runner checks the signature with the public key it accepted for that minion (``unseal``).

Pure helpers, shared by ``_modules/xenha_proof.py`` (the minion) and ``_runners/xenha.py``.
Not named after that module: a util of the same name let its ``import`` find the execution
module itself once a minion had loaded it before the first sync (the pillar's scheduled job
did), and every signed answer then failed with AttributeError until the minion restarted.
"""

import base64
import binascii
import secrets

import salt.payload
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

DOMAIN = b"xenha-proof-1\0"  # a signature made for this purpose is good for nothing else
NONCE_HEX = 32  # 16 random bytes, as hex


class ProofError(ValueError):
    """An answer is not proven to be the minion's own; the message says why."""


def nonce():
    """A fresh nonce for one call."""
    return secrets.token_hex(NONCE_HEX // 2)


def check_nonce(value):
    """``value`` if it is a nonce as ``nonce()`` makes them, else ProofError naming it."""
    if not (isinstance(value, str) and len(value) == NONCE_HEX and _is_hex(value)):
        raise ProofError(f"nonce must be {NONCE_HEX} hex digits, got {value!r}")
    return value


def _is_hex(text):
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def seal(private_pem, minion, nonce_, fun, result):
    """
    The answer ``{"sealed", "proof"}`` carrying ``result`` (any data Salt can return): the body
    (``minion``, ``nonce_``, ``fun``, ``result``) serialised, and its signature by the minion's
    private key ``private_pem`` (bytes), both base64 text.
    """
    key = serialization.load_pem_private_key(private_pem, password=None)
    body = salt.payload.dumps({"minion": minion, "nonce": nonce_, "fun": fun, "result": result})
    proof = key.sign(DOMAIN + body, padding.PKCS1v15(), hashes.SHA256())
    return {"sealed": _b64(body), "proof": _b64(proof)}


def unseal(public_pem, minion, nonce_, fun, answer):
    """
    ``result`` of an answer ``seal`` made, once its signature verifies with ``minion``'s public
    key ``public_pem`` (text, None: no accepted key) and its body names ``minion``, ``nonce_``
    and ``fun``; else ProofError saying why.
    """
    if not public_pem:
        raise ProofError(f"the master has no accepted key for {minion}")
    if not isinstance(answer, dict) or set(answer) != {"sealed", "proof"}:
        raise ProofError("not a sealed answer")
    try:
        body = base64.b64decode(answer["sealed"], validate=True)
        proof = base64.b64decode(answer["proof"], validate=True)
    except (TypeError, ValueError, binascii.Error) as err:
        raise ProofError(f"not base64: {err}") from None
    key = serialization.load_pem_public_key(public_pem.encode())
    try:
        key.verify(proof, DOMAIN + body, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, TypeError, ValueError):
        raise ProofError(f"the signature is not {minion}'s") from None
    fields = salt.payload.loads(body)
    for name, want in (("minion", minion), ("nonce", nonce_), ("fun", fun)):
        if fields.get(name) != want:
            raise ProofError(f"signed for {name} {fields.get(name)!r}, not {want!r}")
    return fields["result"]


def _b64(data):
    return base64.b64encode(data).decode()
