"""Dataset readers for the on-disk formats the harness supports, and the normalisation statistics.

- :class:`DecathlonDataset`: the Visual Domain Decathlon as released (``decathlon-1.0/``: COCO-style
  annotation files read with pycocotools, images under ``data/<domain>/<split>/``).
- :class:`FolderDataset`: class-per-folder trees ``<root>/<name>/{train,test}/<class>/<image>``.
- :class:`CubDataset`: CUB-200-2011 in its native layout (``images.txt``, ``train_test_split.txt``, ...).
- :func:`build_dataset`: picks the reader from ``spec.layout`` through :data:`READERS`.

Every reader is a map-style dataset of ``(image, label)`` pairs (a PIL RGB image when ``transform`` is
None) with the same attributes: ``image_ids``, ``labels``, ``file_paths``, ``classes``, ``num_classes``.
The datasets without a released validation split (folder and CUB layouts) carve ``val`` out of train
with :func:`carve_val`: a class-balanced 10% of every class, chosen with a fixed seed (:data:`VAL_SEED`),
so that ``train`` and ``val`` are disjoint and identical on every machine; ``trainval`` is the whole
released train split.

Bad input raises :class:`~decathlon.errors.DataError` naming the file and what was expected, at
construction for everything that can be checked cheaply (folders, annotation files, ids, existence of
every image file) and at load time for unreadable images.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import signal
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset, Subset, default_collate

from decathlon.domains import IMAGENET_HINT, SPLITS, DomainSpec, download_hint, get_domain
from decathlon.errors import ConfigError, DataError, UnknownNameError
from decathlon.safe_pickle import INERT_GLOBALS, PICKLE_ENCODING

DECATHLON_FOLDER = "decathlon-1.0"
MEAN_STD_FILE = "decathlon_mean_std.pickle"
ID_BASE = 10**7  # image_id = d * ID_BASE + IMAGE_ID_START + position; category_id = d * ID_BASE + k
IMAGE_ID_START = 200001
VAL_FRACTION = 0.1  # share of every class carved out of train as `val` (folder and CUB layouts)
VAL_SEED = 0  # seed of that carve-out: fixed, so `val` is the same everywhere
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------------------------------
# shared helpers


SCHEDULER_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")  # what SLURM / submitit send to every process of a job


def ignore_scheduler_signals(worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: the worker ignores the scheduler's preemption signals.

    On preemption or time-out SLURM signals every process of the job step, DataLoader workers included;
    a worker killed by its SIGTERM turns the preemption into a failed job (the main process raises "DataLoader
    worker ... killed by signal") instead of submitit's checkpoint and requeue. The main process handles
    these signals; a worker exits when its parent does (torch's worker watchdog).
    """
    for name in SCHEDULER_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


@contextlib.contextmanager
def worker_batches(loader: Iterable) -> Iterator[Iterator]:
    """Iterate `loader` in a ``with`` block; its workers end with the block, however it ends.

    Loader workers ignore the scheduler's SIGTERM (:func:`ignore_scheduler_signals`). An iterator that
    outlives its loop (an error raised from a worker is kept in a reference cycle with the frames that hold
    the iterator) keeps its workers until the garbage collector runs; at interpreter exit multiprocessing
    terminates them with SIGTERM, which they ignore, and then waits for them forever. Ending them here, on
    every way out of the loop (an error, Ctrl-C, a termination signal turned into an exception), leaves
    nothing for the exit to wait for.
    """
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        end_workers(iterator)
        close = getattr(iterator, "close", None)  # a generator (cache.CachedLoader): run its finally
        if close is not None:
            close()


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (``os.sched_getaffinity``, which honours taskset,
    cgroup cpusets and SLURM's binding) where the platform has one, else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def loader_workers(requested: int) -> int:
    """DataLoader worker processes for `requested` (``RunConfig.num_workers``): at most
    :func:`available_cpus`, the limit above which torch warns ("suggested max number of worker") and
    workers only compete for the same cores. 0 stays 0 (loading in the main process)."""
    return max(0, min(int(requested), available_cpus()))


def end_workers(loader_or_iterator: Any) -> None:
    """Stop the worker processes of a DataLoader iterator now (or of a loader's persistent iterator).

    A no-op for in-process loading and for anything without workers. Uses the iterator's own shutdown
    (``_shutdown_workers``: the orderly end torch runs when an iterator is exhausted or collected).
    """
    iterator = getattr(loader_or_iterator, "_iterator", None)
    if iterator is None:
        iterator = loader_or_iterator
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


MAX_PIXELS_ENV = "SPOTTUNE_MAX_IMAGE_PIXELS"  # raises Pillow's decompression-bomb limit ("none": no limit)
RGB_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "RGBX", "RGBa", "La"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})  # e.g. 16-bit grayscale PNG


