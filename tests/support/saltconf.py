"""Tests use the lab's view of the shipped etc/ snippets (relocated to this checkout)."""

from lab.saltconf import INSTALL_PREFIX, REPO, snippet

__all__ = ["INSTALL_PREFIX", "REPO", "merged", "snippet"]


def merged(base, extra):
    """A deep merge of two mappings (extra wins), as the pillar's recurse merge does."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
