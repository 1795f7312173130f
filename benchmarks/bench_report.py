"""Time `decathlon.report.render_all` on a synthetic finished store of 300 jobs (target: under 10 s).

The store looks like a full run of the generated suite: every registered method on every mini domain of
its settings (seed 0, then seed 1 until the job count is reached), trainval->test, with routing
statistics (per block, histogram, per class) for the routing methods and test predictions for every
Decathlon-layout job, so the timing covers the tables with their bootstrap intervals and paired tests,
every policy figure and every submission with its local score. The generated suite is written first
(not timed). Figures are drawn in forked worker processes (`--workers 1` times the serial path).

    python benchmarks/bench_report.py [--jobs 300] [--repeats 3] [--out DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from decathlon.domains import DECATHLON_COLUMNS, suite_domains  # noqa: E402
from decathlon.figures import render_workers  # noqa: E402  (imported up front: not part of the timing)
from decathlon.generate import ensure_suite  # noqa: E402
from decathlon.io import atomic_write_json  # noqa: E402
from decathlon.methods import all_methods  # noqa: E402
from decathlon.report import render_all  # noqa: E402
from decathlon.store import build_store  # noqa: E402

BLOCKS = 12  # routable blocks of ResNet-26


def plan(count: int) -> list[tuple[str, str, int]]:
    """(method, domain, seed) of `count` jobs: every method x domain of its settings, seed by seed."""
    pairs = []
    for name, method in all_methods().items():
        for spec in suite_domains("mini"):
            family = "decathlon" if spec.name in DECATHLON_COLUMNS else "extra"
            if family in method.settings:
                pairs.append((name, spec.name))
    jobs = [(m, d, seed) for seed in range(count // len(pairs) + 1) for m, d in pairs]
    return jobs[:count]


def test_images(data_root: Path, domain: str) -> tuple[list[int], int]:
    data = json.loads((data_root / "annotations" / f"{domain}_test_stripped.json").read_text())
    return [im["id"] for im in data["images"]], len(data["categories"])


def write_run(out: Path, data_root: Path, method: str, domain: str, seed: int, rng: np.random.Generator,
              routing: bool) -> None:
    """One finished run directory: config, predictions (Decathlon layout), policy (routing), result."""
    run_dir = out / "runs" / "mini" / method / domain / f"s{seed}" / "trainval-test" / "bench"
    config = {"data_root": str(data_root), "method": method, "domain": domain}
    atomic_write_json(run_dir / "config.json", {"config": config, "code_version": "bench"})  # engine layout
    spec = next(s for s in suite_domains("mini") if s.name == domain)
    top1 = float(rng.uniform(20, 95))
    if spec.layout == "decathlon":
        # labelled predictions, right on about top1 % of the images; result.json records their accuracy
        # (the reports check that the two agree before resampling the predictions)
        ids, classes = test_images(data_root, domain)
        labels = rng.integers(0, classes, len(ids))
        predicted = np.where(rng.random(len(ids)) < top1 / 100, labels, (labels + 1) % classes)
        top1 = 100.0 * float(np.mean(predicted == labels))
        atomic_write_json(run_dir / "predictions.json",
                          {"image_ids": ids, "predicted": predicted.tolist(), "labels": labels.tolist()})
    if routing:
        histogram = rng.dirichlet(np.ones(BLOCKS + 1)).tolist()
        atomic_write_json(run_dir / "policy.json", {
            "block_fraction": rng.random(BLOCKS).tolist(), "histogram": histogram,
            "per_class": {str(k): rng.random(BLOCKS).tolist() for k in range(spec.num_classes)}})
    atomic_write_json(run_dir / "result.json", {
        "suite": "mini", "method": method, "domain": domain, "seed": seed, "protocol": "trainval->test",
        "preset": "faithful", "schedule": "faithful", "eval_split": "test", "config_hash": "bench",
        "top1": top1, "loss": 1.0, "params_total": 400_000,
        "params_trainable": int(rng.uniform(0.01, 1.2) * 200_000), "par": 2.0, "wall_time_s": 10.0,
        "images_per_s": 100.0, "epochs": 2, "code_version": "bench"})


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the forked figure workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: a temp folder)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes drawing the figures (default: decathlon.figures.render_workers())")
    args = parser.parse_args(argv)
    workers = render_workers() if args.workers is None else args.workers
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-report-"))
    suite = ensure_suite(out / "data", seed=0)
    rng = np.random.default_rng(0)
    methods = all_methods()
    jobs = plan(args.jobs)
    for method, domain, seed in jobs:
        write_run(out, Path(suite.decathlon_root), method, domain, seed, rng, methods[method].routing)
    start = time.perf_counter()
    store = build_store(out)
    build_s = time.perf_counter() - start
    times, cpu, paths = [], [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), cpu_seconds()
        paths = render_all(out, store, workers=workers)
        times.append(time.perf_counter() - start)
        cpu.append(cpu_seconds() - start_cpu)
    kinds = {suffix: sum(p.suffix == suffix for p in paths) for suffix in (".md", ".tex", ".csv", ".png",
                                                                           ".json", ".zip")}
    print(f"store: {len(store.jobs)} jobs, {len(store.policy)} policy rows (build_store {build_s:.2f} s)")
    print(f"render_all: {len(paths)} files {kinds}")
    print(f"render_all time over {args.repeats} runs: median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s, max {max(times):.2f} s (target < 10 s); CPU time median "
          f"{statistics.median(cpu):.2f} s, figure workers included ({workers} worker(s))")
    print(f"reports in {out / 'reports'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
