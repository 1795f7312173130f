"""CPU throughput of the SpotTune model: dense two-path vs sparse routing vs the plain ResNet-26.

Usage: ``python benchmarks/bench_models.py [--batch 64] [--size 64] [--width 1.0] [--repeats 5]
[--threads N] [--train]``. Prints wall and CPU ms per batch and images/s (minimum over round-robin
repeats) for evaluation of

- ``plain``: one ResNet-26 (the cost of a single path),
- ``dense``: both paths of every block on the whole batch, mixed per image (the training computation),
- ``sparse``: each block only on the images routed to it (SpotTune's evaluation),

under two routings: ``random-50%`` (every decision an independent coin flip, the worst case for sparse
routing since every block is split) and ``skewed`` (an assumed, policy-like routing: 8 of the 12 blocks
send every image down one path, 4 all-fine-tuned and 4 all-pretrained, and 4 blocks split the batch at
20/40/60/80 %). ``--train`` adds one training step (forward + backward, dense, policy network included).
Targets: sparse >= 1.7x dense and sparse time <= 1.25x plain. The machine may be shared: the load average
is printed with the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decathlon.networks.resnet import ResNet26  # noqa: E402
from spottune.model import SpotTune  # noqa: E402
from spottune.policy import decathlon_policy_net  # noqa: E402


def routings(batch: int, blocks: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The routings benchmarked (batch, blocks), 1 = fine-tuned path."""
    random = (torch.rand(batch, blocks, generator=generator) < 0.5).float()
    fractions = [0.0, 0.2, 1.0, 0.0, 0.4, 1.0, 0.0, 0.6, 1.0, 0.0, 0.8, 1.0][:blocks]
    skewed = torch.stack([(torch.rand(batch, generator=generator) < f).float() for f in fractions], dim=1)
    return {"random-50%": random, "skewed": skewed}


def time_round_robin(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Minimum and median wall seconds, and minimum process CPU seconds, per call of each function.

    Calls are interleaved round-robin so that the load of a shared machine spreads evenly over the
    variants; the minimum is the least disturbed measurement (as ``timeit`` recommends). CPU time (all
    threads of this process) does not count the time the process waits for a CPU, so with one thread it
    is the most load-independent number; ratios are computed from it.
    """
    for fn in fns.values():  # warm-up: oneDNN primitive creation, allocator
        fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"wall": min(wall[name]), "median": statistics.median(wall[name]), "cpu": min(cpu[name])}
            for name in fns}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="input side in px")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--train", action="store_true", help="also time one dense training step")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
    plain = ResNet26(10, width=args.width).eval()
    model = SpotTune(ResNet26(10, width=args.width), 10, decathlon_policy_net(12, args.width)).eval()

    print(f"batch {args.batch}, {args.size} px, width {args.width}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    fns: dict[str, Callable[[], object]] = {"plain ResNet-26|-": lambda: plain(x)}
    policies = routings(args.batch, 12, generator)
    for name, policy in policies.items():
        fns[f"dense two-path|{name}"] = lambda p=policy: model(x, p, sparse=False)
        fns[f"sparse routing|{name}"] = lambda p=policy: model(x, p, sparse=True)
    with torch.inference_mode():
        timed = time_round_robin(fns, args.repeats)
    if args.train:
        model.train()
        step_gen = torch.Generator().manual_seed(1)

        def step():
            logits, _ = model(x, generator=step_gen)
            logits.logsumexp(1).sum().backward()

        timed.update(time_round_robin({"train step (dense)|with policy net": step}, args.repeats))

    print(f"{'model':<20} {'routing':<18} {'wall ms min':>11} {'median':>8} {'cpu ms min':>10} "
          f"{'images/s':>9}")
    for key, t in timed.items():
        model_name, routing = key.split("|")
        print(f"{model_name:<20} {routing:<18} {1000 * t['wall']:>11.1f} {1000 * t['median']:>8.1f} "
              f"{1000 * t['cpu']:>10.1f} {args.batch / t['wall']:>9.1f}")
    plain_time = timed["plain ResNet-26|-"]["cpu"]
    for name in policies:
        dense, sparse = timed[f"dense two-path|{name}"]["cpu"], timed[f"sparse routing|{name}"]["cpu"]
        print(f"{name}: sparse is {dense / sparse:.2f}x faster than dense (target >= 1.7) and takes "
              f"{sparse / plain_time:.2f}x the plain network's time (target <= 1.25), CPU times")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
