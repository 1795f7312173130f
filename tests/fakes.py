"""Writers of tiny datasets in the real on-disk formats, for tests.

- :func:`write_decathlon`: a ``decathlon-1.0`` folder for one domain with COCO-style annotation files
  that follow the real id scheme (image_id = d * 10**7 + 200001 + position in train, val, test order;
  category_id = d * 10**7 + k) and small JPEGs under ``data/<domain>/<split>/NNNNNN.jpg``.
- :func:`write_mean_std`: a ``decathlon_mean_std.pickle`` (protocol 2, latin1-compatible).
- :func:`write_folder`: a class-per-folder tree ``<root>/<name>/{train,test}/<class>/*.jpg``.
- :func:`write_cub`: CUB-200-2011's native metadata files and images.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from decathlon.domains import get_domain

D = 10**7  # id base of the Decathlon scheme


def write_image(path: Path, size: tuple[int, int], value: int) -> None:
    """A small JPEG of `size` = (width, height) px filled with a colour derived from `value`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def decathlon_labels(split: str, count: int, classes: int,
                     present: Mapping[str, Sequence[int]] | None = None) -> list[int]:
    """The 1-based class k of each image of a split: cycles through the classes present in it."""
    ks = list((present or {}).get(split, range(1, classes + 1)))
    return [ks[i % len(ks)] for i in range(count)]


def write_decathlon(root: Path, domain: str = "aircraft", *, classes: int = 3,
                    sizes: Mapping[str, int] | None = None, image_size: tuple[int, int] = (12, 8),
                    present: Mapping[str, Sequence[int]] | None = None, labelled_test: bool = True,
                    stripped_test: bool = True) -> Path:
    """Write `domain` into ``root/decathlon-1.0`` and return that folder.

    `sizes` maps split -> image count; `present` optionally restricts a split to some classes (1-based
    k) to model a split that misses classes. Both ``<domain>_test.json`` (when `labelled_test`) and
    ``<domain>_test_stripped.json`` (when `stripped_test`) can be written.
    """
    sizes = dict(sizes or {"train": 6, "val": 3, "test": 4})
    d = get_domain(domain).number
    base = root / "decathlon-1.0"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": d * D + k, "name": f"class{k}", "supercategory": domain}
                  for k in range(1, classes + 1)]
    position = 0
    for split in ("train", "val", "test"):
        images, annotations = [], []
        for i, k in enumerate(decathlon_labels(split, sizes[split], classes, present)):
            image_id = d * D + 200001 + position
            position += 1
            file_name = f"data/{domain}/{split}/{i + 1:06d}.jpg"
            write_image(base / file_name, image_size, image_id)
            images.append({"id": image_id, "width": image_size[0], "height": image_size[1],
                           "file_name": file_name})
            annotations.append({"id": image_id, "image_id": image_id, "category_id": d * D + k,
                                "segmentation": [], "area": 0, "bbox": [], "iscrowd": 0})
        doc = {"info": {"description": "fake"}, "licenses": [], "images": images,
               "annotations": annotations, "categories": categories}
        if split != "test" or labelled_test:
            write_json(base / "annotations" / f"{domain}_{split}.json", doc)
        if split == "test" and stripped_test:
            write_json(base / "annotations" / f"{domain}_test_stripped.json",
                       {**doc, "annotations": []})
    return base


def write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def write_mean_std(path: Path, stats: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> Path:
    """A statistics pickle like the devkit's: numpy arrays keyed ``<domain>mean`` / ``<domain>std``."""
    doc = {}
    for name, (mean, std) in stats.items():
        doc[f"{name}mean"] = np.asarray(mean, dtype=np.float64)
        doc[f"{name}std"] = np.asarray(std, dtype=np.float64)
    path.write_bytes(pickle.dumps(doc, protocol=2))  # protocol 2: readable by Python 2 and with latin1
    return path


def write_folder(root: Path, name: str, train: Mapping[str, int], test: Mapping[str, int],
                 image_size: tuple[int, int] = (10, 10)) -> Path:
    """A class-per-folder tree with `train[class]` / `test[class]` JPEGs per class; returns root/name."""
    for part, counts in (("train", train), ("test", test)):
        for c, (cls, n) in enumerate(counts.items()):
            for i in range(n):
                write_image(root / name / part / cls / f"{i:04d}.jpg", image_size, 1000 * c + i)
    return root / name


def write_cub(root: Path, train: Sequence[int], test: Sequence[int], *, nested: bool = True,
              image_size: tuple[int, int] = (10, 10)) -> Path:
    """CUB-200-2011 metadata and images: `train[c]` / `test[c]` images of class c + 1; returns the folder
    holding ``images.txt`` (``root/cubs/CUB_200_2011`` when `nested`, else ``root/cubs``)."""
    base = root / "cubs" / "CUB_200_2011" if nested else root / "cubs"
    base.mkdir(parents=True, exist_ok=True)
    classes, images, labels, split = [], [], [], []
    image_id = 0
    for c, (n_train, n_test) in enumerate(zip(train, test, strict=True)):
        cls = f"{c + 1:03d}.Bird_{c + 1}"
        classes.append(f"{c + 1} {cls}")
        for i in range(n_train + n_test):
            image_id += 1
            rel = f"{cls}/Bird_{c + 1}_{i:04d}.jpg"
            write_image(base / "images" / rel, image_size, image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {int(i < n_train)}")
    for name, lines in (("classes.txt", classes), ("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split)):
        (base / name).write_text("\n".join(lines) + "\n")
    return base
