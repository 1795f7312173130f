"""Domain distance between the source domain and a target, four ways (Chu et al., 2016, Table 2).

Three metrics work on feature arrays ``(n, d)`` (the pretrained backbone's pooled features,
``backbone.features(x)``), one on the images themselves:

- :func:`cosine_distance`: ``1 - cos(mean(a), mean(b))`` of the mean feature vectors (0 = same direction);
- :func:`mmd2`: squared maximum mean discrepancy with a Gaussian kernel
  ``k(x, y) = exp(-|x - y|^2 / (2 sigma^2))``, ``sigma`` by the median heuristic (median pairwise
  Euclidean distance of the pooled sample). Default: the **unbiased** U-statistic of Gretton et al.
  (2012, eq. 3), which is ~0 (and may be slightly negative) for two samples of one distribution;
  ``biased=True`` gives the V-statistic (>= 0, exactly 0 for identical sets);
- :func:`linear_domain_accuracy`: held-out accuracy of a logistic-regression source-vs-target classifier
  (standardised features, class-balanced sets, stratified seeded split); 0.5 = indistinguishable;
- :func:`cnn_domain_accuracy`: held-out accuracy of a small 3-convolution source-vs-target CNN trained on
  the images (resized to one square size), seeded; 0.5 = indistinguishable.

Accuracies are fractions in [0, 1] here; the tables print percentages. :func:`distance_table` orders
the targets by one metric and :func:`rank_agreement` gives the Spearman rank correlations between the
four metrics (do they order the domains the same way, as Chu et al. found?).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from decathlon.errors import ConfigError

METRICS = ("cosine", "mmd2", "linear_acc", "cnn_acc")
METRIC_LABELS = {"cosine": "cosine distance", "mmd2": "MMD² (unbiased)",
                 "linear_acc": "linear classifier acc. (%)", "cnn_acc": "CNN classifier acc. (%)"}


def _as_2d(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2 or len(x) == 0:
        raise ConfigError(f"{name}: expected a non-empty (n, d) feature array, got shape {x.shape}")
    return x.astype(np.float64)


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_2d(a, "a"), _as_2d(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"feature arrays of different widths: a {a.shape}, b {b.shape}")
    return a, b


def cosine_distance(a, b) -> float:
    """``1 - cos`` of the angle between the mean feature vectors of `a` and `b` (in [0, 2])."""
    a, b = _check_pair(a, b)
    ma, mb = a.mean(0), b.mean(0)
    norm = np.linalg.norm(ma) * np.linalg.norm(mb)
    if norm == 0:
        raise ConfigError("cosine distance of a zero mean feature vector is undefined")
    return float(1.0 - np.dot(ma, mb) / norm)


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)  # rounding can give tiny negatives


def median_bandwidth(a, b) -> float:
    """The median heuristic: the median Euclidean distance between distinct points of the pooled sample."""
    a, b = _check_pair(a, b)
    pooled = np.concatenate([a, b])
    d = np.sqrt(_sq_dists(pooled, pooled))
    upper = d[np.triu_indices(len(pooled), k=1)]
    positive = upper[upper > 0]
    return float(np.median(positive)) if len(positive) else 1.0  # all points equal: any bandwidth gives 0


def mmd2(a, b, *, bandwidth: float | None = None, biased: bool = False) -> float:
    """Squared MMD between samples `a` and `b` with a Gaussian kernel (see the module docstring).

    `bandwidth` is sigma (default: :func:`median_bandwidth`). Unbiased (U-statistic) by default; it needs
    at least two points per sample.
    """
    a, b = _check_pair(a, b)
    sigma = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    if sigma <= 0:
        raise ConfigError(f"mmd2: bandwidth must be > 0, got {sigma}")
    gamma = 1.0 / (2.0 * sigma * sigma)
    kxx, kyy, kxy = (np.exp(-gamma * _sq_dists(x, y)) for x, y in ((a, a), (b, b), (a, b)))
    n, m = len(a), len(b)
    if biased:
        return float(kxx.mean() + kyy.mean() - 2.0 * kxy.mean())
    if n < 2 or m < 2:
        raise ConfigError(f"unbiased mmd2 needs >= 2 points per sample, got {n} and {m}")
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def balanced_split(n_a: int, n_b: int, seed: int, test_fraction: float) -> tuple[np.ndarray, ...]:
    """Indices for a source-vs-target classifier: both sets cut to the smaller size (chance = 0.5), then a
    stratified, seeded train/test split. Returns ``(a_train, a_test, b_train, b_test)`` index arrays.

    The split is paired: position i of both (sorted) subsets goes to the same side, so an image present in
    both sets is never learnt with one label and tested with the other (identical sets give exactly 0.5
    for a deterministic classifier instead of a below-chance artefact of memorisation).
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    n = min(n_a, n_b)
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 1:
        raise ConfigError(f"a domain classifier needs >= 2 images per domain, got {n_a} and {n_b}")
    rows_a = np.sort(rng.permutation(n_a)[:n])
    rows_b = np.sort(rng.permutation(n_b)[:n])
    positions = rng.permutation(n)
    test, train = positions[:n_test], positions[n_test:]
    return rows_a[train], rows_a[test], rows_b[train], rows_b[test]


