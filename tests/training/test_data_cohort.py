"""The atlas cohort: determinism, anatomy in the labels, splits by subject, offline, and the real geometry."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from qa_workflow.cli import main
from qa_workflow.contract import CSF, GRAY_MATTER, WHITE_MATTER
from training import cohort
from training.cohort import CohortParams, assign_sites, build_cohort, parse_sites, site_params, synth_subject
from training.dataset import SPLITS, load_slices, read_index, read_meta

SMALL = CohortParams(n_slices=8)


def _no_network(*args, **kwargs):
    raise AssertionError("the atlas cohort tried to use the network")


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    """5 subjects x 8 slices, seed 11, built in-process with every socket call failing."""
    out = tmp_path_factory.mktemp("cohort") / "c"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "getaddrinfo", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        cohort.load_atlas.cache_clear()  # make the template load happen here, offline
        build_cohort(out, 5, seed=11, params=SMALL, workers=1)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "dataset.json"}


def test_same_seed_identical_bytes_whatever_the_worker_count(small_cohort, tmp_path):
    again = build_cohort(tmp_path / "again", 5, seed=11, params=SMALL, workers=2)  # forked processes
    assert _files(again) == _files(small_cohort)
    meta_a, meta_b = read_meta(small_cohort), read_meta(again)
    meta_a.pop("created_at"), meta_b.pop("created_at")
    assert meta_a == meta_b


def test_different_seed_different_images(small_cohort, tmp_path):
    other = build_cohort(tmp_path / "other", 1, seed=12, params=SMALL, workers=1)
    a = (small_cohort / "images/sub-001/004.png").read_bytes()
    b = (other / "images/sub-001/004.png").read_bytes()
    assert a != b
    info = [read_meta(d)["subject_params"]["sub-001"] for d in (small_cohort, other)]
    assert info[0]["rotation_deg"] != info[1]["rotation_deg"]


def test_labels_have_all_classes_csf_in_most_brain_slices_and_t1_contrast(small_cohort):
    records = read_index(small_cohort)
    assert len(records) == 5 * 8
    images, masks = load_slices(small_cohort, records)
    assert images.shape == (40, 176, 208) and images.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1, 2, 3}
    brain = (masks > 0).sum(axis=(1, 2)) > 2000
    has_csf = (masks == CSF.id).sum(axis=(1, 2)) > 50
    assert brain.sum() >= 30
    assert has_csf[brain].mean() >= 0.8
    for subject in sorted({r.subject for r in records}):
        sel = np.array([r.subject == subject for r in records])
        img, lab = images[sel], masks[sel]
        means = [img[lab == c.id].mean() for c in (CSF, GRAY_MATTER, WHITE_MATTER)]
        assert means[0] < means[1] < means[2], (subject, means)  # T1: CSF dark, GM mid, WM bright


def test_intensity_alone_does_not_solve_the_task(small_cohort):
    """Bias field, noise and partial-volume blur: the best global thresholds of one subject, applied to the
    others, misclassify a real share of the brain pixels (so a segmenter has something to learn)."""
    records = read_index(small_cohort)
    images, masks = load_slices(small_cohort, records)
    subjects = np.array([r.subject for r in records])
    fit = subjects == "sub-001"
    x, y = images[fit][masks[fit] > 0].astype(float), masks[fit][masks[fit] > 0]
    # thresholds between class medians fitted on sub-001
    med = [np.median(x[y == c]) for c in (1, 2, 3)]
    edges = [(med[0] + med[1]) / 2, (med[1] + med[2]) / 2]
    accs = []
    for s in sorted(set(subjects) - {"sub-001"}):
        sel = subjects == s
        xs, ys = images[sel][masks[sel] > 0], masks[sel][masks[sel] > 0]
        accs.append(np.mean(np.digitize(xs, edges) + 1 == ys))
    assert 0.4 < np.mean(accs) < 0.9, accs


def test_splits_by_subject_without_leakage(small_cohort):
    records = read_index(small_cohort)
    split_of: dict[str, set[str]] = {}
    for r in records:
        split_of.setdefault(r.subject, set()).add(r.split)
    assert all(len(s) == 1 for s in split_of.values())
    assert {next(iter(s)) for s in split_of.values()} == set(SPLITS)  # N >= 4: every split has a subject
    assert all(len([r for r in records if r.subject == s]) == 8 for s in split_of)


def test_real_geometry_88_slices_through_the_brain():
    subject = synth_subject(np.random.SeedSequence(5))
    assert subject.image.shape == subject.labels.shape == (88, 176, 208)
    brain = (subject.labels > 0).sum(axis=(1, 2))
    assert (brain > 0).mean() >= 0.95  # the slab spans the brain, not empty air
    assert brain[40:50].min() > 10000  # mid-brain slices are large
    assert brain[:5].mean() < brain[40:50].mean() / 3 and brain[-5:].mean() < brain[40:50].mean() / 3
    border = np.concatenate([subject.labels[:, 0, :], subject.labels[:, -1, :],
                             subject.labels[:, :, 0], subject.labels[:, :, -1]], axis=1)
    assert (border > 0).mean() < 0.01  # the brain fits inside 176 x 208
    assert 0.5 < subject.info["slice_spacing_mm"] < 2.5


def _appearance(image: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The cohort's own statistics of one subject: GM/WM contrast-to-noise ratio, high-frequency noise inside
    white matter (residual of a 3x3 in-plane mean), median CSF intensity."""
    from scipy import ndimage

    img = image.astype(float)
    gm, wm = img[labels == GRAY_MATTER.id], img[labels == WHITE_MATTER.id]
    residual = img - ndimage.uniform_filter(img, size=(1, 3, 3))
    deep_wm = ndimage.binary_erosion(labels == WHITE_MATTER.id, iterations=2)
    csf = img[labels == CSF.id]
    return {"cnr": (wm.mean() - gm.mean()) / np.sqrt((wm.var() + gm.var()) / 2),
            "noise": residual[deep_wm].std() if deep_wm.any() else float("nan"),
            "csf": float(np.median(csf)) if csf.size else float("nan")}


