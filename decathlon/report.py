"""Paper-style reports of a results store: tables, policy figures, submission files.

Everything here is a pure function of the store (:mod:`decathlon.store`: ``jobs`` with one row per
finished job, ``policy`` in long format) plus, for submissions, the ``predictions.json`` each job wrote in
its run directory. :func:`render_all` writes everything under ``<out>/reports/`` atomically.

Tables follow the paper: one row per method (registry order), one column per domain in the paper's
order (the source domain ``imagenet12`` included), then the mean over the domains, the Decathlon score
S and #par. Results of different configurations are never averaged together: there is one table per
(suite, table family, protocol, configuration), the configuration being every setting but the seed
(``config_hash``); its caption names every setting that differs from the suite's defaults. On the real
Decathlon the S baseline is the published Fine-tuning model; on every other suite it is this run's own
``finetune`` results. A job evaluated on a split without labels has no accuracy: its cell is empty with a
footnote, and it is left out of means and S (marked partial).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from decathlon.config import PROTOCOLS, RunConfig
from decathlon.domains import DECATHLON_COLUMNS, EXTRA_COLUMNS, SUITES, get_domain, suite_domains
from decathlon.errors import DataError, HarnessError, UnknownNameError
from decathlon.io import atomic_write_json, atomic_write_text
from decathlon.published import BASELINE_DESCRIPTION, FINETUNE_BASELINE, PublishedRow, published_rows
from decathlon.score import s_score, score_submission, write_submission
from decathlon.suites import get_suite

FAMILIES = ("decathlon", "extra", "other")  # table families: the Decathlon table, the extra-dataset table
FAMILY_TITLES = {"decathlon": "Visual Decathlon", "extra": "Extra datasets", "other": "Other domains"}
BASELINE_METHOD = "finetune"  # the method whose results are the S baseline on non-real suites
OWNED_FOLDERS = ("tables", "figures", "submissions")  # under reports/: stale files here are removed
REPORT_SUFFIXES = (".md", ".tex", ".csv", ".png", ".json", ".zip")  # the kinds of file render_all writes
GROUP_COLUMNS = ("suite", "family", "protocol", "preset", "schedule", "config_hash")
PARTIAL = "*"  # marks a mean / S / #par computed over fewer domains than the table has
UNLABELLED = "†"  # marks a cell whose evaluation split has no labels (no accuracy)
MISSING_MD, MISSING_TEX = "–", "--"
# Settings that name files rather than configure training: where the weights live is not a setting (runs
# of different weights still get tables of their own: their config hashes differ).
PATH_SETTINGS = ("pretrained", "pretrained_deep", "weights_digest")  # which weights, by path or content
# Settings that do not change what is computed (loading, placement, logging, kernels and random streams of
# the same recipe): a run differing from the reference recipe only in these is still compared with the
# published numbers.
NEUTRAL_SETTINGS = ("num_workers", "eval_batch_size", "device", "log_every", "cache", "channels_last",
                    "compile", "fused_sgd", "device_rng", "cudnn_benchmark", "deterministic")


# ----------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One table entry: a mean, its spread over seeds (None with one seed), how it is printed."""

    mean: float | None = None
    std: float | None = None  # sample std over seeds, only when more than one seed
    n: int = 0  # seeds behind the mean
    digits: int = 2
    signed: bool = False  # print "+0.45" (differences)
    mark: str = ""  # footnote marker (PARTIAL)

    def number(self, value: float) -> str:
        return f"{value:+.{self.digits}f}" if self.signed else f"{value:.{self.digits}f}"

    def text(self, *, pm: str = " ± ", missing: str = MISSING_MD) -> str:
        if self.mean is None:
            return missing + self.mark
        out = self.number(self.mean)
        if self.std is not None:
            out += pm + f"{self.std:.{self.digits}f}"
        return out + self.mark


EMPTY = Cell()


