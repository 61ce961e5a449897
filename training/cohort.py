"""The atlas cohort: synthetic subjects from the MNI152 2009a template that ships inside nilearn (offline).

Generative model (docs/data.md has the full description and the reasons for each choice)::

    template space (1 mm, 197 x 233 x 189)            subject space (the output grid, 1 mm in-plane)
    T1 (skull-stripped, 0..1), GM and WM probability maps   ──  q = c + A (p - s) + d(p)  ──►  S x 176 x 208

0. Sulci restored, once: the population average blurs most sulci into gray matter; `sulcal_csf` finds them
   as ridges of the distance to white matter inside the cortical gray matter, darkens the T1 there to the CSF
   level and removes that gray-matter probability (thin dark lines between gyri, as in a single T1).
1. Class scores in template space, once: ``hull`` = the template's brain mask (T1 > 0, holes filled);
   ``gm``, ``wm`` = the probability maps; ``csf = hull * max(0, 1 - gm - wm) * dark(T1)`` where
   ``dark = sigmoid((CSF_T1_MIDPOINT - T1) / CSF_T1_WIDTH)``: CSF is where the T1 is dark *and* GM/WM are low,
   which finds the ventricles, the fissures and the restored sulci inside the hull.
2. Per subject, a random spatial transform from subject space ``p`` (mm) to template space ``q`` (mm):
   rotation (small angles about each axis), scale (isotropic and per axis), shift ``s``, and a smooth elastic
   displacement ``d`` (Gaussian random values on a coarse control grid, cubic-upsampled).
3. The T1 and the four class scores are resampled with that one transform (trilinear), so labels move with
   the image. Labels: background where the warped hull < 0.5, else ``argmax(csf, gm, wm)``.
4. The image: partial-volume blur, gamma (contrast) jitter, a smooth multiplicative bias field, Rician noise,
   then 8-bit scaling by robust percentiles (`training.dataset.scale_to_uint8`).

Slice geometry: each subject gives ``n_slices`` (default 88) axial slices evenly spaced from the bottom of the
cerebellum to the vertex; a slice is ``176 x 208`` (H x W) with rows along left→right and columns along
posterior→anterior (the OASIS T88 convention: the head lies sideways in the array, anterior to the right).
Slices are stored inferior → superior.

Sites (ARCHITECTURE §4): ``build_cohort(..., sites=("A", "B"))`` gives every subject an acquisition site.
Site A is the cohort above; site B (`SITE_SHIFTS`) is a different scanner: a flatter contrast curve, a stronger
bias field, more noise, more in-plane blur and thick slices (through-plane partial volume). The labelled
``train`` split is site A only; ``pool``, ``val`` and ``test`` alternate sites, the shifted site first, so even a
one-subject split sees the shift (`assign_sites`). The site changes only the appearance model, never the
anatomy or the order of random draws.

Everything is a pure function of ``(seed, subject index, parameters)``: subject ``i`` gets its own
``numpy.random.SeedSequence(seed).spawn(...)[i]`` stream, so results do not depend on how many processes run.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy import ndimage

from qa_workflow.contract import BACKGROUND, CSF, GRAY_MATTER, IMAGE_HEIGHT, IMAGE_WIDTH, WHITE_MATTER, SegqaError
from training.dataset import DatasetWriter, assign_splits, scale_to_uint8

log = logging.getLogger(__name__)

#: T1 value (template scale 0..1) halfway between CSF (~0.3) and GM (~0.65) in the MNI152 2009a template.
CSF_T1_MIDPOINT = 0.48
#: Width of the soft "dark" step around the midpoint (template T1 units).
CSF_T1_WIDTH = 0.04
#: Typical CSF value of the template T1 (ventricles); restored sulci are drawn at this intensity.
CSF_T1 = 0.30
#: Sulcus restoration (see `sulcal_csf`): smoothing of the distance-to-WM map, ridge strength, minimum
#: distance from white matter, and how deep below the brain surface cortex is looked for (mm).
SULCUS_SIGMA_MM = 1.0
SULCUS_RIDGE = 0.5
SULCUS_MIN_DEPTH_MM = 1.5
CORTEX_DEPTH_MM = 18.0
#: Template voxels below this z index (mm above the volume's bottom) are left out of the slab: the template
#: cuts the brainstem/cerebellum at its lower edge and slices there would show the cut.
TEMPLATE_Z_MARGIN = 6


ORIENTATION = "slice rows run left→right, columns posterior→anterior; slices inferior→superior"


@dataclass(frozen=True)
class CohortParams:
    """Parameters of the generative model; the defaults are the documented cohort (docs/data.md)."""

    n_slices: int = 88                    # axial slices per subject, evenly spaced over the brain
    rotation_deg: tuple[float, float, float] = (5.0, 5.0, 10.0)  # max |angle| about x (pitch), y (roll), z (yaw)
    scale: tuple[float, float] = (0.90, 1.02)   # isotropic scale range (MNI brains are larger than T88's)
    anisotropy: float = 0.04              # extra per-axis scale, uniform in [1 - a, 1 + a]
    shift_mm: float = 4.0                 # max |shift| per in-plane axis, mm
    elastic_mm: float = 2.5               # std of the elastic displacement at control points, mm
    elastic_spacing_mm: float = 28.0      # control-point spacing of the elastic field, mm
    blur_mm: tuple[float, float] = (0.4, 1.1)   # partial-volume Gaussian blur sigma range, mm
    gamma: tuple[float, float] = (0.7, 1.4)     # contrast (gamma) jitter range
    bias_std: float = 0.18                # std of the log bias field at its control points
    bias_spacing_mm: float = 70.0         # control-point spacing of the bias field, mm
    noise: tuple[float, float] = (0.015, 0.05)  # Rician noise sigma range, relative to the WM intensity (~0.86)
    slice_thickness_mm: float = 0.0       # extra through-plane blur (Gaussian sigma, mm): thick-slice partial volume

    def __post_init__(self) -> None:
        if not isinstance(self.n_slices, int) or self.n_slices < 1:
            raise SegqaError(f"n_slices must be a positive integer, got {self.n_slices!r}")


#: The acquisition sites `segqa data synth --sites` knows: overrides of CohortParams' appearance fields.
#: Site A is the reference scanner (the defaults). Site B: gamma 0.50..0.65 (a flatter contrast curve: less
#: GM/WM contrast, brighter CSF), bias-field log-std 0.30 (A: 0.18), Rician noise 0.045..0.07 of WM (A:
#: 0.015..0.05), in-plane blur 0.9..1.4 mm (A: 0.4..1.1) and 1.5 mm of through-plane blur (thick slices).
#: docs/data.md has the same table with the measured effect.
SITE_SHIFTS: dict[str, dict[str, object]] = {
    "A": {},
    "B": {"gamma": (0.50, 0.65), "bias_std": 0.30, "noise": (0.045, 0.07), "blur_mm": (0.9, 1.4),
          "slice_thickness_mm": 1.5},
}
DEFAULT_SITES: tuple[str, ...] = ("A",)


def site_params(params: CohortParams, site: str) -> CohortParams:
    """``params`` with the appearance of ``site`` (one of SITE_SHIFTS); the geometry fields are untouched."""
    if site not in SITE_SHIFTS:
        raise SegqaError(f"unknown site {site!r}; known sites: {', '.join(SITE_SHIFTS)}")
    return replace(params, **SITE_SHIFTS[site])  # type: ignore[arg-type]


def parse_sites(text: str | None) -> tuple[str, ...]:
    """``"A,B"`` -> ("A", "B"); None or empty -> DEFAULT_SITES. Unknown or repeated names raise SegqaError."""
    if text is None or not text.strip():
        return DEFAULT_SITES
    names = tuple(part.strip() for part in text.split(","))
    unknown = [n for n in names if n not in SITE_SHIFTS]
    if unknown or len(set(names)) != len(names) or "" in names:
        raise SegqaError(f"--sites {text!r}: give distinct site names from {', '.join(SITE_SHIFTS)}, "
                         "comma-separated (the first is the labelled train split's site)")
    return names


def assign_sites(splits: dict[str, str], sites: tuple[str, ...], seed: int) -> dict[str, str]:
    """Subject -> site. ``train`` subjects get ``sites[0]``; in every other split the subjects, in a seeded random
    order, cycle through ``sites[1:] + sites[:1]`` (the shifted sites first, so a one-subject split sees the
    shift). Deterministic for a given seed and split assignment."""
    if not sites:
        raise SegqaError("at least one site is needed")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5173])
    cycle = sites[1:] + sites[:1]
    out: dict[str, str] = {}
    for split in sorted(set(splits.values())):
        members = sorted(s for s, sp in splits.items() if sp == split)
        if split == "train":
            out.update({s: sites[0] for s in members})
            continue
        for k, i in enumerate(rng.permutation(len(members))):
            out[members[int(i)]] = cycle[k % len(cycle)]
    return out


@dataclass
class Atlas:
    """Template-space arrays, all (X, Y, Z) float32 on the template's 1 mm grid.

    t1: skull-stripped T1 in 0..1; hull, csf, gm, wm: class scores in 0..1 (see the module docstring).
    brain_lo/brain_hi: the brain's bounding box (voxel indices, inclusive); center_vox its centre.
    """

    t1: np.ndarray
    hull: np.ndarray
    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain_lo: np.ndarray
    brain_hi: np.ndarray

    @property
    def center_vox(self) -> np.ndarray:
        return (self.brain_lo + self.brain_hi) / 2.0


@dataclass
class Subject:
    """One synthetic subject: image (S, H, W) uint8, labels (S, H, W) uint8 in 0..3, and what was drawn."""

    image: np.ndarray
    labels: np.ndarray
    info: dict = field(default_factory=dict)


def sulcal_csf(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Soft map (X, Y, Z) float32 in 0..1 of the sulcal CSF that the population average has blurred away.

    The MNI152 average keeps the big fissures and the ventricles but fills most sulci with gray matter. A
    sulcus sits on the midline of the gray matter between two white-matter banks, i.e. on a ridge of the
    distance to white matter. Ridges are where the Laplacian of that distance (Gaussian, sigma
    SULCUS_SIGMA_MM) is below -SULCUS_RIDGE, at least SULCUS_MIN_DEPTH_MM from white matter, in gray matter,
    and within CORTEX_DEPTH_MM of the brain's outer surface (so deep nuclei keep their gray matter).
    """
    white = wm >= np.maximum(gm, 0.25)
    dist_wm = ndimage.distance_transform_edt(~white).astype(np.float32)
    # depth below the surface only gates "cortex or not": the faster chamfer distance is precise enough
    depth = ndimage.distance_transform_cdt(hull > 0, metric="taxicab").astype(np.float32) / np.sqrt(3.0)
    ridge = -ndimage.gaussian_laplace(dist_wm, SULCUS_SIGMA_MM)
    return (_sigmoid((ridge - SULCUS_RIDGE) / 0.1) * _sigmoid((dist_wm - SULCUS_MIN_DEPTH_MM) / 0.3)
            * _sigmoid((CORTEX_DEPTH_MM - depth) / 2.0) * (gm > 0.3) * hull).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def atlas_class_scores(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> dict[str, np.ndarray]:
    """The cohort's template: T1 with sulci restored, and soft class scores.

    t1, gm, wm: (X, Y, Z) arrays in 0..1 (skull-stripped T1, GM and WM probabilities).
    Returns float32 (X, Y, Z) arrays ``t1`` (sulci darkened to the CSF level), ``hull`` (brain mask, holes
    filled), ``csf``, ``gm``, ``wm``. CSF is where the (restored) T1 is dark and GM/WM are low, inside the hull.
    """
    hull = ndimage.binary_fill_holes(t1 > 0).astype(np.float32)
    sulci = sulcal_csf(t1, gm, wm, hull)
    t1 = t1 * (1.0 - sulci) + CSF_T1 * sulci
    gm = gm * (1.0 - sulci)
    tissue = np.clip(gm + wm, 0.0, 1.0)
    dark = _sigmoid((CSF_T1_MIDPOINT - t1) / CSF_T1_WIDTH)
    csf = hull * (1.0 - tissue) * dark
    return {"t1": t1.astype(np.float32), "hull": hull, "csf": csf.astype(np.float32),
            "gm": (gm * hull).astype(np.float32), "wm": (wm * hull).astype(np.float32)}


def _load_nilearn_templates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 2009a T1, GM and WM maps at 1 mm from nilearn's package data (no network: these loaders
    read files inside site-packages/nilearn/datasets/data)."""
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is in the lock
        raise SegqaError(f"the atlas cohort needs nilearn (pip install nilearn): {exc}") from None
    arrays = []
    for loader in (datasets.load_mni152_template, datasets.load_mni152_gm_template,
                   datasets.load_mni152_wm_template):
        img = loader(resolution=1)
        if not np.allclose(img.affine[:3, :3], np.eye(3)):  # the warp below assumes 1 mm RAS voxels
            raise SegqaError(f"nilearn's {loader.__name__} is not on a 1 mm RAS grid (affine {img.affine.tolist()})")
        arrays.append(np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32))
    t1, gm, wm = arrays
    return t1 / max(float(t1.max()), 1e-6), gm / max(float(gm.max()), 1e-6), wm / max(float(wm.max()), 1e-6)


def crop_to_brain(t1: np.ndarray, *others: np.ndarray, margin: int = 8) -> tuple[list[np.ndarray], np.ndarray]:
    """Crop (X, Y, Z) arrays to the bounding box of ``t1 > 0`` plus ``margin`` voxels (halves the work).
    Returns the cropped arrays and the window's first voxel (x, y, z) in the original grid."""
    idx = np.argwhere(t1 > 0)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, t1.shape)
    window = tuple(slice(a, b) for a, b in zip(lo, hi))
    return [np.ascontiguousarray(a[window]) for a in (t1, *others)], lo


@lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Load and prepare the template once per process (a few seconds; forked workers inherit it)."""
    (t1, gm, wm), origin = crop_to_brain(*_load_nilearn_templates())
    scores = atlas_class_scores(t1, gm, wm)
    idx = np.argwhere(scores["hull"] > 0)
    lo, hi = idx.min(0).astype(np.float64), idx.max(0).astype(np.float64)
    lo[2] = max(lo[2], TEMPLATE_Z_MARGIN - origin[2])  # skip the template's cut-off bottom
    return Atlas(brain_lo=lo, brain_hi=hi, **scores)


# --------------------------------------------------------------------------------------------------------
# The random transform and the appearance model (pure functions of a Generator)

def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """3x3 rotation R = Rz @ Ry @ Rx for angles (about x, about y, about z) in radians."""
    ax, ay, az = angles_rad
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def smooth_random_field(rng: np.random.Generator, shape: tuple[int, ...], spacing_vox: tuple[float, ...],
                        std: float) -> np.ndarray:
    """A smooth random field of ``shape``: N(0, std) values on a control grid ``spacing_vox`` apart, upsampled
    with cubic splines. Returns float32 of ``shape``.

    The cubic-spline zoom is separable, so it is applied as one small (n_out x n_coarse) matrix per axis:
    the same field as ``ndimage.zoom(coarse, ..., order=3)``, about 20 times faster on a 88x176x208 grid.
    """
    coarse_shape = tuple(max(2, int(math.ceil(n / s)) + 1) for n, s in zip(shape, spacing_vox))
    out = rng.normal(0.0, std, size=coarse_shape)
    for axis, (n_out, n_coarse) in enumerate(zip(shape, coarse_shape)):
        out = np.moveaxis(np.tensordot(_spline_upsampler(n_coarse, n_out), out, axes=(1, axis)), 0, axis)
    return out.astype(np.float32)


@lru_cache(maxsize=32)
def _spline_upsampler(n_coarse: int, n_out: int) -> np.ndarray:
    """(n_out, n_coarse) matrix of 1-D cubic-spline upsampling (columns: the zoomed unit vectors)."""
    eye = np.eye(n_coarse)
    return ndimage.zoom(eye, (n_out / n_coarse, 1.0), order=3, mode="nearest", grid_mode=True)[:n_out]


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def sample_geometry(rng: np.random.Generator, params: CohortParams) -> dict:
    """Draw the subject's affine part: rotation angles (deg), per-axis scale, in-plane shift (mm)."""
    angles = rng.uniform(-1.0, 1.0, 3) * np.asarray(params.rotation_deg)
    iso = _uniform(rng, params.scale)
    scale = iso * rng.uniform(1.0 - params.anisotropy, 1.0 + params.anisotropy, 3)
    shift = np.array([*(rng.uniform(-1.0, 1.0, 2) * params.shift_mm), 0.0])
    return {"rotation_deg": angles.round(4).tolist(), "scale": scale.round(5).tolist(),
            "shift_mm": shift.round(4).tolist()}


