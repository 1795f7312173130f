"""``python run_all.py``: command line -> job plan -> executor -> results store -> reports.

Run every selected method on every selected domain and seed; re-running the same command skips finished
jobs and resumes partial ones. Without a data root the generated ``mini`` suite runs (generated on first
use under ``<out>/data``, with its own source pretraining job). A failed job is recorded in its run dir
(``error.json``) and the others continue; the command then exits non-zero with a table of the failures.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import signal
import sys
import threading
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from decathlon.config import (
    IDENTITY_FIELDS,
    PRESETS,
    PROTOCOLS,
    SCHEDULES,
    RunConfig,
    parse_assignments,
    yaml_problem,
)
from decathlon.domains import DomainSpec, suite_domains
from decathlon.errors import ConfigError, DataError, HarnessError, UnknownNameError
from decathlon.executors import (
    ERROR_FILE,
    InlineExecutor,
    LocalExecutor,
    Outcome,
    SubmititExecutor,
    Terminated,
    clear_run_dirs,
    raise_on_sigterm,
    visible_gpus,
    worker_slots,
)
from decathlon.jobs import PRETRAIN, Job, build_plan, pretrain_job, pretrained_path, waves, weights_digest
from decathlon.methods import Method, all_methods
from decathlon.preflight import check_plan, raise_problems
from decathlon.progress import CACHED, DONE, FAILED, SKIPPED, format_seconds, make_progress
from decathlon.suites import DECATHLON_FAMILY, EXTRA_FAMILY, SUITE_SETTINGS, domain_family, get_suite

EXECUTORS = ("inline", "local", "slurm", "submitit-local")

DESCRIPTION = """\
Run every selected method on every selected domain and seed, then build the results store and the
reports (tables, S-score, policy figures, a results.json submission). Without a data root the generated
mini suite runs on the CPU in minutes. Re-running the same command skips finished jobs and resumes
interrupted ones from their last epoch."""

EXAMPLES = """\
examples:
  # the generated mini suite on the CPU: data, source pretraining, every method, reports
  python run_all.py --suite mini

  # the real Decathlon, three seeds (see README: download and verify the data first)
  python run_all.py --suite decathlon --data-root /data/decathlon-1.0 \\
      --pretrained /weights/resnet26_pretrained.t7 --seeds 0-2

  # what would run and for how long, without running it
  python run_all.py --suite mini --methods spottune,finetune --domains aircraft,dtd --dry-run

