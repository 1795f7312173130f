"""Freeze or tune? The recommendation matrix and the tune-minus-freeze figure (Chu et al., Table 3, Fig. 3).

The gap of a (domain, data size) point is ``top1(tune) - top1(freeze)`` in accuracy points, for a pair
of variants that differ only in whether the copied layers are fine-tuned: ``FT`` vs ``F`` (the matrix's
default, Chu et al.'s main comparison) and ``FT(rest)R(top k)`` vs ``F(rest)R(top k)``.

Domains are binned by distance into low / medium / high with two thresholds, data sizes (images per
class) likewise. Thresholds are configurable; when not given they are the terciles of the measured
values (the distances of the analysed targets, the distinct swept sizes). A cell of the matrix says
``Tune`` when the mean gap of its points exceeds the tolerance, ``Freeze`` when it is below minus the
tolerance, and ``either`` in between (Chu et al.'s "Try Freeze or Tune").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from decathlon.errors import ConfigError

LEVELS = ("low", "medium", "high")
TUNE, FREEZE, EITHER = "Tune", "Freeze", "either"
# tune variant -> its freeze twin (Chu et al.'s notation)
PAIRS: tuple[tuple[str, str], ...] = (("FT", "F"), ("FT(rest)R(top1)", "F(rest)R(top1)"),
                                      ("FT(rest)R(top3)", "F(rest)R(top3)"))
# Chu et al.'s Table 3: cosine distance L 0-0.2, M 0.2-0.4, H 0.4-1;
# images per class L 1-20, M 21-99, H >= 100
CHU_COSINE_THRESHOLDS = (0.2, 0.4)
CHU_SIZE_THRESHOLDS = (20, 99)


def tercile_thresholds(values: Sequence[float]) -> tuple[float, float]:
    """The 1/3 and 2/3 quantiles of `values` (linear interpolation)."""
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(values) == 0:
        raise ConfigError("tercile thresholds of an empty set of values")
    low, high = np.quantile(values, [1 / 3, 2 / 3])
    return float(low), float(high)


def level(value: float, thresholds: Sequence[float]) -> str:
    """``low`` (<= first threshold), ``medium`` (<= second) or ``high``."""
    low, high = thresholds
    if low > high:
        raise ConfigError(f"thresholds must be increasing, got {tuple(thresholds)}")
    return LEVELS[0] if value <= low else LEVELS[1] if value <= high else LEVELS[2]


def decide(gap: float, tolerance: float) -> str:
    """``Tune`` when tuning beats freezing by more than `tolerance` points, ``Freeze`` when it loses by
    more, ``either`` otherwise (NaN: no decision, ``n/a``)."""
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance}")
    if gap is None or math.isnan(gap):
        return "n/a"
    return TUNE if gap > tolerance else FREEZE if gap < -tolerance else EITHER


def tune_freeze_gaps(sweep: pd.DataFrame, distances: pd.Series) -> pd.DataFrame:
    """One row per (domain, size, pair): top-1 of the tune and freeze variants (means over seeds), the gap,
    and the domain's distance. `sweep` is :func:`decathlon.analysis.sweep.sweep_results` (finished rows
    are used); `distances` maps domain -> distance."""
    done = sweep[sweep["top1"].notna()]
    if done.empty:
        return pd.DataFrame(columns=["domain", "size", "images_per_class", "pair", "tune", "freeze",
                                     "tune_top1", "freeze_top1", "gap", "distance", "seeds"])
    mean = done.groupby(["domain", "size", "images_per_class", "variant"], as_index=False).agg(
        top1=("top1", "mean"), seeds=("seed", "nunique"))
    rows = []
    for (domain, size, ipc), group in mean.groupby(["domain", "size", "images_per_class"], sort=False):
        by_variant = group.set_index("variant")
        for tune, freeze in PAIRS:
            if tune in by_variant.index and freeze in by_variant.index:
                t, f = by_variant.loc[tune, "top1"], by_variant.loc[freeze, "top1"]
                rows.append({"domain": domain, "size": size, "images_per_class": int(ipc),
                             "pair": f"{tune} - {freeze}", "tune": tune, "freeze": freeze, "tune_top1": t,
                             "freeze_top1": f, "gap": t - f, "distance": float(distances.get(domain, np.nan)),
                             "seeds": int(min(by_variant.loc[[tune, freeze], "seeds"]))})
    return pd.DataFrame(rows)


def recommendation_matrix(gaps: pd.DataFrame, *, distance_thresholds: Sequence[float],
                          size_thresholds: Sequence[float], tolerance: float,
                          pair: str = "FT - F") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The matrix distance level x size level -> decision, and the tidy table behind it.

    Returns ``(matrix, cells)``: `matrix` has rows/columns ``low, medium, high`` and text cells such as
    ``Tune (+3.2, n=4)``; `cells` one row per cell with the mean gap, the point count and the decision.
    """
    rows = gaps[gaps["pair"] == pair].copy() if not gaps.empty else gaps.copy()
    if not rows.empty:
        rows["distance_level"] = [level(d, distance_thresholds) for d in rows["distance"]]
        rows["size_level"] = [level(s, size_thresholds) for s in rows["images_per_class"]]
    cells = []
    matrix = pd.DataFrame("no data", index=pd.Index(LEVELS, name="distance"),
                          columns=pd.Index(LEVELS, name="images per class"))
    for d in LEVELS:
        for s in LEVELS:
            sel = rows[(rows["distance_level"] == d) & (rows["size_level"] == s)] if not rows.empty else rows
            if sel.empty:
                cells.append({"distance_level": d, "size_level": s, "points": 0, "mean_gap": np.nan,
                              "tune_wins": 0, "freeze_wins": 0, "decision": "no data"})
                continue
            mean_gap = float(sel["gap"].mean())
            decision = decide(mean_gap, tolerance)
            cells.append({"distance_level": d, "size_level": s, "points": len(sel), "mean_gap": mean_gap,
                          "tune_wins": int((sel["gap"] > tolerance).sum()),
                          "freeze_wins": int((sel["gap"] < -tolerance).sum()), "decision": decision})
            matrix.loc[d, s] = f"{decision} ({mean_gap:+.1f}, n={len(sel)})"
    return matrix, pd.DataFrame(cells)


