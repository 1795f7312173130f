"""Fine-tuning the last k residual blocks (and the head); everything before them frozen."""

from __future__ import annotations

from torch import nn

from baselines.common import replace_classifier, set_trainable
from decathlon.methods import Method


class FineTuneLastK(Method):
    """Freeze the stem and all but the last `k` blocks; train those blocks, the head and a new classifier.

    The frozen part stays in eval mode (its BN statistics keep their pretrained values).
    """

    def __init__(self, k: int):
        self.k = k
        self.name = f"finetune-last-{k}"
        self.label = f"Fine-tuning last-{k}"
        self.summary = f"fine-tune only the last {k} residual block(s), the head and a new classifier"

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        set_trainable(self.frozen_parts(backbone), False)
        return replace_classifier(backbone, num_classes)

    def frozen_parts(self, model: nn.Module) -> list[nn.Module]:
        """The stem and every block before the last `k`."""
        return [model.stem, *list(model.blocks)[: len(model.blocks) - self.k]]

    def train_mode(self, model: nn.Module, config) -> None:
        model.train()
        for module in self.frozen_parts(model):
            module.eval()


METHODS = (FineTuneLastK(1), FineTuneLastK(2), FineTuneLastK(3))
