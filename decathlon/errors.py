"""Errors the harness raises for bad input.

Every error names the offending path or value and says what was expected. Command-line entry points
catch :class:`HarnessError` and print one readable line (tracebacks only with ``--debug``).
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class of every user-facing error of the harness."""


_QUALIFIERS = (" of ", " with ", " (")  # where the noun of a kind ends: "domain of suite 'mini'"


def split_kind(kind: str) -> tuple[str, str]:
    """``"domain of suite 'mini'"`` -> ``("domain", " of suite 'mini'")``: the noun and its qualifier."""
    cut = min((i for i in (kind.find(q) for q in _QUALIFIERS) if i > 0), default=len(kind))
    return kind[:cut], kind[cut:]


def plural(noun: str) -> str:
    """English plural of the last word of `noun`: analysis -> analyses, class -> classes, key -> keys,
    entry -> entries, domain -> domains."""
    if noun.endswith("is"):
        return noun[:-2] + "es"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        return noun[:-1] + "ies"
    return noun + "s"


class UnknownNameError(HarnessError, KeyError):
    """A name (domain, method, split, preset, backbone, ...) that no registry knows.

    `kind` names what was looked up, optionally qualified (``"domain of suite 'mini'"``); the message reads
    "unknown domain 'x' of suite 'mini'; known domains of suite 'mini': a, b".
    """

    def __init__(self, kind: str, name: object, known: object):
        self.kind, self.name, self.known = kind, name, tuple(known)
        noun, qualifier = split_kind(kind)
        super().__init__(f"unknown {noun} {name!r}{qualifier}; known {plural(noun)}{qualifier}: "
                         f"{', '.join(map(str, self.known))}")

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
