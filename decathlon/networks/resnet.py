"""Backbones with one shared interface: ``stem``, ``blocks``, ``head``, ``classifier``, ``feature_dim``.

A backbone maps an image to logits as ``classifier(head(blocks(stem(x))))``. ``blocks`` is an
``nn.ModuleList`` of the routable residual blocks, each returning its full output (shortcut included,
after the final ReLU), so that the two-path SpotTune model can mix whole block outputs per image.

- :class:`ResNet26`: the Decathlon network of the residual-adapters / SpotTune reference code
  (stem conv3x3 + BN without ReLU, 3 stages of basic blocks, parameter-free downsampling shortcut).
- :class:`TorchvisionResNet`: torchvision's ResNet-50 / ResNet-101 with the 16 / 33 bottlenecks flattened
  into ``blocks``.

Building one by registry name, with weights, is :func:`decathlon.networks.factory.create_backbone`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from decathlon.errors import CheckpointError, ConfigError


class Backbone(nn.Module):
    """A network made of ``stem``, routable ``blocks``, ``head`` (-> pooled features) and ``classifier``.

    ``weights_source`` is the load report's answer to "were pretrained weights loaded?": the weights file
    (or ``imagenet``) they came from, None for a random initialisation.
    """

    weights_source: str | None = None

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module], head: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.stem = stem
        self.blocks = blocks if isinstance(blocks, nn.ModuleList) else nn.ModuleList(blocks)
        self.head = head
        self.classifier = classifier
        self.feature_dim = classifier.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vectors (batch, feature_dim)."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# ---------------------------------------------------------------------------------------------------------
# ResNet-26 (Decathlon)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class DownsampleShortcut(nn.Module):
    """Parameter-free shortcut of a downsampling block: AvgPool2d(2), then zero channels appended."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ceil_mode: an odd input (e.g. 9 px, from 36 px images) gives the conv path's ceil(9/2) = 5 px;
        # identical to the reference AvgPool2d(2) for the even sizes of 64/72 px inputs
        x = F.avg_pool2d(x, 2, ceil_mode=True)
        # F.pad pads dimensions from the last one backwards: (W, W, H, H, C_before, C_after)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}"


class BasicBlock(nn.Module):
    """ReLU(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif stride == 2 and out_channels >= in_channels:
            self.shortcut = DownsampleShortcut(out_channels - in_channels)
        else:
            raise ConfigError(f"BasicBlock {in_channels}->{out_channels} stride {stride}: the parameter-free "
                              "shortcut needs stride 1 with equal widths or stride 2 with growing widths")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.shortcut(x) + out)


def scaled(channels: int, width: float) -> int:
    """Channels times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))


class ResNet26(Backbone):
    """The Decathlon ResNet-26 of the reference code.

    Stem: ``stem.conv`` (conv3x3 3->32, stride 1) + ``stem.bn``, no ReLU. Three stages of ``layers``
    basic blocks with widths 64/128/256 (times ``width``); the first block of every stage, stage 1
    included, has stride 2. Head: ``head.bn`` + ReLU + global average pool. ``classifier``:
    Linear(256 * width, num_classes). With ``layers=(4, 4, 4)``: 12 blocks; block i is stage i // 4,
    position i % 4.
    """

    STEM_CHANNELS = 32
    STAGE_CHANNELS = (64, 128, 256)

    def __init__(self, num_classes: int, width: float = 1.0, layers: Sequence[int] = (4, 4, 4)):
        if width <= 0:
            raise ConfigError(f"ResNet26 width must be > 0, got {width}")
        if len(layers) != len(self.STAGE_CHANNELS) or min(layers) < 1:
            raise ConfigError(f"ResNet26 layers must be 3 positive block counts, got {tuple(layers)}")
        channels = scaled(self.STEM_CHANNELS, width)
        stem = nn.Sequential(collections.OrderedDict(
            conv=conv3x3(3, channels), bn=nn.BatchNorm2d(channels),
        ))
        blocks = []
        for stage_channels, count in zip(self.STAGE_CHANNELS, layers, strict=True):
            out_channels = scaled(stage_channels, width)
            for position in range(count):
                blocks.append(BasicBlock(channels, out_channels, stride=2 if position == 0 else 1))
                channels = out_channels
        head = nn.Sequential(collections.OrderedDict(
            bn=nn.BatchNorm2d(channels), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
        ))
        super().__init__(stem, blocks, head, nn.Linear(channels, num_classes))
        self.width = width
        self.layers = tuple(layers)
        init_weights(self)


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions (fan_out, as torchvision), BN weight 1 / bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------------------
# torchvision ResNets (extra-dataset setting)

