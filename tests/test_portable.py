"""A results folder is portable: moved or copied with its data elsewhere, it is re-reported from its run
directories alone and a rerun (given the data's new place) skips every finished job."""

from __future__ import annotations

import json
import shutil

import pytest

from decathlon import runner
from decathlon.config import RunConfig
from decathlon.jobs import weights_digest
from tests.test_run_all import TINY


def _submission_files(out):
    return sorted(p.name for p in (out / "reports" / "submissions").rglob("*") if p.is_file())


def test_a_moved_results_folder_is_reported_and_resumed(mini_suite, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "results"
    shutil.copytree(mini_suite.decathlon_root.parent, data)
    args = ["--suite", "mini", "--epochs", "1", "--domains", "svhn", "--methods", "finetune", *TINY]
    assert runner.main([*args, "--data-root", str(data), "--out", str(out)]) == 0
    assert "2 jobs: 2 run" in capsys.readouterr().out
    assert {"results.json", "score.json"} <= set(_submission_files(out))

    moved, moved_data = tmp_path / "elsewhere" / "results", tmp_path / "elsewhere" / "data"
    moved.parent.mkdir()
    out.rename(moved)
    data.rename(moved_data)

    # reports from the store and run directories alone; the score needs the labelled test files: said
    with pytest.warns(UserWarning, match=r"no local score written.*not reachable.*--data-root"):
        assert runner.main(["--report-only", "--out", str(moved)]) == 0
    assert "results.json" in _submission_files(moved) and "score.json" not in _submission_files(moved)
    # ... and given the data's new place, the score is back
    assert runner.main(["--report-only", "--out", str(moved), "--data-root", str(moved_data)]) == 0
    assert "score.json" in _submission_files(moved)
    capsys.readouterr()

    # a rerun finds every job finished
    assert runner.main([*args, "--data-root", str(moved_data), "--out", str(moved), "--no-report"]) == 0
    assert "2 jobs: 0 run" in capsys.readouterr().out


def test_the_job_hash_counts_the_weights_content_not_their_path(tmp_path):
    first, copy, other = tmp_path / "a.pt", tmp_path / "b" / "a.pt", tmp_path / "c.pt"
    first.write_bytes(b"weights")
    copy.parent.mkdir()
    copy.write_bytes(b"weights")
    other.write_bytes(b"other weights")

    def config(path, root):
        return RunConfig(pretrained=str(path), data_root=root, weights_digest=weights_digest(str(path), None))

    assert config(first, "/data").hash() == config(copy, "/elsewhere/data").hash()
    assert config(first, "/data").hash() != config(other, "/data").hash()
    recorded = json.loads(json.dumps(config(first, "/data").to_dict()))  # as a job.json holds it
    assert RunConfig.from_dict(recorded).hash() == config(copy, "/x").hash()