more: --list-suites, --list-domains, --list-methods; README.md and results/README.md describe the outputs."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The examples as written, and "(default: X)" only where a default says something (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the whole usage is one --help away)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def get_args_parser(prog: str = "run_all.py") -> argparse.ArgumentParser:
    """The command line of ``run_all.py`` (and of the ``spottune-decathlon`` console script)."""
    p = _Parser(prog=prog, description=DESCRIPTION, epilog=EXAMPLES, formatter_class=_HelpFormatter)
    what = p.add_argument_group("what to run")
    what.add_argument("--suite", choices=tuple(SUITE_SETTINGS),
                      help="mini: generated stand-ins (the default without --data-root/--extra-root); "
                           "decathlon, extra, all: the real data (default: the suite of the roots given)")
    what.add_argument("--methods", default="all",
                      help="comma-separated method names (--list-methods), or 'all'")
    what.add_argument("--domains", default="all",
                      help="comma-separated domain names of the suite (--list-domains), or 'all'")
    what.add_argument("--seeds", default="0", help="comma-separated seeds or ranges, e.g. 0,1,2 or 0-2")
    what.add_argument("--protocol", choices=PROTOCOLS,
                      help="train->val (model selection) or trainval->test (the official numbers; "
                           "default of every suite)")
    data = p.add_argument_group("data and weights")
    data.add_argument("--data-root", type=Path,
                      help="decathlon-1.0 folder (mini: the folder the generated suite is written to, "
                           "default OUT/data)")
    data.add_argument("--extra-root", type=Path, help="folder holding the extra datasets' folders")
    data.add_argument("--pretrained", type=Path,
                      help="pretrained backbone (harness or official file); --suite extra: ResNet-50 weights")
    data.add_argument("--extra-pretrained", type=Path,
                      help="ImageNet weights of the extra datasets' backbone with --suite all (torchvision)")
    data.add_argument("--pretrained-deep", type=Path,
                      help="weights of finetune-resnet101's deeper backbone on the extra datasets "
                           "(ResNet-101, torchvision ImageNet state_dict)")
    settings = p.add_argument_group("settings (override the suite defaults)")
    settings.add_argument("--config", type=Path, help="YAML file of RunConfig overrides")
    settings.add_argument("--epochs", type=int, help="training epochs of every transfer job")
    settings.add_argument("--batch-size", type=int, help="images per training step")
    settings.add_argument("--width", type=float, help="ResNet-26 channel-width multiplier")
    settings.add_argument("--preset", choices=PRESETS,
                          help="transforms: faithful (SpotTune's code) or adapters (residual adapters')")
    settings.add_argument("--schedule", choices=SCHEDULES,
                          help="learning-rate schedule: faithful (one x0.1 drop at 40/110), multistep "
                               "(40/60/80), cosine")
    settings.add_argument("--pretrain-epochs", type=int, help="epochs of the mini suite's source pretraining")
    settings.add_argument("--pretrain-set", dest="pretrain_overrides", action="append", default=[],
                          metavar="KEY=VALUE", help="a RunConfig field of the mini source pretraining")
    settings.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="any RunConfig field (repeatable); the value is read as YAML")
    run = p.add_argument_group("execution")
    run.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    run.add_argument("--executor", choices=EXECUTORS, default="inline",
                     help="inline: one job after the other in this process; local: worker processes; "
                          "slurm, submitit-local: job arrays through submitit")
    run.add_argument("--workers", type=int, default=1, help="local executor: CPU worker processes (no GPU)")
    run.add_argument("--jobs-per-gpu", type=int, default=1, help="local executor: concurrent jobs per GPU")
    run.add_argument("--gpus-per-job", type=int, default=0, help="slurm: GPUs per job")
    run.add_argument("--cpus-per-job", type=int, help="slurm: CPUs per job")
    run.add_argument("--mem-gb", type=float, help="slurm: memory per job (GB)")
    run.add_argument("--slurm-partition", help="slurm: partition")
    run.add_argument("--slurm-time", type=int, default=24 * 60, help="slurm: time limit per job (minutes)")
    run.add_argument("--slurm-array-parallelism", type=int, default=64, help="slurm: array tasks at once")
    run.add_argument("--slurm-param", action="append", default=[], metavar="KEY=VALUE",
                     help="any further submitit parameter (repeatable), e.g. slurm_account=proj")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan and its estimated duration, and exit")
    run.add_argument("--report-only", action="store_true", help="rebuild the store and reports; run nothing")
    run.add_argument("--no-report", action="store_true", help="do not render the reports after the run")
    run.add_argument("--force", action="store_true",
                     help="redo the selected jobs even when finished (not the mini source pretraining)")
    run.add_argument("--keep-checkpoints", action="store_true",
                     help="keep every finished job's last-epoch checkpoint.pt (by default only the final "
                          "models other methods evaluate are kept, as model.pt)")
    run.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    info = p.add_argument_group("information (print and exit)")
    info.add_argument("--list-methods", action="store_true", help="the registered methods")
    info.add_argument("--list-suites", action="store_true", help="the suites and what they hold")
    info.add_argument("--list-domains", action="store_true",
                      help="the domains of --suite (default: mini) with classes and images per split")
    p.add_argument("--analysis", nargs="+", metavar=("NAME", "KEY=VALUE"),
                   help="after the run: an analysis of the suite (best-practices), settings as KEY=VALUE "
                        "words; see docs/analysis.md")
    return p


# ---------------------------------------------------------------------------------- argument parsing

def parse_list(text: str) -> tuple[str, ...]:
    """``a,b, c`` -> ``("a", "b", "c")``."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0,1,2`` or ``0-2`` (or a mix) -> ``(0, 1, 2)``."""
    seeds: list[int] = []
    for part in parse_list(text):
        try:
            if "-" in part:
                low, high = part.split("-", 1)
                seeds += range(int(low), int(high) + 1)
            else:
                seeds.append(int(part))
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: expected integers or ranges such as 0,1,2 or 0-2") from None
    if not seeds:
        raise ConfigError(f"--seeds {text!r}: no seed given")
    return tuple(dict.fromkeys(seeds))


