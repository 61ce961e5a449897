"""`training.parallel.train_all`: runs side by side in their own processes, each on its share of the threads."""

from __future__ import annotations

import pytest

from qa_workflow.contract import SegqaError
from training.parallel import train_all
from training.predict import load_predictor
from training.train import TrainConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, write_dataset):
    return write_dataset(tmp_path_factory.mktemp("data") / "ds")


def _configs(dataset, root):
    return {"unet": TrainConfig(data_dir=str(dataset), out_dir=str(root / "u"), network="unet", width=0.125, epochs=2,
                                batch_size=3),
            "enet": TrainConfig(data_dir=str(dataset), out_dir=str(root / "e"), network="enet", width=0.25, epochs=1,
                                batch_size=3)}


def test_two_runs_train_side_by_side_one_thread_each(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGQA_THREADS", "2")
    events = []
    out = train_all(_configs(dataset, tmp_path), progress=events.append)
    assert out == {"unet": tmp_path / "u", "enet": tmp_path / "e"}
    for name in out:
        assert load_predictor(out[name]).network == name  # a complete model folder
        mine = [e for e in events if e.run == name]
        assert [e.kind for e in mine if e.kind != "batch"] == ["start"] + ["epoch"] * (2 if name == "unet" else 1) + [
            "end"]
        assert mine[0].threads == 1  # the parent's two threads shared out: one each, set before MXNet loaded
    import os

    assert os.environ["SEGQA_THREADS"] == "2"  # the parent's setting is back


def test_one_thread_trains_the_runs_one_after_the_other_here(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGQA_THREADS", "1")
    events = []
    train_all(_configs(dataset, tmp_path), progress=events.append)
    starts = [e for e in events if e.kind == "start"]
    ends = [e for e in events if e.kind == "end"]
    # in this process, in order: the first run ends before the second starts
    assert [e.run for e in starts] == ["unet", "enet"] and events.index(ends[0]) < events.index(starts[1])


def test_a_failing_run_stops_the_others_and_reports_why(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGQA_THREADS", "2")
    configs = _configs(dataset, tmp_path)
    configs["enet"] = TrainConfig(data_dir=str(tmp_path / "missing"), out_dir=str(tmp_path / "e"), network="enet")
    with pytest.raises(SegqaError, match="missing"):
        train_all(configs)
