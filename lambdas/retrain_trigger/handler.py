"""Retrain-trigger Lambda: start retraining on SageMaker when enough new confirmations exist.

The logic (events, configuration, decisions, the CreateTrainingJob requests) lives in
`qa_workflow.confirmations.retrain_trigger`, copied into the zip; this module is the shell.
"""

from __future__ import annotations

from typing import Any

from qa_workflow.confirmations.retrain_trigger import handle


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, request_id=getattr(context, "aws_request_id", None))
