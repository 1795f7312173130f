"""Residual adapters (Rebuffi, Bilen, Vedaldi): series (NIPS 2017) and parallel (CVPR 2018).

Papers: "Learning multiple visual domains with residual adapters" (NIPS 2017) and "Efficient
parametrization of multi-domain deep neural networks" (CVPR 2018). Reference code:
srebuffi/residual_adapters (``models.py``, ``train_new_task_adapters.py``, ``sgd.py``). The network is
:class:`decathlon.networks.adapters.AdapterResNet26`.

What trains (``train_new_task_adapters.py``): every 3x3 convolution is frozen (shared with the source
network); the 1x1 adapters, every BN layer (affine parameters and running statistics: the domain's own
BN) and the new classifier train. What is stored per domain is exactly what trains, so ``#par`` (the
engine's ``params_trainable`` over one backbone) is the paper's: about 2 for ten domains.

Interpretations and defaults, with their source:

- Weight decay: the reference's SGD (``sgd.py``) decays 4-D kernels by their size: 1x1 kernels by
  ``wd1x1`` (``--wd1x1``, default 1., times 1e-4 in ``train_new_task_adapters.py``: 1e-4), 3x3 ones by
  ``wd3x3`` (frozen here), everything else by ``--wd``. Here: a parameter group ``adapters`` of the 1x1
  kernels with :attr:`ResidualAdapters.wd1x1` = 1e-4, and the ``network`` group (BN, classifier) with the
  run's network weight decay (``--set weight_decay`` or the domain's reference value, as for every method
  of the table). The reference's ``sgd.py`` does not reset the decay between parameters of one group, so
  there every parameter after the first 1x1 kernel gets ``wd1x1``; the harness applies what the arguments
  say.
- Learning rate, momentum: ``--lr 0.1``, momentum 0.9: the run's (the harness defaults are the same).
  Schedule: the reference trains 120 epochs with x0.1 at 80 and x0.01 at 100 (``--nb_epochs``,
  ``--step1``, ``--step2``); like every method of a table, the run's schedule applies; the reference's is
  ``--set epochs=120 schedule=multistep milestones=[0.6667,0.8333]``.
- Initialisation: zero 1x1 kernels (the reference draws them He-normal), so the untrained model is the
  source network; the domain's BNs start from the source's (as the reference copies them), adapter BNs
  at the identity affine.
- Source network: the plain pretrained ResNet-26 ("off the shelf" adapters in the reference README; the
  reference also offers a network pretrained with series adapters in it, not used here).
- Dropout (``--dropout``, default ``00``: none) is not used.
- Settings: the Decathlon's ResNet-26 only. The reference code defines adapters for its ResNet-26 and
  SpotTune's extra-dataset table has no adapter row; the bottleneck variant is left out.

"Res. adapt. finetune all" (NIPS 2017) is not implemented: it trains the shared filters together with
the adapters on all ten domains at once (its #par stays 2 because the filters are still shared), which
needs joint multi-domain training; the harness trains one domain per job, and a per-domain variant
would store a full network per domain (#par about 10), another method. Its published row stays a
published row.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from baselines.common import network_group, replace_classifier, set_trainable
from decathlon.errors import ConfigError
from decathlon.methods import Method
from decathlon.networks.adapters import AdapterResNet26
from decathlon.networks.resnet import ResNet26

# train_new_task_adapters.py: args.wd1x1 (default 1.) * 0.0001
REFERENCE_WD1X1 = 1e-4


def is_1x1_kernel(param: nn.Parameter) -> bool:
    """The reference ``sgd.py``'s test for an adapter kernel: 4-D with spatial size 1."""
    return param.dim() == 4 and param.shape[-1] == 1


class ResidualAdapters(Method):
    """Frozen shared 3x3 convolutions; per-domain 1x1 adapters (``mode``), BN layers and classifier."""

    settings = ("decathlon",)

    def __init__(self, name: str, mode: str, label: str, summary: str, wd1x1: float = REFERENCE_WD1X1):
        self.name, self.mode, self.label, self.summary = name, mode, label, summary
        self.wd1x1 = wd1x1

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        if not isinstance(backbone, ResNet26):
            raise ConfigError(f"{self.name} runs on the ResNet-26 (the Decathlon setting), got backbone "
                              f"{config.backbone!r}")
        model = AdapterResNet26(replace_classifier(backbone, num_classes), self.mode)
        set_trainable([model], True)
        set_trainable(model.shared_convs(), False)
        return model

    def param_groups(self, model: nn.Module, config, weight_decay: float) -> list[dict[str, Any]]:
        trainable = [p for p in model.parameters() if p.requires_grad]
        adapters = [p for p in trainable if is_1x1_kernel(p)]
        rest = [p for p in trainable if not is_1x1_kernel(p)]
        return [network_group(rest, config, weight_decay),
                network_group(adapters, config, self.wd1x1, name="adapters")]


METHODS = (
    ResidualAdapters("series-adapters", "series", "Series res. adapt.",
                     "series residual adapters: frozen shared 3x3 convs, per-domain BN -> 1x1 conv and BN"),
    ResidualAdapters("parallel-adapters", "parallel", "Parallel res. adapt.",
                     "parallel residual adapters: a per-domain 1x1 conv beside each frozen 3x3, domain BN"),
)
