"""Uncertainty of the reports' numbers: seeded, paired bootstrap over test images.

A table cell is an accuracy measured on a finite test set (80 images per domain in the generated suite,
where one image is 1.25 points); these functions say how much of a number, or of a difference between two
methods, could be test-set noise.

Method: the nonparametric bootstrap with percentile intervals (Efron & Tibshirani, *An Introduction to
the Bootstrap*, 1993, ch. 13), resampling the test images of each domain with replacement,
:data:`RESAMPLES` times. Resampling is **paired** and **stratified**: within a domain every method of a
table is evaluated on the same resampled images (one index matrix per domain), and the domains are
resampled independently of one another, so the S-score of a resample combines per-domain accuracies of
the same resample. The difference of two methods is tested on those paired resamples (the paired bootstrap
of Koehn, EMNLP 2004, and Berg-Kirkpatrick et al., EMNLP 2012); its two-sided p-value is the smallest
level at which the percentile interval of the difference excludes 0, with the add-one correction of
Davison & Hinkley (*Bootstrap Methods and their Application*, 1997, eq. 4.11), so it is never 0.

Several seeds of a method are averaged per image before resampling (an image's score is the fraction of
seeds that classify it correctly): the intervals cover test-set sampling of the seed-averaged accuracy,
not the spread over seeds (the tables give that as the sample std).

numpy rather than ``scipy.stats.bootstrap``: the S-score resamples each domain separately (domains differ
in size) and jointly across methods, which that function's one-sample-set API does not express.
The resamples are drawn as a matrix of image indices per domain, in chunks of at most
:data:`CHUNK_ELEMENTS` indices, and turned into counts so that every method's resampled accuracies are one
matrix product.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from decathlon.score import domain_points

RESAMPLES = 1000  # bootstrap resamples per domain (Efron & Tibshirani 1993 suggest >= 1000 for intervals)
CONFIDENCE = 0.95  # two-sided level of every interval; a difference is significant at 1 - CONFIDENCE
SEED = 0  # base seed of the resamples; each domain's stream is derived from it and the domain's name
CHUNK_ELEMENTS = 1 << 22  # indices drawn at once (32 MiB of int64): bounds memory on ImageNet's 48k images


@dataclass(frozen=True)
class Interval:
    """A two-sided percentile interval ``[low, high]`` (same unit as the statistic: % or S points)."""

    low: float
    high: float

    @property
    def half_width(self) -> float:
        """Half the interval's width, printed as ``± half-width`` (percentile intervals need not be
        symmetric about the point estimate; ``low``/``high`` are exact)."""
        return (self.high - self.low) / 2.0

    def excludes(self, value: float = 0.0) -> bool:
        return not self.low <= value <= self.high


@dataclass(frozen=True)
class Difference:
    """``b - a`` of two paired statistics: the point difference, its interval and two-sided p-value."""

    point: float
    interval: Interval
    p_value: float

    @property
    def significant(self) -> bool:
        """The :data:`CONFIDENCE` interval excludes 0 (a two-sided test at level 1 - CONFIDENCE)."""
        return self.interval.excludes(0.0)


def domain_seed(name: str, seed: int = SEED) -> int:
    """The seed of one domain's resamples: SHA-256 of (`seed`, `name`), so that every table with that
    domain draws the same resamples, whatever else the table holds."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def resampled_means(scores: np.ndarray, *, seed: int, resamples: int = RESAMPLES) -> np.ndarray:
    """Means of each row of `scores` over `resamples` bootstrap resamples of its columns, paired.

    `scores`: ``(rows, n)`` per-image scores of one domain's ``n`` test images (1 correct, 0 wrong, or
    the fraction of seeds correct), one row per method; every row is resampled with the same indices.
    Returns ``(rows, resamples)``, in the unit of `scores` (multiply by 100 for %). Reproducible for a
    `seed` (and `resamples`); ValueError for no images.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n = scores.shape[1]
    if n == 0:
        raise ValueError("resampled_means: no test images to resample")
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_ELEMENTS // n)
    out = np.empty((scores.shape[0], resamples))
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        indices = rng.integers(0, n, size=(rows, n))  # one resample of the n images per row
        # how often each image was drawn in each resample: the resampled mean is counts @ scores / n
        offsets = indices + n * np.arange(rows)[:, None]
        counts = np.bincount(offsets.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)
        out[:, start:start + rows] = (counts @ scores.T).T / n
    return out


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """The percentile interval of bootstrap `samples` (numpy's linear quantile interpolation)."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(samples, dtype=np.float64), [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def paired_difference(a: np.ndarray, b: np.ndarray, point: float,
                      confidence: float = CONFIDENCE) -> Difference:
    """``b - a`` from paired bootstrap samples (the same resamples, in the same order, for both).

    `point` is the observed difference. The p-value is two-sided,
    ``min(1, 2 * min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (R + 1))`` over the R resampled differences d*
    (Davison & Hinkley 1997, eq. 4.11): about 1 when the methods agree image for image, ``2 / (R + 1)``
    when every resample favours the same method.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_difference: expected two equal 1-d sample vectors, got {a.shape} and "
                         f"{b.shape}")
    d = b - a
    below, above = int(np.count_nonzero(d <= 0.0)), int(np.count_nonzero(d >= 0.0))
    p = min(1.0, 2.0 * (min(below, above) + 1) / (len(d) + 1))
    return Difference(float(point), percentile_interval(d, confidence), p)


def s_samples(accuracy: Mapping[str, np.ndarray], baseline: Mapping[str, float]) -> np.ndarray:
    """The S-score of every resample: ``accuracy[domain]`` is a vector of resampled accuracies (%), the
    same length for every domain; `baseline` (accuracy % per domain) is held fixed and fixes the scored
    domains, as in :func:`decathlon.score.s_score` (a baseline domain without accuracies scores 0)."""
    lengths = {len(v) for v in accuracy.values()}
    if len(lengths) > 1:
        raise ValueError(f"s_samples: resample counts differ between domains ({sorted(lengths)})")
    total = np.zeros(lengths.pop() if lengths else 0)
    for domain, base in baseline.items():
        if domain in accuracy:
            total = total + domain_points(np.asarray(accuracy[domain], dtype=np.float64), base)
    return total