def select_methods(text: str, registry: Mapping[str, Method]) -> tuple[Method, ...]:
    """Methods named in `text` (``all`` = every registered one), in registry order."""
    names = parse_list(text)
    if names in ((), ("all",)):
        return tuple(registry.values())
    for name in names:
        if name not in registry:
            raise UnknownNameError("method", name, registry)
    return tuple(m for n, m in registry.items() if n in names)


def select_domains(text: str, suite: str) -> tuple[DomainSpec, ...]:
    """Domains of `suite` named in `text` (``all`` = every one), in the suite's order."""
    specs = suite_domains(suite)
    names = parse_list(text)
    if names in ((), ("all",)):
        return specs
    known = [s.name for s in specs]
    for name in names:
        if name not in known:
            raise UnknownNameError(f"domain of suite {suite!r}", name, known)
    return tuple(s for s in specs if s.name in names)


_HINTS = typing.get_type_hints(RunConfig)


def coerce_value(key: str, value: Any) -> Any:
    """Check a RunConfig override against the field's type (ints become floats where floats are due)."""
    if key not in _HINTS:
        raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(RunConfig.field_names())}")
    hint = _HINTS[key]
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _union_type()) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if origin is float and not isinstance(value, bool) and (number := _as_float(value)) is not None:
            if not math.isfinite(number):
                raise ConfigError(f"config key {key!r}: {value!r} is not a finite number")
            return number
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is bool and isinstance(value, bool):
            return value
        if origin is str and isinstance(value, str):
            return value
        if origin is str and isinstance(value, Path):
            return str(value)
        if origin is tuple and isinstance(value, (list, tuple)):
            return tuple(float(v) for v in value)
    raise ConfigError(f"config key {key!r}: {value!r} is not a valid {type_name(hint)}")


def _as_float(value: Any) -> float | None:
    """`value` as a float, or None. Strings count: YAML 1.1 reads ``1e-4`` (no dot) as a string."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def type_name(hint: Any) -> str:
    """``int``, ``float | None``, ``tuple[float, ...]``: a type annotation as Python code writes it."""
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _union_type() -> Any:
    import types

    return types.UnionType


def read_config_file(path: Path) -> dict[str, Any]:
    """RunConfig overrides from a YAML mapping file."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({yaml_problem(e)})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of RunConfig fields, "
                          f"got {type(values).__name__}")
    return values


def user_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """RunConfig overrides from --config, the flags and --set (later wins), type-checked."""
    values: dict[str, Any] = read_config_file(args.config) if args.config else {}
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "width": args.width, "preset": args.preset,
             "schedule": args.schedule, "protocol": args.protocol}
    values.update({k: v for k, v in flags.items() if v is not None})
    values.update(parse_assignments(args.overrides, "--set"))
    identity = sorted(set(values) & (set(IDENTITY_FIELDS) - {"protocol"}))
    if identity:
        raise ConfigError(f"config keys {identity} name the jobs: use --suite, --methods, --domains, --seeds")
    values = {k: coerce_value(k, v) for k, v in values.items()}
    RunConfig.from_dict(values)  # values out of range fail here, before any plan is made
    return values


# ----------------------------------------------------------------------------------------- planning

def resolve_suite(args: argparse.Namespace, say: Any) -> str:
    """The suite to run; the generated mini suite when no data root is given (and say so)."""
    if args.suite is not None:
        return args.suite
    if args.data_root is None and args.extra_root is None:
        say("No --data-root given: running the generated mini suite (9 Decathlon stand-ins, the source, "
            "5 extra stand-ins; small CPU settings). Use --suite decathlon --data-root DIR for the real "
            "benchmark.")
        return "mini"
    if args.data_root is not None and args.extra_root is not None:
        return "all"
    return "decathlon" if args.data_root is not None else "extra"


