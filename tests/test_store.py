"""The results store: built from run directories, saved atomically, loaded back unchanged."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from decathlon.errors import DataError
from decathlon.store import JOB_COLUMNS, POLICY_COLUMNS, build_store, load_store, scan_runs


def _result(method: str, domain: str, seed: int, top1: float) -> dict:
    return {"suite": "mini", "method": method, "domain": domain, "seed": seed, "protocol": "trainval->test",
            "preset": "faithful", "schedule": "faithful", "eval_split": "test", "config_hash": "0123456789",
            "top1": top1, "loss": 1.5, "params_total": 1000, "params_trainable": 600, "par": 1.0,
            "wall_time_s": 3.0, "images_per_s": 80.0, "epochs": 2, "code_version": "abc1234",
            "eval_images": 80}


def _write_run(out, method, domain, seed, top1, policy=None, finished=True):
    run_dir = out / "runs" / "mini" / method / domain / f"s{seed}" / "trainval-test" / "0123456789"
    run_dir.mkdir(parents=True)
    (run_dir / "epochs.jsonl").write_text('{"epoch": 1}\n')
    if finished:
        (run_dir / "result.json").write_text(json.dumps(_result(method, domain, seed, top1)))
    if policy is not None:
        (run_dir / "policy.json").write_text(json.dumps(policy))
    return run_dir


POLICY = {"block_fraction": [0.25, 0.5, 1.0], "histogram": [0.0, 0.5, 0.5, 0.0],
          "per_class": {"1": [0.0, 0.5, 1.0], "0": [0.5, 0.5, 1.0]}}


@pytest.fixture
def out(tmp_path):
    _write_run(tmp_path, "finetune", "svhn", 0, 50.0)
    _write_run(tmp_path, "finetune", "svhn", 1, 60.0)
    _write_run(tmp_path, "spottune", "dtd", 0, 40.0, policy=POLICY)
    _write_run(tmp_path, "spottune", "svhn", 0, 0.0, finished=False)  # partial: not in the store
    return tmp_path


def test_one_row_per_finished_job_with_every_result_key(out):
    store = build_store(out)
    jobs = store.jobs
    assert len(jobs) == 3
    assert list(jobs.columns[:len(JOB_COLUMNS)]) == list(JOB_COLUMNS)
    assert "eval_images" in jobs.columns  # keys beyond the contract are kept
    row = jobs.set_index("job_id").loc["mini/finetune/svhn/s1/trainval-test/0123456789"]
    assert row["top1"] == 60.0 and row["seed"] == 1 and row["method"] == "finetune"
    assert row["run_dir"] == str(out / "runs" / "mini/finetune/svhn/s1/trainval-test/0123456789")
    assert sorted(jobs["top1"]) == [40.0, 50.0, 60.0]


def test_policy_is_long_format(out):
    policy = build_store(out).policy
    assert list(policy.columns) == list(POLICY_COLUMNS)
    assert set(policy["job_id"]) == {"mini/spottune/dtd/s0/trainval-test/0123456789"}
    blocks = policy[policy.kind == "block"]
    assert blocks["index"].tolist() == [0, 1, 2] and blocks["value"].tolist() == [0.25, 0.5, 1.0]
    assert (blocks["class_index"] == -1).all()
    hist = policy[policy.kind == "histogram"]
    assert hist["index"].tolist() == [0, 1, 2, 3] and hist["value"].sum() == pytest.approx(1.0)
    per_class = policy[policy.kind == "class_block"]
    assert per_class["class_index"].tolist() == [0, 0, 0, 1, 1, 1]  # sorted numerically
    assert per_class[per_class.class_index == 0]["value"].tolist() == [0.5, 0.5, 1.0]
    assert len(policy) == 3 + 4 + 6
    assert set(policy["method"]) == {"spottune"} and set(policy["domain"]) == {"dtd"}
    assert policy["class_name"].isna().all()  # a run without recorded names: none invented


def test_policy_rows_carry_the_class_names(tmp_path):
    _write_run(tmp_path, "spottune", "dtd", 0, 40.0, policy=POLICY | {"classes": ["banded", "zigzag"]})
    for store in (build_store(tmp_path), load_store(tmp_path)):
        per_class = store.policy[store.policy.kind == "class_block"]
        assert dict(zip(per_class["class_index"], per_class["class_name"], strict=True)) == {
            0: "banded", 1: "zigzag"}
        assert store.policy.loc[store.policy.kind == "block", "class_name"].isna().all()


def test_saved_csvs_load_back_equal(out):
    built = build_store(out)
    assert (out / "store.csv").is_file() and (out / "policy.csv").is_file()
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary file
    loaded = load_store(out)
    pd.testing.assert_frame_equal(loaded.jobs, built.jobs, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.policy, built.policy, check_dtype=False)
    assert loaded.jobs["config_hash"].tolist() == ["0123456789"] * 3  # not read as a number


def test_load_store_builds_when_missing_and_empty_store_has_columns(tmp_path):
    store = load_store(tmp_path)
    assert store.jobs.empty and list(store.jobs.columns) == list(JOB_COLUMNS)
    assert store.policy.empty and list(store.policy.columns) == list(POLICY_COLUMNS)
    assert (tmp_path / "store.csv").is_file()
    assert list(load_store(tmp_path).jobs.columns) == list(JOB_COLUMNS)


def test_store_follows_the_run_dirs(out):
    assert len(build_store(out).jobs) == 3
    _write_run(out, "finetune", "dtd", 0, 70.0)
    assert len(build_store(out).jobs) == 4
    assert len(load_store(out).jobs) == 4


@pytest.mark.parametrize("content, match", [
    ("{not json", "cannot read JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_malformed_result_names_the_file(out, content, match):
    bad = _write_run(out, "l2-sp", "svhn", 0, 1.0, finished=False)
    (bad / "result.json").write_text(content)
    with pytest.raises(DataError, match=match) as info:
        scan_runs(out)
    assert str(bad / "result.json") in str(info.value)


def test_malformed_policy_names_the_file(out):
    run_dir = _write_run(out, "random-policy", "svhn", 0, 1.0, policy={"block_fraction": 3})
    with pytest.raises(DataError, match="block values must be a list") as info:
        scan_runs(out)
    assert str(run_dir / "policy.json") in str(info.value)


def test_inference_cost_column_is_missing_for_old_runs_never_zero(tmp_path):
    _write_run(tmp_path, "finetune", "svhn", 0, 50.0)  # written before the cost was measured
    new = _write_run(tmp_path, "finetune", "dtd", 0, 40.0)
    result = json.loads((new / "result.json").read_text())
    (new / "result.json").write_text(json.dumps(result | {"gflops_per_image": 0.125}))
    for store in (build_store(tmp_path), load_store(tmp_path)):
        cost = store.jobs.set_index("domain")["gflops_per_image"]
        assert cost["dtd"] == 0.125 and pd.isna(cost["svhn"])
    (new / "result.json").write_text(json.dumps(result))  # no run has it: the column is still there
    assert build_store(tmp_path).jobs["gflops_per_image"].isna().all()
