"""Safe import of the official checkpoints (decathlon.networks.official, spottune.official, convert).

Stand-ins of the official modules (tests/official_standins: ``models``, ``config_task``,
``spottune_models``, ``agent_net``) reproduce the official module structure and state_dict keys. They are
importable only while the files are built and saved; every load below runs with them gone, so nothing
but the restricted unpickler can make sense of the files.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import importlib
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from decathlon.errors import CheckpointError
from decathlon.networks.checkpoint import load_checkpoint
from decathlon.networks.factory import create_backbone
from decathlon.networks.official import (
    InertObject,
    LoadReport,
    RestrictedUnpickler,
    backbone_from_official,
    load_official_backbone,
    module_state,
    read_official,
    safe_load,
)
from decathlon.networks.resnet import ResNet26
from spottune.__main__ import main
from spottune.model import SpotTune
from spottune.official import SPOTTUNE_AGENT, load_official, spottune_from_official

STANDINS = Path(__file__).parent / "official_standins"
STANDIN_MODULES = ("config_task", "models", "spottune_models", "agent_net")
NUM_CLASSES = 10  # of the stand-in SpotTune network (the residual-adapters one has ImageNet's 1000)
BN_LAYERS_RESNET26 = 1 + 12 * 2 + 1  # stem, two per block, head


@contextmanager
def standins_importable():
    """Make the stand-in official modules importable under their official names, then remove them."""
    saved = {name: sys.modules.pop(name) for name in STANDIN_MODULES if name in sys.modules}
    sys.path.insert(0, str(STANDINS))
    try:
        yield {name: importlib.import_module(name) for name in STANDIN_MODULES}
    finally:
        sys.path.remove(str(STANDINS))
        for name in STANDIN_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def reference_sections() -> list[dict[str, tuple[int, ...]]]:
    """official-state-dict-keys.txt (a copy of the reference page) as one {key: shape} per network."""
    sections: list[dict[str, tuple[int, ...]]] = []
    for line in (STANDINS / "official-state-dict-keys.txt").read_text().splitlines():
        if line.startswith("### "):
            sections.append({})
        elif line.strip() and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            sections[-1][key] = tuple(ast.literal_eval(shape))
    return sections


def randomize(net: nn.Module, generator: torch.Generator) -> None:
    """Random BN statistics and affine parameters (convs keep their He init), so outputs discriminate."""
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var") or (name.endswith("weight") and t.dim() == 1):
                t.uniform_(0.5, 1.5, generator=generator)
            elif name.endswith(("running_mean", "bias")):
                t.normal_(0.0, 0.1, generator=generator)


def drop_num_batches_tracked(net: nn.Module) -> None:
    """Make a module look like one pickled by PyTorch < 0.4.1 (no num_batches_tracked buffers)."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            del module._buffers["num_batches_tracked"]


def save(obj: object, path: Path, fmt: str) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def _get_thnn_function_backend():
    """What PyTorch < 0.4 pickled for every module's ``_backend`` attribute (see Torch03Pickle)."""


class _ThnnBackend:
    def __reduce__(self):
        return _get_thnn_function_backend, ()


class Torch03Pickler(pickle.Pickler):
    """Pickles tensors and parameters the way PyTorch 0.3 did.

    Tensors: ``torch._utils._rebuild_tensor(storage, offset, size, stride)``; parameters:
    ``Parameter(data)`` followed by BUILD with ``(requires_grad, volatile, backward_hooks)``.
    """

    def reducer_override(self, obj):
        if isinstance(obj, nn.Parameter):
            return nn.Parameter, (obj.data,), (obj.requires_grad, False, OrderedDict())
        if type(obj) is torch.Tensor:
            return torch._utils._rebuild_tensor, (obj._typed_storage(), obj.storage_offset(),
                                                  tuple(obj.shape), obj.stride())
        return NotImplemented


class Torch03Pickle:
    """``pickle_module`` for torch.save's legacy writer producing a PyTorch 0.3 style file."""

    Pickler = Torch03Pickler
    dump = staticmethod(pickle.dump)


