"""SpotTune (Guo et al., CVPR 2019): backbones, the two-path model, policy networks and Global-k."""

from spottune.backbones import create_backbone
from spottune.checkpoint import load_checkpoint, save_checkpoint
from spottune.global_k import export_compact, global_k_losses
from spottune.model import SpotTune
from spottune.official import load_official, load_official_backbone
from spottune.params import count_parameters, par_ratio
from spottune.policy import decathlon_policy_net, gumbel_softmax_st, small_policy_net

__all__ = [
    "SpotTune", "count_parameters", "create_backbone", "decathlon_policy_net", "export_compact",
    "global_k_losses", "gumbel_softmax_st", "load_checkpoint", "load_official", "load_official_backbone",
    "par_ratio", "save_checkpoint", "small_policy_net",
]
