"""Policy figures of the routing methods (SpotTune and its variants), from the results store.

Three figures per routing method and table group (:class:`decathlon.groups.GroupKey`), each saved as a
PNG with the data behind it as a CSV of the same name:

- ``blocks``: heatmap domains x blocks of the fraction of images that take the fine-tuned path;
- ``finetuned``: per domain, the distribution of the number of fine-tuned blocks per image
  (grouped bars; data domains x counts 0..blocks);
- ``classes-<domain>``: heatmap classes x blocks of the same fraction, for one chosen domain.

Blocks are numbered 1..L (1 = the first residual block) in the figures and in their CSVs; the store's
policy ``index`` of a block is 0-based (block = index + 1). Values are means over seeds.

Figures are built on :class:`matplotlib.figure.Figure` objects rendered with Agg (no pyplot figure
state, nothing left open). The heatmaps are drawn with :func:`seaborn.heatmap` (fixed 0..1 colour range,
cells annotated when the grid is small); seaborn is imported only when a heatmap is drawn, because the
import (which pulls in scipy.stats) costs ~1.5-2.5 s of CPU per process. The grouped bars stay plain
matplotlib: one PolyCollection per domain draws several times faster than seaborn's barplot. A figure is
drawn only when it is rendered (:attr:`PolicyFigure.figure`); :func:`render_pngs` draws many in forked
worker processes, since drawing is most of the time of ``render_all``.
"""

from __future__ import annotations

import functools
import io
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from decathlon.errors import DataError, UnknownNameError
from decathlon.groups import GroupKey, domain_label, group_jobs, is_source, table_domains
from decathlon.io import atomic_write_bytes, atomic_write_text

POLICY_KINDS = ("block", "histogram", "class_block")
DPI = 100  # PNG resolution; the figures are read on screen
HEATMAP_CMAP = "viridis"  # sequential and perceptually uniform; fixed range 0..1 (a fraction of images)
ANNOTATE_MAX_CELLS = 160  # up to this many cells (e.g. 10 domains x 12 blocks) each value is printed


@dataclass(frozen=True)
class PolicyFigure:
    """One figure and the table it draws (index = rows of the plot, columns = x positions).

    The matplotlib figure is drawn on first access of :attr:`figure` (from `plot`, a picklable partial of
    a ``plot_*`` function), so that :func:`render_pngs` can draw many figures in worker processes.
    """

    name: str  # file stem under reports/figures/
    title: str
    data: pd.DataFrame
    plot: Callable[[], Figure]

    @functools.cached_property
    def figure(self) -> Figure:
        return self.plot()


def policy_by_group(store) -> list[tuple[GroupKey, pd.DataFrame]]:
    """The store's policy rows split by their job's table group (in table order; empty groups left out)."""
    policy = store.policy
    needed = {"job_id", "method", "domain", "kind", "class_index", "index", "value"}
    missing = sorted(needed - set(policy.columns))
    if missing:
        raise DataError(f"results store: policy table lacks column(s) {missing}; expected {sorted(needed)}")
    if policy.empty:
        return []
    out = []
    for key, jobs in group_jobs(store.jobs):
        rows = policy[policy["job_id"].isin(set(jobs["job_id"]))]
        if not rows.empty:
            out.append((key, rows))
    return out


def block_usage(rows: pd.DataFrame, domains: Sequence[str]) -> pd.DataFrame:
    """Domains x blocks 1..L: mean over seeds of the fraction of images on the fine-tuned path."""
    sel = rows[rows["kind"] == "block"]
    table = sel.groupby(["domain", "index"])["value"].mean().unstack("index")
    return _numbered_blocks(_tidy(table, [d for d in domains if d in table.index], "domain", "block"))


def finetuned_histogram(rows: pd.DataFrame, domains: Sequence[str], blocks: int) -> pd.DataFrame:
    """Domains x counts 0..blocks: mean fraction of images fine-tuning exactly that many blocks."""
    sel = rows[rows["kind"] == "histogram"]
    table = sel.groupby(["domain", "index"])["value"].mean().unstack("index")
    counts = range(max(blocks, int(table.columns.max()) if len(table.columns) else 0) + 1)
    table = table.reindex(columns=list(counts)).fillna(0.0)  # a count no image had: fraction 0
    return _tidy(table, [d for d in domains if d in table.index], "domain", "finetuned_blocks")


def class_usage(rows: pd.DataFrame, domain: str) -> pd.DataFrame:
    """Classes x blocks 1..L for one domain: mean over seeds of the fraction on the fine-tuned path."""
    sel = rows[(rows["kind"] == "class_block") & (rows["domain"] == domain)]
    table = sel.groupby(["class_index", "index"])["value"].mean().unstack("index")
    return _numbered_blocks(_tidy(table, sorted(table.index), "class_index", "block"))


