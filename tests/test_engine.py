"""The engine on the generated suite: run directories for every method, determinism, kill-and-resume,
schedules, balanced subsets, evaluation-only jobs (source domain, SpotTune running-ft)."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections import Counter

import pytest
import torch

from decathlon.config import RunConfig
from decathlon.data import build_dataset
from decathlon.domains import get_domain
from decathlon.engine import (
    CHECKPOINT,
    FINAL_MODEL,
    STREAMS,
    balanced_subset,
    build_data,
    derive_seed,
    is_reused,
    job_seed,
    prune_run_dir,
    run,
)
from decathlon.errors import CheckpointError, ConfigError, HarnessError
from decathlon.flops import gflops_per_image
from decathlon.methods import all_methods, get_method
from decathlon.networks.checkpoint import save_checkpoint
from decathlon.networks.factory import create_backbone
from decathlon.schedules import build_scheduler, lr_factor
from spottune.policy import decathlon_policy_net

RESULT_KEYS = {"suite", "method", "domain", "seed", "protocol", "preset", "schedule", "eval_split",
               "config_hash", "top1", "loss", "params_total", "params_trainable", "params_stored", "par",
               "wall_time_s", "images_per_s", "epochs", "code_version", "gflops_per_image"}


def _config(mini_suite, method: str, **kw) -> RunConfig:
    """Tiny CPU settings: width 0.25, 1 epoch over a balanced subset, small batches."""
    spec = all_methods()[method]
    extra = "decathlon" not in spec.settings
    values = {"suite": "mini", "method": method, "domain": "cubs" if extra else "aircraft",
              "data_root": str(mini_suite.extra_root if extra else mini_suite.decathlon_root),
              "width": 0.25, "epochs": 1, "batch_size": 8, "eval_batch_size": 80, "num_workers": 0,
              "limit_train_images": 16, "device": "cpu", "protocol": "train->val"}
    return RunConfig.from_dict({**values, **kw})


def _metrics(run_dir):
    result = json.loads((run_dir / "result.json").read_text())
    epochs = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    predictions = json.loads((run_dir / "predictions.json").read_text())
    return ((result["top1"], result["loss"]), [(e["train_loss"], e["train_top1"], e["lr"]) for e in epochs],
            predictions["predicted"])


@pytest.mark.parametrize("name", [n for n, m in all_methods().items() if m.trains])
def test_run_directory_for_every_method(name, mini_suite, tmp_path):
    config = _config(mini_suite, name)
    result = run(config, tmp_path)
    assert set(result) >= RESULT_KEYS
    assert result["method"] == name and result["eval_split"] == "val" and result["protocol"] == "train->val"
    assert 0.0 <= result["top1"] <= 100.0 and math.isfinite(result["loss"])
    assert 0 < result["params_trainable"] <= result["params_total"] and result["par"] > 0.9
    assert isinstance(result["gflops_per_image"], float) and result["gflops_per_image"] > 0
    assert json.loads((tmp_path / "result.json").read_text()) == result
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["method"] == name and saved["code_version"] == result["code_version"]
    assert len((tmp_path / "epochs.jsonl").read_text().splitlines()) == 1
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    val = build_dataset(config.domain, config.data_root, "val", suite="mini")
    assert predictions["image_ids"] == list(val.image_ids) and predictions["labels"] == list(val.labels)
    assert len(predictions["predicted"]) == len(val)
    checkpoint = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert checkpoint["extra"]["position"]["epoch"] == 1
    has_policy = (tmp_path / "policy.json").is_file()
    # routing methods record their test-time routing (stochastic fine-tuning's default "mean" has none)
    assert has_policy == (all_methods()[name].routing and name != "stochastic-finetune")
    if has_policy:
        policy = json.loads((tmp_path / "policy.json").read_text())
        assert len(policy["block_fraction"]) == 12 and len(policy["histogram"]) == 13
        assert sum(policy["histogram"]) == pytest.approx(1.0)
        assert set(policy["per_class"]) == {str(c) for c in range(10)}
        assert policy["classes"] == list(val.classes) and len(policy["classes"]) == 10  # names, by index
        blocks = policy["image_blocks"]  # per image, in predictions.json order
        assert len(blocks) == len(val) and {len(b) for b in blocks} == {12}
        assert set("".join(blocks)) <= {"0", "1"}
        per_block = [sum(b[k] == "1" for b in blocks) / len(blocks) for k in range(12)]
        assert per_block == pytest.approx(policy["block_fraction"])


def test_trainval_test_protocol_evaluates_on_test(mini_suite, tmp_path):
    result = run(_config(mini_suite, "finetune", protocol="trainval->test"), tmp_path)
    assert result["eval_split"] == "test"
    ids = json.loads((tmp_path / "predictions.json").read_text())["image_ids"]
    # Decathlon ids: d * 10^7 + 200001 + position over train, val, test (aircraft d = 1; 160 + 80 before test)
    assert ids[0] == 1 * 10**7 + 200001 + 240 and len(ids) == 80


def test_unlabelled_test_split_has_no_accuracy(mini_suite, tmp_path):
    # the challenge's *_test_stripped.json only (no labelled <domain>_test.json): no accuracy (null, not
    # 0 %), but the predictions a submission needs are still written
    root = tmp_path / "decathlon-1.0"
    shutil.copytree(mini_suite.decathlon_root, root)
    (root / "annotations" / "aircraft_test.json").unlink()
    config = _config(mini_suite, "finetune", protocol="trainval->test", data_root=str(root))
    result = run(config, tmp_path / "r")
    assert result["top1"] is None and result["loss"] is None
    assert json.loads((tmp_path / "r" / "result.json").read_text())["top1"] is None
    predictions = json.loads((tmp_path / "r" / "predictions.json").read_text())
    assert len(predictions["image_ids"]) == 80 == len(predictions["predicted"])
    assert set(predictions["labels"]) == {-1}


def test_random_streams_derive_from_seed_method_domain_and_purpose():
    base = {s: derive_seed(0, s, method="random-policy", domain="aircraft") for s in STREAMS}
    assert len(set(base.values())) == len(STREAMS)  # purposes differ
    for stream in STREAMS:
        other_domain = derive_seed(0, stream, method="random-policy", domain="dtd")
        other_seed = derive_seed(1, stream, method="random-policy", domain="aircraft")
        assert other_domain != base[stream] and other_seed != base[stream]
    # model streams also depend on the method; the data streams are shared by every method (paired runs)
    for stream in STREAMS:
        same = derive_seed(0, stream, method="finetune", domain="aircraft") == base[stream]
        assert same == (stream in ("data", "subset")), stream
    with pytest.raises(ValueError, match="unknown random stream"):
        derive_seed(0, "rounting", method="spottune", domain="dtd")
    config = RunConfig(method="random-policy", domain="dtd", seed=3)
    assert job_seed(config, "routing") == derive_seed(3, "routing", method="random-policy", domain="dtd")


def test_random_policy_routes_two_domains_differently(mini_suite, tmp_path):
    # the routing of random-policy comes from the job's own stream: two domains, two routings
    policies = {}
    for domain in ("aircraft", "dtd"):
        run(_config(mini_suite, "random-policy", domain=domain), tmp_path / domain)
        policies[domain] = json.loads((tmp_path / domain / "policy.json").read_text())["block_fraction"]
    assert policies["aircraft"] != policies["dtd"]


@pytest.fixture(scope="module")
def reference_run(mini_suite, tmp_path_factory):
    """An uninterrupted 2-epoch SpotTune run (routing noise, two optimiser groups, a mid-run LR drop)."""
    config = _config(mini_suite, "spottune", epochs=2, limit_train_images=24, log_every=1)
    run_dir = tmp_path_factory.mktemp("reference")
    run(config, run_dir)
    return config, run_dir


def test_same_seed_same_metrics(reference_run, tmp_path):
    config, reference = reference_run
    run(config, tmp_path)
    assert _metrics(tmp_path) == _metrics(reference)
    other = tmp_path / "seed1"
    run(config.replace(seed=1), other)
    assert _metrics(other)[1] != _metrics(reference)[1]


class Killed(Exception):
    """Raised by :func:`kill_in_epoch_two`: the run dies as if killed."""


def kill_in_epoch_two(event, **info):
    """A progress callback that kills the run at the second batch of its second epoch."""
    if event == "batch" and info["epoch"] == 2 and info["step"] == 2:  # epochs count from 1
        raise Killed


def test_killed_run_resumes_to_the_same_metrics(reference_run, tmp_path):
    config, reference = reference_run
    with pytest.raises(Killed):
        run(config, tmp_path, progress=kill_in_epoch_two)
    assert not (tmp_path / "result.json").exists()
    position = torch.load(tmp_path / CHECKPOINT, weights_only=True)["extra"]["position"]
    assert position["epoch"] == 1 and len((tmp_path / "epochs.jsonl").read_text().splitlines()) == 1
    events = []
    run(config, tmp_path, progress=lambda event, **info: events.append((event, info.get("epoch"))))
    assert ("epoch_start", 1) not in events and ("epoch_start", 2) in events  # resumed at epoch 2
    assert _metrics(tmp_path) == _metrics(reference)


def test_resume_refuses_another_config(reference_run, tmp_path):
    config, reference = reference_run
    (tmp_path / CHECKPOINT).write_bytes((reference / CHECKPOINT).read_bytes())
    with pytest.raises(CheckpointError, match="another configuration"):
        run(config.replace(lr=0.05), tmp_path)
    with pytest.raises(CheckpointError, match="another job"):  # a finished run is not another job's result
        run(config.replace(seed=3), reference)
    assert run(config, reference) == json.loads((reference / "result.json").read_text())


def test_running_ft_evaluates_spottune_checkpoint(reference_run, mini_suite, tmp_path):
    config, reference = reference_run
    ft = config.replace(method="spottune-running-ft")
    result = run(ft, tmp_path / "ft", source_run_dir=reference)
    assert result["epochs"] == 0 and result["par"] > 2.0
    policy = json.loads((tmp_path / "ft" / "policy.json").read_text())
    assert policy["block_fraction"] == [1.0] * 12 and policy["histogram"][-1] == 1.0
    # the same network without its policy network: the difference is the policy network's cost
    spottune_cost = json.loads((reference / "result.json").read_text())["gflops_per_image"]
    with contextlib.closing(build_data(ft, get_domain(ft.domain, "mini"), torch.device("cpu"), None,
                                       train=False)) as data:
        images = next(iter(data.eval_loader))[0][:2]
    policy_net = gflops_per_image(get_method("finetune"), decathlon_policy_net(12, width=0.25), images)
    assert spottune_cost - result["gflops_per_image"] == pytest.approx(policy_net, rel=1e-9)
    with pytest.raises(ConfigError, match="source_run_dir"):
        run(ft, tmp_path / "missing")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / CHECKPOINT).write_bytes((reference / CHECKPOINT).read_bytes())
    with pytest.raises(CheckpointError, match="has not finished"):
        run(ft, tmp_path / "ft2", source_run_dir=unfinished)


def test_finished_job_drops_its_resume_state_and_reused_model_survives(reference_run, mini_suite, tmp_path):
    import shutil

    config, reference = reference_run
    finished = tmp_path / "spottune"
    shutil.copytree(reference, finished)
    # spottune is evaluated by spottune-running-ft: its final model is kept beside the resume state
    assert (finished / FINAL_MODEL).is_file() and (finished / CHECKPOINT).is_file()
    assert prune_run_dir(finished) > 0
    assert not (finished / CHECKPOINT).exists() and (finished / FINAL_MODEL).is_file()
    ft = config.replace(method="spottune-running-ft")
    from_model = run(ft, tmp_path / "ft", source_run_dir=finished)
    assert from_model == run(ft, tmp_path / "ft-old", source_run_dir=reference) | {
        "wall_time_s": from_model["wall_time_s"], "images_per_s": from_model["images_per_s"]}
    # a method nobody reuses keeps no final model; an unfinished run dir keeps its checkpoint
    plain = tmp_path / "finetune"
    run(_config(mini_suite, "finetune", limit_train_images=8), plain)
    assert not (plain / FINAL_MODEL).exists() and not is_reused("finetune") and is_reused("spottune")
    (plain / "result.json").unlink()
    with pytest.raises(HarnessError, match="not finished"):
        prune_run_dir(plain)
    assert (plain / CHECKPOINT).is_file()
    (finished / FINAL_MODEL).unlink()
    with pytest.raises(CheckpointError, match="neither model.pt nor checkpoint.pt"):
        run(ft, tmp_path / "ft-missing", source_run_dir=finished)


def test_source_domain_is_evaluation_only(mini_suite, tmp_path):
    weights = tmp_path / "source.pt"
    torch.manual_seed(0)
    backbone = create_backbone("resnet26", 20, width=0.25)  # the generated imagenet12 has 20 classes
    save_checkpoint(weights, model_state=backbone.state_dict(), config={"backbone": "resnet26"})
    config = _config(mini_suite, "finetune", domain="imagenet12", pretrained=str(weights))
    result = run(config, tmp_path / "run")
    assert result["epochs"] == 0 and result["par"] == pytest.approx(1.0)
    assert not (tmp_path / "run" / CHECKPOINT).exists()
    assert len(json.loads((tmp_path / "run" / "predictions.json").read_text())["predicted"]) == 200
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, model_state=create_backbone("resnet26", 7, width=0.25).state_dict(), config={})
    with pytest.raises(CheckpointError, match="7 classes"):
        run(config.replace(pretrained=str(wrong)), tmp_path / "wrong")
    with pytest.raises(ConfigError, match="pretrained"):
        run(config.replace(pretrained=None), tmp_path / "none")


def test_missing_data_root_is_a_config_error(mini_suite, tmp_path):
    with pytest.raises(ConfigError, match="data_root"):
        run(_config(mini_suite, "finetune", data_root=None), tmp_path)


def test_balanced_subset():
    labels = [c for c in range(5) for _ in range(10 + c)]  # unbalanced: 10..14 images per class
    subset = balanced_subset(labels, 23, seed=0)  # the seed of the draw itself (a job's subset stream)
    counts = Counter(labels[i] for i in subset)
    assert len(subset) == 23 == len(set(subset)) and max(counts.values()) - min(counts.values()) <= 1
    assert subset == sorted(subset) == balanced_subset(labels, 23, seed=0)
    assert subset != balanced_subset(labels, 23, seed=1)
    assert balanced_subset(labels, 1000, seed=0) == list(range(len(labels)))


@pytest.mark.parametrize(("schedule", "epochs", "expected"), [
    ("faithful", 110, {0: 1.0, 39: 1.0, 40: 0.1, 79: 0.1, 109: 0.1}),
    ("faithful", 11, {0: 1.0, 3: 1.0, 4: 0.1, 10: 0.1}),
    ("faithful", 1, {0: 1.0}),
    ("multistep", 110, {0: 1.0, 39: 1.0, 40: 0.1, 59: 0.1, 60: 0.01, 80: 0.001, 109: 0.001}),
    ("cosine", 10, {0: 1.0, 5: 0.5, 9: 0.5 * (1 + math.cos(math.pi * 0.9))}),
])
def test_schedule_values(schedule, epochs, expected):
    milestones = RunConfig().milestones
    for epoch, factor in expected.items():
        assert lr_factor(schedule, epoch, epochs, milestones=milestones) == pytest.approx(factor)


def test_scheduler_drives_every_group():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], lr=0.1)
    scheduler = build_scheduler(optimizer, "multistep", 11, milestones=(4 / 11, 6 / 11, 8 / 11))
    seen = []
    for _ in range(11):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    factors = [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001]
    expected = [lr for f in factors for lr in (0.1 * f, 0.01 * f)]
    assert [lr for pair in seen for lr in pair] == pytest.approx(expected)


# ------------------------------------------------------------------------------- preemption signals


class _SignalledDataset(torch.utils.data.Dataset):
    """Every item sends the scheduler's preemption signals to the process loading it (a DataLoader worker)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        import os
        import signal

        for name in ("SIGTERM", "SIGUSR2"):  # what SLURM / submitit send to every process of the job
            os.kill(os.getpid(), getattr(signal, name))
        return index


