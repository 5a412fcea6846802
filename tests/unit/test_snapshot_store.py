"""The master-side JSON store: atomic writes, locked read-modify-write, bad names refused."""

import json
import multiprocessing

import pytest
import xenha_store


def test_load_missing_is_empty(tmp_path):
    assert xenha_store.load(tmp_path, "maintenance") == {}


def test_save_load_roundtrip_leaves_no_temp_files(tmp_path):
    xenha_store.save(tmp_path, "maintenance", {"ServVirt1": {"since": 1.5}})
    assert xenha_store.load(tmp_path, "maintenance") == {"ServVirt1": {"since": 1.5}}
    assert sorted(p.name for p in (tmp_path / "xenha").iterdir()) == ["maintenance.json"]
    xenha_store.delete(tmp_path, "maintenance")
    assert xenha_store.load(tmp_path, "maintenance") == {}


def _bump(cachedir):
    for _ in range(50):
        with xenha_store.edit(cachedir, "counter") as doc:
            doc["n"] = doc.get("n", 0) + 1


def test_edit_is_exclusive_across_processes(tmp_path):
    procs = [multiprocessing.Process(target=_bump, args=(str(tmp_path),)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert xenha_store.load(tmp_path, "counter") == {"n": 200}


def test_edit_does_not_save_on_error(tmp_path):
    xenha_store.save(tmp_path, "doc", {"a": 1})
    with pytest.raises(RuntimeError), xenha_store.edit(tmp_path, "doc") as doc:
        doc["a"] = 2
        raise RuntimeError("boom")
    assert xenha_store.load(tmp_path, "doc") == {"a": 1}


@pytest.mark.parametrize("name", ["../etc/passwd", "", "a/b", ".hidden", None])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="invalid store document name"):
        xenha_store.load(tmp_path, name)


def test_corrupt_document_is_named(tmp_path):
    (tmp_path / "xenha").mkdir()
    (tmp_path / "xenha" / "doc.json").write_text("{torn")
    with pytest.raises(ValueError, match="doc.json is not valid JSON"):
        xenha_store.load(tmp_path, "doc")
    (tmp_path / "xenha" / "doc.json").write_text(json.dumps([1]))
    with pytest.raises(ValueError, match="not a JSON object"):
        xenha_store.load(tmp_path, "doc")
