"""The whole loop on the embedded default (issue #8): `segqa demo`, and the per-round step used by benchmarks.

Workspace layout (default ``demo/``)::

    cohort/                       atlas cohort (segqa data synth)
    models/                       registry: <network>/<version>/, <network>/CHAMPION, decisions.jsonl
    store.sqlite                  the confirmation store (every simulated or real vote)
    rounds/round-NN/
        predictions/              segqa predict on the pool with the review model's champion
        round/                    segqa select + segqa batch (assignments, batches, overlays, manifest), and
                                  adjust/<verify job>/ (the rejected slices as adjust tasks, their corrections)
        reviews.csv               store export after this round (all rounds so far)
        analysis/                 segqa analyze: tables, thresholds.json, report.html
        training-set/             base train + corrected pool slices (full labels) + confirmed ones (255 = ignore);
                                  sources.csv names each pool slice's source
        train/                    challenger training runs
        summary.json              the round's row of the demo table
    exports/round-NN/             the ENet edge export when a new ENet was promoted
    report.html                   links every round's analysis report and overlays
    demo.json                     configuration and all round summaries

Every step is a library call of the part that owns it (cohort, train, predict, select, batch, simulated
reviewers through the real Lambda handlers, simulated correctors for the slices routed to adjust and, chained to
the verify job, for the masks it rejected, store export, analyze, retrain, promote, export): the demo adds the
order and the bookkeeping, nothing else. Human seconds per round are summed from the store (every vote and
correction carries its seconds, from the cost model in simulation) and set against drawing the same slices from
scratch. Re-running continues: finished steps are detected by their outputs and skipped.

Two sites (ARCHITECTURE §4): the cohort has sites A and B; the initial models learn from the ``train`` split
(site A only), pool, val and test hold both, and every round reports the champions' test Dice per site. The
round's work is routed under a budget of human seconds (`LoopConfig.budget_seconds`, §5): a quick round gets
about 60 verify-equivalents (`verify_equivalents`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from qa_workflow import storage
from qa_workflow.contract import (
    ACCEPT,
    DEFAULT_CONFIDENCE_MEASURE,
    DEFAULT_TTA,
    NETWORK_LABELS,
    NETWORKS,
    REVIEW_CLASSES,
    CostModel,
    SegqaError,
    check_tta,
    round_sort_key,
)
from qa_workflow.loop.registry import Registry
from qa_workflow.review.simulated_reviewers import DEFAULT_TAU

log = logging.getLogger(__name__)

Progress = Callable[[str, dict[str, Any]], None]


def verify_equivalents(masks: int, costs: CostModel | None = None, p_accept: float = 0.5) -> float:
    """Human seconds worth ``masks`` verified masks with their expected chained correction, as the router
    charges them (`SelectionPolicy`: verify_s + (1 − p) · adjust_s) at even odds of acceptance: 60 → 1980 s
    with the default cost model (3 s + 0.5 · 60 s each). The demo's per-round budget is stated in these."""
    c = costs if costs is not None else CostModel()
    return float(masks) * (c.verify_s + (1.0 - p_accept) * c.adjust_s)


