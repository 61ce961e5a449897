"""`make lambdas` (`lambdas.package`): reproducible zips that run in a clean interpreter with boto3.

`make lambdas` (python -m lambdas.package): one reproducible zip per function that imports and runs in a clean
interpreter holding only the standard library, boto3 and the zip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lambdas import package

SHARED = {"qa_workflow/__init__.py", "qa_workflow/contract.py", "qa_workflow/storage.py",
          *(p.relative_to(package.ROOT).as_posix()
            for p in (package.ROOT / "qa_workflow" / "confirmations").rglob("*.py"))}


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("lambdas")
    proc = subprocess.run([sys.executable, "-m", "lambdas.package", "--out", str(out)], capture_output=True,
                          text=True, timeout=120, cwd=package.ROOT)
    assert proc.returncode == 0, proc.stderr
    return {p.stem: p for p in out.glob("*.zip")}


def test_one_zip_per_function_with_handler_and_shared_modules(zips):
    assert {"pre_labeling", "post_labeling"} <= set(zips)
    assert set(zips) == set(package.functions())
    for name, path in zips.items():
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            assert names == {"handler.py"} | SHARED, name
            assert zf.read("handler.py") == (package.ROOT / "lambdas" / name / "handler.py").read_bytes()


def test_zips_are_reproducible(zips, tmp_path):
    for name, path in zips.items():
        assert package.build_zip(name) == path.read_bytes()


def _boto_only_site(root: Path) -> Path:
    """A folder holding only boto3 and its dependencies (what the Lambda runtime provides)."""
    return package.runtime_site(root / "boto-only")


_RUNNER = r"""
import json, sys
zip_path, deps, mode, event_path = sys.argv[1:5]
sys.path[:0] = [zip_path, deps]
import handler
event = json.load(open(event_path))
out = handler.lambda_handler(event, None)
heavy = sorted(m for m in ("numpy", "pandas", "liquid", "mxnet", "typer", "training", "analysis") if m in sys.modules)
print(json.dumps({"out": out, "heavy": heavy, "store_file": sys.modules["qa_workflow.confirmations.store"].__file__}))
"""


def _run_zip(zip_path: Path, deps: Path, event: dict, tmp_path: Path, env_extra: dict) -> dict:
    ev = tmp_path / f"event-{zip_path.stem}.json"
    ev.write_text(json.dumps(event))
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", **env_extra}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", _RUNNER, str(zip_path), str(deps), "run", str(ev)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_zips_run_the_handlers_in_a_clean_interpreter(zips, tmp_path, gt):
    for path in zips.values():
        package.check_import(path)
    deps = _boto_only_site(tmp_path)
    batch = gt.batches(1, 12)[0]
    (tmp_path / "b.json").write_text(json.dumps(batch))
    pre = _run_zip(zips["pre_labeling"], deps, {"version": "2018-10-16", "labelingJobArn": gt.job_arn,
                                                 "dataObject": {"source-ref": str(tmp_path / "b.json")}}, tmp_path, {})
    assert pre["out"] == {"taskInput": batch, "isHumanAnnotationRequired": True}
    assert pre["heavy"] == [] and pre["store_file"].startswith(str(zips["pre_labeling"]))

    decisions = [{"item_id": it["item_id"], "decision": "accept"} for it in batch["items"]]
    payload = [{"datasetObjectId": "0", "dataObject": {"s3Uri": str(tmp_path / "b.json")},
                "annotations": [{"workerId": w, "annotationData": {"content": gt.form_content(batch, decisions)}}
                                for w in gt.workers]}]
    (tmp_path / "p.json").write_text(json.dumps(payload))
    store = f"sqlite:///{tmp_path}/store.db"
    post = _run_zip(zips["post_labeling"], deps, gt.post_event(str(tmp_path / "p.json")), tmp_path,
                    {"SEGQA_STORE": store})
    assert post["heavy"] == []
    label = post["out"][0]["consolidatedAnnotation"]["content"]["segqa-review"]
    assert [r["confirm_count"] for r in label["items"]] == [3] * 12

    from qa_workflow.confirmations.store import open_store

    assert {s.confirm_count for s in open_store(store).iter_items()} == {3}


def test_check_import_allows_boto3_and_catches_anything_else(tmp_path):
    from qa_workflow.contract import SegqaError

    ok = tmp_path / "ok.zip"
    with zipfile.ZipFile(ok, "w") as zf:
        zf.writestr("handler.py", "import boto3\n\ndef lambda_handler(event, context):\n    return 1\n")
    package.check_import(ok)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("handler.py", "import numpy\n\ndef lambda_handler(event, context):\n    return 1\n")
    with pytest.raises(SegqaError, match="does not import from the zip alone.*numpy"):
        package.check_import(bad)


def test_the_import_check_names_its_interpreter_and_a_runtime_mismatch(tmp_path, capsys):
    """The zips target the stack's runtime; the check says which Python it imported them with."""
    assert package.LAMBDA_RUNTIME == "python3.12"
    assert package.interpreter_runtime(sys.executable) == f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert package.main(["--out", str(tmp_path), "--python", sys.executable]) == 0
    out = capsys.readouterr().out
    checked = package.interpreter_runtime(sys.executable)
    assert f"import-checked with {checked}" in out
    assert ("differs from the Lambda runtime python3.12" in out) == (checked != "python3.12")
    assert package.main(["--out", str(tmp_path), "--python", str(tmp_path / "no-python")]) == 2
    assert "no-python" in capsys.readouterr().err
