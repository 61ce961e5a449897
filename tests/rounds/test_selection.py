"""The selection policy: one assignment per item within budget, audit rate, review order, cold start."""

import json
import math
from itertools import pairwise

import numpy as np
import pytest

from qa_workflow.contract import ASSIGNMENTS, CALIBRATION_SCHEMA, THRESHOLDS_SCHEMA, CostModel, SegqaError
from qa_workflow.rounds.selection import (
    SelectionPolicy,
    load_calibration,
    load_thresholds,
    parse_calibration,
    parse_thresholds,
    route_seconds,
    spread_order,
)


def calibration(**accept_at):
    """A calibration whose P(accept) for each class rises linearly from ``accept_at[cls][0]`` at confidence 0 to
    ``accept_at[cls][1]`` at confidence 1."""
    return parse_calibration({"schema": CALIBRATION_SCHEMA, "classes": {
        k: {"x": [0.0, 1.0], "y": list(v)} for k, v in accept_at.items()}})


def thresholds(**classes):
    return parse_thresholds({"schema": THRESHOLDS_SCHEMA, "method": "clopper-pearson",
                             "classes": {k: {"threshold": v, "reason": None if v is not None else "too few reviews"}
                                         for k, v in classes.items()}})


def test_every_item_gets_exactly_one_assignment_within_budget_and_cap(score_frame):
    scores = score_frame()
    policy = SelectionPolicy(budget=40, per_subject_cap=8, random_arm=5, seed=3)
    out = policy.fit_transform(scores, thresholds(csf=0.9, gray_matter=0.8, white_matter=None))
    assert list(out["item_id"]) == list(scores["item_id"])  # one row per item, same order
    assert set(out["assignment"]) <= set(ASSIGNMENTS)
    assert (out["reason"] != "").all()
    review = out[out["assignment"] == "verify"]
    assert len(review) == 40
    assert review.groupby("subject").size().max() <= 8
    assert (out["assignment"] == "random_arm").sum() == 5
    # not reviewable -> skip with the score table's reason
    not_rev = ~scores["reviewable"]
    assert (out.loc[not_rev, "assignment"] == "skip").all()
    assert (out.loc[not_rev, "reason"] == scores.loc[not_rev, "skip_reason"]).all()
    # auto-accepted items are at or above their class threshold; review items below it (or null class)
    auto = out[out["assignment"] == "auto_accept"]
    assert (auto.loc[auto["class_name"] == "csf", "confidence"] >= 0.9).all()
    assert not (auto["class_name"] == "white_matter").any()
    rev_csf = review[review["class_name"] == "csf"]
    assert (rev_csf["confidence"] < 0.9).all()
    # reviewed items are ranked 1..n without gaps
    ranked = out[out["assignment"].isin(["verify", "audit", "random_arm"])]["review_rank"]
    assert sorted(ranked) == list(range(1, len(ranked) + 1))


def test_null_thresholds_auto_accept_nothing(score_frame):
    scores = score_frame()
    out = SelectionPolicy(budget=10).fit_transform(scores, thresholds(csf=None, gray_matter=None,
                                                                      white_matter=None))
    assert not (out["assignment"].isin(["auto_accept", "audit"])).any()
    assert (out["assignment"] == "verify").sum() == 10


def test_audit_rate_is_about_five_percent_of_auto_accepted(score_frame):
    scores = score_frame(n_subjects=20, slices=40)
    out = SelectionPolicy(budget=0).fit_transform(scores, thresholds(csf=0.4, gray_matter=0.4, white_matter=0.4))
    above = ((out["assignment"] == "auto_accept") | (out["assignment"] == "audit")).sum()
    audits = (out["assignment"] == "audit").sum()
    assert above > 1000
    assert abs(audits / above - 0.05) < 0.005
    assert (out.loc[out["assignment"] == "audit", "confidence"] >= 0.4).all()


def test_a_class_that_auto_accepts_a_few_masks_is_still_audited(score_frame):
    """5 % of 4 to 20 masks rounds to 0 or 1; the audit rounds up, so every threshold in use is checked."""
    scores = score_frame(n_subjects=20, slices=40)
    seen = set()
    for top in (4, 10, 20, 22, 52):
        cut = float(np.sort(scores.loc[scores["class_name"] == "csf", "surface_agreement"].to_numpy())[-top])
        out = SelectionPolicy(budget=0).fit_transform(scores, thresholds(csf=cut))
        csf = out[out["class_name"] == "csf"]
        n = int(csf["assignment"].isin(["auto_accept", "audit"]).sum())  # the reviewable ones of the top masks
        assert (csf["assignment"] == "audit").sum() == math.ceil(0.05 * n), n
        seen.add(math.ceil(0.05 * n))
    assert seen == {1, 2, 3}
    assert not (SelectionPolicy(budget=0, audit_rate=0.0).fit_transform(scores, thresholds(csf=cut))["assignment"]
                == "audit").any()


