"""Decode-once image cache and batched augmentation: the fast data path (``RunConfig.cache``).

The reference path decodes every JPEG with PIL, every epoch, one image at a time. This module decodes each
image of a (dataset, resize) pair once into a uint8 array on disk and then crops, flips and normalises
whole batches with tensor indexing, on the GPU when there is one.

Storage (one folder per dataset and resize, under :func:`default_cache_dir`):

```
<cache_dir>/<name>-<slot>-<fingerprint>/
  images.npy   uint8 (total,): every image's pixels, channels first (3, h, w) as ToTensor lays them out,
               one after the other (no padding: a split of mixed aspect ratios costs only its pixels)
  starts.npy   int64 (N,): where image i begins in images.npy
  sizes.npy    int64 (N, 2): (height, width) of image i after the resize
  labels.npy   int64 (N,)
  meta.json    format version, fingerprint, source files; written last (its presence = complete)
```

Images are stored *after* the preset's Resize (shorter side = ``geometry.resize``), applied with the same
torchvision function as the reference transform, so the random and centre crops of the batched path are
taken from exactly the pixels the reference path crops. The Decathlon images are already stored with a
shorter side of 72 px, for which torchvision's Resize returns the image unchanged: no resampling happens.
A crop is a strided view of one image (``images[start : start + 3*h*w].view(3, h, w)[:, t:t+ch, l:l+cw]``):
on the CPU a batch is a stack of such views, on the GPU one gather with computed flat indices.

The fingerprint covers the annotation files' bytes, the file list, the labels, every image's size and
mtime, and the resize: editing an annotation file or replacing an image builds a new cache (the stale one
is removed). Builds write to a temporary folder that is renamed into place, so an interrupted build never
leaves a half-written cache behind.

Augmentation semantics (identical to torchvision's RandomCrop / CenterCrop / RandomHorizontalFlip on the
stored image): crop first, then flip the crop. Random offsets are drawn from an explicit
``torch.Generator`` for a whole epoch before the first batch, so batches do not depend on worker count.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decathlon.data import display_path, end_workers, image_size, load_image, path_text, size_mismatch
from decathlon.errors import ConfigError, DataError

CACHE_ENV = "SPOTTUNE_CACHE"  # environment variable overriding the default cache folder
FORMAT_VERSION = 2  # bump when the on-disk layout changes: older caches are then rebuilt


# --------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class CropGeometry:
    """What the batched path implements: Resize(shorter side) + (random or centre) crop + optional flip.

    `resize` is the shorter side in px (or (height, width), or None for no resize); `crop` is
    (height, width) or None (the whole image; then every image of the split must have the same size).
    """

    resize: int | tuple[int, int] | None
    crop: tuple[int, int] | None
    random_crop: bool
    flip: bool


def crop_geometry(geometry: Any) -> CropGeometry:
    """Normalise a preset's geometry (attributes resize, crop, random_crop, flip) to :class:`CropGeometry`.

    Raises ConfigError for geometries the batched path cannot reproduce exactly (e.g. RandomResizedCrop).
    """
    if isinstance(geometry, CropGeometry):
        return geometry
    missing = [a for a in ("resize", "crop", "random_crop", "flip") if not hasattr(geometry, a)]
    if missing:
        raise ConfigError(f"geometry {geometry!r} lacks {missing}; expected resize, crop, random_crop, flip")
    for unsupported in ("random_resized_crop", "random_resized", "scale"):
        if getattr(geometry, unsupported, None):
            raise ConfigError(f"geometry {geometry!r} uses {unsupported}, which the cache path does not "
                              "implement; run with cache=False")
    resize = _size_arg(geometry.resize, "resize", allow_single=True)
    crop = _size_arg(geometry.crop, "crop", allow_single=False)
    return CropGeometry(resize=resize, crop=crop, random_crop=bool(geometry.random_crop),
                        flip=bool(geometry.flip))


def supports(geometry: Any) -> bool:
    """Whether the batched path reproduces `geometry` exactly (False e.g. for RandomResizedCrop)."""
    try:
        crop_geometry(geometry)
    except ConfigError:
        return False
    return True


def _size_arg(value: Any, what: str, *, allow_single: bool) -> int | tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value if allow_single else (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 1:
        return _size_arg(int(value[0]), what, allow_single=allow_single)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"geometry {what}={value!r}; expected an int, (int,) or (height, width)")


def resized_size(height: int, width: int, resize: int | tuple[int, int] | None) -> tuple[int, int]:
    """(height, width) after torchvision's Resize(resize) of an image of (height, width)."""
    if resize is None:
        return height, width
    if isinstance(resize, tuple):
        return resize
    short, long = (width, height) if width <= height else (height, width)
    if short == resize:
        return height, width
    new_long = int(resize * long / short)  # torchvision truncates the long side
    return (new_long, resize) if width <= height else (resize, new_long)