@dataclass
class LoopConfig:
    workspace: str = "demo"
    rounds: int = 3
    subjects: int = 10
    slices: int = 40
    seed: int = 0
    budget_seconds: float | None = verify_equivalents(90)  # human seconds of review work per round (routing §5)
    budget: int | None = None  # optional cap on verify + adjust masks per round (audit and random arm on top)
    verify_min: float = 0.5  # calibrated P(accept) from which a mask is verified; below it, adjusted directly
    # The confidence routing, calibration and thresholds use (ARCHITECTURE §5; docs/DECISIONS.md).
    measure: str = DEFAULT_CONFIDENCE_MEASURE
    # Test-time augmentation of the pool's predictions and of every test evaluation (training.predict.with_tta).
    tta: str = DEFAULT_TTA
    sites: tuple[str, ...] = ("A", "B")  # acquisition sites; the first is the labelled train split's
    per_subject_cap: int | None = None
    strategy: str = "uncertainty"  # or "random" (the B7 baseline)
    random_arm: int = 0
    reviewers: int = 3
    # Masks the reviewers split on go to this many reviewers in all: a second verify job with the difference
    # (rounds.escalating); None = a split goes to correction as it is (docs/DECISIONS.md, "Escalation").
    escalate_to: int | None = None
    error_rate: float = 0.03
    correctors: int = 1  # simulated correctors per adjust task; 0 = rejected masks stay unused (the old loop)
    review_network: str = "unet"
    method: str = "clopper-pearson"
    # With 3 reviewers erring 3 % each, ~9 % of perfect masks come back split; counting splits as incorrect
    # would make a 5 % target unreachable, so the loop's analysis follows the majority.
    split_policy: str = "majority"
    # Corrected slices judge the model's masks there at the reviewers' bar (surface Dice at 1 px >= this, the
    # simulated reviewers' tau) and those verdicts join the analysis (qa_workflow.loop.verdicts); None = votes only.
    implied_bar: float | None = DEFAULT_TAU
    max_error: float = 0.05
    confidence: float = 0.95
    tolerance: float = 0.01
    warm_start: bool = True
    use_auto_accepted: bool = False
    networks: tuple[str, ...] = NETWORKS
    initial_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    # network -> a trained model folder to start from instead of training one (the model a site already runs)
    initial_model: dict[str, str] = field(default_factory=dict)
    retrain: dict[str, dict[str, Any]] = field(default_factory=dict)
    export: bool = True

    def __post_init__(self) -> None:  # a misspelt option fails now, not after the initial training
        from qa_workflow.loop.retraining import check_given_model

        check_tta(self.tta)
        for network, model_dir in self.initial_model.items():
            if network not in self.networks:
                raise SegqaError(f"--initial-model {network}=…: the networks are {', '.join(self.networks)}")
            check_given_model(network, model_dir)
        if self.escalate_to is not None and self.escalate_to <= self.reviewers:
            raise SegqaError(f"--escalate-to must be more than the {self.reviewers} reviewers per mask, "
                             f"got {self.escalate_to}")

    @classmethod
    def preset(cls, quick: bool, **overrides: Any) -> LoopConfig:
        """The demo's two sizes. quick: <= 15 min on a 2-core CPU; default: <= 45 min."""
        # Widths and epochs measured on the 2-core CPU (docs/loop.md), the two networks training side by side on
        # one core each (training.parallel). The U-Net width 0.25 took ~220 s for 60 epochs (0.761 against 0.718
        # for 30). The native kernels (issue #14: PReLU, bottleneck tails, max-pooling, the loss) made an ENet
        # epoch ~1.4x and a U-Net width 0.25 epoch ~1.2x faster, so the same minutes now hold 72 U-Net and 60 ENet
        # epochs. The quick ENet is width 1: at width 0.5 it lost CSF in 30 epochs from the 48 labelled slices (test
        # Dice 0.41 against 0.65). Retrains are 16 epochs: at 8, a warm-started challenger's test Dice had a seed sd
        # up to 0.009 and lost gray matter to the restart of the learning rate, so the promotion rule took 4 of 12;
        # at 16, 10 of 12 (BENCHMARKS.md B7, "Retraining length"). The default preset's retrains went from 6 to 12
        # epochs likewise (its demo then promoted both networks every round, 34 min; docs/loop.md, 2026-12-03).
        if quick:
            base: dict[str, Any] = dict(subjects=10, slices=24, budget_seconds=verify_equivalents(60),
                                        initial_train={"unet": dict(epochs=72, width=0.25, batch_size=8, lr=0.005),
                                                       "enet": dict(epochs=60, width=1.0, batch_size=4, lr=0.005)},
                                        retrain={"unet": dict(epochs=16, batch_size=8, lr=0.002),
                                                 "enet": dict(epochs=16, batch_size=4, lr=0.002)})
        else:
            base = dict(subjects=12, slices=40, budget_seconds=verify_equivalents(120),
                        initial_train={"unet": dict(epochs=30, width=0.5, batch_size=8, lr=0.005),
                                       "enet": dict(epochs=40, width=1.0, batch_size=4, lr=0.005)},
                        retrain={"unet": dict(epochs=12, batch_size=8, lr=0.002),
                                 "enet": dict(epochs=12, batch_size=4, lr=0.002)})
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


@dataclass
class RoundSummary:
    round: str
    reviewed: int
    auto_accepted: int
    audit: int
    random_arm: int
    votes: int
    acceptance_rate: float  # accepted items / reviewed items (consolidated: contract.vote_outcome)
    accepted_items: int
    thresholds: dict[str, float | None]
    training_pool_slices: int
    dice: dict[str, dict[str, float]]  # network -> {class: Dice, mean_foreground: ...} of the champion after the round
    promoted: dict[str, bool]
    export: str | None
    analysis_report: str
    overlays: str
    corrected_slices: int = 0  # slices a person corrected this round (adjust tasks consolidated)
    verify_seconds: float = 0.0  # human seconds on verify answers of this round
    adjust_seconds: float = 0.0  # human seconds on corrections of this round
    scratch_seconds: float = 0.0  # drawing the round's reviewed slices from scratch (cost model), for comparison
    training_corrected_slices: int = 0  # corrected slices in the retraining set after this round (all rounds)
    routed_adjust_slices: int = 0  # slices routing sent straight to correction (adjust tasks without a verify step)
    chained_adjust_slices: int = 0  # slices corrected because the verify job rejected a mask of theirs
    deferred_adjust_slices: int = 0  # slices with a rejected mask left uncorrected: the budget was spent
    audit_errors: int = 0  # audited auto-accepted masks the reviewers rejected (the audit route's result)
    budget_seconds: float | None = None  # the round's human-seconds budget
    implied_verdicts: int = 0  # masks of this round's corrected slices judged against the correction (loop.verdicts)
    implied_accepted: int = 0  # of those, the ones that met the reviewers' bar
    planned_seconds: float = 0.0  # what routing expected the round's work to cost (its expected_seconds)
    thresholds_used: dict[str, float | None] = field(default_factory=dict)  # what this round's routing compared with
    site_dice: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # network -> site -> Dice
    escalated: int = 0  # split masks sent to more reviewers (LoopConfig.escalate_to)
    escalated_accepted: int = 0  # of those, the ones the added votes resolved as accepted (no correction)


