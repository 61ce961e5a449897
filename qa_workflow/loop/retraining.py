"""Retraining on confirmed masks, champion/challenger promotion, and the ENet edge export (issue #8).

The training set of a retraining round is the original labelled ``train`` split plus every pool slice with at
least one **confirmed** tissue-class mask (consolidated outcome ``accept``, `contract.vote_outcome`: every
reviewer accepted it, or, after a second opinion on a split, a majority two votes ahead).
For such a slice the label map is the model's prediction that the reviewers saw, except that the predicted
region of every class that was *not* confirmed (rejected, split, or never reviewed) becomes the ignore label
(255), so the network is never taught a mask that a person rejected or did not see. With
``use_auto_accepted`` the masks that the round's thresholds auto-accepted count as confirmed (pseudo-labels).

A slice a person **corrected** (an adjust task, ARCHITECTURE §7) is a full label: the consolidated corrected
label map, every class, no ignore pixels. It wins over the confirmed masks of the same round (the corrector saw
and fixed the whole slice). The retraining set records each slice's source (``sources.csv``: ``slice_id,round,
source,mask_uri`` with source ``corrected``, ``confirmed`` or ``pseudo``).

A slice reviewed in several rounds (a new model each time, so a new mask) uses its latest reviewed round only:
masks from different models are never mixed on one slice.

`retrain_round` then trains a challenger for each network (warm start from the champion by default),
evaluates challenger and champion on the held-out ``test`` split of the base dataset (never reviewed),
applies `registry.decide_promotion`, records the decision, and exports the ENet champion when it changed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa_workflow import storage
from qa_workflow.contract import (
    ACCEPT,
    CLASS_BY_NAME,
    DEFAULT_TTA,
    IGNORE_LABEL,
    NETWORKS,
    REVIEW_CLASSES,
    SegqaError,
    from_display,
    parse_item_id,
    round_number,
    round_sort_key,
)
from qa_workflow.loop.registry import DEFAULT_TOLERANCE, PromotionDecision, Registry, decide_promotion

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ pure core

def confirmed_label_map(predicted: np.ndarray, confirmed: Iterable[str]) -> np.ndarray:
    """Training labels for one reviewed slice.

    predicted: (H, W) uint8 label map 0..3 that the reviewers saw; confirmed: class names whose mask was
    confirmed. Returns (H, W) uint8: the prediction where its class is confirmed or background, 255 over the
    predicted region of every other tissue class.
    """
    confirmed_ids = {CLASS_BY_NAME[c].id for c in confirmed}
    labels = predicted.astype(np.uint8, copy=True)
    for cls in REVIEW_CLASSES:
        if cls.id not in confirmed_ids:
            labels[predicted == cls.id] = IGNORE_LABEL
    return labels


@dataclass(frozen=True)
class SlicePlan:
    subject: str
    slice_index: int
    round: str
    confirmed: tuple[str, ...]  # class names
    pseudo: tuple[str, ...] = ()  # auto-accepted classes used as pseudo-labels (subset of confirmed)
    corrected_mask_uri: str = ""  # the consolidated correction of this round, when a person corrected the slice

    @property
    def source(self) -> str:
        """corrected | confirmed | pseudo (only auto-accepted masks)."""
        if self.corrected_mask_uri:
            return "corrected"
        return "pseudo" if self.pseudo and set(self.pseudo) == set(self.confirmed) else "confirmed"


def latest_corrections(corrections: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(round, slice_id) -> the consolidated mask that labels the slice in that round. A slice corrected in
    several adjust jobs of one round (routed and chained, on the command-line path) takes the correction recorded
    last (``recorded_at``, then the job name): the latest person's full label. Rows without a mask are skipped.
    The one rule for retraining (`plan_slices`) and for the verdicts corrections imply (`loop.verdicts`)."""
    chosen: dict[tuple[str, str], tuple[tuple[str, str], str]] = {}
    for row in corrections:
        if not row.get("mask_uri"):
            continue
        key = (str(row["round"]), str(row["slice_id"]))
        order = (str(row.get("recorded_at") or ""), str(row.get("job") or ""))
        if key not in chosen or order > chosen[key][0]:
            chosen[key] = (order, str(row["mask_uri"]))
    return {key: uri for key, (_, uri) in chosen.items()}