def test_review_order_is_most_uncertain_first_with_subject_diversity(score_frame):
    scores = score_frame(n_subjects=4, slices=30)
    # subject 0 is uncertain everywhere: it comes first but must not take the whole budget
    scores.loc[scores["subject"] == "sub-000", "surface_agreement"] *= 0.5
    out = SelectionPolicy(budget=30).fit_transform(scores, thresholds(csf=0.99, gray_matter=0.99,
                                                                      white_matter=0.99))
    review = out[out["assignment"] == "verify"].sort_values("review_rank")
    first = review.iloc[0]
    eligible = out[out["assignment"].isin(["verify", "skip"]) & scores["reviewable"]]
    assert first["confidence"] == eligible["confidence"].min()
    assert review["subject"].nunique() > 1
    assert (review["subject"] == "sub-000").sum() > 30 / 4  # but the uncertain subject gets the largest share
    # adjacent slices of one subject and class are not reviewed back to back
    top = review.head(8)
    for (subj, cls), g in top.groupby(["subject", "class_name"]):
        s = sorted(g["slice"])
        assert all(b - a > 2 for a, b in pairwise(s)), (subj, cls, s)


def test_cold_start_covers_every_confidence_decile_of_every_class(score_frame):
    scores = score_frame(n_subjects=10, slices=30)
    policy = SelectionPolicy(budget=60, seed=1).fit(scores)
    assert policy.cold_start_
    out = policy.transform(scores)
    review = out[out["assignment"] == "verify"]
    assert len(review) == 60
    for cls in ("csf", "gray_matter", "white_matter"):
        edges = policy.strata_edges_[cls]
        conf = review.loc[review["class_name"] == cls, "confidence"].to_numpy()
        deciles = np.clip(np.searchsorted(edges[1:-1], conf, side="right"), 0, 9)
        assert set(deciles) == set(range(10)), cls
    assert not (out["assignment"] == "auto_accept").any()


def test_a_cold_start_budget_short_of_one_pass_still_reviews_the_most_confident_masks(score_frame):
    """Thresholds are fitted on the most confident reviewed masks: a first round that pays for fewer masks
    than there are (decile, class) strata must still reach every class's top decile, and spread the rest."""
    scores = score_frame(n_subjects=10, slices=30)
    policy = SelectionPolicy(budget=12, seed=3).fit(scores)
    review = policy.transform(scores).query("assignment == 'verify'")
    assert len(review) == 12  # 4 per class, of 10 deciles each
    for cls in ("csf", "gray_matter", "white_matter"):
        deciles = {policy._stratum(cls, c) for c in review.loc[review["class_name"] == cls, "confidence"]}
        assert deciles == {9, 0, 5, 7}, (cls, deciles)  # top, bottom, middle, upper middle
    assert spread_order(10)[:4] == [9, 0, 5, 7] and sorted(spread_order(10)) == list(range(10))
    assert spread_order(1) == [0] and spread_order(0) == []

def test_same_seed_same_assignment_other_seed_other_sample(score_frame):
    scores = score_frame()
    a = SelectionPolicy(budget=30, seed=5).fit_transform(scores)
    b = SelectionPolicy(budget=30, seed=5).fit_transform(scores.sample(frac=1, random_state=0))
    assert a.set_index("item_id").sort_index().equals(b.set_index("item_id").sort_index())
    c = SelectionPolicy(budget=30, seed=6).fit_transform(scores)
    assert set(a.loc[a["assignment"] == "verify", "item_id"]) != set(c.loc[c["assignment"] == "verify", "item_id"])


def test_random_strategy_ignores_confidence(score_frame):
    scores = score_frame(n_subjects=10, slices=30)
    th = thresholds(csf=0.99, gray_matter=0.99, white_matter=0.99)
    active = SelectionPolicy(budget=50).fit_transform(scores, th)
    rand = SelectionPolicy(budget=50, strategy="random").fit_transform(scores, th)
    mean = lambda o: o.loc[o["assignment"] == "verify", "confidence"].mean()  # noqa: E731
    assert mean(active) < mean(rand) - 0.1


