"""B3 on a GPU: does MXNet run a convolution there, and how fast and how well do U-Net and ENet train in a
fixed number of seconds each. Run by gpu_h200.sh inside its fresh venv; ``--dry-run`` runs the same code on the
CPU with a tiny generated dataset and a few seconds per network (what the test suite does).

    python benchmarks/gpu_train.py --data COHORT --seconds 150 [--context gpu] [--out DIR]
    python benchmarks/gpu_train.py --dry-run --out DIR

Steps, each reported in DIR/b3_gpu.json as it completes (a failure is recorded, not raised, so the report
says plainly how far it got):

1. ``check``: MXNet's version and build features, the GPUs it sees and their compute capability; one 3x3
   convolution on the device compared with the same on the CPU. MXNet 1.9.1's newest CUDA builds are for CUDA
   11.x; a Hopper GPU (compute capability 9.0) is newer than any architecture they were compiled for, so
   this step is where "no kernel image is available" would show.
2. ``train``: per network, a probe of a few batches gives images/s; the epochs that fit ``--seconds`` are
   planned (cosine schedule run to its end) and ``time_budget_s`` stops training if it runs slower.
3. ``test``: mean foreground Dice of the best epoch on the cohort's test split (held-out subjects).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def check_device(ctx_spec: str) -> dict:
    import mxnet as mx
    import numpy as np
    from mxnet import nd

    out: dict = {"mxnet": mx.__version__, "features": [f.name for f in mx.runtime.Features().values() if f.enabled]}
    try:
        out["gpus"] = mx.context.num_gpus()
    except mx.base.MXNetError as exc:
        out["gpus"], out["gpu_error"] = 0, _first_line(exc)
    if ctx_spec == "gpu" and out["gpus"] > 0:
        try:
            out["compute_capability"] = mx.util.get_cuda_compute_capability(mx.gpu(0))
        except Exception as exc:  # noqa: BLE001 (any failure here is the finding)
            out["compute_capability"] = _first_line(exc)
    ctx = mx.gpu(0) if ctx_spec == "gpu" else mx.cpu()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 32, 32)).astype(np.float32)
    w = rng.normal(size=(16, 8, 3, 3)).astype(np.float32)
    try:
        ref = nd.Convolution(nd.array(x), nd.array(w), kernel=(3, 3), pad=(1, 1), num_filter=16, no_bias=True)
        got = nd.Convolution(nd.array(x, ctx=ctx), nd.array(w, ctx=ctx), kernel=(3, 3), pad=(1, 1), num_filter=16,
                             no_bias=True)
        diff = float(np.abs(got.asnumpy() - ref.asnumpy()).max())
        out["convolution"] = {"context": str(ctx), "max_abs_diff_vs_cpu": diff, "ok": diff < 1e-3}
    except Exception as exc:  # noqa: BLE001
        out["convolution"] = {"context": str(ctx), "ok": False, "error": _first_line(exc)}
    return out


def train_and_test(data: str, network: str, seconds: float, context: str, batch_size: int, work: Path,
                   width: float = 1.0) -> dict:
    from training.dataset import read_index
    from training.evaluate import evaluate_model
    from training.train import TrainConfig, train_model

    n_train = len(read_index(data, ["train"]))
    stamps: list[float] = []

    def on_batch(ev):
        if ev.kind == "batch":
            stamps.append(time.perf_counter())

    train_model(TrainConfig(data_dir=data, out_dir=str(work / f"{network}-probe"), network=network, epochs=1,
                            width=width, batch_size=batch_size, max_batches_per_epoch=6, max_val_slices=1,
                            context=context,
                            progress=on_batch))
    probe_ips = batch_size * (len(stamps) - 2) / (stamps[-1] - stamps[1]) if len(stamps) > 2 else None
    epoch_s = n_train / probe_ips * 1.15 if probe_ips else seconds
    epochs = max(1, int(seconds // epoch_s))
    history: list[dict] = []
    start = time.perf_counter()
    model = train_model(TrainConfig(data_dir=data, out_dir=str(work / network), network=network, epochs=epochs,
                                    width=width, batch_size=batch_size, context=context, time_budget_s=seconds,
                                    progress=lambda ev: ev.kind == "epoch" and history.append(
                                        {"epoch": ev.epoch, "val_mean_fg_dice": ev.val_mean_dice,
                                         "images_per_s": ev.images_per_s})))
    wall = time.perf_counter() - start
    report = evaluate_model(model, data, split="test")
    ips = sorted(h["images_per_s"] for h in history if h["images_per_s"])
    return {"network": network, "width": width, "batch_size": batch_size, "seconds_budget": seconds,
            "train_wall_s": round(wall, 1),
            "probe_images_per_s": probe_ips, "epochs_planned": epochs, "epochs_run": len(history),
            "images_per_s_median": ips[len(ips) // 2] if ips else None, "val_history": history,
            "test_mean_fg_dice_pooled": report["pooled"]["mean_foreground_dice"],
            "test_pooled_dice": report["pooled"]["dice"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="atlas cohort (segqa data synth); not needed with --dry-run")
    p.add_argument("--seconds", type=float, default=150.0, help="training seconds per network")
    p.add_argument("--networks", default="unet,enet")
    p.add_argument("--context", default="gpu", choices=("gpu", "cpu"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--width", type=float, default=1.0, help="filter-count multiplier of both networks")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for b3_gpu.json")
    p.add_argument("--dry-run", action="store_true", help="CPU, a tiny generated dataset, a few seconds each")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the cohort of a dry run and the trained models are scratch: only b3_gpu.json is kept
    with tempfile.TemporaryDirectory(prefix="segqa-gpu-") as tmp:
        return _run(args, p, out_dir, Path(tmp))


def _run(args: argparse.Namespace, p: argparse.ArgumentParser, out_dir: Path, work: Path) -> int:
    if args.dry_run:
        from training.cohort import CohortParams, build_cohort

        # A tiny atlas cohort (4 subjects, one per split, 4 slices each): the same data path as a real run.
        data = build_cohort(work / "data", 4, seed=0, params=CohortParams(n_slices=4), workers=1)
        args.data, args.context, args.seconds = str(data), "cpu", 2.0
        args.batch_size, args.width = 4, 0.125
    if not args.data:
        p.error("--data is required (or --dry-run)")
    report: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
                    "python": platform.python_version(), "dry_run": args.dry_run, "context": args.context}
    result_file = out_dir / "b3_gpu.json"

    def save() -> None:
        result_file.write_text(json.dumps(report, indent=2) + "\n")

    try:
        report["check"] = check_device(args.context)
    except Exception as exc:  # noqa: BLE001 (e.g. libcudart missing: mxnet fails to load)
        report["check"] = {"error": _first_line(exc), "traceback": traceback.format_exc(limit=3)}
    save()
    print(json.dumps(report["check"], indent=2), flush=True)
    if not report["check"].get("convolution", {}).get("ok"):
        report["verdict"] = f"a convolution does not run on {args.context}; nothing trained"
        save()
        print(report["verdict"], flush=True)
        return 1
    report["runs"] = []
    for network in [n.strip() for n in args.networks.split(",") if n.strip()]:
        try:
            run = train_and_test(args.data, network, args.seconds, args.context, args.batch_size, work, args.width)
        except Exception as exc:  # noqa: BLE001
            run = {"network": network, "error": _first_line(exc)}
        report["runs"].append(run)
        save()
        print(json.dumps({k: v for k, v in run.items() if k != "val_history"}), flush=True)
    report["verdict"] = "ran" if all("error" not in r for r in report["runs"]) else "some runs failed"
    save()
    return 0 if report["verdict"] == "ran" else 1


if __name__ == "__main__":
    sys.exit(main())
