"""Entry point of a segqa prediction Processing job (one instance): predict the shards whose manifests landed here.

    python3 -m qa_workflow.cloud.processing_entry --model DIR --manifests DIR --data s3://... --out s3://... [...]

For each manifest (``shard-NNNNN.csv``: rows of the dataset's ``index.csv``), the shard's images are fetched from
``--data`` into a local dataset folder, and `run_predictions` writes the per-slice maps and masks into ``--out``
(as ``segqa predict`` does) and the shard's ``run.json``, score table and ``rejects.csv`` into
``--out/shards/<shard>/``. Runs the same way on a laptop (local folders or S3) as in the container.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from qa_workflow import storage
from qa_workflow.contract import DEFAULT_TTA, TTA_MODES, SegqaError
from qa_workflow.rounds.predict import PredictionSummary, run_predictions

__all__ = ["fetch_shard", "run_shard", "main"]

log = logging.getLogger("segqa.processing")
SHARDS_FOLDER = "shards"  # as qa_workflow.cloud.processing.SHARDS_FOLDER (kept apart: that module is not bundled)
FETCH_THREADS = 16


def fetch_shard(manifest: Path, data_uri: str, dest: Path) -> Path:
    """A local dataset folder for one shard: the manifest as ``index.csv`` and each image it names, read from
    ``data_uri`` in parallel. An image that cannot be read is left out; `run_predictions` rejects its slice
    with the reason, as a local run would."""
    import csv

    dest.mkdir(parents=True, exist_ok=True)
    text = manifest.read_text(encoding="utf-8")
    storage.atomic_write_text(dest / "index.csv", text)
    images = sorted({row["image"] for row in csv.DictReader(text.splitlines())})

    def fetch(rel: str) -> None:
        target = dest / rel
        if not target.resolve().is_relative_to(dest.resolve()):
            raise SegqaError(f"{manifest}: image path {rel!r} leaves the dataset folder")
        try:
            data = storage.read_bytes(storage.join(data_uri, rel))
        except SegqaError as exc:
            log.warning("%s", exc)
            return
        storage.atomic_write_bytes(target, data)

    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        list(pool.map(fetch, images))
    return dest


def run_shard(predictor: Any, manifest: Path, data_uri: str, out: str, work: Path, **options: Any) -> PredictionSummary:
    """Fetch one shard and predict it; ``options`` go to `run_predictions` (split, batch_size, ...)."""
    shard = manifest.stem
    local = fetch_shard(manifest, data_uri, work / shard)
    return run_predictions(predictor, local, out, table_out=storage.join(out, SHARDS_FOLDER, shard), **options)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="processing_entry", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model or export folder")
    p.add_argument("--manifests", required=True, help="folder of shard manifests (*.csv)")
    p.add_argument("--data", required=True, help="dataset folder the manifests' image paths are relative to")
    p.add_argument("--out", required=True, help="prediction folder")
    p.add_argument("--split", default="pool")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mc-samples", type=int, default=0)
    p.add_argument("--min-pixels", type=int, default=30)
    p.add_argument("--table-format", default="parquet")
    p.add_argument("--runtime", default="auto")
    p.add_argument("--tta", default=DEFAULT_TTA, choices=TTA_MODES, help="test-time augmentation (training.predict)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    return p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = _parse(sys.argv[1:] if argv is None else argv)
    from training.predict import open_predictor, with_tta

    manifests = sorted(Path(args.manifests).glob("*.csv"))
    if not manifests:
        log.info("no manifest in %s: nothing to do on this instance", args.manifests)
        return 0
    predictor = with_tta(open_predictor(args.model, runtime=args.runtime, mc_samples=args.mc_samples), args.tta)
    with tempfile.TemporaryDirectory(prefix="segqa-shard-", dir=args.work) as work:
        for manifest in manifests:
            summary = run_shard(predictor, manifest, args.data, args.out, Path(work), split=args.split,
                                batch_size=args.batch_size, mc_samples=args.mc_samples, min_pixels=args.min_pixels,
                                table_format=args.table_format, model_path=args.model)
            print(json.dumps({"shard": manifest.stem, "slices": summary.slices, "scored": summary.slices_scored,
                              "items": summary.items, "rejects": len(summary.rejects)}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SegqaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
