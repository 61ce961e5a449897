"""Predicting and selecting a round: maps, masks, scores, run record, rejects files, idempotent select."""

import csv
import json

import numpy as np
import pytest

from qa_workflow.cli import main
from qa_workflow.contract import SegqaError
from qa_workflow.rounds.predict import (
    load_probability_file,
    read_run,
    read_score_table,
    run_predictions,
)
from qa_workflow.rounds.round_dir import read_assignments, select_round
from qa_workflow.rounds.selection import SelectionPolicy


def rejects_of(path):
    return list(csv.DictReader(open(path)))


@pytest.fixture
def dataset(tmp_path, tiny_dataset):
    return tiny_dataset(tmp_path / "data", subjects=2, slices=4)


def test_predict_writes_maps_masks_scores_and_run_record(dataset, tmp_path, intensity_predictor):
    out = tmp_path / "pred"
    s = run_predictions(intensity_predictor(), dataset, str(out), split="pool", batch_size=3)
    assert (s.slices, s.slices_scored, s.items, len(s.rejects)) == (8, 8, 24, 0)
    table = read_score_table(str(out))
    assert len(table) == 24 and set(table["model_version"]) == {"intensity-1"}
    assert table["reviewable"].all()
    # a well-separated phantom: the stand-in model is confident and the white-matter core scores high
    assert (table.loc[table["class_name"] == "white_matter", "soft_dice"] > 0.9).all()
    assert table["surface_agreement"].between(0, 1).all()
    probs, mi = load_probability_file(str(out / "probs/sub-001/002.npz"))
    assert probs.shape == (4, 176, 208) and mi is None
    assert np.allclose(probs.sum(0), 1, atol=5e-3)
    from PIL import Image

    mask = np.asarray(Image.open(out / "masks/sub-001/002.png"))
    assert set(np.unique(mask)) <= {0, 1, 2, 3} and (mask == probs.argmax(0)).mean() > 0.999
    run = read_run(str(out))
    assert run["model_version"] == "intensity-1" and run["split"] == "pool" and len(run["index_sha256"]) == 64
    assert rejects_of(out / "rejects.csv") == []


def test_mc_samples_add_mutual_information(dataset, tmp_path, intensity_predictor):
    s = run_predictions(intensity_predictor(), dataset, str(tmp_path / "p"), mc_samples=4, table_format="csv")
    table = read_score_table(str(tmp_path / "p"))
    assert s.score_table.endswith("scores.csv")
    assert table["mutual_info"].between(0, 1).all()
    out = SelectionPolicy(measure="mutual_info", budget=5).fit_transform(table)
    assert (out["assignment"] == "verify").sum() == 5
    # a table written before surface_agreement existed still reads, with the column empty
    csv_path = tmp_path / "p" / "scores.csv"
    csv_path.write_text(table.drop(columns=["surface_agreement"]).to_csv(index=False))
    assert read_score_table(str(tmp_path / "p"))["surface_agreement"].isna().all()
    with pytest.raises(SegqaError, match="--mc-samples"):
        run_predictions(intensity_predictor(), dataset, str(tmp_path / "q"), mc_samples=1)


def test_unreadable_image_is_rejected_not_dropped(dataset, tmp_path, intensity_predictor):
    (dataset / "images/sub-002/001.png").write_bytes(b"not a png")
    s = run_predictions(intensity_predictor(), dataset, str(tmp_path / "pred"))
    assert s.slices_scored == 7
    rows = rejects_of(tmp_path / "pred/rejects.csv")
    assert [(r["stage"], r["subject"], r["slice"]) for r in rows] == [("image", "sub-002", "1")]
    assert "unreadable image" in rows[0]["reason"]


def test_model_with_wrong_class_count_rejects_the_run(dataset, tmp_path, intensity_predictor):
    with pytest.raises(SegqaError, match="no slice could be scored.*class-count mismatch"):
        run_predictions(intensity_predictor(channels=3), dataset, str(tmp_path / "pred"))
    rows = rejects_of(tmp_path / "pred/rejects.csv")
    assert len(rows) == 8 and all("class-count mismatch" in r["reason"] for r in rows)


def test_scoring_probability_files_rejects_each_bad_file(dataset, tmp_path, capsys, intensity_predictor):
    probs = tmp_path / "probs"
    good = intensity_predictor().predict_proba(np.zeros((1, 176, 208), np.uint8))[0]
    for subj in ("sub-001", "sub-002"):
        for k in range(4):
            (probs / subj).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(probs / subj / f"{k:03d}.npz", probs=good.astype(np.float16))
    (probs / "sub-001/000.npz").unlink()  # missing
    (probs / "sub-001/001.npz").write_bytes(b"PK\x03\x04 garbage")  # unreadable
    np.savez_compressed(probs / "sub-001/002.npz", probs=good[:3])  # class-count mismatch
    bad = good.copy()
    bad[2, 10, 10] = np.nan
    np.savez_compressed(probs / "sub-001/003.npz", probs=bad)  # non-finite
    code = main(["predict", "--probs", str(probs), "--data", str(dataset), "--out", str(tmp_path / "pred"),
                 "--model-version", "ext-7"])
    assert code == 0
    rows = {r["slice"]: r["reason"] for r in rejects_of(tmp_path / "pred/rejects.csv")}
    assert rows["0"] == "probability file missing"
    assert "unreadable probability file" in rows["1"]
    assert "class-count mismatch" in rows["2"]
    assert "non-finite" in rows["3"]
    err = capsys.readouterr().err
    assert "4 slice(s) rejected" in err and "probability file missing" in err and "non-finite" in err
    table = read_score_table(str(tmp_path / "pred"))
    assert len(table) == 4 * 3 and set(table["model_version"]) == {"ext-7"}


