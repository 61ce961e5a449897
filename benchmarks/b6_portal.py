"""B6 — review portal under load: concurrent reviewers, submit latency, lost or double-counted submissions.

    .venv/bin/python benchmarks/b6_portal.py [--reviewers 50] [--submissions 2000] [--items 25]
                                             [--adjust-reviewers 0] [--adjust-submissions 0]
                                             [--time-limit 600] [--kill-at N] [--json OUT.json]

Bounded and loopback only: builds a round of ceil(submissions / 3) batches (``--items`` items each, one shared
overlay PNG so the round is cheap to build), adds ``--reviewers`` accounts, starts the real command
``python -m qa_workflow review serve`` (3 reviewers per batch, SQLite store) on 127.0.0.1, and runs that many
concurrent simulated reviewers (asyncio + httpx, each its own session cookie and CSRF token). Each reviewer
loops: take the next task (POST /tasks/next), load the task page (the Liquid template rendered with the
pre-labeling output and signed image URLs), fetch one image, submit the crowd-form output (POST .../submit) —
until ``--submissions`` answers are acknowledged, nothing is left, or ``--time-limit`` seconds pass.

With ``--adjust-reviewers R --adjust-submissions M``, adjust tasks are in the mix: a second ``review serve`` on
an adjust manifest (M tasks of one slice each, one corrector per task as in the loop's adjust jobs, the same
store) runs at the same time, and R more simulated people loop on it: take the next task, load the editor page,
fetch its image, submit a correction (``correctedMask``: the crowd-semantic-segmentation output, an RGBA PNG of
the model's label map with a few pixels changed, base64, with label mappings and image size). Task page and
submit latencies are reported per kind; every acknowledged correction must be in the store once, with its
consolidated mask.

``--kill-at N`` kills the server with SIGKILL after N acknowledged submissions and restarts it; reviewers whose
requests were cut off retry them (a submit that was in flight is either recorded or answered "duplicate").

Afterwards it waits for every complete batch to be consolidated by the post-labeling handler and checks, item
by item, the store's confirm/disconfirm counts against the answers the server acknowledged: a vote missing is
"lost", a vote too many is "double-counted" (both must be 0). Prints figures and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa_workflow.confirmations.store import open_store  # noqa: E402
from qa_workflow.contract import CLASS_BY_NAME, label_mappings, validate_adjust_task, validate_batch  # noqa: E402
from qa_workflow.review.portal.service import open_portal_db  # noqa: E402

REVIEWERS_PER_OBJECT = 3



def write_manifest(folder: Path, subfolder: str, id_field: str, objects: list[dict]) -> list[dict]:
    """Each object as ``folder/subfolder/<its id_field>.json`` and ``folder/manifest.jsonl`` with one
    ``{"source-ref"}`` line per object, in order; returns ``objects``."""
    lines = []
    for obj in objects:
        path = folder / subfolder / f"{obj[id_field]}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
        lines.append(json.dumps({"source-ref": str(path)}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return objects

def build_round(folder: Path, n_batches: int, n_items: int) -> list[dict]:
    cls = CLASS_BY_NAME["white_matter"]
    overlay = folder / "overlays" / "shared.png"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (176, 416, 3), dtype=np.uint8)).save(overlay)
    batches = []
    for b in range(n_batches):
        subject = f"sub-{b:04d}"
        items = [{"item_id": f"{subject}/{s:03d}/{cls.name}", "slice_id": f"{subject}/{s:03d}", "class_name": cls.name,
                  "confidence": round(float(rng.random()), 4), "overlay_uri": str(overlay), "image_uri": str(overlay),
                  "mask_uri": str(overlay)} for s in range(n_items)]
        batch = validate_batch({"batch_id": f"b6-{cls.name}-{b:04d}", "round": "b6", "model_version": "bench",
                                "class_id": cls.id, "class_name": cls.name, "color": cls.color, "items": items})
        batches.append(batch)
    return write_manifest(folder, "batches", "batch_id", batches)


ADJUST_H, ADJUST_W = 208, 176  # a slice in the display orientation


def adjust_labels() -> np.ndarray:
    """The model's label map every adjust task starts from: nested ellipses, csf rim, gray, white core."""
    yy, xx = np.mgrid[:ADJUST_H, :ADJUST_W]
    r = np.sqrt(((yy - ADJUST_H / 2) / 90) ** 2 + ((xx - ADJUST_W / 2) / 75) ** 2)
    return np.select([r < 0.45, r < 0.8, r < 1.0], [3, 2, 1], 0).astype(np.uint8)


