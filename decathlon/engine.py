"""The one training engine shared by every method: train, evaluate, checkpoint, resume.

:func:`run` turns a :class:`~decathlon.config.RunConfig` into a finished run directory (the contract is
in ``docs/architecture.md``). Everything it uses is passed explicitly; there is no module state.

Randomness: one seed drives everything through separate streams (:func:`derive_seed`): the global RNGs
(model initialisation and, with in-process loading, the augmentation), the DataLoader generator (data
order and worker seeds), and the routing generator (Gumbel noise, random routing). Every stream's state
is saved after each epoch, so a killed run resumes from its last checkpoint and ends with exactly the
metrics of an uninterrupted run on the CPU.

Devices: ``device="auto"`` picks CUDA when available. On CUDA the engine uses mixed precision
(``config.amp``; ignored on the CPU), fused SGD (``config.fused_sgd``), routing noise drawn on the GPU
(``config.device_rng``) and cuDNN autotuning (``config.cudnn_benchmark``); ``config.deterministic`` asks
for deterministic algorithms instead (:func:`backend_settings`). The model and the batches are
channels_last (``config.channels_last``) on every device: oneDNN's CPU convolutions are faster in that
layout too (docs/performance.md). Metrics are accumulated on the device and read back once per epoch
(or every ``log_every`` batches for progress).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from decathlon.config import IDENTITY_FIELDS, RunConfig
from decathlon.data import end_workers, loader_workers, naming_batches, worker_batches
from decathlon.domains import DomainSpec, get_domain
from decathlon.errors import CheckpointError, ConfigError, HarnessError
from decathlon.io import atomic_write_json, atomic_write_text
from decathlon.methods import Method, Output, all_methods, get_method

# imported with the engine, not lazily: test_retained_memory_is_reused_without_page_faults failed about one
# run in three when the engine's process had imported less (no torchvision) before its first large allocation
from decathlon.presets import get_preset
from decathlon.schedules import build_scheduler

Progress = Callable[..., None]

CHECKPOINT = "checkpoint.pt"  # resume state of a running job (model, optimiser, RNGs, position)
FINAL_MODEL = "model.pt"  # final weights of a finished job that another method evaluates (Method.reuses)
RESULT = "result.json"
# Independent random streams, each derived from (seed, method, domain, purpose) by :func:`derive_seed`.
STREAMS = ("global", "data", "routing", "eval", "subset")
# Streams that select and order the data: shared by every method of a (seed, domain), so that methods are
# compared on the same training subset in the same order (common random numbers, a paired comparison).
DATA_STREAMS = ("data", "subset")
SHARED_METHOD = "*"  # the method key of the data streams


def derive_seed(seed: int, stream: str, *, method: str, domain: str) -> int:
    """A 63-bit seed for the `stream` of one job: SHA-256 of (seed, method, domain, stream).

    Distinct domains, methods or purposes give unrelated streams (the random routing of two domains
    differs), and the value is the same on every machine and Python version. The data streams
    (:data:`DATA_STREAMS`) ignore `method`: every method of a (seed, domain) sees the same images in the
    same order. Unknown stream names raise ValueError.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; expected one of {', '.join(STREAMS)}")
    key = SHARED_METHOD if stream in DATA_STREAMS else method
    digest = hashlib.sha256(f"{int(seed)}|{key}|{domain}|{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def job_seed(config: RunConfig, stream: str) -> int:
    """:func:`derive_seed` of `config`'s seed, method and domain."""
    return derive_seed(config.seed, stream, method=config.method, domain=config.domain)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as given (``cuda`` without a GPU fails)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; use device='auto' or 'cpu'")
    return device


SYSTEM_MALLOC_ENV = "SPOTTUNE_SYSTEM_MALLOC"  # "1": leave glibc's allocator settings alone
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


def retain_freed_memory() -> bool:
    """Keep freed host memory inside this process instead of handing it back to the kernel (glibc).

    By default glibc serves every block above 32 MiB with a fresh ``mmap`` and unmaps it on free, so each
    training step of a 64 px ResNet-26 at batch 128 faults in gigabytes of zeroed pages again: 1-2.5
    million minor page faults and 2-9 s of system time per step on the CPU (docs/performance.md). With
    ``mallopt`` the large blocks come from the heap and freed memory is reused: the peak memory is the
    same, but the process keeps it until it exits. Called by the engine for CPU runs; a no-op returning
    False without glibc or when ``$SPOTTUNE_SYSTEM_MALLOC`` is "1".
    """
    if os.environ.get(SYSTEM_MALLOC_ENV) == "1":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                             cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


# ---------------------------------------------------------------------------------------------- RNG states


def rng_state(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG state as plain tensors/lists (loadable with ``weights_only=True``)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["state"]), py_state["gauss"]))
    for name, g in generators.items():
        saved = state["generators"][name]
        if saved.numel() != g.get_state().numel():  # CPU (Mersenne Twister) vs CUDA (Philox) states
            raise CheckpointError(f"the checkpoint's {name!r} random stream was saved for another device "
                                  f"type than this run's {g.device.type} generator (device_rng or device "
                                  "changed?)")
        g.set_state(saved)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(config: RunConfig) -> dict[str, torch.Generator]:
    """Seed the global RNGs and return the explicit generators (``data``, ``routing``) of a job."""
    base = job_seed(config, "global")
    torch.manual_seed(base)
    np.random.seed(base % 2**32)
    random.seed(base)
    return {name: torch.Generator().manual_seed(job_seed(config, name)) for name in ("data", "routing")}


