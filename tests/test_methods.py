"""Every registered method on generated data: one SGD step, what is frozen, what trains, the forward
contract; plus the method-specific pieces (L2-SP penalty, random routings, Global-k, deeper backbone, LwF's
distillation, PiggyBack's masks, DAN's controllers) and the #par of the Decathlon methods."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.dan import CombinedConv2d
from baselines.finetune import deepen_resnet26
from baselines.l2sp import l2sp_penalty
from baselines.lwf import distillation_loss
from baselines.piggyback import MaskedConv2d
from baselines.stochastic import half_of_blocks, random_policy
from decathlon.config import RunConfig
from decathlon.data import build_dataset, load_mean_std
from decathlon.domains import DECATHLON_COLUMNS, get_domain
from decathlon.engine import build_backbone, build_optimizer, reference_parameters, train_step
from decathlon.errors import CheckpointError, ConfigError
from decathlon.methods import Output, all_methods, get_method
from decathlon.networks.checkpoint import save_checkpoint
from decathlon.networks.params import count_parameters, stored_parameters
from decathlon.networks.resnet import ResNet26
from decathlon.presets import get_preset
from decathlon.published import published_rows
from spottune.global_k import global_k_losses
from spottune.methods import global_policy

TRAINING = [name for name, m in all_methods().items() if m.trains]
WIDTH = 0.25
BLOCKS = 12  # ResNet-26
BN = r"(stem\.bn|head\.bn|blocks\.\d+\.bn\d)\."

# The parameters each method trains (regex matched at the start of the parameter name).
TRAINABLE = {
    "finetune": r".", "scratch": r".", "l2-sp": r".", "finetune-resnet101": r".",
    "feature-extractor": r"classifier\.",
    "finetune-last-1": r"(blocks\.11\.|head\.|classifier\.)",
    "finetune-last-2": r"(blocks\.1[01]\.|head\.|classifier\.)",
    "finetune-last-3": r"(blocks\.(9|10|11)\.|head\.|classifier\.)",
    "bn-adapt": rf"({BN}|classifier\.)",
    # two-path models, frozen_bn="faithful": only the pretrained blocks' convolutions are frozen
    "spottune": r"(?!blocks\.\d+\.conv)", "spottune-global-k": r"(?!blocks\.\d+\.conv)",
    "stochastic-finetune": r"(?!blocks\.\d+\.conv)", "random-policy": r"(?!blocks\.\d+\.conv)",
    "progressive-nets": r"(?!frozen\.)",
    # LwF: everything, the source head included (its teacher copy holds buffers, not parameters)
    "lwf": r".",
    "piggyback": r"(classifier\.|.*\.scores$)",  # the mask scores and the new classifier; BN frozen
    "dan": rf"(classifier\.|.*\.controller$|{BN})",  # controllers, BN and the new classifier
    # residual adapters: every shared 3x3 convolution (stem and blocks) frozen; adapters, BN, classifier train
    "series-adapters": r"(?!stem\.conv\.|blocks\.\d+\.conv\d\.)",
    "parallel-adapters": r"(?!stem\.conv\.|blocks\.\d+\.conv\d\.)",
    # best-practices analysis: FT(rest)R(top k) trains everything, F(rest)R(top k) only the re-initialised top
    "reinit-1-tune": r".", "reinit-3-tune": r".",
    "reinit-1-freeze": r"(blocks\.11\.|head\.|classifier\.)",
    "reinit-3-freeze": r"(blocks\.(9|10|11)\.|head\.|classifier\.)",
}


@pytest.fixture(scope="module")
def batch(mini_suite):
    """Eight training images (random 32 px crops) and labels of the generated aircraft domain."""
    spec = get_domain("aircraft", suite="mini")
    mean, std = load_mean_std(mini_suite.decathlon_root, spec)
    data = build_dataset(spec, mini_suite.decathlon_root, "train",
                         get_preset("faithful").train_transform(spec, mean, std))
    torch.manual_seed(0)
    items = [data[i] for i in range(0, 160, 20)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items]), spec


def _config(name: str, **kw) -> RunConfig:
    return RunConfig(suite="mini", method=name, domain="aircraft", width=WIDTH, device="cpu", **kw)


def _build(name: str, spec, config: RunConfig | None = None):
    method = get_method(name)
    config = config or _config(name)
    torch.manual_seed(0)
    model = method.build(build_backbone(method, config, spec.num_classes), spec, spec.num_classes, config)
    return method, config, model


def _bn_layers(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", TRAINING)
def test_one_step_trains_declared_params_only(name, batch):
    images, labels, spec = batch
    method, config, model = _build(name, spec)
    optimizer, _ = build_optimizer(method, model, config, spec)
    in_groups = {id(p) for g in optimizer.param_groups for p in g["params"]}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen_bn = [(m, m.running_mean.clone(), m.running_var.clone()) for m in _bn_layers(model)
                 if m.weight is not None and not m.weight.requires_grad]
    generator = torch.Generator().manual_seed(0)
    method.train_mode(model, config)  # as the engine does before every epoch
    loss, output = train_step(method, model, model, images, labels, optimizer, config,
                              device=torch.device("cpu"), generator=generator)
    assert torch.isfinite(loss)
    assert output.logits.shape == (len(labels), spec.num_classes)
    changed = []
    for n, p in model.named_parameters():
        if id(p) not in in_groups:
            assert not p.requires_grad, f"{n} has requires_grad but is in no parameter group"
            assert torch.equal(p, before[n]), f"frozen parameter {n} changed"
        elif not torch.equal(p, before[n]):
            changed.append(n)
        else:  # unchanged trainable tensor: only possible when no image reached it (random routing)
            assert p.grad is None or not p.grad.any(), f"trainable {n} has a gradient but did not change"
    trainable = [n for n, p in model.named_parameters() if id(p) in in_groups]
    assert changed and "classifier.weight" in changed
    assert len(changed) >= 0.5 * len(trainable)
    assert name in TRAINABLE, f"declare which parameters {name} trains in TRAINABLE"
    expected = [n for n, _ in model.named_parameters() if re.match(TRAINABLE[name], n)]
    assert sorted(trainable) == sorted(expected)
    for module, mean, var in frozen_bn:  # a BN layer with frozen affine keeps its statistics
        assert torch.equal(module.running_mean, mean) and torch.equal(module.running_var, var)


@pytest.mark.parametrize("name", list(all_methods()))
def test_eval_forward_contract(name, batch):
    images, labels, spec = batch
    method, _, model = _build(name, spec)
    model.eval()
    with torch.no_grad():
        out1 = method.forward(model, images, generator=torch.Generator().manual_seed(1))
        out2 = method.forward(model, images, generator=torch.Generator().manual_seed(1))
    assert out1.logits.shape == (len(labels), spec.num_classes)
    assert torch.equal(out1.logits, out2.logits)  # evaluation is reproducible given the generator
    if out1.policy is not None:
        assert method.routing
        assert out1.policy.shape == (len(labels), BLOCKS)
        assert set(out1.policy.unique().tolist()) <= {0.0, 1.0}


def test_policy_group_has_policy_settings(batch):
    _, _, spec = batch
    method, config, model = _build("spottune", spec, _config("spottune", policy_lr=0.02, lr=0.3,
                                                           policy_weight_decay=2e-3))
    optimizer, _ = build_optimizer(method, model, config, spec)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"network", "policy"}
    assert groups["policy"]["lr"] == 0.02 and groups["policy"]["weight_decay"] == 2e-3
    assert groups["network"]["lr"] == 0.3 and groups["network"]["weight_decay"] == spec.weight_decay
    assert {id(p) for p in groups["policy"]["params"]} == {id(p) for p in model.policy_net.parameters()}


def test_spottune_frozen_bn_keeps_pretrained_block_bn(batch):
    images, labels, spec = batch
    method, config, model = _build("spottune", spec, _config("spottune", frozen_bn="frozen"))
    optimizer, _ = build_optimizer(method, model, config, spec)
    stats = {n: b.clone() for n, b in model.blocks.named_buffers()}
    params = {n: p.clone() for n, p in model.blocks.named_parameters()}
    method.train_mode(model, config)
    train_step(method, model, model, images, labels, optimizer, config, device=torch.device("cpu"),
               generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(b, stats[n]) for n, b in model.blocks.named_buffers())
    assert all(torch.equal(p, params[n]) for n, p in model.blocks.named_parameters())


@pytest.mark.parametrize("scope", ["weights", "all"])
def test_l2sp_penalty_on_known_weights(batch, scope):
    # "weights" (the default, as the L2-SP reference code): only kernels toward their pretrained values and
    # the classifier's weight; BN scale/shift and biases unregularised. "all": every parameter.
    _, _, spec = batch
    _, _, model = _build("l2-sp", spec, _config("l2-sp", l2sp_scope=scope))
    alpha, beta = 0.1, 0.01
    with torch.no_grad():
        model.classifier.weight.fill_(2.0)
        model.classifier.bias.fill_(-1.0)
    n_weight, n_bias = model.classifier.weight.numel(), model.classifier.bias.numel()
    new = 4.0 * n_weight + (1.0 * n_bias if scope == "all" else 0.0)
    assert l2sp_penalty(model, alpha, beta, scope).item() == pytest.approx(0.5 * beta * new, rel=1e-6)
    shared = 0
    with torch.no_grad():
        for n, p in model.named_parameters():
            if not n.startswith("classifier.") and not n.startswith("l2sp_reference"):
                p.add_(0.5)  # every shared parameter 0.5 away from its pretrained value
                shared += p.numel() if scope == "all" or p.dim() > 1 else 0
    everything = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier."))
    assert 0 < shared < everything if scope == "weights" else shared == everything  # BN params exist
    expected = 0.5 * alpha * 0.25 * shared + 0.5 * beta * new
    assert l2sp_penalty(model, alpha, beta, scope).item() == pytest.approx(expected, rel=1e-5)
    # the method's own loss uses the configured scope
    method = get_method("l2-sp")
    assert method.extra_loss(model, None, _config("l2-sp", l2sp_scope=scope)).item() == pytest.approx(
        expected, rel=1e-5)


def test_l2sp_has_no_plain_weight_decay(batch):
    _, _, spec = batch
    method, config, model = _build("l2-sp", spec)
    optimizer, _ = build_optimizer(method, model, config.replace(weight_decay=5e-4), spec)
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups)


def test_half_of_blocks_per_image_and_per_batch():
    g = torch.Generator().manual_seed(0)
    per_image = half_of_blocks(64, BLOCKS, per_image=True, generator=g)
    assert (per_image.sum(1) == BLOCKS // 2).all()
    assert len({tuple(r.tolist()) for r in per_image}) > 1  # different images, different blocks
    shared = half_of_blocks(64, BLOCKS, per_image=False, generator=g)
    assert (shared.sum(1) == BLOCKS // 2).all() and (shared == shared[0]).all()


def test_random_policy_last_three_always_tuned():
    p = random_policy(2000, BLOCKS, always=3, generator=torch.Generator().manual_seed(0))
    assert (p[:, -3:] == 1).all()
    assert 0.45 < p[:, :-3].mean().item() < 0.55


def test_stochastic_eval_options(batch):
    images, _, spec = batch
    outputs = {}
    for choice in ("mean", "tuned", "sampled"):
        config = _config("stochastic-finetune", stochastic_eval=choice)
        method, _, model = _build("stochastic-finetune", spec, config)
        model.eval()
        with torch.no_grad():
            outputs[choice] = method.forward(model, images, generator=torch.Generator().manual_seed(0))
    assert outputs["mean"].policy is None  # a 0.5/0.5 mix, not a hard routing
    assert (outputs["tuned"].policy == 1).all()
    assert (outputs["sampled"].policy.sum(1) == BLOCKS // 2).all()
    with pytest.raises(ConfigError, match="stochastic_eval"):
        _build("stochastic-finetune", spec, _config("stochastic-finetune", stochastic_eval="nope"))


def test_global_k_penalty_and_global_test_policy(batch):
    images, _, spec = batch
    method, config, model = _build("spottune-global-k", spec, _config("spottune-global-k", global_k=4))
    policy = torch.zeros(8, BLOCKS)
    policy[:, :3] = 1.0
    policy[:4, 3] = 1.0  # v = (1, 1, 1, 0.5, 0, ...): sum 3.5
    loss = method.extra_loss(model, Output(torch.zeros(8, 10), policy), config)
    l_k, l_e = global_k_losses(policy, 4)
    assert l_k.item() == pytest.approx(0.25)  # (3.5 - 4)^2
    assert l_e.item() == pytest.approx(0.5 * math.log(2))  # -0.5 log 0.5; 0 log 0 = 1 log 1 = 0
    assert loss.item() == pytest.approx(config.lambda1 * 0.25 + config.lambda2 * l_e.item())
    with torch.no_grad():
        model.global_usage.copy_(torch.linspace(0, 1, BLOCKS))
    mask = global_policy(model, 5)
    assert (mask == mask[0]).all() and mask[0].sum() == 4 and (mask[0, -4:] == 1).all()
    model.eval()
    with torch.no_grad():
        out = method.forward(model, images)
    assert (out.policy == mask[0]).all()


def test_running_ft_routes_every_block_to_tuned_path(batch):
    images, _, spec = batch
    method, _, model = _build("spottune-running-ft", spec)
    model.eval()
    with torch.no_grad():
        out = method.forward(model, images)
        ones = model(images, torch.ones(len(images), BLOCKS))[0]
    assert (out.policy == 1).all() and torch.equal(out.logits, ones)


def test_deeper_resnet26_starts_as_the_pretrained_function():
    torch.manual_seed(0)
    base = ResNet26(7, width=WIDTH)
    for m in base.modules():  # non-trivial BN statistics and affine, as after pretraining
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
    deep = deepen_resnet26(base, (8, 8, 8))
    assert len(deep.blocks) == 24
    x = torch.randn(2, 3, 32, 32)
    base.eval()
    deep.eval()
    with torch.no_grad():
        torch.testing.assert_close(deep(x), base(x), rtol=1e-5, atol=1e-5)


def test_progressive_net_starts_as_its_new_column(batch):
    images, _, spec = batch
    _, _, model = _build("progressive-nets", spec)
    model.eval()
    with torch.no_grad():
        h = model.stem(images)
        for block in model.blocks:
            h = block(h)
        torch.testing.assert_close(model(images), model.classifier(model.head(h)))
    assert all(not p.requires_grad for p in model.frozen.parameters())


def _perturb_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, as after pretraining."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in _bn_layers(model):
            m.running_mean.uniform_(-0.2, 0.2, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.uniform_(-0.2, 0.2, generator=g)


def test_lwf_distillation_is_zero_for_the_unchanged_network(batch):
    images, _, spec = batch
    method, config, model = _build("lwf", spec)
    assert model.source_classifier.out_features == get_domain("imagenet12", suite="mini").num_classes
    assert not list(model.teacher.parameters())  # a constant copy: buffers only, not optimised or counted
    model.eval()
    with torch.no_grad():
        student = model.source_classifier(model.features(images))
        teacher = model.teacher(images)
    torch.testing.assert_close(student, teacher, rtol=0, atol=0)
    assert distillation_loss(student, teacher, config.lwf_temperature).abs().item() < 1e-6
    # a changed source head is pulled back: the term is positive and its gradient reaches the shared layers
    with torch.no_grad():
        model.source_classifier.weight.add_(0.05 * torch.randn_like(model.source_classifier.weight))
    method.train_mode(model, config)
    assert not model.teacher.training  # the teacher's BN keeps the pretrained statistics
    output = method.forward(model, images)
    loss = method.extra_loss(model, output, config)
    assert loss.item() > 1e-4
    loss.backward()
    assert model.blocks[0].conv1.weight.grad.abs().sum() > 0 and model.classifier.weight.grad is None
    # the paper's soft cross-entropy differs from this KL by the targets' entropy only (same gradient)
    s_logits, t_logits, temp = torch.randn(4, 6), torch.randn(4, 6), config.lwf_temperature
    p = F.softmax(t_logits / temp, 1)
    cross_entropy = -(p * F.log_softmax(s_logits / temp, 1)).sum(1).mean()
    entropy = -(p * p.log()).sum(1).mean()
    kl = distillation_loss(s_logits, t_logits, temp)
    assert kl.item() == pytest.approx((cross_entropy - entropy).item(), abs=1e-6)


def test_lwf_keeps_the_pretrained_source_classifier(tmp_path):
    torch.manual_seed(0)
    source = ResNet26(13, width=WIDTH)
    path = save_checkpoint(tmp_path / "source.pt", model_state=source.state_dict(),
                           config={"backbone": "resnet26", "width": WIDTH, "num_classes": 13})
    spec = get_domain("aircraft", suite="mini")
    config = _config("lwf", pretrained=str(path))
    method = get_method("lwf")
    model = method.build(build_backbone(method, config, spec.num_classes), spec, spec.num_classes, config)
    assert torch.equal(model.source_classifier.weight, source.classifier.weight)
    assert torch.equal(model.teacher.classifier.weight, source.classifier.weight)
    assert model.classifier.out_features == spec.num_classes
    headless = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    save_checkpoint(tmp_path / "headless.pt", model_state=headless, config={})
    with pytest.raises(CheckpointError, match="headless.pt: LwF needs the source classifier"):
        build_backbone(method, config.replace(pretrained=str(tmp_path / "headless.pt")), spec.num_classes)


def test_piggyback_mask_is_binary_with_straight_through_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    weight = conv.weight.detach().clone()
    masked = MaskedConv2d(conv, mask_scale=1e-2, threshold=5e-3)
    assert (masked.mask() == 1).all()  # initialised to keep every weight: the untrained layer is the conv
    with torch.no_grad():
        masked.scores.uniform_(-1e-2, 2e-2)
    mask = masked.mask()
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(mask, (masked.scores > 5e-3).float())
    x = torch.randn(2, 4, 8, 8)
    out = masked(x)
    torch.testing.assert_close(out, F.conv2d(x, weight * mask.detach(), padding=1), rtol=0, atol=0)
    # straight-through: d loss / d scores = d loss / d (weight * mask) * weight, for kept and dropped weights
    effective = (weight * mask.detach()).requires_grad_()
    F.conv2d(x, effective, padding=1).square().sum().backward()
    out.square().sum().backward()
    torch.testing.assert_close(masked.scores.grad, effective.grad * weight)
    assert (masked.scores.grad[mask == 0] != 0).any()  # dropped weights can come back
    assert masked.weight.grad is None and torch.equal(masked.weight, weight)
    assert masked.storage_bits == {"scores": 1}


def test_piggyback_steps_keep_frozen_weights_and_statistics(batch):
    images, labels, spec = batch
    method, config, model = _build("piggyback", spec)
    optimizer, _ = build_optimizer(method, model, config, spec)
    assert isinstance(optimizer, torch.optim.Adam)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == {"masks": 1e-4, "classifier": 1e-4}
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups)
    frozen = {n: t.detach().clone() for n, t in model.state_dict().items()
              if not n.endswith("scores") and not n.startswith("classifier.")}
    scores = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("scores")}
    for _ in range(3):
        method.train_mode(model, config)
        train_step(method, model, model, images, labels, optimizer, config, device=torch.device("cpu"),
                   generator=None)
    state = model.state_dict()
    assert all(torch.equal(state[n], t) for n, t in frozen.items())  # weights and BN statistics
    assert any(not torch.equal(p, scores[n]) for n, p in model.named_parameters() if n.endswith("scores"))
    with pytest.raises(ConfigError, match="piggyback_mask_scale"):
        _build("piggyback", spec, _config("piggyback", piggyback_mask_scale=1e-3))


def test_piggyback_and_dan_start_as_the_pretrained_network(batch):
    images, _, spec = batch
    torch.manual_seed(0)
    source = ResNet26(spec.num_classes, width=WIDTH)
    _perturb_bn(source)
    source.eval()
    with torch.no_grad():
        expected = source.features(images)
    for name in ("piggyback", "dan"):
        method, config = get_method(name), _config(name)
        model = method.build(copy.deepcopy(source), spec, spec.num_classes, config)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model.features(images), expected, rtol=1e-5, atol=1e-5)
        wrapper = MaskedConv2d if name == "piggyback" else CombinedConv2d
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(type(m) is wrapper for m in convs)  # every convolution adapted


def test_dan_filters_are_combinations_of_the_frozen_filters():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
    weight = conv.weight.detach().clone()
    dan = CombinedConv2d(conv)
    assert torch.equal(dan.controller, torch.eye(6))
    with torch.no_grad():
        dan.controller.copy_(torch.randn(6, 6))
    x = torch.randn(2, 4, 9, 9)
    out = dan(x)
    # new filter i = sum_j C[i, j] * source filter j
    combined = torch.einsum("ij,jchw->ichw", dan.controller.detach(), weight)
    torch.testing.assert_close(out, F.conv2d(x, combined, stride=2, padding=1), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert dan.controller.grad is not None and dan.weight.grad is None and torch.equal(dan.weight, weight)


@pytest.mark.parametrize("name", ["lwf", "piggyback", "dan"])
def test_par_over_the_decathlon_matches_the_published_value(name):
    """#par as the tables count it: 1 shared network + sum over the nine targets of stored parameters /
    one plain ResNet-26 (width 1) with that target's classifier; within 10 % of the published value."""
    method = get_method(name)
    targets = [get_domain(d) for d in DECATHLON_COLUMNS if not get_domain(d).is_source]
    first = targets[0]
    config = RunConfig(suite="decathlon", method=name, domain=first.name, width=1.0, device="cpu")
    torch.manual_seed(0)
    model = method.build(build_backbone(method, config, first.num_classes), first, first.num_classes, config)
    plain = ResNet26(first.num_classes, width=1.0)
    assert count_parameters(plain)[0] == reference_parameters(config, first.num_classes)
    par = 1.0
    for spec in targets:  # the same model with each target's real class count (the classifier is new)
        model.classifier = nn.Linear(model.feature_dim, spec.num_classes)
        plain.classifier = nn.Linear(plain.feature_dim, spec.num_classes)
        par += stored_parameters(model) / count_parameters(plain)[0]
    published = published_rows("decathlon")[name].par
    assert par == pytest.approx(published, rel=0.10), f"{name}: #par {par:.3f}, published {published}"


