"""
Master-side state that must outlive a runner call or a master restart (maintenance flags,
evacuation journals, failover journals): small JSON documents under
``<master cachedir>/xenha/<name>.json``.

Writes are atomic (temp file + fsync + rename), so a master killed mid-write leaves either the
old or the new document, never a torn one. ``edit`` holds an exclusive flock on a per-document
lock file for a read-modify-write, so two runners (an evacuation and a failover reaction) do not
lose each other's updates. Documents used so far:

- ``maintenance``: {host: {"since": epoch, "by": "evacuate"}} -- hosts placement must not choose.
- ``evacuation-<host>``: the evacuation journal of one host (see the runner).
- ``hoststate``: {host: {"state": "suspect" | "fenced", "since": epoch, ...}} -- written by
  failover; status and placement read it.
"""

import contextlib
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _dir(cachedir):
    path = Path(cachedir) / "xenha"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _path(cachedir, name):
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid store document name {name!r}")
    return _dir(cachedir) / f"{name}.json"


def load(cachedir, name):
    """Return document ``name`` (a dict), or {} if it was never written."""
    path = _path(cachedir, name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"store document {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"store document {path} is not a JSON object")
    return data


def save(cachedir, name, data):
    """Write document ``name`` atomically."""
    path = _path(cachedir, name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def delete(cachedir, name):
    """Remove document ``name`` (no error if absent)."""
    with contextlib.suppress(FileNotFoundError):
        _path(cachedir, name).unlink()


@contextlib.contextmanager
def edit(cachedir, name):
    """
    Read-modify-write under an exclusive lock::

        with xenha_store.edit(__opts__["cachedir"], "maintenance") as doc:
            doc["ServVirt1"] = {...}

    The (possibly changed) dict is saved when the block ends without an exception.
    """
    path = _path(cachedir, name)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load(cachedir, name)
        yield data
        save(cachedir, name, data)