@dataclass(frozen=True)
class Table:
    """A rendered-format-independent table: row label + one Cell per column."""

    name: str  # file stem under reports/tables/
    title: str
    caption: str  # plain text; names protocol, preset, schedule and the S baseline
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]
    notes: tuple[str, ...] = ()
    rules: tuple[int, ...] = ()  # row indices that get a horizontal rule above them (between methods)
    row_header: str = "Method"


# ------------------------------------------------------------------------------------------ formatting

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "−": "-", "`": "",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and the few non-ASCII symbols the reports use)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: title, caption, the table (numbers right-aligned), notes."""
    header = [table.row_header, *table.columns]
    lines = [f"### {table.title}", "", table.caption, "",
             "| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "---|" + "---:|" * len(table.columns)]
    for label, cells in table.rows:
        lines.append("| " + " | ".join([_md_escape(label)] + [c.text() for c in cells]) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    """A booktabs table environment; every text field escaped."""
    spec = "l" + "r" * len(table.columns)
    header = " & ".join(latex_escape(h) for h in (table.row_header, *table.columns))
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.caption)}}}",
             rf"\label{{tab:{table.name}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule", header + r" \\",
             r"\midrule"]
    for i, (label, cells) in enumerate(table.rows):
        if i in table.rules:
            lines.append(r"\midrule")
        texts = [latex_escape(label)] + [latex_escape(c.text(missing=MISSING_TEX)) for c in cells]
        lines.append(" & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines += ["", r"\smallskip", r"{\footnotesize " + r" \\ ".join(latex_escape(n) for n in table.notes)
                  + "}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Machine-readable numbers: per column the mean and its std (empty when absent), full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([table.row_header.lower()] + [x for c in table.columns for x in (c, f"{c} std")])
    for label, cells in table.rows:
        values = []
        for c in cells:
            values += ["" if c.mean is None else repr(round(c.mean, 6)),
                       "" if c.std is None else repr(round(c.std, 6))]
        writer.writerow([label, *values])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- grouping


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


def method_order(present: Iterable[str], registry: Sequence[str] | None = None) -> list[str]:
    """Methods in registry order (default: :func:`decathlon.methods.all_methods`), unknown ones last."""
    if registry is None:
        from decathlon.methods import all_methods  # imports the method modules; only needed here

        registry = list(all_methods())
    present = set(present)
    return [m for m in registry if m in present] + sorted(present - set(registry))


# ------------------------------------------------------------------------------------------ statistics


def dedupe(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One result per (method, domain, seed): the last one in store order; returns how many were dropped."""
    kept = rows.drop_duplicates(["method", "domain", "seed"], keep="last")
    return kept, len(rows) - len(kept)


def seed_stats(rows: pd.DataFrame, column: str = "top1") -> dict[tuple[str, str], Cell]:
    """Mean ± sample std over seeds of `column` per (method, domain). Missing values (an evaluation split
    without labels) are no number: a (method, domain) with none left is an empty cell marked
    :data:`UNLABELLED`, never 0."""
    out = {}
    for (method, domain), values in rows.groupby(["method", "domain"], sort=False)[column]:
        values = pd.to_numeric(values, errors="coerce").dropna()
        n = len(values)
        if not n:
            out[(str(method), str(domain))] = Cell(mark=UNLABELLED)
            continue
        std = float(values.std(ddof=1)) if n > 1 else None
        out[(str(method), str(domain))] = Cell(float(values.mean()), std, n)
    return out


def unlabelled_note(cells: Iterable[Cell]) -> list[str]:
    """The footnote of :data:`UNLABELLED` cells, when a table has any."""
    if not any(c.mean is None and c.mark == UNLABELLED for c in cells):
        return []
    return [f"`{UNLABELLED}`: evaluated on a split without labels (e.g. only `<domain>_test_stripped.json`): "
            "predictions and `results.json` are written, but there is no accuracy; left out of Mean and S."]


def _mean_cell(values: Sequence[float | None], digits: int = 2, signed: bool = False) -> Cell:
    present = [v for v in values if v is not None]
    if not present:
        return EMPTY
    mark = PARTIAL if len(present) < len(values) else ""
    return Cell(sum(present) / len(present), digits=digits, signed=signed, mark=mark)


