"""The shared contract of segqa: one definition of every name that several parts agree on.

Standard library only. `make lambdas` copies this module into each Lambda zip, the SageMaker source bundle
carries it next to `training/`, and everything else imports it from here. See ARCHITECTURE.md §3, §6-§9.

What lives here:
- tissue classes (ids, names, overlay colours);
- review item ids ``<subject>/<slice:03d>/<class_name>`` and their parsing;
- the reviewer decision schema (decisions, reject reasons) and its validation;
- the batch (Ground Truth data object) schema and its validation: verify batches and adjust tasks (§6);
- the review-record CSV columns (store export / analysis input);
- the thresholds.json schema name;
- round ordering (`round_sort_key`) and the UTC timestamps the project writes (`utc_now_iso`);
- the orientation people review slices in (`to_display` / `from_display`);
- network names and what the SageMaker launcher and the retrain-trigger Lambda both tell SageMaker;
- the user-facing error type `SegqaError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, cast

__all__ = [
    "SegqaError", "ContractError", "TissueClass", "TISSUE_CLASSES", "CLASS_BY_NAME", "CLASS_BY_ID",
    "REVIEW_CLASSES", "NUM_CLASSES", "IGNORE_LABEL", "BACKGROUND", "CSF", "GRAY_MATTER", "WHITE_MATTER",
    "tissue_class", "to_display", "from_display", "STORED_ORIENTATION", "DISPLAY_ORIENTATION", "LEFT_RIGHT_AXIS",
    "TTA_MODES", "DEFAULT_TTA", "check_tta",
    "format_item_id", "parse_item_id", "ItemId", "format_slice_id",
    "DECISIONS", "ACCEPT", "REJECT", "SPLIT", "SPLIT_RESOLVED_BY", "vote_outcome", "REJECT_REASONS",
    "Decision", "parse_decisions", "decisions_array",
    "BATCH_FIELDS", "BATCH_ITEM_FIELDS", "validate_batch", "DEFAULT_BATCH_SIZE",
    "VERIFY", "ADJUST", "TASK_KINDS", "ADJUST_TASK_FIELDS", "task_kind", "validate_adjust_task", "validate_task",
    "label_mappings",
    "REVIEW_RECORD_REQUIRED", "REVIEW_RECORD_OPTIONAL", "REVIEW_RECORD_COLUMNS", "CORRECTION_COLUMNS",
    "THRESHOLDS_SCHEMA", "ASSIGNMENTS", "LEGACY_VERIFY_ASSIGNMENT", "CALIBRATION_SCHEMA", "CostModel",
    "CONFIDENCE_MEASURES", "DEFAULT_CONFIDENCE_MEASURE", "SURFACE_TOLERANCE_PX",
    "DEFAULT_MIN_PIXELS", "IMAGE_HEIGHT", "IMAGE_WIDTH", "NETWORKS", "NETWORK_LABELS",
    "round_number", "round_sort_key", "utc_iso", "utc_now_iso",
    "TRAINING_ENTRY_SCRIPT", "TRAINING_JOB_NAME_RE", "TRAINING_METRIC_DEFINITIONS", "MXNET_VERSION", "MXNET_PY_VERSION",
]


class SegqaError(Exception):
    """A mistake the user can fix (bad input file, wrong option). The CLI prints it as one line, no traceback.

    The message names the file, row or field and what was expected.
    """


class ContractError(SegqaError, ValueError):
    """Data that breaks one of the shared contracts below (item id, batch, decisions, ...)."""


# --------------------------------------------------------------------------------------------------------
# Tissue classes (ARCHITECTURE §3)

@dataclass(frozen=True)
class TissueClass:
    id: int
    name: str
    color: str | None  # overlay colour as #rrggbb; None for background
    label: str  # human-readable name for reports and the review template

    @property
    def rgb(self) -> tuple[int, int, int] | None:
        if self.color is None:
            return None
        red, green, blue = (int(self.color[i:i + 2], 16) for i in (1, 3, 5))
        return red, green, blue


BACKGROUND = TissueClass(0, "background", None, "Background")
CSF = TissueClass(1, "csf", "#1f77b4", "Cerebrospinal fluid")
GRAY_MATTER = TissueClass(2, "gray_matter", "#2ca02c", "Gray matter")
WHITE_MATTER = TissueClass(3, "white_matter", "#ffbf00", "White matter")

TISSUE_CLASSES: tuple[TissueClass, ...] = (BACKGROUND, CSF, GRAY_MATTER, WHITE_MATTER)
NUM_CLASSES = len(TISSUE_CLASSES)
#: Review units are the tissue classes, never background.
REVIEW_CLASSES: tuple[TissueClass, ...] = TISSUE_CLASSES[1:]
CLASS_BY_NAME: dict[str, TissueClass] = {c.name: c for c in TISSUE_CLASSES}
CLASS_BY_ID: dict[int, TissueClass] = {c.id: c for c in TISSUE_CLASSES}
#: Label value for pixels that contribute nothing to the loss (rejected / unreviewed regions in retraining).
IGNORE_LABEL = 255

#: Slice geometry of the on-disk dataset (H x W), ARCHITECTURE §4.
IMAGE_HEIGHT = 176
IMAGE_WIDTH = 208

#: How a stored slice lies (docs/data.md, "Orientation"): rows run the patient's left -> right, columns
#: posterior -> anterior (the T88 layout; NIfTI imports are brought to RAS first). The head lies on its side.
STORED_ORIENTATION = "rows left->right, columns posterior->anterior"
#: The axis of a stored slice (H, W) that runs the patient's left -> right: mirroring along it is a left-right
#: flip (training augmentation, test-time mirroring); along the other axis it would swap front and back.
LEFT_RIGHT_AXIS = 0
#: Test-time augmentation of a prediction: ``none`` (one pass) or ``flip`` (the slice and its left-right mirror,
#: probabilities averaged: `training.predict.Mirrored`).
TTA_MODES: tuple[str, ...] = ("none", "flip")
#: What `segqa predict`, `segqa evaluate` and the loop use unless told otherwise (docs/DECISIONS.md).
DEFAULT_TTA = "flip"
#: How every PNG a person reviews is written (image, label map, masks, overlays, the editor's start and answer):
#: radiological, anterior up, the patient's left on the viewer's right; 208 rows x 176 columns.
DISPLAY_ORIENTATION = "radiological: rows anterior->posterior, columns right->left (patient)"


def check_tta(tta: str) -> str:
    """``tta`` if it is one of `TTA_MODES`, else a SegqaError naming the option and the choices: the one check
    that every command taking ``--tta`` (and the loop's config) runs before any work starts."""
    if tta not in TTA_MODES:
        raise SegqaError(f"--tta {tta!r}: expected one of {', '.join(TTA_MODES)}")
    return tta


def to_display(stored: Any) -> Any:
    """A stored slice (H, W[, C]) as people review it: display[r, c] = stored[H-1-c, W-1-r] (the transpose about
    the anti-diagonal), so anterior is up and the patient's left is on the viewer's right. A numpy view."""
    return stored.swapaxes(0, 1)[::-1, ::-1]


def from_display(shown: Any) -> Any:
    """The inverse of `to_display` (the same anti-transpose: applying it twice gives the stored slice back)."""
    return shown.swapaxes(0, 1)[::-1, ::-1]

#: The segmentation networks, by the names commands, model cards, jobs and the registry use.
NETWORKS: tuple[str, ...] = ("unet", "enet")
#: How tables and reports print them.
NETWORK_LABELS: dict[str, str] = {"unet": "U-Net", "enet": "ENet"}


def tissue_class(key: int | str) -> TissueClass:
    """Look a tissue class up by id or name; raises ContractError naming the valid choices."""
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    table: Mapping[Any, TissueClass] = CLASS_BY_ID if isinstance(key, int) else CLASS_BY_NAME
    try:
        return table[key]
    except KeyError:
        valid = ", ".join(f"{c.id}={c.name}" for c in TISSUE_CLASSES)
        raise ContractError(f"unknown tissue class {key!r}; expected one of {valid}") from None


# --------------------------------------------------------------------------------------------------------
# Item ids (ARCHITECTURE §6): <subject>/<slice:03d>/<class_name>

_SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ITEM_RE = re.compile(r"^(?P<subject>[^/]+)/(?P<slice>\d{3,4})/(?P<cls>[a-z_]+)$")


@dataclass(frozen=True, order=True)
class ItemId:
    subject: str
    slice_index: int
    class_name: str

    def __str__(self) -> str:
        return format_item_id(self.subject, self.slice_index, self.class_name)

    @property
    def slice_id(self) -> str:
        return format_slice_id(self.subject, self.slice_index)


def _check_subject(subject: str) -> str:
    if not isinstance(subject, str) or not _SUBJECT_RE.match(subject):
        raise ContractError(
            f"invalid subject id {subject!r}: expected 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return subject


def format_slice_id(subject: str, slice_index: int) -> str:
    """``sub-007/045``: the slice part of an item id."""
    _check_subject(subject)
    if not isinstance(slice_index, int) or isinstance(slice_index, bool) or not 0 <= slice_index <= 9999:
        raise ContractError(f"invalid slice index {slice_index!r}: expected an integer 0..9999")
    return f"{subject}/{slice_index:03d}"


def format_item_id(subject: str, slice_index: int, class_name: str) -> str:
    """``format_item_id('sub-007', 45, 'gray_matter') == 'sub-007/045/gray_matter'``."""
    cls = tissue_class(class_name)
    if cls is BACKGROUND:
        raise ContractError("background is not a review unit; item ids name csf, gray_matter or white_matter")
    return f"{format_slice_id(subject, slice_index)}/{cls.name}"


def parse_item_id(item_id: object) -> ItemId:
    """Inverse of `format_item_id`; raises ContractError on anything else."""
    m = _ITEM_RE.match(item_id) if isinstance(item_id, str) else None
    if not m:
        raise ContractError(f"invalid item id {item_id!r}: expected <subject>/<slice:03d>/<class_name>, "
                            "e.g. sub-007/045/gray_matter")
    subject, slice_index, cls = m["subject"], int(m["slice"]), m["cls"]
    canonical = format_item_id(subject, slice_index, cls)  # validates subject and class
    if canonical != item_id:
        raise ContractError(f"invalid item id {item_id!r}: not in canonical form (expected {canonical!r})")
    return ItemId(subject, slice_index, cls)


# --------------------------------------------------------------------------------------------------------
# Reviewer decisions (ARCHITECTURE §7)

ACCEPT = "accept"
REJECT = "reject"
#: Consolidated outcome when reviewers of one item disagree.
SPLIT = "split"
DECISIONS = (ACCEPT, REJECT)
REJECT_REASONS: dict[str, str] = {
    "under_segmented": "Under-segmented: the mask misses tissue of this class",
    "over_segmented": "Over-segmented: the mask covers tissue that is not this class",
    "wrong_tissue": "Wrong tissue: the mask follows another tissue class",
    "image_artifact": "Image artifact: the slice itself is unusable (motion, noise, cut-off)",
    "other": "Other (say what in the comment)",
}
MAX_COMMENT_CHARS = 2000
#: A split is resolved by its majority once the majority leads by this many votes (docs/DECISIONS.md,
#: "Escalation"): three reviewers who disagree stand 2-1 and stay split; two more reviewers who side with the
#: two make it 4-1, an answer.
SPLIT_RESOLVED_BY = 2


def vote_outcome(accepts: int, rejects: int) -> str | None:
    """The one rule that turns an item's vote counts into its outcome: ``accept`` or ``reject`` when the
    reviewers agree, or when they disagree and the majority leads by `SPLIT_RESOLVED_BY` votes or more;
    ``split`` otherwise; None without votes. With three reviewers a disagreement is always a split."""
    if accepts and rejects and abs(accepts - rejects) < SPLIT_RESOLVED_BY:
        return SPLIT
    if accepts > rejects:
        return ACCEPT
    if rejects > accepts:
        return REJECT
    return None


@dataclass(frozen=True)
class Decision:
    item_id: str
    decision: str  # "accept" | "reject"
    reason: str | None = None
    comment: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"item_id": self.item_id, "decision": self.decision}
        if self.reason:
            out["reason"] = self.reason
        if self.comment:
            out["comment"] = self.comment
        return out


def _decision_from(obj: Any, where: str) -> Decision:
    if not isinstance(obj, Mapping):
        raise ContractError(f"{where}: expected an object with item_id and decision, got {type(obj).__name__}")
    item_id = obj.get("item_id")
    parse_item_id(item_id)
    decision = obj.get("decision")
    if decision not in DECISIONS:
        raise ContractError(f"{where} ({item_id}): decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    reason = obj.get("reason") or None
    if reason is not None and reason not in REJECT_REASONS:
        raise ContractError(f"{where} ({item_id}): reason must be one of {', '.join(REJECT_REASONS)}, got {reason!r}")
    if reason is not None and decision == ACCEPT:
        reason = None  # a reason only qualifies a rejection; a stale one from a changed mind is dropped
    comment = obj.get("comment") or None
    if comment is not None:
        if not isinstance(comment, str):
            raise ContractError(f"{where} ({item_id}): comment must be text")
        comment = comment[:MAX_COMMENT_CHARS]
    # parse_item_id accepted item_id, so it is a str; decision is one of DECISIONS, also a str
    return Decision(cast(str, item_id), decision, reason, comment)


def decisions_array(raw: str | list[Any]) -> list[Any]:
    """The ``decisions`` field as a list of entries (not yet validated): the JSON array itself, or the string
    holding it. Raises ContractError when it is not a JSON array."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ContractError(f"decisions: not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(raw, list):
        raise ContractError(f"decisions: expected a JSON array, got {type(raw).__name__}")
    return raw


def parse_decisions(raw: str | list[Any]) -> list[Decision]:
    """Parse the template's ``decisions`` field (a JSON array, usually as a string) into Decisions.

    Matching to a batch's items is by ``item_id`` only. Raises ContractError on malformed JSON, a malformed
    entry, or an item id given twice.
    """
    raw = decisions_array(raw)
    out: list[Decision] = []
    seen: set[str] = set()
    for i, obj in enumerate(raw):
        d = _decision_from(obj, f"decisions[{i}]")
        if d.item_id in seen:
            raise ContractError(f"decisions[{i}]: item {d.item_id} decided twice")
        seen.add(d.item_id)
        out.append(d)
    return out


# --------------------------------------------------------------------------------------------------------
# Batches (ARCHITECTURE §6): the object a manifest line points to

DEFAULT_BATCH_SIZE = 25
MAX_BATCH_SIZE = 200
BATCH_FIELDS = ("batch_id", "round", "model_version", "class_id", "class_name", "color", "items")
BATCH_ITEM_FIELDS = ("item_id", "slice_id", "class_name", "confidence", "overlay_uri", "image_uri", "mask_uri")


_COLOR_RE = re.compile(r"#[0-9A-Fa-f]{6}")


def validate_batch(batch: Any, where: str = "batch") -> dict[str, Any]:
    """Check a batch object against the contract and return it unchanged; raise ContractError otherwise.

    Every item must belong to the batch's class, ids must be unique and canonical, confidence in [0, 1].
    """
    if not isinstance(batch, Mapping):
        raise ContractError(f"{where}: expected a JSON object, got {type(batch).__name__}")
    missing = [f for f in BATCH_FIELDS if f not in batch]
    if missing:
        raise ContractError(f"{where}: missing field(s) {', '.join(missing)}")
    cls = tissue_class(batch["class_name"])
    if cls is BACKGROUND:
        raise ContractError(f"{where}: class_name background is not a review unit")
    if batch["class_id"] != cls.id:
        raise ContractError(f"{where}: class_id {batch['class_id']!r} does not match class_name {cls.name} ({cls.id})")
    if not isinstance(batch["batch_id"], str) or not batch["batch_id"]:
        raise ContractError(f"{where}: batch_id must be a non-empty string")
    if not isinstance(batch["color"], str) or not _COLOR_RE.fullmatch(batch["color"]):
        # The colour goes into the review page's CSS: anything else could inject style.
        raise ContractError(f"{where}: color must be #rrggbb, got {batch['color']!r}")
    items = batch["items"]
    if not isinstance(items, list) or not items:
        raise ContractError(f"{where}: items must be a non-empty list")
    if len(items) > MAX_BATCH_SIZE:
        raise ContractError(f"{where}: {len(items)} items; at most {MAX_BATCH_SIZE} per batch")
    seen: set[str] = set()
    for i, item in enumerate(items):
        at = f"{where}.items[{i}]"
        if not isinstance(item, Mapping):
            raise ContractError(f"{at}: expected an object")
        missing = [f for f in BATCH_ITEM_FIELDS if f not in item]
        if missing:
            raise ContractError(f"{at}: missing field(s) {', '.join(missing)}")
        iid = parse_item_id(item["item_id"])
        if iid.class_name != cls.name or item["class_name"] != cls.name:
            raise ContractError(f"{at}: item {item['item_id']} is not of the batch's class {cls.name}")
        if item["slice_id"] != iid.slice_id:
            raise ContractError(f"{at}: slice_id {item['slice_id']!r} does not match item id "
                                f"(expected {iid.slice_id!r})")
        if item["item_id"] in seen:
            raise ContractError(f"{at}: duplicate item {item['item_id']}")
        seen.add(item["item_id"])
        conf = item["confidence"]
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.0 <= conf <= 1.0:
            raise ContractError(f"{at}: confidence must be a number in [0, 1], got {conf!r}")
        for f in ("overlay_uri", "image_uri", "mask_uri"):
            if not isinstance(item[f], str) or not item[f]:
                raise ContractError(f"{at}: {f} must be a non-empty URI string")
    return dict(batch)


# --------------------------------------------------------------------------------------------------------
# Adjust tasks (ARCHITECTURE §6): one slice, the model's mask pre-loaded in an editor

VERIFY = "verify"
ADJUST = "adjust"
TASK_KINDS = (VERIFY, ADJUST)
ADJUST_TASK_FIELDS = ("task_id", "kind", "round", "model_version", "slice_id", "image_uri", "mask_uri",
                      "initial_overlay_uri", "label_mappings", "classes_to_check", "item_ids")
_SLICE_RE = re.compile(r"^[^/]+/\d{3,4}$")
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


def label_mappings() -> dict[str, dict[str, str]]:
    """``{"<class_name>": {"color": "#rrggbb"}}`` for the review classes: what an adjust task and the editor's
    ``initial-value`` carry. Background has no entry: an unpainted pixel is background."""
    return {c.name: {"color": str(c.color)} for c in REVIEW_CLASSES}


def task_kind(obj: Mapping[str, Any], where: str = "task") -> str:
    """``verify`` or ``adjust``; a data object without ``kind`` is a verify batch (older batches have none)."""
    kind = obj.get("kind", VERIFY)
    if kind not in TASK_KINDS:
        raise ContractError(f"{where}: kind must be one of {', '.join(TASK_KINDS)}, got {kind!r}")
    return str(kind)


def validate_adjust_task(task: Any, where: str = "task") -> dict[str, Any]:
    """Check an adjust task object (§6) and return it unchanged; raise ContractError naming the field otherwise.

    The item ids must be of the task's slice, the classes to check must be review classes named by those items
    (or, with no items, any review class), and the label mappings must give every review class a colour.
    """
    if not isinstance(task, Mapping):
        raise ContractError(f"{where}: expected a JSON object, got {type(task).__name__}")
    missing = [f for f in ADJUST_TASK_FIELDS if f not in task]
    if missing:
        raise ContractError(f"{where}: missing field(s) {', '.join(missing)}")
    if task["kind"] != ADJUST:
        raise ContractError(f"{where}: kind must be {ADJUST!r}, got {task['kind']!r}")
    for f in ("task_id", "slice_id", "image_uri", "mask_uri", "initial_overlay_uri"):
        if not isinstance(task[f], str) or not task[f]:
            raise ContractError(f"{where}: {f} must be a non-empty string")
    if not _SLICE_RE.match(task["slice_id"]):
        raise ContractError(f"{where}: slice_id {task['slice_id']!r} is not <subject>/<slice:03d>")
    mappings = task["label_mappings"]
    if not isinstance(mappings, Mapping):
        raise ContractError(f"{where}: label_mappings must be an object {{class_name: {{color: #rrggbb}}}}")
    for name, entry in mappings.items():
        cls = CLASS_BY_NAME.get(name)
        if cls is None or cls is BACKGROUND:
            raise ContractError(f"{where}: label_mappings: unknown tissue class {name!r}")
        if not isinstance(entry, Mapping) or not _COLOR_RE.match(str(entry.get("color", ""))):
            raise ContractError(f"{where}: label_mappings.{name}.color must be #rrggbb")
    absent = [c.name for c in REVIEW_CLASSES if c.name not in mappings]
    if absent:
        raise ContractError(f"{where}: label_mappings: no colour for {', '.join(absent)}")
    checks = task["classes_to_check"]
    if not isinstance(checks, list) or not checks:
        raise ContractError(f"{where}: classes_to_check must be a non-empty list of class names")
    for name in checks:
        if name not in mappings:
            raise ContractError(f"{where}: classes_to_check: {name!r} is not a review class")
    item_ids = task["item_ids"]
    if not isinstance(item_ids, list):
        raise ContractError(f"{where}: item_ids must be a list of item ids")
    for iid_text in item_ids:
        iid = parse_item_id(iid_text)
        if iid.slice_id != task["slice_id"]:
            raise ContractError(f"{where}: item {iid_text} is not of slice {task['slice_id']}")
        if iid.class_name not in checks:
            raise ContractError(f"{where}: item {iid_text}: its class is not in classes_to_check")
    return dict(task)


def validate_task(obj: Any, where: str = "task") -> dict[str, Any]:
    """A data object of either kind: a verify batch (`validate_batch`) or an adjust task (`validate_adjust_task`)."""
    if not isinstance(obj, Mapping):
        raise ContractError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if task_kind(obj, where) == ADJUST:
        return validate_adjust_task(obj, where)
    return validate_batch(obj, where)


# --------------------------------------------------------------------------------------------------------
# Review records (ARCHITECTURE §9): store export == analysis input

REVIEW_RECORD_REQUIRED = ("item_id", "class_name", "confidence", "confirm_count", "disconfirm_count")
REVIEW_RECORD_OPTIONAL = ("round", "model_version", "subject", "slice_id")
REVIEW_RECORD_COLUMNS = REVIEW_RECORD_REQUIRED + REVIEW_RECORD_OPTIONAL
#: `segqa store export --corrections` (ARCHITECTURE §8): one row per corrected slice per adjust job.
CORRECTION_COLUMNS = ("slice_id", "round", "job", "workers", "mask_uri", "modified", "seconds")

# --------------------------------------------------------------------------------------------------------
# Scoring, selection and thresholds (ARCHITECTURE §5, §9)

CONFIDENCE_MEASURES = ("soft_dice", "mean_prob", "entropy", "mutual_info", "surface_agreement")
#: ``surface_agreement`` ranks masks as the reviewers judge them (surface Dice at 1 px); ARCHITECTURE §5 names
#: ``soft_dice``, which ranks gray-matter masks backwards at that bar (docs/DECISIONS.md).
DEFAULT_CONFIDENCE_MEASURE = "surface_agreement"
#: How far apart two boundaries may lie and still agree, in pixels (Euclidean): the reviewers' tolerance
#: (ARCHITECTURE §10) and the one `surface_agreement` uses.
SURFACE_TOLERANCE_PX = 1.0
DEFAULT_MIN_PIXELS = 30
#: The routes of ARCHITECTURE §5: every scored item gets exactly one (``segqa select``, assignments.csv).
ASSIGNMENTS = ("auto_accept", "verify", "adjust", "audit", "random_arm", "skip")
#: What rounds written before routing (issue #13) called ``verify``; readers treat it as ``verify``.
LEGACY_VERIFY_ASSIGNMENT = "review"
THRESHOLDS_SCHEMA = "segqa.thresholds/1"
#: ``calibration.json`` of an analysis: per class, the isotonic curve of P(accept | unit-scale confidence).
CALIBRATION_SCHEMA = "segqa.calibration/1"


@dataclass(frozen=True)
class CostModel:
    """Seconds of one person's work (ARCHITECTURE §10): the one definition the router, the demo and the
    benchmarks share. Defaults: verify 3 s per mask (a 25-mask screen ≈ 75 s), adjust 60 s per slice (all its
    classes), drawing a slice's tissues from scratch 240 s (the classical baseline). Grounds: Bearman et al. 2016
    (≈ 240 s per full image from scratch); correcting is 3-5x faster than drawing (Fluid Annotation,
    Polygon-RNN); verification far cheaper again (Papadopoulos et al. 2016). Real portal timings replace these
    where they exist."""

    verify_s: float = 3.0
    adjust_s: float = 60.0
    scratch_s: float = 240.0

    def __post_init__(self) -> None:
        for name in ("verify_s", "adjust_s", "scratch_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise SegqaError(f"cost model: {name} must be a positive number of seconds, got {value!r}")

    def for_crew(self, reviewers: int = 1, correctors: int = 1) -> CostModel:
        """The same work as seen by a budget of *human* seconds when every mask is verified by ``reviewers``
        people and every adjust task answered by ``correctors``: each of them spends the per-person seconds
        (three reviewers on a mask book 3 x 3 s in the store, so the router must charge 9 s)."""
        for name, n in (("reviewers", reviewers), ("correctors", correctors)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise SegqaError(f"cost model: {name} must be a whole number >= 1, got {n!r}")
        return replace(self, verify_s=self.verify_s * reviewers, adjust_s=self.adjust_s * correctors)

    @classmethod
    def parse(cls, text: str | None) -> CostModel:
        """``"verify=3,adjust=60,scratch=240"`` (any subset; the rest keep their defaults); None/"" -> defaults."""
        if text is None or not text.strip():
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ("verify", "adjust", "scratch"):
                raise SegqaError(f"--costs {text!r}: expected verify=S,adjust=S,scratch=S (seconds), got {part!r}")
            try:
                values[f"{key}_s"] = float(value)
            except ValueError:
                raise SegqaError(f"--costs {text!r}: {key} must be a number of seconds, got {value!r}") from None
        return cls(**values)

    def to_json(self) -> dict[str, float]:
        return {"verify_s": self.verify_s, "adjust_s": self.adjust_s, "scratch_s": self.scratch_s}


def require_fields(obj: Mapping[str, Any], fields: Iterable[str], where: str) -> None:
    """Raise ContractError naming every missing field of ``obj``."""
    missing = [f for f in fields if f not in obj]
    if missing:
        raise ContractError(f"{where}: missing field(s) {', '.join(missing)}")


# --------------------------------------------------------------------------------------------------------
# Rounds and time

_ROUND_DIGITS_RE = re.compile(r"\d+")


def round_number(round_id: str | int) -> int:
    """The number of a round id: the last run of digits (``round-0007`` -> 7, ``"12"`` -> 12); -1 when none."""
    runs = _ROUND_DIGITS_RE.findall(str(round_id))
    return int(runs[-1]) if runs else -1


def round_sort_key(round_id: str | int) -> tuple[int, str]:
    """The one ordering of round ids: by number (``round-10`` after ``round-9``), then by the text.

    Every place that sorts rounds or picks the latest one uses this key, so the store export and the
    retraining set agree on which round's mask of an item counts.
    """
    return (round_number(round_id), str(round_id))


def utc_iso(moment: datetime | float, timespec: str = "seconds") -> str:
    """``moment`` (an aware datetime or a Unix time) as ISO 8601 UTC ending in ``Z``, e.g.
    ``2026-12-01T16:12:00Z`` (``timespec="milliseconds"``: ``...T16:12:00.123Z``)."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(float(moment), tz=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def utc_now_iso(timespec: str = "seconds") -> str:
    """Now, as every timestamp segqa writes: ISO 8601 UTC ending in ``Z`` (see `utc_iso`). Readers accept
    ``+00:00`` as well, which files written before this helper carry."""
    return utc_iso(datetime.now(timezone.utc), timespec)


# --------------------------------------------------------------------------------------------------------
# SageMaker training: what the operator-side launcher (qa_workflow.cloud.sagemaker) and the retrain-trigger
# Lambda (qa_workflow.confirmations.retrain_trigger) both tell SageMaker

#: The script SageMaker runs (``sagemaker_program``); it sits at the root of the training source bundle.
TRAINING_ENTRY_SCRIPT = "segqa_sagemaker_entry.py"
#: What SageMaker accepts as a training job name (letters, digits and '-', at most 63 characters).
#: SageMaker's training job name: botocore's pattern plus its length limit (the pattern alone lets hyphens
#: run past 63 characters).
TRAINING_JOB_NAME_RE = re.compile(r"^(?=.{1,63}$)[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
#: The AWS MXNet training container the bundle targets; its images run Python 3.8.
MXNET_VERSION = "1.9.0"
MXNET_PY_VERSION = "py38"
#: CloudWatch metrics from the one line per epoch that training/train.py logs
#: (``epoch=3 train_loss=0.41230 val_mean_fg_dice=0.87312 lr=... images_per_s=...``).
TRAINING_METRIC_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"Name": "train:loss", "Regex": r"train_loss=([0-9.eE+-]+)"},
    {"Name": "validation:mean_fg_dice", "Regex": r"val_mean_fg_dice=([0-9.]+)"},
    {"Name": "train:images_per_s", "Regex": r"images_per_s=([0-9.]+)"},
)
