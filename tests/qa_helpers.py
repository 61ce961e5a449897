"""Small builders shared by the tests of the review-work part (tests/test_qa_*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.dataset import DatasetWriter

H, W = 176, 208


def phantom(rng: np.random.Generator, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A head-like slice: nested ellipses (csf rim, gray, white core) with noise -> (image uint8, labels uint8)."""
    yy, xx = np.mgrid[:H, :W]
    r = np.sqrt(((yy - H / 2) / (60 + shift)) ** 2 + ((xx - W / 2) / (75 + shift)) ** 2)
    labels = np.select([r < 0.45, r < 0.8, r < 1.0], [3, 2, 1], 0).astype(np.uint8)
    tone = np.array([5, 40, 120, 200], np.float32)[labels]
    image = np.clip(tone + rng.normal(0, 8, size=(H, W)), 0, 255).astype(np.uint8)
    return image, labels


def tiny_dataset(root: Path, subjects: int = 3, slices: int = 6, seed: int = 0, split: str = "pool") -> Path:
    """A dataset folder with ``subjects`` × ``slices`` phantom slices, all in ``split``."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, source="test-phantom", seed=seed) as w:
        for s in range(subjects):
            for k in range(slices):
                image, labels = phantom(rng, shift=float(k))
                w.add(f"sub-{s + 1:03d}", k, image, labels, split)
    return root


class IntensityPredictor:
    """A stand-in segmenter: softmax of how close each pixel's intensity is to each class's tone.

    Has the interface of training.predict.Predictor that `run_predictions` uses.
    """

    version = "intensity-1"
    network = "intensity"

    def __init__(self, sharpness: float = 0.004, channels: int = 4) -> None:
        self.sharpness = sharpness
        self.channels = channels

    def predict_proba(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        x = images.astype(np.float32)[:, None] / 255.0
        tones = (np.array([5, 40, 120, 200], np.float32) / 255.0)[: self.channels]
        logits = -((x - tones[None, :, None, None]) ** 2) / self.sharpness
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict_mc(self, images, samples, seed=0, batch_size=8):
        from types import SimpleNamespace

        mean = self.predict_proba(images)
        mi = np.full(images.shape, 0.01, np.float32)
        return SimpleNamespace(mean=mean, entropy=None, mutual_info=mi, samples=samples)


def score_frame(n_subjects: int = 6, slices: int = 20, seed: int = 0):
    """A synthetic score table (the columns select needs), confidence spread over [0.3, 1]."""
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
                    "reviewable": px >= 30, "skip_reason": "" if px >= 30 else f"{px} px < 30",
                    "model_version": "m1", "image": "", "pred_mask": "", "prob_file": "",
                })
    return pd.DataFrame(rows)
