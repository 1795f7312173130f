"""BN adapt: only the batch-normalisation layers (affine and statistics) and a new classifier trained."""

from __future__ import annotations

from torch import nn

from baselines.common import BN_TYPES, replace_classifier, set_trainable
from decathlon.methods import Method


class BNAdapt(Method):
    """Every BN layer's affine parameters are trained and its running statistics re-estimated on the
    target domain; convolutions keep their pretrained weights."""

    name = "bn-adapt"
    label = "BN adapt."
    summary = "only the BN layers (affine + statistics) and a new classifier are trained"
    settings = ("decathlon",)

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        set_trainable([backbone], False)
        set_trainable([m for m in backbone.modules() if isinstance(m, BN_TYPES)], True)
        return replace_classifier(backbone, num_classes)


METHODS = (BNAdapt(),)
