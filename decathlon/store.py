"""The results store: every finished job's result as one tidy table, derived from the run directories.

The run directories are the truth; the store is rebuilt from them at any time (so concurrent workers
never have to coordinate writes to a shared file). :func:`build_store` scans ``<out>/runs/**/result.json``
(and ``policy.json`` next to it) into two pandas DataFrames and saves them atomically as
``<out>/store.csv`` and ``<out>/policy.csv``:

- ``jobs``: one row per finished job, every ``result.json`` key plus ``job_id`` (the run dir relative to
  ``<out>/runs``) and ``run_dir`` (absolute path); ``top1`` is empty (NaN) for a job evaluated on a split
  without labels; ``gflops_per_image`` (inference cost, :mod:`decathlon.flops`) is empty (NaN, never 0)
  for runs written before it was measured; ``settings`` (the run's settings,
  :meth:`decathlon.config.RunConfig.settings`) is a JSON object in text form;
- ``policy``: long format, one row per recorded routing statistic: ``job_id, method, domain, seed, kind,
  class_index, index, value, class_name`` with kind ``block`` (fraction of images on the fine-tuned path
  per block), ``histogram`` (fraction of images with `index` fine-tuned blocks) or ``class_block`` (the
  per-block fraction among the images of class `class_index`); ``class_index`` is -1 when not per class;
  ``class_name`` is the class's name from the annotations (empty when not per class, or for runs written
  before the engine recorded the names).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from decathlon.errors import DataError
from decathlon.io import atomic_write_text

STORE_FILE = "store.csv"
POLICY_FILE = "policy.csv"

# result.json keys of the run-directory contract (docs/architecture.md), in table order; any further key
# a result carries is kept after these.
RESULT_COLUMNS = (
    "suite", "method", "domain", "seed", "protocol", "preset", "schedule", "eval_split", "config_hash",
    "top1", "loss", "params_total", "params_trainable", "params_stored", "par", "gflops_per_image",
    "wall_time_s", "images_per_s", "epochs", "code_version", "settings",
)
JOB_COLUMNS = RESULT_COLUMNS + ("job_id", "run_dir")
POLICY_COLUMNS = ("job_id", "method", "domain", "seed", "kind", "class_index", "index", "value", "class_name")
POLICY_KINDS = ("block", "histogram", "class_block")


@dataclass(frozen=True)
class Store:
    """The two tables every report is computed from."""

    jobs: pd.DataFrame
    policy: pd.DataFrame


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read JSON ({e})") from e


def _policy_rows(job_id: str, result: Mapping[str, Any], policy: Mapping[str, Any], path: Path) -> list[dict]:
    ident = {"job_id": job_id, "method": result.get("method"), "domain": result.get("domain"),
             "seed": result.get("seed")}
    series = [("block", -1, policy.get("block_fraction", [])), ("histogram", -1, policy.get("histogram", []))]
    per_class = policy.get("per_class", {})
    if not isinstance(per_class, Mapping):
        raise DataError(f"{path}: 'per_class' must map class index -> per-block fractions, got "
                        f"{type(per_class).__name__}")
    series += [("class_block", int(k), v) for k, v in sorted(per_class.items(), key=lambda kv: int(kv[0]))]
    names = policy.get("classes", [])
    if not isinstance(names, list):
        raise DataError(f"{path}: 'classes' must list the class names (index = class), got "
                        f"{type(names).__name__}")
    rows = []
    for kind, class_index, values in series:
        if not isinstance(values, list):
            raise DataError(f"{path}: {kind} values must be a list of numbers, got {type(values).__name__}")
        name = str(names[class_index]) if 0 <= class_index < len(names) else None
        rows += [dict(ident, kind=kind, class_index=class_index, index=i, value=float(v), class_name=name)
                 for i, v in enumerate(values)]
    return rows


def scan_runs(out_dir: str | Path) -> Store:
    """Read every finished run under ``<out_dir>/runs`` (without writing anything)."""
    runs = Path(out_dir) / "runs"
    job_rows, policy_rows = [], []
    for result_path in sorted(runs.rglob("result.json")):
        run_dir = result_path.parent
        job_id = run_dir.relative_to(runs).as_posix()
        result = _read_json(result_path)
        if not isinstance(result, Mapping):
            raise DataError(f"{result_path}: expected a JSON object, got {type(result).__name__}")
        row = dict(result, job_id=job_id, run_dir=str(run_dir.resolve()))
        if isinstance(row.get("settings"), Mapping):
            row["settings"] = json.dumps(row["settings"], sort_keys=True)
        job_rows.append(row)
        policy_path = run_dir / "policy.json"
        if policy_path.is_file():
            policy_rows += _policy_rows(job_id, result, _read_json(policy_path), policy_path)
    jobs = pd.DataFrame(job_rows)
    extra = [c for c in jobs.columns if c not in JOB_COLUMNS]
    jobs = jobs.reindex(columns=list(JOB_COLUMNS) + extra)
    policy = pd.DataFrame(policy_rows, columns=list(POLICY_COLUMNS))
    policy["class_name"] = policy["class_name"].astype("str")  # missing names stay NaN, as read back
    return Store(jobs=jobs, policy=policy)


def _csv(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()


def build_store(out_dir: str | Path) -> Store:
    """Scan the run directories of `out_dir` and save ``store.csv`` and ``policy.csv`` atomically."""
    store = scan_runs(out_dir)
    atomic_write_text(Path(out_dir) / STORE_FILE, _csv(store.jobs))
    atomic_write_text(Path(out_dir) / POLICY_FILE, _csv(store.policy))
    return store


def load_store(out_dir: str | Path) -> Store:
    """Read ``store.csv`` and ``policy.csv`` of `out_dir`, or build them when either is missing."""
    out_dir = Path(out_dir)
    if not (out_dir / STORE_FILE).is_file() or not (out_dir / POLICY_FILE).is_file():
        return build_store(out_dir)
    try:
        # job ids and hashes are strings even when they look like numbers
        text_columns = {"config_hash": str, "job_id": str, "code_version": str, "settings": str}
        jobs = pd.read_csv(out_dir / STORE_FILE, dtype=text_columns)
        policy = pd.read_csv(out_dir / POLICY_FILE, dtype={"job_id": str, "class_name": str})
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{out_dir}: cannot read {STORE_FILE}/{POLICY_FILE} ({e}); rebuild with "
                        f"`python run_all.py --report-only --out {out_dir}`") from e
    return Store(jobs=jobs, policy=policy)
