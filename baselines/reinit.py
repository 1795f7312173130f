"""Copy the bottom of the pretrained network, re-initialise its top k blocks (Chu et al., 2016).

In the notation of Chu et al. ("Best Practices for Fine-Tuning Visual Classifiers to New Domains"),
``FT(rest)R(top k)`` copies every layer below the top `k` residual blocks and fine-tunes it, while the top
`k` blocks, the head and a new classifier are randomly initialised and learned; ``F(rest)R(top k)`` does
the same with the copied layers frozen (weights and BN statistics). ``FT`` and ``F`` themselves (copy
everything but the classifier) are the ``finetune`` and ``feature-extractor`` baselines.

These methods belong to the best-practices analysis (:mod:`decathlon.analysis.sweep`), which runs them
through the engine in its own run directories; their ``settings`` name no table family, so the main
job plan never schedules them.
"""

from __future__ import annotations

from torch import nn

from baselines.common import frozen_modules_eval, replace_classifier, set_trainable
from decathlon.errors import ConfigError
from decathlon.methods import Method

# Not a table family: `decathlon.jobs.build_plan` schedules a method only on domains of its settings.
ANALYSIS_SETTING = "analysis"


def reinitialise(modules: list[nn.Module]) -> None:
    """Fresh random weights for `modules`: the backbone's own initialisation (He-normal convolutions,
    BN weight 1 / bias 0, BN running statistics reset; other layers their PyTorch default)."""
    from decathlon.networks.resnet import init_weights

    for module in modules:
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()  # BatchNorm: affine and running statistics; Linear/Conv: PyTorch defaults
        init_weights(module)


class CopyReinit(Method):
    """``FT(rest)R(top k)`` (`freeze` False) or ``F(rest)R(top k)`` (`freeze` True)."""

    routing = False
    settings = (ANALYSIS_SETTING,)

    def __init__(self, k: int, freeze: bool):
        if k < 1:
            raise ValueError(f"CopyReinit: k must be >= 1 (k=0 is finetune / feature-extractor), got {k}")
        self.k = k
        self.freeze = freeze
        rest = "F(rest)" if freeze else "FT(rest)"
        self.notation = f"{rest}R(top{k})"
        self.name = f"reinit-{k}-{'freeze' if freeze else 'tune'}"
        copied = "frozen" if freeze else "fine-tuned"
        self.summary = (f"{self.notation}: top {k} block(s), head and classifier re-initialised; the copied "
                        f"layers below {copied} (best-practices analysis)")

    def top_parts(self, model: nn.Module) -> list[nn.Module]:
        """The re-initialised part: the top `k` blocks and the head (the classifier is new anyway)."""
        return [*list(model.blocks)[len(model.blocks) - self.k:], model.head]

    def copied_parts(self, model: nn.Module) -> list[nn.Module]:
        """The copied part: the stem and every block below the top `k`."""
        return [model.stem, *list(model.blocks)[: len(model.blocks) - self.k]]

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        if self.k > len(backbone.blocks):
            raise ConfigError(f"method {self.name!r} re-initialises {self.k} blocks; backbone "
                              f"{config.backbone!r} has {len(backbone.blocks)}")
        reinitialise(self.top_parts(backbone))
        if self.freeze:
            set_trainable(self.copied_parts(backbone), False)
        return replace_classifier(backbone, num_classes)

    def train_mode(self, model: nn.Module, config) -> None:
        model.train()
        if self.freeze:  # frozen copied layers keep their pretrained BN statistics
            frozen_modules_eval(self.copied_parts(model))


METHODS = (CopyReinit(1, False), CopyReinit(3, False), CopyReinit(1, True), CopyReinit(3, True))
