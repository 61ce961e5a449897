"""B6 — review portal under load: concurrent reviewers, submit latency, lost or double-counted submissions.

    .venv/bin/python benchmarks/b6_portal.py [--reviewers 50] [--submissions 2000] [--items 25]
                                             [--time-limit 600] [--kill-at N] [--json OUT.json]

Bounded and loopback only: builds a round of ceil(submissions / 3) batches (``--items`` items each, one shared
overlay PNG so the round is cheap to build), adds ``--reviewers`` accounts, starts the real command
``python -m qa_workflow review serve`` (3 reviewers per batch, SQLite store) on 127.0.0.1, and runs that many
concurrent simulated reviewers (asyncio + httpx, each its own session cookie and CSRF token). Each reviewer
loops: take the next task (POST /tasks/next), load the task page (the Liquid template rendered with the
pre-labeling output and signed image URLs), fetch one image, submit the crowd-form output (POST .../submit) —
until ``--submissions`` answers are acknowledged, nothing is left, or ``--time-limit`` seconds pass.

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
from qa_workflow.contract import CLASS_BY_NAME, validate_batch  # noqa: E402
from qa_workflow.review.portal.service import open_portal_db  # noqa: E402

REVIEWERS_PER_OBJECT = 3


def build_round(folder: Path, n_batches: int, n_items: int) -> list[dict]:
    cls = CLASS_BY_NAME["white_matter"]
    overlay = folder / "overlays" / "shared.png"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (176, 416, 3), dtype=np.uint8)).save(overlay)
    batches, lines = [], []
    for b in range(n_batches):
        subject = f"sub-{b:04d}"
        items = [{"item_id": f"{subject}/{s:03d}/{cls.name}", "slice_id": f"{subject}/{s:03d}", "class_name": cls.name,
                  "confidence": round(float(rng.random()), 4), "overlay_uri": str(overlay), "image_uri": str(overlay),
                  "mask_uri": str(overlay)} for s in range(n_items)]
        batch = validate_batch({"batch_id": f"b6-{cls.name}-{b:04d}", "round": "b6", "model_version": "bench",
                                "class_id": cls.id, "class_name": cls.name, "color": cls.color, "items": items})
        path = folder / "batches" / f"{batch['batch_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(batch))
        batches.append(batch)
        lines.append(json.dumps({"source-ref": str(path)}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return batches


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


async def killer(server: Server, stats: Stats, kill_at: int, log: dict) -> None:
    while len(stats.acknowledged) < kill_at:
        await asyncio.sleep(0.01)
    stats.down.clear()
    server.kill9()
    log["killed_after"] = len(stats.acknowledged)
    log["restart_s"] = await asyncio.to_thread(server.start)
    stats.down.set()


async def run_load(base: str, tokens: dict[str, str], batches: list[dict], submissions: int, time_limit: float,
                   server: Server, kill_at: int | None) -> tuple[Stats, float, dict]:
    stats = Stats()
    budget = {"left": submissions}
    deadline = time.monotonic() + time_limit
    kill_log: dict = {}
    t0 = time.perf_counter()
    tasks = [reviewer(n, t, base, batches, stats, budget, deadline, random.Random(i))
             for i, (n, t) in enumerate(tokens.items())]
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
    ap.add_argument("--kill-at", type=int, default=None, help="SIGKILL and restart the server after N answers")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.reviewers > 200 or args.submissions > 20000:
        raise SystemExit("B6 is bounded: at most 200 reviewers and 20,000 submissions")

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
    try:
        stats, wall_s, kill_log = asyncio.run(run_load(base, tokens, batches, args.submissions, args.time_limit,
                                                       server, args.kill_at))
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
    finally:
        server.stop()
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
    st.close()
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
        "next_task_ms": {"p50": round(pct(stats.next_s, 50), 1), "p95": round(pct(stats.next_s, 95), 1)},
        "votes_expected": sum(sum(e) for e in expected.values()),
        "votes_in_store": sum(sum(a) for a in actual.values()),
        "lost_votes": lost, "double_counted_votes": double,
        "lost_submissions": n_ack - responses, "consolidation_drain_s": round(drain_s, 2),
        "server_cpu_s": round(server_cpu_s.ru_utime + server_cpu_s.ru_stime, 1),
        "client_cpu_s": round(client_cpu_s.ru_utime + client_cpu_s.ru_stime, 1),
        "round_build_s": round(build_s, 2), "server_startup_s": round(startup_s, 2), **kill_log,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if lost or double or n_ack != responses:
        raise SystemExit("FAIL: lost or double-counted submissions")


if __name__ == "__main__":
    main()
