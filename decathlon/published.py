"""Published numbers, as data: the tables the harness compares its own results with.

Keys are method registry names and domain names (never column positions). Accuracies are top-1 test
accuracy in %. Sources: the SpotTune paper (CVPR 2019) and its slides; see
``/work/shared/reference/spottune.md`` ("Published numbers") and ``decathlon.md`` (scoring baseline).

- :data:`DECATHLON_TABLE`: Visual Decathlon, ResNet-26, protocol trainval->test, with :data:`DECATHLON_SCORES`
  (the published S-scores).
- :data:`EXTRA_TABLE`: the five extra datasets, ResNet-50 (ResNet-101 for ``finetune-resnet101``).
- :data:`FINETUNE_BASELINE`: the S-score baseline (the published "Fine-tuning" row).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from decathlon.domains import DECATHLON_COLUMNS, EXTRA_COLUMNS
from decathlon.errors import UnknownNameError

# Rows in the paper's column order: imagenet12, aircraft, cifar100, daimlerpedcls, dtd, gtsrb,
# vgg-flowers, omniglot, svhn, ucf101 (decathlon.domains.DECATHLON_COLUMNS); then the published S.
_DECATHLON_ROWS: tuple[tuple[str, tuple[float, ...], float], ...] = (
    ("scratch", (59.87, 57.10, 75.73, 91.20, 37.77, 96.55, 56.30, 88.74, 96.63, 43.27), 1625.0),
    ("feature-extractor", (59.67, 23.31, 63.11, 80.33, 45.37, 68.16, 73.69, 58.79, 43.54, 26.80), 544.0),
    ("finetune", (59.87, 60.34, 82.12, 92.82, 55.53, 97.53, 81.41, 87.69, 96.55, 51.20), 2500.0),
    ("spottune", (60.32, 63.91, 80.48, 96.49, 57.13, 99.52, 85.22, 88.84, 96.72, 52.34), 3612.0),
)

# Rows in the column order cubs, stanford-cars, flowers, wikiart, sketches (EXTRA_COLUMNS).
_EXTRA_ROWS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("feature-extractor", (74.07, 70.81, 85.67, 61.60, 75.50)),
    ("finetune", (81.86, 89.74, 93.67, 75.60, 79.58)),
    ("stochastic-finetune", (81.03, 88.94, 92.95, 73.06, 78.30)),
    ("finetune-last-3", (81.54, 88.21, 89.03, 72.68, 77.72)),
    ("finetune-last-2", (80.34, 85.36, 91.81, 70.82, 78.37)),
    ("finetune-last-1", (78.68, 81.73, 89.99, 68.96, 77.20)),
    ("random-policy", (81.63, 88.57, 93.44, 73.82, 78.30)),
    ("finetune-resnet101", (82.13, 90.32, 94.21, 76.52, 78.92)),
    ("l2-sp", (83.69, 91.08, 95.21, 75.38, 79.60)),
    ("progressive-nets", (83.08, 91.59, 95.55, 75.41, 79.71)),
    ("spottune-running-ft", (82.36, 92.04, 93.49, 67.27, 78.88)),
    ("spottune-global-k", (83.48, 90.51, 96.60, 75.63, 80.02)),
    ("spottune", (84.03, 92.40, 96.34, 75.77, 80.20)),
)


def _table(rows, columns: tuple[str, ...]) -> Mapping[str, Mapping[str, float]]:
    return MappingProxyType({
        row[0]: MappingProxyType(dict(zip(columns, row[1], strict=True))) for row in rows
    })


DECATHLON_TABLE: Mapping[str, Mapping[str, float]] = _table(_DECATHLON_ROWS, DECATHLON_COLUMNS)
DECATHLON_SCORES: Mapping[str, float] = MappingProxyType({name: s for name, _, s in _DECATHLON_ROWS})
EXTRA_TABLE: Mapping[str, Mapping[str, float]] = _table(_EXTRA_ROWS, EXTRA_COLUMNS)
FINETUNE_BASELINE: Mapping[str, float] = DECATHLON_TABLE["finetune"]

TABLES: Mapping[str, Mapping[str, Mapping[str, float]]] = MappingProxyType(
    {"decathlon": DECATHLON_TABLE, "extra": EXTRA_TABLE}
)


def published_accuracy(method: str, domain: str) -> float | None:
    """The published top-1 accuracy (%) of `method` on `domain`, or None when the paper gives none.

    Unknown method or domain names (in neither table) raise UnknownNameError.
    """
    methods = set(DECATHLON_TABLE) | set(EXTRA_TABLE)
    if method not in methods:
        raise UnknownNameError("published method", method, sorted(methods))
    if domain not in DECATHLON_COLUMNS + EXTRA_COLUMNS:
        raise UnknownNameError("domain", domain, DECATHLON_COLUMNS + EXTRA_COLUMNS)
    table = DECATHLON_TABLE if domain in DECATHLON_COLUMNS else EXTRA_TABLE
    return table.get(method, {}).get(domain)


def accuracy_table(family: str) -> Mapping[str, Mapping[str, float]]:
    """Published accuracies (%) by method and domain of a table family: ``decathlon`` or ``extra``.

    Any other family (e.g. ``other``) has no published numbers: an empty mapping.
    """
    return TABLES.get(family, MappingProxyType({}))


def decathlon_score(method: str) -> float | None:
    """The published Decathlon S-score of `method`, or None when the paper gives none."""
    return DECATHLON_SCORES.get(method)
