"""B1 — scoring throughput: 4×176×208 float32 probability maps scored per second, on one core.

Compares `qa_workflow.rounds.scoring.score_probabilities` (vectorised numpy, chunked) with a naive per-pixel Python
loop that computes the same four numbers (mean_prob, soft_dice, entropy over the 2-px dilated region,
pixel count) for each (slice, class); checks both agree, and prints a Markdown result block. The fifth number,
``surface_agreement``, is timed on its own as well (the costliest score) and checked against ``surface_dice`` of
the drawn cuts.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/b1_scoring.py [--slices 512]

The thread variables pin numpy's BLAS (used for two small matrix-vector products) to one core; the script
sets them itself when they are unset.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402

import numpy as np  # noqa: E402

from qa_workflow.rounds.scoring import (  # noqa: E402
    AGREEMENT_LEVELS,
    check_probabilities,
    predicted_labels,
    score_probabilities,
    surface_agreement,
)
from training.metrics import surface_dice  # noqa: E402

H, W, K = 176, 208, 4


def make_maps(n: int, seed: int = 0) -> np.ndarray:
    """Softmax maps with spatially smooth structure (blobs of each class), like a segmenter's output."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    out = np.empty((n, K, H, W), np.float32)
    for i in range(n):
        logits = np.zeros((K, H, W), np.float32)
        for k in range(K):
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            r = rng.uniform(30, 90)
            logits[k] = 6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        logits += rng.normal(0, 0.5, size=logits.shape).astype(np.float32)
        e = np.exp(logits - logits.max(0))
        out[i] = e / e.sum(0)
    return out


def naive_scores(p: np.ndarray) -> np.ndarray:
    """One slice (4, H, W) -> (3, 4) [pixel_count, mean_prob, soft_dice, entropy] with per-pixel loops."""
    labels = [[0] * W for _ in range(H)]
    ent = [[0.0] * W for _ in range(H)]
    for y in range(H):
        for x in range(W):
            best, arg, h = -1.0, 0, 0.0
            for k in range(K):
                v = float(p[k, y, x])
                if v > best:
                    best, arg = v, k
                if v > 0:
                    h -= v * math.log(max(v, 1e-12))
            labels[y][x] = arg
            ent[y][x] = h / math.log(K)
    out = np.zeros((3, 4))
    for j, c in enumerate((1, 2, 3)):
        count = inside = sum_p = 0.0
        ent_sum = region = 0.0
        for y in range(H):
            for x in range(W):
                v = float(p[c, y, x])
                sum_p += v
                if labels[y][x] == c:
                    count += 1
                    inside += v
                near = False
                for yy in range(max(0, y - 2), min(H, y + 3)):
                    for xx in range(max(0, x - 2), min(W, x + 3)):
                        if labels[yy][xx] == c:
                            near = True
                            break
                    if near:
                        break
                if near:
                    region += 1
                    ent_sum += ent[y][x]
        out[j] = [count, inside / count if count else np.nan,
                  2 * inside / (sum_p + count) if sum_p + count else np.nan,
                  ent_sum / region if region else np.nan]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=512, help="maps scored by the vectorised version")
    ap.add_argument("--naive-slices", type=int, default=2, help="maps scored by the naive loop (slow!)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    maps = make_maps(args.slices)
    score_probabilities(maps[:16])  # warm-up
    cpu, wall = [], []
    for _ in range(args.repeats):
        c, t = time.process_time(), time.perf_counter()
        s = score_probabilities(maps)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    checked = []
    for _ in range(args.repeats):
        c = time.process_time()
        assert all(r is None for r in check_probabilities(maps))
        score_probabilities(maps)
        checked.append(time.process_time() - c)
    masks = predicted_labels(maps)[:, None] == np.arange(1, K, dtype=np.uint8)[None, :, None, None]
    class_probs = np.ascontiguousarray(maps[:, 1:])
    agreement = []
    for _ in range(args.repeats):
        c = time.process_time()
        for a in range(0, args.slices, 16):  # the chunks score_probabilities uses
            surface_agreement(masks[a:a + 16], class_probs[a:a + 16])
        agreement.append(time.process_time() - c)
    agreement_ms = 1000 * float(np.median(agreement)) / args.slices
    checked_rate = args.slices / float(np.median(checked))
    vec_rate = args.slices / float(np.median(cpu))
    wall_rate = args.slices / float(np.median(wall))

    c = time.process_time()
    naive = [naive_scores(maps[i]) for i in range(args.naive_slices)]
    naive_s = (time.process_time() - c) / args.naive_slices
    for i, ref in enumerate(naive):
        got = np.stack([s.pixel_count[i], s.mean_prob[i], s.soft_dice[i], s.entropy[i]], axis=1)
        if not np.allclose(got, ref, rtol=1e-4, atol=1e-5, equal_nan=True):
            print(f"MISMATCH on slice {i}:\n{got}\nvs naive\n{ref}", file=sys.stderr)
            return 1
        drawn = np.mean([surface_dice(masks[i], class_probs[i] > np.float32(t)) for t in AGREEMENT_LEVELS], axis=0)
        if not np.allclose(s.surface_agreement[i], np.where(masks[i].any(axis=(1, 2)), drawn, np.nan),
                           equal_nan=True):
            print(f"MISMATCH of surface_agreement on slice {i}: {s.surface_agreement[i]} vs {drawn}", file=sys.stderr)
            return 1

    cmd = "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/b1_scoring.py " + " ".join(sys.argv[1:])
    vec_label = f"vectorised numpy (`score_probabilities`, {args.slices} slices, median of {args.repeats})"
    checked_label = "vectorised, with the input checks of `segqa predict` (`check_probabilities` + score)"
    agreement_label = "of which `surface_agreement` (six cuts of each class's map)"
    naive_label = f"naive per-pixel Python loop ({args.naive_slices} slices, the first four numbers)"
    print(f"""## B1 — scoring throughput

Probability maps of 4×176×208 float32 (smooth softmax blobs with pixel noise), scored per (slice, tissue class):
pixel count, mean_prob, soft_dice, entropy over the predicted region dilated by 2 px, surface_agreement. One core
(BLAS threads = 1).
Rates use the process's CPU time (one thread, so CPU time = time on one core); the wall-clock rate also
counts waiting for the core on this shared machine.

| implementation | slices/s (CPU time) | ms per slice (CPU) | slices/s (wall clock) |
|---|---:|---:|---:|
| {vec_label} | {vec_rate:,.0f} | {1000 / vec_rate:.2f} | {wall_rate:,.0f} |
| {checked_label} | {checked_rate:,.0f} | {1000 / checked_rate:.2f} | — |
| {agreement_label} | {1000 / agreement_ms:,.0f} | {agreement_ms:.2f} | — |
| {naive_label} | {1 / naive_s:.3f} | {1000 * naive_s:,.0f} | — |

Speed-up: {naive_s * vec_rate:,.0f}×. Target ≥ 1,000 slices/s on one core: {"met" if vec_rate >= 1000 else "NOT met"}.
Both implementations agree on every value (rtol 1e-4); `surface_agreement` equals the mean `surface_dice` of
the drawn cuts on the naive loop's slices.

- command: `{cmd.strip()}`
- machine: 2-core dev machine, no GPU ({platform.processor() or platform.machine()}, Python {platform.python_version()},
  numpy {np.__version__}); shared with other jobs, so figures vary by ~±20 %
- date: {date.today().isoformat()}""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
