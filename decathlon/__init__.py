"""The Visual Domain Decathlon benchmark: domains, data, scoring and the harness that runs methods."""

from decathlon.config import RunConfig
from decathlon.data import CubDataset, DecathlonDataset, FolderDataset, build_dataset
from decathlon.domains import DomainSpec, get_domain, suite_domains
from decathlon.errors import CheckpointError, ConfigError, DataError, HarnessError, UnknownNameError
from decathlon.presets import get_preset

__all__ = [
    "CheckpointError", "ConfigError", "CubDataset", "DataError", "DecathlonDataset", "DomainSpec",
    "FolderDataset", "HarnessError", "RunConfig", "UnknownNameError", "build_dataset", "get_domain",
    "get_preset", "suite_domains",
]
