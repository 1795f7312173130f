"""Progress of a run: overall jobs (done / running / failed / ETA) and each running job's epochs and batches.

On a terminal, a live ``rich`` display: one bar for the plan and one per running job. Elsewhere (CI,
pipes, log files), one plain line per event. Both receive the same calls from the executors:
``start(jobs)``, ``job_started(job_id)``, ``job_event(job_id, event, info)`` (the engine's progress
callback, events ``epoch_start``, ``batch``, ``epoch_end``, epochs counted from 1),
``job_finished(job_id, status, message)`` (a finished job's message: its accuracy) and ``close()``. Jobs
that had finished before are announced in one line, not one per job. :meth:`Tracker.callback` adapts
a job to the engine's ``progress(event, **info)``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from decathlon.summary import format_seconds, job_images, method_key

# Outcome statuses (decathlon.executors.Outcome.status)
DONE, CACHED, FAILED, SKIPPED = "done", "cached", "failed", "skipped"


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
    """Counts jobs and estimates the time left; subclasses render it.

    ETA: once epochs have ended in this session, from measured throughput: the images each unfinished job
    still has to process (:func:`decathlon.summary.job_images`) over its method's measured training
    images/s (the mean over the methods measured so far for a method not yet measured), divided by the
    concurrent workers. Before that, and for plans of other objects than jobs, from the mean duration of
    this session's finished jobs; unknown before either exists.
    """

    def __init__(self, *, workers: int = 1, clock: Callable[[], float] = time.monotonic):
        self.workers = max(1, workers)  # jobs that run at the same time (for the ETA)
        self.clock = clock
        self.total = 0
        self.counts = {DONE: 0, CACHED: 0, FAILED: 0, SKIPPED: 0}
        self.running: dict[str, float] = {}  # job id -> start time
        self.durations: list[float] = []  # seconds of jobs run (not cached) in this session
        self.cached_unreported = 0  # cached jobs not yet announced (summarised in one line, not one per job)
        self.work: dict[str, tuple[str, int]] = {}  # unfinished job id -> (method, images it processes)
        self.processed: dict[str, int] = {}  # job id -> images processed in this session's epochs
        self.measured: dict[str, tuple[float, float]] = {}  # method -> (images, seconds) of ended epochs

    def start(self, jobs: Sequence[Any]) -> None:
        from decathlon.errors import HarnessError
        from decathlon.jobs import Job

        self.total = len(jobs)
        self.work = {}
        for job in jobs:
            if isinstance(job, Job):
                try:
                    self.work[job.job_id] = (method_key(job), job_images(job))
                except HarnessError:  # a domain or method no registry knows: no estimate, the job still runs
                    continue

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def eta(self) -> float | None:
        """Seconds left (class docstring), or None while nothing has been measured."""
        rates = {m: i / s for m, (i, s) in self.measured.items() if s > 0}
        if rates and self.work:
            fallback = sum(rates.values()) / len(rates)
            left = sum(max(0, images - self.processed.get(job_id, 0)) / rates.get(method, fallback)
                       for job_id, (method, images) in self.work.items())
            return left / self.workers
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
        """An engine progress event of a running job: ended epochs measure its method's throughput."""
        if event == "epoch_end" and job_id in self.work and info.get("images_per_s") and info.get("seconds"):
            seconds = float(info["seconds"])
            images = float(info["images_per_s"]) * seconds
            method = self.work[job_id][0]
            done_images, done_seconds = self.measured.get(method, (0.0, 0.0))
            self.measured[method] = (done_images + images, done_seconds + seconds)
            self.processed[job_id] = self.processed.get(job_id, 0) + round(images)

    def job_finished(self, job_id: str, status: str, message: str = "") -> None:
        self.work.pop(job_id, None)
        started = self.running.pop(job_id, None)
        if status in (DONE, FAILED) and started is not None:
            self.durations.append(self.clock() - started)
        self.counts[status] += 1

    def cached_line(self) -> str | None:
        """The line announcing the finished jobs skipped since the last announcement (None when none)."""
        n, self.cached_unreported = self.cached_unreported, 0
        return f"{n} job{'s' if n != 1 else ''} finished before: skipped (--force redoes them)" if n else None

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
        cached = self.cached_line()
        for line in (cached, text) if cached else (text,):
            self.stream.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
        self.stream.flush()

    def start(self, jobs: Sequence[Any]) -> None:
        super().start(jobs)
        self._line(f"plan: {self.total} jobs")

    def job_started(self, job_id: str) -> None:
        super().job_started(job_id)
        self._line(f"start {job_id}")

    def job_event(self, job_id: str, event: str, info: Mapping[str, Any]) -> None:
        super().job_event(job_id, event, info)
        self._line(f"{event} {job_id} {format_info(info)}".rstrip())

    def job_finished(self, job_id: str, status: str, message: str = "") -> None:
        super().job_finished(job_id, status, message)
        if status == CACHED:
            self.cached_unreported += 1
            return
        self._line(f"{status} {job_id}{': ' + message if message else ''} | {self.summary()}")

    def close(self) -> None:
        cached = self.cached_line()
        if cached:
            self.cached_unreported = 0
            self._line(cached)



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
        # engine events (epochs counted from 1): epoch_start(epoch, epochs), batch(epoch, step, steps, loss),
        # epoch_end(epoch, metrics)
        super().job_event(job_id, event, info)
        task = self.tasks.get(job_id)
        if task is None:
            return
        if "epochs" in info:
            self.epochs[job_id] = info["epochs"]
        epochs = self.epochs.get(job_id, "?")
        if event == "batch" and info.get("steps"):
            label = f"  {job_id} epoch {info.get('epoch', 1)}/{epochs}"
            self.bars.update(task, total=info["steps"], completed=info.get("step", 0), description=label)
        elif event == "epoch_start":
            label = f"  {job_id} epoch {info.get('epoch', 1)}/{epochs}"
            self.bars.update(task, total=None, completed=0, description=label)
        elif event == "epoch_end":
            self._log(escape(f"{job_id} {format_info(info)}"))
            self._refresh_overall()  # the ETA follows the measured throughput

    def job_finished(self, job_id: str, status: str, message: str = "") -> None:
        super().job_finished(job_id, status, message)
        self.epochs.pop(job_id, None)
        task = self.tasks.pop(job_id, None)
        if task is not None:
            self.bars.remove_task(task)
        if status == CACHED:
            self.cached_unreported += 1
        else:
            style = {DONE: "green", FAILED: "bold red", SKIPPED: "yellow"}[status]
            self._log(f"[{style}]{status}[/] {escape(job_id)}{': ' + escape(message) if message else ''}")
        self._refresh_overall()

    def _log(self, markup: str) -> None:
        cached = self.cached_line()
        if cached:
            self.console.log(escape(cached))
        self.console.log(markup)

    def close(self) -> None:
        cached = self.cached_line()
        if cached:
            self.console.log(escape(cached))
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
    if terminal:  # no "file.py:123" column on log lines: it names our code, not the user's jobs
        return RichProgress(Console(file=stream, log_path=False), workers=workers)
    return LineProgress(stream, workers=workers)
