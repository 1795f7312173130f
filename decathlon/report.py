"""Paper-style reports of a results store: tables, policy figures, submission files.

Everything here is a pure function of the store (:mod:`decathlon.store`: ``jobs`` with one row per
finished job, ``policy`` in long format) plus, for submissions and intervals, the ``predictions.json``
each job wrote in its run directory. :func:`render_all` writes everything under ``<out>/reports/`` atomically.

Tables follow the paper: one row per method (registry order, printed with the paper's row name,
:attr:`decathlon.methods.Method.label`; the CSV keeps the registry name), one column per domain in the
paper's order (the source domain ``imagenet12`` included), then the mean over the domains, the Decathlon
score S, #par and, when the store records it, GFLOPs per image. Where the run directories hold labelled
predictions, every accuracy, Mean and S gets a 95 % bootstrap interval over the test images
(:mod:`decathlon.stats`; printed as ``± half-width`` with one seed, the seed spread staying with several),
and a second table (``<group>_vs_finetune``) gives every method's paired difference from this run's
``finetune`` with its significance. The best value of each accuracy column, Mean and S is bold.
Results of different configurations are never averaged together: there is one table per (suite, table
family, protocol, configuration), the configuration being every setting but the seed (``config_hash``);
its caption names every setting that differs from the suite's defaults. On the real
Decathlon the S baseline is the published Fine-tuning model; on every other suite it is this run's own
``finetune`` results. A job evaluated on a split without labels has no accuracy: its cell is empty with a
footnote, and it is left out of means and S (marked partial).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from decathlon.errors import DataError
from decathlon.explorer import explorer_outputs
from decathlon.figures import policy_outputs, render_figures, save_figures, tradeoff_figure
from decathlon.groups import (  # noqa: F401  (defined there since figures.py needs them too; importable here)
    FAMILIES,
    FAMILY_TITLES,
    GROUP_COLUMNS,
    NEUTRAL_SETTINGS,
    PATH_SETTINGS,
    GroupKey,
    domain_family,
    domain_label,
    group_jobs,
    is_source,
    settings_differences,
    suite_defaults,
    table_domains,
    with_family,
)
from decathlon.io import atomic_write_json, atomic_write_text
from decathlon.published import BASELINE_DESCRIPTION, FINETUNE_BASELINE, PublishedRow, published_rows
from decathlon.score import s_score, score_submission, write_submission
from decathlon.stats import (
    CONFIDENCE,
    RESAMPLES,
    Difference,
    Interval,
    domain_seed,
    paired_difference,
    percentile_interval,
    resampled_means,
    s_samples,
)

BASELINE_METHOD = "finetune"  # the method whose results are the S baseline on non-real suites
OWNED_FOLDERS = ("tables", "figures", "submissions")  # under reports/: stale files here are removed
REPORT_SUFFIXES = (".md", ".tex", ".csv", ".png", ".pdf", ".json", ".zip")  # what render_all writes
PARTIAL = "*"  # marks a mean / S / #par computed over fewer domains than the table has
UNLABELLED = "†"  # marks a cell whose evaluation split has no labels (no accuracy)
SIGNIFICANT = "‡"  # marks a difference whose paired bootstrap interval excludes 0
GFLOPS_COLUMN = "gflops_per_image"  # the store's inference cost (GFLOPs per image at evaluation), if any
MISSING_MD, MISSING_TEX = "–", "--"


# ----------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One table entry: a mean, its spread over seeds (None with one seed), its bootstrap interval over
    test images (None without predictions to resample), how it is printed.

    Printed as ``mean ± std`` with several seeds, else ``mean ± half-width`` of the interval when there is
    one, else the mean alone; the exact interval bounds go to the CSV.
    """

    mean: float | None = None
    std: float | None = None  # sample std over seeds, only when more than one seed
    n: int = 0  # seeds behind the mean
    digits: int = 2
    signed: bool = False  # print "+0.45" (differences)
    mark: str = ""  # footnote marker (PARTIAL, UNLABELLED, SIGNIFICANT)
    ci: Interval | None = None  # 95 % bootstrap interval over test images (decathlon.stats)
    bold: bool = False  # the best value of its column (:func:`bold_best`)

    def number(self, value: float) -> str:
        return f"{value:+.{self.digits}f}" if self.signed else f"{value:.{self.digits}f}"

    def body(self, *, pm: str = " ± ") -> str:
        """The printed number and its spread, without mark or emphasis ('' when there is no number)."""
        if self.mean is None:
            return ""
        out = self.number(self.mean)
        if self.std is not None:
            out += pm + f"{self.std:.{self.digits}f}"
        elif self.ci is not None:
            out += pm + f"{self.ci.half_width:.{self.digits}f}"
        return out

    def text(self, *, pm: str = " ± ", missing: str = MISSING_MD,
             strong: tuple[str, str] | None = None) -> str:
        """The cell as printed: `missing` for no number; `strong` (opening, closing) wraps a bold body."""
        if self.mean is None:
            return missing + self.mark
        body = self.body(pm=pm)
        if self.bold and strong is not None:
            body = strong[0] + body + strong[1]
        return body + self.mark


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
    labels: Mapping[str, str] = field(default_factory=dict)  # row key -> printed name (default: the key)

    def label(self, key: str) -> str:
        """The printed name of a row (the paper's name of a method; its registry name is the row key)."""
        return self.labels.get(key, key)


