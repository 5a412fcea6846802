"""
Failovers run by the real engine (xenha_failover.Engine) on the unit tests' fake cluster, with
the audit trail written as the runner writes it: what the failover report reads.
"""

import datetime

import xenha_failover as xf

from tests.support.failover_fake import EVENT, FakeIO


class AuditedIO(FakeIO):
    """The fake cluster; audit entries also go to ``<store>/xenha/audit.log`` as lines."""

    def __init__(self, store):
        super().__init__()
        self.store = str(store)

    def audit(self, entry):
        xf.audit_line(xf.audit_path(self.store), entry)
        super().audit(entry)


def stamped(io, age, reporter="B", before=0.0):
    """A claim as the reactor hands it over: fired ``before`` s ago, peer heard ``age`` s
    before that (Salt's ``_stamp`` is the reporter's clock, UTC)."""
    fired = datetime.datetime.fromtimestamp(io.now() - before, datetime.timezone.utc)
    return {
        "id": reporter,
        "reporter": reporter,
        "peer": "A",
        "_stamp": fired.isoformat(),
        "age": age,
    }


def engine(io, **settings):
    return xf.Engine(io, io.store, settings)


__all__ = ["EVENT", "AuditedIO", "engine", "stamped"]
