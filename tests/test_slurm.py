"""The SLURM executor against a real (one-node) SLURM cluster, started by tests/slurm/setup.sh.

A tiny plan of the generated suite runs end to end through submitit job arrays, in two waves (the
reusing method after the job it reuses). One job is preempted mid-run, the way a cluster preempts it:
SIGTERM, then submitit's signal (USR2), on which submitit calls the job's ``checkpoint()`` and requeues it;
the requeued job resumes from its last epoch checkpoint and ends with the metrics of an uninterrupted run.

Runs when ``sinfo`` answers. In CI (``.ci/run`` exports ``REQUIRE_SLURM=1``) a missing scheduler is a
failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from decathlon.config import RunConfig
from decathlon.executors import SUBMITIT_FILE, SubmititExecutor
from decathlon.jobs import Job
from decathlon.progress import DONE, LineProgress
from decathlon.suites import get_suite

pytestmark = pytest.mark.slurm


def _slurm_up() -> str | None:
    """None when the scheduler answers, else why not."""
    if shutil.which("sinfo") is None:
        return "`sinfo` not found"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30,
                          check=False)
    if proc.returncode != 0:
        return f"`sinfo` failed: {proc.stderr.strip()}"
    if not any(s.strip().rstrip("*") in ("idle", "mixed", "allocated") for s in proc.stdout.split()):
        return f"no usable node (sinfo: {proc.stdout.strip()!r})"
    return None


@pytest.fixture(scope="module")
def slurm():
    problem = _slurm_up()
    if problem is not None:
        if os.environ.get("REQUIRE_SLURM") == "1":
            pytest.fail(f"REQUIRE_SLURM=1 but SLURM is not up: {problem} "
                        "(start it with tests/slurm/setup.sh)")
        pytest.skip(f"SLURM is not up ({problem}); run tests/slurm/setup.sh, or set REQUIRE_SLURM=1 to fail")


def _job(mini_suite, method, epochs, **values) -> Job:
    base = dict(get_suite("mini").overrides("decathlon"))
    config = RunConfig.from_dict({**base, "suite": "mini", "method": method, "domain": "svhn",
                                  "epochs": epochs, "limit_train_images": 40, "device": "cpu",
                                  "data_root": str(mini_suite.decathlon_root), **values})
    return Job(config)


def _text(path) -> str:
    return path.read_text() if path.is_file() else ""


def _attempts(job: Job, out) -> list[dict]:
    path = job.run_dir(out) / SUBMITIT_FILE
    return json.loads(path.read_text())["attempts"] if path.is_file() else []


def test_plan_runs_on_slurm_and_a_preempted_job_resumes_from_its_checkpoint(slurm, mini_suite, tmp_path):
    out = tmp_path / "results"
    # the job to preempt: long enough to be caught mid-run; with a DataLoader worker, which gets the
    # scheduler's signals too and must survive them
    long = _job(mini_suite, "finetune", epochs=8, num_workers=1)
    spottune = _job(mini_suite, "spottune", epochs=1)
    reuse = Job(_job(mini_suite, "spottune-running-ft", epochs=1).config, needs=(spottune.job_id,),
                source=spottune.job_id)
    executor = SubmititExecutor(tmp_path / "submitit", cluster="slurm", poll_s=1.0,
                                parameters={"timeout_min": 20, "cpus_per_task": 1,
                                            "slurm_signal_delay_s": 30})
    outcomes: dict = {}
    errors: list = []

    def execute():
        try:
            with open(tmp_path / "progress.log", "w") as log:
                tracker = LineProgress(log)
                tracker.start([long, spottune, reuse])
                outcomes.update(executor.execute([long, spottune, reuse], out, tracker))
        except BaseException as e:  # noqa: BLE001 - reported by the test thread below
            errors.append(e)

    thread = threading.Thread(target=execute, daemon=True)
    thread.start()

    # preempt the long job once its first epoch checkpoint exists
    checkpoint = long.run_dir(out) / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert checkpoint.is_file(), f"no checkpoint appeared; errors: {errors}"
    slurm_id = _attempts(long, out)[0]["job_id"]
    # what submitit's own preemption simulation sends: SIGTERM, then USR2 once the SIGTERM has landed
    # (SLURM delivers signals asynchronously: a SIGTERM overtaken by the USR2 would kill the `scontrol
    # requeue` that submitit's USR2 handler runs, and no cluster sends the two in that order)
    err_log = tmp_path / "submitit" / slurm_id / f"{slurm_id}_0_log.err"
    subprocess.run(["scancel", "--signal", "SIGTERM", slurm_id], check=True, timeout=60)
    while "Bypassing signal SIGTERM" not in _text(err_log) and time.monotonic() < deadline:
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal", "USR2", slurm_id], check=True, timeout=60)
    # SLURM holds a requeued job for a while (BeginTime); let it start again at once
    while thread.is_alive() and len(_attempts(long, out)) < 2 and time.monotonic() < deadline:
        subprocess.run(["scontrol", "update", f"JobId={slurm_id}", "StartTime=now"], capture_output=True,
                       timeout=60, check=False)
        time.sleep(1)

    thread.join(timeout=900)
    assert not thread.is_alive(), "the SLURM executor did not finish within 15 minutes"
    assert not errors, errors
    errors_written = {j.job_id: _text(j.run_dir(out) / "error.json") for j in (long, spottune, reuse)}
    assert {k: o.status for k, o in outcomes.items()} == {long.job_id: DONE, spottune.job_id: DONE,
                                                          reuse.job_id: DONE}, errors_written

    # the preempted job ran twice under the same SLURM job id (requeued), and the second run resumed
    attempts = _attempts(long, out)
    assert len(attempts) == 2, attempts
    assert attempts[0]["job_id"] == attempts[1]["job_id"] == slurm_id
    assert attempts[1]["restart_count"] == 1
    log = next((tmp_path / "submitit").glob(f"{slurm_id}/{slurm_id}_0_log.out")).read_text()
    starts = [int(line.split("epoch=")[1].split()[0]) for line in log.splitlines()
              if f"epoch_start {long.job_id}" in line]
    assert starts[0] == 1 and starts.count(1) == 1, starts  # epoch 1 ran once: no restart from scratch
    # every epoch started, at most the interrupted one twice
    assert sorted(set(starts)) == list(range(1, 9)) and len(starts) <= 9, starts
    lines = (long.run_dir(out) / "epochs.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == list(range(1, 9))

    # the second wave ran after the first: the reusing job found spottune's finished checkpoint
    reused = json.loads((reuse.run_dir(out) / "result.json").read_text())
    assert reused["method"] == "spottune-running-ft" and reused["epochs"] == 0

    # the resumed job's metrics equal those of an uninterrupted run of the same job
    from decathlon import engine

    fresh = engine.run(long.config, tmp_path / "uninterrupted")
    result = json.loads((long.run_dir(out) / "result.json").read_text())
    assert result["top1"] == fresh["top1"]
    assert result["loss"] == pytest.approx(fresh["loss"], rel=1e-6)