def build_adjust_round(folder: Path, n_tasks: int) -> list[dict]:
    """An adjust manifest of ``n_tasks`` tasks (one slice each) sharing one image, label map and initial overlay."""
    from qa_workflow.rounds.adjusting import initial_overlay_png

    labels = adjust_labels()
    rng = np.random.default_rng(1)
    image = (np.array([10, 60, 120, 190], np.uint8)[labels] + rng.integers(0, 12, labels.shape)).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "image.png")
    Image.fromarray(labels).save(folder / "labels.png")
    (folder / "initial.png").write_bytes(initial_overlay_png(labels))
    tasks = []
    for t in range(n_tasks):
        slice_id = f"sub-{t // 100:04d}/{t % 100:03d}"
        task = validate_adjust_task({
            "task_id": f"b6-adjust-{t:05d}", "kind": "adjust", "round": "b6", "model_version": "bench",
            "slice_id": slice_id, "image_uri": str(folder / "image.png"), "mask_uri": str(folder / "labels.png"),
            "initial_overlay_uri": str(folder / "initial.png"), "label_mappings": label_mappings(),
            "classes_to_check": ["white_matter"], "item_ids": [f"{slice_id}/white_matter"], "source_job": "b6"})
        tasks.append(task)
    return write_manifest(folder, "tasks", "task_id", tasks)


def correction_form(task: dict, rng: random.Random) -> dict:
    """What the adjust template submits: the model's label map with a 5x5 patch repainted, as the editor's PNG."""
    from qa_workflow.review.simulated_correctors import segmentation_answer

    labels = adjust_labels()
    y, x = rng.randrange(20, ADJUST_H - 25), rng.randrange(20, ADJUST_W - 25)
    labels[y:y + 5, x:x + 5] = rng.choice([1, 2, 3])
    answer = segmentation_answer(labels, task["label_mappings"], modified=True)
    return {"correctedMask": answer, "task_id": task["task_id"], "submitted_at": "2025-01-01T00:00:00.000Z",
            "seconds": "60"}


class Server:
    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.args, self.port, self.log, self.proc = args, port, log, None

    def start(self) -> float:
        t0 = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if k != "SEGQA_STORE"}
        self.proc = subprocess.Popen([sys.executable, "-m", "qa_workflow", *self.args, "--port", str(self.port)],
                                     cwd=ROOT, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("server exited:\n" + self.log.read_text()[-3000:])
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                time.sleep(0.1)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def csrf_of(html: str) -> str:
    import re

    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


class Stats:
    def __init__(self) -> None:
        self.submit_s: list[float] = []
        self.page_s: list[float] = []
        self.adjust_submit_s: list[float] = []
        self.adjust_page_s: list[float] = []
        self.corrections: set[tuple[str, str]] = set()  # (corrector, task_id) acknowledged
        self.next_s: list[float] = []
        self.acknowledged: dict[tuple[str, int], dict] = {}  # (reviewer, object index) -> decisions sent
        self.duplicates = 0
        self.refused = 0
        self.retries = 0
        self.down = asyncio.Event()
        self.down.set()  # set = server up


async def reviewer(name: str, token: str, base: str, batches: list[dict], stats: Stats, budget: dict,
                   deadline: float, rng: random.Random) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"origin": base}, timeout=60) as http:
        async def call(method: str, url: str, **kw):
            while True:
                await stats.down.wait()
                try:
                    return await http.request(method, url, **kw)
                except httpx.TransportError:
                    stats.retries += 1
                    await asyncio.sleep(0.2)

        page = await call("GET", f"/login?token={token}")
        await call("POST", "/login", data={"token": token, "csrf_token": csrf_of(page.text)})
        csrf = csrf_of((await call("GET", "/")).text)
        while budget["left"] > 0 and time.monotonic() < deadline:
            budget["left"] -= 1  # reserved before any await: the run never exceeds --submissions
            t0 = time.perf_counter()
            resp = await call("POST", "/tasks/next", data={"csrf_token": csrf})
            stats.next_s.append(time.perf_counter() - t0)
            location = resp.headers.get("location", "")
            if not location.startswith("/tasks/"):
                budget["left"] += 1
                return  # nothing left for this reviewer
            t0 = time.perf_counter()
            task = await call("GET", location)
            stats.page_s.append(time.perf_counter() - t0)
            import re

            images = re.findall(r'\ssrc="(/assets/[^"]+)"', task.text)
            if images:
                img = await call("GET", images[0])
                assert img.status_code == 200, img.status_code
            object_index = int(re.search(r'data-batch-id="b6-white_matter-(\d+)"', task.text).group(1))
            batch = batches[object_index]
            decisions = [{"item_id": it["item_id"], "decision": "accept" if rng.random() < 0.8 else "reject"}
                         for it in batch["items"]]
            for d in decisions:
                if d["decision"] == "reject":
                    d["reason"] = rng.choice(["under_segmented", "over_segmented", "wrong_tissue"])
            rng.shuffle(decisions)
            form = {"decisions": json.dumps(decisions), "batch_id": batch["batch_id"],
                    "submitted_at": "2025-01-01T00:00:00.000Z"}
            body = json.dumps(form)
            t0 = time.perf_counter()
            resp = await call("POST", f"{location}/submit", content=body,
                              headers={"content-type": "application/json", "x-csrf-token": csrf})
            stats.submit_s.append(time.perf_counter() - t0)
            status = resp.json().get("status")
            if status in ("recorded", "duplicate"):
                stats.acknowledged[(name, object_index)] = {d["item_id"]: d["decision"] for d in decisions}
                stats.duplicates += status == "duplicate"
            else:
                stats.refused += 1
                budget["left"] += 1