def plan_slices(outcomes: Iterable[Mapping[str, Any]], auto_accepted: Iterable[Mapping[str, Any]] = (),
                corrections: Iterable[Mapping[str, Any]] = ()) -> list[SlicePlan]:
    """Which pool slices enter the training set, from which round, with which classes confirmed.

    outcomes: rows with item_id, round, outcome (accept | reject | split); auto_accepted: rows with item_id and
    round (only given with --use-auto-accepted); corrections: rows with slice_id, round and mask_uri (the
    consolidated corrected label map; several in one round: `latest_corrections`). The latest round in which a
    person reviewed or corrected a slice decides the slice (rounds ordered by `contract.round_sort_key`); a
    correction in that round makes it a full label; otherwise its confirmed classes, plus the masks auto-accepted
    in that same round that no one reviewed; slices without any are left out. A slice no person ever labelled
    takes the auto-accepted masks of its latest auto-accepting round.
    """
    by_slice: dict[tuple[str, int], dict[str, dict[str, str]]] = {}
    for row in outcomes:
        iid = parse_item_id(row["item_id"])
        by_slice.setdefault((iid.subject, iid.slice_index), {}).setdefault(str(row["round"]), {})[
            iid.class_name] = str(row["outcome"])
    corrected: dict[tuple[str, int, str], str] = {}
    for (round_id, slice_id), mask_uri in latest_corrections(corrections).items():
        iid = parse_item_id(f"{slice_id}/{REVIEW_CLASSES[0].name}")
        corrected[(iid.subject, iid.slice_index, round_id)] = mask_uri
        by_slice.setdefault((iid.subject, iid.slice_index), {}).setdefault(round_id, {})
    # auto-accepted masks (pseudo-labels) fill in only where people left no label: they never make a round the
    # slice's latest over an earlier round that a person reviewed or corrected
    pseudo: dict[tuple[str, int, str], set[str]] = {}
    pseudo_only: dict[tuple[str, int], set[str]] = {}
    for row in auto_accepted:
        iid = parse_item_id(row["item_id"])
        pseudo.setdefault((iid.subject, iid.slice_index, str(row["round"])), set()).add(iid.class_name)
        pseudo_only.setdefault((iid.subject, iid.slice_index), set()).add(str(row["round"]))
    for key, rounds_auto in pseudo_only.items():
        if key not in by_slice:
            by_slice[key] = {max(rounds_auto, key=round_sort_key): {}}
    plans = []
    for (subject, idx), rounds in sorted(by_slice.items()):
        latest = max(rounds, key=round_sort_key)
        if (subject, idx, latest) in corrected:
            plans.append(SlicePlan(subject, idx, latest, (), (), corrected[(subject, idx, latest)]))
            continue
        reviewed = rounds[latest]
        confirmed = {c for c, o in reviewed.items() if o == ACCEPT}
        extra = pseudo.get((subject, idx, latest), set()) - set(reviewed)  # a review always overrides
        if confirmed or extra:
            plans.append(SlicePlan(subject, idx, latest, tuple(sorted(confirmed | extra)), tuple(sorted(extra))))
    return plans


# ------------------------------------------------------------------------------------------ I/O shell

@dataclass
class RetrainSet:
    path: Path
    base_train_slices: int
    pool_slices: int
    confirmed_masks: int
    pseudo_masks: int
    ignored_pixels: int
    labelled_pixels: int
    per_round: dict[str, int] = field(default_factory=dict)
    corrected_slices: int = 0  # pool slices labelled by a person's correction (full labels)
    sources: dict[str, str] = field(default_factory=dict)  # slice_id -> corrected | confirmed | pseudo

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "base_train_slices": self.base_train_slices,
                "pool_slices": self.pool_slices, "confirmed_masks": self.confirmed_masks,
                "pseudo_masks": self.pseudo_masks, "ignored_pixels": self.ignored_pixels,
                "labelled_pixels": self.labelled_pixels, "per_round": self.per_round,
                "corrected_slices": self.corrected_slices}


SOURCES_FILE = "sources.csv"