def _load_in_a_worker(worker_init_fn) -> list[int]:
    loader = torch.utils.data.DataLoader(_SignalledDataset(), batch_size=2, num_workers=1,
                                         worker_init_fn=worker_init_fn)
    return [int(i) for batch in loader for i in batch]


@pytest.mark.parametrize("init", ["engine.seed_worker", "cache._init_worker"])
def test_dataloader_workers_survive_the_schedulers_preemption_signals(init):
    from decathlon import cache, engine

    module, name = init.split(".")
    assert _load_in_a_worker(getattr({"engine": engine, "cache": cache}[module], name)) == [0, 1, 2, 3]


def test_without_the_worker_init_a_preemption_signal_kills_the_worker():
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        _load_in_a_worker(None)


# ------------------------------------------------------------------------------------------- host memory

_CHURN = """
import resource, torch
from decathlon.engine import retain_freed_memory

def faults():  # minor page faults of 5 rounds of a 64 MiB tensor allocated, touched and freed
    for _ in range(2):  # warm-up
        torch.ones(64 * 2**20 // 4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(64 * 2**20 // 4)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

system = faults()
applied = retain_freed_memory()
print(system, applied, faults())
"""


def test_retained_memory_is_reused_without_page_faults():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CHURN], capture_output=True, text=True, check=True).stdout
    system, applied, retained = out.split()
    # glibc's default: every 64 MiB block is a fresh mmap, its 16384 pages faulted in again each of 5 times
    assert int(system) >= 5 * 16384
    # retained: the freed block is reused (at most one more heap growth than the warm-up's)
    assert applied == "True" and int(retained) <= 16384 + 100


