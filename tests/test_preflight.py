"""Preflight: every problem that would fail jobs is reported before the first job starts, one line each,
exit code 2, nothing written (``run_all.py``, also in ``--dry-run``)."""

from __future__ import annotations

import pytest
import torch

from decathlon import runner
from decathlon.config import RunConfig
from decathlon.engine import build_backbone
from decathlon.errors import ConfigError
from decathlon.jobs import Job
from decathlon.methods import get_method
from decathlon.networks.checkpoint import save_checkpoint
from decathlon.networks.factory import create_backbone
from decathlon.preflight import check_plan


@pytest.fixture(scope="module")
def resnet26_file(tmp_path_factory):
    """A ResNet-26 (width 1) with the 1000-class classifier of imagenet12, in the harness format."""
    path = tmp_path_factory.mktemp("weights") / "resnet26.pt"
    save_checkpoint(path, model_state=create_backbone("resnet26", 1000).state_dict(), config={})
    return path


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A torchvision ResNet-50 state_dict (random values, the real key names and shapes)."""
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_empty_data_root_exits_2_with_one_line_per_problem_and_writes_nothing(tmp_path, resnet26_file,
                                                                                   capsys, dry_run):
    empty, out = tmp_path / "empty", tmp_path / "results"
    empty.mkdir()
    argv = ["--suite", "decathlon", "--data-root", str(empty), "--pretrained", str(resnet26_file),
            "--out", str(out)] + (["--dry-run"] if dry_run else [])
    assert runner.main(argv) == 2
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 1 and all(line.startswith("run_all.py: error: ") for line in lines)
    assert str(empty) in lines[0] and "annotations/" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("junk", [b"junk\n", bytes(range(256)) * 4], ids=["text", "binary"])
def test_a_weights_file_of_junk_is_one_line_not_a_traceback(tmp_path, capsys, junk):
    # torch's readers fail on junk bytes with any error (KeyError, IndexError, ...): one line per problem
    weights, empty, out = tmp_path / "junk.pt", tmp_path / "empty", tmp_path / "results"
    weights.write_bytes(junk)
    empty.mkdir()
    assert runner.main(["--suite", "decathlon", "--data-root", str(empty), "--pretrained", str(weights),
                        "--out", str(out)]) == 2
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 2 and any(str(weights) in line and "cannot be read" in line for line in lines)
    assert not out.exists()


def test_weights_with_another_classifier_are_refused_before_any_job(mini_suite, tmp_path, capsys):
    wrong = tmp_path / "resnet26-10-classes.pt"
    save_checkpoint(wrong, model_state=create_backbone("resnet26", 10).state_dict(), config={})
    out = tmp_path / "results"
    argv = ["--suite", "decathlon", "--data-root", str(mini_suite.decathlon_root), "--pretrained", str(wrong),
            "--out", str(out), "--methods", "finetune", "--domains", "imagenet12,svhn"]
    assert runner.main(argv) == 2
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 1 and "classifier has 10 classes" in lines[0] and str(wrong) in lines[0]
    assert not out.exists()


def test_every_missing_annotation_file_is_one_line(mini_suite, tmp_path):
    import shutil

    root = tmp_path / "decathlon-1.0"
    shutil.copytree(mini_suite.decathlon_root, root)
    (root / "annotations" / "svhn_train.json").unlink()
    (root / "annotations" / "dtd_val.json").unlink()
    jobs = [Job(RunConfig(suite="mini", method="finetune", domain=d, data_root=str(root),
                          protocol="train->val")) for d in ("svhn", "dtd", "aircraft")]
    problems = check_plan(jobs)
    assert len(problems) == 2
    assert "svhn_train.json" in problems[0] and "dtd_val.json" in problems[1]


# ------------------------------------------------------------- a pretrained method must get its weights


def test_finetune_resnet101_refuses_random_weights_when_only_resnet50_weights_are_given(resnet50_file):
    config = RunConfig(suite="extra", method="finetune-resnet101", domain="flowers", backbone="resnet50",
                       pretrained=str(resnet50_file))
    with pytest.raises(ConfigError, match="finetune-resnet101 would train from random.*--pretrained-deep"):
        build_backbone(get_method("finetune-resnet101"), config, 102)


def test_the_run_refuses_before_any_job_naming_the_flag(mini_suite, resnet50_file, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--suite", "extra", "--extra-root", str(mini_suite.extra_root), "--pretrained",
            str(resnet50_file), "--methods", "finetune,finetune-resnet101", "--domains", "flowers",
            "--out", str(out), "--dry-run"]
    assert runner.main(argv) == 2
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 1 and "finetune-resnet101" in lines[0] and "--pretrained-deep" in lines[0]
    assert not out.exists()


def test_pretrained_deep_flag_sets_the_config_field(mini_suite, resnet50_file, tmp_path):
    args = runner.get_args_parser().parse_args(
        ["--suite", "extra", "--extra-root", str(mini_suite.extra_root), "--pretrained", str(resnet50_file),
         "--pretrained-deep", str(resnet50_file), "--methods", "finetune-resnet101", "--domains", "flowers"])
    jobs, _ = runner.make_plan(args, "extra", tmp_path)
    assert [j.config.pretrained_deep for j in jobs] == [str(resnet50_file.resolve())]
    with pytest.raises(ConfigError, match="--pretrained-deep"):
        runner.make_plan(runner.get_args_parser().parse_args(
            ["--suite", "decathlon", "--data-root", str(mini_suite.decathlon_root), "--pretrained",
             str(resnet50_file), "--pretrained-deep", str(resnet50_file)]), "decathlon", tmp_path)


def test_a_wrapped_data_parallel_resnet50_file_loads_and_says_what_was_done(resnet50_file, tmp_path):
    state = torch.load(resnet50_file, weights_only=True)
    wrapped = tmp_path / "checkpoint.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}, wrapped)
    with pytest.warns(UserWarning, match="taking its 'state_dict' entry and removing the 'module.' prefix"):
        backbone = create_backbone("resnet50", 10, weights=wrapped)
    assert torch.equal(backbone.stem.conv1.weight, state["conv1.weight"])
    assert backbone.weights_source == str(wrapped)
