"""``run_all.py --analysis best-practices``: Chu et al.'s questions on any suite, linked to SpotTune.

:func:`run_analysis` takes the main job plan (after it ran) and

1. measures the distance between the source domain and every analysed target
   (:mod:`decathlon.analysis.distance`) on the pretrained backbone the plan's jobs start from; each
   target's result is cached in ``<out>/analysis/best-practices/distance/<domain>.json`` with the
   settings that made it, so a re-run skips it;
2. runs the data-size sweep (:mod:`decathlon.analysis.sweep`) as ordinary engine jobs through the same
   executor, under ``<out>/analysis/best-practices/runs/`` (finished points are skipped, partial ones
   resume);
3. writes the tables and figures (:mod:`decathlon.analysis.recommend`, :mod:`decathlon.analysis.link`)
   under ``<out>/reports/analysis/`` with an index, ``README.md``.

Settings (:class:`AnalysisSettings`) come as ``KEY=VALUE`` words after the analysis name on the command
line, e.g. ``--analysis best-practices images_per_class=[1,10] tolerance=2``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import sys
import time
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch

from decathlon.analysis import distance as dist
from decathlon.analysis import link, recommend, sweep
from decathlon.config import RunConfig, parse_assignments
from decathlon.domains import DomainSpec, get_domain, suite_domains
from decathlon.errors import ConfigError, DataError, HarnessError, UnknownNameError
from decathlon.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from decathlon.jobs import PRETRAIN, TRANSFER, Job, pretrained_path

ANALYSES = ("best-practices",)
WORK_DIR = Path("analysis") / "best-practices"  # under <out>: sweep run dirs and the distance cache
REPORT_DIR = Path("reports") / "analysis"  # under <out>: tables and figures


@dataclass(frozen=True)
class AnalysisSettings:
    """Settings of the best-practices analysis; units in the comments."""

    images_per_class: tuple[int | None, ...] = (1, 10, 25, None)  # sweep sizes; None = the whole split
    variants: tuple[str, ...] = sweep.VARIANT_NAMES  # Chu et al.'s notation, see decathlon.analysis.sweep
    seeds: tuple[int, ...] | None = None  # sweep seeds; None = the seeds of the main plan
    targets: tuple[str, ...] | None = None  # analysed targets; None = every target of the main plan
    distance_images: int = 500  # images per domain for the distances (class-balanced, seeded sample)
    distance_seed: int = 0  # seeds the samples, the splits and the domain classifiers
    test_fraction: float = 0.3  # held-out share of the domain classifiers' data
    cnn_epochs: int = 8  # epochs of the small CNN domain classifier
    cnn_size: int = 32  # px: the CNN sees every image resized to this square
    metric: str = "cosine"  # distance that orders the table and bins the matrix
    distance_thresholds: tuple[float, float] | None = None  # low/medium and medium/high edges; None: below
    size_thresholds: tuple[float, float] | None = None  # images per class edges; None: below
    tolerance: float = 1.0  # accuracy points: |tune - freeze| within it -> "either"
    spottune_method: str = "spottune"  # whose policies are linked to the distances

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AnalysisSettings:
        """Override the defaults with `values`; unknown keys and ill-typed values fail."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown analysis setting(s) {unknown}; known: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(cls)
        settings = cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.metric not in dist.METRICS:
            raise ConfigError(f"analysis metric={self.metric!r}; expected one of {', '.join(dist.METRICS)}")
        for variant in self.variants:
            sweep.variant_info(variant)
        if not self.images_per_class:
            raise ConfigError("analysis images_per_class is empty; expected sizes such as [1, 10, 25, null]")
        if any(s is not None and s < 1 for s in self.images_per_class):
            raise ConfigError(f"analysis images_per_class={self.images_per_class}: sizes must be >= 1 "
                              "or null")
        if self.distance_images < 4 or self.cnn_epochs < 1 or self.cnn_size < 8 or self.tolerance < 0:
            raise ConfigError("analysis settings out of range: distance_images >= 4, cnn_epochs >= 1, "
                              "cnn_size >= 8, tolerance >= 0")
        for name in ("distance_thresholds", "size_thresholds"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or value[0] > value[1]):
                raise ConfigError(f"analysis {name}={value}: expected two increasing numbers")

    def cnn(self) -> dist.CnnSettings:
        return dist.CnnSettings(size=self.cnn_size, epochs=self.cnn_epochs, test_fraction=self.test_fraction)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check one analysis setting against its annotation (lists become tuples)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError(f"analysis setting {key}: null is not allowed")
    inner = next((a for a in args if a is not type(None)), hint) if optional else hint
    origin = typing.get_origin(inner) or inner
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        element = typing.get_args(inner)[0]
        return tuple(_coerce(key, v, element) for v in value)
    if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if origin is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if origin is str and isinstance(value, (str, int)):
        return str(value)
    raise ConfigError(f"analysis setting {key}: {value!r} is not a valid {hint}")


