"""The whole performance table in one command (CPU: a few minutes; GPU when there is one).

    python benchmarks/run_all_benchmarks.py [--quick] [--methods NAME ...] [--images 2048] [--json out.json]

Sections, each in its own fresh process so that its peak memory is its own:

1. loader: images/s of the reference PIL loader vs the decode-once cache (benchmarks/bench_data.py),
   0 and 2 workers, batch 128, faithful CROP geometry; plus the one-off cache build.
2. methods: training images/s of every Decathlon method at batch 128, 64 px, ResNet-26 (width 1), one
   optimiser step through the engine's ``train_step`` (method forward, loss, extra loss, backward, SGD).
3. spottune-step: SpotTune's training step (its own dense mixing, ``torch.lerp``) vs a plain dense
   two-path implementation of the same model (the reference structure: both blocks computed, mixed as
   ``out * (1 - m) + out_ * m``), on the same modules and the same Gumbel sample; the outputs and every
   gradient are compared (max abs difference printed).
4. eval: images/s of SpotTune evaluation, dense (both paths, mixed) vs sparse (each block on its images),
   72 px centre crops, batch 128, under the routings of benchmarks/bench_models.py.

Peak memory: ``resource.getrusage`` max RSS of the section's process (and its loader workers), and
``torch.cuda.max_memory_allocated`` on a GPU. Times are medians over ``--repeats``; the load average is
printed before and after, because the machine may be shared.
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
WARMUP_BATCH = 16  # images of the untimed first step of each method (allocations, lazy initialisation)


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
    from decathlon.domains import get_domain
    from decathlon.engine import build_backbone, build_optimizer
    from decathlon.methods import get_method

    method, spec = get_method(name), get_domain("aircraft")
    torch.manual_seed(0)
    model = method.build(build_backbone(method, config, NUM_CLASSES), spec, NUM_CLASSES, config).to(_device())
    if config.channels_last and _device().type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer, _ = build_optimizer(method, model, config, spec)
    return method, model, optimizer


def _batch(px: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 3, px, px, generator=g)
    y = torch.randint(0, NUM_CLASSES, (BATCH,), generator=g)
    return x.to(_device()), y.to(_device())


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


def section_methods(names: list[str], repeats: int) -> dict[str, Any]:
    """Training images/s per method: one engine train_step at batch 128, 64 px, ResNet-26."""
    from decathlon.engine import train_step

    x, y = _batch(TRAIN_PX)
    rows = []
    for name in names:
        config = _config(name)
        method, model, optimizer = _model_and_optimizer(name, config)
        method.train_mode(model, config)
        g = torch.Generator().manual_seed(0)

        def step(n=BATCH, method=method, model=model, optimizer=optimizer, config=config, g=g):
            train_step(method, model, model, x[:n], y[:n], optimizer, config, device=_device(), generator=g)

        seconds = median_seconds(step, repeats, warmup=lambda step=step: step(WARMUP_BATCH))
        rows.append({"method": name, "seconds": seconds, "images_per_s": BATCH / seconds})
        del model, optimizer
    return {"rows": rows, "memory": peak_memory()}


def reference_dense_forward(model: Any, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The reference SpotTune training forward on `model`'s modules: both blocks on the whole batch,
    mixed as ``out * (1 - m) + out_ * m`` (the official code's structure), same Gumbel draw."""
    policy = model.decide(model.policy_net(x), generator)
    h = model.stem(x)
    for index, (frozen, tuned) in enumerate(zip(model.blocks, model.tuned_blocks, strict=True)):
        mask = policy[:, index].view(-1, 1, 1, 1)
        h = frozen(h) * (1 - mask) + tuned(h) * mask
    return model.classifier(model.head(h))


def section_spottune_step(repeats: int) -> dict[str, Any]:
    """SpotTune's train step vs the dense two-path reference: time, output and gradient agreement."""
    import torch.nn.functional as F

    config = _config("spottune")
    _, model, optimizer = _model_and_optimizer("spottune", config)
    model.train()
    x, y = _batch(TRAIN_PX)

    def harness(seed: int = 0) -> torch.Tensor:
        logits, _ = model(x, generator=torch.Generator().manual_seed(seed))
        return logits

    def reference(seed: int = 0) -> torch.Tensor:
        return reference_dense_forward(model, x, torch.Generator().manual_seed(seed))

    grads = {}
    for name, forward in (("harness", harness), ("reference", reference)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        logits = forward()
        F.cross_entropy(logits.float(), y).backward()
        grads[name] = (logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()
                                         if p.grad is not None})
    (l_h, g_h), (l_r, g_r) = grads["harness"], grads["reference"]
    same_params = sorted(g_h) == sorted(g_r)
    grad_diff = max(float((g_h[n] - g_r[n]).abs().max()) for n in g_h) if same_params else float("inf")
    grad_scale = max(float(g.abs().max()) for g in g_r.values())

    def timed(forward):
        def step():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(forward().float(), y).backward()
            optimizer.step()
        return step

    # the gradient check above was the warm-up of both variants
    times = round_robin({"SpotTune (harness: torch.lerp mixing)": timed(harness),
                         "dense two-path reference (mask multiply-add)": timed(reference)}, repeats)
    (_, t_h), (_, t_r) = times.items()
    rows = [{"implementation": name, **t, "images_per_s": BATCH / t["seconds"]} for name, t in times.items()]
    return {"rows": rows, "speedup": t_r["seconds"] / t_h["seconds"],
            "cpu_speedup": t_r["cpu_seconds"] / t_h["cpu_seconds"],
            "logits_max_abs_diff": float((l_h - l_r).abs().max()), "grad_max_abs_diff": grad_diff,
            "grad_max_abs": grad_scale, "same_parameters": same_params, "memory": peak_memory()}


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
    x, _ = _batch(EVAL_PX)
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


def _run_isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run a section in a fresh (spawned) process: its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


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
    lines = [f"| method (train step, batch {BATCH}, {TRAIN_PX} px, ResNet-26) | ms/step | images/s |",
             "|---|---|---|"]
    lines += [f"| {r['method']} | {1000 * r['seconds']:.0f} | {r['images_per_s']:.1f} |"
              for r in result["rows"]]
    return lines + [f"peak memory: {_memory(result)}"]


def render_spottune_step(s: dict[str, Any]) -> list[str]:
    lines = [f"| SpotTune training step (batch {BATCH}, {TRAIN_PX} px) | ms/step | images/s |",
             "|---|---|---|"]
    lines += [f"| {r['implementation']} | {1000 * r['seconds']:.0f} | {r['images_per_s']:.1f} |"
              for r in s["rows"]]
    return lines + [f"speed-up {s['speedup']:.2f}x wall, {s['cpu_speedup']:.2f}x CPU time (target >= 1.25); "
                    f"logits max |diff| {s['logits_max_abs_diff']:.2e}, "
                    f"gradients max |diff| {s['grad_max_abs_diff']:.2e} "
                    f"(largest gradient {s['grad_max_abs']:.2e}), "
                    f"same parameters receive gradients: {s['same_parameters']}",
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
    jobs = {"loader": (section_loader, args.images, args.epochs, start_method),
            "methods": (section_methods, args.methods or trainable_methods(), args.repeats),
            "spottune_step": (section_spottune_step, max(args.repeats, 2)),
            "eval": (section_eval, max(args.repeats, 3))}
    results: dict[str, Any] = {}
    failed = []
    start = time.perf_counter()
    for name in SECTIONS:
        if name not in args.sections:
            continue
        began = time.perf_counter()
        try:
            results[name] = _run_isolated(*jobs[name])
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