def store_corrections(store_uri: str) -> list[dict[str, Any]]:
    """The consolidated corrections in the store (`confirmations.export.export_corrections` rows with a mask)."""
    from qa_workflow.confirmations.export import export_corrections
    from qa_workflow.confirmations.store import open_store

    store = open_store(store_uri, create=False)
    try:  # recorded_at: what `latest_corrections` orders a slice corrected twice by
        return [row for row in export_corrections(store, recorded_at=True) if row["mask_uri"]]
    finally:
        store.close()


def store_outcomes(store_uri: str) -> list[dict[str, Any]]:
    """Consolidated outcome of every reviewed item in the store (one row per item and round)."""
    from qa_workflow.confirmations.store import open_store

    store = open_store(store_uri, create=False)
    try:
        return [{"item_id": s.item.item_id, "round": s.item.round, "outcome": s.outcome}
                for s in store.iter_items() if s.outcome is not None]
    finally:
        store.close()


def auto_accepted_items(round_dirs: Mapping[str, str]) -> list[dict[str, Any]]:
    """Items that each round's policy auto-accepted (from ROUND_DIR/assignments.csv)."""
    from qa_workflow.rounds.round_dir import read_assignments

    rows = []
    for round_id, round_dir in round_dirs.items():
        frame = read_assignments(round_dir)
        for item_id in frame.loc[frame["assignment"] == "auto_accept", "item_id"]:
            rows.append({"item_id": item_id, "round": round_id})
    return rows


def build_retraining_set(data_dir: str | Path, outcomes: Sequence[Mapping[str, Any]],
                         predictions: Mapping[str, str], out: str | Path, *,
                         auto_accepted: Sequence[Mapping[str, Any]] = (), overwrite: bool = True,
                         corrections: Sequence[Mapping[str, Any]] = ()) -> RetrainSet:
    """Write the retraining dataset (train = base train + confirmed and corrected pool slices; val copied) to
    ``out``, with ``sources.csv`` naming where each pool slice's label came from.

    predictions: round id -> prediction folder of that round (``masks/<subject>/<slice>.png`` label maps);
    corrections: `store_corrections` rows (slice_id, round, mask_uri of the consolidated correction).
    """
    from qa_workflow.rounds.predict import mask_file
    from training.dataset import DatasetWriter, load_png, read_index

    data_dir = Path(data_dir)
    base = read_index(data_dir)
    pool = {(r.subject, r.slice): r for r in base if r.split == "pool"}
    plans = plan_slices(outcomes, auto_accepted, corrections)
    summary = RetrainSet(Path(out), 0, 0, 0, 0, 0, 0)
    source_rows: list[tuple[str, str, str, str]] = []
    with DatasetWriter(out, overwrite=overwrite, source="segqa-retraining", base_dataset=str(data_dir)) as writer:
        for rec in base:
            if rec.split in ("train", "val"):
                writer.add(rec.subject, rec.slice, load_png(data_dir / rec.image),
                           load_png(data_dir / rec.mask, "mask"), rec.split, rec.site)
                summary.base_train_slices += rec.split == "train"
        for plan in plans:
            pool_rec = pool.get((plan.subject, plan.slice_index))
            if pool_rec is None:
                raise SegqaError(f"reviewed slice {plan.subject}/{plan.slice_index:03d} is not in the pool split "
                                 f"of {data_dir}")
            slice_id = f"{plan.subject}/{plan.slice_index:03d}"
            if plan.corrected_mask_uri:
                # Corrections are drawn in the display orientation (contract.to_display); back to the stored layout.
                labels = np.ascontiguousarray(from_display(_png_from(plan.corrected_mask_uri)))
                if labels.max(initial=0) > REVIEW_CLASSES[-1].id:
                    raise SegqaError(f"{plan.corrected_mask_uri}: a corrected label map holds values 0..3 only")
                image = load_png(data_dir / pool_rec.image)
                if labels.shape != image.shape:
                    raise SegqaError(f"{plan.corrected_mask_uri}: the corrected label map is {labels.shape[1]} rows x "
                                     f"{labels.shape[0]} columns; the slice as reviewed (display orientation) is "
                                     f"{image.shape[1]} x {image.shape[0]}")
                writer.add(plan.subject, plan.slice_index, image, labels, "train", pool_rec.site)
                summary.pool_slices += 1
                summary.corrected_slices += 1
                summary.labelled_pixels += int(labels.size)
                summary.per_round[plan.round] = summary.per_round.get(plan.round, 0) + 1
                summary.sources[slice_id] = plan.source
                source_rows.append((slice_id, plan.round, plan.source, plan.corrected_mask_uri))
                continue
            if plan.round not in predictions:
                raise SegqaError(f"no prediction folder given for round {plan.round!r} "
                                 f"(needed for {plan.subject}/{plan.slice_index:03d})")
            uri = storage.join(predictions[plan.round], mask_file(plan.subject, plan.slice_index))
            predicted = _png_from(uri)
            labels = confirmed_label_map(predicted, plan.confirmed)
            writer.add(plan.subject, plan.slice_index, load_png(data_dir / pool_rec.image), labels, "train",
                       pool_rec.site)
            summary.pool_slices += 1
            summary.confirmed_masks += len(plan.confirmed) - len(plan.pseudo)
            summary.pseudo_masks += len(plan.pseudo)
            summary.ignored_pixels += int((labels == IGNORE_LABEL).sum())
            summary.labelled_pixels += int((labels != IGNORE_LABEL).sum())
            summary.per_round[plan.round] = summary.per_round.get(plan.round, 0) + 1
            summary.sources[slice_id] = plan.source
            source_rows.append((slice_id, plan.round, plan.source, uri))
    lines = ["slice_id,round,source,mask_uri"] + [",".join(row) for row in source_rows]
    storage.atomic_write_text(Path(out) / SOURCES_FILE, "\n".join(lines) + "\n")
    return summary


