"""What the command line tells its user: --help, the listings, one-line errors, the estimates, the log
lines and the end-of-run table (read back from the reports' CSV files). Fast: nothing here trains."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from decathlon import runner
from decathlon.config import RunConfig
from decathlon.data import available_cpus, loader_workers
from decathlon.errors import UnknownNameError
from decathlon.jobs import Job
from decathlon.progress import CACHED, DONE, LineProgress, Tracker, make_progress
from decathlon.summary import estimate_plan, estimate_table, job_images, main_tables, read_main_table

REPO = Path(__file__).resolve().parent.parent


def test_help_has_a_description_three_examples_and_help_on_every_option():
    parser = runner.get_args_parser()
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    examples = text.split("examples:", 1)[1]
    assert len(re.findall(r"^  python run_all\.py", examples, flags=re.M)) == 3
    assert "Re-running the same command skips finished jobs" in text  # the description, for users
    assert "(default: results)" in text  # defaults that say something are still shown
    undocumented = [a.option_strings for a in parser._actions if not a.help]
    assert undocumented == []


def test_help_does_not_import_torch():
    code = ("import sys; from decathlon import runner; runner.get_args_parser().format_help(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_list_suites_and_domains(capsys):
    assert runner.main(["--list-suites"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in ("decathlon", "extra", "all", "mini"))
    assert runner.main(["--list-domains"]) == 0  # the mini suite by default
    printed = capsys.readouterr().out
    assert "vgg-flowers" in printed and "imagenet12" in printed and "source" in printed
    assert re.search(r"aircraft .* 10 .* 160 .* 80 .* 80", printed)  # classes, train, val, test
    assert runner.main(["--list-domains", "--suite", "extra"]) == 0
    assert "stanford-cars" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    (["--suite", "nope"], "argument --suite: invalid choice: 'nope'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_usage_errors_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err and "usage:" not in err


def test_setting_errors_name_the_type_and_yaml_errors_are_one_line(tmp_path, capsys):
    assert runner.main(["--set", "epochs=1.5", "--dry-run", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config key 'epochs': 1.5 is not a valid int" in err and "<class" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\n  lr: [0.1\n")
    assert runner.main(["--config", str(bad), "--dry-run", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "line 2, column" in err


def test_an_out_that_is_a_file_or_holds_no_runs_is_one_line(tmp_path, capsys):
    afile = tmp_path / "results.bin"
    afile.write_bytes(b"x")
    assert runner.main(["--dry-run", "--out", str(afile)]) == 2
    assert f"--out {afile} is a file" in capsys.readouterr().err
    missing = tmp_path / "mistyped"
    assert runner.main(["--report-only", "--out", str(missing)]) == 2
    assert "no runs under" in capsys.readouterr().err and not missing.exists()  # nothing created


def test_unknown_names_are_pluralised_as_english():
    assert str(UnknownNameError("analysis", "x", ["a"])) == "unknown analysis 'x'; known analyses: a"
    assert str(UnknownNameError("domain of suite 'mini'", "x", ["a", "b"])) == (
        "unknown domain 'x' of suite 'mini'; known domains of suite 'mini': a, b")
    assert "known geometries: a" in str(UnknownNameError("geometry", "x", ["a"]))


def test_console_scripts_exist_do_what_their_commands_do_and_are_documented(capsys, monkeypatch):
    import importlib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    readme = (REPO / "README.md").read_text()
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target
        assert f"`{name}`" in readme, f"{name} is not documented in README.md"
    assert scripts["spottune-decathlon"] == "decathlon.runner:console_main"
    monkeypatch.setattr(sys, "argv", ["spottune-decathlon", "--suite", "nope"])
    with pytest.raises(SystemExit):
        runner.console_main()
    assert capsys.readouterr().err.startswith("spottune-decathlon: error: argument --suite")


def test_loader_workers_are_capped_at_the_usable_cpus(monkeypatch, mini_suite):
    assert loader_workers(0) == 0 and loader_workers(10**6) == available_cpus() >= 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert available_cpus() == 2 and loader_workers(4) == 2 and loader_workers(1) == 1
    import torch

    from decathlon.domains import MINI_DOMAINS
    from decathlon.engine import build_data

    config = RunConfig.from_dict({"suite": "mini", "method": "finetune", "domain": "dtd", "num_workers": 4,
                                  "data_root": str(mini_suite.decathlon_root), "cache": False})
    spec = next(s for s in MINI_DOMAINS if s.name == "dtd")
    data = build_data(config, spec, torch.device("cpu"), torch.Generator())
    assert data.train_loader.num_workers == data.eval_loader.num_workers == 2


# ----------------------------------------------------------------------------------------- estimates

def _job(method: str, domain: str = "dtd", **values) -> Job:
    return Job(RunConfig.from_dict({"suite": "mini", "method": method, "domain": domain, "epochs": 2,
                                    **values}))


def _finish(job: Job, out: Path, wall_time_s: float) -> None:
    run_dir = job.run_dir(out)
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(json.dumps(job.to_dict()))
    (run_dir / "result.json").write_text(json.dumps({"wall_time_s": wall_time_s}))


def test_job_images_count_epochs_training_and_evaluation_images():
    # mini dtd: 160 train + 80 val images (trainval), 80 test
    assert job_images(_job("finetune")) == 2 * 240 + 80
    assert job_images(_job("finetune", protocol="train->val", limit_train_images=100)) == 2 * 100 + 80
    assert job_images(_job("spottune-running-ft")) == 80  # evaluation only
    assert job_images(_job("finetune", domain="imagenet12")) == 200  # the source: evaluation only


def test_dry_run_estimates_from_earlier_runs_and_says_unknown_without_one(tmp_path):
    done, todo, other = _job("finetune"), _job("finetune", domain="aircraft"), _job("spottune")
    _finish(done, tmp_path, wall_time_s=5.6)  # 560 images in 5.6 s: 100 images/s
    estimates = {e.method: e for e in estimate_plan([done, todo, other], tmp_path)}
    assert estimates["finetune"].jobs == 1 and estimates["finetune"].rate == pytest.approx(100.0)
    assert estimates["finetune"].seconds == pytest.approx(job_images(todo) / 100.0)
    assert estimates["spottune"].rate is None and estimates["spottune"].seconds is None
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(estimate_table(list(estimates.values())))
    printed = console.file.getvalue()
    assert "unknown" in printed and "0:00:06 + 1 job unknown" in printed


def test_eta_follows_the_measured_throughput_of_each_method():
    a, b, c = _job("finetune"), _job("finetune", domain="aircraft"), _job("spottune")
    tracker = Tracker(workers=1, clock=lambda: 0.0)
    tracker.start([a, b, c])
    assert tracker.eta() is None  # nothing measured yet: unknown, not a guess
    tracker.job_started(a.job_id)
    tracker.job_event(a.job_id, "epoch_end", {"epoch": 1, "images_per_s": 100.0, "seconds": 2.4})
    # finetune at 100 images/s; spottune not measured yet: the mean of the measured methods
    left = (560 - 240) / 100 + 560 / 100 + job_images(c) / 100
    assert tracker.eta() == pytest.approx(left)
    tracker.job_finished(a.job_id, DONE)
    assert tracker.eta() == pytest.approx(560 / 100 + job_images(c) / 100)


# ------------------------------------------------------------------------------------------- logs

def test_cached_jobs_are_one_line_and_finished_jobs_say_their_accuracy(tmp_path):
    stream = io.StringIO()
    log = LineProgress(stream)
    log.start(["a", "b", "c", "d"])
    for job_id in ("a", "b", "c"):
        log.job_finished(job_id, CACHED)
    log.job_started("d")
    log.job_finished("d", DONE, "top-1 71.25 % on test")
    log.close()
    lines = stream.getvalue().splitlines()
    assert sum("finished before" in line for line in lines) == 1
    assert "3 jobs finished before: skipped" in lines[1] and "start d" in lines[2]
    assert "done d: top-1 71.25 % on test" in lines[3]
    from decathlon.executors import accuracy_text

    (tmp_path / "result.json").write_text(json.dumps({"top1": 71.25, "eval_split": "test"}))
    assert accuracy_text(tmp_path / "result.json") == "top-1 71.25 % on test"
    (tmp_path / "result.json").write_text(json.dumps({"top1": None, "eval_split": "test"}))
    assert accuracy_text(tmp_path / "result.json") == "no accuracy (test has no labels)"


def test_terminal_log_lines_have_no_source_file_suffix():
    stream = io.StringIO()
    display = make_progress(stream=stream, terminal=True)
    display.console.width = 200
    display.start(["a"])
    display.job_started("a")
    display.job_event("a", "epoch_end", {"epoch": 1, "train_loss": 1.5})
    display.job_finished("a", DONE, "top-1 50.00 % on test")
    display.close()
    printed = stream.getvalue()
    assert "top-1 50.00 % on test" in printed and not re.search(r"\w+\.py:\d+", printed)


# ------------------------------------------------------------------------------------ end-of-run table

def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_main_tables_read_the_report_csv_columns(tmp_path):
    tables = tmp_path / "reports" / "tables"
    tables.mkdir(parents=True)
    # today's layout: method, then per column its value and std
    _write_csv(tables / "g.csv", [
        ["method", "Airc.", "Airc. std", "DTD", "DTD std", "Mean", "Mean std", "S", "S std", "#par",
         "#par std"],
        ["finetune", "61.25", "", "40.0", "", "50.625", "", "1000.0", "", "2.0", ""],
        ["spottune", "", "", "45.5", "", "45.5", "", "612.4", "", "3.1", ""]])
    # a later layout with a label column and interval columns reads the same
    _write_csv(tables / "h.csv", [
        ["label", "method", "Airc.", "Airc. ci low", "Airc. ci high", "Mean", "S"],
        ["Fine-tuning", "finetune", "61.25", "50.0", "70.0", "61.25", "500.0"]])
    _write_csv(tables / "g_vs_published.csv", [["method", "Mean", "S"], ["x", "1", "2"]])
    (tables / "not-a-table.csv").write_text("a,b\n1,2\n")
    assert read_main_table(tables / "g.csv") == (["method", "Airc.", "DTD", "Mean", "S"], [
        ["finetune", "61.25", "40.0", "50.625", "1000.0"], ["spottune", "", "45.5", "45.5", "612.4"]])
    assert read_main_table(tables / "h.csv") == (["label", "Airc.", "Mean", "S"],
                                                 [["Fine-tuning", "61.25", "61.25", "500.0"]])
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    found = main_tables(tmp_path / "reports")
    assert [t.title for t in found] == ["g", "h"]
    for table in found:
        console.print(table)
    printed = console.file.getvalue()
    assert re.search(r"finetune\s+│\s+61\.2\s+│\s+40\.0\s+│\s+50\.6\s+│\s+1000", printed)
    assert re.search(r"spottune\s+│\s+–\s+│\s+45\.5", printed)
