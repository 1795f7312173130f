"""Executors on tiny real jobs: failure isolation, skip-finished, worker processes, submitit's local
cluster, and the progress trackers."""

from __future__ import annotations

import io
import json

import pytest

from decathlon.config import RunConfig
from decathlon.executors import (
    ERROR_FILE,
    InlineExecutor,
    LocalExecutor,
    SubmititExecutor,
    blocked_reason,
    run_job,
    worker_slots,
)
from decathlon.jobs import Job
from decathlon.progress import CACHED, DONE, FAILED, SKIPPED, LineProgress, Tracker, format_seconds
from decathlon.suites import get_suite


class Recorder(Tracker):
    """A tracker that remembers every call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def job_started(self, job_id):
        super().job_started(job_id)
        self.calls.append(("started", job_id))

    def job_event(self, job_id, event, info):
        self.calls.append((event, job_id, dict(info)))

    def job_finished(self, job_id, status, message=""):
        super().job_finished(job_id, status, message)
        self.calls.append(("finished", job_id, status))


def tiny(mini_suite, method="finetune", domain="svhn", **values) -> Job:
    """A job of a few seconds: random-init ResNet-26 x0.25, 1 epoch over 20 images."""
    base = dict(get_suite("mini").overrides("decathlon"))
    config = RunConfig.from_dict({**base, "suite": "mini", "method": method, "domain": domain, "epochs": 1,
                                  "limit_train_images": 20, "device": "cpu",
                                  "data_root": str(mini_suite.decathlon_root), **values})
    return Job(config)


def test_failing_job_is_recorded_others_finish_and_dependants_are_skipped(mini_suite, tmp_path):
    good = tiny(mini_suite)
    bad = tiny(mini_suite, domain="dtd", data_root=str(tmp_path / "no-such-root"))
    dependant = Job(tiny(mini_suite, method="spottune-running-ft", domain="dtd").config, needs=(bad.job_id,),
                    source=bad.job_id)
    tracker = Recorder()
    outcomes = InlineExecutor().execute([bad, dependant, good], tmp_path, tracker)
    assert outcomes[good.job_id].status == DONE
    assert outcomes[bad.job_id].status == FAILED and "no-such-root" in outcomes[bad.job_id].message
    assert outcomes[dependant.job_id].status == SKIPPED and bad.job_id in outcomes[dependant.job_id].message
    error = json.loads((bad.run_dir(tmp_path) / ERROR_FILE).read_text())
    assert error["job_id"] == bad.job_id and "no-such-root" in error["error"]
    assert "Traceback (most recent call last)" in error["traceback"]
    result = json.loads((good.run_dir(tmp_path) / "result.json").read_text())
    assert result["method"] == "finetune" and result["domain"] == "svhn" and 0 <= result["top1"] <= 100
    assert not dependant.run_dir(tmp_path).exists()
    assert ("finished", dependant.job_id, SKIPPED) in tracker.calls
    assert any(c[0] == "epoch_end" and c[1] == good.job_id for c in tracker.calls)

    # the same plan again: the finished job is not redone, the failed one is retried (and fails again)
    stamp = (good.run_dir(tmp_path) / "result.json").stat().st_mtime_ns
    again = InlineExecutor().execute([bad, dependant, good], tmp_path, Recorder())
    assert again[good.job_id].status == CACHED
    assert (good.run_dir(tmp_path) / "result.json").stat().st_mtime_ns == stamp
    assert again[bad.job_id].status == FAILED and again[dependant.job_id].status == SKIPPED


def test_run_job_writes_its_description_and_clears_a_stale_error(mini_suite, tmp_path):
    job = tiny(mini_suite, method="feature-extractor")
    run_dir = job.run_dir(tmp_path)
    run_dir.mkdir(parents=True)
    (run_dir / ERROR_FILE).write_text("{}")
    assert run_job(job, tmp_path).status == DONE
    assert not (run_dir / ERROR_FILE).exists()
    assert Job.from_dict(json.loads((run_dir / "job.json").read_text())) == job
    assert run_job(job, tmp_path).status == CACHED


def test_local_executor_runs_jobs_in_worker_processes(mini_suite, tmp_path):
    jobs = [tiny(mini_suite, seed=0), tiny(mini_suite, seed=1)]
    tracker = Recorder()
    executor = LocalExecutor(slots=worker_slots(gpus=(), cpu_workers=2, cpus=2))
    outcomes = executor.execute(jobs, tmp_path, tracker)
    assert {o.status for o in outcomes.values()} == {DONE}
    for job in jobs:
        assert job.is_finished(tmp_path)
        ends = [c for c in tracker.calls if c[0] == "epoch_end" and c[1] == job.job_id]
        assert len(ends) == 1 and ends[0][2]["epoch"] == 1  # progress came back from the worker
    # each worker saw its slot's environment: no GPU, one thread each (2 cores / 2 workers)
    assert worker_slots(gpus=(), cpu_workers=2, cpus=2) == (
        {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},) * 2


def test_local_executor_records_a_worker_that_dies(mini_suite, tmp_path):
    job = tiny(mini_suite)
    # an "interpreter" that exits at once with code 3, as a crashed or killed worker would
    dead = tmp_path / "die.sh"
    dead.write_text("#!/bin/sh\nexit 3\n")
    dead.chmod(0o755)
    outcomes = LocalExecutor(slots=[{}], python=str(dead)).execute([job], tmp_path, Recorder())
    assert outcomes[job.job_id].status == FAILED and "code 3" in outcomes[job.job_id].message
    assert "code 3" in json.loads((job.run_dir(tmp_path) / ERROR_FILE).read_text())["error"]


def test_worker_slots_per_gpu():
    slots = worker_slots(gpus=("0", "3"), jobs_per_gpu=2)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "3", "3"]
    assert worker_slots(gpus=(), cpu_workers=4, cpus=2)[0]["OMP_NUM_THREADS"] == "1"


def test_submitit_local_cluster_end_to_end(mini_suite, tmp_path):
    spottune = tiny(mini_suite, method="spottune")
    reuse = Job(tiny(mini_suite, method="spottune-running-ft").config, needs=(spottune.job_id,),
                source=spottune.job_id)
    tracker = Recorder()
    executor = SubmititExecutor(tmp_path / "submitit", cluster="local", parameters={"timeout_min": 10},
                                poll_s=0.5)
    outcomes = executor.execute([reuse, spottune], tmp_path, tracker)
    assert {k: o.status for k, o in outcomes.items()} == {spottune.job_id: DONE, reuse.job_id: DONE}
    # the reusing job ran in a later wave, after the job whose checkpoint it evaluates
    order = [c[1] for c in tracker.calls if c[0] == "started"]
    assert order.index(reuse.job_id) > order.index(spottune.job_id)
    result = json.loads((reuse.run_dir(tmp_path) / "result.json").read_text())
    assert result["method"] == "spottune-running-ft" and result["epochs"] == 0
    assert any(c[0] == "epoch_end" and c[1] == spottune.job_id for c in tracker.calls)
    assert list((tmp_path / "submitit").glob("*/*_result.pkl"))


def test_blocked_reason():
    from decathlon.executors import Outcome

    job = Job(RunConfig(), needs=("a", "b"))
    assert blocked_reason(job, {"a": Outcome("a", DONE)}) is None
    failed = {"a": Outcome("a", CACHED), "b": Outcome("b", FAILED)}
    assert blocked_reason(job, failed) == "needs b, which failed"
    assert "was skipped" in blocked_reason(job, {"a": Outcome("a", SKIPPED)})


def test_tracker_counts_and_eta():
    now = [0.0]
    tracker = Tracker(workers=2, clock=lambda: now[0])
    tracker.start(range(5))
    assert tracker.eta() is None
    tracker.job_finished("c", CACHED)  # finished before: does not count towards the job duration
    tracker.job_started("a")
    now[0] = 10.0
    tracker.job_finished("a", DONE)
    # 3 jobs left x 10 s each / 2 workers
    assert tracker.eta() == pytest.approx(15.0)
    tracker.job_started("b")
    now[0] = 14.0
    assert tracker.eta() == pytest.approx((3 * 10 - 4) / 2)
    assert "jobs 2/5: 1 done, 1 already finished, 1 running, 0 failed" in tracker.summary()
    assert format_seconds(3725) == "1:02:05" and format_seconds(None) == "?"


def test_line_progress_writes_one_line_per_event():
    stream = io.StringIO()
    log = LineProgress(stream)
    log.start(["x"])
    log.job_started("x")
    callback = log.callback("x")
    callback("epoch_start", epoch=1, epochs=2)
    callback("epoch_end", epoch=1, train_loss=1.23456789, lrs=[0.1, 0.01])
    log.job_finished("x", FAILED, "ValueError: [boom]")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5
    assert lines[2].endswith("epoch_start x epoch=1 epochs=2")
    assert lines[3].endswith("epoch_end x epoch=1 train_loss=1.235")
    assert "failed x: ValueError: [boom]" in lines[4] and "1 failed" in lines[4]


def test_rich_progress_follows_engine_events():
    from rich.console import Console

    from decathlon.progress import RichProgress, make_progress

    stream = io.StringIO()
    display = RichProgress(Console(file=stream, force_terminal=False, width=200))
    display.start(["a", "b"])
    display.job_started("a")
    callback = display.callback("a")
    callback("epoch_start", epoch=1, epochs=2)  # epochs count from 1
    callback("batch", epoch=1, step=3, steps=8, loss=2.0)
    task = display.bars.tasks[display.tasks["a"]]
    assert (task.completed, task.total) == (3, 8) and "epoch 1/2" in task.description
    callback("epoch_end", epoch=1, train_loss=1.5)
    display.job_finished("a", FAILED, "ValueError: [x]")  # brackets are text, not markup
    display.job_finished("b", CACHED)
    display.close()
    overall = display.bars.tasks[display.overall]
    assert overall.completed == 2 and "1 failed" in overall.description
    assert "ValueError: [x]" in stream.getvalue() and "train_loss=1.5" in stream.getvalue()
    assert isinstance(make_progress(stream=io.StringIO()), LineProgress)  # not a terminal: plain lines
