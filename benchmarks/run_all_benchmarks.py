"""The whole performance table in one command (CPU: a few minutes; GPU when there is one).

    python benchmarks/run_all_benchmarks.py [--quick] [--methods NAME ...] [--images 2048] [--json out.json]

Sections, each in its own fresh process so that its peak memory is its own:

1. loader: images/s of the reference PIL loader vs the decode-once cache (benchmarks/bench_data.py),
   0 and 2 workers, batch 128, faithful CROP geometry; plus the one-off cache build.
2. methods: training images/s of every Decathlon method of the registry at batch 128, 64 px, ResNet-26
   (width 1, or ``--width``), one optimiser step through the engine's ``train_step`` (method forward,
   loss, extra loss, backward, optimiser step), each method in a process of its own (its peak memory),
   with its step time relative to ``finetune``'s in the same run.
3. spottune-step: SpotTune's training step as the engine runs it (channels_last, ``torch.lerp`` mixing)
   vs a plain dense two-path implementation of the same model (the reference structure in the default
   memory format: both blocks computed, mixed as ``out * (1 - m) + out_ * m``), on identical weights and
   the same Gumbel sample, plus the reference in channels_last; the outputs and every gradient are
   compared (max abs difference printed).
4. eval: images/s of SpotTune evaluation, dense (both paths, mixed) vs sparse (each block on its images),
   72 px centre crops, batch 128, under the routings of benchmarks/bench_models.py.

Every section process handles host memory as the engine does on the CPU
(``decathlon.engine.retain_freed_memory``: freed memory is reused instead of faulted in again; set
``SPOTTUNE_SYSTEM_MALLOC=1`` to measure with glibc's defaults). Peak memory: ``resource.getrusage`` max
RSS of the section's process (and its loader workers), and ``torch.cuda.max_memory_allocated`` on a GPU.
Times: the methods section takes the median over ``--repeats``, the SpotTune step and evaluation sections
the minimum over calls interleaved round-robin; the load average is printed before and after, because the
machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

BATCH = 128  # images per training step (the reference recipe)
TRAIN_PX = 64  # training crops of the CROP domains
EVAL_PX = 72  # evaluation centre crops
NUM_CLASSES = 100  # aircraft


# ------------------------------------------------------------------------------------------------ helpers


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: Callable[[], Any] | None = None) -> float:
    """Median wall time of fn() in seconds (CUDA synchronised around each call), after one call of
    `warmup` (default: fn itself; a small-batch call warms the allocator and kernels for less time)."""
    (warmup or fn)()
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def round_robin(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Per variant: minimum wall seconds, and minimum process CPU seconds (all threads), per call.

    The calls are interleaved so that a shared machine's load spreads evenly over the variants; CPU time
    does not count time spent waiting for a core, so it is the less load-dependent measure of work.
    """
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            _sync()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"seconds": min(wall[name]), "cpu_seconds": min(cpu[name])} for name in fns}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory(workers: bool = False) -> dict[str, float]:
    """Peak resident memory of this process in MiB (with `workers`: also the largest finished child, i.e.
    a DataLoader worker); CUDA peak allocation on a GPU."""
    out = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB
    if workers:
        out["children_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if torch.cuda.is_available():
        out["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def machine() -> dict[str, Any]:
    """nproc, CPU model, torch version, GPU, load average."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "gpu": gpu, "load": os.getloadavg()[0]}


def _config(method: str, **kw: Any):
    from decathlon.config import RunConfig

    # the engine's own defaults: AMP and channels_last on CUDA, ignored on the CPU
    return RunConfig(method=method, domain="aircraft", batch_size=BATCH, device=str(_device()), **kw)


def _model_and_optimizer(name: str, config: Any):
    """`name`'s model (seeded: the same weights for the same config) placed as the engine places it, on
    ``config.device``."""
    from decathlon.domains import get_domain
    from decathlon.engine import build_backbone, build_optimizer, place_model, resolve_device
    from decathlon.methods import get_method

    method, spec = get_method(name), get_domain("aircraft")
    torch.manual_seed(0)
    model = method.build(build_backbone(method, config, NUM_CLASSES), spec, NUM_CLASSES, config)
    place_model(model, resolve_device(config.device), config)
    optimizer, _ = build_optimizer(method, model, config, spec)
    return method, model, optimizer


def _batch(px: int, channels_last: bool, seed: int = 0, *, batch: int = BATCH,
           device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of `batch` images on `device` (default: CUDA when available), in the engine's memory
    format for `channels_last`."""
    from decathlon.engine import batch_to_device

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, px, px, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return batch_to_device((x, y), device or _device(), channels_last)


# ----------------------------------------------------------------------------------------------- sections


def section_loader(images: int, epochs: int, start_method: str) -> dict[str, Any]:
    """Loader images/s, PIL vs cache, 0 and 2 workers (bench_data). `start_method` is the calling
    interpreter's default: a spawned section process would otherwise spawn its DataLoader workers too."""
    import multiprocessing

    import bench_data

    multiprocessing.set_start_method(start_method, force=True)
    torch.set_num_threads(1)  # loaders compared, not intra-op threads
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        root = bench_data.write_domain(Path(tmp), images)
        rows = bench_data.bench_loaders(root, workers=(0, 2), epochs=epochs, cache_dir=Path(tmp) / "cache")
    return {"rows": rows, "memory": peak_memory(workers=True)}


def trainable_methods(setting: str = "decathlon") -> list[str]:
    """Registered methods that train in `setting`, in registration order."""
    from decathlon.methods import all_methods

    return [m.name for m in all_methods().values() if m.trains and setting in m.settings]


def section_method(name: str, repeats: int, width: float) -> dict[str, Any]:
    """One method's training step (the engine's train_step at batch 128, 64 px, ResNet-26 at `width`):
    median seconds after a full-batch warm-up step, and the peak memory of the process running it alone."""
    from decathlon.engine import train_step

    config = _config(name, width=width)
    x, y = _batch(TRAIN_PX, config.channels_last)
    method, model, optimizer = _model_and_optimizer(name, config)
    method.train_mode(model, config)
    g = torch.Generator().manual_seed(0)
    cpu: list[float] = []  # process CPU seconds per call (all threads): less load-dependent than wall time

    def step() -> None:
        start = time.process_time()
        train_step(method, model, model, x, y, optimizer, config, device=_device(), generator=g)
        cpu.append(time.process_time() - start)

    seconds = median_seconds(step, repeats)
    return {"method": name, "seconds": seconds, "images_per_s": BATCH / seconds,
            "cpu_seconds": statistics.median(cpu[1:]), "memory": peak_memory()}  # cpu[0]: the warm-up


def run_methods(names: list[str], repeats: int, width: float) -> dict[str, Any]:
    """Section 2: every method in a process of its own (its peak memory is its own), ``finetune`` first;
    each row also gives its step time relative to ``finetune``'s in the same run (the target of the
    adapter-like methods: <= 1.3x)."""
    names = ["finetune"] + [n for n in names if n != "finetune"]
    rows = [_run_isolated(section_method, name, repeats, width) for name in names]
    for row in rows:
        row["vs_finetune"] = row["seconds"] / rows[0]["seconds"]
        row["cpu_vs_finetune"] = row["cpu_seconds"] / rows[0]["cpu_seconds"]
    memory = {"rss_mib": max(r["memory"]["rss_mib"] for r in rows)}
    if any("cuda_mib" in r["memory"] for r in rows):
        memory["cuda_mib"] = max(r["memory"].get("cuda_mib", 0.0) for r in rows)
    return {"rows": rows, "memory": memory, "width": width}


def _logits_and_grads(model: Any, forward: Callable[[], torch.Tensor], y: torch.Tensor):
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    logits = forward()
    F.cross_entropy(logits.float(), y).backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()
                             if p.grad is not None}


def _max_diff(a: tuple, b: tuple) -> dict[str, Any]:
    (logits_a, grads_a), (logits_b, grads_b) = a, b
    same = sorted(grads_a) == sorted(grads_b)
    grad = max(float((grads_a[n] - grads_b[n]).abs().max()) for n in grads_a) if same else float("inf")
    return {"logits": float((logits_a - logits_b).abs().max()), "grads": grad, "same_parameters": same}


def section_spottune_step(repeats: int) -> dict[str, Any]:
    """SpotTune's training step as the engine runs it (channels_last, ``torch.lerp`` mixing) vs the plain
    dense two-path reference (default memory format, mask multiply-add:
    ``spottune.model.reference_dense_forward``) on identical weights and the same Gumbel sample; plus the
    reference in channels_last, which shows how much of the difference is the memory format. Outputs and
    gradients are compared."""
    import torch.nn.functional as F

    from spottune.model import reference_dense_forward

    config = _config("spottune")
    _, fast, fast_optimizer = _model_and_optimizer("spottune", config)  # the engine's placement
    _, plain, plain_optimizer = _model_and_optimizer("spottune", config.replace(channels_last=False))
    for model in (fast, plain):
        model.train()
    x, y = _batch(TRAIN_PX, channels_last=False)
    x_fast, _ = _batch(TRAIN_PX, channels_last=config.channels_last)

    def harness(model: Any, images: torch.Tensor) -> Callable[[], torch.Tensor]:
        return lambda: model(images, generator=torch.Generator().manual_seed(0))[0]

    def reference(model: Any, images: torch.Tensor) -> Callable[[], torch.Tensor]:
        return lambda: reference_dense_forward(model, images, torch.Generator().manual_seed(0))

    # identical weights; then outputs and gradients (these calls also warm every variant up)
    pairs = zip(fast.state_dict().values(), plain.state_dict().values(), strict=True)
    same_weights = all(torch.equal(a, b) for a, b in pairs)
    ref = _logits_and_grads(plain, reference(plain, x), y)
    vs_reference = _max_diff(_logits_and_grads(fast, harness(fast, x_fast), y), ref)
    same_layout = _max_diff(_logits_and_grads(plain, harness(plain, x), y), ref)
    grad_scale = max(float(g.abs().max()) for g in ref[1].values())
    _logits_and_grads(fast, reference(fast, x_fast), y)

    def timed(model: Any, optimizer: Any, forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(forward().float(), y).backward()
            optimizer.step()
        return step

    layout = "channels_last" if config.channels_last else "default layout"
    variants = {
        f"SpotTune, the harness's step ({layout}, torch.lerp mixing)":
            timed(fast, fast_optimizer, harness(fast, x_fast)),
        "plain dense two-path reference (default layout, multiply-add)":
            timed(plain, plain_optimizer, reference(plain, x)),
        f"the reference in {layout} (what the memory format alone gives)":
            timed(fast, fast_optimizer, reference(fast, x_fast)),
    }
    times = round_robin(variants, repeats)
    (_, t_h), (_, t_r), _ = times.items()
    rows = [{"implementation": name, **t, "images_per_s": BATCH / t["seconds"]} for name, t in times.items()]
    return {"rows": rows, "speedup": t_r["seconds"] / t_h["seconds"],
            "cpu_speedup": t_r["cpu_seconds"] / t_h["cpu_seconds"], "same_weights": same_weights,
            "vs_reference": vs_reference, "same_layout": same_layout, "grad_max_abs": grad_scale,
            "memory": peak_memory()}


def _routings(batch: int, blocks: int) -> dict[str, torch.Tensor]:
    try:
        from bench_models import routings  # the model engineer's routings, when present
    except ImportError:
        g = torch.Generator().manual_seed(0)
        return {"random-50%": (torch.rand(batch, blocks, generator=g) < 0.5).float()}
    return routings(batch, blocks, torch.Generator().manual_seed(0))


def section_eval(repeats: int) -> dict[str, Any]:
    """SpotTune evaluation images/s, dense vs sparse routing, at 72 px, plus the plain network."""
    config = _config("spottune")
    _, model, _ = _model_and_optimizer("spottune", config)
    model.eval()
    x, _ = _batch(EVAL_PX, config.channels_last)
    # every image on the pretrained path, sparse: exactly one ResNet-26 (no policy network)
    variants = {("plain ResNet-26 (one path)", "-"): torch.zeros(BATCH, model.num_blocks, device=_device())}
    for name, policy in _routings(BATCH, model.num_blocks).items():
        variants[("dense two-path", name)] = variants[("sparse routing", name)] = policy.to(_device())
    fns = {key: (lambda p=p, s=key[0] != "dense two-path": model(x, p, sparse=s))
           for key, p in variants.items()}
    with torch.inference_mode():
        for fn in fns.values():  # warm-up
            fn()
        times = round_robin(fns, repeats)
    rows = [{"model": model_name, "routing": routing, **t, "images_per_s": BATCH / t["seconds"]}
            for (model_name, routing), t in times.items()]
    return {"rows": rows, "memory": peak_memory()}


# ------------------------------------------------------------------------------------------------ report


def _section(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """A section's process: host memory handled as the engine does it on the CPU, then the section."""
    from decathlon.engine import retain_freed_memory

    if _device().type == "cpu":
        retain_freed_memory()
    return fn(*args)


def _run_isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run a section in a fresh (spawned) process: its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_section, fn, *args).result()


def _memory(result: dict[str, Any]) -> str:
    m = result["memory"]
    text = f"{m['rss_mib']:.0f} MiB"
    if m.get("children_rss_mib"):
        text += f" (largest loader worker {m['children_rss_mib']:.0f} MiB)"
    if "cuda_mib" in m:
        text += f", CUDA {m['cuda_mib']:.0f} MiB"
    return text


def machine_line(info: dict[str, Any]) -> str:
    """One line naming the machine and its load."""
    return (f"machine: {info['nproc']} CPUs ({info['cpu']}), torch {info['torch']}, "
            f"{info['threads']} intra-op threads, GPU {info['gpu'] or 'none'}; "
            f"load average {info['load']:.1f} at the start")


def render_loader(result: dict[str, Any]) -> list[str]:
    import bench_data

    return bench_data.loader_table(result["rows"]) + [f"peak memory: {_memory(result)}"]


def render_methods(result: dict[str, Any]) -> list[str]:
    lines = [f"| method (train step, batch {BATCH}, {TRAIN_PX} px, ResNet-26 width {result['width']}) | "
             "ms/step | images/s | vs finetune (wall, CPU) | peak memory |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {1000 * r['seconds']:.0f} | {r['images_per_s']:.1f} | "
              f"{r['vs_finetune']:.2f}x, {r['cpu_vs_finetune']:.2f}x | {_memory(r)} |"
              for r in result["rows"]]
    return lines + ["vs finetune: step time (median wall; median process CPU time, the less load-dependent) "
                    "over finetune's in this run (target for the new methods: <= 1.3x); peak memory: each "
                    "method's own process"]


def render_spottune_step(s: dict[str, Any]) -> list[str]:
    lines = [f"| SpotTune training step (batch {BATCH}, {TRAIN_PX} px) | ms/step | images/s |",
             "|---|---|---|"]
    lines += [f"| {r['implementation']} | {1000 * r['seconds']:.0f} | {r['images_per_s']:.1f} |"
              for r in s["rows"]]
    ref, same = s["vs_reference"], s["same_layout"]
    return lines + [f"harness vs plain reference: {s['speedup']:.2f}x wall, {s['cpu_speedup']:.2f}x CPU time "
                    "(target >= 1.25)",
                    f"identical starting weights: {s['same_weights']}; same parameters receive gradients: "
                    f"{ref['same_parameters'] and same['same_parameters']}",
                    f"harness vs reference, float32: logits max |diff| {ref['logits']:.2e}, gradients "
                    f"{ref['grads']:.2e} (largest gradient {s['grad_max_abs']:.2e}); in the same layout: "
                    f"logits {same['logits']:.2e}, gradients {same['grads']:.2e}",
                    f"peak memory: {_memory(s)}"]


def render_eval(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    lines = [f"| evaluation (batch {BATCH}, {EVAL_PX} px) | routing | ms/batch | images/s |",
             "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['routing']} | {1000 * r['seconds']:.0f} | {r['images_per_s']:.1f} |"
              for r in rows]
    plain = rows[0]["seconds"]
    for routing in sorted({r["routing"] for r in rows} - {"-"}):
        dense = next(r for r in rows if r["routing"] == routing and r["model"] == "dense two-path")
        sparse = next(r for r in rows if r["routing"] == routing and r["model"] == "sparse routing")
        lines.append(f"{routing}: sparse {dense['seconds'] / sparse['seconds']:.2f}x dense wall, "
                     f"{dense['cpu_seconds'] / sparse['cpu_seconds']:.2f}x CPU time (target >= 1.7); "
                     f"{sparse['seconds'] / plain:.2f}x the wall time of one network")
    return lines + [f"peak memory: {_memory(result)}"]


SECTIONS = ("loader", "methods", "spottune_step", "eval")
RENDER = {"loader": render_loader, "methods": render_methods, "spottune_step": render_spottune_step,
          "eval": render_eval}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", nargs="+", default=["loader", "methods", "spottune_step", "eval"],
                   choices=["loader", "methods", "spottune_step", "eval"])
    p.add_argument("--methods", nargs="+", default=None, help="methods of section 2 (default: every "
                   "Decathlon method that trains)")
    p.add_argument("--width", type=float, default=1.0, help="ResNet-26 width of section 2 (a CPU may need "
                   "less than the real 1.0)")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed repeats per training measurement (median); evaluation uses at least 3")
    p.add_argument("--images", type=int, default=2048, help="images of the loader benchmark's domain")
    p.add_argument("--epochs", type=int, default=2, help="timed loader epochs")
    p.add_argument("--quick", action="store_true", help="1 repeat, 3 methods, 1024 loader images")
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.repeats, args.images = 1, 1024
        args.methods = args.methods or ["finetune", "spottune", "feature-extractor"]
    info = machine()
    print(machine_line(info), flush=True)
    start_method = multiprocessing.get_start_method()
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "loader": lambda: _run_isolated(section_loader, args.images, args.epochs, start_method),
        "methods": lambda: run_methods(args.methods or trainable_methods(), args.repeats, args.width),
        "spottune_step": lambda: _run_isolated(section_spottune_step, max(args.repeats, 2)),
        "eval": lambda: _run_isolated(section_eval, max(args.repeats, 3))}
    results: dict[str, Any] = {}
    failed = []
    start = time.perf_counter()
    for name in SECTIONS:
        if name not in args.sections:
            continue
        began = time.perf_counter()
        try:
            results[name] = jobs[name]()
        except Exception as e:  # one broken section (e.g. a model API change) must not hide the others
            if args.debug:
                raise
            failed.append(name)
            print(f"\nsection {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            continue
        took = f"({time.perf_counter() - began:.0f} s)"
        print("", *RENDER[name](results[name]), took, sep="\n", flush=True)
    info["load_after"] = os.getloadavg()[0]
    info["seconds"] = time.perf_counter() - start
    print(f"\ntotal {info['seconds']:.0f} s; load average {info['load_after']:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
