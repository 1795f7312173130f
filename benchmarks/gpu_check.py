"""One prepared check of the GPU path: the `gpu` tests, images/s side by side, projected GPU-hours.

    python benchmarks/gpu_check.py [--device cuda] [--quick] [--out results/gpu-check]

Meant for the rare hour on a GPU (under 8 minutes on one GPU; ``--device cpu --quick`` in under 3 minutes
checks the script itself). In order:

1. the environment (torch, CUDA, cuDNN, GPU name and memory, CPUs), then the tests marked ``gpu``
   (``tests/test_gpu.py``, run by pytest in a subprocess; skipped without CUDA);
2. images/s of one training step (the engine's ``train_step``: forward, loss, backward, SGD) at batch 128,
   64 px, ResNet-26 width 1, of every Decathlon method that trains, fp32 and AMP (float16 autocast + grad
   scaler; CUDA only) with channels_last, and for spottune, finetune, feature-extractor and the adapters
   methods (when registered) also the default memory format; each with its step time relative to
   finetune's (same precision and memory format) and its peak memory;
3. the GPU execution settings, each switched off alone on SpotTune's step (``fused_sgd``, ``device_rng``,
   ``cudnn_benchmark``) and ``deterministic`` on;
4. SpotTune evaluation images/s at 72 px: one plain ResNet-26, dense two-path mixing and sparse routing
   under the routings of ``benchmarks/bench_models.py``;
5. the data path: the reference PIL loader (0 and k workers, batches copied to the device) against the
   decode-once cache (on CUDA: the split resident on the GPU) on a generated aircraft-like domain of
   20,000 JPEGs 72 px high (``benchmarks/bench_data.py``), plus the one-off cache build;
6. the GPU-hours of the full Decathlon table (every Decathlon method x 9 targets, 1 seed,
   ``trainval->test``, ``RunConfig().epochs`` epochs) projected from those rates and the split sizes of
   ``decathlon.domains``.

Each measurement builds its model afresh; "peak MiB" is ``torch.cuda.max_memory_allocated`` over that
measurement (CUDA), or the process's maximum resident memory so far (CPU: it never goes down). Training
times are the median of ``--repeats`` steps after a full-batch warm-up step (which also lets cuDNN autotune
that shape); evaluation times the minimum over interleaved calls. Everything is written to
``--out``/report.json and report.md. The exit code is 1 when the gpu tests or a section failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from run_all_benchmarks import (  # noqa: E402
    BATCH,
    EVAL_PX,
    TRAIN_PX,
    _batch,
    _model_and_optimizer,
    _routings,
    machine,
    median_seconds,
    round_robin,
)

from decathlon.config import RunConfig  # noqa: E402
from decathlon.engine import backend_settings, device_generators, resolve_device, train_step  # noqa: E402
from decathlon.errors import HarnessError  # noqa: E402
from decathlon.io import atomic_write_json, atomic_write_text  # noqa: E402

# methods measured in both memory formats (the rest of the Decathlon methods in channels_last only)
SIDE_BY_SIDE = ("spottune", "finetune", "feature-extractor", "series-adapters", "parallel-adapters")
OPTIONS_METHOD = "spottune"  # the GPU settings are measured on SpotTune's step (routing noise included)
GPU_OPTIONS = (  # (label, RunConfig overrides), the first is the engine's default
    ("engine defaults", {}),
    ("fused_sgd=false", {"fused_sgd": False}),
    ("device_rng=false", {"device_rng": False}),
    ("cudnn_benchmark=false", {"cudnn_benchmark": False}),
    ("deterministic=true", {"deterministic": True}),
)
DATA_IMAGES = 20_000  # a realistic split: the Decathlon's train splits hold 1,020 to 47,217 images
NON_SQUARE_ASPECT = 2.0  # RESIZE-geometry images (Daimler) are 72 px wide x 144 px high (decathlon.md)
PROJECTION_PRESET = "faithful"  # the transforms of the Decathlon run projected (input sizes per domain)
PROJECTION_PROTOCOL = "trainval->test"  # the official protocol: train on train+val, evaluate on test
DEFAULT_OUT = REPO / "results" / "gpu-check"
SECTIONS = ("train", "options", "eval", "data")  # after the environment and the gpu tests, in this order


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one check measures (the defaults are the real Decathlon sizes)."""

    device: torch.device
    batch: int = BATCH  # images per training step and per evaluation batch
    width: float = 1.0  # ResNet-26 channel width
    images: int = DATA_IMAGES  # images of the generated domain of the data-path section
    repeats: int = 3  # timed training steps per measurement (median); evaluation: interleaved calls (min)
    loader_workers: int = 8  # PIL DataLoader workers compared with 0 (capped by the CPU count)
    data_epochs: int = 1  # timed epochs per loader
    methods: tuple[str, ...] | None = None  # None: every Decathlon method that trains

    @property
    def precisions(self) -> tuple[bool, ...]:
        """AMP off and on; AMP only exists on CUDA (the engine ignores it on the CPU)."""
        return (False, True) if self.device.type == "cuda" else (False,)