def display_path(path: str | os.PathLike) -> str:
    """`path` for messages: bytes that are not UTF-8 (old archives' latin-1 names) shown as ``\\xe9``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def path_text(path: str | os.PathLike) -> str:
    """A lossless text form of a path for ids and JSON: the path itself when its bytes are UTF-8, else its
    bytes percent-encoded (``caf%E9.jpg``; ``urllib.parse.unquote_to_bytes`` gives the bytes back)."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return urllib.parse.quote_from_bytes(raw, safe="/")


def _pixel_limit() -> int | None:
    """Pillow's decompression-bomb limit in pixels: ``$SPOTTUNE_MAX_IMAGE_PIXELS`` when set, else Pillow's."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return Image.MAX_IMAGE_PIXELS
    if value.lower() == "none":
        return None
    if not value.isdigit():
        raise ConfigError(f"${MAX_PIXELS_ENV}={value!r}; expected a number of pixels or 'none'")
    return int(value)


@contextlib.contextmanager
def decoding(path: str | os.PathLike) -> Iterator[None]:
    """The one translation of decoding errors: any exception raised in the block (Pillow's OSError,
    SyntaxError, DecompressionBombError, ...) becomes a DataError naming `path`.

    Images above Pillow's decompression-bomb limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``, about 179
    megapixels; Pillow warns from half of it) are refused; for legitimately large images set
    ``SPOTTUNE_MAX_IMAGE_PIXELS`` to a larger number of pixels (or ``none``) in the environment of the run.
    """
    Image.MAX_IMAGE_PIXELS = _pixel_limit()  # idempotent: the same value for every thread and worker
    try:
        yield
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure, whatever its type, names the file
        hint = ""
        if isinstance(exc, Image.DecompressionBombError):
            hint = f" (for a legitimately large image, set ${MAX_PIXELS_ENV} to a larger pixel count)"
        raise DataError(f"cannot read image {display_path(path)}: {type(exc).__name__}: {exc}{hint}; "
                        "expected a readable image file") from None


def size_mismatch(sizes: Sequence[tuple[int, int]], names: Sequence[str | os.PathLike]) -> str:
    """The message for images of one batch or split that must share a size and do not: the files whose
    (height, width) differs from the most common one, with their sizes."""
    common = Counter(sizes).most_common(1)[0][0]
    odd = [f"{display_path(name)} ({h}x{w})" for name, (h, w) in zip(names, sizes, strict=True)
           if (h, w) != common]
    more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
    return (f"{len(odd)} image(s) differ in size from the other {len(sizes) - len(odd)} "
            f"({common[0]}x{common[1]} px): {', '.join(odd[:5])}{more}; without a crop in the transform, "
            "every image of a split must have the same size")


def file_names(dataset: Any) -> list[Path]:
    """The image files of a harness dataset or of a (nested) torch Subset of one, in item order."""
    if isinstance(dataset, Subset):
        names = file_names(dataset.dataset)
        return [names[i] for i in dataset.indices]
    return list(dataset.file_paths)


class _Numbered(Dataset):
    """Items of `dataset` with their position appended: (image, label, index)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (*self.dataset[index], index)


