"""Ground Truth post-labeling (annotation consolidation) Lambda (ARCHITECTURE §7-§8).

Event: ``{"version", "labelingJobArn", "labelCategories", "labelAttributeName", "roleArn",
"payload": {"s3Uri": <annotations file>}}``. For every data object and worker it reads the submitted form
(``annotationData.content`` or ``.s3Uri``), matches the ``decisions`` to the batch's items by ``item_id``,
writes each vote at most once to the store named by ``SEGQA_STORE`` (``dynamodb://<table>`` or
``sqlite:///<path>``), and returns exactly one ``{"datasetObjectId", "consolidatedAnnotation": {"content":
{<labelAttributeName>: {...}}}}`` per object. Replays and concurrent invocations are safe: a vote is keyed by
(job, item, worker) and written once, in the same transaction as its item's counts.

The logic lives in `qa_workflow.confirmations.consolidate` (copied into the zip); this module is the shell.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from qa_workflow.confirmations import consolidate

# In AWS Lambda the structured JSON logs go to CloudWatch at INFO; run locally (the portal, simulated reviewers,
# the demo) the host program's logging settings decide, unless SEGQA_LOG_LEVEL says otherwise.
if "AWS_LAMBDA_FUNCTION_NAME" in os.environ or "SEGQA_LOG_LEVEL" in os.environ:
    logging.getLogger("segqa").setLevel(os.environ.get("SEGQA_LOG_LEVEL", "INFO"))


def lambda_handler(event: dict[str, Any], context: Any) -> list[dict[str, Any]]:
    return consolidate.handle_post_labeling(event, request_id=getattr(context, "aws_request_id", None))
