"""Tests of `qa_workflow/cli/` as a whole; each command's behaviour is tested beside its library."""
