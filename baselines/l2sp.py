"""L2-SP (Li, Grandvalet, Davoine, ICML 2018): fine-tuning regularised toward the pretrained weights.

    loss = l_c + (alpha / 2) * ||w_S - w_S^0||^2 + (beta / 2) * ||w_new||^2

``config.l2sp_scope`` says which parameters are regularised:

- ``"weights"`` (default, the L2-SP reference code's standard mode, Li et al.'s released TensorFlow code):
  w_S are the kernels the network shares with the source model (every convolution weight of the stem,
  blocks and head), pulled toward their pretrained values w_S^0; w_new is the new classifier's weight
  (plain decay). BN scale/shift and biases are not regularised.
- ``"all"``: w_S are every shared parameter (BN affine parameters included) and w_new the classifier's
  weight and bias.

w_S^0 are kept as constant buffers of the model (so they travel with its checkpoint). The regulariser
replaces plain weight decay, which is therefore off for every group.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from baselines.common import network_group, replace_classifier, trainable
from decathlon.methods import Method, Output

REFERENCE = "l2sp_reference"  # name of the submodule holding w_S^0


def _buffer_name(param_name: str) -> str:
    return param_name.replace(".", "__")  # buffer names may not contain dots


class Reference(nn.Module):
    """Constant copies of the shared (pretrained) parameters, one persistent buffer each."""

    def __init__(self, named_params: list[tuple[str, torch.Tensor]]):
        super().__init__()
        self.names = tuple(name for name, _ in named_params)
        for name, p in named_params:
            self.register_buffer(_buffer_name(name), p.detach().clone())

    def value(self, param_name: str) -> torch.Tensor:
        return getattr(self, _buffer_name(param_name))


def _in_scope(param: torch.Tensor, scope: str) -> bool:
    # "weights": kernels (convolutions, linear layers) only, recognised by having more than one dimension
    return scope == "all" or param.dim() > 1


def shared_parameters(model: nn.Module, scope: str = "weights") -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the regularised shared parameters: everything but the new classifier (and the
    reference itself), restricted to kernels when `scope` is ``"weights"``."""
    return [(n, p) for n, p in model.named_parameters()
            if not n.startswith("classifier.") and _in_scope(p, scope)]


def new_parameters(model: nn.Module, scope: str = "weights") -> list[nn.Parameter]:
    """The new classifier's regularised parameters: its weight (and its bias when `scope` is ``"all"``)."""
    return [p for p in model.classifier.parameters() if _in_scope(p, scope)]


def l2sp_penalty(model: nn.Module, alpha: float, beta: float, scope: str = "weights") -> torch.Tensor:
    """(alpha/2) * sum ||w_S - w_S^0||^2 + (beta/2) * sum ||w_new||^2 for a model built by :class:`L2SP`
    (w_S: the parameters the model's reference holds; w_new: :func:`new_parameters` of `scope`)."""
    reference: Reference = getattr(model, REFERENCE)
    params = dict(model.named_parameters())
    shared = sum((params[n] - reference.value(n)).pow(2).sum() for n in reference.names)
    new = sum(p.pow(2).sum() for p in new_parameters(model, scope))
    return 0.5 * alpha * shared + 0.5 * beta * new


class L2SP(Method):
    """Standard fine-tuning plus the L2-SP regulariser (``config.l2sp_alpha``, ``config.l2sp_beta``)."""

    name = "l2-sp"
    label = "L2-SP"
    summary = "fine-tuning with (alpha/2)||w_S - w_S^0||^2 + (beta/2)||w_new||^2 instead of weight decay"

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        model = replace_classifier(backbone, num_classes)
        reference = Reference(shared_parameters(model, config.l2sp_scope))
        setattr(model, REFERENCE, reference)
        return model

    def param_groups(self, model: nn.Module, config, weight_decay: float) -> list[dict[str, Any]]:
        return [network_group(trainable(model), config, 0.0)]  # the regulariser replaces weight decay

    def extra_loss(self, model: nn.Module, output: Output, config) -> torch.Tensor:
        return l2sp_penalty(model, config.l2sp_alpha, config.l2sp_beta, config.l2sp_scope)


METHODS = (L2SP(),)
