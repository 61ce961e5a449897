"""Tests of `qa_workflow/cloud/` and `cloudformation/`: deploy, SageMaker launches, the template."""
