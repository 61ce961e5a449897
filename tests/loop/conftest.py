"""Tests of `qa_workflow/loop/`: retraining sets, the model registry and a miniature loop."""
