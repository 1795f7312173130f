"""Stand-in for the official SpotTune ``agent_net`` module (the policy network).

Same structure and keys as the official agent: a ResNet with one basic block per stage and
``linear`` with 2 x 12 outputs; like the official one it also builds ``parallel_blocks`` that its forward
never uses, without resetting the input width (so ``parallel_blocks.0.0.conv1`` takes 256 channels).
The classes live in this module (pickled as ``agent_net.*``) but share the code of ``spottune_models``.
"""

import spottune_models
import torch.nn.functional as F


class DownsampleB(spottune_models.DownsampleB):
    pass


class BasicBlock(spottune_models.BasicBlock):
    pass


class ResNet(spottune_models.ResNet):
    downsample = DownsampleB

    def __init__(self, block, layers, num_class=10, factor=1.0):
        super().__init__(block, layers, num_class, factor=factor, reset_parallel=False)

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        for segment, num_blocks in enumerate(self.layer_config):
            for b in range(num_blocks):
                residual = self.ds[segment](x) if b == 0 else x
                x = F.relu(residual + self.blocks[segment][b](x))
        x = self.avgpool(self.bn2(x)).flatten(1)
        return self.linear(x)


def resnet(num_class=10, blocks=BasicBlock, factor=1.0):
    return ResNet(blocks, [1, 1, 1], num_class, factor=factor)
