"""ResNet-26 with residual adapters (Rebuffi et al.): shared 3x3 convolutions, per-domain 1x1 adapters and BN.

Reference: srebuffi/residual_adapters, ``models.py`` (``conv_task``, ``conv1x1``; the adapter mode is its
global ``config_task.mode``, here the model's ``mode`` attribute). Every 3x3 convolution of the network,
the stem's included (the reference's ``pre_layers_conv`` is a ``conv_task`` too), gets one adapter:

- ``series`` (NIPS 2017): ``bn(y + conv1x1(bn_in(y)))`` with ``y = conv3x3(x)``: the adapter
  (:class:`SeriesAdapter`: a BN then a 1x1 convolution C -> C, added to its input) sits between the shared
  convolution and the domain's BN;
- ``parallel`` (CVPR 2018): ``bn(conv3x3(x) + conv1x1(x))``, the 1x1 convolution C_in -> C_out with the
  3x3's stride (:class:`ParallelAdapter`). It runs as one convolution: the 1x1 kernel zero-padded to 3x3
  and added to the shared kernel gives the same output (stride s, padding 1: the centre tap of output i
  reads input s*i, as the 1x1 convolution with padding 0 does), and the gradient of the sum with respect
  to the 1x1 kernel is the centre tap of the fused kernel's gradient, so training uses it too.

Names keep :class:`~decathlon.networks.resnet.ResNet26`'s (``stem.conv``, ``stem.bn``,
``blocks.i.conv1/bn1/conv2/bn2``, ``head.bn``, ``classifier``) and add ``stem.adapter``,
``blocks.i.adapter1``, ``blocks.i.adapter2``, so a plain ResNet-26 state_dict loads by name.

Initialisation (the harness's choice, not the reference's He-normal 1x1 kernels): 1x1 kernels are zero
and adapter BNs the identity affine (weight 1, bias 0), so a model made from a pretrained ResNet-26
computes exactly that network's function (series: ``y + 0``; parallel: ``conv3x3(x) + 0``) with the
same BN layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from decathlon.errors import ConfigError
from decathlon.networks.resnet import Backbone, BasicBlock, ResNet26

ADAPTER_MODES = ("series", "parallel")


class SeriesAdapter(nn.Module):
    """``y + conv(bn(y))`` after the shared convolution: BN then a zero-initialised 1x1 conv, C -> C.

    The reference's ``conv1x1`` in ``series_adapters`` mode (``nn.Sequential(BatchNorm2d, Conv2d 1x1)``
    plus the input).
    """

    def __init__(self, shared: nn.Conv2d):
        super().__init__()
        channels = shared.out_channels
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: torch.Tensor, shared: nn.Conv2d) -> torch.Tensor:
        """`shared` (the 3x3 convolution) applied to `x` (N, C_in, H, W), then the adapter."""
        y = shared(x)
        return y + self.conv(self.bn(y))


class ParallelAdapter(nn.Module):
    """A zero-initialised 1x1 convolution C_in -> C_out beside the shared 3x3 one (same stride), summed.

    The reference's ``parallel_conv`` (``conv1x1`` in ``parallel_adapters`` mode). ``fused`` (default)
    runs both as one convolution with the kernel ``shared.weight + pad(conv.weight)``; False runs two
    convolutions (the reference's way; same values up to float rounding).
    """

    def __init__(self, shared: nn.Conv2d, fused: bool = True):
        super().__init__()
        k = shared.kernel_size
        if k[0] != k[1] or k[0] % 2 == 0 or shared.padding != (k[0] // 2, k[1] // 2) or shared.groups != 1:
            raise ConfigError(f"parallel adapter: the shared convolution must be square, odd-sized, "
                              f"'same'-padded and ungrouped, got {shared}")
        self.conv = nn.Conv2d(shared.in_channels, shared.out_channels, 1, stride=shared.stride, bias=False)
        nn.init.zeros_(self.conv.weight)
        self.fused = fused

    def forward(self, x: torch.Tensor, shared: nn.Conv2d) -> torch.Tensor:
        """``shared(x) + conv(x)`` for `x` (N, C_in, H, W)."""
        if not self.fused:
            return shared(x) + self.conv(x)
        pad = shared.kernel_size[0] // 2
        kernel = shared.weight + F.pad(self.conv.weight, (pad, pad, pad, pad))
        return F.conv2d(x, kernel, None, shared.stride, shared.padding, shared.dilation)

    def extra_repr(self) -> str:
        return f"fused={self.fused}"


def make_adapter(mode: str, shared: nn.Conv2d) -> nn.Module:
    """The adapter of `mode` (:data:`ADAPTER_MODES`) for the shared convolution `shared`."""
    if mode == "series":
        return SeriesAdapter(shared)
    if mode == "parallel":
        return ParallelAdapter(shared)
    raise ConfigError(f"adapter mode {mode!r}; expected one of {', '.join(ADAPTER_MODES)}")


class AdaptedStem(nn.Module):
    """``bn(adapter(x, conv))``: the stem conv3x3 (shared), its adapter and the domain's BN (no ReLU)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, mode: str):
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.adapter = make_adapter(mode, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.adapter(x, self.conv))


class AdapterBasicBlock(nn.Module):
    """A ResNet-26 basic block whose two 3x3 convolutions have adapters:
    ``ReLU(shortcut(x) + bn2(adapter2(ReLU(bn1(adapter1(x, conv1))), conv2)))``."""

    def __init__(self, block: BasicBlock, mode: str):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.shortcut = block.shortcut
        self.adapter1 = make_adapter(mode, block.conv1)
        self.adapter2 = make_adapter(mode, block.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.adapter1(x, self.conv1)))
        out = self.bn2(self.adapter2(out, self.conv2))
        return F.relu(self.shortcut(x) + out)


class AdapterResNet26(Backbone):
    """`base` (a :class:`ResNet26`, whose modules it takes over) with an adapter at every 3x3 convolution.

    ``mode``: ``"series"`` or ``"parallel"``. The shared convolutions are `base`'s own tensors;
    :meth:`shared_convs` lists them (the methods freeze them). Same interface as every backbone
    (``stem``, ``blocks``, ``head``, ``classifier``); logits (N, classes) for images (N, 3, H, W).
    """

    def __init__(self, base: ResNet26, mode: str):
        if not isinstance(base, ResNet26):
            raise ConfigError(f"residual adapters are defined here for the ResNet-26 only, got "
                              f"{type(base).__name__}")
        stem = AdaptedStem(base.stem.conv, base.stem.bn, mode)
        blocks = [AdapterBasicBlock(block, mode) for block in base.blocks]
        super().__init__(stem, blocks, base.head, base.classifier)
        self.mode = mode
        self.width = base.width
        self.layers = base.layers
        self.weights_source = base.weights_source

    def shared_convs(self) -> list[nn.Conv2d]:
        """The 3x3 convolutions shared with the source network, stem first."""
        return [self.stem.conv] + [conv for block in self.blocks for conv in (block.conv1, block.conv2)]

    def set_fused(self, fused: bool) -> None:
        """Parallel mode: one fused convolution (True) or two (False) per adapted layer."""
        for m in self.modules():
            if isinstance(m, ParallelAdapter):
                m.fused = fused


def adapter_resnet26(num_classes: int, *, mode: str, width: float = 1.0,
                     layers: tuple[int, ...] = (4, 4, 4)) -> AdapterResNet26:
    """A freshly initialised :class:`AdapterResNet26` (the shape of an official file's network)."""
    return AdapterResNet26(ResNet26(num_classes, width=width, layers=layers), mode)