@pytest.mark.parametrize("seed", [0, 1])
def test_site_b_is_a_measurable_acquisition_shift_of_the_same_anatomy(seed):
    """One subject's draws rendered at both sites: the same labels, but site B has a flatter contrast curve
    (lower GM/WM CNR, brighter CSF) and more noise; deterministic per seed."""
    a = synth_subject(np.random.SeedSequence(seed), site_params(SMALL, "A"))
    b = synth_subject(np.random.SeedSequence(seed), site_params(SMALL, "B"))
    again = synth_subject(np.random.SeedSequence(seed), site_params(SMALL, "B"))
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(b.image, again.image)
    sa, sb = _appearance(a.image, a.labels), _appearance(b.image, b.labels)
    assert sb["cnr"] < 0.6 * sa["cnr"], (sa, sb)
    assert sb["noise"] > 1.3 * sa["noise"], (sa, sb)
    assert sb["csf"] > sa["csf"] + 15, (sa, sb)


@pytest.fixture(scope="module")
def two_site_cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sites") / "c"
    assert main(["data", "synth", "--subjects", "6", "--slices", "6", "--out", str(out), "--seed", "3",
                 "--workers", "1", "--sites", "A,B"]) == 0
    return out


def test_two_sites_train_is_site_a_and_the_other_splits_hold_both(two_site_cohort):
    records = read_index(two_site_cohort)
    site_of = {r.subject: r.site for r in records}
    split_of = {r.subject: r.split for r in records}
    assert {site_of[s] for s in site_of if split_of[s] == "train"} == {"A"}
    assert {site_of[s] for s in site_of if split_of[s] != "train"} == {"A", "B"}
    assert {site_of[s] for s in site_of if split_of[s] == "pool"} == {"A", "B"}  # 3 pool subjects
    meta = read_meta(two_site_cohort)
    assert meta["sites"] == ["A", "B"] and meta["site_shifts"]["B"]["noise"] == [0.045, 0.07]
    assert all(meta["subject_params"][s]["site"] == site_of[s] for s in site_of)
    # the cohort's own statistics separate the sites
    images, masks = load_slices(two_site_cohort, records)
    subjects = np.array([r.subject for r in records])
    cnr = {site: np.mean([_appearance(images[subjects == s], masks[subjects == s])["cnr"]
                          for s in site_of if site_of[s] == site]) for site in ("A", "B")}  # 2 and 4 subjects
    assert cnr["B"] < 0.6 * cnr["A"], cnr


def test_site_assignment_and_parsing():
    splits = {"s1": "train", "s2": "train", "s3": "pool", "s4": "pool", "s5": "val", "s6": "test"}
    sites = assign_sites(splits, ("A", "B"), seed=0)
    assert sites["s1"] == sites["s2"] == "A"
    assert sites["s5"] == sites["s6"] == "B"  # one-subject splits get the shifted site
    assert sorted(sites[s] for s in ("s3", "s4")) == ["A", "B"]
    assert assign_sites(splits, ("A", "B"), seed=0) == sites
    assert set(assign_sites(splits, ("A",), seed=0).values()) == {"A"}
    assert parse_sites(None) == ("A",) and parse_sites("A, B") == ("A", "B")
    for bad in ("A,C", "A,A", "A,"):
        with pytest.raises(cohort.SegqaError, match="--sites"):
            parse_sites(bad)


def test_cli_synth_and_preview(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["data", "synth", "--subjects", "2", "--slices", "3", "--out", str(out), "--seed", "4",
                 "--workers", "1"]) == 0
    assert "2 subjects, 6 slice pairs" in capsys.readouterr().out
    assert main(["data", "synth", "--subjects", "2", "--out", str(out)]) == 2  # exists: refused, kept
    assert "exists and is not empty" in capsys.readouterr().err
    assert len(read_index(out)) == 6
    png = tmp_path / "sheet.png"
    assert main(["data", "preview", str(out), "--out", str(png), "--levels", "2"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "preview", str(tmp_path / "nope"), "--out", str(png)]) == 2
    assert json.loads((out / "dataset.json").read_text())["source"] == "atlas-cohort"