def generated_paths(data_dir: Path) -> tuple[Path, Path]:
    """Where decathlon.generate puts a suite generated into `data_dir`: (decathlon-1.0, extra)."""
    return data_dir / "decathlon-1.0", data_dir / "extra"


def _existing_dir(path: Path | None, flag: str, suite: str, expected: str) -> str:
    if path is None:
        from decathlon.domains import download_hint

        raise ConfigError(f"--suite {suite} needs {flag} ({expected}); "
                          + download_hint("extra" if flag == "--extra-root" else "decathlon"))
    if not path.is_dir():
        raise DataError(f"{flag} {path}: no such directory (expected {expected})")
    return str(path.resolve())


def _weights(path: Path | None, flag: str, suite: str, expected: str,
             methods: Sequence[Method]) -> str | None:
    if path is None:
        if any(m.pretrained for m in methods):
            raise ConfigError(f"--suite {suite} needs {flag} ({expected}); only 'scratch' runs without it"
                              + ("; get it with `python -m decathlon download weights --root DIR`"
                                 if flag == "--pretrained" and suite == "decathlon" else ""))
        return None
    if not path.is_file():
        raise DataError(f"{flag} {path}: no such file (expected {expected})")
    return str(path.resolve())


def family_roots(args: argparse.Namespace, suite: str, families: Sequence[str],
                 methods: Sequence[Method], weights_set: bool = False) -> dict[str, dict[str, Any]]:
    """Data root and pretrained weights of each family of a real suite, checked to exist.

    With `weights_set` (``--set pretrained=...`` given, e.g. ``imagenet`` for torchvision's download),
    the weights are left to that override.
    """
    if weights_set:
        methods = ()  # no --pretrained file is required
    out: dict[str, dict[str, Any]] = {}
    if DECATHLON_FAMILY in families:
        out[DECATHLON_FAMILY] = {
            "data_root": _existing_dir(args.data_root, "--data-root", suite,
                                       "the decathlon-1.0 folder with annotations/ and data/"),
            "pretrained": _weights(args.pretrained, "--pretrained", suite,
                                   "a ResNet-26 pretrained on imagenet12, harness or official format",
                                   methods),
        }
    if EXTRA_FAMILY in families:
        use_extra = args.extra_pretrained is not None or suite == "all"
        weights = args.extra_pretrained if use_extra else args.pretrained
        flag = "--extra-pretrained" if suite == "all" else "--pretrained"
        out[EXTRA_FAMILY] = {
            "data_root": _existing_dir(args.extra_root, "--extra-root", suite,
                                       "the folder holding cubs/, stanford-cars/, flowers/, ..."),
            "pretrained": _weights(weights, flag, suite, "the torchvision ImageNet weights of the backbone",
                                   methods),
        }
    return out