# ------------------------------------------------------------------------------------------------ helpers


def _precision(amp: bool) -> str:
    return "AMP" if amp else "fp32"


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    """CUDA: peak allocation since the last reset; CPU: the process's maximum resident memory so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _run_config(settings: Settings, method: str, **values: Any) -> RunConfig:
    """The engine's config of one measurement; `amp` is always given explicitly (its default may change)."""
    return RunConfig(method=method, domain="aircraft", batch_size=settings.batch,
                     eval_batch_size=settings.batch, width=settings.width, device=str(settings.device),
                     **values)


def decathlon_methods() -> list[Any]:
    """Registered methods of the Decathlon table, in registration order."""
    from decathlon.methods import all_methods

    return [m for m in all_methods().values() if "decathlon" in m.settings]


# ------------------------------------------------------------------------------------------ 1. environment


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, the GPU (name, memory, capability) and the CPUs; the same keys on every machine."""
    info = {**machine(), "python": platform.python_version(), "device": str(device),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available()
            else None, "gpu_memory_gib": None, "gpu_capability": None,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30,
                    gpu_capability=f"{props.major}.{props.minor}")
    return info


def run_gpu_tests(timeout: float = 420.0) -> dict[str, Any]:
    """``pytest -m gpu tests/test_gpu.py`` in a subprocess: exit code, the summary line, skip reasons."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", "-p", "no:cacheprovider",
               str(REPO / "tests" / "test_gpu.py")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                                       if p))
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return {"returncode": None, "summary": f"timed out after {timeout:.0f} s", "ok": False,
                "seconds": time.perf_counter() - start, "skipped": [],
                "output_tail": (e.stdout or b"")[-4000:].decode(errors="replace")
                if isinstance(e.stdout, bytes) else (e.stdout or "")[-4000:]}
    lines = done.stdout.strip().splitlines()
    summary = next((line.strip("= ") for line in reversed(lines)
                    if re.search(r"\b(passed|failed|skipped|error|deselected)\b", line)), "no summary")
    skipped = sorted({line.split(": ", 1)[-1] for line in lines if line.startswith("SKIPPED")})
    return {"returncode": done.returncode, "summary": summary, "ok": done.returncode == 0,
            "seconds": time.perf_counter() - start, "skipped": skipped,
            "output_tail": (done.stdout + done.stderr)[-4000:]}


# ------------------------------------------------------------------------------------------ 2-3. training


def time_train_step(config: RunConfig, repeats: int) -> dict[str, Any]:
    """Median seconds of the engine's ``train_step`` for `config` (its method, precision, memory format and
    GPU settings) on a random batch of ``config.batch_size`` images at 64 px, after one warm-up step."""
    device = resolve_device(config.device)
    _reset_peak(device)
    with backend_settings(config):
        method, model, optimizer = _model_and_optimizer(config.method, config)
        method.train_mode(model, config)
        x, y = _batch(TRAIN_PX, config.channels_last, batch=config.batch_size, device=device)
        generators = device_generators({"routing": torch.Generator().manual_seed(0)}, device, config)
        generator = generators["routing"]
        scaler = torch.amp.GradScaler("cuda") if config.amp and device.type == "cuda" else None

        def step() -> None:
            train_step(method, model, model, x, y, optimizer, config, device=device, generator=generator,
                       scaler=scaler)

        seconds = median_seconds(step, repeats)
    return {"seconds": seconds, "images_per_s": config.batch_size / seconds, "peak_mib": _peak_mib(device)}


