"""The runner's report collection (``_gather``) with a fake Salt client: a host whose first
publish is lost is asked once more and its answer to either job counts; a host that stays
silent is named with the wait; an answer not sealed for the call is ignored and named."""

import importlib.util
import os

import pytest

RUNNER = os.path.join(os.path.dirname(__file__), "..", "..", "_runners", "xenha.py")
A, B = "ServVirt1", "ServVirt2"


class FakeClient:
    """Publishes get jids 1, 2, ...; ``answers(jid, targets)`` says which minions return to
    each, as ret events in the order given."""

    def __init__(self, answers, clock):
        self.answers, self.clock, self.published, self.queue = answers, clock, [], []
        self.event = self

    def run_job(self, targets, fun, *, arg, tgt_type, timeout, listen):
        assert fun == "xenha_proof.call" and tgt_type == "list" and listen is True
        jid = str(len(self.published) + 1)
        self.published.append((jid, list(targets), arg[0]))
        for minion in self.answers(jid, targets):
            self.queue.append({"tag": f"salt/job/{jid}/ret/{minion}", "data": {"nonce": arg[0]}})
        return {"jid": jid, "minions": list(targets)}

    def get_event(self, wait, tag, full):
        assert tag == "salt/job/" and full is True and wait > 0
        if self.queue:
            return self.queue.pop(0)
        self.clock[0] += wait  # nothing came within the wait
        return None


@pytest.fixture
def runner(monkeypatch):
    spec = importlib.util.spec_from_file_location("xenha_runner_gather", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    clock = [0.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])

    def proven(minion, fun, nonce, data):  # the real check is tests/unit/test_proof.py's
        if data["nonce"] != nonce:
            return None, "not sealed for this call"
        return True, {"id": minion}

    monkeypatch.setattr(module, "_proven", proven)
    return module, clock


def gather(module, client, needed=(A, B)):
    return module._gather(client, [A, B], set(needed), kwarg={}, wait=30, marks={})


def test_a_lost_publish_is_asked_again_halfway_and_answered(runner):
    module, clock = runner
    # the first job reaches only A (B was reconnecting); the second reaches B
    client = FakeClient(lambda jid, targets: [A] if jid == "1" else targets, clock)
    got = gather(module, client)
    assert got[A][0] is True and got[B][0] is True
    assert [(jid, targets) for jid, targets, _ in client.published] == [("1", [A, B]), ("2", [B])]
    assert 15 <= got[B][2] < 16  # asked again at half the wait


def test_a_silent_host_is_asked_twice_then_named(runner):
    module, clock = runner
    client = FakeClient(lambda jid, targets: [A] if A in targets else [], clock)
    got = gather(module, client)
    assert got[B] == (False, "no answer within 30 s", None)
    assert len(client.published) == 2 and clock[0] >= 30


def test_an_answer_sealed_for_another_call_is_ignored_and_named(runner):
    module, clock = runner
    client = FakeClient(lambda jid, targets: targets, clock)
    real = client.run_job

    def forged_for_b(*args, **kwargs):  # B's return carries another call's nonce
        pub = real(*args, **kwargs)
        for event in client.queue:
            if event["tag"].endswith(B):
                event["data"] = {"nonce": "0" * 32}
        return pub

    client.run_job = forged_for_b
    got = gather(module, client)
    assert got[A][0] is True
    assert got[B] == (False, "no answer within 30 s; ignored: not sealed for this call", None)
    assert len(client.published) == 1  # an ignored answer is no silence: not asked again