class Workspace:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def cohort(self) -> Path:
        return self.root / "cohort"

    @property
    def store_uri(self) -> str:
        return f"sqlite:///{(self.root / 'store.sqlite').resolve()}"

    @property
    def registry(self) -> Registry:
        return Registry(self.root / "models")

    def round_dir(self, r: int) -> Path:
        return self.root / "rounds" / round_id(r)


def round_id(r: int) -> str:
    return f"round-{r:02d}"


def _emit(progress: Progress | None, step: str, **info: Any) -> None:
    if progress is not None:
        progress(step, info)


def _model_dir(ws: Workspace, network: str, version: str) -> Path:
    return storage.local_path(ws.registry.model_uri(network, version))


def _champion_dir(ws: Workspace, network: str) -> Path:
    version = ws.registry.champion(network)
    if version is None:
        raise SegqaError(f"no {network} champion in {ws.registry.root}")
    return _model_dir(ws, network, version)


def _initial_version(ws: Workspace, network: str) -> str | None:
    """The version of ``network``'s initial model (the first decision, made before any round), else None."""
    for d in ws.registry.decisions():
        if d["network"] == network and d.get("round") is None:
            return str(d["challenger"])
    return None


def _test_dice(ws: Workspace, network: str, version: str | None = None) -> dict[str, float]:
    """Pooled test Dice of ``version`` (default: the champion), from the registry's decision log (no
    re-evaluation)."""
    champion = version or ws.registry.champion(network)
    for d in reversed(ws.registry.decisions()):
        if d["network"] == network and d["challenger"] == champion:
            m = d["challenger_metrics"]
            return {**m["dice"], "mean_foreground": m["mean_foreground_dice"]}
        if d["network"] == network and d["champion"] == champion and d["champion_metrics"]:
            m = d["champion_metrics"]
            return {**m["dice"], "mean_foreground": m["mean_foreground_dice"]}
    return {}


def _site_dice(ws: Workspace, network: str, tta: str = DEFAULT_TTA, version: str | None = None
               ) -> dict[str, dict[str, float]]:
    """Test Dice per acquisition site of ``version`` (default: the champion): site -> {class: Dice,
    "mean_foreground": ...}; empty for a cohort without named sites. Read from the decision that evaluated it
    (`evaluation_metrics`)."""
    from qa_workflow.loop.retraining import evaluation_metrics
    from training.evaluate import evaluate_model

    version = version or ws.registry.champion(network)
    if version is None:
        return {}
    for d in reversed(ws.registry.decisions()):  # the promotion's own evaluation of this model
        for role, metrics in (("challenger", d.get("challenger_metrics")), ("champion", d.get("champion_metrics"))):
            if d["network"] == network and d.get(role) == version and metrics and "sites" in metrics:
                return dict(metrics["sites"])
    # no sites named, or decisions written before per-site metrics: evaluate once, cached per model version
    cache = ws.root / "site-dice" / network / f"{version}{'' if tta == 'none' else '-' + tta}.json"
    if cache.is_file():
        return dict(json.loads(cache.read_text()))
    out = evaluation_metrics(evaluate_model(_model_dir(ws, network, version), ws.cohort, split="test", tta=tta)
                             ).get("sites", {})
    storage.write_json(str(cache), out)
    return dict(out)


