"""Fixtures the pillar tests share: the shipped example pillar, and a fresh copy per test."""

import copy

import pytest
import yaml

from tests.support.saltconf import REPO, merged


@pytest.fixture(scope="module")
def example():
    """The shipped cluster.yaml merged with the render tests' stand-in secrets."""
    cluster = yaml.safe_load((REPO / "pillar/xenha/cluster.yaml").read_text())
    secrets = yaml.safe_load((REPO / "tests/render/pillar/xenha/secrets.yaml").read_text())
    return merged(cluster, secrets)


@pytest.fixture
def tree(example):
    """A copy of the example a test may change."""
    return copy.deepcopy(example)
