"""Reports: paper tables (Markdown/LaTeX/CSV), S baselines, policy figures, submissions, render_all."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from decathlon.domains import DECATHLON_COLUMNS, EXTRA_COLUMNS
from decathlon.errors import DataError, UnknownNameError
from decathlon.figures import class_usage, plot_class_usage, policy_figures, render_pngs
from decathlon.io import atomic_write_json
from decathlon.report import (
    Cell,
    GroupKey,
    build_tables,
    domain_family,
    domain_label,
    latex_escape,
    par_cell,
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
    rows += [dict(ident, kind="histogram", class_index=-1, index=c, value=1.0 if c == blocks // 2 else 0.0)
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
    line = next(x for x in to_markdown(table).splitlines() if x.startswith("| spottune |"))
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
    assert rows[0][:5] == ["method", "CUBS", "CUBS std", "Stanford Cars", "Stanford Cars std"]
    assert rows[1][:3] == ["finetune", "50.5", "0.707107"] and rows[1][3] == ""


def read_csv_text(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_store_without_needed_columns_is_a_data_error():
    with pytest.raises(DataError, match="top1"):
        build_tables(pd.DataFrame([{"suite": "mini", "method": "finetune", "domain": "svhn"}]))


def test_cell_signed_and_missing():
    assert Cell(1.234, signed=True).text() == "+1.23"
    assert Cell(-3.0, digits=0, signed=True).text() == "-3"
    assert Cell().text(missing="--") == "--"


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
    for name in ("blocks", "finetuned", "classes-aircraft"):  # aircraft: first target domain in paper order
        png, data = figures / f"{stem}_{name}.png", figures / f"{stem}_{name}.csv"
        assert png in paths and data in paths
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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


def test_figures_drawn_in_worker_processes_are_the_same_pngs():
    figures = policy_figures(routing_store()) * 2  # 6 figures: enough for 2 workers
    parallel = render_pngs(figures, workers=2)
    assert not any("figure" in f.__dict__ for f in figures)  # drawn in the workers, not here
    serial = render_pngs(figures, workers=1)
    assert all("figure" in f.__dict__ for f in figures)
    assert len(parallel) == 6 and all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in parallel)
    assert parallel == serial and parallel[0] != parallel[1]


def test_policy_heatmaps_are_labelled_annotated_and_on_a_fixed_scale():
    figures = {f.name.rsplit("_", 1)[1]: f for f in policy_figures(routing_store())}
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
    assert {p.name.split("classes-")[1] for p in classes} == {"svhn.png", "svhn.csv"}
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
    assert "| finetune |" in paths[-1].read_text()
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
    atomic_write_json(run_dir / "config.json", {"config": {"data_root": None}})
    with pytest.raises(DataError, match="config.json: no 'data_root'"):
        render_all(tmp_path, build_store(tmp_path), registry=REGISTRY)
    with pytest.raises(UnknownNameError, match="no-such-domain"):
        render_all(tmp_path, routing_store(), chosen_domain="no-such-domain", registry=REGISTRY)
    assert not (tmp_path / "reports").exists()
