"""Progress of a run: overall jobs (done / running / failed / ETA) and each running job's epochs and batches.

On a terminal, a live ``rich`` display: one bar for the plan and one per running job. Elsewhere (CI,
pipes, log files), one plain line per event. Both receive the same calls from the executors:
``start(jobs)``, ``job_started(job_id)``, ``job_event(job_id, event, info)`` (the engine's progress
callback, events ``epoch_start``, ``batch``, ``epoch_end``), ``job_finished(job_id, status, message)``
and ``close()``. :meth:`Tracker.callback` adapts a job to the engine's ``progress(event, **info)``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

# Outcome statuses (decathlon.executors.Outcome.status)
DONE, CACHED, FAILED, SKIPPED = "done", "cached", "failed", "skipped"


def format_seconds(seconds: float | None) -> str:
    """`seconds` as h:mm:ss (or ``?`` when unknown)."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_info(info: Mapping[str, Any]) -> str:
    """``key=value`` pairs of a progress event, floats with 4 significant digits."""
    parts = []
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (list, tuple, dict)):
            continue  # e.g. per-group learning rates: too long for one line
        parts.append(f"{key}={value}")
    return " ".join(parts)


class Tracker:
    """Counts jobs and estimates the time left; subclasses render it."""

    def __init__(self, *, workers: int = 1, clock: Callable[[], float] = time.monotonic):
        self.workers = max(1, workers)  # jobs that run at the same time (for the ETA)
        self.clock = clock
        self.total = 0
        self.counts = {DONE: 0, CACHED: 0, FAILED: 0, SKIPPED: 0}
        self.running: dict[str, float] = {}  # job id -> start time
        self.durations: list[float] = []  # seconds of jobs run (not cached) in this session

    def start(self, jobs: Sequence[Any]) -> None:
        self.total = len(jobs)

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def eta(self) -> float | None:
        """Seconds left: mean duration of this session's jobs x jobs left / concurrent workers."""
        if not self.durations:
            return None
        left = self.total - self.finished
        mean = sum(self.durations) / len(self.durations)
        elapsed_running = sum(min(self.clock() - t, mean) for t in self.running.values())
        return max(0.0, (left * mean - elapsed_running) / self.workers)

    def summary(self) -> str:
        c = self.counts
        return (f"jobs {self.finished}/{self.total}: {c[DONE]} done, {c[CACHED]} already finished, "
                f"{len(self.running)} running, {c[FAILED]} failed, {c[SKIPPED]} skipped; "
                f"ETA {format_seconds(self.eta())}")

    def job_started(self, job_id: str) -> None:
        self.running[job_id] = self.clock()

    def job_event(self, job_id: str, event: str, info: Mapping[str, Any]) -> None:
        """An engine progress event of a running job."""

    def job_finished(self, job_id: str, status: str, message: str = "") -> None:
        started = self.running.pop(job_id, None)
        if status in (DONE, FAILED) and started is not None:
            self.durations.append(self.clock() - started)
        self.counts[status] += 1

    def callback(self, job_id: str) -> Callable[..., None]:
        """The engine's ``progress(event, **info)`` callback for `job_id`."""

        def progress(event: str, **info: Any) -> None:
            self.job_event(job_id, event, info)

        return progress

    def close(self) -> None:
        """Stop rendering (idempotent)."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineProgress(Tracker):
    """One plain line per event: for CI logs and pipes."""

    def __init__(self, stream: IO[str] | None = None, **kw: Any):
        super().__init__(**kw)
        self.stream = stream or sys.stdout

    def _line(self, text: str) -> None:
        self.stream.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
        self.stream.flush()

    def start(self, jobs: Sequence[Any]) -> None:
        super().start(jobs)
        self._line(f"plan: {self.total} jobs")

    def job_started(self, job_id: str) -> None:
        super().job_started(job_id)
        self._line(f"start {job_id}")

    def job_event(self, job_id: str, event: str, info: Mapping[str, Any]) -> None:
        self._line(f"{event} {job_id} {format_info(info)}".rstrip())

    def job_finished(self, job_id: str, status: str, message: str = "") -> None:
        super().job_finished(job_id, status, message)
        self._line(f"{status} {job_id}{': ' + message if message else ''} | {self.summary()}")




class RichProgress(Tracker):
    """A live display: the plan's bar and one bar per running job (epochs, then batches in the epoch)."""

    def __init__(self, console: Console | None = None, **kw: Any):
        super().__init__(**kw)
        self.console = console or Console()
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=self.console, transient=False)
        self.overall: TaskID | None = None
        self.tasks: dict[str, TaskID] = {}
        self.epochs: dict[str, int] = {}  # job id -> epochs of the run (from its epoch_start events)
        self.live = False

    def start(self, jobs: Sequence[Any]) -> None:
        super().start(jobs)
        self.overall = self.bars.add_task(self.summary(), total=self.total)
        self.bars.start()
        self.live = True

    def _refresh_overall(self) -> None:
        if self.overall is not None:
            self.bars.update(self.overall, completed=self.finished, description=self.summary())

    def job_started(self, job_id: str) -> None:
        super().job_started(job_id)
        self.tasks[job_id] = self.bars.add_task(f"  {job_id}", total=None)
        self._refresh_overall()

    def job_event(self, job_id: str, event: str, info: Mapping[str, Any]) -> None:
        # engine events: epoch_start(epoch counted from 0, epochs), batch(epoch, step, steps, loss),
        # epoch_end(epoch counted from 1, metrics)
        task = self.tasks.get(job_id)
        if task is None:
            return
        if "epochs" in info:
            self.epochs[job_id] = info["epochs"]
        epochs = self.epochs.get(job_id, "?")
        if event == "batch" and info.get("steps"):
            label = f"  {job_id} epoch {info.get('epoch', 0) + 1}/{epochs}"
            self.bars.update(task, total=info["steps"], completed=info.get("step", 0), description=label)
        elif event == "epoch_start":
            label = f"  {job_id} epoch {info.get('epoch', 0) + 1}/{epochs}"
            self.bars.update(task, total=None, completed=0, description=label)
        elif event == "epoch_end":
            self.console.log(escape(f"{job_id} {format_info(info)}"))

    def job_finished(self, job_id: str, status: str, message: str = "") -> None:
        super().job_finished(job_id, status, message)
        self.epochs.pop(job_id, None)
        task = self.tasks.pop(job_id, None)
        if task is not None:
            self.bars.remove_task(task)
        if status != CACHED:
            style = {DONE: "green", FAILED: "bold red", SKIPPED: "yellow"}[status]
            text = escape(f"{job_id}{': ' + message if message else ''}")
            self.console.log(f"[{style}]{status}[/] {text}")
        self._refresh_overall()

    def close(self) -> None:
        if self.live:
            self._refresh_overall()
            self.bars.stop()
            self.live = False


def make_progress(*, workers: int = 1, stream: IO[str] | None = None,
                  terminal: bool | None = None) -> Tracker:
    """A rich display when `stream` (default stdout) is a terminal, else a line-per-event log."""
    stream = stream or sys.stdout
    if terminal is None:
        terminal = stream.isatty()
    if terminal:
        return RichProgress(Console(file=stream), workers=workers)
    return LineProgress(stream, workers=workers)
