"""Compatibility: parameter counting moved to :mod:`decathlon.networks.params`."""

from decathlon.networks.params import count_parameters, par_ratio

__all__ = ["count_parameters", "par_ratio"]