def device_generators(generators: Mapping[str, torch.Generator], device: torch.device,
                      config: RunConfig) -> dict[str, torch.Generator]:
    """The run's generators placed for `device`: with ``config.device_rng`` on CUDA the ``routing`` stream
    becomes a CUDA generator seeded with the same derived seed, so the Gumbel noise and random routes are
    drawn where they are used (no host-to-device copy, which waits for the GPU, in every step). It is
    another random stream than the CPU generator's, saved and restored with the checkpoint like it; on the
    CPU, or with ``device_rng`` off, the generators are returned unchanged."""
    out = dict(generators)
    if config.device_rng and device.type == "cuda" and "routing" in out:
        out["routing"] = torch.Generator(device).manual_seed(out["routing"].initial_seed())
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: numpy and python follow the worker's torch seed (set by the loader from
    its generator), so augmentation in workers is reproducible; the scheduler's preemption signals are
    left to the main process (:func:`decathlon.data.ignore_scheduler_signals`)."""
    from decathlon.data import ignore_scheduler_signals

    ignore_scheduler_signals(worker_id)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ---------------------------------------------------------------------------------------------------- data


def balanced_subset(labels: Sequence[int], limit: int, seed: int) -> list[int]:
    """Indices of a class-balanced, seeded subset of `limit` images (all of them when `limit` >= n).

    `seed` seeds the draw as given: jobs pass their ``subset`` stream (:func:`job_seed`).

    Images are drawn round-robin over the classes in a seeded random order: every class gets
    ``limit // classes`` images or one more (fewer when it has fewer). Returned in dataset order.
    """
    n = len(labels)
    if limit >= n:
        return list(range(n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    seen: dict[int, int] = {}
    ranked = []
    for position, index in enumerate(order):
        label = int(labels[index])
        ranked.append((seen.get(label, 0), position, index))
        seen[label] = seen.get(label, 0) + 1
    return sorted(index for _, _, index in sorted(ranked)[:limit])


@dataclass
class Data:
    """The datasets and loaders of a run."""

    train: Any  # dataset (None for evaluation-only jobs)
    eval: Any
    train_loader: Any
    eval_loader: Any
    num_classes: int

    def close(self) -> None:
        """End the loaders' persistent workers (the cache path's); per-epoch workers end with their loop."""
        for loader in (self.train_loader, self.eval_loader):
            end_workers(loader)
            close = getattr(loader, "close", None)
            if close is not None:
                close()


def _check_data_root(config: RunConfig) -> None:
    if config.data_root is None:
        raise ConfigError(f"config.data_root is not set (domain {config.domain!r}, suite {config.suite!r}); "
                          "expected the folder holding the domain's data")


def build_data(config: RunConfig, spec: DomainSpec, device: torch.device, generator: torch.Generator | None,
               *, train: bool = True) -> Data:
    """Datasets (train split by protocol, optionally a balanced subset) and their loaders, with
    ``config.num_workers`` worker processes capped at the CPUs this process may use
    (:func:`decathlon.data.loader_workers`)."""
    from decathlon.data import build_dataset, load_mean_std

    _check_data_root(config)
    preset = get_preset(config.preset)
    mean, std = load_mean_std(config.data_root, spec)
    eval_set = build_dataset(spec, config.data_root, config.eval_split,
                             preset.test_transform(spec, mean, std))
    train_set = None
    if train:
        train_set = build_dataset(spec, config.data_root, config.train_split,
                                  preset.train_transform(spec, mean, std))
        if config.limit_train_images is not None:
            train_set = Subset(train_set, balanced_subset(train_set.labels, config.limit_train_images,
                                                          job_seed(config, "subset")))
    eval_loader = train_loader = None
    workers = loader_workers(config.num_workers)
    if config.cache:
        from decathlon.cache import make_eval_loader, make_train_loader, supports

        common = {"device": device, "num_workers": workers, "channels_last": config.channels_last,
                  "progress": False}
        # a geometry the batched path cannot reproduce (RandomResizedCrop of the extra datasets) stays on PIL
        if supports(preset.geometry(spec, False)):
            eval_loader = make_eval_loader(eval_set, preset.geometry(spec, False), mean, std,
                                           batch_size=config.eval_batch_size, **common)
        if train_set is not None and supports(preset.geometry(spec, True)):
            train_loader = make_train_loader(
                train_set, preset.geometry(spec, True), mean, std, batch_size=config.batch_size,
                generator=generator, drop_last=False, **common)
    pin = device.type == "cuda"
    if eval_loader is None:
        eval_loader = DataLoader(**naming_batches(eval_set), batch_size=config.eval_batch_size, shuffle=False,
                                 num_workers=workers, pin_memory=pin, worker_init_fn=seed_worker)
    if train_loader is None and train_set is not None:
        train_loader = DataLoader(
            **naming_batches(train_set), batch_size=config.batch_size, shuffle=True, generator=generator,
            num_workers=workers, pin_memory=pin, worker_init_fn=seed_worker)
    return Data(train_set, eval_set, train_loader, eval_loader, spec.num_classes)


def place_model(model: nn.Module, device: torch.device, config: RunConfig) -> nn.Module:
    """Move `model` to `device`, channels_last when ``config.channels_last`` (the batches follow)."""
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def batch_to_device(batch: Sequence[Any], device: torch.device,
                    channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a loader batch on `device`; the images channels_last when asked."""
    images, labels = batch[0], batch[1]
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, torch.as_tensor(labels).to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------------- the model


