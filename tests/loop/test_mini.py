"""A miniature loop: tiny models, 4 subjects (one per split), 1 round — through every real part."""

import json

import numpy as np
import pytest
from PIL import Image

from qa_workflow.confirmations.store import open_store
from qa_workflow.contract import IGNORE_LABEL, from_display
from qa_workflow.loop.demo import LoopConfig, run_loop
from training.dataset import read_index

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    # One simulated reviewer who answers at random (error rate 0.5), so that some masks of these barely
    # trained models are confirmed and others rejected: the plumbing, not the models, is under test here.
    cfg = LoopConfig(workspace=str(ws), rounds=1, subjects=4, slices=6, budget=12, reviewers=1, error_rate=0.5,
                     seed=3,
                     initial_train={"unet": dict(epochs=1, width=0.125, batch_size=4),
                                    "enet": dict(epochs=1, width=0.25, batch_size=4)},
                     retrain={"unet": dict(epochs=1, batch_size=4), "enet": dict(epochs=1, batch_size=4)})
    steps = []
    summaries = run_loop(cfg, progress=lambda step, info: steps.append(step))
    return cfg, ws, summaries, steps


def test_loop_runs_every_step_in_order(loop):
    cfg, ws, summaries, steps = loop
    # one "initial" step: the U-Net and the ENet train side by side (training.parallel)
    assert steps == ["cohort", "initial", "predict", "select", "batch", "review", "correct", "analyze",
                     "retrain", "round-done"]
    assert len(summaries) == 1 and summaries[0].round == "round-01"


def test_votes_land_in_the_store_through_the_handlers(loop):
    cfg, ws, summaries, _ = loop
    store = open_store(f"sqlite:///{ws / 'store.sqlite'}", create=False)
    items = list(store.iter_items(round="round-01"))
    store.close()
    reviewed = [s for s in items if s.confirm_count + s.disconfirm_count]
    assert len(reviewed) == summaries[0].reviewed == 12
    assert all(s.confirm_count + s.disconfirm_count == 1 for s in reviewed)  # one reviewer, one vote each
    assert summaries[0].votes == 12


def test_thresholds_file_written(loop):
    _, ws, _, _ = loop
    data = json.loads((ws / "rounds" / "round-01" / "analysis" / "thresholds.json").read_text())
    assert data["schema"] == "segqa.thresholds/1"
    assert set(data["classes"]) <= {"csf", "gray_matter", "white_matter"} and data["classes"]
    assert (ws / "rounds" / "round-01" / "analysis" / "report.html").is_file()
    # fitted on the reviews of the model that predicted the round, and saying so (routing checks it)
    run = json.loads((ws / "rounds" / "round-01" / "predictions" / "run.json").read_text())
    assert data["model_versions"] == [run["model_version"]]


def test_training_set_has_confirmed_pool_slices_with_ignore_regions(loop):
    _, ws, summaries, _ = loop
    tset = ws / "rounds" / "round-01" / "training-set"
    records = read_index(tset)
    base = {(r.subject, r.slice) for r in read_index(ws / "cohort", ["train"])}
    pool = {(r.subject, r.slice) for r in read_index(ws / "cohort", ["pool"])}
    added = [r for r in records if r.split == "train" and (r.subject, r.slice) not in base]
    assert added and all((r.subject, r.slice) in pool for r in added)
    assert summaries[0].training_pool_slices == len(added)
    store = open_store(f"sqlite:///{ws / 'store.sqlite'}", create=False)
    outcome = {s.item.item_id: s.outcome for s in store.iter_items()}
    store.close()
    from qa_workflow.contract import CLASS_BY_NAME

    sources = dict(line.split(",")[:3:2] for line in (tset / "sources.csv").read_text().splitlines()[1:])
    assert set(sources) == {f"{r.subject}/{r.slice:03d}" for r in added}
    saw_ignore = False
    for r in added:
        if sources[f"{r.subject}/{r.slice:03d}"] == "corrected":
            continue  # full labels: test_rejected_slices_are_corrected_and_train_as_full_labels
        labels = np.asarray(Image.open(tset / r.mask))
        predicted = np.asarray(Image.open(ws / "rounds" / "round-01" / "predictions" / "masks" / r.subject /
                                          f"{r.slice:03d}.png"))
        for name in ("csf", "gray_matter", "white_matter"):
            cid = CLASS_BY_NAME[name].id
            region = predicted == cid
            if outcome.get(f"{r.subject}/{r.slice:03d}/{name}") == "accept":
                assert (labels[region] == cid).all()
            else:  # rejected or never reviewed: the model is never taught it
                assert (labels[region] == IGNORE_LABEL).all()
                saw_ignore |= bool(region.any())
    assert saw_ignore or all(v == "corrected" for v in sources.values())


