"""Published numbers, as data: the tables the harness compares its own results with.

Keys are method names (the registry name where the method is registered, a stable kebab-case name where
it is not yet) and domain names (never column positions). Accuracies are top-1 test accuracy in %.
Sources: the SpotTune paper (Guo et al., CVPR 2019) and its slides, and the papers of the compared
methods as quoted in SpotTune's Decathlon table; see ``/work/shared/reference/spottune.md`` ("Published
numbers") and ``decathlon.md`` (the scoring baseline). Every row carries its own source note.

- :data:`DECATHLON_ROWS`: Visual Decathlon, ResNet-26, protocol trainval->test, with the published S and
  #par (parameters for all ten domains in units of one ResNet-26; None where no copy of the table gave it).
- :data:`EXTRA_ROWS`: the five extra datasets, ResNet-50 (ResNet-101 for ``finetune-resnet101``).
- :data:`FINETUNE_BASELINE`: the S-score baseline (the published "Fine-tuning" row).

Every published number was made with protocol trainval->test (:data:`PUBLISHED_PROTOCOL`) and its own
paper's recipe; reports compare a run with a row only under the same protocol and the harness's
reference recipe (:func:`decathlon.report.comparison_table`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from decathlon.domains import DECATHLON_COLUMNS, EXTRA_COLUMNS
from decathlon.errors import UnknownNameError

PUBLISHED_PROTOCOL = "trainval->test"  # every published row: fit on train+val, report on test

_SPOTTUNE = "SpotTune (Guo et al., CVPR 2019), Table 4"
_SPOTTUNE_EXTRA = "SpotTune (Guo et al., CVPR 2019), Table 1 / slides (ResNet-50)"
_THIRD_PARTY = "a third-party copy of SpotTune's Decathlon table"


@dataclass(frozen=True)
class PublishedRow:
    """One published result row: per-domain top-1 (%) and, on the Decathlon, S and #par."""

    method: str  # registry name (or a stable name for methods the harness cannot run yet)
    label: str  # the row's name in the paper
    accuracy: Mapping[str, float]  # domain name -> top-1 test accuracy (%)
    source: str  # where the numbers were read
    score: float | None = None  # published Decathlon S
    par: float | None = None  # published #par (units of one backbone, all domains together)
    protocol: str = PUBLISHED_PROTOCOL


def _row(method: str, label: str, columns: tuple[str, ...], values: tuple[float, ...], source: str,
         score: float | None = None, par: float | None = None) -> PublishedRow:
    return PublishedRow(method, label, MappingProxyType(dict(zip(columns, values, strict=True))), source,
                        score, par)


def _decathlon(method, label, values, score, par, source):
    return _row(method, label, DECATHLON_COLUMNS, values, source, score, par)


# Values in the paper's column order: imagenet12, aircraft, cifar100, daimlerpedcls, dtd, gtsrb,
# vgg-flowers, omniglot, svhn, ucf101 (decathlon.domains.DECATHLON_COLUMNS); then S and #par.
DECATHLON_ROWS: tuple[PublishedRow, ...] = (
    _decathlon("scratch", "Scratch", (59.87, 57.10, 75.73, 91.20, 37.77, 96.55, 56.30, 88.74, 96.63, 43.27),
               1625.0, 10.0, f"{_SPOTTUNE} (from Rebuffi et al., NIPS 2017)"),
    _decathlon("scratch-plus", "Scratch+",
               (59.67, 59.59, 76.08, 92.45, 39.63, 96.90, 56.66, 88.74, 96.78, 44.17), 1826.0, 11.0,
               f"{_SPOTTUNE} (from Rebuffi et al.)"),
    _decathlon("feature-extractor", "Feature extractor",
               (59.67, 23.31, 63.11, 80.33, 45.37, 68.16, 73.69, 58.79, 43.54, 26.80), 544.0, 1.0,
               f"{_SPOTTUNE} (from Rebuffi et al., NIPS 2017)"),
    _decathlon("finetune", "Fine-tuning",
               (59.87, 60.34, 82.12, 92.82, 55.53, 97.53, 81.41, 87.69, 96.55, 51.20), 2500.0, 10.0,
               f"{_SPOTTUNE} (from Rebuffi et al., NIPS 2017); the S-score baseline"),
    _decathlon("bn-adapt", "BN adapt.",
               (59.87, 43.05, 78.62, 92.07, 51.60, 95.82, 74.14, 84.83, 94.10, 43.51), 1363.0, 1.0,
               f"{_SPOTTUNE} (from Rebuffi et al.)"),
    _decathlon("lwf", "LwF", (59.87, 61.15, 82.23, 92.34, 58.83, 97.57, 83.05, 88.08, 96.10, 50.04),
               2515.0, 10.0, f"{_THIRD_PARTY} (Li & Hoiem, ECCV 2016, as run by Rebuffi et al., NIPS 2017)"),
    _decathlon("series-adapters-nips17", "Res. adapt.",
               (59.67, 56.68, 81.20, 93.88, 50.85, 97.05, 66.24, 89.62, 96.13, 47.45), 2118.0, 2.0,
               f"{_THIRD_PARTY} (Rebuffi et al., NIPS 2017, series adapters)"),
    _decathlon("series-adapters-decay", "Res. adapt. decay",
               (59.67, 61.87, 81.20, 93.88, 57.13, 97.57, 81.67, 89.62, 96.13, 50.12), 2621.0, 2.0,
               f"{_THIRD_PARTY} (Rebuffi et al., NIPS 2017, adapters with domain-dependent weight decay)"),
    _decathlon("adapters-finetune-all", "Res. adapt. finetune all",
               (59.23, 63.73, 81.31, 93.30, 57.02, 97.47, 83.43, 89.82, 96.17, 50.28), 2643.0, 2.0,
               f"{_THIRD_PARTY} (Rebuffi et al., NIPS 2017, adapters and shared weights fine-tuned)"),
    _decathlon("series-adapters-large", "Res. adapt. (large)",
               (67.00, 67.69, 84.69, 94.28, 59.41, 97.43, 84.86, 89.92, 96.59, 52.39), 3131.0, 12.0,
               f"{_THIRD_PARTY} (Rebuffi et al., NIPS 2017, larger network)"),
    _decathlon("series-adapters", "Series res. adapt.",
               (60.32, 61.87, 81.22, 93.88, 57.13, 99.27, 81.67, 89.62, 96.57, 50.12), 3159.0, 2.0,
               f"{_THIRD_PARTY} (Rebuffi et al., CVPR 2018, series adapters)"),
    _decathlon("parallel-adapters", "Parallel res. adapt.",
               (60.32, 64.21, 81.92, 94.73, 58.83, 99.38, 84.68, 89.21, 96.54, 50.94), 3412.0, 2.0,
               f"{_THIRD_PARTY} (Rebuffi et al., CVPR 2018, parallel adapters)"),
    _decathlon("dan", "DAN", (57.74, 64.12, 80.07, 91.30, 56.54, 98.46, 86.05, 89.67, 96.77, 49.38),
               2851.0, 2.17, f"{_THIRD_PARTY} (Rosenfeld & Tsotsos, TPAMI 2018)"),
    _decathlon("piggyback", "PiggyBack",
               (57.69, 65.29, 79.87, 96.99, 57.45, 97.27, 79.09, 87.63, 97.24, 47.48), 2838.0, 1.28,
               f"{_THIRD_PARTY} (Mallya et al., ECCV 2018)"),
    # SpotTune's own #par (11: the shared network plus one fine-tuned copy per target domain) is not in
    # the reference pages: left missing rather than quoted from memory
    _decathlon("spottune", "SpotTune",
               (60.32, 63.91, 80.48, 96.49, 57.13, 99.52, 85.22, 88.84, 96.72, 52.34), 3612.0, None,
               _SPOTTUNE),
)