def section_train(settings: Settings) -> dict[str, Any]:
    """Training images/s of every Decathlon method that trains (or ``settings.methods``), fp32 and AMP,
    channels_last; the SIDE_BY_SIDE methods also in the default memory format."""
    names = list(settings.methods or [m.name for m in decathlon_methods() if m.trains])
    names = ["finetune"] + [n for n in names if n != "finetune"]  # the reference of "vs finetune"
    rows = []
    for name in names:
        layouts = (True, False) if name in SIDE_BY_SIDE else (True,)
        for amp in settings.precisions:
            for channels_last in layouts:
                config = _run_config(settings, name, amp=amp, channels_last=channels_last)
                rows.append({"method": name, "precision": _precision(amp), "channels_last": channels_last,
                             **time_train_step(config, settings.repeats)})
    reference = {(r["precision"], r["channels_last"]): r["seconds"]
                 for r in rows if r["method"] == "finetune"}
    for row in rows:  # step time over finetune's, same precision and memory format, in this run
        row["vs_finetune"] = row["seconds"] / reference[row["precision"], row["channels_last"]]
    return {"rows": rows, "peak_mib": max((r["peak_mib"] for r in rows), default=0.0)}


def section_options(settings: Settings) -> dict[str, Any]:
    """SpotTune's step with each GPU execution setting changed alone (AMP when on CUDA, channels_last)."""
    amp = settings.precisions[-1]
    rows = []
    for label, values in GPU_OPTIONS:
        config = _run_config(settings, OPTIONS_METHOD, amp=amp, channels_last=True, **values)
        rows.append({"setting": label, "precision": _precision(amp),
                     **time_train_step(config, settings.repeats)})
    return {"rows": rows, "method": OPTIONS_METHOD, "peak_mib": max(r["peak_mib"] for r in rows),
            "applies": settings.device.type == "cuda"}


# ------------------------------------------------------------------------------------------- 4. evaluation


def _eval_call(model: Any, x: torch.Tensor, policy: torch.Tensor, sparse: bool,
               amp: bool) -> Callable[[], Any]:
    def forward() -> Any:
        with torch.autocast(x.device.type, dtype=torch.float16, enabled=amp):
            return model(x, policy, sparse=sparse)
    return forward


def section_eval(settings: Settings) -> dict[str, Any]:
    """SpotTune evaluation images/s at 72 px: plain ResNet-26 (every image on one path, sparse), dense
    two-path mixing and sparse routing under each routing, per precision."""
    device = settings.device
    rows = []
    peak = 0.0
    for amp in settings.precisions:
        config = _run_config(settings, "spottune", amp=amp, channels_last=True)
        _reset_peak(device)
        with backend_settings(config):
            _, model, _ = _model_and_optimizer("spottune", config)
            model.eval()
            x, _ = _batch(EVAL_PX, True, batch=settings.batch, device=device)
            variants = {("plain ResNet-26 (one path)", "-"): (torch.zeros(settings.batch, model.num_blocks,
                                                                          device=device), True)}
            for routing, policy in _routings(settings.batch, model.num_blocks).items():
                variants[("dense two-path", routing)] = (policy.to(device), False)
                variants[("sparse routing", routing)] = (policy.to(device), True)

            autocast = amp and device.type == "cuda"
            fns = {key: _eval_call(model, x, policy, sparse, autocast)
                   for key, (policy, sparse) in variants.items()}
            with torch.inference_mode():
                for fn in fns.values():  # warm-up (and cuDNN autotuning of each batch shape)
                    fn()
                times = round_robin(fns, settings.repeats)
        peak = max(peak, _peak_mib(device))
        rows += [{"model": model_name, "routing": routing, "precision": _precision(amp),
                  "seconds": t["seconds"], "images_per_s": settings.batch / t["seconds"]}
                 for (model_name, routing), t in times.items()]
        del model
    return {"rows": rows, "peak_mib": peak}


# ------------------------------------------------------------------------------------------ 5. data path