class _NamingCollate:
    """collate_fn that stacks (image, label, index) items; images of different sizes in one batch raise
    DataError naming their files (instead of torch's "stack expects each tensor to be equal size")."""

    def __init__(self, names: Sequence[Path]):
        self.names = names

    def __call__(self, items: Sequence[tuple[Any, ...]]) -> Any:
        sizes = [tuple(item[0].shape[-2:]) for item in items if hasattr(item[0], "shape")]
        if len(set(sizes)) > 1:
            raise DataError(size_mismatch(sizes, [self.names[item[-1]] for item in items]))
        return default_collate(items)


def naming_batches(dataset: Any) -> dict[str, Any]:
    """DataLoader arguments for `dataset` whose batches, ``(images, labels, indices)``, name the files
    that break them (as the cache path names them: :func:`decathlon.cache.output_size`)."""
    return {"dataset": _Numbered(dataset), "collate_fn": _NamingCollate(file_names(dataset))}


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file from its header (no pixels decoded); DataError naming the file."""
    with decoding(path), Image.open(path) as img:
        return img.height, img.width


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode one image file to 8-bit PIL RGB, the one decode policy of every reader and of the cache.

    Modes with 8-bit channels convert as Pillow converts them (alpha dropped, palette applied, CMYK and
    YCbCr to RGB). 16-bit grayscale (``I;16*``, and ``I`` from a 16-bit PNG) is scaled to 8 bits
    (round(v * 255 / 65535)); ``convert`` would clip it, turning most pixels white. Any other mode (32-bit
    integer, float, ...) has no defined 8-bit range and raises DataError naming the file and the mode, as
    does an unreadable, truncated or oversized file (:func:`decoding`).
    """
    with decoding(path), Image.open(path) as img:
        img.load()  # truncated files fail here
        if img.mode in RGB_MODES:
            return img.convert("RGB")
        if img.mode in SIXTEEN_BIT_MODES or (img.mode == "I" and img.format == "PNG"):
            values = np.asarray(img).astype(np.uint32)
            grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
            return Image.fromarray(grey).convert("RGB")
        raise DataError(f"image {display_path(path)} has mode {img.mode!r} ({img.format}), which has no "
                        "defined 8-bit range; expected 8-bit (L, RGB, RGBA, P, CMYK...) or 16-bit grayscale")


def resolve_domain(domain: str | DomainSpec, suite: str | None = None) -> DomainSpec:
    """A DomainSpec from a spec or a name (looked up among the real datasets, or within `suite`)."""
    return domain if isinstance(domain, DomainSpec) else get_domain(domain, suite)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)


def _check_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{what} {path} does not exist or is not a directory")


def _check_files_exist(paths: Sequence[Path], source: str | os.PathLike) -> None:
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DataError(f"{len(missing)} image file(s) listed in {source} are missing, e.g. {shown}; "
                        "expected every listed image on disk")


class ImageListDataset(Dataset):
    """Behaviour shared by the readers: a list of files with labels, decoded on access.

    Subclasses fill ``file_paths`` (list[Path]), ``labels`` (list[int], -1 when unknown),
    ``image_ids`` and ``classes`` (class names, index = label).
    """

    file_paths: list[Path]
    labels: list[int]
    image_ids: list
    classes: list[str]
    labelled: bool = True

    def __init__(self, spec: DomainSpec, split: str, transform: Callable | None):
        self.spec, self.split, self.transform = spec, split, transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.file_paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = load_image(self.file_paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(domain={self.spec.name!r}, split={self.split!r}, "
                f"images={len(self)}, classes={self.num_classes})")


# --------------------------------------------------------------------------------------------------
# the Decathlon layout (COCO-style annotations)


@dataclass(frozen=True)
class _Annotations:
    """One parsed annotation file."""

    image_ids: list[int]
    labels: list[int]  # class index, -1 for the stripped test split
    file_names: list[str]
    categories: list[dict]  # sorted by id


def decathlon_root(root: str | os.PathLike | None) -> Path:
    """The ``decathlon-1.0`` folder: `root` itself, or ``root/decathlon-1.0`` when that exists."""
    if root is None:
        raise DataError("no data root given; expected the path of the decathlon-1.0 folder (data_root)")
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"data root {path} does not exist; expected the decathlon-1.0 folder "
                        "with annotations/ and data/")
    if not (path / "annotations").is_dir() and (path / DECATHLON_FOLDER / "annotations").is_dir():
        return path / DECATHLON_FOLDER
    return path


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot parse annotation file {path}: {exc}; expected COCO-style JSON") from None
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path} holds a {type(data).__name__}; expected a JSON object "
                        "with keys images, annotations, categories")
    return data


