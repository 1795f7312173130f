"""The SpotTune methods (registered through ``METHODS``).

- ``spottune``: the two-path model with a policy network trained jointly from the classification loss
  (straight-through Gumbel-Softmax). Evaluation: ``config.eval_policy`` "argmax" (noise-free, default) or
  "sampled" (Gumbel-Max, the reference behaviour; ``config.eval_samples`` samples are averaged).
- ``spottune-global-k``: the same plus ``lambda1 * (sum v - k)^2 + lambda2 * sum -v log v``. Evaluation
  uses one global policy for every image: the k blocks with the highest running fine-tuning frequency
  (an exponential moving average of v over the training steps, kept in the model's ``global_usage``
  buffer), so the unused path of every block can be dropped (:func:`spottune.global_k.export_compact`).
- ``spottune-running-ft``: the trained ``spottune`` checkpoint evaluated with every block on its
  fine-tuned path (no training).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from decathlon.errors import ConfigError
from decathlon.methods import Method, Output
from decathlon.networks.resnet import ResNet26
from spottune.global_k import global_k_losses
from spottune.model import SpotTune
from spottune.policy import decathlon_policy_net, small_policy_net

USAGE_MOMENTUM = 0.05  # weight of the newest batch in Global-k's running per-block usage (EMA)
POLICY_INPUT_SIZE = 112  # px: the 224 px setting's policy network sees the image downscaled (see policy.py)


def make_policy_net(backbone: nn.Module, config: Any) -> nn.Module:
    """The reference agent for ResNet-26 backbones; the downscaled small agent for the 224 px backbones."""
    num_blocks = len(backbone.blocks)
    if isinstance(backbone, ResNet26):
        return decathlon_policy_net(num_blocks, width=config.width)
    return small_policy_net(num_blocks, input_size=POLICY_INPUT_SIZE)


def split_groups(model: nn.Module, config: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Network group (reference SGD settings) and policy group (policy_lr, _momentum, _weight_decay)."""
    policy_ids = {id(p) for p in model.policy_net.parameters()} if model.policy_net is not None else set()
    network = [p for p in model.parameters() if p.requires_grad and id(p) not in policy_ids]
    groups = [{"name": "network", "params": network, "lr": config.lr, "weight_decay": weight_decay,
               "momentum": config.momentum}]
    if model.policy_net is not None:
        policy = [p for p in model.policy_net.parameters() if p.requires_grad]
        groups.append({"name": "policy", "params": policy,
                       "lr": config.policy_lr, "weight_decay": config.policy_weight_decay,
                       "momentum": config.policy_momentum})
    return groups


class SpotTuneMethod(Method):
    """SpotTune: per-image routing between frozen pretrained blocks and fine-tuned copies."""

    name = "spottune"
    summary = "SpotTune: a policy network routes each image via the frozen or fine-tuned copy of each block"
    routing = True

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        if config.eval_samples < 1:
            raise ConfigError(f"eval_samples={config.eval_samples}; expected >= 1")
        model = SpotTune(backbone, num_classes, make_policy_net(backbone, config), tau=config.tau,
                         frozen_bn=config.frozen_bn)
        model.eval_policy = config.eval_policy
        model.eval_samples = config.eval_samples if config.eval_policy == "sampled" else 1
        return model

    def param_groups(self, model: nn.Module, config, weight_decay: float) -> list[dict[str, Any]]:
        return split_groups(model, config, weight_decay)

    def forward(self, model: nn.Module, images: torch.Tensor, *,
                generator: torch.Generator | None = None) -> Output:
        samples = getattr(model, "eval_samples", 1)
        if model.training or samples == 1:
            logits, policy = model(images, generator=generator)
            return Output(logits, policy)
        # sampled evaluation: average the class probabilities of several routing samples (log of the mean)
        probs, first = 0.0, None
        for _ in range(samples):
            logits, policy = model(images, generator=generator)
            probs = probs + logits.float().softmax(1)
            first = policy if first is None else first
        return Output((probs / samples).log(), first)


class SpotTuneGlobalK(SpotTuneMethod):
    """SpotTune-Global-k: a Global-k penalty in training, one global k-block policy at evaluation."""

    name = "spottune-global-k"
    summary = "SpotTune-Global-k: penalties push all images onto the same k tuned blocks; global test policy"

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        num_blocks = len(backbone.blocks)
        if not 0 <= config.global_k <= num_blocks:
            raise ConfigError(f"global_k={config.global_k}; expected 0..{num_blocks} (the backbone's blocks)")
        model = super().build(backbone, spec, num_classes, config)
        model.global_k = config.global_k
        model.register_buffer("global_usage", torch.full((num_blocks,), 0.5))
        return model

    def forward(self, model: nn.Module, images: torch.Tensor, *,
                generator: torch.Generator | None = None) -> Output:
        if model.training:
            logits, policy = model(images, generator=generator)
            with torch.no_grad():
                model.global_usage.lerp_(policy.detach().float().mean(0), USAGE_MOMENTUM)
            return Output(logits, policy)
        return Output(*model(images, global_policy(model, images.shape[0])))

    def extra_loss(self, model: nn.Module, output: Output, config) -> torch.Tensor:
        l_k, l_e = global_k_losses(output.policy, config.global_k)
        return config.lambda1 * l_k + config.lambda2 * l_e


def global_policy(model: nn.Module, batch: int) -> torch.Tensor:
    """(batch, blocks): the same decision for every image, fine-tuning the k most used blocks."""
    usage = model.global_usage
    mask = torch.zeros_like(usage)
    if model.global_k > 0:
        mask[usage.topk(model.global_k).indices] = 1.0
    return mask.expand(batch, -1)


class SpotTuneRunningFT(SpotTuneMethod):
    """The trained SpotTune model with every block on its fine-tuned path (evaluation only)."""

    name = "spottune-running-ft"
    summary = "the trained SpotTune checkpoint evaluated with every block on the fine-tuned path"
    trains = False
    reuses = "spottune"

    def forward(self, model: nn.Module, images: torch.Tensor, *,
                generator: torch.Generator | None = None) -> Output:
        policy = images.new_ones((images.shape[0], model.num_blocks))
        return Output(*model(images, policy))


METHODS = (SpotTuneMethod(), SpotTuneGlobalK(), SpotTuneRunningFT())