def test_retaining_memory_can_be_switched_off(monkeypatch):
    from decathlon.engine import SYSTEM_MALLOC_ENV, retain_freed_memory

    monkeypatch.setenv(SYSTEM_MALLOC_ENV, "1")
    assert retain_freed_memory() is False


# ------------------------------------------------------------------ GPU execution settings on the CPU path


def test_sgd_is_fused_only_for_cuda_parameters(mini_suite):
    from decathlon.domains import get_domain
    from decathlon.engine import build_backbone, build_optimizer, sgd_options

    config = _config(mini_suite, "finetune")
    assert sgd_options(config, torch.device("cuda")) == {"fused": True}
    assert sgd_options(config.replace(fused_sgd=False), torch.device("cuda")) == {}
    assert sgd_options(config, torch.device("cpu")) == {}  # the CPU keeps torch's for-each reference
    method, spec = all_methods()["finetune"], get_domain("aircraft", suite="mini")
    model = method.build(build_backbone(method, config, 10), spec, 10, config)
    optimizer, _ = build_optimizer(method, model, config, spec)
    assert not optimizer.defaults["fused"]


@pytest.mark.parametrize("deterministic", [False, True])
def test_backend_settings_hold_during_the_run_and_are_restored(mini_suite, tmp_path, deterministic):
    seen = []

    def record(event, **info):
        if event == "epoch_start":
            seen.append((torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                         torch.are_deterministic_algorithms_enabled()))

    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
              torch.are_deterministic_algorithms_enabled())
    run(_config(mini_suite, "finetune", deterministic=deterministic, limit_train_images=8), tmp_path,
        progress=record)
    # deterministic: no autotuning, deterministic algorithms; otherwise cuDNN autotunes (cudnn_benchmark)
    assert seen == [(not deterministic, deterministic, deterministic)]
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled()) == before


def test_routing_stream_stays_on_the_cpu_without_cuda_and_a_foreign_state_is_refused(mini_suite):
    from decathlon.engine import device_generators, rng_state, seed_everything, set_rng_state

    config = _config(mini_suite, "spottune")
    generators = seed_everything(config)
    placed = device_generators(generators, torch.device("cpu"), config)
    assert placed["routing"] is generators["routing"] and placed["data"] is generators["data"]
    state = rng_state(placed)
    state["generators"]["routing"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA (Philox) generator's state
    with pytest.raises(CheckpointError, match="'routing' random stream was saved for another device type"):
        set_rng_state(state, placed)
