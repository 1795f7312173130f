"""Reports: paper tables (Markdown/LaTeX/CSV), S baselines, policy figures, submissions, render_all."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from decathlon.domains import DECATHLON_COLUMNS, EXTRA_COLUMNS
from decathlon.errors import DataError, UnknownNameError
from decathlon.explorer import EXPLORER_IMAGES, explorer_outputs
from decathlon.figures import class_usage, plot_class_usage, policy_figures, render_figures
from decathlon.io import atomic_write_json
from decathlon.report import (
    LATEX_PACKAGES,
    Cell,
    GroupKey,
    Outcomes,
    build_tables,
    domain_family,
    domain_label,
    latex_escape,
    par_cell,
    read_evidence,
    render_all,
    results_table,
    suite_defaults,
    to_csv,
    to_latex,
    to_markdown,
)
from decathlon.score import s_score
from decathlon.store import Store, build_store, load_store

GOLDEN = Path(__file__).parent / "golden"
REGISTRY = ("scratch", "feature-extractor", "finetune", "spottune")  # fixed row order for the goldens
PUBLISHED_FT = dict(zip(DECATHLON_COLUMNS, (59.87, 60.34, 82.12, 92.82, 55.53, 97.53, 81.41, 87.69, 96.55,
                                           51.20), strict=True))
BLOCKS = 12  # routable blocks of ResNet-26


# ------------------------------------------------------------------------------------------ fake stores


def job_row(suite: str, method: str, domain: str, seed: int, top1: float | None, *,
            protocol: str = "trainval->test", trainable: float = 1.0, **settings) -> dict:
    """One row of the store's jobs table (columns as decathlon.store writes them); the run's settings are
    the suite's defaults updated with `settings`."""
    recorded = suite_defaults(suite, domain_family(domain)) | settings
    preset, schedule = recorded["preset"], recorded["schedule"]
    config_hash = hashlib.sha1(json.dumps(recorded, sort_keys=True).encode()).hexdigest()[:10]
    slug = protocol.replace("->", "-")
    job_id = f"{suite}/{method}/{domain}/s{seed}/{slug}/{config_hash}"
    return {"suite": suite, "method": method, "domain": domain, "seed": seed, "protocol": protocol,
            "preset": preset, "schedule": schedule, "eval_split": protocol.split("->")[1],
            "config_hash": config_hash, "top1": top1, "loss": 1.0, "params_total": 2000,
            "params_trainable": int(1000 * trainable), "par": 2.0, "wall_time_s": 1.0, "images_per_s": 10.0,
            "epochs": 1, "code_version": "test", "settings": json.dumps(recorded, sort_keys=True),
            "job_id": job_id, "run_dir": f"/nonexistent/{job_id}"}


def golden_jobs() -> pd.DataFrame:
    """A fixed store: finetune at the published numbers, SpotTune over 2 seeds, a partial baseline."""
    rows = []
    for d, acc in PUBLISHED_FT.items():
        source = d == "imagenet12"
        rows.append(job_row("decathlon", "finetune", d, 0, acc, trainable=0.0 if source else 1.0))
        for seed, shift in ((0, 0.5), (1, 1.5)):
            rows.append(job_row("decathlon", "spottune", d, seed, acc + shift,
                                trainable=0.0 if source else 1.25))
    for d in ("imagenet12", "aircraft", "dtd"):  # feature extractor on three domains only: partial row
        rows.append(job_row("decathlon", "feature-extractor", d, 0, PUBLISHED_FT[d] - 20, trainable=0.01))
    return pd.DataFrame(rows)


def store_of(jobs: pd.DataFrame, policy: pd.DataFrame | None = None) -> Store:
    columns = ["job_id", "method", "domain", "seed", "kind", "class_index", "index", "value"]
    return Store(jobs=jobs, policy=policy if policy is not None else pd.DataFrame(columns=columns))