# ------------------------------------------------------------------------------------------ formatting

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "−": "-", "`": "",
    "†": r"\textdagger{}", "‡": r"\textdaggerdbl{}",
}
# The packages a .tex table needs beyond core LaTeX, named in a comment at its top
LATEX_PACKAGES = ("booktabs",)  # \toprule, \midrule, \bottomrule


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
    for key, cells in table.rows:
        texts = [c.text(strong=("**", "**")) for c in cells]
        lines.append("| " + " | ".join([_md_escape(table.label(key))] + texts) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


def _latex_cell(cell: Cell) -> str:
    if cell.mean is None:
        return MISSING_TEX + latex_escape(cell.mark)
    body = latex_escape(cell.body())
    return (rf"\textbf{{{body}}}" if cell.bold else body) + latex_escape(cell.mark)


def to_latex(table: Table) -> str:
    """A booktabs table environment, ASCII only, every text field escaped; a comment at its top names the
    packages it needs (:data:`LATEX_PACKAGES`)."""
    spec = "l" + "r" * len(table.columns)
    header = " & ".join(latex_escape(h) for h in (table.row_header, *table.columns))
    packages = ", ".join(LATEX_PACKAGES)
    lines = [f"% Needs \\usepackage{{{packages}}} in the preamble; everything else is core LaTeX.",
             r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.caption)}}}",
             rf"\label{{tab:{table.name}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule", header + r" \\",
             r"\midrule"]
    for i, (key, cells) in enumerate(table.rows):
        if i in table.rules:
            lines.append(r"\midrule")
        texts = [latex_escape(table.label(key))] + [_latex_cell(c) for c in cells]
        lines.append(" & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines += ["", r"\smallskip", r"{\footnotesize " + r" \\ ".join(latex_escape(n) for n in table.notes)
                  + "}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(round(float(value), 6))


def to_csv(table: Table) -> str:
    """Machine-readable numbers: the row key (a method's registry name) and its printed label, then per
    column the mean, its std over seeds and its bootstrap interval (``ci_low``, ``ci_high``), each empty
    when absent, at full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([table.row_header.lower(), "label"]
                    + [x for c in table.columns for x in (c, f"{c} std", f"{c} ci_low", f"{c} ci_high")])
    for key, cells in table.rows:
        values = []
        for c in cells:
            values += [_csv_number(c.mean), _csv_number(c.std), _csv_number(c.ci and c.ci.low),
                       _csv_number(c.ci and c.ci.high)]
        writer.writerow([key, table.label(key), *values])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- grouping


def method_order(present: Iterable[str], registry: Sequence[str] | None = None) -> list[str]:
    """Methods in registry order (default: :func:`decathlon.methods.all_methods`), unknown ones last."""
    if registry is None:
        from decathlon.methods import all_methods  # imports the method modules; only needed here

        registry = list(all_methods())
    present = set(present)
    return [m for m in registry if m in present] + sorted(present - set(registry))


def method_labels(names: Iterable[str]) -> dict[str, str]:
    """The paper's row name of each method (:attr:`decathlon.methods.Method.label`); a method without a
    label, or one the registry does not know, keeps its registry name."""
    from decathlon.methods import all_methods  # imports the method modules; only needed here

    methods = all_methods()
    return {name: (methods[name].label if name in methods else "") or name for name in names}


# ------------------------------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class Outcomes:
    """Which labelled evaluation images one job classified correctly, sorted by image id."""

    path: Path  # the predictions.json they were read from (named in errors)
    image_ids: np.ndarray  # (n,) image ids (ints, or the relative paths of folder-layout datasets)
    correct: np.ndarray  # (n,) bool


def read_outcomes(run_dir: Path, top1: object = None) -> Outcomes | None:
    """Per-image correctness from a run directory's ``predictions.json`` (its ``predicted`` class indices
    against its ``labels``; images labelled -1 are unlabelled and left out).

    None when there is nothing to resample: no predictions file, one written before labels were recorded,
    or no labelled image. DataError for a malformed file, and when its accuracy differs from the job's
    `top1` (%, from result.json) by more than 1e-6 points: the two files then describe different runs.
    """
    if not (run_dir / "predictions.json").is_file():
        return None
    data = _predictions(run_dir)
    path = run_dir / "predictions.json"
    if data.get("labels") is None:
        return None
    ids, predicted, labels = data["image_ids"], data["predicted"], data["labels"]
    if not isinstance(labels, list) or len(labels) != len(ids):
        raise DataError(f"{path}: {len(ids)} image_ids but labels {type(labels).__name__} of "
                        f"{len(labels) if isinstance(labels, list) else '?'}; expected one label per image")
    try:
        labels_a, predicted_a = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: 'predicted' and 'labels' must be lists of class indices") from None
    keep = labels_a >= 0
    if not keep.any():
        return None
    ids_a = np.asarray([i for i, k in zip(ids, keep, strict=True) if k])
    order = np.argsort(ids_a, kind="stable")
    correct = (predicted_a[keep] == labels_a[keep])[order]
    accuracy = 100.0 * float(correct.mean())
    try:
        recorded = float(top1)  # NaN or None: the store has no accuracy to compare with
    except (TypeError, ValueError):
        recorded = math.nan
    if not math.isnan(recorded) and abs(accuracy - recorded) > 1e-6:
        raise DataError(f"{path}: its predictions are {accuracy:.4f}% correct but result.json records top1 "
                        f"{recorded:.4f}%; expected the predictions of the evaluation that gave top1")
    return Outcomes(path, ids_a[order], correct)


def read_evidence(out_dir: str | Path, jobs: pd.DataFrame) -> dict[str, Outcomes]:
    """:class:`Outcomes` by ``job_id`` for every job of the store with labelled predictions in its run
    directory (found as :func:`run_dir_of` finds it); jobs without are left out (their cells get no
    interval). DataError for malformed or inconsistent predictions files."""
    if jobs.empty or not {"job_id", "run_dir"} <= set(jobs.columns):
        return {}
    out = {}
    for job in jobs.to_dict("records"):
        outcomes = read_outcomes(run_dir_of(Path(out_dir), job), job.get("top1"))
        if outcomes is not None:
            out[str(job["job_id"])] = outcomes
    return out


@dataclass(frozen=True)
class Resamples:
    """The bootstrap of one table group (:mod:`decathlon.stats`): per (method, domain) the accuracy (%)
    of every resample, paired within a domain (the same resampled images for every method)."""

    accuracy: Mapping[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (RESAMPLES,) each
    unresampled: int = 0  # labelled jobs of the group without predictions to resample

    def of(self, method: str, domains: Iterable[str]) -> dict[str, np.ndarray]:
        """A method's resampled accuracies by domain, for the `domains` it has them."""
        return {d: self.accuracy[(method, d)] for d in domains if (method, d) in self.accuracy}


def _seed_averaged(outcomes: Sequence[Outcomes], reference: Outcomes | None) -> np.ndarray:
    """Per image, the fraction of a method's seeds that classify it correctly; DataError when a job's
    test images differ from the `reference` job's (every method of a table is tested on the same)."""
    first = reference or outcomes[0]
    for o in outcomes:
        if o.image_ids.shape != first.image_ids.shape or not np.array_equal(o.image_ids, first.image_ids):
            raise DataError(f"{o.path}: its {len(o.image_ids)} labelled test images are not those of "
                            f"{first.path} ({len(first.image_ids)}); expected the same test images for "
                            "every job of a table")
    return np.mean([o.correct for o in outcomes], axis=0)


def group_resamples(rows: pd.DataFrame, evidence: Mapping[str, Outcomes],
                    domains: Sequence[str]) -> Resamples:
    """Resample each domain's test images :data:`decathlon.stats.RESAMPLES` times (seeded by the domain's
    name) and give every method with predictions for all its labelled seeds its resampled accuracies.
    `rows`: the group's deduplicated jobs; `evidence`: :func:`read_evidence`."""
    accuracy: dict[tuple[str, str], np.ndarray] = {}
    if "job_id" not in rows:
        return Resamples()
    labelled = rows[pd.to_numeric(rows["top1"], errors="coerce").notna()]
    jobs = {(str(d), str(m)): [str(j) for j in sel["job_id"]]
            for (d, m), sel in labelled.groupby(["domain", "method"], sort=True)}
    unresampled = sum(j not in evidence for ids in jobs.values() for j in ids)
    for domain in domains:
        scores: dict[str, np.ndarray] = {}
        reference = None
        for (d, method), ids in jobs.items():
            if d != domain or any(j not in evidence for j in ids):
                continue
            found = [evidence[j] for j in ids]
            scores[method] = _seed_averaged(found, reference)
            reference = reference or found[0]
        if scores:
            means = resampled_means(np.stack(list(scores.values())), seed=domain_seed(domain))
            accuracy.update({(m, domain): 100.0 * row for m, row in zip(scores, means, strict=True)})
    return Resamples(accuracy, unresampled)


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


def baseline_accuracy(baseline: Baseline) -> Mapping[str, float]:
    """The accuracies (%) S is scored against: the published Fine-tuning, or this run's own."""
    return FINETUNE_BASELINE if baseline.accuracy is None else baseline.accuracy


def s_cell(accuracy: Mapping[str, float], baseline: Baseline) -> Cell:
    """The S-score of per-domain mean accuracies (%), marked partial when baseline domains are missing."""
    if not baseline.usable or not accuracy:
        return EMPTY
    reference = baseline_accuracy(baseline)
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


def gflops_cell(rows: pd.DataFrame, domains: Sequence[str]) -> Cell:
    """Inference cost: GFLOPs per image at evaluation (the store's :data:`GFLOPS_COLUMN`), averaged over
    seeds per domain, then over the target domains (the source domain is left out). A domain without a
    measurement makes the value partial; none at all is missing, never 0."""
    per_domain = []
    for d in domains:
        if is_source(d):
            continue
        values = pd.to_numeric(rows.loc[rows["domain"] == d, GFLOPS_COLUMN], errors="coerce").dropna()
        per_domain.append(float(values.mean()) if len(values) else None)
    return _mean_cell(per_domain, digits=3)


def with_interval(cell: Cell, samples: np.ndarray | None) -> Cell:
    """`cell` with the percentile interval of its bootstrap `samples` (unchanged without either)."""
    if samples is None or cell.mean is None:
        return cell
    return dataclasses.replace(cell, ci=percentile_interval(samples))


def mean_resamples(samples: Mapping[str, np.ndarray], accuracy: Mapping[str, float]) -> np.ndarray | None:
    """The Mean column of every resample: the mean over the domains of `accuracy` (those with a number),
    when every one of them has resamples (else None)."""
    if not accuracy or any(d not in samples for d in accuracy):
        return None
    return np.mean([samples[d] for d in accuracy], axis=0)


def s_resamples(samples: Mapping[str, np.ndarray], accuracy: Mapping[str, float],
                baseline: Baseline) -> np.ndarray | None:
    """The S of every resample against `baseline` (held fixed), when every domain that counts in the S of
    `accuracy` has resamples (else None)."""
    reference = baseline_accuracy(baseline)
    scored = [d for d in accuracy if d in reference]
    if not baseline.usable or not scored or any(d not in samples for d in scored):
        return None
    return s_samples({d: samples[d] for d in scored}, reference)


def bold_best(body: Sequence[tuple[str, Sequence[Cell]]], columns: Iterable[int]) -> list[tuple[str, tuple]]:
    """Bold, in each of `columns`, the cells of the highest value as printed (ties all bold). Cells with
    a mark (partial, unlabelled) do not compete, and a column with fewer than two distinct values gets
    no bold (nothing to tell apart)."""
    rows = [(key, list(cells)) for key, cells in body]
    for j in columns:
        values = {i: float(cells[j].number(cells[j].mean)) for i, (_, cells) in enumerate(rows)
                  if cells[j].mean is not None and not cells[j].mark}
        if len(set(values.values())) < 2:
            continue
        best = max(values.values())
        for i, value in values.items():
            if value == best:
                rows[i][1][j] = dataclasses.replace(rows[i][1][j], bold=True)
    return [(key, tuple(cells)) for key, cells in rows]


def _caption(key: GroupKey, baseline: Baseline, eval_split: str, resamples: Resamples,
             gflops: bool) -> str:
    if resamples.accuracy:
        cells = (f"Cells: mean ± sample std over seeds with several seeds; with one seed, ± the half-width "
                 f"of its {CONFIDENCE:.0%} bootstrap interval over the test images ({RESAMPLES} resamples, "
                 "seeded; exact bounds in the CSV). Mean and S: ± the half-width of their interval "
                 "(every domain resampled, seeds averaged per image).")
    else:
        cells = "Cells: mean ± sample std over seeds (std only with more than one seed)."
    return (f"Suite `{key.suite}`, protocol {key.protocol} (top-1 accuracy, %, on {eval_split}), "
            f"preset {key.preset}, schedule {key.schedule}. {key.settings_text} {cells} Mean: over the "
            f"domains. S: Decathlon score against {baseline.description}. #par: parameters for all domains, "
            "in backbones." + (" GFLOPs: inference cost per image at evaluation (with the method's actual "
                               "routing), mean over the target domains." if gflops else "")
            + " Bold: the highest value of each accuracy column, Mean and S (equal printed values all "
              "bold; partial values do not compete; no bold where all values are equal).")


def resample_group(key: GroupKey, rows: pd.DataFrame, evidence: Mapping[str, Outcomes] | None) -> Resamples:
    """The paired bootstrap of one group's table (:func:`group_resamples`); empty without `evidence`."""
    if evidence is None:
        return Resamples()
    rows, _ = dedupe(rows)
    return group_resamples(rows, evidence, table_domains(key, rows["domain"].unique()))


def _interval_notes(resamples: Resamples) -> list[str]:
    if not resamples.unresampled:
        return []
    return [f"No interval for {resamples.unresampled} labelled job(s) whose run directory has no "
            "`predictions.json` with labels to resample."]


def results_table(key: GroupKey, rows: pd.DataFrame, *, registry: Sequence[str] | None = None,
                  resamples: Resamples | None = None) -> Table:
    """The paper's table for one group: methods x domains, mean, S, #par (and GFLOPs when the store has
    the column), with bootstrap intervals from `resamples` (:func:`resample_group`) and the best value
    of each accuracy column, Mean and S in bold (:func:`bold_best`). Rows are keyed by registry name and
    printed with the paper's names (:func:`method_labels`)."""
    rows, dropped = dedupe(rows)
    resamples = resamples or Resamples()
    domains = table_domains(key, rows["domain"].unique())
    stats = seed_stats(rows)
    baseline = choose_baseline(key, stats, domains)
    eval_split = str(rows["eval_split"].iloc[0]) if "eval_split" in rows else key.protocol.split("->")[1]
    gflops = GFLOPS_COLUMN in rows.columns
    body = []
    any_partial = False
    methods = method_order(rows["method"].unique(), registry)
    for method in methods:
        samples = resamples.of(method, domains)
        cells = [with_interval(stats.get((method, d), EMPTY), samples.get(d)) for d in domains]
        accuracy = {d: c.mean for d, c in zip(domains, cells, strict=True) if c.mean is not None}
        mean = with_interval(_mean_cell([c.mean for c in cells]), mean_resamples(samples, accuracy))
        s = with_interval(s_cell(accuracy, baseline), s_resamples(samples, accuracy, baseline))
        own = rows[rows["method"] == method]
        costs = [par_cell(own, domains)] + ([gflops_cell(own, domains)] if gflops else [])
        any_partial |= PARTIAL in "".join(c.mark for c in (mean, s, *costs))
        body.append((method, (*cells, mean, s, *costs)))
    notes = list(baseline.notes) + unlabelled_note(c for _, cells in body for c in cells)
    if any_partial:
        notes.append(f"`{PARTIAL}` marks values over the domains present only (S counts a missing domain "
                     "as 0 points).")
    if dropped:
        notes.append(f"{dropped} duplicate result(s) (same method, domain and seed) ignored; the last kept.")
    notes += _interval_notes(resamples)
    return Table(
        name=key.slug, title=f"{FAMILY_TITLES[key.family]} ({key.suite}, {key.protocol})",
        caption=_caption(key, baseline, eval_split, resamples, gflops),
        columns=(*(domain_label(d, key.suite) for d in domains), "Mean", "S", "#par")
        + (("GFLOPs",) if gflops else ()),
        rows=tuple(bold_best(body, range(len(domains) + 2))), notes=tuple(notes),
        labels=method_labels(methods),
    )


def _difference_cell(difference: Difference, digits: int = 2) -> Cell:
    return Cell(difference.point, digits=digits, signed=True, ci=difference.interval,
                mark=SIGNIFICANT if difference.significant else "")


def finetune_table(key: GroupKey, rows: pd.DataFrame, resamples: Resamples, *,
                   registry: Sequence[str] | None = None) -> Table | None:
    """Every method against this run's `finetune` on the same test images, with paired bootstrap tests.

    Per domain the accuracy difference (percentage points), then the mean difference over the domains
    both have, the S difference and its two-sided p-value (:func:`decathlon.stats.paired_difference`);
    differences whose 95 % interval excludes 0 are marked :data:`SIGNIFICANT`. None when no method has
    resamples in a domain where `finetune` has them (no predictions to resample).
    """
    rows, _ = dedupe(rows)
    domains = table_domains(key, rows["domain"].unique())
    base = resamples.of(BASELINE_METHOD, domains)
    methods = [m for m in method_order(rows["method"].unique(), registry)
               if m != BASELINE_METHOD and set(resamples.of(m, domains)) & set(base)]
    if not methods:
        return None
    stats = seed_stats(rows)
    baseline = choose_baseline(key, stats, domains)

    def accuracy(method: str) -> dict[str, float]:
        return {d: stats[(method, d)].mean for d in domains
                if (method, d) in stats and stats[(method, d)].mean is not None}

    base_accuracy = accuracy(BASELINE_METHOD)
    base_s, base_s_samples = s_cell(base_accuracy, baseline), s_resamples(base, base_accuracy, baseline)
    body = []
    for method in methods:
        samples, own = resamples.of(method, domains), accuracy(method)
        shared = [d for d in domains if d in samples and d in base]
        cells = [_difference_cell(paired_difference(base[d], samples[d], own[d] - base_accuracy[d]))
                 if d in shared else EMPTY for d in domains]
        mean = _difference_cell(paired_difference(
            np.mean([base[d] for d in shared], axis=0), np.mean([samples[d] for d in shared], axis=0),
            float(np.mean([own[d] - base_accuracy[d] for d in shared]))))
        if len(shared) < len(domains):
            mean = dataclasses.replace(mean, mark=PARTIAL + mean.mark)
        s, s_samples_ = s_cell(own, baseline), s_resamples(samples, own, baseline)
        s_diff, p = EMPTY, EMPTY
        if s_samples_ is not None and base_s_samples is not None and not (s.mark or base_s.mark):
            difference = paired_difference(base_s_samples, s_samples_, s.mean - base_s.mean)
            s_diff, p = _difference_cell(difference, digits=0), Cell(difference.p_value, digits=3)
        body.append((method, (*cells, mean, s_diff, p)))
    labels = method_labels([BASELINE_METHOD, *methods])
    notes = [f"`{PARTIAL}`: the mean over the domains both methods have only.", *_interval_notes(resamples)]
    return Table(
        name=f"{key.slug}_vs_finetune",
        title=f"{FAMILY_TITLES[key.family]} ({key.suite}, {key.protocol}): difference from "
              f"{labels[BASELINE_METHOD]}",
        caption=(f"Suite `{key.suite}`, protocol {key.protocol}, preset {key.preset}, "
                 f"schedule {key.schedule}. {key.settings_text} Each method minus this run's "
                 f"`{BASELINE_METHOD}` on the same test images: top-1 accuracy per domain and Mean "
                 f"(percentage points), and S against {baseline.description}. ± the half-width of the "
                 f"{CONFIDENCE:.0%} paired bootstrap interval of the difference ({RESAMPLES} resamples of "
                 "each domain's test images, the same resampled images for both methods, seeds averaged "
                 f"per image; exact bounds in the CSV). `{SIGNIFICANT}`: the interval excludes 0, a "
                 "significant difference in a two-sided paired bootstrap test at level "
                 f"{1 - CONFIDENCE:.2f} (no correction for multiple comparisons). p (S): the two-sided "
                 "paired-bootstrap p-value of the S difference."),
        columns=(*(domain_label(d, key.suite) for d in domains), "Mean", "S", "p (S)"),
        rows=tuple(body), notes=tuple(notes), labels=labels,
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
    # a registered method by its registry label, a published-only one by the paper's row name
    names = {m: published[m].label for m in methods} | {
        m: label for m, label in method_labels(methods).items() if label != m}
    labels = {f"{m} ({kind})": f"{names[m]} ({kind})" for m in methods
              for kind in ("this run", "published", "Δ")}
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
        columns=columns, rows=tuple(body), rules=tuple(rules[1:]), notes=tuple(notes), labels=labels,
    )


def build_tables(jobs: pd.DataFrame, *, registry: Sequence[str] | None = None,
                 evidence: Mapping[str, Outcomes] | None = None) -> list[Table]:
    """Every table of a store's jobs: per group the results table, the paired comparison with `finetune`
    (when `evidence`, :func:`read_evidence`, gives predictions to resample) and, on real suites, the
    comparison with the published rows. Without `evidence` the tables have no bootstrap intervals."""
    tables = []
    for key, rows in group_jobs(jobs):
        resamples = resample_group(key, rows, evidence)
        tables.append(results_table(key, rows, registry=registry, resamples=resamples))
        for table in (finetune_table(key, rows, resamples, registry=registry),
                      comparison_table(key, rows, registry=registry)):
            if table is not None:
                tables.append(table)
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


# ------------------------------------------------------------------------------------------ trade-off


def tradeoff_data(key: GroupKey, rows: pd.DataFrame, *,
                  registry: Sequence[str] | None = None) -> tuple[pd.DataFrame, str]:
    """Per method of one group (registry order): ``score`` (the table's S, or its mean accuracy over the
    domains when the group has no S baseline), ``par`` (the table's #par) and ``gflops`` (GFLOPs per
    image at evaluation, :mod:`decathlon.flops`: mean over seeds and the target domains; NaN when the
    runs did not record it). Returns the table and the score's name."""
    rows, _ = dedupe(rows)
    domains = table_domains(key, rows["domain"].unique())
    stats = seed_stats(rows)
    baseline = choose_baseline(key, stats, domains)
    score = "S (Decathlon score)" if baseline.usable else "mean top-1 accuracy (%)"
    cost = pd.to_numeric(rows["gflops_per_image"], errors="coerce") if "gflops_per_image" in rows else None
    targets = rows["domain"].map(lambda d: not is_source(d))
    out = {}
    for method in method_order(rows["method"].unique(), registry):
        cells = [stats.get((method, d), EMPTY) for d in domains]
        accuracy = {d: c.mean for d, c in zip(domains, cells, strict=True) if c.mean is not None}
        value = s_cell(accuracy, baseline) if baseline.usable else _mean_cell([c.mean for c in cells])
        mine = (rows["method"] == method) & targets
        gflops = float(cost[mine].mean()) if cost is not None and cost[mine].notna().any() else math.nan
        par = par_cell(rows[rows["method"] == method], domains).mean
        out[method] = {"score": math.nan if value.mean is None else value.mean,
                       "par": math.nan if par is None else par, "gflops": gflops}
    data = pd.DataFrame.from_dict(out, orient="index").rename_axis("method")
    data["label"] = pd.Series(method_labels(data.index))  # the paper's row names label the points
    return data, score


def tradeoff_figures(jobs: pd.DataFrame, *, registry: Sequence[str] | None = None) -> list:
    """One trade-off figure (:func:`decathlon.figures.tradeoff_figure`) per table group with at least two
    methods that have a score."""
    figures = []
    for key, rows in group_jobs(jobs):
        data, score = tradeoff_data(key, rows, registry=registry)
        if data["score"].notna().sum() >= 2:
            figures.append(tradeoff_figure(key, data, score))
    return figures


# -------------------------------------------------------------------------------------------- render


def render_all(out_dir: str | Path, store, *, chosen_domain: str | None = None,
               registry: Sequence[str] | None = None, workers: int | None = None,
               data_root: Path | None = None) -> list[Path]:
    """Write every table, policy figure and submission of `store` under ``<out_dir>/reports/``.

    `store` has ``jobs`` and ``policy`` DataFrames (:func:`decathlon.store.load_store`). `chosen_domain`
    limits the per-class policy figures and the policy explorer to one domain (default: every routed
    domain). Figures (:mod:`decathlon.figures`, :mod:`decathlon.explorer`) are written as PDF and PNG with
    their CSV; the README lists, instead of a figure, why a figure that would carry no information is
    left out.
    Files of an earlier rendering that this one does not produce are removed from ``tables/``,
    ``figures/`` and ``submissions/``, so they always reflect the store (other folders, such as
    ``reports/analysis/``, are left alone). `data_root`: the decathlon-1.0 folder of this command, for
    submissions of runs whose recorded data root has moved. Figures are drawn in `workers` forked
    processes (default:
    :func:`decathlon.figures.render_workers`; 1 draws them here). Returns the written paths, index
    (``reports/README.md``) last.
    """
    out_dir = Path(out_dir)
    reports = out_dir / "reports"
    # read and check everything first, so that bad input fails before any file is written
    tables = build_tables(store.jobs, registry=registry, evidence=read_evidence(out_dir, store.jobs))
    figures, notes = policy_outputs(store, chosen_domain=chosen_domain)
    explorer, explorer_notes = explorer_outputs(store, functools.partial(run_dir_of, out_dir),
                                                data_root=data_root, chosen_domain=chosen_domain)
    figures += explorer + tradeoff_figures(store.jobs, registry=registry)
    rendered = render_figures(figures, workers)
    submissions = read_submissions(out_dir, store.jobs, reports / "submissions", data_root)
    written = []
    for table in tables:
        written += write_table(table, reports / "tables")
    figure_paths = save_figures(figures, rendered, reports / "figures")
    written += figure_paths
    for submission in submissions:
        written += write_submission_files(submission)
    index = index_markdown(tables, figure_paths, written, reports, notes=notes + explorer_notes)
    written.append(atomic_write_text(reports / "README.md", index))
    _remove_stale(reports, written)
    return written


def index_markdown(tables: Sequence[Table], figures: Sequence[Path], written: Sequence[Path],
                   reports: Path, *, notes: Sequence[str] = ()) -> str:
    """The reports' front page: every table inline, every figure linked (PNG shown, PDF beside it), the
    figures left out with their reason (`notes`), the submission files listed."""
    parts = ["# Results", ""]
    if not tables:
        parts += ["The results store has no finished jobs yet.", ""]
    for table in tables:
        parts += [to_markdown(table)]
    pngs = [p for p in figures if p.suffix == ".png"]
    if pngs or notes:
        parts += ["## Figures", "", "Each figure as PNG (shown) and vector PDF, beside the CSV of its data.",
                  ""]
        for png in pngs:
            link = png.relative_to(reports).as_posix()
            parts += [f"![{png.stem}]({link}) ([PDF]({link[:-len('.png')]}.pdf))", ""]
    if notes:
        parts += ["Not drawn (no information):", ""] + [f"- {note}" for note in notes] + [""]
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
