"""
Render the formulas through real Salt (`salt-call --local`) for three OS families.

Each call gets a throw-away config dir: file_roots = salt/, pillar_roots = [an optional
per-test root, tests/render/pillar (stand-in secrets), pillar/], this checkout's _modules,
_states and _utils, and `grains:` in the minion config overriding the OS grains.
"""

import json
import subprocess

import pytest
import yaml

from tests.support.saltconf import REPO, merged

FAMILIES = {
    "Debian": {
        "os_family": "Debian",
        "os": "Debian",
        "osfinger": "Debian-12",
        "osrelease": "12",
        "osmajorrelease": 12,
        "oscodename": "bookworm",
    },
    "Suse": {
        "os_family": "Suse",
        "os": "Leap",
        "osfinger": "Leap-15",
        "osrelease": "15.5",
        "osmajorrelease": 15,
    },
    "RedHat": {
        "os_family": "RedHat",
        "os": "Rocky",
        "osfinger": "Rocky Linux-9",
        "osrelease": "9.3",
        "osmajorrelease": 9,
    },
}
SECRETS = yaml.safe_load((REPO / "tests/render/pillar/xenha/secrets.yaml").read_text())


class SaltCall:
    """Runs salt-call --local against this checkout as a given minion on a given OS family."""

    def __init__(self, root):
        self.root = root
        self.count = 0

    def __call__(self, minion_id, family, *args, xenha=None, pillar=None, secrets=True):
        """
        Run `salt-call --local --out=json <args>`; return (returncode, parsed "local" or
        the raw output). ``xenha`` is merged over the example's xenha pillar (through the
        secrets file, which pillar/xenha/init.sls merges last); ``pillar`` adds top-level
        pillar keys (formula lookups); ``secrets=False`` leaves the stand-in secrets out, as
        a checkout without pillar/xenha/secrets.yaml is.
        """
        self.count += 1
        base = self.root / f"call{self.count}"
        roots = [str(REPO / "tests/render/pillar")] if secrets else []
        roots.append(str(REPO / "pillar"))
        if xenha is not None or pillar is not None:
            extra = base / "pillar"
            (extra / "xenha").mkdir(parents=True)
            (extra / "xenha/secrets.yaml").write_text(yaml.safe_dump(merged(SECRETS, xenha or {})))
            (extra / "top.sls").write_text(yaml.safe_dump({"base": {"*": ["xenha", "extra"]}}))
            (extra / "extra.sls").write_text(yaml.safe_dump(pillar or {}))
            roots.insert(0, str(extra))
        config = {
            "id": minion_id,
            "file_client": "local",
            "root_dir": str(base),
            "file_roots": {"base": [str(REPO / "salt")]},
            "pillar_roots": {"base": roots},
            "module_dirs": [str(REPO / "_modules")],
            "states_dirs": [str(REPO / "_states")],
            "utils_dirs": [str(REPO / "_utils")],
            "grains": FAMILIES[family],
            "log_file": str(base / "minion.log"),
        }
        base.mkdir(parents=True, exist_ok=True)
        (base / "minion").write_text(yaml.safe_dump(config))
        proc = subprocess.run(
            [str(REPO / ".venv/bin/salt-call"), "--local", "-c", str(base), "--out=json",
             "-l", "quiet", *args],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        try:
            return proc.returncode, json.loads(proc.stdout)["local"]
        except (ValueError, KeyError):
            return proc.returncode, proc.stdout + proc.stderr


def states(low):
    """
    show_lowstate/show_low_sls output (the compiled chunks: Salt has resolved every requisite)
    as {state id: (module.function, {argument: value})}; an ID expanded from ``names`` gets
    them back as a ``names`` list.
    """
    out = {}
    for chunk in low:
        args = {k: v for k, v in chunk.items()
                if not k.startswith("__") and k not in ("state", "fun", "order")}  # fmt: skip
        state_id = chunk["__id__"]
        if state_id in out:
            first = out[state_id][1]
            if "name" in first:
                first["names"] = [first.pop("name")]
            first["names"].append(args["name"])
        else:
            out[state_id] = (f"{chunk['state']}.{chunk['fun']}", args)
    return out


@pytest.fixture(scope="session")
def salt_call(tmp_path_factory):
    return SaltCall(tmp_path_factory.mktemp("saltcall"))


@pytest.fixture(scope="session")
def highstate(salt_call):
    """The example pillar's highstate per (OS family, minion id), rendered once each."""
    cache = {}

    def render(family, minion_id):
        if (family, minion_id) not in cache:
            code, out = salt_call(minion_id, family, "state.show_lowstate")
            assert code == 0 and isinstance(out, list), out
            assert all(isinstance(chunk, dict) for chunk in out), out  # not error strings
            cache[family, minion_id] = states(out)
        return cache[family, minion_id]

    return render
