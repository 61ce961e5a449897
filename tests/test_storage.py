"""`qa_workflow.storage`: local paths, file and S3 URIs, atomic writes, errors that name the file."""

import json
import os

import pytest

from qa_workflow import storage
from qa_workflow.contract import SegqaError


def test_local_paths_and_file_uris(tmp_path):
    p = tmp_path / "a" / "b.json"
    storage.write_json(str(p), {"x": 1})
    assert storage.read_json(p.as_uri()) == {"x": 1}
    assert storage.exists(str(p)) and not storage.exists(str(tmp_path / "nope"))
    storage.write_bytes(p.as_uri(), b"raw")
    assert storage.read_bytes(str(p)) == b"raw"
    assert list(storage.list_uris(tmp_path)) == [str(p)]
    # no temporary files are left behind by atomic writes
    assert sorted(os.listdir(p.parent)) == ["b.json"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "keep.txt"
    storage.write_text(str(p), "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        storage.write_text(str(p), "new")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(SegqaError, match="no such file"):
        storage.read_bytes(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SegqaError, match="bad.json: not valid JSON"):
        storage.read_json(tmp_path / "bad.json")
    with pytest.raises(SegqaError, match="unsupported URI scheme"):
        storage.read_bytes("ftp://x/y")


def test_s3_round_trip(s3_bucket):
    uri = f"s3://{s3_bucket}/rounds/r1/batch.json"
    storage.write_json(uri, {"batch_id": "b"})
    assert storage.read_json(uri) == {"batch_id": "b"}
    assert storage.exists(uri)
    assert not storage.exists(f"s3://{s3_bucket}/rounds/r1/none.json")
    storage.write_text(f"s3://{s3_bucket}/rounds/r1/manifest.jsonl", json.dumps({"source-ref": uri}))
    assert list(storage.list_uris(f"s3://{s3_bucket}/rounds/r1/")) == [
        uri, f"s3://{s3_bucket}/rounds/r1/manifest.jsonl"]
    with pytest.raises(SegqaError, match="no such object"):
        storage.read_bytes(f"s3://{s3_bucket}/missing")
    assert storage.split_s3("s3://b/k/x") == ("b", "k/x")


def test_atomic_writes_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "shared.json"
        storage.write_json(str(p), {"a": 1})
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644  # readable by a portal running as another user
