"""Helpers shared by the baselines: new classifiers, freezing, BN-mode handling, parameter groups, replacing
every convolution (PiggyBack, DAN), constant copies of a network (LwF's teacher).

"Frozen" in a single-path baseline means frozen completely: ``requires_grad`` is off and the BN layers
of the frozen part stay in eval mode, so their running statistics keep their pretrained values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def new_classifier(backbone: nn.Module, num_classes: int) -> nn.Linear:
    """A freshly initialised linear classifier on the backbone's pooled features."""
    return nn.Linear(backbone.feature_dim, num_classes)


def replace_classifier(backbone: nn.Module, num_classes: int) -> nn.Module:
    """Give `backbone` a new classifier for `num_classes` classes (the source head is dropped)."""
    backbone.classifier = new_classifier(backbone, num_classes)
    return backbone


def set_trainable(modules: Iterable[nn.Module], trainable: bool) -> None:
    """Switch ``requires_grad`` of every parameter of `modules`."""
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(trainable)


def frozen_modules_eval(modules: Iterable[nn.Module]) -> None:
    """Put `modules` in eval mode (BN uses and keeps its running statistics)."""
    for module in modules:
        module.eval()


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of `model` that receive gradients."""
    return [p for p in model.parameters() if p.requires_grad]


def network_group(params: list[nn.Parameter], config: Any, weight_decay: float,
                  name: str = "network") -> dict[str, Any]:
    """One SGD parameter group with the network's learning rate and momentum."""
    return {"name": name, "params": params, "lr": config.lr, "weight_decay": weight_decay,
            "momentum": config.momentum}


def replace_convs(root: nn.Module, make: Callable[[nn.Conv2d], nn.Module]) -> int:
    """Replace every plain ``nn.Conv2d`` under `root` by ``make(conv)`` at the same name (so state_dict keys
    keep their prefixes); returns how many were replaced. Works for any architecture: ResNet-26's stem and
    blocks, torchvision's bottlenecks and their downsampling convolutions."""
    count = 0
    for module in list(root.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Conv2d:  # exactly Conv2d: an already replaced layer is left alone
                setattr(module, name, make(child))
                count += 1
    return count


class FrozenConv2d(nn.Conv2d):
    """A convolution taking over `conv`'s weight (and bias) frozen, with its geometry; subclasses add what
    they learn and compute their kernel from the frozen one in ``forward``."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode,
                         device=torch.device("meta"))  # placeholders, replaced right below
        self.weight = conv.weight.requires_grad_(False)
        self.bias = None if conv.bias is None else conv.bias.requires_grad_(False)


def constant_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of `module` in eval mode whose parameters are non-persistent buffers: it moves with
    the model (``.to``), is not a parameter (not counted, not optimised) and is not saved in checkpoints
    (the method rebuilds it from the pretrained weights)."""
    frozen = copy.deepcopy(module)
    for m in frozen.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                del m._parameters[name]
                m.register_buffer(name, p.detach(), persistent=False)
    return frozen.eval()
