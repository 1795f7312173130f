"""Standard fine-tuning, training from scratch, and fine-tuning a deeper backbone (ResNet-101)."""

from __future__ import annotations

import torch
from torch import nn

from baselines.common import replace_classifier
from decathlon.errors import ConfigError
from decathlon.methods import Method

# The deeper torchvision backbone fine-tuned by `finetune-resnet101` in the 224 px setting. The paper
# compares SpotTune-ResNet-50 (two paths: about twice the parameters of ResNet-50) with a ResNet-101 of
# about as many parameters.
DEEPER = {"resnet50": "resnet101", "resnet101": "resnet101"}
# ResNet-26 settings (the Decathlon and the generated suite, with no 224 px weights): the deeper
# variant has twice the blocks per stage, i.e. about twice the block parameters, like SpotTune.
DEEP_RESNET26_LAYERS = (8, 8, 8)


class FineTune(Method):
    """Every layer fine-tuned from the pretrained weights, with a new classifier."""

    name = "finetune"
    summary = "standard fine-tuning: every layer trained from the pretrained weights, new classifier"

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        return replace_classifier(backbone, num_classes)


class Scratch(FineTune):
    """The same network trained from a random initialisation."""

    name = "scratch"
    summary = "the same network trained from random initialisation (no pretrained weights)"
    pretrained = False
    settings = ("decathlon",)


class FineTuneResNet101(FineTune):
    """Standard fine-tuning of a deeper backbone with about SpotTune's parameter count.

    - ResNet-50 setting (the paper): torchvision ResNet-101, weights from ``config.pretrained_deep`` (a
      file), or torchvision's ImageNet weights when ``config.pretrained == "imagenet"``.
    - ResNet-26 setting (generated suite; no 224 px weights exist): ResNet-26 with twice the blocks per
      stage (:data:`DEEP_RESNET26_LAYERS`), initialised from ``config.pretrained_deep`` when given, else
      from the pretrained ResNet-26 by :func:`deepen_resnet26` (function-preserving: the added blocks
      start as identities), so that it starts from the same pretrained weights as every other method.
    """

    name = "finetune-resnet101"
    summary = "standard fine-tuning of the deeper backbone (ResNet-101 for ResNet-50; 2x-deep ResNet-26)"
    settings = ("extra",)

    def weights_flag(self, config) -> str:
        """``--pretrained-deep`` in the ResNet-50 setting: the ResNet-101 weights (``pretrained_deep``)."""
        return "--pretrained-deep" if config.backbone in DEEPER else "--pretrained"

    def create_backbone(self, config, num_classes: int) -> nn.Module:
        """The deeper backbone of the setting's ``config.backbone`` (called by the engine)."""
        from decathlon.networks.factory import create_backbone, load_weights_file
        from decathlon.networks.resnet import ResNet26

        if config.backbone == "resnet26":
            if config.pretrained_deep is not None:
                deep = ResNet26(num_classes, width=config.width, layers=DEEP_RESNET26_LAYERS)
                load_weights_file(deep, "resnet26-deep", config.pretrained_deep)
                return deep
            base = create_backbone("resnet26", num_classes, width=config.width, weights=config.pretrained)
            return deepen_resnet26(base, DEEP_RESNET26_LAYERS)
        if config.backbone not in DEEPER:
            raise ConfigError(f"finetune-resnet101 has no deeper variant of backbone {config.backbone!r}; "
                              f"known: resnet26, {', '.join(DEEPER)}")
        weights = config.pretrained_deep
        if weights is None and config.pretrained == "imagenet":
            weights = "imagenet"
        return create_backbone(DEEPER[config.backbone], num_classes, width=config.width, weights=weights)


def deepen_resnet26(base: nn.Module, layers: tuple[int, ...]) -> nn.Module:
    """A ResNet-26-family network with `layers` blocks per stage computing exactly `base`'s function.

    Stage s keeps `base`'s blocks first (weights copied by name), then the added stride-1 blocks, whose
    last BN scale is zero: such a block returns ReLU(x + 0) = x for its (non-negative, post-ReLU)
    input, i.e. starts as the identity and learns from there.
    """
    from decathlon.networks.resnet import ResNet26

    deep = ResNet26(base.classifier.out_features, width=base.width, layers=layers)
    if any(d < b for d, b in zip(layers, base.layers, strict=True)):
        raise ConfigError(f"deepen_resnet26: {layers} blocks per stage is not deeper than {base.layers}")
    deep.stem.load_state_dict(base.stem.state_dict())
    deep.head.load_state_dict(base.head.state_dict())
    deep.classifier.load_state_dict(base.classifier.state_dict())
    deep.weights_source = base.weights_source
    start_base = start_deep = 0
    for count_base, count_deep in zip(base.layers, layers, strict=True):
        for position in range(count_deep):
            block = deep.blocks[start_deep + position]
            if position < count_base:
                block.load_state_dict(base.blocks[start_base + position].state_dict())
            else:
                with torch.no_grad():
                    block.bn2.weight.zero_()
                    block.bn2.bias.zero_()
        start_base += count_base
        start_deep += count_deep
    return deep


METHODS = (FineTune(), Scratch(), FineTuneResNet101())
