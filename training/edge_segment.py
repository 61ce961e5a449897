"""segqa edge segmenter: the inference script of the Greengrass v2 component (`segqa export --greengrass`).

Segments an image (PNG/JPEG, one 8-bit grayscale slice) or a volume (NIfTI ``.nii``/``.nii.gz``, Analyze
``.hdr``/``.img``; slices ``vol[:, :, z]``) slice by slice with ONNX Runtime and writes, per input ``NAME``:

    OUTPUT/NAME_mask.png | OUTPUT/NAME_mask.nii.gz   labels 0 background, 1 csf, 2 gray matter, 3 white matter
    OUTPUT/NAME.json                                  summary: model, slices, voxels and mean confidence per
                                                      class, seconds, ms per slice (or the error)

Runs three ways:

    python3 segment.py --model model.onnx --card model_card.json --input FILE_OR_DIR --output DIR --once
    python3 segment.py ... --input DIR --output DIR             # watch DIR, segment each new file (component)
    python3 segment.py ... --topic segqa/segment/requests       # Greengrass local pub/sub: {"path": FILE}

Standalone on purpose (a core device has no segqa checkout): numpy, onnxruntime, pillow, and nibabel for
volumes. It repeats two rules of the training code, which tests/training/test_greengrass.py keeps equal:
volumes are scaled to 8 bit by their 0.5th..99.5th intensity percentiles (``training.dataset.scale_to_uint8``),
and pixels are normalised as ``(pixel / 255 - mean) / std`` with the model card's mean and std
(``training.modelcard.normalize``). Slices must already have the model's in-plane shape (176 x 208 for OASIS
T88 volumes): resample other volumes first (``segqa data import --nifti`` does).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("segqa.edge")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".hdr")
SCALE_PERCENTILES = (0.5, 99.5)
DEFAULT_CLASSES = ("background", "csf", "gray_matter", "white_matter")


class InputError(Exception):
    """An input that cannot be segmented; the message names the file and what was expected."""


# A copy of training.dataset.scale_to_uint8, kept on purpose: this script runs alone on the Greengrass core
# device, which has no segqa checkout to import from. tests/training/test_greengrass.py keeps the two equal.
def scale_to_uint8(volume, percentiles=SCALE_PERCENTILES):
    """A volume's intensities to 8 bit: the percentiles of all voxels map to 0 and 255 (one scale per volume)."""
    vol = np.asarray(volume, dtype=np.float32)
    finite = np.isfinite(vol)
    if not finite.all():
        vol = np.where(finite, vol, 0.0).astype(np.float32)
    lo, hi = np.percentile(vol, percentiles)
    if not hi > lo:
        return np.zeros(vol.shape, np.uint8)
    scaled = (vol - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def input_kind(path):
    name = Path(path).name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(VOLUME_SUFFIXES):
        return "volume"
    return None


def output_stem(path):
    name = Path(path).name
    for suffix in (".nii.gz",) + VOLUME_SUFFIXES + IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def load_input(path):
    """-> (slices uint8 (N, H, W), affine or None). Raises InputError naming the file."""
    path = Path(path)
    kind = input_kind(path)
    if kind == "image":
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("L") if im.mode not in ("L", "P") else im)
        except OSError as exc:
            raise InputError(f"{path}: not a readable image ({exc})") from None
        return arr[None].astype(np.uint8), None
    if kind == "volume":
        import nibabel as nib

        try:
            img: Any = nib.load(str(path))
            if path.name.lower().endswith((".nii", ".nii.gz")):
                img = nib.as_closest_canonical(img)
            data = np.asarray(img.dataobj)
        except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for a bad file
            raise InputError(f"{path}: not a readable NIfTI/Analyze volume ({type(exc).__name__}: {exc})") from None
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise InputError(f"{path}: shape {'x'.join(map(str, data.shape))}; expected a 3-D volume")
        return np.moveaxis(scale_to_uint8(data), 2, 0), img.affine
    raise InputError(f"{path}: unknown kind of file; expected {', '.join(IMAGE_SUFFIXES + VOLUME_SUFFIXES)}")


class Segmenter:
    """The exported network in ONNX Runtime, with the model card's normalisation."""

    def __init__(self, model, card, threads=1):
        import onnxruntime as ort

        self.card = json.loads(Path(card).read_text(encoding="utf-8"))
        norm = self.card["normalization"]
        self.mean, self.std = np.float32(norm["mean"]), np.float32(norm["std"])
        self.version = self.card.get("version", "unknown")
        self.classes = [c["name"] for c in self.card.get("classes", [])] or list(DEFAULT_CLASSES)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.shape = tuple(self.session.get_inputs()[0].shape[2:])

    def segment(self, slices):
        """uint8 (N, H, W) -> labels uint8 (N, H, W), top probability float32 (N, H, W); one slice at a time."""
        if all(isinstance(d, int) for d in self.shape) and tuple(slices.shape[1:]) != self.shape:
            raise InputError(f"slices of {slices.shape[1]}x{slices.shape[2]} pixels; the model takes "
                             f"{self.shape[0]}x{self.shape[1]} (resample the volume first)")
        labels = np.empty(slices.shape, np.uint8)
        top = np.empty(slices.shape, np.float32)
        for i, image in enumerate(slices):
            x = ((image.astype(np.float32) / np.float32(255.0) - self.mean) / self.std)[None, None]
            logits = self.session.run(None, {self.input_name: x})[0][0]
            z = np.exp(logits - logits.max(axis=0, keepdims=True))
            probs = z / z.sum(axis=0, keepdims=True)
            labels[i] = probs.argmax(axis=0)
            top[i] = probs.max(axis=0)
        return labels, top


