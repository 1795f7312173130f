"""Building a backbone by name and loading its weights from any supported file.

:func:`create_backbone` is the one place a pretrained network comes from: the registry of
:data:`BACKBONES` (``resnet26``, ``resnet50``, ``resnet101``), then weights matched by name with shape
checks from a harness checkpoint (:mod:`decathlon.networks.checkpoint`), a torchvision state_dict or an
official residual-adapters file (:mod:`decathlon.networks.official`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from decathlon.errors import CheckpointError, ConfigError, UnknownNameError
from decathlon.networks.checkpoint import read_harness_checkpoint
from decathlon.networks.official import load_official_backbone
from decathlon.networks.resnet import (
    TORCHVISION_WEIGHTS,
    Backbone,
    ResNet26,
    TorchvisionResNet,
    fetch_imagenet_state,
    load_matching,
    load_torchvision_state,
)


def load_weights_file(backbone: Backbone, name: str, path: str | Path) -> None:
    """Load a weights file into `backbone`: harness checkpoint, torchvision state_dict or official file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    kind, content = read_harness_checkpoint(path)
    if kind == "harness":
        load_matching(backbone, content["model_state"], source=str(path))
    elif kind == "state_dict" and isinstance(backbone, TorchvisionResNet):
        load_torchvision_state(backbone, content, source=str(path))
    elif isinstance(backbone, ResNet26):
        # not loadable with weights_only: the official pickled-module formats, imported safely there
        load_matching(backbone, load_official_backbone(path).state_dict(), source=str(path))
    else:
        raise CheckpointError(f"{path}: not a harness checkpoint nor a torchvision state_dict for {name}")
    backbone.weights_source = str(path)


# ---------------------------------------------------------------------------------------------------------
# registry


def _resnet26(num_classes: int, width: float) -> Backbone:
    return ResNet26(num_classes, width=width)


def _torchvision(arch: str) -> Callable[[int, float], Backbone]:
    def build(num_classes: int, width: float) -> Backbone:
        if width != 1.0:
            raise ConfigError(f"backbone {arch} has no width multiplier (width={width}); use width=1.0")
        return TorchvisionResNet(arch, num_classes)

    return build


BACKBONES: Mapping[str, Callable[[int, float], Backbone]] = MappingProxyType({
    "resnet26": _resnet26,
    "resnet50": _torchvision("resnet50"),
    "resnet101": _torchvision("resnet101"),
})


def create_backbone(name: str, num_classes: int, *, width: float = 1.0,
                    weights: str | Path | None = None) -> Backbone:
    """Build a backbone by registry name (``resnet26``, ``resnet50``, ``resnet101``).

    `weights`: None (random initialisation), ``"imagenet"`` (torchvision ResNets only: torchvision's
    weights API, needs the network or the torch hub cache), or a path to a harness checkpoint
    (:mod:`decathlon.networks.checkpoint`), a torchvision state_dict (torchvision ResNets) or an official
    residual-adapters file (ResNet-26, via :mod:`decathlon.networks.official`). Weights are matched by name
    with shape checks; the classifier is dropped when the class counts differ.
    """
    try:
        build = BACKBONES[name]
    except KeyError:
        raise UnknownNameError("backbone", name, BACKBONES) from None
    backbone = build(num_classes, width)
    if weights is None:
        return backbone
    if str(weights) == "imagenet":
        if not isinstance(backbone, TorchvisionResNet):
            raise ConfigError(f"weights='imagenet' is only available for {', '.join(TORCHVISION_WEIGHTS)}; "
                              f"for {name} pass the path of a pretrained checkpoint")
        load_torchvision_state(backbone, fetch_imagenet_state(name), source=f"torchvision {name} weights")
        backbone.weights_source = "imagenet"
        return backbone
    load_weights_file(backbone, name, weights)
    return backbone
