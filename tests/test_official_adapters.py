"""Import of residual-adapters networks with series or parallel adapters (decathlon.networks.official).

Stand-in files are written by the stand-in reference ``models`` (tests/official_standins) in each adapter
mode, for two tasks, as ``train_new_task_adapters.py`` saves them (``{'net', 'acc', 'epoch'}``, ``acc`` a
numpy float); every load runs with the stand-ins gone.
"""

from __future__ import annotations

import pickle
import types

import numpy as np
import pytest
import torch

from decathlon.errors import CheckpointError
from decathlon.networks import load_official
from decathlon.networks.adapters import AdapterResNet26
from decathlon.networks.checkpoint import load_checkpoint
from decathlon.networks.official import (
    build_converted,
    load_official_backbone,
    model_from_official,
    official_mode,
    read_official,
)
from spottune.__main__ import main
from tests.test_official import drop_num_batches_tracked, randomize, standins_importable

MODES = {"series_adapters": "series", "parallel_adapters": "parallel"}
CLASSES = [7, 5]  # two tasks: their classifiers differ in size, so task selection shows in the shapes
FACTOR = 0.25  # config_task.factor (width) of the stand-ins: 8/16/32/64 channels, fast to save and load


def _old_numpy_scalar(*args):
    """Marker: pickled under numpy 1's name ``numpy.core.multiarray.scalar`` (see _Numpy1Pickler)."""


class _Numpy1Pickler(pickle._Pickler):
    """Writes numpy scalars as numpy 1 (the reference code's time) did: ``numpy.core.multiarray.scalar``
    (the pure-Python pickler, whose dispatch table can be taught the old name)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def reducer_override(self, obj):
        if isinstance(obj, np.generic):
            return _old_numpy_scalar, (obj.dtype, obj.tobytes())
        return NotImplemented

    def save_function(self, obj, name=None):
        if obj is _old_numpy_scalar:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        self.save_global(obj, name)

    dispatch[types.FunctionType] = save_function


class _Numpy1Pickle:
    Pickler = _Numpy1Pickler
    dump = staticmethod(pickle.dump)


def _write(content, path, fmt):
    torch.save(content, path, pickle_module=_Numpy1Pickle, pickle_protocol=2,
               _use_new_zipfile_serialization=(fmt == "zip"))
    return path


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory):
    """{(mode, fmt): path} and {(mode, task): the stand-in's logits on `x`}, and `x`."""
    folder = tmp_path_factory.mktemp("adapters")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    files, logits = {}, {}
    with standins_importable() as m, torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for mode in MODES:
            m["config_task"].mode, m["config_task"].factor = mode, FACTOR
            net = m["models"].resnet26(CLASSES).eval()
            randomize(net, gen)
            for task in range(len(CLASSES)):
                m["config_task"].task = task
                logits[mode, task] = net(x)
            content = {"net": net, "acc": np.float64(80.61), "epoch": 119}
            files[mode, "zip"] = _write(content, folder / f"{mode}-zip.t7", "zip")
            drop_num_batches_tracked(net)  # PyTorch < 0.4.1
            files[mode, "legacy"] = _write(content, folder / f"{mode}-legacy.t7", "legacy")
    return files, logits, x


def test_standins_have_the_reference_key_layout(adapter_files):
    files, _, _ = adapter_files
    series = read_official(files["series_adapters", "zip"]).net
    parallel = read_official(files["parallel_adapters", "zip"]).net
    # models.py: bns[t] = Sequential(conv1x1(planes), BN); conv1x1.conv = Sequential(BN, Conv2d 1x1)
    assert series["layer1.0.conv1.bns.1.0.conv.1.weight"].shape == (16, 16, 1, 1)
    assert series["pre_layers_conv.bns.0.0.conv.0.running_var"].shape == (8,)
    assert series["layer3.3.conv2.1.bns.0.1.weight"].shape == (64,)
    # parallel_conv[t] = conv1x1(in_planes, planes, stride), its conv a Conv2d 1x1
    assert parallel["layer2.0.conv1.parallel_conv.1.conv.weight"].shape == (32, 16, 1, 1)
    assert parallel["pre_layers_conv.parallel_conv.0.conv.weight"].shape == (8, 3, 1, 1)
    assert parallel["layer2.0.conv1.bns.1.weight"].shape == (32,)
    assert {official_mode(series, files["series_adapters", "zip"]),
            official_mode(parallel, files["parallel_adapters", "zip"])} == set(MODES)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("task", [0, 1])
@pytest.mark.parametrize("mode", list(MODES))
def test_logits_equal_the_reference_model_for_each_task(adapter_files, mode, task, fmt):
    files, logits, x = adapter_files
    model = load_official(files[mode, fmt], task=task)
    assert isinstance(model, AdapterResNet26) and model.mode == MODES[mode]
    assert not model.training
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, CLASSES[task])
    torch.testing.assert_close(out, logits[mode, task], rtol=1e-5, atol=1e-5)
    other = logits[mode, 1 - task]
    assert out.shape != other.shape  # the other task's classifier was not taken