def subject_to_template(geometry: dict) -> np.ndarray:
    """The 3x3 linear map A with q - c = A (p - s): subject mm → template mm (scale > 1: a bigger subject)."""
    rot = rotation_matrix(np.deg2rad(geometry["rotation_deg"]))
    return rot @ np.diag(1.0 / np.asarray(geometry["scale"]))


def slab_z_range(atlas: Atlas, a: np.ndarray, shift: np.ndarray) -> tuple[float, float]:
    """Superior-inferior extent (mm, subject space) of the template's brain box after the subject's affine."""
    corners = np.array([[x, y, z] for x in (atlas.brain_lo[0], atlas.brain_hi[0])
                        for y in (atlas.brain_lo[1], atlas.brain_hi[1])
                        for z in (atlas.brain_lo[2], atlas.brain_hi[2])])
    p = shift + (corners - atlas.center_vox) @ np.linalg.inv(a).T
    return float(p[:, 2].min()), float(p[:, 2].max())


def warp_to_subject(atlas: Atlas, geometry: dict, rng: np.random.Generator, params: CohortParams,
                    shape: tuple[int, int, int]) -> tuple[dict[str, np.ndarray], dict]:
    """Resample the atlas arrays onto the subject grid.

    shape: (S, H, W) = (slices, rows, cols). Rows run along template x (left→right), columns along y
    (posterior→anterior), slices along z (inferior→superior). Returns ``{"t1","hull","csf","gm","wm"}`` each
    float32 (S, H, W), and the slab geometry (z range, slice spacing).
    """
    n_s, n_h, n_w = shape
    a = subject_to_template(geometry)
    shift = np.asarray(geometry["shift_mm"], dtype=np.float64)
    z_lo, z_hi = slab_z_range(atlas, a, shift)
    # rotated box corners overstate the brain's extent; trim a little so end slices still show brain
    trim = 0.04 * (z_hi - z_lo)
    z_lo, z_hi = z_lo + trim, z_hi - 0.5 * trim
    dz = (z_hi - z_lo) / max(n_s - 1, 1)
    zs = z_lo + dz * np.arange(n_s, dtype=np.float32)
    xs = np.arange(n_h, dtype=np.float32) - (n_h - 1) / 2.0
    ys = np.arange(n_w, dtype=np.float32) - (n_w - 1) / 2.0
    pz, px, py = np.meshgrid(zs, xs, ys, indexing="ij")  # each (S, H, W)
    spacing = (max(dz, 1.0), 1.0, 1.0)
    ctrl = tuple(params.elastic_spacing_mm / s for s in spacing)
    disp = [smooth_random_field(rng, shape, ctrl, params.elastic_mm) for _ in range(3)]  # (dx, dy, dz) in mm
    rel = np.stack([px - shift[0], py - shift[1], pz - shift[2]])  # (3, S, H, W)
    q = np.tensordot(a.astype(np.float32), rel, axes=1)
    coords = np.empty_like(q)
    for k in range(3):
        coords[k] = q[k] + disp[k] + atlas.center_vox[k]
    out = {}
    for name in ("t1", "hull", "csf", "gm", "wm"):
        out[name] = ndimage.map_coordinates(getattr(atlas, name), coords, order=1, mode="constant", cval=0.0,
                                            prefilter=False, output=np.float32)
    return out, {"z_range_mm": [round(float(z_lo), 3), round(float(z_hi), 3)], "slice_spacing_mm": round(dz, 4)}