def test_rejected_slices_are_corrected_and_train_as_full_labels(loop):
    _, ws, summaries, _ = loop
    from qa_workflow.confirmations.export import export_corrections
    from qa_workflow.rounds.adjusting import rejected_in_store

    store = open_store(f"sqlite:///{ws / 'store.sqlite'}", create=False)
    rejected = {i.rsplit("/", 1)[0] for job in {v.job for v in store.iter_votes()}
                for i in rejected_in_store(store, job)}
    rows = export_corrections(store, round="round-01")
    votes = list(store.iter_votes(round="round-01"))
    store.close()
    assert rejected and {r["slice_id"] for r in rows} == rejected  # every slice with a rejected mask was corrected
    s = summaries[0]
    assert s.corrected_slices == len(rows) == s.training_corrected_slices
    assert s.adjust_seconds == 60.0 * len(rows) and s.verify_seconds == 3.0 * len(votes) == 3.0 * s.votes
    assert s.scratch_seconds == 240.0 * len({v.item_id.rsplit("/", 1)[0] for v in votes})
    tset = ws / "rounds" / "round-01" / "training-set"
    by_slice = {f"{r.subject}/{r.slice:03d}": r for r in read_index(tset) if r.split == "train"}
    for row in rows:
        labels = np.asarray(Image.open(tset / by_slice[row["slice_id"]].mask))
        corrected = np.asarray(Image.open(row["mask_uri"]))  # drawn in the display orientation
        assert np.array_equal(labels, from_display(corrected)) and not (labels == IGNORE_LABEL).any()


def test_registry_records_the_promotion_decision(loop):
    _, ws, summaries, _ = loop
    decisions = [json.loads(line) for line in (ws / "models" / "decisions.jsonl").read_text().splitlines()]
    challengers = [d for d in decisions if d["round"] == 1]
    assert {d["network"] for d in challengers} == {"unet", "enet"}
    for d in challengers:
        assert d["champion"] is not None and d["champion_metrics"] and d["challenger_metrics"]
        assert d["promote"] == summaries[0].promoted[d["network"]]
        champion = (ws / "models" / d["network"] / "CHAMPION").read_text().strip()
        assert champion == (d["challenger"] if d["promote"] else d["champion"])
    # the challenger was warm-started from the champion and trained on the retraining set
    enet = next(d for d in challengers if d["network"] == "enet")
    cfg = json.loads((ws / "models" / "enet" / enet["challenger"] / "config.json").read_text())
    assert cfg["data_dir"].endswith("training-set") and cfg["init_from"]


def test_report_links_the_round(loop):
    _, ws, _, _ = loop
    html = (ws / "report.html").read_text()
    assert "rounds/round-01/analysis/report.html" in html and "round-01" in html


def test_retrain_command_on_a_reviewed_round(loop, tmp_path):
    """`segqa retrain` (the operator's cron entry) retrains from a round folder and the store, and records it."""
    from qa_workflow.cli import main

    _, ws, _, _ = loop
    before = len((ws / "models" / "decisions.jsonl").read_text().splitlines())
    rc = main(["retrain", "--data", str(ws / "cohort"), "--store", f"sqlite:///{ws / 'store.sqlite'}",
               "--round", str(ws / "rounds" / "round-01" / "round"), "--registry", str(ws / "models"),
               "--work", str(tmp_path / "work"), "--networks", "enet", "--epochs", "1", "--batch-size", "4"])
    assert rc == 0
    decisions = [json.loads(line) for line in (ws / "models" / "decisions.jsonl").read_text().splitlines()]
    assert len(decisions) == before + 1 and decisions[-1]["network"] == "enet"
    assert [r.split for r in read_index(tmp_path / "work" / "training-set")].count("train") > len(
        read_index(ws / "cohort", ["train"]))


def test_retrain_command_rejects_bad_input(tmp_path, capsys):
    from qa_workflow.cli import main

    rc = main(["retrain", "--data", str(tmp_path), "--store", f"sqlite:///{tmp_path / 's.db'}",
               "--round", str(tmp_path / "no-round"), "--networks", "resnet"])
    assert rc == 2 and "--networks" in capsys.readouterr().err
    rc = main(["retrain", "--data", str(tmp_path), "--store", f"sqlite:///{tmp_path / 's.db'}",
               "--round", str(tmp_path / "no-round"), "--tta", "rotate"])
    assert rc == 2 and "--tta 'rotate'" in capsys.readouterr().err


