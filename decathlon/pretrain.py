"""Source pretraining: train a backbone on the source domain and save it as a harness checkpoint.

The checkpoint (``backbone.pt``) is what every transfer job of a suite loads as ``config.pretrained``:
a :mod:`decathlon.networks.checkpoint` file whose ``model_state`` is the backbone's state_dict
(source classifier included, so the source domain's entry can be evaluated from it).

Multi-GPU (or multi-process CPU) training uses DistributedDataParallel with a DistributedSampler; the
global batch is ``config.batch_size`` split evenly over the processes, so the recipe does not depend on
the process count. Launch it either with torchrun (which sets RANK / WORLD_SIZE / LOCAL_RANK)::

    torchrun --nproc_per_node 4 -m decathlon.pretrain --data-root DIR --out OUT

or with ``--nproc N``, which spawns N local processes itself (gloo on the CPU, nccl on CUDA). Only rank 0
evaluates and writes files. Settings come from :class:`~decathlon.config.RunConfig` (``domain`` = the
source domain, ``backbone``, ``width``, ``epochs``, ``lr``, ``schedule``, ``batch_size``, ...).

Resume: after every epoch rank 0 writes ``run_dir/checkpoint.pt`` atomically with the engine's
:func:`~decathlon.engine.save_run_checkpoint` (model, optimizer, scheduler, RNG states, position; loadable
with ``weights_only=True``). A run started again in the same folder (single process, ``--nproc`` or
torchrun) loads it on every rank and continues after the last finished epoch. Each rank's own RNG state
is saved too (``position["rank_rng"]``), so every rank resumes its own augmentation stream; on the CPU a
resumed single-process run ends with exactly the weights of an uninterrupted one. The run folder must be
visible to every rank (one machine, or a shared file system).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from decathlon.config import RunConfig
from decathlon.data import loader_workers, naming_batches, worker_batches
from decathlon.domains import DomainSpec, get_domain
from decathlon.engine import (
    CHECKPOINT,
    backend_settings,
    balanced_subset,
    batch_to_device,
    job_seed,
    load_run_checkpoint,
    place_model,
    resolve_device,
    retain_freed_memory,
    rng_state,
    save_run_checkpoint,
    seed_everything,
    seed_worker,
    set_rng_state,
    sgd_options,
)
from decathlon.errors import ConfigError, HarnessError
from decathlon.io import atomic_write_json
from decathlon.schedules import build_scheduler

BACKBONE_FILE = "backbone.pt"  # same name as decathlon.jobs.PRETRAINED_FILE


def _source_spec(config: RunConfig) -> DomainSpec:
    spec = get_domain(config.domain, suite=config.suite)
    if not spec.is_source:
        raise ConfigError(f"pretraining runs on the source domain; {config.domain!r} (suite {config.suite!r})"
                          " is a target domain (the source is imagenet12)")
    return spec


def _loaders(config: RunConfig, spec: DomainSpec, rank: int, world_size: int, device: torch.device):
    from decathlon.data import build_dataset, load_mean_std
    from decathlon.presets import get_preset

    if config.data_root is None:
        raise ConfigError("config.data_root is not set; expected the folder holding the source domain's data")
    preset = get_preset(config.preset)
    mean, std = load_mean_std(config.data_root, spec)
    train = build_dataset(spec, config.data_root, config.train_split, preset.train_transform(spec, mean, std))
    if config.limit_train_images is not None:
        subset = balanced_subset(train.labels, config.limit_train_images, job_seed(config, "subset"))
        train = Subset(train, subset)
    per_process = max(1, config.batch_size // world_size)
    sampler = DistributedSampler(train, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=job_seed(config, "data") % 2**31)
    pin = device.type == "cuda"
    workers = loader_workers(config.num_workers)
    train_loader = DataLoader(**naming_batches(train), batch_size=per_process, sampler=sampler,
                              num_workers=workers, pin_memory=pin, worker_init_fn=seed_worker)
    eval_set = build_dataset(spec, config.data_root, config.eval_split,
                             preset.test_transform(spec, mean, std))
    eval_loader = DataLoader(**naming_batches(eval_set), batch_size=config.eval_batch_size, shuffle=False,
                             num_workers=workers, pin_memory=pin, worker_init_fn=seed_worker)
    return train_loader, sampler, eval_loader


@torch.no_grad()
def _top1(model: nn.Module, loader: DataLoader, device: torch.device, channels_last: bool) -> float | None:
    """Top-1 (%) over the labelled images of `loader`; None when none is labelled (label -1)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = torch.zeros((), dtype=torch.long, device=device)
    with worker_batches(loader) as batches:
        for batch in batches:
            images, labels = batch_to_device(batch, device, channels_last)
            labelled = labels >= 0
            correct += (model(images).argmax(1) == labels)[labelled].sum()
            seen += labelled.sum()
    return 100.0 * float(correct) / int(seen) if int(seen) else None