def parse_analysis(words: Sequence[str]) -> tuple[str, AnalysisSettings]:
    """``["best-practices", "KEY=VALUE", ...]`` -> (analysis name, settings); values are read as YAML."""
    if not words:
        raise ConfigError(f"--analysis needs a name; known: {', '.join(ANALYSES)}")
    name, *assignments = words
    if name not in ANALYSES:
        raise UnknownNameError("analysis", name, ANALYSES)
    values = parse_assignments(assignments, f"--analysis {name}")
    return name, AnalysisSettings.from_dict(values)


# ------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class AnalysisPlan:
    """What the analysis works on, derived from the main job plan."""

    suite: str
    source: DomainSpec
    source_config: RunConfig  # data root, preset and protocol of the source images
    targets: Mapping[str, RunConfig]  # target domain -> base config of its sweep jobs (in suite order)
    skipped: Mapping[str, str]  # target domain -> why it is not analysed
    seeds: tuple[int, ...]
    needs: tuple[str, ...]  # the pretraining job, when the plan has one
    linked: tuple[str, ...] = ()  # the plan's jobs of the linked SpotTune method (their policies are linked)


def _same_network(a: RunConfig, b: RunConfig) -> bool:
    return (a.backbone, a.width, a.pretrained) == (b.backbone, b.width, b.pretrained)


def analysis_plan(jobs: Sequence[Job], out_dir: Path, settings: AnalysisSettings, *,
                  require_pretrained: bool = True) -> AnalysisPlan:
    """The source, the targets and their base configs from the main plan `jobs`.

    The plan's pretraining job must have written its backbone unless `require_pretrained` is False (a
    check or a dry run before the main plan ran).
    """
    transfer = [j for j in jobs if j.kind == TRANSFER]
    if not transfer:
        raise ConfigError("--analysis best-practices: the plan has no transfer job to take the settings from")
    pretrain = next((j for j in jobs if j.kind == PRETRAIN), None)
    suites = {j.config.suite for j in transfer}
    source_spec = None
    for suite in suites:
        source_spec = next((d for d in suite_domains(suite) if d.is_source), None) or source_spec
    if source_spec is None:
        raise ConfigError(f"--analysis best-practices needs the source domain's images to measure distances; "
                          f"suite(s) {sorted(suites)} have no source domain (use --suite decathlon or mini)")
    source_suite = next(s for s in suites if source_spec in suite_domains(s))
    by_domain: dict[str, RunConfig] = {}
    for job in sorted(transfer, key=lambda j: j.config.seed):
        if not get_domain(job.config.domain, suite=job.config.suite).is_source:
            by_domain.setdefault(job.config.domain, job.config)
    if not by_domain:
        raise ConfigError("--analysis best-practices: the plan has no target domain (only the source)")
    if pretrain is not None:
        path = pretrained_path(pretrain, out_dir)
        if require_pretrained and not path.is_file():
            raise DataError(f"--analysis best-practices needs the pretrained backbone {path}, which does not "
                            "exist (did the pretraining job fail?)")
        reference = next(iter(by_domain.values())).replace(pretrained=str(path))
        source_config = reference.replace(suite=source_suite, domain=source_spec.name,
                                          data_root=pretrain.config.data_root)
    else:
        same_family = [c for c in by_domain.values() if c.suite == source_suite]
        if not same_family:
            raise ConfigError("--analysis best-practices: no selected target shares the source domain's "
                              f"data root ({source_suite!r} family); select one of its targets")
        reference = same_family[0]
        source_config = reference.replace(domain=source_spec.name)
    order = [d.name for s in sorted(suites) for d in suite_domains(s)]
    targets, skipped = {}, {}
    wanted = settings.targets
    for name in sorted(by_domain, key=order.index):
        config = by_domain[name]
        if wanted is not None and name not in wanted:
            continue
        if not _same_network(config, reference):
            skipped[name] = (f"its jobs start from another network ({config.backbone}, {config.pretrained}) "
                             f"than the source's ({reference.backbone}, {reference.pretrained})")
            continue
        targets[name] = config
    if wanted is not None:
        for name in wanted:
            if name not in by_domain:
                raise UnknownNameError("analysed target (not in the plan)", name, by_domain)
    seeds = settings.seeds or tuple(sorted({j.config.seed for j in transfer}))
    if not targets:
        raise ConfigError("--analysis best-practices: no target domain to analyse "
                          f"({'; '.join(f'{k}: {v}' for k, v in skipped.items()) or 'none selected'})")
    linked = tuple(j.job_id for j in transfer if j.config.method == settings.spottune_method)
    return AnalysisPlan(suite=source_suite, source=source_spec, source_config=source_config, targets=targets,
                        skipped=skipped, seeds=tuple(seeds), needs=(pretrain.job_id,) if pretrain else (),
                        linked=linked)


