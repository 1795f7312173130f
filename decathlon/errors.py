"""Errors the harness raises for bad input.

Every error names the offending path or value and says what was expected. Command-line entry points
catch :class:`HarnessError` and print one readable line (tracebacks only with ``--debug``).
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class of every user-facing error of the harness."""


class UnknownNameError(HarnessError, KeyError):
    """A name (domain, method, split, preset, backbone, ...) that no registry knows."""

    def __init__(self, kind: str, name: object, known: object):
        self.kind, self.name, self.known = kind, name, tuple(known)
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(map(str, self.known))}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DataError(HarnessError, ValueError):
    """Missing, malformed or corrupt data on disk (annotations, images, folders, pickles)."""


class CheckpointError(HarnessError, ValueError):
    """A checkpoint that cannot be read safely or does not fit the model."""


class ConfigError(HarnessError, ValueError):
    """An unknown configuration key or a value outside its allowed set."""


class DownloadError(HarnessError):
    """A download that failed after its retries, or a server that answered with something else."""