def make_plan(args: argparse.Namespace, suite: str, out_dir: Path) -> tuple[tuple[Job, ...], Path | None]:
    """The job plan of the command line, and the folder of the generated suite (mini) or None."""
    settings = get_suite(suite)
    methods = select_methods(args.methods, all_methods())
    domains = select_domains(args.domains, suite)
    seeds = parse_seeds(args.seeds)
    overrides = user_overrides(args)
    families = tuple(dict.fromkeys(domain_family(d) for d in domains))
    data_dir = None
    if settings.generated:
        data_dir = (args.data_root or out_dir / "data").resolve()
        decathlon_root, extra_root = generated_paths(data_dir)
        roots = {DECATHLON_FAMILY: {"data_root": str(decathlon_root)},
                 EXTRA_FAMILY: {"data_root": str(extra_root)}}
    else:
        roots = family_roots(args, suite, families, methods, weights_set="pretrained" in overrides)
        if "pretrained" in overrides:
            for values in roots.values():
                values.pop("pretrained")
    if args.pretrained_deep is not None:
        if EXTRA_FAMILY not in families:
            raise ConfigError("--pretrained-deep: the weights of finetune-resnet101's deeper backbone apply "
                              "to the extra datasets, and none is selected")
        if not args.pretrained_deep.is_file():
            raise DataError(f"--pretrained-deep {args.pretrained_deep}: no such file (expected the "
                            "ResNet-101 ImageNet weights)")
        roots[EXTRA_FAMILY]["pretrained_deep"] = str(args.pretrained_deep.resolve())
    configs = {f: RunConfig.from_dict({**settings.overrides(f), **overrides, **roots[f]}) for f in families}
    # jobs are named by the weights' content, not their path: a moved results folder keeps its jobs
    configs = {f: c.replace(weights_digest=weights_digest(c.pretrained, c.pretrained_deep))
               for f, c in configs.items()}
    pretrain = None
    if settings.pretrain is not None:
        base = configs.get(DECATHLON_FAMILY) or next(iter(configs.values()))
        source = next(d for d in suite_domains(suite) if d.is_source)
        values = {**settings.pretrain, "suite": suite, "data_root": roots[DECATHLON_FAMILY]["data_root"],
                  # the transfer jobs load this backbone: same architecture, device and data path
                  "backbone": base.backbone, "width": base.width, "device": base.device, "cache": base.cache,
                  "num_workers": base.num_workers}
        if args.pretrain_epochs is not None:
            values["epochs"] = args.pretrain_epochs
        extra = parse_assignments(args.pretrain_overrides, "--pretrain-set")
        values.update({k: coerce_value(k, v) for k, v in extra.items()})
        pretrain = pretrain_job(RunConfig.from_dict(values), source, seed=0)
    jobs = build_plan(suite=suite, methods=methods, domains=domains, seeds=seeds, configs=configs,
                      pretrain=pretrain, out_dir=out_dir.resolve())
    if all(j.kind == PRETRAIN for j in jobs):
        raise ConfigError(f"the selection is empty: no selected method runs on the selected domains of "
                          f"{suite!r} (methods run only in their settings, e.g. finetune-resnet101: extra)")
    return jobs, data_dir


def job_state(job: Job, out_dir: Path) -> str:
    """``finished``, ``failed``, ``partial (k epochs)`` or ``new``: what re-running would do."""
    run_dir = job.run_dir(out_dir)
    if job.is_finished(out_dir):
        return "finished"
    if (run_dir / ERROR_FILE).is_file():
        return "failed before"
    epochs = run_dir / "epochs.jsonl"
    if epochs.is_file():
        return f"partial ({len(epochs.read_text().splitlines())}/{job.config.epochs} epochs)"
    return "new"


def _console(stream: Any) -> Console:
    # a wide console off a terminal: job ids must not be cut in logs
    return Console(file=stream, width=None if stream.isatty() else 220)


def plan_table(jobs: Sequence[Job], out_dir: Path) -> Table:
    """The plan as a table: order, wave, job id, what it needs, state on disk."""
    wave_of = {j.job_id: i for i, wave in enumerate(waves(jobs)) for j in wave}
    table = Table(title=f"{len(jobs)} jobs -> {out_dir}/runs/<job id>", show_lines=False)
    for column in ("#", "wave", "job id", "needs #", "state", "note"):
        table.add_column(column, overflow="fold")
    number = {j.job_id: str(i) for i, j in enumerate(jobs, 1)}
    for i, job in enumerate(jobs, 1):
        needs = ", ".join(number.get(n, n) for n in job.needs)  # by row number; ids outside the plan in full
        table.add_row(str(i), str(wave_of[job.job_id]), escape(job.job_id), escape(needs),
                      job_state(job, out_dir), escape("; ".join(job.notes)))
    return table


def suites_table() -> Table:
    """``--list-suites``: every suite, its domains and what it is."""
    table = Table(title="suites (--suite)")
    for column in ("suite", "domains", "what it is"):
        table.add_column(column, overflow="fold")
    for name, settings in SUITE_SETTINGS.items():
        table.add_row(name, str(len(suite_domains(name))), escape(settings.description))
    return table


