"""The Visual Domain Decathlon benchmark: domains, data, scoring and the harness that runs methods."""

from decathlon.config import RunConfig
from decathlon.domains import DomainSpec, get_domain, suite_domains
from decathlon.errors import CheckpointError, ConfigError, DataError, HarnessError, UnknownNameError

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "DomainSpec", "HarnessError", "RunConfig",
    "UnknownNameError", "get_domain", "suite_domains",
]
