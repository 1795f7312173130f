"""The job plan: which runs exist, their stable ids, and the order dependencies impose.

A job is one (suite, method, domain, seed, protocol, settings) run. Its id is a readable relative path,
``<suite>/<method>/<domain>/s<seed>/<protocol>/<config hash>``, and its run directory is
``<out>/runs/<job id>/``. Two kinds exist: ``transfer`` jobs (``decathlon.engine.run``) and the
``pretrain`` job of the generated suite (``decathlon.pretrain``), which writes the source backbone every
transfer job of that suite starts from. Methods that only evaluate another method's checkpoint
(``Method.reuses``) depend on that method's job; the plan orders them after it and adds it when it was
not selected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decathlon.config import RunConfig
from decathlon.domains import DomainSpec
from decathlon.methods import Method, get_method
from decathlon.suites import domain_family

TRANSFER = "transfer"
PRETRAIN = "pretrain"
PRETRAIN_METHOD = "pretrain"  # the method field of a pretraining job (not a registered method)
PRETRAINED_FILE = "backbone.pt"  # the backbone checkpoint a pretraining job writes into its run dir
MARKERS = {TRANSFER: "result.json", PRETRAIN: "pretrain.json"}  # written last: the job finished


def protocol_slug(protocol: str) -> str:
    """The protocol as a path component: ``trainval->test`` -> ``trainval-test``."""
    return protocol.replace("->", "-")


@dataclass(frozen=True)
class Job:
    """One run of the plan."""

    config: RunConfig
    kind: str = TRANSFER
    needs: tuple[str, ...] = ()  # ids of jobs that must have finished before this one starts
    source: str | None = None  # id of the job whose run dir engine.run receives as source_run_dir
    notes: tuple[str, ...] = field(default=(), compare=False)  # why the plan added it, for the dry run
    # keep the last epoch's resume state (checkpoint.pt) after the job finished (--keep-checkpoints)
    keep_checkpoint: bool = field(default=False, compare=False)

    @property
    def job_id(self) -> str:
        c = self.config
        return f"{c.suite}/{c.method}/{c.domain}/s{c.seed}/{protocol_slug(c.protocol)}/{c.hash()}"

    def run_dir(self, out_dir: str | Path) -> Path:
        """The job's run directory under `out_dir`."""
        return Path(out_dir) / "runs" / self.job_id

    @property
    def marker(self) -> str:
        """File name whose presence in the run dir means the job finished."""
        return MARKERS[self.kind]

    def is_finished(self, out_dir: str | Path) -> bool:
        return (self.run_dir(out_dir) / self.marker).is_file()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (written as ``job.json`` into the run dir; read back by workers)."""
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in self.config.to_dict().items()}
        return {"job_id": self.job_id, "kind": self.kind, "needs": list(self.needs), "source": self.source,
                "keep_checkpoint": self.keep_checkpoint, "config": config}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Job:
        return cls(config=RunConfig.from_dict(values["config"]), kind=values["kind"],
                   needs=tuple(values.get("needs", ())), source=values.get("source"),
                   keep_checkpoint=bool(values.get("keep_checkpoint", False)))


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(*weights: str | None, produced: Mapping[str, str] | None = None) -> str | None:
    """The content identity of a run's weights (``pretrained``, ``pretrained_deep``) for the job hash.

    Each is the sha256 of its file, or ``job:<id>`` when a job of the plan writes it (`produced` maps
    such paths to job ids), or the value itself when it is not a file (``imagenet``). None without any
    weights. Returns a 16-hex-digit digest over all of them, in order.
    """
    produced = produced or {}
    parts = []
    for value in weights:
        if value is None:
            parts.append("-")
        elif value in produced:
            parts.append(f"job:{produced[value]}")
        elif Path(value).is_file():
            parts.append(file_sha256(value))
        else:
            parts.append(value)
    if all(part == "-" for part in parts):
        return None
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def pretrained_path(job: Job, out_dir: str | Path) -> Path:
    """Where the pretraining `job` writes its backbone checkpoint."""
    return job.run_dir(out_dir) / PRETRAINED_FILE


def concrete_suite(suite: str, spec: DomainSpec) -> str:
    """The suite recorded in a job: ``all`` splits into its two real suites (so results are shared)."""
    return domain_family(spec) if suite == "all" else suite


def pretrain_job(config: RunConfig, source: DomainSpec, seed: int = 0) -> Job:
    """The source pretraining job (`config` holds the pretraining settings)."""
    config = config.replace(method=PRETRAIN_METHOD, domain=source.name, seed=seed)
    return Job(config=config, kind=PRETRAIN)


def build_plan(*, suite: str, methods: Sequence[Method], domains: Sequence[DomainSpec], seeds: Sequence[int],
               configs: Mapping[str, RunConfig], pretrain: Job | None = None,
               out_dir: str | Path | None = None) -> tuple[Job, ...]:
    """Every job of `methods` x `domains` x `seeds`, in an order where each job follows what it needs.

    `configs` maps a domain family (``decathlon``/``extra``) to the base RunConfig of its jobs (data
    root, weights, protocol and the user's overrides already applied). A method runs on a domain only
    when the domain's family is one of its ``settings``. With `pretrain` (and `out_dir`, where its
    backbone will be), every transfer job starts from the pretrained backbone and needs that job.
    Methods that reuse another method's checkpoint need that method's job, added when not selected.
    """
    if pretrain is not None and out_dir is None:
        raise ValueError("build_plan: `out_dir` is required with `pretrain` (the backbone lives there)")
    needs = (pretrain.job_id,) if pretrain is not None else ()
    trained: dict[str, Job] = {}
    reusing: dict[str, Job] = {}
    for method in methods:
        for spec in domains:
            family = domain_family(spec)
            if family not in method.settings or family not in configs:
                continue
            for seed in seeds:
                base = configs[family]
                if pretrain is not None:
                    backbone = str(pretrained_path(pretrain, out_dir))
                    base = base.replace(pretrained=backbone, weights_digest=weights_digest(
                        backbone, base.pretrained_deep, produced={backbone: pretrain.job_id}))
                job = _transfer_job(method, spec, seed, base, suite, needs)
                if method.reuses is None:
                    if job.job_id not in trained or trained[job.job_id].notes:  # selected: drop the note
                        trained[job.job_id] = job
                    continue
                source = _transfer_job(get_method(method.reuses), spec, seed, base, suite, needs)
                if source.job_id not in trained:
                    note = f"added: {method.name} evaluates its checkpoint"
                    trained[source.job_id] = Job(source.config, needs=needs, notes=(note,))
                reusing[job.job_id] = Job(job.config, needs=needs + (source.job_id,), source=source.job_id)
    head = (pretrain,) if pretrain is not None else ()
    return head + tuple(trained.values()) + tuple(reusing.values())


def _transfer_job(method: Method, spec: DomainSpec, seed: int, base: RunConfig, suite: str,
                  needs: tuple[str, ...]) -> Job:
    config = base.replace(suite=concrete_suite(suite, spec), method=method.name, domain=spec.name, seed=seed)
    return Job(config=config, needs=needs)


def waves(jobs: Iterable[Job]) -> tuple[tuple[Job, ...], ...]:
    """Group jobs into waves: a job's wave is one more than the latest wave of the jobs it needs.

    Jobs of one wave are independent of each other and can run concurrently; needs outside `jobs`
    (e.g. already finished and filtered out) are treated as satisfied.
    """
    jobs = tuple(jobs)
    level: dict[str, int] = {}
    by_id = {j.job_id: j for j in jobs}
    for job in jobs:
        _level(job, by_id, level, ())
    out: dict[int, list[Job]] = {}
    for job in jobs:
        out.setdefault(level[job.job_id], []).append(job)
    return tuple(tuple(out[k]) for k in sorted(out))


def _level(job: Job, by_id: Mapping[str, Job], level: dict[str, int], stack: tuple[str, ...]) -> int:
    if job.job_id in level:
        return level[job.job_id]
    if job.job_id in stack:
        raise ValueError(f"dependency cycle in the job plan: {' -> '.join(stack + (job.job_id,))}")
    deps = [by_id[n] for n in job.needs if n in by_id]
    value = 1 + max((_level(d, by_id, level, stack + (job.job_id,)) for d in deps), default=-1)
    level[job.job_id] = value
    return value