def _small_bottleneck_net(num_classes: int) -> nn.Module:
    """A two-block network of torchvision's Bottleneck blocks (the second downsampling through a 1x1
    convolution + BN, as in ResNet-50) in the backbone interface."""
    from torchvision.models.resnet import Bottleneck

    from decathlon.networks.resnet import Backbone

    stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    blocks = [Bottleneck(16, 4), Bottleneck(16, 8, stride=2, downsample=down)]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone(stem, blocks, head, nn.Linear(32, num_classes))


@pytest.mark.parametrize("name", ["lwf", "piggyback", "dan"])
def test_new_baselines_run_on_torchvision_bottlenecks(name):
    """The extra-dataset setting's blocks (torchvision bottlenecks with a downsampling convolution): every
    convolution is adapted, a step trains, the source filters stay fixed where the method freezes them."""
    method = get_method(name)
    assert "extra" in method.settings
    config = RunConfig(suite="extra", method=name, domain="cubs", backbone="resnet50", device="cpu")
    spec = get_domain("cubs")
    torch.manual_seed(0)
    source = _small_bottleneck_net(7)  # the source head: 7 classes
    _perturb_bn(source)
    images, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    source.eval()
    with torch.no_grad():
        expected = source.features(images)
    model = method.build(copy.deepcopy(source), spec, spec.num_classes, config)
    model.eval()
    with torch.no_grad():  # untrained: the source network's features
        torch.testing.assert_close(model.features(images), expected, rtol=1e-5, atol=1e-5)
    convs = {n: m.weight.detach().clone() for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and not n.startswith("teacher.")}
    assert len(convs) == 1 + 3 + 4  # stem, 3 per bottleneck, the downsampling convolution
    if name != "lwf":
        assert all(type(m) is not nn.Conv2d for m in model.modules())
    optimizer, _ = build_optimizer(method, model, config, spec)
    method.train_mode(model, config)
    loss, output = train_step(method, model, model, images, labels, optimizer, config,
                              device=torch.device("cpu"), generator=None)
    assert torch.isfinite(loss) and output.logits.shape == (4, spec.num_classes)
    changed = [n for n, m in model.named_modules() if n in convs and not torch.equal(m.weight, convs[n])]
    assert bool(changed) == (name == "lwf")  # LwF fine-tunes; PiggyBack and DAN keep the source filters


def test_lwf_source_head_of_the_resnet50_setting():
    """Without weights files the source head has the source domain's classes (ImageNet's 1000)."""
    method = get_method("lwf")
    config = RunConfig(suite="extra", method="lwf", domain="cubs", backbone="resnet50", device="cpu")
    assert method.create_backbone(config, 200).classifier.out_features == 1000