def build_backbone(method: Method, config: RunConfig, num_classes: int) -> nn.Module:
    """The method's starting backbone: ``config.backbone`` with ``config.pretrained`` weights (random
    initialisation when the method says ``pretrained = False``). A method may provide its own through
    ``create_backbone(config, num_classes)`` (e.g. a deeper network)."""
    custom = getattr(method, "create_backbone", None)
    if custom is not None:
        backbone = custom(config, num_classes)
    else:
        from decathlon.networks.factory import create_backbone

        weights = config.pretrained if method.pretrained else None
        backbone = create_backbone(config.backbone, num_classes, width=config.width, weights=weights)
    check_weights_loaded(method, config, backbone)
    return backbone


def check_weights_loaded(method: Method, config: RunConfig, backbone: nn.Module) -> None:
    """ConfigError when a run given pretrained weights would start `method` (which fine-tunes pretrained
    weights) from a random backbone, e.g. ``finetune-resnet101`` with ResNet-50 weights but no ResNet-101
    weights. The load report is the backbone's ``weights_source``. A run without any weights (config
    ``pretrained`` None: tests, deliberate random starts) is left as it is; the command line requires them."""
    loaded = getattr(backbone, "weights_source", None) is not None
    if method.pretrained and config.pretrained is not None and not loaded:
        raise ConfigError(f"{method.name} would train from random weights: its {type(backbone).__name__} "
                          f"backbone got no pretrained weights; pass {method.weights_flag(config)} FILE")


def reference_parameters(config: RunConfig, num_classes: int) -> int:
    """Parameters of one plain backbone of the run's setting (the unit of ``par``)."""
    from decathlon.networks.factory import create_backbone
    from decathlon.networks.params import count_parameters

    return count_parameters(create_backbone(config.backbone, num_classes, width=config.width))[0]


