"""The retraining-length benchmark's pseudo-labelled set (benchmarks/b7_retrain_epochs.py, ``--pseudo-labels``):
a round's set plus its unreviewed pool slices, labelled where the round's probability maps are sure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qa_workflow.contract import IGNORE_LABEL, IMAGE_HEIGHT, IMAGE_WIDTH
from training.dataset import SliceRecord, read_index, write_index

H, W = IMAGE_HEIGHT, IMAGE_WIDTH


def _slice(root: Path, subject: str, index: int, split: str, site: str, label: int) -> SliceRecord:
    image, mask = f"images/{subject}/{index:03d}.png", f"masks/{subject}/{index:03d}.png"
    for rel in (image, mask):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W), 10 * index, np.uint8)).save(root / image)
    Image.fromarray(np.full((H, W), label, np.uint8)).save(root / mask)
    return SliceRecord(subject, index, image, mask, split, site)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A finished round: cohort (train s0; pool p1 slices 0-2), round-01's training set (s0 and the corrected
    p1/000) and its pool predictions."""
    cohort, rnd = tmp_path / "cohort", tmp_path / "rounds" / "round-01"
    write_index(cohort, [_slice(cohort, "s0", 0, "train", "A", 1),
                         *(_slice(cohort, "p1", i, "pool", "B", 2) for i in range(3))])
    tset = rnd / "training-set"
    write_index(tset, [_slice(tset, "s0", 0, "train", "A", 1), _slice(tset, "p1", 0, "train", "B", 3)])
    for i in range(3):
        probs = np.full((4, H, W), 0.05, np.float32)
        probs[2] = 0.85  # gray matter, under the threshold of 0.9 ...
        probs[3, 0, :] = 0.95  # ... but for the first row, white matter, above it
        probs[2, 0, :] = 0.0
        path = rnd / "predictions" / "probs" / "p1" / f"{i:03d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, probs=probs.astype(np.float16))
    return tmp_path


def test_unreviewed_pool_slices_join_with_sure_pixels_only(benchmark_module, workspace, tmp_path):
    b7 = benchmark_module("b7_retrain_epochs")
    out = b7.pseudo_labelled_set(workspace, 1, 0.9, tmp_path / "pseudo")
    records = {r.slice_id: r for r in read_index(out)}
    # the round's own set is kept as it was; the reviewed p1/000 is not added a second time
    assert sorted(records) == ["p1/000", "p1/001", "p1/002", "s0/000"]
    assert np.all(np.asarray(Image.open(out / records["p1/000"].mask)) == 3)
    for sid in ("p1/001", "p1/002"):
        rec = records[sid]
        assert (rec.split, rec.site) == ("train", "B")
        labels = np.asarray(Image.open(out / rec.mask))
        assert np.all(labels[0] == 3)  # sure: the most probable class
        assert np.all(labels[1:] == IGNORE_LABEL)  # not sure enough: no label
        assert np.array_equal(np.asarray(Image.open(out / rec.image)),
                              np.asarray(Image.open(workspace / "cohort" / f"images/{sid}.png")))
    # built again from scratch, not on top of an earlier build
    again = b7.pseudo_labelled_set(workspace, 1, 0.99, tmp_path / "pseudo")
    assert np.all(np.asarray(Image.open(again / records["p1/001"].mask)) == IGNORE_LABEL)