@dataclass(frozen=True)
class Baseline:
    """The S-score baseline of a table: accuracies (None = the published Fine-tuning) and its name."""

    accuracy: Mapping[str, float] | None
    description: str
    usable: bool = True
    notes: tuple[str, ...] = field(default=())


def choose_baseline(key: GroupKey, stats: Mapping[tuple[str, str], Cell], domains: Sequence[str]) -> Baseline:
    """Published Fine-tuning on the real Decathlon; this run's own `finetune` per-domain means elsewhere."""
    if key.is_real_decathlon:
        return Baseline(None, BASELINE_DESCRIPTION)
    own = {d: stats[(BASELINE_METHOD, d)].mean for d in domains
           if (BASELINE_METHOD, d) in stats and stats[(BASELINE_METHOD, d)].mean is not None}
    if not own:
        return Baseline({}, f"none (no `{BASELINE_METHOD}` results in this run)", usable=False,
                        notes=(f"S is left blank: this run has no `{BASELINE_METHOD}` results to serve as "
                               "the S-score baseline.",))
    notes = []
    perfect = [d for d, acc in own.items() if acc >= 100.0]
    if perfect:
        # Emax = 0 there: the scorer's limit gives 1000 points to a perfect result and 0 otherwise
        notes.append(f"`{BASELINE_METHOD}` is at 100% on {', '.join(perfect)}: a method scores 1000 points "
                     "there when also perfect, else 0.")
    unscored = [d for d in domains if d not in own]
    if unscored:
        notes.append(f"not in S (no `{BASELINE_METHOD}` accuracy: not run, or no labels): "
                     + ", ".join(unscored))
    accuracy = dict(own)
    return Baseline(accuracy, f"this run's own `{BASELINE_METHOD}` results (per-domain mean over seeds)",
                    notes=tuple(notes))


def s_cell(accuracy: Mapping[str, float], baseline: Baseline) -> Cell:
    """The S-score of per-domain mean accuracies (%), marked partial when baseline domains are missing."""
    if not baseline.usable or not accuracy:
        return EMPTY
    reference = FINETUNE_BASELINE if baseline.accuracy is None else baseline.accuracy
    scored = {d: a for d, a in accuracy.items() if d in reference}
    if not scored:
        return EMPTY
    result = s_score(scored, baseline=dict(reference))
    return Cell(float(result.total), digits=0, mark=PARTIAL if result.missing else "")


def par_cell(rows: pd.DataFrame, domains: Sequence[str]) -> Cell:
    """#par: parameters to cover every domain of the table, in units of one backbone.

    One shared pretrained network (1) plus, per target domain, the parameters stored for it
    (``params_stored / (params_total / par)``; results written before ``params_stored`` existed count their
    ``params_trainable``), averaged over seeds; the source domain adds nothing beyond the shared network.
    This is the paper's count (Fine-tuning 10, Feature extractor ~1, PiggyBack's 1-bit masks ~1.3).
    """
    if not {"params_trainable", "params_total", "par"} <= set(rows.columns):
        return EMPTY
    per_domain = []
    for d in domains:
        sel = rows[rows["domain"] == d]
        if sel.empty:
            per_domain.append(None)
            continue
        backbone = sel["params_total"].astype(float) / sel["par"].astype(float)
        stored = sel["params_trainable"].astype(float)
        if "params_stored" in sel:
            stored = sel["params_stored"].astype(float).fillna(stored)
        per_domain.append(0.0 if is_source(d) else float((stored / backbone).mean()))
    present = [v for v in per_domain if v is not None]
    if not present or any(math.isnan(v) for v in present):
        return EMPTY
    return Cell(1.0 + sum(present), digits=2, mark=PARTIAL if len(present) < len(per_domain) else "")


# ----------------------------------------------------------------------------------------------- tables


