"""Importers of real data into the dataset format (being built in issue #2)."""

from qa_workflow.cli._common import not_built


def import_oasis(*args, **kwargs):
    not_built("segqa data import --oasis", 2)


def import_nifti(*args, **kwargs):
    not_built("segqa data import --nifti", 2)


def import_png(*args, **kwargs):
    not_built("segqa data import --png", 2)
