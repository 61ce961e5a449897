"""The self-hosted review portal (`segqa review serve`): Ground Truth's worker experience, locally.

Importing this package imports nothing heavy; `qa_workflow.review.portal.app` pulls in FastAPI.
"""
