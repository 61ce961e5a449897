"""Load a trained or exported segmenter and predict probability maps, with optional MC-dropout.

    >>> predictor = load_predictor("models/enet")            # a `segqa train` folder or a `segqa export` folder
    >>> proba = predictor.predict_proba(images)              # uint8 (N, H, W) -> float32 (N, 4, H, W)
    >>> mc = predictor.predict_mc(images, samples=10)        # mean, predictive entropy, mutual information
    >>> mirrored = Mirrored(predictor)                       # test-time left-right mirroring: 2 passes, averaged

Both folder kinds are loaded the same way: the network is rebuilt from the model card's architecture and
the weights (``checkpoints/best.params`` or the export's ``model-0000.params``) are loaded by name, so the
MC-dropout twin of the network (spatial dropout kept on, BatchNorm in inference mode) is always available.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import nd

from qa_workflow.contract import LEFT_RIGHT_AXIS, SegqaError, check_tta
from training import modelcard
from training.nets import SegmentationNet, build_network, check_input_shape, load_params

__all__ = ["MCResult", "Predictor", "OnnxPredictor", "load_predictor", "default_context", "predictive_entropy",
           "cpu_threads", "softmax", "RUNTIMES", "open_predictor", "onnx_session", "Mirrored", "with_tta"]

#: ``auto``: ONNX Runtime when the folder is an export with ``model.onnx`` and no MC-dropout is asked for (it is
#: 2x faster than MXNet for the ENet on CPU, BENCHMARKS.md B2), else MXNet.
RUNTIMES = ("auto", "mxnet", "onnxruntime")

log = logging.getLogger(__name__)


@dataclass
class MCResult:
    """MC-dropout summary of T stochastic passes.

    mean (N, 4, H, W) float32: mean softmax probability; entropy (N, H, W) float32: predictive entropy of the
    mean, in nats; mutual_info (N, H, W) float32: BALD, entropy of the mean minus mean entropy of the passes
    (>= 0; high where the passes disagree, i.e. model uncertainty).
    """

    mean: np.ndarray
    entropy: np.ndarray
    mutual_info: np.ndarray
    samples: int = 0  # T, the number of passes


def default_context() -> mx.Context:
    """The first GPU when MXNet sees one, else the CPU."""
    try:
        if mx.context.num_gpus() > 0:
            return mx.gpu(0)
    except mx.base.MXNetError:  # CPU-only build
        pass
    return mx.cpu()


def cpu_threads() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax over ``axis`` (float32 in, float32 out)."""
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def predictive_entropy(proba: np.ndarray, axis: int = 1) -> np.ndarray:
    """-sum_c p_c log p_c over ``axis`` (nats); (N, C, H, W) -> (N, H, W)."""
    p = np.clip(proba, 1e-12, 1.0)
    return -(proba * np.log(p)).sum(axis=axis)


