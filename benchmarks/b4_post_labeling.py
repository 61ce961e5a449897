"""B4 — post-labeling throughput: annotations consolidated per second by the post-labeling Lambda handler.

One invocation of `lambdas/post_labeling/handler.lambda_handler` with a Ground Truth-shaped event whose payload
holds 40 data objects (batches of 25 items), each annotated by 3 workers: 40 × 25 × 3 = 3,000 item decisions
(120 worker annotations). Measured on both store engines — SQLite (a real file, WAL) and DynamoDB emulated by
moto — for a fresh invocation (every vote new) and a replay of the same invocation (every vote already stored).
Batches and the payload are local files, so the figures are the handler plus the store.

    .venv/bin/python benchmarks/b4_post_labeling.py [--objects 40 --items 25 --workers 3 --repeats 3]
                                                    [--out benchmarks/results/B4.md]

moto is an in-process emulator: its figures measure this code plus moto, not DynamoDB. For a real table the
request counts printed (TransactWriteItems and BatchGetItem calls per invocation) times the round-trip latency
are the better guide. moto 5.2.5 backs up the whole table once per *action* of a transaction (a 25-vote
transaction has 50 actions), which makes each write O(table size); by default this script makes that backup
once per table per transaction (`patch_moto_transaction_backup`, same semantics) and, with ``--moto-as-is``,
measures moto unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

for _k, _v in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"), ("AWS_DEFAULT_REGION", "us-east-1")):
    os.environ.setdefault(_k, _v)
os.environ.pop("AWS_PROFILE", None)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lambdas.post_labeling.handler import lambda_handler  # noqa: E402
from qa_workflow.confirmations import store as store_mod  # noqa: E402
from qa_workflow.confirmations.consolidate import annotation_entry, post_labeling_event  # noqa: E402
from qa_workflow.confirmations.dynamodb import create_table  # noqa: E402

REASONS = ["under_segmented", "over_segmented", "wrong_tissue", "image_artifact", "other"]
JOB_ARN = "arn:aws:sagemaker:us-east-1:111122223333:labeling-job/segqa-b4"
GT_ROLE_ARN = "arn:aws:iam::111122223333:role/SageMakerGT"
#: The adjust half of B4 (b4_adjust.py) lives between these marks in the same result file.
ADJUST_MARKS = ("<!-- b4-adjust -->", "<!-- /b4-adjust -->")


def make_payload(root: Path, n_objects: int, n_items: int, n_workers: int, seed: int = 0) -> str:
    """Batches + a post-labeling payload file (content-form annotations, shuffled decisions); returns its path."""
    rng = random.Random(seed)
    colors = {"csf": "#1f77b4", "gray_matter": "#2ca02c", "white_matter": "#ffbf00"}
    payload = []
    for o in range(n_objects):
        cls = list(colors)[o % 3]
        subject = f"sub-{o:03d}"
        items = [{"item_id": f"{subject}/{s:03d}/{cls}", "slice_id": f"{subject}/{s:03d}", "class_name": cls,
                  "confidence": round(rng.random(), 4), "overlay_uri": f"s3://b/o/{o}/{s}.png",
                  "image_uri": f"s3://b/i/{o}/{s}.png", "mask_uri": f"s3://b/m/{o}/{s}.png"} for s in range(n_items)]
        batch = {"batch_id": f"b4-{o:04d}", "round": 1, "model_version": "unet-v1",
                 "class_id": ["csf", "gray_matter", "white_matter"].index(cls) + 1, "class_name": cls,
                 "color": colors[cls], "items": items}
        bpath = root / "batches" / f"{batch['batch_id']}.json"
        bpath.parent.mkdir(parents=True, exist_ok=True)
        bpath.write_text(json.dumps(batch))
        annotations = []
        for w in range(n_workers):
            decisions = []
            for it in items:
                if rng.random() < 0.8:
                    decisions.append({"item_id": it["item_id"], "decision": "accept"})
                else:
                    decisions.append({"item_id": it["item_id"], "decision": "reject", "reason": rng.choice(REASONS)})
            rng.shuffle(decisions)
            form = {"decisions": json.dumps(decisions), "batch_id": batch["batch_id"],
                    "submitted_at": "2025-01-01T00:00:00.000Z"}
            annotations.append(annotation_entry(f"private.us-east-1.worker{w}", form))
        payload.append((bpath, annotations))
    return write_payload(root, payload)


def write_payload(root: Path, objects: list[tuple[Path, list[dict]]]) -> str:
    """``root/payload.json``, the post-labeling payload: one data object per (object file, annotations), with
    ``datasetObjectId`` its position; returns its path. b4_adjust.py uses it too."""
    payload = [{"datasetObjectId": str(o), "dataObject": {"s3Uri": str(path)}, "annotations": annotations}
               for o, (path, annotations) in enumerate(objects)]
    ppath = root / "payload.json"
    ppath.write_text(json.dumps(payload))
    return str(ppath)


def event(payload_uri: str) -> dict:
    return post_labeling_event(JOB_ARN, payload_uri, "segqa-review", GT_ROLE_ARN)


def patch_moto_transaction_backup() -> None:
    """Make moto's TransactWriteItems back each table up once per transaction instead of once per action.

    moto's backup loop deep-copies ``self.tables[name]`` for every action; the table does not change inside that
    loop, so memoising the copies within one call gives the same backup."""
    import copy as _copy

    from moto.dynamodb import models

    original = models.DynamoDBBackend.transact_write_items

    class _OncePerCall:
        def __init__(self) -> None:
            self.memo: dict[int, object] = {}

        def deepcopy(self, obj, memo=None):
            if not isinstance(obj, models.Table):  # items etc.: copied as moto does
                return _copy.deepcopy(obj, memo)
            if id(obj) not in self.memo:
                self.memo[id(obj)] = _copy.deepcopy(obj)
            return self.memo[id(obj)]

    def transact_write_items(self, transact_items):
        shim = _OncePerCall()
        models.copy = shim
        try:
            return original(self, transact_items)
        finally:
            models.copy = _copy

    models.DynamoDBBackend.transact_write_items = transact_write_items


class CountingClient:
    """Counts the DynamoDB requests the store makes."""

    def __init__(self, client) -> None:
        self._client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name in ("transact_write_items", "batch_get_item"):
            def counted(**kw):
                self.calls[name] = self.calls.get(name, 0) + 1
                return attr(**kw)
            return counted
        return attr


def timed(fn) -> tuple[float, float]:
    """(wall-clock s, CPU s of this process) of one call of ``fn``; b4_adjust.py uses it too."""
    c, t = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def run_engine(engine: str, payload_uri: str, workdir: Path, repeats: int, expected_votes: int) -> dict:
    fresh, replay, calls_fresh, calls_replay = [], [], {}, {}
    for r in range(repeats):
        store_mod.clear_store_cache()
        if engine == "sqlite":
            uri = f"sqlite:///{workdir}/b4-{r}.db"
            os.environ["SEGQA_STORE"] = uri
            counter = None
            ctx = None
        else:
            import boto3
            from moto import mock_aws

            ctx = mock_aws()
            ctx.start()
            ddb = boto3.client("dynamodb", region_name="us-east-1")
            create_table("segqa-b4", ddb)
            uri = "dynamodb://segqa-b4"
            os.environ["SEGQA_STORE"] = uri
            counter = CountingClient(ddb)
            store_mod.open_store(uri, client=counter, cached=True)
        try:
            st = store_mod.open_store(uri, cached=True)
            st.init()
            fresh.append(timed(lambda: lambda_handler(event(payload_uri), None)))
            if counter is not None:
                calls_fresh, counter.calls = dict(counter.calls), {}
            replay.append(timed(lambda: lambda_handler(event(payload_uri), None)))
            if counter is not None:
                calls_replay = dict(counter.calls)
            votes = sum(s.confirm_count + s.disconfirm_count for s in st.iter_items())
            if votes != expected_votes:
                raise SystemExit(f"{engine}: {votes} votes stored, expected {expected_votes}")
        finally:
            store_mod.clear_store_cache()
            if ctx is not None:
                ctx.stop()
    return {"fresh": fresh, "replay": replay, "calls_fresh": calls_fresh, "calls_replay": calls_replay}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=40)
    ap.add_argument("--items", type=int, default=25)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="runs per engine (median reported)")
    ap.add_argument("--dynamodb-repeats", type=int, default=1, help="runs on moto DynamoDB (slow)")
    ap.add_argument("--moto-as-is", action="store_true",
                    help="do not patch moto's per-action table backup (slow: O(table) per vote)")
    ap.add_argument("--out", help="also write the Markdown result here")
    args = ap.parse_args()
    if not args.moto_as_is:
        patch_moto_transaction_backup()

    n_votes = args.objects * args.items * args.workers
    with tempfile.TemporaryDirectory(prefix="segqa-b4-") as tmp:
        work = Path(tmp)
        payload_uri = make_payload(work, args.objects, args.items, args.workers)
        results = {"SQLite (file, WAL)": run_engine("sqlite", payload_uri, work, args.repeats, n_votes),
                   "DynamoDB (moto)": run_engine("dynamodb", payload_uri, work, args.dynamodb_repeats, n_votes)}

    rows = []
    for name, res in results.items():
        for phase in ("fresh", "replay"):
            walls = [w for w, _ in res[phase]]
            cpus = [c for _, c in res[phase]]
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            calls = res["calls_" + phase]
            req = (f"{calls.get('transact_write_items', 0)} TransactWriteItems, "
                   f"{calls.get('batch_get_item', 0)} BatchGetItem") if calls else "1 transaction per object"
            rows.append(f"| {name} | {phase} | {len(walls)} | {wall:.2f} | {n_votes / wall:,.0f} | "
                        f"{n_votes / cpu:,.0f} | {args.objects * args.workers / wall:,.1f} | {req} |")

    cmd = ".venv/bin/python benchmarks/b4_post_labeling.py " + " ".join(sys.argv[1:])
    load = os.getloadavg()[0]
    header = ("| store | phase | runs | seconds (median) | decisions/s (wall) | decisions/s (CPU) "
              "| annotations/s (wall) | store requests |")
    backups = ("once per action, as moto 5.2.5 does" if args.moto_as_is
               else "here once per transaction; moto 5.2.5 does it once per action, see --moto-as-is")
    text = f"""## B4 — post-labeling throughput

