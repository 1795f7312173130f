"""Progressive neural networks (Rusu et al., 2016) adapted to fine-tuning.

Two columns of the same architecture: the pretrained column, frozen completely (weights and BN
statistics), and a new column trained on the target domain. Lateral connections: the input of the new
column's block l is ``new_{l-1} + A_l(frozen_{l-1})`` and the input of its head is
``new_L + A_{L+1}(frozen_L)``, where each adapter A is a learned bias-free 1x1 convolution, initialised
to zero (so training starts from the new column alone).

Initialisation of the new column (the paper does not say): ``config.progressive_init``
``"pretrained"`` (default) copies the pretrained weights, as every other fine-tuning baseline of the
comparison starts from them; ``"random"`` re-initialises it, as in the original progressive nets.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from baselines.common import new_classifier, set_trainable
from decathlon.errors import ConfigError
from decathlon.methods import Method

INITS = ("pretrained", "random")


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def _channels(module: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return module(x).shape[1]


class ProgressiveNet(nn.Module):
    """A frozen pretrained column plus a new column with 1x1 lateral adapters from the frozen one."""

    def __init__(self, backbone: nn.Module, num_classes: int, init: str, probe: torch.Tensor):
        super().__init__()
        self.frozen = backbone
        new = copy.deepcopy(backbone)
        if init == "random":
            _reset(new)
        self.stem, self.blocks, self.head = new.stem, new.blocks, new.head
        self.classifier = new_classifier(backbone, num_classes)
        self.feature_dim = backbone.feature_dim
        set_trainable([self.frozen], False)
        self.frozen.classifier = nn.Identity()  # the source head is not used
        # channel counts of each block's input (and of the head's input), found with a probe image
        widths = []
        backbone.eval()
        with torch.no_grad():
            x = backbone.stem(probe)
            for block in backbone.blocks:
                widths.append(x.shape[1])
                x = block(x)
            widths.append(x.shape[1])
        self.adapters = nn.ModuleList(nn.Conv2d(c, c, 1, bias=False) for c in widths)
        for adapter in self.adapters:
            nn.init.zeros_(adapter.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the frozen column needs no graph
            f = self.frozen.stem(x)
            frozen_inputs = []
            for block in self.frozen.blocks:
                frozen_inputs.append(f)
                f = block(f)
            frozen_inputs.append(f)
        h = self.stem(x)
        for block, adapter, f_in in zip(self.blocks, self.adapters, frozen_inputs, strict=False):
            h = block(h + adapter(f_in))
        h = h + self.adapters[-1](frozen_inputs[-1])
        return self.classifier(self.head(h))

    def train(self, mode: bool = True) -> ProgressiveNet:
        super().train(mode)
        self.frozen.eval()  # the frozen column keeps its pretrained BN statistics
        return self


class ProgressiveNets(Method):
    """Frozen pretrained column + new column (``config.progressive_init``) with lateral 1x1 adapters."""

    name = "progressive-nets"
    label = "Progressive neural nets"
    summary = "frozen pretrained column + new column (pretrained init) with zero-init 1x1 lateral adapters"

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        init = config.progressive_init
        if init not in INITS:
            raise ConfigError(f"progressive_init={init!r}; expected one of {', '.join(INITS)}")
        probe = torch.zeros(1, 3, 32, 32)  # any size the stem and blocks accept
        return ProgressiveNet(backbone, num_classes, init, probe)


METHODS = (ProgressiveNets(),)