class Predictor:
    """A loaded segmenter. Build it with `load_predictor`.

    Attributes: ``network`` ("unet" | "enet"), ``version`` (from the model card), ``card`` (the model card),
    ``net`` (the Gluon network, inference mode), ``ctx``.
    """

    runtime = "mxnet"
    tta = "none"

    def __init__(self, net: SegmentationNet, card: dict[str, Any], params_file: Path, ctx: mx.Context) -> None:
        self.net = net
        self.card = card
        self.params_file = Path(params_file)
        self.ctx = ctx
        self.network: str = card["network"]
        self.version: str = card["version"]
        norm = card["normalization"]
        self.mean = float(norm["mean"])
        self.std = float(norm["std"])
        self._mc_net: SegmentationNet | None = None

    def __repr__(self) -> str:
        return f"Predictor(network={self.network!r}, version={self.version!r}, ctx={self.ctx})"

    # ---------------------------------------------------------------------------------------------- input
    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Validate (N, H, W) or (N, 1, H, W) pixels on the 0..255 scale and normalise -> (N, 1, H, W) float32."""
        arr = np.asarray(images)
        if arr.ndim not in (2, 3) and not (arr.ndim == 4 and arr.shape[1] == 1):
            check_input_shape(arr.shape, 1, self.net.divisor, name="images")  # names the channel problem
        arr = checked_pixels(arr)
        check_input_shape((arr.shape[0], 1, arr.shape[1], arr.shape[2]), 1, self.net.divisor,
                          name=f"images of shape {arr.shape}")
        return modelcard.normalize(arr, self.mean, self.std)

    # ------------------------------------------------------------------------------------------ predict
    def predict_proba(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Softmax probabilities: uint8 (N, H, W) -> float32 (N, 4, H, W); deterministic (dropout off)."""
        x = self.prepare(images)
        out = np.empty((len(x), self.net.num_classes, *x.shape[2:]), np.float32)
        for start in range(0, len(x), max(1, int(batch_size))):
            batch = nd.array(x[start:start + batch_size], ctx=self.ctx)
            out[start:start + batch_size] = self.net.predict_proba(batch)
        return out

    def predict_mc(self, images: np.ndarray, samples: int, seed: int = 0, batch_size: int = 8) -> MCResult:
        """MC-dropout: ``samples`` passes with spatial dropout on and BatchNorm in inference mode.

        Deterministic for a given ``seed`` and ``batch_size``. ``samples=1`` gives one stochastic pass
        (mutual information 0).
        """
        samples = int(samples)
        if samples < 1:
            raise SegqaError(f"MC-dropout samples must be >= 1, got {samples}")
        x = self.prepare(images)
        net = self._mc()
        mx.random.seed(int(seed), ctx=self.ctx)
        n, k = len(x), self.net.num_classes
        mean = np.empty((n, k, *x.shape[2:]), np.float32)
        entropy = np.empty((n, *x.shape[2:]), np.float32)
        mutual = np.empty_like(entropy)
        for start in range(0, n, max(1, int(batch_size))):
            batch = nd.array(x[start:start + batch_size], ctx=self.ctx)
            acc = np.zeros((len(batch), k, *x.shape[2:]), np.float64)
            acc_h = np.zeros((len(batch), *x.shape[2:]), np.float64)
            for _ in range(samples):
                p = net.predict_proba(batch)
                acc += p
                acc_h += predictive_entropy(p)
            m = acc / samples
            h = predictive_entropy(m)
            sl = slice(start, start + len(batch))
            mean[sl] = m
            entropy[sl] = h
            mutual[sl] = np.maximum(h - acc_h / samples, 0.0)
        return MCResult(mean=mean, entropy=entropy, mutual_info=mutual, samples=samples)

    def predict_labels(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Argmax labels (N, H, W) uint8."""
        return self.predict_proba(images, batch_size).argmax(1).astype(np.uint8)

    def _mc(self) -> SegmentationNet:
        if self._mc_net is None:
            net = _build_from_card(self.card, mc_dropout=True)
            net.initialize(ctx=self.ctx)
            load_params(net, self.params_file, self.ctx)
            net.hybridize(static_alloc=True)
            self._mc_net = net
        return self._mc_net


def onnx_session(path: str | os.PathLike[str], threads: int | None = None):
    """An ONNX Runtime CPU session; ``threads`` sets intra-op threads (None: `training.threads.threads`, the
    cores this process may use)."""
    import onnxruntime as ort

    from training.threads import threads as default_threads

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or default_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about the graph are not the user's business
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def checked_pixels(images: Any) -> np.ndarray:
    """(N, H, W) or (N, 1, H, W) grayscale pixels as an (N, H, W) array, or a SegqaError naming what is wrong:
    one slice instead of a batch, another shape, non-numeric pixels, NaN or inf. Both runtimes' ``prepare``."""
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        raise SegqaError(f"images: expected a batch (N, H, W), got one slice of shape {arr.shape}; use images[None]")
    if arr.ndim != 3:
        raise SegqaError(f"images: expected shape (N, H, W) of grayscale slices, got {arr.shape}")
    if arr.dtype.kind not in "uif" and arr.dtype != np.bool_:
        raise SegqaError(f"images: expected numeric pixels, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(1).argmax())
        raise SegqaError(f"images: slice {bad} contains NaN or inf; clean the input first")
    return arr


class OnnxPredictor:
    """An exported segmenter run by ONNX Runtime on the CPU: the same ``predict_proba`` as `Predictor`, on every
    core by default. Deterministic only: MC-dropout needs the MXNet network (`Predictor`)."""

    runtime = "onnxruntime"
    tta = "none"

    def __init__(self, onnx_file: Path, card: dict[str, Any], threads: int | None = None) -> None:
        self.card = card
        self.onnx_file = Path(onnx_file)
        self.network: str = card["network"]
        self.version: str = card["version"]
        norm = card["normalization"]
        self.mean, self.std = float(norm["mean"]), float(norm["std"])
        self.threads = int(threads or cpu_threads())
        self.session = onnx_session(self.onnx_file, threads=self.threads)
        self.input_name = self.session.get_inputs()[0].name
        self.input_hw = tuple(self.session.get_inputs()[0].shape[2:])

    def __repr__(self) -> str:
        return f"OnnxPredictor(network={self.network!r}, version={self.version!r}, threads={self.threads})"

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) pixels on the 0..255 scale -> (N, 1, H, W) float32, normalised as the model card says."""
        arr = checked_pixels(images)
        if all(isinstance(d, int) for d in self.input_hw) and tuple(arr.shape[1:]) != self.input_hw:
            raise SegqaError(f"images of shape {arr.shape[1:]}: {self.onnx_file} takes {self.input_hw} slices")
        return modelcard.normalize(arr, self.mean, self.std)

    def predict_proba(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Softmax probabilities: uint8 (N, H, W) -> float32 (N, 4, H, W)."""
        x = self.prepare(images)
        step = max(1, int(batch_size))
        parts = [self.session.run(None, {self.input_name: x[i:i + step]})[0] for i in range(0, len(x), step)]
        if not parts:
            return np.zeros((0, int(self.card["architecture"].get("num_classes", 4)), *x.shape[2:]), np.float32)
        return softmax(np.concatenate(parts).astype(np.float32, copy=False))

    def predict_mc(self, images: np.ndarray, samples: int, seed: int = 0, batch_size: int = 8) -> MCResult:
        raise SegqaError("MC-dropout needs the MXNet network: predict with --runtime mxnet (or auto)")

    def predict_labels(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        return self.predict_proba(images, batch_size).argmax(1).astype(np.uint8)


#: Axes of the left-right direction in a batch of slices (N, H, W) and in probabilities (N, K, H, W).
_LR_IMAGES = 1 + LEFT_RIGHT_AXIS
_LR_PROBS = 2 + LEFT_RIGHT_AXIS


class Mirrored:
    """A predictor (MXNet or ONNX Runtime) with test-time left-right mirroring: every slice is predicted as it
    is and mirrored along the patient's left-right axis (`contract.LEFT_RIGHT_AXIS`), the second map is mirrored
    back and the two are averaged — the mirroring nnU-Net applies at inference, cut to the one flip a brain
    slice is (roughly) symmetric under. Twice the model time. Everything else (``version``, ``network``,
    ``runtime``, ``card``...) is the wrapped predictor's.

    MC-dropout: each of the T passes runs on both orientations, and the summary is that of the 2T maps (mean,
    entropy of the mean, and mutual information = entropy of the mean minus the mean entropy of the passes).
    """

    tta = "flip"

    def __init__(self, inner: Predictor | OnnxPredictor) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"Mirrored({self.inner!r})"

    def predict_proba(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Softmax probabilities: uint8 (N, H, W) -> float32 (N, 4, H, W), the mean of both orientations."""
        arr = checked_pixels(images)
        plain = self.inner.predict_proba(arr, batch_size)
        mirrored = self.inner.predict_proba(np.flip(arr, _LR_IMAGES), batch_size)
        return ((plain + np.flip(mirrored, _LR_PROBS)) * 0.5).astype(np.float32, copy=False)

    def predict_mc(self, images: np.ndarray, samples: int, seed: int = 0, batch_size: int = 8) -> MCResult:
        arr = checked_pixels(images)
        a = self.inner.predict_mc(arr, samples, seed=seed, batch_size=batch_size)
        b = self.inner.predict_mc(np.flip(arr, _LR_IMAGES), samples, seed=seed, batch_size=batch_size)
        mean = (a.mean + np.flip(b.mean, _LR_PROBS)) * 0.5
        # each half's mean entropy of its passes is its entropy of the mean minus its mutual information
        passes_entropy = ((a.entropy - a.mutual_info) + np.flip(b.entropy - b.mutual_info, _LR_IMAGES)) * 0.5
        entropy = predictive_entropy(mean)
        return MCResult(mean=mean.astype(np.float32), entropy=entropy.astype(np.float32),
                        mutual_info=np.maximum(entropy - passes_entropy, 0.0).astype(np.float32),
                        samples=2 * a.samples)

    def predict_labels(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Argmax labels (N, H, W) uint8 of the averaged probabilities."""
        return self.predict_proba(images, batch_size).argmax(1).astype(np.uint8)


def with_tta(predictor: Predictor | OnnxPredictor, tta: str) -> Predictor | OnnxPredictor | Mirrored:
    """``predictor`` as it is (``tta="none"``) or `Mirrored` (``"flip"``); another value is a SegqaError."""
    return Mirrored(predictor) if check_tta(tta) == "flip" else predictor


def _build_from_card(card: dict[str, Any], mc_dropout: bool = False) -> SegmentationNet:
    # Inference only: MXNet's own PReLU op is right in the forward pass (its fault is the training gradient),
    # and it exports as one ONNX PRelu node.
    arch = card["architecture"]
    try:
        return build_network(card["network"], width=float(arch.get("width", 1.0)),
                             num_classes=int(arch.get("num_classes", 4)), in_channels=int(arch.get("in_channels", 1)),
                             mc_dropout=mc_dropout, dropout=arch.get("dropout"), prelu="native")
    except (TypeError, ValueError) as exc:
        raise SegqaError(f"model card: architecture {arch!r} does not describe a valid {card['network']} "
                         f"({exc})") from None


def open_predictor(path: str | os.PathLike[str], runtime: str = "auto", threads: int | None = None,
                   mc_samples: int = 0) -> Predictor | OnnxPredictor:
    """The predictor `segqa predict` runs: ``runtime`` ``mxnet`` (`load_predictor`), ``onnxruntime`` (an export
    folder's ``model.onnx`` on ``threads`` intra-op threads, default every core) or ``auto`` (see `RUNTIMES`;
    ``mc_samples`` > 1 keeps MXNet, and so does a GPU)."""
    path = Path(path)
    if runtime not in RUNTIMES:
        raise SegqaError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    card = modelcard.read_card(path)
    onnx_file = path / modelcard.EXPORT_ONNX
    if runtime == "auto":
        usable = onnx_file.is_file() and mc_samples <= 1 and default_context().device_type == "cpu"
        runtime = "onnxruntime" if usable else "mxnet"
    if runtime == "mxnet":
        return load_predictor(path)
    if not onnx_file.is_file():
        raise SegqaError(f"{path}: no {modelcard.EXPORT_ONNX}; ONNX Runtime needs an export folder "
                         "('segqa export'), or use --runtime mxnet")
    return OnnxPredictor(onnx_file, card, threads)


def load_predictor(path: str | os.PathLike[str], ctx: mx.Context | None = None) -> Predictor:
    """Load a model folder from ``segqa train`` (its best checkpoint) or an export folder from ``segqa export``.

    ``ctx`` defaults to the first GPU if any, else the CPU. Raises SegqaError if the folder is not a model,
    or its weights are missing, corrupted or belong to another network/width.
    """
    path = Path(path)
    card = modelcard.read_card(path)
    ctx = ctx or default_context()
    params_file = modelcard.params_path(path, card)
    net = _build_from_card(card)
    net.initialize(ctx=ctx)
    load_params(net, params_file, ctx)
    net.hybridize(static_alloc=True)
    log.info("loaded %s (%s) from %s", card["version"], card["network"], params_file)
    return Predictor(net, card, params_file, ctx)
