"""Stand-in for the residual-adapters ``models`` module (ResNet-26 with per-task BN and classifiers).

Reproduces the module structure, hence the exact state_dict keys, of the networks of the reference
``models.py`` in each ``config_task.mode`` (with the training script's default ``proj='11'``):

- ``normal`` (``resnet26_pretrained.t7``): ``pre_layers_conv.{conv,bns.T}``, ``layerS.B.conv1.{conv,bns.T}``,
  ``layerS.B.conv2.1.{conv,bns.T}``, ``end_bns.T.0``, ``linears.T``;
- ``series_adapters``: each ``bns.T`` is ``Sequential(conv1x1, BatchNorm2d)`` and that ``conv1x1``'s ``conv``
  is ``Sequential(BatchNorm2d, Conv2d 1x1)`` added to its input (``bns.T.0.conv.{0,1}``, ``bns.T.1``);
- ``parallel_adapters``: ``parallel_conv.T`` (a ``conv1x1`` whose ``conv`` is a Conv2d 1x1 with the 3x3's
  stride) beside each 3x3 convolution, summed before ``bns.T``.

Forward: stem conv_task (no ReLU); basic blocks ReLU(shortcut + conv_task(ReLU(conv_task(x)))); head BN +
ReLU + average pool + linear; task ``config_task.task``.
"""

import config_task
import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1_fonc(in_planes, out_planes=None, stride=1, bias=False):
    return nn.Conv2d(in_planes, out_planes or in_planes, kernel_size=1, stride=stride, padding=0, bias=bias)


class conv1x1(nn.Module):  # noqa: N801 (the official class name)
    """The adapter: series mode BN + 1x1 conv added to the input; parallel mode a strided 1x1 conv."""

    def __init__(self, planes, out_planes=None, stride=1):
        super().__init__()
        if config_task.mode == "series_adapters":
            self.conv = nn.Sequential(nn.BatchNorm2d(planes), conv1x1_fonc(planes))
        elif config_task.mode == "parallel_adapters":
            self.conv = conv1x1_fonc(planes, out_planes, stride)
        else:
            self.conv = conv1x1_fonc(planes)

    def forward(self, x):
        y = self.conv(x)
        if config_task.mode == "series_adapters":
            y = y + x
        return y


class conv_task(nn.Module):  # noqa: N801 (the official class name)
    """A 3x3 convolution, then per task: (series) adapter + BN, (parallel) + 1x1 conv, BN; (normal) BN."""

    def __init__(self, in_planes, planes, stride=1, nb_tasks=1, is_proj=1, second=0):
        super().__init__()
        self.is_proj = is_proj
        self.second = second
        self.conv = conv3x3(in_planes, planes, stride)
        if config_task.mode == "series_adapters" and is_proj:
            self.bns = nn.ModuleList([nn.Sequential(conv1x1(planes), nn.BatchNorm2d(planes))
                                      for _ in range(nb_tasks)])
        elif config_task.mode == "parallel_adapters" and is_proj:
            self.parallel_conv = nn.ModuleList([conv1x1(in_planes, planes, stride) for _ in range(nb_tasks)])
            self.bns = nn.ModuleList([nn.BatchNorm2d(planes) for _ in range(nb_tasks)])
        else:
            self.bns = nn.ModuleList([nn.BatchNorm2d(planes) for _ in range(nb_tasks)])

    def forward(self, x):
        task = config_task.task
        y = self.conv(x)
        if config_task.mode == "parallel_adapters" and self.is_proj:
            y = y + self.parallel_conv[task](x)
        return self.bns[task](y)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, shortcut=0, nb_tasks=1):
        super().__init__()
        proj = config_task.proj
        self.conv1 = conv_task(in_planes, planes, stride, nb_tasks, is_proj=int(proj[0]))
        self.conv2 = nn.Sequential(nn.ReLU(True), conv_task(planes, planes, 1, nb_tasks, is_proj=int(proj[1]),
                                                            second=1))
        self.shortcut = shortcut
        if shortcut == 1:
            self.avgpool = nn.AvgPool2d(2)

    def forward(self, x):
        residual = x
        y = self.conv2(self.conv1(x))
        if self.shortcut == 1:
            pooled = self.avgpool(x)
            residual = torch.cat((pooled, pooled * 0), 1)
        return F.relu(y + residual)


class ResNet(nn.Module):
    def __init__(self, block, nblocks, num_classes=(10,)):
        super().__init__()
        nb_tasks = len(num_classes)
        factor = config_task.factor
        self.in_planes = int(32 * factor)
        self.pre_layers_conv = conv_task(3, int(32 * factor), 1, nb_tasks)
        self.layer1 = self._make_layer(block, int(64 * factor), nblocks[0], 2, nb_tasks)
        self.layer2 = self._make_layer(block, int(128 * factor), nblocks[1], 2, nb_tasks)
        self.layer3 = self._make_layer(block, int(256 * factor), nblocks[2], 2, nb_tasks)
        self.end_bns = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(int(256 * factor)), nn.ReLU(True))
                                      for _ in range(nb_tasks)])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linears = nn.ModuleList([nn.Linear(int(256 * factor), n) for n in num_classes])

    def _make_layer(self, block, planes, nblocks, stride, nb_tasks):
        shortcut = int(stride != 1 or self.in_planes != planes)
        layers = [block(self.in_planes, planes, stride, shortcut, nb_tasks=nb_tasks)]
        self.in_planes = planes
        layers += [block(planes, planes, nb_tasks=nb_tasks) for _ in range(1, nblocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        task = config_task.task
        x = self.pre_layers_conv(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(self.end_bns[task](x)).flatten(1)
        return self.linears[task](x)


def resnet26(num_classes=(10,), blocks=BasicBlock):
    return ResNet(blocks, [4, 4, 4], num_classes)
