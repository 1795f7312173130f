"""One allow-list of inert types for every safe loader: a checkpoint in the residual-adapters training
script's own format (``{'net': ..., 'acc': numpy float, 'epoch': ...}``), also as a Python 2 pickle, loads;
code-executing payloads are still refused by both readers."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from decathlon.data import load_mean_std
from decathlon.domains import get_domain
from decathlon.errors import CheckpointError, DataError
from decathlon.networks.official import SAFE_GLOBALS, load_official_backbone
from decathlon.safe_pickle import INERT_GLOBALS
from tests.test_official import drop_num_batches_tracked, randomize, standins_importable

try:
    from numpy._core import multiarray
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core import multiarray


class _Py2Str(bytes):
    """Bytes that a Python 2 pickler writes as ``str`` (opcode SHORT_BINSTRING)."""


class _Py2Pickler(pickle._Pickler):
    """Writes numpy floats as Python 2 did: ``scalar(dtype, <str of the raw bytes>)``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: _Py2Str) -> None:
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + bytes(obj))
        self.memoize(obj)

    dispatch[_Py2Str] = save_py2_str

    def reducer_override(self, obj):
        if isinstance(obj, np.float64):
            return multiarray.scalar, (obj.dtype, _Py2Str(obj.tobytes()))
        return NotImplemented


class _Py2Pickle:
    Pickler = _Py2Pickler
    dump = staticmethod(pickle.dump)


FORMATS = ("zip", "legacy", "python2")


@pytest.fixture(scope="module")
def training_script_files(tmp_path_factory):
    """A residual-adapters ResNet-26 stand-in saved as the official training script saves it, in each
    format; returns ({format: path}, the stem convolution's weight)."""
    folder = tmp_path_factory.mktemp("training-script")
    files = {}
    with standins_importable() as m, torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = m["models"].resnet26([1000]).eval()
        randomize(net, torch.Generator().manual_seed(1))
        drop_num_batches_tracked(net)
        content = {"net": net, "acc": np.float64(59.93), "epoch": np.int64(12)}
        for fmt in FORMATS:
            files[fmt] = folder / f"ckpt-{fmt}.t7"
            if fmt == "python2":
                torch.save(content, files[fmt], pickle_module=_Py2Pickle, pickle_protocol=2,
                           _use_new_zipfile_serialization=False)
            else:
                torch.save(content, files[fmt], _use_new_zipfile_serialization=(fmt == "zip"))
        stem = dict(net.named_parameters())["pre_layers_conv.conv.weight"].clone()
    return files, stem


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_training_scripts_checkpoint_with_numpy_scalars_loads(training_script_files, fmt):
    files, stem = training_script_files
    raw = np.float64(59.93).tobytes()
    if fmt == "python2":  # the float's bytes as a Python 2 str: not valid UTF-8, readable as latin1 only
        assert pickle.SHORT_BINSTRING + bytes([8]) + raw in files[fmt].read_bytes()
    backbone = load_official_backbone(files[fmt])
    assert torch.equal(_stem_conv(backbone).weight, stem)


def _stem_conv(backbone):
    return next(m for m in backbone.stem.modules() if isinstance(m, torch.nn.Conv2d))


def test_one_allow_list_serves_both_readers_and_payloads_stay_refused(tmp_path):
    assert set(INERT_GLOBALS.items()) <= set(SAFE_GLOBALS.items())

    class Payload:
        def __reduce__(self):
            return os.system, ("true",)

    evil_stats = tmp_path / "decathlon_mean_std.pickle"
    evil_stats.write_bytes(pickle.dumps({"aircraftmean": Payload()}, protocol=2))
    with pytest.raises(DataError, match="refusing to load global (posix|os).system"):
        load_mean_std(tmp_path, get_domain("aircraft"))
    evil_net = tmp_path / "evil.t7"
    torch.save({"net": Payload(), "acc": np.float64(1.0)}, evil_net)
    with pytest.raises(CheckpointError, match="refused global (posix|os).system"):
        load_official_backbone(evil_net)