async def corrector(name: str, token: str, base: str, tasks: dict[str, dict], stats: Stats, budget: dict,
                    deadline: float, rng: random.Random) -> None:
    """One person on the adjust portal: next task, editor page, its image, a correction; until nothing is left."""
    import re

    async with httpx.AsyncClient(base_url=base, headers={"origin": base}, timeout=60) as http:
        page = await http.get(f"/login?token={token}")
        await http.post("/login", data={"token": token, "csrf_token": csrf_of(page.text)})
        csrf = csrf_of((await http.get("/")).text)
        while budget["left"] > 0 and time.monotonic() < deadline:
            budget["left"] -= 1
            resp = await http.post("/tasks/next", data={"csrf_token": csrf})
            location = resp.headers.get("location", "")
            if not location.startswith("/tasks/"):
                budget["left"] += 1
                return
            t0 = time.perf_counter()
            page = await http.get(location)
            stats.adjust_page_s.append(time.perf_counter() - t0)
            images = re.findall(r'\ssrc="(/assets/[^"]+)"', page.text)
            if images:
                img = await http.get(images[0])
                assert img.status_code == 200, img.status_code
            task = tasks[re.search(r'name="task_id" value="([^"]+)"', page.text).group(1)]
            body = json.dumps(correction_form(task, rng))
            t0 = time.perf_counter()
            resp = await http.post(f"{location}/submit", content=body,
                                   headers={"content-type": "application/json", "x-csrf-token": csrf})
            stats.adjust_submit_s.append(time.perf_counter() - t0)
            if resp.json().get("status") in ("recorded", "duplicate"):
                stats.corrections.add((name, task["task_id"]))
            else:
                stats.refused += 1
                budget["left"] += 1


async def killer(server: Server, stats: Stats, kill_at: int, log: dict) -> None:
    while len(stats.acknowledged) < kill_at:
        await asyncio.sleep(0.01)
    stats.down.clear()
    server.kill9()
    log["killed_after"] = len(stats.acknowledged)
    log["restart_s"] = await asyncio.to_thread(server.start)
    stats.down.set()


