"""Export a trained model for deployment: MXNet symbol/params, ONNX, model card — with a parity check.

``export_model(model_dir, out_dir)`` writes::

    OUT/model-symbol.json    MXNet graph (HybridBlock.export), input "data" (N, 1, H, W) float32 normalised
    OUT/model-0000.params    its weights (arg:/aux: names)
    OUT/model.onnx           the same network for ONNX Runtime (input "data", output: class logits)
    OUT/model_card.json      the training card plus an "export" section: files and sha256, ONNX opset and
                             names, and the parity figures

ONNX fixes applied after ``mx.onnx.export_model`` (ARCHITECTURE §11): PReLU slopes (C,) are reshaped to
(C, 1, 1) so they broadcast over (N, C, H, W) — ONNX Runtime refuses the model otherwise — and the weights are
removed from the graph inputs (only "data" is an input; ONNX Runtime can then fold constants).

Parity: the exported MXNet symbol and the ONNX model are run on the same seeded random inputs (uniform noise
and smooth random fields, on the 0..255 scale, normalised as the card says); the export fails with a
SegqaError, leaving nothing behind, unless the argmax agrees on at least ``min_agreement`` of the pixels
(a pixel whose two top logits are within 1e-4 is a tie and agrees either way; the strict figure is reported
too). The maximum absolute logit difference is reported either way.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import gluon, nd

from qa_workflow.contract import SegqaError
from training import modelcard
from training.predict import load_predictor

__all__ = ["ExportResult", "export_model", "fix_onnx_for_runtime", "parity_inputs", "onnx_session",
           "argmax_agreement", "check_parity"]

log = logging.getLogger(__name__)

#: Logit gap below which two classes count as tied in the parity check (float32 noise is ~1e-5 here).
TIE_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, str]  # file name -> sha256
    parity: dict[str, Any]
    version: str
    network: str


def parity_inputs(n: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(n, H, W) float32 test images on the 0..255 scale: half uniform noise, half smooth random fields
    (noise blurred at a few pixels' scale, closer to anatomy-like images)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = np.empty((n, *shape), np.float32)
    for i in range(n):
        if i % 2 == 0:
            out[i] = rng.uniform(0, 255, shape)
        else:
            field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=4.0)
            field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
            out[i] = 255.0 * field
    return out


def fix_onnx_for_runtime(model: Any) -> dict[str, int]:
    """In place: PReLU slopes (C,) -> (C, 1, 1); initializers removed from the graph inputs.

    Returns counts of what was changed. ``model`` is an ``onnx.ModelProto``.
    """
    inits = {init.name: init for init in model.graph.initializer}
    keep = [inp for inp in model.graph.input if inp.name not in inits]
    removed = len(model.graph.input) - len(keep)
    del model.graph.input[:]
    model.graph.input.extend(keep)
    reshaped = 0
    for node in model.graph.node:
        if node.op_type == "PRelu" and len(node.input) > 1:
            slope = inits.get(node.input[1])
            if slope is not None and len(slope.dims) == 1:
                slope.dims[:] = [slope.dims[0], 1, 1]
                reshaped += 1
    return {"prelu_slopes_reshaped": reshaped, "initializer_inputs_removed": removed}


def onnx_session(path: str | os.PathLike[str], threads: int | None = None):
    """An ONNX Runtime CPU session; ``threads`` sets intra-op threads (None: `training.threads.threads`)."""
    import onnxruntime as ort

    from training.threads import threads as default_threads

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or default_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about the graph are not the user's business
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SegqaError(f"{out}: exists and is not empty; choose another --out or pass --overwrite")


def export_model(model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, parity_samples: int = 4,
                 seed: int = 0, min_agreement: float = 0.999, input_shape: tuple[int, int] | None = None,
                 overwrite: bool = False) -> ExportResult:
    """Export ``model_dir`` (a training folder, or an earlier export) to ``out_dir``; see the module docstring.

    ``input_shape`` (H, W) of the ONNX input and of the parity inputs defaults to the card's training shape;
    the ONNX batch axis is dynamic. Writes into a temporary folder and renames it into place at the end.
    """
    import onnx

    out = Path(out_dir)
    _check_out(out, overwrite)
    if not 0 < min_agreement <= 1:
        raise SegqaError(f"min_agreement must be in (0, 1], got {min_agreement}")
    predictor = load_predictor(model_dir, ctx=mx.cpu())
    card = predictor.card
    h, w = input_shape or tuple(card.get("input", {}).get("shape", [1, 176, 208])[1:])
    from training.nets import check_input_shape

    check_input_shape((1, 1, h, w), 1, predictor.net.divisor, name="export input shape")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        net = predictor.net
        net(nd.zeros((1, 1, h, w)))  # the cached graph must exist before export
        net.export(str(tmp / "model"), epoch=0)
        sym_file, params_file, onnx_file = tmp / modelcard.EXPORT_SYMBOL, tmp / modelcard.EXPORT_PARAMS, tmp / modelcard.EXPORT_ONNX
        mx.onnx.export_model(str(sym_file), str(params_file), in_shapes=[(1, 1, h, w)], in_types=np.float32,
                             onnx_file_path=str(onnx_file), dynamic=True, dynamic_input_shapes=[("N", 1, h, w)])
        model = onnx.load(str(onnx_file))
        fixes = fix_onnx_for_runtime(model)
        onnx.checker.check_model(model)
        onnx.save(model, str(onnx_file))
        parity = check_parity(tmp, predictor.mean, predictor.std, (h, w), parity_samples, seed)
        parity["fixes"] = fixes
        if parity["argmax_agreement"] < min_agreement:
            raise SegqaError(
                f"export parity failed: ONNX Runtime and MXNet agree on {100 * parity['argmax_agreement']:.3f} % of "
                f"pixels (need {100 * min_agreement:.3f} %), max abs logit difference {parity['max_abs_diff']:.3g}; "
                "nothing was written")
        files = {name: modelcard.file_sha256(tmp / name)
                 for name in (modelcard.EXPORT_SYMBOL, modelcard.EXPORT_PARAMS, modelcard.EXPORT_ONNX)}
        out_card = dict(card)
        out_card["params_file"] = modelcard.EXPORT_PARAMS
        out_card["export"] = {
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_model": str(Path(model_dir)), "source_params": str(predictor.params_file),
            "files": files,
            "onnx": {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
                     "input": model.graph.input[0].name, "output": model.graph.output[0].name,
                     "input_shape": ["N", 1, h, w], "onnx_version": onnx.__version__},
            "mxnet": {"symbol": modelcard.EXPORT_SYMBOL, "params": modelcard.EXPORT_PARAMS, "epoch": 0,
                      "input": "data", "version": mx.__version__},
            "parity": parity,
            "preprocessing": card["normalization"]["formula"],
            "postprocessing": "softmax over axis 1 (classes), argmax for labels",
        }
        modelcard.write_json_atomic(tmp / modelcard.CARD_FILE, out_card)
        if out.exists():
            backup = out.with_name(f".{out.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(out, backup)
            os.replace(tmp, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s to %s (argmax agreement %.5f, max abs diff %.3g)", card["version"], out,
             parity["argmax_agreement"], parity["max_abs_diff"])
    return ExportResult(out, files, parity, card["version"], card["network"])


def check_parity(export_dir: Path, mean: float, std: float, shape: tuple[int, int], samples: int = 4,
                 seed: int = 0) -> dict[str, Any]:
    """Run the exported MXNet symbol and the ONNX model on the same inputs; agreement and max abs diff."""
    export_dir = Path(export_dir)
    images = parity_inputs(max(1, samples), shape, seed)
    x = modelcard.normalize(images, mean, std)
    with _quiet_warnings():
        block = gluon.nn.SymbolBlock.imports(str(export_dir / modelcard.EXPORT_SYMBOL), ["data"],
                                             str(export_dir / modelcard.EXPORT_PARAMS), ctx=mx.cpu())
    mx_logits = np.concatenate([block(nd.array(x[i:i + 1])).asnumpy() for i in range(len(x))])
    session = onnx_session(export_dir / modelcard.EXPORT_ONNX)
    name = session.get_inputs()[0].name
    ort_logits = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    if ort_logits.shape != mx_logits.shape:
        raise SegqaError(f"export parity failed: ONNX output shape {ort_logits.shape} != MXNet {mx_logits.shape}")
    diff = np.abs(ort_logits - mx_logits)
    return {"inputs": int(len(x)), "shape": [1, int(shape[0]), int(shape[1])], "seed": int(seed),
            "argmax_agreement": argmax_agreement(mx_logits, ort_logits),
            "argmax_agreement_strict": float((ort_logits.argmax(1) == mx_logits.argmax(1)).mean()),
            "tie_tolerance": TIE_TOLERANCE, "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_abs_logit": float(np.abs(mx_logits).max())}


def argmax_agreement(reference: np.ndarray, other: np.ndarray, tie_tol: float = TIE_TOLERANCE) -> float:
    """Share of pixels where ``other`` picks the class ``reference`` picks; (N, K, H, W) logits each.

    A pixel whose reference logits for the two picks are within ``tie_tol`` (absolute) of each other is a tie
    and counts as agreeing: float noise may break it either way (a barely trained network has many exact ties,
    e.g. where every feature is zero and equal biases decide). ``argmax_agreement_strict`` in the parity
    report is the plain comparison.
    """
    picked = np.take_along_axis(reference, other.argmax(1)[:, None], axis=1)[:, 0]
    return float((reference.max(1) - picked <= tie_tol).mean())


class _quiet_warnings:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
