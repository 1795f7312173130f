"""Inference cost (decathlon.flops): GFLOPs per image against hand counts written from the architecture."""

from __future__ import annotations

import pytest
import torch

from decathlon.flops import gflops_per_image
from decathlon.methods import get_method
from decathlon.networks.resnet import ResNet26
from spottune.model import SpotTune
from spottune.policy import decathlon_policy_net

CLASSES = 10
SIZE = 64  # px: the Decathlon training crop


def conv(k: int, c_in: int, c_out: int, h: int, w: int) -> int:
    """FLOPs of a bias-free k x k convolution on an h x w output: one multiply-add = 2 FLOPs."""
    return 2 * k * k * c_in * c_out * h * w


def linear(n_in: int, n_out: int) -> int:
    return 2 * n_in * n_out


def resnet26_flops(size: int, classes: int, layers=(4, 4, 4), width: float = 1.0) -> int:
    """Hand count of the Decathlon ResNet-26 (docs: /shared/reference/spottune.md, "Networks"): stem
    conv3x3 3->32 at stride 1; 3 stages of basic blocks (two conv3x3 each), widths 64/128/256, the first
    block of each stage at stride 2 (its first conv halves the map); parameter-free shortcuts (no FLOPs
    counted); BN, ReLU and pooling not counted by torch; Linear(256, classes)."""
    stem = round(32 * width)
    total = conv(3, 3, stem, size, size)
    c_in, h = stem, size
    for stage, count in zip((64, 128, 256), layers, strict=True):
        c_out = round(stage * width)
        h //= 2
        for position in range(count):
            total += conv(3, c_in if position == 0 else c_out, c_out, h, h)  # conv1 (stride 2 when first)
            total += conv(3, c_out, c_out, h, h)  # conv2
        c_in = c_out
    return total + linear(c_in, classes)


def test_hand_count_of_the_formula():
    # the stem alone, written out: 3x3 kernel, 3 -> 32 channels, 64 x 64 output, 2 FLOPs per multiply-add
    assert conv(3, 3, 32, 64, 64) == 2 * 9 * 3 * 32 * 4096 == 7_077_888
    # stage 1 at 32 x 32: block 1's conv1 32 -> 64, then 7 convs 64 -> 64; stages 2 and 3 cost the same
    # (channels x2 in and out, area / 4)
    stage = 2 * 9 * (32 * 64 + 7 * 64 * 64) * 32 * 32
    assert stage == 566_231_040
    assert resnet26_flops(64, 10) == 7_077_888 + 3 * stage + 2 * 256 * 10 == 1_705_776_128  # 1.71 GFLOPs


@pytest.mark.parametrize("width", [1.0, 0.25])
def test_plain_resnet26_matches_the_hand_count(width):
    model = ResNet26(CLASSES, width=width)
    images = torch.randn(4, 3, SIZE, SIZE)
    got = gflops_per_image(get_method("finetune"), model, images)
    assert got * 1e9 == pytest.approx(resnet26_flops(SIZE, CLASSES, width=width), rel=1e-12)


def forced_spottune(tuned: bool) -> SpotTune:
    """SpotTune whose policy network routes every image to one path (zero weights, a bias on one logit)."""
    torch.manual_seed(0)
    model = SpotTune(ResNet26(CLASSES), CLASSES, decathlon_policy_net(12))
    with torch.no_grad():
        model.policy_net.classifier.weight.zero_()
        model.policy_net.classifier.bias.copy_(torch.tensor([0.0, 1.0] if tuned else [1.0, 0.0]).repeat(12))
    return model.eval()


@pytest.mark.parametrize("tuned", [False, True], ids=["all-frozen", "all-tuned"])
def test_spottune_counts_one_path_per_block_plus_the_policy_network(tuned):
    model = forced_spottune(tuned)
    images = torch.randn(3, 3, SIZE, SIZE)
    _, policy = model(images)
    assert policy.eq(1.0 if tuned else 0.0).all()  # the routing really is all-tuned / all-frozen
    policy_net = resnet26_flops(SIZE, 2 * 12, layers=(1, 1, 1))  # 3 stages x 1 block, Linear(256, 24)
    expected = resnet26_flops(SIZE, CLASSES) + policy_net
    assert gflops_per_image(get_method("spottune"), model, images) * 1e9 == pytest.approx(expected, rel=1e-12)


def test_mixed_routing_costs_the_same_as_one_path_and_fixed_policies_skip_the_policy_network():
    model = forced_spottune(True)
    with torch.no_grad():  # image-dependent routing: a random policy network
        torch.manual_seed(1)
        model.policy_net.classifier.weight.normal_(0.0, 1.0)
        model.policy_net.classifier.bias.zero_()
    images = torch.randn(8, 3, SIZE, SIZE)
    _, policy = model(images)
    assert 0 < policy.mean() < 1  # both paths used
    backbone, policy_net = resnet26_flops(SIZE, CLASSES), resnet26_flops(SIZE, 24, layers=(1, 1, 1))
    got = gflops_per_image(get_method("spottune"), model, images) * 1e9
    assert got == pytest.approx(backbone + policy_net)
    # running-ft passes its all-tuned policy: no policy network runs, none is counted
    assert gflops_per_image(get_method("spottune-running-ft"), model, images) * 1e9 == pytest.approx(backbone)


def test_dense_mean_of_both_paths_counts_both():
    # stochastic fine-tuning's default evaluation mixes both paths (0.5 each): both are computed
    model = SpotTune(ResNet26(CLASSES), CLASSES, None)
    model.per_image, model.stochastic_eval = True, "mean"
    images = torch.randn(2, 3, SIZE, SIZE)
    stem_and_head = conv(3, 3, 32, SIZE, SIZE) + linear(256, CLASSES)
    blocks = resnet26_flops(SIZE, CLASSES) - stem_and_head
    got = gflops_per_image(get_method("stochastic-finetune"), model, images) * 1e9
    assert got == pytest.approx(stem_and_head + 2 * blocks)


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="at least one image"):
        gflops_per_image(get_method("finetune"), ResNet26(CLASSES), torch.randn(0, 3, SIZE, SIZE))
