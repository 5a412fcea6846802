"""Tests use the lab's view of the shipped etc/ snippets (relocated to this checkout)."""

from lab.saltconf import INSTALL_PREFIX, REPO, snippet

__all__ = ["INSTALL_PREFIX", "REPO", "snippet"]
