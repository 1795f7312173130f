"""Residual adapters (baselines/adapters.py, decathlon/networks/adapters.py): the untrained model is the
source network, the fused parallel convolution equals two convolutions, #par matches the paper, and the
reference code's separate 1x1 weight decay is a parameter group."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn

from decathlon.config import RunConfig
from decathlon.domains import DECATHLON_COLUMNS, get_domain
from decathlon.engine import build_optimizer, reference_parameters
from decathlon.errors import ConfigError
from decathlon.methods import get_method
from decathlon.networks.adapters import AdapterResNet26, ParallelAdapter
from decathlon.networks.params import count_parameters, par_ratio
from decathlon.networks.resnet import ResNet26
from decathlon.published import published_rows
from decathlon.report import par_cell
from tests.test_official import randomize

ADAPTERS = ("series-adapters", "parallel-adapters")
WIDTH = 0.25


def _source(num_classes: int = 10) -> ResNet26:
    """A 'pretrained' ResNet-26: He-initialised convolutions, random BN affine and statistics."""
    torch.manual_seed(0)
    net = ResNet26(num_classes, width=WIDTH)
    randomize(net, torch.Generator().manual_seed(1))
    return net


@pytest.mark.parametrize("name", ADAPTERS)
def test_untrained_model_computes_the_source_network(name):
    """What is checked: with the source's own BN layers (its affine parameters and running statistics,
    eval mode), the method's untrained model gives bit-identical pooled features to the source network
    (zero 1x1 kernels: series y + 0, parallel conv3x3(x) + 0); in train mode (batch statistics) too, up to
    float rounding. Only the new classifier differs."""
    source = _source().eval()
    spec = get_domain("aircraft", suite="mini")
    model = get_method(name).build(copy.deepcopy(source), spec, spec.num_classes, RunConfig(width=WIDTH))
    assert isinstance(model, AdapterResNet26) and model.classifier.out_features == spec.num_classes
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model.eval().features(x), source.features(x))
        torch.testing.assert_close(model.train().features(x), source.train().features(x))
    adapters = [p for n, p in model.named_parameters() if "adapter" in n and p.dim() == 4]
    assert len(adapters) == 25 and all(not p.any() for p in adapters)  # stem + 2 per block, all zero


def test_fused_parallel_convolution_equals_two_convolutions_values_and_gradients():
    model = AdapterResNet26(_source(), "parallel").train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ParallelAdapter):
                m.conv.weight.normal_(0.0, 0.1)  # trained adapters: non-zero
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    results = []
    for fused in (True, False):
        model.set_fused(fused)
        model.zero_grad()
        logits = model(x)
        logits.square().mean().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                          if p.grad is not None}))
    (fused_out, fused_grads), (plain_out, plain_grads) = results
    torch.testing.assert_close(fused_out, plain_out, rtol=1e-4, atol=1e-5)
    assert fused_grads.keys() == plain_grads.keys()
    assert "blocks.4.adapter1.conv.weight" in fused_grads  # a stride-2 block's adapter
    for n in fused_grads:
        torch.testing.assert_close(fused_grads[n], plain_grads[n], rtol=1e-3, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", ADAPTERS)
def test_par_over_the_ten_decathlon_domains_matches_the_published_value(name):
    """#par as the table computes it (report.par_cell over result rows as the engine writes them) for the
    nine target domains of the real Decathlon at width 1.0, with their real class counts."""
    method, config = get_method(name), RunConfig(method=name)
    rows = []
    for domain in DECATHLON_COLUMNS:
        spec = get_domain(domain)
        if spec.is_source:
            continue
        model = method.build(ResNet26(spec.num_classes), spec, spec.num_classes, config)
        total, trainable = count_parameters(model)
        reference = reference_parameters(config, spec.num_classes)
        rows.append({"domain": domain, "params_total": total, "params_trainable": trainable,
                     "par": par_ratio(model, reference)})
    assert len(rows) == 9
    published = published_rows("decathlon")[name].par
    par = par_cell(pd.DataFrame(rows), DECATHLON_COLUMNS).mean
    assert published == 2 and abs(par - published) <= 0.1 * published, par


@pytest.mark.parametrize("name", ADAPTERS)
def test_1x1_kernels_have_their_own_weight_decay_group(name):
    spec = get_domain("aircraft", suite="mini")
    method = get_method(name)
    config = RunConfig(suite="mini", method=name, width=WIDTH, device="cpu")
    model = method.build(_source(), spec, spec.num_classes, config)
    optimizer, _ = build_optimizer(method, model, config, spec)
    groups = {g["name"]: g for g in optimizer.param_groups}
    kernels_1x1 = {id(p) for n, p in model.named_parameters() if "adapter" in n and p.dim() == 4}
    assert {id(p) for p in groups["adapters"]["params"]} == kernels_1x1
    assert groups["adapters"]["weight_decay"] == 1e-4  # train_new_task_adapters.py --wd1x1 1. (x 1e-4)
    assert groups["network"]["weight_decay"] == spec.weight_decay
    assert all(p.dim() == 1 or n.startswith("classifier.") for n, p in model.named_parameters()
               if id(p) in {id(q) for q in groups["network"]["params"]})
    shared = model.shared_convs()
    assert len(shared) == 25 and all(c.kernel_size == (3, 3) and not c.weight.requires_grad for c in shared)


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapters_run_in_the_decathlon_setting_only(name):
    method = get_method(name)
    assert method.settings == ("decathlon",) and method.label.endswith("res. adapt.")
    with pytest.raises(ConfigError, match="ResNet-26"):
        method.build(nn.Linear(2, 2), get_domain("aircraft"), 100, RunConfig(backbone="resnet50"))
