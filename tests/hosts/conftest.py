"""Lab hosts for the tests: network namespaces need root, which CI has."""

import os

import pytest

from lab import RUN_ROOT
from lab.cluster import Lab

pytestmark = pytest.mark.root


def pytest_collection_modifyitems(items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="lab hosts need root (network namespaces)")
        for item in items:
            if "tests/hosts/" in str(item.fspath):
                item.add_marker(skip)


def make_lab(prefix):
    """A Lab of the lab pillar with its own netns prefix and run folder (``down`` removes it).

    Not under /tmp: each host mounts its own /tmp over the machine's.
    """
    return Lab(run_dir=RUN_ROOT / f"test-{prefix}", prefix=prefix)
