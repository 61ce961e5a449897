"""`segqa deploy --greengrass DIR`: publish the edge component that `segqa export --greengrass` wrote.

Uploads each artifact of ``DIR/greengrass/artifacts/<name>/<version>/`` to ``s3://BUCKET/PREFIX/<name>/<version>/``,
rewrites the recipe's artifact URIs to those objects, and calls ``greengrassv2 create_component_version`` with the
recipe inline. The core devices' token exchange role must be allowed ``s3:GetObject`` on that prefix (docs/aws.md).
A version that exists already is an error from Greengrass (versions are immutable): bump ``--component-version``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qa_workflow import storage
from qa_workflow.contract import SegqaError

__all__ = ["component_request", "publish_component", "RECIPE_FILE"]

RECIPE_FILE = "recipe.yaml"  # as training.greengrass.RECIPE_FILE (cloud code does not import the training package)


def _folder(component_dir: str | os.PathLike[str]) -> Path:
    path = Path(component_dir)
    if (path / "greengrass" / RECIPE_FILE).is_file():  # the export folder was given
        path = path / "greengrass"
    if not (path / RECIPE_FILE).is_file():
        raise SegqaError(f"{component_dir}: no {RECIPE_FILE}; write the component with "
                         "'segqa export --model MODEL --out DIR --greengrass'")
    return path


def component_request(component_dir: str | os.PathLike[str], artifacts_uri: str) -> tuple[dict[str, Any],
                                                                                         dict[str, Path]]:
    """The ``CreateComponentVersion`` request (recipe inline, artifact URIs under ``artifacts_uri``) and the files
    to upload (``{s3 uri: local file}``). No AWS call."""
    import yaml

    folder = _folder(component_dir)
    if not storage.is_s3(artifacts_uri):
        raise SegqaError(f"--artifacts: expected s3://bucket/prefix for the component's artifacts, "
                         f"got {artifacts_uri!r}")
    recipe = yaml.safe_load((folder / RECIPE_FILE).read_text(encoding="utf-8"))
    name, version = recipe["ComponentName"], recipe["ComponentVersion"]
    local = folder / "artifacts" / name / version
    uploads: dict[str, Path] = {}
    for manifest in recipe.get("Manifests", []):
        for artifact in manifest.get("Artifacts", []):
            file = artifact["URI"].rsplit("/", 1)[1]
            if not (local / file).is_file():
                raise SegqaError(f"{local / file}: artifact named by {folder / RECIPE_FILE} is missing")
            uri = storage.join(artifacts_uri, name, version, file)
            artifact["URI"] = uri
            uploads[uri] = local / file
    body = yaml.safe_dump(recipe, sort_keys=False, width=1000).encode("utf-8")
    return {"inlineRecipe": body, "tags": {"project": "segqa"}}, uploads


def publish_component(component_dir: str | os.PathLike[str], artifacts_uri: str, greengrass_client: Any
                      ) -> dict[str, Any]:
    """Upload the artifacts and create the component version; returns ``{arn, componentName, componentVersion,
    status, artifacts}``. A Greengrass error names the component and its reason."""
    from botocore.exceptions import ClientError

    request, uploads = component_request(component_dir, artifacts_uri)
    for uri, path in uploads.items():
        storage.write_bytes(uri, path.read_bytes(), "application/octet-stream")
    try:
        response = greengrass_client.create_component_version(**request)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise SegqaError(f"Greengrass refused the component version: {err.get('Code')}: {err.get('Message')}") from None
    return {"arn": response["arn"], "componentName": response["componentName"],
            "componentVersion": response["componentVersion"],
            "status": response.get("status", {}).get("componentState"), "artifacts": sorted(uploads)}
