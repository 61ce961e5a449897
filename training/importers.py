"""Importers: real data into the dataset format (`training.dataset`), all or nothing.

Three sources (docs/data.md describes each convention in full):

``import_oasis(DIR)``
    OASIS-1 Analyze 7.5 volumes. Images: ``*_t88_masked_gfc.hdr/.img`` (T88 atlas space, 176 x 208 x 176,
    16-bit, big-endian as OASIS ships them); masks: the FSL_SEG file of the same stem plus ``_fseg``
    (176 x 208 x 88). Mask slice ``k`` pairs with image slice ``2k`` (every other image slice; a mask with as
    many slices as the image pairs 1:1 and is then also taken every other slice). Slices are ``vol[:, :, z]``:
    rows = the volume's first axis (176), columns = its second (208), as stored, no flips.
    Mask values: class ids 0..3 are used as they are; otherwise the OASIS binning applies
    (raw <= 150 -> 0, <= 400 -> 1, <= 625 -> 2, > 625 -> 3), which is what 16-bit class ids read with the other
    byte order (1, 2, 3 -> 256, 512, 768) look like. Raw values outside 0..1023 are an error.
``import_nifti(DIR)``
    ``<name>.nii[.gz]`` with ``<name>_seg|_label|_labels|_mask|_dseg.nii[.gz]`` (labels 0..3). Both are brought
    to the closest canonical (RAS) orientation, resampled in-plane to 1 mm (linear for the image, nearest for
    labels), and cropped/padded to 176 x 208 around the labelled region; every axial slice is kept.
``import_png(DIR)``
    ``<name>.png`` + ``<name>_mask.png``, 176 x 208, masks 0..3 (or 255 = ignore). Subject = the sub-folder,
    else the name up to a trailing slice number (``sub-01_045.png`` -> ``sub-01``, slice 45).

Intensities of volumes are scaled to 8 bit per volume by `training.dataset.scale_to_uint8` (the 0.5th and
99.5th percentiles of all voxels map to 0 and 255). Every bad input raises one SegqaError naming the file and
what was expected; `DatasetWriter` builds in a temporary folder, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qa_workflow.contract import IGNORE_LABEL, IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES, SegqaError
from training.dataset import DatasetWriter, assign_splits, scale_to_uint8

Progress = Callable[..., None]

# --------------------------------------------------------------------------------------------------------
# OASIS-1 Analyze

#: Upper edges of the OASIS FSL_SEG binning: raw <= 150 -> 0, <= 400 -> 1, <= 625 -> 2, above -> 3.
OASIS_BIN_EDGES = (150, 400, 625)
#: Largest raw mask value the binning accepts: class 3 in the high byte with any low byte (3 << 8 | 0xff).
OASIS_RAW_MAX = 1023
OASIS_IMAGE_GLOB = "*_masked_gfc.hdr"
OASIS_MASK_SUFFIX = "_fseg"
#: Analyze 7.5 datatype codes -> numpy dtypes (512 = uint16: the NIfTI code some writers put in Analyze headers).
_ANALYZE_DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 512: np.uint16}


def analyze_layout(hdr_path: str | os.PathLike[str]) -> tuple[np.dtype, tuple[int, ...], int]:
    """Check an Analyze 7.5 ``.hdr/.img`` pair without reading its data: (dtype with byte order, shape, offset).

    The header is parsed by nibabel (byte order detected from it); the ``.img`` must hold exactly
    ``prod(shape) * itemsize`` bytes after the header's offset. Raises SegqaError naming the file otherwise.
    """
    import nibabel as nib

    hdr_path = Path(hdr_path)
    img_path = hdr_path.with_suffix(".img")
    try:
        with hdr_path.open("rb") as fh:
            header = nib.AnalyzeHeader.from_fileobj(fh, check=False)
    except FileNotFoundError:
        raise SegqaError(f"{hdr_path}: Analyze header missing") from None
    except Exception as exc:  # nibabel raises several types for a corrupt header
        raise SegqaError(f"{hdr_path}: not a readable Analyze 7.5 header ({exc})") from None
    code = int(header["datatype"])
    if code not in _ANALYZE_DTYPES:
        raise SegqaError(f"{hdr_path}: Analyze datatype {code} not supported; expected one of "
                         f"{', '.join(f'{k} ({np.dtype(v).name})' for k, v in _ANALYZE_DTYPES.items())}")
    dtype = np.dtype(_ANALYZE_DTYPES[code]).newbyteorder(header.endianness)
    shape = tuple(int(n) for n in header.get_data_shape())
    if not shape or min(shape) < 1:
        raise SegqaError(f"{hdr_path}: header gives an empty shape {shape}")
    offset = int(header.get_data_offset())
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if not img_path.is_file():
        raise SegqaError(f"{img_path}: image data missing (the header {hdr_path.name} has no .img beside it)")
    actual = img_path.stat().st_size
    if actual != expected:
        what = "truncated" if actual < expected else "too large"
        raise SegqaError(f"{img_path}: {what}: {actual} bytes, expected {expected} for shape "
                         f"{'x'.join(map(str, shape))} of {dtype.name} ({'big' if dtype.byteorder == '>' else 'little'}"
                         f"-endian) from {hdr_path.name}")
    return dtype, shape, offset


def read_analyze(hdr_path: str | os.PathLike[str]) -> np.ndarray:
    """Read an Analyze 7.5 ``.hdr/.img`` pair (checked by `analyze_layout`) into an array of the header's
    shape, x fastest as stored, in native byte order. Trailing singleton dimensions are dropped. Header scale
    factors are ignored (images are rescaled by percentiles, masks are binned)."""
    dtype, shape, offset = analyze_layout(hdr_path)
    data = np.fromfile(Path(hdr_path).with_suffix(".img"), dtype=dtype, offset=offset).reshape(shape, order="F")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data.astype(dtype.newbyteorder("="), copy=False)


def bin_oasis_mask(raw: np.ndarray, where: str = "mask") -> np.ndarray:
    """OASIS FSL_SEG values -> class ids (uint8, same shape).

    Values that already are class ids 0..3 pass through; anything else is binned raw <= 150 -> 0,
    <= 400 -> 1, <= 625 -> 2, > 625 -> 3. Raises SegqaError for non-integer values or values outside
    0..OASIS_RAW_MAX.
    """
    raw = np.asarray(raw)
    if raw.size == 0:
        return raw.astype(np.uint8)
    if np.issubdtype(raw.dtype, np.floating) and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
        raise SegqaError(f"{where}: mask values must be integers; found non-integer values")
    lo, hi = int(raw.min()), int(raw.max())
    if lo < 0 or hi > OASIS_RAW_MAX:
        bad = np.unique(raw[(raw < 0) | (raw > OASIS_RAW_MAX)])[:5]
        raise SegqaError(f"{where}: mask values outside the OASIS binning (expected class ids 0..3 or raw "
                         f"0..{OASIS_RAW_MAX} binned at {', '.join(map(str, OASIS_BIN_EDGES))}); found "
                         f"{', '.join(str(int(v)) for v in bad)}")
    if hi < NUM_CLASSES:
        return raw.astype(np.uint8)
    return np.digitize(raw, np.asarray(OASIS_BIN_EDGES) + 0.5, right=False).astype(np.uint8)


def pair_oasis_slices(n_image_slices: int, n_mask_slices: int, where: str) -> list[tuple[int, int]]:
    """(image z, mask z) pairs. A mask with half the image's slices pairs mask k with image 2k; a mask with
    as many slices pairs 1:1 and is taken every other slice (k = 0, 2, 4, ...), so both give one pair per
    2 mm. Anything else raises SegqaError."""
    if n_image_slices == 2 * n_mask_slices:
        return [(2 * k, k) for k in range(n_mask_slices)]
    if n_image_slices == n_mask_slices:
        return [(k, k) for k in range(0, n_mask_slices, 2)]
    raise SegqaError(f"{where}: mask has {n_mask_slices} slices but its image has {n_image_slices}; expected "
                     f"half as many (every other image slice has a mask slice) or the same number")


def _oasis_subject(stem: str) -> str:
    """``OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc`` -> ``OAS1_0001_MR1``."""
    return _subject_id(stem.split("_mpr")[0] if "_mpr" in stem else stem)


@dataclass(frozen=True)
class _VolumePair:
    subject: str
    image: Path
    mask: Path


def find_oasis_pairs(root: Path) -> list[_VolumePair]:
    """Pair every ``*_masked_gfc.hdr`` with ``<stem>_fseg.hdr`` anywhere under ``root``."""
    _require_dir(root, "OASIS")
    images = sorted(p for p in root.rglob(OASIS_IMAGE_GLOB) if not p.stem.endswith(OASIS_MASK_SUFFIX))
    masks = {p.stem[: -len(OASIS_MASK_SUFFIX)]: p for p in root.rglob(f"*{OASIS_MASK_SUFFIX}.hdr")}
    if not images and not masks:
        analyze = sorted(root.rglob("*.hdr"))
        hint = f" (found {len(analyze)} other Analyze header(s), e.g. {analyze[0].name})" if analyze else ""
        raise SegqaError(f"{root}: no OASIS T88 images (*_masked_gfc.hdr/.img) or FSL_SEG masks "
                         f"(*_fseg.hdr/.img) found{hint}")
    pairs: list[_VolumePair] = []
    for image in images:
        mask = masks.pop(image.stem, None)
        if mask is None:
            raise SegqaError(f"{image}: image without its mask; expected {image.stem}{OASIS_MASK_SUFFIX}.hdr/.img "
                             f"(FSL_SEG) under {root}")
        pairs.append(_VolumePair(_oasis_subject(image.stem), image, mask))
    if masks:
        stem, mask = sorted(masks.items())[0]
        raise SegqaError(f"{mask}: mask without its image; expected {stem}.hdr/.img under {root}")
    for pair in pairs:  # sizes and headers of every file before any work, so a bad file fails fast
        analyze_layout(pair.image)
        analyze_layout(pair.mask)
    return _unique_subjects(pairs)


def oasis_slices(pair: _VolumePair) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(slice index, image (176, 208) uint8, mask (176, 208) uint8) for one OASIS subject."""
    image = read_analyze(pair.image)
    mask_raw = read_analyze(pair.mask)
    for vol, path, kind in ((image, pair.image, "image"), (mask_raw, pair.mask, "mask")):
        if vol.ndim != 3 or vol.shape[:2] != (IMAGE_HEIGHT, IMAGE_WIDTH):
            raise SegqaError(f"{path.with_suffix('.img')}: {kind} of shape {'x'.join(map(str, vol.shape))}; "
                             f"expected {IMAGE_HEIGHT}x{IMAGE_WIDTH}xN (OASIS T88 space: images 176x208x176, "
                             f"FSL_SEG masks 176x208x88)")
    mask = bin_oasis_mask(mask_raw, str(pair.mask.with_suffix(".img")))
    pairs = pair_oasis_slices(image.shape[2], mask.shape[2], str(pair.mask.with_suffix(".img")))
    image8 = scale_to_uint8(image)
    for index, (image_z, mask_z) in enumerate(pairs):
        yield index, image8[:, :, image_z], mask[:, :, mask_z]


