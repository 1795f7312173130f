"""Global-k losses and the compact export of a global policy."""

from __future__ import annotations

import math

import pytest
import torch

from decathlon.errors import ConfigError
from decathlon.networks.params import count_parameters
from decathlon.networks.resnet import ResNet26
from spottune.global_k import block_fractions, export_compact, global_k_losses
from spottune.model import SpotTune
from spottune.policy import gumbel_softmax_st
from tests.test_models import WIDTH, images, small_spottune


def test_losses_on_hand_computed_fractions():
    policy = torch.tensor([[1.0, 0.0, 1.0, 0.0],
                           [1.0, 0.0, 0.0, 0.0],
                           [1.0, 1.0, 0.0, 0.0],
                           [1.0, 0.0, 0.0, 0.0]])
    # v = (1, 1/4, 1/4, 0): sum 1.5
    assert torch.equal(block_fractions(policy), torch.tensor([1.0, 0.25, 0.25, 0.0]))
    l_k, l_e = global_k_losses(policy, k=1)
    assert l_k.item() == pytest.approx(0.25)  # (1.5 - 1)^2
    assert l_e.item() == pytest.approx(-2 * 0.25 * math.log(0.25))  # 1 log 1 = 0 log 0 = 0
    l_k3, _ = global_k_losses(policy, k=3)
    assert l_k3.item() == pytest.approx(2.25)
    # per-path values (batch, blocks, 2): index 1 is the fine-tuned path
    two_paths = torch.stack([1 - policy, policy], dim=-1)
    assert torch.equal(torch.stack(global_k_losses(two_paths, 1)), torch.stack((l_k, l_e)))


def test_entropy_is_zero_only_for_binary_fractions():
    assert global_k_losses(torch.ones(5, 3), 3)[1].item() == 0.0
    assert global_k_losses(torch.zeros(5, 3), 0)[1].item() == 0.0
    half = torch.tensor([[1.0], [0.0]])
    assert global_k_losses(half, 0)[1].item() == pytest.approx(0.5 * math.log(2))  # -v log v at v = 1/2


def test_straight_through_fractions_are_exact_and_differentiable():
    logits = torch.randn(32, 6, 2, generator=torch.Generator().manual_seed(0)).requires_grad_()
    policy = gumbel_softmax_st(logits, tau=5.0, generator=torch.Generator().manual_seed(1))[..., 1]
    v = block_fractions(policy)
    assert torch.equal(v.detach(), policy.detach().mean(0))  # true fractions in the forward pass
    assert torch.equal(v.detach() * 32, (v.detach() * 32).round())
    l_k, l_e = global_k_losses(policy, k=2)
    (l_k + 0.1 * l_e).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # l_k > 0 here (sum v is about 3 for random logits): its gradient lowers the fine-tuned logits
    assert l_k.item() > 0


def test_zero_fraction_gives_finite_gradients():
    logits = torch.tensor([[[5.0, -5.0]] * 3] * 4, requires_grad=True)
    policy = gumbel_softmax_st(logits, tau=5.0, generator=torch.Generator().manual_seed(0))[..., 1]
    assert policy.sum().item() == 0  # every block on the pretrained path
    l_k, l_e = global_k_losses(policy, k=1)
    (l_k + l_e).backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_shape_is_refused():
    with pytest.raises(ConfigError, match="shape"):
        global_k_losses(torch.zeros(4), 1)


def test_compact_export_equals_two_path_model_under_a_global_policy():
    model, _ = small_spottune()
    model.eval()
    mask = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1], dtype=torch.float32)
    sample = mask.expand(20, 12).clone()
    sample[:3, 0] = 0  # 17/20 fine-tuned: still the tuned copy
    sample[:8, 1] = 1  # 8/20 fine-tuned: still the pretrained block
    sample[:10, 2] = 1  # exactly one half: the tuned copy
    compact = export_compact(model, sample)
    expected_mask = mask.clone()
    expected_mask[2] = 1
    assert compact.tuned_mask == tuple(bool(b) for b in expected_mask)
    assert not compact.training and len(compact.blocks) == 12
    x = images(6)
    with torch.no_grad():
        two_path, _ = model(x, expected_mask.expand(6, 12))
        torch.testing.assert_close(compact(x), two_path, rtol=0, atol=1e-6)
    # a plain single-path network: as many parameters as the backbone, all trainable, none shared
    plain = count_parameters(ResNet26(5, width=WIDTH))[0]
    assert compact.num_parameters == plain == count_parameters(compact)[1]
    with torch.no_grad():
        compact.blocks[0].conv1.weight.zero_()
    assert model.tuned_blocks[0].conv1.weight.abs().sum() > 0  # deep copies


def test_compact_export_checks_the_block_count():
    model = SpotTune(ResNet26(3, width=WIDTH), 3)
    with pytest.raises(ConfigError, match="12"):
        export_compact(model, torch.ones(4, 11))