def test_select_is_idempotent_and_refuses_a_different_round(dataset, tmp_path, intensity_predictor):
    run_predictions(intensity_predictor(), dataset, str(tmp_path / "pred"))
    out = str(tmp_path / "rounds/r01")
    r1 = select_round(str(tmp_path / "pred"), out, SelectionPolicy(budget=6))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rounds/r01").iterdir()}
    r2 = select_round(str(tmp_path / "pred"), out, SelectionPolicy(budget=6))
    assert not r1.unchanged and r2.unchanged and r1.fingerprint == r2.fingerprint
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rounds/r01").iterdir()}
    frame = read_assignments(out)
    assert len(frame) == 24 and frame["item_id"].is_unique
    meta = json.load(open(tmp_path / "rounds/r01/round.json"))
    assert meta["policy"]["budget"] == 6 and meta["inputs"]["model_version"] == "intensity-1"
    assert len(meta["inputs"]["score_table_sha256"]) == 64
    with pytest.raises(SegqaError, match="other budget"):
        select_round(str(tmp_path / "pred"), out, SelectionPolicy(budget=7))
    r3 = select_round(str(tmp_path / "pred"), out, SelectionPolicy(budget=7), overwrite=True)
    assert r3.counts["verify"]["total"] == 7


def test_thresholds_of_another_schema_are_rejected_with_a_rejects_file(dataset, tmp_path, capsys,
                                                                       intensity_predictor):
    run_predictions(intensity_predictor(), dataset, str(tmp_path / "pred"))
    th = tmp_path / "thresholds.json"
    th.write_text(json.dumps({"schema": "segqa.thresholds/0", "classes": {}}))
    code = main(["select", "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / "r"),
                 "--thresholds", str(th)])
    assert code == 2
    err = capsys.readouterr().err
    assert "thresholds rejected" in err and "segqa.thresholds/0" in err and "Traceback" not in err
    rows = rejects_of(tmp_path / "r/rejects.csv")
    assert rows[0]["stage"] == "thresholds" and "segqa.thresholds/0" in rows[0]["reason"]
    assert not (tmp_path / "r/round.json").exists()


@pytest.mark.slow
def test_predict_end_to_end_with_a_real_model(dataset, tmp_path, capsys, tiny_dataset):
    from training.train import TrainConfig, train_model

    tiny_train = tiny_dataset(tmp_path / "train", subjects=1, slices=4, split="train")
    model = train_model(TrainConfig(data_dir=str(tiny_train), out_dir=str(tmp_path / "model"), network="enet",
                                    epochs=1, batch_size=2, width=0.25, max_batches_per_epoch=1,
                                    max_val_slices=2, val_dir=str(tiny_train), context="cpu"))
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--data", str(dataset), "--out", str(out), "--limit", "3",
                 "--mc-samples", "2"]) == 0
    run = read_run(str(out))
    card = json.load(open(model / "model_card.json"))
    assert run["model_version"] == card["version"] and run["mc_samples"] == 2
    table = read_score_table(str(out))
    assert len(table) == 9 and table["item_id"].is_unique
    assert "scored 3/3 slices" in capsys.readouterr().err