def section_data(settings: Settings, tmp: Path) -> dict[str, Any]:
    """Loader images/s on a generated aircraft-like domain: PIL (0 and k workers) vs the decode-once
    cache (resident on the GPU on CUDA), plus the one-off cache build (benchmarks/bench_data.py)."""
    import bench_data

    _reset_peak(settings.device)
    start = time.perf_counter()
    root = bench_data.write_domain(tmp, settings.images)
    generated = time.perf_counter() - start
    workers = sorted({0, min(settings.loader_workers, os.cpu_count() or 1)})
    rows = bench_data.bench_loaders(root, workers=tuple(workers), epochs=settings.data_epochs,
                                    batch_size=settings.batch, cache_dir=tmp / "cache",
                                    device=settings.device)
    return {"rows": rows, "images": settings.images, "generate_seconds": generated,
            "resident": settings.device.type == "cuda", "peak_mib": _peak_mib(settings.device)}


# ------------------------------------------------------------------------------------------ 6. projection


def input_area(spec: Any, train: bool, preset: str = PROJECTION_PRESET) -> float:
    """Pixels of one network input of domain `spec` under `preset` (train or test geometry)."""
    from decathlon.presets import get_preset

    geometry = get_preset(preset).geometry(spec, train)
    if geometry.crop is not None:
        crop = geometry.crop if isinstance(geometry.crop, tuple) else (geometry.crop, geometry.crop)
        return float(crop[0] * crop[1])
    return geometry.resize ** 2 * NON_SQUARE_ASPECT


def project_gpu_hours(train: Sequence[dict[str, Any]], evaluation: Sequence[dict[str, Any]], *,
                      epochs: int) -> dict[str, Any]:
    """GPU-hours of the Decathlon table per method and precision, one job at a time on one GPU.

    Per target domain d (the 9 non-source domains of ``decathlon.domains``): training
    ``epochs * (train_d + val_d) * area_train_d / (64 * 64) / rate``, with `rate` the method's measured
    channels_last training images/s at 64 px (conv cost grows with the pixels, so 72 px and Daimler's
    72 x 144 inputs cost more per image); evaluation ``test_d * area_test_d / (72 * 72) / rate_eval`` with
    the measured dense two-path rate (random-50% routing) for routing methods and the plain ResNet-26 rate
    otherwise. Methods that do not train (``spottune-running-ft``) only evaluate. Data loading is assumed
    hidden behind the step (the cache's resident path), host overheads and checkpoints are left out.
    Methods or precisions not measured are listed under ``missing``.
    """
    from decathlon.domains import suite_domains

    targets = [s for s in suite_domains("decathlon") if not s.is_source]
    train_px = sum(epochs * (s.split_sizes["train"] + s.split_sizes["val"]) * input_area(s, True)
                   / TRAIN_PX**2 for s in targets)
    eval_px = sum(s.split_sizes["test"] * input_area(s, False) / EVAL_PX**2 for s in targets)
    rates = {(r["method"], r["precision"]): r["images_per_s"] for r in train if r["channels_last"]}
    eval_rates = {(r["model"], r["routing"], r["precision"]): r["images_per_s"] for r in evaluation}
    rows, missing = [], []
    precisions = sorted({r["precision"] for r in evaluation}, key=["fp32", "AMP"].index)
    for method in decathlon_methods():
        for precision in precisions:
            key = ("dense two-path", "random-50%", precision) if method.routing else \
                ("plain ResNet-26 (one path)", "-", precision)
            rate = rates.get((method.name, precision))
            if (method.trains and rate is None) or key not in eval_rates:
                missing.append(f"{method.name} ({precision})")
                continue
            train_h = train_px / rate / 3600 if method.trains else 0.0
            eval_h = eval_px / eval_rates[key] / 3600
            rows.append({"method": method.name, "precision": precision, "train_hours": train_h,
                         "eval_hours": eval_h, "hours": train_h + eval_h})
    totals = {p: sum(r["hours"] for r in rows if r["precision"] == p) for p in precisions}
    return {"rows": rows, "totals": totals, "missing": missing, "epochs": epochs, "targets": len(targets),
            "train_images_64px": train_px, "eval_images_72px": eval_px, "protocol": PROJECTION_PROTOCOL,
            "preset": PROJECTION_PRESET}


