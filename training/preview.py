"""Contact sheet of a dataset: slices of several subjects at several levels, with translucent mask overlays.

`render_contact_sheet(dataset, out)` picks up to ``n_subjects`` subjects (spread over the splits) and, for each,
``n_levels`` slices evenly spaced through its slice range; each slice is drawn twice, plain and with the mask
overlaid in the contract colours (`qa_workflow.contract.TISSUE_CLASSES`), and a legend names the classes.
Pixels with the ignore label (255) are drawn hatched grey. Slices are shown as stored (H x W, no rotation),
so what a person sees here is what the networks and the reviewers see.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qa_workflow import storage
from qa_workflow.contract import IGNORE_LABEL, REVIEW_CLASSES, SegqaError
from training.dataset import SPLITS, SliceRecord, load_png, read_index, read_meta

#: Overlay opacity of a tissue colour over the image.
OVERLAY_ALPHA = 0.5
#: Under a class colour the image is lifted to at least this gray level, so that a colour over dark tissue
#: (CSF is dark in T1) stays visible.
OVERLAY_FLOOR = 0.3
IGNORE_RGB = (0.6, 0.6, 0.6)


def overlay_rgb(image: np.ndarray, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend class colours over a grayscale slice.

    image: (H, W) uint8; mask: (H, W) labels (0..3 or 255). Background is left as is; each tissue class is
    mixed in with opacity ``alpha`` over the image lifted to OVERLAY_FLOOR; ignored pixels get a grey wash.
    Returns (H, W, 3) float in 0..1.
    """
    gray = image.astype(np.float32) / 255.0
    rgb = np.repeat(gray[..., None], 3, axis=2)
    lifted = OVERLAY_FLOOR + (1.0 - OVERLAY_FLOOR) * rgb
    for cls in REVIEW_CLASSES:
        sel = mask == cls.id
        if sel.any():
            color = np.asarray(cls.rgb, dtype=np.float32) / 255.0
            rgb[sel] = (1.0 - alpha) * lifted[sel] + alpha * color
    sel = mask == IGNORE_LABEL
    if sel.any():
        rgb[sel] = 0.5 * rgb[sel] + 0.5 * np.asarray(IGNORE_RGB, dtype=np.float32)
    return rgb


def choose_subjects(records: Sequence[SliceRecord], n_subjects: int) -> list[str]:
    """Up to ``n_subjects`` subjects, taking them round-robin over the splits (train, pool, val, test) so a
    sheet of a cohort shows every split; sorted ids within a split."""
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for r in records:
        if r.subject not in by_split[r.split]:
            by_split[r.split].append(r.subject)
    queues = [sorted(v) for v in by_split.values() if v]
    chosen: list[str] = []
    while len(chosen) < n_subjects and any(queues):
        for q in queues:
            if q and len(chosen) < n_subjects:
                chosen.append(q.pop(0))
    return chosen


def choose_levels(slices: Sequence[int], n_levels: int) -> list[int]:
    """``n_levels`` slice indices evenly spaced between 22 % and 82 % of a subject's sorted slices."""
    ordered = sorted(slices)
    if len(ordered) <= n_levels:
        return ordered
    pos = np.linspace(0.22, 0.82, n_levels) * (len(ordered) - 1)
    return sorted({ordered[int(round(p))] for p in pos})


def render_contact_sheet(dataset: str | os.PathLike[str], out: str | os.PathLike[str], n_subjects: int = 4,
                         n_levels: int = 4, subjects: Sequence[str] | None = None, dpi: int = 100) -> Path:
    """Write a PNG contact sheet of ``dataset`` to ``out`` (atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    root = Path(dataset)
    records = read_index(root)
    if not records:
        raise SegqaError(f"{root / 'index.csv'}: no slices listed; nothing to preview")
    if n_subjects < 1 or n_levels < 1:
        raise SegqaError("--subjects and --levels must be at least 1")
    known = {r.subject for r in records}
    if subjects:
        missing = [s for s in subjects if s not in known]
        if missing:
            raise SegqaError(f"{root}: no subject(s) {', '.join(missing)} in the dataset")
        chosen = list(subjects)
    else:
        chosen = choose_subjects(records, n_subjects)
    by_subject = {s: {r.slice: r for r in records if r.subject == s} for s in chosen}
    rows = [(s, [by_subject[s][k] for k in choose_levels(list(by_subject[s]), n_levels)]) for s in chosen]
    n_cols = 2 * max(len(recs) for _, recs in rows)

    h, w = load_png(root / rows[0][1][0].image).shape
    cell = 2.4  # inches per panel width
    fig_w = cell * n_cols
    fig_h = cell * (h / w) * len(rows) * 1.12 + 0.8
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(fig_w, fig_h), squeeze=False,
                             gridspec_kw={"wspace": 0.03, "hspace": 0.12})
    fig.patch.set_facecolor("black")
    any_ignore = False
    for r, (subject, recs) in enumerate(rows):
        for c in range(0, n_cols, 2):
            ax_img, ax_ovl = axes[r, c], axes[r, c + 1]
            for ax in (ax_img, ax_ovl):
                ax.set_axis_off()
            if c // 2 >= len(recs):
                continue
            rec = recs[c // 2]
            image = load_png(root / rec.image, "image")
            mask = load_png(root / rec.mask, "mask")
            any_ignore = any_ignore or bool((mask == IGNORE_LABEL).any())
            ax_img.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax_ovl.imshow(overlay_rgb(image, mask), interpolation="nearest")
            site = f" · site {rec.site}" if rec.site else ""
            ax_img.set_title(f"{subject} · {rec.slice:03d} · {rec.split}{site}", color="white", fontsize=8, loc="left")
    handles = [Patch(facecolor=cls.color, edgecolor="none", label=f"{cls.id} {cls.name}")
               for cls in REVIEW_CLASSES]
    if any_ignore:
        handles.append(Patch(facecolor=IGNORE_RGB, label=f"{IGNORE_LABEL} ignore"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9,
               labelcolor="white")
    orientation = read_meta(root).get("orientation")
    fig.suptitle(f"{root.name}: {len(known)} subjects, {len(records)} slices · each slice plain | with mask"
                 + (f"\n{orientation}" if orientation else ""), color="white", fontsize=9)
    out = Path(out)
    try:
        storage.atomic_write_with(out, lambda name: fig.savefig(name, format="png", dpi=dpi,
                                                                facecolor=fig.get_facecolor(),
                                                                bbox_inches="tight", pad_inches=0.15))
    finally:
        plt.close(fig)
    return out