def test_missing_num_batches_tracked_is_filled(adapter_files):
    files, _, _ = adapter_files
    bn_layers = 1 + 12 * 2 + 1 + 1 + 12 * 2  # per task: every BN, and series adapters' inner BNs
    _, report = model_from_official(read_official(files["series_adapters", "legacy"]), task=1)
    assert len(report.filled) == bn_layers and all(k.endswith("num_batches_tracked") for k in report.filled)
    _, report = model_from_official(read_official(files["series_adapters", "zip"]), task=1)
    assert report.filled == ()
    # the other task's tensors are known and left out, not unexpected
    assert report.unexpected == () and any(".bns.0." in k for k in report.ignored)


@pytest.mark.parametrize("task", [2, -1])
def test_task_out_of_range_names_the_file_and_the_task_count(adapter_files, task):
    files, _, _ = adapter_files
    path = files["parallel_adapters", "zip"]
    with pytest.raises(CheckpointError, match=rf"{path.name}: task={task}, but the file holds 2 task\(s\)"):
        load_official(path, task=task)


def test_the_numpy_1_scalar_acc_is_admitted(adapter_files):
    files, _, _ = adapter_files
    raw = files["series_adapters", "legacy"].read_bytes()
    assert b"numpy.core.multiarray\nscalar" in raw and b"numpy._core" not in raw  # the old name, really
    assert isinstance(load_official(files["series_adapters", "legacy"]), AdapterResNet26)


def test_another_numpy_global_is_refused(tmp_path):
    class Payload:  # numpy.load would unpickle another file: never admitted
        def __reduce__(self):
            return np.load, (str(tmp_path / "other.npy"),)

    path = tmp_path / "ckpt.t7"
    torch.save({"net": {}, "acc": Payload(), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"refused global numpy\S*\.load"):
        load_official(path)


def test_the_plain_backbone_loader_names_the_right_loader(adapter_files):
    files, _, _ = adapter_files
    with pytest.raises(CheckpointError, match="with parallel_adapters.*decathlon.networks.load_official"):
        load_official_backbone(files["parallel_adapters", "zip"])


@pytest.mark.parametrize("mode", list(MODES))
def test_convert_writes_a_checkpoint_that_rebuilds_the_adapters_model(adapter_files, tmp_path, capsys, mode):
    files, logits, x = adapter_files
    target = tmp_path / "converted.pt"
    assert main(["convert", str(files[mode, "legacy"]), str(target), "--task", "1"]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    checkpoint = load_checkpoint(target)
    config = checkpoint["config"]
    assert (config["model"], config["adapters"], config["task"], config["num_classes"]) == (
        "adapter-resnet26", MODES[mode], 1, CLASSES[1])
    model = build_converted(config)
    model.load_state_dict(checkpoint["model_state"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), logits[mode, 1], rtol=1e-5, atol=1e-5)


def test_convert_refuses_a_task_out_of_range_in_one_line(adapter_files, tmp_path, capsys):
    files, _, _ = adapter_files
    assert main(["convert", str(files["series_adapters", "zip"]), str(tmp_path / "o.pt"), "--task", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task=5, but the file holds 2 task(s)" in err