def domains_table(suite: str) -> Table:
    """``--list-domains``: the domains of `suite` with their classes and images per split."""
    from decathlon.suites import get_suite

    get_suite(suite)  # an unknown suite is one line naming the known ones
    table = Table(title=f"domains of suite {suite!r} (--domains)")
    for column in ("domain", "label", "classes", "train", "val", "test", "family", "note"):
        table.add_column(column, overflow="fold", justify="right" if column in ("classes", "train", "val",
                                                                                 "test") else "left")
    for spec in suite_domains(suite):
        sizes = spec.split_sizes
        note = "source: the pretrained network's own accuracy" if spec.is_source else ""
        table.add_row(spec.name, escape(spec.label), str(spec.num_classes), str(sizes.train), str(sizes.val),
                      str(sizes.test), domain_family(spec), note)
    return table


def print_main_tables(console: Console, reports: Path) -> None:
    """The reports' main tables (methods x domains, Mean, S) in the terminal, as the CSVs hold them."""
    from decathlon.summary import main_tables

    for table in main_tables(reports):
        console.print(table)


def methods_table(registry: Mapping[str, Method]) -> Table:
    table = Table(title="registered methods")
    for column in ("method", "settings", "trains", "summary"):
        table.add_column(column, overflow="fold")
    for name, m in registry.items():
        trains = "yes" if m.trains else f"no: evaluates {m.reuses}"
        table.add_row(name, ", ".join(m.settings), trains, escape(m.summary))
    return table


# ----------------------------------------------------------------------------------------- running

def make_executor(args: argparse.Namespace, out_dir: Path) -> Any:
    """The executor of ``--executor`` with its options."""
    if args.executor == "inline":
        return InlineExecutor(debug=args.debug)
    if args.executor == "local":
        gpus = visible_gpus()
        slots = worker_slots(gpus=gpus, jobs_per_gpu=args.jobs_per_gpu, cpu_workers=args.workers)
        return LocalExecutor(slots=slots, debug=args.debug)
    params: dict[str, Any] = {"timeout_min": args.slurm_time, "name": "decathlon"}
    cluster = "local" if args.executor == "submitit-local" else "slurm"
    if cluster == "slurm":
        if shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm: `sbatch` not found (not a SLURM node?); "
                              "use --executor local or submitit-local")
        params.update(slurm_partition=args.slurm_partition, gpus_per_node=args.gpus_per_job or None,
                      cpus_per_task=args.cpus_per_job, mem_gb=args.mem_gb,
                      slurm_array_parallelism=args.slurm_array_parallelism)
    params.update(parse_assignments(args.slurm_param, "--slurm-param"))
    params = {k: v for k, v in params.items() if v is not None}
    return SubmititExecutor(out_dir / "submitit", cluster=cluster, parameters=params,
                            workers=args.slurm_array_parallelism if cluster == "slurm" else 1)


