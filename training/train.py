"""Train a U-Net or ENet: a library function (`train_model`) and the SageMaker training entry point (`main`).

Library::

    from training.train import TrainConfig, train_model
    model_dir = train_model(TrainConfig(data_dir="data/cohort", network="enet", out_dir="models/enet", epochs=20))

``segqa train`` calls the same function and draws a progress bar from its `TrainEvent` callbacks; the
library itself never prints.

SageMaker (script mode, e.g. ``sagemaker.train.ModelTrainer`` with an MXNet 1.9 image, ``source_dir`` = the
repository's ``training/`` plus ``qa_workflow/contract.py``)::

    python train.py --network enet --epochs 40 --batch-size 16
    # data from SM_CHANNEL_TRAIN (a segqa dataset folder; split "train"), validation from
    # SM_CHANNEL_VALIDATION (its split "val"; default: the train channel's "val"), output to SM_MODEL_DIR,
    # hosts from SM_HOSTS (more than one host -> kvstore dist_sync), hyperparameters as --key value.

What a run guarantees:

- data order, augmentation and dropout draw from generators seeded by (seed, epoch), and every epoch ends
  with a checkpoint of the weights, the optimizer state and the history; so ``resume=True`` after a kill
  continues from the last finished epoch and ends with the same weights as an uninterrupted run;
- validation on split ``val`` after every epoch: per-class Dice of the argmax, mean foreground Dice; the
  best epoch's weights are kept as ``checkpoints/best.params`` (the model folder layout is in
  `training.modelcard`);
- mask pixels labelled 255 (ignore) contribute nothing to the loss or its gradient;
- the kvstore (``device`` by default; ``dist_sync`` / ``dist_device_sync`` for several hosts) is the one
  given to ``gluon.Trainer``; the CPU is used unless MXNet sees GPUs (then all of them).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (SageMaker): make `training` and `qa_workflow` importable
    _here = Path(__file__).resolve().parent
    sys.path.insert(0, str(_here.parent))

from training.threads import CpuMeter, configure_threads  # before mxnet: it sizes its pool once

THREADS = configure_threads()

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from qa_workflow.contract import IGNORE_LABEL, NUM_CLASSES, TISSUE_CLASSES, SegqaError, utc_iso, utc_now_iso
from qa_workflow.storage import atomic_write_with
from training import modelcard, native
from training.augment import AugmentConfig, augment_batch
from training.dataset import load_slices, read_index
from training.losses import resolve_class_weights, segmentation_loss
from training.metrics import confusion_matrix, dice_from_confusion, mean_foreground_dice
from training.nets import NETWORKS, build_network, load_params
from training.optimizer import BatchedAdam

__all__ = ["TrainConfig", "TrainEvent", "train_model", "main", "KVSTORES", "lr_at_epoch", "val_slice_cap",
           "strided_subset"]

log = logging.getLogger(__name__)

KVSTORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")
LR_SCHEDULES = ("cosine", "step", "constant")
#: Adam learning rates used by default and in benchmark B3 (chosen by hand, not tuned by a search).
DEFAULT_LR = {"unet": 2e-3, "enet": 5e-3}
#: Fields that must match for --resume to continue a run (anything else may change, e.g. epochs).
_RESUME_KEYS = ("network", "width", "seed", "batch_size", "lr", "lr_schedule", "weight_decay", "dice_weight",
                "ce_weight", "augment", "max_slices")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults suit the atlas cohort on a CPU.

    Budget knobs: ``max_slices`` (train on a seeded subset of the train split), ``max_batches_per_epoch``,
    ``max_val_slices`` (None: `val_slice_cap`, about a tenth of an epoch's training images, evenly strided
    over the val split) and ``time_budget_s`` (stop after the first epoch that ends past it).
    ``class_weights``: "auto"/None (default: inverse frequency of the training labels), "sqrt" (its square
    root), "uniform" (every class 1), or 4 numbers; docs/segmenter.md has what each measured.
    ``init_from``: a model folder whose weights start this run (warm start; same network and width).
    ``progress``: called with a `TrainEvent` at start, after every batch and every epoch, and at the end.
    """

    data_dir: str
    out_dir: str
    network: str = "unet"
    val_dir: str | None = None
    epochs: int = 30
    batch_size: int = 8
    lr: float | None = None  # None: DEFAULT_LR of the network
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    seed: int = 0
    class_weights: Any = "auto"
    dice_weight: float = 0.5
    ce_weight: float = 0.5
    width: float = 1.0
    augment: bool = True
    init_from: str | None = None
    resume: bool = False
    max_slices: int | None = None
    max_batches_per_epoch: int | None = None
    max_val_slices: int | None = None
    time_budget_s: float | None = None
    kvstore: str = "device"
    context: str = "auto"
    val_batch_size: int = 16
    progress: Callable[[TrainEvent], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR.get(str(self.network).lower(), 1e-3)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "progress"}
        if out["class_weights"] is not None and not isinstance(out["class_weights"], str):
            out["class_weights"] = [float(v) for v in out["class_weights"]]
        return out