def test_retrain_publishes_the_training_set_for_scheduled_jobs(loop, tmp_path, s3_bucket):
    """--no-train --publish: the set the scheduled SageMaker jobs read, in both channels, index last."""
    import boto3

    from qa_workflow.cli import main

    _, ws, _, _ = loop
    rc = main(["retrain", "--data", str(ws / "cohort"), "--store", f"sqlite:///{ws / 'store.sqlite'}",
               "--round", str(ws / "rounds" / "round-01" / "round"), "--registry", str(ws / "models"),
               "--work", str(tmp_path / "work"), "--no-train", "--publish", f"s3://{s3_bucket}/retrain/dataset"])
    assert rc == 0
    s3 = boto3.client("s3", region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="retrain/dataset/")["Contents"]}
    local = {p.relative_to(tmp_path / "work" / "training-set").as_posix()
             for p in (tmp_path / "work" / "training-set").rglob("*") if p.is_file()}
    for channel in ("train", "validation"):
        assert {k.split(f"retrain/dataset/{channel}/", 1)[1] for k in keys
                if k.startswith(f"retrain/dataset/{channel}/")} == local
    assert not (tmp_path / "work" / "train").exists()  # nothing was trained


def test_an_interrupted_round_reruns_without_double_counting(loop):
    """A round killed after its reviews (no summary.json yet) is re-run: same selection, no vote twice."""
    from qa_workflow.loop.demo import Workspace, run_round

    cfg, ws, summaries, _ = loop
    rdir = ws / "rounds" / "round-01"
    assignments = (rdir / "round" / "assignments.csv").read_bytes()
    store = open_store(f"sqlite:///{ws / 'store.sqlite'}", create=False)
    counts = {s.item.item_id: (s.confirm_count, s.disconfirm_count) for s in store.iter_items()}
    store.close()
    (rdir / "summary.json").unlink()
    again = run_round(cfg, Workspace(ws), 1)
    assert (rdir / "round" / "assignments.csv").read_bytes() == assignments
    store = open_store(f"sqlite:///{ws / 'store.sqlite'}", create=False)
    assert {s.item.item_id: (s.confirm_count, s.disconfirm_count) for s in store.iter_items()} == counts
    store.close()
    assert again.reviewed == summaries[0].reviewed and again.votes == summaries[0].votes
    assert (rdir / "summary.json").is_file()


def test_a_second_round_corrects_the_masks_routed_to_adjust_within_its_seconds_budget(tmp_path):
    """Round 2 has a calibrator (round 1's analysis); with verify_min 0.9 and random reviewers (P(accept) ~ 0.5)
    routing sends masks straight to adjust, and the simulated correctors fix those slices in the same round.
    Round 1 (cold start) is charged the worst case per mask (check + correction, 63 s), so the budget lets it
    verify enough masks for a calibrator and leaves unreviewed pool slices for round 2."""
    cfg = LoopConfig(workspace=str(tmp_path / "ws"), rounds=2, subjects=6, slices=6, budget_seconds=600,
                     verify_min=0.9, reviewers=1, error_rate=0.5, seed=3, export=False,
                     initial_train={"unet": dict(epochs=1, width=0.125, batch_size=4),
                                    "enet": dict(epochs=1, width=0.25, batch_size=4)},
                     retrain={"unet": dict(epochs=1, batch_size=4), "enet": dict(epochs=1, batch_size=4)})
    first, second = run_loop(cfg)
    assert first.routed_adjust_slices == 0  # cold start: verify only
    assert second.routed_adjust_slices > 0
    store = open_store(f"sqlite:///{tmp_path / 'ws' / 'store.sqlite'}", create=False)
    routed = {c.slice_id for c in store.iter_corrections(job="segqa-sim-adjust-routed-round-02")}
    chained = {c.slice_id for c in store.iter_corrections(job="segqa-sim-adjust-round-02")}
    store.close()
    assert len(routed) == second.routed_adjust_slices and not routed & chained
    assert second.corrected_slices == second.routed_adjust_slices + second.chained_adjust_slices
    assert second.adjust_seconds == 60.0 * second.corrected_slices  # the cost model, one corrector
    assert second.planned_seconds <= cfg.budget_seconds
    for r in (first, second):  # what people spent, the chained corrections included, stays within the budget
        assert r.verify_seconds + r.adjust_seconds <= cfg.budget_seconds
    assert set(second.site_dice) == {"unet", "enet"} and all(second.site_dice.values())
    # per-site Dice comes from the promotion's own evaluation (decision log), not from evaluating again
    assert not (tmp_path / "ws" / "site-dice").exists()
    assert all(v and set(v) <= {"A", "B"} for v in second.site_dice.values())
    # the summary records what routing compared with: nothing in the cold start; in round 2, round 1's thresholds
    # as they apply to the masks of round 2's model (Thresholds.for_model), the same as round.json says
    from qa_workflow.rounds.selection import parse_thresholds

    rounds = tmp_path / "ws" / "rounds"
    fitted = parse_thresholds(json.loads((rounds / "round-01" / "analysis" / "thresholds.json").read_text()))
    run = json.loads((rounds / "round-02" / "predictions" / "run.json").read_text())
    assert first.thresholds_used == {}
    assert second.thresholds_used == dict(fitted.for_model(run["model_version"]).classes)
    assert set(second.thresholds_used) == {"csf", "gray_matter", "white_matter"}
    assert second.thresholds_used == json.loads((rounds / "round-02" / "round" / "round.json").read_text()
                                                 )["thresholds_in_use"]


