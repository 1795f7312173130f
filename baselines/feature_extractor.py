"""Feature extractor: the pretrained network frozen, only a new classifier trained."""

from __future__ import annotations

from torch import nn

from baselines.common import replace_classifier, set_trainable
from decathlon.methods import Method


class FeatureExtractor(Method):
    """Pretrained network frozen (weights and BN statistics); a new linear classifier is trained."""

    name = "feature-extractor"
    label = "Feature extractor"
    summary = "pretrained network frozen (BN statistics too); only a new classifier is trained"

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        set_trainable([backbone], False)
        return replace_classifier(backbone, num_classes)  # the new classifier is trainable

    def train_mode(self, model: nn.Module, config) -> None:
        model.eval()  # the frozen features keep their pretrained BN statistics
        model.classifier.train()


METHODS = (FeatureExtractor(),)
