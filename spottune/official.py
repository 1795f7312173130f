"""Safe import of official SpotTune checkpoints (gyhui14/spottune): no code from the file is executed.

An official SpotTune checkpoint is ``torch.save({"net": spottune_models.ResNet, "agent": agent_net.ResNet})``.
It is read by the benchmark's restricted reader (:func:`decathlon.networks.official.read_official`), then
mapped by name with shape checks onto the harness :class:`~spottune.model.SpotTune` by the rename tables
:data:`SPOTTUNE_NET` and :data:`SPOTTUNE_AGENT`. Residual-adapters files (the pretrained ResNet-26) are
the benchmark's shared networks and are imported by :mod:`decathlon.networks.official`;
:func:`convert_official` accepts both kinds.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from decathlon.errors import CheckpointError, HarnessError
from decathlon.networks.official import (
    _P,
    _SB,
    LoadReport,
    OfficialFile,
    RenameRule,
    RuleTable,
    _load_into,
    _num_classes,
    _width,
    read_official,
    write_converted,
)
from decathlon.networks.official import convert_official as convert_residual_adapters
from decathlon.networks.resnet import ResNet26
from spottune.model import SpotTune
from spottune.policy import PolicyNet


def _spottune_rules(prefix: str, tuned: bool) -> tuple[RenameRule, ...]:
    rules = [
        RenameRule(r"conv1\.weight", f"{prefix}stem.conv.weight"),
        RenameRule(rf"bn1\.{_P}", prefix + "stem.bn.{p}"),
        RenameRule(rf"bn2\.0\.{_P}", prefix + "head.bn.{p}"),
        RenameRule(r"linear\.(?P<p>weight|bias)", prefix + "classifier.{p}"),
    ]
    for official, harness in (("blocks", "blocks"), ("parallel_blocks", "tuned_blocks"))[: 2 if tuned else 1]:
        rules += [
            RenameRule(rf"{official}\.{_SB}\.conv1\.weight", prefix + harness + ".{i}.conv1.weight"),
            RenameRule(rf"{official}\.{_SB}\.bn1\.{_P}", prefix + harness + ".{i}.bn1.{p}"),
            RenameRule(rf"{official}\.{_SB}\.conv2\.1\.weight", prefix + harness + ".{i}.conv2.weight"),
            RenameRule(rf"{official}\.{_SB}\.bn2\.{_P}", prefix + harness + ".{i}.bn2.{p}"),
        ]
    return tuple(rules)


SPOTTUNE_NET = RuleTable(name="official spottune_models.ResNet", rules=_spottune_rules("", tuned=True))
# The official agent also builds parallel_blocks that its forward never uses (their first conv even
# takes 256 input channels); the harness policy network has no counterpart.
SPOTTUNE_AGENT = RuleTable(name="official agent_net.ResNet",
                           rules=_spottune_rules("policy_net.", tuned=False),
                           ignore=(r"parallel_blocks\..*",))


def spottune_from_official(official: OfficialFile) -> tuple[nn.Module, LoadReport]:
    """The harness SpotTune model (with its policy network, eval mode) of an official SpotTune file."""
    if official.kind != "spottune" or official.agent is None:
        raise CheckpointError(f"{official.path} is a {official.kind} file, not an official SpotTune "
                              "checkpoint; use decathlon.networks.load_official for it")
    net, agent = official.net, official.agent
    num_classes = _num_classes(net, "linear.weight", official.path)
    layers = SPOTTUNE_NET.stage_sizes(list(net))
    outputs = _num_classes(agent, "linear.weight", official.path)
    if outputs != 2 * sum(layers):
        raise CheckpointError(f"{official.path}: the agent has {outputs} outputs, expected 2 x {sum(layers)} "
                              "routable blocks")
    try:
        backbone = ResNet26(num_classes, width=_width(net, "conv1.weight", official.path), layers=layers)
        policy = PolicyNet(sum(layers), width=_width(agent, "conv1.weight", official.path))
    except HarnessError as e:
        raise CheckpointError(f"{official.path}: the file describes no network the harness can build "
                              f"({e})") from e
    model = SpotTune(backbone, num_classes, policy_net=policy)
    report = _load_into(model, [(net, SPOTTUNE_NET), (agent, SPOTTUNE_AGENT)],
                        f"{official.path} (official SpotTune)")
    return model, report


def load_official(path: str | Path) -> nn.Module:
    """An official SpotTune checkpoint (``{'net', 'agent'}``) as a harness SpotTune model in eval mode.

    ``blocks`` come from the official ``blocks``, ``tuned_blocks`` from ``parallel_blocks`` and
    ``policy_net`` from the agent (whose unused ``parallel_blocks`` are ignored).
    """
    return spottune_from_official(read_official(path))[0]


def convert_official(source: str | Path, target: str | Path,
                     task: int = 0) -> tuple[OfficialFile, LoadReport]:
    """Convert an official file (either kind) into the harness checkpoint format at `target`.

    Residual-adapters files (plain or with adapters; `task` picks the task of a multi-task network) are
    converted by :func:`decathlon.networks.official.convert_official`. The checkpoint's ``config`` says
    which harness model to build: ``model`` ("resnet26", "adapter-resnet26" or "spottune"),
    ``backbone``, ``num_classes``, ``width``, ``layers`` (and ``policy_width`` for SpotTune); ``extra``
    records the source file, its pickled classes and the load report.
    """
    official = read_official(source)
    if official.kind == "residual_adapters":
        return convert_residual_adapters(source, target, task)
    model, report = spottune_from_official(official)
    config = {"model": "spottune", "backbone": "resnet26", "num_classes": model.classifier.out_features,
              "width": _width(official.net, "conv1.weight", official.path),
              "layers": list(SPOTTUNE_NET.stage_sizes(list(official.net))),
              "policy_width": model.policy_net.width}
    write_converted(target, official, model, report, config)
    return official, report