@dataclass
class TrainEvent:
    """A progress report. ``kind``: "start" | "batch" | "epoch" | "end"."""

    kind: str
    epoch: int  # 1-based epoch this event belongs to (start: the first epoch to run)
    epochs: int
    step: int = 0  # batches done in this epoch
    steps: int = 0  # batches per epoch
    loss: float = float("nan")  # running mean training loss of the epoch
    lr: float = float("nan")
    val_dice: dict[str, float] | None = None
    val_mean_dice: float | None = None
    best_epoch: int | None = None
    best_mean_dice: float | None = None
    images_per_s: float | None = None
    cores_busy: float | None = None  # process CPU time / wall time of the epoch's training steps
    threads: int | None = None  # OpenMP threads of this process (start event)
    prelu: str | None = None  # how the ENet computes its PReLUs (start event; `training.nets.enet.PReLU`)
    elapsed_s: float = 0.0
    message: str = ""
    run: str = ""  # which of several runs trained at once (training.parallel.train_all) this event is from


# --------------------------------------------------------------------------------------------------------
# Pure helpers

def lr_at_epoch(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate for 0-based ``epoch``: cosine from lr to lr*min_lr_ratio, step (x0.1 at 60 % and 85 %),
    or constant. A function of the epoch alone, so resuming needs no scheduler state."""
    assert cfg.lr is not None, "TrainConfig.__post_init__ fills in the default learning rate"
    if cfg.lr_schedule == "constant" or cfg.epochs <= 1:
        return cfg.lr
    t = epoch / (cfg.epochs - 1)
    if cfg.lr_schedule == "step":
        return cfg.lr * (0.1 if t >= 0.6 else 1.0) * (0.1 if t >= 0.85 else 1.0)
    low = cfg.lr * cfg.min_lr_ratio
    return low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * t))


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator for data order and augmentation of one epoch (independent of earlier epochs)."""
    return np.random.default_rng([int(seed), int(epoch), 0x5E6A])


#: Validation may cost about this share of an epoch: slices validated per training image of the epoch.
VAL_SHARE = 0.1
#: Fewer validation slices than this make the per-epoch Dice too noisy to choose the best epoch by.
MIN_VAL_SLICES = 16


def val_slice_cap(train_images_per_epoch: int, val_slices: int, given: int | None = None) -> int:
    """How many val slices to validate on per epoch: ``given`` if set, else VAL_SHARE of the epoch's training
    images (at least MIN_VAL_SLICES); never more than the split has. Prediction of a slice costs less than
    a training step on it, so this keeps validation under VAL_SHARE of the epoch."""
    cap = given if given is not None else max(MIN_VAL_SLICES, math.ceil(VAL_SHARE * train_images_per_epoch))
    return min(int(cap), int(val_slices))


def strided_subset(n: int, k: int) -> np.ndarray:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k >= n): every subject and depth of a
    val split ordered by subject and slice is represented, and the choice is the same every epoch."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))


def _dropout_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2 ** 31 - 1)


def data_hash(images: np.ndarray, masks: np.ndarray, ids: Sequence[str]) -> str:
    """sha256 of the slice ids, pixels and labels a model was trained on (recorded in the model card)."""
    h = hashlib.sha256()
    for s in ids:
        h.update(s.encode() + b"\n")
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(masks).tobytes())
    return "sha256:" + h.hexdigest()


