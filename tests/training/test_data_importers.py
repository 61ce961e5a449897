"""Importers: OASIS-1 Analyze, NIfTI and PNG pairs into the dataset format, and every bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from qa_workflow.cli import main
from qa_workflow.contract import IGNORE_LABEL, SegqaError
from training.dataset import load_slices, read_index, read_meta, scale_to_uint8
from training.importers import bin_oasis_mask, import_nifti, import_oasis, import_png, read_analyze

H, W = 176, 208


# ------------------------------------------------------------------------------------------------ helpers

def write_analyze(stem: Path, data: np.ndarray, code: int = 512, endian: str = ">") -> Path:
    """Write an Analyze 7.5 pair as OASIS ships it: big-endian, datatype 512 (uint16) or 4 (int16)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    header = nib.AnalyzeHeader(endianness=endian)
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.int16)
    header["datatype"] = code
    dtype = {512: "u2", 4: "i2", 2: "u1"}[code]
    header["bitpix"] = np.dtype(dtype).itemsize * 8
    stem.with_suffix(".hdr").write_bytes(header.binaryblock)
    stem.with_suffix(".img").write_bytes(np.asarray(data).astype(endian + dtype).tobytes(order="F"))
    return stem.with_suffix(".hdr")


def oasis_subject(root: Path, sid: str, n_image: int = 8, n_mask: int | None = None,
                  mask_raw: np.ndarray | None = None, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """An OASIS-like subject folder: T88 image (H, W, n_image) uint16 and FSL_SEG mask (H, W, n_image/2)."""
    rng = rng or np.random.default_rng(0)
    n_mask = n_image // 2 if n_mask is None else n_mask
    image = rng.integers(0, 1500, size=(H, W, n_image)).astype(np.uint16)
    image[0, 0, :] = 40000  # above int16: only a uint16 big-endian reader gets this right
    for z in range(n_image):
        image[10 + z, 20:30, z] = 60000  # a marker that says which image slice this is
    stem = f"{sid}_mpr_n4_anon_111_t88_masked_gfc"
    write_analyze(root / sid / "PROCESSED" / "MPRAGE" / "T88_111" / stem, image)
    if mask_raw is None:
        mask_raw = np.zeros((H, W, n_mask), np.uint16)
        for k in range(n_mask):
            mask_raw[50:60, 50:60, k] = [0, 256, 512, 768][k % 4]
    write_analyze(root / sid / "FSL_SEG" / f"{stem}_fseg", mask_raw)
    return image, mask_raw


def nothing_left(out: Path) -> bool:
    return not out.exists() and not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())


# ------------------------------------------------------------------------------------------------ OASIS

def test_oasis_reads_big_endian_uint16_pairs_every_other_slice_and_bins(tmp_path):
    src, out = tmp_path / "oasis", tmp_path / "ds"
    raw_values = np.array([0, 150, 151, 400, 401, 625, 626, 1023], np.uint16)
    mask_raw = np.zeros((H, W, 4), np.uint16)
    mask_raw[:, : len(raw_values) * 10] = np.repeat(raw_values, 10)[None, :, None]
    mask_raw[100, 100, :] = np.arange(4) * 256 + 5  # a per-slice tag: mask slice k bins to k
    image, _ = oasis_subject(src, "OAS1_0001_MR1", n_image=8, mask_raw=mask_raw)
    oasis_subject(src, "OAS1_0002_MR1", n_image=8, rng=np.random.default_rng(1))

    import_oasis(src, out, seed=3)
    records = read_index(out)
    assert sorted({r.subject for r in records}) == ["OAS1_0001_MR1", "OAS1_0002_MR1"]
    first = [r for r in records if r.subject == "OAS1_0001_MR1"]
    assert [r.slice for r in first] == [0, 1, 2, 3]
    images, masks = load_slices(out, first)
    expected = scale_to_uint8(image)
    for k in range(4):
        np.testing.assert_array_equal(images[k], expected[:, :, 2 * k])  # mask slice k <-> image slice 2k
        assert images[k][10 + 2 * k, 20:30].min() == 255  # the marker of image slice 2k
        assert masks[k][100, 100] == k
    np.testing.assert_array_equal(masks[0][0, :80:10], [0, 0, 1, 1, 2, 2, 3, 3])
    assert read_meta(out)["source"] == "oasis-1"


