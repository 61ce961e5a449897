"""qa_workflow — the operator's tool: the `segqa` CLI, scoring, selection, overlays, batching, the Ground Truth
job client, the local review portal, the loop, and the storage/contract modules shared with the Lambdas.

This file stays import-free so that the Lambda zips can carry `qa_workflow/contract.py` and
`qa_workflow/storage.py` without pulling in numpy or mxnet.
"""

__version__ = "0.1.0"
