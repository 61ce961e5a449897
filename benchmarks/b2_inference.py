"""B2 — inference latency: batch-1 176x208 U-Net and ENet, MXNet vs ONNX Runtime, 1 and 2 threads; and the
Greengrass component's end-to-end latency per slice.

    .venv/bin/python benchmarks/b2_inference.py [--runs 50] [--seconds 20] [--model-unet M] [--model-enet M]
    .venv/bin/python benchmarks/b2_inference.py --component-only     # re-measure the component rows only

Component: the inference script of `segqa export --greengrass` (training/edge_segment.py) run as the device
runs it, in its own process, on a NIfTI volume of ``--component-slices`` 176x208 slices: read, scale, segment
slice by slice, write the mask volume and the summary. Two figures per thread count: the script's own time per
slice (file in to mask out, as its summary reports it) and the whole process's wall time per slice (interpreter
start and ONNX Runtime session included: what one request costs a device that starts the script per file).

Each (network, runtime, threads) cell runs in its own subprocess, so the thread count is fixed before the
runtime starts (MXNet reads OMP_NUM_THREADS at import; ONNX Runtime gets intra_op_num_threads). Weights are
the trained model's if a model folder is given, else a seeded random initialisation (latency does not depend
on the values). Per cell: 5 warm-up runs, then up to ``--runs`` timed runs or ``--seconds``, whichever ends
first; the median, 90th percentile and mean are reported. Results: benchmarks/results/B2.md and b2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
H, W = 176, 208
TARGETS_MS = {"enet": 15.0, "unet": 100.0}  # ONNX Runtime targets of issue #3


def _prepare(network: str, model: str | None, folder: Path) -> None:
    """Write folder/model-symbol.json, model-0000.params and model.onnx for ``network``."""
    sys.path.insert(0, str(ROOT))
    import mxnet as mx
    import numpy as np
    import onnx
    from mxnet import nd

    from training.export import fix_onnx_for_runtime
    from training.nets import build_network
    from training.predict import load_predictor

    if model:
        net = load_predictor(model, ctx=mx.cpu()).net
    else:
        mx.random.seed(0)
        net = build_network(network, prelu="native")  # the form inference and the ONNX export use
        net.initialize(mx.init.Xavier())
        net.hybridize(static_alloc=True)
    net(nd.zeros((1, 1, H, W)))
    net.export(str(folder / "model"), epoch=0)
    onnx_file = folder / "model.onnx"
    mx.onnx.export_model(str(folder / "model-symbol.json"), str(folder / "model-0000.params"), [(1, 1, H, W)],
                         np.float32, str(onnx_file))
    m = onnx.load(str(onnx_file))
    fix_onnx_for_runtime(m)
    onnx.save(m, str(onnx_file))


def _measure(runtime: str, folder: str, threads: int, runs: int, seconds: float) -> dict:
    """Runs inside the child process: time batch-1 inference."""
    import numpy as np

    x = np.random.default_rng(0).normal(size=(1, 1, H, W)).astype(np.float32)
    if runtime == "mxnet":
        import mxnet as mx
        from mxnet import gluon, nd

        block = gluon.nn.SymbolBlock.imports(f"{folder}/model-symbol.json", ["data"], f"{folder}/model-0000.params",
                                             ctx=mx.cpu())
        block.hybridize(static_alloc=True, static_shape=True)
        xin = nd.array(x)

        def run():
            block(xin).wait_to_read()
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(f"{folder}/model.onnx", sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def run():
            sess.run(None, {name: x})

    for _ in range(5):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and time.perf_counter() - start < seconds:
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    arr = np.asarray(times)
    return {"runs": len(times), "median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)),
            "mean_ms": float(arr.mean()), "min_ms": float(arr.min())}


def _measure_component(folder: Path, threads: int, slices: int) -> dict:
    """Run the edge script on a volume in a fresh process; its per-slice time and the process's."""
    import nibabel as nib
    import numpy as np

    card = folder / "model_card.json"
    if not card.exists():  # random-init weights: the script only needs the normalisation and a version
        card.write_text(json.dumps({"version": "enet-random-init", "network": "enet",
                                    "normalization": {"mean": 0.3, "std": 0.25}}))
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1200, size=(H, W, slices)).astype(np.int16)
    work = Path(tempfile.mkdtemp(prefix="segqa-b2-gg-", dir=folder))
    nib.save(nib.Nifti1Image(volume, np.eye(4)), work / "scan.nii.gz")
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "training" / "edge_segment.py"), "--model", str(folder / "model.onnx"),
                    "--card", str(card), "--input", str(work / "scan.nii.gz"), "--output", str(work / "out"),
                    "--threads", str(threads), "--once"], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    summary = json.loads((work / "out" / "scan.json").read_text())
    return {"threads": threads, "slices": slices, "script_ms_per_slice": summary["ms_per_slice"],
            "inference_ms_per_slice": summary["inference_ms_per_slice"],
            "process_ms_per_slice": round(1000 * wall / slices, 2), "process_s": round(wall, 2)}