def _caption(key: GroupKey, baseline: Baseline, eval_split: str) -> str:
    return (f"Suite `{key.suite}`, protocol {key.protocol} (top-1 accuracy, %, on {eval_split}), "
            f"preset {key.preset}, schedule {key.schedule}. {key.settings_text} Cells: mean ± sample std "
            f"over seeds (std only with more than one seed). Mean: over the domains. S: Decathlon score "
            f"against {baseline.description}. #par: parameters for all domains, in backbones.")


def results_table(key: GroupKey, rows: pd.DataFrame, *, registry: Sequence[str] | None = None) -> Table:
    """The paper's table for one group: methods x domains, mean, S, #par."""
    rows, dropped = dedupe(rows)
    domains = table_domains(key, rows["domain"].unique())
    stats = seed_stats(rows)
    baseline = choose_baseline(key, stats, domains)
    eval_split = str(rows["eval_split"].iloc[0]) if "eval_split" in rows else key.protocol.split("->")[1]
    body = []
    any_partial = False
    for method in method_order(rows["method"].unique(), registry):
        cells = [stats.get((method, d), EMPTY) for d in domains]
        accuracy = {d: c.mean for d, c in zip(domains, cells, strict=True) if c.mean is not None}
        mean = _mean_cell([c.mean for c in cells])
        s = s_cell(accuracy, baseline)
        par = par_cell(rows[rows["method"] == method], domains)
        any_partial |= PARTIAL in (mean.mark + s.mark + par.mark)
        body.append((method, (*cells, mean, s, par)))
    notes = list(baseline.notes) + unlabelled_note(c for _, cells in body for c in cells)
    if any_partial:
        notes.append(f"`{PARTIAL}` marks values over the domains present only (S counts a missing domain "
                     "as 0 points).")
    if dropped:
        notes.append(f"{dropped} duplicate result(s) (same method, domain and seed) ignored; the last kept.")
    return Table(
        name=key.slug, title=f"{FAMILY_TITLES[key.family]} ({key.suite}, {key.protocol})",
        caption=_caption(key, baseline, eval_split),
        columns=(*(domain_label(d, key.suite) for d in domains), "Mean", "S", "#par"),
        rows=tuple(body), notes=tuple(notes),
    )


def _published(key: GroupKey) -> Mapping[str, PublishedRow]:
    """Published rows by method for a real suite's family ({} for generated suites)."""
    return published_rows(key.family) if key.is_real else {}


def comparability(key: GroupKey) -> str | None:
    """Why a group's results may not be compared with the published rows (None: they may).

    Every published row was made with protocol trainval->test and its paper's recipe; a group is compared
    only under that protocol and with the harness's reference recipe (the suite's defaults, up to the
    settings of :data:`NEUTRAL_SETTINGS`).
    """
    protocols = {row.protocol for row in _published(key).values()}
    if key.protocol not in protocols:
        return (f"no Δ: this run's protocol is {key.protocol} ({key.protocol.split('->')[1]} accuracy of "
                f"models fit on {key.protocol.split('->')[0]}), the published rows are "
                f"{' / '.join(sorted(protocols))}")
    if key.differences is None:
        return "no Δ: the store does not record this run's settings, so its recipe cannot be checked"
    if key.recipe_differences:
        return ("no Δ: this run differs from the reference recipe in "
                + ", ".join(d for d in key.differences if d.split("=")[0] in key.recipe_differences))
    return None