def _png_from(uri: str) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(storage.read_bytes(uri))) as im:
        return np.asarray(im).astype(np.uint8)


def publish_training_set(training_set: str | Path, dest: str, workers: int = 8) -> int:
    """Upload a retraining set to ``dest/train/`` and ``dest/validation/`` (the SageMaker channels the
    scheduled retraining jobs read: split ``train`` of the first, ``val`` of the second). Returns the number of
    files written per channel. ``index.csv`` goes last, so a job never sees an index naming missing files.
    """
    from concurrent.futures import ThreadPoolExecutor

    root = Path(training_set)
    if not (root / "index.csv").is_file():
        raise SegqaError(f"{root}: not a dataset folder (no index.csv)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "index.csv")
    for channel in ("train", "validation"):
        base = storage.join(dest, channel)
        uris = [storage.join(base, p.relative_to(root).as_posix()) for p in files]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda uri, p: storage.write_bytes(uri, p.read_bytes()), uris, files))
        storage.write_bytes(storage.join(base, "index.csv"), (root / "index.csv").read_bytes(), "text/csv")
    return len(files) + 1


# ------------------------------------------------------------------------------------------ the round

@dataclass
class NetworkOutcome:
    network: str
    challenger: str
    champion_before: str | None
    decision: PromotionDecision
    challenger_metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None

    @property
    def champion_after(self) -> str:
        return self.challenger if self.decision.promote else str(self.champion_before)


@dataclass
class RetrainResult:
    round: str
    training_set: RetrainSet
    networks: dict[str, NetworkOutcome]
    export_dir: Path | None


def evaluation_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """The slice of an evaluation report that promotion compares (pooled per-class and mean foreground Dice),
    and, where the dataset names acquisition sites, the same per site (``sites``: site -> {class: Dice,
    "mean_foreground": ...}) so that nobody has to evaluate the model again for them."""
    pooled = report["pooled"]
    out = {"dice": {k: v for k, v in pooled["dice"].items() if k != "background"},
           "mean_foreground_dice": pooled["mean_foreground_dice"], "split": report["data"]["split"],
           "slices": report["data"]["slices"]}
    if report.get("sites"):
        out["sites"] = {site: {**{k: v for k, v in row["dice"].items() if k != "background"},
                               "mean_foreground": row["mean_foreground_dice"]}
                        for site, row in report["sites"].items()}
    return out


