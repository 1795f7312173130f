"""The best-practices analysis: distance metrics on constructed sets with known answers, the sweep's subsets
and plan, the recommendation logic on hand-made gaps, the SpotTune link, the re-initialising methods, and
``run_all.py --analysis best-practices`` end to end on the generated suite."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.reinit import CopyReinit
from decathlon import runner
from decathlon.analysis import distance as dist
from decathlon.analysis import link, recommend, sweep
from decathlon.analysis.best_practices import AnalysisSettings, analysis_plan, parse_analysis
from decathlon.config import RunConfig
from decathlon.errors import ConfigError, UnknownNameError
from decathlon.jobs import Job
from decathlon.networks.resnet import ResNet26


def _gauss(n: int, d: int, seed: int, shift: float = 0.0, axis: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, axis] += shift
    return x


# ------------------------------------------------------------------------------------------- distances


def test_cosine_distance_known_answers_and_order():
    a = _gauss(200, 8, 0) + 3.0  # mean ~ (3, ..., 3)
    assert dist.cosine_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert dist.cosine_distance([[1.0, 0.0]], [[0.0, 2.0]]) == pytest.approx(1.0)  # orthogonal means
    assert dist.cosine_distance([[1.0, 0.0]], [[-1.0, 0.0]]) == pytest.approx(2.0)  # opposite means
    shifted = [dist.cosine_distance(a, a + np.eye(8)[1] * s) for s in (0.5, 2.0, 8.0)]
    assert shifted[0] < shifted[1] < shifted[2]


def test_mmd2_known_answers_identical_and_shifted_sets():
    # two 2-point sets at 0 and 1 (sigma = 1): every estimator gives 2 - 2 exp(-1/2)
    expected = 2 - 2 * math.exp(-0.5)
    a, b = np.zeros((2, 1)), np.ones((2, 1))
    assert dist.mmd2(a, b, bandwidth=1.0) == pytest.approx(expected)
    assert dist.mmd2(a, b, bandwidth=1.0, biased=True) == pytest.approx(expected)
    x = _gauss(150, 6, 1)
    assert dist.mmd2(x, x, biased=True) == pytest.approx(0.0, abs=1e-12)
    assert -0.01 < dist.mmd2(x, x) < 0  # unbiased: O(1/n) below zero for identical sets
    assert abs(dist.mmd2(x, _gauss(150, 6, 2))) < 0.01  # two samples of one distribution
    values = [dist.mmd2(x, _gauss(150, 6, 3, shift=s)) for s in (1.0, 2.0, 4.0)]
    assert 0.04 < values[0] < values[1] < values[2]
    with pytest.raises(ConfigError, match="widths"):
        dist.mmd2(x, _gauss(10, 5, 0))


def test_median_bandwidth_is_the_median_pairwise_distance():
    a, b = np.array([[0.0], [1.0]]), np.array([[3.0]])
    assert dist.median_bandwidth(a, b) == pytest.approx(2.0)  # distances 1, 3, 2


def test_linear_domain_classifier_chance_on_identical_and_orders_by_shift():
    x = _gauss(200, 10, 4)
    assert dist.linear_domain_accuracy(x, x, seed=0) == 0.5  # paired split: every test image twice
    assert abs(dist.linear_domain_accuracy(x, _gauss(200, 10, 5), seed=0) - 0.5) < 0.12
    accs = [dist.linear_domain_accuracy(x, _gauss(200, 10, 6, shift=s), seed=0) for s in (0.3, 1.0, 4.0)]
    assert accs[0] < accs[1] < accs[2] and accs[2] > 0.95
    assert dist.linear_domain_accuracy(x, x + 4, seed=3) == dist.linear_domain_accuracy(x, x + 4, seed=3)


def _stripes(n: int, vertical: bool, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    phase = torch.randint(0, 4, (n,), generator=g)
    coords = torch.arange(16)
    images = torch.zeros(n, 3, 16, 16)
    for i in range(n):
        wave = ((coords + phase[i]) // 2 % 2).float()
        images[i] = (wave[None, :] if vertical else wave[:, None]).expand(16, 16)
    return images + 0.1 * torch.randn(n, 3, 16, 16, generator=g)


def test_cnn_domain_classifier_separates_different_sets_and_is_at_chance_on_identical():
    settings = dist.CnnSettings(size=16, epochs=6, batch_size=32, lr=3e-3)
    horizontal, vertical = _stripes(60, False, 0), _stripes(60, True, 1)
    before = torch.get_rng_state()
    separated = dist.cnn_domain_accuracy(horizontal, vertical, seed=0, settings=settings)
    assert torch.equal(torch.get_rng_state(), before)  # seeded without touching the global RNG
    assert separated > 0.9
    same = dist.cnn_domain_accuracy(horizontal, horizontal.clone(), seed=0, settings=settings)
    assert same == 0.5  # identical sets, paired split: each test image once per label
    assert dist.cnn_domain_accuracy(horizontal, vertical, seed=0, settings=settings) == separated


def test_distance_table_order_and_rank_agreement():
    rows = {name: {"cosine": c, "mmd2": 2 * c, "linear_acc": 0.5 + c / 2, "cnn_acc": 0.5 + c / 3}
            for name, c in (("far", 0.9), ("near", 0.1), ("mid", 0.4), ("next", 0.2))}
    table = dist.distance_table(rows)
    assert list(table.index) == ["near", "next", "mid", "far"]
    assert list(table["rank_cosine"]) == [1.0, 2.0, 3.0, 4.0]
    rho, _ = dist.rank_agreement(table)
    assert np.allclose(rho.to_numpy(), 1.0)  # monotone metrics agree perfectly
    rho_two, _ = dist.rank_agreement(table.iloc[:2])
    assert np.isnan(rho_two.loc["cosine", "mmd2"])  # fewer than 3 targets: undefined
    assert "| near | 0.1000 |" in dist.markdown_distance_table(table)


# ------------------------------------------------------------------------------------------- the sweep


def _labels(per_class, seed=0):
    labels = [c for c, n in enumerate(per_class) for _ in range(n)]
    return list(np.random.default_rng(seed).permutation(labels))


def test_sweep_subsets_are_class_balanced_nested_and_seeded():
    labels = _labels([30] * 5)
    subsets = {n: sweep.sweep_subset(labels, n, seed=0, domain="aircraft") for n in (1, 10, 25)}
    for n, subset in subsets.items():
        counts = np.bincount([labels[i] for i in subset], minlength=5)
        assert (counts == n).all()  # exactly n images of every class
    assert set(subsets[1]) <= set(subsets[10]) <= set(subsets[25])  # nested for one seed
    assert sweep.sweep_subset(labels, 10, seed=0, domain="aircraft") == subsets[10]  # deterministic
    assert sweep.sweep_subset(labels, 10, seed=1, domain="aircraft") != subsets[10]  # seeded
    assert sweep.sweep_subset(labels, None, seed=0, domain="aircraft") == list(range(len(labels)))
    # a class with fewer images than asked gives all of them; the total stays images x classes
    short = _labels([3, 30, 30])
    counts = np.bincount([short[i] for i in sweep.sweep_subset(short, 10, seed=0, domain="aircraft")])
    assert counts[0] == 3 and counts.sum() == 30


def test_plan_sweep_jobs_sizes_and_collapsed_sizes():
    base = RunConfig(suite="mini", domain="aircraft", width=0.25, data_root="/data")
    labels = {"aircraft": _labels([24] * 10), "svhn": _labels([24] * 10, seed=1)}
    points = sweep.plan_sweep({"aircraft": base, "svhn": base.replace(domain="svhn")}, labels,
                              sizes=(1, 10, 25, None), variants=("FT", "F", "F(rest)R(top3)"), seeds=(0,),
                              needs=("pretrain-job",))
    # 25 >= 24 images per class collapses onto "all": 3 sizes x 3 variants x 2 domains
    assert len(points) == 18 and len({p.job.job_id for p in points}) == 18
    by_key = {(p.domain, p.variant, p.images_per_class): p for p in points}
    ft_10 = by_key[("aircraft", "FT", 10)]
    assert ft_10.job.config.method == "finetune" and ft_10.job.config.limit_train_images == 100
    assert ft_10.train_images == 100 and ft_10.per_class_min == ft_10.per_class_max == 10
    assert by_key[("svhn", "F(rest)R(top3)", None)].job.config.method == "reinit-3-freeze"
    assert by_key[("svhn", "F", None)].job.config.limit_train_images is None
    assert all(p.job.needs == ("pretrain-job",) for p in points)
    assert ft_10.job.run_dir("/out/analysis/best-practices").as_posix().startswith(
        "/out/analysis/best-practices/runs/mini/finetune/aircraft/")
    with pytest.raises(ConfigError, match="unknown sweep variant"):
        sweep.plan_sweep({"aircraft": base}, labels, sizes=(1,), variants=("FT(all)",), seeds=(0,))


# --------------------------------------------------------------------------------------- recommendation


def test_decide_and_levels_on_hand_made_values():
    assert recommend.decide(3.0, 1.0) == "Tune"
    assert recommend.decide(-3.0, 1.0) == "Freeze"
    assert recommend.decide(0.5, 1.0) == recommend.decide(-1.0, 1.0) == "either"
    assert recommend.decide(float("nan"), 1.0) == "n/a"
    assert [recommend.level(v, (0.2, 0.4)) for v in (0.1, 0.2, 0.3, 0.5)] == ["low", "low", "medium", "high"]
    assert recommend.tercile_thresholds([1, 10, 24]) == pytest.approx((7.0, 14.6667), rel=1e-4)
    with pytest.raises(ConfigError):
        recommend.level(0.5, (0.4, 0.2))


def _sweep_rows(points):
    rows = []
    for domain, ipc, tune, freeze in points:
        for variant, top1 in (("FT", tune), ("F", freeze)):
            rows.append({"domain": domain, "size": str(ipc), "images_per_class": ipc, "variant": variant,
                         "seed": 0, "top1": top1})
    return pd.DataFrame(rows)


def test_gaps_and_recommendation_matrix_from_hand_made_results():
    # Chu et al.'s pattern: near + little data -> freeze; far or much data -> tune
    results = _sweep_rows([("near", 1, 40.0, 45.0), ("near", 100, 70.0, 69.5), ("far", 1, 30.0, 20.0),
                           ("far", 100, 80.0, 50.0), ("mid", 10, 50.0, 50.0)])
    distances = pd.Series({"near": 0.1, "mid": 0.3, "far": 0.6})
    gaps = recommend.tune_freeze_gaps(results, distances)
    assert set(gaps["pair"]) == {"FT - F"}
    gap = gaps.set_index(["domain", "images_per_class"])["gap"]
    assert gap[("near", 1)] == pytest.approx(-5.0) and gap[("far", 100)] == pytest.approx(30.0)
    matrix, cells = recommend.recommendation_matrix(gaps, distance_thresholds=(0.2, 0.4),
                                                    size_thresholds=(20, 99), tolerance=1.0)
    assert matrix.loc["low", "low"].startswith("Freeze (-5.0, n=1)")
    assert matrix.loc["low", "high"].startswith("either")  # +0.5 within the tolerance
    assert matrix.loc["high", "low"].startswith("Tune") and matrix.loc["high", "high"].startswith("Tune")
    assert matrix.loc["medium", "low"].startswith("either") and matrix.loc["medium", "high"] == "no data"
    assert cells["points"].sum() == 5
    figure = recommend.plot_gaps(gaps)
    assert len(figure.axes) == 2


# ------------------------------------------------------------------------------------------ SpotTune link


def test_spottune_usage_thirds_and_correlation():
    jobs = pd.DataFrame({"job_id": ["a", "b", "c"], "method": ["spottune", "spottune", "finetune"],
                         "suite": "mini", "protocol": "trainval->test"})
    fractions = {"a": [1, 1, 0, 0, 0, 0], "b": [0, 0, 0, 0, 1, 0.5], "c": [1] * 6}
    policy = pd.DataFrame([{"job_id": j, "method": "x", "domain": d, "seed": 0, "kind": "block",
                            "class_index": -1, "index": i, "value": v}
                           for j, d in (("a", "dtd"), ("b", "svhn"), ("c", "svhn"))
                           for i, v in enumerate(fractions[j])])
    usage = link.spottune_usage(jobs, policy)
    assert list(usage.index) == ["dtd", "svhn"]  # job c is not a spottune job
    assert usage.loc["dtd", "tuned_fraction"] == pytest.approx(2 / 6)
    assert usage.loc["dtd", "first_third"] == 1.0 and usage.loc["dtd", "last_third"] == 0.0
    assert usage.loc["svhn", "last_third"] == pytest.approx(0.75)
    assert "too few" in link.correlation([0.1, 0.2], [0.3, 0.4])["note"]
    stats = link.correlation([0.1, 0.2, 0.3, 0.5, 0.9], [0.2, 0.3, 0.35, 0.6, 0.61])
    assert stats["spearman"] == pytest.approx(1.0) and stats["n"] == 5 and "too small" in stats["note"]
    assert link.spottune_usage(jobs.iloc[:0], policy.iloc[:0]).empty
    # restricted to given job ids (the current plan's): job a's dtd policy is left out
    only_b = link.spottune_usage(jobs, policy, job_ids=["b", "c"])
    assert list(only_b.index) == ["svhn"] and only_b.loc["svhn", "jobs"] == 1


# --------------------------------------------------------------------------------- re-initialising methods


@pytest.mark.parametrize("freeze", [False, True])
def test_copy_reinit_keeps_the_rest_and_reinitialises_the_top(freeze):
    torch.manual_seed(0)
    pretrained = ResNet26(5, width=0.125)
    for m in pretrained.modules():  # non-trivial BN statistics, as after pretraining
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(0.3)
    reference = {k: v.clone() for k, v in pretrained.state_dict().items()}
    method = CopyReinit(3, freeze)
    model = method.build(pretrained, None, 7, RunConfig(width=0.125))
    state = model.state_dict()
    for key, value in reference.items():
        if key.startswith(("stem.", "blocks.0.", "blocks.8.")):
            assert torch.equal(state[key], value), key  # copied
    for key in ("blocks.9.conv1.weight", "blocks.11.conv2.weight"):
        assert not torch.equal(state[key], reference[key])  # re-initialised
    assert (state["head.bn.running_mean"] == 0).all() and (state["blocks.10.bn1.running_mean"] == 0).all()
    assert model.classifier.out_features == 7
    copied_trainable = [p.requires_grad for p in model.blocks[:9].parameters()]
    assert all(copied_trainable) != freeze
    assert all(p.requires_grad for p in model.blocks[9:].parameters())
    method.train_mode(model, RunConfig())
    assert model.blocks[0].training != freeze and model.blocks[11].training


# ------------------------------------------------------------------------------------------- settings


def test_analysis_settings_parse_and_reject_bad_input():
    name, settings = parse_analysis(["best-practices", "images_per_class=[1, null]", "tolerance=2",
                                     "variants=[FT, F]", "distance_thresholds=[0.1, 0.3]"])
    assert name == "best-practices" and settings.images_per_class == (1, None) and settings.tolerance == 2.0
    assert settings.variants == ("FT", "F") and settings.distance_thresholds == (0.1, 0.3)
    with pytest.raises(ConfigError, match="unknown analysis setting"):
        parse_analysis(["best-practices", "epochs=3"])
    with pytest.raises(ConfigError, match="unknown sweep variant"):
        parse_analysis(["best-practices", "variants=[FT(all)]"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_analysis(["best-practices", "tolerance"])
    with pytest.raises(UnknownNameError, match="best-practices"):
        parse_analysis(["worst-practices"])
    with pytest.raises(ConfigError, match="not a valid"):
        AnalysisSettings.from_dict({"tolerance": "high"})


def test_analysis_plan_links_the_plans_own_spottune_jobs(tmp_path):
    jobs = [Job(RunConfig(suite="mini", method=m, domain=d, seed=seed))
            for m in ("spottune", "finetune") for d in ("dtd", "svhn") for seed in (0, 1)]
    plan = analysis_plan(jobs, tmp_path, AnalysisSettings())
    assert set(plan.targets) == {"dtd", "svhn"} and plan.seeds == (0, 1)
    assert plan.linked == tuple(j.job_id for j in jobs[:4])  # only spottune's, every seed
    assert analysis_plan(jobs[4:], tmp_path, AnalysisSettings()).linked == ()


def test_analysis_needs_a_source_domain(tmp_path):
    job = Job(RunConfig(suite="extra", method="finetune", domain="cubs", backbone="resnet50"))
    with pytest.raises(ConfigError, match="no source domain"):
        analysis_plan([job], tmp_path, AnalysisSettings())


def test_bad_analysis_fails_before_any_job_runs(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--suite", "mini", "--out", str(out), "--methods", "finetune", "--domains", "dtd"]
    assert runner.main(base + ["--analysis", "best-practices", "epochs=3"]) == 2
    assert "unknown analysis setting(s) ['epochs']" in capsys.readouterr().err
    assert runner.main(base + ["--analysis", "best-practices", "targets=[svhn]"]) == 2
    assert "svhn" in capsys.readouterr().err
    assert not out.exists()  # neither the suite generated nor a job run


def test_dry_run_prints_the_analysis_plan_and_writes_nothing(mini_suite, tmp_path, capsys):
    out = tmp_path / "out"
    analysis = ["--analysis", "best-practices", "images_per_class=[1, null]", "variants=[FT, F]"]
    argv = ["--suite", "mini", "--out", str(out), "--methods", "finetune", "--domains", "aircraft,svhn",
            "--dry-run"] + analysis
    assert runner.main(argv + ["--data-root", str(mini_suite.decathlon_root.parent)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "source imagenet12; targets aircraft, svhn; variants FT, F; images per class 1, all" in printed
    assert ": 8 sweep jobs" in printed  # 2 targets x 2 sizes x 2 variants x 1 seed
    sweep_table = printed[printed.index(": 8 sweep jobs"):]
    assert sweep_table.count("mini/feature-extractor/aircraft/s0/") == 2
    assert str(out / "analysis" / "best-practices" / "runs") in sweep_table
    assert runner.main(argv) == 0  # the generated suite does not exist yet under out/data
    assert "not readable yet" in " ".join(capsys.readouterr().out.split())
    assert not out.exists()


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_best_practices_end_to_end_on_the_generated_suite(mini_suite, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--suite", "mini", "--data-root", str(mini_suite.decathlon_root.parent), "--out", str(out),
            "--methods", "spottune", "--domains", "aircraft,svhn", "--epochs", "1", "--pretrain-epochs", "1",
            "--no-report", "--analysis", "best-practices", "images_per_class=[1, null]",
            "variants=[FT, F, FT(rest)R(top1), F(rest)R(top1)]", "distance_images=40", "cnn_epochs=2"]
    assert runner.main(argv) == 0
    reports = out / "reports" / "analysis"
    for name in ("README.md", "distance.csv", "distance.md", "distance_rank_agreement.csv", "sweep.csv",
                 "tune_minus_freeze.csv", "tune_minus_freeze.png", "recommendation.md", "recommendation.csv",
                 "best_variant.csv", "spottune_link.csv", "spottune_link.png"):
        assert (reports / name).is_file() and (reports / name).stat().st_size > 0, name
    distances = pd.read_csv(reports / "distance.csv", index_col="domain")
    assert set(distances.index) == {"aircraft", "svhn"}
    assert (distances["cosine"] >= 0).all() and distances["linear_acc"].between(0, 1).all()
    results = pd.read_csv(reports / "sweep.csv")
    assert len(results) == 2 * 2 * 4 and (results["state"] == "finished").all()
    assert set(results.loc[results["size"] == "1", "train_images"]) == {10}  # 1 image x 10 classes
    assert (out / "analysis" / "best-practices" / "runs" / results["job_id"][0] / "result.json").is_file()
    gaps = pd.read_csv(reports / "tune_minus_freeze.csv")
    assert len(gaps) == 2 * 2 * 2  # 2 domains x 2 sizes x 2 pairs
    assert (reports / "tune_minus_freeze.png").read_bytes()[:4] == b"\x89PNG"
    link_rows = pd.read_csv(reports / "spottune_link.csv", index_col=0)
    assert set(link_rows.index) == {"aircraft", "svhn"} and link_rows["tuned_fraction"].between(0, 1).all()
    assert "too few for a correlation" in (reports / "README.md").read_text()
    # resumable: a second run measures and trains nothing again
    stamps = {p: p.stat().st_mtime_ns for p in (out / "analysis").rglob("result.json")}
    capsys.readouterr()
    assert runner.main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 sweep jobs run, 16 already finished" in printed and "distance imagenet12" not in printed
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "analysis").rglob("result.json")}
    assert json.loads((reports / "spottune_link_stats.json").read_text())["n"] == 2


def test_reports_without_spottune_results_say_so(tmp_path):
    from decathlon.analysis.best_practices import AnalysisPlan, write_reports
    from decathlon.domains import get_domain
    from decathlon.store import Store

    config = RunConfig(suite="mini", domain="dtd", data_root="/data")
    plan = AnalysisPlan(suite="mini", source=get_domain("imagenet12", suite="mini"),
                        source_config=config.replace(domain="imagenet12"),
                        targets={"near": config, "mid": config, "far": config}, skipped={}, seeds=(0,),
                        needs=())
    rows = {n: {"cosine": c, "mmd2": c, "linear_acc": 0.5 + c, "cnn_acc": 0.5 + c}
            for n, c in (("near", 0.1), ("mid", 0.2), ("far", 0.4))}
    results = _sweep_rows([("near", 1, 40.0, 45.0), ("mid", 1, 50.0, 50.0), ("far", 24, 80.0, 50.0)])
    results["state"] = "finished"
    empty = Store(jobs=pd.DataFrame(), policy=pd.DataFrame())
    written = write_reports(tmp_path, plan, AnalysisSettings(), dist.distance_table(rows), results, empty,
                            generated=True, wall_s=1.0)
    reports = tmp_path / "reports" / "analysis"
    assert reports / "README.md" in written and (reports / "recommendation.md").is_file()
    readme = (reports / "README.md").read_text()
    assert "No `spottune` policies in the results store" in readme
    assert "terciles of the measured values" in readme  # generated suite: tercile thresholds, said so
    cells = pd.read_csv(reports / "recommendation.csv").set_index(["distance_level", "size_level"])
    assert cells.loc[("low", "low"), "decision"] == "Freeze"
    assert cells.loc[("high", "high"), "decision"] == "Tune"
