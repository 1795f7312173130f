"""Figures of the reports, from the results store: the routing methods' policies and the trade-off.

Per routing method and table group (:class:`decathlon.groups.GroupKey`), each saved as a vector PDF and a
PNG (:data:`DPI`) with the data behind it as a CSV of the same name:

- ``blocks``: heatmap domains x blocks of the fraction of images that take the fine-tuned path;
- ``finetuned``: per domain, the distribution of the number of fine-tuned blocks per image
  (grouped bars; data domains x counts 0..blocks);
- ``classes-<domain>``: heatmap classes x blocks of the same fraction, one per routed domain (class names
  from the annotations when the run recorded them);
- ``explorer-<domain>`` (:mod:`decathlon.explorer`): the test images that fine-tune the most and the
  fewest blocks;

and per table group ``tradeoff``: S (or the mean accuracy) against #par and against GFLOPs per image,
one labelled point per method (:func:`tradeoff_figure`). Titles name the table family ("Visual
Decathlon" or "Extra datasets"), the suite and the protocol.

A figure that would carry no information is not drawn; a line of :func:`policy_outputs`' notes says
why instead: a method whose every image takes the same path in every block of every domain (e.g.
``spottune-running-ft``, all ones), histograms where every image of every domain fine-tunes the same
number of blocks, and per-class heatmaps where every class has the same usage (a policy that does not
look at the image, e.g. Global-k's).

Blocks are numbered 1..L (1 = the first residual block) in the figures and in their CSVs; the store's
policy ``index`` of a block is 0-based (block = index + 1). Values are means over seeds.

Figures are built on :class:`matplotlib.figure.Figure` objects rendered with Agg (no pyplot figure
state, nothing left open). The heatmaps are drawn with :func:`seaborn.heatmap` (fixed 0..1 colour range,
cells annotated when the grid is small); seaborn is imported only when a heatmap is drawn, because the
import (which pulls in scipy.stats) costs ~1.5-2.5 s of CPU per process. The grouped bars stay plain
matplotlib: one PolyCollection per domain draws several times faster than seaborn's barplot. Point
labels are placed by adjustText (no label over another or over a point). A figure is drawn only when it
is rendered (:attr:`PolicyFigure.figure`); :func:`render_figures` draws many in forked worker
processes, since drawing is most of the time of ``render_all``.
"""

from __future__ import annotations

import functools
import io
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from decathlon.errors import DataError, UnknownNameError
from decathlon.groups import FAMILY_TITLES, GroupKey, domain_label, group_jobs, is_source, table_domains
from decathlon.io import atomic_write_bytes, atomic_write_text

POLICY_KINDS = ("block", "histogram", "class_block")
DPI = 200  # PNG resolution (dots per inch): sharp in print; the PDF is vector
FORMATS = ("pdf", "png")  # every figure is written in both, beside its CSV
HEATMAP_CMAP = "viridis"  # sequential and perceptually uniform; fixed range 0..1 (a fraction of images)
LABEL_CHARS = 32  # longer row labels (class names) are cut, ending in "…"
MAX_ROWS_TALL = 48  # heatmaps stop growing taller here (a 1623-row one would pass Agg's 2^16 px limit)
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


def class_names(rows: pd.DataFrame, domain: str) -> dict[int, str]:
    """Class index -> name (from the annotations, as the engine recorded them) of one domain; {} when the
    store has no names (runs written before the engine recorded them)."""
    if "class_name" not in rows:
        return {}
    sel = rows[(rows["kind"] == "class_block") & (rows["domain"] == domain) & rows["class_name"].notna()]
    return {int(k): str(v) for k, v in zip(sel["class_index"], sel["class_name"], strict=True)}


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


