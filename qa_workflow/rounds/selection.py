"""The selection policy of a round (ARCHITECTURE §5): who reviews what.

`SelectionPolicy` is a scikit-learn estimator (``BaseEstimator``: ``get_params``, ``set_params`` and
``sklearn.base.clone`` work): parameters are stored by ``__init__``, `fit` learns from the score table and the
thresholds (learned state ends in ``_``), `transform` assigns every item of a score table to exactly one of
``contract.ASSIGNMENTS`` with a reason:

``skip``
    not reviewable (predicted region < min_pixels), no value for the confidence measure, or a review candidate
    that the budget or the per-subject cap left out.
``auto_accept``
    confidence ≥ the class threshold of thresholds.json (a null threshold auto-accepts nothing).
``audit``
    a seeded random ``audit_rate`` share (default 5 %, rounded per class) of the items above threshold,
    reviewed blind to check the threshold.
``random_arm``
    an optional uniform random control sample of ``random_arm`` items from the review candidates.
``review``
    the review candidates (below threshold, or every item at cold start) in priority order, at most
    ``per_subject_cap`` per subject and ``budget`` in all. The budget counts ``review`` items only; audit and
    random-arm items come on top and are reported separately.

Priority (``strategy="uncertainty"``) is greedy "most uncertain first with diminishing returns": the next item is
the one with the highest ``(1 − confidence) · subject_decay^s · neighbour_decay^n``, where s is the number of
items already ranked from its subject and n the number of already-ranked items of the same subject and class
within ±``slice_gap`` slices (adjacent slices look alike). Defaults 0.9 and 0.5: a subject that is uncertain
everywhere still comes first, but does not fill the budget alone, and near-duplicate slices go last.

Cold start (no thresholds): nothing is auto-accepted and the budget is spread evenly (round-robin) over
strata = (class, confidence decile of that class, deciles learned by `fit`), in random order within a stratum,
so the first threshold analysis sees every confidence range of every class.

``strategy="random"`` ranks the candidates in seeded random order (a baseline for the label-efficiency benchmark).
Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from qa_workflow import storage
from qa_workflow.contract import (
    ASSIGNMENTS,
    CONFIDENCE_MEASURES,
    DEFAULT_CONFIDENCE_MEASURE,
    REVIEW_CLASSES,
    THRESHOLDS_SCHEMA,
    SegqaError,
)
from qa_workflow.rounds.scoring import confidence_from

__all__ = ["SelectionPolicy", "Thresholds", "load_thresholds", "parse_thresholds", "STRATEGIES",
           "ASSIGNMENT_COLUMNS", "DEFAULT_AUDIT_RATE"]

log = logging.getLogger(__name__)

STRATEGIES = ("uncertainty", "random")
DEFAULT_AUDIT_RATE = 0.05
ASSIGNMENT_COLUMNS = (
    "item_id", "subject", "slice", "slice_id", "class_id", "class_name", "measure", "confidence", "pixel_count",
    "assignment", "reason", "review_rank", "image", "pred_mask",
)
_TISSUE_NAMES = tuple(c.name for c in REVIEW_CLASSES)


# ------------------------------------------------------------------------------------------ thresholds

@dataclass(frozen=True)
class Thresholds:
    """Per-class auto-accept thresholds on the unit scale; None = nothing of that class may be auto-accepted."""

    classes: dict[str, float | None]
    reasons: dict[str, str | None] = field(default_factory=dict)
    source: str | None = None
    sha256: str | None = None
    method: str | None = None
    warnings: tuple[str, ...] = ()


def parse_thresholds(obj: Any, where: str = "thresholds") -> Thresholds:
    """Check a thresholds.json object (ARCHITECTURE §9, schema ``segqa.thresholds/1``) -> Thresholds.

    Percent-scale files are converted to the unit scale. Tissue classes missing from the file get a null
    threshold (with that reason); classes that are not tissue classes are ignored with a warning.
    Raises SegqaError naming the field for anything else.
    """
    if not isinstance(obj, Mapping):
        raise SegqaError(f"{where}: expected a JSON object with schema {THRESHOLDS_SCHEMA!r}")
    schema = obj.get("schema")
    if schema != THRESHOLDS_SCHEMA:
        raise SegqaError(f"{where}: schema {schema!r} is not {THRESHOLDS_SCHEMA!r}; expected a thresholds.json "
                         "written by 'segqa analyze'")
    scale = obj.get("confidence_scale", "unit")
    if scale not in ("unit", "percent"):
        raise SegqaError(f"{where}: confidence_scale must be 'unit' or 'percent', got {scale!r}")
    factor, top = (100.0, 100.0) if scale == "percent" else (1.0, 1.0)
    table = obj.get("classes")
    if not isinstance(table, Mapping):
        raise SegqaError(f"{where}: 'classes' must be an object of class name -> {{\"threshold\": ...}}")
    classes: dict[str, float | None] = {}
    reasons: dict[str, str | None] = {}
    warnings: list[str] = []
    for name, entry in table.items():
        if name not in _TISSUE_NAMES:
            warnings.append(f"{where}: class {name!r} is not a tissue class ({', '.join(_TISSUE_NAMES)}); ignored")
            continue
        if not isinstance(entry, Mapping) or "threshold" not in entry:
            raise SegqaError(f"{where}: classes.{name} must be an object with a 'threshold' (number or null)")
        thr = entry["threshold"]
        if thr is None:
            classes[name] = None
            reasons[name] = entry.get("reason") or "threshold is null"
            continue
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr) or not 0 <= thr <= top:
            raise SegqaError(f"{where}: classes.{name}.threshold must be null or a number in [0, {top:g}] "
                             f"({scale} scale), got {thr!r}")
        classes[name] = float(thr) / factor
        reasons[name] = None
    for name in _TISSUE_NAMES:
        if name not in classes:
            classes[name] = None
            reasons[name] = f"class not in {where}"
    return Thresholds(classes, reasons, method=obj.get("method"), warnings=tuple(warnings))


def load_thresholds(uri: str) -> Thresholds:
    """Read and check a thresholds.json (local path, file:// or s3://)."""
    data = storage.read_bytes(uri)
    import json

    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegqaError(f"{uri}: not valid JSON ({exc})") from None
    t = parse_thresholds(obj, str(uri))
    return Thresholds(t.classes, t.reasons, str(uri), hashlib.sha256(data).hexdigest(), t.method, t.warnings)


# ------------------------------------------------------------------------------------------ the policy

def _check_int(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise SegqaError(f"{name} must be an integer >= {low}{' or none' if allow_none else ''}, got {value!r}")


class SelectionPolicy(BaseEstimator):
    """Assign the items of a score table to auto_accept / review / audit / random_arm / skip. See module doc.

    Parameters (stored only; checked by `fit`): budget (max ``review`` items; None = all candidates),
    per_subject_cap (max ``review`` items per subject; None = no cap), audit_rate, random_arm (count),
    measure (one of contract.CONFIDENCE_MEASURES), strategy ("uncertainty" | "random"), subject_decay,
    neighbour_decay, slice_gap, n_strata (cold-start confidence quantile bins per class), seed.

    Learned by `fit`: ``thresholds_`` (class -> float | None), ``threshold_reasons_``, ``cold_start_``,
    ``strata_edges_`` (class -> increasing array of n_strata + 1 confidence quantiles), ``n_items_``.
    """

    def __init__(self, budget: int | None = None, per_subject_cap: int | None = None,
                 audit_rate: float = DEFAULT_AUDIT_RATE, random_arm: int = 0,
                 measure: str = DEFAULT_CONFIDENCE_MEASURE, strategy: str = "uncertainty",
                 subject_decay: float = 0.9, neighbour_decay: float = 0.5, slice_gap: int = 2,
                 n_strata: int = 10, seed: int = 0) -> None:
        self.budget = budget
        self.per_subject_cap = per_subject_cap
        self.audit_rate = audit_rate
        self.random_arm = random_arm
        self.measure = measure
        self.strategy = strategy
        self.subject_decay = subject_decay
        self.neighbour_decay = neighbour_decay
        self.slice_gap = slice_gap
        self.n_strata = n_strata
        self.seed = seed

    def record_params(self) -> dict[str, Any]:
        """The parameters in ``__init__`` order (``get_params`` sorts them): what round.json records."""
        params = self.get_params(deep=False)
        return {name: params[name] for name in inspect.signature(type(self).__init__).parameters if name in params}

    # -------------------------------------------------------------------------------------------- fit
    def _check_params(self) -> None:
        _check_int("budget", self.budget, 0, allow_none=True)
        _check_int("per_subject_cap", self.per_subject_cap, 1, allow_none=True)
        _check_int("random_arm", self.random_arm, 0)
        _check_int("slice_gap", self.slice_gap, 0)
        _check_int("n_strata", self.n_strata, 1)
        _check_int("seed", self.seed, 0)
        if not isinstance(self.audit_rate, (int, float)) or not 0.0 <= self.audit_rate <= 1.0:
            raise SegqaError(f"audit_rate must be in [0, 1], got {self.audit_rate!r}")
        for name in ("subject_decay", "neighbour_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise SegqaError(f"{name} must be in (0, 1], got {v!r}")
        if self.measure not in CONFIDENCE_MEASURES:
            raise SegqaError(f"unknown confidence measure {self.measure!r}; expected one of "
                             f"{', '.join(CONFIDENCE_MEASURES)}")
        if self.strategy not in STRATEGIES:
            raise SegqaError(f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")

    def fit(self, scores, thresholds: Thresholds | Mapping[str, float | None] | None = None) -> SelectionPolicy:
        """Learn the thresholds in use and the cold-start strata from a score table (pandas DataFrame)."""
        self._check_params()
        for col in ("item_id", "subject", "slice", "class_name", "reviewable", self.measure):
            if col not in scores.columns:
                raise SegqaError(f"score table: missing column {col!r}")
        conf = confidence_from(scores[self.measure].to_numpy(dtype=float), self.measure)
        reviewable = scores["reviewable"].to_numpy(dtype=bool)
        if reviewable.any() and np.isnan(conf[reviewable]).all():
            hint = " (run 'segqa predict' with --mc-samples T, T > 1)" if self.measure == "mutual_info" else ""
            raise SegqaError(f"score table has no {self.measure} values{hint}; choose another --measure")
        if thresholds is None:
            self.cold_start_ = True
            self.thresholds_: dict[str, float | None] = {c: None for c in _TISSUE_NAMES}
            self.threshold_reasons_: dict[str, str | None] = {c: "cold start: no thresholds file"
                                                              for c in _TISSUE_NAMES}
        else:
            if not isinstance(thresholds, Thresholds):
                thresholds = parse_thresholds({"schema": THRESHOLDS_SCHEMA, "classes": {
                    k: {"threshold": v} for k, v in thresholds.items()}})
            self.cold_start_ = False
            self.thresholds_ = dict(thresholds.classes)
            self.threshold_reasons_ = dict(thresholds.reasons)
        self.strata_edges_: dict[str, np.ndarray] = {}
        names = scores["class_name"].to_numpy()
        for cls in _TISSUE_NAMES:
            c = conf[(names == cls) & reviewable & ~np.isnan(conf)]
            qs = np.linspace(0, 1, self.n_strata + 1)
            self.strata_edges_[cls] = np.quantile(c, qs) if len(c) else np.full(len(qs), np.nan)
        self.n_items_ = len(scores)
        return self

    def fit_transform(self, scores, thresholds=None, exclude=()):
        return self.fit(scores, thresholds).transform(scores, exclude=exclude)

    # -------------------------------------------------------------------------------------- transform
    def transform(self, scores, exclude=()):
        """Assign every row of ``scores`` -> DataFrame with ASSIGNMENT_COLUMNS, one row per item, same order.

        ``exclude``: item ids that already have a review outcome (earlier rounds); they are skipped with that
        reason, never auto-accepted, audited or reviewed again.
        """
        import pandas as pd

        if not hasattr(self, "thresholds_"):
            raise SegqaError("SelectionPolicy: call fit() before transform()")
        n = len(scores)
        rng = np.random.default_rng(self.seed)
        conf = confidence_from(scores[self.measure].to_numpy(dtype=float), self.measure)
        names = scores["class_name"].to_numpy().astype(str)
        subjects = scores["subject"].to_numpy().astype(str)
        slices = scores["slice"].to_numpy().astype(int)
        item_ids = scores["item_id"].to_numpy().astype(str)
        reviewable = scores["reviewable"].to_numpy(dtype=bool)
        skip_reason = (scores["skip_reason"].to_numpy().astype(str) if "skip_reason" in scores.columns
                       else np.full(n, "", dtype=object))
        assignment = np.full(n, "", dtype=object)
        reason = np.full(n, "", dtype=object)

        not_rev = ~reviewable
        assignment[not_rev] = "skip"
        reason[not_rev] = [r or "not reviewable" for r in skip_reason[not_rev]]
        no_conf = reviewable & np.isnan(conf)
        assignment[no_conf] = "skip"
        reason[no_conf] = f"no {self.measure} value"
        done = np.isin(item_ids, np.asarray(sorted(set(exclude)), dtype=str)) if len(exclude) else np.zeros(n, bool)
        assignment[done] = "skip"
        reason[done] = "already reviewed in an earlier round"
        eligible = reviewable & ~np.isnan(conf) & ~done

        # auto-accept and audit, per class
        auto = np.zeros(n, bool)
        cand_reason = np.full(n, "", dtype=object)
        for cls in _TISSUE_NAMES:
            in_cls = eligible & (names == cls)
            thr = self.thresholds_.get(cls)
            if thr is None:
                cand_reason[in_cls] = f"{self.threshold_reasons_.get(cls) or 'threshold is null'}"
                continue
            above = in_cls & (conf >= thr)
            auto |= above
            cand_reason[in_cls & ~above] = f"{self.measure} below the {cls} threshold {thr:.4g}"
            idx = np.flatnonzero(above)
            n_audit = int(round(self.audit_rate * len(idx)))
            audit_idx = rng.choice(idx, size=n_audit, replace=False) if n_audit else np.array([], int)
            assignment[idx] = "auto_accept"
            reason[idx] = [f"{self.measure} {conf[i]:.4f} >= {cls} threshold {thr:.4g}" for i in idx]
            assignment[audit_idx] = "audit"
            reason[audit_idx] = f"random audit of auto-accepted {cls} ({self.audit_rate:.0%})"

        candidates = np.flatnonzero(eligible & ~auto)
        # optional random control arm
        n_arm = min(int(self.random_arm), len(candidates))
        if n_arm:
            arm = rng.choice(candidates, size=n_arm, replace=False)
            assignment[arm] = "random_arm"
            reason[arm] = "random control sample"
            candidates = np.setdiff1d(candidates, arm)

        order = self._rank(candidates, conf, names, subjects, slices, item_ids, rng)
        budget = np.inf if self.budget is None else int(self.budget)
        cap = np.inf if self.per_subject_cap is None else int(self.per_subject_cap)
        taken: dict[str, int] = {}
        review_order: list[int] = []
        for i in order:
            s = subjects[i]
            if len(review_order) >= budget:
                assignment[i] = "skip"
                reason[i] = f"not reviewed: review budget {self.budget} reached ({cand_reason[i]})"
            elif taken.get(s, 0) >= cap:
                assignment[i] = "skip"
                reason[i] = f"not reviewed: per-subject cap {self.per_subject_cap} reached for {s} ({cand_reason[i]})"
            else:
                taken[s] = taken.get(s, 0) + 1
                assignment[i] = "review"
                reason[i] = (f"cold start: {names[i]} confidence stratum {self._stratum(names[i], conf[i]) + 1}"
                             f"/{self.n_strata}" if self.cold_start_ else cand_reason[i])
                review_order.append(i)

        # blind audit: audit and random-arm items take seeded random places among the reviewed items
        extra = np.flatnonzero((assignment == "audit") | (assignment == "random_arm"))
        extra = extra[np.argsort(item_ids[extra], kind="stable")]
        sequence = list(review_order)
        for i in rng.permutation(extra):
            sequence.insert(int(rng.integers(0, len(sequence) + 1)), int(i))
        rank = np.full(n, np.nan)
        rank[np.array(sequence, dtype=int)] = np.arange(1, len(sequence) + 1)

        assert not (assignment == "").any(), "every item gets an assignment"
        out = pd.DataFrame({
            "item_id": item_ids, "subject": subjects, "slice": slices,
            "slice_id": scores["slice_id"].to_numpy() if "slice_id" in scores.columns
            else [f"{s}/{i:03d}" for s, i in zip(subjects, slices, strict=True)],
            "class_id": scores["class_id"].to_numpy() if "class_id" in scores.columns
            else [None] * n,
            "class_name": names, "measure": self.measure, "confidence": np.round(conf, 6),
            "pixel_count": scores["pixel_count"].to_numpy() if "pixel_count" in scores.columns else [None] * n,
            "assignment": assignment.astype(str), "reason": reason.astype(str),
            # pandas-stubs 2.2.3 types pd.array's data as Sequence[object]; pandas documents ndarray as accepted
            "review_rank": pd.array(rank, dtype="Int64"),  # type: ignore[arg-type]
            "image": scores["image"].to_numpy() if "image" in scores.columns else "",
            "pred_mask": scores["pred_mask"].to_numpy() if "pred_mask" in scores.columns else "",
        }, columns=list(ASSIGNMENT_COLUMNS))
        return out

    # -------------------------------------------------------------------------------------- ranking
    def _stratum(self, cls: str, c: float) -> int:
        edges = self.strata_edges_.get(cls)
        if edges is None or np.isnan(edges).any():
            return 0
        return int(np.clip(np.searchsorted(edges[1:-1], c, side="right"), 0, self.n_strata - 1))

    def _rank(self, idx: np.ndarray, conf, names, subjects, slices, item_ids, rng) -> list[int]:
        """Candidate indices in review priority order (the budget and cap are applied by the caller)."""
        if len(idx) == 0:
            return []
        idx = idx[np.argsort(item_ids[idx], kind="stable")]  # independent of the table's row order
        if self.strategy == "random":
            return [int(i) for i in rng.permutation(idx)]
        if self.cold_start_:
            return self._rank_stratified(idx, conf, names, rng)
        return self._rank_uncertain(idx, conf, names, subjects, slices, item_ids)

    def _rank_stratified(self, idx, conf, names, rng) -> list[int]:
        """Round-robin over (class, decile) strata, random order within each."""
        strata: dict[tuple[str, int], list[int]] = {}
        for i in idx:
            strata.setdefault((names[i], self._stratum(names[i], conf[i])), []).append(int(i))
        # (decile, class) order: each round-robin pass rotates through the classes, so a cap or budget that
        # stops mid-pass leaves the classes balanced
        queues = [list(rng.permutation(strata[k])) for k in sorted(strata, key=lambda k: (k[1], k[0]))]
        order: list[int] = []
        while queues:
            nxt = []
            for q in queues:
                order.append(int(q.pop(0)))
                if q:
                    nxt.append(q)
            queues = nxt
        return order

    def _rank_uncertain(self, idx, conf, names, subjects, slices, item_ids) -> list[int]:
        """Greedy: highest (1 - conf) · subject_decay^s · neighbour_decay^n first (see module doc)."""
        by_subject: dict[str, np.ndarray] = {}
        for s in np.unique(subjects[idx]):
            members = idx[subjects[idx] == s]
            by_subject[s] = members
        # per subject: base uncertainty, neighbour counts, remaining flags
        state = {}
        heap: list[tuple[float, str, str]] = []
        for s, members in by_subject.items():
            base = 1.0 - conf[members] + 1e-12
            nb = np.zeros(len(members))
            alive = np.ones(len(members), bool)
            state[s] = [members, base, nb, alive, 0]
            j = self._best(base, nb, alive, item_ids[members])
            heapq.heappush(heap, (-base[j], item_ids[members[j]], s))
        order: list[int] = []
        while heap:
            _, _, s = heapq.heappop(heap)
            members, base, nb, alive, taken = state[s]
            j = self._best(base, nb, alive, item_ids[members])
            i = int(members[j])
            order.append(i)
            alive[j] = False
            near = (names[members] == names[i]) & (np.abs(slices[members] - slices[i]) <= self.slice_gap)
            nb[near] += 1
            state[s][4] = taken = taken + 1
            if alive.any():
                k = self._best(base, nb, alive, item_ids[members])
                prio = base[k] * self.neighbour_decay ** nb[k] * self.subject_decay ** taken
                heapq.heappush(heap, (-prio, item_ids[members[k]], s))
        return order

    def _best(self, base, nb, alive, ids) -> int:
        prio = np.where(alive, base * self.neighbour_decay ** nb, -np.inf)
        top = np.flatnonzero(prio == prio.max())
        return int(top[np.argmin(ids[top])]) if len(top) > 1 else int(top[0])


def assignment_counts(frame) -> dict[str, dict[str, int]]:
    """{assignment: {class_name: count, "total": count}} for a transform() result."""
    out: dict[str, dict[str, int]] = {}
    for a in ASSIGNMENTS:
        sub = frame[frame["assignment"] == a]
        out[a] = {c: int((sub["class_name"] == c).sum()) for c in _TISSUE_NAMES}
        out[a]["total"] = int(len(sub))
    return out