def test_oasis_mask_with_as_many_slices_pairs_one_to_one(tmp_path):
    src, out = tmp_path / "oasis", tmp_path / "ds"
    mask_raw = np.zeros((H, W, 6), np.uint16)
    for z in range(6):
        mask_raw[30, 30, z] = z % 4
    image, _ = oasis_subject(src, "OAS1_0003_MR1", n_image=6, n_mask=6, mask_raw=mask_raw)
    import_oasis(src, out)
    images, masks = load_slices(out, read_index(out))
    assert len(images) == 3  # every other slice, one pair per 2 mm as with 88-slice masks
    for k, z in enumerate((0, 2, 4)):
        np.testing.assert_array_equal(images[k], scale_to_uint8(image)[:, :, z])
        assert masks[k][30, 30] == z % 4


def test_bin_oasis_mask_passes_class_ids_and_rejects_out_of_range():
    np.testing.assert_array_equal(bin_oasis_mask(np.array([0, 1, 2, 3])), [0, 1, 2, 3])
    np.testing.assert_array_equal(bin_oasis_mask(np.array([0, 256, 512, 768])), [0, 1, 2, 3])
    with pytest.raises(SegqaError, match="outside the OASIS binning.*5000"):
        bin_oasis_mask(np.array([0, 5000]), "m.img")
    with pytest.raises(SegqaError, match="outside"):
        bin_oasis_mask(np.array([-1, 3], np.int16), "m.img")


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated"),
    ("grow", "too large"),
])
def test_oasis_truncated_or_wrong_sized_img(tmp_path, damage, message):
    src, out = tmp_path / "oasis", tmp_path / "ds"
    oasis_subject(src, "OAS1_0001_MR1")
    oasis_subject(src, "OAS1_0002_MR1")
    img = next(src.rglob("OAS1_0002_MR1*_masked_gfc.img"))
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2] if damage == "truncate" else data + b"\0" * 10)
    with pytest.raises(SegqaError, match=message) as err:
        import_oasis(src, out)
    assert img.name in str(err.value) and "176x208x8" in str(err.value)
    assert nothing_left(out)  # every file's size is checked before anything is written


def test_oasis_wrong_shape_mask_values_and_missing_files(tmp_path):
    out = tmp_path / "ds"
    # wrong in-plane shape
    src = tmp_path / "a"
    write_analyze(src / "X_t88_masked_gfc", np.zeros((100, 208, 8), np.uint16))
    write_analyze(src / "X_t88_masked_gfc_fseg", np.zeros((100, 208, 4), np.uint16))
    with pytest.raises(SegqaError, match=r"100x208x8.*expected 176x208xN"):
        import_oasis(src, out)
    # mask values outside the binning, in the second subject: the first one is already written by then
    src = tmp_path / "b"
    bad = np.zeros((H, W, 4), np.uint16)
    bad[5, 5, 2] = 4000
    oasis_subject(src, "OAS1_0001_MR1")
    oasis_subject(src, "OAS1_0002_MR1", mask_raw=bad)
    with pytest.raises(SegqaError, match=r"OAS1_0002_MR1\S*_fseg\.img: mask values outside the OASIS binning.*4000"):
        import_oasis(src, out)
    assert nothing_left(out)  # the temp folder holding OAS1_0001_MR1 is gone
    # image without its mask
    src = tmp_path / "c"
    oasis_subject(src, "OAS1_0001_MR1")
    for f in src.rglob("*_fseg.*"):
        f.unlink()
    with pytest.raises(SegqaError, match=r"masked_gfc\.hdr: image without its mask; expected .*_fseg"):
        import_oasis(src, out)
    # a header without its .img
    src = tmp_path / "d"
    oasis_subject(src, "OAS1_0001_MR1")
    next(src.rglob("*_masked_gfc.img")).unlink()
    with pytest.raises(SegqaError, match="image data missing"):
        import_oasis(src, out)
    # mask slices that do not pair with the image's
    src = tmp_path / "e"
    oasis_subject(src, "OAS1_0001_MR1", n_image=8, n_mask=3)
    with pytest.raises(SegqaError, match="mask has 3 slices but its image has 8"):
        import_oasis(src, out)
    assert nothing_left(out)