def _write_report(meta: dict, results: list[dict], component: list[dict]) -> None:
    lines = ["# B2 — inference latency (batch 1, 176x208)", "",
             f"- date: {meta['date']}", f"- machine: {meta['machine']}",
             f"- command: `.venv/bin/{meta['command']}`",
             "- each cell in its own process; 5 warm-up runs, then timed runs; MXNet = exported symbol "
             "(SymbolBlock, static_alloc), ONNX Runtime 1.31 CPU provider; load average = `uptime` before the cell",
             f"- targets (ONNX Runtime): ENet <= {TARGETS_MS['enet']:.0f} ms, U-Net <= {TARGETS_MS['unet']:.0f} ms", "",
             "| network | runtime | threads | median ms | p90 ms | mean ms | runs | load avg (1/5/15 min) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['network']} | {r['runtime']} | {r['threads']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
                     f"{r['mean_ms']:.1f} | {r['runs']} | {' / '.join(map(str, r['load_avg_before']))} |")
    if component:
        c_meta = meta.get("component", {})
        lines += ["", "### Greengrass component, end to end (ENet)", "",
                  f"- date: {c_meta.get('date')}; command: `.venv/bin/{c_meta.get('command')}`",
                  "- `segment.py` of `segqa export --greengrass` in its own process on a NIfTI volume: read, scale, "
                  "segment slice by slice (ONNX Runtime, batch 1), write the mask volume and the JSON summary",
                  "", "| threads | slices | script ms/slice (file in to mask out) | of which inference | "
                  "process ms/slice (with start-up) | load avg before |", "|---|---|---|---|---|---|"]
        for c in component:
            lines.append(f"| {c['threads']} | {c['slices']} | {c['script_ms_per_slice']:.1f} | "
                         f"{c['inference_ms_per_slice']:.1f} | {c['process_ms_per_slice']:.1f} | "
                         f"{' / '.join(map(str, c['load_avg_before']))} |")
    (RESULTS / "B2.md").write_text("\n".join(lines) + "\n")


def _component_rows(threads: list[int], slices: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="segqa-b2c-") as tmp:
        folder = Path(tmp)
        _prepare("enet", None, folder)
        for t in threads:
            load = _loadavg()
            row = _measure_component(folder, t, slices)
            row["load_avg_before"] = load
            rows.append(row)
            print(f"component {t} thread(s): {row['script_ms_per_slice']:.1f} ms/slice in the script, "
                  f"{row['process_ms_per_slice']:.1f} ms/slice with process start-up (load {load})", flush=True)
    return rows


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20.0, help="time cap per cell")
    p.add_argument("--model-unet", default=None)
    p.add_argument("--model-enet", default=None)
    p.add_argument("--networks", default="enet,unet")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--component-slices", type=int, default=32)
    p.add_argument("--component-only", action="store_true", help="re-measure the Greengrass component only")
    p.add_argument("--child", nargs=4, metavar=("RUNTIME", "FOLDER", "THREADS", "RUNS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        runtime, folder, threads, runs = args.child
        print(json.dumps(_measure(runtime, folder, int(threads), int(runs), args.seconds)))
        return 0

    command = " ".join(["python benchmarks/b2_inference.py", *(argv if argv is not None else sys.argv[1:])]).strip()
    threads = [int(t) for t in args.threads.split(",")]
    if args.component_only:
        saved = json.loads((RESULTS / "b2.json").read_text())
        component = _component_rows(threads, args.component_slices)
        saved["meta"]["component"] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command}
        saved["component"] = component
        (RESULTS / "b2.json").write_text(json.dumps(saved, indent=2) + "\n")
        _write_report(saved["meta"], saved["results"], component)
        print(f"wrote {RESULTS / 'B2.md'}")
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="segqa-b2-") as tmp:
        for network in args.networks.split(","):
            folder = Path(tmp) / network
            folder.mkdir()
            _prepare(network, getattr(args, f"model_{network}"), folder)
            for runtime in ("mxnet", "onnxruntime"):
                for n_threads in threads:
                    env = {**os.environ, "OMP_NUM_THREADS": str(n_threads)}
                    load_before = _loadavg()
                    out = subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--child", runtime,
                                          str(folder), str(n_threads), str(args.runs)], env=env, capture_output=True,
                                         text=True, check=True)
                    cell = json.loads(out.stdout.strip().splitlines()[-1])
                    cell.update(network=network, runtime=runtime, threads=n_threads, load_avg_before=load_before)
                    results.append(cell)
                    print(f"{network:5s} {runtime:11s} {n_threads} thread(s): median {cell['median_ms']:.1f} ms "
                          f"p90 {cell['p90_ms']:.1f} ms ({cell['runs']} runs, load {load_before})", flush=True)
    component = _component_rows(threads, args.component_slices)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
            "machine": f"2-core dev machine, no GPU ({platform.processor() or platform.machine()}), shared with "
                       "other jobs", "load_avg_end": _loadavg(),
            "weights": {n: getattr(args, f"model_{n}") or "random init" for n in args.networks.split(",")},
            "component": {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "b2.json").write_text(json.dumps({"meta": meta, "results": results, "component": component},
                                                indent=2) + "\n")
    _write_report(meta, results, component)
    print(f"wrote {RESULTS / 'B2.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
