"""Compatibility: the backbones moved to :mod:`decathlon.networks` (the benchmark's shared networks)."""

from decathlon.networks.factory import BACKBONES, create_backbone, load_weights_file
from decathlon.networks.resnet import (
    TORCHVISION_WEIGHTS,
    Backbone,
    BasicBlock,
    DownsampleShortcut,
    ResNet26,
    TorchvisionResNet,
    init_weights,
    load_matching,
    load_torchvision_state,
)

__all__ = [
    "BACKBONES", "TORCHVISION_WEIGHTS", "Backbone", "BasicBlock", "DownsampleShortcut", "ResNet26",
    "TorchvisionResNet", "create_backbone", "init_weights", "load_matching", "load_torchvision_state",
    "load_weights_file",
]