# ------------------------------------------------------------------------------------------ distances


def sample_images(config: RunConfig, spec: DomainSpec, count: int, seed: int) -> list[torch.Tensor]:
    """A class-balanced, seeded sample of `count` training images (protocol's training split) of `spec`,
    through the preset's deterministic test transform (what the network sees at evaluation)."""
    from decathlon.data import build_dataset, load_mean_std
    from decathlon.engine import SHARED_METHOD, balanced_subset, derive_seed
    from decathlon.presets import get_preset

    if config.data_root is None:
        raise ConfigError(f"no data root for domain {spec.name!r}")
    mean, std = load_mean_std(config.data_root, spec)
    dataset = build_dataset(spec, config.data_root, config.train_split,
                            get_preset(config.preset).test_transform(spec, mean, std))
    stream = derive_seed(seed, "subset", method=SHARED_METHOD, domain=spec.name)
    return [dataset[i][0] for i in balanced_subset(dataset.labels, count, stream)]


def extract_features(backbone: torch.nn.Module, images: Sequence[torch.Tensor],
                     batch_size: int = 128) -> np.ndarray:
    """Pooled features ``backbone.features(x)`` of `images` (eval mode, no gradients), shape (n, d)."""
    backbone.eval()
    out: list[torch.Tensor | None] = [None] * len(images)
    shapes: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(images):
        shapes.setdefault(tuple(x.shape), []).append(i)
    with torch.no_grad():
        for indices in shapes.values():  # batches of one image size
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                features = backbone.features(torch.stack([images[i] for i in chunk]))
                for i, f in zip(chunk, features, strict=True):
                    out[i] = f
    return torch.stack(out).double().numpy()


def _fingerprint(path: str | None) -> dict[str, Any]:
    if path is None:
        return {"path": None}
    p = Path(path)
    stat = p.stat() if p.is_file() else None
    return {"path": str(p), "bytes": stat.st_size if stat else None,
            "mtime_ns": stat.st_mtime_ns if stat else None}