One post-labeling invocation (`lambdas/post_labeling/handler.py`, Ground Truth-shaped event) over
{args.objects} objects × {args.items} items × {args.workers} workers = {n_votes:,} item decisions
({args.objects * args.workers} worker annotations); batches and payload on local disk. *fresh*: every vote is
new; *replay*: the same invocation again (every vote already stored, nothing changes). The store's counts were
checked after every run. CPU rates use the process's CPU time; wall-clock rates also count waiting for a core.

{header}
|---|---|---:|---:|---:|---:|---:|---|
{chr(10).join(rows)}

moto emulates DynamoDB in process and deep-copies the table to back it up before each transaction
({backups}),
so its rate measures this code plus moto and falls as the table grows; on a real table expect the request
count above times the round-trip latency (plus DynamoDB's own transaction time), not this figure.

- command: `{cmd.strip()}`
- machine: 2-core dev machine, no GPU ({platform.machine()}, Python {platform.python_version()}); shared with
  other jobs (load average {load:.1f} at the end of the run), so wall-clock figures vary
- date: {date.today().isoformat()}
"""
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        old = out.read_text() if out.is_file() else ""
        start, end = ADJUST_MARKS
        if start in old and end in old:  # keep the adjust section that b4_adjust.py wrote into the same file
            text = text.rstrip("\n") + "\n\n" + start + old.split(start, 1)[1].split(end, 1)[0] + end + "\n"
        out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