def comparison_table(key: GroupKey, rows: pd.DataFrame, *,
                     registry: Sequence[str] | None = None) -> Table | None:
    """This run beside every published row of the suite's family (real suites only).

    Per method of this run that has a published row: this run / published / Δ (Δ only when
    :func:`comparability` allows it); every other published row: the published numbers alone.
    """
    published = _published(key)
    if not published:
        return None
    rows, _ = dedupe(rows)
    ran = set(rows["method"].unique())
    methods = method_order([m for m in published if m in ran], registry)
    methods += [m for m in published if m not in ran]
    domains = table_domains(key, rows["domain"].unique())
    stats = seed_stats(rows)
    baseline = choose_baseline(key, stats, domains)
    reason = comparability(key)
    with_s = key.family == "decathlon"
    body, rules = [], []
    for method in methods:
        row = published[method]
        theirs = [Cell(row.accuracy[d]) if d in row.accuracy else EMPTY for d in domains]
        theirs_row = [*theirs, _mean_cell([c.mean for c in theirs])]
        if with_s:
            theirs_row += [EMPTY if row.score is None else Cell(row.score, digits=0),
                           EMPTY if row.par is None else Cell(row.par, digits=2)]
        rules.append(len(body))
        if method not in ran:
            body.append((f"{method} (published)", tuple(theirs_row)))
            continue
        ours = [stats.get((method, d), EMPTY) for d in domains]
        ours_row = [*ours, _mean_cell([c.mean for c in ours])]
        comparable = reason is None
        delta = [Cell(o.mean - t.mean, signed=True) if comparable and None not in (o.mean, t.mean) else EMPTY
                 for o, t in zip(ours, theirs, strict=True)]
        delta_row = [*delta, _mean_cell([c.mean for c in delta], signed=True) if all(
            c.mean is not None for c in delta) else EMPTY]
        if with_s:
            accuracy = {d: c.mean for d, c in zip(domains, ours, strict=True) if c.mean is not None}
            s_ours = s_cell(accuracy, baseline)
            both = comparable and s_ours.mean is not None and row.score is not None and not s_ours.mark
            ours_row += [s_ours, par_cell(rows[rows["method"] == method], domains)]
            delta_row += [Cell(s_ours.mean - row.score, digits=0, signed=True) if both else EMPTY, EMPTY]
        body += [(f"{method} (this run)", tuple(ours_row)), (f"{method} (published)", tuple(theirs_row)),
                 (f"{method} (Δ)", tuple(delta_row))]
    columns = (*(domain_label(d, key.suite) for d in domains), "Mean") + (("S", "#par") if with_s else ())
    why = (" Δ = this run - published." if reason is None else f" {reason[0].upper()}{reason[1:]}.")
    notes = [f"`{PARTIAL}` marks values over the domains present only.",
             "Published rows: " + "; ".join(f"{m}: {published[m].label}, {published[m].source}"
                                            for m in methods) + "."]
    notes += unlabelled_note(c for _, cells in body for c in cells)
    return Table(
        name=f"{key.slug}_vs_published", title=f"{FAMILY_TITLES[key.family]}: this run vs published",
        caption=(f"Suite `{key.suite}`, protocol {key.protocol}, preset {key.preset}, "
                 f"schedule {key.schedule}. {key.settings_text} "
                 "This run (mean over seeds) beside every published row (top-1 accuracy, %, on test; "
                 f"published S and #par).{why}"),
        columns=columns, rows=tuple(body), rules=tuple(rules[1:]), notes=tuple(notes),
    )


def build_tables(jobs: pd.DataFrame, *, registry: Sequence[str] | None = None) -> list[Table]:
    """Every table of a store's jobs: per group the results table, and on real suites the comparison."""
    tables = []
    for key, rows in group_jobs(jobs):
        tables.append(results_table(key, rows, registry=registry))
        comparison = comparison_table(key, rows, registry=registry)
        if comparison is not None:
            tables.append(comparison)
    return tables


def write_table(table: Table, directory: Path) -> list[Path]:
    """Write a table as Markdown, LaTeX and CSV (atomically); returns the three paths."""
    return [atomic_write_text(directory / f"{table.name}.md", to_markdown(table)),
            atomic_write_text(directory / f"{table.name}.tex", to_latex(table)),
            atomic_write_text(directory / f"{table.name}.csv", to_csv(table))]


# ---------------------------------------------------------------------------------------- submissions


