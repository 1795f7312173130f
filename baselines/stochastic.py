"""Two-path baselines with random routing: stochastic fine-tuning and the random policy.

Both use the SpotTune two-path model (frozen pretrained blocks + fine-tuned copies, same trainable set
and ``frozen_bn`` handling) without a policy network; the routing is drawn from the run's routing
generator (training) or the evaluation generator (evaluation), so it is reproducible.

Stochastic fine-tuning ("randomly sample 50% of the blocks to fine-tune"): at every training step,
exactly half of the blocks (``blocks // 2``) take the fine-tuned path, sampled per image
(``config.stochastic_per_image=True``, default) or once for the whole batch (False). At evaluation the
paper says nothing; ``config.stochastic_eval`` chooses:

- ``"mean"`` (default): every block outputs the average of its two paths, 0.5 * F(x) + 0.5 * F^(x), the
  expectation of the training-time routing (the weight-scaling rule of dropout, whose role the random
  routing plays here). It is deterministic and uses both trained paths as they were trained to be
  combined, which is the most defensible reading of a method whose randomness is a regulariser.
- ``"tuned"``: every block on its fine-tuned path (a single network, like SpotTune running-ft).
- ``"sampled"``: the training-time sampling (random predictions, seeded).

Random policy: the last three blocks always take the fine-tuned path; every other block is fine-tuned
per image with probability 0.5, at training and at evaluation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from baselines.common import network_group, trainable
from decathlon.errors import ConfigError
from decathlon.methods import Method, Output
from spottune.model import SpotTune

STOCHASTIC_EVALS = ("mean", "tuned", "sampled")
ALWAYS_TUNED = 3  # random policy: the last three blocks always run on the fine-tuned path


def _device_of(generator: torch.Generator | None) -> torch.device | None:
    # draws happen on the generator's device (a CUDA routing generator with config.device_rng)
    return generator.device if generator is not None else None


def half_of_blocks(batch: int, blocks: int, *, per_image: bool,
                   generator: torch.Generator | None) -> torch.Tensor:
    """(batch, blocks) in {0, 1} with exactly ``blocks // 2`` ones per row, uniformly at random
    (one row repeated for the whole batch when not `per_image`)."""
    rows = batch if per_image else 1
    scores = torch.rand(rows, blocks, generator=generator, device=_device_of(generator))
    chosen = scores.argsort(1)[:, : blocks // 2]
    policy = torch.zeros(rows, blocks, device=scores.device).scatter_(1, chosen, 1.0)
    return policy.expand(batch, -1) if not per_image else policy


def random_policy(batch: int, blocks: int, *, always: int, generator: torch.Generator | None) -> torch.Tensor:
    """(batch, blocks): the last `always` blocks 1, the others Bernoulli(0.5) per image."""
    policy = (torch.rand(batch, blocks, generator=generator, device=_device_of(generator)) < 0.5).float()
    policy[:, blocks - min(always, blocks):] = 1.0
    return policy


class _TwoPath(Method):
    """Common part: the two-path model without a policy network, one network parameter group."""

    routing = True

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        return SpotTune(backbone, num_classes, None, tau=config.tau, frozen_bn=config.frozen_bn)

    def param_groups(self, model: nn.Module, config, weight_decay: float) -> list[dict[str, Any]]:
        return [network_group(trainable(model), config, weight_decay)]


class StochasticFineTune(_TwoPath):
    """Two-path model; 50% of the blocks randomly fine-tuned at each step (see the module docstring)."""

    name = "stochastic-finetune"
    label = "Stochastic fine-tuning"
    summary = ("two-path model, a random half of the blocks fine-tuned per image and step; "
               "test: mean of both paths")

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        if config.stochastic_eval not in STOCHASTIC_EVALS:
            raise ConfigError(f"stochastic_eval={config.stochastic_eval!r}; "
                              f"expected one of {', '.join(STOCHASTIC_EVALS)}")
        model = super().build(backbone, spec, num_classes, config)
        model.per_image = config.stochastic_per_image
        model.stochastic_eval = config.stochastic_eval
        return model

    def forward(self, model: nn.Module, images: torch.Tensor, *,
                generator: torch.Generator | None = None) -> Output:
        batch, blocks = images.shape[0], model.num_blocks
        if model.training or model.stochastic_eval == "sampled":
            policy = half_of_blocks(batch, blocks, per_image=model.per_image, generator=generator)
            return Output(*model(images, policy.to(images.device)))
        if model.stochastic_eval == "tuned":
            return Output(*model(images, images.new_ones((batch, blocks))))
        half = images.new_full((batch, blocks), 0.5)
        logits, _ = model(images, half, sparse=False)  # dense mix: 0.5 * frozen + 0.5 * tuned
        return Output(logits, None)  # no hard routing to report


class RandomPolicy(_TwoPath):
    """Two-path model; last three blocks always fine-tuned, the others random per image (train and test)."""

    name = "random-policy"
    label = "Random policy"
    summary = "two-path model: last 3 blocks always fine-tuned, the others random per image (train and test)"

    def forward(self, model: nn.Module, images: torch.Tensor, *,
                generator: torch.Generator | None = None) -> Output:
        policy = random_policy(images.shape[0], model.num_blocks, always=ALWAYS_TUNED, generator=generator)
        return Output(*model(images, policy.to(images.device)))


METHODS = (StochasticFineTune(), RandomPolicy())
