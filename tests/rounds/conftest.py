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
