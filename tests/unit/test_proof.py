"""Sealed answers (_utils/xenha_seal.py): only the named minion's key makes one that unseals."""

import base64

import pytest
import salt.payload
import xenha_seal as proof
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # as Salt writes minion.pem
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


VICTIM, FORGER = _pair(), _pair()
NONCE = proof.nonce()
REPORT = {"ok": True, "value": {"info": {"free_memory_mib": 4096}, "domains": {"domus": {}}}}


def sealed(key=VICTIM, minion="ServVirt2", nonce=NONCE, fun="xenha_preflight.report"):
    return proof.seal(key[0], minion, nonce, fun, REPORT)


def unseal(answer, minion="ServVirt2", nonce=NONCE, fun="xenha_preflight.report"):
    return proof.unseal(VICTIM[1], minion, nonce, fun, answer)


def test_the_minions_own_answer_unseals_to_its_result():
    assert unseal(sealed()) == REPORT


def test_another_minions_key_does_not_make_an_answer_in_its_name():
    with pytest.raises(proof.ProofError, match="the signature is not ServVirt2's"):
        unseal(sealed(key=FORGER))


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (dict(sealed(nonce=proof.nonce())), "signed for nonce"),  # a replay of another call
        (dict(sealed(minion="ServVirt1")), "signed for minion 'ServVirt1', not 'ServVirt2'"),
        (dict(sealed(fun="test.ping")), "signed for fun 'test.ping'"),
        (True, "not a sealed answer"),  # what a forged test.ping return says
        ({"sealed": "!!", "proof": "!!"}, "not base64"),
        ({**sealed(), "extra": 1}, "not a sealed answer"),
    ],
)
def test_a_replayed_misnamed_or_malformed_answer_is_refused(answer, why):
    with pytest.raises(proof.ProofError, match=why):
        unseal(answer)


def test_an_altered_result_is_refused():
    answer = sealed()
    body = salt.payload.loads(base64.b64decode(answer["sealed"]))
    body["result"]["value"]["info"]["free_memory_mib"] = 65536
    answer["sealed"] = base64.b64encode(salt.payload.dumps(body)).decode()
    with pytest.raises(proof.ProofError, match="the signature is not ServVirt2's"):
        unseal(answer)


def test_no_accepted_key_proves_nothing():
    with pytest.raises(proof.ProofError, match="the master has no accepted key for ServVirt2"):
        proof.unseal(None, "ServVirt2", NONCE, "xenha_preflight.report", sealed())


@pytest.mark.parametrize("nonce", ["", "0" * 31, "g" * 32, 12, None])
def test_a_bad_nonce_is_named(nonce):
    with pytest.raises(proof.ProofError, match="nonce must be 32 hex digits"):
        proof.check_nonce(nonce)
    assert proof.check_nonce(NONCE) == NONCE
