"""Simulated correctors (ARCHITECTURE §10): boundary noise, and a verify job chained to an adjust job, both filled
through the real pre- and post-labeling handlers, with the cost model's seconds in the store."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from qa_workflow import storage
from qa_workflow.confirmations.export import export_corrections
from qa_workflow.confirmations.store import clear_store_cache, open_store
from qa_workflow.contract import to_display
from qa_workflow.review.simulated_correctors import COST_MODEL, boundary_noise, simulate_adjust
from qa_workflow.review.simulated_reviewers import load_truth_labels, simulate_round
from qa_workflow.rounds.adjusting import rejected_in_store, write_adjust_tasks
from qa_workflow.rounds.batching import write_batches
from qa_workflow.rounds.predict import run_predictions
from qa_workflow.rounds.round_dir import select_round
from qa_workflow.rounds.selection import SelectionPolicy


@pytest.fixture(autouse=True)
def _fresh_store_cache():
    yield
    clear_store_cache()


def test_boundary_noise_moves_boundaries_by_at_most_one_pixel():
    labels = np.zeros((40, 50), np.uint8)
    labels[10:30, 10:40] = 2
    labels[15:25, 20:30] = 3
    noisy = boundary_noise(labels, np.random.default_rng(0), p=0.5)
    changed = noisy != labels
    assert changed.any()
    padded = np.pad(labels, 1, mode="edge")
    neighbours = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
    assert ((neighbours != labels).any(axis=0)[changed]).all()  # only boundary pixels change...
    assert (neighbours == noisy)[:, changed].any(axis=0).all()  # ...and only to a neighbour's label
    assert (boundary_noise(labels, np.random.default_rng(0), p=0.0) == labels).all()


def test_rejected_masks_are_corrected_through_the_handlers(tmp_path, intensity_predictor, tiny_dataset):
    data = tiny_dataset(tmp_path / "data", subjects=2, slices=3)
    run_predictions(intensity_predictor(), data, str(tmp_path / "pred"))
    round_dir = str(tmp_path / "r01")
    select_round(str(tmp_path / "pred"), round_dir, SelectionPolicy(budget=12, seed=1))
    write_batches(round_dir, workers=1)
    store_uri = f"sqlite:///{tmp_path}/store.db"
    verify = simulate_round(round_dir, data, store_uri=store_uri, reviewers=2, seed=3, tau=0.995, slope=0.002)
    store = open_store(store_uri)
    votes = list(store.iter_votes(job=verify.job_name))
    assert votes and all(v.seconds == COST_MODEL.verify_s for v in votes)  # a screen's seconds shared per mask

    rejected = rejected_in_store(store, verify.job_name)
    assert rejected  # strict reviewers (tau 0.995) reject some of the stand-in model's masks
    tasks = write_adjust_tasks(round_dir, rejected, verify.job_name)
    truth = load_truth_labels(data)
    result = simulate_adjust(tasks.manifest, truth, store_uri=store_uri, job_name="segqa-sim-adjust", seed=3)
    assert result.failed_objects == [] and result.slices == sorted(tasks.slices)

    rows = export_corrections(store, job="segqa-sim-adjust")
    assert [r["slice_id"] for r in rows] == sorted(tasks.slices)
    for row in rows:
        assert row["seconds"] == COST_MODEL.adjust_s and row["modified"] is True
        corrected = np.asarray(Image.open(io.BytesIO(storage.read_bytes(row["mask_uri"]))))
        true = to_display(truth(row["slice_id"]))  # corrections are drawn in the display orientation
        boundary_share = (corrected != true).mean()
        assert boundary_share < 0.05  # the truth, up to boundary noise
