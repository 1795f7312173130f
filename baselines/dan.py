"""Deep Adaptation Networks, DAN (Rosenfeld & Tsotsos, "Incremental Learning Through Deep Adaptation",
IEEE TPAMI 2018, arXiv:1705.04228).

Every convolution of the new domain uses filters that are learned linear combinations of the frozen source
filters: with the source kernel W (C_out x C_in x k x k) flattened to C_out rows, the new kernel is
``W' = C @ W`` for a learned controller matrix C (C_out x C_out) per layer. New BN layers and a new
classifier are trained with the controllers; the source weights never change. No public reference code
of the authors was found; the method follows the paper.

Interpretations taken:

- **Controllers start as the identity**, so the untrained model computes exactly the source network
  (with the source BN); the paper's initialisation is not stated in the material at hand.
- **No controller bias**: the paper's combined filters may carry a bias; in ResNets every convolution
  is followed by BN, whose shift subsumes it.
- **Every convolution** is adapted (ResNet-26's stem and blocks; torchvision's bottlenecks, stem and
  downsampling convolutions): the method is defined for any convolution.
- **New BN** = the source BN layers, trained (affine parameters) with their statistics re-estimated on the
  new domain, starting from the source values.
- **Recipe**: the harness's fine-tuning recipe (SGD, ``config.lr``, the domain's weight decay on every
  trained parameter, the run's schedule).
- **Cost**: ``W' = C @ W`` is one small matrix product per layer and forward, then one ordinary
  convolution; no per-image work.
- **#par**: per domain sum of C_out^2 over the convolutions plus BN and classifier, about 12 % of a
  ResNet-26 (published 2.17 over the ten domains).
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.common import BN_TYPES, FrozenConv2d, replace_classifier, replace_convs, set_trainable
from decathlon.methods import Method


class CombinedConv2d(FrozenConv2d):
    """A convolution whose kernel is ``controller @ weight`` (filters as rows): frozen ``weight`` (and
    bias), learned ``controller`` (out_channels x out_channels), initialised to the identity."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv)
        eye = torch.eye(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)
        self.controller = nn.Parameter(eye)

    def combined_weight(self) -> torch.Tensor:
        """The new domain's kernel, shape of ``weight``."""
        return (self.controller @ self.weight.flatten(1)).view_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.combined_weight()
        if self.weight.is_contiguous(memory_format=torch.channels_last):  # keep the model's memory format
            weight = weight.contiguous(memory_format=torch.channels_last)
        return self._conv_forward(x, weight, self.bias)


class DAN(Method):
    """New filters as learned combinations (identity-initialised controllers) of the frozen source filters,
    plus new BN and classifier."""

    name = "dan"
    label = "DAN"
    summary = "filters as learned linear combinations (controller, identity init) of the frozen source ones"

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        set_trainable([backbone], False)
        replace_convs(backbone, CombinedConv2d)
        set_trainable([m for m in backbone.modules() if isinstance(m, BN_TYPES)], True)
        return replace_classifier(backbone, num_classes)


METHODS = (DAN(),)