def prepare(cfg: LoopConfig, progress: Progress | None = None, train_progress: Callable[[Any], None] | None = None
            ) -> Workspace:
    """Cohort + initial champions (idempotent)."""
    from qa_workflow.loop.retraining import initial_models
    from training.cohort import CohortParams, build_cohort
    from training.modelcard import read_card

    ws = Workspace(cfg.workspace)
    ws.root.mkdir(parents=True, exist_ok=True)
    if not (ws.cohort / "index.csv").is_file():
        _emit(progress, "cohort", subjects=cfg.subjects, slices=cfg.slices)
        build_cohort(ws.cohort, cfg.subjects, seed=cfg.seed, params=CohortParams(n_slices=cfg.slices),
                     sites=tuple(cfg.sites))
    for network, model_dir in cfg.initial_model.items():  # continuing a workspace that started elsewhere
        first = _initial_version(ws, network)
        given = read_card(model_dir)["version"]
        if first is not None and first != given:
            raise SegqaError(f"{ws.root}: its initial {NETWORK_LABELS.get(network, network)} is {first}, not the "
                             f"--initial-model {model_dir} ({given}); pass --fresh to start over from it")
    missing = [n for n in cfg.networks if ws.registry.champion(n) is None]
    if missing:
        _emit(progress, "initial", network=" and ".join(NETWORK_LABELS.get(n, n) for n in missing))
        initial_models(ws.registry, ws.cohort, ws.root / "initial", cfg.initial_train, progress=train_progress,
                       networks=missing, tta=cfg.tta, given=cfg.initial_model)
    return ws


def reviewed_item_ids(store_uri: str, before_round: str | None = None) -> set[str]:
    """Item ids with a review outcome: at least one vote, or a slice a person corrected (a corrected slice is a
    full label, so none of its classes is routed again) — only in rounds before ``before_round`` when given, so
    that re-running an interrupted round (or any earlier one) selects exactly what it selected the first time."""
    from qa_workflow.confirmations.store import open_store

    def earlier(r: str | None) -> bool:
        return before_round is None or (r is not None and round_sort_key(r) < round_sort_key(before_round))

    store = open_store(store_uri)
    try:
        voted = {s.item.item_id for s in store.iter_items() if s.outcome is not None and earlier(s.item.round)}
        corrected = {c.slice_id for c in store.iter_corrections() if earlier(c.round)}
    finally:
        store.close()
    return voted | {f"{slice_id}/{c.name}" for slice_id in corrected for c in REVIEW_CLASSES}


