"""Review overlays: the plain slice next to the slice with one class mask (ARCHITECTURE §3, §6).

Left panel: the slice; right panel: the same slice with the class mask as a translucent fill plus a crisp
contour in the class colour (contract.TISSUE_CLASSES), so a reviewer compares tissue and mask side by side.
Both panels use the same robust grey window (0.5-99.5 percentile of the slice), because many MRI slices are
dark. Panels are upscaled ``scale`` times (nearest neighbour, default 2 → 416×352 each) before the contour is
drawn, so the outline is one display pixel thin at the template's card size and sharp on HiDPI screens.

The PNG is a 256-colour palette image (grey ramp + blended class colours): ~15-35 KB for a 176×208 slice at
scale 2, well under the 60 KB budget (a test checks it).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from qa_workflow.contract import SegqaError, tissue_class

__all__ = ["render_overlay", "overlay_png", "overlay_indices", "display_window", "MAX_OVERLAY_BYTES", "DEFAULT_SCALE"]

MAX_OVERLAY_BYTES = 60_000
DEFAULT_SCALE = 2
FILL_ALPHA = 0.35
GAP_PX = 6
CROP_MARGIN_PX = 6
#: Narrowest grey window (in input units) that `display_window` stretches to 0..255.
MIN_WINDOW = 96.0
_GAP_GREY = 255


def display_window(image: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Stretch (H, W) intensities so the ``low_pct``..``high_pct`` percentiles span 0..255 -> uint8 (H, W)."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [low_pct, high_pct])
    hi = max(hi, lo + MIN_WINDOW)  # a near-empty slice is not stretched into full-contrast noise
    return np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _contour(mask: np.ndarray) -> np.ndarray:
    """Inner boundary pixels of a boolean mask (4-connected erosion difference)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def content_box(grey: np.ndarray, mask: np.ndarray, margin: int = CROP_MARGIN_PX) -> tuple[slice, slice]:
    """Rows and columns of the head (pixels brighter than 8 % of the display range, after a small opening to
    ignore background noise) united with the mask, plus ``margin`` pixels; the whole slice if nothing is found."""
    head = ndimage.binary_opening(grey > 20, iterations=2) | mask
    if not head.any():
        return slice(None), slice(None)
    r = np.flatnonzero(head.any(axis=1))
    c = np.flatnonzero(head.any(axis=0))
    h, w = grey.shape
    return (slice(max(r[0] - margin, 0), min(r[-1] + margin + 1, h)),
            slice(max(c[0] - margin, 0), min(c[-1] + margin + 1, w)))


def _layout(image: np.ndarray, mask: np.ndarray, class_name: str, scale: int, crop: bool = True
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int]]:
    image = np.asarray(image)
    mask = np.asarray(mask).astype(bool)
    if image.ndim != 2 or image.shape != mask.shape:
        raise SegqaError(f"overlay: image {image.shape} and mask {mask.shape} must be 2-D and of the same shape")
    rgb = tissue_class(class_name).rgb
    if rgb is None:
        raise SegqaError("overlay: background has no overlay colour")
    scale = max(1, int(scale))
    grey = display_window(image)
    if crop:
        rows, cols = content_box(grey, mask)
        grey, mask = grey[rows, cols], mask[rows, cols]
    if scale > 1:
        grey = grey.repeat(scale, 0).repeat(scale, 1)
        mask = mask.repeat(scale, 0).repeat(scale, 1)
    edge = _contour(mask)
    if scale > 1:  # a 2-px outline at 2x reads as one crisp display pixel
        edge |= _contour(mask & ~edge)
    return grey, mask, edge, rgb


def overlay_indices(image: np.ndarray, mask: np.ndarray, class_name: str, scale: int = DEFAULT_SCALE,
                    alpha: float = FILL_ALPHA, crop: bool = True) -> tuple[np.ndarray, list[int]]:
    """The review figure as a palette image: (indices (H·s, 2·W·s + gap) uint8, palette of 256 RGB triples).

    Palette: 0..127 grey levels (7 bit; the plain slice and the unmasked part of the overlay), 128..254 the same
    levels blended with the class colour at ``alpha`` (the fill), 255 the class colour itself (the contour).
    The gap between the panels is the brightest grey.
    """
    grey, mask, edge, rgb = _layout(image, mask, class_name, scale, crop)
    levels = grey >> 1  # 0..127
    g = (np.arange(128, dtype=np.float32) * 2 + 1)[:, None].repeat(3, axis=1)
    fill = (1 - alpha) * g[:127] + alpha * np.array(rgb, np.float32)
    palette = np.concatenate([g, fill, np.array([rgb], np.float32)]).round().clip(0, 255).astype(np.uint8)
    over = levels.copy()
    over[mask] = 128 + np.minimum(levels[mask], 126)
    over[edge] = 255
    h, w = levels.shape
    canvas = np.full((h, 2 * w + GAP_PX), 127, np.uint8)
    canvas[:, :w] = levels
    canvas[:, w + GAP_PX:] = over
    return canvas, palette.reshape(-1).tolist()


def render_overlay(image: np.ndarray, mask: np.ndarray, class_name: str, scale: int = DEFAULT_SCALE,
                   alpha: float = FILL_ALPHA, crop: bool = True) -> Image.Image:
    """Compose the review figure: image (H, W) uint8, mask (H, W) bool -> palette PIL image (H·s, 2·W·s + gap).

    Raises SegqaError when the shapes differ or the class has no colour (background).
    """
    idx, palette = overlay_indices(image, mask, class_name, scale, alpha, crop)
    im = Image.fromarray(idx, mode="P")
    im.putpalette(palette)
    return im


def overlay_png(image: np.ndarray, mask: np.ndarray, class_name: str, scale: int = DEFAULT_SCALE,
                alpha: float = FILL_ALPHA, crop: bool = True) -> bytes:
    """`render_overlay` as PNG bytes; falls back to scale 1 if scale ``scale`` would exceed MAX_OVERLAY_BYTES."""
    data = b""
    for s in dict.fromkeys((scale, 1)):
        buf = io.BytesIO()
        render_overlay(image, mask, class_name, s, alpha, crop).save(buf, format="PNG")
        data = buf.getvalue()
        if len(data) <= MAX_OVERLAY_BYTES:
            break
    return data