def distance_key(plan: AnalysisPlan, config: RunConfig, settings: AnalysisSettings) -> str:
    """Hash of everything a target's distances depend on (source and target data, network, sampling)."""
    parts = {"source": [plan.source_config.suite, plan.source.name, plan.source_config.data_root],
             "target": [config.suite, config.domain, config.data_root], "preset": config.preset,
             "protocol": config.protocol, "network": [config.backbone, config.width],
             "weights": _fingerprint(config.pretrained), "images": settings.distance_images,
             "seed": settings.distance_seed, "cnn": dataclasses.asdict(settings.cnn())}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def measure_distances(plan: AnalysisPlan, settings: AnalysisSettings, work_dir: Path,
                      say: Any = print) -> pd.DataFrame:
    """The distance of every target (cached per target under ``work_dir/distance``), as a table."""
    from decathlon.networks.factory import create_backbone

    rows: dict[str, dict[str, float]] = {}
    todo = {}
    for name, config in plan.targets.items():
        key = distance_key(plan, config, settings)
        cached = _read_cache(work_dir / "distance" / f"{name}.json", key)
        if cached is not None:
            rows[name] = cached
        else:
            todo[name] = (config, key)
    if todo:
        reference = next(iter(todo.values()))[0]
        backbone = create_backbone(reference.backbone, plan.source.num_classes, width=reference.width,
                                   weights=reference.pretrained)
        source_images = sample_images(plan.source_config, plan.source, settings.distance_images,
                                      settings.distance_seed)
        source_features = extract_features(backbone, source_images)
        for name, (config, key) in todo.items():
            start = time.perf_counter()
            spec = get_domain(name, suite=config.suite)
            images = sample_images(config, spec, settings.distance_images, settings.distance_seed)
            row = dist.distance_row(source_features, extract_features(backbone, images), source_images,
                                    images, seed=settings.distance_seed, cnn=settings.cnn(),
                                    test_fraction=settings.test_fraction)
            row["seconds"] = time.perf_counter() - start
            atomic_write_json(work_dir / "distance" / f"{name}.json", {"key": key, "row": row})
            say(f"distance {plan.source.name} -> {name}: cosine {row['cosine']:.4f}, MMD² {row['mmd2']:.4f}, "
                f"linear {100 * row['linear_acc']:.1f}%, CNN {100 * row['cnn_acc']:.1f}% "
                f"({row['seconds']:.1f} s)")
            rows[name] = row
    return dist.distance_table(rows, order_by=settings.metric)


def _read_cache(path: Path, key: str) -> dict[str, float] | None:
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: measure again
    return content.get("row") if isinstance(content, dict) and content.get("key") == key else None


# ------------------------------------------------------------------------------------------ the sweep


def plan_points(plan: AnalysisPlan, settings: AnalysisSettings) -> tuple[sweep.SweepPoint, ...]:
    """The sweep points of `plan` (reads each target's training labels to size the subsets)."""
    from decathlon.data import build_dataset

    labels = {}
    for name, config in plan.targets.items():
        spec = get_domain(name, suite=config.suite)
        labels[name] = list(build_dataset(spec, config.data_root, config.train_split).labels)
    return sweep.plan_sweep(plan.targets, labels, sizes=settings.images_per_class, variants=settings.variants,
                            seeds=plan.seeds, needs=plan.needs)


# ------------------------------------------------------------------------------------------ reports


def thresholds(values: Sequence[float], given: Sequence[float] | None, chu: Sequence[float] | None,
               generated: bool, what: str) -> tuple[tuple[float, float], str]:
    """The bin edges and a sentence saying where they come from."""
    if given is not None:
        return (float(given[0]), float(given[1])), f"{what}: configured ({given[0]:g}, {given[1]:g})"
    if chu is not None and not generated:
        return (float(chu[0]), float(chu[1])), f"{what}: Chu et al.'s Table 3 edges ({chu[0]:g}, {chu[1]:g})"
    low, high = recommend.tercile_thresholds(values)
    why = "the generated suite" if generated else "no published edges for this measure"
    return (low, high), f"{what}: terciles of the measured values ({low:.3g}, {high:.3g}; {why})"


def _csv(frame: pd.DataFrame, index: bool = False) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=index)
    return buffer.getvalue()


def _png(figure: Any) -> bytes:
    from decathlon.figures import png_bytes

    return png_bytes(figure)


