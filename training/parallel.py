"""Train several models at once, each in its own process on its share of the cores.

The loop trains a U-Net and an ENet after every round. One after the other, each gets every core, but neither
uses them well on a small machine: measured on 2 cores (BENCHMARKS.md B3), the demo's ENet trains *faster* with
one OpenMP thread than with two (10.5 against 7.7 images/s) and the small U-Net gains only ~25 % from the second.
Side by side, one core each, the pair finishes in about the time of the slower run; with the quick demo's
unbalanced pair (the U-Net ends early) that was 1.10x faster than one after the other (B3.md).

    >>> train_all({"unet": TrainConfig(...), "enet": TrainConfig(...)}, progress=bar)

Each run is a fresh interpreter (``spawn``: MXNet's engine does not survive a fork) whose ``SEGQA_THREADS`` is the
parent's thread count divided by the number of runs, set before MXNet loads (training/threads.py). Progress
events come back over a queue, tagged with the run's name (`TrainEvent.run`). A run that fails stops the others;
a `SegqaError` (bad data or options) reaches the caller as one, anything else as a RuntimeError carrying the
run's traceback. With fewer threads than runs, or one run, the runs go one after the other in this process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import traceback
from collections.abc import Callable, Mapping
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from qa_workflow.contract import SegqaError
from training.threads import ENV_VAR, threads

__all__ = ["train_all"]

log = logging.getLogger(__name__)

#: Seconds between checks that the runs are still alive while waiting for their events.
_POLL_S = 0.5


def train_all(configs: Mapping[str, Any], progress: Callable[[Any], None] | None = None) -> dict[str, Path]:
    """Train every `training.train.TrainConfig` in ``configs`` (name -> config); returns name -> model folder.

    ``progress`` gets each run's `TrainEvent`s with ``run`` set to its name (the configs' own ``progress`` is not
    used)."""
    names = list(configs)
    share = threads() // max(len(names), 1)
    if len(names) < 2 or share < 1:
        return {name: _train_here(name, configs[name], progress) for name in names}
    return _train_side_by_side(configs, share, progress)


def _train_here(name: str, config: Any, progress: Callable[[Any], None] | None) -> Path:
    from training.train import train_model

    def tagged(event: Any) -> None:
        if progress is not None:
            progress(dataclasses.replace(event, run=name))

    return train_model(dataclasses.replace(config, progress=tagged))


def _worker(name: str, config: Any, events: Any) -> None:
    """A run in its own process: trains ``config`` and reports on ``events`` (progress, then done or error)."""
    try:
        out = _train_here(name, config, lambda event: events.put(("event", name, event)))
        events.put(("done", name, str(out)))
    except SegqaError as exc:
        events.put(("user-error", name, str(exc)))
    except BaseException as exc:  # noqa: BLE001 — any failure must reach the parent, which re-raises it
        events.put(("error", name, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def _train_side_by_side(configs: Mapping[str, Any], share: int, progress: Callable[[Any], None] | None
                        ) -> dict[str, Path]:
    ctx = get_context("spawn")
    events = ctx.Queue()
    procs = {}
    saved = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(share)  # the children read it when they import training (before MXNet loads)
    try:
        for name, config in configs.items():
            p = ctx.Process(target=_worker, args=(name, dataclasses.replace(config, progress=None), events),
                            name=f"segqa-train-{name}", daemon=True)
            p.start()
            procs[name] = p
    finally:
        if saved is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = saved
    log.info("training %s side by side, %d thread(s) each", ", ".join(procs), share)
    done: dict[str, Path] = {}
    failure: tuple[str, str, str] | None = None
    finished = False
    try:
        while len(done) < len(procs) and failure is None:
            try:
                kind, name, payload = events.get(timeout=_POLL_S)
            except queue.Empty:
                dead = [n for n, p in procs.items() if n not in done and not p.is_alive()]
                # a process flushes its events before it exits, so once it is gone an empty queue means it ended
                # without a word (killed, out of memory); otherwise its last events are still to be read
                if dead and events.empty():
                    failure = ("error", dead[0], f"the training process exited with code {procs[dead[0]].exitcode}")
                continue
            if kind == "event":
                if progress is not None:
                    progress(dataclasses.replace(payload, run=name))
            elif kind == "done":
                done[name] = Path(payload)
            else:
                failure = (kind, name, payload)
        finished = failure is None
    finally:  # a failed run, or this process interrupted (Ctrl-C), stops the runs still going
        for p in procs.values():
            if p.is_alive() and not finished:
                p.terminate()
            p.join()
        events.close()
    if failure is not None:
        kind, name, message = failure
        if kind == "user-error":
            raise SegqaError(message)
        raise RuntimeError(f"training {name} failed: {message}")
    return done