def _require_list(data: dict, key: str, path: Path) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise DataError(f"annotation file {path} has no list {key!r} (top-level keys: "
                        f"{', '.join(sorted(data))}); expected COCO keys images, annotations, categories")
    return value


def _require_fields(entries: list, fields: Mapping[str, type], what: str, path: Path) -> None:
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in fields.items()):
            raise DataError(f"{what} #{i} in {path} is {entry!r}; expected an object with "
                            + ", ".join(f"{k} ({t.__name__})" for k, t in fields.items()))


def _quiet_coco(data: dict) -> COCO:
    """A pycocotools index over already-validated data, keeping its progress prints off the screen.

    pycocotools indexes annotations by their ``id``, which the harness never uses and converters often
    leave out: the index is given each annotation's position as its id instead (unique, so no annotation
    replaces another), so that only the fields the harness reads are required.
    """
    annotations = [dict(ann, id=position) for position, ann in enumerate(data.get("annotations", []))]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dict(data, annotations=annotations)
        coco.createIndex()
    return coco


def _check_categories(categories: list[dict], spec: DomainSpec, path: Path) -> list[dict]:
    _require_fields(categories, {"id": int}, "category", path)
    if not categories:
        raise DataError(f"annotation file {path} lists no categories; expected {spec.num_classes}")
    low, high = spec.number * ID_BASE + 1, spec.number * ID_BASE + spec.num_classes
    for cat in categories:
        if not low <= cat["id"] <= high:
            raise DataError(f"category id {cat['id']} in {path} is outside domain {spec.name!r}'s range "
                            f"{low}..{high} (d={spec.number}, {spec.num_classes} classes)")
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise DataError(f"annotation file {path} lists a category id twice; expected unique ids")
    return sorted(categories, key=lambda c: c["id"])


def _parse_annotations(path: Path, spec: DomainSpec, labelled: bool,
                       fallback_categories: Callable[[], list[dict]] | None = None) -> _Annotations:
    """Read and check one annotation file; labels are indices into the id-sorted categories."""
    data = _read_json(path)
    images = _require_list(data, "images", path)
    _require_fields(images, {"id": int, "file_name": str}, "image", path)
    if labelled or fallback_categories is None or data.get("categories"):
        categories = _check_categories(_require_list(data, "categories", path), spec, path)
    else:  # a stripped test file without categories: the domain's categories come from train
        categories = fallback_categories()
    annotations = _require_list(data, "annotations", path) if labelled else []
    _require_fields(annotations, {"image_id": int, "category_id": int}, "annotation", path)

    image_ids = sorted(img["id"] for img in images)
    if len(set(image_ids)) != len(image_ids):
        raise DataError(f"annotation file {path} lists an image id twice; expected unique image ids")
    coco = _quiet_coco({"images": images, "annotations": annotations, "categories": categories})
    stray = sorted(set(coco.imgToAnns) - set(coco.imgs))
    if stray:
        raise DataError(f"annotation file {path} has annotations for image id(s) {stray[:5]} that are not "
                        "in its 'images'; expected every annotated image to be listed")
    index = {c["id"]: k for k, c in enumerate(categories)}
    labels = []
    for image_id in image_ids:
        anns = coco.imgToAnns.get(image_id, [])
        if not labelled:
            labels.append(-1)
            continue
        if len(anns) != 1:
            raise DataError(f"image id {image_id} in {path} has {len(anns)} annotations; expected exactly "
                            "one per image in a labelled split")
        category_id = anns[0]["category_id"]
        if category_id not in index:
            raise DataError(f"annotation of image id {image_id} in {path} has category_id {category_id}, "
                            "which is not in the file's 'categories'")
        labels.append(index[category_id])
    return _Annotations(image_ids, labels, [coco.imgs[i]["file_name"] for i in image_ids], categories)


