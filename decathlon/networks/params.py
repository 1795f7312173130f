"""Parameter counts and the paper's "#par" column.

How "#par" is counted here: every unique parameter tensor the model needs at test time for the new
domain (shared tensors once; frozen pretrained weights included, since the model cannot run without
them; BN running statistics excluded, as buffers are not parameters), divided by the parameter count of
one plain backbone (conv + BN affine + classifier). So standard fine-tuning is 1.0 (up to the classifier
size), and SpotTune is about 2x the routable blocks plus the policy network: about 2.2 for ResNet-26
with a 12-block policy network. The count is a property of the model object, so every method is counted
the same way.
"""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) numbers of parameters, each shared tensor counted once."""
    total = trainable = 0
    for p in model.parameters():  # nn.Module.parameters() already yields shared tensors once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def par_ratio(model: nn.Module, backbone_params: int) -> float:
    """The "#par" of `model`: its unique parameters divided by `backbone_params`.

    `backbone_params` is the parameter count of one plain backbone with the same classifier, e.g.
    ``count_parameters(create_backbone(name, num_classes, width=w))[0]``.
    """
    if backbone_params <= 0:
        raise ValueError(f"backbone_params must be > 0, got {backbone_params}")
    return count_parameters(model)[0] / backbone_params