def _md_table(frame: pd.DataFrame, floats: int = 2) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("n/a" if math.isnan(v) else f"{v:.{floats}f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_variants(results: pd.DataFrame) -> pd.DataFrame:
    """Per (domain, images per class): top-1 of every variant (mean over seeds) and the best one."""
    done = results[results["top1"].notna()]
    if done.empty:
        return pd.DataFrame()
    table = done.pivot_table(index=["domain", "images_per_class"], columns="variant", values="top1",
                             aggfunc="mean")
    table = table[[v for v in sweep.VARIANT_NAMES if v in table.columns]]
    table["best"] = table.idxmax(axis=1)
    return table.reset_index()


def write_reports(out_dir: Path, plan: AnalysisPlan, settings: AnalysisSettings, distances: pd.DataFrame,
                  results: pd.DataFrame, store: Any, *, generated: bool, wall_s: float) -> list[Path]:
    """Every table and figure of the analysis under ``<out>/reports/analysis/``, index last."""
    reports = out_dir / REPORT_DIR
    written: list[Path] = []

    def text(name: str, content: str) -> None:
        written.append(atomic_write_text(reports / name, content))

    metric_name = dist.METRIC_LABELS[settings.metric]
    text("distance.csv", _csv(distances, index=True))
    text("distance.md", dist.markdown_distance_table(distances))
    rho, pvalue = dist.rank_agreement(distances)
    agreement = rho.add_prefix("rho_").join(pvalue.add_prefix("p_"))
    text("distance_rank_agreement.csv", _csv(agreement, index=True))
    text("sweep.csv", _csv(results))
    metric_values = distances[settings.metric] if not distances.empty else pd.Series(dtype=float)
    gaps = recommend.tune_freeze_gaps(results, metric_values)
    text("tune_minus_freeze.csv", _csv(gaps))
    figure = recommend.plot_gaps(gaps, distance_name=metric_name)
    written.append(atomic_write_bytes(reports / "tune_minus_freeze.png", _png(figure)))
    parts = [f"# Best practices for fine-tuning (Chu et al., 2016) on suite `{plan.suite}`", "",
             f"Source domain `{plan.source.name}`; {len(plan.targets)} target(s); sweep seeds "
             f"{list(plan.seeds)}; variants {', '.join(settings.variants)}; images per class "
             f"{[sweep.size_label(s) for s in settings.images_per_class]}; analysis wall time "
             f"{wall_s:.0f} s.", ""]
    if plan.skipped:
        parts += ["Not analysed: " + "; ".join(f"`{k}`: {v}" for k, v in plan.skipped.items()), ""]
    parts += ["## Distance from the source", "",
              f"Pooled features of the pretrained backbone, {settings.distance_images} images per domain "
              "(class-balanced, seeded); MMD² is the unbiased estimator with a Gaussian kernel and the "
              "median-heuristic bandwidth; the domain classifiers' accuracies are held-out "
              f"({settings.test_fraction:.0%} of a class-balanced source/target set; 50% = "
              f"indistinguishable). Ordered by {metric_name}.", "", dist.markdown_distance_table(distances),
              "Rank agreement between the metrics (Spearman ρ over the targets; n/a with fewer than 3):", "",
              dist.markdown_matrix(rho), ""]
    if gaps.empty or distances.empty:
        parts += ["## Freeze or tune?", "", "No finished sweep pair (tune and freeze variant of one domain "
                  "and size) yet: no recommendation.", ""]
    else:
        d_edges, d_how = thresholds(metric_values, settings.distance_thresholds,
                                    recommend.CHU_COSINE_THRESHOLDS if settings.metric == "cosine" else None,
                                    generated, "distance")
        sizes = sorted(gaps["images_per_class"].unique())
        s_edges, s_how = thresholds(sizes, settings.size_thresholds, recommend.CHU_SIZE_THRESHOLDS, generated,
                                    "images per class")
        for pair in gaps["pair"].unique():
            matrix, cells = recommend.recommendation_matrix(
                gaps, distance_thresholds=d_edges, size_thresholds=s_edges, tolerance=settings.tolerance,
                pair=pair)
            stem = "recommendation" if pair == "FT - F" else "recommendation_" + _slug(pair)
            text(f"{stem}.csv", _csv(cells))
            md = recommend.markdown_recommendation(matrix, d_edges, s_edges, metric_name, f"{d_how}; {s_how}")
            text(f"{stem}.md", md)
            parts += [f"## Freeze or tune? ({pair})", "",
                      "Mean top-1 gap (tune minus freeze, points) of the (domain, size) points in each "
                      f"cell; tolerance ±{settings.tolerance:g} point(s) -> `either`.", "", md]
        parts += ["![tune minus freeze](tune_minus_freeze.png)", ""]
    best = best_variants(results)
    if not best.empty:
        text("best_variant.csv", _csv(best))
        parts += ["## Which layers to copy? Top-1 (%) of every variant", "", _md_table(best, 1)]
    parts += _link_section(reports, plan, settings, distances, store, written, metric_name)
    state = results["state"].value_counts().to_dict() if not results.empty else {}
    parts += ["## Sweep jobs", "", f"{len(results)} points: {state}; run directories under "
              f"`{(out_dir / WORK_DIR / 'runs').as_posix()}`, table in `sweep.csv`.", ""]
    text("README.md", "\n".join(parts))
    return written


def _correlation_sentence(stats: Mapping[str, Any]) -> str:
    if math.isnan(stats["spearman"]):
        return f"Correlation not computed: {stats['note']}."
    return (f"Spearman ρ = {stats['spearman']:.3f} (p = {stats['spearman_p']:.3g}), Pearson r = "
            f"{stats['pearson']:.3f} (p = {stats['pearson_p']:.3g}); {stats['note']}.")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").replace("--", "-").lower()


def _link_section(reports: Path, plan: AnalysisPlan, settings: AnalysisSettings, distances: pd.DataFrame,
                  store: Any, written: list[Path], metric_name: str) -> list[str]:
    parts = ["## Link to SpotTune", ""]
    usage = pd.DataFrame()
    if store is not None:
        protocol = next(iter(plan.targets.values())).protocol if plan.targets else None
        # the plan's own SpotTune jobs; a plan without any links whatever the store holds for the method
        usage = link.spottune_usage(store.jobs, store.policy, method=settings.spottune_method,
                                    protocol=protocol, job_ids=plan.linked or None)
    table = link.link_table(distances, usage, settings.metric) if not usage.empty and not distances.empty \
        else pd.DataFrame()
    if table.empty:
        name = settings.spottune_method
        parts += [f"No `{name}` policies in the results store for the analysed domains: run `{name}` on "
                  f"them (e.g. `--methods {name}`) to link its fine-tuned blocks to the distances.", ""]
        written.append(atomic_write_text(reports / "spottune_link.csv", "note\nno spottune policies in the "
                                         "results store for the analysed domains\n"))
        return parts
    stats = link.correlation(table["distance"], table["tuned_fraction"])
    written.append(atomic_write_text(reports / "spottune_link.csv", _csv(table, index=True)))
    written.append(atomic_write_json(reports / "spottune_link_stats.json", stats))
    figure = link.plot_link(table, stats, distance_name=metric_name)
    written.append(atomic_write_bytes(reports / "spottune_link.png", _png(figure)))
    origin = ("the current plan's jobs" if plan.linked else
              f"every finished `{settings.spottune_method}` job in the results store (the plan has none)")
    parts += [f"Fraction of blocks `{settings.spottune_method}` fine-tunes (mean over evaluation images, "
              f"{origin}) against the {metric_name}, overall and per third of the network:", "",
              _md_table(table.reset_index(), 3),
              _correlation_sentence(stats), "",
              "![spottune link](spottune_link.png)", ""]
    return parts


# ------------------------------------------------------------------------------------------ entry point


def run_analysis(words: Sequence[str], jobs: Sequence[Job], out_dir: str | Path, *, executor: Any,
                 stream: IO[str] | None = None, generated: bool | None = None) -> int:
    """Run the analysis named by ``words[0]`` (settings in the rest) over the finished main plan `jobs`.

    Sweep jobs go through `executor` (any of :mod:`decathlon.executors`). Returns the number of sweep jobs
    that failed or were skipped (each has an ``error.json`` in its run directory); reports are written
    either way.
    """
    from decathlon.progress import CACHED, DONE, FAILED, SKIPPED, make_progress
    from decathlon.store import build_store
    from decathlon.suites import get_suite

    out_dir = Path(out_dir).resolve()
    stream = stream if stream is not None else sys.stdout
    _, settings = parse_analysis(words)
    start = time.perf_counter()

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    plan = analysis_plan(jobs, out_dir, settings)
    if generated is None:
        generated = get_suite(plan.suite).generated
    work = out_dir / WORK_DIR
    say(f"best-practices analysis: source {plan.source.name}, {len(plan.targets)} target(s), work dir {work}")
    distances = measure_distances(plan, settings, work, say)
    points = plan_points(plan, settings)
    say(f"best-practices sweep: {len(points)} jobs ({len(settings.variants)} variants x sizes x "
        f"{len(plan.targets)} targets x {len(plan.seeds)} seed(s)) under {work / 'runs'}")
    sweep_jobs = [p.job for p in points]
    with make_progress(workers=executor.workers, stream=stream) as tracker:
        tracker.start(sweep_jobs)
        outcomes = executor.execute(sweep_jobs, work, tracker)
    counts = {s: sum(o.status == s for o in outcomes.values()) for s in (DONE, CACHED, FAILED, SKIPPED)}
    results = sweep.sweep_results(points, work)
    try:
        store = build_store(out_dir)
    except HarnessError as e:
        say(f"best-practices: results store unreadable ({e}); the SpotTune link is left out")
        store = None
    paths = write_reports(out_dir, plan, settings, distances, results, store, generated=generated,
                          wall_s=time.perf_counter() - start)
    say(f"best-practices: {counts[DONE]} sweep jobs run, {counts[CACHED]} already finished, {counts[FAILED]} "
        f"failed, {counts[SKIPPED]} skipped; {len(paths)} files under {out_dir / REPORT_DIR}")
    for job_id, outcome in outcomes.items():
        if outcome.status in (FAILED, SKIPPED):
            say(f"  {outcome.status}: {job_id}: {outcome.message}")
    return counts[FAILED] + counts[SKIPPED]


def check_analysis(words: Sequence[str], jobs: Sequence[Job],
                   out_dir: str | Path) -> tuple[AnalysisSettings, AnalysisPlan]:
    """Validate ``--analysis`` against the main plan `jobs` before anything runs: bad settings, a suite
    without a source domain or no target to analyse fail here, not after the main run.
    """
    _, settings = parse_analysis(words)
    return settings, analysis_plan(jobs, Path(out_dir).resolve(), settings, require_pretrained=False)


def describe_analysis(settings: AnalysisSettings, plan: AnalysisPlan,
                      out_dir: str | Path) -> tuple[str, list[Job] | None, Path]:
    """What :func:`run_analysis` would do with the checked `settings` and `plan` (:func:`check_analysis`),
    running nothing (``--dry-run``).

    Returns a summary sentence, the sweep jobs (None while the targets' training labels, which size the
    subsets, cannot be read: e.g. a generated suite before its first use) and the folder they run in.
    """
    work = Path(out_dir).resolve() / WORK_DIR
    summary = (f"--analysis best-practices: source {plan.source.name}; targets {', '.join(plan.targets)}; "
               f"variants {', '.join(settings.variants)}; images per class "
               f"{', '.join('all' if n is None else str(n) for n in settings.images_per_class)}; seeds "
               f"{', '.join(map(str, plan.seeds))}")
    if plan.skipped:
        summary += "; not analysed: " + "; ".join(f"{k} ({v})" for k, v in plan.skipped.items())
    try:
        points = plan_points(plan, settings)
    except DataError as e:
        return f"{summary}. Sweep jobs are sized from the training labels, not readable yet: {e}", None, work
    return f"{summary}: {len(points)} sweep jobs", [p.job for p in points], work
