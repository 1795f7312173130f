"""Compatibility: checkpoint I/O moved to :mod:`decathlon.networks.checkpoint`."""

from decathlon.networks.checkpoint import (
    FORMAT,
    load_checkpoint,
    read_harness_checkpoint,
    save_checkpoint,
    unwrap_state_dict,
)

__all__ = ["FORMAT", "load_checkpoint", "read_harness_checkpoint", "save_checkpoint", "unwrap_state_dict"]
