"""A lab for a test module: up, formulas applied, failover on, guests started; down after."""

import contextlib
import os

import pytest

from lab import RUN_ROOT, demo
from lab.cluster import Lab


@contextlib.contextmanager
def prepared_lab(name, prefix, guests=None):
    """Yield ``(lab, failover)`` for ``<run>/<name>`` with netns ``prefix``, ``guests``
    ({name: ip}) started on ServVirt1; the lab is removed afterwards, also on failure."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, QEMU taps, tgtd)")
    if missing := demo.missing_tools():
        pytest.fail(f"missing lab tools {missing}: run `make deps`")
    lab = Lab(RUN_ROOT / name, prefix=prefix)
    try:
        fo = demo.prepare(lab)
        if guests:
            demo.start_guests(lab, fo, demo.V1, guests)
        yield lab, fo
    finally:
        lab.save_logs(RUN_ROOT / "logs" / name)  # the lab's folder goes with it
        lab.down()
