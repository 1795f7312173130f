"""Parameter counts and the paper's "#par" column.

How "#par" is counted here: every unique parameter tensor the model needs at test time for the new
domain (shared tensors once; frozen pretrained weights included, since the model cannot run without
them; BN running statistics excluded, as buffers are not parameters), divided by the parameter count of
one plain backbone (conv + BN affine + classifier). So standard fine-tuning is 1.0 (up to the classifier
size), and SpotTune is about 2x the routable blocks plus the policy network: about 2.2 for ResNet-26
with a 12-block policy network. The count is a property of the model object, so every method is counted
the same way.

What a method must *store* per domain (:func:`stored_parameters`, the per-domain part of the tables'
#par) is its trainable parameters, each counted as ``bits / 32`` of a float32 value, where ``bits`` is what
one value takes on disk. A module declares the exceptions in a ``storage_bits`` attribute, a mapping from
its own parameter names (not recursive) to bits: PiggyBack's real-valued mask scores are stored as the
thresholded binary mask (1 bit), LwF's source classifier is trained but not needed for the new domain's
predictions (0 bits). Every parameter without such a declaration counts 32 bits.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

FLOAT_BITS = 32  # one stored float32 value: the unit of every count
STORAGE_BITS = "storage_bits"  # the module attribute: {parameter name: bits per stored value}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) numbers of parameters, each shared tensor counted once."""
    total = trainable = 0
    for p in model.parameters():  # nn.Module.parameters() already yields shared tensors once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def storage_bits(module: nn.Module) -> Mapping[str, int]:
    """The ``storage_bits`` declaration of `module` (its own parameters stored with other than 32 bits)."""
    return getattr(module, STORAGE_BITS, {})


def stored_parameters(model: nn.Module) -> float:
    """What `model` stores for its domain, in float32 values: the sum over trainable parameters (each shared
    tensor once) of ``numel * bits / 32``, ``bits`` from the owning module's ``storage_bits`` (default 32).

    E.g. a ResNet-26 with a 1-bit mask over each of its 5.8 M convolution weights and a new 100-class
    classifier stores 5.8e6 / 32 + 25,700 values.
    """
    seen: set[int] = set()
    stored = 0.0
    for module in model.modules():
        bits = storage_bits(module)
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            stored += p.numel() * bits.get(name, FLOAT_BITS) / FLOAT_BITS
    return stored


def par_ratio(model: nn.Module, backbone_params: int) -> float:
    """The "#par" of `model`: its unique parameters divided by `backbone_params`.

    `backbone_params` is the parameter count of one plain backbone with the same classifier, e.g.
    ``count_parameters(create_backbone(name, num_classes, width=w))[0]``.
    """
    if backbone_params <= 0:
        raise ValueError(f"backbone_params must be > 0, got {backbone_params}")
    return count_parameters(model)[0] / backbone_params
