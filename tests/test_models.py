"""Backbones, the two-path SpotTune model, policy networks, parameter counts and the checkpoint format."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decathlon.errors import CheckpointError, ConfigError, UnknownNameError
from decathlon.networks.checkpoint import load_checkpoint, save_checkpoint
from decathlon.networks.factory import BACKBONES, create_backbone, load_weights_file
from decathlon.networks.params import count_parameters, par_ratio
from decathlon.networks.resnet import Backbone, ResNet26, TorchvisionResNet, load_torchvision_state
from spottune.model import SpotTune, reference_dense_forward, route_sparse
from spottune.policy import decathlon_policy_net, gumbel_softmax_st, small_policy_net

WIDTH = 0.25  # small networks keep the suite fast; full size only where the size is the point
SIZE = 32  # px

# Weight shapes of the official SpotTune ResNet-26 (100 classes) and agent (12 blocks), copied from
# /work/shared/reference/official-state-dict-keys.txt (running statistics and biases of BN omitted).
OFFICIAL_RESNET26 = (
    "conv1.weight (32, 3, 3, 3) ; bn1.weight (32,) ; blocks.0.0.conv1.weight (64, 32, 3, 3) ; "
    "blocks.0.0.bn1.weight (64,) ; blocks.0.0.conv2.1.weight (64, 64, 3, 3) ; blocks.0.0.bn2.weight "
    "(64,) ; blocks.0.1.conv1.weight (64, 64, 3, 3) ; blocks.0.1.bn1.weight (64,) ; "
    "blocks.0.1.conv2.1.weight (64, 64, 3, 3) ; blocks.0.1.bn2.weight (64,) ; blocks.0.2.conv1.weight "
    "(64, 64, 3, 3) ; blocks.0.2.bn1.weight (64,) ; blocks.0.2.conv2.1.weight (64, 64, 3, 3) ; "
    "blocks.0.2.bn2.weight (64,) ; blocks.0.3.conv1.weight (64, 64, 3, 3) ; blocks.0.3.bn1.weight "
    "(64,) ; blocks.0.3.conv2.1.weight (64, 64, 3, 3) ; blocks.0.3.bn2.weight (64,) ; "
    "blocks.1.0.conv1.weight (128, 64, 3, 3) ; blocks.1.0.bn1.weight (128,) ; "
    "blocks.1.0.conv2.1.weight (128, 128, 3, 3) ; blocks.1.0.bn2.weight (128,) ; "
    "blocks.1.1.conv1.weight (128, 128, 3, 3) ; blocks.1.1.bn1.weight (128,) ; "
    "blocks.1.1.conv2.1.weight (128, 128, 3, 3) ; blocks.1.1.bn2.weight (128,) ; "
    "blocks.1.2.conv1.weight (128, 128, 3, 3) ; blocks.1.2.bn1.weight (128,) ; "
    "blocks.1.2.conv2.1.weight (128, 128, 3, 3) ; blocks.1.2.bn2.weight (128,) ; "
    "blocks.1.3.conv1.weight (128, 128, 3, 3) ; blocks.1.3.bn1.weight (128,) ; "
    "blocks.1.3.conv2.1.weight (128, 128, 3, 3) ; blocks.1.3.bn2.weight (128,) ; "
    "blocks.2.0.conv1.weight (256, 128, 3, 3) ; blocks.2.0.bn1.weight (256,) ; "
    "blocks.2.0.conv2.1.weight (256, 256, 3, 3) ; blocks.2.0.bn2.weight (256,) ; "
    "blocks.2.1.conv1.weight (256, 256, 3, 3) ; blocks.2.1.bn1.weight (256,) ; "
    "blocks.2.1.conv2.1.weight (256, 256, 3, 3) ; blocks.2.1.bn2.weight (256,) ; "
    "blocks.2.2.conv1.weight (256, 256, 3, 3) ; blocks.2.2.bn1.weight (256,) ; "
    "blocks.2.2.conv2.1.weight (256, 256, 3, 3) ; blocks.2.2.bn2.weight (256,) ; "
    "blocks.2.3.conv1.weight (256, 256, 3, 3) ; blocks.2.3.bn1.weight (256,) ; "
    "blocks.2.3.conv2.1.weight (256, 256, 3, 3) ; blocks.2.3.bn2.weight (256,) ; bn2.0.weight (256,) "
    "; linear.weight (100, 256) ; linear.bias (100,) "
)
OFFICIAL_AGENT = (
    "conv1.weight (32, 3, 3, 3) ; bn1.weight (32,) ; blocks.0.0.conv1.weight (64, 32, 3, 3) ; "
    "blocks.0.0.bn1.weight (64,) ; blocks.0.0.conv2.1.weight (64, 64, 3, 3) ; blocks.0.0.bn2.weight "
    "(64,) ; blocks.1.0.conv1.weight (128, 64, 3, 3) ; blocks.1.0.bn1.weight (128,) ; "
    "blocks.1.0.conv2.1.weight (128, 128, 3, 3) ; blocks.1.0.bn2.weight (128,) ; "
    "blocks.2.0.conv1.weight (256, 128, 3, 3) ; blocks.2.0.bn1.weight (256,) ; "
    "blocks.2.0.conv2.1.weight (256, 256, 3, 3) ; blocks.2.0.bn2.weight (256,) ; bn2.0.weight (256,) "
    "; linear.weight (24, 256) ; linear.bias (24,) "
)


def official_shapes(table: str, blocks_per_stage: int) -> dict[str, tuple[int, ...]]:
    """Official names mapped onto harness names (block S.B -> blocks.{S * per_stage + B})."""
    out = {}
    for entry in table.split(";"):
        key, shape = entry.strip().split(" ", 1)
        shape = tuple(int(s) for s in re.findall(r"\d+", shape))
        key = re.sub(r"^conv1\.", "stem.conv.", key)
        key = re.sub(r"^bn1\.", "stem.bn.", key)
        key = re.sub(r"^bn2\.0\.", "head.bn.", key)
        key = re.sub(r"^linear\.", "classifier.", key)
        key = key.replace("conv2.1.", "conv2.")
        key = re.sub(r"^blocks\.(\d+)\.(\d+)\.",
                     lambda m: f"blocks.{int(m[1]) * blocks_per_stage + int(m[2])}.", key)
        out[key] = shape
    return out


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial affine parameters and running statistics (as a trained network has)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))
    return model


def perturb(module: nn.Module, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def images(batch: int = 8, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def small_spottune(classes: int = 5, *, frozen_bn: str = "faithful",
                   seed: int = 0) -> tuple[SpotTune, Backbone]:
    """A width-0.25 SpotTune whose tuned copies differ from the pretrained blocks, and its backbone."""
    torch.manual_seed(seed)
    backbone = randomise_bn(ResNet26(classes, width=WIDTH), seed)
    reference = copy.deepcopy(backbone)
    model = SpotTune(backbone, classes, decathlon_policy_net(12, WIDTH), frozen_bn=frozen_bn)
    model.classifier.load_state_dict(reference.classifier.state_dict())
    perturb(model.tuned_blocks, seed + 1)
    return model, reference


# ---------------------------------------------------------------------------------------------- backbones


def test_resnet26_conv_bn_parameter_count_matches_reference():
    net = ResNet26(1000)
    conv_bn = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("classifier."))
    assert conv_bn == 5_814_688
    assert len(net.blocks) == 12 and net.feature_dim == 256


def test_resnet26_names_and_shapes_match_official_network():
    own = {k: tuple(v.shape) for k, v in ResNet26(100).state_dict().items()}
    expected = official_shapes(OFFICIAL_RESNET26, blocks_per_stage=4)
    assert len(expected) == 2 + 12 * 4 + 1 + 2
    for key, shape in expected.items():
        assert own[key] == shape, key


def test_policy_net_names_shapes_and_size_match_official_agent():
    net = decathlon_policy_net(12)
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    for key, shape in official_shapes(OFFICIAL_AGENT, blocks_per_stage=1).items():
        assert own[key] == shape, key
    # stem 928 + blocks 55,552 + 221,696 + 885,760 + head BN 512 + Linear(256, 24) 6,168
    assert count_parameters(net) == (1_170_616, 1_170_616)


def test_resnet26_geometry_and_downsampling_shortcut():
    net = ResNet26(7, width=WIDTH).eval()
    x = images(2, size=64)
    stem_out = net.stem(x)
    assert stem_out.shape == (2, 8, 64, 64)  # stride 1 stem, 32 * 0.25 channels
    out = net.blocks[0](stem_out)
    assert out.shape == (2, 16, 32, 32)  # first block of stage 1 has stride 2
    shortcut = net.blocks[0].shortcut(stem_out)
    assert torch.equal(shortcut[:, :8], nn.functional.avg_pool2d(stem_out, 2))
    assert not shortcut[:, 8:].any()  # zero channels appended
    assert sum(p.numel() for p in net.blocks[0].shortcut.parameters()) == 0
    assert net.features(x).shape == (2, 64) and net(x).shape == (2, 7)
    # stem has no ReLU: its output keeps negative values
    assert (stem_out < 0).any()


@pytest.mark.parametrize("name, blocks, feature_dim", [("resnet26", 12, 256), ("resnet50", 16, 2048),
                                                       ("resnet101", 33, 2048)])
def test_registry_builds_every_backbone(name, blocks, feature_dim):
    net = create_backbone(name, 3).eval()
    assert isinstance(net, Backbone) and isinstance(net.blocks, nn.ModuleList)
    assert len(net.blocks) == blocks and net.feature_dim == feature_dim
    assert net.classifier.out_features == 3
    with torch.no_grad():
        logits = net(images(1))
        manual = net.classifier(net.head(torch.nn.Sequential(*net.blocks)(net.stem(images(1)))))
    assert logits.shape == (1, 3)
    torch.testing.assert_close(logits, manual)


def test_registry_is_immutable_and_unknown_name_lists_known():
    with pytest.raises(TypeError):
        BACKBONES["x"] = None
    with pytest.raises(UnknownNameError, match="resnet26, resnet50, resnet101"):
        create_backbone("resnet18x", 10)


def test_imagenet_weights_only_for_torchvision_backbones():
    with pytest.raises(ConfigError, match="resnet26"):
        create_backbone("resnet26", 10, weights="imagenet")
    with pytest.raises(ConfigError, match="width"):
        create_backbone("resnet50", 10, width=0.5)


def test_imagenet_weights_offline_raise_a_checkpoint_error(monkeypatch):
    import urllib.error

    import torchvision

    class Offline:
        def get_state_dict(self, progress=True):
            raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models, "get_weight", lambda name: Offline())
    with pytest.raises(CheckpointError, match="ResNet50_Weights.*pass the file path"):
        create_backbone("resnet50", 10, weights="imagenet")


def test_torchvision_state_dict_file_loads_by_name_and_drops_classifier(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=1000).eval()  # the smallest torchvision ResNet
    randomise_bn(reference)
    torch.save(reference.state_dict(), tmp_path / "resnet18-imagenet.pth")
    net = TorchvisionResNet("resnet18", num_classes=4).eval()
    load_weights_file(net, "resnet18", tmp_path / "resnet18-imagenet.pth")
    x = images(2)
    with torch.no_grad():
        expected = torch.flatten(reference.avgpool(reference.layer4(reference.layer3(reference.layer2(
            reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))), 1)
        torch.testing.assert_close(net.features(x), expected)
    assert net.classifier.out_features == 4  # 1000-class fc dropped by name
    broken = dict(reference.state_dict())
    broken["layer2.0.conv1.weight"] = broken["layer2.0.conv1.weight"][:, :3]
    with pytest.raises(CheckpointError, match=r"blocks\.2\.conv1\.weight"):
        load_torchvision_state(net, broken)


def test_backbone_weights_from_harness_checkpoint(tmp_path):
    source = randomise_bn(ResNet26(10, width=WIDTH)).eval()
    path = save_checkpoint(tmp_path / "backbone.pt", model_state=source.state_dict(),
                           config={"backbone": "resnet26", "width": WIDTH, "num_classes": 10})
    same = create_backbone("resnet26", 10, width=WIDTH, weights=path).eval()
    other_classes = create_backbone("resnet26", 3, width=WIDTH, weights=str(path)).eval()
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(same(x), source(x), rtol=0, atol=0)
        torch.testing.assert_close(other_classes.features(x), source.features(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="shape"):
        create_backbone("resnet26", 10, width=0.5, weights=path)
    with pytest.raises(CheckpointError, match="does not exist"):
        create_backbone("resnet26", 10, weights=tmp_path / "missing.pt")


def test_foreign_weights_file_is_refused(tmp_path):
    torch.save({"something": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt"):
        create_backbone("resnet26", 10, width=WIDTH, weights=tmp_path / "foreign.pt")


def test_odd_feature_maps_keep_shortcut_and_conv_paths_aligned():
    net = ResNet26(3, width=WIDTH).eval()
    x = images(2, size=36)  # 36 -> 18 -> 9 -> 5 px: the last downsampling sees an odd map
    h = net.stem(x)
    for block in net.blocks:
        h = block(h)
    assert h.shape == (2, 64, 5, 5)
    assert net(x).shape == (2, 3)


# ---------------------------------------------------------------------------------------------- policy


def test_gumbel_softmax_st_forward_is_one_hot_and_gradient_reaches_logits():
    logits = torch.randn(16, 12, 2, generator=torch.Generator().manual_seed(0), requires_grad=True)
    sample = gumbel_softmax_st(logits, tau=5.0, generator=torch.Generator().manual_seed(1))
    assert set(sample.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(sample.detach().sum(-1), torch.ones(16, 12))
    weights = torch.randn(16, 12, 2, generator=torch.Generator().manual_seed(2))
    (sample * weights).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    again = gumbel_softmax_st(logits.detach(), tau=5.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, sample.detach())  # the generator drives the noise


def test_gumbel_sampling_follows_the_logits():
    logits = torch.tensor([[0.0, 2.0]]).expand(4000, 2)
    sample = gumbel_softmax_st(logits, tau=1.0, generator=torch.Generator().manual_seed(0))
    # Gumbel-Max picks index 1 with probability softmax(logits)[1] = 0.881
    assert abs(sample[:, 1].mean().item() - torch.sigmoid(torch.tensor(2.0)).item()) < 0.03


def test_small_policy_net_resizes_its_input():
    net = small_policy_net(16, input_size=16, width=WIDTH).eval()
    x = images(3, size=48)
    with torch.no_grad():
        out = net(x)
        resized = nn.functional.interpolate(x, size=(16, 16), mode="bilinear", antialias=True)
        torch.testing.assert_close(out, net(resized))
    assert out.shape == (3, 16, 2)


# ---------------------------------------------------------------------------------------------- SpotTune


def test_all_zero_policy_equals_the_pretrained_backbone():
    model, reference = small_spottune()
    model.eval(), reference.eval()
    x = images()
    zeros = torch.zeros(8, 12)
    with torch.no_grad():
        for sparse in (True, False):
            logits, policy = model(x, zeros, sparse=sparse)
            torch.testing.assert_close(logits, reference(x), rtol=0, atol=1e-6)
            assert policy is zeros


def test_all_one_policy_equals_a_backbone_of_tuned_blocks():
    model, _ = small_spottune()
    model.eval()
    tuned_net = Backbone(model.stem, model.tuned_blocks, model.head, model.classifier).eval()
    x = images()
    with torch.no_grad():
        expected = tuned_net(x)
        for sparse in (True, False):
            logits, _ = model(x, torch.ones(8, 12), sparse=sparse)
            torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
        assert (expected - model(x, torch.zeros(8, 12))[0]).abs().max() > 1e-3  # the paths differ


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_eval_equals_dense_eval_on_random_routings(seed):
    model, _ = small_spottune(seed=seed)
    model.eval()
    x = images(16, seed=seed)
    g = torch.Generator().manual_seed(seed)
    policy = (torch.rand(16, 12, generator=g) < 0.5).float()
    policy[:, 3] = 0  # a block with no fine-tuned image
    policy[:, 7] = 1  # a block with every image fine-tuned
    with torch.no_grad():
        dense, _ = model(x, policy, sparse=False)
        sparse, _ = model(x, policy)
        per_image = torch.cat([model(x[i:i + 1], policy[i:i + 1])[0] for i in range(16)])
    # convolution kernels may differ with the batch size: equal up to float32 rounding (|logits| ~ 5-50)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_image, dense, rtol=1e-5, atol=1e-5)


def test_sparse_eval_keeps_channels_last_and_matches_dense():
    model, _ = small_spottune()
    model = model.eval().to(memory_format=torch.channels_last)
    x = images(8).contiguous(memory_format=torch.channels_last)
    policy = (torch.rand(8, 12, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    with torch.no_grad():
        sparse, _ = model(x, policy)
        dense, _ = model(x, policy, sparse=False)
        h = model.stem(x)
        routed = route_sparse(model.blocks[0], model.tuned_blocks[0], h, policy[:, 0].bool())
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    assert routed.is_contiguous(memory_format=torch.channels_last)


def test_training_forward_mixes_densely_and_trains_the_policy_net():
    model, _ = small_spottune()
    model.train()
    x = images()
    logits, policy, probs = model(x, generator=torch.Generator().manual_seed(0), return_probs=True)
    assert logits.shape == (8, 5) and policy.shape == (8, 12) and probs.shape == (8, 12)
    assert set(policy.detach().unique().tolist()) <= {0.0, 1.0}
    assert ((probs > 0) & (probs < 1)).all()
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.policy_net.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    # pretrained convolutions are frozen: no gradient; their BN affine parameters do train
    assert model.blocks[0].conv1.weight.grad is None
    assert model.blocks[0].bn1.weight.grad is not None
    assert model.tuned_blocks[0].conv1.weight.grad is not None


def test_training_mix_is_per_image_with_batch_statistics():
    model, _ = small_spottune()
    model.train()
    x = images()
    policy = (torch.arange(12) % 2).float().expand(8, 12).clone()
    policy[0] = 1 - policy[0]
    with torch.no_grad():
        mixed, _ = model(x, policy)
        # the same blend computed by hand, block by block, on the whole batch
        h = model.stem(x)
        for l, (frozen, tuned) in enumerate(zip(model.blocks, model.tuned_blocks, strict=True)):
            w = policy[:, l].view(-1, 1, 1, 1)
            h = w * tuned(h) + (1 - w) * frozen(h)
        expected = model.classifier(model.head(h))
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frozen_bn", ["faithful", "frozen"])
@pytest.mark.parametrize("dtype, fast_format, tol", [
    # the engine's step (channels_last) against the reference in the default layout: in float64 the only
    # difference, the order of float sums inside the kernels, is invisible (agreement ~1e-14)
    (torch.float64, torch.channels_last, 1e-10),
    # float32, same layout: the harness's lerp mixing against the reference's multiply-add
    (torch.float32, torch.contiguous_format, 1e-5),
])
def test_training_step_equals_the_plain_dense_two_path_reference(frozen_bn, dtype, fast_format, tol):
    """The harness's training step against the reference code's computation (both paths on the whole batch,
    mask multiply-add, default memory format): same logits, every gradient, same running statistics."""
    model, _ = small_spottune(frozen_bn=frozen_bn)
    model.train().to(dtype)
    plain = copy.deepcopy(model)
    fast = copy.deepcopy(model).to(memory_format=fast_format)
    x, y = images(16, size=32).to(dtype), torch.arange(16) % 5
    reference = reference_dense_forward(plain, x, torch.Generator().manual_seed(0))
    logits, policy = fast(x.contiguous(memory_format=fast_format), generator=torch.Generator().manual_seed(0))
    assert 0 < float(policy.detach().mean()) < 1  # both paths are used
    F.cross_entropy(reference, y).backward()
    F.cross_entropy(logits, y).backward()
    torch.testing.assert_close(logits, reference, rtol=tol, atol=tol)
    grads = {name: p.grad for name, p in plain.named_parameters()}
    fast_grads = {name: p.grad for name, p in fast.named_parameters()}
    with_grad = {n for n, g in grads.items() if g is not None}
    assert with_grad == {n for n, g in fast_grads.items() if g is not None}
    assert {n.split(".")[0] for n in with_grad} >= {"policy_net", "stem", "tuned_blocks", "classifier"}
    for name in with_grad:
        torch.testing.assert_close(fast_grads[name], grads[name], rtol=tol, atol=tol, msg=name)
    for (name, a), (_, b) in zip(plain.named_buffers(), fast.named_buffers(), strict=True):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol, msg=name)


def test_same_generator_gives_the_same_training_policy():
    model, _ = small_spottune()
    model.train()
    x = images()
    _, a = model(x, generator=torch.Generator().manual_seed(3))
    _, b = model(x, generator=torch.Generator().manual_seed(3))
    _, c = model(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_policy_argmax_and_sampled():
    model, _ = small_spottune()
    model.eval()
    x = images()
    with torch.no_grad():
        logits_routing = model.policy_net(x)
        _, policy = model(x)
        assert torch.equal(policy, logits_routing.argmax(-1).float())
        model.eval_policy = "sampled"
        with pytest.raises(ConfigError, match="Generator"):
            model(x)
        _, s1 = model(x, generator=torch.Generator().manual_seed(0))
        _, s2 = model(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and set(s1.unique().tolist()) <= {0.0, 1.0}


def test_given_policy_needs_no_policy_net_and_is_checked():
    backbone = ResNet26(4, width=WIDTH)
    model = SpotTune(backbone, 4).eval()
    with pytest.raises(ConfigError, match="policy"):
        model(images(2))
    with pytest.raises(ConfigError, match=r"\(2, 12\)"):
        model(images(2), torch.zeros(2, 11))
    assert model(images(2), torch.zeros(2, 12))[0].shape == (2, 4)


def test_faithful_mode_trains_every_bn_and_freezes_pretrained_convs():
    model, _ = small_spottune(frozen_bn="faithful")
    frozen_backbone = ResNet26(5, width=WIDTH).requires_grad_(False)  # e.g. left frozen by another method
    assert all(p.requires_grad for p in SpotTune(frozen_backbone, 5).tuned_blocks.parameters())
    for name, p in model.named_parameters():
        frozen = name.startswith("blocks.") and ".bn" not in name
        assert p.requires_grad != frozen, name
    model.train()
    assert all(m.training for m in model.blocks.modules())
    bn = model.blocks[5].bn1
    before = bn.running_mean.clone()
    model(images(), torch.zeros(8, 12))
    assert not torch.equal(before, bn.running_mean)  # running statistics of pretrained blocks update


def test_frozen_mode_keeps_pretrained_bn_fixed_in_train_mode():
    model, _ = small_spottune(frozen_bn="frozen")
    for name, p in model.named_parameters():
        assert p.requires_grad != name.startswith("blocks."), name
    model.train()
    bns = [m for m in model.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert all(m.training for m in model.tuned_blocks.modules())
    assert model.head.bn.training and model.stem.bn.training
    frozen_stats = [m.running_mean.clone() for m in bns]
    tuned_stat = model.tuned_blocks[5].bn1.running_mean.clone()
    model(images(), torch.full((8, 12), 0.0))
    model(images(), torch.full((8, 12), 1.0))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(frozen_stats, bns, strict=True))
    assert not torch.equal(tuned_stat, model.tuned_blocks[5].bn1.running_mean)
    model.eval()
    assert not any(m.training for m in model.modules())
    with pytest.raises(ConfigError, match="frozen_bn"):
        SpotTune(ResNet26(3, width=WIDTH), 3, frozen_bn="partly")


# ---------------------------------------------------------------------------------------------- counts


def test_parameter_counts_and_par_ratio():
    classes = 10
    backbone = ResNet26(classes, width=WIDTH)
    plain_total, plain_trainable = count_parameters(backbone)
    assert plain_total == plain_trainable == sum(p.numel() for p in backbone.parameters())
    policy = decathlon_policy_net(12, WIDTH)
    policy_total = count_parameters(policy)[0]
    blocks = sum(p.numel() for p in backbone.blocks.parameters())
    frozen_convs = sum(p.numel() for n, p in backbone.blocks.named_parameters() if ".bn" not in n)
    model = SpotTune(backbone, classes, policy)
    total, trainable = count_parameters(model)
    assert total == plain_total + blocks + policy_total
    assert trainable == total - frozen_convs
    assert par_ratio(model, plain_total) == pytest.approx(total / plain_total)
    assert 2.0 < par_ratio(model, plain_total) < 2.4
    assert par_ratio(backbone, plain_total) == 1.0


def test_full_size_spottune_par_is_about_two_point_two():
    backbone = ResNet26(100)
    plain = count_parameters(backbone)[0]
    model = SpotTune(backbone, 100, decathlon_policy_net(12))
    # 2 x 5.81 M blocks (stem and head shared) + 1.17 M policy, relative to 5.84 M
    assert par_ratio(model, plain) == pytest.approx((plain + 5_813_248 + 1_170_616) / plain)


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model, _ = small_spottune()
    extra = {"epoch": 3, "rng": torch.get_rng_state(), "history": [0.5, 0.25], "note": None,
             "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]}}
    path = save_checkpoint(tmp_path / "sub" / "ck.pt", model_state=model.state_dict(),
                           config={"method": "spottune", "width": WIDTH}, extra=extra)
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == {"method": "spottune", "width": WIDTH}
    loaded = load_checkpoint(path)
    assert loaded["extra"]["epoch"] == 3 and torch.equal(loaded["extra"]["rng"], extra["rng"])
    state = model.state_dict()
    assert loaded["model_state"].keys() == state.keys()
    assert all(torch.equal(loaded["model_state"][k], v) for k, v in state.items())
    fresh, _ = small_spottune(seed=5)
    fresh.load_state_dict(loaded["model_state"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt"]  # no temporary file left


def test_checkpoint_refuses_objects_and_bad_files(tmp_path):
    import numpy as np

    with pytest.raises(CheckpointError, match=r"\['rng'\].*ndarray"):
        save_checkpoint(tmp_path / "a.pt", model_state={}, config={}, extra={"rng": np.zeros(3)})
    assert not list(tmp_path.iterdir())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a harness checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"module": nn.Linear(1, 1)}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="pickled.pt"):
        load_checkpoint(tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
