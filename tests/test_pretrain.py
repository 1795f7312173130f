"""Source pretraining: a 2-process DDP run on the CPU (gloo), and the command line."""

from __future__ import annotations

import torch

from decathlon import pretrain
from decathlon.config import RunConfig
from decathlon.engine import run
from spottune.backbones import create_backbone
from spottune.checkpoint import load_checkpoint


def _config(mini_suite, **kw) -> RunConfig:
    values = {"suite": "mini", "method": "pretrain", "domain": "imagenet12", "protocol": "train->val",
              "data_root": str(mini_suite.decathlon_root), "width": 0.25, "epochs": 1, "batch_size": 16,
              "eval_batch_size": 100, "num_workers": 0, "limit_train_images": 40, "device": "cpu"}
    return RunConfig.from_dict({**values, **kw})


def test_two_process_ddp_pretraining(mini_suite, tmp_path):
    out, states = tmp_path / "out", tmp_path / "states"
    states.mkdir()
    summary = pretrain.spawn(_config(mini_suite), out, nprocs=2, states_dir=states)
    assert summary["world_size"] == 2 and 0.0 <= summary["top1"] <= 100.0
    rank0 = torch.load(states / "rank0.pt", weights_only=True)
    rank1 = torch.load(states / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    params = {n for n, _ in create_backbone("resnet26", 20, width=0.25).named_parameters()}
    assert all(torch.equal(rank0[k], rank1[k]) for k in params)  # DDP kept the replicas' weights equal
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # and rank 0's BN statistics were shared
    assert sorted(p.name for p in out.glob("*.pt")) == [pretrain.BACKBONE_FILE]  # written once, by rank 0
    checkpoint = load_checkpoint(out / pretrain.BACKBONE_FILE)
    assert all(torch.equal(checkpoint["model_state"][k], rank0[k]) for k in rank0)
    init = create_backbone("resnet26", 20, width=0.25)
    assert any(not torch.equal(init.state_dict()[k], rank0[k]) for k in rank0 if k.endswith("weight"))
    # the checkpoint is a usable `config.pretrained`: the source domain's entry is evaluated from it
    source = _config(mini_suite, method="finetune", pretrained=str(out / pretrain.BACKBONE_FILE))
    result = run(source, tmp_path / "source-run")
    assert result["top1"] == summary["top1"] and result["eval_split"] == summary["eval_split"] == "val"


def test_command_line_rejects_a_target_domain(mini_suite, tmp_path, capsys):
    code = pretrain.main(["--data-root", str(mini_suite.decathlon_root), "--suite", "mini", "--domain", "dtd",
                          "--out", str(tmp_path), "--epochs", "1", "--width", "0.25"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'dtd'" in err and "source" in err
    assert not list(tmp_path.iterdir())