def test_read_analyze_little_endian_int16(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    hdr = write_analyze(tmp_path / "v", data, code=4, endian="<")
    np.testing.assert_array_equal(read_analyze(hdr), data)


# ------------------------------------------------------------------------------------------------ NIfTI

def write_nifti(path: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), str(path))


def test_nifti_resamples_and_crops_around_labels(tmp_path):
    src, out = tmp_path / "nii", tmp_path / "ds"
    # 0.5 mm in-plane, 300 x 380 voxels (150 x 190 mm): resampled to 1 mm and padded to 176 x 208
    image = np.zeros((300, 380, 5), np.float32)
    labels = np.zeros((300, 380, 5), np.uint8)
    labels[40:260, 40:340, :] = 2
    labels[100:200, 100:300, :] = 3
    labels[140:160, 180:220, :] = 1
    image[labels == 2], image[labels == 3], image[labels == 1] = 600.0, 900.0, 200.0
    write_nifti(src / "s01.nii.gz", image, zooms=(0.5, 0.5, 2.0))
    write_nifti(src / "s01_seg.nii.gz", labels, zooms=(0.5, 0.5, 2.0))
    write_nifti(src / "s02.nii", image[:200, :300], zooms=(0.5, 0.5, 2.0))
    write_nifti(src / "s02_label.nii", labels[:200, :300], zooms=(0.5, 0.5, 2.0))

    import_nifti(src, out)
    records = read_index(out)
    assert sorted({r.subject for r in records}) == ["s01", "s02"]
    assert len([r for r in records if r.subject == "s01"]) == 5  # every axial slice
    images, masks = load_slices(out, [r for r in records if r.subject == "s01"])
    assert images.shape == (5, H, W)
    counts = np.bincount(masks[2].ravel(), minlength=4)
    # 1 mm in-plane: the 220 x 300 GM box of 0.5 mm voxels is 110 x 150 pixels
    assert counts[1:].sum() == pytest.approx(110 * 150, rel=0.03)
    assert counts[1] == pytest.approx(10 * 20, rel=0.15)
    # centred on the labels: background margins on both sides are equal within a pixel
    rows = np.flatnonzero(masks[2].any(1))
    assert abs(rows[0] - (H - 1 - rows[-1])) <= 1
    # image and labels stay aligned: WM pixels are the brightest
    assert images[2][masks[2] == 3].mean() > images[2][masks[2] == 2].mean() > images[2][masks[2] == 1].mean()


