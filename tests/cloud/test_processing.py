"""Sharded prediction on SageMaker Processing (`qa_workflow.cloud.processing` and its entry point): the shard plan,
the requests against botocore's model, the launch, and the entry point run locally against `segqa predict`."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pandas as pd
import pytest
from botocore.stub import Stubber

from qa_workflow import storage
from qa_workflow.cli import main
from qa_workflow.cloud import processing
from qa_workflow.cloud.processing_entry import run_shard
from qa_workflow.contract import SegqaError
from qa_workflow.rounds.predict import read_score_table, run_predictions, score_probability_files

ROLE = "arn:aws:iam::123456789012:role/segqa-dev-ProcessingRole-X"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/segqa-processing:1"


def request(**over: Any) -> processing.ShardedPrediction:
    base: dict[str, Any] = dict(model_uri="s3://d-sagemaker/models/enet/export", data_uri="s3://d-sagemaker/data",
                out_uri="s3://d-sagemaker/predictions/r1", role_arn=ROLE, image_uri=IMAGE)
    base.update(over)
    return processing.ShardedPrediction(**base)


def index_rows(subjects: dict[str, int], split: str = "pool") -> list[dict[str, str]]:
    return [{"subject": s, "slice": str(k), "image": f"images/{s}/{k:03d}.png", "mask": f"masks/{s}/{k:03d}.png",
             "split": split} for s, n in subjects.items() for k in range(n)]


def test_shards_hold_whole_subjects_and_balance_slices():
    shards = processing.plan_shards({"a": 10, "b": 9, "c": 5, "d": 4, "e": 1}, 2)
    assert sorted(s for shard in shards for s in shard) == ["a", "b", "c", "d", "e"]
    sizes = [sum({"a": 10, "b": 9, "c": 5, "d": 4, "e": 1}[s] for s in shard) for shard in shards]
    assert sorted(sizes) == [14, 15]
    assert processing.plan_shards({"a": 3}, 4) == [["a"]]  # never an empty shard


def test_requests_conform_to_the_service_model_and_cover_the_split_once(model_problems):
    rows = index_rows({f"sub-{i:03d}": 5 + i for i in range(7)}) + index_rows({"sub-900": 3}, split="test")
    plan = processing.plan_sharded_prediction(request(shards=5, instances_per_job=2), rows, "20261201-170000",
                                              "abc123")
    assert [r["ProcessingResources"]["ClusterConfig"]["InstanceCount"] for r in plan.requests] == [2, 2, 1]
    for req in plan.requests:
        assert model_problems("sagemaker", "CreateProcessingJob", req) == []
        inputs = {i["InputName"]: i["S3Input"] for i in req["ProcessingInputs"]}
        assert inputs["manifests"]["S3DataDistributionType"] == "ShardedByS3Key"
        replicated = {inputs[name]["S3DataDistributionType"] for name in ("code", "model")}
        assert replicated == {"FullyReplicated"}
        # one manifest per instance under the job's own prefix
        assert len([u for u in plan.manifests if u.startswith(inputs["manifests"]["S3Uri"])]) == \
            req["ProcessingResources"]["ClusterConfig"]["InstanceCount"]
    assert len({r["ProcessingJobName"] for r in plan.requests}) == 3
    manifests = [pd.read_csv(io.BytesIO(b), dtype=str) for b in plan.manifests.values()]
    subjects = [set(m["subject"]) for m in manifests]
    assert sum(len(s) for s in subjects) == len(set().union(*subjects)) == 7  # each subject in exactly one shard
    assert sum(len(m) for m in manifests) == plan.slices == sum(5 + i for i in range(7))  # the test split is left out


@pytest.mark.parametrize(("over", "message"), [
    ({"data_uri": "/local/data"}, "--data: SageMaker Processing reads and writes S3"),
    ({"role_arn": "segqa"}, "--role: expected an IAM role ARN"),
    ({"image_uri": ""}, "--image: a processing image URI is required"),
    ({"instances_per_job": 50}, "--instances-per-job must be 1..20"),
    ({"mc_samples": 1}, "--mc-samples must be 0"),
    ({"tta": "rotate"}, "--tta 'rotate': expected one of none, flip"),
])
def test_plan_mistakes_are_named(over, message):
    with pytest.raises(SegqaError, match=message):
        request(**over).validate()


def test_dry_run_prints_one_json_array_of_requests(tmp_path, tiny_dataset, capsys, model_problems):
    data = tiny_dataset(tmp_path / "data", subjects=3, slices=2)
    rc = main(["predict", "--sagemaker", "--dry-run", "--model", "s3://b-sagemaker/models/enet/", "--data",
               "s3://b-sagemaker/data", "--index", str(data), "--out", "s3://b-sagemaker/pred/r1", "--role", ROLE,
               "--image", IMAGE, "--shards", "3", "--instances-per-job", "2", "--tta", "flip"])
    out = capsys.readouterr().out
    assert rc == 0
    requests = json.loads(out)  # the whole of stdout is the array
    assert len(requests) == 2 and all(model_problems("sagemaker", "CreateProcessingJob", r) == [] for r in requests)
    args = requests[0]["AppSpecification"]["ContainerArguments"]
    assert args[args.index("--out") + 1] == "s3://b-sagemaker/pred/r1"
    assert args[args.index("--tta") + 1] == "flip"  # each instance mirrors as the local command would


def test_dry_run_without_a_role_names_the_option(tmp_path, tiny_dataset, capsys, monkeypatch):
    monkeypatch.delenv("SEGQA_PROCESSING_ROLE_ARN", raising=False)
    data = tiny_dataset(tmp_path / "data", subjects=1, slices=1)
    rc = main(["predict", "--sagemaker", "--dry-run", "--model", "s3://b/m/", "--data", "s3://b/data", "--index",
               str(data), "--out", "s3://b/p", "--image", IMAGE])
    assert rc == 2 and "--role: expected an IAM role ARN" in capsys.readouterr().err


def test_bundle_carries_what_the_entry_point_imports(import_closure):
    files = processing.bundle_files()
    closure = import_closure(files, "qa_workflow.cloud.processing_entry")
    assert {"qa_workflow.rounds.predict", "training.predict", "training.nets"} <= closure
    assert not any(f.startswith("qa_workflow/cli/") for f in files)


def test_start_jobs_uploads_staging_and_creates_each_job(s3_bucket, model_problems):
    rows = index_rows({"sub-001": 2, "sub-002": 2, "sub-003": 1})
    plan = processing.plan_sharded_prediction(request(out_uri=f"s3://{s3_bucket}/pred/r1", shards=3,
                                                      instances_per_job=2), rows, "20261201-170000", "c0de")
    code = processing.bundle_files()
    processing.upload_staging(plan, code)
    for uri, data in plan.manifests.items():
        assert storage.read_bytes(uri) == data
    assert storage.exists(storage.join(plan.code_uri, "qa_workflow/cloud/processing_entry.py"))
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        for i, req in enumerate(plan.requests):
            arn = f"arn:aws:sagemaker:us-east-1:123456789012:processing-job/j{i}"
            stub.add_response("create_processing_job", {"ProcessingJobArn": arn}, req)
        stub.add_client_error("create_processing_job", "ResourceLimitExceeded", "too many instances")
        assert len(processing.start_jobs(plan, client)) == 2
        with pytest.raises(SegqaError, match="ResourceLimitExceeded: too many instances .0 of 2"):
            processing.start_jobs(plan, client)


def test_entry_point_on_shards_writes_what_segqa_predict_writes(s3_bucket, tmp_path, tiny_dataset, intensity_predictor):
    """Two instances, each with the manifests SageMaker would have handed it, against one local-style run."""
    data = tiny_dataset(tmp_path / "data", subjects=3, slices=4)
    data_uri = f"s3://{s3_bucket}/data"
    for path in sorted(data.rglob("*")):
        if path.is_file():
            storage.write_bytes(storage.join(data_uri, path.relative_to(data).as_posix()), path.read_bytes())
    sharded, local = f"s3://{s3_bucket}/pred/sharded", f"s3://{s3_bucket}/pred/local"
    plan, _ = processing.prepare_plan(request(data_uri=data_uri, out_uri=sharded, shards=3, instances_per_job=2),
                                      run_id="20261201-170000")
    predictor = intensity_predictor()
    for n, uri in enumerate(sorted(plan.manifests)):  # what /opt/ml/processing/input/manifests holds
        manifest = tmp_path / f"instance-{n}" / uri.rsplit("/", 1)[1]
        manifest.parent.mkdir()
        manifest.write_bytes(plan.manifests[uri])
        run_shard(predictor, manifest, data_uri, sharded, tmp_path / f"work-{n}", batch_size=3)
    run_predictions(predictor, data, local, batch_size=8)

    def objects(prefix: str) -> dict[str, bytes]:
        return {u.removeprefix(prefix + "/"): storage.read_bytes(u) for u in storage.list_uris(prefix + "/")
                if "/probs/" in u or "/masks/" in u}

    per_slice = objects(sharded)
    assert len(per_slice) == 2 * 12 and per_slice == objects(local)  # maps and masks byte for byte
    shard_tables = [read_score_table(storage.join(sharded, "shards", f"shard-{k:05d}")) for k in range(3)]
    combined = pd.concat(shard_tables).sort_values("item_id").reset_index(drop=True)
    reference = read_score_table(local).sort_values("item_id").reset_index(drop=True)
    paths = ["image", "pred_mask"]  # where the slice lay: the instance's scratch folder vs the operator's
    pd.testing.assert_frame_equal(combined.drop(columns=paths), reference.drop(columns=paths))
    # ... and the pool is scorable as one table afterwards
    summary = score_probability_files(sharded, data, sharded, model_version="intensity-1")
    assert summary.slices_scored == 12 and summary.items == 36 and not summary.rejects


def test_stack_grants_the_jobs_what_they_read_and_write_and_no_more(model_problems):
    """The processing role reaches every object a plan's jobs touch (when the folders follow docs/aws.md) and
    writes nowhere but predictions/."""
    from fnmatch import fnmatchcase

    from qa_workflow.cloud import deploy

    template = deploy._decode(deploy.TEMPLATE_PATH)
    role = template["Resources"]["ProcessingRole"]["Properties"]
    stmts = {s["Sid"]: s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]}
    bucket = "segqa-dev-sagemaker-123456789012-us-east-1"

    def keys(statement: dict[str, Any]) -> list[str]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        return [r["Fn::Sub"].replace("${DataBucket.Arn}/", "") for r in resources]

    readable, writable = keys(stmts["ReadDatasetsModelsAndStaging"]), keys(stmts["WritePredictions"])
    assert writable == ["predictions/*"] and stmts["WritePredictions"]["Action"] == ["s3:PutObject",
                                                                                      "s3:AbortMultipartUpload"]
    plan = processing.plan_sharded_prediction(
        request(model_uri=f"s3://{bucket}/models/enet/export", data_uri=f"s3://{bucket}/datasets/oasis",
                out_uri=f"s3://{bucket}/predictions/r7"), index_rows({"sub-001": 2}), "20261201-170000", "c0de")
    req = plan.requests[0]
    read_uris = [i["S3Input"]["S3Uri"] + "x" for i in req["ProcessingInputs"]] + [f"s3://{bucket}/datasets/oasis/i.png"]
    for uri in read_uris:
        key = storage.split_s3(uri)[1]
        assert any(fnmatchcase(key, pattern) for pattern in readable), uri
    assert not any(a == "*" or a.endswith(":*") for s in stmts.values()
                   for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))
    assert stmts["PullProcessingImage"]["Resource"] == {"Fn::GetAtt": ["ProcessingImageRepository", "Arn"]}
    assert template["Outputs"]["ProcessingRoleArn"]["Value"] == {"Fn::GetAtt": ["ProcessingRole", "Arn"]}


def test_processing_image_pins_what_the_lock_pins():
    """docker/processing/requirements.txt stays in step with requirements.lock (one set of versions)."""
    from qa_workflow.cloud.processing import ROOT

    def pins(path):
        return dict(line.split("==", 1) for line in (ROOT / path).read_text().splitlines()
                    if "==" in line and not line.startswith("#"))

    image, lock = pins("docker/processing/requirements.txt"), pins("requirements.lock")
    assert {"mxnet", "numpy", "onnxruntime", "pandas", "pyarrow"} <= set(image)
    assert {name: lock.get(name) for name in image} == image