def _rank_rng_states(rank: int, world_size: int) -> list[dict[str, Any]] | None:
    """Every rank's RNG state, gathered on rank 0 (None on the other ranks and in a single process)."""
    if world_size == 1:
        return None
    states: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(rng_state({}), states, dst=0)
    return states


def _restore_rank_rng(position: dict[str, Any], config: RunConfig, rank: int) -> None:
    """Put this rank's own RNG state back after a resume (which restored rank 0's on every rank)."""
    states = position.get("rank_rng") or []
    if rank < len(states):
        set_rng_state(states[rank], {})
    elif rank > 0:
        # the checkpoint came from fewer processes: a fresh stream, distinct per rank and per epoch
        torch.manual_seed(job_seed(config, "global") + rank + 7919 * position["epoch"])


def train(config: RunConfig, run_dir: str | Path, *, rank: int = 0, world_size: int = 1,
          progress: Any = None) -> dict[str, Any]:
    """Pretrain on this process (one of `world_size`; the process group must already be initialised when
    `world_size` > 1), resuming from ``run_dir/checkpoint.pt`` when present. Rank 0 writes the per-epoch
    checkpoint and ``run_dir/backbone.pt`` and returns the summary; every rank returns its final backbone
    state under ``"state"`` (used by tests to compare ranks)."""
    from decathlon.networks.checkpoint import save_checkpoint
    from decathlon.networks.factory import create_backbone

    spec = _source_spec(config)
    device = resolve_device(config.device)
    if device.type == "cpu":
        retain_freed_memory()
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    seed_everything(config)  # same initialisation on every rank
    model = create_backbone(config.backbone, spec.num_classes, width=config.width)
    place_model(model, device, config)
    torch.manual_seed(job_seed(config, "global") + rank)  # per-rank augmentation streams
    train_loader, sampler, eval_loader = _loaders(config, spec, rank, world_size, device)
    weight_decay = spec.weight_decay if config.weight_decay is None else config.weight_decay
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=weight_decay, **sgd_options(config, device))
    scheduler = build_scheduler(optimizer, config.schedule, config.epochs, milestones=config.milestones,
                                gamma=config.lr_gamma)
    checkpoint_path = Path(run_dir) / CHECKPOINT
    position: dict[str, Any] = {"epoch": 0, "history": [], "wall_time_s": 0.0}
    # every rank reads the file before the first collective; rank 0 rewrites it only after a gather that
    # needs every rank, so no rank can read a newer checkpoint than the others
    if checkpoint_path.is_file():
        position = load_run_checkpoint(checkpoint_path, config, model, optimizer, scheduler, None, {})
        _restore_rank_rng(position, config, rank)
    resumed_from = position["epoch"]
    net: nn.Module = model
    if world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    session_start = time.perf_counter()
    for epoch in range(position["epoch"], config.epochs):
        if progress is not None and rank == 0:
            progress("epoch_start", epoch=epoch + 1, epochs=config.epochs)
        sampler.set_epoch(epoch)
        net.train()
        loss_sum = torch.zeros((), device=device)
        seen = 0
        with worker_batches(train_loader) as batches:
            for batch in batches:
                images, labels = batch_to_device(batch, device, config.channels_last)
                loss = F.cross_entropy(net(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * labels.shape[0]
                seen += labels.shape[0]
        scheduler.step()
        record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(seen, 1)}
        position = {"epoch": epoch + 1, "history": [*position["history"], record],
                    "wall_time_s": position["wall_time_s"] + time.perf_counter() - session_start,
                    "world_size": world_size}
        session_start = time.perf_counter()
        rank_rng = _rank_rng_states(rank, world_size)  # a collective: every rank takes part
        if rank == 0:
            if rank_rng is not None:
                position["rank_rng"] = rank_rng
            save_run_checkpoint(checkpoint_path, model, optimizer, scheduler, None, {}, config, position)
            if progress is not None:
                progress("epoch_end", **record)
    if world_size > 1:
        # DDP averages gradients (parameters stay equal) but each rank updates its own BN statistics;
        # rank 0's, which are saved, become every rank's
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    summary: dict[str, Any] = {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if rank == 0:
        top1 = _top1(model, eval_loader, device, config.channels_last)
        path = Path(run_dir) / BACKBONE_FILE
        meta = {"backbone": config.backbone, "width": config.width, "num_classes": spec.num_classes,
                "domain": spec.name, "suite": config.suite, "epochs": config.epochs, "seed": config.seed}
        save_checkpoint(path, model_state=summary["state"], config=meta,
                        extra={"top1": top1, "eval_split": config.eval_split, "world_size": world_size})
        summary.update({"checkpoint": str(path), "top1": top1, "eval_split": config.eval_split,
                        "epochs": config.epochs, "world_size": world_size, "history": position["history"],
                        "resumed_from_epoch": resumed_from,
                        "wall_time_s": position["wall_time_s"] + time.perf_counter() - session_start})
    return summary


def run(config: RunConfig, run_dir: str | Path, *, progress: Any = None) -> dict[str, Any]:
    """Pretrain in this process (or as one rank of a torchrun launch), resuming from the run dir's
    checkpoint, and return the JSON summary (checkpoint path, source top1 on the evaluation split, epochs,
    per-epoch history, ``resumed_from_epoch`` (0 for a fresh run), wall time summed over sessions)."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    initialised = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolve_device(config.device).type == "cuda" else "gloo"
        dist.init_process_group(backend)  # torchrun's env:// rendezvous
        initialised = True
    try:
        with backend_settings(config):
            summary = train(config, run_dir, rank=rank, world_size=world_size, progress=progress)
    finally:
        if initialised:
            dist.destroy_process_group()
    summary.pop("state")
    return summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(rank: int, world_size: int, port: int, config_dict: dict, run_dir: str, states_dir: str | None):
    """Entry point of one process started by :func:`spawn` (module level so that it can be pickled)."""
    config = RunConfig.from_dict(config_dict)
    backend = "nccl" if resolve_device(config.device).type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        with backend_settings(config):
            summary = train(config, run_dir, rank=rank, world_size=world_size)
    finally:
        dist.destroy_process_group()
    if states_dir is not None:  # tests compare the final weights of every rank
        torch.save(summary["state"], Path(states_dir) / f"rank{rank}.pt")
    if rank == 0:
        summary.pop("state")
        atomic_write_json(Path(run_dir) / "pretrain_summary.json", summary)


def spawn(config: RunConfig, run_dir: str | Path, nprocs: int, *, states_dir: str | Path | None = None
          ) -> dict[str, Any]:
    """Pretrain with `nprocs` local processes (torch.multiprocessing, DDP) and return rank 0's summary."""
    import json

    import torch.multiprocessing as mp

    if nprocs < 1:
        raise ConfigError(f"nprocs={nprocs}; expected >= 1")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    config_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()}
    mp.spawn(_spawned, args=(nprocs, _free_port(), config_dict, str(run_dir),
                             None if states_dir is None else str(states_dir)), nprocs=nprocs, join=True)
    return json.loads((Path(run_dir) / "pretrain_summary.json").read_text())


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m decathlon.pretrain",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, help="the source domain's data folder (decathlon-1.0)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (backbone.pt goes there)")
    parser.add_argument("--suite", default="decathlon", help="suite of the source domain (decathlon or mini)")
    parser.add_argument("--domain", default="imagenet12", help="the source domain")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--width", type=float, default=None, help="ResNet-26 width multiplier")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (split over processes)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--schedule", default=None, help="faithful, multistep or cosine")
    parser.add_argument("--protocol", default="train->val", help="train->val (default) or trainval->test")
    parser.add_argument("--limit-train-images", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--device", default=None, help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nproc", type=int, default=1, help="local processes to spawn (without torchrun)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """RunConfig of a pretraining run from the command line (unset options keep the RunConfig defaults)."""
    values = {"suite": args.suite, "domain": args.domain, "method": "pretrain", "data_root": args.data_root,
              "protocol": args.protocol, "seed": args.seed}
    for key in ("epochs", "width", "backbone", "batch_size", "lr", "schedule", "limit_train_images",
                "num_workers", "device"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return RunConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
            summary = spawn(config, args.out, args.nproc)
        else:
            summary = run(config, args.out)
    except HarnessError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", 0)) == 0:
        top1 = "unlabelled" if summary["top1"] is None else f"top1 {summary['top1']:.2f}%"
        print(f"wrote {summary['checkpoint']} ({summary['eval_split']} {top1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