def run_round(cfg: LoopConfig, ws: Workspace, r: int, progress: Progress | None = None,
              train_progress: Callable[[Any], None] | None = None,
              review: Callable[[Path, str], Any] | None = None) -> RoundSummary:
    """One round: predict -> select -> batch -> review -> analyze -> retrain -> promote -> export."""
    from qa_workflow.loop.retraining import (
        auto_accepted_items,
        build_retraining_set,
        retrain_round,
        store_corrections,
        store_outcomes,
    )
    from qa_workflow.rounds.batching import write_batches
    from qa_workflow.rounds.predict import run_predictions
    from qa_workflow.rounds.round_dir import read_assignments, select_round
    from qa_workflow.rounds.selection import SelectionPolicy
    from training.predict import load_predictor, with_tta

    rid = round_id(r)
    rdir = ws.round_dir(r)
    done = rdir / "summary.json"
    if done.is_file():
        return RoundSummary(**json.loads(done.read_text()))
    rdir.mkdir(parents=True, exist_ok=True)
    pred_dir = rdir / "predictions"
    if not (pred_dir / "run.json").is_file():
        _emit(progress, "predict", round=rid)
        run_predictions(with_tta(load_predictor(_champion_dir(ws, cfg.review_network)), cfg.tta), ws.cohort,
                        str(pred_dir), split="pool", seed=cfg.seed)
    previous = ws.round_dir(r - 1) / "analysis" / "thresholds.json" if r > 1 else None
    thresholds = str(previous) if previous is not None and previous.is_file() else None
    round_path = rdir / "round"
    _emit(progress, "select", round=rid, thresholds=thresholds)
    # Routing (§5): auto-accept / verify / adjust / audit within the round's human seconds; P(accept) from the
    # calibration.json beside the previous analysis's thresholds.json (select_round finds it).
    policy = SelectionPolicy(budget_seconds=cfg.budget_seconds, budget=cfg.budget,
                             per_subject_cap=cfg.per_subject_cap, strategy=cfg.strategy, random_arm=cfg.random_arm,
                             verify_min=cfg.verify_min, seed=cfg.seed * 1000 + r, measure=cfg.measure,
                             # every reviewer's check and every corrector's answer is human time
                             costs=_crew_costs(cfg))
    selected = select_round(str(pred_dir), str(round_path), policy, thresholds=thresholds, round_id=rid,
                            exclude=reviewed_item_ids(ws.store_uri, before_round=rid))
    work = sum(selected.counts.get(a, {}).get("total", 0) for a in ("verify", "adjust", "audit", "random_arm"))
    batched = None
    if work:  # a pool with nothing left to review goes straight on to analysis and retraining
        _emit(progress, "batch", round=rid)
        batched = write_batches(str(round_path))
        _emit(progress, "review", round=rid)
    routed_slices = len(batched.adjust["slices"]) if batched is not None and batched.adjust else 0
    chained = Chained(0, 0)
    if batched is not None:
        chained = (_review_by_people(review, cfg, ws, round_path, rid, batched) if review is not None
                   else _review_by_simulation(cfg, ws, round_path, r, batched, progress))
    _emit(progress, "analyze", round=rid)
    analysis_dir = rdir / "analysis"
    corrections = store_corrections(ws.store_uri)
    thresholds_now, implied = _analyze(cfg, ws, r, analysis_dir, corrections)
    implied_now = [v for v in implied if v["round"] == rid]

    outcomes = store_outcomes(ws.store_uri)
    predictions = {round_id(k): str(ws.round_dir(k) / "predictions") for k in range(1, r + 1)}
    auto = (auto_accepted_items({round_id(k): str(ws.round_dir(k) / "round") for k in range(1, r + 1)})
            if cfg.use_auto_accepted else [])
    _emit(progress, "retrain", round=rid)
    training_set = build_retraining_set(ws.cohort, outcomes, predictions, rdir / "training-set", auto_accepted=auto,
                                        corrections=corrections)
    train_dir = rdir / "train"
    result = retrain_round(rid, ws.registry, ws.cohort, training_set, train_dir, cfg.retrain,
                           warm_start=cfg.warm_start, tolerance=cfg.tolerance,
                           export_dir=(ws.root / "exports" / rid) if cfg.export else None,
                           networks=cfg.networks, progress=train_progress, tta=cfg.tta)
    shutil.rmtree(train_dir, ignore_errors=True)  # challengers now live in the registry

    frame = read_assignments(str(round_path))
    counts = frame["assignment"].value_counts().to_dict()
    this_round = [o for o in outcomes if o["round"] == rid]
    accepted = sum(o["outcome"] == ACCEPT for o in this_round)
    from qa_workflow.confirmations.store import open_store

    audited = frame.loc[frame["assignment"] == "audit", "item_id"].astype(str).tolist()
    store = open_store(ws.store_uri)
    try:
        votes = sum(s.confirm_count + s.disconfirm_count for s in store.iter_items(round=rid))
        cost = human_seconds(store, rid)
        audit_errors = _audit_errors(store, rid, audited, cfg.split_policy)
    finally:
        store.close()
    summary = RoundSummary(
        round=rid, reviewed=len(this_round), auto_accepted=int(counts.get("auto_accept", 0)),
        audit=int(counts.get("audit", 0)), random_arm=int(counts.get("random_arm", 0)), votes=votes,
        acceptance_rate=(accepted / len(this_round)) if this_round else float("nan"), accepted_items=accepted,
        thresholds=thresholds_now, training_pool_slices=training_set.pool_slices,
        dice={n: _test_dice(ws, n) for n in cfg.networks},
        promoted={n: o.decision.promote for n, o in result.networks.items()},
        export=str(result.export_dir) if result.export_dir else None,
        analysis_report=str(analysis_dir / "report.html"), overlays=str(round_path / "overlays"),
        corrected_slices=cost["corrected_slices"], verify_seconds=cost["verify_seconds"],
        adjust_seconds=cost["adjust_seconds"], scratch_seconds=cost["scratch_seconds"],
        training_corrected_slices=training_set.corrected_slices, routed_adjust_slices=routed_slices,
        chained_adjust_slices=chained.sent, deferred_adjust_slices=chained.deferred, audit_errors=audit_errors,
        escalated=chained.escalated, escalated_accepted=chained.escalated_accepted,
        budget_seconds=cfg.budget_seconds,
        implied_verdicts=len(implied_now), implied_accepted=sum(int(v["confirm_count"]) for v in implied_now),
        planned_seconds=float(selected.seconds.get("total", 0.0)),
        thresholds_used=dict(policy.thresholds_) if thresholds else {},  # as routing applied them (for_model)
        site_dice={n: _site_dice(ws, n, cfg.tta) for n in cfg.networks})
    storage.write_json(str(done), asdict(summary))
    return summary


def _audit_errors(store: Any, rid: str, audited: list[str], split_policy: str) -> int:
    """Audited auto-accepted masks of round ``rid`` that the reviewers rejected (a split counts by the analysis's
    split policy: a strict majority of accepts is correct under "majority", any reject is an error otherwise)."""
    wanted = set(audited)
    errors = 0
    for s in store.iter_items(round=rid):
        if s.item.item_id not in wanted or s.outcome is None:
            continue
        ok = (s.confirm_count > s.disconfirm_count) if split_policy == "majority" else s.outcome == ACCEPT
        errors += not ok
    return errors