def run_dir_of(out_dir: Path, job: Mapping) -> Path:
    """A job's run directory: ``<out>/runs/<job_id>`` when present (the results folder may have been
    moved since the store was built), else the store's `run_dir`."""
    if job.get("job_id") is not None:
        local = out_dir / "runs" / str(job["job_id"])
        if local.is_dir():
            return local
    path = Path(str(job["run_dir"]))
    return path if path.is_absolute() else out_dir / path


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (expected a file written by the engine)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({e})") from None


def _predictions(run_dir: Path) -> dict:
    path = run_dir / "predictions.json"
    data = _read_json(path)
    if not isinstance(data, dict) or not {"image_ids", "predicted"} <= set(data):
        raise DataError(f"{path}: expected an object with 'image_ids' and 'predicted' lists")
    ids, predicted = data["image_ids"], data["predicted"]
    if len(ids) != len(predicted):
        raise DataError(f"{path}: {len(ids)} image_ids but {len(predicted)} predictions")
    return data


def read_predictions(run_dir: Path) -> tuple[list[int], list[int]]:
    """(image_ids, predicted class indices) from a run directory's predictions.json."""
    data = _predictions(run_dir)
    return [int(i) for i in data["image_ids"]], [int(p) for p in data["predicted"]]


def data_root_of(run_dir: Path, given: Path | None = None) -> Path:
    """The decathlon-1.0 folder of a run: the `data_root` recorded in its config.json while it is there,
    else `given` (the ``--data-root`` of this command, for a results folder moved or copied away from
    its data), else the recorded path (for the error naming it).

    The engine writes ``{"config": <RunConfig>, "code_version": ...}``; a bare RunConfig is read too.
    """
    path = run_dir / "config.json"
    config = _read_json(path)
    if isinstance(config, dict) and isinstance(config.get("config"), dict):
        config = config["config"]
    root = config.get("data_root") if isinstance(config, dict) else None
    if not root:
        if given is not None:
            return Path(given)
        raise DataError(f"{path}: no 'data_root' (needed to find the test annotations' category ids)")
    if not (Path(root) / "annotations").is_dir() and given is not None:
        return Path(given)
    return Path(root)


def category_ids(data_root: Path, domain: str) -> list[int]:
    """Category ids of a domain's test annotations, sorted: position k is class index k."""
    annotations = data_root / "annotations"
    for name in (f"{domain}_test_stripped.json", f"{domain}_test.json"):
        path = annotations / name
        if path.is_file():
            data = _read_json(path)
            if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
                raise DataError(f"{path}: expected a COCO object with a 'categories' list")
            return sorted(int(c["id"]) for c in data["categories"])
    raise DataError(f"{annotations}: no {domain}_test_stripped.json or {domain}_test.json "
                    "(expected the Decathlon test annotations)")


@dataclass(frozen=True)
class Submission:
    """Everything one submission needs, read from the run directories before anything is written."""

    key: GroupKey
    method: str
    seed: int
    predictions: Mapping[str, tuple[list[int], list[int], list[int]]]  # domain -> ids, classes, category ids
    labelled_dir: Path | None  # the annotations folder when a domain has its <domain>_test.json, else None
    baseline: Baseline
    directory: Path