class DecathlonDataset(ImageListDataset):
    """One split of one Decathlon domain in the released layout.

    `root` is the ``decathlon-1.0`` folder (or its parent); `domain` a name or a DomainSpec (names are
    looked up among the real datasets, or within `suite`: the generated suite's domains share the real
    names and id scheme). `split` is ``train``, ``val``, ``trainval`` (train then val) or ``test``
    (``<domain>_test.json`` when present, else the unlabelled ``<domain>_test_stripped.json`` with
    labels -1 and ``labelled = False``). Labels are positions in the id-sorted ``categories``.
    """

    def __init__(self, root: str | os.PathLike | None, domain: str | DomainSpec, split: str,
                 transform: Callable | None = None, *, suite: str | None = None):
        spec = resolve_domain(domain, suite)
        _check_split(split)
        if spec.number is None:
            raise ConfigError(f"domain {spec.name!r} has layout {spec.layout!r} and no Decathlon number; "
                              "DecathlonDataset reads Decathlon-layout domains only")
        super().__init__(spec, split, transform)
        self.root = decathlon_root(root)
        _check_dir(self.root / "annotations", "annotation folder")
        files = [self._split_file(s) for s in (("train", "val") if split == "trainval" else (split,))]
        self.annotation_paths = [path for path, _ in files]
        self.labelled = all(labelled for _, labelled in files)

        def train_categories() -> list[dict]:
            return _parse_annotations(self.annotation_path("train"), spec, True).categories

        parts = [_parse_annotations(path, spec, labelled, train_categories) for path, labelled in files]
        if any(p.categories != parts[0].categories for p in parts):
            raise DataError(f"the train and val annotation files of {spec.name!r} under {self.root} list "
                            "different categories; expected the same categories in every split")
        self.categories = parts[0].categories
        self.category_ids = [c["id"] for c in self.categories]
        self.classes = [str(c.get("name", c["id"])) for c in self.categories]
        self.image_ids = [i for p in parts for i in p.image_ids]
        self.labels = [y for p in parts for y in p.labels]
        self.file_paths = [self.root / f for p in parts for f in p.file_names]
        images = self.root / "data" / spec.directory
        if self.file_paths and not images.is_dir():
            raise DataError(f"no images of {spec.name!r}: {images} does not exist; "
                            + (IMAGENET_HINT if spec.is_source else download_hint()))
        for part, path in zip(parts, self.annotation_paths, strict=True):  # trainval: name the right file
            _check_files_exist([self.root / f for f in part.file_names], path)

    def annotation_path(self, split: str) -> Path:
        return self.root / "annotations" / f"{self.spec.name}_{split}.json"

    def _split_file(self, split: str) -> tuple[Path, bool]:
        """(annotation file, labelled) of a released split; test falls back to the stripped file."""
        if split == "test" and not self.annotation_path("test").is_file():
            return self.annotation_path("test_stripped"), False
        return self.annotation_path(split), True


# --------------------------------------------------------------------------------------------------
# layouts without a released val split: folder trees and CUB-200-2011


