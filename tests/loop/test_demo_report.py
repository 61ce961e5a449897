"""The demo's budget, its round table and report.html, from round summaries (no training)."""

import io
import json

import pytest

from qa_workflow.contract import SegqaError
from qa_workflow.loop.demo import LoopConfig, RoundSummary, verify_equivalents
from qa_workflow.loop.demo_report import human_time, running_cost, why_no_threshold, write_report


def _dice(m):
    return {"csf": m - 0.1, "gray_matter": m, "white_matter": m + 0.05, "mean_foreground": m}


def _summaries(tmp_path):
    out = []
    for k in (1, 2):
        out.append(RoundSummary(
            round=f"round-0{k}", reviewed=90, auto_accepted=20 * (k - 1), audit=k - 1, random_arm=0, votes=270,
            acceptance_rate=0.5, accepted_items=45,
            thresholds={"csf": None, "gray_matter": 0.931, "white_matter": None},
            training_pool_slices=30 * k, dice={"unet": _dice(0.8), "enet": _dice(0.7)},
            promoted={"unet": True, "enet": False}, export=None,
            analysis_report=str(tmp_path / f"rounds/round-0{k}/analysis/report.html"),
            overlays=str(tmp_path / f"rounds/round-0{k}/round/overlays"), corrected_slices=20,
            verify_seconds=270.0, adjust_seconds=1200.0, scratch_seconds=9600.0, routed_adjust_slices=12 * (k - 1),
            chained_adjust_slices=8, audit_errors=0, budget_seconds=1980.0, planned_seconds=1950.0,
            thresholds_used={}, site_dice={"unet": {"A": {"mean_foreground": 0.83}, "B": {"mean_foreground": 0.612}},
                                           "enet": {"A": {"mean_foreground": 0.75}, "B": {"mean_foreground": 0.6}}}))
    return out


def test_the_quick_demo_is_budgeted_in_human_seconds_on_two_sites():
    assert verify_equivalents(60) == 60 * (3 + 0.5 * 60) == 1980
    quick = LoopConfig.preset(True)
    assert quick.budget_seconds == 1980 and quick.budget is None and quick.sites == ("A", "B")
    assert quick.verify_min == 0.5  # routing decides verify vs adjust; nothing forces verify any more
    assert LoopConfig.preset(True, budget_seconds=600).budget_seconds == 600
    assert LoopConfig.preset(True, tta="flip").tta == "flip"
    with pytest.raises(SegqaError, match="--tta 'mirror'"):  # before any training starts
        LoopConfig.preset(True, tta="mirror")


def test_running_cost_adds_up_rounds(tmp_path):
    assert running_cost(_summaries(tmp_path)) == [(1470.0, 9600.0), (2940.0, 19200.0)]
    assert [human_time(v) for v in (75, 1470, 3 * 3600)] == ["75 s", "24.5 min", "3.0 h"]


def test_report_shows_routing_sites_audit_and_cost(tmp_path):
    summaries = _summaries(tmp_path)
    cfg = LoopConfig.preset(True, workspace=str(tmp_path))
    initial_sites = {"unet": {"A": {"mean_foreground": 0.8}, "B": {"mean_foreground": 0.5}}, "enet": {}}
    html = write_report(tmp_path, cfg, {"unet": _dice(0.75), "enet": _dice(0.65)}, summaries, initial_sites
                        ).read_text()
    assert "selection: uncertainty" not in html
    assert "routing: calibrated acceptance" in html and "sites A, B" in html and "33.0 min of human time" in html
    for header in ("U-Net site A", "U-Net site B", "ENet site B", "audited (rejected)", "human time so far"):
        assert header in html
    assert "0.612" in html and "0.500" in html  # site B Dice after round 1 and initially
    assert "49.0 min" in html and "5.3 h" in html  # human time so far vs scratch so far after round 2


def test_report_lists_every_rounds_challengers_and_why_they_were_refused(tmp_path):
    from qa_workflow.loop.demo_report import challenger_rows
    from qa_workflow.loop.registry import decide_promotion

    def metrics(mean, gm, b):
        return {"mean_foreground_dice": mean, "dice": {"csf": 0.6, "gray_matter": gm, "white_matter": 0.85},
                "sites": {"A": {"mean_foreground": mean + 0.02}, "B": {"mean_foreground": b}}}

    champion = metrics(0.785, 0.839, 0.749)
    decisions = [{"round": None, "network": "unet", "promote": True, "reasons": ["no champion yet"],
                  "challenger_metrics": champion, "champion_metrics": None}]
    for r, (mean, gm, b) in enumerate([(0.780, 0.826, 0.756), (0.790, 0.835, 0.769)], start=1):
        promote, reasons = decide_promotion(metrics(mean, gm, b), champion)
        decisions.append({"round": r, "network": "unet", "promote": promote, "reasons": reasons,
                          "challenger_metrics": metrics(mean, gm, b), "champion_metrics": champion})
    rows = challenger_rows(decisions, ["round-01", "round-02"])
    assert [(row["round"], row["promote"], row["sites"]["B"]) for row in rows] == [
        ("round-01", False, 0.756), ("round-02", True, 0.769)]  # the initial model's decision is not a round's
    assert "gray_matter Dice drops 0.8390 -> 0.8260" in rows[0]["reasons"]

    cfg = LoopConfig.preset(True, workspace=str(tmp_path))
    html = write_report(tmp_path, cfg, {"unet": _dice(0.75), "enet": _dice(0.65)}, _summaries(tmp_path),
                        decisions=decisions).read_text()
    assert "Challengers: what each round" in html and "refused</span>: mean foreground Dice drops" in html
    assert html.count('<span class="yes">promoted</span>') == 1
    assert "Challengers" not in write_report(tmp_path, cfg, {"unet": _dice(0.75), "enet": _dice(0.65)},
                                             _summaries(tmp_path)).read_text()