def _heatmap(data: pd.DataFrame, title: str, ylabels: Sequence[str | None], ylabel: str) -> Figure:
    """Seaborn heatmap of fractions (rows x blocks 1..L) on a fixed 0..1 colour scale. `ylabels`: one
    label per row (None: that row's tick is left out)."""
    import seaborn as sns  # here, not at module import: the import alone costs seconds of CPU

    rows, cols = data.shape
    annotate = rows * cols <= ANNOTATE_MAX_CELLS
    ylabels = [None if label is None else _shortened(label) for label in ylabels]
    # room on the left for the longest row label: ~0.065 in per character at 8 pt, plus the axis label
    longest = max((len(label) for label in ylabels if label is not None), default=0)
    left = max(1.2, 0.45 + 0.065 * longest)
    # cells wide enough for a printed "0.25" (inches); rows as tall as a tick label up to MAX_ROWS_TALL rows,
    # thinner beyond (Omniglot's 1623 classes: the labels are thinned out to ~40 anyway)
    fig, ax, cax = _framed(left + 1.4 + (0.5 if annotate else 0.42) * cols,
                           1.2 + 0.26 * min(max(rows, 7), MAX_ROWS_TALL), left=left)
    # tick labels set here, not by seaborn: its overlap check renders every label once more (~30 ms/figure)
    sns.heatmap(data.astype(float), ax=ax, cbar_ax=cax, vmin=0.0, vmax=1.0, cmap=HEATMAP_CMAP,
                annot=annotate, fmt=".2f", annot_kws={"fontsize": 6.5}, xticklabels=False, yticklabels=False)
    ax.set_xticks([i + 0.5 for i in range(cols)], [str(c) for c in data.columns], fontsize=8)
    shown = [i for i, label in enumerate(ylabels) if label is not None]  # None: a row left unlabelled
    labels = [ylabels[i] for i in shown]
    ax.set_yticks([i + 0.5 for i in shown], labels, fontsize=8, rotation=0)
    cax.set_ylabel("fraction fine-tuned", fontsize=8)  # short: it must fit the shortest figure's height
    cax.tick_params(labelsize=7)
    ax.set_xlabel(f"block index (1..{cols})")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return fig