def save_like_torch03(net: nn.Module, path: Path) -> Path:
    """{'net': net} as PyTorch 0.3 wrote it: legacy format, old tensor/parameter reductions, a
    ``_backend`` attribute per module pickled as ``torch.nn.backends.thnn._get_thnn_function_backend()``,
    no num_batches_tracked (call drop_num_batches_tracked first)."""
    thnn = types.ModuleType("torch.nn.backends.thnn")
    thnn._get_thnn_function_backend = _get_thnn_function_backend
    _get_thnn_function_backend.__module__ = thnn.__name__
    for module in net.modules():
        module.__dict__["_backend"] = _ThnnBackend()
    sys.modules[thnn.__name__] = thnn  # only while pickling, so that pickle names the old function
    try:
        torch.save({"net": net}, path, pickle_module=Torch03Pickle, pickle_protocol=2,
                   _use_new_zipfile_serialization=False)
    finally:
        del sys.modules[thnn.__name__]
        for module in net.modules():
            del module.__dict__["_backend"]
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Stand-in official files (zip and legacy formats) and the stand-ins' own outputs on fixed inputs."""
    folder = tmp_path_factory.mktemp("official")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    policy = torch.tensor([[0, 1] * 6, [1, 1, 0] * 4], dtype=torch.float32)
    # the stand-ins initialise from the global generator: seed it without disturbing other tests
    with standins_importable() as m, torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ra = m["models"].resnet26([1000]).eval()
        net = m["spottune_models"].resnet26(NUM_CLASSES).eval()
        agent = m["agent_net"].resnet(24).eval()
        for module in (ra, net, agent):
            randomize(module, gen)
        agent_logits = agent(x)
        argmax_policy = agent_logits.view(2, 12, 2).argmax(-1).float()
        out = {
            "x": x, "policy": policy, "ra_logits": ra(x), "st_logits": net(x, policy),
            "agent_logits": agent_logits, "argmax_policy": argmax_policy,
            "st_argmax_logits": net(x, argmax_policy),
            "ra_zip": save(ra, folder / "resnet26_pretrained.pt", "zip"),
            "st_zip": save({"net": net, "agent": agent}, folder / "spottune_zip.t7", "zip"),
        }
        for module in (ra, net, agent):
            drop_num_batches_tracked(module)
        # the SpotTune code reads the pretrained file as checkpoint['net']
        out["ra_legacy"] = save({"net": ra, "acc": 59.9}, folder / "resnet26_pretrained.t7", "legacy")
        out["ra_torch03"] = save_like_torch03(ra, folder / "resnet26_pretrained_torch03.t7")
        out["st_legacy"] = save({"net": net, "agent": agent}, folder / "spottune_legacy.t7", "legacy")
    assert importlib.util.find_spec("spottune_models") is None, "stand-ins must not be importable any more"
    return out


# ---------------------------------------------------------------------------------------------------------
# the stand-ins are faithful


def test_standins_reproduce_the_official_state_dict_keys_and_shapes():
    expected = reference_sections()
    with standins_importable() as m:
        nets = [m["models"].resnet26([1000]), m["spottune_models"].resnet26(100), m["agent_net"].resnet(24)]
    assert len(expected) == len(nets) == 3
    for net, keys in zip(nets, expected, strict=True):
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == keys


# ---------------------------------------------------------------------------------------------------------
# loading reproduces the official outputs