def test_report_names_an_initial_model_that_was_given_rather_than_trained(tmp_path):
    given = tmp_path / "site-model"
    (given / "checkpoints").mkdir(parents=True)
    (given / "checkpoints" / "best.params").write_bytes(b"weights")
    (given / "model_card.json").write_text(json.dumps({"network": "unet", "version": "unet-x", "architecture": {},
                                                       "normalization": {"mean": 0.2, "std": 0.3}}))
    initial = {"unet": _dice(0.75), "enet": _dice(0.65)}
    trained = write_report(tmp_path, LoopConfig.preset(True, workspace=str(tmp_path)), initial,
                           _summaries(tmp_path)).read_text()
    assert "initial models trained on site A only" in trained and "given" not in trained
    cfg = LoopConfig.preset(True, workspace=str(tmp_path), initial_model={"unet": str(given)})
    html = write_report(tmp_path, cfg, initial, _summaries(tmp_path)).read_text()
    assert f"initial U-Net given: <code>{given}</code>;\nthe others trained on site A only" in html
    assert "U-Net given, ENet trained</td>" in html and ">train split</td>" in trained


def test_report_says_why_a_class_has_no_threshold_after_the_last_round(tmp_path):
    summaries = _summaries(tmp_path)
    analysis = tmp_path / "rounds/round-02/analysis"
    analysis.mkdir(parents=True)
    (analysis / "thresholds.json").write_text(json.dumps({"classes": {
        "csf": {"threshold": None, "reason": "the scan fails at its first step: 3 of 59 rejected"},
        "gray_matter": {"threshold": 0.931, "reason": None},
        "white_matter": {"threshold": None, "reason": "too few reviews: 12 reviewed item(s)"}}}))
    assert why_no_threshold(analysis / "report.html") == [
        ("csf", "the scan fails at its first step: 3 of 59 rejected"),
        ("white_matter", "too few reviews: 12 reviewed item(s)")]
    cfg = LoopConfig.preset(True, workspace=str(tmp_path))
    html = write_report(tmp_path, cfg, {"unet": _dice(0.75), "enet": _dice(0.65)}, summaries).read_text()
    assert "Why not, after round-02" in html
    assert "<b>csf</b>: the scan fails at its first step: 3 of 59 rejected" in html
    assert "<b>gray_matter</b>" not in html
    # no analysis written (or unreadable): no section, no error
    (analysis / "thresholds.json").write_text("{not json")
    assert why_no_threshold(analysis / "report.html") == []
    (analysis / "thresholds.json").write_text(json.dumps({"classes": ["csf"]}))
    assert why_no_threshold(analysis / "report.html") == []
    (analysis / "thresholds.json").write_text("{not json")
    assert "Why not" not in write_report(tmp_path, cfg, {"unet": _dice(0.75), "enet": _dice(0.65)}, summaries
                                         ).read_text()


def test_round_table_has_one_line_per_round_with_sites(tmp_path):
    from rich.console import Console

    from qa_workflow.cli.loop import _round_table

    summaries = _summaries(tmp_path)
    out = io.StringIO()
    Console(file=out, width=240).print(_round_table(
        summaries, {"unet": _dice(0.75), "enet": _dice(0.65)}, ("unet", "enet"),
        {"unet": {"A": {"mean_foreground": 0.8}, "B": {"mean_foreground": 0.5}}}, ("A", "B")))
    text = out.getvalue()
    assert "U-Net B" in text and "ENet A" in text
    row = next(line for line in text.splitlines() if "round-02" in line)  # 20 auto-accepted + 1 audited of them
    assert "12/8" in row and "21 (1/0)" in row and "—/0.93/—" in row and "0.612" in row and "49.0 min" in row


def test_corrected_slices_and_voted_items_of_earlier_rounds_are_not_routed_again(tmp_path):
    from qa_workflow.confirmations.records import Correction, ItemRecord, Vote
    from qa_workflow.confirmations.store import open_store
    from qa_workflow.loop.demo import reviewed_item_ids

    uri = f"sqlite:///{tmp_path}/s.db"
    store = open_store(uri)
    voted = ItemRecord("sub-001/004/csf", "csf", 0.5, "round-01", slice_id="sub-001/004")
    store.record_votes([(voted, Vote("verify-1", voted.item_id, "w1", "reject"))])
    store.record_corrections([
        Correction("segqa-sim-adjust-routed-round-01", "sub-002/010", "c1", "round-01", "m.png", True, 60.0),
        Correction("segqa-sim-adjust-routed-round-02", "sub-003/011", "c1", "round-02", "n.png", True, 60.0)])
    store.close()
    before_2 = reviewed_item_ids(uri, before_round="round-02")
    assert before_2 == {"sub-001/004/csf", "sub-002/010/csf", "sub-002/010/gray_matter", "sub-002/010/white_matter"}
    assert reviewed_item_ids(uri, before_round="round-01") == set()
    assert "sub-003/011/white_matter" in reviewed_item_ids(uri)
