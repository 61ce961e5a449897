"""What reviewers see is radiological orientation, derived from the data: a NIfTI volume with a known affine goes
through the importer, a round, `segqa batch` and adjust tasks; every reviewed PNG has the anterior side up and
the patient's left on the viewer's right, label PNGs stay pixel-aligned with the image, and a correction drawn
on the task maps back to the model's (stored) array exactly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from qa_workflow import storage
from qa_workflow.contract import from_display, to_display
from qa_workflow.rounds.adjusting import write_adjust_tasks
from qa_workflow.rounds.batching import write_batches
from qa_workflow.rounds.predict import run_predictions
from qa_workflow.rounds.round_dir import read_assignments, select_round
from qa_workflow.rounds.selection import SelectionPolicy

nib = pytest.importorskip("nibabel")

X, Y, Z = 60, 80, 2  # voxels along the patient's left->right, posterior->anterior, inferior->superior
TONES = {0: 5.0, 1: 40.0, 2: 120.0, 3: 200.0}  # the stand-in predictor's tone per class


def _ras_phantom() -> np.ndarray:
    """Labels in RAS voxel order (index 0 = the patient's left / posterior / inferior): a head of gray matter
    with a white core, and one CSF block in the anterior-left corner of the head, the marker."""
    x, y = np.mgrid[:X, :Y]
    head = ((x - X / 2) / 26) ** 2 + ((y - Y / 2) / 36) ** 2 <= 1
    core = ((x - X / 2) / 12) ** 2 + ((y - Y / 2) / 16) ** 2 <= 1
    labels = np.where(core, 3, np.where(head, 2, 0)).astype(np.uint8)
    labels[12:20, 58:68] = 1  # left (small x), anterior (large y)
    return np.repeat(labels[:, :, None], Z, axis=2)


# How the same anatomy may lie in a file: (voxel array from the RAS array, affine voxel -> world RAS mm).
LAYOUTS = {
    "ras": (lambda v: v, np.eye(4)),
    "lps": (lambda v: v[::-1, ::-1], np.array([[-1, 0, 0, X - 1], [0, -1, 0, Y - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])),
    "yxz": (lambda v: v.transpose(1, 0, 2), np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])),
}


def _png(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(storage.read_bytes(uri))))


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_reviewed_pngs_are_radiological_anterior_up_whatever_the_nifti_affine(
        tmp_path, layout, intensity_predictor):
    from training.importers import import_nifti

    arrange, affine = LAYOUTS[layout]
    ras = _ras_phantom()
    image = np.vectorize(TONES.get)(ras).astype(np.float32)
    src = tmp_path / "nifti"
    src.mkdir()
    nib.save(nib.Nifti1Image(np.ascontiguousarray(arrange(image)), affine), src / "sub-01.nii.gz")
    nib.save(nib.Nifti1Image(np.ascontiguousarray(arrange(ras)), affine), src / "sub-01_seg.nii.gz")
    data = import_nifti(src, tmp_path / "data")
    run_predictions(intensity_predictor(), data, str(tmp_path / "pred"), split="train")  # one subject: train
    round_dir = str(tmp_path / "r01")
    select_round(str(tmp_path / "pred"), round_dir, SelectionPolicy(budget=6, seed=0))
    dest = str(tmp_path / "dest")
    write_batches(round_dir, dest, workers=1)

    rows = read_assignments(round_dir)
    csf = rows[(rows["class_name"] == "csf") & rows["assignment"].isin(["verify", "audit", "random_arm"])]
    assert len(csf), "the marker's mask must be up for review"
    slice_id = str(csf["slice_id"].iloc[0])
    shown = _png(f"{dest}/images/{slice_id}.png")
    marker = _png(f"{dest}/masks/{slice_id}/csf.png") == 255
    assert shown.shape == (208, 176)  # anterior-posterior runs down the rows
    head = shown > shown.min()
    (my, mx), (hy, hx) = _centroid(marker), _centroid(head)
    assert my < hy - 10 and mx > hx + 5  # anterior up; the patient's left on the viewer's right
    # The mask sits on the tissue it labels: the marker's pixels are exactly the CSF-toned ones.
    csf_tone = np.unique(shown[marker])
    assert len(csf_tone) == 1 and np.array_equal(shown == csf_tone[0], marker)
    # The overlay's mask panel: the contour (palette index 255) of the marker is in its upper right too.
    overlay = _png(f"{dest}/overlays/{slice_id}/csf.png")
    right = overlay[:, overlay.shape[1] // 2 + 4:]
    cy, cx = _centroid(right == 255)
    assert cy < right.shape[0] / 2 and cx > right.shape[1] / 2

    # Adjust task of the same slice: image, label map and the editor's start all in the same orientation.
    task_uri = write_adjust_tasks(round_dir, [f"{slice_id}/csf"], "verify-1").task_uris[0]
    task = storage.read_json(task_uri)
    labels, initial = _png(task["mask_uri"]), _png(task["initial_overlay_uri"])
    assert np.array_equal(_png(task["image_uri"]), shown) and labels.shape == shown.shape
    for cls in (1, 2, 3):  # one tone per class, exactly where the label map says
        tone = np.unique(shown[labels == cls])
        assert len(tone) == 1 and np.array_equal(shown == tone[0], labels == cls)
    assert np.array_equal(initial[..., 3] > 0, labels > 0)
    # A correction drawn on the task (here: the marker erased) maps back onto the stored array exactly.
    stored = _png(str(data / "masks" / f"{slice_id}.png"))
    corrected = labels.copy()
    corrected[labels == 1] = 2
    back = from_display(corrected)
    assert back.shape == stored.shape and np.array_equal(back[stored != 1], stored[stored != 1])
    assert (back[stored == 1] == 2).all() and np.array_equal(to_display(back), corrected)