TORCHVISION_WEIGHTS = MappingProxyType({
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
})


class TorchvisionResNet(Backbone):
    """A torchvision ResNet (``arch`` e.g. "resnet50") in the backbone interface.

    ``stem`` = conv1, bn1, relu, maxpool; ``blocks`` = the bottlenecks of layer1..layer4 in order;
    ``head`` = avgpool + flatten; ``classifier`` = a Linear(feature_dim, num_classes) in place of ``fc``.
    Built with random weights; see :func:`load_torchvision_state` for ImageNet weights.
    """

    def __init__(self, arch: str, num_classes: int):
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        stem = nn.Sequential(collections.OrderedDict(
            conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool,
        ))
        stages = (net.layer1, net.layer2, net.layer3, net.layer4)
        blocks = [block for stage in stages for block in stage]
        head = nn.Sequential(collections.OrderedDict(avgpool=net.avgpool, flatten=nn.Flatten()))
        super().__init__(stem, blocks, head, nn.Linear(net.fc.in_features, num_classes))
        self.arch = arch
        self.stage_sizes = tuple(len(stage) for stage in stages)


def torchvision_key_map(stage_sizes: Sequence[int]) -> Callable[[str], str]:
    """Function mapping a torchvision ResNet state_dict key onto the :class:`TorchvisionResNet` key."""
    offsets = [sum(stage_sizes[:i]) for i in range(len(stage_sizes))]

    def rename(key: str) -> str:
        head, _, rest = key.partition(".")
        if head in ("conv1", "bn1"):
            return f"stem.{key}"
        if head == "fc":
            return f"classifier.{rest}"
        if head.startswith("layer") and head[5:].isdigit():
            index, _, tail = rest.partition(".")
            return f"blocks.{offsets[int(head[5:]) - 1] + int(index)}.{tail}"
        return key

    return rename


def load_torchvision_state(backbone: TorchvisionResNet, state_dict: Mapping[str, torch.Tensor],
                           source: str = "state_dict") -> None:
    """Load a torchvision ResNet state_dict (ImageNet weights) by name with shape checks.

    The classifier is dropped when the class counts differ. `source` names the origin in errors.
    """
    rename = torchvision_key_map(backbone.stage_sizes)
    load_matching(backbone, {rename(k): v for k, v in state_dict.items()}, source=source)


def fetch_imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights through torchvision's weights API (downloads or reads the torch hub cache)."""
    import torchvision

    if arch not in TORCHVISION_WEIGHTS:
        raise ConfigError(f"no torchvision ImageNet weights for backbone {arch!r}; "
                          f"available for: {', '.join(TORCHVISION_WEIGHTS)}")
    try:
        weights = torchvision.models.get_weight(TORCHVISION_WEIGHTS[arch])
        return weights.get_state_dict(progress=False)
    except Exception as e:  # network errors come in many types (URLError, OSError, HTTP errors)
        raise CheckpointError(f"could not fetch torchvision weights {TORCHVISION_WEIGHTS[arch]} for "
                              f"{arch} ({type(e).__name__}: {e}); download them where online and pass the "
                              "file path as weights") from e


# ---------------------------------------------------------------------------------------------------------
# loading by name with shape checks


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                  optional_prefixes: Sequence[str] = ("classifier.",)) -> list[str]:
    """Copy `state` into `model` by parameter/buffer name, checking every shape.

    Keys under `optional_prefixes` (the classifier) are skipped when their shapes differ (another class
    count) and may be missing. Any other missing key, unexpected key or shape mismatch raises
    :class:`CheckpointError` naming the key, the shapes and `source`. A missing ``num_batches_tracked``
    (files from PyTorch < 0.4.1) keeps the model's value. Returns the list of skipped keys.
    """
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        more = "..." if len(unexpected) > 5 else ""
        raise CheckpointError(f"{source}: unexpected keys {unexpected[:5]}{more} "
                              f"(the model has e.g. {list(own)[:3]})")
    skipped, missing = [], []
    for key, target in own.items():
        optional = key.startswith(tuple(optional_prefixes))
        if key not in state:
            if not (optional or key.endswith("num_batches_tracked")):
                missing.append(key)
            skipped.append(key)
            continue
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {key} is a {type(value).__name__}, expected a tensor")
        if value.shape != target.shape:
            if optional:
                skipped.append(key)
                continue
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(target.shape)} (another width or architecture?)")
        with torch.no_grad():
            target.copy_(value)
    if missing:
        raise CheckpointError(f"{source}: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}")
    return skipped
