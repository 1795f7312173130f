"""Source pretraining: resume after ``kill -9`` (one process: bit-identical weights; two DDP processes on
the CPU with gloo: equal replicas, per-rank RNG streams), and the command line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from decathlon import pretrain
from decathlon.config import RunConfig
from decathlon.engine import CHECKPOINT, run
from decathlon.errors import CheckpointError
from decathlon.networks.checkpoint import load_checkpoint
from decathlon.networks.factory import create_backbone

REPO = Path(__file__).resolve().parent.parent


def _argv(mini_suite, out: Path, epochs: int) -> list[str]:
    return ["--data-root", str(mini_suite.decathlon_root), "--suite", "mini", "--out", str(out),
            "--epochs", str(epochs), "--width", "0.25", "--batch-size", "16", "--limit-train-images", "40",
            "--num-workers", "0", "--device", "cpu"]


def _config(argv: list[str]) -> RunConfig:
    """The RunConfig the command line builds from `argv` (so a resumed run matches its hash)."""
    return pretrain.config_from_args(pretrain.get_args_parser().parse_args(argv))


def _kill_at_first_checkpoint(argv: list[str], out: Path) -> dict:
    """Run ``python -m decathlon.pretrain argv`` and SIGKILL its process group (spawned ranks included) as
    soon as ``checkpoint.pt`` appears; return the checkpoint's position."""
    # same intra-op thread count as this process: CPU float results may depend on it
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "decathlon.pretrain", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: os.nice(5))  # slower than this poller: the kill comes in time
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not (out / CHECKPOINT).is_file():
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    stderr = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == -signal.SIGKILL, f"not killed (exit {proc.returncode}): {stderr[-2000:]}"
    assert not (out / pretrain.BACKBONE_FILE).exists()
    return load_checkpoint(out / CHECKPOINT)["extra"]["position"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model_state"]


def test_killed_pretraining_resumes_to_bit_identical_weights(mini_suite, tmp_path):
    epochs = 3
    reference = pretrain.run(_config(_argv(mini_suite, tmp_path / "ref", epochs)), tmp_path / "ref")
    assert reference["resumed_from_epoch"] == 0 and [r["epoch"] for r in reference["history"]] == [1, 2, 3]

    out = tmp_path / "killed"
    argv = _argv(mini_suite, out, epochs)
    position = _kill_at_first_checkpoint(argv, out)
    done = position["epoch"]
    assert 1 <= done < epochs and position["history"] == reference["history"][:done]

    events = []
    resumed = pretrain.run(_config(argv), out, progress=lambda event, **info: events.append((event, info)))
    starts = [info["epoch"] for event, info in events if event == "epoch_start"]
    assert starts == list(range(done + 1, epochs + 1))  # epochs count from 1; finished ones not trained again
    assert resumed["resumed_from_epoch"] == done and resumed["history"] == reference["history"]
    assert resumed["top1"] == reference["top1"]
    ref_state = _weights(tmp_path / "ref" / pretrain.BACKBONE_FILE)
    state = _weights(out / pretrain.BACKBONE_FILE)
    assert ref_state.keys() == state.keys()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)  # bit-identical, BN statistics too

    # the checkpoint belongs to its job: another seed (not part of the settings hash) is refused
    other = tmp_path / "other-seed"
    other.mkdir()
    shutil.copy(out / CHECKPOINT, other / CHECKPOINT)
    with pytest.raises(CheckpointError, match="another configuration"):
        pretrain.run(_config(argv).replace(seed=1), other)
    assert not (other / pretrain.BACKBONE_FILE).exists()


def test_killed_two_process_ddp_pretraining_resumes(mini_suite, tmp_path):
    out, states = tmp_path / "out", tmp_path / "states"
    states.mkdir()
    argv = [*_argv(mini_suite, out, 2), "--nproc", "2"]
    position = _kill_at_first_checkpoint(argv, out)
    assert position["epoch"] == 1 and position["world_size"] == 2
    rank_rng = position["rank_rng"]  # rank 0 saved every rank's own RNG state
    assert len(rank_rng) == 2 and not torch.equal(rank_rng[0]["torch"], rank_rng[1]["torch"])

    summary = pretrain.spawn(_config(argv), out, nprocs=2, states_dir=states)
    assert summary["world_size"] == 2 and 0.0 <= summary["top1"] <= 100.0
    assert summary["resumed_from_epoch"] == 1 and summary["history"][:1] == position["history"]
    assert [r["epoch"] for r in summary["history"]] == [1, 2]
    rank0 = torch.load(states / "rank0.pt", weights_only=True)
    rank1 = torch.load(states / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    params = {n for n, _ in create_backbone("resnet26", 20, width=0.25).named_parameters()}
    # both ranks loaded the optimizer and scheduler states too, else their SGD steps would differ
    assert all(torch.equal(rank0[k], rank1[k]) for k in params)  # DDP kept the replicas' weights equal
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # and rank 0's BN statistics were shared
    final = load_checkpoint(out / CHECKPOINT)["extra"]["position"]
    # each rank went on with its own augmentation stream: had both resumed rank 0's, the same work since
    # (20 images each) would have left them in equal states
    assert final["epoch"] == 2
    assert not torch.equal(final["rank_rng"][0]["torch"], final["rank_rng"][1]["torch"])
    assert sorted(p.name for p in out.glob("*.pt")) == [pretrain.BACKBONE_FILE, CHECKPOINT]  # by rank 0
    checkpoint = load_checkpoint(out / pretrain.BACKBONE_FILE)
    assert all(torch.equal(checkpoint["model_state"][k], rank0[k]) for k in rank0)
    init = create_backbone("resnet26", 20, width=0.25)
    assert any(not torch.equal(init.state_dict()[k], rank0[k]) for k in rank0 if k.endswith("weight"))
    # the checkpoint is a usable `config.pretrained`: the source domain's entry is evaluated from it
    source = _config(argv).replace(method="finetune", pretrained=str(out / pretrain.BACKBONE_FILE),
                                   eval_batch_size=100)
    result = run(source, tmp_path / "source-run")
    assert result["top1"] == summary["top1"] and result["eval_split"] == summary["eval_split"] == "val"


def test_command_line_rejects_a_target_domain(mini_suite, tmp_path, capsys):
    code = pretrain.main(["--data-root", str(mini_suite.decathlon_root), "--suite", "mini", "--domain", "dtd",
                          "--out", str(tmp_path), "--epochs", "1", "--width", "0.25"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'dtd'" in err and "source" in err
    assert not list(tmp_path.iterdir())