def import_oasis(src: str | os.PathLike[str], out: str | os.PathLike[str], seed: int = 0,
                 overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Import an OASIS-1 folder (any depth: disc folders, subject folders) into a dataset at ``out``."""
    pairs = find_oasis_pairs(Path(src))
    return _write_volumes(pairs, oasis_slices, out, seed, overwrite, progress, source="oasis-1",
                          src=src, conventions="OASIS T88 Analyze; mask slice k <-> image slice 2k; "
                          "rows = first axis, columns = second axis, as stored")


# --------------------------------------------------------------------------------------------------------
# NIfTI

NIFTI_LABEL_SUFFIXES = ("_seg", "_label", "_labels", "_mask", "_dseg")
_NIFTI_EXT = (".nii.gz", ".nii")


def _nifti_stem(path: Path) -> str:
    for ext in _NIFTI_EXT:
        if path.name.endswith(ext):
            return path.name[: -len(ext)]
    return path.stem


def find_nifti_pairs(root: Path) -> list[_VolumePair]:
    """Pair ``<name>.nii[.gz]`` with ``<name><suffix>.nii[.gz]`` (suffix in NIFTI_LABEL_SUFFIXES) per folder."""
    _require_dir(root, "NIfTI")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(_NIFTI_EXT))
    if not files:
        raise SegqaError(f"{root}: no NIfTI volumes (*.nii or *.nii.gz) found; expected <name>.nii.gz with "
                         f"<name>_seg.nii.gz (or {', '.join(NIFTI_LABEL_SUFFIXES[1:])})")
    labels: dict[tuple[Path, str], Path] = {}
    images: list[Path] = []
    for f in files:
        stem = _nifti_stem(f)
        suffix = next((s for s in NIFTI_LABEL_SUFFIXES if stem.endswith(s)), None)
        if suffix is not None:
            labels[(f.parent, stem[: -len(suffix)])] = f
        else:
            images.append(f)
    pairs = []
    for image in images:
        key = (image.parent, _nifti_stem(image))
        label = labels.pop(key, None)
        if label is None:
            raise SegqaError(f"{image}: image without its label volume; expected {key[1]}_seg.nii.gz (or "
                             f"{', '.join(s + '.nii[.gz]' for s in NIFTI_LABEL_SUFFIXES[1:])}) beside it")
        pairs.append(_VolumePair(_subject_id(key[1]), image, label))
    if labels:
        (folder, stem), label = sorted(labels.items())[0]
        raise SegqaError(f"{label}: label volume without its image; expected {folder / stem}.nii[.gz]")
    return _unique_subjects(pairs)


def _load_nifti(path: Path):
    import nibabel as nib

    try:
        img = nib.load(str(path))
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj)
    except FileNotFoundError:
        raise SegqaError(f"{path}: file missing") from None
    except Exception as exc:  # nibabel: ImageFileError, EOFError, zlib errors, ValueError ...
        raise SegqaError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SegqaError(f"{path}: shape {'x'.join(map(str, data.shape))} cannot be brought to "
                         f"{IMAGE_HEIGHT}x{IMAGE_WIDTH} axial slices: expected a 3-D volume")
    return data, img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])


def resample_inplane(volume: np.ndarray, zooms: tuple[float, float], order: int) -> np.ndarray:
    """Resample (X, Y, Z) in-plane to 1 mm voxels (order 1 for images, 0 for labels); Z is kept."""
    from scipy import ndimage

    factors = (zooms[0], zooms[1], 1.0)
    if np.allclose(factors, 1.0, atol=1e-3):
        return volume
    vol = volume.astype(np.float32) if order > 0 else volume
    return ndimage.zoom(vol, factors, order=order, mode="nearest", grid_mode=True)


def crop_or_pad(volume: np.ndarray, center: tuple[float, float], size: tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH)
                ) -> np.ndarray:
    """Cut a (size[0], size[1], Z) window out of (X, Y, Z) centred on ``center`` (x, y), padding with zeros."""
    out = np.zeros((size[0], size[1], volume.shape[2]), dtype=volume.dtype)
    src, dst = [], []
    for axis in range(2):
        start = int(round(center[axis] - size[axis] / 2.0))
        lo, hi = max(start, 0), min(start + size[axis], volume.shape[axis])
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[dst[0], dst[1]] = volume[src[0], src[1]]
    return out


def nifti_slices(pair: _VolumePair) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(slice index, image (176, 208) uint8, labels (176, 208) uint8) for one NIfTI pair."""
    image, img_affine, zooms = _load_nifti(pair.image)
    labels, lab_affine, _ = _load_nifti(pair.mask)
    if image.shape != labels.shape or not np.allclose(img_affine, lab_affine, atol=1e-3):
        raise SegqaError(f"{pair.mask}: label grid {'x'.join(map(str, labels.shape))} does not match its image "
                         f"{pair.image.name} ({'x'.join(map(str, image.shape))}); expected the same shape and affine")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(labels == np.round(labels)):
            raise SegqaError(f"{pair.mask}: label values must be integers 0..{NUM_CLASSES - 1}")
    labels = labels.astype(np.int64)
    bad = _bad_labels(labels)
    if bad.any():
        found = ", ".join(str(int(v)) for v in np.unique(labels[bad])[:5])
        raise SegqaError(f"{pair.mask}: label values must be 0..{NUM_CLASSES - 1} (background, csf, gray_matter, "
                         f"white_matter) or {IGNORE_LABEL} (ignore); found {found}")
    image = resample_inplane(image, zooms[:2], order=1)
    labels = resample_inplane(labels.astype(np.uint8), zooms[:2], order=0)
    fg = np.argwhere((labels > 0).any(axis=2))
    if fg.size == 0:
        raise SegqaError(f"{pair.mask}: no labelled voxels (all background); nothing to import")
    lo, hi = fg.min(0), fg.max(0)
    extent = hi - lo + 1
    if extent[0] > IMAGE_HEIGHT or extent[1] > IMAGE_WIDTH:
        raise SegqaError(f"{pair.image}: shape {'x'.join(map(str, image.shape))} (at 1 mm in-plane) cannot be "
                         f"brought to {IMAGE_HEIGHT}x{IMAGE_WIDTH}: the labelled region spans {extent[0]}x{extent[1]} "
                         f"pixels, more than fits without cutting labels")
    center = ((lo[0] + hi[0] + 1) / 2.0, (lo[1] + hi[1] + 1) / 2.0)
    image8 = crop_or_pad(scale_to_uint8(image), center)
    labels = crop_or_pad(labels, center)
    for z in range(image8.shape[2]):
        yield z, image8[:, :, z], labels[:, :, z]


def import_nifti(src: str | os.PathLike[str], out: str | os.PathLike[str], seed: int = 0,
                 overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Import NIfTI image + label volumes into a dataset at ``out``."""
    pairs = find_nifti_pairs(Path(src))
    return _write_volumes(pairs, nifti_slices, out, seed, overwrite, progress, source="nifti", src=src,
                          conventions="canonical RAS; rows = left->right, columns = posterior->anterior; "
                          "1 mm in-plane; cropped/padded around the labels")


# --------------------------------------------------------------------------------------------------------
# PNG pairs

PNG_MASK_SUFFIX = "_mask"
_SLICE_NAME = re.compile(r"^(?P<subject>.+?)[_-](?:slice[_-]?|z)?(?P<slice>\d{1,4})$", re.IGNORECASE)


def _png_subject_slice(path: Path, root: Path, order: int) -> tuple[str, int]:
    rel = path.relative_to(root)
    if len(rel.parts) > 1:  # DIR/<subject>/<name>.png: the slice is the name's trailing number
        number = re.search(r"(\d{1,4})$", path.stem)
        return _subject_id(rel.parts[0]), int(number[1]) if number else order
    m = _SLICE_NAME.match(path.stem)
    if m:
        return _subject_id(m["subject"]), int(m["slice"])
    return _subject_id(path.stem), 0


def _load_png_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    def read(path: Path, kind: str) -> np.ndarray:
        try:
            with Image.open(path) as im:
                if kind == "mask" and im.mode == "P":
                    arr = np.asarray(im)  # palette indices are the labels
                elif im.mode in ("I;16", "I;16B", "I"):
                    arr = np.asarray(im)
                elif im.mode in ("L",) or kind == "image":
                    arr = np.asarray(im.convert("L"))
                else:
                    arr = np.asarray(im)
        except OSError as exc:
            raise SegqaError(f"{path}: unreadable {kind} PNG ({exc})") from None
        if arr.ndim != 2:
            raise SegqaError(f"{path}: {kind} has {arr.shape[2]} channels; expected a single-channel label image")
        if arr.shape != (IMAGE_HEIGHT, IMAGE_WIDTH):
            hint = " (transposed?)" if arr.shape == (IMAGE_WIDTH, IMAGE_HEIGHT) else ""
            raise SegqaError(f"{path}: {kind} is {arr.shape[0]}x{arr.shape[1]}{hint}; expected "
                             f"{IMAGE_HEIGHT}x{IMAGE_WIDTH} (H x W)")
        return arr

    image = read(image_path, "image")
    if image.dtype != np.uint8:
        image = scale_to_uint8(image)
    mask = read(mask_path, "mask").astype(np.int64)
    bad = _bad_labels(mask)
    if bad.any():
        found = ", ".join(str(int(v)) for v in np.unique(mask[bad])[:5])
        raise SegqaError(f"{mask_path}: mask values must be 0..{NUM_CLASSES - 1} (or {IGNORE_LABEL} = ignore), "
                         f"found {found}")
    return image, mask.astype(np.uint8)


def find_png_pairs(root: Path) -> list[tuple[str, int, Path, Path]]:
    """(subject, slice, image, mask) for every ``<name>.png`` + ``<name>_mask.png`` under ``root``."""
    _require_dir(root, "PNG")
    files = sorted(root.rglob("*.png"))
    if not files:
        raise SegqaError(f"{root}: no PNG files found; expected <name>.png with <name>{PNG_MASK_SUFFIX}.png")
    masks = {p.with_name(p.name[: -len(PNG_MASK_SUFFIX) - 4] + ".png"): p for p in files
             if p.stem.endswith(PNG_MASK_SUFFIX)}
    images = [p for p in files if not p.stem.endswith(PNG_MASK_SUFFIX)]
    out: list[tuple[str, int, Path, Path]] = []
    seen: dict[tuple[str, int], Path] = {}
    for order, image in enumerate(images):
        mask = masks.pop(image, None)
        if mask is None:
            raise SegqaError(f"{image}: image without its mask; expected {image.stem}{PNG_MASK_SUFFIX}.png beside it")
        subject, index = _png_subject_slice(image, root, order)
        if (subject, index) in seen:
            raise SegqaError(f"{image}: slice {subject}/{index:03d} given twice (also {seen[subject, index]})")
        seen[subject, index] = image
        out.append((subject, index, image, mask))
    if masks:
        image, mask = sorted(masks.items())[0]
        raise SegqaError(f"{mask}: mask without its image; expected {image}")
    return out


def import_png(src: str | os.PathLike[str], out: str | os.PathLike[str], seed: int = 0, overwrite: bool = False,
               progress: Progress | None = None) -> Path:
    """Import a folder of ``<name>.png`` + ``<name>_mask.png`` slices into a dataset at ``out``."""
    root = Path(src)
    items = find_png_pairs(root)
    splits = assign_splits(sorted({s for s, *_ in items}), seed)
    with DatasetWriter(out, overwrite=overwrite, source="png", imported_from=str(root.resolve()), seed=seed) as w:
        for subject, index, image_path, mask_path in items:
            image, mask = _load_png_pair(image_path, mask_path)
            w.add(subject, index, image, mask, splits[subject])
            if progress is not None:
                progress(f"{subject}/{index:03d}", len(items))
    return Path(out)


# --------------------------------------------------------------------------------------------------------
# shared

_SUBJECT_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _subject_id(name: str) -> str:
    """A name made into a valid subject id (contract: letters, digits, '.', '_', '-'; at most 64)."""
    sid = _SUBJECT_BAD_CHARS.sub("-", name).strip("-._")[:64]
    if not sid:
        raise SegqaError(f"cannot make a subject id from {name!r}: expected letters or digits in it")
    return sid


def _bad_labels(labels: np.ndarray) -> np.ndarray:
    """True where an integer label is neither a class id 0..3 nor IGNORE_LABEL."""
    return ((labels < 0) | (labels >= NUM_CLASSES)) & (labels != IGNORE_LABEL)


def _require_dir(root: Path, kind: str) -> None:
    if not root.exists():
        raise SegqaError(f"{root}: no such folder (expected a folder of {kind} files)")
    if not root.is_dir():
        raise SegqaError(f"{root}: not a folder (expected a folder of {kind} files)")


def _unique_subjects(pairs: list[_VolumePair]) -> list[_VolumePair]:
    seen: dict[str, Path] = {}
    for p in pairs:
        if p.subject in seen:
            raise SegqaError(f"{p.image}: subject {p.subject} appears twice (also {seen[p.subject]}); "
                             "expected one image volume per subject")
        seen[p.subject] = p.image
    return pairs


def _write_volumes(pairs: list[_VolumePair], slicer: Callable[[_VolumePair], Iterable], out, seed: int,
                   overwrite: bool, progress: Progress | None, source: str, src, conventions: str) -> Path:
    splits = assign_splits([p.subject for p in pairs], seed)
    with DatasetWriter(out, overwrite=overwrite, source=source, imported_from=str(Path(src).resolve()),
                       seed=seed, conventions=conventions,
                       intensity_scaling="per volume: 0.5th..99.5th percentile -> 0..255") as writer:
        for pair in pairs:
            for index, image, mask in slicer(pair):
                writer.add(pair.subject, index, image, mask, splits[pair.subject])
            if progress is not None:
                progress(pair.subject, len(pairs))
    return Path(out)
