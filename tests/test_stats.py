"""decathlon.stats: the seeded, paired bootstrap behind the tables' intervals and significance marks."""

from __future__ import annotations

import numpy as np
import pytest

from decathlon import stats
from decathlon.score import s_score
from decathlon.stats import (
    RESAMPLES,
    Interval,
    domain_seed,
    paired_difference,
    percentile_interval,
    resampled_means,
    s_samples,
)


def planted(n: int, right: int) -> np.ndarray:
    """n images, the first `right` of them classified correctly (so a larger `right` is a superset)."""
    return (np.arange(n) < right).astype(float)


def test_bootstrap_is_reproducible_for_a_seed():
    scores = np.stack([planted(80, 40), planted(80, 60)])
    first = resampled_means(scores, seed=domain_seed("dtd"))
    again = resampled_means(scores, seed=domain_seed("dtd"))
    assert first.shape == (2, RESAMPLES)
    np.testing.assert_array_equal(first, again)
    other = resampled_means(scores, seed=domain_seed("svhn"))
    assert not np.array_equal(first, other)
    # one row alone is resampled with the same indices as in the pair: pairing does not depend on company
    np.testing.assert_array_equal(resampled_means(scores[1:], seed=domain_seed("dtd"))[0], first[1])
    assert domain_seed("dtd") == domain_seed("dtd") != domain_seed("dtd", seed=1)


def test_resampled_means_are_the_means_of_resampled_images(monkeypatch):
    # the counts x scores product equals averaging the drawn images directly (one chunk: the same draws)
    rng = np.random.default_rng(7)
    scores = rng.random((3, 50))
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 10**9)
    got = resampled_means(scores, seed=11, resamples=200)
    indices = np.random.default_rng(11).integers(0, 50, size=(200, 50))
    np.testing.assert_allclose(got, scores[:, indices].mean(axis=2), rtol=0, atol=1e-12)
    # drawn in chunks of 2 resamples (ImageNet-sized sets): still means of 50 drawn images each
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 100)
    binary = np.stack([planted(50, 20)])
    chunked = resampled_means(binary, seed=11, resamples=200)
    assert chunked.shape == (1, 200)
    np.testing.assert_allclose(chunked * 50, np.round(chunked * 50), atol=1e-9)  # k/50 for integer k
    assert 0.3 < chunked.mean() < 0.5
    with pytest.raises(ValueError, match="no test images"):
        resampled_means(np.zeros((1, 0)), seed=0)


@pytest.mark.parametrize(("n", "right"), [(80, 0), (80, 1), (80, 40), (80, 79), (80, 80), (400, 280),
                                          (25, 3)])
def test_intervals_contain_the_point_estimate(n, right):
    samples = 100.0 * resampled_means(planted(n, right), seed=domain_seed(f"n{n}"))[0]
    interval = percentile_interval(samples)
    point = 100.0 * right / n
    assert interval.low <= point <= interval.high
    if right in (0, n):  # every resample is the same: a zero-width interval at the point
        assert interval == Interval(point, point)


def test_interval_width_matches_the_binomial_standard_error():
    # 70% of 400 images: the normal approximation's 95% half-width is 1.96 * sqrt(p (1 - p) / n) = 4.49 pp
    samples = 100.0 * resampled_means(planted(400, 280), seed=domain_seed("svhn"))[0]
    expected = 100.0 * 1.96 * np.sqrt(0.7 * 0.3 / 400)
    assert percentile_interval(samples).half_width == pytest.approx(expected, rel=0.15)


def planted_domains(extra: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Resampled accuracies (%) of methods A and B on three domains of 100 images; B is right on the
    images A gets right plus `extra` (a fraction) of all images more."""
    a_samples, b_samples = {}, {}
    for domain, right in (("dtd", 40), ("svhn", 50), ("gtsrb", 60)):
        scores = np.stack([planted(100, right), planted(100, right + int(extra * 100))])
        a, b = 100.0 * resampled_means(scores, seed=domain_seed(domain))
        a_samples[domain], b_samples[domain] = a, b
    return a_samples, b_samples


def test_paired_s_difference_finds_a_planted_difference():
    a, b = planted_domains(0.30)  # B right on 30% more of the images
    baseline = {"dtd": 40.0, "svhn": 50.0, "gtsrb": 60.0}  # A is the baseline: S(A) = 750
    s_a, s_b = s_samples(a, baseline), s_samples(b, baseline)
    point = s_score({"dtd": 70.0, "svhn": 80.0, "gtsrb": 90.0}, baseline).total - 750.0
    difference = paired_difference(s_a, s_b, point)
    assert difference.significant and difference.interval.low > 0
    assert difference.p_value == pytest.approx(2 / (RESAMPLES + 1))  # every resample favours B
    assert difference.interval.low <= point <= difference.interval.high
    # per domain too: +30 points, its interval excludes 0
    dtd = paired_difference(a["dtd"], b["dtd"], 30.0)
    assert dtd.significant and dtd.interval.low > 15 and dtd.p_value < 0.01


def test_paired_s_difference_finds_no_null_difference():
    a, b = planted_domains(0.0)  # identical predictions
    baseline = {"dtd": 40.0, "svhn": 50.0, "gtsrb": 60.0}
    difference = paired_difference(s_samples(a, baseline), s_samples(b, baseline), 0.0)
    assert difference.p_value == 1.0 and not difference.significant
    assert difference.interval == Interval(0.0, 0.0)
    # the same accuracy with different images right (5 swapped each way): no significant difference
    first = planted(100, 50)
    swapped = first.copy()
    swapped[45:50], swapped[50:55] = 0.0, 1.0
    x, y = 100.0 * resampled_means(np.stack([first, swapped]), seed=domain_seed("dtd"))
    swap = paired_difference(x, y, 0.0)
    assert not swap.significant and swap.interval.low < 0 < swap.interval.high and swap.p_value > 0.5


def test_s_samples_score_every_resample_as_s_score_does():
    a, _ = planted_domains(0.0)
    baseline = {"dtd": 45.0, "svhn": 50.0, "gtsrb": 55.0, "ucf101": 30.0}  # ucf101: no accuracy, 0 points
    totals = s_samples(a, baseline)
    for r in (0, 17, 999):
        expected = s_score({d: float(v[r]) for d, v in a.items()}, baseline).total
        assert totals[r] == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="resample counts differ"):
        s_samples({"dtd": np.zeros(3), "svhn": np.zeros(4)}, baseline)


def test_paired_difference_rejects_unpaired_samples():
    with pytest.raises(ValueError, match="equal 1-d"):
        paired_difference(np.zeros(10), np.zeros(9), 0.0)
