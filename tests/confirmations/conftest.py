"""Tests of `qa_workflow/confirmations/`: the store engines and `segqa store`."""