def _numbered_blocks(table: pd.DataFrame) -> pd.DataFrame:
    # the store's 0-based block index -> the block number shown on the figure and written to its CSV
    return table.rename(columns=lambda index: index + 1)


def _tidy(table: pd.DataFrame, order: Sequence, index_name: str, column_name: str) -> pd.DataFrame:
    table = table.reindex(index=list(order))
    table = table.reindex(columns=sorted(int(c) for c in table.columns))
    table.index.name, table.columns.name = index_name, column_name
    return table


def _framed(width: float, height: float, *, left: float = 1.2, right: float = 1.1, bottom: float = 0.55,
            top: float = 0.45) -> tuple[Figure, object, object]:
    """A figure of `width` x `height` inches with one axes and a colour-bar axes; margins in inches.

    Fixed margins instead of a layout engine: constrained layout costs several times the drawing itself.
    """
    fig = Figure(figsize=(width, height))
    w, h = width - left - right, height - bottom - top
    ax = fig.add_axes((left / width, bottom / height, w / width, h / height))
    cax = fig.add_axes(((left + w + 0.15) / width, bottom / height, 0.15 / width, h / height))
    return fig, ax, cax


def _heatmap(data: pd.DataFrame, title: str, ylabels: Sequence[str] | int, ylabel: str) -> Figure:
    """Seaborn heatmap of fractions (rows x blocks 1..L) on a fixed 0..1 colour scale. `ylabels`: one
    label per row, or n to label every n-th row."""
    import seaborn as sns  # here, not at module import: the import alone costs seconds of CPU

    rows, cols = data.shape
    annotate = rows * cols <= ANNOTATE_MAX_CELLS
    # cells wide enough for a printed "0.25" (inches); rows never thinner than a tick label
    fig, ax, cax = _framed(2.6 + (0.5 if annotate else 0.42) * cols, 1.2 + 0.26 * max(rows, 7))
    # tick labels set here, not by seaborn: its overlap check renders every label once more (~30 ms/figure)
    sns.heatmap(data.astype(float), ax=ax, cbar_ax=cax, vmin=0.0, vmax=1.0, cmap=HEATMAP_CMAP,
                annot=annotate, fmt=".2f", annot_kws={"fontsize": 6.5}, xticklabels=False, yticklabels=False)
    ax.set_xticks([i + 0.5 for i in range(cols)], [str(c) for c in data.columns], fontsize=8)
    if isinstance(ylabels, int):  # every n-th row labelled with its index value
        shown = range(0, rows, ylabels)
        labels = [str(data.index[i]) for i in shown]
    else:
        shown, labels = range(rows), list(ylabels)
    ax.set_yticks([i + 0.5 for i in shown], labels, fontsize=8, rotation=0)
    cax.set_ylabel("fraction fine-tuned", fontsize=8)  # short: it must fit the shortest figure's height
    cax.tick_params(labelsize=7)
    ax.set_xlabel(f"block index (1..{cols})")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return fig


def plot_block_usage(data: pd.DataFrame, title: str, suite: str) -> Figure:
    """Heatmap domains x blocks 1..L (domain labels from the domain specs)."""
    return _heatmap(data, title, [domain_label(d, suite) for d in data.index], "domain")


def plot_class_usage(data: pd.DataFrame, title: str) -> Figure:
    """Heatmap classes x blocks 1..L (class labels thinned out when there are many)."""
    step = max(1, math.ceil(len(data) / 40))  # at most ~40 tick labels stay legible
    return _heatmap(data, title, [str(c) for c in data.index] if step == 1 else step, "class index")


