"""lambdas — the Ground Truth Lambda functions (pre-labeling, post-labeling consolidation, retrain trigger).

Each is deployed as its own zip holding `handler.py` plus copies of the shared contract, storage and store
modules; standard library + boto3 only.
"""