def _extra(method, label, values):
    return _row(method, label, EXTRA_COLUMNS, values, _SPOTTUNE_EXTRA)


# Values in the column order cubs, stanford-cars, flowers, wikiart, sketches (EXTRA_COLUMNS).
EXTRA_ROWS: tuple[PublishedRow, ...] = (
    _extra("feature-extractor", "Feature extractor", (74.07, 70.81, 85.67, 61.60, 75.50)),
    _extra("finetune", "Standard fine-tuning", (81.86, 89.74, 93.67, 75.60, 79.58)),
    _extra("stochastic-finetune", "Stochastic fine-tuning", (81.03, 88.94, 92.95, 73.06, 78.30)),
    _extra("finetune-last-3", "Fine-tuning last-3", (81.54, 88.21, 89.03, 72.68, 77.72)),
    _extra("finetune-last-2", "Fine-tuning last-2", (80.34, 85.36, 91.81, 70.82, 78.37)),
    _extra("finetune-last-1", "Fine-tuning last-1", (78.68, 81.73, 89.99, 68.96, 77.20)),
    _extra("random-policy", "Random policy", (81.63, 88.57, 93.44, 73.82, 78.30)),
    _extra("finetune-resnet101", "Fine-tuning ResNet-101", (82.13, 90.32, 94.21, 76.52, 78.92)),
    _extra("l2-sp", "L2-SP", (83.69, 91.08, 95.21, 75.38, 79.60)),
    _extra("progressive-nets", "Progressive neural nets", (83.08, 91.59, 95.55, 75.41, 79.71)),
    _extra("spottune-running-ft", "SpotTune (running fine-tuned blocks)",
           (82.36, 92.04, 93.49, 67.27, 78.88)),
    _extra("spottune-global-k", "SpotTune (Global-k)", (83.48, 90.51, 96.60, 75.63, 80.02)),
    _extra("spottune", "SpotTune", (84.03, 92.40, 96.34, 75.77, 80.20)),
)


def _index(rows: tuple[PublishedRow, ...]) -> Mapping[str, PublishedRow]:
    return MappingProxyType({row.method: row for row in rows})


ROWS: Mapping[str, Mapping[str, PublishedRow]] = MappingProxyType(
    {"decathlon": _index(DECATHLON_ROWS), "extra": _index(EXTRA_ROWS)}
)
DECATHLON_TABLE: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {row.method: row.accuracy for row in DECATHLON_ROWS})
EXTRA_TABLE: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {row.method: row.accuracy for row in EXTRA_ROWS})
FINETUNE_BASELINE: Mapping[str, float] = DECATHLON_TABLE["finetune"]
BASELINE_DESCRIPTION = "the published Fine-tuning model (Rebuffi et al. 2017)"


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


def published_rows(family: str) -> Mapping[str, PublishedRow]:
    """Published rows by method of a table family: ``decathlon`` or ``extra`` (paper order).

    Any other family (e.g. ``other``) has no published numbers: an empty mapping.
    """
    return ROWS.get(family, MappingProxyType({}))


def decathlon_score(method: str) -> float | None:
    """The published Decathlon S-score of `method`, or None when the paper gives none."""
    row = ROWS["decathlon"].get(method)
    return None if row is None else row.score
