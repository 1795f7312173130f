"""Preflight: find every problem that would make jobs of a plan fail, before the first job starts.

A data root that exists but is empty, a missing annotation file, a weights file that does not fit the
backbone, or a method whose pretrained weights were not given would otherwise fail job after job, each
writing its ``error.json`` after the jobs before it ran. :func:`check_plan` reads what the jobs will read
(each selected domain's annotation files, image lists and statistics; each weights file, loaded into the
backbone that will use it) and returns one readable line per problem. ``run_all.py`` runs it before the
plan is executed and in ``--dry-run``; problems exit with code 2 and nothing written.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from decathlon.domains import DomainSpec, get_domain
from decathlon.errors import HarnessError
from decathlon.jobs import PRETRAIN, Job
from decathlon.methods import Method, get_method


class PreflightError(HarnessError):
    """Problems found before any job ran; ``problems`` holds one readable line each."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def check_plan(jobs: Iterable[Job], *, data: bool = True, produced: Collection[str] = ()) -> list[str]:
    """One line per problem that would make a job of `jobs` fail before it trains (empty: none found).

    `data`: check the data roots (False for the generated suite, which the run writes itself);
    `produced`: weights paths that a job of the plan writes (the mini suite's source backbone), not
    checked since they do not exist yet. Each distinct (root, domain, split) and each distinct weights
    setting is read once.
    """
    jobs = tuple(jobs)
    problems = data_problems(jobs) if data else []
    problems += weights_problems(jobs, produced)
    return list(dict.fromkeys(problems))


def raise_problems(problems: Sequence[str]) -> None:
    """Raise :class:`PreflightError` when there is any problem."""
    if problems:
        raise PreflightError(problems)


def _reads(job: Job) -> tuple[DomainSpec, Method | None, tuple[str, ...]]:
    """(domain, method or None for pretraining, splits the job reads)."""
    config = job.config
    spec = get_domain(config.domain, suite=config.suite)
    if job.kind == PRETRAIN:
        return spec, None, (config.train_split, config.eval_split)
    method = get_method(config.method)
    trains = method.trains and not spec.is_source
    return spec, method, ((config.train_split, config.eval_split) if trains else (config.eval_split,))


def data_problems(jobs: Sequence[Job]) -> list[str]:
    """Missing or unreadable data: each data root, then each domain's splits and statistics."""
    from decathlon.data import build_dataset, load_mean_std

    problems: list[str] = []
    bad_roots: set[str | None] = set()
    seen: set[tuple] = set()
    for job in jobs:
        spec, _, splits = _reads(job)
        root = job.config.data_root
        if root in bad_roots:
            continue
        problem = _root_problem(root, spec)
        if problem is not None:
            problems.append(problem)
            bad_roots.add(root)
            continue
        for split in splits:
            if (root, spec.name, split) in seen:
                continue
            seen.add((root, spec.name, split))
            try:
                build_dataset(spec, root, split)
                load_mean_std(root, spec)
            except HarnessError as e:
                problems.append(str(e))
    return problems


def _root_problem(root: str | None, spec: DomainSpec) -> str | None:
    """A data root that cannot hold the domain at all (missing, or without the layout's top folders)."""
    from decathlon.data import decathlon_root

    if root is None:
        return f"no data root for domain {spec.name!r}; expected --data-root or --extra-root"
    if spec.layout != "decathlon":
        if not Path(root).is_dir():
            return f"data root {root} is not a directory; expected the folder holding {spec.directory}/"
        return None
    try:
        folder = decathlon_root(root)
    except HarnessError as e:
        return str(e)
    missing = [name for name in ("annotations", "data") if not (folder / name).is_dir()]
    if missing:
        return (f"data root {root} has no {' or '.join(m + '/' for m in missing)} folder; expected the "
                "decathlon-1.0 folder with annotations/<domain>_<split>.json and data/<domain>/")
    return None


def weights_problems(jobs: Sequence[Job], produced: Collection[str] = ()) -> list[str]:
    """Weights that are missing, unreadable, do not fit the backbone, or leave a pretrained method random.

    Each training job's starting backbone is built as the engine builds it (so a method whose weights come
    from another flag, e.g. ``finetune-resnet101``'s ``--pretrained-deep``, is checked too); the source
    domain's entry needs the pretrained network's own classifier.
    """
    from decathlon.engine import build_backbone, pretrained_source_model

    problems: list[str] = []
    seen: set[tuple] = set()
    for job in jobs:
        spec, method, _ = _reads(job)
        config = job.config
        if method is None or not method.trains or config.pretrained in produced:
            continue
        source = spec.is_source
        key = (source, spec.name if source else _builder(method), config.backbone, config.width,
               config.pretrained, config.pretrained_deep)
        if key in seen:
            continue
        seen.add(key)
        try:
            if source:
                pretrained_source_model(config, spec)
            else:
                build_backbone(method, config, spec.num_classes)
        except HarnessError as e:
            problems.append(str(e))
    return problems


def _builder(method: Method) -> str:
    """Methods building the same starting backbone share one check."""
    if getattr(method, "create_backbone", None) is not None:
        return method.name
    return "pretrained" if method.pretrained else "random"