# ------------------------------------------------------------------------------------------------ report


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: environment, gpu tests, one table per section, the projection."""
    env, s = report["environment"], report["settings"]
    lines = [f"# GPU check ({env['date']})", "",
             f"Device {env['device']}: {env['gpu'] or 'no GPU'}"
             + (f", {env['gpu_memory_gib']:.0f} GiB, compute capability {env['gpu_capability']}"
                if env["gpu_memory_gib"] else "")
             + f"; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}; "
             f"{env['nproc']} CPUs ({env['cpu']}), load average {env['load']:.1f}.",
             f"Sizes: batch {s['batch']}, {TRAIN_PX} px training / {EVAL_PX} px evaluation, ResNet-26 width "
             f"{s['width']}, {s['repeats']} timed steps per measurement"
             + (" (--quick: not the real sizes)" if report["quick"] else "") + ".", ""]
    tests = report.get("gpu_tests")
    if tests is not None:
        lines += [f"gpu tests: {tests['summary']} (exit code {tests['returncode']}, "
                  f"{tests['seconds']:.0f} s)"]
        lines += [f"- skipped: {reason}" for reason in tests["skipped"]]
        lines.append("")
    sections = report["sections"]
    if "train" in sections:
        t = sections["train"]
        lines += ["## Training step (images/s)", ""]
        lines += _table(["method", "precision", "channels_last", "ms/step", "images/s", "vs finetune",
                         "peak MiB"],
                        [(r["method"], r["precision"], "on" if r["channels_last"] else "off",
                          f"{1000 * r['seconds']:.1f}", f"{r['images_per_s']:.1f}",
                          f"{r['vs_finetune']:.2f}x", f"{r['peak_mib']:.0f}") for r in t["rows"]])
        lines += ["", "vs finetune: step time over finetune's (same precision and memory format); target for "
                  "the adapter-like methods: <= 1.3x.", ""]
    if "options" in sections:
        o = sections["options"]
        note = "" if o["applies"] else " (CPU: these settings have no effect there; timed for the code path)"
        lines += [f"## GPU settings on {o['method']}'s step{note}", ""]
        base = o["rows"][0]["seconds"]
        lines += _table(["setting", "precision", "ms/step", "images/s", "vs defaults", "peak MiB"],
                        [(r["setting"], r["precision"], f"{1000 * r['seconds']:.1f}",
                          f"{r['images_per_s']:.1f}", f"{base / r['seconds']:.2f}x", f"{r['peak_mib']:.0f}")
                         for r in o["rows"]])
        lines += [""]
    if "eval" in sections:
        e = sections["eval"]
        lines += ["## Evaluation (images/s)", ""]
        lines += _table(["model", "routing", "precision", "ms/batch", "images/s"],
                        [(r["model"], r["routing"], r["precision"], f"{1000 * r['seconds']:.1f}",
                          f"{r['images_per_s']:.1f}") for r in e["rows"]])
        lines += ["", f"peak MiB: {e['peak_mib']:.0f}", ""]
    if "data" in sections:
        d = sections["data"]
        cache_name = "decode-once cache, resident on the GPU" if d["resident"] else "decode-once cache"
        lines += [f"## Data path ({d['images']} generated JPEGs, 72 px high; generated in "
                  f"{d['generate_seconds']:.0f} s)", ""]
        lines += _table(["loader", "workers", "images/s"],
                        [("cache build (one-off decode)" if r["path"] == "cache-build" else
                          "PIL reference (DataLoader + torchvision)" if r["path"] == "pil" else cache_name,
                          r["workers"], f"{r['images_per_s']:.1f}") for r in d["rows"]])
        lines += ["", f"peak MiB: {d['peak_mib']:.0f}", ""]
    if "projection" in report:
        p = report["projection"]
        lines += [f"## Projected GPU-hours: the Decathlon table ({p['targets']} targets x every Decathlon "
                  f"method, 1 seed, {p['protocol']}, {p['epochs']} epochs, one job at a time)", ""]
        lines += _table(["method", "precision", "train h", "eval h", "total h"],
                        [(r["method"], r["precision"], f"{r['train_hours']:.2f}", f"{r['eval_hours']:.3f}",
                          f"{r['hours']:.2f}") for r in p["rows"]])
        lines += ["", *(f"**total ({precision}): {hours:.1f} GPU-hours**" for precision, hours in
                        p["totals"].items())]
        if p["missing"]:
            lines.append(f"not measured (left out of the totals): {', '.join(p['missing'])}")
        lines.append("")
    if report["failed"]:
        lines += [f"failed sections: {', '.join(report['failed'])}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    p.add_argument("--quick", action="store_true", help="a check of the script, not of the real sizes: "
                   "batch 8, width 0.25, 1 timed step, 256 loader images, 0 workers")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of report.md and report.json")
    p.add_argument("--batch", type=int, default=None, help=f"images per step/batch (default {BATCH})")
    p.add_argument("--width", type=float, default=None, help="ResNet-26 width (default 1: the real network)")
    p.add_argument("--images", type=int, default=None, help=f"data-path images (default {DATA_IMAGES})")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per measurement (default 3)")
    p.add_argument("--methods", nargs="+", default=None, help="training methods (default: every Decathlon "
                   "method that trains)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--no-tests", action="store_true", help="do not run the gpu tests")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The measured sizes: the real ones, or the small ones of ``--quick``; explicit flags win."""
    device = resolve_device(args.device)
    quick = {"batch": 8, "width": 0.25, "images": 256, "repeats": 1, "loader_workers": 0}
    quick = quick if args.quick else {}
    given = {"batch": args.batch, "width": args.width, "images": args.images, "repeats": args.repeats}
    values = {**quick, **{k: v for k, v in given.items() if v is not None}}
    methods = tuple(args.methods) if args.methods else None
    return Settings(device=device, methods=methods, **values)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        unknown = sorted(set(settings.methods or ()) - {m.name for m in decathlon_methods() if m.trains})
        if unknown:
            raise HarnessError(f"--methods {unknown}: not Decathlon methods that train; expected some of "
                               f"{', '.join(m.name for m in decathlon_methods() if m.trains)}")
    except HarnessError as e:
        if args.debug:
            raise
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    env = environment(settings.device)
    memory = f", {env['gpu_memory_gib']:.0f} GiB" if env["gpu_memory_gib"] else ""
    print(f"{env['date']}: device {env['device']} ({env['gpu'] or 'no GPU'}{memory}), torch {env['torch']}, "
          f"CUDA {env['cuda']}, cuDNN {env['cudnn']}, {env['nproc']} CPUs", flush=True)
    report: dict[str, Any] = {"environment": env, "quick": args.quick, "failed": [], "sections": {},
                              "settings": {**dataclasses.asdict(settings), "device": str(settings.device)}}
    if not args.no_tests:
        report["gpu_tests"] = run_gpu_tests()
        print(f"gpu tests: {report['gpu_tests']['summary']}", flush=True)
        if not report["gpu_tests"]["ok"]:
            report["failed"].append("gpu_tests")
            print(report["gpu_tests"]["output_tail"], file=sys.stderr, flush=True)
    jobs = {"train": lambda tmp: section_train(settings), "options": lambda tmp: section_options(settings),
            "eval": lambda tmp: section_eval(settings), "data": lambda tmp: section_data(settings, tmp)}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name in SECTIONS:
            if name not in args.sections:
                continue
            began = time.perf_counter()
            try:
                report["sections"][name] = {**jobs[name](Path(tmp)), "seconds": time.perf_counter() - began}
            except Exception as e:  # one broken section must not hide the others' figures
                if args.debug:
                    raise
                report["failed"].append(name)
                report["sections"][name] = {"error": f"{type(e).__name__}: {e}"}
                print(f"section {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                continue
            print(f"section {name}: {time.perf_counter() - began:.0f} s", flush=True)
    sections = report["sections"]
    if all(name in sections and "error" not in sections[name] for name in ("train", "eval")):
        report["projection"] = project_gpu_hours(sections["train"]["rows"], sections["eval"]["rows"],
                                                 epochs=RunConfig().epochs)
    report["seconds"] = time.perf_counter() - start
    markdown = render_markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "report.json", report)
    atomic_write_text(args.out / "report.md", markdown + f"\nwall time: {report['seconds']:.0f} s\n")
    print("", markdown, f"wall time {report['seconds']:.0f} s; report in {args.out}", sep="\n")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