def plot_histograms(data: pd.DataFrame, title: str, suite: str) -> Figure:
    """Grouped bars: per number of fine-tuned blocks, one bar per domain (fraction of its images)."""
    counts = [int(c) for c in data.columns]
    fig, ax, legend_ax = _framed(3.4 + 0.55 * len(counts), 3.4, left=0.7, right=1.6)
    legend_ax.set_axis_off()
    palette = colormaps["tab10" if len(data) <= 10 else "turbo"]
    colours = [palette(i if len(data) <= 10 else i / max(len(data) - 1, 1)) for i in range(len(data))]
    width = 0.85 / max(len(data), 1)
    for i, domain in enumerate(data.index):
        # one collection of rectangles per domain: a single artist draws much faster than ax.bar's patches
        left = [c - 0.425 + i * width for c in counts]
        heights = data.iloc[i].to_numpy(dtype=float)
        bars = [((x, 0), (x, h), (x + width, h), (x + width, 0)) for x, h in zip(left, heights, strict=True)]
        ax.add_collection(PolyCollection(bars, facecolors=colours[i], label=domain_label(domain, suite)),
                          autolim=False)
    ax.set_xticks(counts, [str(c) for c in counts], fontsize=8)
    ax.set_xlim(counts[0] - 0.6, counts[-1] + 0.6)
    ax.set_ylim(0, 1)
    ax.set_xlabel("fine-tuned blocks per image")
    ax.set_ylabel("fraction of images")
    ax.set_title(title, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    legend_ax.legend(handles, labels, loc="upper left", fontsize=7, frameon=False)
    return fig


def default_class_domain(rows: pd.DataFrame, domains: Sequence[str]) -> str | None:
    """The first target (non-source) domain in table order that has per-class policy data."""
    with_classes = set(rows.loc[rows["kind"] == "class_block", "domain"])
    for d in domains:
        if d in with_classes and not is_source(d):
            return d
    return next((d for d in domains if d in with_classes), None)


def policy_figures(store, *, chosen_domain: str | None = None) -> list[PolicyFigure]:
    """Every policy figure of the store (see the module docstring), in table-group order.

    An unknown `chosen_domain` (one with no policy data anywhere in the store) raises UnknownNameError.
    """
    groups = policy_by_group(store)
    if chosen_domain is not None and groups:
        known = sorted({d for _, rows in groups for d in rows.loc[rows["kind"] == "class_block", "domain"]})
        if chosen_domain not in known:
            raise UnknownNameError("domain with per-class policy data", chosen_domain, known)
    figures = []
    for key, in_group in groups:
        domains = table_domains(key, in_group["domain"].unique())
        for method in sorted(in_group["method"].unique()):
            figures += _method_figures(key, str(method), in_group[in_group["method"] == method], domains,
                                       chosen_domain)
    return figures


def _method_figures(key: GroupKey, method: str, rows: pd.DataFrame, domains: Sequence[str],
                    chosen_domain: str | None) -> list[PolicyFigure]:
    stem = f"{key.slug}_{method}"
    where = f"{method}, {key.suite}, {key.protocol}"
    out = []
    blocks = block_usage(rows, domains)
    if not blocks.empty:
        title = f"Fine-tuned path per block ({where})"
        plot = functools.partial(plot_block_usage, blocks, title, key.suite)
        out.append(PolicyFigure(f"{stem}_blocks", title, blocks, plot))
    hist = finetuned_histogram(rows, domains, blocks.shape[1])
    if not hist.empty:
        title = f"Fine-tuned blocks per image ({where})"
        out.append(PolicyFigure(f"{stem}_finetuned", title, hist,
                                functools.partial(plot_histograms, hist, title, key.suite)))
    domain = chosen_domain or default_class_domain(rows, domains)
    classes = class_usage(rows, domain) if domain else pd.DataFrame()
    if not classes.empty:
        title = f"Fine-tuned path per class and block: {domain_label(domain, key.suite)} ({where})"
        out.append(PolicyFigure(f"{stem}_classes-{domain}", title, classes,
                                functools.partial(plot_class_usage, classes, title)))
    return out


def png_bytes(figure: Figure) -> bytes:
    """The figure rendered as a PNG (Agg), e.g. for IPython.display.Image."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _plotted_png(plot: Callable[[], Figure]) -> bytes:
    return png_bytes(plot())


def render_workers() -> int:
    """Worker processes for :func:`render_pngs`: the usable CPUs (at most 4), 1 where fork is missing."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1  # a spawned worker re-imports torch and matplotlib: seconds, more than it saves
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus))


def render_pngs(figures: Sequence[PolicyFigure], workers: int | None = None) -> list[bytes]:
    """Every figure drawn and rendered as PNG bytes, in order.

    Drawing is CPU-bound in Python (matplotlib text layout and Agg), ~0.2-0.3 s per figure, so with more
    than one worker (default :func:`render_workers`) and enough figures the figures are drawn in forked
    processes: a fork starts in milliseconds and the workers touch neither torch nor a GPU. The PNG bytes
    are the same either way.
    """
    workers = render_workers() if workers is None else workers
    if workers <= 1 or len(figures) < 2 * workers:
        return [png_bytes(f.figure) for f in figures]
    import seaborn  # noqa: F401  (imported once here, the forked workers inherit it)

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_plotted_png, [f.plot for f in figures]))


def save_figures(figures: Sequence[PolicyFigure], pngs: Sequence[bytes], directory: Path) -> list[Path]:
    """Write ``<name>.png`` (`pngs`, from :func:`render_pngs`) and ``<name>.csv`` (the data behind it) of
    every figure atomically."""
    written = []
    for figure, png in zip(figures, pngs, strict=True):
        written += [atomic_write_bytes(directory / f"{figure.name}.png", png),
                    atomic_write_text(directory / f"{figure.name}.csv", figure.data.to_csv())]
    return written
