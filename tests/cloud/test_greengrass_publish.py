"""Publishing the edge component (`qa_workflow.cloud.greengrass`, `segqa deploy --greengrass`): artifacts to S3,
the recipe rewritten to them, and a CreateComponentVersion request that botocore's model accepts."""

from __future__ import annotations

import boto3
import pytest
import yaml
from botocore.stub import ANY, Stubber

from qa_workflow import storage
from qa_workflow.cli import main
from qa_workflow.cloud import greengrass as publish
from qa_workflow.contract import SegqaError
from training import greengrass


@pytest.fixture
def component(tmp_path):
    """A component folder as `segqa export --greengrass` lays it out (artifacts with stand-in bytes)."""
    folder = tmp_path / "export" / "greengrass"
    files = greengrass.artifact_dir(folder, greengrass.COMPONENT_NAME, "1.0.0")
    files.mkdir(parents=True)
    for name in ("model.onnx", "model_card.json", "segment.py", "requirements.txt"):
        (files / name).write_bytes(f"contents of {name}".encode())
    recipe = greengrass.recipe(greengrass.COMPONENT_NAME, "1.0.0", "enet-test")
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return tmp_path / "export"


def test_publish_uploads_artifacts_and_creates_the_version(component, s3_bucket, model_problems):
    request, uploads = publish.component_request(component, f"s3://{s3_bucket}/greengrass")
    assert model_problems("greengrassv2", "CreateComponentVersion", request) == []
    recipe = yaml.safe_load(request["inlineRecipe"])
    uris = [a["URI"] for a in recipe["Manifests"][0]["Artifacts"]]
    assert uris == sorted(uploads, key=uris.index)
    assert all(u.startswith(f"s3://{s3_bucket}/greengrass/{greengrass.COMPONENT_NAME}/1.0.0/") for u in uris)
    local = yaml.safe_load((component / "greengrass" / "recipe.yaml").read_text())
    for artifact in local["Manifests"][0]["Artifacts"]:
        artifact["URI"] = uris[local["Manifests"][0]["Artifacts"].index(artifact)]
    assert recipe == local  # only the artifact URIs changed
    client = boto3.client("greengrassv2", region_name="us-east-1")
    arn = f"arn:aws:greengrass:us-east-1:123456789012:components:{greengrass.COMPONENT_NAME}:versions:1.0.0"
    with Stubber(client) as stub:
        stub.add_response("create_component_version", {
            "arn": arn, "componentName": greengrass.COMPONENT_NAME, "componentVersion": "1.0.0",
            "creationTimestamp": "2026-12-01T17:00:00Z", "status": {"componentState": "REQUESTED"}},
            {"inlineRecipe": request["inlineRecipe"], "tags": ANY})
        stub.add_client_error("create_component_version", "ConflictException", "version 1.0.0 exists")
        result = publish.publish_component(component, f"s3://{s3_bucket}/greengrass", client)
        assert result["arn"] == arn and result["status"] == "REQUESTED"
        for uri in uris:
            assert storage.read_bytes(uri) == f"contents of {uri.rsplit('/', 1)[1]}".encode()
        with pytest.raises(SegqaError, match="ConflictException: version 1.0.0 exists"):
            publish.publish_component(component, f"s3://{s3_bucket}/greengrass", client)


def test_a_folder_without_a_component_says_how_to_make_one(tmp_path):
    with pytest.raises(SegqaError, match="segqa export --model MODEL --out DIR --greengrass"):
        publish.component_request(tmp_path, "s3://b/greengrass")


def test_deploy_greengrass_dry_run_prints_the_recipe_and_uploads(component, capsys):
    rc = main(["deploy", "--greengrass", str(component), "--artifacts", "s3://b-art/gg", "--dry-run", "--region",
               "us-east-1"])
    out = capsys.readouterr().out
    assert rc == 0 and "dry run: nothing uploaded or created" in out
    assert "# would upload" in out and "s3://b-art/gg/com.segqa.BrainSegmenter/1.0.0/model.onnx" in out
    assert main(["deploy", "--greengrass", str(component), "--region", "us-east-1"]) == 2
    assert "--greengrass needs --artifacts" in capsys.readouterr().err
