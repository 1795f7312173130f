"""Link to SpotTune: does SpotTune fine-tune more blocks on domains further from the source?

From the results store's policy table (kind ``block``: per block, the fraction of evaluation images
routed through the fine-tuned copy), per domain: the fraction of blocks fine-tuned (mean over blocks of
those fractions = mean over images of the fraction of their blocks on the fine-tuned path), and the same
over the first, middle and last third of the blocks. Means over seeds. Then the rank (Spearman) and
linear (Pearson) correlation of that fraction with the domain distance, and a scatter plot.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from decathlon.figures import label_points

THIRDS = ("first_third", "middle_third", "last_third")
MIN_POINTS = 3  # fewer domains: no correlation is computed
SMALL_N = 8  # fewer domains: the correlation is reported but flagged as too small to mean much


def spottune_usage(jobs: pd.DataFrame, policy: pd.DataFrame, *, method: str = "spottune",
                   suite: str | None = None, protocol: str | None = None,
                   job_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Per domain (index): ``tuned_fraction``, the fractions over the thirds of the blocks, ``jobs`` averaged.

    Only `method`'s finished jobs (of `suite` and `protocol` when given, and among `job_ids` when given:
    e.g. the current plan's, so that runs of other settings left in the store do not mix in) count.
    Empty when there are none.
    """
    columns = ["tuned_fraction", *THIRDS, "blocks", "jobs"]
    if jobs.empty or policy.empty or "method" not in jobs.columns:
        return pd.DataFrame(columns=columns)
    selected = jobs[jobs["method"] == method]
    if suite is not None:
        selected = selected[selected["suite"] == suite]
    if protocol is not None:
        selected = selected[selected["protocol"] == protocol]
    if job_ids is not None:
        selected = selected[selected["job_id"].isin(set(job_ids))]
    rows = policy[(policy["kind"] == "block") & policy["job_id"].isin(set(selected["job_id"]))]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    per_job = []
    for (job_id, domain), group in rows.groupby(["job_id", "domain"]):
        values = group.sort_values("index")["value"].to_numpy(dtype=float)
        thirds = np.array_split(values, 3)
        per_job.append({"job_id": job_id, "domain": domain, "tuned_fraction": float(values.mean()),
                        **{name: float(part.mean()) for name, part in zip(THIRDS, thirds, strict=True)},
                        "blocks": len(values)})
    frame = pd.DataFrame(per_job)
    means = {name: (name, "mean") for name in ("tuned_fraction", *THIRDS)}
    out = frame.groupby("domain").agg(**means, blocks=("blocks", "first"), jobs=("job_id", "nunique"))
    return out[columns]


def correlation(x, y) -> dict[str, float | int | str]:
    """Spearman and Pearson correlation of `x` and `y` with p-values, ``n`` and a note on the sample size."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    out: dict[str, float | int | str] = {"n": n, "spearman": np.nan, "spearman_p": np.nan, "pearson": np.nan,
                                         "pearson_p": np.nan}
    if n < MIN_POINTS:
        out["note"] = f"n={n} domains: too few for a correlation (need >= {MIN_POINTS})"
        return out
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        out["note"] = f"n={n} domains: one variable is constant, the correlation is undefined"
        return out
    s, p = spearmanr(x, y), pearsonr(x, y)
    out.update(spearman=float(s.statistic), spearman_p=float(s.pvalue), pearson=float(p.statistic),
               pearson_p=float(p.pvalue))
    out["note"] = (f"n={n} domains: too small to conclude much (p-values are indicative only)" if n < SMALL_N
                   else f"n={n} domains")
    return out


def link_table(distances: pd.DataFrame, usage: pd.DataFrame, metric: str = "cosine") -> pd.DataFrame:
    """Distance (`metric`) and SpotTune usage per domain, for the domains that have both."""
    joined = distances[[metric]].join(usage, how="inner")
    return joined.rename(columns={metric: "distance"}).sort_values("distance")


def plot_link(table: pd.DataFrame, stats: dict, *, distance_name: str = "cosine distance") -> Figure:
    """Scatter of the fraction of blocks SpotTune fine-tunes against the distance, per third too."""
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2, sharex=True)
    left.scatter(table["distance"], table["tuned_fraction"], color="tab:blue")
    left.set_ylabel("fraction of blocks fine-tuned (mean over images)")
    rho = stats.get("spearman", np.nan)
    shown = "n/a" if np.isnan(rho) else f"{rho:.2f}"
    left.set_title(f"SpotTune usage vs distance: Spearman {shown}, n={stats.get('n', 0)}", fontsize=9)
    for name, marker in zip(THIRDS, ("o", "s", "^"), strict=True):
        right.scatter(table["distance"], table[name], marker=marker, label=name.replace("_", " "))
    right.set_ylabel("fraction fine-tuned, per third of the blocks")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xlabel(distance_name)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    # after the layout: adjustText places the domain labels where none overlaps another or a point
    label_points(left, table["distance"].tolist(), table["tuned_fraction"].tolist(),
                 [str(d) for d in table.index])
    return figure
