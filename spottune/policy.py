"""Policy networks and the straight-through Gumbel-Softmax.

The policy network looks at the image and outputs two logits per routable block, shape
(batch, num_blocks, 2); index 1 means "fine-tuned path". It is the reference agent: a small ResNet
built with the same :class:`~decathlon.networks.resnet.ResNet26` class (``layers=(1, 1, 1)``), so its module
names are ``stem.conv``, ``stem.bn``, ``blocks.0..2``, ``head.bn`` and ``classifier``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from decathlon.errors import ConfigError
from decathlon.networks.resnet import ResNet26


class PolicyNet(ResNet26):
    """ResNet-26-style agent with 3 stages x 1 basic block and a Linear(256 * width, 2 * num_blocks).

    `input_size`: when set, images are first resized (bilinear, antialiased) to input_size x input_size,
    so that the agent's cost does not grow with the backbone's input resolution.
    """

    def __init__(self, num_blocks: int, width: float = 1.0, input_size: int | None = None):
        if num_blocks < 1:
            raise ConfigError(f"a policy network needs num_blocks >= 1, got {num_blocks}")
        if input_size is not None and input_size < 8:
            raise ConfigError(f"policy input_size must be >= 8 px (three stride-2 stages), got {input_size}")
        super().__init__(2 * num_blocks, width=width, layers=(1, 1, 1))
        self.num_blocks = num_blocks
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Routing logits (batch, num_blocks, 2); [..., 1] is the fine-tuned path."""
        if self.input_size is not None and x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return super().forward(x).view(x.shape[0], self.num_blocks, 2)


def decathlon_policy_net(num_blocks: int, width: float = 1.0) -> PolicyNet:
    """The reference agent for the Decathlon setting (about 1.17 M parameters at width 1, 12 blocks)."""
    return PolicyNet(num_blocks, width=width)


def small_policy_net(num_blocks: int, input_size: int = 112, width: float = 1.0) -> PolicyNet:
    """Agent for the 224 px setting (ResNet-50), which the reference material does not specify.

    Choice: the same small ResNet as :func:`decathlon_policy_net` run on the image downscaled to
    `input_size` px (bilinear, antialiased). At 112 px it costs about 1/4 of the same net at 224 px while
    still seeing the whole image; its final 14x14 map (three stride-2 stages) is pooled globally.
    """
    return PolicyNet(num_blocks, width=width, input_size=input_size)


def gumbel_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise G = -log(E), E ~ Exp(1) (equivalently -log(-log U)), shaped like `like`.

    The noise is drawn on the generator's device (so a CPU generator also drives CUDA runs) and moved.
    """
    device = generator.device if generator is not None else like.device
    exp = torch.empty(like.shape, dtype=torch.float32, device=device).exponential_(generator=generator)
    return (-exp.log()).to(device=like.device, dtype=like.dtype)


def gumbel_softmax_st(logits: torch.Tensor, tau: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Straight-through Gumbel-Softmax over the last dimension.

    Forward: exactly the one-hot argmax of ``logits + G``. Backward: the gradient of the soft sample
    ``softmax((logits + G) / tau)``. Written as ``hard + (soft - soft.detach())`` so that the forward value
    is the one-hot bit for bit (``soft - soft.detach()`` is exactly 0).
    """
    soft = ((logits + gumbel_noise(logits, generator)) / tau).softmax(-1)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return hard + (soft - soft.detach())


def sample_gumbel_max(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One-hot Gumbel-Max sample (no gradient): the reference's stochastic test-time decision."""
    noisy = logits.detach() + gumbel_noise(logits, generator)
    return torch.zeros_like(noisy).scatter_(-1, noisy.argmax(-1, keepdim=True), 1.0)
