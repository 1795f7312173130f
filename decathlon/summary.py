"""What a run tells its user before and after it works: estimated durations, the main tables, disk use.

- :func:`estimate_plan`: the duration of the unfinished jobs of a plan, per method, from the throughput
  that earlier runs in the same results folder recorded (images processed, from each job's ``job.json``
  and its domain's split sizes, per second of ``wall_time_s`` in ``result.json`` / ``pretrain.json``);
  "unknown" for a method with no finished run there (nothing is guessed).
- :func:`main_tables`: the reports' main tables (methods x domains, Mean, S) read back from the CSV files
  the report step wrote, so that the terminal shows exactly the numbers of the reports.
- :func:`folder_size`: bytes under a folder.

Light on purpose: no torch import (``run_all.py --dry-run`` and ``--help`` stay fast).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from decathlon.jobs import PRETRAIN, Job

JOB_FILE = "job.json"  # the Job, written into its run dir by every executor (decathlon.executors.JOB_FILE)
MAIN_COLUMNS = ("Mean", "S")  # the columns after the domains in a main table's CSV (decathlon.report)


def format_seconds(seconds: float | None) -> str:
    """`seconds` as h:mm:ss (or ``?`` when unknown)."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------------------- estimates

def job_images(job: Job) -> int:
    """Images one job processes: ``epochs`` x its training images (the split of its protocol, capped by
    ``limit_train_images``) + its evaluation images, from the domain's recorded split sizes. Evaluation-
    only jobs (the source domain's transfer entry, methods that do not train) count their evaluation
    images only."""
    from decathlon.domains import get_domain
    from decathlon.methods import get_method

    config = job.config
    spec = get_domain(config.domain, suite=config.suite)
    sizes = spec.split_sizes
    evaluated = sizes[config.eval_split]
    if job.kind != PRETRAIN and (spec.is_source or not get_method(config.method).trains):
        return evaluated
    train = sizes.train + sizes.val if config.train_split == "trainval" else sizes.train
    if config.limit_train_images is not None:
        train = min(train, config.limit_train_images)
    return config.epochs * train + evaluated


def method_key(job: Job) -> str:
    """The method a job's throughput is counted under (``pretrain`` for the source pretraining)."""
    return PRETRAIN if job.kind == PRETRAIN else job.config.method


def recorded_rates(jobs: Sequence[Job], out_dir: Path) -> dict[str, float]:
    """Images per second of wall time, per method (``pretrain`` for the source pretraining), over the
    finished jobs of `jobs`' methods and suites found in `out_dir` (any settings: the runs of this folder,
    on this machine). The wall time includes data loading, evaluation and checkpoints."""
    done: dict[str, list[tuple[int, float]]] = {}
    for suite in {j.config.suite for j in jobs}:
        for name in {method_key(j) for j in jobs}:
            for path in (out_dir / "runs" / suite / name).glob(f"*/*/*/*/{JOB_FILE}"):
                try:
                    job = Job.from_dict(json.loads(path.read_text()))
                    marker = path.parent / job.marker
                    wall = json.loads(marker.read_text()).get("wall_time_s") if marker.is_file() else None
                    if wall:
                        done.setdefault(name, []).append((job_images(job), float(wall)))
                except (OSError, ValueError, KeyError):
                    continue  # a damaged run dir does not stop the estimate; the store reports it
    return {m: sum(i for i, _ in v) / sum(s for _, s in v) for m, v in done.items()}


@dataclass(frozen=True)
class Estimate:
    """Estimated seconds of the unfinished jobs of one method (None: no recorded throughput)."""

    method: str
    jobs: int
    images: int
    rate: float | None  # images per second of wall time, from earlier runs in the results folder

    @property
    def seconds(self) -> float | None:
        return None if self.rate is None else self.images / self.rate


def estimate_plan(jobs: Sequence[Job], out_dir: Path) -> list[Estimate]:
    """Per method (plan order), the unfinished jobs and their estimated duration (:class:`Estimate`)."""
    rates = recorded_rates(jobs, out_dir)
    todo: dict[str, list[int]] = {}
    for job in jobs:
        if not job.is_finished(out_dir):
            todo.setdefault(method_key(job), []).append(job_images(job))
    return [Estimate(m, len(v), sum(v), rates.get(m)) for m, v in todo.items()]


def estimate_table(estimates: Sequence[Estimate]) -> Table:
    """The estimates as a table with a total row (one job at a time, as the inline executor runs them)."""
    table = Table(title="estimated duration of the jobs still to run, one at a time (from the throughput "
                        "of earlier runs in this results folder; unknown without one)")
    for column in ("method", "jobs", "images", "images/s", "estimate"):
        table.add_column(column, justify="left" if column == "method" else "right")
    known = [e.seconds for e in estimates if e.seconds is not None]
    for e in estimates:
        table.add_row(escape(e.method), str(e.jobs), str(e.images),
                      "unknown" if e.rate is None else f"{e.rate:.0f}",
                      "unknown" if e.seconds is None else format_seconds(e.seconds))
    unknown = sum(e.jobs for e in estimates if e.seconds is None)
    total = format_seconds(sum(known)) if known else "unknown"
    if known and unknown:
        total += f" + {unknown} job{'s' if unknown != 1 else ''} unknown"
    table.add_row("total", str(sum(e.jobs for e in estimates)), "", "", total, style="bold")
    return table


# ---------------------------------------------------------------------------------- end-of-run tables

def _number(text: str, digits: int) -> str:
    try:
        value = float(text)
    except ValueError:
        return escape(text) or "–"
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def read_main_table(path: Path) -> tuple[list[str], list[list[str]]] | None:
    """(columns, rows) of one main table CSV: the row name (``label`` when present, else ``method``), each
    domain, Mean and S (statistics columns such as ``<domain> std`` left out); None when the file is not a
    main table (no Mean and S columns)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or not set(MAIN_COLUMNS) <= set(rows[0]):
        return None
    header = rows[0]
    # a column named "<another column> <something>" is a statistic of that column (std, interval)
    plain = [i for i, c in enumerate(header) if not any(c.startswith(o + " ") for o in header if o != c)]
    # rows named as the paper names them when the table has a label column, else by registry name
    name = next((header.index(c) for c in ("label", "method") if c in header), 0)
    end = header.index("Mean")
    domains = [i for i in plain if i < end and i != name and header[i] not in ("label", "method")]
    keep = [name, *domains, end, header.index("S")]
    columns = [header[i] for i in keep]
    return columns, [[r[i] if i < len(r) else "" for i in keep] for r in rows[1:]]


def main_tables(reports: Path) -> list[Table]:
    """Rich tables of the reports' main tables (``reports/tables/<group>.csv``; comparisons with the
    published rows, ``*_vs_*``, left out): methods x domains, Mean (accuracy %, 1 decimal), S (integer)."""
    out = []
    for path in sorted((reports / "tables").glob("*.csv")):
        if "_vs_" in path.stem:
            continue
        read = read_main_table(path)
        if read is None:
            continue
        columns, rows = read
        table = Table(title=path.stem, title_justify="left")
        for i, column in enumerate(columns):
            table.add_column(escape(column), justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(escape(row[0]), *(_number(v, 0 if c == "S" else 1) for c, v in
                                            zip(columns[1:], row[1:], strict=True)))
        out.append(table)
    return out


def folder_size(path: Path) -> int:
    """Bytes of the files under `path` (symbolic links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.stat(full).st_size
    return total


def format_bytes(size: int) -> str:
    """``123.4 MB`` (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"

