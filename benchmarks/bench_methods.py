"""Per-method CPU training throughput (images/s) on the generated suite.

For every registered training method: build the model as the engine does (ResNet-26 at ``--width``,
random initialisation), then time ``--steps`` SGD steps twice:

- ``step img/s``: forward + loss + backward + SGD step on batches already in memory (the model's cost);
- ``epoch img/s``: :func:`decathlon.engine.train_one_epoch` over a DataLoader of the generated images
  (JPEG decoding and the ``faithful`` transforms in-process, as the mini suite runs).

Each measurement is repeated ``--repeats`` times after one warm-up; the median and the spread (min-max)
are printed. Usage::

    python benchmarks/bench_methods.py [--data-root DIR] [--width 0.25] [--batch-size 32] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decathlon.config import RunConfig  # noqa: E402
from decathlon.domains import get_domain  # noqa: E402
from decathlon.engine import (  # noqa: E402
    build_backbone,
    build_data,
    build_optimizer,
    seed_everything,
    train_one_epoch,
    train_step,
)
from decathlon.methods import all_methods  # noqa: E402


def _roots(data_root: str | None) -> tuple[str, str]:
    if data_root is not None:
        return str(Path(data_root) / "decathlon-1.0"), str(Path(data_root) / "extra")
    from decathlon.generate import generate_suite

    paths = generate_suite(Path(tempfile.mkdtemp(prefix="bench-methods-")), seed=0)
    return str(paths.decathlon_root), str(paths.extra_root)


def bench_method(name: str, config: RunConfig, steps: int, repeats: int) -> dict[str, float]:
    """Median and spread of the step-only and the epoch throughput of method `name` (images/s)."""
    method = all_methods()[name]
    spec = get_domain(config.domain, suite=config.suite)
    device = torch.device("cpu")
    generators = seed_everything(config)
    data = build_data(config, spec, device, generators["data"])
    model = method.build(build_backbone(method, config, spec.num_classes), spec, spec.num_classes, config)
    optimizer, _ = build_optimizer(method, model, config, spec)
    batches = [(x, y) for x, y, *_ in data.train_loader][:steps]  # loaders also yield indices
    method.train_mode(model, config)

    def step_rate() -> float:
        start = time.perf_counter()
        for images, labels in batches:
            train_step(method, model, model, images, labels, optimizer, config, device=device,
                       generator=generators["routing"])
        return sum(len(y) for _, y in batches) / (time.perf_counter() - start)

    def epoch_rate() -> float:
        stats = train_one_epoch(method, model, data.train_loader, optimizer, config, device=device,
                                generator=generators["routing"])
        return stats["images"] / stats["seconds"]

    step_rate()  # warm-up (allocator, kernels)
    steps_s = [step_rate() for _ in range(repeats)]
    epochs_s = [epoch_rate() for _ in range(repeats)]
    return {"step": statistics.median(steps_s), "step_min": min(steps_s), "step_max": max(steps_s),
            "epoch": statistics.median(epochs_s), "epoch_min": min(epochs_s), "epoch_max": max(epochs_s)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", help="a generated suite (default: generate one in a temporary folder)")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--methods", nargs="*", help="subset of methods (default: every training method)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    decathlon_root, extra_root = _roots(args.data_root)
    names = args.methods or [n for n, m in all_methods().items() if m.trains]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, width {args.width}, "
          f"batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats, 32 px crops (36 px images)")
    print(f"{'method':<22} {'step img/s':>11} {'(min-max)':>15} {'epoch img/s':>12} {'(min-max)':>15}")
    for name in names:
        extra = "decathlon" not in all_methods()[name].settings
        config = RunConfig(suite="mini", method=name, domain="cubs" if extra else "aircraft",
                           data_root=extra_root if extra else decathlon_root, width=args.width,
                           batch_size=args.batch_size, num_workers=0, device="cpu", protocol="train->val",
                           limit_train_images=args.batch_size * args.steps)
        r = bench_method(name, config, args.steps, args.repeats)
        print(f"{name:<22} {r['step']:>11.1f} {r['step_min']:>7.1f}-{r['step_max']:<7.1f} "
              f"{r['epoch']:>12.1f} {r['epoch_min']:>7.1f}-{r['epoch_max']:<7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
