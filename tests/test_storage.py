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



def test_require_s3_names_the_field_and_the_service():
    assert storage.require_s3("--data", "s3://b/p/") == "s3://b/p/"
    with pytest.raises(SegqaError, match=r"^--data: SageMaker Processing reads and writes S3; expected "
                                         r"s3://bucket/prefix, got '/local/data'$"):
        storage.require_s3("--data", "/local/data", "SageMaker Processing")
    with pytest.raises(SegqaError, match="invalid S3 URI"):
        storage.require_s3("train", "s3:///no-bucket")

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


def test_atomic_write_text_keeps_the_text_as_given(tmp_path):
    p = tmp_path / "sub" / "index.csv"
    storage.atomic_write_text(p, "a,b\r\n1,é\r\n")
    assert p.read_bytes() == "a,b\r\n1,é\r\n".encode()
    assert os.listdir(p.parent) == ["index.csv"]


def test_atomic_write_with_a_failing_writer_keeps_the_old_file_and_leaves_no_litter(tmp_path):
    p = tmp_path / "model.params"
    p.write_bytes(b"old")
    seen = []

    def half_written(name):
        seen.append(name)
        with open(name, "wb") as fh:
            fh.write(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        storage.atomic_write_with(p, half_written)
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.params"]
    assert seen[0].endswith(".params")  # the writer sees the target's suffix (savefig picks the format by it)

    storage.atomic_write_with(p, lambda name: open(name, "wb").write(b"new"))
    assert p.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.params"]


def test_atomic_create_bytes_never_replaces_a_file(tmp_path):
    p = tmp_path / "secret.key"
    old = os.umask(0o022)
    try:
        assert storage.atomic_create_bytes(p, b"first", mode=0o600) is True
        assert storage.atomic_create_bytes(p, b"second", mode=0o600) is False
    finally:
        os.umask(old)
    assert p.read_bytes() == b"first"
    assert p.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["secret.key"]


def test_atomic_folder_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "stale.txt").write_text("from the old build")
    with storage.atomic_folder(out) as build:
        assert build.parent == tmp_path and build != out
        (build / "index.csv").write_text("new")
        assert (out / "stale.txt").exists()  # the old folder stays in place until the block ends
    assert sorted(os.listdir(out)) == ["index.csv"]
    assert os.listdir(tmp_path) == ["dataset"]


def test_a_failure_while_building_leaves_the_old_folder_intact_and_no_litter(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.onnx").write_text("old")
    with pytest.raises(RuntimeError):
        with storage.atomic_folder(out) as build:
            (build / "model.onnx").write_text("half")
            raise RuntimeError("parity failed")
    assert (out / "model.onnx").read_text() == "old"
    assert os.listdir(tmp_path) == ["export"]


def test_a_failure_during_the_swap_moves_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.onnx").write_text("old")
    staging = storage.staging_folder(out)
    (staging / "model.onnx").write_text("new")
    real_replace = os.replace

    def fail_moving_the_new_folder_in(src, dst):
        if os.fspath(src) == os.fspath(staging):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_moving_the_new_folder_in)
    with pytest.raises(OSError, match="rename failed"):
        storage.swap_folder(staging, out)
    monkeypatch.undo()
    assert (out / "model.onnx").read_text() == "old"
    assert not (tmp_path / ".export.old").exists()


def test_a_new_folder_is_created_with_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with storage.atomic_folder(tmp_path / "new") as build:
            (build / "a.txt").write_text("a")
    finally:
        os.umask(old)
    assert (tmp_path / "new" / "a.txt").read_text() == "a"
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o755
