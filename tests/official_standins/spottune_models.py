"""Stand-in for the official SpotTune ``spottune_models`` module (two-path ResNet-26).

Same module structure, hence the same state_dict keys, as the official network: ``conv1``, ``bn1``,
``blocks.S.B.{conv1,bn1,conv2.1,bn2}``, ``parallel_blocks.S.B...``, ``bn2.0`` (head BN), ``linear``, plus
parameter-free ``ds`` / ``parallel_ds`` shortcuts. ``forward(x, policy)`` mixes, per image and block,
ReLU(shortcut + frozen block) and ReLU(shortcut + fine-tuned block) by the 0/1 policy.
"""

import torch
import torch.nn.functional as F
from torch import nn


class DownsampleB(nn.Module):
    def __init__(self, nIn, nOut, stride=2):  # noqa: N803 (the official argument names)
        super().__init__()
        self.avg = nn.AvgPool2d(stride)

    def forward(self, x):
        residual = self.avg(x)
        return torch.cat((residual, residual * 0), 1)


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Sequential(nn.ReLU(True), conv3x3(planes, planes))
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x):
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class ResNet(nn.Module):
    downsample = DownsampleB

    def __init__(self, block, layers, num_class=10, factor=1.0, reset_parallel=True):
        super().__init__()
        self.in_planes = int(32 * factor)
        self.conv1 = conv3x3(3, int(32 * factor))
        self.bn1 = nn.BatchNorm2d(int(32 * factor))
        self.relu = nn.ReLU(inplace=True)
        widths = [int(w * factor) for w in (64, 128, 256)]
        blocks, ds = self._make_stages(block, widths, layers)
        self.blocks, self.ds = nn.ModuleList(blocks), nn.ModuleList(ds)
        if reset_parallel:
            self.in_planes = int(32 * factor)
        blocks, ds = self._make_stages(block, widths, layers)
        self.parallel_blocks, self.parallel_ds = nn.ModuleList(blocks), nn.ModuleList(ds)
        self.bn2 = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[-1], num_class)
        self.layer_config = layers

    def _make_stages(self, block, widths, layers):
        stages, shortcuts = [], []
        for planes, count in zip(widths, layers, strict=True):
            shortcuts.append(self.downsample(self.in_planes, planes, 2))
            stage = [block(self.in_planes, planes, 2)]
            self.in_planes = planes
            stage += [block(planes, planes) for _ in range(1, count)]
            stages.append(nn.ModuleList(stage))
        return stages, shortcuts

    def forward(self, x, policy=None):
        x = self.bn1(self.conv1(x))
        t = 0
        for segment, num_blocks in enumerate(self.layer_config):
            for b in range(num_blocks):
                residual = self.ds[segment](x) if b == 0 else x
                frozen = F.relu(residual + self.blocks[segment][b](x))
                if policy is None:
                    x = frozen
                else:
                    mask = policy[:, t].float().view(-1, 1, 1, 1)
                    residual_ = self.parallel_ds[segment](x) if b == 0 else x
                    tuned = F.relu(residual_ + self.parallel_blocks[segment][b](x))
                    x = frozen * (1 - mask) + tuned * mask
                t += 1
        x = self.avgpool(self.bn2(x)).flatten(1)
        return self.linear(x)


def resnet26(num_class=10, blocks=BasicBlock, factor=1.0):
    return ResNet(blocks, [4, 4, 4], num_class, factor=factor)
