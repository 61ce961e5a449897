"""B4 (adjust) — adjust masks consolidated per second by the post-labeling Lambda handler.

One invocation of `lambdas/post_labeling/handler.lambda_handler` with a Ground Truth-shaped event whose payload
holds N adjust objects (one 176 x 208 slice each), each answered by W workers with a ``crowd-semantic-segmentation``
output (an RGBA PNG as a browser canvas exports it, base64 in ``annotationData.content``). Per object the
handler decodes the model's label map and every worker PNG with the pure-Python codec, writes each worker's label
map once, takes the per-pixel majority and writes it, and stores the corrections. Measured on SQLite (a real
file, WAL); *fresh* = every correction new, *replay* = the same invocation again (files rewritten with the same
bytes, nothing new in the store).

    .venv/bin/python benchmarks/b4_adjust.py [--objects 20 --workers 3 --repeats 3] [--out benchmarks/results/B4.md]

With ``--out`` the result replaces the "adjust" section of that file (or is appended to it).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from b4_post_labeling import ADJUST_MARKS, GT_ROLE_ARN, timed, write_payload  # noqa: E402  (B4's other half)
from PIL import Image  # noqa: E402

from lambdas.post_labeling.handler import lambda_handler  # noqa: E402
from qa_workflow.confirmations import store as store_mod  # noqa: E402
from qa_workflow.confirmations.consolidate import annotation_entry, post_labeling_event  # noqa: E402
from qa_workflow.contract import label_mappings  # noqa: E402

JOB_ARN = "arn:aws:sagemaker:us-east-1:111122223333:labeling-job/segqa-b4-adjust"
H, W = 176, 208
MARK_START, MARK_END = ADJUST_MARKS


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def make_payload(root: Path, n_objects: int, n_workers: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    mappings = label_mappings()
    colours = [np.array([int(m["color"][i:i + 2], 16) for i in (1, 3, 5)], np.uint8) for m in mappings.values()]
    payload = []
    for o in range(n_objects):
        r = np.sqrt(((yy - H / 2) / (66 + o % 5)) ** 2 + ((xx - W / 2) / (80 + o % 7)) ** 2)
        model = np.select([r < 0.45, r < 0.8, r < 1.0], [3, 2, 1], 0).astype(np.uint8)
        slice_id = f"sub-{o // 40:03d}/{o % 40:03d}"
        (root / "labels").mkdir(parents=True, exist_ok=True)
        mask_path = root / "labels" / f"{o}.png"
        mask_path.write_bytes(_png(model, "L"))
        task = {"task_id": f"b4-adjust-{o}", "kind": "adjust", "round": "1", "model_version": "unet-v1",
                "slice_id": slice_id, "image_uri": str(mask_path), "mask_uri": str(mask_path),
                "initial_overlay_uri": str(mask_path), "label_mappings": mappings,
                "classes_to_check": ["gray_matter"], "item_ids": [f"{slice_id}/gray_matter"]}
        tpath = root / "tasks" / f"{o}.json"
        tpath.parent.mkdir(parents=True, exist_ok=True)
        tpath.write_text(json.dumps(task))
        annotations = []
        for w in range(n_workers):
            labels = model.copy()
            y0, x0 = rng.integers(20, H - 40), rng.integers(20, W - 40)
            labels[y0:y0 + 20, x0:x0 + 20] = rng.integers(0, 4)
            rgba = np.zeros((H, W, 4), np.uint8)
            for k, colour in enumerate(colours, start=1):
                rgba[labels == k] = [*colour, 255]
            answer = {"labeledImage": {"pngImageData": base64.b64encode(_png(rgba, "RGBA")).decode()},
                      "labelMappings": mappings, "initialValueModified": True,
                      "inputImageProperties": {"height": H, "width": W}}
            form = {"correctedMask": answer, "seconds": "60"}
            annotations.append(annotation_entry(f"private.us-east-1.worker{w}", form))
        payload.append((tpath, annotations))
    return write_payload(root, payload)


def event(payload_uri: str) -> dict:
    return post_labeling_event(JOB_ARN, payload_uri, "segqa-adjust", GT_ROLE_ARN)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=20)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="replace the adjust section of this Markdown file (or append it)")
    args = ap.parse_args()
    fresh, replay = [], []
    with tempfile.TemporaryDirectory(prefix="segqa-b4a-") as tmp:
        payload_uri = make_payload(Path(tmp), args.objects, args.workers)
        for r in range(args.repeats):
            store_mod.clear_store_cache()
            os.environ["SEGQA_STORE"] = f"sqlite:///{tmp}/b4a-{r}.db"
            os.environ["SEGQA_CORRECTIONS_PREFIX"] = f"{tmp}/corrections-{r}"
            fresh.append(timed(lambda: lambda_handler(event(payload_uri), None)))
            replay.append(timed(lambda: lambda_handler(event(payload_uri), None)))
            st = store_mod.open_store(os.environ["SEGQA_STORE"], cached=True)
            got = len(list(st.iter_consolidated_masks()))
            if got != args.objects or len(list(st.iter_corrections())) != args.objects * args.workers:
                raise SystemExit(f"expected {args.objects} consolidated masks, got {got}")
            store_mod.clear_store_cache()
    rows = []
    for phase, runs in (("fresh", fresh), ("replay", replay)):
        wall = statistics.median(t for t, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        rows.append(f"| SQLite (file, WAL) | {phase} | {len(runs)} | {wall:.2f} | {args.objects / wall:.1f} | "
                    f"{args.objects / cpu:.1f} | {args.objects * args.workers / wall:.1f} |")
    load = os.getloadavg()[0]
    text = "\n".join([
        MARK_START, "", "### Adjust masks (issue #12)", "",
        f"One post-labeling invocation over {args.objects} adjust objects (176 × 208 slices) × {args.workers} workers "
        f"= {args.objects * args.workers} `crowd-semantic-segmentation` PNGs, decoded by the pure-Python codec "
        "(the Lambda zip has no Pillow), each worker's label map written once, the per-pixel majority written, "
        "corrections stored. Task objects, label maps and payload on local disk.", "",
        "| store | phase | runs | seconds (median) | masks/s (wall) | masks/s (CPU) | worker PNGs/s (wall) |",
        "|---|---|---:|---:|---:|---:|---:|", *rows, "",
        f"- command: `.venv/bin/python benchmarks/b4_adjust.py --objects {args.objects} --workers {args.workers} "
        f"--repeats {args.repeats} --out benchmarks/results/B4.md`",
        f"- machine: {os.cpu_count()}-core dev machine, no GPU ({platform.machine()}, Python "
        f"{platform.python_version()}); shared with other jobs (load average {load:.1f} at the end of the run), "
        "so wall-clock figures vary; the CPU rate is the steadier figure",
        f"- date: {date.today().isoformat()}", "", MARK_END, ""])
    print(text)
    if args.out:
        out = Path(args.out)
        old = out.read_text() if out.is_file() else ""
        if MARK_START in old and MARK_END in old:
            head, rest = old.split(MARK_START, 1)
            new = head + text.rstrip("\n") + rest.split(MARK_END, 1)[1]
        else:
            new = old.rstrip("\n") + "\n\n" + text
        out.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