@pytest.mark.parametrize("fmt", ["zip", "legacy", "torch03"])
def test_backbone_outputs_equal_the_official_network(official, fmt):
    model = load_official_backbone(official[f"ra_{fmt}"])
    assert isinstance(model, ResNet26) and not model.training
    assert model.classifier.out_features == 1000 and model.layers == (4, 4, 4) and model.width == 1.0
    with torch.no_grad():
        torch.testing.assert_close(model(official["x"]), official["ra_logits"], rtol=1e-4, atol=1e-5)
    assert "models" not in sys.modules and "config_task" not in sys.modules


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_spottune_outputs_equal_the_official_network_and_agent(official, fmt):
    model = load_official(official[f"st_{fmt}"])
    assert isinstance(model, SpotTune) and not model.training and model.policy_net is not None
    assert model.classifier.out_features == NUM_CLASSES and model.num_blocks == 12
    x = official["x"]
    with torch.no_grad():
        logits, used = model(x, official["policy"])
        torch.testing.assert_close(logits, official["st_logits"], rtol=1e-4, atol=1e-5)
        assert torch.equal(used, official["policy"])
        agent_logits = model.policy_net(x).reshape(2, 24)
        torch.testing.assert_close(agent_logits, official["agent_logits"], rtol=1e-4, atol=1e-5)
        # noise-free routing by the imported agent: index 1 is the fine-tuned (parallel_blocks) path
        logits, used = model(x)
        assert torch.equal(used, official["argmax_policy"])
        torch.testing.assert_close(logits, official["st_argmax_logits"], rtol=1e-4, atol=1e-5)
    assert "spottune_models" not in sys.modules and "agent_net" not in sys.modules


def test_frozen_and_tuned_blocks_come_from_blocks_and_parallel_blocks(official):
    file = read_official(official["st_zip"])
    model, _ = spottune_from_official(file)
    state = model.state_dict()
    assert torch.equal(state["blocks.5.conv2.weight"], file.net["blocks.1.1.conv2.1.weight"])
    tuned = file.net["parallel_blocks.2.3.bn2.running_var"]
    assert torch.equal(state["tuned_blocks.11.bn2.running_var"], tuned)
    assert torch.equal(state["policy_net.blocks.2.bn1.bias"], file.agent["blocks.2.0.bn1.bias"])
    assert torch.equal(state["head.bn.weight"], file.net["bn2.0.weight"])