# --------------------------------------------------------------------------------------------- the cache


def default_cache_dir(data_root: str | os.PathLike | None) -> Path:
    """``$SPOTTUNE_CACHE`` if set, else ``<data_root>/../.cache/spottune-decathlon``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    if data_root is None:
        raise ConfigError(f"no cache folder: set ${CACHE_ENV} or give the data root")
    return Path(data_root).resolve().parent / ".cache" / "spottune-decathlon"


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def fingerprint(paths: Sequence[Path], labels: Sequence[int], sources: Sequence[Path],
                resize: int | tuple[int, int] | None) -> tuple[str, str]:
    """(slot, fingerprint) of a cache. `slot` names the file list + resize; the fingerprint adds content.

    Content = the bytes of each source (annotation) file, the labels, and every image's size and mtime.
    """
    listing = b"\n".join(os.fsencode(p) for p in paths)  # paths are bytes to the OS: any name hashes
    slot = _sha(f"v{FORMAT_VERSION} resize={resize}".encode(), listing)
    stats = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            raise DataError(f"image file {display_path(p)} is missing or unreadable ({e.strerror})") from None
        stats.append((st.st_size, st.st_mtime_ns))
    source_bytes = []
    for s in sources:
        try:
            source_bytes.append(Path(s).read_bytes())
        except OSError as e:
            raise DataError(f"annotation file {display_path(s)} is unreadable ({e.strerror})") from None
    content = _sha(slot.encode(), np.asarray(labels, dtype=np.int64).tobytes(),
                   np.asarray(stats, dtype=np.int64).tobytes(), *source_bytes)
    return slot, content


def decode_image(path: Path, resize: int | tuple[int, int] | None,
                 interpolation: Any = None) -> np.ndarray:
    """Decode `path` to RGB, apply torchvision's Resize(resize) exactly as the reference transform does.

    Returns a uint8 array (height, width, 3). A corrupt file raises DataError naming it.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    img = load_image(path)  # the reference path's decoder and decode policy: identical pixels
    if resize is not None:
        size = list(resize) if isinstance(resize, tuple) else resize
        img = F.resize(img, size, interpolation=interpolation or InterpolationMode.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


class ImageCache:
    """An opened cache: uint8 pixels (memory-mapped), per-image starts and sizes, labels.

    `built` is True when this open decoded the images (False when an existing cache was reused) and
    `decoded` counts the images decoded by this open; `names` are the image files, for messages.
    Picklable without copying the images (workers re-open the memory map).
    """

    def __init__(self, directory: Path, *, built: bool = False, decoded: int = 0,
                 names: Sequence[Path] | None = None):
        self.directory = Path(directory)
        self.built, self.decoded, self.names = built, decoded, names
        self.sizes = torch.from_numpy(np.load(self.directory / "sizes.npy"))
        self.starts = torch.from_numpy(np.load(self.directory / "starts.npy"))
        self.labels = torch.from_numpy(np.load(self.directory / "labels.npy"))
        self._images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> torch.Tensor:
        """Flat uint8 tensor of every image's pixels, backed by the memory-mapped file (read on use)."""
        if self._images is None:
            # copy-on-write mapping: writable for torch.from_numpy, never written back to disk
            self._images = torch.from_numpy(np.load(self.directory / "images.npy", mmap_mode="c"))
        return self._images

    def image(self, i: int) -> torch.Tensor:
        """Image `i` as a (3, h, w) uint8 view."""
        (h, w), start = self.sizes[i].tolist(), int(self.starts[i])
        return self.images[start:start + 3 * h * w].view(3, h, w)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_images"] = None
        state["names"] = None  # workers crop; only the opening process names files
        return state


_CHUNK = 1024  # images handed to the decoding threads at a time (bounds the memory of pending results)


def _chunks(n: int) -> Iterator[range]:
    return (range(i, min(i + _CHUNK, n)) for i in range(0, n, _CHUNK))


def _write_cache(tmp: Path, paths: Sequence[Path], labels: Sequence[int], resize: Any, interpolation: Any,
                 meta: dict[str, Any], progress: bool, threads: int) -> int:
    """Decode every image into `tmp` (images, starts, sizes, labels; meta.json last). Returns N."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    n = len(paths)
    columns = (TextColumn("caching {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    # PIL releases the GIL while reading headers and decoding: threads overlap the I/O and the decoding
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar, \
            ThreadPoolExecutor(max_workers=threads) as pool:
        headers = [hw for chunk in _chunks(n) for hw in pool.map(lambda i: image_size(paths[i]), chunk)]
        sizes = np.asarray([resized_size(h, w, resize) for h, w in headers], dtype=np.int64).reshape(-1, 2)
        counts = 3 * sizes[:, 0] * sizes[:, 1]
        starts = (np.cumsum(counts) - counts).astype(np.int64)  # exclusive prefix sum
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(max(int(counts.sum()), 1),))
        task = bar.add_task(meta["name"], total=n)
        def decode(i: int) -> np.ndarray:
            return decode_image(paths[i], resize, interpolation)

        for chunk in _chunks(n):
            for i, array in zip(chunk, pool.map(decode, chunk), strict=True):
                h, w = int(sizes[i, 0]), int(sizes[i, 1])
                if array.shape != (h, w, 3):
                    raise DataError(f"image {paths[i]} decoded to {array.shape[:2]}, but its header promised "
                                    f"{(h, w)} after resize {resize}")
                images[starts[i]:starts[i] + counts[i]] = array.transpose(2, 0, 1).reshape(-1)
            bar.advance(task, len(chunk))
    images.flush()
    del images
    np.save(tmp / "sizes.npy", sizes)
    np.save(tmp / "starts.npy", starts)
    np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
    meta = dict(meta, count=n, pixel_bytes=int(counts.sum()))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return n


def _is_complete(directory: Path, fp: str) -> bool:
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("fingerprint") == fp and meta.get("format") == FORMAT_VERSION


def open_cache(paths: Sequence[str | os.PathLike], labels: Sequence[int], *, cache_dir: str | os.PathLike,
               name: str, resize: int | tuple[int, int] | None = None,
               sources: Sequence[str | os.PathLike] = (), interpolation: Any = None, progress: bool = True,
               threads: int | None = None) -> ImageCache:
    """Open the cache of these images (decoding them on first use, or when anything changed).

    `name` is a readable label of the folder (e.g. ``aircraft-train``); `sources` are the annotation
    files whose bytes are part of the fingerprint.
    """
    paths = [Path(p) for p in paths]
    if len(paths) != len(labels):
        raise DataError(f"cache {name}: {len(paths)} files but {len(labels)} labels")
    slot, fp = fingerprint(paths, labels, [Path(s) for s in sources], resize)
    cache_dir = Path(cache_dir)
    prefix = f"{name}-{slot[:8]}-"
    final = cache_dir / f"{prefix}{fp[:16]}"
    if _is_complete(final, fp):
        return ImageCache(final, names=paths)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    meta = {"format": FORMAT_VERSION, "name": name, "fingerprint": fp, "resize": resize,
            "sources": [path_text(s) for s in sources]}
    try:
        n = _write_cache(tmp, paths, labels, resize, interpolation, meta, progress,
                         threads or min(4, os.cpu_count() or 1))
        if final.exists():  # an incomplete leftover, or another process finished first
            if _is_complete(final, fp):
                shutil.rmtree(tmp)
                return ImageCache(final, names=paths)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in cache_dir.glob(f"{prefix}*"):  # older contents of the same files: superseded
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    return ImageCache(final, built=True, decoded=n, names=paths)


def _dataset_files(dataset: Any) -> tuple[list[Path], list[int], list[Path]]:
    """(absolute image paths, labels, annotation files) of a harness dataset (see decathlon.data)."""
    for attr in ("file_paths", "labels"):
        if not hasattr(dataset, attr):
            raise ConfigError(f"dataset {type(dataset).__name__} has no {attr!r}; the cache needs "
                              "file_paths and labels (decathlon.data datasets have them)")
    root = getattr(dataset, "root", None)
    paths = []
    for p in dataset.file_paths:
        p = Path(p)
        if not p.is_absolute():
            if root is None:
                raise ConfigError(f"dataset path {p} is relative and the dataset has no root")
            p = Path(root) / p
        paths.append(p)
    sources = getattr(dataset, "annotation_paths", None) or ()  # DecathlonDataset: the split's JSON files
    return paths, [int(v) for v in dataset.labels], [Path(s) for s in sources]


def cache_for_dataset(dataset: Any, geometry: Any, *, cache_dir: str | os.PathLike | None = None,
                      name: str | None = None, progress: bool = True) -> ImageCache:
    """Open (or build) the cache of a harness dataset at the geometry's resize."""
    geo = crop_geometry(geometry)
    paths, labels, sources = _dataset_files(dataset)
    if cache_dir is None:
        cache_dir = default_cache_dir(getattr(dataset, "root", None))
    if name is None:
        spec = getattr(dataset, "spec", None)
        split = getattr(dataset, "split", None)
        name = "-".join(str(x) for x in (getattr(spec, "name", None), split) if x) or "dataset"
    return open_cache(paths, labels, cache_dir=cache_dir, name=name, resize=geo.resize, sources=sources,
                      interpolation=getattr(geometry, "interpolation", None), progress=progress)


# ------------------------------------------------------------------------------------ batched augmentation


def output_size(sizes: torch.Tensor, geo: CropGeometry, names: Sequence | None = None) -> tuple[int, int]:
    """(height, width) of the batches: the crop, or the common image size when there is no crop.

    Images of different sizes without a crop raise DataError naming the odd files (`names`, aligned with
    `sizes`: every image's size is known from its header, so the check is per image, before any batch).
    """
    if geo.crop is not None:
        return geo.crop
    if len(sizes) and not bool((sizes == sizes[0]).all()):
        pairs = [tuple(s) for s in sizes.tolist()]
        if names is not None:
            raise DataError(size_mismatch(pairs, names))
        raise DataError(f"images of different sizes {sorted(set(pairs))[:4]} and no crop: a batch needs "
                        "one size")
    return (int(sizes[0, 0]), int(sizes[0, 1])) if len(sizes) else (1, 1)


def crop_offsets(sizes: torch.Tensor, geo: CropGeometry, generator: torch.Generator | None) -> torch.Tensor:
    """(N, 2) int64 (top, left) of each image's crop, as torchvision's RandomCrop / CenterCrop take them.

    Random offsets are uniform over [0, size - crop] per dimension, drawn from `generator`. Centre
    offsets round half to even like torchvision's ``int(round(...))``; a crop larger than the image gives
    a negative offset (the zero padding of CenterCrop).
    """
    sizes = sizes.to(torch.int64)
    if geo.crop is None:
        return torch.zeros_like(sizes)
    crop = torch.tensor(geo.crop, dtype=torch.int64)
    if not geo.random_crop:
        larger = crop > sizes
        centred = torch.round((sizes - crop).double() / 2).to(torch.int64)
        padded = -torch.div(crop - sizes, 2, rounding_mode="floor")
        return torch.where(larger, padded, centred)
    room = sizes - crop + 1
    if bool((room < 1).any()):
        bad = int(torch.nonzero((room < 1).any(1))[0])
        raise DataError(f"random crop {geo.crop} is larger than image {bad} of the split, "
                        f"of size {tuple(sizes[bad].tolist())}")
    # float64 uniforms: floor(u * room) < room for every room below 2**53
    u = torch.rand(sizes.shape, dtype=torch.float64, generator=generator)
    return (u * room).floor().to(torch.int64)


def flip_flags(n: int, geo: CropGeometry, generator: torch.Generator | None) -> torch.Tensor:
    """(N,) bool: which images are flipped horizontally (p = 0.5 when the geometry flips)."""
    if not geo.flip:
        return torch.zeros(n, dtype=torch.bool)
    return torch.rand(n, generator=generator) < 0.5


def crop_batch(images: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor, offsets: torch.Tensor,
               flips: torch.Tensor, out_hw: tuple[int, int], *, gather: bool | None = None) -> torch.Tensor:
    """Crop (and flip) a batch of cached images: -> (B, 3, out_h, out_w) uint8.

    `images` is the split's flat uint8 pixel tensor (memory-mapped or on the device); `starts` (B,),
    `sizes` (B, 2), `offsets` (B, 2) and `flips` (B,) are, on the CPU, where each image of the batch
    begins, its (h, w), its crop corner (top, left) and its flip flag. Only the cropped pixels are read.
    Pixels outside an image (a centre crop larger than it) are zero, as torchvision pads them.

    Two equivalent implementations (`gather`: None = choose by device): one gather of every pixel at
    computed flat indices (fast on the GPU, and the one that handles padding), or on the CPU a stack of
    per-image views followed by one flip of the flipped subset, about 20x faster there than a gather.
    Index arithmetic happens on the device from small CPU tensors, so a CUDA batch needs no host sync.
    """
    oh, ow = out_hw
    inside = bool((offsets >= 0).all()) and bool((offsets + torch.tensor([oh, ow]) <= sizes).all())
    if gather is None:
        gather = images.device.type != "cpu" or not inside
    if not gather:
        if not inside:
            raise DataError(f"crop {out_hw} at {offsets.tolist()} leaves images {sizes.tolist()}: "
                            "the slicing path needs crops inside the images")
        views = []
        for start, (h, w), (t, left) in zip(starts.tolist(), sizes.tolist(), offsets.tolist(), strict=True):
            views.append(images[start:start + 3 * h * w].view(3, h, w)[:, t:t + oh, left:left + ow])
        out = torch.stack(views)
        if bool(flips.any()):
            out[flips] = out[flips].flip(3)
        return out
    rows = offsets[:, :1] + torch.arange(oh)  # (B, oh)
    step = torch.arange(ow)
    cols = offsets[:, 1:] + torch.where(flips[:, None], ow - 1 - step, step)  # a flip reverses the columns
    masked = None
    if not inside:
        masked = (((rows >= 0) & (rows < sizes[:, :1]))[:, None, :, None]
                  & ((cols >= 0) & (cols < sizes[:, 1:]))[:, None, None, :])
    dev = images.device
    h, w = sizes[:, 0:1], sizes[:, 1:2]
    rows = torch.minimum(rows.clamp(min=0), h - 1).to(dev, non_blocking=True)
    cols = torch.minimum(cols.clamp(min=0), w - 1).to(dev, non_blocking=True)
    h, w = h.to(dev, non_blocking=True), w.to(dev, non_blocking=True)
    base = starts.to(dev, non_blocking=True)[:, None, None, None]
    channel = torch.arange(3, device=dev)[None, :, None, None] * (h * w)[:, :, None, None]
    flat = base + channel + rows[:, None, :, None] * w[:, :, None, None] + cols[:, None, None, :]
    out = images[flat]  # (B, 3, oh, ow)
    if masked is not None:
        out = out * masked.to(dev, out.dtype)
    return out


def normalize_batch(crops: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *,
                    channels_last: bool = False) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float, the same operations as ToTensor + Normalize.

    `mean` and `std` are (3,) float tensors on the batch's device. The uint8 batch is first laid out in
    the requested memory format (crops are NCHW; channels-last costs one uint8 copy), so that the float
    conversion writes the final layout directly.
    """
    x = crops.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return x.float().div_(255).sub_(mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1))


# ------------------------------------------------------------------------------------------------ loaders


def epoch_plan(indices: torch.Tensor, sizes: torch.Tensor, geo: CropGeometry, *, shuffle: bool,
               generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(order, offsets, flips) of one epoch over `indices`; every random draw comes from `generator`.

    Draw order: the shuffle, then crop offsets, then flips, all for the whole epoch at once. The shuffle
    consumes `generator` exactly as ``DataLoader(shuffle=True, generator=generator)`` does (torch 2.x: one
    int64 for the workers' base seed, the permutation, and a second permutation that RandomSampler draws
    and slices to nothing), so without random augmentation both paths see the same batches in the same
    order, epoch after epoch (checked by tests/test_cache.py).
    """
    if shuffle:
        n = len(indices)
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        indices = indices[torch.randperm(n, generator=generator)]
        torch.randperm(n, generator=generator)
    offsets = crop_offsets(sizes[indices], geo, generator)
    return indices, offsets, flip_flags(len(indices), geo, generator)


def _init_worker(worker_id: int) -> None:
    from decathlon.data import ignore_scheduler_signals  # the worker leaves preemption to the main process

    ignore_scheduler_signals(worker_id)


class _CropSource(torch.utils.data.Dataset):
    """Worker side of the loader: item = one planned batch, result = its crops (B, 3, h, w).

    With `mean`/`std` (CPU training) the worker also normalises, so that the float conversion runs in
    parallel too; without them (CUDA) it returns uint8, 4x fewer bytes to move, normalised on the device.
    """

    def __init__(self, cache: ImageCache, out_hw: tuple[int, int], mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None, channels_last: bool = False):
        self.cache, self.out_hw = cache, out_hw
        self.mean, self.std, self.channels_last = mean, std, channels_last

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, item: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        index, offsets, flips = item
        cache = self.cache
        crops = crop_batch(cache.images, cache.starts[index], cache.sizes[index], offsets, flips, self.out_hw)
        if self.mean is None:
            return crops
        return normalize_batch(crops, self.mean, self.std, channels_last=self.channels_last)


class _PlanSampler(torch.utils.data.Sampler):
    """The current epoch's planned batches, set before each epoch (lets the workers persist)."""

    def __init__(self):
        self.plan: list = []

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


class CachedLoader:
    """Batches from an :class:`ImageCache`: iterating once is one epoch.

    Yields ``(images, labels, indices)``: images (B, 3, h, w) float32 normalised on `device`, labels
    (B,) int64 on `device`, indices (B,) int64 on the CPU (positions in the dataset, e.g. for image ids).
    On CUDA the split is kept resident on the device as uint8 (when it fits in half the free memory) and
    batches are cropped and normalised there; otherwise crops are taken from the memory map, in
    `num_workers` persistent worker processes when > 0 (which also normalise when `device` is the CPU).
    The random plan of an epoch is drawn in the calling process, so batches do not depend on workers.
    """

    def __init__(self, cache: ImageCache, geometry: Any, mean: Sequence[float], std: Sequence[float], *,
                 batch_size: int, device: str | torch.device = "cpu", shuffle: bool = False,
                 generator: torch.Generator | None = None, drop_last: bool = False,
                 indices: Sequence[int] | torch.Tensor | None = None, num_workers: int = 0,
                 channels_last: bool = False, resident: bool | None = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}; expected >= 1")
        self.cache, self.geo = cache, crop_geometry(geometry)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = generator
        self.device = torch.device(device)
        self.indices = (torch.arange(len(cache)) if indices is None
                        else torch.as_tensor(indices, dtype=torch.int64))
        self.num_workers, self.channels_last = num_workers, channels_last
        names = cache.names
        if names is not None and self.geo.crop is None:  # only needed to name odd-sized files
            names = [names[i] for i in self.indices.tolist()]
        self.out_hw = output_size(cache.sizes[self.indices], self.geo, names)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.labels = cache.labels.to(self.device)
        if resident is None:
            resident = self.device.type == "cuda" and _fits_on_device(cache, self.device)
        self._resident = cache.images.to(self.device) if resident else None
        self._sampler = _PlanSampler()
        self._workers: torch.utils.data.DataLoader | None = None  # created on the first epoch

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The planned batches of the next epoch: (index, offsets, flips) each; draws from the generator."""
        order, offsets, flips = epoch_plan(self.indices, self.cache.sizes, self.geo, shuffle=self.shuffle,
                                           generator=self.generator)
        out = []
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            sl = slice(start, start + self.batch_size)
            out.append((order[sl], offsets[sl], flips[sl]))
        return out

    def _worker_loader(self) -> torch.utils.data.DataLoader:
        if self._workers is None:
            cpu = self.device.type == "cpu"
            mean, std = (self.mean, self.std) if cpu else (None, None)
            source = _CropSource(self.cache, self.out_hw, mean, std, self.channels_last)
            self._workers = torch.utils.data.DataLoader(
                source, batch_size=None, sampler=self._sampler, num_workers=self.num_workers,
                persistent_workers=True, pin_memory=not cpu, worker_init_fn=_init_worker)
        return self._workers

    def _images(self, plan: list) -> Iterator[torch.Tensor]:
        """Normalised float batches of `plan`, in order."""
        if self._resident is None and self.num_workers > 0:
            self._sampler.plan = plan
            for out in self._worker_loader():
                if out.dtype == torch.uint8:
                    out = normalize_batch(out.to(self.device, non_blocking=True), self.mean, self.std,
                                          channels_last=self.channels_last)
                yield out
            return
        images = self._resident if self._resident is not None else self.cache.images
        for index, offsets, flips in plan:
            crops = crop_batch(images, self.cache.starts[index], self.cache.sizes[index], offsets, flips,
                               self.out_hw)
            yield normalize_batch(crops.to(self.device, non_blocking=True), self.mean, self.std,
                                  channels_last=self.channels_last)

    def close(self) -> None:
        """End the persistent worker processes now (else they live until the loader is collected)."""
        if self._workers is not None:
            end_workers(self._workers)
            self._workers = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        plan = self.batches()
        for (index, _, _), images in zip(plan, self._images(plan), strict=True):
            yield images, self.labels[index.to(self.device, non_blocking=True)], index


def _fits_on_device(cache: ImageCache, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return cache.images.numel() < free // 2  # leave half of the free memory to the model


def _unwrap(dataset: Any) -> tuple[Any, torch.Tensor | None]:
    """(base dataset, indices into it) for a (possibly nested) torch Subset; (dataset, None) otherwise."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        sub = torch.as_tensor(list(dataset.indices), dtype=torch.int64)
        indices = sub if indices is None else sub[indices]
        dataset = dataset.dataset
    return dataset, indices


def make_train_loader(dataset: Any, geometry: Any, mean: Sequence[float], std: Sequence[float], *,
                      batch_size: int, generator: torch.Generator | None, device: str | torch.device = "cpu",
                      drop_last: bool = True, num_workers: int = 0, channels_last: bool = False,
                      cache_dir: str | os.PathLike | None = None, progress: bool = True) -> CachedLoader:
    """The training loader of the cache path: shuffled, random crops/flips of the geometry.

    `dataset` is a harness dataset (or a torch Subset of one, e.g. ``limit_train_images``); `geometry`
    is the preset's training geometry; `generator` (CPU) drives the permutation, offsets and flips.
    """
    base, indices = _unwrap(dataset)
    cache = cache_for_dataset(base, geometry, cache_dir=cache_dir, progress=progress)
    return CachedLoader(cache, geometry, mean, std, batch_size=batch_size, device=device, shuffle=True,
                        generator=generator, drop_last=drop_last, indices=indices, num_workers=num_workers,
                        channels_last=channels_last)


def make_eval_loader(dataset: Any, geometry: Any, mean: Sequence[float], std: Sequence[float], *,
                     batch_size: int, device: str | torch.device = "cpu", num_workers: int = 0,
                     channels_last: bool = False, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> CachedLoader:
    """The evaluation loader of the cache path: dataset order, every image, the test geometry."""
    base, indices = _unwrap(dataset)
    cache = cache_for_dataset(base, geometry, cache_dir=cache_dir, progress=progress)
    return CachedLoader(cache, geometry, mean, std, batch_size=batch_size, device=device, shuffle=False,
                        generator=None, drop_last=False, indices=indices, num_workers=num_workers,
                        channels_last=channels_last)