def sgd_options(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """Keyword arguments of ``torch.optim.SGD`` for parameters on `device`: ``fused=True`` on CUDA with
    ``config.fused_sgd`` (one kernel updates every parameter; GradScaler unscales inside it), else none
    (torch's default for-each implementation, the reference on the CPU)."""
    return {"fused": True} if config.fused_sgd and device.type == "cuda" else {}


@contextlib.contextmanager
def backend_settings(config: RunConfig) -> Iterator[None]:
    """cuDNN and torch algorithm settings of one run, restored on exit (jobs may share a process).

    ``cudnn.benchmark`` = ``config.cudnn_benchmark`` unless ``config.deterministic``: cuDNN times its
    convolution algorithms once per input shape and keeps the fastest (the shapes of a run are fixed).
    ``config.deterministic``: ``cudnn.deterministic``, no autotuning, and
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an operation without a deterministic
    implementation warns, naming itself, instead of failing the run); ``CUBLAS_WORKSPACE_CONFIG`` is set to
    ``:4096:8`` when unset, as cuBLAS requires for reproducible results (it stays set). The flags have no
    effect on the CPU, whose runs are reproducible anyway.
    """
    cudnn = torch.backends.cudnn
    saved = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn.benchmark = config.cudnn_benchmark and not config.deterministic
    cudnn.deterministic = config.deterministic
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def build_optimizer(method: Method, model: nn.Module, config: RunConfig, spec: DomainSpec
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The method's optimiser over its parameter groups, and the per-epoch schedule (which multiplies every
    group's learning rate). ``method.optimizer``: ``"sgd"``, SGD with momentum (fused on CUDA:
    :func:`sgd_options`), or ``"adam"`` (PiggyBack's masks, as its reference code). Weight decay of the
    network groups: ``config.weight_decay`` or the domain's reference value.
    """
    weight_decay = spec.weight_decay if config.weight_decay is None else config.weight_decay
    groups = [g for g in method.param_groups(model, config, weight_decay) if g["params"]]
    if not groups:
        raise ConfigError(f"method {method.name!r} declares no trainable parameter")
    declared = {id(p) for g in groups for p in g["params"]}
    if any(p.requires_grad and id(p) not in declared for p in model.parameters()):
        raise ConfigError(f"method {method.name!r}: a parameter with requires_grad is in no parameter group")
    device = groups[0]["params"][0].device
    if method.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                    **sgd_options(config, device))
    elif method.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, lr=config.lr)  # every group sets its own lr
    else:
        raise ConfigError(f"method {method.name!r}: optimizer {method.optimizer!r}; expected sgd or adam")
    scheduler = build_scheduler(optimizer, config.schedule, config.epochs, milestones=config.milestones,
                                gamma=config.lr_gamma)
    return optimizer, scheduler


def _autocast(device: torch.device, config: RunConfig):
    enabled = config.amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled)


# ------------------------------------------------------------------------------------------------ training


def _sync_mode(runner: nn.Module, model: nn.Module) -> None:
    # a torch.compile wrapper copies `training` once; methods read it to pick their train/eval path. Only
    # the flag is copied: runner.train() would recurse and undo the method's per-module modes.
    if runner is not model:
        runner.training = model.training


def train_step(method: Method, model: nn.Module, runner: nn.Module, images: torch.Tensor,
               labels: torch.Tensor, optimizer: torch.optim.Optimizer, config: RunConfig, *,
               device: torch.device, generator: torch.Generator | None,
               scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, Output]:
    """One SGD step; returns the (detached) total loss and the method's output. `runner` is `model`,
    possibly compiled; the method's extra loss is computed on `model`."""
    with _autocast(device, config):
        output = method.forward(runner, images, generator=generator)
        loss = F.cross_entropy(output.logits.float(), labels)
        extra = method.extra_loss(model, output, config)
        if extra is not None:
            loss = loss + extra.float()
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach(), output


def train_one_epoch(method: Method, model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer,
                    config: RunConfig, *, device: torch.device, generator: torch.Generator | None,
                    epoch: int = 1, scaler: torch.amp.GradScaler | None = None,
                    runner: nn.Module | None = None, progress: Progress | None = None) -> dict[str, float]:
    """One pass over `loader`. Returns ``train_loss`` (mean total loss per image), ``train_top1`` (%),
    ``images`` and ``seconds``. `epoch` (counted from 1) labels the ``batch`` progress events. The device is
    synchronised once at the end (and every ``log_every`` batches when a progress callback is given)."""
    runner = model if runner is None else runner
    method.train_mode(model, config)
    _sync_mode(runner, model)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    steps = len(loader)
    start = time.perf_counter()
    with worker_batches(loader) as batches:
        for step, batch in enumerate(batches):
            images, labels = batch_to_device(batch, device, config.channels_last)
            loss, output = train_step(method, model, runner, images, labels, optimizer, config, device=device,
                                      generator=generator, scaler=scaler)
            loss_sum += loss * labels.shape[0]
            correct += (output.logits.detach().argmax(1) == labels).sum()
            seen += labels.shape[0]
            if progress is not None and config.log_every > 0 and (step + 1) % config.log_every == 0:
                progress("batch", epoch=epoch, step=step + 1, steps=steps, loss=float(loss_sum) / seen)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    seen = max(seen, 1)
    return {"train_loss": float(loss_sum) / seen, "train_top1": 100.0 * float(correct) / seen,
            "images": seen, "seconds": seconds}


@dataclass
class Evaluation:
    """What :func:`evaluate` measures on one split."""

    top1: float | None  # % of the labelled images; None when the split has no labels (stripped test)
    loss: float | None  # mean cross-entropy per labelled image; None likewise
    predicted: list[int]
    labels: list[int]
    policy: torch.Tensor | None  # (images, blocks) hard routing decisions, CPU; None for non-routing methods
    images: int
    seconds: float
    gflops_per_image: float | None = None  # inference cost (decathlon.flops); None: not measured


@torch.no_grad()
def evaluate(method: Method, model: nn.Module, loader: Any, config: RunConfig, *, device: torch.device,
             runner: nn.Module | None = None) -> Evaluation:
    """Predictions on every image of `loader` (dataset order). Any sampling at evaluation (sampled policies,
    random routing) uses the job's ``eval`` stream (:func:`job_seed`), so an evaluation is reproducible.

    After the timed pass, the inference cost is measured on the first :data:`decathlon.flops.FLOP_IMAGES`
    images of the first batch (:func:`decathlon.flops.gflops_per_image`, on `model`, in fp32, with a fresh
    ``eval`` stream): ``Evaluation.gflops_per_image``."""
    from decathlon.flops import FLOP_IMAGES, gflops_per_image

    runner = model if runner is None else runner
    model.eval()
    _sync_mode(runner, model)
    generator = torch.Generator().manual_seed(job_seed(config, "eval"))
    loss_sum = torch.zeros((), device=device)
    predicted, labels_all, policies = [], [], []
    sample = None  # the images whose inference cost is counted
    start = time.perf_counter()
    with worker_batches(loader) as batches:
        for batch in batches:
            images, labels = batch_to_device(batch, device, config.channels_last)
            if sample is None:
                sample = images[:FLOP_IMAGES].clone()
            with _autocast(device, config):
                output = method.forward(runner, images, generator=generator)
            logits = output.logits.float()
            # unlabelled test images (label -1) are predicted but not scored; no per-batch host sync
            loss_sum += F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
            predicted.append(logits.argmax(1))
            labels_all.append(labels)
            if output.policy is not None:
                policies.append(output.policy.detach().float())
    predicted_t = torch.cat(predicted).cpu()
    labels_t = torch.cat(labels_all).cpu()
    seconds = time.perf_counter() - start
    scored = labels_t >= 0
    n_scored = int(scored.sum())
    # a split without labels has no accuracy (not 0 %): the predictions are still written for submission
    top1 = 100.0 * float((predicted_t[scored] == labels_t[scored]).sum()) / n_scored if n_scored else None
    loss = float(loss_sum) / n_scored if n_scored else None
    policy = torch.cat(policies).cpu() if policies and len(policies) == len(predicted) else None
    gflops = None
    if sample is not None:
        flop_generator = torch.Generator().manual_seed(job_seed(config, "eval"))
        gflops = gflops_per_image(method, model, sample, generator=flop_generator)
    return Evaluation(top1=top1, loss=loss, predicted=predicted_t.tolist(),
                      labels=labels_t.tolist(), policy=policy, images=len(labels_t), seconds=seconds,
                      gflops_per_image=gflops)


def policy_stats(policy: torch.Tensor, labels: Sequence[int]) -> dict[str, Any]:
    """Routing statistics of hard decisions `policy` (images, blocks), 1 = fine-tuned path.

    ``block_fraction[l]``: fraction of images whose block l ran on the fine-tuned path;
    ``histogram[k]``: fraction of images with exactly k fine-tuned blocks (k = 0..blocks);
    ``per_class[c]`` / ``per_class_histogram[c]``: the same over the images of class c.
    """
    hard = (policy > 0.5).float()
    blocks = hard.shape[1]
    labels_t = torch.as_tensor(list(labels))

    def summary(rows: torch.Tensor) -> tuple[list[float], list[float]]:
        counts = torch.bincount(rows.sum(1).long(), minlength=blocks + 1).float()
        return rows.mean(0).tolist(), (counts / max(len(rows), 1)).tolist()

    fraction, histogram = summary(hard)
    per_class, per_class_hist = {}, {}
    for c in sorted(set(labels_t.tolist())):
        frac_c, hist_c = summary(hard[labels_t == c])
        per_class[int(c)], per_class_hist[int(c)] = frac_c, hist_c
    return {"blocks": blocks, "images": len(hard), "block_fraction": fraction, "histogram": histogram,
            "per_class": per_class, "per_class_histogram": per_class_hist}


def image_blocks(policy: torch.Tensor) -> list[str]:
    """Per-image routing of hard decisions `policy` (images, blocks) as texts of one character per block,
    "1" = fine-tuned path (block 1 first), e.g. "000111000111"; in the order of ``predictions.json``."""
    return ["".join("1" if v else "0" for v in row) for row in (policy > 0.5).tolist()]


# ------------------------------------------------------------------------------------------ run directory


def _write_epochs(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> None:
    atomic_write_text(run_dir / "epochs.jsonl", "".join(json.dumps(dict(r)) + "\n" for r in history))


def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() if v.device.type != "cpu" else v for k, v in model.state_dict().items()}


def save_run_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                        scaler: torch.amp.GradScaler | None, generators: Mapping[str, torch.Generator],
                        config: RunConfig, position: Mapping[str, Any]) -> None:
    """Atomic checkpoint of everything a resumed run needs (``weights_only``-loadable)."""
    from decathlon.networks.checkpoint import save_checkpoint

    extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None,
             "rng": rng_state(generators), "position": dict(position), "config_hash": config.hash()}
    save_checkpoint(path, model_state=_model_state(model), config=_plain_config(config), extra=extra)


