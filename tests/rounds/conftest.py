"""Tests of `qa_workflow/rounds/`: prediction, scoring, selection, overlays and batching of a review round."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def _score_frame(n_subjects: int = 6, slices: int = 20, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for k in range(slices):
            for cid, cls in ((1, "csf"), (2, "gray_matter"), (3, "white_matter")):
                px = int(rng.integers(0, 2000))
                conf = float(rng.uniform(0.3, 1.0))
                rows.append({
                    "item_id": f"sub-{s:03d}/{k:03d}/{cls}", "subject": f"sub-{s:03d}", "slice": k,
                    "slice_id": f"sub-{s:03d}/{k:03d}", "class_id": cid, "class_name": cls, "pixel_count": px,
                    "mean_prob": conf, "soft_dice": conf, "entropy": 1 - conf, "mutual_info": np.nan,
                    "surface_agreement": conf,
                    "reviewable": px >= 30, "skip_reason": "" if px >= 30 else f"{px} px < 30",
                    "model_version": "m1", "image": "", "pred_mask": "", "prob_file": "",
                })
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def score_frame() -> Callable:
    """Factory: ``score_frame(n_subjects=6, slices=20, seed=0)`` -> a synthetic score table (the columns
    selection needs), confidence spread over [0.3, 1]."""
    return _score_frame


@pytest.fixture
def batched_round(tmp_path, intensity_predictor, tiny_dataset) -> tuple[str, str]:
    """A round of 2 subjects x 3 slices (data in ``tmp_path/data``), 12 masks routed to verify and batched to
    ``tmp_path/dest``: (round folder, destination)."""
    from qa_workflow.rounds.batching import write_batches
    from qa_workflow.rounds.predict import run_predictions
    from qa_workflow.rounds.round_dir import select_round
    from qa_workflow.rounds.selection import SelectionPolicy

    data = tiny_dataset(tmp_path / "data", subjects=2, slices=3)
    run_predictions(intensity_predictor(), data, str(tmp_path / "pred"))
    out = str(tmp_path / "round" / "r03")
    select_round(str(tmp_path / "pred"), out, SelectionPolicy(budget=12, seed=1))
    write_batches(out, str(tmp_path / "dest"), workers=1)
    return out, str(tmp_path / "dest")
