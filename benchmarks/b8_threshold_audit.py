"""B8 — threshold audit: is the auto-accept guarantee kept against the truth?

For a trained model and the atlas cohort's pool split:
1. predict every pool slice and score every (slice, tissue class) item (confidence: ``--measure``, default
   ``surface_agreement``, the loop's default; ``entropy``, ``soft_dice`` or ``mean_prob`` to compare);
2. split the pool subjects in two halves, each site's subjects alternately (`split_halves`): the *fit* half is
   reviewed by simulated reviewers
   (ARCHITECTURE §10: quality q = surface Dice at 1 px tolerance against the cohort's truth by default, volume
   Dice with ``--quality dice``; accept with sigmoid((q - 0.90)/0.02), 3 % error each, three reviewers,
   majority; ``--escalate-to 5`` asks two more about the masks the three split on), and the Clopper-Pearson
   thresholds are fitted on those reviews exactly as `segqa analyze` does;
3. on the *audit* half (never reviewed, never used to fit), every item above its class threshold counts as
   auto-accepted; its true error is "quality against the truth below the reviewers' bar τ (0.90)", with the
   same quality measure the reviewers use.
Reports, per class: threshold, auto-accepted items, true error rate among them (with a 95 % Clopper-Pearson
interval), the target, and the coverage; and, to tell a weak confidence from a weak model, how the confidence
ranks the fit half against the truth's own order, and the best order's chance (`oracle_first_step`): that the
panel accepts all of the 59 masks of best true quality, the most any confidence could make of this model.

    .venv/bin/python benchmarks/b8_threshold_audit.py --model demo/models/unet/<version> --data demo/cohort
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from analysis.thresholds import cp_two_sided, make_selector
from qa_workflow.contract import CONFIDENCE_MEASURES, DEFAULT_CONFIDENCE_MEASURE, DEFAULT_TTA, REVIEW_CLASSES, TTA_MODES
from qa_workflow.review.simulated_reviewers import (
    DEFAULT_QUALITY,
    DEFAULT_TAU,
    QUALITY_MEASURES,
    mask_quality,
    reviewer_decision,
)
from qa_workflow.rounds.scoring import confidence_from, predicted_labels, score_probabilities
from training.dataset import load_slices, read_index
from training.predict import load_predictor, with_tta


def item_table(model: str, data: str, batch_size: int = 8, quality: str = DEFAULT_QUALITY,
               measure: str = DEFAULT_CONFIDENCE_MEASURE, tta: str = DEFAULT_TTA):
    """Per pool item: subject, slice, class index, confidence (``measure``), pixel count, true quality (the
    reviewers' measure against the truth), acquisition site."""
    predictor = with_tta(load_predictor(model), tta)  # as `segqa predict` runs it
    records = read_index(data, ["pool"])
    images, truth = load_slices(data, records)
    rows = []
    for start in range(0, len(records), 32):
        probs = predictor.predict_proba(images[start:start + 32], batch_size=batch_size)
        scores = score_probabilities(probs)
        conf = confidence_from(getattr(scores, measure), measure)
        labels = predicted_labels(probs)
        for i in range(len(probs)):
            rec = records[start + i]
            for k, cls in enumerate(REVIEW_CLASSES):
                q = mask_quality(labels[i] == cls.id, truth[start + i] == cls.id, quality)
                rows.append((rec.subject, rec.slice, k, float(conf[i, k]), int(scores.pixel_count[i, k]),
                             float(q), rec.site))
    return rows, predictor.version


#: The first step of the Clopper-Pearson scan at 5 % / 95 %: 59 masks, all accepted.
TOP_N = 59


def ranking_quality(conf: np.ndarray, quality: np.ndarray, accepted: np.ndarray) -> dict:
    """How well the confidence orders the fit half's masks: AUC for "the reviewers accept", and the rejections
    among the TOP_N most confident masks against those among the TOP_N of the best possible order (by the true
    quality): the gap is what a better confidence measure could still gain; the rest needs a better model.
    ``top_rejected_at``: the positions (in the fit half's arrays) of those rejected top masks, to look at."""
    from sklearn.metrics import roc_auc_score

    n = min(TOP_N, len(conf))
    auc = float(roc_auc_score(accepted, conf)) if 0 < accepted.sum() < len(accepted) else None
    top = np.argsort(-conf, kind="stable")[:n]
    return {"auc": auc, "top_n": n, "top_rejected": int((~accepted[top]).sum()),
            "oracle_top_rejected": int((~accepted[np.argsort(-quality, kind="stable")[:n]]).sum()),
            "top_rejected_at": [int(i) for i in top[~accepted[top]]]}


def majority_with_escalation(accepts: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Each mask's verdict from its reviewers' answers ``accepts`` (masks, k) bool when only the first ``first``
    are asked unless they split, and the rest then: (accepted by a majority of those asked, reviewers asked).
    ``first`` = k is the plain majority of all k."""
    k = accepts.shape[1]
    if not 0 < first <= k:
        raise ValueError(f"first must be in 1..{k}, got {first}")
    head = accepts[:, :first].sum(axis=1)
    unanimous = (head == 0) | (head == first)
    asked = np.where(unanimous, first, k)
    accepted = np.where(unanimous, head == first, accepts.sum(axis=1) * 2 > k)
    return accepted, asked


def panel_accept_chance(quality: np.ndarray, reviewers: int, escalate_to: int | None, error_rate: float,
                        tau: float) -> np.ndarray:
    """The chance that the simulated panel accepts a mask of true quality q, exactly as `majority_with_escalation`
    decides (``reviewers`` asked; with ``escalate_to``, the rest too where the first ones split): each reviewer
    accepts independently with sigmoid((q - τ)/s), flipped with ``error_rate`` (ARCHITECTURE §10)."""
    from scipy.stats import binom

    from qa_workflow.review.simulated_reviewers import accept_probability

    p = np.asarray(accept_probability(quality, tau), dtype=float)
    p = p * (1 - error_rate) + (1 - p) * error_rate
    k = escalate_to or reviewers
    if escalate_to is None:
        return binom.sf(k // 2, k, p)  # more than half of them accept
    # the first `reviewers` all accept; or they split and a majority of all k accept
    chance = p ** reviewers
    for head in range(1, reviewers):
        need = k // 2 + 1 - head  # accepts still needed from the k - reviewers asked next
        chance = chance + binom.pmf(head, reviewers, p) * binom.sf(need - 1, k - reviewers, p)
    return chance


def oracle_first_step(quality: np.ndarray, n: int, **panel) -> dict:
    """The best any confidence measure could do at the Clopper-Pearson scan's first step: order the masks by
    their true quality and ask the panel about the ``n`` best. Returns the chance that all ``n`` are accepted
    (the step passes: a threshold exists) and the expected rejections among them; 0 and None when there are
    fewer than ``n`` masks. A chance near zero says the model, not the confidence, keeps the class from a
    threshold."""
    if len(quality) < n:
        return {"oracle_first_step_chance": 0.0, "oracle_expected_rejections": None}
    best = np.sort(np.asarray(quality, dtype=float))[::-1][:n]
    chance = panel_accept_chance(best, **panel)
    return {"oracle_first_step_chance": float(np.prod(chance)),
            "oracle_expected_rejections": float((1 - chance).sum())}


def split_halves(subjects: list[str], site_of: dict[str, str]) -> set[str]:
    """The fit half: every other subject of each site (sorted), so both halves hold the pool's mix of sites.
    (Every other subject of the whole pool would not: the pool's sites need not alternate in name order.)"""
    fit: set[str] = set()
    for site in sorted({site_of.get(s, "") for s in subjects}):
        fit.update(sorted(s for s in subjects if site_of.get(s, "") == site)[0::2])
    return fit


def _chance(oracle: dict) -> str:
    if oracle["oracle_expected_rejections"] is None:
        return f"— (fewer than {TOP_N} masks)"
    return f"{oracle['oracle_first_step_chance']:.2g} ({oracle['oracle_expected_rejections']:.1f} rejections expected)"


def audit_at(rows, fit_subjects, tau, args, lines):
    results = {}
    top_lines = []  # per class, the rejected masks among the most confident
    for k, cls in enumerate(REVIEW_CLASSES):
        items = [r for r in rows if r[2] == k and r[4] >= args.min_pixels]
        fit = [r for r in items if r[0] in fit_subjects]
        audit = [r for r in items if r[0] not in fit_subjects]
        conf = np.array([r[3] for r in fit])
        asked_at_most = max(args.reviewers, args.escalate_to or 0)
        accepts = np.array([[reviewer_decision(r[5], seed=args.seed, reviewer_index=j,
                                               item_id=f"{r[0]}/{r[1]:03d}/{cls.name}", error_rate=args.error_rate,
                                               tau=tau) for j in range(1, asked_at_most + 1)]
                            for r in fit]).reshape(len(fit), asked_at_most)
        # majority of --reviewers; with --escalate-to, of them all where the first --reviewers split
        correct, asked = majority_with_escalation(accepts, args.reviewers)
        selector = make_selector("clopper-pearson", max_error=args.max_error, confidence=args.confidence)
        selector.fit(conf, correct)
        th = selector.threshold_
        a_conf = np.array([r[3] for r in audit])
        a_q = np.array([r[5] for r in audit])
        chosen = selector.predict(a_conf) if len(audit) else np.zeros(0, bool)
        n_auto = int(chosen.sum())
        errors = int((a_q[chosen] < tau).sum()) if n_auto else 0
        rate = errors / n_auto if n_auto else float("nan")
        if n_auto:
            lo, hi = cp_two_sided(np.array([errors]), np.array([n_auto]), 0.95)
            ci = f"{rate:.3f} ({float(lo[0]):.3f}–{float(hi[0]):.3f})"
        else:
            ci = "—"
        met = "— (nothing auto-accepted)" if not n_auto else ("yes" if rate <= args.max_error else "no")
        results[cls.name] = {"threshold": th, "fit": len(fit), "audited": len(audit), "auto_accepted": n_auto,
                             "true_errors": errors, "true_error_rate": rate, "reason": selector.reason_,
                             "fit_accept_rate": float(correct.mean()) if len(fit) else None,
                             "votes_per_mask": float(asked.mean()) if len(fit) else None,
                             **ranking_quality(conf, np.array([r[5] for r in fit]), correct)}
        # the best any confidence could do, on the fit half and on the whole pool (had every mask been reviewed)
        panel = {"reviewers": args.reviewers, "escalate_to": args.escalate_to, "error_rate": args.error_rate,
                 "tau": tau}
        results[cls.name]["oracle_fit"] = oracle_first_step(np.array([r[5] for r in fit]), TOP_N, **panel)
        results[cls.name]["oracle_pool"] = oracle_first_step(np.array([r[5] for r in items]), TOP_N, **panel)
        # the masks that keep the scan from starting: reviewer noise or model error?
        shown = "; ".join(f"{fit[i][0]}/{fit[i][1]:03d} ({fit[i][4]} px, confidence {fit[i][3]:.3f}, true quality "
                          f"{fit[i][5]:.3f})" for i in results[cls.name]["top_rejected_at"])
        top_lines.append(f"- {cls.name}, rejected among the {results[cls.name]['top_n']} most confident: "
                         f"{shown or 'none'}")
        lines.append(f"| {cls.name} | {'null' if th is None else f'{th:.4f}'} | {len(fit)} | {len(audit)} | {n_auto} | "
                     f"{errors} | {ci} | {args.max_error:g} | {n_auto / max(len(audit), 1):.2f} | {met} |")
    lines.append("")
    lines.append("Ranking on the fit half (AUC for \"accepted\"; rejections among the most confident masks, and "
                 "among the same number ordered by true quality, the best any confidence could do): " + "; ".join(
                     f"{name} AUC {'—' if res['auc'] is None else format(res['auc'], '.3f')}, top {res['top_n']}: "
                     f"{res['top_rejected']} rejected (best order {res['oracle_top_rejected']})"
                     for name, res in results.items()))
    lines.append("")
    lines.append(f"The best order's chance: had the reviewers seen the {TOP_N} masks of best true quality, the chance "
                 f"that they accept all {TOP_N} (the scan's first step passes), and the rejections expected among "
                 "them, on the fit half / on the whole pool: " + "; ".join(
                     f"{name} {_chance(res['oracle_fit'])} / {_chance(res['oracle_pool'])}"
                     for name, res in results.items()))
    if args.escalate_to:
        lines.append("\nReviewers asked per fit mask: " + "; ".join(
            f"{name} {res['votes_per_mask']:.2f}" for name, res in results.items() if res["votes_per_mask"]))
    for name, res in results.items():
        if res["threshold"] is None:
            lines.append(f"\n- {name}: no threshold — {res['reason']}")
    lines += ["", *top_lines]
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model folder (segqa train) or registry version folder")
    ap.add_argument("--data", required=True, help="atlas cohort dataset folder")
    ap.add_argument("--reviewers", type=int, default=3)
    ap.add_argument("--escalate-to", type=int, default=None,
                    help="ask more reviewers, up to this many in all, about the masks the first --reviewers split on")
    ap.add_argument("--error-rate", type=float, default=0.03)
    ap.add_argument("--max-error", type=float, default=0.05)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--min-pixels", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tau", type=float, nargs="+", default=[DEFAULT_TAU],
                    help="reviewers' quality bar(s) τ: reviewers accept with sigmoid((q - τ)/0.02), and an "
                         "auto-accepted mask is a true error when its Dice is below τ (one table per value)")
    ap.add_argument("--quality", default=DEFAULT_QUALITY, choices=QUALITY_MEASURES,
                    help="what reviewers judge (and what counts as a true error): surface Dice at 1 px or volume Dice")
    ap.add_argument("--measure", default=DEFAULT_CONFIDENCE_MEASURE,
                    choices=[m for m in CONFIDENCE_MEASURES if m != "mutual_info"],
                    help="the confidence the thresholds are fitted on (ARCHITECTURE §5)")
    ap.add_argument("--tta", default=DEFAULT_TTA, choices=TTA_MODES, help="test-time augmentation of the predictions")
    ap.add_argument("--out", default="benchmarks/results/B8.md")
    args = ap.parse_args(argv)
    if args.escalate_to is not None and args.escalate_to <= args.reviewers:
        ap.error(f"--escalate-to must exceed --reviewers ({args.reviewers}), got {args.escalate_to}")

    t0 = time.perf_counter()
    rows, version = item_table(args.model, args.data, quality=args.quality, measure=args.measure, tta=args.tta)
    subjects = sorted({r[0] for r in rows})
    if len(subjects) < 2:
        print("B8 needs at least two pool subjects", file=sys.stderr)
        return 2
    fit_subjects = split_halves(subjects, {r[0]: r[6] for r in rows})
    lines = [f"## B8 — threshold audit ({datetime.now(UTC).isoformat(timespec='seconds')})", "",
             "- command: `.venv/bin/python benchmarks/b8_threshold_audit.py "
             f"{' '.join(sys.argv[1:] if argv is None else argv)}`",
             f"- machine: 2-core dev machine, no GPU ({platform.machine()}), Python {platform.python_version()}",
             f"- model: {version}; pool subjects: {len(subjects)} ({len(fit_subjects)} fit the thresholds, "
             f"{len(subjects) - len(fit_subjects)} are audited); reviewers: {args.reviewers} simulated"
             f"{f' ({args.escalate_to} where the first {args.reviewers} split)' if args.escalate_to else ''}, "
             f"error rate {args.error_rate:g}, majority; quality judged (and true error measured) by "
             f"{'surface Dice at 1 px' if args.quality == 'surface_dice' else 'volume Dice'}",
             f"- thresholds: Clopper-Pearson, max error {args.max_error:g} at {args.confidence:g} confidence "
             f"(fixed-sequence scan, as `segqa analyze`) on the {args.measure} confidence; predictions "
             f"{'mirrored left-right (--tta flip)' if args.tta == 'flip' else 'one pass (--tta none)'}"]
    results = {}
    for tau in args.tau:
        lines += ["", f"### quality bar τ = {tau:g}", "",
                  "| class | threshold | fit items | audited items | auto-accepted | true errors | true error rate "
                  "(95 % CI) | target | coverage | met? |",
                  "|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
        results[str(tau)] = audit_at(rows, fit_subjects, tau, args, lines)
    lines += ["", f"wall time {time.perf_counter() - t0:.0f} s", ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