def _shortened(label: str, limit: int = LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def plot_block_usage(data: pd.DataFrame, title: str, suite: str) -> Figure:
    """Heatmap domains x blocks 1..L (domain labels from the domain specs)."""
    return _heatmap(data, title, [domain_label(d, suite) for d in data.index], "domain")


def plot_class_usage(data: pd.DataFrame, title: str, names: Mapping[int, str] | None = None) -> Figure:
    """Heatmap classes x blocks 1..L, rows labelled with the class names when known (else the class
    index); labels thinned out when there are many."""
    step = max(1, math.ceil(len(data) / 40))  # at most ~40 tick labels stay legible
    names = names or {}
    labels = [names.get(int(c), str(c)) for c in data.index]
    shown = labels if step == 1 else [label if i % step == 0 else None for i, label in enumerate(labels)]
    return _heatmap(data, title, shown, "class" if names else "class index")


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


def class_domains(rows: pd.DataFrame, domains: Sequence[str]) -> list[str]:
    """The routed domains with per-class policy data, targets first in table order, then the source."""
    with_classes = set(rows.loc[rows["kind"] == "class_block", "domain"])
    ordered = [d for d in domains if d in with_classes]
    return [d for d in ordered if not is_source(d)] + [d for d in ordered if is_source(d)]


def figure_title(key: GroupKey, method: str, what: str) -> str:
    """"<family title> (<suite>, <protocol>): <method>, <what>", e.g. "Visual Decathlon (mini,
    trainval->test): spottune, fine-tuned path per block"."""
    return f"{FAMILY_TITLES.get(key.family, key.family)} ({key.suite}, {key.protocol}): {method}, {what}"


def constant_policy(rows: pd.DataFrame) -> tuple[int, ...] | None:
    """The routing shared by every image of every domain of one method (one 0/1 per block), or None when
    the images or domains differ (a per-block fraction strictly between 0 and 1, or two domains apart)."""
    sel = rows[rows["kind"] == "block"]
    if sel.empty:
        return None
    per_domain = sel.groupby(["domain", "index"])["value"].mean().unstack("index")
    if not per_domain.isin([0.0, 1.0]).all().all() or len(per_domain.drop_duplicates()) != 1:
        return None
    return tuple(int(v) for v in per_domain.iloc[0])


def _describe_routing(routing: Sequence[int]) -> str:
    tuned = [i + 1 for i, v in enumerate(routing) if v]
    if len(tuned) == len(routing):
        return f"the fine-tuned path in all {len(routing)} blocks"
    if not tuned:
        return f"the pretrained path in all {len(routing)} blocks"
    return f"the fine-tuned path in blocks {', '.join(map(str, tuned))} (of {len(routing)}) and no other"


def policy_outputs(store, *, chosen_domain: str | None = None) -> tuple[list[PolicyFigure], list[str]]:
    """Every policy figure of the store (see the module docstring), in table-group order, and one note
    per figure left out because it would carry no information.

    `chosen_domain`: only that domain gets a per-class figure (default: every routed domain). An unknown
    `chosen_domain` (one with no policy data anywhere in the store) raises UnknownNameError.
    """
    groups = policy_by_group(store)
    if chosen_domain is not None and groups:
        known = sorted({d for _, rows in groups for d in rows.loc[rows["kind"] == "class_block", "domain"]})
        if chosen_domain not in known:
            raise UnknownNameError("domain with per-class policy data", chosen_domain, known)
    figures, notes = [], []
    for key, in_group in groups:
        domains = table_domains(key, in_group["domain"].unique())
        for method in sorted(in_group["method"].unique()):
            made, said = _method_figures(key, str(method), in_group[in_group["method"] == method], domains,
                                         chosen_domain)
            figures += made
            notes += said
    return figures, notes


def policy_figures(store, *, chosen_domain: str | None = None) -> list[PolicyFigure]:
    """The figures of :func:`policy_outputs`."""
    return policy_outputs(store, chosen_domain=chosen_domain)[0]


def random_routing(method: str) -> bool:
    """Whether `method` draws its routing at random, whatever the image (a registered routing method
    without ``learned_routing``); False for a name the registry does not know."""
    from decathlon.errors import UnknownNameError as Unknown
    from decathlon.methods import get_method

    try:
        registered = get_method(method)
    except Unknown:
        return False
    return registered.routing and not registered.learned_routing


def method_where(key: GroupKey, method: str) -> str:
    """"`<method>` (<family title>, <suite>, <protocol>)": who a note of the reports is about."""
    return f"`{method}` ({FAMILY_TITLES.get(key.family, key.family)}, {key.suite}, {key.protocol})"


def _method_figures(key: GroupKey, method: str, rows: pd.DataFrame, domains: Sequence[str],
                    chosen_domain: str | None) -> tuple[list[PolicyFigure], list[str]]:
    stem = f"{key.slug}_{method}"
    where = method_where(key, method)
    routing = constant_policy(rows)
    if routing is not None:
        return [], [f"{where}: every image of every domain takes {_describe_routing(routing)}; no policy "
                    "figure is drawn (it would be constant)."]
    out, notes = [], []
    blocks = block_usage(rows, domains)
    if not blocks.empty:
        title = figure_title(key, method, "fine-tuned path per block")
        plot = functools.partial(plot_block_usage, blocks, title, key.suite)
        out.append(PolicyFigure(f"{stem}_blocks", title, blocks, plot))
    hist = finetuned_histogram(rows, domains, blocks.shape[1])
    spikes = {int(np.argmax(row)) for row in hist.to_numpy()} if not hist.empty else set()
    if not hist.empty and len(spikes) == 1 and np.isclose(hist.to_numpy().max(axis=1), 1.0).all():
        notes.append(f"{where}: every image of every domain fine-tunes exactly {spikes.pop()} blocks; no "
                     "histogram is drawn.")
    elif not hist.empty:
        title = figure_title(key, method, "fine-tuned blocks per image")
        out.append(PolicyFigure(f"{stem}_finetuned", title, hist,
                                functools.partial(plot_histograms, hist, title, key.suite)))
    uniform = []
    if random_routing(method):
        return out, notes + [f"{where}: routing drawn at random, whatever the image; no per-class figure "
                             "(it would show sampling noise)."]
    for domain in [chosen_domain] if chosen_domain else class_domains(rows, domains):
        classes = class_usage(rows, domain)
        if classes.empty:
            continue
        if len(classes) > 1 and (classes.max() - classes.min()).max() == 0:
            uniform.append(domain_label(domain, key.suite))  # the policy does not depend on the class
            continue
        names = class_names(rows, domain)
        label = domain_label(domain, key.suite)
        title = figure_title(key, method, f"fine-tuned path per class and block, {label}")
        data = classes.copy()
        if names:
            data.insert(0, "class_name", [names.get(int(c), "") for c in data.index])
        out.append(PolicyFigure(f"{stem}_classes-{domain}", title, data,
                                functools.partial(plot_class_usage, classes, title, names)))
    if uniform:
        notes.append(f"{where}: every class has the same per-block usage on {', '.join(uniform)}; no "
                     "per-class figure is drawn for them.")
    return out, notes


# ------------------------------------------------------------------------------------------- trade-off


def label_points(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], *,
                 fontsize: float = 7) -> None:
    """Label every point (xs[i], ys[i]) with labels[i], placed by adjustText so that no label overlaps
    another label or a point (a thin line joins a moved label to its point)."""
    from adjustText import adjust_text  # imported when a labelled plot is drawn

    texts = [ax.text(x, y, label, fontsize=fontsize) for x, y, label in zip(xs, ys, labels, strict=True)]
    if texts:
        adjust_text(texts, x=list(xs), y=list(ys), ax=ax, ensure_inside_axes=True, expand=(1.2, 1.5),
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5})


