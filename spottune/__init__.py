"""SpotTune (Guo et al., CVPR 2019): the two-path model, policy networks, Gumbel routing and Global-k.

The shared networks (backbones, checkpoint I/O, parameter counts, the residual-adapters import) live in
:mod:`decathlon.networks`; their names stay importable from here for compatibility. ``load_official``
here reads an official SpotTune checkpoint.
"""

from decathlon.networks import (
    count_parameters,
    create_backbone,
    load_checkpoint,
    load_official_backbone,
    par_ratio,
    save_checkpoint,
)
from spottune.global_k import export_compact, global_k_losses
from spottune.model import SpotTune
from spottune.official import load_official
from spottune.policy import decathlon_policy_net, gumbel_softmax_st, small_policy_net

__all__ = [
    "SpotTune", "count_parameters", "create_backbone", "decathlon_policy_net", "export_compact",
    "global_k_losses", "gumbel_softmax_st", "load_checkpoint", "load_official", "load_official_backbone",
    "par_ratio", "save_checkpoint", "small_policy_net",
]
