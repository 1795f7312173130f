"""Helpers shared by the baselines: new classifiers, freezing, BN-mode handling, parameter groups.

"Frozen" in a single-path baseline means frozen completely: ``requires_grad`` is off and the BN layers
of the frozen part stay in eval mode, so their running statistics keep their pretrained values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