def plot_tradeoff(data: pd.DataFrame, title: str, score: str) -> Figure:
    """Two panels: `score` (column ``score``) against #par (``par``) and against GFLOPs per image
    (``gflops``), one point per method (the index) labelled with its ``label`` (the paper's row name;
    the index when absent); a method without a value is left out of that panel (said in the panel)."""
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    for ax, column, xlabel in ((axes[0], "par", "#par (parameters for all domains, in backbones)"),
                               (axes[1], "gflops", "GFLOPs per image at evaluation")):
        sel = data[["score", column]].astype(float).dropna()
        ax.scatter(sel[column], sel["score"], color="tab:blue", zorder=3)
        margin_x = max(0.1 * float(np.ptp(sel[column])), 1e-3) if len(sel) else 1.0
        margin_y = max(0.1 * float(np.ptp(sel["score"])), 1e-3) if len(sel) else 1.0
        if len(sel):
            ax.set_xlim(sel[column].min() - margin_x, sel[column].max() + margin_x)
            ax.set_ylim(sel["score"].min() - margin_y, sel["score"].max() + margin_y)
        names = data["label"] if "label" in data else pd.Series(data.index, index=data.index)
        label_points(ax, sel[column].tolist(), sel["score"].tolist(), [str(names[m]) for m in sel.index])
        left_out = [str(names[m]) for m in data.index if m not in sel.index]
        if sel.empty:
            ax.text(0.5, 0.5, "no method has a value here\n(runs written before it was recorded)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4")
        elif left_out:
            ax.text(0.01, 0.01, "no value: " + ", ".join(left_out), transform=ax.transAxes, fontsize=6,
                    color="0.4", va="bottom")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(score)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.88, wspace=0.25)
    return fig


def tradeoff_figure(key: GroupKey, data: pd.DataFrame, score: str) -> PolicyFigure:
    """The trade-off figure of one table group: `data` indexed by method with columns ``score`` (S, or
    the mean accuracy when S is not defined, as `score` says), ``par`` and ``gflops``."""
    title = (f"{FAMILY_TITLES.get(key.family, key.family)} ({key.suite}, {key.protocol}): {score} against "
             "#par and inference cost")
    return PolicyFigure(f"{key.slug}_tradeoff", title, data,
                        functools.partial(plot_tradeoff, data, title, score))


# ------------------------------------------------------------------------------------------- rendering


def png_bytes(figure: Figure) -> bytes:
    """The figure rendered as a PNG (Agg, :data:`DPI`), e.g. for IPython.display.Image."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def pdf_bytes(figure: Figure) -> bytes:
    """The figure as a vector PDF (no creation date: the same figure gives the same bytes)."""
    buf = io.BytesIO()
    figure.savefig(buf, format="pdf", metadata={"CreationDate": None})
    return buf.getvalue()


def _rendered(plot: Callable[[], Figure]) -> dict[str, bytes]:
    figure = plot()
    return {"pdf": pdf_bytes(figure), "png": png_bytes(figure)}


def render_workers() -> int:
    """Worker processes for :func:`render_figures`: the usable CPUs (at most 4), 1 where fork is missing."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1  # a spawned worker re-imports torch and matplotlib: seconds, more than it saves
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus))


def render_figures(figures: Sequence[PolicyFigure], workers: int | None = None) -> list[dict[str, bytes]]:
    """Every figure drawn and rendered in each of :data:`FORMATS` (``{"pdf": bytes, "png": bytes}``), in
    order.

    Drawing is CPU-bound in Python (matplotlib text layout and Agg), ~0.2-0.3 s per figure, so with more
    than one worker (default :func:`render_workers`) and enough figures the figures are drawn in forked
    processes: a fork starts in milliseconds and the workers touch neither torch nor a GPU. The bytes
    are the same either way.
    """
    workers = render_workers() if workers is None else workers
    if workers <= 1 or len(figures) < 2 * workers:
        return [{"pdf": pdf_bytes(f.figure), "png": png_bytes(f.figure)} for f in figures]
    import seaborn  # noqa: F401  (imported once here, the forked workers inherit it)

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_rendered, [f.plot for f in figures]))


def save_figures(figures: Sequence[PolicyFigure], rendered: Sequence[Mapping[str, bytes]],
                 directory: Path) -> list[Path]:
    """Write ``<name>.pdf`` and ``<name>.png`` (`rendered`, from :func:`render_figures`) and ``<name>.csv``
    (the data behind it) of every figure atomically."""
    written = []
    for figure, files in zip(figures, rendered, strict=True):
        written += [atomic_write_bytes(directory / f"{figure.name}.{fmt}", files[fmt]) for fmt in FORMATS]
        written.append(atomic_write_text(directory / f"{figure.name}.csv", figure.data.to_csv()))
    return written
