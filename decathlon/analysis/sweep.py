"""The data-size sweep of the best-practices analysis: freeze vs fine-tune vs re-initialise, per data size.

Each sweep point is (target domain, variant, images per class, seed). A variant is one of Chu et al.'s
configurations, run by a registered method:

=====================  ======================  =====================================================
notation               method                  what is trained
=====================  ======================  =====================================================
``FT``                 ``finetune``            every copied layer fine-tuned, new classifier
``F``                  ``feature-extractor``   copied layers frozen, only a new classifier
``FT(rest)R(top k)``   ``reinit-k-tune``       top k blocks + head re-initialised, the rest fine-tuned
``F(rest)R(top k)``    ``reinit-k-freeze``     top k blocks + head re-initialised, the rest frozen
=====================  ======================  =====================================================

A point is a normal engine job (:class:`decathlon.jobs.Job`, run by any executor, resumable) whose run
directory is ``<out>/analysis/best-practices/runs/<job id>``. Its training set is the class-balanced,
seeded subset the engine draws for ``limit_train_images = images_per_class x classes``
(:func:`decathlon.engine.balanced_subset`): every class gets exactly `images_per_class` images when it
has that many (a class with fewer gives all it has and the others fill the total). For one seed the
subsets are **nested**: the subset of n images per class contains the subset of any m < n. A requested
size at or above the largest class's count is the whole training split (``limit_train_images = None``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from decathlon.config import RunConfig
from decathlon.engine import RESULT, SHARED_METHOD, balanced_subset, derive_seed
from decathlon.errors import ConfigError
from decathlon.jobs import Job

# (notation, registered method, k re-initialised blocks, copied layers frozen)
VARIANTS: tuple[tuple[str, str, int, bool], ...] = (
    ("FT", "finetune", 0, False),
    ("F", "feature-extractor", 0, True),
    ("FT(rest)R(top1)", "reinit-1-tune", 1, False),
    ("F(rest)R(top1)", "reinit-1-freeze", 1, True),
    ("FT(rest)R(top3)", "reinit-3-tune", 3, False),
    ("F(rest)R(top3)", "reinit-3-freeze", 3, True),
)
VARIANT_NAMES = tuple(v[0] for v in VARIANTS)
ALL = "all"  # the size label of the whole training split


def variant_info(notation: str) -> tuple[str, int, bool]:
    """(method, k, frozen) of a variant in Chu et al.'s notation."""
    for name, method, k, frozen in VARIANTS:
        if name == notation:
            return method, k, frozen
    raise ConfigError(f"unknown sweep variant {notation!r}; known: {', '.join(VARIANT_NAMES)}")


def size_label(images_per_class: int | None) -> str:
    return ALL if images_per_class is None else str(images_per_class)


def sweep_subset(labels: Sequence[int], images_per_class: int | None, seed: int, domain: str) -> list[int]:
    """Indices of the training subset of a sweep point: exactly the engine's subset for this size (the
    ``subset`` stream of (`seed`, `domain`), shared by every method)."""
    if images_per_class is None:
        return list(range(len(labels)))
    if images_per_class < 1:
        raise ConfigError(f"images per class must be >= 1 (or None = all), got {images_per_class}")
    classes = len(set(int(x) for x in labels))
    return balanced_subset(labels, images_per_class * classes,
                           derive_seed(seed, "subset", method=SHARED_METHOD, domain=domain))


def effective_size(labels: Sequence[int], images_per_class: int | None) -> int | None:
    """The size actually swept: None (all) when `images_per_class` reaches the largest class's count."""
    if images_per_class is None:
        return None
    largest = max(Counter(int(x) for x in labels).values())
    return None if images_per_class >= largest else int(images_per_class)


@dataclass(frozen=True)
class SweepPoint:
    """One job of the sweep and what it measures."""

    job: Job
    domain: str
    variant: str  # Chu et al.'s notation
    requested: int | None  # images per class asked for (None = all)
    images_per_class: int | None  # the size actually run (None = the whole split)
    per_class_min: int  # images of the least/most represented class in the subset
    per_class_max: int
    train_images: int
    seed: int


def plan_sweep(base_configs: Mapping[str, RunConfig], labels: Mapping[str, Sequence[int]], *,
               sizes: Sequence[int | None], variants: Sequence[str], seeds: Sequence[int],
               needs: tuple[str, ...] = ()) -> tuple[SweepPoint, ...]:
    """Every (domain, size, variant, seed) point as a job, in domain order.

    `base_configs` maps a target domain to the RunConfig its jobs start from (data root, weights,
    epochs, ...); `labels` to the labels of its training split (to size the subsets). Requested sizes
    that collapse to the same effective size (e.g. 25 and "all" when classes have 24 images) run once.
    """
    for variant in variants:
        variant_info(variant)
    points = []
    for domain, base in base_configs.items():
        domain_labels = [int(x) for x in labels[domain]]
        classes = len(set(domain_labels))
        seen: set[int | None] = set()
        for requested in sizes:
            size = effective_size(domain_labels, requested)
            if size in seen:
                continue
            seen.add(size)
            for seed in seeds:
                subset = sweep_subset(domain_labels, size, seed, domain)
                counts = Counter(domain_labels[i] for i in subset)
                for variant in variants:
                    method = variant_info(variant)[0]
                    limit = None if size is None else size * classes
                    config = base.replace(method=method, domain=domain, seed=seed, limit_train_images=limit)
                    points.append(SweepPoint(
                        job=Job(config=config, needs=needs), domain=domain, variant=variant,
                        requested=requested, images_per_class=size, per_class_min=min(counts.values()),
                        per_class_max=max(counts.values()), train_images=len(subset), seed=seed))
    return tuple(points)


def sweep_results(points: Sequence[SweepPoint], sweep_dir: str | Path) -> pd.DataFrame:
    """One row per point: what it measures, its job id and state, and top-1 (%) when it finished."""
    rows = []
    for p in points:
        run_dir = p.job.run_dir(sweep_dir)
        result_path = run_dir / RESULT
        top1 = None
        state = "missing"
        if result_path.is_file():
            value = json.loads(result_path.read_text())["top1"]
            top1 = None if value is None else float(value)  # None: an unlabelled evaluation split
            state = "finished"
        elif (run_dir / "error.json").is_file():
            state = "failed"
        method, k, frozen = variant_info(p.variant)
        rows.append({"domain": p.domain, "variant": p.variant, "method": method, "reinit_top_k": k,
                     "frozen": frozen, "size": size_label(p.images_per_class),
                     "images_per_class": p.images_per_class if p.images_per_class is not None
                     else p.per_class_max, "per_class_min": p.per_class_min, "per_class_max": p.per_class_max,
                     "train_images": p.train_images, "seed": p.seed, "top1": top1, "state": state,
                     "job_id": p.job.job_id})
    return pd.DataFrame(rows)
