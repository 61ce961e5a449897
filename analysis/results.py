"""What an analysis produced, shared by `analysis.run` (which makes it) and `analysis.plots` /
`analysis.report` (which draw it): the options, the per-class calibration and the `AnalysisResult`.

A module of its own so that run, plots and report each import it and none imports another in a circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.agreement import AgreementSummary
from analysis.records import ReviewRecords
from analysis.thresholds import DEFAULT_METHOD, METHODS, Selector
from qa_workflow.contract import CALIBRATION_SCHEMA, THRESHOLDS_SCHEMA, SegqaError

__all__ = ["AnalysisOptions", "AnalysisResult", "ClassCalibration"]


@dataclass(frozen=True)
class AnalysisOptions:
    """What `segqa analyze` was asked for. Targets apply to the methods that use them (every method is fitted
    for the comparison; ``method`` picks the one written to thresholds.json)."""

    method: str = DEFAULT_METHOD
    max_error: float = 0.05  # clopper-pearson, isotonic: target reject rate among auto-accepted items
    confidence: float = 0.95  # clopper-pearson: level of the one-sided bound (also the level of reported bounds)
    max_error_ratio: float = 0.1  # bucket-walk: incorrect:correct allowed per bucket
    buckets: str | Sequence[float] | None = None  # edges on the input's scale; None: 5 equal-width buckets
    n_buckets: int = 5
    start_coverage: float = 0.05  # clopper-pearson: start the scan where this share of the class lies above θ
    min_above: int | None = None  # clopper-pearson: ...or where this many items lie above θ

    def check(self) -> None:
        if self.method not in METHODS:
            raise SegqaError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0.0 < self.max_error < 1.0:
            raise SegqaError("--max-error must be strictly between 0 and 1 (a share, 0.05 = 5%), "
                             f"got {self.max_error:g}")
        if not 0.0 < self.confidence < 1.0:
            raise SegqaError(f"--confidence must be strictly between 0 and 1 (0.95 = 95%), got {self.confidence:g}")
        if not 0.0 <= self.start_coverage < 1.0:
            raise SegqaError(f"--start-coverage must be a share in [0, 1), got {self.start_coverage:g}")
        if self.min_above is not None and self.min_above < 1:
            raise SegqaError(f"--min-above must be a positive number of items, got {self.min_above}")
        if not self.max_error_ratio >= 0.0:
            raise SegqaError(f"--max-error-ratio must be ≥ 0, got {self.max_error_ratio:g}")

    def target(self, method: str) -> dict:
        if method == "bucket-walk":
            return {"max_error_ratio": self.max_error_ratio}
        if method == "clopper-pearson":
            return {"max_error": self.max_error, "confidence": self.confidence,
                    "start_coverage": self.start_coverage, "min_above": self.min_above}
        return {"max_error": self.max_error, "confidence": self.confidence}


@dataclass
class ClassCalibration:
    ece_raw: float  # ECE of the unit-scale confidence read as P(accept)
    ece_isotonic_cv: float  # ECE after isotonic calibration, 5-fold cross-validated
    reliability: pd.DataFrame  # calibration.reliability_table
    binned: pd.DataFrame  # calibration.binned_acceptance (input scale)


@dataclass
class AnalysisResult:
    records: ReviewRecords
    options: AnalysisOptions
    edges: np.ndarray
    class_table: pd.DataFrame
    bucket_table: pd.DataFrame
    selectors: dict[str, dict[str, Selector]]  # method -> class -> fitted selector
    agreement: AgreementSummary
    reviewers: pd.DataFrame | None
    calibration: dict[str, ClassCalibration] | None
    notes: list[str] = field(default_factory=list)
    created_at: str = ""

    @property
    def classes(self) -> tuple[str, ...]:
        return self.records.classes

    def chosen(self, class_name: str) -> Selector:
        return self.selectors[self.options.method][class_name]

    def thresholds_document(self) -> dict:
        """thresholds.json: ``threshold`` on the input's confidence scale (``confidence_scale``), and the same
        value on [0, 1] as ``threshold_unit`` (what `segqa select` compares unit-scale confidences with)."""
        method = self.options.method
        top = self.records.scale_top
        classes = {}
        for name in self.classes:
            entry = self.selectors[method][name].summary().to_json()
            entry["threshold_unit"] = None if entry["threshold"] is None else entry["threshold"] / top
            classes[name] = entry
        target = self.options.target(method)
        if method == "bucket-walk":
            target["buckets"] = [float(e) for e in self.edges]
        return {
            "schema": THRESHOLDS_SCHEMA, "created_at": self.created_at, "method": method, "target": target,
            "confidence_scale": self.records.scale, "split_policy": self.records.split_policy,
            "source": self.records.source, "n_records": len(self.records),
            "model_versions": self.model_versions(), "classes": classes,
        }

    def model_versions(self) -> list[str] | None:
        """The model versions whose masks the analysed reviews judged (sorted), or None when the records do not
        say (no ``model_version`` column, or a row without one): a threshold holds for the masks of the model it
        was fitted on (`segqa select` checks it, docs/analysis.md)."""
        frame = self.records.frame
        if "model_version" not in frame.columns:
            return None
        versions = frame["model_version"].fillna("").astype(str).str.strip()
        return None if (versions == "").any() else sorted(set(versions))

    def calibration_document(self) -> dict:
        """calibration.json: per class the isotonic curve of P(accept | confidence) on the unit scale
        (`analysis.calibration.isotonic_curve`), what `segqa select` routes verify vs adjust by."""
        from analysis.calibration import isotonic_curve

        frame = self.records.frame
        top = self.records.scale_top
        classes = {}
        for name in self.classes:
            sel = (frame["class_name"] == name).to_numpy()
            classes[name] = isotonic_curve(frame["confidence"].to_numpy(dtype=float)[sel] / top,
                                           frame["correct"].to_numpy(dtype=bool)[sel])
        return {"schema": CALIBRATION_SCHEMA, "created_at": self.created_at, "confidence_scale": "unit",
                "input_confidence_scale": self.records.scale, "split_policy": self.records.split_policy,
                "source": self.records.source, "n_records": len(self.records), "classes": classes}

    def comparison_table(self) -> pd.DataFrame:
        """Every method × class: ``method, class_name, threshold, n_reviewed, n_above, errors_above,
        error_upper_bound, coverage, reason`` (the chosen method first)."""
        rows = []
        for method in sorted(METHODS, key=lambda m: m != self.options.method):
            for name in self.classes:
                rows.append({"method": method, "class_name": name,
                             **self.selectors[method][name].summary().to_json()})
        return pd.DataFrame(rows)