def test_nifti_bad_inputs(tmp_path):
    out = tmp_path / "ds"
    src = tmp_path / "big"
    big = np.zeros((300, 300, 3), np.uint8)
    big[10:290, 10:290] = 2
    write_nifti(src / "b.nii.gz", big.astype(np.float32))
    write_nifti(src / "b_seg.nii.gz", big)
    with pytest.raises(SegqaError, match=r"b\.nii\.gz: shape 300x300x3 .*cannot be brought to 176x208"):
        import_nifti(src, out)
    src = tmp_path / "4d"
    write_nifti(src / "f.nii.gz", np.zeros((176, 208, 4, 3), np.float32))
    write_nifti(src / "f_seg.nii.gz", np.zeros((176, 208, 4, 3), np.uint8))
    with pytest.raises(SegqaError, match="cannot be brought to 176x208.*3-D"):
        import_nifti(src, out)
    src = tmp_path / "nolabel"
    write_nifti(src / "a.nii.gz", np.zeros((176, 208, 4), np.float32))
    with pytest.raises(SegqaError, match=r"a\.nii\.gz: image without its label volume"):
        import_nifti(src, out)
    src = tmp_path / "values"
    lab = np.zeros((176, 208, 2), np.int16)
    lab[5, 5, 0] = 42
    write_nifti(src / "v.nii.gz", np.zeros((176, 208, 2), np.float32))
    write_nifti(src / "v_seg.nii.gz", lab)
    with pytest.raises(SegqaError, match=r"v_seg\.nii\.gz: label values must be 0\.\.3.*found 42"):
        import_nifti(src, out)
    src = tmp_path / "corrupt"
    src.mkdir()
    (src / "c.nii.gz").write_bytes(b"not a nifti")
    (src / "c_seg.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(SegqaError, match=r"c\.nii\.gz: not a readable NIfTI"):
        import_nifti(src, out)
    assert nothing_left(out)


# ------------------------------------------------------------------------------------------------ PNG

def save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_png_pairs_subjects_from_names_and_folders(tmp_path):
    src, out = tmp_path / "png", tmp_path / "ds"
    rng = np.random.default_rng(0)
    expected = {}
    for name in ("alpha_001", "alpha_002", "beta-slice7", "gamma/12", "gamma/13"):
        img = rng.integers(0, 256, (H, W), dtype=np.uint8)
        mask = rng.integers(0, 4, (H, W), dtype=np.uint8)
        mask[0, 0] = IGNORE_LABEL
        save(src / f"{name}.png", img)
        save(src / f"{name}_mask.png", mask)
        expected[name] = (img, mask)
    import_png(src, out, seed=1)
    records = read_index(out)
    ids = sorted((r.subject, r.slice) for r in records)
    assert ids == [("alpha", 1), ("alpha", 2), ("beta", 7), ("gamma", 12), ("gamma", 13)]
    rec = next(r for r in records if (r.subject, r.slice) == ("gamma", 13))
    images, masks = load_slices(out, [rec])
    np.testing.assert_array_equal(images[0], expected["gamma/13"][0])
    np.testing.assert_array_equal(masks[0], expected["gamma/13"][1])  # 255 (ignore) survives
    splits = {}
    for r in records:
        assert splits.setdefault(r.subject, r.split) == r.split  # one split per subject


def test_png_bad_inputs(tmp_path):
    out = tmp_path / "ds"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SegqaError, match=r"empty: no PNG files found"):
        import_png(empty, out)
    with pytest.raises(SegqaError, match="no such folder"):
        import_png(tmp_path / "missing", out)
    src = tmp_path / "nomask"
    save(src / "a_001.png", np.zeros((H, W), np.uint8))
    save(src / "a_001_mask.png", np.zeros((H, W), np.uint8))
    save(src / "a_002.png", np.zeros((H, W), np.uint8))
    with pytest.raises(SegqaError, match=r"a_002\.png: image without its mask; expected a_002_mask\.png"):
        import_png(src, out)
    src = tmp_path / "values"
    save(src / "a_001.png", np.zeros((H, W), np.uint8))
    save(src / "a_001_mask.png", np.full((H, W), 85, np.uint8))
    with pytest.raises(SegqaError, match=r"a_001_mask\.png: mask values must be 0\.\.3.*found 85"):
        import_png(src, out)
    src = tmp_path / "size"
    save(src / "a_001.png", np.zeros((W, H), np.uint8))
    save(src / "a_001_mask.png", np.zeros((W, H), np.uint8))
    with pytest.raises(SegqaError, match=r"208x176 \(transposed\?\); expected 176x208"):
        import_png(src, out)
    assert nothing_left(out)


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_import_png_and_errors_exit_nonzero_without_traceback(tmp_path, capsys):
    src, out = tmp_path / "png", tmp_path / "ds"
    save(src / "s_000.png", np.zeros((H, W), np.uint8))
    save(src / "s_000_mask.png", np.ones((H, W), np.uint8))
    assert main(["data", "import", "--png", str(src), "--out", str(out)]) == 0
    assert "1 subjects, 1 slice pairs" in capsys.readouterr().out
    assert main(["data", "import", "--png", str(src), "--out", str(out)]) == 2  # exists, no --overwrite
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["data", "import", "--png", str(src), "--nifti", str(src), "--out", str(out)]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "qa_workflow", "data", "import", "--oasis", str(empty),
                           "--out", str(tmp_path / "o2")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no OASIS T88 images" in proc.stderr
    assert nothing_left(tmp_path / "o2")