class Chained(NamedTuple):
    """The chained adjust job of a round: slices sent to correction, and slices with a rejected mask held back
    because the round's human-seconds budget was spent."""

    sent: int
    deferred: int
    escalated: int = 0  # split masks given a second opinion before the chained job
    escalated_accepted: int = 0  # of those, the ones it resolved as accepted


def _review_by_simulation(cfg: LoopConfig, ws: Workspace, round_path: Path, r: int, batched: Any,
                          progress: Progress | None) -> Chained:
    """Simulated verifiers answer the verify batches (and, with ``cfg.escalate_to``, more of them the masks the
    first ones split on), simulated correctors the routed adjust manifest and then the chained job of what the
    verifiers did not accept (within what is left of the budget)."""
    from qa_workflow.review.simulated_correctors import simulate_adjust
    from qa_workflow.review.simulated_reviewers import load_truth_labels, simulate_round

    rid = round_id(r)
    seed = cfg.seed * 1000 + r
    verify_job = None
    escalation: tuple[str, int, int] | None = None
    if batched.batches:
        verify_job = simulate_round(str(round_path), ws.cohort, store_uri=ws.store_uri, reviewers=cfg.reviewers,
                                    error_rate=cfg.error_rate, seed=seed).job_name
        # the routed corrections run after the escalation, but the router planned them into the budget first
        reserved = (len(batched.adjust["slices"]) * _crew_costs(cfg).adjust_s
                    if batched.adjust and cfg.correctors else 0.0)
        escalation = _escalate(cfg, ws, round_path, rid, verify_job, seed, reserved=reserved)
    escalated = Chained(0, 0, *escalation[1:]) if escalation else Chained(0, 0)
    if not cfg.correctors or not (batched.adjust or verify_job):
        return escalated
    _emit(progress, "correct", round=rid)
    if batched.adjust:  # the masks routed straight to correction, in the same round
        simulate_adjust(batched.adjust["manifest"], load_truth_labels(ws.cohort), store_uri=ws.store_uri,
                        job_name=f"segqa-sim-adjust-routed-{rid}", correctors=cfg.correctors, seed=seed)
    if not verify_job:
        return escalated
    # the chained job: what the verifiers rejected, on slices not corrected already
    tasks, chained = _chained_tasks(cfg, ws, round_path, rid, verify_job,
                                    corrected=set(batched.adjust["slices"]) if batched.adjust else set(),
                                    escalations=(escalation[0],) if escalation else ())
    if tasks is not None:
        simulate_adjust(tasks.manifest, load_truth_labels(ws.cohort), store_uri=ws.store_uri,
                        job_name=f"segqa-sim-adjust-{rid}", correctors=cfg.correctors, seed=seed)
    return chained._replace(escalated=escalated.escalated, escalated_accepted=escalated.escalated_accepted)