@pytest.mark.parametrize("fmt, filled, counter", [("zip", 0, 7), ("legacy", BN_LAYERS_RESNET26, 0)])
def test_missing_num_batches_tracked_is_filled_with_zeros(official, fmt, filled, counter):
    file = read_official(official[f"ra_{fmt}"])
    assert file.kind == "residual_adapters" and file.classes == ("models.ResNet",)
    model, report = backbone_from_official(file)
    assert len(report.filled) == filled and report.ok
    assert all(key.endswith("num_batches_tracked") for key in report.filled)
    counters = {int(v) for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counters == {counter}


def test_agent_parallel_blocks_are_reported_as_ignored(official):
    file = read_official(official["st_legacy"])
    assert file.kind == "spottune"
    assert file.classes == ("spottune_models.ResNet", "agent_net.ResNet")
    _, report = spottune_from_official(file)
    assert report.ok and not report.unexpected and not report.mismatched
    assert len(report.ignored) == 3 * (2 + 2 * 4)  # 3 blocks x (2 convs + 2 BN x 4 tensors; no counters)
    assert all(SPOTTUNE_AGENT.ignored(k) for k in report.ignored)
    net_bn, agent_bn = 2 + 2 * 12 * 2, 2 + 3 * 2  # stem + head, then 2 BN per frozen / tuned / agent block
    assert len(report.filled) == net_bn + agent_bn
    assert "ignored" in report.summary()


def test_wrong_kind_of_file_names_the_right_loader(official):
    with pytest.raises(CheckpointError, match=r"spottune\.official\.load_official"):
        load_official_backbone(official["st_zip"])
    with pytest.raises(CheckpointError, match=r"decathlon\.networks\.load_official"):
        load_official(official["ra_zip"])


# ---------------------------------------------------------------------------------------------------------
# name and shape checks


def test_shape_mismatch_names_the_key_and_both_shapes(official):
    file = read_official(official["ra_zip"])
    net = dict(file.net)
    net["layer2.1.conv1.conv.weight"] = torch.zeros(128, 64, 3, 3)
    expected = r"blocks\.5\.conv1\.weight .*\(128, 64, 3, 3\).*\(128, 128, 3, 3\)"
    with pytest.raises(CheckpointError, match=expected):
        backbone_from_official(dataclasses.replace(file, net=net))


def test_missing_and_unexpected_keys_are_errors(official):
    file = read_official(official["ra_zip"])
    net = dict(file.net)
    del net["layer3.3.conv2.1.bns.0.running_var"]
    with pytest.raises(CheckpointError, match=r"missing key blocks\.11\.bn2\.running_var"):
        backbone_from_official(dataclasses.replace(file, net=net))
    # (a parallel_conv key would now make it a parallel-adapters network: a key of no reference module)
    net = dict(file.net, **{"layer1.0.conv1.extra.0.conv.weight": torch.zeros(64, 32, 1, 1)})
    with pytest.raises(CheckpointError, match=r"unexpected key layer1\.0\.conv1\.extra"):
        backbone_from_official(dataclasses.replace(file, net=net))


def test_load_report_check_lists_every_kind_of_problem():
    report = LoadReport(missing=("a.weight", "bn.num_batches_tracked"), filled=("bn.num_batches_tracked",),
                        unexpected=("extra.weight",), mismatched=(("c.weight", (1, 2), (3, 4)),))
    assert not report.ok
    assert report.errors() == ["c.weight (from ?) has shape (1, 2) in the file, the model expects (3, 4)",
                               "missing key a.weight", "unexpected key extra.weight"]
    with pytest.raises(CheckpointError, match="src: .*c.weight"):
        report.check("src")
    LoadReport(missing=("bn.num_batches_tracked",), filled=("bn.num_batches_tracked",)).check("src")


# ---------------------------------------------------------------------------------------------------------
# nothing from the file ever runs


class Payload:
    """Pickles as a call of `func(*args)`: what a malicious checkpoint does."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path) -> dict[str, object]:
    return {
        "posix.system": Payload(os.system, (f"touch {marker}",)),
        "builtins.exec": Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess.check_call": Payload(subprocess.check_call, (["touch", str(marker)],)),
        "functools.partial": Payload(functools.partial(os.system, f"touch {marker}"), ()),
    }


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("name", ["posix.system", "builtins.exec", "subprocess.check_call",
                                  "functools.partial"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, fmt, name):
    marker = tmp_path / "pwned"
    path = save({"net": payloads(marker)[name], "weights": torch.zeros(3)}, tmp_path / "evil.t7", fmt)
    with pytest.raises(CheckpointError, match=f"refused global {name}"):
        load_official(path)
    with pytest.raises(CheckpointError, match=f"refused global {name}"):
        load_official_backbone(path)
    assert not marker.exists()


def test_the_malicious_file_is_real(tmp_path):
    # the same file through an unrestricted torch.load does run the command
    marker = tmp_path / "pwned"
    path = save({"net": payloads(marker)["posix.system"]}, tmp_path / "evil.t7", "zip")
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_payload_inside_a_module_tree_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    net = nn.Sequential(nn.Linear(2, 2))
    net.hook = payloads(marker)["posix.system"]  # hidden in the module's __dict__
    path = save({"net": net}, tmp_path / "evil.t7", "legacy")
    with pytest.raises(CheckpointError, match="refused global posix.system"):
        read_official(path)
    assert not marker.exists()


def test_state_is_never_set_on_admitted_functions():
    import torch._utils

    # GLOBAL torch._utils._rebuild_parameter, then BUILD (None, {"__doc__": "x"}) = setattr on the function
    data = b"\x80\x02ctorch._utils\n_rebuild_parameter\nN}X\x07\x00\x00\x00__doc__X\x01\x00\x00\x00xs\x86b."
    with pytest.raises(CheckpointError, match="refused to set the state of a function"):
        RestrictedUnpickler(io.BytesIO(data)).load()
    doc = torch._utils._rebuild_parameter.__doc__
    assert doc != "x"
    try:
        pickle.loads(data)  # the stock unpickler does set it
        assert torch._utils._rebuild_parameter.__doc__ == "x"
    finally:
        torch._utils._rebuild_parameter.__doc__ = doc


def test_python2_names_and_protocol_1_module_pickles_are_understood():
    # Python 3 writes protocol <= 2 pickles with Python 2 names (__builtin__.set, copy_reg._reconstructor),
    # as the official files written by Python 2 have them
    data = pickle.dumps(nn.Sequential(nn.ReLU()), protocol=1)
    assert b"copy_reg\n_reconstructor" in data and b"__builtin__" in data
    net = RestrictedUnpickler(io.BytesIO(data)).load()
    assert isinstance(net, InertObject) and net.qualified_name == "torch.nn.modules.container.Sequential"
    assert not isinstance(net, nn.Module)
    assert net.state()["_modules"]["0"].qualified_name == "torch.nn.modules.activation.ReLU"
    assert module_state(net) == {}
    assert RestrictedUnpickler(io.BytesIO(pickle.dumps({"s": {1}}, protocol=2))).load() == {"s": {1}}


def test_data_parallel_wrapper_is_looked_through(tmp_path):
    wrapped = nn.DataParallel(nn.Sequential(nn.Linear(3, 2)))  # no GPU: a plain wrapper on the CPU
    path = save({"net": wrapped}, tmp_path / "dp.t7", "zip")
    state = module_state(safe_load(path)["net"])
    assert state.keys() == {"0.weight", "0.bias"}
    assert torch.equal(state["0.weight"], wrapped.module[0].weight.detach())


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_official(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated"])
def test_unreadable_files_raise_checkpoint_error_naming_the_path(tmp_path, content):
    path = tmp_path / "broken.t7"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.t7"):
        load_official(path)


def test_missing_file_and_foreign_content(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.t7 does not exist"):
        load_official_backbone(tmp_path / "nothing.t7")
    path = save({"net": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "foreign.pt", "zip")
    with pytest.raises(CheckpointError, match="not a residual-adapters ResNet"):
        read_official(path)


# ---------------------------------------------------------------------------------------------------------
# python -m spottune convert


def test_convert_backbone_round_trip(official, tmp_path, capsys):
    out = tmp_path / "resnet26_imagenet.pt"
    assert main(["convert", str(official["ra_legacy"]), str(out)]) == 0
    assert "residual_adapters" in capsys.readouterr().out
    checkpoint = load_checkpoint(out)  # torch.load(weights_only=True)
    assert checkpoint["config"]["model"] == "resnet26" and checkpoint["config"]["num_classes"] == 1000
    expected = load_official_backbone(official["ra_legacy"]).state_dict()
    assert checkpoint["model_state"].keys() == expected.keys()
    assert all(torch.equal(checkpoint["model_state"][k], v) for k, v in expected.items())
    # the converted file and the official one both serve as pretrained weights
    for weights in (out, official["ra_legacy"]):
        backbone = create_backbone("resnet26", 1000, weights=weights).eval()
        with torch.no_grad():
            torch.testing.assert_close(backbone(official["x"]), official["ra_logits"], rtol=1e-4, atol=1e-5)


def test_convert_spottune_round_trip(official, tmp_path, capsys):
    out = tmp_path / "spottune.pt"
    assert main(["convert", str(official["st_zip"]), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "spottune" in printed and "ignored" in printed
    checkpoint = load_checkpoint(out)
    assert checkpoint["config"]["model"] == "spottune" and checkpoint["config"]["layers"] == [4, 4, 4]
    expected = load_official(official["st_zip"]).state_dict()
    assert checkpoint["model_state"].keys() == expected.keys()
    assert all(torch.equal(checkpoint["model_state"][k], v) for k, v in expected.items())


def test_convert_errors_print_one_line_and_exit_2(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = save({"net": payloads(marker)["posix.system"]}, tmp_path / "evil.t7", "legacy")
    for source in (tmp_path / "missing.t7", evil):
        assert main(["convert", str(source), str(tmp_path / "out.pt")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and source.name in err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
    with pytest.raises(CheckpointError):
        main(["--debug", "convert", str(evil), str(tmp_path / "out.pt")])


def test_module_entry_point_exit_status(tmp_path):
    result = subprocess.run([sys.executable, "-m", "spottune", "convert", str(tmp_path / "missing.t7"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True,
                            cwd=Path(__file__).parent.parent, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "missing.t7 does not exist" in result.stderr
    assert "Traceback" not in result.stderr