def test_thresholds_file_checks(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"schema": "other/2", "classes": {}}))
    with pytest.raises(SegqaError, match="schema 'other/2' is not 'segqa.thresholds/1'"):
        load_thresholds(str(p))
    p.write_text(json.dumps({"schema": THRESHOLDS_SCHEMA, "confidence_scale": "percent",
                             "classes": {"csf": {"threshold": 95}, "tumor": {"threshold": 50}}}))
    t = load_thresholds(str(p))
    assert t.classes == {"csf": 0.95, "gray_matter": None, "white_matter": None}
    assert t.sha256 and any("tumor" in w for w in t.warnings)
    p.write_text(json.dumps({"schema": THRESHOLDS_SCHEMA, "confidence_scale": "percent",
                             "classes": {"csf": {"threshold": 97.3756}}}))
    assert load_thresholds(str(p)).classes["csf"] == 0.973756  # not 0.9737560000000001: a mask there is above
    p.write_text(json.dumps({"schema": THRESHOLDS_SCHEMA, "classes": {"csf": {"threshold": 1.5}}}))
    with pytest.raises(SegqaError, match=r"classes.csf.threshold"):
        load_thresholds(str(p))


def test_bad_parameters_and_missing_measure_are_user_errors(score_frame):
    scores = score_frame()
    with pytest.raises(SegqaError, match="budget"):
        SelectionPolicy(budget=-1).fit(scores)
    with pytest.raises(SegqaError, match="no mutual_info values"):
        SelectionPolicy(measure="mutual_info").fit(scores)
    older = scores.assign(surface_agreement=np.nan)  # a table scored before the measure existed
    with pytest.raises(SegqaError, match="no surface_agreement values.*predict' again"):
        SelectionPolicy().fit(older)
    with pytest.raises(SegqaError, match="fit"):
        SelectionPolicy().transform(scores)


def test_items_reviewed_earlier_are_skipped_not_reselected(score_frame):
    scores = score_frame()
    first = SelectionPolicy(budget=20).fit_transform(scores, thresholds(csf=0.9, gray_matter=0.9, white_matter=0.9))
    done = set(first.loc[first["assignment"].isin(["verify", "audit"]), "item_id"])
    second = SelectionPolicy(budget=20).fit_transform(scores, thresholds(csf=0.9, gray_matter=0.9,
                                                                         white_matter=0.9), exclude=done)
    again = second[second["item_id"].isin(done)]
    assert (again["assignment"] == "skip").all()
    assert (again["reason"] == "already reviewed in an earlier round").all()
    assert (second["assignment"] == "verify").sum() == 20


def test_the_policy_is_a_scikit_learn_estimator_clone_and_set_params_work(score_frame):
    from sklearn.base import clone

    policy = SelectionPolicy(budget=12, per_subject_cap=3, audit_rate=0.1, strategy="random", seed=7)
    copy = clone(policy)
    assert copy is not policy and copy.get_params() == policy.get_params()
    scores = score_frame()
    thr = thresholds(csf=0.9, gray_matter=0.8, white_matter=None)
    assert copy.fit_transform(scores, thr).equals(policy.fit_transform(scores, thr))
    assert not hasattr(clone(policy.fit(scores, thr)), "thresholds_")  # clone copies parameters, not state
    policy.set_params(budget=5)
    assert (policy.fit_transform(scores, thr)["assignment"] == "verify").sum() == 5
    with pytest.raises(ValueError):
        policy.set_params(budjet=5)


def test_round_json_records_the_parameters_in_init_order():
    params = SelectionPolicy(budget=3, seed=2).record_params()
    assert list(params) == ["budget_seconds", "budget", "per_subject_cap", "audit_rate", "random_arm", "verify_min",
                            "costs", "measure", "strategy", "subject_decay", "neighbour_decay", "slice_gap",
                            "n_strata", "site_weighting", "seed"]
    assert params["budget"] == 3 and params["seed"] == 2 and params["audit_rate"] == 0.05
    assert params["costs"] == {"verify_s": 3.0, "adjust_s": 60.0, "scratch_s": 240.0}  # JSON-ready
    json.dumps(params)


ROUTED = ["verify", "adjust", "audit", "random_arm"]


