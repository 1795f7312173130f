"""Table groups of a results store: which results may share a table or a figure, and how domains are named.

Shared by the tables (:mod:`decathlon.report`) and the figures (:mod:`decathlon.figures`), which both import
from here (so neither imports the other). Results share a group (:class:`GroupKey`) when they have the same
suite, table family, protocol and configuration (every setting but the seed); :func:`group_jobs` splits a
store's jobs into groups in a stable order.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from decathlon.config import PROTOCOLS, RunConfig
from decathlon.domains import DECATHLON_COLUMNS, EXTRA_COLUMNS, SUITES, get_domain, suite_domains
from decathlon.errors import DataError, HarnessError, UnknownNameError
from decathlon.suites import get_suite

FAMILIES = ("decathlon", "extra", "other")  # table families: the Decathlon table, the extra-dataset table
FAMILY_TITLES = {"decathlon": "Visual Decathlon", "extra": "Extra datasets", "other": "Other domains"}
GROUP_COLUMNS = ("suite", "family", "protocol", "preset", "schedule", "config_hash")
# Settings that name files rather than configure training: where the weights live is not a setting (runs
# of different weights still get tables of their own: their config hashes differ).
PATH_SETTINGS = ("pretrained", "pretrained_deep", "weights_digest")  # which weights, by path or content
# Settings that do not change what is computed (loading, placement, logging, kernels and random streams of
# the same recipe): a run differing from the reference recipe only in these is still compared with the
# published numbers.
NEUTRAL_SETTINGS = ("num_workers", "eval_batch_size", "device", "log_every", "cache", "channels_last",
                    "compile", "fused_sgd", "device_rng", "cudnn_benchmark", "deterministic")


def domain_family(domain: str) -> str:
    """Which paper table a domain belongs to (by name: generated stand-ins share the real names)."""
    if domain in DECATHLON_COLUMNS:
        return "decathlon"
    if domain in EXTRA_COLUMNS:
        return "extra"
    return "other"


@dataclass(frozen=True, order=True)
class GroupKey:
    """The results that may share a table: same suite, table family, protocol and configuration (every
    setting but the seed: ``config_hash``; preset and schedule are part of it and named for readability).

    ``differences`` are the settings that differ from the suite's defaults, as ``name=value`` texts (None:
    the store did not record the settings); ``recipe_differences`` the names of those that change what is
    computed (not in :data:`NEUTRAL_SETTINGS`). ``tag`` (the config hash) is appended to the slug when the
    settings are not the defaults, or when the base slug alone would not be unique.
    """

    suite: str
    family: str
    protocol: str
    preset: str
    schedule: str
    config_hash: str = ""
    differences: tuple[str, ...] | None = field(default=(), compare=False)
    recipe_differences: tuple[str, ...] = field(default=(), compare=False)
    tag: str = field(default="", compare=False)

    @property
    def slug(self) -> str:
        """File-name stem, e.g. ``mini-decathlon_trainval-test_faithful-faithful`` (plus ``_<hash>`` for a
        configuration other than the suite's defaults)."""
        where = self.suite if self.family == self.suite else f"{self.suite}-{self.family}"
        base = f"{where}_{self.protocol.replace('->', '-')}_{self.preset}-{self.schedule}"
        return f"{base}_{self.tag}" if self.tag else base

    @property
    def settings_text(self) -> str:
        """The caption's sentence on the configuration."""
        if self.differences is None:
            return f"Settings: not recorded in the store (config {self.config_hash or 'unknown'})."
        if not self.differences:
            return "Settings: the suite's defaults."
        return "Settings that differ from the suite's defaults: " + ", ".join(self.differences) + "."

    @property
    def is_real_decathlon(self) -> bool:
        return self.suite == "decathlon" and self.family == "decathlon"

    @property
    def is_real(self) -> bool:
        return self.suite in ("decathlon", "extra", "all") and self.family != "other"


def _rank(value: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def _sort_key(key: GroupKey) -> tuple:
    return (_rank(key.suite, SUITES + ("all",)), _rank(key.family, FAMILIES), _rank(key.protocol, PROTOCOLS),
            key.preset, key.schedule, bool(key.differences), key.config_hash)


def with_family(jobs: pd.DataFrame) -> pd.DataFrame:
    """`jobs` plus a `family` column (checked: the columns the reports need are present)."""
    needed = {"suite", "method", "domain", "seed", "protocol", "preset", "schedule", "top1"}
    missing = sorted(needed - set(jobs.columns))
    if missing:
        raise DataError(f"results store: jobs table lacks column(s) {missing}; expected at least "
                        f"{sorted(needed)}")
    out = jobs.copy()
    out["family"] = [domain_family(d) for d in out["domain"]]
    return out


def suite_defaults(suite: str, family: str) -> dict[str, object]:
    """The settings (:meth:`RunConfig.settings`) a job of `suite` and table `family` gets by default: the
    RunConfig defaults with the suite's family overrides (decathlon.suites); plain defaults for a suite
    or family the registry does not know."""
    try:
        overrides = dict(get_suite(suite).overrides(family))
    except HarnessError:
        overrides = {}
    return RunConfig.from_dict(overrides).settings()


def _setting_text(name: str, value: object) -> str:
    return f"{name}={value if isinstance(value, str) else json.dumps(value)}"


def settings_differences(suite: str, family: str, settings: object) -> tuple[tuple[str, ...] | None,
                                                                            tuple[str, ...]]:
    """(``name=value`` for every setting differing from :func:`suite_defaults`, the weights' paths
    (:data:`PATH_SETTINGS`) excepted, and the names among them that change what is computed). `settings` is
    the store's JSON text (or mapping); missing -> (None, ())."""
    if isinstance(settings, str):
        try:
            settings = json.loads(settings)
        except ValueError:
            settings = None
    if not isinstance(settings, Mapping):
        return None, ()
    defaults = suite_defaults(suite, family)
    differing = sorted(k for k, v in settings.items()
                       if k not in PATH_SETTINGS and (k not in defaults or defaults[k] != v))
    return (tuple(_setting_text(k, settings[k]) for k in differing),
            tuple(k for k in differing if k not in NEUTRAL_SETTINGS))


def group_jobs(jobs: pd.DataFrame) -> list[tuple[GroupKey, pd.DataFrame]]:
    """Split the jobs into table groups, one per (suite, family, protocol, configuration), in a stable
    order. Runs that differ in any setting but the seed never share a group."""
    jobs = with_family(jobs)
    if jobs.empty:
        return []
    if "config_hash" not in jobs:
        jobs["config_hash"] = ""
    jobs["config_hash"] = jobs["config_hash"].fillna("").astype(str)
    settings = jobs["settings"] if "settings" in jobs else pd.Series(None, index=jobs.index, dtype=object)
    groups = []
    for values, rows in jobs.groupby(list(GROUP_COLUMNS), sort=False):
        key = GroupKey(*(str(v) for v in values))
        differences, recipe = settings_differences(key.suite, key.family, settings[rows.index[0]])
        groups.append((dataclasses.replace(key, differences=differences, recipe_differences=recipe), rows))
    # the suite's default configuration keeps the plain name; any other gets its config hash appended
    plain = Counter(key.slug for key, _ in groups if not key.differences)
    groups = [(dataclasses.replace(key, tag=key.config_hash) if key.differences or plain[key.slug] > 1
               else key, rows) for key, rows in groups]
    return sorted(groups, key=lambda g: _sort_key(g[0]))


def table_domains(key: GroupKey, present: Iterable[str]) -> list[str]:
    """Columns of a group's table: the suite's domains of that family in paper order, then any others."""
    try:
        names = [s.name for s in suite_domains(key.suite) if domain_family(s.name) == key.family]
    except HarnessError:
        names = []  # a suite the registry does not know: show what is there
    return names + sorted(set(present) - set(names))


def domain_label(name: str, suite: str | None = None) -> str:
    """The paper's column label of a domain (its name when the registry does not know it)."""
    for lookup_suite in (suite, None):
        try:
            return get_domain(name, lookup_suite).label
        except HarnessError:
            continue
    return name


def is_source(name: str) -> bool:
    try:
        return get_domain(name).is_source
    except UnknownNameError:
        return False
