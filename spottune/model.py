"""The two-path SpotTune model: frozen pretrained blocks, fine-tuned copies, per-image routing.

For block l and image x: ``x_l = I_l(x) * tuned_l(x_{l-1}) + (1 - I_l(x)) * frozen_l(x_{l-1})``, where both
block modules include the (shared, parameter-free) shortcut and the final ReLU, exactly as the reference.

Training computes both paths on the whole batch and mixes them per image (BN statistics over the whole
batch, as the reference). Evaluation routes sparsely: each block runs only on the images sent to it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from decathlon.errors import ConfigError
from spottune.policy import gumbel_softmax_st, sample_gumbel_max

FROZEN_BN_MODES = ("faithful", "frozen")
EVAL_POLICIES = ("argmax", "sampled")


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


class SpotTune(nn.Module):
    """SpotTune (Guo et al., CVPR 2019) around a backbone with ``stem/blocks/head/classifier``.

    The backbone's ``stem``, ``blocks`` and ``head`` modules are taken over (not copied);
    ``tuned_blocks`` are deep copies of ``blocks``; ``classifier`` is a new Linear(feature_dim, num_classes).

    What trains (``frozen_bn="faithful"``, the reference): the tuned blocks, the stem, every BN affine
    parameter including those of the pretrained blocks (whose running statistics also update in train
    mode), the head and the classifier; only the non-BN weights of the pretrained blocks are frozen.
    ``frozen_bn="frozen"``: the pretrained blocks' BN affine parameters are frozen too and those BN layers
    stay in eval mode (running statistics fixed) even when the model is in train mode.

    `policy_net` maps images to routing logits (batch, blocks, 2) (index 1 = fine-tuned); it may be None
    for methods that always pass the policy. `tau` is the Gumbel-Softmax temperature. The attribute
    ``eval_policy`` ("argmax" by default, or "sampled") selects the evaluation decision.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, policy_net: nn.Module | None = None, *,
                 tau: float = 5.0, frozen_bn: str = "faithful"):
        super().__init__()
        if frozen_bn not in FROZEN_BN_MODES:
            raise ConfigError(f"frozen_bn={frozen_bn!r}; expected one of {', '.join(FROZEN_BN_MODES)}")
        if tau <= 0:
            raise ConfigError(f"Gumbel-Softmax temperature tau must be > 0, got {tau}")
        self.stem = backbone.stem
        self.blocks = backbone.blocks
        self.tuned_blocks = copy.deepcopy(backbone.blocks)
        self.head = backbone.head
        self.feature_dim = backbone.feature_dim
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self.policy_net = policy_net
        self.tau = tau
        self.frozen_bn = frozen_bn
        self.eval_policy = "argmax"
        for part in (self.stem, self.tuned_blocks, self.head):  # whatever the backbone's flags were
            part.requires_grad_(True)
        for module in self.blocks.modules():
            trainable = _is_bn(module) and frozen_bn == "faithful"
            for p in module.parameters(recurse=False):
                p.requires_grad_(trainable)
        self.train(self.training)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def train(self, mode: bool = True) -> SpotTune:
        """Set train/eval mode; with frozen_bn="frozen" the pretrained blocks' BN layers stay in eval."""
        super().train(mode)
        if self.frozen_bn == "frozen":
            for module in self.blocks.modules():
                if _is_bn(module):
                    module.train(False)
        return self

    # ------------------------------------------------------------------------------------------------
    def decide(self, routing_logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Policy (batch, blocks) in {0, 1} from routing logits (batch, blocks, 2).

        Training: straight-through Gumbel-Softmax with temperature ``tau`` (hard forward, soft gradient).
        Evaluation: argmax of the logits, or with ``eval_policy="sampled"`` a Gumbel-Max sample, which
        needs an explicit `generator` (no hidden randomness at evaluation).
        """
        if self.training:
            return gumbel_softmax_st(routing_logits, self.tau, generator)[..., 1]
        if self.eval_policy == "argmax":
            return routing_logits.argmax(-1).to(routing_logits.dtype)
        if self.eval_policy == "sampled":
            if generator is None:
                raise ConfigError("eval_policy='sampled' needs an explicit torch.Generator (Gumbel noise)")
            return sample_gumbel_max(routing_logits, generator)[..., 1]
        raise ConfigError(f"eval_policy={self.eval_policy!r}; expected one of {', '.join(EVAL_POLICIES)}")

    def forward(self, x: torch.Tensor, policy: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None, return_probs: bool = False,
                sparse: bool | None = None):
        """Logits and the policy used: ``(logits, policy)``, or ``(logits, policy, probs)``.

        `policy`: None (the policy network decides, see :meth:`decide`) or a (batch, blocks) float tensor
        with 1 = fine-tuned path, used as given. The returned policy is the hard (batch, blocks) decision;
        in training it carries the straight-through gradient to the policy network, so Global-k's
        ``v_l = policy.mean(0)`` is differentiable. With `return_probs`, ``probs`` is the policy network's
        noise-free probability of the fine-tuned path, softmax(logits)[..., 1] (None when the policy was
        given). `sparse`: None = sparse routing in evaluation and dense mixing in training; True/False
        force it (sparse training computes each path's BN statistics over its own images only).
        """
        probs = None
        if policy is None:
            if self.policy_net is None:
                raise ConfigError("this SpotTune model has no policy network: pass policy=(batch, blocks)")
            routing_logits = self.policy_net(x)
            policy = self.decide(routing_logits, generator)
            if return_probs:
                probs = routing_logits.softmax(-1)[..., 1]
        elif policy.shape != (x.shape[0], self.num_blocks):
            raise ConfigError(f"policy has shape {tuple(policy.shape)}, "
                              f"expected ({x.shape[0]}, {self.num_blocks})")
        sparse = (not self.training) if sparse is None else sparse
        features = self.routed_features(x, policy, sparse=sparse)
        logits = self.classifier(features)
        return (logits, policy, probs) if return_probs else (logits, policy)

    def routed_features(self, x: torch.Tensor, policy: torch.Tensor, *, sparse: bool) -> torch.Tensor:
        """Pooled features of `x` routed by `policy` (batch, blocks)."""
        x = self.stem(x)
        if sparse:
            # one host transfer for the whole policy instead of a device sync per block; decisions are
            # hard in {0, 1}, thresholding at 0.5 only guards against rounding
            routes = policy.detach().to("cpu") > 0.5
            for l, (frozen, tuned) in enumerate(zip(self.blocks, self.tuned_blocks, strict=True)):
                x = route_sparse(frozen, tuned, x, routes[:, l])
        else:
            weights = policy.to(x.dtype)
            for l, (frozen, tuned) in enumerate(zip(self.blocks, self.tuned_blocks, strict=True)):
                x = mix_dense(frozen, tuned, x, weights[:, l])
        return self.head(x)


def mix_dense(frozen: nn.Module, tuned: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Both paths on the whole batch, mixed per image: frozen(x) + w * (tuned(x) - frozen(x)).

    ``torch.lerp`` is one fused kernel and exact at w = 0 and w = 1, with gradients to both paths and to w.
    """
    out_frozen, out_tuned = frozen(x), tuned(x)
    # under autocast the block outputs may be float16: the weight follows their dtype
    return torch.lerp(out_frozen, out_tuned, weight.to(out_frozen.dtype).view(-1, *([1] * (x.dim() - 1))))


def reference_dense_forward(model: SpotTune, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The reference code's training forward on `model`'s modules, kept as the parity and speed reference.

    Both blocks on the whole batch, mixed as ``frozen(h) * (1 - m) + tuned(h) * m`` with the same Gumbel
    draw as :meth:`SpotTune.forward` for `generator` (the official code's structure; run in the default
    memory format, it is the "plain dense two-path implementation" of ``benchmarks/run_all_benchmarks.py``).
    """
    policy = model.decide(model.policy_net(x), generator)
    h = model.stem(x)
    for index, (frozen, tuned) in enumerate(zip(model.blocks, model.tuned_blocks, strict=True)):
        mask = policy[:, index].view(-1, 1, 1, 1)
        h = frozen(h) * (1 - mask) + tuned(h) * mask
    return model.classifier(model.head(h))


def route_sparse(frozen: nn.Module, tuned: nn.Module, x: torch.Tensor,
                 to_tuned: torch.Tensor) -> torch.Tensor:
    """Each path only on its images (`to_tuned`: (batch,) bool, CPU); a path with no image is skipped."""
    count = int(to_tuned.sum())
    if count == 0:
        return frozen(x)
    if count == to_tuned.numel():
        return tuned(x)
    tuned_idx = to_tuned.nonzero().squeeze(1).to(x.device, non_blocking=True)
    frozen_idx = (~to_tuned).nonzero().squeeze(1).to(x.device, non_blocking=True)
    out_tuned = tuned(_take(x, tuned_idx))
    out_frozen = frozen(_take(x, frozen_idx))
    fmt = torch.channels_last if _is_channels_last(out_tuned) else torch.contiguous_format
    out = torch.empty((x.shape[0], *out_tuned.shape[1:]), dtype=out_tuned.dtype, device=out_tuned.device,
                      memory_format=fmt)
    _put(out, tuned_idx, out_tuned)
    _put(out, frozen_idx, out_frozen)
    return out


# Rows of a channels_last batch are gathered / scattered through its NHWC view, whose dimension 0 holds
# whole contiguous images: the result keeps the layout in one copy (``index_select`` on the NCHW view
# returns NCHW rows, and converting them back costs a second copy, 4x the gather on the first stage).
# Either way the values are right for any layout; only the speed depends on it.
_NHWC, _NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Images `index` of the batch `x`, in `x`'s memory format."""
    if _is_channels_last(x):
        return x.permute(*_NHWC).index_select(0, index).permute(*_NCHW)
    return x.index_select(0, index)


def _put(out: torch.Tensor, index: torch.Tensor, part: torch.Tensor) -> None:
    """``out[index] = part`` along the batch dimension, in place."""
    if _is_channels_last(out):
        out.permute(*_NHWC).index_copy_(0, index, part.permute(*_NHWC))
    else:
        out.index_copy_(0, index, part)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
