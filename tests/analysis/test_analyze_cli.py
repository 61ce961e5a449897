"""`segqa analyze` end to end: the four outputs from a CSV and from the store, scale detection, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.records import parse_review_records
from analysis.synthetic_reviews import simulate_reviews
from qa_workflow.cli import main
from qa_workflow.contract import REVIEW_RECORD_COLUMNS, THRESHOLDS_SCHEMA, SegqaError

HEADER = "item_id,class_name,confidence,confirm_count,disconfirm_count\n"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """1,500 simulated reviews (unit scale) and their votes, written once for the module."""
    root = tmp_path_factory.mktemp("sim")
    records, votes = simulate_reviews(1500, seed=3, worker_error=0.005)
    records.to_csv(root / "reviews.csv", index=False)
    votes.to_csv(root / "votes.csv", index=False)
    return root


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_analyze_writes_the_four_outputs_and_a_self_contained_report(sim, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["analyze", "--reviews", str(sim / "reviews.csv"), "--votes", str(sim / "votes.csv"),
               "--out", str(out), "--split-policy", "majority"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "auto-accept thresholds" in printed and "thresholds.json" in printed

    by_class = _read_csv(out / "acceptance_by_class.csv")
    assert list(by_class[0]) == ["class_name", "total", "confirmed", "disconfirmed", "split", "pct_correct"]
    assert [r["class_name"] for r in by_class] == ["csf", "gray_matter", "white_matter", "TOTALS", "CLASS_AVERAGE"]
    assert by_class[3]["total"] == "1500"
    by_bucket = _read_csv(out / "acceptance_by_bucket.csv")
    assert list(by_bucket[0]) == ["class_name", "bucket_low", "bucket_high", "total", "incorrect", "pct_correct"]
    assert len(by_bucket) == 5 * 5  # 3 classes + TOTALS + CLASS_AVERAGE, 5 buckets each
    assert float(by_bucket[4]["bucket_high"]) == 1.0

    doc = json.loads((out / "thresholds.json").read_text())
    assert doc["schema"] == THRESHOLDS_SCHEMA and doc["method"] == "clopper-pearson"
    assert doc["target"] == {"max_error": 0.05, "confidence": 0.95, "start_coverage": 0.05, "min_above": None}
    assert doc["confidence_scale"] == "unit" and doc["split_policy"] == "majority"
    assert set(doc["classes"]) == {"csf", "gray_matter", "white_matter"}
    for entry in doc["classes"].values():
        assert {"threshold", "n_reviewed", "n_above", "errors_above", "error_upper_bound", "coverage",
                "reason"} <= set(entry)
        assert entry["n_reviewed"] == 500
        if entry["threshold"] is not None:
            assert entry["error_upper_bound"] <= 0.05 and entry["reason"] is None
            assert entry["coverage"] == pytest.approx(entry["n_above"] / 500)
        else:
            assert entry["reason"]
    assert any(e["threshold"] is not None for e in doc["classes"].values())

    html = (out / "report.html").read_text()
    assert "Which masks can skip review?" in html
    assert html.count("data:image/png;base64,") == 3
    assert "src=\"http" not in html and "<link" not in html and "<script" not in html  # opens offline
    for name in ("acceptance", "reliability", "risk_coverage"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reviewers = _read_csv(out / "reviewers.csv")
    assert len(reviewers) == 12 and "agreement_with_majority" in reviewers[0]
    assert len(_read_csv(out / "threshold_comparison.csv")) == 9  # 3 methods x 3 classes

    # calibration.json: the isotonic calibrator that routing reads (P(accept | confidence) per class)
    from analysis.calibration import fit_isotonic
    from qa_workflow.rounds.selection import load_calibration

    cal = load_calibration(str(out / "calibration.json"))
    assert set(cal.curves) == {"csf", "gray_matter", "white_matter"}
    reviews = _read_csv(sim / "reviews.csv")
    gm = [r for r in reviews if r["class_name"] == "gray_matter"]
    conf = [float(r["confidence"]) for r in gm]
    ok = [int(r["confirm_count"]) > int(r["disconfirm_count"]) for r in gm]  # majority, as asked above
    probe = [0.05, 0.5, 0.8, 0.95]
    assert cal.p_accept("gray_matter", probe) == pytest.approx(fit_isotonic(conf, ok).predict(probe), abs=1e-5)


def test_a_rerun_into_the_same_folder_leaves_no_output_of_the_earlier_run(sim, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["analyze", "--reviews", str(sim / "reviews.csv"), "--votes", str(sim / "votes.csv"),
                 "--out", str(out)]) == 0
    assert (out / "reviewers.csv").is_file() and (out / "report.html").is_file() and any(out.glob("plots/*.png"))
    assert main(["analyze", "--reviews", str(sim / "reviews.csv"), "--out", str(out), "--no-report"]) == 0
    assert not (out / "reviewers.csv").exists() and not (out / "report.html").exists()
    assert not any(out.glob("plots/*.png")) and (out / "notes.txt").read_text() == "mine"

    # interrupted while rendering: nothing of the new run is written, the earlier thresholds stay in force
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    import analysis.plots

    def interrupted(result):
        raise KeyboardInterrupt

    monkeypatch.setattr(analysis.plots, "render_plots", interrupted)
    assert main(["analyze", "--reviews", str(sim / "reviews.csv"), "--votes", str(sim / "votes.csv"),
                 "--out", str(out), "--max-error", "0.1"]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    capsys.readouterr()

def test_percent_scale_is_detected_and_thresholds_keep_the_input_scale(tmp_path):
    records, _ = simulate_reviews(900, seed=4, percent=True, worker_error=0.0)
    records.to_csv(tmp_path / "r.csv", index=False)
    out = tmp_path / "out"
    assert main(["analyze", "--reviews", str(tmp_path / "r.csv"), "--out", str(out), "--method", "bucket-walk",
                 "--buckets", "80,85,90,95,100", "--max-error-ratio", "0.1", "--no-report"]) == 0
    doc = json.loads((out / "thresholds.json").read_text())
    assert doc["confidence_scale"] == "percent" and doc["method"] == "bucket-walk"
    assert doc["target"] == {"max_error_ratio": 0.1, "buckets": [80.0, 85.0, 90.0, 95.0, 100.0]}
    for entry in doc["classes"].values():
        if entry["threshold"] is not None:
            assert entry["threshold"] in (80.0, 85.0, 90.0, 95.0)
            assert entry["threshold_unit"] == pytest.approx(entry["threshold"] / 100)
    rows = _read_csv(out / "acceptance_by_bucket.csv")
    assert [float(r["bucket_low"]) for r in rows[:4]] == [80, 85, 90, 95]
    assert not (out / "report.html").exists()


def test_analyze_reads_straight_from_the_store(tmp_path):
    from qa_workflow.confirmations.store import ItemRecord, Vote, open_store

    records, votes = simulate_reviews(240, seed=5)
    uri = f"sqlite:///{tmp_path}/store.db"
    store = open_store(uri)
    store.init()
    items = {r.item_id: ItemRecord(r.item_id, r.class_name, float(r.confidence), "1") for r in records.itertuples()}
    store.record_votes([(items[v.item_id], Vote("job-1", v.item_id, v.worker_id, v.decision))
                        for v in votes.itertuples()])
    store.close()
    out = tmp_path / "out"
    assert main(["analyze", "--store", uri, "--out", str(out)]) == 0
    rows = _read_csv(out / "acceptance_by_class.csv")
    assert rows[3]["class_name"] == "TOTALS" and rows[3]["total"] == "240"
    expected_split = int(((records.confirm_count > 0) & (records.disconfirm_count > 0)).sum())
    assert rows[3]["split"] == str(expected_split)
    assert json.loads((out / "thresholds.json").read_text())["source"] == uri
    assert len(_read_csv(out / "reviewers.csv")) == 12  # the store's votes give per-reviewer agreement
    assert (out / "report.html").exists()


def test_analyze_fits_thresholds_for_one_model_and_says_which(tmp_path, capsys):
    """--model-version: only the reviews of that model's masks; thresholds.json lists the versions it counted
    (what segqa select checks before auto-accepting a model's masks)."""
    from qa_workflow.confirmations.store import ItemRecord, Vote, open_store

    records, votes = simulate_reviews(240, seed=5)
    uri = f"sqlite:///{tmp_path}/store.db"
    store = open_store(uri)
    store.init()
    items = {r.item_id: ItemRecord(r.item_id, r.class_name, float(r.confidence), "1",
                                   model_version="unet-a" if k % 3 else "unet-b")
             for k, r in enumerate(records.itertuples())}
    store.record_votes([(items[v.item_id], Vote("job-1", v.item_id, v.worker_id, v.decision))
                        for v in votes.itertuples()])
    store.close()
    assert main(["analyze", "--store", uri, "--out", str(tmp_path / "all"), "--no-report"]) == 0
    assert json.loads((tmp_path / "all" / "thresholds.json").read_text())["model_versions"] == ["unet-a", "unet-b"]
    assert main(["analyze", "--store", uri, "--out", str(tmp_path / "b"), "--no-report",
                 "--model-version", "unet-b"]) == 0
    doc = json.loads((tmp_path / "b" / "thresholds.json").read_text())
    assert doc["model_versions"] == ["unet-b"] and doc["n_records"] == 80
    assert main(["analyze", "--store", uri, "--out", str(tmp_path / "c"), "--model-version", "unet-c"]) == 2
    assert "no reviewed items of model unet-c" in capsys.readouterr().err
    csv_file = _write(tmp_path, "item_id,class_name,confidence,confirm_count,disconfirm_count\n" + GOOD_ROWS)
    assert main(["analyze", "--reviews", str(csv_file), "--out", str(tmp_path / "d"),
                 "--model-version", "unet-b"]) == 2
    assert "--model-version filters the store" in capsys.readouterr().err
    assert main(["analyze", "--reviews", str(csv_file), "--out", str(tmp_path / "d"), "--no-report"]) == 0
    assert json.loads((tmp_path / "d" / "thresholds.json").read_text())["model_versions"] is None
    # the store's export names each mask's model: the analysis of the CSV says the same as the store's
    assert main(["store", "export", "--store", uri, "--out", str(tmp_path / "export.csv")]) == 0
    assert main(["analyze", "--reviews", str(tmp_path / "export.csv"), "--out", str(tmp_path / "e"),
                 "--no-report"]) == 0
    assert json.loads((tmp_path / "e" / "thresholds.json").read_text())["model_versions"] == ["unet-a", "unet-b"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reviews.csv"
    path.write_text(text)
    return path


GOOD_ROWS = "a1,csf,0.9,1,0\na2,csf,0.8,0,1\n"


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("item_id,class_name,confidence\na1,csf,0.9\n", "missing column(s) confirm_count, disconfirm_count"),
    (HEADER, "no review records"),
    (HEADER + GOOD_ROWS + "a3,csf,high,1,0\n", "line 4 (item a3): column confidence: 'high' is not a number"),
    (HEADER + GOOD_ROWS + "a3,csf,,1,0\n", "line 4 (item a3): column confidence: (empty)"),
    (HEADER + "a1,csf,0.9,1,0\na2,csf,150,1,0\n", "line 3 (item a2): column confidence: 150"),
    (HEADER + "a1,csf,-0.1,1,0\n", "line 2 (item a1): column confidence: -0.1 is out of range"),
    (HEADER + GOOD_ROWS + "a3,csf,0.7,1,-2\n", "line 4 (item a3): column disconfirm_count: -2 is negative"),
    (HEADER + GOOD_ROWS + "a3,csf,0.7,1.5,0\n", "line 4 (item a3): column confirm_count: 1.5 is not a whole"),
    (HEADER + GOOD_ROWS + "a3,csf,0.7,many,0\n", "column confirm_count: 'many' is not a number"),
    (HEADER + GOOD_ROWS + "b1,wm,0.7,0,0\nb2,wm,0.6,0,0\n", "lines 4, 5: column class_name: class 'wm' has zero "
                                                            "reviewed items"),
    (HEADER + GOOD_ROWS + "a3,,0.7,1,0\n", "line 4 (item a3): column class_name: (empty)"),
    (HEADER + GOOD_ROWS + "a1,csf,0.7,1,0\n", "lines 2, 4: column item_id: 'a1' appears 2 times"),
    (HEADER + GOOD_ROWS + "a3,csf,0.7,1,0,oops\n", "line 4: 6 fields, but the header has 5"),
])
def test_bad_input_is_one_clear_message_naming_row_or_column(tmp_path, capsys, text, message):
    path = _write(tmp_path, text)
    assert main(["analyze", "--reviews", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("args, message", [
    (["--method", "magic"], "--method must be one of"),
    (["--max-error", "5"], "--max-error must be strictly between 0 and 1"),
    (["--confidence", "95"], "--confidence must be strictly between 0 and 1"),
    (["--split-policy", "coin"], "--split-policy must be one of incorrect, majority"),
    (["--buckets", "0.5,0.4"], "--buckets: edges must be strictly increasing"),
    (["--confidence-scale", "unit", "--buckets", "80,90,100"], "within the confidence scale [0, 1]"),
])
def test_bad_options_are_one_clear_message(tmp_path, capsys, args, message):
    path = _write(tmp_path, HEADER + GOOD_ROWS)
    assert main(["analyze", "--reviews", str(path), "--out", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err


def test_reviews_or_store_exactly_one(tmp_path, capsys):
    assert main(["analyze", "--out", str(tmp_path / "o")]) == 2
    assert "exactly one of --reviews FILE" in capsys.readouterr().err


def test_unit_scale_given_but_percent_values(tmp_path):
    with pytest.raises(SegqaError, match=r"line 3 \(item a2\): column confidence: 80.0 is above 1"):
        parse_review_records((HEADER + "a1,csf,0.9,1,0\na2,csf,80,1,0\n").encode(), source="r.csv", scale="unit")


def test_a_file_that_fits_neither_scale_cleanly_is_refused_naming_the_rows():
    """One 1.5 among 0-1 values is a typo, not a percent file: refused, not silently read as percent."""
    data = HEADER + "a1,csf,0.9,1,0\na2,csf,1.5,1,0\na3,csf,0.8,0,1\na4,csf,0.7,1,0\na5,csf,3,1,0\n"
    with pytest.raises(SegqaError, match=r"r.csv, lines 3, 6: column confidence: .*neither.*--confidence-scale"):
        parse_review_records(data.encode(), source="r.csv")
    assert parse_review_records(data.encode(), source="r.csv", scale="percent").scale == "percent"  # when told
    clean = HEADER + "a1,csf,90,1,0\na2,csf,0.5,1,0\na3,csf,55,0,1\n"
    assert parse_review_records(clean.encode(), source="r.csv").scale == "percent"


def test_percent_scale_with_small_values_and_a_header_with_spaces_and_optional_columns():
    data = (b"item_id, class_name ,confidence,confirm_count,disconfirm_count,round\n"
            b"x1,cat,0.5,1,0,1\nx2,dog,0.9,0,1,1\n")
    rec = parse_review_records(data, scale="percent")
    assert rec.scale == "percent" and not rec.scale_detected
    assert rec.frame["confidence_unit"].tolist() == pytest.approx([0.005, 0.009])
    assert rec.classes == ("cat", "dog") and len(rec) == 2  # the optional round column is accepted
    assert set(REVIEW_RECORD_COLUMNS[:5]) <= set(rec.frame.columns)


def test_console_script_exits_non_zero_without_traceback(tmp_path):
    path = _write(tmp_path, HEADER + "a1,csf,abc,1,0\n")
    proc = subprocess.run([sys.executable, "-m", "qa_workflow", "analyze", "--reviews", str(path), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "column confidence" in proc.stderr


def test_outputs_can_go_to_s3(s3_bucket, tmp_path):
    records, _ = simulate_reviews(300, seed=6)
    records.to_csv(tmp_path / "r.csv", index=False)
    prefix = f"s3://{s3_bucket}/analysis/run-1"
    assert main(["analyze", "--reviews", str(tmp_path / "r.csv"), "--out", prefix, "--no-report"]) == 0
    from qa_workflow import storage

    doc = storage.read_json(f"{prefix}/thresholds.json")
    assert doc["schema"] == THRESHOLDS_SCHEMA and doc["n_records"] == 300
    assert storage.read_text(f"{prefix}/acceptance_by_class.csv").startswith("class_name,total,")


def test_report_for_a_tiny_input_says_review_everything(tmp_path):
    path = _write(tmp_path, HEADER + "a1,csf,90,1,0\na2,csf,90,1,0\nb1,dog,55,0,1\n")  # percent scale
    out = tmp_path / "out"
    assert main(["analyze", "--reviews", str(path), "--out", str(out)]) == 0
    doc = json.loads((out / "thresholds.json").read_text())
    assert doc["confidence_scale"] == "percent"
    assert all(e["threshold"] is None and "too few reviews" in e["reason"] for e in doc["classes"].values())
    html = (out / "report.html").read_text()
    assert html.count("review every mask") == 2 and "0 of 2" in html