def markdown_recommendation(matrix: pd.DataFrame, distance_thresholds: Sequence[float],
                            size_thresholds: Sequence[float], metric: str, how: str) -> str:
    """The matrix as Markdown with the bin edges in the row/column labels."""
    d0, d1 = distance_thresholds
    s0, s1 = size_thresholds
    d_edges = {"low": f"L (<= {d0:.3g})", "medium": f"M ({d0:.3g}-{d1:.3g}]", "high": f"H (> {d1:.3g})"}
    s_edges = {"low": f"L (<= {s0:.3g})", "medium": f"M ({s0:.3g}-{s1:.3g}]", "high": f"H (> {s1:.3g})"}
    lines = [f"| {metric} \\ images per class | " + " | ".join(s_edges[s] for s in LEVELS) + " |",
             "|---|---|---|---|"]
    for d in LEVELS:
        lines.append(f"| {d_edges[d]} | " + " | ".join(matrix.loc[d, s] for s in LEVELS) + " |")
    return "\n".join(lines) + f"\n\nThresholds: {how}.\n"


def plot_gaps(gaps: pd.DataFrame, *, pair: str = "FT - F", distance_name: str = "cosine distance") -> Figure:
    """Chu et al.'s Figure 3: tune minus freeze against distance (left) and images per class (right),
    with the zero line (above it: tuning wins)."""
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2, sharey=True)
    rows = gaps[gaps["pair"] == pair] if not gaps.empty else gaps
    if rows.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no finished sweep pairs", ha="center", va="center", transform=ax.transAxes)
    else:
        sizes = sorted(rows["images_per_class"].unique())
        size_colours = colormaps["viridis"](np.linspace(0.1, 0.9, len(sizes)))
        for size, colour in zip(sizes, size_colours, strict=True):
            sel = rows[rows["images_per_class"] == size]
            axes[0].scatter(sel["distance"], sel["gap"], color=colour, label=f"{size} / class")
        domains = rows.groupby("domain")["distance"].first().sort_values().index
        for i, domain in enumerate(domains):
            sel = rows[rows["domain"] == domain].sort_values("images_per_class")
            axes[1].plot(sel["images_per_class"], sel["gap"], "o-", color=colormaps["tab20"](i % 20),
                         label=domain, alpha=0.8)
        axes[1].set_xscale("log")
        axes[0].legend(fontsize=7, title="images per class", title_fontsize=7)
        axes[1].legend(fontsize=6, ncol=2, title="domain (by distance)", title_fontsize=7)
    for ax in axes:
        ax.axhline(0.0, color="black", linewidth=1.2)
        ax.grid(alpha=0.3)
    axes[0].set_xlabel(distance_name)
    axes[1].set_xlabel("images per class (log)")
    axes[0].set_ylabel(f"top-1 gap, {pair} (points)")
    figure.suptitle("Tune minus freeze (above the line: fine-tuning the copied layers wins)")
    figure.tight_layout()
    return figure