def linear_domain_accuracy(a, b, seed: int, *, test_fraction: float = 0.3) -> float:
    """Held-out accuracy (fraction) of a logistic-regression classifier telling `a` from `b`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = _check_pair(a, b)
    a_tr, a_te, b_tr, b_te = balanced_split(len(a), len(b), seed, test_fraction)
    x_train = np.concatenate([a[a_tr], b[b_tr]])
    y_train = np.r_[np.zeros(len(a_tr)), np.ones(len(b_tr))]
    x_test = np.concatenate([a[a_te], b[b_te]])
    y_test = np.r_[np.zeros(len(a_te)), np.ones(len(b_te))]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(x_train, y_train)
    return float((model.predict(x_test) == y_test).mean())


# ----------------------------------------------------------------------------------------- image level


@dataclass(frozen=True)
class CnnSettings:
    """The small source-vs-target CNN: 3 conv layers (3x3, ReLU, 2x2 max-pool), global pool, linear."""

    size: int = 32  # px: images are resized to size x size (domains differ in size and aspect)
    channels: tuple[int, int, int] = (16, 32, 64)
    epochs: int = 8  # passes over the training half
    batch_size: int = 64
    lr: float = 1e-3  # Adam
    test_fraction: float = 0.3


def small_cnn(channels: Sequence[int]) -> nn.Module:
    """Three conv3x3-ReLU-maxpool layers, global average pool, a 2-way linear layer."""
    layers: list[nn.Module] = []
    c_in = 3
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 2)]
    return nn.Sequential(*layers)


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"expected images (n, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[-2:] == (size, size):
        return images.float()
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


def cnn_domain_accuracy(images_a: torch.Tensor | Sequence[torch.Tensor],
                        images_b: torch.Tensor | Sequence[torch.Tensor], seed: int,
                        settings: CnnSettings = CnnSettings()) -> float:
    """Held-out accuracy (fraction) of :func:`small_cnn` trained to tell the images of `a` from `b`.

    Images are ``(n, 3, H, W)`` tensors (or lists of ``(3, H, W)`` tensors of any size), resized to
    ``settings.size``. Training is seeded and leaves the global RNG state untouched (CPU).
    """
    a = _resized(_stack(images_a), settings.size)
    b = _resized(_stack(images_b), settings.size)
    a_tr, a_te, b_tr, b_te = balanced_split(len(a), len(b), seed, settings.test_fraction)
    x_train = torch.cat([a[a_tr], b[b_tr]])
    y_train = torch.cat([torch.zeros(len(a_tr), dtype=torch.long), torch.ones(len(b_tr), dtype=torch.long)])
    x_test = torch.cat([a[a_te], b[b_te]])
    y_test = torch.cat([torch.zeros(len(a_te), dtype=torch.long), torch.ones(len(b_te), dtype=torch.long)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = small_cnn(settings.channels)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        order_gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(settings.epochs):
            order = torch.randperm(len(x_train), generator=order_gen)
            for start in range(0, len(order), settings.batch_size):
                idx = order[start:start + settings.batch_size]
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            predicted = torch.cat([model(x_test[i:i + 256]).argmax(1) for i in range(0, len(x_test), 256)])
    return float((predicted == y_test).float().mean())


def _stack(images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images
    if len(images) == 0:
        raise ConfigError("cnn_domain_accuracy: an empty image set")
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) == 1:
        return torch.stack(list(images))
    # mixed sizes (e.g. free aspect ratios): bring each image to the first one's size before stacking
    h, w = images[0].shape[-2:]
    return torch.stack([x if x.shape[-2:] == (h, w) else
                        F.interpolate(x[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
                        for x in images])


# ----------------------------------------------------------------------------------------------- tables


def distance_row(source_features, target_features, source_images, target_images, *, seed: int,
                 cnn: CnnSettings = CnnSettings(), test_fraction: float = 0.3) -> dict[str, float]:
    """The four metrics of one target (accuracies as fractions) plus the MMD bandwidth and sample sizes."""
    sigma = median_bandwidth(source_features, target_features)
    return {
        "cosine": cosine_distance(source_features, target_features),
        "mmd2": mmd2(source_features, target_features, bandwidth=sigma),
        "mmd_bandwidth": sigma,
        "linear_acc": linear_domain_accuracy(source_features, target_features, seed,
                                             test_fraction=test_fraction),
        "cnn_acc": cnn_domain_accuracy(source_images, target_images, seed, cnn),
        "source_images": len(source_features),
        "target_images": len(target_features),
    }


def distance_table(rows: Mapping[str, Mapping[str, float]], order_by: str = "cosine") -> pd.DataFrame:
    """One row per target domain (index ``domain``), ordered by `order_by` (closest first), with each
    metric's rank (1 = closest to the source)."""
    if order_by not in METRICS:
        raise ConfigError(f"order_by={order_by!r}; expected one of {', '.join(METRICS)}")
    table = pd.DataFrame.from_dict({k: dict(v) for k, v in rows.items()}, orient="index")
    table.index.name = "domain"
    if table.empty:
        return table
    for metric in METRICS:
        table[f"rank_{metric}"] = table[metric].rank(method="average").astype(float)
    return table.sort_values([order_by, "mmd2"], kind="stable")