def test_select_excludes_items_listed_in_a_file(dataset, tmp_path, capsys, intensity_predictor):
    run_predictions(intensity_predictor(), dataset, str(tmp_path / "pred"))
    (tmp_path / "done.csv").write_text("item_id,class_name,confidence,confirm_count,disconfirm_count\n"
                                       "sub-001/000/csf,csf,0.9,3,0\nsub-002/003/white_matter,white_matter,0.8,2,1\n")
    args = ["select", "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / "r2"), "--budget", "50"]
    assert main(args + ["--exclude", str(tmp_path / "done.csv")]) == 0
    frame = read_assignments(str(tmp_path / "r2")).set_index("item_id")
    assert frame.loc["sub-001/000/csf", "reason"] == "already reviewed in an earlier round"
    assert frame.loc["sub-002/003/white_matter", "assignment"] == "skip"
    assert (frame["assignment"] == "verify").sum() == 22
    assert main(args) == 2  # the excluded set is an input of the round: without it, it is another round
    assert "other excluded" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("sub-001/000/csf\nnot-an-id\n")
    assert main(args + ["--exclude", str(tmp_path / "bad.txt"), "--overwrite"]) == 2
    assert "bad.txt, line 2" in capsys.readouterr().err


def test_select_routes_by_the_analysis_next_to_the_thresholds_within_human_seconds(dataset, tmp_path, capsys,
                                                                                    intensity_predictor):
    """`segqa select --thresholds ANALYSIS/thresholds.json` finds ANALYSIS/calibration.json: a class the reviewers
    rarely accept goes to adjust, the planned seconds stay within --budget-seconds, round.json records it all."""
    run_predictions(intensity_predictor(), dataset, str(tmp_path / "pred"))
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    (analysis / "thresholds.json").write_text(json.dumps({"schema": "segqa.thresholds/1", "classes": {
        "csf": {"threshold": None, "reason": "too few"}, "gray_matter": {"threshold": None, "reason": "too few"},
        "white_matter": {"threshold": None, "reason": "too few"}}}))
    (analysis / "calibration.json").write_text(json.dumps({"schema": "segqa.calibration/1", "classes": {
        "csf": {"x": [0, 1], "y": [0.8, 1]}, "gray_matter": {"x": [0, 1], "y": [0.0, 0.1]},
        "white_matter": {"x": [0, 1], "y": [0.8, 1]}}}))
    args = ["select", "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / "r"),
            "--thresholds", str(analysis / "thresholds.json"), "--budget-seconds", "200"]
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = "".join((captured.out + captured.err).split())  # rich wraps long lines
    assert "plannedhumantime" in printed and "of200s" in printed and "analysis/calibration.json" in printed
    frame = read_assignments(str(tmp_path / "r"))
    routed = frame[frame["assignment"].isin(["verify", "adjust"])]
    assert set(routed.loc[routed["class_name"] == "gray_matter", "assignment"]) == {"adjust"}
    assert (routed["assignment"] == "verify").any()
    assert routed["expected_seconds"].sum() <= 200
    meta = json.loads((tmp_path / "r" / "round.json").read_text())
    assert meta["inputs"]["calibration"].endswith("calibration.json") and meta["inputs"]["calibration_sha256"]
    assert meta["policy"]["budget_seconds"] == 200 and meta["policy"]["costs"]["adjust_s"] == 60
    assert meta["planned_seconds"]["total"] <= 200 and meta["cold_start"] is False
    assert main(args + ["--costs", "verify=3,paint=9", "--overwrite"]) == 2
    assert "--costs" in capsys.readouterr().err
    # three reviewers per mask: round.json records the crew's costs (3 x 3 s per verify)
    assert main(args + ["--reviewers", "3", "--overwrite"]) == 0
    meta = json.loads((tmp_path / "r" / "round.json").read_text())
    assert meta["policy"]["costs"]["verify_s"] == 9 and meta["planned_seconds"]["total"] <= 200


def test_thresholds_auto_accept_only_the_masks_of_the_model_whose_reviews_fitted_them(dataset, tmp_path, capsys,
                                                                                     intensity_predictor):
    """A Clopper–Pearson threshold bounds the error of the reviewed model's masks; after a promotion the new
    model's masks are not auto-accepted on the old model's evidence (thresholds.json names the versions)."""
    run_predictions(intensity_predictor(), dataset, str(tmp_path / "pred"))  # model version "intensity-1"

    def routes(versions, out):
        th = tmp_path / f"{out}.json"
        doc = {"schema": "segqa.thresholds/1", "classes": {c: {"threshold": 0.0} for c in
                                                           ("csf", "gray_matter", "white_matter")}}
        if versions is not ...:
            doc["model_versions"] = versions
        th.write_text(json.dumps(doc))
        result = select_round(str(tmp_path / "pred"), str(tmp_path / out), SelectionPolicy(budget=6),
                              thresholds=str(th))
        return read_assignments(str(tmp_path / out)), result

    same, _ = routes(["intensity-1"], "same")
    unrecorded, _ = routes(..., "unrecorded")  # a file that does not say (older analyses, CSV input)
    for frame in (same, unrecorded):
        assert (frame["assignment"] == "auto_accept").sum() > 0
    for versions in (["intensity-0"], ["intensity-0", "intensity-1"]):
        other, result = routes(versions, f"other{len(versions)}")
        assert not other["assignment"].isin(["auto_accept", "audit"]).any()
        assert "these masks come from intensity-1" in result.warnings[-1]
        meta = json.loads((tmp_path / f"other{len(versions)}" / "round.json").read_text())
        assert set(meta["thresholds_in_use"].values()) == {None}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "segqa.thresholds/1", "model_versions": "intensity-1", "classes": {}}))
    with pytest.raises(SegqaError, match="model_versions must be null or a list"):
        select_round(str(tmp_path / "pred"), str(tmp_path / "bad"), SelectionPolicy(budget=6), thresholds=str(bad))