def read_submission(out_dir: Path, key: GroupKey, method: str, seed: int, rows: pd.DataFrame,
                    baseline: Baseline, directory: Path, data_root: Path | None = None) -> Submission:
    """Read the predictions, data roots and test categories of one (method, seed) of a group.

    The results come from the run directories alone (category ids are recorded in predictions.json;
    runs written before that read them from the data root). The local score needs the labelled test
    annotations: under the recorded data root, or `data_root` (``--data-root``) when that has moved;
    when labelled runs cannot reach them, a warning says that the score is not written and why.
    """
    predictions, roots, labelled_runs = {}, {}, False
    for job in rows.to_dict("records"):
        run_dir = run_dir_of(out_dir, job)
        domain = str(job["domain"])
        root = data_root_of(run_dir, data_root)
        data = _predictions(run_dir)
        categories = data.get("category_ids") or category_ids(root, domain)
        predictions[domain] = ([int(i) for i in data["image_ids"]], [int(p) for p in data["predicted"]],
                               [int(c) for c in categories])
        roots[domain] = root
        labelled_runs = labelled_runs or any(int(y) >= 0 for y in data.get("labels", ()))
    folders = {root / "annotations" for root in roots.values()}
    # scored when any domain has its labelled test file (domains without one are reported as unlabelled)
    labelled = any((root / "annotations" / f"{d}_test.json").is_file() for d, root in roots.items())
    labelled_dir = folders.pop() if labelled and len(folders) == 1 else None
    missing = sorted({str(r) for r in roots.values() if not (r / "annotations").is_dir()})
    if labelled_dir is None and labelled_runs and missing:
        warnings.warn(f"{method} seed {seed}: no local score written; the labelled test annotations under "
                      f"{', '.join(missing)} are not reachable (moved data: pass --data-root)", stacklevel=2)
    return Submission(key, method, seed, predictions, labelled_dir, baseline, directory)


BASELINE_FILE = "baseline.json"  # the S baseline's accuracies beside a submission (non-published baselines)


def write_submission_files(sub: Submission) -> list[Path]:
    """results.json + zip of one (method, seed); its S baseline as ``baseline.json`` when it is not the
    published one; its local score when labelled test files exist (the same baseline as its table, so
    ``python -m decathlon score ... --baseline baseline.json`` prints the same S)."""
    results = sub.directory / "results.json"
    written = list(write_submission(sub.predictions, results, zip_path=sub.directory / "results.zip"))
    own = sub.baseline.accuracy is not None
    # the table's baseline, passed explicitly: a real-suite table scores against the published Fine-tuning
    # whatever wrote the annotation files
    baseline = dict(sub.baseline.accuracy) if own else dict(FINETUNE_BASELINE)
    if own and sub.baseline.usable:
        written.append(atomic_write_json(sub.directory / BASELINE_FILE, baseline))
    if sub.labelled_dir is not None and sub.baseline.usable:
        score = score_submission(results, sub.labelled_dir, baseline=baseline,
                                 baseline_name=sub.baseline.description)
        written.append(atomic_write_json(sub.directory / "score.json", score))
        markdown = score_markdown(sub, score)
        written.append(atomic_write_text(sub.directory / "score.md", markdown))
    return written


def score_markdown(sub: Submission, score: Mapping) -> str:
    """The local score of a submission as a small Markdown table, with its baseline and the command that
    reproduces it."""
    from decathlon.score import score_notes

    command = (f"python -m decathlon score --submission results.json --annotations {sub.labelled_dir}"
               + ("" if sub.baseline.accuracy is None else f" --baseline {BASELINE_FILE}"))
    lines = [f"### Local score of `{sub.method}` seed {sub.seed} ({sub.key.suite}, {sub.key.protocol})", "",
             "Scored against the labelled `<domain>_test.json` files; "
             f"S baseline: {sub.baseline.description}. The same score on the command line (in this "
             f"folder): `{command}`.", "",
             "| Domain | Accuracy (%) | Points |", "|---|---:|---:|"]
    for domain, entry in score["domains"].items():
        label = domain_label(domain, sub.key.suite)
        accuracy = MISSING_MD if entry["accuracy"] is None else f"{entry['accuracy']:.2f}"
        lines.append(f"| {label} | {accuracy} | {entry['points']:.1f} |")
    lines.append(f"| **S** | | **{score['score']:.1f}** |")
    if score.get("missing"):
        lines += ["", "Missing (0 points): " + ", ".join(score["missing"])]
    unpredicted = score_notes(score)
    if unpredicted:
        lines += [""] + [f"- {line}" for line in unpredicted]
    return "\n".join(lines) + "\n"