def _validate_config(cfg: TrainConfig) -> None:
    if cfg.network not in NETWORKS:
        raise SegqaError(f"--network must be one of {', '.join(NETWORKS)}, got {cfg.network!r}")
    assert cfg.lr is not None, "TrainConfig.__post_init__ fills in the default learning rate"
    checks = [("epochs", cfg.epochs, cfg.epochs >= 1, "an integer >= 1"),
              ("batch_size", cfg.batch_size, cfg.batch_size >= 1, "an integer >= 1"),
              ("lr", cfg.lr, cfg.lr > 0, "a number > 0"), ("width", cfg.width, cfg.width > 0, "a number > 0"),
              ("dice_weight", cfg.dice_weight, cfg.dice_weight >= 0, "a number >= 0"),
              ("ce_weight", cfg.ce_weight, cfg.ce_weight >= 0, "a number >= 0"),
              ("dice_weight + ce_weight", cfg.dice_weight + cfg.ce_weight, cfg.dice_weight + cfg.ce_weight > 0,
               "a number > 0"),
              ("weight_decay", cfg.weight_decay, cfg.weight_decay >= 0, "a number >= 0"),
              ("min_lr_ratio", cfg.min_lr_ratio, 0 <= cfg.min_lr_ratio <= 1, "a number in [0, 1]")]
    for name, value, ok, expected in checks:
        if not ok:  # (a NaN fails every check too)
            option = " + ".join(f"--{part.strip().replace('_', '-')}" for part in name.split("+"))
            raise SegqaError(f"training option {name} ({option}): expected {expected}, got {value!r}")
    for name in ("max_slices", "max_batches_per_epoch", "max_val_slices"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise SegqaError(f"training option {name}: must be >= 1 when given, got {v!r}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise SegqaError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {cfg.lr_schedule!r}")
    if cfg.kvstore not in KVSTORES:
        raise SegqaError(f"--kvstore must be one of {', '.join(KVSTORES)}, got {cfg.kvstore!r}")


def contexts(spec: str = "auto") -> list[mx.Context]:
    """``auto`` (every GPU MXNet sees, else the CPU), ``cpu``, ``gpu`` (all GPUs) or ``gpu:0,1``."""
    spec = (spec or "auto").strip().lower()
    try:
        n_gpu = mx.context.num_gpus()
    except mx.base.MXNetError:
        n_gpu = 0
    if spec == "cpu" or (spec == "auto" and n_gpu == 0):
        return [mx.cpu()]
    if spec in ("auto", "gpu"):
        if n_gpu == 0:
            raise SegqaError("--context gpu: MXNet sees no GPU (is the CUDA build of mxnet installed?)")
        return [mx.gpu(i) for i in range(n_gpu)]
    if spec.startswith("gpu:"):
        try:
            ids = [int(i) for i in spec[4:].split(",") if i.strip()]
        except ValueError:
            raise SegqaError(f"--context: expected gpu:0,1,..., got {spec!r}") from None
        bad = [i for i in ids if not 0 <= i < n_gpu]
        if not ids or bad:
            raise SegqaError(f"--context {spec}: MXNet sees {n_gpu} GPU(s)")
        return [mx.gpu(i) for i in ids]
    raise SegqaError(f"--context must be auto, cpu, gpu or gpu:0,1,..., got {spec!r}")


# --------------------------------------------------------------------------------------------------------
# Data

@dataclass
class _Split:
    images: np.ndarray  # (N, H, W) uint8
    masks: np.ndarray  # (N, H, W) uint8, 0..3 or 255
    ids: list[str]


def _load_split(root: str, split: str, limit: int | None, seed: int, strided: bool = False) -> _Split:
    """The split's slices; with ``limit``, a seeded random subset (or `strided_subset` when ``strided``)."""
    records = read_index(root, [split])
    if strided and limit is not None:
        records = [records[i] for i in strided_subset(len(records), limit)]
    elif limit is not None and len(records) > limit:
        keep = np.sort(np.random.default_rng([int(seed), 0xDA7A]).choice(len(records), size=limit, replace=False))
        records = [records[i] for i in keep]
    images, masks = load_slices(root, records, masks=True)
    assert masks is not None
    return _Split(images, masks, [r.slice_id for r in records])


# --------------------------------------------------------------------------------------------------------
# The run

class _Run:
    """One training run's state; `train_model` drives it. Only rank 0 writes the model folder."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.progress = cfg.progress or (lambda event: None)

    def emit(self, **kw: Any) -> None:
        self.progress(TrainEvent(epochs=self.cfg.epochs, **kw))

    # ---- setup
    def prepare_output(self) -> dict[str, Any] | None:
        """Check the output folder; returns the resume state if continuing."""
        state_file = self.out / modelcard.LAST_STATE_JSON
        if self.cfg.resume and state_file.is_file():
            try:
                state = json.loads(state_file.read_text())
            except json.JSONDecodeError as exc:
                raise SegqaError(f"{state_file}: corrupted checkpoint state ({exc.msg}); cannot resume") from None
            saved = state.get("config", {})
            changed = [k for k in _RESUME_KEYS if k in saved and saved[k] != self.cfg.to_json()[k]]
            if changed:
                raise SegqaError(f"{self.out}: cannot resume, option(s) {', '.join(changed)} differ from the "
                                 "checkpointed run (" + ", ".join(f"{k}={saved[k]!r}" for k in changed) + ")")
            return state
        if self.out.exists() and any(self.out.iterdir()) and not self.cfg.resume:
            raise SegqaError(f"{self.out}: exists and is not empty; pass --resume to continue that run or choose "
                             "another --out")
        return None

    def load_data(self) -> None:
        cfg = self.cfg
        self.train = _load_split(cfg.data_dir, "train", cfg.max_slices, cfg.seed)
        if len(self.train.images) == 0:
            raise SegqaError(f"{cfg.data_dir}: the train split is empty; nothing to train on (index.csv needs rows "
                             "with split=train)")
        if not (self.train.masks != IGNORE_LABEL).any():
            raise SegqaError(f"{cfg.data_dir}: every training mask pixel is 255 (ignore); nothing to learn from")
        val_root = cfg.val_dir or cfg.data_dir
        per_epoch = len(self.train.images)
        if cfg.max_batches_per_epoch:
            per_epoch = min(per_epoch, cfg.max_batches_per_epoch * cfg.batch_size)
        n_val = len(read_index(val_root, ["val"]))
        self.val = _load_split(val_root, "val", val_slice_cap(per_epoch, n_val, cfg.max_val_slices), cfg.seed,
                               strided=True)
        if len(self.val.images) == 0:
            log.warning("%s has no val split: the last epoch is kept as the best", val_root)
        pix = self.train.images.astype(np.float64) / 255.0
        self.mean = float(pix.mean())
        self.std = float(max(pix.std(), 1e-3))
        self.class_weights = resolve_class_weights(cfg.class_weights, self.train.masks)
        self.data_hash = data_hash(np.concatenate([self.train.images, self.val.images]),
                                   np.concatenate([self.train.masks, self.val.masks]),
                                   ["train:" + i for i in self.train.ids] + ["val:" + i for i in self.val.ids])

    def build(self, state: dict[str, Any] | None) -> None:
        cfg = self.cfg
        self.ctx = contexts(cfg.context)
        if "dist" in cfg.kvstore:
            self.kv: Any = mx.kv.create(cfg.kvstore)
            self.rank, self.workers = self.kv.rank, self.kv.num_workers
        else:
            self.kv, self.rank, self.workers = cfg.kvstore, 0, 1
        mx.random.seed(int(cfg.seed))
        np.random.seed(int(cfg.seed) % (2 ** 32))
        # The native PReLU kernel has a CPU implementation only: on a GPU the ENet trains with the "conv" form.
        on_cpu = all(c.device_type == "cpu" for c in self.ctx)
        self.net = build_network(cfg.network, width=cfg.width, prelu="auto" if on_cpu else "conv")
        self.net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2.0), ctx=self.ctx)
        h, w = self.train.images.shape[1:]
        for c in self.ctx:  # materialise deferred shapes now, so the seeded initial weights are fixed here
            self.net(nd.zeros((1, 1, h, w), ctx=c))
        if cfg.init_from and state is None:
            src_card = modelcard.read_card(cfg.init_from)
            if src_card["network"] != cfg.network:
                raise SegqaError(f"--init-from {cfg.init_from}: it is a {src_card['network']}, this run trains a "
                                 f"{cfg.network}")
            load_params(self.net, modelcard.params_path(cfg.init_from, src_card), self.ctx)
        self.net.hybridize(static_alloc=True)
        # With a distributed kvstore the optimizer would run on the parameter servers by default, and its
        # state could then not be saved for --resume ("Cannot save states for distributed training"): the
        # workers exchange gradients through the kvstore and each applies the same update locally instead.
        # The optimizer is Adam with its updates batched, 50 arrays per operator call (training/optimizer.py).
        self.trainer = gluon.Trainer(self.net.collect_params(), BatchedAdam.__name__.lower(),
                                     {"learning_rate": cfg.lr, "wd": cfg.weight_decay}, kvstore=self.kv,
                                     update_on_kvstore=False if "dist" in cfg.kvstore else None)
        self.history: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self.best_score = -1.0
        self.start_epoch = 0
        started = datetime.now(timezone.utc)
        self.started_at = utc_iso(started)
        digest = hashlib.sha256((self.data_hash + json.dumps(cfg.to_json(), sort_keys=True) + self.started_at
                                 ).encode()).hexdigest()[:6]
        self.version = f"{cfg.network}-{started:%Y%m%dT%H%M}-{digest}"
        if state is not None:
            if state.get("data_hash") != self.data_hash:
                raise SegqaError(f"{self.out}: cannot resume, the training data changed since the checkpoint "
                                 f"(data hash {state.get('data_hash')} vs {self.data_hash})")
            load_params(self.net, self.out / modelcard.LAST_PARAMS, self.ctx)
            try:
                self.trainer.load_states(str(self.out / modelcard.LAST_STATES))
            except Exception as exc:  # mxnet raises bare errors on corrupt pickles
                raise SegqaError(f"{self.out / modelcard.LAST_STATES}: unreadable optimizer state ({exc}); "
                                 "cannot resume") from None
            self.start_epoch = int(state["epoch"])
            self.best_epoch = state.get("best_epoch")
            self.best_score = float(state.get("best_score", -1.0))
            self.version = state["version"]
            self.started_at = state.get("started_at", self.started_at)
            metrics_file = self.out / modelcard.METRICS_FILE
            if metrics_file.is_file():
                self.history = [e for e in json.loads(metrics_file.read_text()).get("epochs", [])
                                if e["epoch"] <= self.start_epoch]

    # ---- one epoch
    def run_epoch(self, epoch: int, t0: float) -> dict[str, Any]:
        cfg = self.cfg
        lr = lr_at_epoch(cfg, epoch)
        self.trainer.set_learning_rate(lr)
        rng = epoch_rng(cfg.seed, epoch)
        mx.random.seed(_dropout_seed(cfg.seed, epoch))
        order = rng.permutation(len(self.train.images))[self.rank::self.workers]
        bs = cfg.batch_size * len(self.ctx)
        batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        if len(batches) > 1 and len(batches[-1]) < 2:  # a batch of one makes BatchNorm statistics meaningless
            batches = batches[:-1]
        if cfg.max_batches_per_epoch:
            batches = batches[:cfg.max_batches_per_epoch]
        weights = [nd.array(self.class_weights, ctx=c) for c in self.ctx]
        aug = AugmentConfig()
        total = dice_sum = ce_sum = 0.0
        seen = 0
        meter = CpuMeter()
        start = meter.wall0
        def prepare(idx: np.ndarray) -> tuple[list[nd.NDArray], list[nd.NDArray]]:
            imgs = self.train.images[idx].astype(np.float32) / 255.0
            masks = self.train.masks[idx]
            if cfg.augment:
                imgs, masks = augment_batch(imgs, masks, rng, aug)
            x = (imgs - np.float32(self.mean)) / np.float32(self.std)
            return (gluon.utils.split_and_load(x[:, None], self.ctx, even_split=False),
                    gluon.utils.split_and_load(masks.astype(np.float32), self.ctx, even_split=False))

        upcoming = prepare(batches[0]) if batches else None
        for step, idx in enumerate(batches, start=1):
            assert upcoming is not None
            xs, ys = upcoming
            with autograd.record():
                outs = [segmentation_loss(self.net(xi), yi, weights[k], cfg.dice_weight, cfg.ce_weight)
                        for k, (xi, yi) in enumerate(zip(xs, ys))]
            for loss, _ in outs:
                loss.backward()
            # each loss is a mean over its device's shard; gradients are summed over devices (and workers)
            self.trainer.step(len(self.ctx) * self.workers)
            # MXNet runs the step asynchronously: the next batch is augmented meanwhile (same draws, same order),
            # and only then does reading the loss wait for the step.
            upcoming = prepare(batches[step]) if step < len(batches) else None
            loss_v = float(np.mean([o[0].asscalar() for o in outs]))
            if not math.isfinite(loss_v):
                raise SegqaError(f"training diverged at epoch {epoch + 1}, batch {step} (loss {loss_v}); lower "
                                 f"--lr (now {lr:g})")
            total += loss_v
            dice_sum += float(np.mean([o[1]["dice"].asscalar() for o in outs]))
            ce_sum += float(np.mean([o[1]["ce"].asscalar() for o in outs]))
            seen += len(idx)
            self.emit(kind="batch", epoch=epoch + 1, step=step, steps=len(batches), loss=total / step, lr=lr,
                      elapsed_s=time.perf_counter() - t0, best_epoch=self.best_epoch,
                      best_mean_dice=self.best_score if self.best_epoch else None)
        seconds = time.perf_counter() - start
        cores_busy = meter.cores_busy()
        n = max(len(batches), 1)
        entry: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": total / n, "train_dice_loss": dice_sum / n,
                                 "train_ce": ce_sum / n, "train_images": seen, "train_seconds": round(seconds, 3),
                                 "images_per_s": round(seen / seconds, 3) if seconds > 0 else None,
                                 "cores_busy": cores_busy}
        entry.update(self.validate())
        if entry.get("val_seconds") is not None and seconds > 0:
            entry["val_share"] = round(entry["val_seconds"] / (seconds + entry["val_seconds"]), 3)
        return entry

    def validate(self) -> dict[str, Any]:
        if len(self.val.images) == 0:
            return {"val_dice": None, "val_mean_fg_dice": None}
        start = time.perf_counter()
        cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        bs = max(1, min(self.cfg.val_batch_size, len(self.val.images)))
        for i in range(0, len(self.val.images), bs):
            images = self.val.images[i:i + bs]
            n = len(images)
            if n < bs:  # pad to a full batch: one input shape, so the static graph is not re-planned each epoch
                images = np.concatenate([images, np.repeat(images[-1:], bs - n, axis=0)])
            x = modelcard.normalize(images, self.mean, self.std)
            pred = self.net(nd.array(x, ctx=self.ctx[0])).argmax(axis=1).asnumpy().astype(np.uint8)[:n]
            cm += confusion_matrix(pred, self.val.masks[i:i + bs])
        dice = dice_from_confusion(cm)
        return {"val_dice": {c.name: _finite(d) for c, d in zip(TISSUE_CLASSES, dice)},
                "val_mean_fg_dice": _finite(mean_foreground_dice(dice)),
                "val_seconds": round(time.perf_counter() - start, 3)}

    # ---- persistence
    def checkpoint(self, epoch: int, entry: dict[str, Any]) -> bool:
        """Write weights, optimizer state, best weights, history, card; last.json last (the commit point)."""
        score = entry["val_mean_fg_dice"]
        improved = score is None or score > self.best_score
        if improved:
            self.best_epoch, self.best_score = epoch + 1, (score if score is not None else self.best_score)
        if self.rank != 0:
            return improved
        ckpt = self.out / modelcard.CHECKPOINT_DIR
        ckpt.mkdir(parents=True, exist_ok=True)
        atomic_write_with(self.out / modelcard.LAST_PARAMS, self.net.save_parameters)
        atomic_write_with(self.out / modelcard.LAST_STATES, self.trainer.save_states)
        if improved:
            atomic_write_with(self.out / modelcard.BEST_PARAMS,
                              lambda p: shutil.copyfile(self.out / modelcard.LAST_PARAMS, p))
        self.history.append(entry)
        modelcard.write_json_atomic(self.out / modelcard.METRICS_FILE,
                                    {"version": self.version, "network": self.cfg.network, "epochs": self.history,
                                     "best_epoch": self.best_epoch})
        modelcard.write_json_atomic(self.out / modelcard.CARD_FILE, self.card(epoch + 1))
        modelcard.write_json_atomic(self.out / modelcard.LAST_STATE_JSON, {
            "epoch": epoch + 1, "best_epoch": self.best_epoch, "best_score": self.best_score,
            "version": self.version, "data_hash": self.data_hash, "started_at": self.started_at,
            "config": self.cfg.to_json()})
        return improved

    def card(self, epochs_done: int) -> dict[str, Any]:
        cfg = self.cfg
        best = next((e for e in self.history if e["epoch"] == self.best_epoch), None)
        h, w = self.train.images.shape[1:]
        return {
            "schema": modelcard.CARD_SCHEMA,
            "version": self.version,
            "network": cfg.network,
            "architecture": self.net.describe(),
            "parameters": int(sum(int(np.prod(p.shape)) for p in self.net.collect_params().values()
                                  if p.grad_req != "null")),
            "classes": modelcard.classes_json(),
            "input": {"name": "data", "layout": "NCHW", "dtype": "float32", "shape": [1, int(h), int(w)],
                      "divisor": self.net.divisor,
                      "note": f"any H and W that are multiples of {self.net.divisor}; trained at {h}x{w}"},
            "output": {"layout": "NCHW", "shape": [NUM_CLASSES, int(h), int(w)],
                       "meaning": "class logits; softmax over axis 1 gives probabilities"},
            "normalization": {"formula": "x = (pixel / 255 - mean) / std", "mean": self.mean, "std": self.std},
            "training": {
                "data_dir": str(cfg.data_dir), "val_dir": str(cfg.val_dir or cfg.data_dir),
                "data_hash": self.data_hash, "train_slices": len(self.train.ids), "val_slices": len(self.val.ids),
                "class_weights": [float(v) for v in self.class_weights], "loss": {
                    "dice_weight": cfg.dice_weight, "ce_weight": cfg.ce_weight, "ignore_label": IGNORE_LABEL},
                "optimizer": "adam", "lr": cfg.lr, "lr_schedule": cfg.lr_schedule, "batch_size": cfg.batch_size,
                "epochs_planned": cfg.epochs, "epochs_done": epochs_done, "best_epoch": self.best_epoch,
                "seed": cfg.seed, "augment": cfg.augment, "init_from": cfg.init_from, "kvstore": cfg.kvstore,
                "contexts": [str(c) for c in self.ctx], "started_at": self.started_at,
                "updated_at": utc_now_iso(),
                "host": socket.gethostname(), "mxnet": mx.__version__, "threads": THREADS,
                **({"prelu": self.net.prelu} if hasattr(self.net, "prelu") else {})},
            "metrics": {"val": None if best is None else {
                "epoch": best["epoch"], "dice": best["val_dice"], "mean_foreground_dice": best["val_mean_fg_dice"]}},
            "params_file": modelcard.BEST_PARAMS,
        }


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def train_model(config: TrainConfig) -> Path:
    """Train per ``config``; returns the model folder. Raises SegqaError on bad data or options.

    With ``config.resume`` and a checkpoint in ``out_dir``, continues after its last finished epoch
    (the options in ``_RESUME_KEYS`` and the data must be the same; ``epochs`` may be raised).
    """
    cfg = config
    _validate_config(cfg)
    run = _Run(cfg)
    state = run.prepare_output()
    run.load_data()
    run.build(state)
    if run.rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        modelcard.write_json_atomic(run.out / modelcard.CONFIG_FILE, cfg.to_json())
    t0 = time.perf_counter()
    prelu = getattr(run.net, "prelu", None)
    log.info("training %s on %s with %d OpenMP thread(s)%s", cfg.network, ",".join(str(c) for c in run.ctx), THREADS,
             "" if prelu is None else f", PReLU {prelu} ({native.status()})")
    run.emit(kind="start", epoch=run.start_epoch + 1, steps=0, message=run.version, threads=THREADS, prelu=prelu)
    stopped = ""
    for epoch in range(run.start_epoch, cfg.epochs):
        entry = run.run_epoch(epoch, t0)
        run.checkpoint(epoch, entry)
        log.debug("epoch %d/%d loss=%.4f val_mean_fg_dice=%s lr=%.2e", epoch + 1, cfg.epochs, entry["train_loss"],
                 entry["val_mean_fg_dice"], entry["lr"])
        run.emit(kind="epoch", epoch=epoch + 1, loss=entry["train_loss"], lr=entry["lr"],
                 val_dice=entry["val_dice"], val_mean_dice=entry["val_mean_fg_dice"], best_epoch=run.best_epoch,
                 best_mean_dice=run.best_score if run.best_epoch else None, images_per_s=entry["images_per_s"],
                 cores_busy=entry["cores_busy"], elapsed_s=time.perf_counter() - t0)
        if cfg.time_budget_s is not None and time.perf_counter() - t0 >= cfg.time_budget_s and epoch + 1 < cfg.epochs:
            stopped = f"time budget of {cfg.time_budget_s:g} s reached after epoch {epoch + 1}"
            break
    if not (run.out / modelcard.LAST_STATE_JSON).is_file() and run.rank == 0:
        raise SegqaError(f"{run.out}: no epoch was run (epochs={cfg.epochs}, already done?)")
    run.emit(kind="end", epoch=min(cfg.epochs, run.start_epoch + 1), best_epoch=run.best_epoch,
             best_mean_dice=run.best_score if run.best_epoch else None, elapsed_s=time.perf_counter() - t0,
             message=stopped)
    return run.out


# --------------------------------------------------------------------------------------------------------
# SageMaker entry point

def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional_int(text: str) -> int | None:
    return None if str(text).strip().lower() in ("", "none", "null") else int(text)


def _optional_float(text: str) -> float | None:
    return None if str(text).strip().lower() in ("", "none", "null") else float(text)


def build_arg_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(description="Train a segqa U-Net or ENet (local or SageMaker script mode).")
    p.add_argument("--train", default=env.get("SM_CHANNEL_TRAIN"), help="dataset folder (split 'train')")
    p.add_argument("--validation", default=env.get("SM_CHANNEL_VALIDATION"),
                   help="dataset folder whose split 'val' validates (default: the train folder)")
    p.add_argument("--model-dir", "--model_dir", dest="model_dir", default=None,
                   help="output folder (default SM_MODEL_DIR; an s3:// value, as SageMaker passes, is ignored)")
    p.add_argument("--checkpoint-dir", default=env.get("SM_CHECKPOINT_DIR"),
                   help="train here with resume (SageMaker checkpoint_s3_uri sync, spot restarts), then copy the "
                        "model files to the model dir")
    p.add_argument("--hosts", default=env.get("SM_HOSTS", "[]"), help="JSON list of hosts (SM_HOSTS)")
    d = TrainConfig(data_dir="", out_dir="")
    p.add_argument("--network", default=d.network, choices=NETWORKS)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=d.batch_size)
    p.add_argument("--lr", "--learning-rate", "--learning_rate", dest="lr", type=_optional_float, default=None,
                   help="default: 2e-3 for the U-Net, 5e-3 for the ENet")
    p.add_argument("--lr-schedule", "--lr_schedule", dest="lr_schedule", default=d.lr_schedule, choices=LR_SCHEDULES)
    p.add_argument("--weight-decay", "--weight_decay", dest="weight_decay", type=float, default=d.weight_decay)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--class-weights", "--class_weights", dest="class_weights", default=d.class_weights)
    p.add_argument("--dice-weight", "--dice_weight", dest="dice_weight", type=float, default=d.dice_weight)
    p.add_argument("--ce-weight", "--ce_weight", dest="ce_weight", type=float, default=d.ce_weight)
    p.add_argument("--width", type=float, default=d.width)
    p.add_argument("--augment", type=_bool, default=d.augment)
    p.add_argument("--init-from", "--init_from", dest="init_from", default=None)
    p.add_argument("--resume", type=_bool, default=False)
    p.add_argument("--max-slices", "--max_slices", dest="max_slices", type=_optional_int, default=None)
    p.add_argument("--max-batches-per-epoch", "--max_batches_per_epoch", dest="max_batches_per_epoch",
                   type=_optional_int, default=None)
    p.add_argument("--max-val-slices", "--max_val_slices", dest="max_val_slices", type=_optional_int, default=None)
    p.add_argument("--time-budget-s", "--time_budget_s", dest="time_budget_s", type=_optional_float, default=None)
    p.add_argument("--kvstore", default=None, choices=KVSTORES,
                   help="default: dist_sync with several hosts (dist_device_sync with GPUs), else device")
    p.add_argument("--context", default="auto")
    return p


def config_from_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    args, unknown = build_arg_parser().parse_known_args(argv)
    if unknown:
        log.warning("ignoring unknown arguments: %s", " ".join(unknown))
    if not args.train:
        raise SegqaError("no training data: pass --train DIR or set SM_CHANNEL_TRAIN")
    model_dir = args.model_dir if args.model_dir and not str(args.model_dir).startswith("s3://") else None
    model_dir = model_dir or os.environ.get("SM_MODEL_DIR")
    if not model_dir:
        raise SegqaError("no output folder: pass --model-dir DIR or set SM_MODEL_DIR")
    try:
        hosts = json.loads(args.hosts) if args.hosts else []
    except json.JSONDecodeError:
        raise SegqaError(f"--hosts / SM_HOSTS: expected a JSON list, got {args.hosts!r}") from None
    kvstore = args.kvstore
    if kvstore is None:
        gpus = contexts(args.context)[0].device_type == "gpu"
        kvstore = ("dist_device_sync" if gpus else "dist_sync") if len(hosts) > 1 else "device"
    out = args.checkpoint_dir or model_dir
    cfg = TrainConfig(
        data_dir=args.train, out_dir=out, network=args.network, val_dir=args.validation, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule, weight_decay=args.weight_decay,
        seed=args.seed, class_weights=args.class_weights, dice_weight=args.dice_weight, ce_weight=args.ce_weight,
        width=args.width, augment=args.augment, init_from=args.init_from,
        resume=bool(args.resume or args.checkpoint_dir), max_slices=args.max_slices,
        max_batches_per_epoch=args.max_batches_per_epoch, max_val_slices=args.max_val_slices,
        time_budget_s=args.time_budget_s, kvstore=kvstore, context=args.context)
    args.final_model_dir = model_dir
    return cfg, args


def _log_progress(event: TrainEvent) -> None:
    # one line per epoch in a key=value form that SageMaker metric definitions can match
    if event.kind == "epoch":
        log.info("epoch=%d train_loss=%.5f val_mean_fg_dice=%s lr=%.3e images_per_s=%s cores_busy=%s", event.epoch,
                 event.loss, "nan" if event.val_mean_dice is None else f"{event.val_mean_dice:.5f}", event.lr,
                 event.images_per_s, event.cores_busy)


def main(argv: Sequence[str] | None = None) -> int:
    """SageMaker / command-line entry point; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    try:
        cfg, args = config_from_args(argv)
        if contexts(cfg.context)[0].device_type == "cpu":  # the native operators are CPU kernels
            why = native.build_for_this_job()
            if why:
                log.info("native training operators not built (%s): training composes them from MXNet operators",
                         why)
        cfg.progress = _log_progress
        out = train_model(cfg)
        final = Path(args.final_model_dir)
        if out.resolve() != final.resolve():  # trained in the checkpoint dir: copy the model files out
            final.mkdir(parents=True, exist_ok=True)
            for rel in (modelcard.CARD_FILE, modelcard.METRICS_FILE, modelcard.CONFIG_FILE, modelcard.BEST_PARAMS):
                atomic_write_with(final / rel, functools.partial(shutil.copyfile, out / rel))
    except SegqaError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
