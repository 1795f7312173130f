"""The job plan: contents, ids, ordering of reuses and pretraining, and the dry run of run_all.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from decathlon import runner
from decathlon.config import RunConfig
from decathlon.domains import suite_domains
from decathlon.errors import ConfigError, UnknownNameError
from decathlon.jobs import PRETRAIN, Job, build_plan, pretrain_job, pretrained_path, waves
from decathlon.methods import all_methods, get_method
from decathlon.suites import domain_family, get_suite

ID = re.compile(r"^mini/[a-z0-9-]+/[a-z0-9-]+/s\d+/(trainval-test|train-val)/[0-9a-f]{10}$")


def _configs(**overrides) -> dict[str, RunConfig]:
    suite = get_suite("mini")
    return {f: RunConfig.from_dict({**suite.overrides(f), "data_root": f"/data/{f}", **overrides})
            for f in ("decathlon", "extra")}


def _domains(*names):
    return tuple(d for d in suite_domains("mini") if d.name in names)


def _plan(methods, domains, seeds=(0,), pretrain=None, out_dir=None, **overrides):
    return build_plan(suite="mini", methods=[get_method(m) for m in methods], domains=_domains(*domains),
                      seeds=seeds, configs=_configs(**overrides), pretrain=pretrain, out_dir=out_dir)


def test_plan_is_methods_x_domains_x_seeds_with_readable_unique_ids():
    jobs = _plan(["finetune", "spottune"], ["svhn", "dtd", "cubs"], seeds=(0, 1, 2))
    assert len(jobs) == 2 * 3 * 3
    ids = [j.job_id for j in jobs]
    assert len(set(ids)) == len(ids)
    assert all(ID.match(i) for i in ids), ids
    assert any(i.startswith("mini/finetune/svhn/s2/trainval-test/") for i in ids)
    combos = {(j.config.method, j.config.domain, j.config.seed) for j in jobs}
    assert combos == {(m, d, s) for m in ("finetune", "spottune") for d in ("svhn", "dtd", "cubs")
                      for s in (0, 1, 2)}
    # the extra stand-in gets the extra family's data root, the others the Decathlon one
    roots = {j.config.domain: j.config.data_root for j in jobs}
    assert roots == {"svhn": "/data/decathlon", "dtd": "/data/decathlon", "cubs": "/data/extra"}


def test_job_id_is_stable_and_names_the_settings():
    a = _plan(["finetune"], ["svhn"])[0]
    b = _plan(["finetune"], ["svhn"])[0]
    assert a.job_id == b.job_id
    assert a.job_id.startswith("mini/finetune/svhn/s0/trainval-test/")
    assert a.job_id.endswith(a.config.hash())
    assert a.run_dir("/out") == Path("/out/runs") / a.job_id
    other_epochs = _plan(["finetune"], ["svhn"], epochs=7)[0]
    assert other_epochs.job_id != a.job_id  # other settings, other job
    moved = {"decathlon": _configs()["decathlon"].replace(data_root="/x")}
    other_root = build_plan(suite="mini", methods=[get_method("finetune")], domains=_domains("svhn"),
                            seeds=(0,), configs=moved)
    assert other_root[0].job_id == a.job_id  # where the data lives does not change the job
    protocol = _plan(["finetune"], ["svhn"], protocol="train->val")[0]
    assert "/train-val/" in protocol.job_id


def test_methods_run_only_in_their_settings():
    everything = [m.name for m in all_methods().values()]
    jobs = _plan(everything, ["svhn", "cubs"])
    by_domain = {d: {j.config.method for j in jobs if j.config.domain == d} for d in ("svhn", "cubs")}
    for method in all_methods().values():
        for domain, spec in zip(("svhn", "cubs"), _domains("svhn", "cubs"), strict=True):
            runs = method.name in by_domain[domain]
            assert runs == (domain_family(spec) in method.settings), (method, domain)
    assert "finetune-resnet101" in by_domain["cubs"] and "finetune-resnet101" not in by_domain["svhn"]


def test_reusing_method_follows_its_source_which_is_added_when_not_selected():
    jobs = _plan(["spottune-running-ft"], ["svhn"], seeds=(0, 1))
    assert [j.config.method for j in jobs] == ["spottune"] * 2 + ["spottune-running-ft"] * 2
    position = {j.job_id: i for i, j in enumerate(jobs)}
    for job in jobs[2:]:
        source = next(j for j in jobs[:2] if j.config.seed == job.config.seed)
        assert job.source == source.job_id and source.job_id in job.needs
        assert position[source.job_id] < position[job.job_id]
        assert source.notes  # the dry run says why it is there
    selected = _plan(["spottune", "spottune-running-ft"], ["svhn"])
    assert [j.config.method for j in selected] == ["spottune", "spottune-running-ft"]
    assert not selected[0].notes
    assert [len(w) for w in waves(selected)] == [1, 1]


def test_pretraining_comes_first_and_every_transfer_job_starts_from_it(tmp_path):
    source = next(d for d in suite_domains("mini") if d.is_source)
    pre = pretrain_job(RunConfig.from_dict({**get_suite("mini").pretrain, "suite": "mini"}), source)
    jobs = _plan(["finetune", "spottune-running-ft"], ["imagenet12", "svhn"], pretrain=pre, out_dir=tmp_path)
    assert jobs[0] is pre and pre.kind == PRETRAIN and pre.job_id.startswith("mini/pretrain/imagenet12/s0/")
    weights = str(pretrained_path(pre, tmp_path))
    for job in jobs[1:]:
        assert pre.job_id in job.needs
        assert job.config.pretrained == weights
    levels = waves(jobs)
    assert levels[0] == (pre,)
    assert {j.config.method for j in levels[1]} == {"finetune", "spottune"}
    assert {j.config.method for j in levels[2]} == {"spottune-running-ft"}
    with pytest.raises(ValueError, match="out_dir"):
        _plan(["finetune"], ["svhn"], pretrain=pre)


def test_job_round_trips_through_its_json_form():
    job = _plan(["spottune-running-ft"], ["svhn"])[-1]
    back = Job.from_dict(job.to_dict())
    assert back == job and back.job_id == job.job_id
    assert job.to_dict()["config"]["milestones"] == list(job.config.milestones)


def test_waves_reject_cycles():
    a, b = _plan(["finetune"], ["svhn", "dtd"])
    a2 = Job(a.config, needs=(b.job_id,))
    b2 = Job(b.config, needs=(a.job_id,))
    with pytest.raises(ValueError, match="cycle"):
        waves([a2, b2])


# --------------------------------------------------------------------------------- command line

def test_parse_seeds_and_lists():
    assert runner.parse_seeds("0,1, 2") == (0, 1, 2)
    assert runner.parse_seeds("0-2,5") == (0, 1, 2, 5)
    with pytest.raises(ConfigError, match="--seeds"):
        runner.parse_seeds("a")


def test_set_values_are_typed_and_unknown_keys_fail(tmp_path):
    args = runner.get_args_parser().parse_args(["--set", "lr=1", "--set", "amp=false", "--epochs", "3",
                                                "--set", "milestones=[0.5]", "--set", "pretrained=null",
                                                "--set", "weight_decay=5e-4", "--set", "piggyback_lr=1e-3"])
    values = runner.user_overrides(args)
    assert values == {"lr": 1.0, "amp": False, "epochs": 3, "milestones": (0.5,), "pretrained": None,
                      "weight_decay": 5e-4, "piggyback_lr": 1e-3}  # YAML 1.1 reads 5e-4 as a string
    assert isinstance(values["lr"], float)
    for bad, match in ((["--set", "no_such_key=1"], "no_such_key"), (["--set", "epochs=two"], "epochs"),
                       (["--set", "epochs"], "KEY=VALUE"), (["--set", "method=finetune"], "--methods"),
                       (["--set", "width=-1"], "width must be > 0"), (["--width", "0"], "width must be > 0"),
                       (["--set", "eval_samples=-3"], "eval_samples"),
                       (["--set", "lwf_temperature=0"], "lwf_temperature=0"),
                       (["--set", "piggyback_lr=-0.0001"], "piggyback_lr=-0.0001"),
                       (["--set", "lwf_temperature=.nan"], "not a finite number"),
                       (["--set", "lr=inf"], "not a finite number"),
                       (["--set", "piggyback_threshold=0.05"], "must exceed piggyback_threshold=0.05"),
                       (["--set", "device=tpu"], "device='tpu'")):
        with pytest.raises(ConfigError, match=match):
            runner.user_overrides(runner.get_args_parser().parse_args(bad))
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 2\nbatch_size: 8\n")
    args = runner.get_args_parser().parse_args(["--config", str(config), "--epochs", "5"])
    assert runner.user_overrides(args) == {"epochs": 5, "batch_size": 8}  # the flag wins over the file
    config.write_text("epochs: 2\nnot_a_field: 1\n")
    with pytest.raises(ConfigError, match="not_a_field"):
        runner.user_overrides(runner.get_args_parser().parse_args(["--config", str(config)]))


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = runner.main(["--dry-run", "--out", str(out), "--methods", "finetune,spottune-running-ft",
                        "--domains", "svhn,dtd", "--seeds", "0,1", "--epochs", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mini suite" in printed  # the default suite is announced
    ids = re.findall(r"mini/[a-z0-9-]+/[a-z0-9-]+/s\d/trainval-test/[0-9a-f]{10}", printed)
    # pretrain + (finetune + spottune + running-ft) x 2 domains x 2 seeds
    assert len(set(ids)) == 1 + 3 * 2 * 2
    assert ids[0].startswith("mini/pretrain/imagenet12/s0/")
    assert not out.exists()


def test_unknown_names_and_missing_roots_give_one_line_errors(tmp_path, capsys):
    cases = [
        (["--methods", "nope"], "unknown method 'nope'; known methods: spottune"),
        (["--domains", "nope"],
         "unknown domain 'nope' of suite 'mini'; known domains of suite 'mini': imagenet12"),
        (["--suite", "decathlon"], "--suite decathlon needs --data-root"),
        (["--suite", "decathlon", "--data-root", str(tmp_path / "missing")], "no such directory"),
        (["--suite", "decathlon", "--data-root", str(tmp_path)], "needs --pretrained"),
        (["--methods", "finetune-resnet101", "--domains", "svhn"], "the selection is empty"),
    ]
    for argv, message in cases:
        code = runner.main(argv + ["--dry-run", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2, argv
        assert message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(UnknownNameError):
        runner.main(["--methods", "nope", "--dry-run", "--debug"])
    # weights named by --set instead of --pretrained (e.g. torchvision's download) satisfy the suite's
    # flag requirement; the preflight then finds the empty data root (and ResNet-26 has no such weights)
    assert runner.main(["--suite", "decathlon", "--data-root", str(tmp_path), "--set", "pretrained=imagenet",
                        "--methods", "finetune", "--dry-run", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "needs --pretrained" not in err and f"data root {tmp_path} has no annotations/" in err


def test_list_methods_names_every_registered_method(capsys):
    assert runner.main(["--list-methods"]) == 0
    printed = capsys.readouterr().out
    for name in all_methods():
        assert name in printed
