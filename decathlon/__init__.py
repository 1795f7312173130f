"""The Visual Domain Decathlon benchmark: domains, data, scoring and the harness that runs methods."""

from decathlon.config import RunConfig
from decathlon.data import CubDataset, DecathlonDataset, FolderDataset, build_dataset
from decathlon.domains import DomainSpec, get_domain, suite_domains
from decathlon.errors import CheckpointError, ConfigError, DataError, HarnessError, UnknownNameError
from decathlon.generate import generate_suite
from decathlon.presets import get_preset
from decathlon.score import s_score, score_submission, write_submission

__all__ = [
    "CheckpointError", "ConfigError", "CubDataset", "DataError", "DecathlonDataset", "DomainSpec",
    "FolderDataset", "HarnessError", "RunConfig", "UnknownNameError", "build_dataset", "get_domain",
    "generate_suite", "get_preset", "s_score", "score_submission", "suite_domains", "write_submission",
]
