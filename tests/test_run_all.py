"""``python run_all.py`` end to end on tiny configurations of the generated suite, in subprocesses:
the README's first command, skip-finished, resume after ``kill -9``, failure isolation with exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from decathlon import runner
from decathlon.config import RunConfig
from decathlon.jobs import Job

REPO = Path(__file__).resolve().parent.parent
# Tiny settings: 1 pretraining epoch over 40 source images, transfer jobs over 40 images.
TINY = ["--pretrain-epochs", "1", "--pretrain-set", "limit_train_images=40", "--set", "limit_train_images=40",
        "--set", "device=cpu"]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def run_all(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "run_all.py"), *args], capture_output=True, text=True,
                          env=_env(), cwd=REPO, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _results(out: Path) -> dict[str, Path]:
    return {p.parent.relative_to(out / "runs").as_posix(): p for p in (out / "runs").rglob("result.json")}


def _mtimes(paths) -> dict:
    return {k: p.stat().st_mtime_ns for k, p in paths.items()}


def test_first_command_runs_plan_store_and_reports_then_skips_finished(mini_suite, tmp_path, capsys):
    out = tmp_path / "results"
    data = str(mini_suite.decathlon_root.parent)
    args = ["--suite", "mini", "--data-root", data, "--out", str(out), "--epochs", "1",
            "--domains", "svhn,dtd", "--methods", "finetune,spottune", *TINY]
    first = run_all(*args)
    assert "5 jobs: 5 run" in first.stdout
    # the end of the run: the main table as the report's CSV holds it, the reports' front page, the size
    tables = (out / "reports" / "tables").glob("mini-decathlon_*.csv")
    (csv_path,) = [p for p in tables if "_vs_" not in p.stem]
    stored = pd.read_csv(csv_path).set_index("method")
    assert csv_path.stem in first.stdout
    for method in ("finetune", "spottune"):
        label = stored.loc[method, "label"]  # the paper's row name, as the reports print it
        row = next(line for line in first.stdout.splitlines() if line.startswith(f"│ {label} "))
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert cells[-2:] == [f"{stored.loc[method, 'Mean']:.1f}", f"{stored.loc[method, 'S']:.0f}"]
    assert f"start at {out / 'reports' / 'README.md'}" in first.stdout
    assert re.search(rf"results in {re.escape(str(out))} \(\d+\.\d MB\)", first.stdout)
    # finished jobs keep no resume state; spottune keeps the final model spottune-running-ft evaluates
    assert not list(out.rglob("checkpoint.pt"))
    assert len(list((out / "runs" / "mini" / "spottune").rglob("model.pt"))) == 2
    results = _results(out)
    assert sorted(k.split("/")[1] + "/" + k.split("/")[2] for k in results) == [
        "finetune/dtd", "finetune/svhn", "spottune/dtd", "spottune/svhn"]
    pretrain = list((out / "runs" / "mini" / "pretrain").rglob("pretrain.json"))
    assert len(pretrain) == 1 and (pretrain[0].parent / "backbone.pt").is_file()
    store = pd.read_csv(out / "store.csv")
    assert len(store) == 4 and set(store["method"]) == {"finetune", "spottune"}
    assert (store["epochs"] == 1).all() and store["top1"].between(0, 100).all()
    assert (out / "policy.csv").is_file() and (out / "reports").is_dir() and any((out / "reports").iterdir())

    stamps = _mtimes(results) | {"pretrain": pretrain[0].stat().st_mtime_ns}
    assert runner.main(list(args)) == 0  # the same command again, in this process
    again = capsys.readouterr().out
    assert "5 jobs: 0 run" in again and "5 already finished" in again
    assert _mtimes(_results(out)) | {"pretrain": pretrain[0].stat().st_mtime_ns} == stamps

    # --force redoes exactly the selected jobs (the shared source backbone stays)
    forced = [a if a != "finetune,spottune" else "finetune" for a in args]
    forced[forced.index("svhn,dtd")] = "svhn"
    assert runner.main([*forced, "--force", "--no-report", "--keep-checkpoints"]) == 0
    now = _mtimes(_results(out)) | {"pretrain": pretrain[0].stat().st_mtime_ns}
    changed = {k for k in now if now[k] != stamps[k]}
    assert len(changed) == 1 and changed.pop().startswith("mini/finetune/svhn/")
    kept = [p.relative_to(out / "runs").as_posix() for p in out.rglob("checkpoint.pt")]
    assert len(kept) == 1 and kept[0].startswith("mini/finetune/svhn/")  # --keep-checkpoints

    # --report-only rebuilds the store and the reports from the run dirs, running nothing
    (out / "store.csv").unlink()
    assert runner.main(["--report-only", "--out", str(out)]) == 0
    assert len(pd.read_csv(out / "store.csv")) == 4


def _spottune_dir(out: Path) -> Path | None:
    found = list((out / "runs" / "mini" / "spottune" / "svhn").glob("s0/*/*"))
    return found[0] if found else None


def test_killed_run_resumes_from_its_checkpoint_and_redoes_nothing(mini_suite, tmp_path):
    out = tmp_path / "results"
    base = ["--suite", "mini", "--data-root", str(mini_suite.decathlon_root.parent), "--out", str(out),
            "--epochs", "3", "--domains", "svhn", "--no-report", *TINY]
    run_all(*base, "--methods", "finetune")
    before = _mtimes(_results(out)) | {
        "pretrain": next(out.rglob("pretrain.json")).stat().st_mtime_ns}

    # kill -9 the whole command as soon as spottune's first epoch checkpoint appears
    command = [sys.executable, str(REPO / "run_all.py"), *base, "--methods", "finetune,spottune"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                            cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        run_dir = _spottune_dir(out)
        if run_dir is not None and (run_dir / "checkpoint.pt").is_file():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run_dir = _spottune_dir(out)
    assert not (run_dir / "result.json").exists()

    resumed = run_all(*base, "--methods", "finetune,spottune")
    assert "3 jobs: 1 run" in resumed.stdout and "2 already finished" in resumed.stdout
    # the resumed job started after its checkpointed epochs (epochs count from 1), not from 1
    spottune_id = run_dir.relative_to(out / "runs").as_posix()
    lines = resumed.stdout.splitlines()
    starts = [int(line.split("epoch=")[1].split()[0]) for line in lines
              if line.split()[1:3] == ["epoch_start", spottune_id]]
    assert starts and starts[0] >= 2 and starts == list(range(starts[0], 4))
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    after = _mtimes(_results(out))
    assert all(after[k] == v for k, v in before.items() if k != "pretrain")  # finetune not redone
    assert not list(out.rglob("checkpoint.pt"))  # finished: the resume state is gone
    # an evaluation-only method run after its source finished still finds the final model
    assert runner.main([*base, "--methods", "spottune-running-ft"]) == 0
    assert len(list((out / "runs" / "mini" / "spottune-running-ft").rglob("result.json"))) == 1
    assert next(out.rglob("pretrain.json")).stat().st_mtime_ns == before["pretrain"]

    # the resumed job ends exactly where an uninterrupted run of the same job ends
    from decathlon import engine

    job = Job.from_dict(json.loads((run_dir / "job.json").read_text()))
    # same thread count as the subprocesses (OMP_NUM_THREADS=1): CPU reductions depend on it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fresh = engine.run(RunConfig.from_dict(job.to_dict()["config"]), tmp_path / "uninterrupted")
    finally:
        torch.set_num_threads(threads)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["top1"] == fresh["top1"]
    assert result["loss"] == pytest.approx(fresh["loss"], rel=1e-6)


def test_a_failing_job_makes_the_command_fail_after_the_others_finish(mini_suite, tmp_path, monkeypatch,
                                                                       capsys):
    from decathlon import engine

    real_run = engine.run

    def flaky(config, run_dir, **kw):
        if config.domain == "dtd":
            raise RuntimeError("simulated crash on dtd")
        return real_run(config, run_dir, **kw)

    monkeypatch.setattr(engine, "run", flaky)
    out = tmp_path / "results"
    code = runner.main(["--suite", "mini", "--data-root", str(mini_suite.decathlon_root.parent),
                        "--out", str(out), "--epochs", "1", "--domains", "svhn,dtd",
                        "--methods", "spottune-running-ft", "--no-report", *TINY])
    captured = capsys.readouterr()
    assert code == 1
    assert "simulated crash on dtd" in captured.err and "failed and skipped jobs" in captured.err
    assert "spottune-running-ft/dtd" in captured.err and "which failed" in captured.err  # skipped
    finished = sorted(k.split("/")[1] + "/" + k.split("/")[2] for k in _results(out))
    assert finished == ["spottune-running-ft/svhn", "spottune/svhn"]
    errors = list(out.rglob("error.json"))
    assert len(errors) == 1 and "/spottune/dtd/" in errors[0].as_posix()
    assert "simulated crash" in json.loads(errors[0].read_text())["traceback"]
