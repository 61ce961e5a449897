"""Ground Truth pre-labeling Lambda: turn a manifest line into the review task's input (ARCHITECTURE §7).

Event: ``{"version": "2018-10-16", "labelingJobArn": ..., "dataObject": {"source-ref": <batch uri>}}`` (or
``{"source": <batch uri or batch JSON>}``). Returns ``{"taskInput": <batch>, "isHumanAnnotationRequired": true}``;
the template sees the batch as ``task.input``. The batch is read through `qa_workflow.storage` (``s3://``,
``file://`` or a path) and validated against the contract; an invalid batch raises, so Ground Truth marks that
object failed instead of showing a half task.

The logic lives in `qa_workflow.confirmations.consolidate`; the zip carries
``qa_workflow/{__init__,contract,storage}.py`` and ``qa_workflow/confirmations/`` (`lambdas.package`); standard
library + boto3.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from qa_workflow.confirmations import consolidate

# In AWS Lambda: INFO to CloudWatch; run locally the host program's logging settings decide.
if "AWS_LAMBDA_FUNCTION_NAME" in os.environ or "SEGQA_LOG_LEVEL" in os.environ:
    logging.getLogger("segqa").setLevel(os.environ.get("SEGQA_LOG_LEVEL", "INFO"))


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return consolidate.pre_labeling(event)
