"""The test tree itself: pytest imports a test file that is not in a package under its bare
module name, so two such files with one name stop the whole run at collection."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_modules_outside_packages_have_unique_names():
    bare = [
        path.name for path in TESTS.rglob("test_*.py") if not (path.parent / "__init__.py").exists()
    ]
    assert bare, "no test modules found: the layout this test checks has changed"
    assert [name for name, count in Counter(bare).items() if count > 1] == []
