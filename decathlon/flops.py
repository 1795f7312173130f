"""Inference cost: GFLOPs per image of a method's evaluation forward, measured with torch's FLOP counter.

:func:`gflops_per_image` runs the method's own evaluation forward (:meth:`decathlon.methods.Method.forward`
on the model in eval mode, no gradients) once on a small batch of real evaluation images under
:class:`torch.utils.flop_counter.FlopCounterMode` and divides the count by the batch size. What runs is
what is counted:

- SpotTune evaluates sparsely (:func:`spottune.model.route_sparse`): each block runs on the images routed
  to each path, so every image is counted once per block, on the one path it takes, whichever it is; the
  policy network runs once per image and is counted. Global-k and running-ft pass their fixed policy: no
  policy network runs, none is counted. This is what a routed implementation costs: a method that mixed
  both paths densely with a hard policy would compute a path whose output is multiplied by 0, which a
  deployment never runs. The two-path evaluation that does use both paths (stochastic fine-tuning's
  ``stochastic_eval="mean"``: 0.5 x frozen + 0.5 x tuned) is counted with both, because both are needed.
- ``eval_policy="sampled"`` with ``eval_samples`` n runs the policy and the network n times: counted n times.

Units and scope: torch counts the FLOPs of convolutions and matrix products (``aten.convolution``,
``mm``, ``addmm``, ``bmm``, ...), a multiply-add counting as 2 FLOPs (a k x k convolution from c_in to
c_out channels on an H x W output: 2 k² c_in c_out H W). Batch normalisation, ReLU, pooling, additions,
the interpolation of the 224 px setting's policy input and the routing's gathers are not counted (in
ResNet-26 they are well under 1 % of the convolutions' count). 1 GFLOP = 1e9 FLOPs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

FLOP_IMAGES = 16  # images of the first evaluation batch that are counted (the count is per image)


@torch.no_grad()
def gflops_per_image(method, model: nn.Module, images: torch.Tensor, *,
                     generator: torch.Generator | None = None) -> float:
    """GFLOPs per image of ``method.forward(model, images)`` in eval mode (see the module docstring).

    `images`: (batch, 3, H, W) on the model's device, batch >= 1. `generator`: the stream of any routing
    drawn at evaluation (random policy, sampled policies). The model is left in eval mode. ValueError
    for an empty batch.
    """
    if images.shape[0] == 0:
        raise ValueError("gflops_per_image needs at least one image")
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        method.forward(model, images, generator=generator)
    return counter.get_total_flops() / images.shape[0] / 1e9