def _plain_config(config: RunConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()}


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a full model state_dict by name with shape checks (CheckpointError naming `source`)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{source}: the checkpoint does not fit the model (missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}); was it written by another method or backbone?")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(own[key].shape)}")
    model.load_state_dict(state)


def _identity(config: RunConfig) -> dict[str, Any]:
    return {"suite": config.suite, "method": config.method, "domain": config.domain, "seed": config.seed,
            "protocol": config.protocol, "preset": config.preset, "schedule": config.schedule,
            "eval_split": config.eval_split, "train_split": config.train_split, "config_hash": config.hash()}


def _write_outputs(run_dir: Path, method: Method, data: Data, evaluation: Evaluation) -> None:
    image_ids = list(data.eval.image_ids)
    # the category id of each class index (Decathlon layout): a submission is then written from the run
    # directory alone, wherever the results folder and the data have moved since
    categories = {"category_ids": list(data.eval.category_ids)} if hasattr(data.eval, "category_ids") else {}
    atomic_write_json(run_dir / "predictions.json", {
        "image_ids": image_ids, "predicted": evaluation.predicted, "labels": evaluation.labels, **categories},
        indent=None)
    if method.routing and evaluation.policy is not None:
        stats = policy_stats(evaluation.policy, evaluation.labels)
        classes = getattr(data.eval, "classes", None)  # class names from the annotations, index = class
        names = {"classes": list(classes)} if classes else {}
        atomic_write_json(run_dir / "policy.json",
                          {**stats, **names, "image_blocks": image_blocks(evaluation.policy)})