def rank_agreement(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman rank correlations (and p-values) between the four metrics over the targets of `table`.

    With fewer than 3 targets the correlations are undefined (NaN)."""
    from scipy.stats import spearmanr

    rho = pd.DataFrame(np.nan, index=list(METRICS), columns=list(METRICS))
    pvalue = rho.copy()
    for i in METRICS:
        for j in METRICS:
            if i == j:
                rho.loc[i, j], pvalue.loc[i, j] = 1.0, 0.0
            elif len(table) >= 3 and table[i].nunique() > 1 and table[j].nunique() > 1:
                result = spearmanr(table[i], table[j])
                rho.loc[i, j], pvalue.loc[i, j] = float(result.statistic), float(result.pvalue)
    return rho, pvalue


def markdown_distance_table(table: pd.DataFrame) -> str:
    """The distance table as Markdown, accuracies in percent."""
    header = "| domain | cosine distance | MMD² (unbiased) | linear acc. (%) | CNN acc. (%) | mean rank |"
    lines = [header, "|---|---:|---:|---:|---:|---:|"]
    for domain, r in table.iterrows():
        mean_rank = np.mean([r[f"rank_{m}"] for m in METRICS])
        lines.append(f"| {domain} | {r['cosine']:.4f} | {r['mmd2']:.4f} | {100 * r['linear_acc']:.1f} | "
                     f"{100 * r['cnn_acc']:.1f} | {mean_rank:.1f} |")
    return "\n".join(lines) + "\n"


def markdown_matrix(matrix: pd.DataFrame, digits: int = 2) -> str:
    """A square numeric table (e.g. the rank correlations) as Markdown; NaN as 'n/a'."""
    lines = ["| | " + " | ".join(map(str, matrix.columns)) + " |", "|---|" + "---:|" * len(matrix.columns)]
    for name, row in matrix.iterrows():
        cells = ["n/a" if (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}" for v in row]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