def _escalate(cfg: LoopConfig, ws: Workspace, round_path: Path, rid: str, verify_job: str, seed: int,
              reserved: float = 0.0) -> tuple[str, int, int] | None:
    """Give the masks the verify job split on a second opinion: ``cfg.escalate_to − cfg.reviewers`` more
    simulated reviewers (other people) in a second verify job (`rounds.escalating`), as many masks as the round's
    seconds left pay for, less ``reserved`` (work already planned that the store has not booked yet: the
    routed corrections). Returns (the job, masks escalated, masks it resolved as accepted), or None."""
    from qa_workflow.confirmations.store import open_store
    from qa_workflow.contract import ACCEPT
    from qa_workflow.review.simulated_reviewers import simulate_round
    from qa_workflow.rounds.escalating import split_in_store, write_escalation_batches

    if cfg.escalate_to is None:
        return None
    extra = cfg.escalate_to - cfg.reviewers
    store = open_store(ws.store_uri)
    try:
        split = split_in_store(store, verify_job)
        left = _seconds_left(cfg, store, rid)
        if left is not None:
            split = split[:max(int((left - reserved) // (extra * CostModel().verify_s)), 0)]
    finally:
        store.close()
    if not split:
        return None
    batches = write_escalation_batches(str(round_path), split, verify_job)
    job = simulate_round(batches.manifest, ws.cohort, store_uri=ws.store_uri, reviewers=extra,
                         first_reviewer=cfg.reviewers + 1, error_rate=cfg.error_rate, seed=seed,
                         job_name=f"segqa-sim-escalate-{rid}").job_name
    store = open_store(ws.store_uri)
    try:
        accepted = sum(1 for iid in split if (st := store.get_item(iid, round=rid)) and st.outcome == ACCEPT)
    finally:
        store.close()
    log.info("round %s: %d split mask(s) sent to %d more reviewer(s); %d now accepted", rid, len(split), extra,
             accepted)
    return job, len(split), accepted


def _crew_costs(cfg: LoopConfig) -> CostModel:
    """The cost model charged for the whole crew: every reviewer's check and every corrector's answer."""
    return CostModel().for_crew(cfg.reviewers, max(cfg.correctors, 1))


def _seconds_left(cfg: LoopConfig, store: Any, rid: str) -> float | None:
    """What the round's human-seconds budget has left after the votes and corrections the store books for it;
    None without a budget."""
    if cfg.budget_seconds is None:
        return None
    spent = human_seconds(store, rid)
    return float(cfg.budget_seconds - spent["verify_seconds"] - spent["adjust_seconds"])


def _review_by_people(review: Callable[[Path, str], Any], cfg: LoopConfig, ws: Workspace, round_path: Path,
                      rid: str, batched: Any) -> Chained:
    """The round's work served to people (``review``: the portal, `segqa demo --interactive`) in the order the
    simulated round runs it: the verify batches, then the slices routed straight to correction, then the chained
    adjust job of what the verifiers rejected (within what is left of the budget). ``batched``:
    `rounds.batching.write_batches`'s result."""
    from qa_workflow.review.portal.labeling import job_name_for, resolve_manifest

    verify_job = None
    if batched.batches:
        review(round_path, ws.store_uri)
        verify_job = job_name_for(resolve_manifest(str(round_path)))  # the job name the portal gives the round
    routed = set(batched.adjust["slices"]) if batched.adjust else set()
    if batched.adjust:
        review(Path(batched.adjust["manifest"]), ws.store_uri)
    if verify_job is None:
        return Chained(0, 0)
    tasks, chained = _chained_tasks(cfg, ws, round_path, rid, verify_job, corrected=routed)
    if tasks is not None:
        review(Path(tasks.manifest), ws.store_uri)
    return chained


def _chained_tasks(cfg: LoopConfig, ws: Workspace, round_path: Path, rid: str, verify_job: str,
                   corrected: Iterable[str] = (), escalations: Iterable[str] = ()) -> tuple[Any, Chained]:
    """Chain the round's verify job to an adjust job: its rejected (or split) masks become adjust tasks, one per
    slice (`rounds.adjusting.AdjustTasks`; None when nothing is sent). Slices in ``corrected`` (already corrected
    this round: routed to adjust) are not sent again. With a budget, only as many slices as the seconds left
    after the round's verify votes and corrections so far pay for (cost model), those with the most rejected
    masks first; the rest keep their reject verdicts and stay uncorrected (deferred). ``escalations``: the jobs
    that gave the verify job's split masks a second opinion; a mask they resolved as accepted is not sent."""
    from qa_workflow.confirmations.store import open_store
    from qa_workflow.contract import parse_item_id
    from qa_workflow.rounds.adjusting import rejected_in_store, write_adjust_tasks

    store = open_store(ws.store_uri)
    try:
        done = set(corrected)
        rejected = [i for i in rejected_in_store(store, verify_job, *escalations)
                    if parse_item_id(i).slice_id not in done]
        left = _seconds_left(cfg, store, rid)
    finally:
        store.close()
    per_slice = _crew_costs(cfg).adjust_s
    sent, chained = chain_within_budget(rejected, left, per_slice)
    if chained.deferred:
        log.info("round %s: %d slice(s) with a rejected mask left uncorrected: %.0f of the budget's %.0f s were "
                 "left for the chained corrections", rid, chained.deferred, max(left or 0.0, 0.0), cfg.budget_seconds)
    if not sent:
        return None, chained
    return write_adjust_tasks(str(round_path), sent, verify_job), chained


def chain_within_budget(rejected: list[str], seconds_left: float | None, per_slice_s: float
                        ) -> tuple[list[str], Chained]:
    """Which rejected masks (item ids) the chained adjust job sends: all of them without a budget
    (``seconds_left`` None), else the slices ``seconds_left`` pays for at ``per_slice_s`` each, the slices with
    the most rejected masks first (ties in the order rejected). Returns the items sent and the slice counts."""
    from qa_workflow.contract import parse_item_id

    by_slice: dict[str, list[str]] = {}
    for item in rejected:
        by_slice.setdefault(parse_item_id(item).slice_id, []).append(item)
    slices = sorted(by_slice, key=lambda s: -len(by_slice[s]))  # sorted() is stable
    if seconds_left is not None:
        slices = slices[:max(0, int(seconds_left // per_slice_s))]
    return [i for s in slices for i in by_slice[s]], Chained(sent=len(slices), deferred=len(by_slice) - len(slices))


def human_seconds(store: Any, rid: str, scratch_s: float | None = None) -> dict[str, Any]:
    """A round's human cost from the store: seconds on its verify votes and on its corrections, the slices
    corrected, and what drawing every slice the round put before a person would cost from scratch."""
    from qa_workflow.contract import parse_item_id
    from qa_workflow.review.simulated_correctors import COST_MODEL

    votes = list(store.iter_votes(round=rid))
    corrections = list(store.iter_corrections(round=rid))
    slices = {parse_item_id(v.item_id).slice_id for v in votes} | {c.slice_id for c in corrections}
    per_slice = COST_MODEL.scratch_s if scratch_s is None else scratch_s
    return {"verify_seconds": float(sum(v.seconds or 0.0 for v in votes)),
            "adjust_seconds": float(sum(c.seconds or 0.0 for c in corrections)),
            "corrected_slices": len({(c.job, c.slice_id) for c in corrections}),
            "scratch_seconds": float(len(slices) * per_slice)}


def _analyze(cfg: LoopConfig, ws: Workspace, r: int, analysis_dir: Path, corrections: Sequence[Mapping[str, Any]]
             ) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Store (all rounds so far) -> analysis -> thresholds.json; returns the thresholds (unit scale) and the
    verdicts implied by ``corrections`` (`retraining.store_corrections` rows) that the analysis took in.

    Also writes the review-record CSV the analysis read (``reviews.csv``), for people and other tools, and the
    verdicts implied by corrections (``implied-verdicts.csv``, with each mask's surface Dice) when they count.
    """
    from analysis.run import AnalysisOptions, analyze, load_inputs, write_outputs
    from qa_workflow.confirmations.export import export_review_records, review_records_csv
    from qa_workflow.confirmations.store import open_store
    from qa_workflow.rounds.predict import read_run

    rdir = ws.round_dir(r)
    store = open_store(ws.store_uri, create=False)
    try:
        direct, _ = export_review_records(store)  # the items reviewers voted on: their verdict wins
    finally:
        store.close()
    storage.write_text(str(rdir / "reviews.csv"), review_records_csv(direct))
    implied: list[dict[str, Any]] = []
    if cfg.implied_bar is not None:
        from qa_workflow.loop.verdicts import implied_review_records

        rounds = {round_id(k): str(ws.round_dir(k) / "round") for k in range(1, r + 1)}
        implied = implied_review_records(corrections, rounds, cfg.implied_bar,
                                         skip_items={row["item_id"] for row in direct})
        storage.write_text(str(rdir / "implied-verdicts.csv"), review_records_csv(implied, extra=("quality",)))
    # Thresholds for the model that predicted this round, from the reviews of its masks: routing applies them
    # to that model only (rounds.selection.Thresholds.for_model), so a promoted successor earns its own. A
    # round that reviewed nothing of its model (an exhausted pool) analyses every review: the calibration
    # still serves routing, and thresholds fitted on several models auto-accept nothing.
    version = read_run(str(rdir / "predictions"))["model_version"]
    own = any(row.get("model_version") == version for row in [*direct, *implied])
    records, votes = load_inputs(store=ws.store_uri, split_policy=cfg.split_policy, implied=implied,
                                 model_version=version if own else None)
    options = AnalysisOptions(method=cfg.method, max_error=cfg.max_error, confidence=cfg.confidence)
    result = analyze(records, options, votes=votes)
    write_outputs(result, analysis_dir)
    data = json.loads((analysis_dir / "thresholds.json").read_text())
    return {c: v.get("threshold_unit", v.get("threshold")) for c, v in data["classes"].items()}, implied


def run_loop(cfg: LoopConfig, progress: Progress | None = None, train_progress: Callable[[Any], None] | None = None,
             review: Callable[[Path, str], Any] | None = None) -> list[RoundSummary]:
    ws = prepare(cfg, progress, train_progress)
    storage.write_json(str(ws.root / "demo.json"), {"config": asdict(cfg), "rounds": []})
    summaries: list[RoundSummary] = []
    # the initial models' figures, also when a finished or interrupted demo is run again (champions may have changed)
    first = {n: _initial_version(ws, n) for n in cfg.networks}
    initial = {n: _test_dice(ws, n, first[n]) for n in cfg.networks}
    initial_sites = {n: _site_dice(ws, n, cfg.tta, first[n]) for n in cfg.networks}
    for r in range(1, cfg.rounds + 1):
        summaries.append(run_round(cfg, ws, r, progress, train_progress, review))
        _emit(progress, "round-done", summary=summaries[-1])
        storage.write_json(str(ws.root / "demo.json"),
                           {"config": asdict(cfg), "initial_dice": initial, "initial_site_dice": initial_sites,
                            "rounds": [asdict(s) for s in summaries]})
    from qa_workflow.loop.demo_report import write_report

    write_report(ws.root, cfg, initial, summaries, initial_sites, decisions=ws.registry.decisions())
    return summaries
