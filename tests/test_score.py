"""S-score, published numbers, results.json submissions and the ``python -m decathlon`` command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from decathlon.__main__ import main
from decathlon.domains import DECATHLON_COLUMNS, EXTRA_COLUMNS
from decathlon.errors import DataError, UnknownNameError
from decathlon.methods import all_methods
from decathlon.published import (
    DECATHLON_ROWS,
    DECATHLON_TABLE,
    EXTRA_TABLE,
    FINETUNE_BASELINE,
    decathlon_score,
    published_accuracy,
    published_rows,
)
from decathlon.score import domain_points, s_score, score_submission, submission_entries, write_submission

REPO = Path(__file__).resolve().parents[1]

# Worked example of decathlon.md: SpotTune's published accuracies and their points
SPOTTUNE_POINTS = {"imagenet12": 255.6, "aircraft": 297.0, "cifar100": 206.2, "daimlerpedcls": 570.9,
                   "dtd": 268.3, "gtsrb": 815.1, "vgg-flowers": 363.0, "omniglot": 298.9, "svhn": 275.2,
                   "ucf101": 261.8}


# --------------------------------------------------------------------------- S-score


def test_spottune_worked_example():
    result = s_score(DECATHLON_TABLE["spottune"])
    assert result.total == pytest.approx(3612.2, abs=0.5)
    assert result.missing == ()
    assert list(result.points) == list(DECATHLON_COLUMNS)
    for domain, points in SPOTTUNE_POINTS.items():
        assert result.points[domain] == pytest.approx(points, abs=0.1), domain


def test_baseline_scores_2500_and_perfect_domains_1000():
    assert s_score(FINETUNE_BASELINE).total == 2500.0
    assert all(p == 250.0 for p in s_score(FINETUNE_BASELINE).points.values())
    perfect = s_score({d: 100.0 for d in DECATHLON_COLUMNS})
    assert perfect.total == pytest.approx(10000.0) and set(perfect.points.values()) == {1000.0}
    # at twice the baseline error (or worse) a domain scores nothing
    doubled = {d: 100 - 2 * (100 - a) for d, a in FINETUNE_BASELINE.items()}
    assert s_score({"svhn": doubled["svhn"], "dtd": 0.0}).points["svhn"] == pytest.approx(0.0, abs=1e-9)
    assert s_score({"dtd": 0.0}).points["dtd"] == 0.0


def test_published_rows_reproduce_their_published_scores():
    # every row of SpotTune's Decathlon comparison (reference/spottune.md), recomputed with the harness's
    # own scorer; the papers round accuracies to 2 decimals, hence the slack of 2.5 points
    assert len(DECATHLON_ROWS) == 15
    for row in DECATHLON_ROWS:
        assert row.score is not None and row.source, row.method
        assert s_score(row.accuracy).total == pytest.approx(row.score, abs=2.5), row.method


def test_missing_domains_score_zero_and_are_listed():
    partial = {d: a for d, a in DECATHLON_TABLE["spottune"].items() if d not in ("svhn", "dtd")}
    result = s_score(partial)
    assert result.missing == ("dtd", "svhn")  # in the baseline's (paper) order
    assert result.points["svhn"] == result.points["dtd"] == 0.0
    assert result.total == pytest.approx(3612.2 - 275.2 - 268.3, abs=0.5)


def test_custom_baseline_and_bad_values():
    baseline = {"a": 50.0, "b": 90.0}
    result = s_score({"a": 50.0, "b": 95.0}, baseline=baseline)
    assert result.points == {"a": 250.0, "b": pytest.approx(1000 * (0.2 - 0.05) ** 2 / 0.2**2)}
    with pytest.raises(UnknownNameError, match="unknown domain 'imagenet'; known domains: imagenet12, airc"):
        s_score({"imagenet": 50.0})
    with pytest.raises(UnknownNameError, match="known domains: a, b"):
        s_score({"c": 50.0}, baseline=baseline)
    with pytest.raises(DataError, match="accuracy of 'a' is 120.*between 0 and 100"):
        s_score({"a": 120.0}, baseline=baseline)
    with pytest.raises(DataError, match="baseline accuracy of 'b' is 'x'"):
        s_score({"a": 60.0}, baseline={"a": 50.0, "b": "x"})
    # a perfect baseline: the limit of the formula
    assert domain_points(100.0, 100.0) == 1000.0 and domain_points(99.0, 100.0) == 0.0


# --------------------------------------------------------------------------- published numbers


def test_published_tables_are_keyed_by_registry_and_domain_names():
    registry = set(all_methods())
    # methods the harness cannot run yet keep stable names until they are registered
    not_yet_registered = {"scratch-plus", "series-adapters-nips17", "series-adapters-decay",
                          "adapters-finetune-all", "series-adapters-large"}
    assert set(DECATHLON_TABLE) - registry <= not_yet_registered
    assert set(EXTRA_TABLE) <= registry
    assert {"scratch", "feature-extractor", "finetune", "bn-adapt", "spottune"} <= set(DECATHLON_TABLE)
    assert len(DECATHLON_TABLE) == 15 and len(EXTRA_TABLE) == 13
    assert published_rows("decathlon")["piggyback"].par == 1.28
    assert published_rows("decathlon")["parallel-adapters"].accuracy["aircraft"] == 64.21
    assert all(list(row) == list(DECATHLON_COLUMNS) for row in DECATHLON_TABLE.values())
    assert all(list(row) == list(EXTRA_COLUMNS) for row in EXTRA_TABLE.values())
    assert FINETUNE_BASELINE["ucf101"] == 51.20 and EXTRA_TABLE["spottune"]["cubs"] == 84.03
    assert {m: r.accuracy for m, r in published_rows("extra").items()} == dict(EXTRA_TABLE)
    assert dict(published_rows("other")) == {}
    assert decathlon_score("spottune") == 3612.0 and decathlon_score("l2-sp") is None
    assert published_accuracy("l2-sp", "sketches") == 79.60 and published_accuracy("l2-sp", "svhn") is None
    with pytest.raises(UnknownNameError, match="unknown published method 'spotune'"):
        published_accuracy("spotune", "svhn")
    with pytest.raises(TypeError):
        DECATHLON_TABLE["spottune"]["svhn"] = 100.0  # immutable


# --------------------------------------------------------------------------- submissions (generated suite)


def _test_annotations(root: Path, domain: str, split: str = "test") -> dict:
    return json.loads((root / "annotations" / f"{domain}_{split}.json").read_text())


def plant(root: Path, domain: str, correct: int) -> tuple[list[int], list[int], list[int]]:
    """Predictions for a domain's test split with exactly `correct` right answers."""
    data = _test_annotations(root, domain)
    cats = sorted(c["id"] for c in data["categories"])
    ids = [a["image_id"] for a in data["annotations"]]
    truth = [cats.index(a["category_id"]) for a in data["annotations"]]
    predicted = [k if i < correct else (k + 1) % len(cats) for i, k in enumerate(truth)]
    return ids, predicted, cats