# -------------------------------------------------------------------------------------------------- run


def run(config: RunConfig, run_dir: str | Path, *, progress: Progress | None = None,
        source_run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train and evaluate one job into `run_dir`; resume from its checkpoint when present.

    Evaluation-only jobs: the source domain (its entry is the pretrained network's own accuracy) and
    methods with ``trains = False``, which evaluate the checkpoint of the finished job in
    `source_run_dir` (the run of ``method.reuses``). Returns the content of ``result.json``.
    """
    run_dir = Path(run_dir)
    result_path = run_dir / RESULT
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        expected = _identity(config)
        found = {k: result.get(k) for k in expected}
        if found != expected:
            raise CheckpointError(f"{result_path}: finished run of another job {found}; expected {expected}")
        return result
    config.validate()
    method = get_method(config.method)
    spec = get_domain(config.domain, suite=config.suite)
    device = resolve_device(config.device)
    if device.type == "cpu":
        retain_freed_memory()
    run_dir.mkdir(parents=True, exist_ok=True)
    version = code_version()
    atomic_write_json(run_dir / "config.json", {"config": _plain_config(config), "code_version": version,
                                                "config_hash": config.hash()})
    with backend_settings(config):
        if spec.is_source or not method.trains:
            return _run_evaluation_only(config, run_dir, method, spec, device, version, source_run_dir)
        return _run_training(config, run_dir, method, spec, device, version, progress)


def _finish(run_dir: Path, config: RunConfig, method: Method, data: Data, model: nn.Module,
            evaluation: Evaluation, *, epochs: int, wall_time: float, images_per_s: float,
            version: str, reference_params: int) -> dict[str, Any]:
    from decathlon.networks.params import count_parameters, par_ratio, stored_parameters

    _write_outputs(run_dir, method, data, evaluation)
    total, trainable = count_parameters(model)
    result = {**_identity(config), "top1": evaluation.top1, "loss": evaluation.loss,
              "params_total": total, "params_trainable": trainable, "params_stored": stored_parameters(model),
              "par": par_ratio(model, reference_params),
              "wall_time_s": wall_time, "images_per_s": images_per_s, "epochs": epochs,
              "eval_images": evaluation.images, "gflops_per_image": evaluation.gflops_per_image,
              "code_version": version, "settings": config.settings()}
    atomic_write_json(run_dir / RESULT, result)  # last: its presence means the job finished
    return result


def _run_evaluation_only(config: RunConfig, run_dir: Path, method: Method, spec: DomainSpec,
                         device: torch.device, version: str,
                         source_run_dir: str | Path | None) -> dict[str, Any]:
    start = time.perf_counter()
    seed_everything(config)
    with contextlib.closing(build_data(config, spec, device, None, train=False)) as data:
        return _evaluate_only(config, run_dir, method, spec, device, version, source_run_dir, data, start)


def _evaluate_only(config: RunConfig, run_dir: Path, method: Method, spec: DomainSpec, device: torch.device,
                   version: str, source_run_dir: str | Path | None, data: Data,
                   start: float) -> dict[str, Any]:
    if spec.is_source:
        model = pretrained_source_model(config, spec)
        eval_method: Method = _PlainForward()
    else:
        model = _reused_model(config, method, spec, data.num_classes, source_run_dir)
        eval_method = method
    place_model(model, device, config)
    evaluation = evaluate(eval_method, model, data.eval_loader, config, device=device)
    wall = time.perf_counter() - start
    return _finish(run_dir, config, method, data, model, evaluation, epochs=0, wall_time=wall,
                   images_per_s=evaluation.images / max(evaluation.seconds, 1e-9), version=version,
                   reference_params=reference_parameters(config, data.num_classes))


class _PlainForward(Method):
    """Evaluates a plain backbone (the source domain's pretrained network)."""

    name = "pretrained-source"

    def build(self, backbone, spec, num_classes, config):  # pragma: no cover - never built
        return backbone


def pretrained_source_model(config: RunConfig, spec: DomainSpec) -> nn.Module:
    from decathlon.networks.checkpoint import read_harness_checkpoint
    from decathlon.networks.factory import create_backbone

    if config.pretrained is None:
        raise ConfigError(f"domain {spec.name!r} is the source domain: its entry is the pretrained network's "
                          "own accuracy, so config.pretrained must name the pretrained backbone")
    kind, content = read_harness_checkpoint(config.pretrained)
    if kind == "harness":
        weight = content["model_state"].get("classifier.weight")
        if weight is None or weight.shape[0] != spec.num_classes:
            got = None if weight is None else weight.shape[0]
            raise CheckpointError(f"{config.pretrained}: its classifier has {got} classes; the source domain "
                                  f"{spec.name!r} has {spec.num_classes} (is it a {spec.name} backbone?)")
    return create_backbone(config.backbone, spec.num_classes, width=config.width, weights=config.pretrained)


def _reused_model(config: RunConfig, method: Method, spec: DomainSpec, num_classes: int,
                  source_run_dir: str | Path | None) -> nn.Module:
    from decathlon.networks.checkpoint import load_checkpoint

    if method.reuses is None:
        raise ConfigError(f"method {method.name!r} does not train and names no method to reuse")
    if source_run_dir is None:
        raise ConfigError(f"method {method.name!r} evaluates the checkpoint of the {method.reuses!r} job: "
                          "pass source_run_dir (that job's run directory)")
    source = Path(source_run_dir)
    if not (source / RESULT).is_file():
        raise CheckpointError(f"{source}: the {method.reuses!r} job has not finished (no {RESULT}); "
                              f"{method.name!r} needs its final model")
    # run dirs written before FINAL_MODEL existed hold the final weights in the last epoch's checkpoint
    path = source / FINAL_MODEL if (source / FINAL_MODEL).is_file() else source / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"{source}: the finished {method.reuses!r} job has neither {FINAL_MODEL} nor "
                              f"{CHECKPOINT}; {method.name!r} needs its final model: rerun that job "
                              "(--force --methods " + method.reuses + ")")
    content = load_checkpoint(path)
    source_config = RunConfig.from_dict(content["config"])
    if source_config.method != method.reuses or source_config.domain != config.domain:
        raise CheckpointError(f"{path} is a {source_config.method!r} run on "
                              f"{source_config.domain!r}; expected {method.reuses!r} on {config.domain!r}")
    reused = get_method(method.reuses)
    torch.manual_seed(job_seed(config, "global"))
    model = method.build(build_backbone(reused, source_config, num_classes), spec, num_classes, source_config)
    load_model_state(model, content["model_state"], str(path))
    return model


def is_reused(method: str) -> bool:
    """Whether a registered method evaluates `method`'s final model (``Method.reuses``): its finished jobs
    keep it as :data:`FINAL_MODEL`."""
    return any(m.reuses == method for m in all_methods().values())


def prune_run_dir(run_dir: str | Path, marker: str = RESULT) -> int:
    """Remove the resume state (``checkpoint.pt``) of a finished job, whose `marker` file (``result.json``;
    a pretraining job's ``pretrain.json``) is present; returns the bytes freed.

    Nothing read after a job finishes is lost: the store and the reports read ``result.json``,
    ``predictions.json``, ``policy.json`` and ``config.json``; methods that evaluate another method's model
    read its :data:`FINAL_MODEL`; transfer jobs load a pretraining job's ``backbone.pt``; a finished job is
    never resumed. HarnessError for an unfinished run dir: its checkpoint is what the next run resumes from.
    """
    run_dir = Path(run_dir)
    if not (run_dir / marker).is_file():
        raise HarnessError(f"{run_dir}: not finished (no {marker}); its {CHECKPOINT} is kept to resume from")
    path = run_dir / CHECKPOINT
    size = path.stat().st_size if path.is_file() else 0
    path.unlink(missing_ok=True)
    return size


def _run_training(config: RunConfig, run_dir: Path, method: Method, spec: DomainSpec, device: torch.device,
                  version: str, progress: Progress | None) -> dict[str, Any]:
    generators = device_generators(seed_everything(config), device, config)
    with contextlib.closing(build_data(config, spec, device, generators["data"])) as data:
        return _train(config, run_dir, method, spec, device, version, progress, generators, data)


def _train(config: RunConfig, run_dir: Path, method: Method, spec: DomainSpec, device: torch.device,
           version: str, progress: Progress | None, generators: dict[str, torch.Generator],
           data: Data) -> dict[str, Any]:
    model = method.build(build_backbone(method, config, data.num_classes), spec, data.num_classes, config)
    place_model(model, device, config)
    optimizer, scheduler = build_optimizer(method, model, config, spec)
    scaler = torch.amp.GradScaler("cuda") if config.amp and device.type == "cuda" else None
    runner = torch.compile(model) if config.compile else model
    position = {"epoch": 0, "history": [], "train_seconds": 0.0, "train_images": 0, "wall_time_s": 0.0}
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.is_file():
        position = load_run_checkpoint(checkpoint_path, config, model, optimizer, scheduler, scaler,
                                       generators)
        _write_epochs(run_dir, position["history"])  # a kill may have come between checkpoint and log
    session_start = time.perf_counter()
    for epoch in range(position["epoch"], config.epochs):
        if progress is not None:
            progress("epoch_start", epoch=epoch + 1, epochs=config.epochs)
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(method, model, data.train_loader, optimizer, config, device=device,
                                generator=generators["routing"], epoch=epoch + 1, scaler=scaler,
                                runner=runner, progress=progress)
        scheduler.step()
        record = {"epoch": epoch + 1, "lr": lr, **{k: stats[k] for k in ("train_loss", "train_top1")},
                  "seconds": stats["seconds"], "images_per_s": stats["images"] / max(stats["seconds"], 1e-9)}
        position = {"epoch": epoch + 1, "history": [*position["history"], record],
                    "train_seconds": position["train_seconds"] + stats["seconds"],
                    "train_images": position["train_images"] + stats["images"],
                    "wall_time_s": position["wall_time_s"] + time.perf_counter() - session_start}
        session_start = time.perf_counter()
        save_run_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, generators, config,
                            position)
        _write_epochs(run_dir, position["history"])
        if progress is not None:
            progress("epoch_end", **record)
    evaluation = evaluate(method, model, data.eval_loader, config, device=device,
                          runner=runner)
    if is_reused(method.name):  # before result.json: a finished job always has the model it promises
        from decathlon.networks.checkpoint import save_checkpoint

        save_checkpoint(run_dir / FINAL_MODEL, model_state=_model_state(model), config=_plain_config(config),
                        extra={"config_hash": config.hash()})
    wall = position["wall_time_s"] + time.perf_counter() - session_start
    return _finish(run_dir, config, method, data, model, evaluation, epochs=config.epochs, wall_time=wall,
                   images_per_s=position["train_images"] / max(position["train_seconds"], 1e-9),
                   version=version, reference_params=reference_parameters(config, data.num_classes))


def load_run_checkpoint(path: Path, config: RunConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, scaler: torch.amp.GradScaler | None,
                        generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    """Restore what :func:`save_run_checkpoint` wrote (model, optimizer, scheduler, scaler, every RNG) and
    return its position. CheckpointError when the file was written by another configuration: other
    settings (hash) or another job (suite, method, domain, seed, protocol, which the hash leaves out)."""
    from decathlon.networks.checkpoint import load_checkpoint

    content = load_checkpoint(path)
    extra = content["extra"]
    found = {k: content["config"].get(k) for k in IDENTITY_FIELDS}
    expected = {k: getattr(config, k) for k in IDENTITY_FIELDS}
    if extra.get("config_hash") != config.hash() or found != expected:
        raise CheckpointError(f"{path} was written by another configuration (hash "
                              f"{extra.get('config_hash')}, {found}); expected hash {config.hash()} of "
                              f"{expected}: remove the run directory or use another one")
    load_model_state(model, content["model_state"], str(path))
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if scaler is not None and extra.get("scaler") is not None:
        scaler.load_state_dict(extra["scaler"])
    set_rng_state(extra["rng"], generators)
    return dict(extra["position"])
