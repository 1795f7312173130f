"""SpotTune (Guo et al., CVPR 2019): backbones, the two-path model, policy networks and Global-k."""

_OFFICIAL_EXPORTS = ("load_official", "load_official_backbone")


def __getattr__(name: str):
    # The official-checkpoint import is loaded on first use (spottune.official builds torch models).
    if name in _OFFICIAL_EXPORTS:
        from spottune import official

        return getattr(official, name)
    raise AttributeError(f"module 'spottune' has no attribute {name!r}")

from spottune.backbones import create_backbone
from spottune.checkpoint import load_checkpoint, save_checkpoint
from spottune.global_k import export_compact, global_k_losses
from spottune.model import SpotTune
from spottune.params import count_parameters, par_ratio
from spottune.policy import decathlon_policy_net, gumbel_softmax_st, small_policy_net

__all__ = [
    "SpotTune", "count_parameters", "create_backbone", "decathlon_policy_net", "export_compact",
    "global_k_losses", "gumbel_softmax_st", "load_checkpoint", "par_ratio", "save_checkpoint",
    "small_policy_net",
]