def _json_score(capsys, *args: str) -> dict:
    assert main(["score", *args, "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)
    assert set(result) == {"domains", "score", "missing", "unlabelled", "unscored", "baseline"}
    return result


def test_submission_round_trip_recovers_planted_accuracies(mini_suite, tmp_path, capsys):
    root = mini_suite.decathlon_root
    planted, predictions = {}, {}
    for i, domain in enumerate(DECATHLON_COLUMNS):
        n = len(_test_annotations(root, domain)["images"])
        correct = (i * 7 + 3) % (n + 1)
        planted[domain] = 100.0 * correct / n
        ids, predicted, cats = plant(root, domain, correct)
        # half the domains give the category ids, half rely on the id scheme d * 10**7 + k + 1
        predictions[domain] = (ids, predicted, cats) if i % 2 else (ids, predicted)
    results, archive = tmp_path / "sub" / "results.json", tmp_path / "sub" / "results.zip"
    assert write_submission(predictions, results, zip_path=archive) == [results, archive]
    entries = json.loads(results.read_text())
    assert len(entries) == sum(len(_test_annotations(root, d, "test_stripped")["images"])
                               for d in DECATHLON_COLUMNS)
    assert all(set(e) == {"image_id", "category_id"} for e in entries)
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["results.json"] and json.loads(z.read("results.json")) == entries

    baseline = {d: 50.0 for d in DECATHLON_COLUMNS}
    baseline_file = tmp_path / "baseline.json"
    baseline_file.write_text(json.dumps(baseline))
    result = _json_score(capsys, "--submission", str(results), "--annotations", str(root / "annotations"),
                         "--baseline", str(baseline_file))
    assert result["missing"] == []
    for domain, accuracy in planted.items():
        assert result["domains"][domain]["accuracy"] == pytest.approx(accuracy)
    expected = s_score(planted, baseline=baseline)
    assert result["score"] == pytest.approx(expected.total)
    assert {d: v["points"] for d, v in result["domains"].items()} == pytest.approx(dict(expected.points))
    assert result["baseline"] == f"the accuracies in {baseline_file}"
    assert all(v["unpredicted"] == 0 for v in result["domains"].values())
    # the zip scores the same
    from_zip = score_submission(archive, root / "annotations", baseline=baseline)
    assert {k: v for k, v in from_zip.items() if k != "baseline"} == {
        k: v for k, v in result.items() if k != "baseline"}
    # generated annotations are never scored against the real Decathlon's published Fine-tuning
    with pytest.raises(DataError, match="generated suite.*pass --baseline"):
        score_submission(results, root / "annotations")


def test_unlabelled_domains_and_baseline_outsiders_are_reported_not_scored(mini_suite, tmp_path, capsys):
    root = tmp_path / "annotations"
    shutil.copytree(mini_suite.decathlon_root / "annotations", root)
    (root / "dtd_test.json").unlink()  # dtd: only the challenge's stripped file
    predictions = {d: plant(mini_suite.decathlon_root, d, correct=40) for d in ("svhn", "dtd", "gtsrb")}
    write_submission(predictions, tmp_path / "results.json")
    result = score_submission(tmp_path / "results.json", root, baseline={"svhn": 50.0, "dtd": 50.0})
    assert result["unlabelled"] == ["dtd"] and result["unscored"] == ["gtsrb"]
    assert result["domains"]["svhn"]["points"] == pytest.approx(250.0) and result["missing"] == ["dtd"]
    # a baseline naming a domain the annotations do not have is an error, not a silent S of 0
    (tmp_path / "bad.json").write_text(json.dumps({"nope": 50.0}))
    args = ["score", "--submission", str(tmp_path / "results.json"), "--annotations", str(root)]
    assert main([*args, "--baseline", str(tmp_path / "bad.json")]) == 2
    assert "the baseline names nope, which has no test annotations" in capsys.readouterr().err
    (tmp_path / "ok.json").write_text(json.dumps({"svhn": 50.0, "dtd": 50.0}))
    assert main([*args, "--baseline", str(tmp_path / "ok.json")]) == 0
    out = capsys.readouterr().out
    assert "dtd: no labelled test file (only dtd_test_stripped.json): its predictions are not scored" in out
    assert "gtsrb: not in the S baseline: its predictions are not scored" in out


def test_score_names_its_baseline_and_images_without_prediction(mini_suite, tmp_path, capsys):
    root = mini_suite.decathlon_root
    ids, predicted, cats = plant(root, "aircraft", correct=10)
    results = tmp_path / "results.json"
    write_submission({"aircraft": (ids[3:], predicted[3:], cats)}, results)  # 3 images unpredicted
    baseline_file = tmp_path / "baseline.json"
    baseline_file.write_text(json.dumps({"aircraft": 40.0}))
    args = ["--submission", str(results), "--annotations", str(root / "annotations"),
            "--baseline", str(baseline_file)]
    assert main(["score", *args]) == 0
    out = capsys.readouterr().out
    assert f"S baseline: the accuracies in {baseline_file}" in out
    assert f"aircraft: 3 of {len(ids)} test images have no prediction (counted wrong)" in out
    result = _json_score(capsys, *args)
    entry = result["domains"]["aircraft"]
    assert (entry["images"], entry["unpredicted"]) == (len(ids), 3)
    assert entry["accuracy"] == pytest.approx(100.0 * 7 / len(ids))  # the first 3 of 10 right are gone
    assert main(["score", "--submission", str(results), "--annotations", str(root / "annotations")]) == 2
    assert "pass --baseline" in capsys.readouterr().err


def real_format_annotations(root: Path, out: Path) -> Path:
    """The generated suite's labelled test files with the real devkit's `info` (not decathlon.generate)."""
    out.mkdir(parents=True)
    for path in (root / "annotations").glob("*_test.json"):
        data = json.loads(path.read_text())
        data["info"] = {"description": "Visual Domain Decathlon", "version": "1.0", "year": 2017}
        (out / path.name).write_text(json.dumps(data))
    return out


def test_command_line_in_a_subprocess(mini_suite, tmp_path, capsys):
    root = mini_suite.decathlon_root
    annotations = real_format_annotations(root, tmp_path / "annotations")
    ids, predicted, cats = plant(root, "svhn", correct=20)
    write_submission({"svhn": (ids, predicted, cats)}, tmp_path / "results.json")
    command = [sys.executable, "-m", "decathlon", "score", "--submission", str(tmp_path / "results.json"),
               "--annotations", str(annotations)]
    proc = subprocess.run([*command, "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["domains"]["svhn"]["accuracy"] == pytest.approx(25.0)  # 20 of 80
    assert result["missing"] == [d for d in DECATHLON_COLUMNS if d != "svhn"]
    # a domain without predictions has no accuracy (not 0 %) and scores 0 points
    assert all(result["domains"][d]["accuracy"] is None and result["domains"][d]["points"] == 0.0
               for d in result["missing"])
    # real annotations without --baseline: the published Fine-tuning, and the output says so
    assert result["baseline"] == "the published Fine-tuning model (Rebuffi et al. 2017)"
    assert result["score"] == pytest.approx(s_score({"svhn": 25.0}).total)
    # human-readable output (not a terminal: plain text) lists every domain and S
    assert main(command[3:]) == 0
    out = capsys.readouterr().out
    assert all(d in out for d in DECATHLON_COLUMNS) and "25.00" in out
    assert f"{result['score']:.1f}" in out and "missing (0 points): imagenet12" in out
    assert "S baseline: the published Fine-tuning model" in out


def test_missing_domains_in_a_submission(mini_suite, tmp_path, capsys):
    root = mini_suite.decathlon_root
    domains = ["dtd", "gtsrb", "svhn"]
    predictions = {d: plant(root, d, correct=40) for d in domains}
    write_submission(predictions, tmp_path / "results.json")
    baseline = {d: 50.0 for d in ["dtd", "gtsrb", "svhn", "omniglot", "ucf101"]}
    result = score_submission(tmp_path / "results.json", root / "annotations", baseline=baseline)
    assert result["missing"] == ["omniglot", "ucf101"]
    assert all(result["domains"][d]["points"] == pytest.approx(250.0) for d in domains)
    assert result["domains"]["ucf101"]["accuracy"] is None and result["domains"]["ucf101"]["points"] == 0.0
    assert result["score"] == pytest.approx(750.0)


# --------------------------------------------------------------------------- bad input


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture(scope="module")
def svhn_truth(mini_suite):
    data = _test_annotations(mini_suite.decathlon_root, "svhn")
    return [(a["image_id"], a["category_id"]) for a in data["annotations"]]


@pytest.mark.parametrize("case, message", [
    ("not-a-list", "holds a JSON dict; expected a list"),
    ("not-json", "cannot read submission"),
    ("unknown-id", "image_id 123 .* is in no test annotation file"),
    ("wrong-domain-category", "category_id 20000001 of image 80.* is not a category of 'svhn'"),
    ("duplicate", "image_id 80.* appears twice"),
    ("missing-key", "entry #0 .* expected an object with image_id and category_id"),
    ("float-id", "image_id of entry #0 .* is 1.5; expected an integer"),
])
def test_scorer_rejects_bad_submissions(mini_suite, svhn_truth, tmp_path, case, message):
    (i0, c0), (i1, c1) = svhn_truth[:2]
    content = {
        "not-a-list": {"image_id": i0, "category_id": c0},
        "not-json": "[{",
        "unknown-id": [{"image_id": i0, "category_id": c0}, {"image_id": 123, "category_id": c0}],
        "wrong-domain-category": [{"image_id": i0, "category_id": 2 * 10**7 + 1}],
        "duplicate": [{"image_id": i0, "category_id": c0}, {"image_id": i1, "category_id": c1},
                      {"image_id": i0, "category_id": c0}],
        "missing-key": [{"image_id": i0}],
        "float-id": [{"image_id": 1.5, "category_id": c0}],
    }[case]
    path = _write(tmp_path / "results.json", content)
    with pytest.raises(DataError, match=message) as info:
        score_submission(path, mini_suite.decathlon_root / "annotations")
    assert str(path) in str(info.value)


def test_scorer_needs_labelled_test_files(mini_suite, tmp_path, svhn_truth):
    path = _write(tmp_path / "results.json", [{"image_id": i, "category_id": c} for i, c in svhn_truth])
    stripped_only = tmp_path / "annotations"
    stripped_only.mkdir()
    (stripped_only / "svhn_test_stripped.json").write_bytes(
        (mini_suite.decathlon_root / "annotations" / "svhn_test_stripped.json").read_bytes())
    with pytest.raises(DataError, match=r"no <domain>_test.json in .*annotations"):
        score_submission(path, stripped_only)
    with pytest.raises(DataError, match="does not exist"):
        score_submission(path, tmp_path / "nowhere")
    with pytest.raises(DataError, match="submission .*absent.json does not exist"):
        score_submission(tmp_path / "absent.json", mini_suite.decathlon_root / "annotations")
    _write(stripped_only / "svhn_test.json", {"images": [{"id": 1}], "annotations": []})
    with pytest.raises(DataError, match="svhn_test.json"):
        score_submission(path, stripped_only)


def test_submission_writer_rejects_bad_predictions(tmp_path):
    out = tmp_path / "results.json"
    with pytest.raises(DataError, match="3 image ids but 2 class indices"):
        write_submission({"svhn": ([1, 2, 3], [0, 1])}, out)
    with pytest.raises(DataError, match="class index 5 of image 2 .* outside 0..2"):
        write_submission({"svhn": ([1, 2], [0, 5], [10, 11, 12])}, out)
    with pytest.raises(DataError, match="image id 7 is predicted twice"):
        write_submission({"svhn": ([7], [0]), "dtd": ([7], [0])}, out)
    with pytest.raises(UnknownNameError, match="unknown Decathlon domain 'cubs'"):
        write_submission({"cubs": ([1], [0])}, out)
    assert not out.exists()  # nothing written on error
    assert submission_entries({"dtd": ([40200001], [2])}) == [{"image_id": 40200001, "category_id": 40000003}]
    entries = submission_entries({"x": ([5], [1])}, categories={"x": [7, 9]})
    assert entries == [{"image_id": 5, "category_id": 9}]


def test_zip_is_byte_identical_for_identical_predictions(tmp_path):
    for name in ("a", "b"):
        write_submission({"dtd": ([40200001, 40200002], [0, 1])}, tmp_path / name / "results.json",
                         zip_path=tmp_path / name / "results.zip")
    assert (tmp_path / "a" / "results.zip").read_bytes() == (tmp_path / "b" / "results.zip").read_bytes()


# --------------------------------------------------------------------------- command line errors


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    bad = _write(tmp_path / "results.json", {"not": "a list"})
    assert main(["score", "--submission", str(bad), "--annotations", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path) in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    with pytest.raises(DataError):
        main(["--debug", "score", "--submission", str(bad), "--annotations", str(tmp_path)])
    with pytest.raises(DataError):
        main(["score", "--debug", "--submission", str(bad), "--annotations", str(tmp_path)])
    assert main(["generate", "--out", str(tmp_path / "g"), "--image-size", "4"]) == 2
    assert "image_size=4" in capsys.readouterr().err
    baseline = _write(tmp_path / "baseline.json", "[1, 2]")
    assert main(["score", "--submission", str(bad), "--annotations", str(tmp_path),
                 "--baseline", str(baseline)]) == 2
    assert "baseline" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["frobnicate"])  # argparse: unknown subcommand