def test_corrections_judge_the_unvoted_masks_of_their_slices_for_the_analysis(loop):
    _, ws, summaries, _ = loop
    import csv

    rdir = ws / "rounds" / "round-01"
    implied = list(csv.DictReader(open(rdir / "implied-verdicts.csv")))
    store = open_store(f"sqlite:///{ws / 'store.sqlite'}", create=False)
    voted = {s.item.item_id for s in store.iter_items() if s.confirm_count + s.disconfirm_count}
    corrected = {c.slice_id for c in store.iter_corrections()}
    store.close()
    assigned = {r["item_id"]: r for r in csv.DictReader(open(rdir / "round" / "assignments.csv"))
                if r["confidence"]}
    expected = {i for i, r in assigned.items() if r["slice_id"] in corrected} - voted
    assert {r["item_id"] for r in implied} == expected  # every unvoted mask of a corrected slice, no voted one
    for r in implied:
        assert (r["confirm_count"], r["disconfirm_count"]) == (("1", "0") if float(r["quality"]) >= 0.9 else ("0", "1"))
    totals = next(r for r in csv.DictReader(open(rdir / "analysis" / "acceptance_by_class.csv"))
                  if r["class_name"] == "TOTALS")
    assert int(totals["total"]) == summaries[0].reviewed + len(implied)
    assert summaries[0].implied_verdicts == len(implied)  # all from round 1, the only round
    assert summaries[0].implied_accepted == sum(r["confirm_count"] == "1" for r in implied)


def test_running_a_finished_demo_again_keeps_the_initial_models_figures(loop):
    """`segqa demo` continues a workspace; its "initial" row must stay the initial models' even when rounds have
    promoted others since (it showed the current champion's Dice as "initial")."""
    from qa_workflow.loop.registry import Registry

    cfg, ws, summaries, _ = loop
    registry = Registry(ws / "models")
    first = {d["network"]: d for d in registry.decisions() if d.get("round") is None}
    champions = {n: registry.champion(n) for n in first}
    before = json.loads((ws / "demo.json").read_text())
    for network, d in first.items():
        assert before["initial_dice"][network]["mean_foreground"] == d["challenger_metrics"]["mean_foreground_dice"]
        later = [v for v in registry.versions(network) if v != d["challenger"]]
        registry.set_champion(network, later[0])  # as a round's promotion would
    try:
        again = run_loop(cfg)
        assert [s.round for s in again] == [s.round for s in summaries]  # finished rounds are not re-run
        after = json.loads((ws / "demo.json").read_text())
        assert after["initial_dice"] == before["initial_dice"]
        assert after["initial_site_dice"] == before["initial_site_dice"]
    finally:
        for network, version in champions.items():
            if version is not None:
                registry.set_champion(network, version)