def failures_table(jobs: Sequence[Job], outcomes: Mapping[str, Outcome], out_dir: Path) -> Table:
    table = Table(title="failed and skipped jobs")
    for column in ("job id", "status", "reason", "details"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        o = outcomes.get(job.job_id)
        if o is not None and o.status in (FAILED, SKIPPED):
            details = str(job.run_dir(out_dir) / ERROR_FILE) if o.status == FAILED else ""
            table.add_row(escape(o.job_id), o.status, escape(o.message), escape(details))
    return table


def render_reports(out_dir: Path, data_root: Path | None = None) -> list[Path]:
    """Rebuild the store from the run dirs and render every report from it; `data_root` (a decathlon-1.0
    folder or its parent) serves runs whose recorded data root has moved."""
    from decathlon.data import decathlon_root
    from decathlon.report import render_all
    from decathlon.store import build_store

    folder = decathlon_root(data_root) if data_root is not None else None
    return render_all(out_dir, build_store(out_dir), data_root=folder)


def run(args: argparse.Namespace, *, stdout: Any = None, stderr: Any = None) -> int:
    """Carry out a parsed command line; returns the exit code."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    console = _console(stdout)
    out_dir = args.out.resolve()
    if args.list_methods:
        console.print(methods_table(all_methods()))
        return 0
    if args.list_suites:
        console.print(suites_table())
        return 0
    if args.list_domains:
        console.print(domains_table(args.suite or "mini"))
        return 0
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; expected a results folder")
    if args.report_only:
        if not (out_dir / "runs").is_dir():
            raise ConfigError(f"--report-only: no runs under {out_dir} (expected {out_dir / 'runs'}, written "
                              "by an earlier run with the same --out)")
        paths = render_reports(out_dir, args.data_root)
        console.print(f"reports: {len(paths)} files under {out_dir / 'reports'}")
        return 0

    def say(text: str) -> None:
        console.print(escape(text))

    suite = resolve_suite(args, say)
    jobs, data_dir = make_plan(args, suite, out_dir)
    # before anything runs or is written, and in the dry run: every problem that would fail jobs later
    produced = {str(pretrained_path(j, out_dir)) for j in jobs if j.kind == PRETRAIN}
    raise_problems(check_plan(jobs, data=data_dir is None, produced=produced))
    if args.analysis:  # checked before anything runs: a bad setting must not cost the main run first
        from decathlon.analysis import check_analysis, describe_analysis

        analysis = check_analysis(args.analysis, jobs, out_dir)
    if args.keep_checkpoints:
        jobs = tuple(dataclasses.replace(j, keep_checkpoint=True) for j in jobs)
    if args.dry_run:
        console.print(plan_table(jobs, out_dir))
        from decathlon.summary import estimate_plan, estimate_table

        console.print(estimate_table(estimate_plan(jobs, out_dir)))
        if args.analysis:
            summary, sweep_jobs, work = describe_analysis(*analysis, out_dir)
            say(summary)
            if sweep_jobs is not None:
                console.print(plan_table(sweep_jobs, work))
        return 0
    if data_dir is not None:
        from decathlon.generate import ensure_suite

        say(f"generated suite: {data_dir} (generated on first use)")
        ensure_suite(data_dir, seed=0)
    if args.force:
        # the shared source backbone is kept: other, unforced results were trained from it
        removed = clear_run_dirs([j for j in jobs if j.kind != PRETRAIN], out_dir)
        say(f"--force: removed {len(removed)} run directories")
    executor = make_executor(args, out_dir)
    with make_progress(workers=executor.workers, stream=stdout) as tracker:
        tracker.start(jobs)
        outcomes = executor.execute(jobs, out_dir, tracker)
    counts = {s: sum(o.status == s for o in outcomes.values()) for s in (DONE, CACHED, FAILED, SKIPPED)}
    if not args.no_report:
        data_root = generated_paths(data_dir)[0] if data_dir is not None else args.data_root
        paths = render_reports(out_dir, data_root)
        print_main_tables(console, out_dir / "reports")
        say(f"reports: {len(paths)} files; start at {out_dir / 'reports' / 'README.md'}")
    if args.analysis:  # after the reports (writes reports/analysis/); its failed sweep jobs count as failed
        from decathlon.analysis import run_analysis

        counts[FAILED] += run_analysis(args.analysis, jobs, out_dir, executor=executor, stream=stdout)
    seconds = sum(o.seconds for o in outcomes.values())
    from decathlon.summary import folder_size, format_bytes

    say(f"{len(jobs)} jobs: {counts[DONE]} run ({format_seconds(seconds)} of job time), {counts[CACHED]} "
        f"already finished, {counts[FAILED]} failed, {counts[SKIPPED]} skipped; results in {out_dir} "
        f"({format_bytes(folder_size(out_dir))})")
    if counts[FAILED] or counts[SKIPPED]:
        _console(stderr).print(failures_table(jobs, outcomes, out_dir))
        return 1
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "run_all.py") -> int:
    """Entry point of ``run_all.py``: one readable line on stderr for bad input (tracebacks with --debug)."""
    args = get_args_parser(prog).parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    # a scheduler's SIGTERM unwinds like Ctrl-C: loader workers end, the command exits with a summary
    previous = raise_on_sigterm() if main_thread else None
    try:
        return _main(args, prog)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def console_main() -> int:
    """The ``spottune-decathlon`` console script (pyproject.toml): exactly what ``run_all.py`` does."""
    return main(prog="spottune-decathlon")


def _main(args: argparse.Namespace, prog: str) -> int:
    try:
        return run(args)
    except HarnessError as e:
        if args.debug:
            raise
        for line in str(e).splitlines() or [""]:  # a preflight error: one line per problem
            print(f"{prog}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"{prog}: terminated ({e}); run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