def carve_val(labels: Sequence[int], num_classes: int, *, fraction: float = VAL_FRACTION,
              seed: int = VAL_SEED) -> tuple[list[int], list[int]]:
    """Split positions into (train, val): `fraction` of every class goes to val, chosen with `seed`.

    Each class gives ``round(fraction * n)`` of its n images, and at least one when it has two or more
    (so the tiny generated suites still get a non-empty val). The choice depends only on the labels,
    their order and the seed. Both returned lists are in dataset order and disjoint.
    """
    by_class: list[list[int]] = [[] for _ in range(num_classes)]
    for position, label in enumerate(labels):
        by_class[label].append(position)
    val: set[int] = set()
    for label, positions in enumerate(by_class):
        n_val = round(fraction * len(positions))
        if len(positions) >= 2:
            n_val = max(1, n_val)
        # a string seed is hashed with SHA-512 by random.seed, so this is stable across runs and machines
        val.update(random.Random(f"{seed}:{label}").sample(positions, n_val))
    return [i for i in range(len(labels)) if i not in val], sorted(val)


class _CarvedDataset(ImageListDataset):
    """A reader of a layout with train and test only; `val` is carved out of train by :func:`carve_val`."""

    def _select(self, split: str, train: tuple[list, list, list], test: tuple[list, list, list]) -> None:
        paths, labels, ids = test if split == "test" else train
        if split in ("train", "val"):
            keep = carve_val(labels, self.num_classes)[split == "val"]
            paths, labels, ids = [paths[i] for i in keep], [labels[i] for i in keep], [ids[i] for i in keep]
        self.file_paths, self.labels, self.image_ids = list(paths), list(labels), list(ids)


def _extra_root(root: str | os.PathLike | None, spec: DomainSpec) -> Path:
    if root is None:
        raise DataError(f"no data root given for {spec.name!r}; "
                        f"expected the folder holding {spec.directory}/")
    return Path(root)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class FolderDataset(_CarvedDataset):
    """A class-per-folder dataset: ``<root>/<name>/{train,test}/<class>/<image>``.

    Classes are the sorted folder names of ``train``; image ids are paths relative to ``<root>/<name>``
    (e.g. ``"train/cat/0001.jpg"``; a name whose bytes are not UTF-8 percent-encoded, :func:`path_text`).
    ``val`` is carved out of ``train`` (:func:`carve_val`).
    """

    def __init__(self, root: str | os.PathLike | None, domain: str | DomainSpec, split: str,
                 transform: Callable | None = None, *, suite: str | None = None):
        spec = resolve_domain(domain, suite)
        _check_split(split)
        super().__init__(spec, split, transform)
        self.root = _extra_root(root, spec) / spec.directory
        _check_dir(self.root, f"dataset folder of {spec.name!r}")
        _check_dir(self.root / "train", "train folder")
        self.classes = _class_dirs(self.root / "train")
        if not self.classes:
            raise DataError(f"train folder {self.root / 'train'} has no class folders; "
                            "expected train/<class>/<image>")
        part = "test" if split == "test" else "train"
        _check_dir(self.root / part, f"{part} folder")
        unknown = sorted(set(_class_dirs(self.root / part)) - set(self.classes))
        if unknown:
            raise DataError(f"class folder(s) {unknown} in {self.root / part} are not in "
                            f"{self.root / 'train'}; expected test classes to be a subset of train classes")
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            folder = self.root / part / name
            files = _list_images(folder) if folder.is_dir() else []
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {self.root / part}")
        ids = [path_text(p.relative_to(self.root).as_posix()) for p in paths]
        if len(set(ids)) != len(ids):  # a UTF-8 name that reads as another file's percent-encoded bytes
            twice = sorted({i for i in ids if ids.count(i) > 1})[:2]
            raise DataError(f"two image files under {display_path(self.root)} have the same id; rename one "
                            f"of {twice}")
        self._select(split, (paths, labels, ids), (paths, labels, ids))