def policy_rows(job: dict, *, classes: int, blocks: int = BLOCKS) -> list[dict]:
    """Routing statistics of one job: per block, histogram 0..blocks, per class x block."""
    ident = {k: job[k] for k in ("job_id", "method", "domain", "seed")}
    rows = [dict(ident, kind="block", class_index=-1, index=b, value=b / blocks) for b in range(blocks)]
    spread = {blocks // 2: 0.75, blocks // 2 + 1: 0.25}  # a quarter of the images tune one block more
    rows += [dict(ident, kind="histogram", class_index=-1, index=c, value=spread.get(c, 0.0))
             for c in range(blocks + 1)]
    rows += [dict(ident, kind="class_block", class_index=k, index=b, value=(k + b) % 2)
             for k in range(classes) for b in range(blocks)]
    return rows


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


# ---------------------------------------------------------------------------------------------- tables


def test_cell_mean_std_formatting_over_seeds():
    jobs = pd.DataFrame([job_row("extra", "finetune", "cubs", s, acc) for s, acc in ((0, 60.0), (1, 61.0))]
                        + [job_row("extra", "finetune", "flowers", 0, 70.0)])
    table = results_table(GroupKey("extra", "extra", "trainval->test", "faithful", "faithful"), jobs,
                          registry=REGISTRY)
    (label, cells), = table.rows
    by_column = dict(zip(table.columns, cells, strict=True))
    assert label == "finetune"
    assert by_column["CUBS"].text() == "60.50 ± 0.71"  # sample std of (60, 61)
    assert by_column["CUBS"].n == 2
    assert by_column["Flowers"].text() == "70.00"  # one seed: no std
    assert by_column["WikiArt"].text() == "–"


def test_golden_decathlon_table_markdown_and_latex():
    tables = build_tables(golden_jobs(), registry=REGISTRY)
    assert [t.name for t in tables] == ["decathlon_trainval-test_faithful-faithful",
                                        "decathlon_trainval-test_faithful-faithful_vs_published"]
    rendered = {f"{t.name}.md": to_markdown(t) for t in tables}
    rendered |= {f"{t.name}.tex": to_latex(t) for t in tables}
    if os.environ.get("UPDATE_GOLDEN"):
        for name, text in rendered.items():
            (GOLDEN / name).write_text(text)
    for name, text in rendered.items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from tests/golden/{name}"


def test_golden_store_values():
    main = build_tables(golden_jobs(), registry=REGISTRY)[0]
    rows = dict(main.rows)
    cols = list(main.columns)
    assert cols[:3] == ["ImNet", "Airc.", "C100"] and cols[-3:] == ["Mean", "S", "#par"]
    assert list(rows) == ["feature-extractor", "finetune", "spottune"]  # registry order; no scratch rows
    assert rows["finetune"][cols.index("S")].text() == "2500"  # published baseline = these numbers
    # 1 shared network + 9 targets x params_trainable / (params_total / par) = 1 + 9 x 1000 / 1000
    assert rows["finetune"][cols.index("#par")].mean == pytest.approx(10.0)
    assert rows["spottune"][cols.index("ImNet")].text() == "60.87 ± 0.71"
    assert rows["feature-extractor"][cols.index("Mean")].mark == "*"
    assert rows["feature-extractor"][cols.index("DTD")].mean == pytest.approx(35.53)


def test_par_counts_stored_parameters_when_recorded():
    # a 1-bit mask per weight: 1000 trainable scores stored as 1000/32 floats (+ a 10-float classifier)
    rows = [dict(job_row("decathlon", "piggyback", d, 0, PUBLISHED_FT[d]), params_stored=1000 / 32 + 10)
            for d in DECATHLON_COLUMNS]
    rows[1]["params_stored"] = float("nan")  # a result written before params_stored: its trainable count
    cell = par_cell(pd.DataFrame(rows), DECATHLON_COLUMNS)
    # backbone = params_total / par = 1000; 8 targets store 41.25, one 1000 (trainable), the source 0
    assert cell.mean == pytest.approx(1.0 + 8 * 41.25 / 1000 + 1.0)
    assert par_cell(pd.DataFrame(rows).drop(columns="params_stored"), DECATHLON_COLUMNS).mean == \
        pytest.approx(10.0)


def test_own_finetune_baseline_on_other_suites():
    jobs = pd.DataFrame([job_row("extra", "finetune", d, s, 50 + i + s) for i, d in enumerate(EXTRA_COLUMNS)
                         for s in (0, 1)]
                        + [job_row("extra", "spottune", d, 0, 80.0) for d in EXTRA_COLUMNS])
    table, comparison = build_tables(jobs, registry=REGISTRY)  # the real extra suite: own baseline
    assert comparison.name == "extra_trainval-test_faithful-multistep_vs_published"
    assert "S" not in comparison.columns  # the paper gives no S for the extra datasets
    published_ft = dict(comparison.rows)["finetune (published)"]
    assert published_ft[0].text() == "81.86" and dict(comparison.rows)["finetune (Δ)"][0].text() == "-31.36"
    s = table.columns.index("S")
    rows = dict(table.rows)
    assert rows["finetune"][s].text() == "1250"  # 5 domains x 250 at the baseline
    assert rows["spottune"][s].mean > 1250
    assert "this run's own `finetune`" in table.caption


def test_mini_suite_finetune_row_scores_exactly_2500():
    from decathlon.domains import MINI_DOMAINS

    targets = [s.name for s in MINI_DOMAINS if s.name in DECATHLON_COLUMNS]
    jobs = pd.DataFrame([job_row("mini", "finetune", d, s, 40 + 3 * i + s) for i, d in enumerate(targets)
                         for s in (0, 1, 2)]
                        + [job_row("mini", "spottune", d, 0, 45 + 3 * i) for i, d in enumerate(targets)])
    tables = build_tables(jobs, registry=REGISTRY)
    assert [t.name for t in tables] == ["mini-decathlon_trainval-test_faithful-faithful"]  # no published
    table = tables[0]
    s = table.columns.index("S")
    assert len(targets) == 10 and dict(table.rows)["finetune"][s].text() == "2500"
    assert dict(table.rows)["spottune"][s].mean > 2500
    assert "suite `mini`" in table.caption.lower() and "own `finetune`" in table.caption


def test_missing_finetune_leaves_s_blank_with_note():
    jobs = pd.DataFrame([job_row("extra", "spottune", d, 0, 80.0) for d in EXTRA_COLUMNS])
    table = build_tables(jobs, registry=REGISTRY)[0]
    (_, cells), = table.rows
    assert cells[table.columns.index("S")].mean is None
    assert any("S is left blank" in n for n in table.notes)
    assert "S is left blank" in to_markdown(table)


def test_protocols_presets_and_families_are_never_mixed():
    suite = "unregistered-suite"  # an unknown suite: columns are the domains present
    adapters = job_row(suite, "finetune", "svhn", 1, 20.0, protocol="trainval->test", preset="adapters")
    jobs = pd.DataFrame(
        [job_row(suite, "finetune", "svhn", 0, 90.0, protocol="train->val"),
         job_row(suite, "finetune", "svhn", 0, 10.0, protocol="trainval->test"), adapters,
         job_row(suite, "finetune", "cubs", 0, 30.0, protocol="trainval->test")])
    tables = build_tables(jobs, registry=REGISTRY)
    names = [t.name for t in tables]
    assert names == ["unregistered-suite-decathlon_train-val_faithful-faithful",
                     f"unregistered-suite-decathlon_trainval-test_adapters-faithful_{adapters['config_hash']}",
                     "unregistered-suite-decathlon_trainval-test_faithful-faithful",
                     "unregistered-suite-extra_trainval-test_faithful-faithful"]
    values = [dict(t.rows)["finetune"][0].text() for t in tables]
    assert values == ["90.00", "20.00", "10.00", "30.00"]
    assert "protocol train->val" in tables[0].caption and "preset adapters" in tables[1].caption


def test_every_setting_but_the_seed_separates_tables_and_is_named():
    # two runs of one method with different epochs (or AMP) are two configurations: two tables, never
    # one row with "the last kept"; each caption names the settings that differ from the suite's defaults
    # (where the pretrained weights live is not a setting: the default group keeps the plain name)
    jobs = pd.DataFrame([job_row("mini", "finetune", "svhn", s, 40.0 + s, pretrained="/runs/backbone.pt")
                         for s in (0, 1)]
                        + [job_row("mini", "finetune", "svhn", 0, 70.0, epochs=5)]
                        + [job_row("mini", "finetune", "svhn", 0, 75.0, epochs=5, amp=True)])
    tables = build_tables(jobs, registry=REGISTRY)
    assert len(tables) == 3 and len({t.name for t in tables}) == 3
    assert "mini-decathlon_trainval-test_faithful-faithful" in {t.name for t in tables}
    by_caption = {t.caption: dict(t.rows)["finetune"][t.columns.index("SVHN")].text() for t in tables}
    default = next(c for c in by_caption if "Settings: the suite's defaults." in c)
    assert by_caption[default] == "40.50 ± 0.71"  # the two seeds of the default configuration only
    epochs = next(c for c in by_caption if "differ from the suite's defaults: epochs=5." in c)
    assert by_caption[epochs] == "70.00"
    both = next(c for c in by_caption if "amp=true, epochs=5" in c)
    assert by_caption[both] == "75.00"
    assert not any("duplicate" in n for t in tables for n in t.notes)


def test_unlabelled_test_split_is_missing_not_zero():
    # only <domain>_test_stripped.json: top1 is missing (NaN in the store), never 0 %
    jobs = pd.DataFrame([job_row("decathlon", "finetune", d, 0, acc) for d, acc in PUBLISHED_FT.items()]
                        + [job_row("decathlon", "spottune", d, 0, None if d == "dtd" else acc + 1)
                           for d, acc in PUBLISHED_FT.items()])
    jobs["top1"] = jobs["top1"].astype(float)
    table = build_tables(jobs, registry=REGISTRY)[0]
    rows, columns = dict(table.rows), list(table.columns)
    dtd = rows["spottune"][columns.index("DTD")]
    assert dtd.mean is None and dtd.text() == "–†"
    mean = rows["spottune"][columns.index("Mean")]
    assert mean.mark == "*" and mean.mean == pytest.approx(
        sum(a + 1 for d, a in PUBLISHED_FT.items() if d != "dtd") / 9)
    s = rows["spottune"][columns.index("S")]
    # dtd is left out of S (0 points, partial), not scored as 0 % accuracy (which also gives 0 points,
    # but silently): the total is that of the nine labelled domains
    nine = {d: a + 1 for d, a in PUBLISHED_FT.items() if d != "dtd"}
    assert s.mark == "*" and s.mean == pytest.approx(s_score(nine).total)
    assert any(n.startswith("`†`: evaluated on a split without labels") for n in table.notes)
    line = next(x for x in to_markdown(table).splitlines() if x.startswith("| SpotTune |"))
    assert line.split("|")[2 + columns.index("DTD")].strip() == "–†"


def test_published_comparison_only_for_the_same_protocol_and_recipe():
    def comparison(**kw):
        jobs = pd.DataFrame([job_row("decathlon", "spottune", d, 0, acc, **kw)
                             for d, acc in PUBLISHED_FT.items()])
        return build_tables(jobs, registry=REGISTRY)[1]

    def delta(table):
        return dict(table.rows)["spottune (Δ)"][table.columns.index("Airc.")]

    same = comparison()
    assert delta(same).mean == pytest.approx(60.34 - 63.91) and "Δ = this run - published" in same.caption
    val = comparison(protocol="train->val")
    assert delta(val).mean is None and "No Δ: this run's protocol is train->val" in val.caption
    longer = comparison(epochs=5)
    assert delta(longer).mean is None and "reference recipe in epochs=5" in longer.caption
    # a setting that changes nothing computed (data loading) keeps the comparison
    assert delta(comparison(num_workers=0)).mean is not None
    # every published row of the family is shown, those not run as published numbers only
    labels = [label for label, _ in same.rows]
    assert {"piggyback (published)", "parallel-adapters (published)", "lwf (published)",
            "scratch (published)"} <= set(labels)
    assert "piggyback (this run)" not in labels and len(labels) == 3 + 14
    par = dict(same.rows)["piggyback (published)"][same.columns.index("#par")]
    assert par.text() == "1.28"


def test_latex_is_escaped_booktabs():
    assert latex_escape("a_b & 5% #1 {x} ~^ -> <") == (
        r"a\_b \& 5\% \#1 \{x\} \textasciitilde{}\textasciicircum{} -\textgreater{} \textless{}")
    jobs = pd.DataFrame([job_row("extra", "my_method", "cubs", s, 50.0 + s) for s in (0, 1)])
    tex = to_latex(build_tables(jobs, registry=REGISTRY)[0])
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"my\_method & 50.50 $\pm$ 0.71 & -- &" in tex
    assert "trainval-\\textgreater{}test" in tex
    text = [line for line in tex.splitlines() if not line.startswith(r"\label")]  # labels may hold "_"
    assert all("_" not in line.replace(r"\_", "") for line in text)


def test_csv_has_mean_and_std_columns():
    jobs = pd.DataFrame([job_row("extra", "finetune", "cubs", s, 50.0 + s) for s in (0, 1)])
    rows = read_csv_text(to_csv(build_tables(jobs, registry=REGISTRY)[0]))
    assert rows[0][:7] == ["method", "label", "CUBS", "CUBS std", "CUBS ci_low", "CUBS ci_high",
                           "Stanford Cars"]
    # no predictions to resample: no interval
    assert rows[1][:7] == ["finetune", "Fine-tuning", "50.5", "0.707107", "", "", ""]


def read_csv_text(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_store_without_needed_columns_is_a_data_error():
    with pytest.raises(DataError, match="top1"):
        build_tables(pd.DataFrame([{"suite": "mini", "method": "finetune", "domain": "svhn"}]))


def test_cell_signed_and_missing():
    assert Cell(1.234, signed=True).text() == "+1.23"
    assert Cell(-3.0, digits=0, signed=True).text() == "-3"
    assert Cell().text(missing="--") == "--"


# ----------------------------------------------------------------- intervals, bold, labels, GFLOPs, LaTeX

TINY = (("imagenet12", 40), ("dtd", 20), ("svhn", 20))  # domain, test images of the interval goldens
# (method, seed) -> domain -> (images right, GFLOPs per image or None); the first `right` images are right
TINY_RUNS = {
    ("finetune", 0): {"imagenet12": (30, 9.0), "dtd": (10, 0.5), "svhn": (15, 0.5)},
    ("spottune", 0): {"imagenet12": (30, 9.0), "dtd": (16, 0.3), "svhn": (15, 0.35)},
    ("feature-extractor", 0): {"dtd": (5, None), "svhn": (10, None)},  # no ImNet: partial
    ("l2-sp", 0): {"imagenet12": (30, 9.0), "dtd": (11, 0.5), "svhn": (14, None)},
    ("l2-sp", 1): {"imagenet12": (30, 9.0), "dtd": (13, 0.5), "svhn": (16, None)},
}
TINY_REGISTRY = ("feature-extractor", "finetune", "l2-sp", "spottune")


def tiny_store() -> tuple[pd.DataFrame, dict[str, Outcomes]]:
    """A small store of an unregistered suite (columns: the domains present) with planted per-image
    results: its jobs (with GFLOPs) and the per-image evidence the tables resample."""
    sizes = dict(TINY)
    rows, evidence = [], {}
    for (method, seed), domains in TINY_RUNS.items():
        for domain, (right, gflops) in domains.items():
            n = sizes[domain]
            row = job_row("tiny", method, domain, seed, 100.0 * right / n)
            rows.append(row | {"gflops_per_image": gflops})
            evidence[row["job_id"]] = Outcomes(Path("/tiny") / row["job_id"] / "predictions.json",
                                               np.arange(n), np.arange(n) < right)
    jobs = pd.DataFrame(rows)
    jobs["gflops_per_image"] = jobs["gflops_per_image"].astype(float)
    return jobs, evidence


def tiny_tables():
    jobs, evidence = tiny_store()
    return build_tables(jobs, registry=TINY_REGISTRY, evidence=evidence)


def test_golden_tables_with_intervals():
    tables = tiny_tables()
    assert [t.name for t in tables] == ["tiny-decathlon_trainval-test_faithful-faithful",
                                        "tiny-decathlon_trainval-test_faithful-faithful_vs_finetune"]
    rendered = {}
    for t in tables:
        rendered |= {f"{t.name}.md": to_markdown(t), f"{t.name}.tex": to_latex(t), f"{t.name}.csv": to_csv(t)}
    if os.environ.get("UPDATE_GOLDEN"):
        for name, text in rendered.items():
            (GOLDEN / name).write_text(text)
    for name, text in rendered.items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from tests/golden/{name}"


def md_cells(table, key: str) -> dict[str, str]:
    """The printed Markdown cells of one row by column name."""
    line = next(x for x in to_markdown(table).splitlines() if x.startswith(f"| {table.label(key)} |"))
    return dict(zip(table.columns, [c.strip() for c in line.split("|")[2:-1]], strict=True))


def test_interval_cells_half_widths_bold_and_partial_marks():
    main, versus = tiny_tables()
    assert main.columns == ("DTD", "ImNet", "SVHN", "Mean", "S", "#par", "GFLOPs")
    rows = dict(main.rows)
    by = {key: dict(zip(main.columns, cells, strict=True)) for key, cells in rows.items()}
    spot, ft, fe, l2 = (md_cells(main, k) for k in ("spottune", "finetune", "feature-extractor", "l2-sp"))
    # one seed: "mean ± half-width of the 95% interval", which contains the mean; exact bounds in the CSV
    dtd = by["spottune"]["DTD"]
    assert dtd.mean == 80.0 and dtd.std is None and dtd.ci.low < 80.0 < dtd.ci.high
    assert spot["DTD"] == f"**80.00 ± {dtd.ci.half_width:.2f}**"  # the only best DTD: bold
    assert 12.0 < dtd.ci.half_width < 22.0  # 16 of 20 right: binomial 1.96 * sqrt(.8 * .2 / 20) = 17.5 pp
    # several seeds: the seed spread as before (sample std of 55 and 65), the interval in the CSV only
    assert l2["DTD"] == "60.00 ± 7.07" and by["l2-sp"]["DTD"].ci is not None
    # SVHN: three methods tie at 75.00 above 50.00 (ties all bold); ImNet: all equal, nothing to tell apart
    assert [x["SVHN"].startswith("**75.00") for x in (ft, spot, l2)] == [True] * 3
    assert fe["SVHN"].startswith("50.00 ± ")
    assert not any("**" in x["ImNet"] for x in (ft, spot, l2))
    assert ft["ImNet"].startswith("75.00 ± ")
    # partial values (no ImNet): marked, never bold; a missing cell is missing
    assert fe["Mean"].endswith("*") and fe["S"].endswith("*") and "**" not in fe["Mean"] + fe["S"]
    assert fe["ImNet"] == "–" and by["feature-extractor"]["Mean"].mean == pytest.approx(37.5)
    assert spot["Mean"].startswith("**76.67 ± ") and spot["S"].startswith("**")
    # S: this run's finetune is the baseline (250 per domain); its own S has an interval around 750
    s = by["finetune"]["S"]
    assert s.mean == pytest.approx(750.0) and s.ci.low < 750.0 < s.ci.high
    # GFLOPs: target domains only (ImNet's 9.0 left out), missing is missing, partial is marked
    assert (ft["GFLOPs"], spot["GFLOPs"], fe["GFLOPs"], l2["GFLOPs"]) == ("0.500", "0.325", "–", "0.500*")
    assert "**" not in spot["GFLOPs"] + spot["#par"]  # costs are not ranked
    assert "Bold: the highest value" in main.caption and "95% bootstrap interval" in main.caption
    # paper row names in the table, the registry name kept as the row key
    assert [main.label(k) for k, _ in main.rows] == ["Feature extractor", "Fine-tuning", "L2-SP", "SpotTune"]


def test_vs_finetune_marks_significant_differences():
    _, versus = tiny_tables()
    assert versus.columns == ("DTD", "ImNet", "SVHN", "Mean", "S", "p (S)")
    assert [k for k, _ in versus.rows] == ["feature-extractor", "l2-sp", "spottune"]
    spot = dict(zip(versus.columns, dict(versus.rows)["spottune"], strict=True))
    # DTD: SpotTune right on 6 more images of 20, never on fewer: +30 points, significant
    assert spot["DTD"].mean == pytest.approx(30.0) and spot["DTD"].ci.low > 0 and spot["DTD"].mark == "‡"
    # ImNet and SVHN: identical predictions, a zero-width interval at 0, not significant
    for column in ("ImNet", "SVHN"):
        assert spot[column].text() == "+0.00 ± 0.00"
    assert spot["S"].mean > 0 and spot["S"].mark == "‡" and spot["p (S)"].mean < 0.05
    fe = dict(zip(versus.columns, dict(versus.rows)["feature-extractor"], strict=True))
    assert fe["DTD"].mean == pytest.approx(-25.0) and fe["DTD"].mark == "‡"
    assert fe["ImNet"].mean is None and fe["Mean"].mark.startswith("*") and fe["S"].mean is None
    assert "`‡`: the interval excludes 0, a significant difference in a two-sided paired bootstrap test at " \
        "level 0.05" in versus.caption
    assert md_cells(versus, "spottune")["DTD"].endswith("‡")


def test_csv_keeps_registry_names_and_adds_labels_and_interval_bounds():
    main, _ = tiny_tables()
    rows = read_csv_text(to_csv(main))
    assert rows[0][:6] == ["method", "label", "DTD", "DTD std", "DTD ci_low", "DTD ci_high"]
    by = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert by["spottune"]["label"] == "SpotTune" and by["finetune"]["label"] == "Fine-tuning"
    dtd = dict(zip(main.columns, dict(main.rows)["spottune"], strict=True))["DTD"]
    assert float(by["spottune"]["DTD ci_low"]) == pytest.approx(dtd.ci.low, abs=1e-6)
    assert float(by["spottune"]["DTD ci_high"]) == pytest.approx(dtd.ci.high, abs=1e-6)
    assert by["l2-sp"]["DTD std"] == "7.071068" and by["l2-sp"]["DTD ci_low"] != ""
    assert by["feature-extractor"]["ImNet ci_low"] == "" and by["feature-extractor"]["GFLOPs"] == ""


def test_no_gflops_column_without_the_store_column():
    jobs, evidence = tiny_store()
    main = build_tables(jobs.drop(columns="gflops_per_image"), registry=TINY_REGISTRY, evidence=evidence)[0]
    assert main.columns[-2:] == ("S", "#par") and "GFLOPs" not in main.caption


def test_evidence_from_run_directories(tmp_path, mini_suite):
    root = Path(mini_suite.decathlon_root)
    write_mini_runs(tmp_path, root, ["svhn", "dtd"])  # finetune right on every 2nd image, spottune on all
    render_all(tmp_path, build_store(tmp_path), registry=REGISTRY)
    tables = tmp_path / "reports" / "tables"
    versus = read_csv(tables / "mini-decathlon_trainval-test_faithful-faithful_vs_finetune.csv")
    header, spot = versus[0], dict(zip(versus[0], versus[1], strict=True))
    assert spot["method"] == "spottune" and float(spot["SVHN"]) == pytest.approx(50.0)
    assert float(spot["SVHN ci_low"]) > 0  # significant, and so marked in the Markdown table
    markdown = (tables / "mini-decathlon_trainval-test_faithful-faithful_vs_finetune.md").read_text()
    assert "| SpotTune | " in markdown and "‡" in markdown and "SVHN ci_high" in header
    main = read_csv(tables / "mini-decathlon_trainval-test_faithful-faithful.csv")
    finetune = dict(zip(main[0], next(r for r in main if r[0] == "finetune"), strict=True))
    assert float(finetune["SVHN ci_low"]) < float(finetune["SVHN"]) < float(finetune["SVHN ci_high"])


def test_predictions_that_disagree_with_the_result_are_a_data_error(tmp_path, mini_suite):
    root = Path(mini_suite.decathlon_root)
    predictions, accuracy = planted_predictions(root, "svhn", 2)
    write_fake_run(tmp_path, job_row("mini", "finetune", "svhn", 0, accuracy + 1.0), data_root=root,
                   predictions=predictions)
    with pytest.raises(DataError, match=r"predictions.json: its predictions are .*% correct but result.json"):
        read_evidence(tmp_path, build_store(tmp_path).jobs)


def test_different_test_images_in_one_table_are_a_data_error():
    jobs, evidence = tiny_store()
    spot = next(j for j in evidence if j.startswith("tiny/spottune/dtd"))
    evidence[spot] = Outcomes(evidence[spot].path, np.arange(1, 21), evidence[spot].correct)
    with pytest.raises(DataError, match="labelled test images are not those of"):
        build_tables(jobs, registry=TINY_REGISTRY, evidence=evidence)


def test_jobs_without_predictions_get_no_interval_and_a_note():
    jobs, evidence = tiny_store()
    del evidence[next(j for j in evidence if j.startswith("tiny/spottune/dtd"))]
    main = build_tables(jobs, registry=TINY_REGISTRY, evidence=evidence)[0]
    spot = dict(zip(main.columns, dict(main.rows)["spottune"], strict=True))
    assert spot["DTD"].ci is None and spot["DTD"].text() == "80.00" and spot["SVHN"].ci is not None
    assert spot["S"].ci is None and spot["Mean"].ci is None  # not every domain resampled
    assert any("No interval for 1 labelled job(s)" in n for n in main.notes)


@pytest.mark.parametrize("name", sorted(__import__("decathlon.methods").methods.all_methods()))
def test_every_method_has_the_papers_row_name(name):
    from decathlon.methods import get_method
    from decathlon.published import published_rows

    label = get_method(name).label
    assert label and label != name
    published = {row.label for family in ("decathlon", "extra") for m, row in published_rows(family).items()
                 if m == name}
    assert not published or label in published, f"{name}: {label!r} is not the paper's {published}"


def latex_problems(tex: str) -> list[str]:
    """Structural problems of a rendered .tex table (empty: none)."""
    problems = []
    lines = tex.splitlines()
    if not (lines[0].startswith("%") and all(p in lines[0] for p in LATEX_PACKAGES)):
        problems.append("first line does not name the packages")
    if not tex.isascii():
        problems.append("non-ASCII characters")
    body = "\n".join(x for x in lines if not x.startswith("%"))
    depth = 0
    for ch in re.sub(r"\\[{}]", "", body):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            problems.append("a } closes nothing")
            break
    if depth:
        problems.append(f"{depth} unclosed {{")
    if re.sub(r"\\\$", "", body).count("$") % 2:
        problems.append("unbalanced $")
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", body).group(1)
    tabular = body.split(r"\begin{tabular}")[1].split(r"\end{tabular}")[0]
    for row in (x for x in tabular.splitlines() if x.endswith(r"\\")):
        cells = len(re.split(r"(?<!\\)&", row))  # "\&" is text, not a separator
        if cells != len(spec):
            problems.append(f"{cells} cells, {len(spec)} columns: {row}")
    text = re.sub(r"\\label\{[^}]*\}", "", body.replace(tabular, ""))  # labels may hold "_"
    problems += [f"unescaped {ch!r}" for ch in "_%#&" if re.search(rf"(?<!\\){re.escape(ch)}", text)]
    problems += [f"unescaped {ch!r} in a cell" for ch in "_%#"
                 if re.search(rf"(?<!\\){re.escape(ch)}", tabular)]
    rules = re.findall(r"\\(toprule|midrule|bottomrule)", tabular)
    if not rules or rules[0] != "toprule" or rules[-1] != "bottomrule" or "midrule" not in rules:
        problems.append(f"booktabs rules {rules}")
    return problems


def test_latex_tables_compile_or_are_well_formed(tmp_path):
    # the interval tables (bold, ±, ‡) and the golden store's tables (partial, Δ, published rows) with an
    # unlabelled cell (†) and a method name full of LaTeX specials
    unlabelled = golden_jobs()
    unlabelled.loc[(unlabelled["method"] == "spottune") & (unlabelled["domain"] == "dtd"), "top1"] = None
    specials = pd.DataFrame([job_row("extra", "my_method & 5% #1", "cubs", 0, 50.0)])
    tables = tiny_tables() + build_tables(unlabelled, registry=REGISTRY) + build_tables(specials)
    engine = next((e for e in ("pdflatex", "lualatex", "tectonic") if shutil.which(e)), None)
    for table in tables:
        tex = to_latex(table)
        assert latex_problems(tex) == [], table.name
        if engine is not None:  # a TeX engine on this machine: the table compiles with the named packages
            packages = re.search(r"\\usepackage\{([^}]*)\}", tex.splitlines()[0]).group(1)
            (tmp_path / "table.tex").write_text(tex)
            (tmp_path / "doc.tex").write_text(rf"\documentclass{{article}}\usepackage{{{packages}}}"
                                              r"\begin{document}\input{table}\end{document}")
            command = [engine, "doc.tex"] if engine == "tectonic" else [
                engine, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"]
            done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{table.name}: {done.stdout[-2000:]}"
            assert (tmp_path / "doc.pdf").is_file()
    # the structural check itself finds what it looks for
    assert latex_problems("% Needs \\usepackage{booktabs}\n\\begin{tabular}{lr}\n\\toprule\na & b & c \\\\\n"
                          "\\midrule\nx_1 & 5% \\\\\n\\bottomrule\n\\end{tabular}\n{") == [
        "1 unclosed {", "3 cells, 2 columns: a & b & c \\\\", "unescaped '_' in a cell",
        "unescaped '%' in a cell"]


# --------------------------------------------------------------------------------------------- figures


def routing_store() -> Store:
    jobs, policy = [], []
    for d in DECATHLON_COLUMNS:
        for seed in (0, 1):
            row = job_row("decathlon", "spottune", d, seed, 70.0, protocol="train->val")
            jobs.append(row)
            policy += policy_rows(row, classes=5 if d == "aircraft" else 3)
        jobs.append(job_row("decathlon", "finetune", d, 0, 65.0, protocol="train->val"))
    return store_of(pd.DataFrame(jobs), pd.DataFrame(policy))


def test_policy_figures_and_the_data_behind_them(tmp_path):
    paths = render_all(tmp_path, routing_store(), registry=REGISTRY)
    figures = tmp_path / "reports" / "figures"
    stem = "decathlon_train-val_faithful-faithful_spottune"
    # a per-class figure for every routed domain, not only the first
    for name in ("blocks", "finetuned", *(f"classes-{d}" for d in DECATHLON_COLUMNS)):
        png, pdf, data = (figures / f"{stem}_{name}.{suffix}" for suffix in ("png", "pdf", "csv"))
        assert {png, pdf, data} <= set(paths)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    with Image.open(figures / f"{stem}_blocks.png") as png:  # 200 dpi, recorded and real
        assert png.info["dpi"] == pytest.approx((200, 200), abs=0.1)
        width_in, height_in = policy_figures(routing_store())[0].figure.get_size_inches()
        assert png.size == (round(width_in * 200), round(height_in * 200))
    readme = (tmp_path / "reports" / "README.md").read_text()
    assert f"figures/{stem}_blocks.png" in readme and f"figures/{stem}_blocks.pdf" in readme
    blocks = pd.read_csv(figures / f"{stem}_blocks.csv", index_col=0)
    assert blocks.shape == (10, BLOCKS) and list(blocks.index) == list(DECATHLON_COLUMNS)
    assert list(blocks.columns) == [str(b) for b in range(1, BLOCKS + 1)]  # blocks numbered 1..L
    assert blocks.loc["svhn", "4"] == pytest.approx(3 / BLOCKS)  # block 4 = the store's index 3
    hist = pd.read_csv(figures / f"{stem}_finetuned.csv", index_col=0)
    assert hist.shape == (10, BLOCKS + 1) and list(hist.columns) == [str(c) for c in range(BLOCKS + 1)]
    assert hist.sum(axis=1).tolist() == pytest.approx([1.0] * 10)
    classes = pd.read_csv(figures / f"{stem}_classes-aircraft.csv", index_col=0)
    assert classes.shape == (5, BLOCKS)
    assert classes.loc[1, "1"] == 1 and classes.loc[1, "2"] == 0
    assert not any("finetune_" in p.name for p in paths if p.parent == figures)  # no policy: no figure


def test_figures_drawn_in_worker_processes_are_the_same_files():
    figures = policy_figures(routing_store())[:3] * 2  # 6 figures: enough for 2 workers
    parallel = render_figures(figures, workers=2)
    assert not any("figure" in f.__dict__ for f in figures)  # drawn in the workers, not here
    serial = render_figures(figures, workers=1)
    assert all("figure" in f.__dict__ for f in figures)
    assert len(parallel) == 6 and all(r["png"][:8] == b"\x89PNG\r\n\x1a\n" for r in parallel)
    assert all(r["pdf"][:5] == b"%PDF-" for r in parallel)
    assert parallel == serial and parallel[0] != parallel[1]  # PDFs too: no creation date in them


def test_policy_heatmaps_are_labelled_annotated_and_on_a_fixed_scale():
    figures = {f.name.rsplit("_", 1)[1]: f for f in policy_figures(routing_store())}
    assert figures["blocks"].title.startswith("Visual Decathlon (decathlon, train->val): spottune")
    blocks = figures["blocks"]
    ax, cbar = blocks.figure.axes[:2]
    assert "block index" in ax.get_xlabel() and ax.get_ylabel() == "domain"
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(b) for b in range(1, BLOCKS + 1)]
    assert [t.get_text() for t in ax.get_yticklabels()] == [domain_label(d, "decathlon")
                                                           for d in DECATHLON_COLUMNS]
    mesh = ax.collections[0]
    assert mesh.get_clim() == (0.0, 1.0) and mesh.get_cmap().name == "viridis"
    assert cbar.get_ylabel() == "fraction fine-tuned"
    # 10 x 12 cells: every value printed, in row-major order
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 10 * BLOCKS and texts[:3] == ["0.00", "0.08", "0.17"]
    assert blocks.data.iloc[0, 1] == pytest.approx(1 / BLOCKS)

    # a large grid (120 classes): no printed values, every 3rd class labelled, same colour range
    many = pd.DataFrame([dict(domain="dtd", kind="class_block", class_index=k, index=b, value=(k + b) % 2,
                              job_id="j", method="spottune", seed=0)
                         for k in range(120) for b in range(BLOCKS)])
    large = plot_class_usage(class_usage(many, "dtd"), "classes")
    ax = large.axes[0]
    assert not ax.texts and ax.collections[0].get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_yticklabels()][:3] == ["0", "3", "6"]
    assert ax.get_ylabel() == "class index"


def test_chosen_domain_for_per_class_figure(tmp_path):
    store = routing_store()
    paths = render_all(tmp_path, store, chosen_domain="svhn", registry=REGISTRY)
    classes = [p for p in paths if "classes-" in p.name]
    assert {p.name.split("classes-")[1] for p in classes} == {"svhn.png", "svhn.pdf", "svhn.csv"}
    assert pd.read_csv([p for p in classes if p.suffix == ".csv"][0], index_col=0).shape == (3, BLOCKS)
    with pytest.raises(UnknownNameError, match="no-such-domain"):
        render_all(tmp_path, store, chosen_domain="no-such-domain", registry=REGISTRY)


# ------------------------------------------------------------------------------------------ render_all


def test_render_all_writes_every_format_and_removes_stale_files(tmp_path):
    stale = tmp_path / "reports" / "tables" / "old_table.md"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier store")
    stale_submission = tmp_path / "reports" / "submissions" / "old_group" / "finetune_s0" / "results.json"
    stale_submission.parent.mkdir(parents=True)
    stale_submission.write_text("[]")
    keep = tmp_path / "reports" / "notes.txt"  # not a report file: left alone
    keep.write_text("mine")
    other = tmp_path / "reports" / "analysis" / "sweep.csv"  # another tool's folder: left alone
    other.parent.mkdir()
    other.write_text("a,b\n")
    jobs = golden_jobs().assign(protocol="train->val")  # no submission: these jobs have no run directories
    paths = render_all(tmp_path, store_of(jobs), registry=REGISTRY)
    tables = tmp_path / "reports" / "tables"
    main = "decathlon_train-val_faithful-faithful"
    for stem in (main, f"{main}_vs_published"):
        for suffix in (".md", ".tex", ".csv"):
            assert tables / f"{stem}{suffix}" in paths
    assert all(p.is_file() for p in paths)
    assert paths[-1] == tmp_path / "reports" / "README.md"
    assert "| Fine-tuning |" in paths[-1].read_text()
    assert not stale.exists() and keep.read_text() == "mine" and other.read_text() == "a,b\n"
    assert not (tmp_path / "reports" / "submissions" / "old_group").exists()  # no empty folders left
    assert not list((tmp_path / "reports").rglob("*.tmp"))


def test_render_all_on_an_empty_store(tmp_path):
    empty = store_of(pd.DataFrame(columns=list(job_row("mini", "m", "svhn", 0, 1.0))))
    paths = render_all(tmp_path, empty, registry=REGISTRY)
    assert paths == [tmp_path / "reports" / "README.md"]
    assert "no finished jobs" in paths[0].read_text()


# ----------------------------------------------------------------------------------------- submissions


def annotations(root: Path, domain: str, name: str) -> dict:
    return json.loads((root / "annotations" / f"{domain}_{name}.json").read_text())


def write_fake_run(out: Path, row: dict, *, data_root: Path | None = None, predictions: dict | None = None,
                   policy: dict | None = None) -> Path:
    """A finished run directory as the engine writes it (result.json last)."""
    run_dir = out / "runs" / row["job_id"]
    config = {"data_root": str(data_root) if data_root else None,
              **{k: row[k] for k in ("suite", "method", "domain", "seed")}}
    atomic_write_json(run_dir / "config.json", {"config": config, "code_version": "test"})  # engine layout
    if predictions is not None:
        atomic_write_json(run_dir / "predictions.json", predictions)
    if policy is not None:
        atomic_write_json(run_dir / "policy.json", policy)
    result = {k: v for k, v in row.items() if k not in ("job_id", "run_dir")}
    atomic_write_json(run_dir / "result.json", result)
    return run_dir


def planted_predictions(root: Path, domain: str, correct_every: int) -> tuple[dict, float]:
    """Predictions over the labelled test set, right for every `correct_every`-th image; their accuracy."""
    test = annotations(root, domain, "test")
    categories = sorted(c["id"] for c in test["categories"])
    label = {a["image_id"]: categories.index(a["category_id"]) for a in test["annotations"]}
    ids = [im["id"] for im in test["images"]]
    predicted = [label[i] if n % correct_every == 0 else (label[i] + 1) % len(categories)
                 for n, i in enumerate(ids)]
    accuracy = 100.0 * sum(p == label[i] for p, i in zip(predicted, ids, strict=True)) / len(ids)
    return {"image_ids": ids, "predicted": predicted, "labels": [label[i] for i in ids]}, accuracy


def write_mini_runs(out: Path, data_root: Path, domains: list[str]) -> dict[tuple[str, str], float]:
    """finetune and spottune trainval->test runs over `domains` with planted test predictions."""
    planted = {}
    for method, every in (("finetune", 2), ("spottune", 1)):
        for d in domains:
            predictions, accuracy = planted_predictions(data_root, d, every)
            row = job_row("mini", method, d, 0, accuracy)
            policy = None
            if method == "spottune":
                classes = len(annotations(data_root, d, "test")["categories"])
                policy = {"block_fraction": [0.5] * BLOCKS, "histogram": [0.0] * 6 + [1.0] + [0.0] * 6,
                          "per_class": {str(k): [k % 2] * BLOCKS for k in range(classes)}}
            write_fake_run(out, row, data_root=data_root, predictions=predictions, policy=policy)
            planted[(method, d)] = accuracy
    return planted


def test_submission_is_valid_against_the_generated_suite(tmp_path, mini_suite):
    root = Path(mini_suite.decathlon_root)
    domains = ["svhn", "dtd", "gtsrb"]
    planted = write_mini_runs(tmp_path, root, domains)
    paths = render_all(tmp_path, build_store(tmp_path), registry=REGISTRY)
    folder = tmp_path / "reports" / "submissions" / "mini-decathlon_trainval-test_faithful-faithful"
    for method in ("finetune", "spottune"):
        sub = folder / f"{method}_s0"
        assert {sub / "results.json", sub / "results.zip", sub / "score.json", sub / "score.md"} <= set(paths)
        entries = json.loads((sub / "results.json").read_text())
        for d in domains:
            stripped = annotations(root, d, "test_stripped")
            ids = {im["id"] for im in stripped["images"]}
            cats = {c["id"] for c in stripped["categories"]}
            mine = [e for e in entries if e["image_id"] in ids]
            assert len(mine) == len(ids) and all(e["category_id"] in cats for e in mine)
        assert len(entries) == sum(len(annotations(root, d, "test_stripped")["images"]) for d in domains)
        with zipfile.ZipFile(sub / "results.zip") as z:
            assert json.loads(z.read("results.json")) == entries
        score = json.loads((sub / "score.json").read_text())
        for d in domains:
            assert score["domains"][d]["accuracy"] == pytest.approx(planted[(method, d)])
    finetune_score = json.loads((folder / "finetune_s0" / "score.json").read_text())
    assert finetune_score["domains"]["svhn"]["points"] == pytest.approx(250.0)  # its own baseline


def test_real_suite_submission_on_generated_files_is_scored_with_the_tables_baseline(tmp_path, mini_suite):
    # a `--suite decathlon` run whose annotation files were written by decathlon.generate (a local mirror):
    # the table scores against the published Fine-tuning, and so does score.md, without refusing
    root = Path(mini_suite.decathlon_root)
    planted = write_mini_runs(tmp_path, root, ["svhn", "dtd"])
    jobs = build_store(tmp_path).jobs.assign(suite="decathlon")
    render_all(tmp_path, store_of(jobs), registry=REGISTRY)
    # (the runs' settings are the mini suite's, so the group carries its config hash)
    submissions = tmp_path / "reports" / "submissions"
    sub, = submissions.glob("decathlon_trainval-test_faithful-faithful*/finetune_s0")
    score = json.loads((sub / "score.json").read_text())
    assert score["baseline"] == "the published Fine-tuning model (Rebuffi et al. 2017)"
    expected = s_score({d: planted[("finetune", d)] for d in ("svhn", "dtd")}).total
    assert score["score"] == pytest.approx(expected)
    assert not (sub / "baseline.json").exists()


def test_submission_without_predictions_is_a_data_error(tmp_path, mini_suite):
    row = job_row("mini", "finetune", "svhn", 0, 50.0)
    write_fake_run(tmp_path, row, data_root=Path(mini_suite.decathlon_root))
    with pytest.raises(DataError, match="predictions.json"):
        render_all(tmp_path, build_store(tmp_path), registry=REGISTRY)


def test_moved_results_folder_still_finds_its_run_directories(tmp_path, mini_suite):
    first = tmp_path / "first"
    write_mini_runs(first, Path(mini_suite.decathlon_root), ["svhn"])
    build_store(first)  # store.csv records absolute run_dir paths under first/
    moved = first.rename(tmp_path / "moved")
    paths = render_all(moved, load_store(moved), registry=REGISTRY)
    sub = moved / "reports" / "submissions" / "mini-decathlon_trainval-test_faithful-faithful"
    assert sub / "spottune_s0" / "results.json" in paths


def test_bad_input_fails_before_anything_is_written(tmp_path, mini_suite):
    row = job_row("mini", "finetune", "svhn", 0, 50.0)
    run_dir = write_fake_run(tmp_path, row, data_root=Path(mini_suite.decathlon_root),
                             predictions={"image_ids": [1, 2, 3], "predicted": [0, 1]})
    with pytest.raises(DataError, match=r"predictions.json: 3 image_ids but 2 predictions"):
        render_all(tmp_path, build_store(tmp_path), registry=REGISTRY)
    assert not (tmp_path / "reports").exists()
    atomic_write_json(run_dir / "predictions.json", {"image_ids": [1, 2], "predicted": [0, 1]})
    atomic_write_json(run_dir / "config.json", {"config": {"data_root": None}})
    with pytest.raises(DataError, match="config.json: no 'data_root'"):
        render_all(tmp_path, build_store(tmp_path), registry=REGISTRY)
    with pytest.raises(UnknownNameError, match="no-such-domain"):
        render_all(tmp_path, routing_store(), chosen_domain="no-such-domain", registry=REGISTRY)
    assert not (tmp_path / "reports").exists()


def test_figures_do_not_import_the_report_module():
    # the table groups live in decathlon.groups, which both import: no cycle report <-> figures
    code = ("import sys, decathlon.figures, decathlon.report as r, decathlon.groups as g; "
            "assert r.GroupKey is g.GroupKey and r.group_jobs is g.group_jobs; "
            "del sys.modules['decathlon.report'], sys.modules['decathlon.figures']; "
            "import decathlon.figures; print('decathlon.report' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.stdout.strip() == "False"


def constant_store() -> Store:
    """spottune (image-dependent), running-ft (all ones), Global-k (6 blocks, the same for every class),
    random-policy (random): three domains, class names recorded for spottune."""
    jobs, policy = [], []
    for shift, d in enumerate(("aircraft", "dtd", "svhn")):
        for method in ("finetune", "spottune", "spottune-running-ft", "spottune-global-k", "random-policy"):
            row = job_row("mini", method, d, 0, 60.0, protocol="train->val") | {"gflops_per_image": 0.5}
            jobs.append(row)
            ident = {k: row[k] for k in ("job_id", "method", "domain", "seed")}
            if method == "finetune":
                continue
            if method == "spottune-running-ft":
                usage = {k: [1.0] * BLOCKS for k in range(3)}
            elif method == "spottune-global-k":
                usage = {k: [float((b + shift) % BLOCKS < 6) for b in range(BLOCKS)] for k in range(3)}
            else:
                usage = {k: [(k + b) % 3 / 2 for b in range(BLOCKS)] for k in range(3)}
            fraction = [sum(u[b] for u in usage.values()) / 3 for b in range(BLOCKS)]
            tuned = round(sum(fraction))
            hist = [1.0 if c == tuned else 0.0 for c in range(BLOCKS + 1)]
            if method in ("spottune", "random-policy"):
                hist = [0.5 if c in (tuned - 1, tuned + 1) else 0.0 for c in range(BLOCKS + 1)]
            names = {0: "banded", 1: "dotted", 2: "zigzagged"} if method == "spottune" else {}
            series = [("block", -1, fraction, None), ("histogram", -1, hist, None)]
            series += [("class_block", k, values, names.get(k)) for k, values in usage.items()]
            policy += [dict(ident, kind=kind, class_index=k, index=i, value=v, class_name=name)
                       for kind, k, values, name in series for i, v in enumerate(values)]
    return store_of(pd.DataFrame(jobs), pd.DataFrame(policy))


def test_no_figure_without_information_and_a_readme_line_instead(tmp_path):
    paths = render_all(tmp_path, constant_store())
    names = {p.name for p in paths if p.parent.name == "figures"}
    stem = "mini-decathlon_train-val_faithful-faithful"
    assert not any(n.startswith(f"{stem}_spottune-running-ft_") for n in names)  # the all-ones heatmap
    assert f"{stem}_spottune-global-k_blocks.png" in names  # which 6 blocks: information
    assert not any(n.startswith((f"{stem}_spottune-global-k_finetuned", f"{stem}_spottune-global-k_classes"))
                   for n in names)
    assert not any("random-policy_classes" in n for n in names)  # random routing: per-class noise only
    assert {f"{stem}_spottune_classes-{d}.pdf" for d in ("aircraft", "dtd", "svhn")} <= names
    readme = (tmp_path / "reports" / "README.md").read_text()
    assert ("- `spottune-running-ft` (Visual Decathlon, mini, train->val): every image of every domain "
            "takes the fine-tuned path in all 12 blocks; no policy figure is drawn") in readme
    assert "every image of every domain fine-tunes exactly 6 blocks" in readme
    assert "every class has the same per-block usage on Airc., DTD, SVHN" in readme
    assert "`random-policy` (Visual Decathlon, mini, train->val): routing drawn at random" in readme


def test_per_class_figures_are_labelled_with_the_class_names(tmp_path):
    figure = next(f for f in policy_figures(constant_store()) if f.name.endswith("spottune_classes-dtd"))
    ax = figure.figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["banded", "dotted", "zigzagged"]
    assert ax.get_ylabel() == "class"
    assert figure.data["class_name"].tolist() == ["banded", "dotted", "zigzagged"]  # in the CSV too
    assert "Visual Decathlon (mini, train->val): spottune" in figure.title and "DTD" in figure.title


def test_tradeoff_figure_one_labelled_point_per_method(tmp_path):
    jobs = golden_jobs().assign(gflops_per_image=lambda f: f["method"].map(
        {"finetune": 1.7, "spottune": 2.1, "feature-extractor": 1.7}))
    jobs = jobs.drop(columns="run_dir")  # no run directories: no submissions
    paths = render_all(tmp_path, store_of(jobs), registry=REGISTRY)
    stem = tmp_path / "reports" / "figures" / "decathlon_trainval-test_faithful-faithful_tradeoff"
    assert {stem.with_suffix(s) for s in (".pdf", ".png", ".csv")} <= set(paths)
    data = pd.read_csv(stem.with_suffix(".csv"), index_col=0)
    assert list(data.index) == ["feature-extractor", "finetune", "spottune"]  # registry order
    assert data.loc["finetune", "score"] == pytest.approx(2500.0)  # S against the published Fine-tuning
    assert data.loc["spottune", "gflops"] == pytest.approx(2.1) and data.loc["finetune", "par"] > 9
    figure = tradeoff_figure_of(jobs)
    assert data.loc["finetune", "label"] == "Fine-tuning"  # points carry the paper's row names
    for ax in figure.axes:
        labels = set(data["label"])
        assert sorted(t.get_text() for t in ax.texts if t.get_text() in labels) == sorted(labels)
        assert ax.get_ylabel() == "S (Decathlon score)"
    assert "GFLOPs per image" in figure.axes[1].get_xlabel() and "#par" in figure.axes[0].get_xlabel()


def tradeoff_figure_of(jobs: pd.DataFrame):
    from decathlon.report import tradeoff_figures

    (figure,) = tradeoff_figures(jobs, registry=REGISTRY)
    return figure.figure


def test_policy_explorer_grid_of_the_most_and_fewest_fine_tuned_images(tmp_path, mini_suite):
    from decathlon.data import build_dataset

    root = mini_suite.decathlon_root
    val = build_dataset("dtd", root, "val", suite="mini")
    blocks = ["1" * (i % 13) + "0" * (BLOCKS - i % 13) for i in range(len(val))]  # 0..12 tuned blocks
    row = job_row("mini", "spottune", "dtd", 0, 100.0, protocol="train->val")  # every prediction right
    policy = {"block_fraction": [0.5] * BLOCKS, "histogram": [1 / 13] * 13, "image_blocks": blocks,
              "per_class": {str(k): [k / 10] * BLOCKS for k in range(val.num_classes)},
              "classes": list(val.classes)}
    labels = list(val.labels)
    predictions = {"image_ids": list(val.image_ids), "predicted": labels, "labels": labels}
    write_fake_run(tmp_path, row, data_root=root, predictions=predictions, policy=policy)
    stale = job_row("mini", "spottune", "svhn", 0, 100.0, protocol="train->val")  # before image_blocks
    write_fake_run(tmp_path, stale, data_root=root, predictions=predictions,
                   policy={k: v for k, v in policy.items() if k != "image_blocks"})
    paths = render_all(tmp_path, build_store(tmp_path), workers=1)
    figures = tmp_path / "reports" / "figures"
    stem = figures / "mini-decathlon_train-val_faithful-faithful_spottune_explorer-dtd"
    assert {stem.with_suffix(s) for s in (".pdf", ".png", ".csv")} <= set(paths)
    grid = pd.read_csv(stem.with_suffix(".csv"), dtype={"routing": str})
    assert len(grid) == 2 * EXPLORER_IMAGES
    most, fewest = grid[grid["row"] == "most"], grid[grid["row"] == "fewest"]
    assert most["finetuned_blocks"].tolist() == [12] * EXPLORER_IMAGES  # 80 images: 6 of each count
    assert fewest["finetuned_blocks"].tolist() == [0] * EXPLORER_IMAGES
    assert grid["class_name"].tolist() == [val.classes[y] for y in grid["label"]]
    assert grid["image_id"].tolist() == [val.image_ids[i] for i in grid["position"]]
    figure = next(f for f in explorer_outputs(build_store(tmp_path), lambda job: tmp_path / "runs" /
                                              job["job_id"])[0])
    shown = [ax for ax in figure.figure.axes if ax.images]
    assert len(shown) == 2 * EXPLORER_IMAGES
    assert shown[0].get_title() == f"{val.classes[most['label'].iloc[0]]}\n12/12 blocks"
    readme = (tmp_path / "reports" / "README.md").read_text()
    assert "no policy explorer grid for SVHN: no per-image routing recorded" in readme