def initial_models(registry: Registry, data_dir: str | Path, work_dir: str | Path,
                   train_options: Mapping[str, Mapping[str, Any]], progress: Callable[[Any], None] | None = None,
                   networks: Sequence[str] = NETWORKS, tta: str = DEFAULT_TTA,
                   given: Mapping[str, str | Path] | None = None) -> dict[str, NetworkOutcome]:
    """Train the first U-Net and ENet on the labelled ``train`` split (side by side, `training.parallel`) and
    register them as champions, evaluated with ``tta`` (`training.predict.with_tta`). Networks that have a
    champion already are left alone. ``given`` maps a network to a trained model directory (the model a site
    already runs): it is registered as that network's first champion instead of training one
    (`check_given_model` first)."""
    from training.evaluate import evaluate_model
    from training.parallel import train_all
    from training.train import TrainConfig

    given = dict(given or {})
    todo = [n for n in networks if not registry.champion(n)]
    configs = {n: TrainConfig(data_dir=str(data_dir), out_dir=str(Path(work_dir) / f"{n}-initial"), network=n,
                              **dict(train_options.get(n, {}))) for n in todo if n not in given}
    trained = train_all(configs, progress=progress) if configs else {}
    trained.update({n: check_given_model(n, given[n]) for n in todo if n in given})
    out: dict[str, NetworkOutcome] = {}
    for network in todo:
        model_dir = trained[network]
        version = _card_version(model_dir)
        metrics = evaluation_metrics(evaluate_model(model_dir, data_dir, split="test", tta=tta))
        registry.add(network, version, model_dir)
        ok, reasons = decide_promotion(metrics, None)
        decision = PromotionDecision(network, version, None, ok, reasons, metrics, None, DEFAULT_TOLERANCE, round=None)
        registry.record(decision)
        out[network] = NetworkOutcome(network, version, None, decision, metrics, None)
    return out


def check_given_model(network: str, model_dir: str | Path) -> Path:
    """``model_dir`` as a trained ``network`` model the loop can start from (a model card of that network and
    the weights it names), or a SegqaError naming the folder and what it lacks."""
    from training import modelcard

    card = modelcard.read_card(model_dir)
    if card["network"] != network:
        raise SegqaError(f"{model_dir}: a {card['network']!r} model, given as the {network!r} one")
    modelcard.params_path(model_dir, card)
    return Path(model_dir)


def _card(model_dir: Path) -> dict[str, Any]:
    import json

    return json.loads((Path(model_dir) / "model_card.json").read_text())


def _card_version(model_dir: Path) -> str:
    return str(_card(model_dir)["version"])


def local_model_dir(registry: Registry, network: str, version: str, cache: Path) -> Path:
    """A local folder holding the registry's ``network/version`` (downloads it when the registry is on S3)."""
    uri = registry.model_uri(network, version)
    if not storage.is_s3(uri):
        return storage.local_path(uri)
    dest = cache / network / version
    if not (dest / "model_card.json").is_file():
        for obj in storage.list_uris(uri.rstrip("/") + "/"):
            rel = obj[len(uri.rstrip("/")) + 1:]
            storage.write_bytes(dest / rel, storage.read_bytes(obj))
    return dest


