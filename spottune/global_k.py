"""SpotTune-Global-k: one fine-tuning policy shared by every image, and the compact model it allows.

Training adds ``lambda1 * l_k + lambda2 * l_e`` to the classification loss, with v_l the fraction of the
batch's images that take the fine-tuned path at block l:

    l_k = (sum_l v_l - k)^2        l_e = sum_l -v_l log v_l

v_l is the batch mean of the straight-through hard decisions returned by :class:`~spottune.model.SpotTune`
in training: its forward value is the true fraction of images routed to the fine-tuned path, and its
gradient flows to the policy network through the soft Gumbel-Softmax sample. l_e pushes each v_l to 0 or 1,
so that after training every image uses the same k fine-tuned blocks and :func:`export_compact` can keep
only the path each block uses.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from decathlon.errors import ConfigError
from decathlon.networks.params import count_parameters
from decathlon.networks.resnet import Backbone

# v log v is taken as 0 at v = 0; the clamp keeps log finite there (and its gradient finite).
_LOG_EPS = 1e-8


def block_fractions(probs_or_policy: torch.Tensor) -> torch.Tensor:
    """v (blocks,): mean over the batch of the fine-tuned decision per block.

    Accepts a policy (batch, blocks) (1 = fine-tuned) or per-path values (batch, blocks, 2), whose
    index 1 is the fine-tuned path.
    """
    x = probs_or_policy
    if x.dim() == 3 and x.shape[-1] == 2:
        x = x[..., 1]
    if x.dim() != 2:
        raise ConfigError(f"expected a policy (batch, blocks) or (batch, blocks, 2), "
                          f"got shape {tuple(x.shape)}")
    return x.float().mean(0)


def global_k_losses(probs_or_policy: torch.Tensor, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(l_k, l_e) of the batch: l_k = (sum_l v_l - k)^2, l_e = sum_l -v_l log v_l (0 log 0 = 0)."""
    v = block_fractions(probs_or_policy)
    l_k = (v.sum() - k) ** 2
    l_e = -(v * v.clamp_min(_LOG_EPS).log()).sum()
    return l_k, l_e


class CompactBackbone(Backbone):
    """A plain single-path network exported from a SpotTune model (see :func:`export_compact`).

    ``tuned_mask[l]`` says whether block l is the fine-tuned copy; ``num_parameters`` is its unique
    parameter count (what has to be stored for the domain, policy network dropped).
    """

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, classifier: nn.Linear,
                 tuned_mask: tuple[bool, ...]):
        super().__init__(stem, blocks, head, classifier)
        self.tuned_mask = tuned_mask
        self.num_parameters = count_parameters(self)[0]


def export_compact(model: nn.Module, policy_sample: torch.Tensor, threshold: float = 0.5) -> CompactBackbone:
    """Keep, per block, only the path the policy uses: a plain backbone-like copy of `model`.

    `policy_sample` (images, blocks) are decisions collected on data (e.g. the evaluation policies of a
    Global-k model); block l uses the fine-tuned copy when its fraction of fine-tuned decisions is
    >= `threshold` (0.5), else the pretrained block. Under a policy that is the same for every image the
    compact model computes exactly what the two-path model computes. The modules are deep copies, so
    the compact model is independent of `model`; it is returned in `model`'s train/eval mode.
    """
    v = block_fractions(policy_sample)
    if v.numel() != len(model.blocks):
        raise ConfigError(f"policy_sample has {v.numel()} blocks, the model has {len(model.blocks)}")
    tuned_mask = tuple(bool(f >= threshold) for f in v.tolist())
    blocks = [copy.deepcopy(tuned if use_tuned else frozen)
              for frozen, tuned, use_tuned in zip(model.blocks, model.tuned_blocks, tuned_mask, strict=True)]
    compact = CompactBackbone(copy.deepcopy(model.stem), blocks, copy.deepcopy(model.head),
                              copy.deepcopy(model.classifier), tuned_mask)
    for p in compact.parameters():
        p.requires_grad_(True)
    return compact.train(model.training)
