"""The Visual Domain Decathlon benchmark: domains, data, scoring and the harness that runs methods.

The names below are imported on first use (PEP 562), so that ``run_all.py --help`` and other light
entry points do not pay for torch and torchvision.
"""

import importlib
from typing import Any

_EXPORTS = {
    "RunConfig": "decathlon.config",
    "CubDataset": "decathlon.data", "DecathlonDataset": "decathlon.data", "FolderDataset": "decathlon.data",
    "build_dataset": "decathlon.data",
    "DomainSpec": "decathlon.domains", "get_domain": "decathlon.domains",
    "suite_domains": "decathlon.domains",
    "CheckpointError": "decathlon.errors", "ConfigError": "decathlon.errors", "DataError": "decathlon.errors",
    "HarnessError": "decathlon.errors", "UnknownNameError": "decathlon.errors",
    "generate_suite": "decathlon.generate",
    "get_preset": "decathlon.presets",
    "s_score": "decathlon.score", "score_submission": "decathlon.score",
    "write_submission": "decathlon.score",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'decathlon' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
