"""The GPU path on a CUDA device (marker ``gpu``; skipped without CUDA, run by benchmarks/gpu_check.py).

Placement, AMP vs fp32 parity of one step, the GPU-resident decode-once cache against the CPU path, sparse
routing against dense mixing on CUDA, fused SGD against the for-each reference, routing noise drawn on the
GPU (seeded, restored on resume), bit-reproducible deterministic runs, two jobs sharing one GPU in the
local executor, and DDP pretraining (one process per GPU, at most two). Sizes are tiny: the whole file is
meant to take about a minute on one GPU.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from decathlon.config import RunConfig
from decathlon.domains import get_domain
from decathlon.engine import (
    CHECKPOINT,
    batch_to_device,
    build_backbone,
    build_optimizer,
    device_generators,
    place_model,
    run,
    seed_everything,
    train_step,
)
from decathlon.methods import get_method
from decathlon.suites import get_suite
from tests.test_engine import Killed, kill_in_epoch_two
from tests.test_executors import Recorder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

CUDA = torch.device("cuda")
CLASSES = 10


def _config(mini_suite, method: str = "finetune", **values) -> RunConfig:
    """A job of seconds on the generated suite: ResNet-26 x0.25, one epoch over 16 images, on CUDA."""
    base = dict(get_suite("mini").overrides("decathlon"))
    return RunConfig.from_dict({**base, "suite": "mini", "method": method, "domain": "aircraft", "epochs": 1,
                                "limit_train_images": 16, "batch_size": 8, "eval_batch_size": 80,
                                "num_workers": 0, "device": "cuda", "protocol": "train->val",
                                "data_root": str(mini_suite.decathlon_root), **values})


def _model(config: RunConfig, seed: int = 0):
    """(method, model on CUDA as the engine places it, optimizer), seeded weights."""
    method, spec = get_method(config.method), get_domain(config.domain, suite=config.suite)
    torch.manual_seed(seed)
    model = method.build(build_backbone(method, config, CLASSES), spec, CLASSES, config)
    place_model(model, CUDA, config)
    optimizer, _ = build_optimizer(method, model, config, spec)
    return method, model, optimizer


def _batch(px: int = 32, n: int = 8, channels_last: bool = True):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(n, 3, px, px, generator=g), torch.randint(0, CLASSES, (n,), generator=g)
    return batch_to_device((images, labels), CUDA, channels_last)


def _metrics(run_dir):
    result = json.loads((run_dir / "result.json").read_text())
    epochs = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    predictions = json.loads((run_dir / "predictions.json").read_text())["predicted"]
    return (result["top1"], result["loss"]), [(e["train_loss"], e["train_top1"]) for e in epochs], predictions


def test_engine_places_model_batches_and_outputs_on_cuda(mini_suite, tmp_path):
    config = _config(mini_suite, "spottune")
    method, model, optimizer = _model(config)
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert model.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = _batch()
    assert x.device.type == y.device.type == "cuda"
    method.train_mode(model, config)
    generator = device_generators({"routing": torch.Generator().manual_seed(1)}, CUDA, config)["routing"]
    loss, output = train_step(method, model, model, x, y, optimizer, config, device=CUDA, generator=generator,
                              scaler=torch.amp.GradScaler("cuda"))
    assert loss.device.type == output.logits.device.type == output.policy.device.type == "cuda"
    assert torch.isfinite(loss)
    result = run(config, tmp_path)  # the whole job on the GPU
    assert result["epochs"] == 1 and 0.0 <= result["top1"] <= 100.0
    checkpoint = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert {v.device.type for v in checkpoint["model_state"].values()} == {"cpu"}


def test_amp_step_matches_fp32_within_tolerance(mini_suite):
    """Logits, loss and gradients of one step under float16 autocast against float32, same weights."""
    outputs = {}
    for amp in (False, True):
        config = _config(mini_suite, "finetune", amp=amp)
        method, model, _ = _model(config)
        method.train_mode(model, config)
        x, y = _batch()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        (loss * 1024).backward()  # a fixed loss scale keeps float16 gradients from underflowing
        grads = {n: p.grad.float() / 1024 for n, p in model.named_parameters() if p.grad is not None}
        outputs[amp] = (logits.float(), float(loss), grads)
    (logits32, loss32, grads32), (logits16, loss16, grads16) = outputs[False], outputs[True]
    assert (logits16 - logits32).abs().max() <= 1e-2 * logits32.abs().max()
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    assert grads16.keys() == grads32.keys()
    for name, g32 in grads32.items():
        assert (grads16[name] - g32).norm() <= 0.05 * g32.norm() + 1e-6, name


def test_fused_sgd_on_cuda_matches_the_for_each_step(mini_suite):
    updated = {}
    for fused in (True, False):
        config = _config(mini_suite, "spottune", fused_sgd=fused, amp=False)
        method, model, optimizer = _model(config)
        assert bool(optimizer.defaults["fused"]) == fused
        method.train_mode(model, config)
        x, y = _batch()
        for _ in range(2):  # the second step uses the momentum buffers
            train_step(method, model, model, x, y, optimizer, config, device=CUDA,
                       generator=torch.Generator().manual_seed(1))
        updated[fused] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, value in updated[False].items():
        torch.testing.assert_close(updated[True][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_resident_cache_batches_equal_the_cpu_path(mini_suite, tmp_path):
    from decathlon import cache
    from decathlon.data import build_dataset, load_mean_std
    from decathlon.presets import get_preset

    spec = get_domain("aircraft", suite="mini")
    dataset = build_dataset(spec, mini_suite.decathlon_root, "train")
    mean, std = load_mean_std(mini_suite.decathlon_root, spec)
    geometry = get_preset("adapters").geometry(spec, True)  # random crops and flips
    loaders = {device: cache.make_train_loader(dataset, geometry, mean, std, batch_size=16, drop_last=False,
                                               generator=torch.Generator().manual_seed(0), device=device,
                                               channels_last=True, cache_dir=tmp_path, progress=False)
               for device in ("cpu", "cuda")}
    assert loaders["cuda"]._resident is not None and loaders["cuda"]._resident.device.type == "cuda"
    for _ in range(2):  # two epochs: new permutation and crops each, the same on both
        batches = 0
        for (xc, yc, ic), (xg, yg, ig) in zip(loaders["cpu"], loaders["cuda"], strict=True):
            assert xg.device.type == yg.device.type == "cuda"
            assert xg.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-6)
            assert torch.equal(yg.cpu(), yc) and torch.equal(ig, ic)
            batches += 1
        assert batches == len(loaders["cpu"]) > 1


def test_sparse_routing_on_cuda_equals_dense_mixing(mini_suite, monkeypatch):
    # full float32 convolutions: TF32 (cuDNN's default on Ampere and later) rounds inputs to 10 mantissa bits
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    config = _config(mini_suite, "spottune", amp=False)
    _, model, _ = _model(config)
    model.eval()
    x, _ = _batch(px=36, n=16)
    policy = (torch.rand(16, model.num_blocks, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    with torch.inference_mode():
        dense, _ = model(x, policy.to(CUDA), sparse=False)
        sparse, _ = model(x, policy.to(CUDA), sparse=True)
        model.cpu()
        on_cpu, _ = model(x.cpu(), policy, sparse=True)
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sparse.cpu(), on_cpu, rtol=1e-3, atol=1e-3)


def test_routing_noise_is_drawn_on_the_gpu_from_a_seeded_generator(mini_suite):
    from baselines.stochastic import half_of_blocks, random_policy
    from spottune.policy import gumbel_noise

    config = _config(mini_suite, "spottune")
    placed = device_generators(seed_everything(config), CUDA, config)
    again = device_generators(seed_everything(config), CUDA, config)
    assert placed["routing"].device.type == "cuda" and placed["data"].device.type == "cpu"
    like = torch.zeros(8, 12, 2, device=CUDA)
    noise = gumbel_noise(like, placed["routing"])
    assert noise.device.type == "cuda" and torch.equal(noise, gumbel_noise(like, again["routing"]))
    assert not torch.equal(noise, gumbel_noise(like, placed["routing"]))  # the stream moves on
    assert half_of_blocks(8, 12, per_image=True, generator=placed["routing"]).device.type == "cuda"
    assert random_policy(8, 12, always=3, generator=placed["routing"]).device.type == "cuda"
    off = device_generators(seed_everything(config), CUDA, config.replace(device_rng=False))
    assert off["routing"].device.type == "cpu"


def test_deterministic_gpu_runs_are_bit_identical_and_resume_exactly(mini_suite, tmp_path):
    """SpotTune (Gumbel noise from the CUDA routing generator) with deterministic algorithms: the same seed
    gives the same metrics, and a run killed in its second epoch resumes to exactly them."""
    config = _config(mini_suite, "spottune", epochs=2, limit_train_images=24, log_every=1, deterministic=True)
    run(config, tmp_path / "a")
    run(config, tmp_path / "b")
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    state = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["extra"]["rng"]["generators"]
    assert state["routing"].numel() == torch.Generator(CUDA).get_state().numel()  # a CUDA stream was saved

    with pytest.raises(Killed):
        run(config, tmp_path / "c", progress=kill_in_epoch_two)
    run(config, tmp_path / "c")
    assert _metrics(tmp_path / "c") == _metrics(tmp_path / "a")


def test_two_jobs_share_one_gpu_in_the_local_executor(mini_suite, tmp_path):
    from decathlon.executors import LocalExecutor, visible_gpus, worker_slots
    from decathlon.jobs import Job
    from decathlon.progress import DONE

    jobs = [Job(_config(mini_suite, seed=seed)) for seed in (0, 1)]
    slots = worker_slots(gpus=visible_gpus()[:1], jobs_per_gpu=2)
    assert len(slots) == 2 and slots[0] == slots[1]  # both slots on the same GPU
    tracker = Recorder()
    outcomes = LocalExecutor(slots=slots).execute(jobs, tmp_path, tracker)
    assert {o.status for o in outcomes.values()} == {DONE}, {k: o.message for k, o in outcomes.items()}
    assert [call[0] for call in tracker.calls[:2]] == ["started", "started"]  # both ran at the same time
    for job in jobs:  # device="cuda": a worker without the GPU would have failed its job
        assert job.is_finished(tmp_path)


def test_ddp_pretraining_one_epoch_on_cuda(mini_suite, tmp_path):
    from decathlon import pretrain

    nprocs = min(2, torch.cuda.device_count())  # NCCL needs one GPU per process
    config = _config(mini_suite, suite="mini", domain="imagenet12", limit_train_images=32)
    summary = pretrain.spawn(config, tmp_path, nprocs=nprocs)
    assert summary["world_size"] == nprocs and summary["epochs"] == 1
    assert 0.0 <= summary["top1"] <= 100.0 and len(summary["history"]) == 1
    assert (tmp_path / pretrain.BACKBONE_FILE).is_file() and (tmp_path / CHECKPOINT).is_file()