def labels_from_scores(hull: np.ndarray, csf: np.ndarray, gm: np.ndarray, wm: np.ndarray,
                       hull_threshold: float = 0.5) -> np.ndarray:
    """Labels from warped class scores (any equal shapes): background where ``hull < hull_threshold``,
    else the argmax of (csf, gm, wm). Returns uint8 of the same shape with contract class ids."""
    ids = np.array([CSF.id, GRAY_MATTER.id, WHITE_MATTER.id], dtype=np.uint8)
    best = ids[np.argmax(np.stack([csf, gm, wm]), axis=0)]
    return np.where(hull >= hull_threshold, best, np.uint8(BACKGROUND.id)).astype(np.uint8)


def render_image(t1: np.ndarray, rng: np.random.Generator, params: CohortParams, slice_spacing_mm: float
                 ) -> tuple[np.ndarray, dict]:
    """The scanner model on a warped T1 (S, H, W) in 0..1: blur, gamma, bias field, Rician noise, 8 bit.

    Returns the uint8 image (S, H, W) and the drawn appearance parameters.
    """
    blur = _uniform(rng, params.blur_mm)
    gamma = float(np.exp(rng.uniform(np.log(params.gamma[0]), np.log(params.gamma[1]))))
    noise = _uniform(rng, params.noise) * 0.86
    sigma_z = blur / max(slice_spacing_mm, 1.0)
    if params.slice_thickness_mm > 0:  # thick slices: neighbouring tissue blurs into the slice
        sigma_z = math.hypot(sigma_z, params.slice_thickness_mm / max(slice_spacing_mm, 1.0))
    img = ndimage.gaussian_filter(t1, sigma=(sigma_z, blur, blur), mode="constant")
    img = np.clip(img, 0.0, None) ** gamma
    bias_ctrl = (params.bias_spacing_mm / max(slice_spacing_mm, 1.0), params.bias_spacing_mm, params.bias_spacing_mm)
    bias = np.exp(smooth_random_field(rng, img.shape, bias_ctrl, params.bias_std))
    img = img * bias
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt((img + noise * n1) ** 2 + (noise * n2) ** 2)
    appearance = {"blur_mm": round(blur, 4), "gamma": round(gamma, 4), "noise_sigma": round(noise, 5),
                  "bias_range": [round(float(bias.min()), 4), round(float(bias.max()), 4)]}
    return scale_to_uint8(img), appearance


