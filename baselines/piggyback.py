"""PiggyBack (Mallya, Davis & Lazebnik, "Piggyback: Adapting a Single Network to Multiple Tasks by Learning
to Mask Weights", ECCV 2018; reference code arunmallya/piggyback).

The pretrained weights stay fixed; every convolution learns one real-valued score per weight, thresholded
into a binary mask, and convolves with ``weight * mask``. The threshold's gradient is taken as the
identity (straight-through estimator), so the scores learn from the gradient of the masked weight.

Settings, from the reference code (``src/modnets/layers.py``, ``src/main.py``,
``src/scripts/run_piggyback_training.sh``), each a config field:

- scores initialised to ``piggyback_mask_scale`` 1e-2 (``--mask_init 1s --mask_scale 1e-2``): every
  weight starts kept, so the untrained model is the pretrained network;
- binariser: mask = 1 where score > ``piggyback_threshold`` 5e-3 (``DEFAULT_THRESHOLD``), else 0;
  backward passes the gradient through unchanged (``Binarizer.backward``);
- Adam for the scores (``--mask_adam``, ``piggyback_lr`` 1e-4) and, as in ``main.py``, Adam for the new
  classifier (``piggyback_classifier_lr`` 1e-4, the training script's ``LR_CLASS``); weight decay 0
  (``--weight_decay`` default 0.0, not passed by the script);
- BN layers frozen in eval mode (``--train_bn`` off in the script; ``main.py`` then zeroes their
  gradients and calls ``train_nobn``); ``piggyback_train_bn`` trains them (affine and statistics) with
  the scores' optimiser, as ``--train_bn`` does.

Interpretations taken:

- **Masked layers**: every convolution of the backbone (ResNet-26's stem and blocks; torchvision
  ResNet-50's bottlenecks, stem and downsampling convolutions), as the reference's ``ModifiedResNet``
  masks every ``Conv2d`` of its ``shared`` part; the classifier is new and trained unmasked.
- **Schedule**: the run's (``config.schedule``, ``config.epochs``) multiplies both learning rates. The
  reference trains 30 epochs with one x0.1 drop at epoch 15 (``--lr_mask_decay_every 15``), i.e.
  ``--set epochs=30 schedule=multistep milestones=[0.5]``; its batch is 32, the harness's 128.
- **Cost**: the mask is applied to the weight tensor once per forward (a few element-wise operations on
  the weights), then one ordinary convolution; no per-image work.
- **#par**: only the binary mask is stored per domain, so the scores declare ``storage_bits`` 1
  (:mod:`decathlon.networks.params`); about 1 + 9/32 plus the classifiers over the Decathlon (published
  1.28).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from baselines.common import BN_TYPES, FrozenConv2d, new_classifier, replace_convs, set_trainable, trainable
from decathlon.errors import ConfigError
from decathlon.methods import Method


def binarize(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """1.0 where ``scores > threshold``, else 0.0 (the forward value, exactly binary); the gradient with
    respect to `scores` is the incoming gradient unchanged (straight-through, the reference Binarizer)."""
    hard = (scores > threshold).to(scores.dtype)
    return hard + (scores - scores.detach())  # + exactly 0.0 in the forward pass; identity backward


class MaskedConv2d(FrozenConv2d):
    """A convolution with frozen ``weight`` (and bias) and learned mask ``scores`` of the weight's shape:
    ``conv(x, weight * binarize(scores, threshold))``."""

    storage_bits = {"scores": 1}  # stored as the binary mask (decathlon.networks.params)

    def __init__(self, conv: nn.Conv2d, *, mask_scale: float, threshold: float):
        super().__init__(conv)
        self.scores = nn.Parameter(torch.full_like(conv.weight, mask_scale, requires_grad=True))
        self.threshold = threshold

    def mask(self) -> torch.Tensor:
        """The binary mask of the forward pass (with the straight-through gradient to ``scores``)."""
        return binarize(self.scores, self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}"


class PiggyBack(Method):
    """Binary masks over the frozen pretrained convolutions, learned through real-valued scores."""

    name = "piggyback"
    label = "PiggyBack"
    summary = "learned binary masks (thresholded scores, straight-through) over the frozen weights; Adam"
    optimizer = "adam"

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        if config.piggyback_mask_scale <= config.piggyback_threshold:
            raise ConfigError(f"piggyback_mask_scale={config.piggyback_mask_scale} must exceed "
                              f"piggyback_threshold={config.piggyback_threshold}: the masks must start "
                              "keeping every weight (the untrained model is the pretrained network)")
        set_trainable([backbone], False)
        replace_convs(backbone, lambda conv: MaskedConv2d(conv, mask_scale=config.piggyback_mask_scale,
                                                          threshold=config.piggyback_threshold))
        if config.piggyback_train_bn:
            set_trainable([m for m in backbone.modules() if isinstance(m, BN_TYPES)], True)
        backbone.classifier = new_classifier(backbone, num_classes)
        return backbone

    def param_groups(self, model: nn.Module, config, weight_decay: float) -> list[dict[str, Any]]:
        classifier = {id(p) for p in model.classifier.parameters()}
        masks = [p for p in trainable(model) if id(p) not in classifier]
        return [{"name": "masks", "params": masks, "lr": config.piggyback_lr, "weight_decay": 0.0},
                {"name": "classifier", "params": list(model.classifier.parameters()),
                 "lr": config.piggyback_classifier_lr, "weight_decay": 0.0}]

    def train_mode(self, model: nn.Module, config) -> None:
        model.train()
        if not config.piggyback_train_bn:  # frozen BN keeps its pretrained statistics (train_nobn)
            for m in model.modules():
                if isinstance(m, BN_TYPES):
                    m.eval()


METHODS = (PiggyBack(),)
