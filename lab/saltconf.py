"""The shipped master/minion config snippets (etc/), relocated from /srv/xenha to this checkout."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
INSTALL_PREFIX = "/srv/xenha"


def _relocate(value):
    if isinstance(value, str):
        return value.replace(INSTALL_PREFIX, str(REPO))
    if isinstance(value, list):
        return [_relocate(v) for v in value]
    if isinstance(value, dict):
        return {_relocate(k): _relocate(v) for k, v in value.items()}
    return value


def snippet(kind):
    """Return etc/<kind>.d/xenha.conf as a dict, with paths relocated to this checkout."""
    text = (REPO / "etc" / f"{kind}.d" / "xenha.conf").read_text()
    return _relocate(yaml.safe_load(text) or {})