def _read_table(path: Path, columns: int) -> list[tuple[str, ...]]:
    """Rows of a whitespace-separated CUB metadata file (the last column may contain spaces)."""
    if not path.is_file():
        raise DataError(f"CUB metadata file {path} does not exist")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = tuple(line.split(maxsplit=columns - 1))
        if len(row) != columns or not row[0].isdigit():
            raise DataError(f"{path}:{n}: {line!r}; expected <integer id> and {columns - 1} more field(s)")
        rows.append(row)
    return rows


def _int_column(rows: list[tuple[str, ...]], path: Path) -> dict[int, int]:
    try:
        return {int(a): int(b) for a, b in rows}
    except ValueError:
        raise DataError(f"{path} has a non-integer value; expected lines '<image id> <integer>'") from None


class CubDataset(_CarvedDataset):
    """CUB-200-2011 in its native layout under ``<root>/cubs/CUB_200_2011/`` (or ``<root>/cubs/``).

    Uses ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt`` (1 = train) and
    ``classes.txt``; image ids are CUB's integer ids; labels are positions of the class ids in sorted
    order. ``val`` is carved out of the official train split (:func:`carve_val`).
    """

    FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")

    def __init__(self, root: str | os.PathLike | None, domain: str | DomainSpec = "cubs",
                 split: str = "train", transform: Callable | None = None, *, suite: str | None = None):
        spec = resolve_domain(domain, suite)
        _check_split(split)
        super().__init__(spec, split, transform)
        base = _extra_root(root, spec) / spec.directory
        candidates = (base / "CUB_200_2011", base)
        found = [c for c in candidates if (c / "images.txt").is_file()]
        if not found:
            raise DataError(f"no CUB-200-2011 metadata under {' or '.join(map(str, candidates))}; expected "
                            f"{', '.join(self.FILES)} and images/")
        self.root = found[0]
        images = {int(i): name for i, name in _read_table(self.root / "images.txt", 2)}
        class_of = _int_column(_read_table(self.root / "image_class_labels.txt", 2),
                               self.root / "image_class_labels.txt")
        is_train = _int_column(_read_table(self.root / "train_test_split.txt", 2),
                               self.root / "train_test_split.txt")
        names = {int(i): name for i, name in _read_table(self.root / "classes.txt", 2)}
        for what, table in (("image_class_labels.txt", class_of), ("train_test_split.txt", is_train)):
            missing = sorted(set(images) - set(table))
            if missing:
                raise DataError(f"{self.root / what} has no line for image id(s) {missing[:5]} of "
                                "images.txt; expected one line per image")
        unknown = sorted(set(class_of.values()) - set(names))
        if unknown:
            raise DataError(f"{self.root / 'image_class_labels.txt'} uses class id(s) {unknown[:5]} not in "
                            f"{self.root / 'classes.txt'}")
        class_ids = sorted(names)
        self.classes = [names[c] for c in class_ids]
        index = {c: k for k, c in enumerate(class_ids)}
        parts: dict[bool, tuple[list, list, list]] = {True: ([], [], []), False: ([], [], [])}
        for image_id in sorted(images):
            paths, labels, ids = parts[is_train[image_id] == 1]
            paths.append(self.root / "images" / images[image_id])
            labels.append(index[class_of[image_id]])
            ids.append(image_id)
        _check_files_exist(parts[True][0] + parts[False][0], self.root / "images.txt")
        self._select(split, parts[True], parts[False])


# --------------------------------------------------------------------------------------------------
# normalisation statistics


