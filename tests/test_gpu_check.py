"""benchmarks/gpu_check.py on the CPU: its main on tiny sizes writes the report, the projection of
GPU-hours follows the real split sizes, and the gpu tests skip cleanly without CUDA."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # a dataclass resolves its annotations through its module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def test_main_on_tiny_sizes_writes_the_report(gpu_check, tmp_path, capsys):
    out = tmp_path / "report"
    code = gpu_check.main(["--device", "cpu", "--quick", "--batch", "2", "--images", "12", "--no-tests",
                           "--methods", "finetune", "feature-extractor", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["device"] == "cpu" and report["failed"] == [] and report["quick"]
    sections = report["sections"]
    # side by side: both memory formats for these methods, fp32 only (AMP exists on CUDA alone)
    assert [(r["method"], r["precision"], r["channels_last"]) for r in sections["train"]["rows"]] == [
        ("finetune", "fp32", True), ("finetune", "fp32", False),
        ("feature-extractor", "fp32", True), ("feature-extractor", "fp32", False)]
    assert all(r["images_per_s"] == pytest.approx(2 / r["seconds"]) for r in sections["train"]["rows"])
    train = sections["train"]["rows"]
    finetune = {r["channels_last"]: r["seconds"] for r in train if r["method"] == "finetune"}
    assert all(r["vs_finetune"] == pytest.approx(r["seconds"] / finetune[r["channels_last"]]) for r in train)
    assert [r["setting"] for r in sections["options"]["rows"]] == [name for name, _ in gpu_check.GPU_OPTIONS]
    assert {(r["model"], r["routing"]) for r in sections["eval"]["rows"]} == {
        ("plain ResNet-26 (one path)", "-"), ("dense two-path", "random-50%"),
        ("sparse routing", "random-50%"), ("dense two-path", "skewed"), ("sparse routing", "skewed")}
    assert [(r["path"], r["workers"]) for r in sections["data"]["rows"]] == [
        ("cache-build", 0), ("pil", 0), ("cache", 0)]
    assert all(r["images"] == 12 for r in sections["data"]["rows"])
    assert all(s["peak_mib"] > 0 for s in sections.values())
    projection = report["projection"]
    assert [(r["method"], r["precision"]) for r in projection["rows"]] == [
        ("spottune-running-ft", "fp32"), ("finetune", "fp32"), ("feature-extractor", "fp32")]
    assert "spottune (fp32)" in projection["missing"]  # not measured: left out, and said so
    assert projection["rows"][0]["train_hours"] == 0.0  # evaluation only
    assert projection["totals"]["fp32"] == pytest.approx(sum(r["hours"] for r in projection["rows"]))
    markdown = (out / "report.md").read_text()
    assert "## Projected GPU-hours" in markdown and "| finetune | fp32 | on |" in markdown
    assert "| vs finetune |" in markdown
    assert f"**total (fp32): {projection['totals']['fp32']:.1f} GPU-hours**" in markdown
    assert "GPU-hours" in capsys.readouterr().out


def test_projection_uses_the_real_split_sizes_and_input_sizes(gpu_check):
    # train + val of the 9 targets (decathlon.md), by training input: 64 px crops, 72 px whole images,
    # Daimler's 72 x 144; imagenet12 (the source) is not fine-tuned
    crop64 = (3334 + 3333) + (40000 + 10000) + (1880 + 1880) + (1020 + 1020) + (7585 + 1952)
    full72 = (31367 + 7842) + (17853 + 6492) + (47217 + 26040)
    daimler = 23520 + 5880
    per_epoch = crop64 + full72 * 72**2 / 64**2 + daimler * 72 * 144 / 64**2
    tests = 3333 + 10000 + 1880 + 12630 + 6149 + 8115 + 26032 + 3783 + 19600 * 2  # Daimler: 2x 72x72
    train = [{"method": "finetune", "precision": "fp32", "channels_last": True, "images_per_s": 1000.0},
             {"method": "finetune", "precision": "fp32", "channels_last": False, "images_per_s": 1.0}]
    evaluation = [{"model": "plain ResNet-26 (one path)", "routing": "-", "precision": "fp32",
                   "images_per_s": 500.0}]
    projection = gpu_check.project_gpu_hours(train, evaluation, epochs=110)
    (row,) = [r for r in projection["rows"] if r["method"] == "finetune"]
    assert row["train_hours"] == pytest.approx(110 * per_epoch / 1000 / 3600)
    assert row["eval_hours"] == pytest.approx(tests / 500 / 3600)
    assert projection["targets"] == 9 and "spottune (fp32)" in projection["missing"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the gpu tests run instead (gpu_check.py)")
def test_gpu_tests_skip_cleanly_without_cuda(gpu_check):
    outcome = gpu_check.run_gpu_tests()
    assert outcome["ok"] and outcome["returncode"] == 0, outcome["output_tail"]
    assert "skipped" in outcome["summary"] and "passed" not in outcome["summary"]
    assert outcome["skipped"] == ["needs a CUDA GPU (torch.cuda.is_available() is False)"]
