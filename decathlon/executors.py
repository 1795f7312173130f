"""Executors: run a job plan in-process, in local worker processes, or on SLURM through submitit.

Every executor runs each job through :func:`run_job`, which skips a finished job (its marker file is
present), resumes a partial one (the engine resumes from ``checkpoint.pt``), and turns an exception into
an ``error.json`` (error and traceback, written atomically) instead of stopping the plan. A job whose
dependency failed or was skipped is skipped with the reason. Executors return one :class:`Outcome` per
job and report to a :class:`decathlon.progress.Tracker`.

- :class:`InlineExecutor`: sequential, in this process (the default);
- :class:`LocalExecutor`: worker subprocesses (``python -m decathlon.executors worker ...``), one or more
  per visible GPU (``CUDA_VISIBLE_DEVICES``), or N CPU workers; a job starts as soon as its needs finished;
- :class:`SubmititExecutor`: submitit on SLURM (job arrays, one array per wave of independent jobs) or
  submitit's local cluster. The submitted callable is ``submitit.helpers.Checkpointable``: on preemption
  or time-out submitit requeues it and it resumes from the job's last checkpoint. Job states come from
  the result files submitit writes and, while none exists, from ``squeue`` (``sacct`` may be disabled).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import submitit

from decathlon.errors import HarnessError
from decathlon.io import atomic_write_json
from decathlon.jobs import PRETRAIN, Job, pretrained_path, waves
from decathlon.progress import CACHED, DONE, FAILED, SKIPPED, LineProgress, Tracker

ERROR_FILE = "error.json"
JOB_FILE = "job.json"
WORKER_LOG = "worker.log"
SUBMITIT_FILE = "submitit.json"  # the cluster attempts of a job run through submitit
_TAG_EVENT, _TAG_OUTCOME = "@@decathlon-event ", "@@decathlon-outcome "  # worker -> parent stdout lines
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Outcome:
    """How one job of a plan ended."""

    job_id: str
    status: str  # DONE, CACHED (finished before), FAILED, SKIPPED (a dependency did not finish)
    seconds: float = 0.0
    message: str = ""


# ----------------------------------------------------------------------------------------- one job

def clear_run_dirs(jobs: Iterable[Job], out_dir: str | Path) -> list[Path]:
    """Delete the run directories of `jobs` (``--force``); done once, before any executor starts."""
    removed = []
    for job in jobs:
        run_dir = job.run_dir(out_dir)
        if run_dir.exists():
            shutil.rmtree(run_dir)
            removed.append(run_dir)
    return removed


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler's time limit or preemption, ``kill``): unwinds like Ctrl-C, so that every
    ``finally`` runs (loader workers end) and the command exits with a summary instead of dying mid-write."""


def raise_on_sigterm() -> Any:
    """Turn SIGTERM into :class:`Terminated` in this process (from the main thread of an entry point).

    Returns the previous handler (to restore with ``signal.signal`` when the entry point returns).
    """
    def handler(signum: int, frame: Any) -> None:
        signal.signal(signum, signal.SIG_IGN)  # a repeated SIGTERM must not interrupt the unwinding
        raise Terminated(f"received signal {signal.Signals(signum).name}")

    return signal.signal(signal.SIGTERM, handler)


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*: ")  # "decathlon.errors.DataError: ..." ending a traceback


def error_line(error: BaseException | str) -> str:
    """``Type: message`` on one line. An error re-raised from a DataLoader worker carries the worker's
    traceback in its message ("Caught X in DataLoader worker process N. Original Traceback ..."): its last
    entry, the worker's own error, is the line."""
    if not isinstance(error, BaseException):
        return " ".join(str(error).split())
    kind, lines = type(error).__name__, [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and any("Original Traceback" in x for x in lines):
        last = max((i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)), default=len(lines) - 1)
        kind, _, text = " ".join(lines[last:]).partition(": ")
        return f"{kind.rpartition('.')[2]}: {' '.join(text.split())}"
    return f"{kind}: {' '.join(' '.join(lines).split())}"


