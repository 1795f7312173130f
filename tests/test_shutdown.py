"""A failing job with DataLoader worker processes ends its workers and the command exits (issue: the
command never exited, and ``--executor local`` never reported the failure). Nothing is killed here: each
command runs in a subprocess with a generous timeout as a guard, and must exit by itself."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from decathlon.executors import error_line
from tests.test_run_all import REPO, TINY, _env

GUARD_S = 240  # far above the ~10 s these commands take; only reached if the command hangs


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[:300])


@pytest.fixture
def truncated_suite(mini_suite, tmp_path):
    """A copy of the generated suite (its marker included, so it is not generated again) whose svhn
    training JPEGs are all truncated."""
    shutil.copytree(mini_suite.decathlon_root.parent, tmp_path / "data")
    for image in (tmp_path / "data" / "decathlon-1.0" / "data" / "svhn" / "train").glob("*.jpg"):
        _truncate(image)
    return tmp_path / "data"


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_a_job_failing_inside_loader_workers_exits_with_one_line(truncated_suite, tmp_path, executor):
    command = [sys.executable, str(REPO / "run_all.py"), "--suite", "mini", "--data-root",
               str(truncated_suite), "--out", str(tmp_path / "results"), "--epochs", "1", "--domains", "svhn",
               "--methods", "finetune", "--no-report", "--executor", executor,
               "--set", "cache=false", "--set", "num_workers=2", *TINY]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=GUARD_S)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"--executor {executor}: the command did not exit within {GUARD_S} s") from e
    assert proc.returncode == 1, proc.stderr
    assert "2 jobs: 1 run" in proc.stdout and "1 failed" in proc.stdout
    reason = [line for line in proc.stdout.splitlines() if line.split()[1:2] == ["failed"]]
    assert len(reason) == 1 and "DataError: cannot read image" in reason[0] and "/svhn/train/" in reason[0]
    assert "Traceback" not in proc.stdout + proc.stderr  # the worker's traceback stays in error.json
    assert "DataLoader worker" not in proc.stdout + proc.stderr


def test_error_line_gives_the_worker_error_of_a_reraised_loader_error():
    message = ("Caught DataError in DataLoader worker process 0.\n"
               "Original Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\n    load()\n'
               "decathlon.errors.DataError: cannot read image a.jpg: broken;\n"
               "expected a readable image file\n")
    assert error_line(RuntimeError(message)) == ("DataError: cannot read image a.jpg: broken; expected a "
                                                 "readable image file")
    assert error_line(ValueError("two\nlines")) == "ValueError: two lines"