def test_routing_gives_one_route_per_item_and_keeps_to_the_seconds_budget(score_frame):
    scores = score_frame(n_subjects=10, slices=30)
    cal = calibration(csf=(0.0, 1.0), gray_matter=(0.0, 0.6), white_matter=(0.3, 1.0))
    for budget in (0, 45, 600, 3000):
        out = SelectionPolicy(budget_seconds=budget, random_arm=4, seed=1).fit_transform(
            scores, thresholds(csf=0.95, gray_matter=None, white_matter=0.97), cal)
        assert list(out["item_id"]) == list(scores["item_id"]) and set(out["assignment"]) <= set(ASSIGNMENTS)
        assert (out["reason"] != "").all()
        spent = out.loc[out["assignment"].isin(ROUTED), "expected_seconds"].sum()
        assert spent <= budget + 1e-6
        assert (out.loc[~out["assignment"].isin(ROUTED), "expected_seconds"] == 0).all()
        assert route_seconds(out)["total"] == pytest.approx(spent, abs=0.5)
        if budget == 3000:
            assert spent > 3000 - 60  # the budget is used, not left idle
            assert {"verify", "adjust"} <= set(out["assignment"])
    # what an item is charged: verify = 3 s + (1 − p) · 60 s of expected chained correction; adjust = 60 s a slice
    out = SelectionPolicy(budget_seconds=3000).fit_transform(scores, None, cal)
    ver = out[out["assignment"] == "verify"]
    assert np.allclose(ver["expected_seconds"], 3 + (1 - ver["p_accept"]) * 60, atol=1e-3)
    adj = out[out["assignment"] == "adjust"]
    assert np.allclose(adj.groupby("slice_id")["expected_seconds"].sum(), 60.0)
    cheap = SelectionPolicy(budget_seconds=3000, costs=CostModel(adjust_s=30.0)).fit_transform(scores, None, cal)
    assert (cheap["assignment"] == "adjust").sum() > len(adj)  # the cost model is the policy's, configurable
    # three reviewers per mask: each check is 3 x 3 s of human time, so the same budget buys fewer verify masks
    crew = SelectionPolicy(budget_seconds=3000, costs=CostModel().for_crew(3, 1)).fit_transform(scores, None, cal)
    crew_ver = crew[crew["assignment"] == "verify"]
    assert np.allclose(crew_ver["expected_seconds"], 9 + (1 - crew_ver["p_accept"]) * 60, atol=1e-3)
    assert crew.loc[crew["assignment"].isin(ROUTED), "expected_seconds"].sum() <= 3000 + 1e-6


def test_cost_model_for_a_crew_counts_every_persons_seconds():
    assert CostModel().for_crew(3, 2) == CostModel(verify_s=9.0, adjust_s=120.0, scratch_s=240.0)
    assert CostModel().for_crew() == CostModel()
    for bad in (0, 1.5, True):
        with pytest.raises(SegqaError, match="reviewers"):
            CostModel().for_crew(bad)


def test_a_class_with_low_calibrated_acceptance_goes_to_adjust(score_frame):
    scores = score_frame(n_subjects=10, slices=30)
    low_gm = calibration(csf=(0.6, 1.0), gray_matter=(0.0, 0.3), white_matter=(0.6, 1.0))
    out = SelectionPolicy(budget_seconds=4000).fit_transform(scores, None, low_gm)
    routed = out[out["assignment"].isin(["verify", "adjust"])]
    assert set(routed.loc[routed["class_name"] == "gray_matter", "assignment"]) == {"adjust"}
    assert set(routed.loc[routed["class_name"] != "gray_matter", "assignment"]) == {"verify"}
    # the same class with a well-calibrated high acceptance is verified instead
    high_gm = calibration(csf=(0.6, 1.0), gray_matter=(0.6, 1.0), white_matter=(0.6, 1.0))
    again = SelectionPolicy(budget_seconds=4000).fit_transform(scores, None, high_gm)
    assert not (again["assignment"] == "adjust").any()
    # verify_min is the dividing line: P(accept) = 0.3 + 0.4 · confidence for white matter
    mid = calibration(csf=(0.9, 1.0), gray_matter=(0.9, 1.0), white_matter=(0.3, 0.7))
    split = SelectionPolicy(verify_min=0.5).fit_transform(scores, None, mid)
    wm = split[(split["class_name"] == "white_matter") & split["assignment"].isin(["verify", "adjust"])]
    assert (wm.loc[wm["assignment"] == "adjust", "p_accept"] < 0.5).all()
    assert (wm.loc[wm["assignment"] == "verify", "p_accept"] >= 0.5).all()
    assert (wm["assignment"] == "adjust").any() and (wm["assignment"] == "verify").any()