def test_the_loop_can_start_from_a_model_a_site_already_runs(loop, tmp_path):
    """`segqa demo --initial-model unet=DIR`: the given model becomes the first champion, evaluated on the new
    workspace's test split, and nothing is trained for it."""
    from dataclasses import replace

    from qa_workflow.contract import SegqaError
    from qa_workflow.loop.demo import prepare
    from qa_workflow.loop.registry import Registry

    cfg, ws, _, _ = loop
    given = ws / "initial" / "unet-initial"
    version = json.loads((given / "model_card.json").read_text())["version"]
    other = LoopConfig(workspace=str(tmp_path / "ws2"), subjects=4, slices=6, seed=5, networks=("unet",),
                       initial_model={"unet": str(given)})
    steps = []
    prepare(other, progress=lambda step, info: steps.append(step))
    registry = Registry(tmp_path / "ws2" / "models")
    assert registry.champion("unet") == version
    (first,) = [d for d in registry.decisions() if d.get("round") is None]
    assert first["challenger"] == version and first["promote"]
    assert 0.0 <= first["challenger_metrics"]["mean_foreground_dice"] <= 1.0
    assert not (tmp_path / "ws2" / "initial" / "unet-initial").exists()  # not trained again
    assert (tmp_path / "ws2" / "models" / "unet" / version / "checkpoints" / "best.params").is_file()
    prepare(other)  # continuing with the same model is fine; with another, the workspace says so
    challenger = next(v for v in Registry(ws / "models").versions("unet") if v != version)
    with pytest.raises(SegqaError, match=f"its initial U-Net is {version}, not the --initial-model"):
        prepare(replace(other, initial_model={"unet": str(ws / "models" / "unet" / challenger)}))


def test_a_given_initial_model_is_checked_before_anything_runs(loop, tmp_path):
    from qa_workflow.contract import SegqaError

    cfg, ws, _, _ = loop
    unet = ws / "initial" / "unet-initial"
    with pytest.raises(SegqaError, match="not a segqa model folder"):
        LoopConfig(workspace=str(tmp_path / "w"), initial_model={"unet": str(tmp_path)})
    with pytest.raises(SegqaError, match="a 'unet' model, given as the 'enet' one"):
        LoopConfig(workspace=str(tmp_path / "w"), initial_model={"enet": str(unet)})
    with pytest.raises(SegqaError, match="the networks are unet"):
        LoopConfig(workspace=str(tmp_path / "w"), networks=("unet",), initial_model={"enet": str(unet)})
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "model_card.json").write_text((unet / "model_card.json").read_text())
    with pytest.raises(SegqaError, match="no weights found"):
        LoopConfig(workspace=str(tmp_path / "w"), initial_model={"unet": str(broken)})
    assert not (tmp_path / "w").exists()


def test_demo_command_rejects_a_bad_initial_model_before_deleting_anything(tmp_path, capsys):
    from qa_workflow.cli import main

    workspace = tmp_path / "demo"
    workspace.mkdir()
    (workspace / "store.sqlite").write_text("kept")
    rc = main(["demo", "--quick", "--fresh", "-w", str(workspace), "--initial-model", "unet"])
    assert rc == 2 and "expected NETWORK=DIR" in capsys.readouterr().err
    rc = main(["demo", "--quick", "--fresh", "-w", str(workspace), "--initial-model", "unet=a", "--initial-model",
               "unet=b"])
    assert rc == 2 and "unet given twice" in capsys.readouterr().err
    rc = main(["demo", "--quick", "--fresh", "-w", str(workspace), "--initial-model", f"unet={tmp_path / 'none'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "none: no such model folder" in err and "Traceback" not in err
    assert (workspace / "store.sqlite").read_text() == "kept"


def test_a_round_without_reviews_of_its_own_model_analyses_all_and_auto_accepts_nothing(loop, tmp_path):
    """After a promotion, a round that reviewed nothing (an exhausted pool) has no reviews of its model: the
    analysis falls back to every review (the calibration still routes), and its thresholds name the earlier
    model, so routing would not apply them to the new one."""
    import shutil

    from qa_workflow.loop.demo import Workspace, _analyze
    from qa_workflow.loop.retraining import store_corrections
    from qa_workflow.rounds.selection import load_thresholds

    cfg, ws, _, _ = loop
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    run_file = copy / "rounds" / "round-01" / "predictions" / "run.json"
    run = json.loads(run_file.read_text())
    reviewed = run["model_version"]
    run_file.write_text(json.dumps({**run, "model_version": "unet-promoted"}))
    workspace = Workspace(copy)
    _analyze(cfg, workspace, 1, tmp_path / "analysis", store_corrections(workspace.store_uri))
    thresholds = load_thresholds(str(tmp_path / "analysis" / "thresholds.json"))
    assert thresholds.model_versions == (reviewed,)
    assert set(thresholds.for_model("unet-promoted").classes.values()) == {None}
    assert thresholds.for_model(reviewed) is thresholds
