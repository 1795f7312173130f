"""Loader throughput: the reference PIL path vs the decode-once cache (decathlon.cache), same workers.

    python benchmarks/bench_data.py [--images 2048] [--workers 0 2] [--epochs 2] [--data DIR]

Writes a synthetic Decathlon-layout ``aircraft`` domain (72 px high JPEGs of varying width, smooth content
so that the files are about the size of the real ones) unless ``--data`` names a real ``decathlon-1.0``
folder, then times full training epochs (faithful preset: Resize(72) + RandomCrop(64), batch 128) of

- ``pil``: ``DataLoader(dataset with the preset's transform, shuffle=True, num_workers=k)``, the engine's
  reference path;
- ``cache``: ``decathlon.cache.make_train_loader(..., num_workers=k)`` after the one-off decode, which is
  timed separately.

Both produce normalised float batches on the CPU. Worker start-up is timed as the engine pays it: the
reference DataLoader starts its workers every epoch, the cache loader keeps its workers for the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decathlon import cache  # noqa: E402
from decathlon.data import build_dataset, load_mean_std  # noqa: E402
from decathlon.domains import get_domain  # noqa: E402
from decathlon.errors import HarnessError  # noqa: E402
from decathlon.presets import get_preset  # noqa: E402

DOMAIN = "aircraft"  # a CROP domain: the random-crop path, images of mixed widths like the real set


def write_domain(root: Path, images: int, *, seed: int = 0, classes: int = 10) -> Path:
    """A Decathlon-layout ``aircraft`` domain with `images` training images; returns ``decathlon-1.0``."""
    from PIL import Image

    spec = get_domain(DOMAIN)
    base = root / "decathlon-1.0"
    rng = np.random.default_rng(seed)
    d = spec.number * 10**7
    categories = [{"id": d + k, "name": f"class{k}", "supercategory": DOMAIN} for k in range(1, classes + 1)]
    entries, annotations = [], []
    (base / "data" / DOMAIN / "train").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        width = int(rng.integers(90, 131))  # real aircraft images: 72 px high, about 1.5:1
        # smooth colour field (bilinear upsampling of a coarse grid) plus mild noise: JPEGs of ~3-5 KB
        coarse = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, 72), Image.BILINEAR), dtype=np.int16)
        pixels = np.clip(field + rng.integers(-12, 13, field.shape), 0, 255).astype(np.uint8)
        name = f"data/{DOMAIN}/train/{i + 1:06d}.jpg"
        Image.fromarray(pixels).save(base / name, quality=90)
        image_id = d + 200001 + i
        entries.append({"id": image_id, "width": width, "height": 72, "file_name": name})
        annotations.append({"id": image_id, "image_id": image_id, "category_id": d + 1 + i % classes,
                            "segmentation": [], "area": 0, "bbox": [], "iscrowd": 0})
    doc = {"info": {"description": "bench_data synthetic domain"}, "licenses": [], "images": entries,
           "annotations": annotations, "categories": categories}
    (base / "annotations").mkdir(exist_ok=True)
    (base / "annotations" / f"{DOMAIN}_train.json").write_text(json.dumps(doc))
    return base


def time_epochs(loader: Any, epochs: int, device: torch.device | None = None) -> tuple[float, int]:
    """(seconds, images) of `epochs` full passes over `loader` (batches of (images, labels, ...)); with a
    CUDA `device` every batch is also copied there (as the engine does) and the time ends synchronised."""
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            if device is not None and device.type == "cuda":
                batch[0].to(device, non_blocking=True)
            images += batch[0].shape[0]
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, images


def bench_loaders(root: Path, *, workers: tuple[int, ...] = (0, 2), epochs: int = 2, batch_size: int = 128,
                  cache_dir: Path | None = None, preset: str = "faithful",
                  device: torch.device | None = None) -> list[dict[str, Any]]:
    """Rows {path, workers, images_per_s, seconds, images} for the PIL and cache loaders, plus the
    one-off cache build (path ``cache-build``, images decoded per second). With a CUDA `device` the
    batches end on the GPU: the PIL loader's are pinned and copied, the cache keeps the split resident
    there (when it fits) and crops on the GPU."""
    spec = get_domain(DOMAIN)
    mean, std = load_mean_std(root, spec)
    geometry = get_preset(preset).geometry(spec, True)
    transform = get_preset(preset).train_transform(spec, mean, std)
    dataset = build_dataset(spec, root, "train", transform)
    cache_dir = cache_dir or Path(tempfile.mkdtemp(prefix="bench-cache-"))
    rows = []
    start = time.perf_counter()
    opened = cache.cache_for_dataset(dataset, geometry, cache_dir=cache_dir, progress=False)
    build = time.perf_counter() - start
    rows.append({"path": "cache-build", "workers": 0, "images": len(dataset), "seconds": build,
                 "images_per_s": len(dataset) / build, "built": opened.built})
    for k in workers:
        on_gpu = device is not None and device.type == "cuda"
        pil = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=k,
                                          generator=torch.Generator().manual_seed(0), pin_memory=on_gpu)
        fast = cache.make_train_loader(dataset, geometry, mean, std, batch_size=batch_size, num_workers=k,
                                       generator=torch.Generator().manual_seed(0), drop_last=False,
                                       cache_dir=cache_dir, progress=False, device=device or "cpu")
        for name, loader in (("pil", pil), ("cache", fast)):
            seconds, images = time_epochs(loader, epochs, device)
            rows.append({"path": name, "workers": k, "images": images, "seconds": seconds,
                         "images_per_s": images / seconds})
    return rows


def loader_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: one row per worker count with both paths and the speed-up."""
    lines = ["| loader (batch 128, Resize 72 + RandomCrop 64) | workers | images/s | speed-up |",
             "|---|---|---|---|"]
    by = {(r["path"], r["workers"]): r for r in rows}
    for r in rows:
        if r["path"] == "cache-build":
            lines.append(f"| cache build (one-off decode of {r['images']} images) | 0 | "
                         f"{r['images_per_s']:.0f} | |")
    for k in sorted({r["workers"] for r in rows if r["path"] == "pil"}):
        pil, fast = by[("pil", k)], by[("cache", k)]
        lines.append(f"| PIL reference (DataLoader + torchvision) | {k} | {pil['images_per_s']:.0f} | 1.0x |")
        lines.append(f"| decode-once cache, batched crops | {k} | {fast['images_per_s']:.0f} | "
                     f"{fast['images_per_s'] / pil['images_per_s']:.1f}x |")
    return lines


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None,
                   help="a decathlon-1.0 folder holding aircraft (default: a synthetic one in a temp folder)")
    p.add_argument("--images", type=int, default=2048, help="images of the synthetic domain")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per loader")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    torch.set_num_threads(1)  # the loaders are compared, not intra-op parallelism (workers are processes)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
            root = args.data or write_domain(Path(tmp), args.images)
            rows = bench_loaders(root, workers=tuple(args.workers), epochs=args.epochs,
                                 cache_dir=Path(tmp) / "cache")
    except HarnessError as e:
        if args.debug:
            raise
        print(f"bench_data: {e}", file=sys.stderr)
        return 1
    print("\n".join(loader_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