def test_cold_start_is_verify_only_and_covers_every_confidence_decile(score_frame):
    scores = score_frame(n_subjects=10, slices=30)
    policy = SelectionPolicy(budget_seconds=2500)  # about 100 masks at 3 s + (1 − confidence) · 60 s each
    out = policy.fit_transform(scores)
    assert policy.cold_start_
    assert set(out["assignment"]) == {"verify", "skip"}
    ver = out[out["assignment"] == "verify"]
    assert ver["reason"].str.startswith("cold start").all()
    for cls in ("csf", "gray_matter", "white_matter"):
        strata = {policy._stratum(cls, c) for c in ver.loc[ver["class_name"] == cls, "confidence"]}
        assert len(strata) >= 9, (cls, strata)  # about 30 masks per class spread over the ten deciles
    # site weights change the gain, never the stratum a mask falls in
    scores["site"] = np.where(scores["subject"].str[-1].astype(int) % 2 == 1, "B", "A")
    scores.loc[scores["site"] == "B", "surface_agreement"] -= 0.2
    sited = SelectionPolicy(budget_seconds=2500)
    ver = sited.fit_transform(scores).query("assignment == 'verify'")
    assert sited.site_weights_["B"] > 1
    for cls in ("csf", "gray_matter", "white_matter"):
        strata = {sited._stratum(cls, c) for c in ver.loc[ver["class_name"] == cls, "confidence"]}
        assert len(strata) >= 9, (cls, strata)


def test_site_b_comes_first_when_the_model_is_less_certain_there(score_frame):
    scores = score_frame(n_subjects=10, slices=30)
    scores["site"] = np.where(scores["subject"].str[-1].astype(int) % 2 == 1, "B", "A")
    b = scores["site"] == "B"
    for m in ("soft_dice", "mean_prob", "surface_agreement"):
        scores.loc[b, m] = scores.loc[b, m] - 0.15  # the model is less sure of site B
    scores["entropy"] = 1 - scores["soft_dice"]
    th = thresholds(csf=0.99, gray_matter=0.99, white_matter=0.99)
    policy = SelectionPolicy(budget_seconds=1400)
    out = policy.fit_transform(scores, th)
    assert policy.site_weights_["B"] > 1 > policy.site_weights_["A"]
    first = out[out["assignment"] == "verify"].sort_values("review_rank").head(20)
    assert (first["site"] == "B").mean() >= 0.8
    assert first["subject"].nunique() >= 5  # diversity: one per subject first
    plain = SelectionPolicy(budget_seconds=1400, site_weighting=False).fit_transform(scores, th)
    assert (plain["site"][plain["assignment"] == "verify"] == "B").mean() < (first["site"] == "B").mean()


def test_calibration_file_checks(tmp_path):
    p = tmp_path / "calibration.json"
    p.write_text(json.dumps({"schema": CALIBRATION_SCHEMA, "classes": {
        "csf": {"x": [0.2, 0.8], "y": [0.1, 0.9]}, "gray_matter": {"x": [], "y": []}, "tumor": {"x": [0], "y": [0]}}}))
    cal = load_calibration(str(p))
    assert set(cal.curves) == {"csf"} and cal.sha256
    assert np.allclose(cal.p_accept("csf", np.array([0.0, 0.5, 1.0])), [0.1, 0.5, 0.9])  # clipped at the ends
    assert np.isnan(cal.p_accept("gray_matter", np.array([0.5]))).all()
    p.write_text(json.dumps({"schema": CALIBRATION_SCHEMA, "classes": {"csf": {"x": [0.2, 0.8], "y": [0.9, 0.1]}}}))
    with pytest.raises(SegqaError, match="classes.csf"):
        load_calibration(str(p))
    p.write_text(json.dumps({"schema": THRESHOLDS_SCHEMA, "classes": {}}))
    with pytest.raises(SegqaError, match="segqa.calibration/1"):
        load_calibration(str(p))
    with pytest.raises(SegqaError, match="--costs"):
        CostModel.parse("verify=3,draw=5")
    assert CostModel.parse("adjust=45") == CostModel(adjust_s=45.0)
