"""The dataset format: ignore label, 8-bit scaling, atomic writes; the preview's overlays."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qa_workflow.contract import CSF, GRAY_MATTER, IGNORE_LABEL, WHITE_MATTER, SegqaError
from training.dataset import DatasetWriter, load_slices, read_index, save_png, scale_to_uint8
from training.preview import choose_levels, choose_subjects, overlay_rgb, render_contact_sheet

H, W = 176, 208


def _slice(value: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((H, W), value, np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[40:80, 40:80], mask[80:120, 40:80], mask[120:160, 40:80] = CSF.id, GRAY_MATTER.id, WHITE_MATTER.id
    return image, mask


def test_ignore_label_round_trips_and_other_values_are_refused(tmp_path):
    image, mask = _slice(100)
    mask[0:10, 0:10] = IGNORE_LABEL
    with DatasetWriter(tmp_path / "ds") as w:
        w.add("s1", 0, image, mask, "train")
    _, masks = load_slices(tmp_path / "ds", read_index(tmp_path / "ds"))
    assert masks[0][5, 5] == IGNORE_LABEL and masks[0][50, 50] == CSF.id

    mask[0, 0] = 7
    with pytest.raises(SegqaError, match=r"s2/000: mask values must be 0\.\.3 \(or 255 = ignore\), found 7"):
        with DatasetWriter(tmp_path / "bad") as w:
            w.add("s2", 0, image, mask, "train")
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad.")]  # temp folder removed

    save_png(tmp_path / "ds" / "masks" / "s1" / "000.png", mask)  # corrupt the stored mask
    with pytest.raises(SegqaError, match=r"000\.png: mask values must be 0\.\.3.*found 7"):
        load_slices(tmp_path / "ds", read_index(tmp_path / "ds"))


def test_scale_to_uint8_uses_robust_percentiles_per_volume():
    rng = np.random.default_rng(0)
    vol = rng.normal(1000.0, 100.0, size=(20, 30, 40))
    vol[0, 0, 0] = 1e9  # one hot voxel must not squash the rest
    out = scale_to_uint8(vol)
    assert out.dtype == np.uint8 and out.shape == vol.shape
    assert out[0, 0, 0] == 255
    assert 0.004 < np.mean(out == 0) < 0.006 and 0.004 < np.mean(out == 255) < 0.006  # 0.5 % each end
    assert 110 < np.median(out) < 145
    assert not scale_to_uint8(np.full((4, 4), 3.0)).any()


def test_overlay_colours_and_preview_sheet(tmp_path):
    image, mask = _slice(0)
    rgb = overlay_rgb(image, mask)
    assert rgb.shape == (H, W, 3)
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])  # background untouched
    for cls, (r, c) in ((CSF, (50, 50)), (GRAY_MATTER, (90, 50)), (WHITE_MATTER, (130, 50))):
        # the pixel takes the class's hue (blue CSF, green GM, amber WM), visible even over black
        assert np.argmax(rgb[r, c]) == np.argmax(cls.rgb)
        assert rgb[r, c].max() > 0.35

    with DatasetWriter(tmp_path / "ds") as w:
        for s, split in (("a", "train"), ("b", "pool"), ("c", "test")):
            for k in range(6):
                w.add(s, k, *_slice(60 + 20 * k), split)
    out = render_contact_sheet(tmp_path / "ds", tmp_path / "sheet.png", n_subjects=2, n_levels=3)
    with Image.open(out) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    for cls in (CSF, GRAY_MATTER, WHITE_MATTER):  # legend swatches and overlays carry the contract colours
        assert (np.abs(pixels - np.asarray(cls.rgb)).sum(1) < 40).any(), cls.name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp.png")]


def test_preview_picks_subjects_across_splits_and_levels_inside_the_range():
    from training.dataset import SliceRecord

    recs = [SliceRecord(s, k, "", "", split) for s, split in (("a", "train"), ("b", "train"), ("c", "pool"),
                                                               ("d", "test")) for k in range(10)]
    assert choose_subjects(recs, 3) == ["a", "c", "d"]
    levels = choose_levels(list(range(88)), 4)
    assert len(levels) == 4 and levels[0] > 10 and levels[-1] < 80
    assert choose_levels([3, 4], 4) == [3, 4]


def test_site_column_round_trips_and_old_indexes_without_it_still_read(tmp_path):
    image, mask = _slice(100)
    with DatasetWriter(tmp_path / "ds") as w:
        w.add("s1", 0, image, mask, "train", "A")
        w.add("s2", 0, image, mask, "pool", "B")
    assert [(r.subject, r.site) for r in read_index(tmp_path / "ds")] == [("s1", "A"), ("s2", "B")]
    index = tmp_path / "ds" / "index.csv"
    lines = index.read_text().splitlines()
    assert lines[0] == "subject,slice,image,mask,split,site"
    index.write_text("\n".join(",".join(line.split(",")[:5]) for line in lines) + "\n")  # a pre-sites index
    assert [r.site for r in read_index(tmp_path / "ds")] == ["", ""]