def _write_atomic(path, data):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_mask(path, labels, affine):
    """PNG for one image, NIfTI (the input's grid) for a volume; returns the file written."""
    import io

    out_dir = Path(path).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    if affine is None:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(labels[0], mode="L").save(buf, format="PNG")
        target = Path(f"{path}_mask.png")
        _write_atomic(target, buf.getvalue())
        return target
    import nibabel as nib

    target = Path(f"{path}_mask.nii.gz")
    img = nib.Nifti1Image(np.ascontiguousarray(np.moveaxis(labels, 0, 2)), affine)
    img.set_data_dtype(np.uint8)
    _write_atomic(target, _gzip(img.to_bytes()))
    return target


def _gzip(data):
    import gzip

    return gzip.compress(data, compresslevel=6, mtime=0)


def process_file(path, segmenter, out_dir):
    """Segment one file and write its mask and summary; returns the summary (``error`` set on failure)."""
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = output_stem(path)
    summary = {"input": str(path), "model_version": segmenter.version,
               "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}  # noqa: UP017 - py3.8 devices
    start = time.perf_counter()
    try:
        slices, affine = load_input(path)
        t0 = time.perf_counter()
        labels, top = segmenter.segment(slices)
        infer_s = time.perf_counter() - t0
        mask = write_mask(out_dir / stem, labels, affine)
    except InputError as exc:
        summary["error"] = str(exc)
        log.error("%s", exc)
    else:
        seconds = time.perf_counter() - start
        summary.update({
            "kind": "image" if affine is None else "volume", "mask": str(mask), "slices": int(len(slices)),
            "shape": [int(d) for d in slices.shape[1:]],
            "class_voxels": {name: int((labels == k).sum()) for k, name in enumerate(segmenter.classes)},
            "mean_confidence": {name: (float(top[labels == k].mean()) if (labels == k).any() else None)
                                for k, name in enumerate(segmenter.classes)},
            "seconds": round(seconds, 4), "ms_per_slice": round(1000 * seconds / len(slices), 3),
            "inference_ms_per_slice": round(1000 * infer_s / len(slices), 3),
        })
    _write_atomic(out_dir / f"{stem}.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def pending_inputs(in_dir, out_dir):
    """Inputs of ``in_dir`` without a summary in ``out_dir`` yet (an Analyze pair counts once, by its .hdr)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if in_dir.is_file():
        return [in_dir]
    files = sorted(p for p in in_dir.iterdir() if p.is_file() and input_kind(p) and not p.name.startswith("."))
    return [p for p in files if not (out_dir / f"{output_stem(p)}.json").exists()]


def watch(in_dir, out_dir, segmenter, poll_s=2.0, once=False):
    """Segment every new input of ``in_dir`` (a file is taken once its size stops changing between polls)."""
    if not Path(in_dir).is_file():
        Path(in_dir).mkdir(parents=True, exist_ok=True)
    sizes: dict[Path, int] = {}
    while True:
        for path in pending_inputs(in_dir, out_dir):
            size = path.stat().st_size
            if once or sizes.get(path) == size:
                summary = process_file(path, segmenter, out_dir)
                log.info("%s: %s", path.name, summary.get("error") or f"{summary['slices']} slice(s), "
                         f"{summary['ms_per_slice']} ms/slice")
                sizes.pop(path, None)
            else:
                sizes[path] = size
        if once:
            return
        time.sleep(poll_s)


def result_message(event, segmenter, out_dir):
    """The IPC message answering one subscription event (``{"path": FILE}`` as JSON or as binary JSON): the
    file's summary, or ``{"error": ...}`` when the request itself is malformed."""
    from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage

    try:
        if event.json_message is not None:
            message = event.json_message.message
        else:
            message = json.loads(event.binary_message.message)
        summary = process_file(message["path"], segmenter, out_dir)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        summary = {"error": f"expected a message {{\"path\": FILE}}: {type(exc).__name__}: {exc}"}
    return PublishMessage(json_message=JsonMessage(message=summary))


def serve_topic(topic, result_topic, out_dir, segmenter):
    """Greengrass local publish/subscribe: each message ``{"path": FILE}`` on ``topic`` is segmented and its
    summary published on ``result_topic`` (needs awsiotsdk and the recipe's accessControl)."""
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    ipc = GreengrassCoreIPCClientV2()

    def on_message(event):
        try:  # raised in the IPC client's callback thread, an error would vanish: log it
            ipc.publish_to_topic(topic=result_topic, publish_message=result_message(event, segmenter, out_dir))
        except Exception:
            log.exception("could not answer a message on %s", topic)

    ipc.subscribe_to_topic(topic=topic, on_stream_event=on_message)
    log.info("listening on %s, results on %s", topic, result_topic)
    while True:
        time.sleep(3600)


def main(argv=None):
    p = argparse.ArgumentParser(description="segqa edge segmenter (ONNX Runtime)")
    p.add_argument("--model", required=True, help="model.onnx")
    p.add_argument("--card", required=True, help="model_card.json (normalisation, version, classes)")
    p.add_argument("--input", default="input", help="a file, or a folder to watch")
    p.add_argument("--output", default="output", help="folder for masks and summaries")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--topic", default="", help="local pub/sub topic of requests (MQTT mode when set)")
    p.add_argument("--result-topic", default="segqa/segment/results")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between folder scans")
    p.add_argument("--once", action="store_true", help="segment what is there now and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    segmenter = Segmenter(args.model, args.card, threads=args.threads)
    if args.topic:
        serve_topic(args.topic, args.result_topic, args.output, segmenter)
    else:
        watch(args.input, args.output, segmenter, poll_s=args.poll, once=args.once)
    return 0


if __name__ == "__main__":
    sys.exit(main())