def write_error(run_dir: Path, job_id: str, error: BaseException | str, trace: str = "") -> Path:
    """Record a failed job: ``error.json`` with the error (one line), its type and the traceback (atomic)."""
    kind = type(error).__name__ if isinstance(error, BaseException) else "WorkerError"
    line = error_line(error) if isinstance(error, BaseException) else f"{kind}: {error_line(error)}"
    return atomic_write_json(run_dir / ERROR_FILE, {
        "job_id": job_id, "error": line, "type": kind, "traceback": trace,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def _run_pretrain(job: Job, out_dir: Path, progress: Callable[..., None] | None) -> None:
    from decathlon import pretrain

    info = pretrain.run(job.config, job.run_dir(out_dir), progress=progress)
    checkpoint = pretrained_path(job, out_dir)
    atomic_write_json(job.run_dir(out_dir) / job.marker, {"job_id": job.job_id, "checkpoint": str(checkpoint),
                                                          **info})


def run_job(job: Job, out_dir: str | Path, *, progress: Callable[..., None] | None = None,
            debug: bool = False) -> Outcome:
    """Run one job unless it already finished; record a failure instead of raising it.

    A transfer job runs ``decathlon.engine.run`` (which resumes from the run dir's checkpoint); a job
    that reuses another's model gets that job's run dir as ``source_run_dir``. Once the job finished, its
    resume state is removed unless ``job.keep_checkpoint`` (:func:`decathlon.engine.prune_run_dir`). With
    `debug`, the exception is re-raised after ``error.json`` is written.
    """
    run_dir = job.run_dir(out_dir)
    if job.is_finished(out_dir):
        return Outcome(job.job_id, CACHED)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    atomic_write_json(run_dir / JOB_FILE, job.to_dict())
    start = time.monotonic()
    try:
        if job.kind == PRETRAIN:
            _run_pretrain(job, Path(out_dir), progress)
        else:
            from decathlon import engine

            source = Path(out_dir) / "runs" / job.source if job.source else None
            engine.run(job.config, run_dir, progress=progress, source_run_dir=source)
        if not job.is_finished(out_dir):
            raise HarnessError(f"{run_dir}: the job returned without writing {job.marker}")
        if not job.keep_checkpoint:
            from decathlon.engine import prune_run_dir

            prune_run_dir(run_dir, job.marker)
    except Exception as e:  # noqa: BLE001 - one failing job must not stop the plan; it is recorded
        write_error(run_dir, job.job_id, e, traceback.format_exc())
        if debug:
            raise
        return Outcome(job.job_id, FAILED, time.monotonic() - start, error_line(e))
    return Outcome(job.job_id, DONE, time.monotonic() - start, accuracy_text(run_dir / job.marker))


def accuracy_text(marker: Path) -> str:
    """``top-1 71.25 % on test`` from a finished job's marker (``result.json``, ``pretrain.json``): the
    message of its line in the log."""
    info = json.loads(marker.read_text())
    split = info.get("eval_split", "?")
    if info.get("top1") is None:
        return f"no accuracy ({split} has no labels)"
    return f"top-1 {info['top1']:.2f} % on {split}"


def blocked_reason(job: Job, outcomes: Mapping[str, Outcome]) -> str | None:
    """Why `job` cannot run: a job it needs failed or was skipped (None when it can)."""
    for need in job.needs:
        outcome = outcomes.get(need)
        if outcome is not None and outcome.status in (FAILED, SKIPPED):
            return f"needs {need}, which {'failed' if outcome.status == FAILED else 'was skipped'}"
    return None


def _ready(job: Job, outcomes: Mapping[str, Outcome], planned: set[str]) -> bool:
    return all(n in outcomes or n not in planned for n in job.needs)


def _settle(job: Job, out_dir: Path, outcomes: dict[str, Outcome], tracker: Tracker) -> bool:
    """Record the outcome of a job that needs no run (finished before, or blocked); True if settled."""
    reason = blocked_reason(job, outcomes)
    if reason is not None:
        outcomes[job.job_id] = Outcome(job.job_id, SKIPPED, message=reason)
    elif job.is_finished(out_dir):
        outcomes[job.job_id] = Outcome(job.job_id, CACHED)
    else:
        return False
    tracker.job_finished(job.job_id, outcomes[job.job_id].status, outcomes[job.job_id].message)
    return True


# -------------------------------------------------------------------------------------- executors

class InlineExecutor:
    """Run the jobs one after the other in this process (jobs come in plan order: needs first)."""

    name = "inline"
    workers = 1

    def __init__(self, *, debug: bool = False):
        self.debug = debug

    def execute(self, jobs: Sequence[Job], out_dir: str | Path, tracker: Tracker) -> dict[str, Outcome]:
        out_dir = Path(out_dir)
        outcomes: dict[str, Outcome] = {}
        for job in jobs:
            if _settle(job, out_dir, outcomes, tracker):
                continue
            tracker.job_started(job.job_id)
            outcome = run_job(job, out_dir, progress=tracker.callback(job.job_id), debug=self.debug)
            outcomes[job.job_id] = outcome
            tracker.job_finished(job.job_id, outcome.status, outcome.message)
        return outcomes


def visible_gpus() -> tuple[str, ...]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return tuple(g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1")
    import torch

    return tuple(str(i) for i in range(torch.cuda.device_count()))


def worker_slots(*, gpus: Sequence[str], jobs_per_gpu: int = 1, cpu_workers: int = 1,
                 cpus: int | None = None) -> tuple[dict[str, str], ...]:
    """Environment overrides of each worker slot: one per GPU x jobs_per_gpu, or `cpu_workers` CPU slots.

    CPU slots hide the GPUs and share the cores (``OMP_NUM_THREADS`` = cores / workers, at least 1).
    """
    if gpus:
        return tuple({"CUDA_VISIBLE_DEVICES": g} for g in gpus for _ in range(max(1, jobs_per_gpu)))
    cpus = cpus or os.cpu_count() or 1
    threads = str(max(1, cpus // max(1, cpu_workers)))
    return tuple({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads} for _ in range(max(1, cpu_workers)))


class LocalExecutor:
    """Worker subprocesses, one job each, as many at a time as there are slots (GPU or CPU)."""

    name = "local"

    def __init__(self, *, slots: Sequence[Mapping[str, str]], python: str = sys.executable,
                 debug: bool = False):
        if not slots:
            raise ValueError("LocalExecutor needs at least one worker slot")
        self.slots = tuple(dict(s) for s in slots)
        self.python = python
        self.debug = debug

    @property
    def workers(self) -> int:
        return len(self.slots)

    def _launch(self, job: Job, out_dir: Path, slot: Mapping[str, str],
                events: queue.Queue) -> subprocess.Popen:
        run_dir = job.run_dir(out_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / JOB_FILE, job.to_dict())
        env = dict(os.environ, **slot)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        command = [self.python, "-m", "decathlon.executors", "worker", str(run_dir / JOB_FILE),
                   "--out", str(out_dir)] + (["--debug"] if self.debug else [])
        log = open(run_dir / WORKER_LOG, "ab")  # noqa: SIM115 - closed by the reader thread
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env, text=True, bufsize=1)
        threading.Thread(target=_read_worker, args=(job.job_id, proc, log, events), daemon=True).start()
        return proc

    def execute(self, jobs: Sequence[Job], out_dir: str | Path, tracker: Tracker) -> dict[str, Outcome]:
        procs: dict[str, subprocess.Popen] = {}
        try:
            return self._execute(jobs, Path(out_dir), tracker, procs)
        except BaseException:
            # interrupted (Ctrl-C, SIGTERM): the workers unwind too (their SIGTERM ends their loader workers);
            # their jobs resume on the next run
            _end_processes(procs.values(), WORKER_EXIT_GRACE_S)
            raise

    def _execute(self, jobs: Sequence[Job], out_dir: Path, tracker: Tracker,
                 procs: dict[str, subprocess.Popen]) -> dict[str, Outcome]:
        planned = {j.job_id for j in jobs}
        pending = list(jobs)
        outcomes: dict[str, Outcome] = {}
        running: dict[str, tuple[int, Outcome | None, float]] = {}  # job id -> slot, reported outcome, start
        free = list(range(len(self.slots)))
        events: queue.Queue = queue.Queue()
        while pending or running:
            changed = True
            while changed:  # settle and launch until nothing more can (a settled job may unblock another)
                changed = False
                for job in list(pending):
                    if _settle(job, out_dir, outcomes, tracker):
                        pending.remove(job)
                        changed = True
                    elif free and _ready(job, outcomes, planned):
                        slot = free.pop(0)
                        tracker.job_started(job.job_id)
                        procs[job.job_id] = self._launch(job, out_dir, self.slots[slot], events)
                        running[job.job_id] = (slot, None, time.monotonic())
                        pending.remove(job)
                        changed = True
            if not running:
                if pending:  # nothing runs and nothing can start: a need outside any order
                    raise ValueError(f"jobs wait for needs that never run: {[j.job_id for j in pending]}")
                continue
            kind, job_id, payload = events.get()
            slot, reported, start = running[job_id]
            if kind == "event":
                tracker.job_event(job_id, payload["event"], payload.get("info", {}))
            elif kind == "outcome":
                running[job_id] = (slot, Outcome(**payload), start)
            else:  # the worker exited
                outcome = reported or _lost_worker(job_id, out_dir, payload, time.monotonic() - start)
                outcomes[job_id] = outcome
                del running[job_id]
                procs.pop(job_id, None)
                free.append(slot)
                tracker.job_finished(job_id, outcome.status, outcome.message)
        return outcomes


WORKER_UNWIND_S = 10.0  # seconds interrupted workers get to end by themselves (Ctrl-C reaches them too)
WORKER_EXIT_GRACE_S = 60.0  # then seconds they get after a SIGTERM, before they are killed


def _end_processes(procs: Iterable[subprocess.Popen], grace_s: float) -> None:
    """End our worker subprocesses: let them unwind on their own for :data:`WORKER_UNWIND_S` (a SIGTERM in
    the middle of their cleanup would cut it short), then SIGTERM those still running, wait up to
    `grace_s`, then SIGKILL."""
    for timeout, signal_them in ((WORKER_UNWIND_S, False), (grace_s, True)):
        procs = [p for p in procs if p.poll() is None]
        for proc in procs if signal_them else ():
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def _read_worker(job_id: str, proc: subprocess.Popen, log: Any, events: queue.Queue) -> None:
    """Forward a worker's tagged stdout lines to the parent's event queue; the rest goes to its log."""
    for line in proc.stdout:
        if line.startswith(_TAG_EVENT):
            events.put(("event", job_id, json.loads(line[len(_TAG_EVENT):])))
        elif line.startswith(_TAG_OUTCOME):
            events.put(("outcome", job_id, json.loads(line[len(_TAG_OUTCOME):])))
        else:
            log.write(line.encode())
    code = proc.wait()
    log.close()
    events.put(("exit", job_id, code))


def _lost_worker(job_id: str, out_dir: Path, code: int, seconds: float) -> Outcome:
    """A worker that exited without reporting (killed, crashed interpreter): record it as failed."""
    run_dir = out_dir / "runs" / job_id
    message = f"worker exited with code {code} without reporting; see {run_dir / WORKER_LOG}"
    write_error(run_dir, job_id, message)
    return Outcome(job_id, FAILED, seconds, message)


def _emit(tag: str, payload: Mapping[str, Any]) -> None:
    sys.stdout.write(tag + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def worker_main(job_file: Path, out_dir: Path, debug: bool = False) -> int:
    """Run one job in this (worker) process, reporting progress and the outcome as tagged stdout lines."""
    job = Job.from_dict(json.loads(Path(job_file).read_text()))

    def progress(event: str, **info: Any) -> None:
        _emit(_TAG_EVENT, {"event": event, "info": info})

    outcome = run_job(job, out_dir, progress=progress, debug=debug)
    _emit(_TAG_OUTCOME, asdict(outcome))
    return 0


# ---------------------------------------------------------------------------------------- submitit

def record_attempt(run_dir: Path) -> dict[str, Any]:
    """Append this submitit attempt (cluster job id, host, SLURM restart count) to ``submitit.json``."""
    path = Path(run_dir) / SUBMITIT_FILE
    attempts = json.loads(path.read_text())["attempts"] if path.is_file() else []
    env = submitit.JobEnvironment()
    attempt = {"job_id": env.job_id, "hostname": env.hostname,
               "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(path, {"attempts": [*attempts, attempt]})
    return attempt


class SubmittedJob(submitit.helpers.Checkpointable):
    """The callable submitit runs for one job; requeued after preemption or time-out.

    ``checkpoint`` resubmits the same call: the model state lives in the run dir's ``checkpoint.pt``,
    written by the engine after every epoch, so the requeued call resumes from the last finished epoch.
    """

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def __call__(self, job: Mapping[str, Any]) -> dict[str, Any]:
        parsed = Job.from_dict(job)
        if not parsed.is_finished(self.out_dir):
            record_attempt(parsed.run_dir(self.out_dir))
        log = LineProgress(sys.stdout)  # into submitit's log of this job
        return asdict(run_job(parsed, self.out_dir, progress=log.callback(parsed.job_id)))

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


_ACTIVE_SLURM_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
                        "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED",
                        "RESV_DEL_HOLD"}


def squeue_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM states of `job_ids` (``123`` or array tasks ``123_4``) from ``squeue``.

    Works without accounting (``sacct``): squeue lists finished jobs for ``MinJobAge`` seconds; ids it
    no longer lists are absent from the answer. Pending array ranges (``123_[0-3]``) are expanded.
    """
    from submitit.slurm.slurm import read_job_id

    mains = sorted({j.split("_")[0] for j in job_ids})
    if not mains:
        return {}
    command = ["squeue", "--noheader", "--states=all", "--format=%i|%T", "--jobs", ",".join(mains)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    states: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if "|" not in line:
            continue
        raw_id, state = line.strip().split("|", 1)
        for parts in read_job_id(raw_id):
            if len(parts) == 3:
                for index in range(int(parts[1]), int(parts[2]) + 1):
                    states[f"{parts[0]}_{index}"] = state
            else:
                states["_".join(parts[:2])] = state
    return states


class SubmititExecutor:
    """Submit each wave of independent jobs as one submitit job array (SLURM) or local processes.

    `parameters` are submitit AutoExecutor parameters (``timeout_min``, ``slurm_partition``,
    ``gpus_per_node``, ``cpus_per_task``, ``slurm_array_parallelism``, ...).
    """

    name = "slurm"

    def __init__(self, folder: str | Path, *, cluster: str = "slurm",
                 parameters: Mapping[str, Any] | None = None, poll_s: float = 2.0,
                 lost_grace_s: float = 30.0, workers: int = 1):
        self.folder = Path(folder)
        self.cluster = cluster
        self.parameters = dict(parameters or {})
        self.poll_s = poll_s  # seconds between state polls
        self.lost_grace_s = lost_grace_s  # a job gone from the queue gets this long to show its result file
        self.workers = workers  # expected concurrency (ETA only)

    def _executor(self) -> submitit.AutoExecutor:
        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params = dict(self.parameters)
        if self.cluster == "slurm":
            # the job must import this package even when it is not installed (a checkout on a shared disk)
            setup = list(params.pop("slurm_setup", []))
            setup.append(f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}")
            params["slurm_setup"] = setup
        executor.update_parameters(**params)
        return executor

    def submit(self, jobs: Sequence[Job], out_dir: Path) -> list[Any]:
        """Submit `jobs` (independent of each other) as one array; returns submitit Job handles."""
        executor = self._executor()
        callable_ = SubmittedJob(str(out_dir))
        return executor.map_array(callable_, [job.to_dict() for job in jobs])

    def execute(self, jobs: Sequence[Job], out_dir: str | Path, tracker: Tracker) -> dict[str, Outcome]:
        out_dir = Path(out_dir)
        outcomes: dict[str, Outcome] = {}
        for wave in waves(jobs):
            ready = [job for job in wave if not _settle(job, out_dir, outcomes, tracker)]
            if not ready:
                continue
            for job in ready:
                tracker.job_started(job.job_id)
            handles = self.submit(ready, out_dir)
            try:
                outcomes.update(self.wait(ready, handles, out_dir, tracker))
            except BaseException:
                # interrupted: cancel what was submitted, so that a rerun does not race with it
                for handle in handles:
                    handle.cancel(check=False)
                raise
        return outcomes

    def wait(self, jobs: Sequence[Job], handles: Sequence[Any], out_dir: Path,
             tracker: Tracker) -> dict[str, Outcome]:
        """Poll submitted `jobs` (with their submitit `handles`) until each has an outcome."""
        outcomes: dict[str, Outcome] = {}
        start = time.monotonic()
        epochs_seen = {job.job_id: 0 for job in jobs}
        gone_since: dict[str, float] = {}
        while len(outcomes) < len(jobs):
            states = self._states(handles, outcomes, jobs)
            for job, handle in zip(jobs, handles, strict=True):
                if job.job_id in outcomes:
                    continue
                _report_epochs(job, out_dir, epochs_seen, tracker)
                outcome = self._outcome(job, handle, states, gone_since, out_dir, time.monotonic() - start)
                if outcome is not None:
                    outcomes[job.job_id] = outcome
                    tracker.job_finished(job.job_id, outcome.status, outcome.message)
            if len(outcomes) < len(jobs):
                time.sleep(self.poll_s)
        return outcomes

    def _states(self, handles: Sequence[Any], outcomes: Mapping[str, Outcome], jobs: Sequence[Job]) -> dict:
        if self.cluster != "slurm":
            return {}
        return squeue_states(h.job_id for h, j in zip(handles, jobs, strict=True) if j.job_id not in outcomes)

    def _outcome(self, job: Job, handle: Any, states: Mapping[str, str], gone_since: dict[str, float],
                 out_dir: Path, seconds: float) -> Outcome | None:
        if handle.paths.result_pickle.exists():
            try:
                return Outcome(**handle.result())
            except Exception as e:  # noqa: BLE001 - submitit re-raises what killed the job (e.g. no requeue)
                return _submitit_failure(job, out_dir, f"submitit job {handle.job_id} failed: {e}", seconds)
        if self.cluster == "slurm":
            state = states.get(handle.job_id, "GONE")
            if state.split()[0] in _ACTIVE_SLURM_STATES:
                gone_since.pop(job.job_id, None)
                return None
        elif not handle.done():
            return None
        first_seen = gone_since.setdefault(job.job_id, time.monotonic())
        if time.monotonic() - first_seen < self.lost_grace_s:
            return None  # result files on shared disks can lag behind the scheduler
        state = states.get(handle.job_id, "no longer listed")
        return _submitit_failure(job, out_dir, f"submitit job {handle.job_id} ended ({state}) without a "
                                 f"result; see {handle.paths.stderr}", seconds)


def _submitit_failure(job: Job, out_dir: Path, message: str, seconds: float) -> Outcome:
    run_dir = job.run_dir(out_dir)
    if not (run_dir / ERROR_FILE).exists():
        write_error(run_dir, job.job_id, message)
    return Outcome(job.job_id, FAILED, seconds, message)


def _report_epochs(job: Job, out_dir: Path, seen: dict[str, int], tracker: Tracker) -> None:
    """Forward epochs newly logged by a remote job (its epochs.jsonl) to the tracker as epoch_end events."""
    path = job.run_dir(out_dir) / "epochs.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    for line in lines[seen[job.job_id]:]:
        try:
            info = json.loads(line)
        except json.JSONDecodeError:
            return  # a line being written: read it next time
        tracker.job_event(job.job_id, "epoch_end", dict(info, epochs=job.config.epochs))
        seen[job.job_id] += 1


# ---------------------------------------------------------------------------------------- worker CLI

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m decathlon.executors worker JOB_JSON --out DIR``: run one job (used by LocalExecutor)."""
    parser = argparse.ArgumentParser(prog="python -m decathlon.executors")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one job described by a job.json")
    worker.add_argument("job_file", type=Path)
    worker.add_argument("--out", type=Path, required=True)
    worker.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    raise_on_sigterm()
    try:
        return worker_main(args.job_file, args.out, debug=args.debug)
    except Terminated:
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