class _DataUnpickler(pickle.Unpickler):
    """Admits the inert types of :data:`decathlon.safe_pickle.INERT_GLOBALS` only (numpy arrays and plain
    builtins): the statistics file is data, never code."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return INERT_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _rgb(value: Any, key: str, path: Path) -> tuple[float, float, float]:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.size == 1:  # a grey statistic: the same value for the three channels
        arr = np.repeat(arr, 3)
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        raise DataError(f"{path}: {key!r} is {value!r}; expected 3 finite RGB values in [0, 1]")
    return tuple(float(x) for x in arr)


def read_stats_pickle(path: Path) -> dict:
    """The dict of a ``decathlon_mean_std.pickle`` (numpy arrays keyed ``<domain>mean``/``<domain>std``),
    read without running code from the file. Raises DataError naming the file when it is not such a dict.
    """
    try:
        with open(path, "rb") as f:
            stats = _DataUnpickler(f, encoding=PICKLE_ENCODING).load()  # a Python 2 pickle: str as latin1
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise DataError(f"cannot read statistics pickle {path}: {exc}; expected a dict of numpy arrays "
                        "keyed '<domain>mean' / '<domain>std'") from None
    if not isinstance(stats, dict):
        raise DataError(f"statistics pickle {path} holds a {type(stats).__name__}; expected a dict")
    return stats


def load_mean_std(root: str | os.PathLike | None, spec: DomainSpec) -> tuple[tuple[float, ...], ...]:
    """(mean, std) of `spec`'s images: the user's ``decathlon_mean_std.pickle`` when it is present in
    `root` (or ``root/decathlon-1.0``) and has the domain's keys ``<name>mean``/``<name>std``, else the
    values built into the spec. Only Decathlon-layout domains read the pickle: the extra datasets use the
    ImageNet statistics of their ImageNet-pretrained network (the pickle's ``sketches`` entry describes
    the Decathlon-style 72 px copy).
    """
    if root is None or spec.layout != "decathlon":
        return spec.mean, spec.std
    candidates = (Path(root) / MEAN_STD_FILE, Path(root) / DECATHLON_FOLDER / MEAN_STD_FILE)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return spec.mean, spec.std
    stats = read_stats_pickle(path)
    keys = (f"{spec.name}mean", f"{spec.name}std")
    present = [k in stats for k in keys]
    if not any(present):
        return spec.mean, spec.std
    if not all(present):
        raise DataError(f"statistics pickle {path} has only one of {keys}; expected both")
    return _rgb(stats[keys[0]], keys[0], path), _rgb(stats[keys[1]], keys[1], path)


# --------------------------------------------------------------------------------------------------
# dispatch

READERS: Mapping[str, type[ImageListDataset]] = MappingProxyType({
    "decathlon": DecathlonDataset, "folder": FolderDataset, "cub": CubDataset,
})


EXTRA_LAYOUTS = ("folder", "cub")  # the layouts an extra dataset may come in, told apart on disk


def detect_layout(spec: DomainSpec, root: str | os.PathLike | None) -> str:
    """The layout of `spec`'s files under `root`: ``spec.layout`` for the Decathlon layout; for an extra
    dataset, whichever of its layouts is on disk: ``folder`` when ``<root>/<directory>/train/`` exists
    (the Piggyback class-per-folder distribution), ``cub`` when CUB-200-2011's ``images.txt`` does (in
    ``<directory>/`` or ``<directory>/CUB_200_2011/``). DataError naming both layouts when neither is there.
    """
    if spec.layout not in EXTRA_LAYOUTS:
        return spec.layout
    base = _extra_root(root, spec) / spec.directory
    if (base / "train").is_dir():
        return "folder"
    if any((folder / "images.txt").is_file() for folder in (base / "CUB_200_2011", base)):
        return "cub"
    raise DataError(f"{base}: no dataset of {spec.name!r} there; expected a class-per-folder tree "
                    "(train/<class>/<image> and test/<class>/<image>) or CUB-200-2011's native layout "
                    f"(images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, images/)")


def build_dataset(spec: DomainSpec | str, root: str | os.PathLike | None, split: str,
                  transform: Callable | None = None, suite: str | None = None) -> ImageListDataset:
    """The dataset of `spec` (a DomainSpec or a name looked up in `suite`) for `split`, read with the
    reader (:data:`READERS`) of the layout found on disk (:func:`detect_layout`)."""
    spec = resolve_domain(spec, suite)
    layout = detect_layout(spec, root)
    try:
        reader = READERS[layout]
    except KeyError:
        raise UnknownNameError("layout", layout, READERS) from None
    return reader(root, spec, split, transform)