def synth_subject(seed: np.random.SeedSequence | int, params: CohortParams = CohortParams(),
                  atlas: Atlas | None = None) -> Subject:
    """Generate one subject: image and labels (n_slices, 176, 208) uint8. Deterministic in ``seed``."""
    atlas = atlas if atlas is not None else load_atlas()
    rng = np.random.default_rng(seed)
    geometry = sample_geometry(rng, params)
    shape = (params.n_slices, IMAGE_HEIGHT, IMAGE_WIDTH)
    warped, slab = warp_to_subject(atlas, geometry, rng, params, shape)
    labels = labels_from_scores(warped["hull"], warped["csf"], warped["gm"], warped["wm"])
    image, appearance = render_image(warped["t1"], rng, params, slab["slice_spacing_mm"])
    return Subject(image=image, labels=labels, info={**geometry, **slab, **appearance})


# --------------------------------------------------------------------------------------------------------
# The cohort on disk (the imperative shell)

def subject_ids(n_subjects: int) -> list[str]:
    return [f"sub-{i + 1:03d}" for i in range(n_subjects)]


def _subject_seeds(seed: int, n_subjects: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(seed).spawn(n_subjects)


def _synth_one(args: tuple[np.random.SeedSequence, CohortParams]) -> Subject:
    seed, params = args
    return synth_subject(seed, params)


def _jsonable(values: dict[str, object]) -> dict[str, object]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _iter_subjects(seeds: list[np.random.SeedSequence], params: list[CohortParams], workers: int
                   ) -> Iterator[Subject]:
    """Subjects in order (``params[i]`` for subject i); in ``workers`` processes when > 1 (fork: children share
    the loaded template)."""
    if workers <= 1 or len(seeds) <= 1:
        for s, p in zip(seeds, params):
            yield synth_subject(s, p)
        return
    load_atlas()  # load once in the parent; forked workers inherit it
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        yield from pool.map(_synth_one, list(zip(seeds, params)))


def default_workers(n_subjects: int) -> int:
    """One process per core, at most one per subject (each worker holds ~0.5 GB)."""
    return max(1, min(n_subjects, os.cpu_count() or 1, 8))


def build_cohort(out: str | os.PathLike[str], n_subjects: int, seed: int = 0,
                 params: CohortParams = CohortParams(), workers: int | None = None, overwrite: bool = False,
                 progress: Callable[[str], None] | None = None, sites: tuple[str, ...] = DEFAULT_SITES) -> Path:
    """Write an atlas-cohort dataset of ``n_subjects`` to ``out`` (training.dataset format), atomically.

    Splits by subject via `assign_splits(subjects, seed)`, sites via `assign_sites` (``sites[0]`` is the train
    split's site; each subject is rendered with `site_params(params, its site)`). ``progress(subject_id)`` is
    called after each subject is written. Returns the dataset folder. Same ``seed``, ``params`` and ``sites`` →
    identical image and mask bytes, whatever ``workers`` is.
    """
    if not isinstance(n_subjects, int) or n_subjects < 1:
        raise SegqaError(f"--subjects must be a positive integer, got {n_subjects!r}")
    ids = subject_ids(n_subjects)
    splits = assign_splits(ids, seed)
    for site in sites:
        site_params(params, site)  # unknown names fail before any work
    site_of = assign_sites(splits, tuple(sites), seed)
    workers = default_workers(n_subjects) if workers is None else max(1, int(workers))
    params_meta = _jsonable(asdict(params))
    subjects_meta: dict[str, dict] = {}
    with DatasetWriter(out, overwrite=overwrite, source="atlas-cohort", orientation=ORIENTATION,
                       template="MNI152 2009a (nilearn package data)", seed=seed,
                       generator_params=params_meta, subject_params=subjects_meta, sites=list(sites),
                       site_shifts={s: _jsonable(SITE_SHIFTS[s]) for s in sites}) as writer:
        per_subject = [site_params(params, site_of[sid]) for sid in ids]
        for sid, subject in zip(ids, _iter_subjects(_subject_seeds(seed, n_subjects), per_subject, workers)):
            for k in range(subject.image.shape[0]):
                writer.add(sid, k, subject.image[k], subject.labels[k], splits[sid], site_of[sid])
            subjects_meta[sid] = {**subject.info, "site": site_of[sid]}
            log.info("%s: %d slices (%s)", sid, subject.image.shape[0], splits[sid])
            if progress is not None:
                progress(sid)
    return Path(out)
