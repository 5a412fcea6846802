"""
The failover adapter's evidence calls (a survivor's sanlock verdict about a peer, its holdings,
a start's outcome) go through xenha_proof.call and count only when the survivor signed them:
a return another minion put on the bus in its name is no evidence, never a "dead" verdict.
"""

import contextlib

import pytest
import xenha_seal as proof
from salt.exceptions import CommandExecutionError

from tests.unit.test_proof import FORGER, VICTIM

DEAD = {"state": "dead", "host_id": 1, "sanlock": {"generation": 3}}


class Client:
    """LocalClient's cmd: the minion 'answers' with what ``answer(nonce, fun)`` makes."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def cmd(self, minions, fun, arg, **kwargs):
        self.calls.append((minions, fun, arg, kwargs))
        nonce, inner = arg[0], arg[1]
        ret = self.answer(nonce, inner)
        return {minions[0]: ret if "retcode" in ret else {"ret": ret, "retcode": 0}}


@pytest.fixture
def runner(monkeypatch):
    from _runners import xenha as runner  # noqa: PLC0415 - the runner's Salt imports, here only

    monkeypatch.setattr(runner, "_accepted_key", lambda minion: VICTIM[1])
    return runner


def _adapter(runner, monkeypatch, answer):
    client = Client(answer)

    @contextlib.contextmanager
    def for_call():
        yield client

    monkeypatch.setattr(runner, "_client_for_call", for_call)
    return runner._SaltFailoverIO({"hosts": {}}, io_timeout=1), client


def test_a_signed_verdict_is_evidence(runner, monkeypatch):
    def signed(nonce, fun):
        return proof.seal(VICTIM[0], "ServVirt2", nonce, fun, {"ok": True, "value": DEAD})

    io, client = _adapter(runner, monkeypatch, signed)
    assert io.observe("ServVirt2", "ServVirt1", None) == DEAD
    ((minions, fun, arg, _),) = client.calls
    assert (minions, fun, arg[1:3]) == (["ServVirt2"], "xenha_proof.call", [
        "xenha_sanlock.observe", ["ServVirt1"]
    ])  # fmt: skip


def _sealed_by(key, nonce=None, fun=None):
    def answer(call_nonce, call_fun):
        outcome = {"ok": True, "value": DEAD}
        return proof.seal(key[0], "ServVirt2", nonce or call_nonce, fun or call_fun, outcome)

    return answer


@pytest.mark.parametrize(
    "forged",
    [
        lambda nonce, fun: DEAD,  # a bare return in the survivor's name
        _sealed_by(FORGER),
        _sealed_by(VICTIM, nonce=proof.nonce()),  # replayed from another call
        _sealed_by(VICTIM, fun="test.ping"),
    ],
    ids=["unsigned", "another key", "another nonce", "another function"],
)
def test_a_forged_verdict_is_no_evidence(runner, monkeypatch, forged):
    io, _ = _adapter(runner, monkeypatch, forged)
    with pytest.raises(CommandExecutionError, match="not signed by it"):
        io.observe("ServVirt2", "ServVirt1", None)
    with pytest.raises(CommandExecutionError, match="not signed by it"):
        io.leased_domus("ServVirt2", "ServVirt1")


def test_a_signed_failure_is_the_survivors_failure(runner, monkeypatch):
    def failed(nonce, fun):
        return proof.seal(VICTIM[0], "ServVirt2", nonce, fun, {"ok": False, "error": "EIO"})

    io, _ = _adapter(runner, monkeypatch, failed)
    with pytest.raises(
        CommandExecutionError, match="xenha_sanlock.observe on ServVirt2 failed: EIO"
    ):
        io.observe("ServVirt2", "ServVirt1", None)


def test_salts_own_failure_text_is_said_as_it_is(runner, monkeypatch):
    def unreachable(nonce, fun):
        return {"ret": "Minion did not return. [Not connected]", "retcode": 1}

    io, _ = _adapter(runner, monkeypatch, unreachable)
    with pytest.raises(CommandExecutionError, match=r"failed: Minion did not return"):
        io.observe("ServVirt2", "ServVirt1", None)


def test_a_minion_without_an_accepted_key_is_not_even_asked(runner, monkeypatch):
    # Salt would print "No minions matched the target" into salt-run's --out=json output
    io, client = _adapter(runner, monkeypatch, _sealed_by(VICTIM))
    monkeypatch.setattr(runner, "_accepted_key", lambda minion: None)
    with pytest.raises(CommandExecutionError, match="ServVirt2 has no Salt key the master"):
        io.leased_domus("ServVirt2", None)
    assert client.calls == []
