"""No Salt module of xenha shares its file name with a ``_utils`` module: an ``import`` of the
util from inside a same-named execution module can find the module itself (it did for
xenha_proof: every signed answer failed until the minion restarted)."""

from pathlib import Path

REPO = Path(__file__).parents[2]
KINDS = ("_modules", "_states", "_beacons", "_runners", "_engines", "_grains")


def test_no_salt_module_is_named_like_a_util():
    utils = {p.stem for p in (REPO / "_utils").glob("*.py")}
    clashes = sorted(
        f"{kind}/{p.name}"
        for kind in KINDS
        if (REPO / kind).is_dir()
        for p in (REPO / kind).glob("*.py")
        if p.stem in utils
    )
    assert not clashes, f"rename the util or the module: {clashes}"
