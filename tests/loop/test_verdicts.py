"""Verdicts implied by corrections (`qa_workflow.loop.verdicts`) and how the analysis takes them in."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qa_workflow.confirmations.export import review_records_csv
from qa_workflow.contract import SegqaError, to_display
from qa_workflow.loop.verdicts import implied_review_records, implied_verdict
from qa_workflow.rounds.round_dir import ROUND_SCHEMA
from qa_workflow.rounds.selection import ASSIGNMENT_COLUMNS

H, W = 40, 48


def _predicted() -> np.ndarray:
    labels = np.zeros((H, W), np.uint8)
    labels[4:36, 4:44] = 2  # gray matter frame
    labels[10:30, 10:38] = 3  # white matter block inside it
    labels[16:22, 16:24] = 1  # csf inside the white matter
    return labels


def test_the_verdict_follows_the_reviewers_standard():
    pred = _predicted()
    same = implied_verdict(pred == 3, pred == 3, tau=0.9)
    assert same == (1.0, True)
    shifted = np.roll(pred == 3, 1, axis=1)  # a boundary one pixel off: invisible on an overlay
    assert implied_verdict(pred == 3, shifted, tau=0.9)[1]
    halved = (pred == 3).copy()
    halved[:, 24:] = False  # half of the white matter missing: a reviewer rejects it
    quality, accepted = implied_verdict(pred == 3, halved, tau=0.9)
    assert not accepted and quality < 0.9
    assert implied_verdict(pred == 3, halved, tau=quality)[1]  # the bar decides, inclusive
    with pytest.raises(ValueError, match="shapes differ"):
        implied_verdict(pred == 3, np.zeros((H, W + 1), bool), tau=0.9)


def _png(path: Path, labels: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels).save(path)
    return str(path)


def _round(tmp_path: Path, rid: str, slices: dict[str, np.ndarray], no_confidence: set[str] = frozenset()
           ) -> str:
    """A round folder whose assignments.csv lists the three class masks of each slice."""
    rdir = tmp_path / rid / "round"
    rows = []
    for slice_id, labels in slices.items():
        subject, idx = slice_id.split("/")
        pred_uri = _png(tmp_path / rid / "predictions" / "masks" / subject / f"{idx}.png", labels)
        for class_id, name in ((1, "csf"), (2, "gray_matter"), (3, "white_matter")):
            item = f"{slice_id}/{name}"
            rows.append({"item_id": item, "subject": subject, "slice": int(idx), "slice_id": slice_id,
                         "class_id": class_id, "class_name": name, "measure": "soft_dice",
                         "confidence": "" if item in no_confidence else f"0.{class_id}5",
                         "pixel_count": int((labels == class_id).sum()), "assignment": "adjust", "reason": "",
                         "review_rank": 1, "image": "", "pred_mask": pred_uri})
    rdir.mkdir(parents=True)
    with open(rdir / "assignments.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ASSIGNMENT_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    (rdir / "round.json").write_text(json.dumps({"schema": ROUND_SCHEMA, "round": rid,
                                                 "inputs": {"model_version": f"unet-{rid}"}}))
    return str(rdir)


def test_records_judge_every_predicted_class_mask_of_a_corrected_slice(tmp_path):
    pred = _predicted()
    corrected = pred.copy()
    corrected[corrected == 3] = 0
    corrected[10:30, 10:24] = 3  # white matter cut in half: its mask is rejected
    corrected[16:22, 16:24] = 1
    other = _predicted()
    rounds = {"round-01": _round(tmp_path, "round-01", {"sub-001/003": pred, "sub-002/004": other},
                                 no_confidence={"sub-002/004/csf"})}
    corrections = [
        {"slice_id": "sub-001/003", "round": "round-01", "mask_uri": _png(tmp_path / "c1.png", to_display(corrected))},
        # the same slice corrected again in the chained job: the first consolidated mask counts
        {"slice_id": "sub-001/003", "round": "round-01", "mask_uri": _png(tmp_path / "c2.png", to_display(pred))},
        {"slice_id": "sub-002/004", "round": "round-01", "mask_uri": _png(tmp_path / "c3.png", to_display(other))},
        {"slice_id": "sub-009/001", "round": "round-01", "mask_uri": ""},  # no consolidated mask yet
    ]
    rows = implied_review_records(corrections, rounds, tau=0.9, skip_items={"sub-002/004/gray_matter"})
    got = {r["item_id"]: (r["confirm_count"], r["disconfirm_count"]) for r in rows}
    assert got == {"sub-001/003/csf": (1, 0), "sub-001/003/gray_matter": (1, 0),
                   "sub-001/003/white_matter": (0, 1), "sub-002/004/white_matter": (1, 0)}
    wm = next(r for r in rows if r["item_id"] == "sub-001/003/white_matter")
    assert wm["confidence"] == pytest.approx(0.35) and wm["round"] == "round-01" and wm["quality"] < 0.9
    assert {r["model_version"] for r in rows} == {"unet-round-01"}  # the model whose masks were judged
    text = review_records_csv(rows, extra=("quality",))
    assert text.splitlines()[0].endswith(",quality") and len(text.splitlines()) == 5

    with pytest.raises(SegqaError, match="no round folder given"):
        implied_review_records(corrections, {}, tau=0.9)
    corrections[0]["mask_uri"] = _png(tmp_path / "small.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(SegqaError, match="does not match"):
        implied_review_records(corrections, rounds, tau=0.9)


def test_the_analysis_takes_implied_verdicts_beside_the_votes_and_a_direct_verdict_wins(tmp_path):
    from analysis.run import load_inputs
    from qa_workflow.confirmations.store import ItemRecord, Vote, open_store

    uri = f"sqlite:///{tmp_path}/store.db"
    store = open_store(uri)
    store.init()
    voted = ItemRecord("sub-001/003/csf", "csf", 0.8, "round-01", subject="sub-001", slice_id="sub-001/003")
    store.record_votes([(voted, Vote("job-1", voted.item_id, w, "accept")) for w in ("a", "b", "c")])
    store.close()
    implied = [{"item_id": "sub-001/003/csf", "class_name": "csf", "confidence": 0.8, "confirm_count": 0,
                "disconfirm_count": 1, "round": "round-01", "model_version": "", "subject": "sub-001",
                "slice_id": "sub-001/003", "quality": 0.5},
               {"item_id": "sub-001/003/white_matter", "class_name": "white_matter", "confidence": 0.6,
                "confirm_count": 0, "disconfirm_count": 1, "round": "round-01", "model_version": "",
                "subject": "sub-001", "slice_id": "sub-001/003", "quality": 0.4}]
    records, votes = load_inputs(store=uri, split_policy="majority", implied=implied)
    frame = records.frame.set_index("item_id")
    assert len(frame) == 2
    assert frame.loc["sub-001/003/csf", "confirm_count"] == 3  # the reviewers' record, not the implied one
    assert not frame.loc["sub-001/003/white_matter", "correct"]
    assert "1 verdicts implied by corrections" in records.source
    assert votes is not None and set(votes["item_id"]) == {"sub-001/003/csf"}
    # the analysis of a round that only corrected reads the implied verdicts alone
    only, _ = load_inputs(store=uri, split_policy="majority", implied=implied[1:], round="round-01")
    assert len(only.frame) == 2
    with pytest.raises(SegqaError, match="not a review-record CSV"):
        load_inputs(reviews=str(tmp_path / "r.csv"), implied=implied)
