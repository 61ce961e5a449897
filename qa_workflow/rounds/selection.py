"""Routing: what `segqa select` does with a round's score table (ARCHITECTURE §5).

`SelectionPolicy` is a scikit-learn estimator (``BaseEstimator``: ``get_params``, ``set_params`` and
``sklearn.base.clone`` work): parameters are stored by ``__init__``; `fit` learns from the score table and the
last analysis (its thresholds.json and calibration.json; learned state ends in ``_``); `transform` gives every
item of a score table exactly one route of ``contract.ASSIGNMENTS``, with a reason and its planned seconds:

``skip``
    not reviewable (predicted region < min_pixels), no value for the confidence measure, already reviewed in an
    earlier round, or a candidate that the budget (seconds or masks) or the per-subject cap left out.
``auto_accept``
    confidence ≥ the class's Clopper–Pearson threshold (thresholds.json; a null threshold auto-accepts nothing).
``audit``
    a seeded random ``audit_rate`` share (default 5 %, rounded up per class) of the auto-accepted items, verified
    blind to keep the threshold honest. Charged to the budget first; an audit pick the budget cannot pay stays
    auto-accepted (the reason says so).
``random_arm``
    an optional uniform random control sample of ``random_arm`` candidates, verified like ``verify``.
``verify``
    calibrated P(accept | confidence, class) ≥ ``verify_min`` (default 0.5): a cheap bulk check (verify batches)
    that becomes a label when accepted; a rejected mask goes on to the chained adjust job.
``adjust``
    P(accept) < ``verify_min``: sent straight to correction, one slice per task with all its adjust-routed
    classes, skipping a verify step that would almost surely fail.

P(accept) is the isotonic calibrator of the last analysis (``calibration.json``, per class: P = linear
interpolation of its (x, y) curve at the item's unit-scale confidence). A class without a curve is routed to
``verify`` only (nothing can say its masks will fail).

**Budget in human seconds** (``budget_seconds``; the cost model `contract.CostModel`: verify 3 s per mask,
adjust 60 s per slice). What an item is charged is what it is expected to cost:

- verify, audit, random arm: ``verify_s + (1 − p) · adjust_s`` — the check plus the expected chained correction
  (p: the calibrated P(accept); without a calibrator p = 0, the worst case — the check plus a correction —
  so that a cold-start round cannot overspend its budget: the reviewers' bar may reject nearly everything);
- adjust: ``adjust_s`` per slice, shared equally by the slice's adjust-routed items.

Audit first, then the random arm, then the ranked candidates while they fit (a unit that does not fit is
skipped and cheaper ones behind it may still fit). ``budget`` optionally caps the number of verify + adjust
masks as well (the count budget of rounds before issue #13); ``per_subject_cap`` caps verify masks + adjust
slices per subject. Each item's charge is in the ``expected_seconds`` column; their sum never exceeds
``budget_seconds``.

**Ranking** (``strategy="uncertainty"``): expected gain per second with diversity, greedily. A unit (a verify
item, or an adjust slice) has gain Σ (1 − confidence) · w_site over its items and priority
``gain / seconds · subject_decay^s · neighbour_decay^n``: s units already taken from its subject, n taken units
of the same subject within ±``slice_gap`` slices that share a class with it. Defaults 0.9 and 0.5: a soft
preference, not a rule: another unit of a subject already drawn from wins only when it is worth 1/0.9 ≈ 1.11
times the best of an untouched subject, and a close neighbour of a taken slice twice as much again. w_site
(when the score table names two or more sites) is the site's mean uncertainty over the reviewable items divided
by the overall mean, so a site the model is less certain about (a new scanner, site B) comes before the one it
was trained on.

**Cold start** (no thresholds and no calibrator): nothing is auto-accepted, everything is ``verify``, and the
budget is spread round-robin over strata = (class, confidence decile of that class, learned by `fit`), random
within a stratum; each pass visits the deciles top first and spread out (`spread_order`), so the first analysis
sees every confidence range of every class, the most confident ones (where thresholds come from) even when
the budget stops within the first pass.

``strategy="random"`` takes the candidate units in seeded random order (the random-review baseline). Every draw
is seeded: the same inputs give the same routes.
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from qa_workflow import storage
from qa_workflow.contract import (
    ASSIGNMENTS,
    CALIBRATION_SCHEMA,
    CONFIDENCE_MEASURES,
    DEFAULT_CONFIDENCE_MEASURE,
    REVIEW_CLASSES,
    THRESHOLDS_SCHEMA,
    CostModel,
    SegqaError,
)
from qa_workflow.rounds.scoring import confidence_from

__all__ = ["SelectionPolicy", "Thresholds", "load_thresholds", "parse_thresholds", "Calibration", "load_calibration",
           "parse_calibration", "STRATEGIES", "ASSIGNMENT_COLUMNS", "ASSIGNMENT_OPTIONAL_COLUMNS", "DEFAULT_AUDIT_RATE",
           "DEFAULT_VERIFY_MIN", "CALIBRATION_FILE", "assignment_counts", "route_seconds"]

log = logging.getLogger(__name__)

STRATEGIES = ("uncertainty", "random")
DEFAULT_AUDIT_RATE = 0.05
DEFAULT_VERIFY_MIN = 0.5
#: The calibrator's file name in an analysis folder (next to thresholds.json).
CALIBRATION_FILE = "calibration.json"
ASSIGNMENT_COLUMNS = (
    "item_id", "subject", "slice", "slice_id", "class_id", "class_name", "measure", "confidence", "pixel_count",
    "assignment", "reason", "review_rank", "image", "pred_mask",
)
#: Written since routing (issue #13); filled in when reading an older assignments.csv.
ASSIGNMENT_OPTIONAL_COLUMNS = ("site", "p_accept", "expected_seconds")
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
    # the model versions whose reviewed masks fitted the thresholds; None = not recorded
    model_versions: tuple[str, ...] | None = None

    def for_model(self, version: str | None) -> Thresholds:
        """These thresholds for masks of model ``version``: unchanged when they were fitted on reviews of that
        model alone (or the file does not say), else nothing auto-accepted, with the reason. A Clopper–Pearson
        bound holds for the masks of the model whose reviews it counted; another model's masks at the same
        confidence may be rejected more often."""
        if self.model_versions is None or version is None or self.model_versions == (version,):
            return self
        fitted = ", ".join(self.model_versions) or "no model"
        why = (f"fitted on reviews of {fitted}; these masks come from {version} (run segqa analyze --model-version "
               f"{version} once its masks have reviews)")
        return replace(self, classes={c: None for c in self.classes}, reasons={c: why for c in self.classes})


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
        # rounded: 97.3756 / 100 is 0.9737560000000001, which would leave out a mask of confidence 0.973756
        classes[name] = round(float(thr) / factor, 12) if factor != 1 else float(thr)
        reasons[name] = None
    for name in _TISSUE_NAMES:
        if name not in classes:
            classes[name] = None
            reasons[name] = f"class not in {where}"
    versions = obj.get("model_versions")
    if versions is not None and not (isinstance(versions, list) and all(isinstance(v, str) for v in versions)):
        raise SegqaError(f"{where}: model_versions must be null or a list of model version strings, got {versions!r}")
    return Thresholds(classes, reasons, method=obj.get("method"), warnings=tuple(warnings),
                      model_versions=None if versions is None else tuple(versions))


def load_thresholds(uri: str) -> Thresholds:
    """Read and check a thresholds.json (local path, file:// or s3://)."""
    obj, digest = _json_and_digest(uri)
    t = parse_thresholds(obj, str(uri))
    return replace(t, source=str(uri), sha256=digest)


def _json_and_digest(uri: str) -> tuple[Any, str]:
    """A JSON file's content and the sha256 of its bytes (what a round records as the input's version)."""
    data = storage.read_bytes(uri)
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegqaError(f"{uri}: not valid JSON ({exc})") from None
    return obj, hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------ calibration

@dataclass(frozen=True)
class Calibration:
    """Per-class isotonic curves of P(accept | unit-scale confidence): class -> (x, y), x increasing, y in [0, 1]
    non-decreasing. A class missing here has no calibrator (its items are routed to verify)."""

    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    source: str | None = None
    sha256: str | None = None

    def p_accept(self, class_name: str, confidence: np.ndarray) -> np.ndarray:
        """P(accept) (N,) for unit-scale confidences (N,) of one class; NaN when the class has no curve."""
        conf = np.asarray(confidence, dtype=float)
        curve = self.curves.get(class_name)
        if curve is None:
            return np.full(conf.shape, np.nan)
        x, y = curve
        return np.interp(conf, x, y)  # clips to the ends, as IsotonicRegression(out_of_bounds="clip")


def parse_calibration(obj: Any, where: str = "calibration") -> Calibration:
    """Check a calibration.json object (schema ``segqa.calibration/1``, written by `segqa analyze`) -> Calibration.

    Classes with no reviewed items (empty curve) and classes that are not tissue classes are left out.
    Raises SegqaError naming the field for anything malformed.
    """
    if not isinstance(obj, Mapping) or obj.get("schema") != CALIBRATION_SCHEMA:
        raise SegqaError(f"{where}: expected a JSON object with schema {CALIBRATION_SCHEMA!r} (the calibration.json "
                         "that 'segqa analyze' writes next to thresholds.json)")
    table = obj.get("classes")
    if not isinstance(table, Mapping):
        raise SegqaError(f"{where}: 'classes' must be an object of class name -> {{\"x\": [...], \"y\": [...]}}")
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, entry in table.items():
        if name not in _TISSUE_NAMES:
            continue
        if not isinstance(entry, Mapping):
            raise SegqaError(f"{where}: classes.{name} must be an object with 'x' and 'y'")
        try:
            x = np.asarray(entry.get("x"), dtype=float)
            y = np.asarray(entry.get("y"), dtype=float)
        except (TypeError, ValueError):
            raise SegqaError(f"{where}: classes.{name}.x and .y must be lists of numbers") from None
        if x.ndim != 1 or x.shape != y.shape:
            raise SegqaError(f"{where}: classes.{name}.x and .y must be lists of one length")
        if x.size == 0:
            continue
        if (not np.isfinite(x).all() or not np.isfinite(y).all() or np.any(np.diff(x) < 0)
                or np.any(np.diff(y) < -1e-9) or y.min() < 0 or y.max() > 1):
            raise SegqaError(f"{where}: classes.{name}: x must be increasing and y non-decreasing in [0, 1]")
        curves[name] = (x, y)
    return Calibration(curves)


def load_calibration(uri: str) -> Calibration:
    """Read and check a calibration.json (local path, file:// or s3://)."""
    obj, digest = _json_and_digest(uri)
    cal = parse_calibration(obj, str(uri))
    return Calibration(cal.curves, str(uri), digest)


# ------------------------------------------------------------------------------------------ the policy

def _check_int(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise SegqaError(f"{name} must be an integer >= {low}{' or none' if allow_none else ''}, got {value!r}")


@dataclass
class _Unit:
    """What the ranking takes or leaves as one: a verify item, or an adjust slice (its adjust-routed items)."""

    route: str
    members: list[int]
    subject: str
    slice: int
    classes: frozenset[str]
    gain: float
    seconds: float
    key: str  # deterministic tie-break (first item id)
    confidence: float  # of a verify item (the cold-start stratum); the mean over an adjust slice's items
    refusal: str = ""  # why the budget left it out (set by the walk)


@dataclass
class _Ledger:
    """The budget as the walk spends it: seconds, masks (verify + adjust), units per subject."""

    seconds_left: float
    masks_left: float
    per_subject: float
    taken_by_subject: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, budget_seconds: float | None, budget: int | None, per_subject_cap: int | None) -> _Ledger:
        return cls(math.inf if budget_seconds is None else float(budget_seconds),
                   math.inf if budget is None else int(budget),
                   math.inf if per_subject_cap is None else int(per_subject_cap))

    def pay(self, seconds: float) -> bool:
        """Spend ``seconds`` if they are left (audit, random arm)."""
        if seconds > self.seconds_left + 1e-9:
            return False
        self.seconds_left -= seconds
        return True

    def refusal(self, unit: _Unit) -> str | None:
        if unit.seconds > self.seconds_left + 1e-9:
            return f"the seconds budget has {max(self.seconds_left, 0.0):.0f} s left, it needs {unit.seconds:.0f} s"
        if len(unit.members) > self.masks_left:
            return "mask budget reached"
        if self.taken_by_subject.get(unit.subject, 0) >= self.per_subject:
            return f"per-subject cap {self.per_subject:g} reached for {unit.subject}"
        return None

    def take(self, unit: _Unit) -> None:
        self.seconds_left -= unit.seconds
        self.masks_left -= len(unit.members)
        self.taken_by_subject[unit.subject] = self.taken_by_subject.get(unit.subject, 0) + 1


class SelectionPolicy(BaseEstimator):
    """Route the items of a score table to auto_accept / verify / adjust / audit / random_arm / skip (module doc).

    Parameters (stored only; checked by `fit`): budget_seconds (human seconds for the round; None = no limit),
    budget (max verify + adjust masks; None = no limit), per_subject_cap (max verify masks + adjust slices per
    subject), audit_rate, random_arm (count), verify_min (P(accept) from which a mask is verified rather than
    adjusted), costs (`contract.CostModel`; None = its defaults), measure (one of contract.CONFIDENCE_MEASURES),
    strategy ("uncertainty" | "random"), subject_decay, neighbour_decay, slice_gap, n_strata (cold-start
    confidence quantile bins per class), site_weighting (rank less certain sites first), seed.

    Learned by `fit`: ``thresholds_`` (class -> float | None), ``threshold_reasons_``, ``calibration_``
    (Calibration | None), ``cold_start_``, ``strata_edges_`` (class -> n_strata + 1 confidence quantiles),
    ``site_weights_`` (site -> w_site; empty with fewer than two sites), ``n_items_``.
    """

    def __init__(self, budget_seconds: float | None = None, budget: int | None = None,
                 per_subject_cap: int | None = None, audit_rate: float = DEFAULT_AUDIT_RATE, random_arm: int = 0,
                 verify_min: float = DEFAULT_VERIFY_MIN, costs: CostModel | None = None,
                 measure: str = DEFAULT_CONFIDENCE_MEASURE, strategy: str = "uncertainty",
                 subject_decay: float = 0.9, neighbour_decay: float = 0.5, slice_gap: int = 2,
                 n_strata: int = 10, site_weighting: bool = True, seed: int = 0) -> None:
        self.budget_seconds = budget_seconds
        self.budget = budget
        self.per_subject_cap = per_subject_cap
        self.audit_rate = audit_rate
        self.random_arm = random_arm
        self.verify_min = verify_min
        self.costs = costs
        self.measure = measure
        self.strategy = strategy
        self.subject_decay = subject_decay
        self.neighbour_decay = neighbour_decay
        self.slice_gap = slice_gap
        self.n_strata = n_strata
        self.site_weighting = site_weighting
        self.seed = seed

    def record_params(self) -> dict[str, Any]:
        """The parameters in ``__init__`` order (``get_params`` sorts them), JSON-ready: what round.json records."""
        params = self.get_params(deep=False)
        out = {name: params[name] for name in inspect.signature(type(self).__init__).parameters if name in params}
        out["costs"] = self._costs().to_json()
        return out

    def _costs(self) -> CostModel:
        return self.costs if self.costs is not None else CostModel()

    # -------------------------------------------------------------------------------------------- fit
    def check_params(self) -> None:
        """SegqaError naming the first parameter out of its range (fit checks them too)."""
        _check_int("budget", self.budget, 0, allow_none=True)
        _check_int("per_subject_cap", self.per_subject_cap, 1, allow_none=True)
        _check_int("random_arm", self.random_arm, 0)
        _check_int("slice_gap", self.slice_gap, 0)
        _check_int("n_strata", self.n_strata, 1)
        _check_int("seed", self.seed, 0)
        if self.budget_seconds is not None and (isinstance(self.budget_seconds, bool)
                                                or not isinstance(self.budget_seconds, (int, float))
                                                or not self.budget_seconds >= 0):
            raise SegqaError(f"budget_seconds must be a number of seconds >= 0 or none, got {self.budget_seconds!r}")
        if not isinstance(self.audit_rate, (int, float)) or not 0.0 <= self.audit_rate <= 1.0:
            raise SegqaError(f"audit_rate must be in [0, 1], got {self.audit_rate!r}")
        if not isinstance(self.verify_min, (int, float)) or not 0.0 <= self.verify_min <= 1.0:
            raise SegqaError(f"verify_min must be in [0, 1], got {self.verify_min!r}")
        if self.costs is not None and not isinstance(self.costs, CostModel):
            raise SegqaError(f"costs must be a contract.CostModel or none, got {self.costs!r}")
        for name in ("subject_decay", "neighbour_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise SegqaError(f"{name} must be in (0, 1], got {v!r}")
        if self.measure not in CONFIDENCE_MEASURES:
            raise SegqaError(f"unknown confidence measure {self.measure!r}; expected one of "
                             f"{', '.join(CONFIDENCE_MEASURES)}")
        if self.strategy not in STRATEGIES:
            raise SegqaError(f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")

    def fit(self, scores, thresholds: Thresholds | Mapping[str, float | None] | None = None,
            calibration: Calibration | None = None) -> SelectionPolicy:
        """Learn the thresholds and calibrator in use, the cold-start strata and the site weights from a score
        table (pandas DataFrame) and the last analysis (thresholds, calibration; both None = cold start)."""
        self.check_params()
        for col in ("item_id", "subject", "slice", "class_name", "reviewable", self.measure):
            if col not in scores.columns:
                raise SegqaError(f"score table: missing column {col!r}")
        conf = confidence_from(scores[self.measure].to_numpy(dtype=float), self.measure)
        reviewable = scores["reviewable"].to_numpy(dtype=bool)
        if reviewable.any() and np.isnan(conf[reviewable]).all():
            hint = {"mutual_info": " (run 'segqa predict' with --mc-samples T, T > 1)",
                    "surface_agreement": " (the table predates it: run 'segqa predict' again)"}.get(self.measure, "")
            raise SegqaError(f"score table has no {self.measure} values{hint}; choose another --measure")
        self.cold_start_ = thresholds is None and calibration is None
        self.calibration_ = calibration
        self.thresholds_: dict[str, float | None]
        self.threshold_reasons_: dict[str, str | None]
        if thresholds is None:
            self.thresholds_ = {c: None for c in _TISSUE_NAMES}
            self.threshold_reasons_ = {c: "no thresholds file" + (" (cold start)" if self.cold_start_ else "")
                                       for c in _TISSUE_NAMES}
        else:
            if not isinstance(thresholds, Thresholds):
                thresholds = parse_thresholds({"schema": THRESHOLDS_SCHEMA, "classes": {
                    k: {"threshold": v} for k, v in thresholds.items()}})
            self.thresholds_ = dict(thresholds.classes)
            self.threshold_reasons_ = dict(thresholds.reasons)
        self.strata_edges_: dict[str, np.ndarray] = {}
        names = scores["class_name"].to_numpy()
        usable = reviewable & ~np.isnan(conf)
        for cls in _TISSUE_NAMES:
            c = conf[(names == cls) & usable]
            qs = np.linspace(0, 1, self.n_strata + 1)
            self.strata_edges_[cls] = np.quantile(c, qs) if len(c) else np.full(len(qs), np.nan)
        self.site_weights_: dict[str, float] = {}
        if self.site_weighting and "site" in scores.columns:
            sites = scores["site"].fillna("").to_numpy().astype(str)
            named = sorted({s for s in sites[usable] if s})
            overall = float(np.mean(1.0 - conf[usable])) if usable.any() else 0.0
            if len(named) >= 2 and overall > 0:
                self.site_weights_ = {s: float(np.mean(1.0 - conf[usable & (sites == s)])) / overall for s in named}
        self.n_items_ = len(scores)
        return self

    def fit_transform(self, scores, thresholds=None, calibration=None, exclude=()):
        return self.fit(scores, thresholds, calibration).transform(scores, exclude=exclude)

    # -------------------------------------------------------------------------------------- transform
    def transform(self, scores, exclude=()):
        """Route every row of ``scores`` -> DataFrame with ASSIGNMENT_COLUMNS + ASSIGNMENT_OPTIONAL_COLUMNS, one
        row per item, same order.

        ``exclude``: item ids that already have a review outcome (earlier rounds); they are skipped with that
        reason, never auto-accepted, audited or reviewed again.
        """
        import pandas as pd

        if not hasattr(self, "thresholds_"):
            raise SegqaError("SelectionPolicy: call fit() before transform()")
        costs = self._costs()
        n = len(scores)
        rng = np.random.default_rng(self.seed)
        conf = confidence_from(scores[self.measure].to_numpy(dtype=float), self.measure)
        names = scores["class_name"].to_numpy().astype(str)
        subjects = scores["subject"].to_numpy().astype(str)
        slices = scores["slice"].to_numpy().astype(int)
        item_ids = scores["item_id"].to_numpy().astype(str)
        sites = (scores["site"].fillna("").to_numpy().astype(str) if "site" in scores.columns
                 else np.full(n, "", dtype=object).astype(str))
        reviewable = scores["reviewable"].to_numpy(dtype=bool)
        skip_reason = (scores["skip_reason"].to_numpy().astype(str) if "skip_reason" in scores.columns
                       else np.full(n, "", dtype=object))
        assignment = np.full(n, "", dtype=object)
        reason = np.full(n, "", dtype=object)
        seconds = np.zeros(n)

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

        # calibrated P(accept); where there is no curve the charge is the worst case (p = 0: checked, then corrected)
        p_accept = np.full(n, np.nan)
        if self.calibration_ is not None:
            for cls in _TISSUE_NAMES:
                in_cls = eligible & (names == cls)
                if in_cls.any():
                    p_accept[in_cls] = self.calibration_.p_accept(cls, conf[in_cls])
        forecast = np.where(np.isnan(p_accept), 0.0, p_accept)
        check_cost = costs.verify_s + (1.0 - forecast) * costs.adjust_s  # the check + the expected chained adjust

        # auto-accept and the audit picks, per class
        auto = np.zeros(n, bool)
        audit_picks: list[int] = []
        for cls in _TISSUE_NAMES:
            in_cls = eligible & (names == cls)
            thr = self.thresholds_.get(cls)
            if thr is None:
                continue
            above = in_cls & (conf >= thr)
            auto |= above
            idx = np.flatnonzero(above)
            assignment[idx] = "auto_accept"
            reason[idx] = [f"{self.measure} {conf[i]:.4f} >= {cls} threshold {thr:.4g}" for i in idx]
            # rounded up: a class with a threshold is audited however few masks it auto-accepts
            n_audit = min(math.ceil(self.audit_rate * len(idx) - 1e-9), len(idx))
            if n_audit:
                audit_picks += [int(i) for i in rng.choice(idx, size=n_audit, replace=False)]

        ledger = _Ledger.of(self.budget_seconds, self.budget, self.per_subject_cap)
        for i in audit_picks:  # the audit keeps the guarantee honest: paid first
            if ledger.pay(check_cost[i]):
                seconds[i] = check_cost[i]
                assignment[i] = "audit"
                reason[i] = f"random audit of auto-accepted {names[i]} ({self.audit_rate:.0%})"
            else:
                reason[i] += "; picked for audit, but the seconds budget could not pay it"

        candidates = np.flatnonzero(eligible & ~auto)
        candidates = candidates[np.argsort(item_ids[candidates], kind="stable")]  # independent of row order
        n_arm = min(int(self.random_arm), len(candidates))
        if n_arm:
            arm = np.sort(rng.choice(candidates, size=n_arm, replace=False))
            for i in arm:
                if ledger.pay(check_cost[i]):
                    seconds[i] = check_cost[i]
                    assignment[i] = "random_arm"
                    reason[i] = "random control sample"
                else:
                    assignment[i] = "skip"
                    reason[i] = "random control sample the seconds budget could not pay"
            candidates = np.setdiff1d(candidates, arm)

        # verify or adjust, by the calibrated chance of acceptance
        route = np.full(n, "", dtype=object)
        why = np.full(n, "", dtype=object)
        for i in candidates:
            if self.cold_start_:
                route[i], why[i] = "verify", f"cold start: {names[i]} confidence stratum " \
                                             f"{self._stratum(names[i], conf[i]) + 1}/{self.n_strata}"
            elif np.isnan(p_accept[i]):
                route[i], why[i] = "verify", f"no calibrator for {names[i]}: verified"
            elif p_accept[i] >= self.verify_min:
                route[i], why[i] = "verify", f"P(accept) {p_accept[i]:.2f} >= verify_min {self.verify_min:g}"
            else:
                route[i], why[i] = "adjust", f"P(accept) {p_accept[i]:.2f} < verify_min {self.verify_min:g}"
            thr = self.thresholds_.get(names[i])
            if thr is not None:
                why[i] += f"; {self.measure} below the {names[i]} threshold {thr:.4g}"

        units = self._units(candidates, route, conf, names, subjects, slices, item_ids, sites, check_cost, costs)
        taken = self._walk(units, ledger, rng)
        in_order: list[int] = []
        for unit in taken:
            share = unit.seconds / len(unit.members)
            for i in unit.members:
                assignment[i] = unit.route
                reason[i] = why[i]
                seconds[i] = share
                in_order.append(i)
        for unit in units:
            if assignment[unit.members[0]] == "":
                for i in unit.members:
                    assignment[i] = "skip"
                    reason[i] = f"not routed to {unit.route}: {unit.refusal or 'budget reached'} ({why[i]})"

        # blind audit: audit and random-arm items take seeded random places among the routed items
        extra = np.flatnonzero((assignment == "audit") | (assignment == "random_arm"))
        extra = extra[np.argsort(item_ids[extra], kind="stable")]
        sequence = list(in_order)
        for i in rng.permutation(extra):
            sequence.insert(int(rng.integers(0, len(sequence) + 1)), int(i))
        rank = np.full(n, np.nan)
        rank[np.array(sequence, dtype=int)] = np.arange(1, len(sequence) + 1)

        assert not (assignment == "").any(), "every item gets a route"
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
            "site": sites, "p_accept": np.round(p_accept, 6), "expected_seconds": np.round(seconds, 3),
        }, columns=list(ASSIGNMENT_COLUMNS + ASSIGNMENT_OPTIONAL_COLUMNS))
        return out

    # -------------------------------------------------------------------------------------- ranking
    def _stratum(self, cls: str, c: float) -> int:
        edges = self.strata_edges_.get(cls)
        if edges is None or np.isnan(edges).any():
            return 0
        return int(np.clip(np.searchsorted(edges[1:-1], c, side="right"), 0, self.n_strata - 1))

    def _units(self, candidates, route, conf, names, subjects, slices, item_ids, sites, check_cost,
               costs: CostModel) -> list[_Unit]:
        """Verify items one by one; adjust-routed items grouped by slice (one correction task per slice)."""
        units: list[_Unit] = []
        adjust: dict[tuple[str, int], list[int]] = {}
        for i in candidates:
            gain = (1.0 - float(conf[i]) + 1e-12) * self.site_weights_.get(sites[i], 1.0)
            if route[i] == "verify":
                units.append(_Unit("verify", [int(i)], subjects[i], int(slices[i]), frozenset([names[i]]), gain,
                                   float(check_cost[i]), item_ids[i], float(conf[i])))
            else:
                adjust.setdefault((subjects[i], int(slices[i])), []).append(int(i))
        for (subject, index), members in adjust.items():
            gain = sum((1.0 - float(conf[i]) + 1e-12) * self.site_weights_.get(sites[i], 1.0) for i in members)
            units.append(_Unit("adjust", members, subject, index, frozenset(names[i] for i in members), gain,
                               costs.adjust_s, item_ids[members[0]], float(np.mean(conf[members]))))
        units.sort(key=lambda u: u.key)
        return units

    def _walk(self, units: list[_Unit], ledger: _Ledger, rng: np.random.Generator) -> list[_Unit]:
        """The units taken, in review order, spending ``ledger``; a refused unit gets ``refusal`` set."""
        if self.strategy == "random":
            return self._take_in_order([units[int(k)] for k in rng.permutation(len(units))], ledger)
        if self.cold_start_:
            return self._take_in_order(self._stratified(units, rng), ledger)
        return self._greedy(units, ledger)

    @staticmethod
    def _take_in_order(order: list[_Unit], ledger: _Ledger) -> list[_Unit]:
        taken = []
        for unit in order:
            refusal = ledger.refusal(unit)
            if refusal is None:
                ledger.take(unit)
                taken.append(unit)
            else:
                unit.refusal = refusal
        return taken

    def _stratified(self, units: list[_Unit], rng: np.random.Generator) -> list[_Unit]:
        """Cold start: round-robin over (confidence decile, class) strata, random order within each."""
        strata: dict[tuple[int, str], list[_Unit]] = {}
        for u in units:
            cls = next(iter(u.classes))
            strata.setdefault((self._stratum(cls, u.confidence), cls), []).append(u)
        queues = [[strata[k][int(j)] for j in rng.permutation(len(strata[k]))] for k in self._pass_order(strata)]
        order: list[_Unit] = []
        while queues:
            nxt = []
            for q in queues:
                order.append(q.pop(0))
                if q:
                    nxt.append(q)
            queues = nxt
        return order

    def _pass_order(self, strata: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
        """The (decile, class) strata in the order each cold-start pass visits them: the deciles top first and
        spread out (`spread_order`), the classes in turn within each, so a budget that stops mid-pass still sees
        the most confident masks (where thresholds come from) and the whole range, the classes balanced."""
        rank = {d: r for r, d in enumerate(spread_order(self.n_strata))}
        return sorted(strata, key=lambda k: (rank[k[0]], k[1]))

    def _greedy(self, units: list[_Unit], ledger: _Ledger) -> list[_Unit]:
        """Lazy greedy on gain / seconds with diversity decays (module doc). Priorities only fall as units are
        taken, so a popped unit whose refreshed priority still beats the next stored one is the best now."""
        by_subject: dict[str, list[tuple[int, frozenset[str]]]] = {}

        def priority(u: _Unit) -> float:
            near = by_subject.get(u.subject, [])
            n_near = sum(1 for s, classes in near if abs(s - u.slice) <= self.slice_gap and classes & u.classes)
            return (u.gain / max(u.seconds, 1e-9) * self.subject_decay ** len(near)
                    * self.neighbour_decay ** n_near)

        heap = [(-priority(u), u.key, k) for k, u in enumerate(units)]
        heapq.heapify(heap)
        taken: list[_Unit] = []
        while heap:
            _, key, k = heapq.heappop(heap)
            unit = units[k]
            now = priority(unit)
            if heap and -heap[0][0] > now + 1e-15:
                heapq.heappush(heap, (-now, key, k))
                continue
            refusal = ledger.refusal(unit)
            if refusal is not None:
                unit.refusal = refusal
                continue
            ledger.take(unit)
            taken.append(unit)
            by_subject.setdefault(unit.subject, []).append((unit.slice, unit.classes))
        return taken


def spread_order(n: int) -> list[int]:
    """0..n-1 top first, then each next the farthest from those already taken (ties: the higher one), so any
    prefix covers the range evenly: ``spread_order(10)`` = [9, 0, 5, 7, 3, 8, 6, 4, 2, 1]."""
    order = [n - 1] if n > 0 else []
    rest = set(range(n - 1))
    while rest:
        best = max(rest, key=lambda d: (min(abs(d - t) for t in order), d))
        order.append(best)
        rest.remove(best)
    return order


def assignment_counts(frame) -> dict[str, dict[str, int]]:
    """{route: {class_name: count, "total": count}} for a transform() result."""
    out: dict[str, dict[str, int]] = {}
    for a in ASSIGNMENTS:
        sub = frame[frame["assignment"] == a]
        out[a] = {c: int((sub["class_name"] == c).sum()) for c in _TISSUE_NAMES}
        out[a]["total"] = int(len(sub))
    return out


def route_seconds(frame) -> dict[str, float]:
    """{route: planned human seconds, "total": ...} of a transform() result (its ``expected_seconds``)."""
    if "expected_seconds" not in frame.columns:
        return {}
    out = {a: round(float(frame.loc[frame["assignment"] == a, "expected_seconds"].sum()), 1) for a in ASSIGNMENTS}
    out["total"] = round(sum(out.values()), 1)
    return out