async def run_load(base: str, tokens: dict[str, str], batches: list[dict], submissions: int, time_limit: float,
                   server: Server, kill_at: int | None, adjust: dict | None = None) -> tuple[Stats, float, dict]:
    stats = Stats()
    budget = {"left": submissions}
    deadline = time.monotonic() + time_limit
    kill_log: dict = {}
    t0 = time.perf_counter()
    tasks = [reviewer(n, t, base, batches, stats, budget, deadline, random.Random(i))
             for i, (n, t) in enumerate(tokens.items())]
    if adjust:
        adjust_budget = {"left": adjust["submissions"]}
        by_id = {t["task_id"]: t for t in adjust["tasks"]}
        tasks += [corrector(n, t, adjust["base"], by_id, stats, adjust_budget, deadline, random.Random(1000 + i))
                  for i, (n, t) in enumerate(adjust["tokens"].items())]
    if kill_at:
        tasks.append(killer(server, stats, kill_at, kill_log))
    await asyncio.gather(*tasks)
    return stats, time.perf_counter() - t0, kill_log


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reviewers", type=int, default=50)
    ap.add_argument("--submissions", type=int, default=2000)
    ap.add_argument("--items", type=int, default=25)
    ap.add_argument("--time-limit", type=float, default=600)
    ap.add_argument("--adjust-reviewers", type=int, default=0, help="people on a second, adjust portal")
    ap.add_argument("--adjust-submissions", type=int, default=0, help="corrections to submit there")
    ap.add_argument("--kill-at", type=int, default=None, help="SIGKILL and restart the server after N answers")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if (args.reviewers > 200 or args.submissions > 20000 or args.adjust_reviewers > 200
            or args.adjust_submissions > 5000):
        raise SystemExit("B6 is bounded: at most 200 reviewers and 20,000 submissions (adjust: 200 and 5,000)")
    if bool(args.adjust_reviewers) != bool(args.adjust_submissions):
        raise SystemExit("--adjust-reviewers and --adjust-submissions go together")

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="segqa-b6-"))
    n_batches = math.ceil(args.submissions / REVIEWERS_PER_OBJECT)
    t0 = time.perf_counter()
    batches = build_round(work / "round", n_batches, args.items)
    build_s = time.perf_counter() - t0
    pdir, store_uri = work / "portal", f"sqlite:///{work}/store.sqlite"
    db = open_portal_db(pdir)
    tokens = {f"r{i:03d}": db.add_reviewer(f"r{i:03d}", is_operator=False, link_ttl_s=86400, now=time.time())
              for i in range(args.reviewers)}
    db.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server(["review", "serve", "--round", str(work / "round"), "--portal-dir", str(pdir), "--store", store_uri,
                     "--reviewers-per-object", str(REVIEWERS_PER_OBJECT), "--min-view-ms", "0"], port,
                    work / "server.log")  # scripted reviewers answer at once: no minimum viewing time
    startup_s = server.start()
    base = f"http://127.0.0.1:{port}"
    adjust: dict | None = None
    adjust_server: Server | None = None
    if args.adjust_reviewers:
        adjust_tasks = build_adjust_round(work / "adjust", args.adjust_submissions)
        adb = open_portal_db(work / "portal-adjust")
        adjust_tokens = {f"c{i:03d}": adb.add_reviewer(f"c{i:03d}", is_operator=False, link_ttl_s=86400,
                                                       now=time.time()) for i in range(args.adjust_reviewers)}
        adb.close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            adjust_port = s.getsockname()[1]
        adjust_server = Server(["review", "serve", "--round", str(work / "adjust"), "--portal-dir",
                                str(work / "portal-adjust"), "--store", store_uri, "--reviewers-per-object", "1",
                                "--job-name", "b6-adjust"], adjust_port, work / "server-adjust.log")
        adjust_server.start()
        adjust = {"base": f"http://127.0.0.1:{adjust_port}", "tokens": adjust_tokens, "tasks": adjust_tasks,
                  "submissions": args.adjust_submissions}
    try:
        stats, wall_s, kill_log = asyncio.run(run_load(base, tokens, batches, args.submissions, args.time_limit,
                                                       server, args.kill_at, adjust))
        # Let the consolidator finish every batch that has its answers.
        answered: dict[int, int] = {}
        for (_, obj) in stats.acknowledged:
            answered[obj] = answered.get(obj, 0) + 1
        full = sum(1 for n in answered.values() if n >= REVIEWERS_PER_OBJECT)
        pdb = sqlite3.connect(pdir / "portal.sqlite")
        t_wait = time.perf_counter()
        while True:
            complete = pdb.execute("SELECT COUNT(*) FROM objects WHERE status = 'complete'").fetchone()[0]
            if complete >= full or time.perf_counter() - t_wait > 300:
                break
            time.sleep(0.2)
        drain_s = time.perf_counter() - t_wait
        responses = pdb.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        pdb.close()
        adjust_complete = 0
        if adjust is not None:
            adb2 = sqlite3.connect(work / "portal-adjust" / "portal.sqlite")
            while True:
                adjust_complete = adb2.execute("SELECT COUNT(*) FROM objects WHERE status = 'complete'").fetchone()[0]
                if adjust_complete >= len(stats.corrections) or time.perf_counter() - t_wait > 300:
                    break
                time.sleep(0.2)
            adb2.close()
            drain_s = time.perf_counter() - t_wait
    finally:
        server.stop()
        if adjust_server is not None:
            adjust_server.stop()
    server_cpu_s = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu_s = resource.getrusage(resource.RUSAGE_SELF)

    # Expected store counts from what the server acknowledged, for consolidated (complete) batches.
    expected: dict[str, list[int]] = {}
    for (_, obj), decisions in stats.acknowledged.items():
        if answered[obj] < REVIEWERS_PER_OBJECT:
            continue
        for iid, dec in decisions.items():
            c = expected.setdefault(iid, [0, 0])
            c[0 if dec == "accept" else 1] += 1
    st = open_store(store_uri, create=False)
    actual = {s.item.item_id: [s.confirm_count, s.disconfirm_count] for s in st.iter_items()}
    stored_corrections = {(c.worker_id, c.slice_id) for c in st.iter_corrections(job="b6-adjust")}
    consolidated = {m.slice_id for m in st.iter_consolidated_masks(job="b6-adjust")}
    st.close()
    slice_of = {t["task_id"]: t["slice_id"] for t in (adjust or {}).get("tasks", [])}
    acked_slices = {slice_of[tid] for _, tid in stats.corrections}
    # A correction is "lost" when the server acknowledged it and the store has no correction or no consolidated
    # mask of that slice; one corrector per task, so the store must hold exactly one correction per slice.
    lost_corrections = len(acked_slices - {sid for _, sid in stored_corrections}) + len(acked_slices - consolidated)
    extra_corrections = len(stored_corrections) - len(acked_slices)
    lost = sum(max(0, e[k] - actual.get(i, [0, 0])[k]) for i, e in expected.items() for k in (0, 1))
    double = sum(max(0, a[k] - expected.get(i, [0, 0])[k]) for i, a in actual.items() for k in (0, 1))
    n_ack = len(stats.acknowledged)
    result = {
        "reviewers": args.reviewers, "items_per_batch": args.items, "batches": n_batches,
        "submissions_acknowledged": n_ack, "responses_in_portal_db": responses,
        "duplicates_answered": stats.duplicates, "refused": stats.refused, "client_retries": stats.retries,
        "wall_s": round(wall_s, 2), "throughput_submissions_per_s": round(n_ack / wall_s, 2),
        "submit_ms": {"p50": round(pct(stats.submit_s, 50), 1), "p95": round(pct(stats.submit_s, 95), 1),
                      "p99": round(pct(stats.submit_s, 99), 1), "max": round(pct(stats.submit_s, 100), 1)},
        "task_page_ms": {"p50": round(pct(stats.page_s, 50), 1), "p95": round(pct(stats.page_s, 95), 1)},
        **({"adjust": {
            "reviewers": args.adjust_reviewers, "tasks": args.adjust_submissions,
            "corrections_acknowledged": len(stats.corrections), "corrections_in_store": len(stored_corrections),
            "consolidated_masks": len(consolidated), "objects_complete": adjust_complete,
            "lost_corrections": lost_corrections, "extra_corrections": extra_corrections,
            "throughput_corrections_per_s": round(len(stats.corrections) / wall_s, 2),
            "submit_ms": {"p50": round(pct(stats.adjust_submit_s, 50), 1),
                          "p95": round(pct(stats.adjust_submit_s, 95), 1),
                          "max": round(pct(stats.adjust_submit_s, 100), 1)},
            "task_page_ms": {"p50": round(pct(stats.adjust_page_s, 50), 1),
                             "p95": round(pct(stats.adjust_page_s, 95), 1)}}} if adjust else {}),
        "next_task_ms": {"p50": round(pct(stats.next_s, 50), 1), "p95": round(pct(stats.next_s, 95), 1)},
        "votes_expected": sum(sum(e) for e in expected.values()),
        "votes_in_store": sum(sum(a) for a in actual.values()),
        "lost_votes": lost, "double_counted_votes": double,
        "lost_submissions": n_ack - responses, "consolidation_drain_s": round(drain_s, 2),
        "server_cpu_s": round(server_cpu_s.ru_utime + server_cpu_s.ru_stime, 1),
        "client_cpu_s": round(client_cpu_s.ru_utime + client_cpu_s.ru_stime, 1),
        "round_build_s": round(build_s, 2), "server_startup_s": round(startup_s, 2), **kill_log,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"), "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(["benchmarks/b6_portal.py", *sys.argv[1:]]),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if lost or double or n_ack != responses or (adjust and (lost_corrections or extra_corrections)):
        raise SystemExit("FAIL: lost or double-counted submissions")


if __name__ == "__main__":
    main()
