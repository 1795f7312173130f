"""Policy explorer: the test images that fine-tune the most and the fewest blocks, per routed domain.

The qualitative figure of the SpotTune paper: for each routing method, table group and domain, a grid of
two rows of :data:`EXPLORER_IMAGES` images, the evaluation images with the most fine-tuned blocks (top)
and with the fewest (bottom), each titled with its class name and its number of fine-tuned blocks.

It reads what the engine wrote in the run directory of the method's first seed: ``policy.json``
(``image_blocks``, one routing text per image in ``predictions.json`` order, and ``classes``),
``predictions.json`` (labels, image ids) and ``config.json`` (the data root), and the image files
through the data layer (:func:`decathlon.data.build_dataset`, :func:`decathlon.data.load_image`). A
grid that cannot be drawn (a run written before the engine recorded per-image routing, data no longer
where the run read it) is not an error: a note says why. A domain where every image fine-tunes the same
number of blocks gets no grid (nothing to rank), also with a note.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from decathlon.errors import DataError, HarnessError
from decathlon.figures import PolicyFigure, figure_title, method_where, random_routing
from decathlon.groups import GroupKey, domain_label, group_jobs, table_domains

EXPLORER_IMAGES = 6  # images per row: the most fine-tuned row and the fewest fine-tuned row
THUMBNAIL = 96  # px: longest side of an image in the grid


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({e})") from None


def extremes(image_blocks: Sequence[str], count: int = EXPLORER_IMAGES) -> tuple[list[int], list[int]]:
    """Positions of the `count` images with the most fine-tuned blocks (most first) and of the `count`
    with the fewest (fewest first); ties keep dataset order. Each row gets at most half of the images."""
    tuned = [b.count("1") for b in image_blocks]
    count = min(count, len(tuned) // 2)
    most = sorted(range(len(tuned)), key=lambda i: (-tuned[i], i))[:count]
    fewest = sorted(range(len(tuned)), key=lambda i: (tuned[i], i))[:count]
    return most, fewest


def _data_root(run_dir: Path, given: Path | None) -> Path | None:
    config = _json(run_dir / "config.json")
    if isinstance(config, Mapping) and isinstance(config.get("config"), Mapping):
        config = config["config"]
    recorded = config.get("data_root") if isinstance(config, Mapping) else None
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return given


def _thumbnail(path: Path) -> np.ndarray:
    from decathlon.data import load_image

    image = load_image(path)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return np.asarray(image)


def explorer_data(job: Mapping, run_dir: Path, data_root: Path | None = None,
                  count: int = EXPLORER_IMAGES) -> tuple[pd.DataFrame, list[np.ndarray]] | str:
    """The grid of one job: a table (one row per shown image: ``row`` most/fewest, ``position`` in
    predictions.json, ``image_id``, ``label``, ``class_name``, ``finetuned_blocks``, ``routing``) and the
    thumbnails (uint8 H x W x 3), in grid order; or a text saying why there is no grid."""
    from decathlon.data import build_dataset

    if not (run_dir / "policy.json").is_file():
        return f"no policy.json under {run_dir} (the run directories are not here)"
    policy = _json(run_dir / "policy.json")
    blocks = policy.get("image_blocks") if isinstance(policy, Mapping) else None
    if not blocks:
        return "no per-image routing recorded (a run written before the engine recorded it)"
    if len({b.count("1") for b in blocks}) == 1:
        return f"every image fine-tunes {blocks[0].count('1')} blocks"
    predictions = _json(run_dir / "predictions.json")
    root = _data_root(run_dir, data_root)
    try:
        dataset = build_dataset(str(job["domain"]), root, str(job["eval_split"]), suite=str(job["suite"]))
    except HarnessError as e:
        return f"its images cannot be read ({e}; pass --data-root where the data has moved)"
    if [str(i) for i in dataset.image_ids] != [str(i) for i in predictions["image_ids"]]:
        return f"the images under {root} are not the ones the run evaluated (other image ids)"
    names = policy.get("classes") or []
    most, fewest = extremes(blocks, count)
    rows, images = [], []
    for row, positions in (("most", most), ("fewest", fewest)):
        for i in positions:
            label = int(predictions["labels"][i])
            rows.append({"row": row, "position": i, "image_id": predictions["image_ids"][i], "label": label,
                         "class_name": names[label] if 0 <= label < len(names) else "",
                         "finetuned_blocks": blocks[i].count("1"), "routing": blocks[i]})
            images.append(_thumbnail(dataset.file_paths[i]))
    return pd.DataFrame(rows), images


def plot_explorer(data: pd.DataFrame, images: Sequence[np.ndarray], title: str, blocks: int) -> Figure:
    """Two rows of images (most / fewest fine-tuned blocks), each titled with its class and count."""
    columns = max(int((data["row"] == "most").sum()), 1)
    fig = Figure(figsize=(1.35 * columns + 0.9, 3.7))
    axes = fig.subplots(2, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, row in enumerate(("most", "fewest")):
        sel = data.index[data["row"] == row]
        for c, index in enumerate(sel):
            ax = axes[r][c]
            ax.imshow(images[index])
            entry = data.loc[index]
            name = str(entry["class_name"] or entry["label"])
            ax.set_title(f"{name[:16]}\n{entry['finetuned_blocks']}/{blocks} blocks", fontsize=6.5)
        axes[r][0].text(-0.12, 0.5, f"{row} fine-tuned", transform=axes[r][0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.02, top=0.78, hspace=0.45, wspace=0.08)
    return fig


def explorer_outputs(store, run_dir_of: Callable[[Mapping], Path], *, data_root: Path | None = None,
                     chosen_domain: str | None = None) -> tuple[list[PolicyFigure], list[str]]:
    """Every explorer grid of the store (first seed of each routing method's domain, table-group order)
    and one note per method and reason for the grids left out. `run_dir_of(job)`: the run directory of
    a store row (e.g. :func:`decathlon.report.run_dir_of` of the results folder); `data_root`: where the
    data is when it has moved since the run."""
    policy = store.policy
    routed = set(policy["job_id"]) if "job_id" in policy else set()
    figures, notes = [], []
    for key, jobs in group_jobs(store.jobs):
        jobs = jobs[jobs["job_id"].isin(routed)]
        domains = table_domains(key, jobs["domain"].unique())
        for method in sorted(jobs["method"].unique()):
            if random_routing(str(method)):
                continue  # said with the per-class figures: a grid of random routes shows nothing
            left_out: dict[str, list[str]] = {}
            for domain in [chosen_domain] if chosen_domain else domains:
                sel = jobs[(jobs["method"] == method) & (jobs["domain"] == domain)].sort_values("seed")
                if sel.empty:
                    continue
                job = sel.iloc[0].to_dict()
                made = explorer_data(job, run_dir_of(job), data_root)
                if isinstance(made, str):
                    left_out.setdefault(made, []).append(domain_label(domain, key.suite))
                    continue
                figures.append(_explorer_figure(key, str(method), domain, int(job["seed"]), *made))
            notes += [f"{method_where(key, str(method))}: no policy explorer grid for {', '.join(where)}: "
                      f"{why}." for why, where in left_out.items()]
    return figures, notes


def _explorer_figure(key: GroupKey, method: str, domain: str, seed: int, data: pd.DataFrame,
                     images: list[np.ndarray]) -> PolicyFigure:
    blocks = len(data["routing"].iloc[0])
    what = (f"test images fine-tuning the most and the fewest blocks, {domain_label(domain, key.suite)}, "
            f"seed {seed}")
    title = figure_title(key, method, what)
    return PolicyFigure(f"{key.slug}_{method}_explorer-{domain}", title, data,
                        functools.partial(plot_explorer, data, images, title, blocks))