def read_submissions(out_dir: Path, jobs: pd.DataFrame, directory: Path,
                     data_root: Path | None = None) -> list[Submission]:
    """A submission for every trainval->test (method, seed) over Decathlon-layout domains.

    Each goes to ``<directory>/<group slug>/<method>_s<seed>/``; its local score uses the same S baseline
    as the group's table. Missing or malformed run files raise DataError.
    """
    out = []
    for key, rows in group_jobs(jobs):
        if key.protocol != "trainval->test" or key.family != "decathlon" or "run_dir" not in rows:
            continue
        rows, _ = dedupe(rows)
        baseline = choose_baseline(key, seed_stats(rows), table_domains(key, rows["domain"].unique()))
        for (method, seed), sel in rows.groupby(["method", "seed"], sort=True):
            target = directory / key.slug / f"{method}_s{int(seed)}"
            out.append(read_submission(out_dir, key, str(method), int(seed), sel, baseline, target,
                                       data_root))
    return out


# -------------------------------------------------------------------------------------------- render


def render_all(out_dir: str | Path, store, *, chosen_domain: str | None = None,
               registry: Sequence[str] | None = None, workers: int | None = None,
               data_root: Path | None = None) -> list[Path]:
    """Write every table, policy figure and submission of `store` under ``<out_dir>/reports/``.

    `store` has ``jobs`` and ``policy`` DataFrames (:func:`decathlon.store.load_store`). `chosen_domain`
    picks the domain of the per-class policy figure (default: the first target domain with class data).
    Files of an earlier rendering that this one does not produce are removed from ``tables/``,
    ``figures/`` and ``submissions/``, so they always reflect the store (other folders, such as
    ``reports/analysis/``, are left alone). `data_root`: the decathlon-1.0 folder of this command, for
    submissions of runs whose recorded data root has moved. Figures are drawn in `workers` forked
    processes (default:
    :func:`decathlon.figures.render_workers`; 1 draws them here). Returns the written paths, index
    (``reports/README.md``) last.
    """
    from decathlon.figures import policy_figures, render_pngs, save_figures

    out_dir = Path(out_dir)
    reports = out_dir / "reports"
    # read and check everything first, so that bad input fails before any file is written
    tables = build_tables(store.jobs, registry=registry)
    figures = policy_figures(store, chosen_domain=chosen_domain)
    pngs = render_pngs(figures, workers)
    submissions = read_submissions(out_dir, store.jobs, reports / "submissions", data_root)
    written = []
    for table in tables:
        written += write_table(table, reports / "tables")
    figure_paths = save_figures(figures, pngs, reports / "figures")
    written += figure_paths
    for submission in submissions:
        written += write_submission_files(submission)
    index = index_markdown(tables, figure_paths, written, reports)
    written.append(atomic_write_text(reports / "README.md", index))
    _remove_stale(reports, written)
    return written


def index_markdown(tables: Sequence[Table], figures: Sequence[Path], written: Sequence[Path],
                   reports: Path) -> str:
    """The reports' front page: every table inline, every figure linked, the submission files listed."""
    parts = ["# Results", ""]
    if not tables:
        parts += ["The results store has no finished jobs yet.", ""]
    for table in tables:
        parts += [to_markdown(table)]
    pngs = [p for p in figures if p.suffix == ".png"]
    if pngs:
        parts += ["## Policy figures", ""]
        parts += [f"![{p.stem}]({p.relative_to(reports).as_posix()})" for p in pngs] + [""]
    subs = [p for p in written if "submissions" in p.parts]
    if subs:
        parts += ["## Submissions", ""] + [f"- `{p.relative_to(reports).as_posix()}`" for p in subs] + [""]
    return "\n".join(parts)


def _remove_stale(reports: Path, written: Sequence[Path]) -> None:
    # only in the folders render_all owns: others (e.g. reports/analysis/) belong to other tools
    keep = {p.resolve() for p in written}
    for folder in OWNED_FOLDERS:
        for path in (reports / folder).rglob("*"):
            if path.is_file() and path.suffix in REPORT_SUFFIXES and path.resolve() not in keep:
                path.unlink()
        # folders emptied by that (e.g. a submission group of another configuration), deepest first
        for path in sorted((reports / folder).rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