def retrain_round(round_id: str, registry: Registry, data_dir: str | Path, training_set: RetrainSet,
                  work_dir: str | Path, train_options: Mapping[str, Mapping[str, Any]], *,
                  warm_start: bool = True, tolerance: float = DEFAULT_TOLERANCE, export_dir: str | Path | None = None,
                  networks: Sequence[str] = NETWORKS, progress: Callable[[Any], None] | None = None,
                  tta: str = DEFAULT_TTA) -> RetrainResult:
    """Train a challenger per network on ``training_set``, compare it with the champion on ``test`` (both
    predicted with ``tta``), promote or not, record the decision, and export the ENet when a new one was
    promoted."""
    from training.evaluate import evaluate_model
    from training.export import export_model
    from training.parallel import train_all
    from training.train import TrainConfig

    work_dir = Path(work_dir)
    results: dict[str, NetworkOutcome] = {}
    cache = work_dir / "registry-cache"
    champions: dict[str, tuple[str | None, Path | None]] = {}
    configs = {}
    for network in networks:
        champion = registry.champion(network)
        champion_dir = local_model_dir(registry, network, champion, cache) if champion else None
        champions[network] = (champion, champion_dir)
        model_dir = work_dir / f"{network}-challenger"
        if model_dir.exists():
            shutil.rmtree(model_dir)  # a half-finished challenger from an interrupted run
        opts = dict(train_options.get(network, {}))
        if warm_start and champion_dir is not None:
            opts["init_from"] = str(champion_dir)
            opts.setdefault("width", _card(champion_dir)["architecture"]["width"])  # warm start needs the same width
        configs[network] = TrainConfig(data_dir=str(training_set.path), out_dir=str(model_dir), network=network,
                                       **opts)
    trained = train_all(configs, progress=progress)  # the networks side by side, each on its share of the cores
    exported: Path | None = None
    for network in networks:
        champion, champion_dir = champions[network]
        model_dir = trained[network]
        version = _card_version(model_dir)
        challenger_metrics = evaluation_metrics(evaluate_model(model_dir, data_dir, split="test", tta=tta))
        champion_metrics = (evaluation_metrics(evaluate_model(champion_dir, data_dir, split="test", tta=tta))
                            if champion_dir is not None else None)
        ok, reasons = decide_promotion(challenger_metrics, champion_metrics, tolerance)
        if ok and network == "enet" and export_dir is not None:
            # exported before the champion changes: a failed export (parity, disk) leaves the old champion and no
            # decision, so a rerun of the round tries again, instead of an unexported champion nothing retries
            exported = Path(export_dir)
            export_model(model_dir, exported, overwrite=True)
        registry.add(network, version, model_dir)
        decision = PromotionDecision(network, version, champion, ok, reasons, challenger_metrics, champion_metrics,
                                     tolerance, round=round_number(round_id))
        registry.record(decision)
        results[network] = NetworkOutcome(network, version, champion, decision, challenger_metrics, champion_metrics)
    return RetrainResult(round_id, training_set, results, exported)


# ------------------------------------------------------------------------------------------ from round folders

@dataclass
class RetrainFromRounds:
    """What `retrain_from_rounds` did: the training set, where it was published (files per channel), and the
    retraining result (None with ``train=False``)."""

    training_set: RetrainSet
    published_files: int | None
    result: RetrainResult | None


def retrain_from_rounds(data_dir: str | Path, store_uri: str, round_dirs: Sequence[str], registry: Registry,
                        work_dir: str | Path, *, networks: Sequence[str] = NETWORKS, epochs: int = 5,
                        batch_size: int = 8, warm_start: bool = True, use_auto_accepted: bool = False,
                        tolerance: float = DEFAULT_TOLERANCE, export_dir: str | Path | None = None,
                        publish: str | None = None, train: bool = True,
                        on_training_set: Callable[[RetrainSet, int | None], None] | None = None,
                        progress: Callable[[Any], None] | None = None, tta: str = DEFAULT_TTA) -> RetrainFromRounds:
    """`segqa retrain`: read the reviewed round folders, build the training set from the store's confirmed
    masks under ``work_dir/training-set``, publish it to ``publish`` (``/train/`` and ``/validation/``), and,
    unless ``train`` is False, retrain and promote under the latest round's id (runs in ``work_dir/train``).

    `on_training_set(training_set, published_files)` is called once the set is built (before training, which
    is long); `progress` gets the TrainEvents."""
    from qa_workflow.rounds.round_dir import read_round

    predictions, rounds = {}, {}
    for round_dir in round_dirs:
        meta = read_round(round_dir)
        predictions[meta["round"]] = meta["inputs"]["predictions"]
        rounds[meta["round"]] = round_dir
    latest = max(rounds, key=round_sort_key)
    work = Path(work_dir)
    auto = auto_accepted_items(rounds) if use_auto_accepted else []
    training_set = build_retraining_set(data_dir, store_outcomes(store_uri), predictions, work / "training-set",
                                        auto_accepted=auto, corrections=store_corrections(store_uri))
    published = publish_training_set(training_set.path, publish) if publish else None
    if on_training_set is not None:
        on_training_set(training_set, published)
    if not train:
        return RetrainFromRounds(training_set, published, None)
    options = {n: {"epochs": epochs, "batch_size": batch_size} for n in networks}
    result = retrain_round(latest, registry, data_dir, training_set, work / "train", options, warm_start=warm_start,
                           tolerance=tolerance, export_dir=export_dir, networks=networks, progress=progress, tta=tta)
    return RetrainFromRounds(training_set, published, result)
