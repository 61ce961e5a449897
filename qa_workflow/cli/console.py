"""The one place where commands talk to the user: consoles, progress, training bars and reject summaries.

Libraries never print; they call a progress callback. Commands turn those callbacks into output with the
helpers here, so every command looks and behaves the same:

- `console()`: a rich Console on stderr (summaries and tables that are not the command's data); stdout is
  kept for data (JSON of a dry run, exports).
- `progress(console)`: a rich Progress when the console is a terminal. When it is not (a pipe, a log file, CI),
  a `LineProgress` with the same methods that prints plain lines with the elapsed time, so a long piped run
  is never silent and its log still says how far it got and how long each step took.
- `TrainBar`: feeds `training.train.TrainEvent`s into either kind of progress (one bar per training run).
- `print_rejects`: one line per (stage, reason) with a count and an example id.
- `NotBuilt` / `not_built`: a command whose implementation has not landed says so and exits 3.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from qa_workflow.contract import NETWORK_LABELS

__all__ = ["console", "progress", "LineProgress", "TrainBar", "print_rejects", "NotBuilt", "not_built"]


class NotBuilt(Exception):
    """A command whose implementation has not landed yet; the CLI says so and exits 3."""


def not_built(command: str, issue: int) -> None:
    raise NotBuilt(f"'{command}' is not built yet (tracked in issue #{issue}); nothing was done")


def console(*, stderr: bool = True, wide_when_piped: bool = False) -> Any:
    """A rich Console. `wide_when_piped`: 240 columns when not on a terminal, so tables written to a log file or
    pipe are not squeezed into 80 columns (the demo's round table has 16 columns with both networks)."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if wide_when_piped and not out.is_terminal:
        out = Console(stderr=stderr, highlight=False, width=240)
    return out


def progress(out: Any, *, transient: bool = False, auto_refresh: bool = True, spinner: bool = False,
             field: str | None = None) -> Any:
    """A progress display on `out` (a rich Console) with rich Progress's methods (`add_task`, `update`,
    `advance`, `remove_task`, `refresh`, `start`, `stop`, `console`); use it as a context manager or start and
    stop it by hand.

    `auto_refresh=False` for commands whose library forks worker processes while the bar runs (no refresh
    thread then; the bar redraws on each update). `field`: the name of a free-text task field (given to
    `add_task`/`update` as a keyword) shown after the bar, e.g. the latest loss."""
    if not out.is_terminal:
        return LineProgress(out, field=field)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if spinner:
        columns.insert(0, SpinnerColumn())
    if field:
        columns.append(TextColumn(f"{{task.fields[{field}]}}"))
    bar = Progress(*columns, console=out, transient=transient, auto_refresh=auto_refresh)
    if not auto_refresh:
        _refresh_on_update(bar)
    return bar


def _refresh_on_update(bar: Any) -> None:
    update, advance = bar.update, bar.advance

    def update_and_refresh(*args: Any, **kwargs: Any) -> None:
        update(*args, **kwargs)
        bar.refresh()

    def advance_and_refresh(*args: Any, **kwargs: Any) -> None:
        advance(*args, **kwargs)
        bar.refresh()

    bar.update, bar.advance = update_and_refresh, advance_and_refresh


class _LineTask:
    def __init__(self, description: str, total: float | None) -> None:
        self.description = description
        self.total = total
        self.completed = 0.0
        self.decile = 0
        self.last_line = 0.0
        self.shown = False
        self.note = ""


class LineProgress:
    """Progress as plain log lines (`  12.3s  predict pool  40/100`), for a console that is not a terminal.

    A line is printed at a task's first update, when its description changes, when it passes each tenth of its
    total, and when it completes; a task without a total prints at most every `interval_s` seconds. Nothing is
    printed when a task is only added: a user mistake found before any work is done stays one line on stderr."""

    def __init__(self, out: Any, interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 field: str | None = None) -> None:
        self.console = out
        self.field = field
        self.interval_s = interval_s
        self.clock = clock
        self.started = clock()
        self.tasks: dict[int, _LineTask] = {}
        self._next_id = 0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        task_id = self._next_id
        self._next_id += 1
        self.tasks[task_id] = _LineTask(description, total)
        self._take_note(self.tasks[task_id], fields)
        return task_id

    def update(self, task_id: int, *, completed: float | None = None, total: float | None = None,
               advance: float | None = None, description: str | None = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        self._take_note(task, fields)
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance:
            task.completed += advance
        changed = description is not None and description != task.description
        if description is not None:
            task.description = description
        if changed or not task.shown:
            task.decile = min(int(10 * task.completed / task.total), 10) if task.total else 0
            self._line(task)
            return
        if task.total:
            decile = min(int(10 * task.completed / task.total), 10)
            if decile > task.decile:
                task.decile = decile
                self._line(task)
        elif self.clock() - task.last_line >= self.interval_s:
            self._line(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def remove_task(self, task_id: int) -> None:
        self.tasks.pop(task_id, None)

    def refresh(self) -> None:
        return None

    def _take_note(self, task: _LineTask, fields: dict[str, Any]) -> None:
        if self.field and self.field in fields:
            task.note = str(fields[self.field])

    def _line(self, task: _LineTask) -> None:
        task.last_line = self.clock()
        task.shown = True
        count = ""
        if task.total or task.completed:
            count = f"  {task.completed:g}/{task.total:g}" if task.total else f"  {task.completed:g}"
        self.console.print(f"{task.last_line - self.started:7.1f}s  {task.description}{count}"
                           f"{'  ' + task.note if task.note else ''}", markup=False,
                           highlight=False)


class TrainBar:
    """Progress bars fed by `training.train.TrainEvent` callbacks: one per training run, several at once when
    runs train side by side (`TrainEvent.run` names each); `label` names the step and may be changed between
    runs."""

    def __init__(self, bar: Any, label: str = "train") -> None:
        self.bar = bar
        self.label = label
        self.tasks: dict[str, int] = {}

    def __call__(self, event: Any) -> None:
        kind = getattr(event, "kind", "")
        run = getattr(event, "run", "")
        name = f"{self.label} {NETWORK_LABELS.get(run, run)}" if run else self.label
        task = self.tasks.get(run)
        if kind == "start" or task is None:
            if task is not None:
                self.bar.remove_task(task)
            task = self.tasks[run] = self.bar.add_task(name, total=max(event.epochs, 1))
            self.bar.update(task, completed=max(event.epoch - 1, 0))
        if kind == "epoch":
            dice = "" if event.val_mean_dice is None else f" val Dice {event.val_mean_dice:.3f}"
            self.bar.update(task, completed=event.epoch, description=f"{name} loss {event.loss:.3f}{dice}")
        elif kind == "end":
            self.bar.remove_task(self.tasks.pop(run))


def print_rejects(out: Any, rejects: Iterable[Any], where: str, noun: str = "item") -> None:
    """One line per (stage, reason) with a count and an example id; nothing is hidden."""
    rejects = list(rejects)
    if not rejects:
        return
    groups: Counter = Counter()
    example: dict = {}
    for r in rejects:
        reason = r.reason
        if r.file and reason.startswith(f"{r.file}: "):
            reason = reason[len(r.file) + 2:]
        key = (r.stage, reason)
        groups[key] += 1
        example.setdefault(key, r.item_id or (f"{r.subject}/{int(r.slice):03d}" if str(r.slice).isdigit()
                                               else r.subject) or r.file)
    out.print(f"[yellow]{len(rejects)} {noun}(s) rejected[/] — reasons in {where}:")
    for (stage, reason), n in groups.most_common():
        ex = f" (e.g. {example[(stage, reason)]})" if example[(stage, reason)] else ""
        out.print(f"  {n:>5} × {stage}: {reason}{ex}")
