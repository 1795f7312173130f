"""The one allow-list of inert types shared by every restricted unpickler of the harness.

Files the harness reads that are pickles written by other code (the Decathlon's
``decathlon_mean_std.pickle``, the official residual-adapters and SpotTune checkpoints, whose training
script also stores ``acc`` as a numpy float) hold, besides what each reader admits for its own format,
plain data: builtins containers and scalars, numpy arrays, dtypes and scalars, and bytes as Python 3
writes them in protocol 2 (``_codecs.encode(text, "latin1")``). Rebuilding these runs no code from the
file. Python 2 pickles (which store bytes as ``str``) are read with ``encoding="latin1"`` by every reader.
Anything else (``os.system``, ``builtins.eval``, ``functools.partial``, ...) stays refused by each reader.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the pickling helpers; pickles written by numpy 1 / Python 2 name numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core import multiarray as _multiarray

PICKLE_ENCODING = "latin1"  # Python 2 ``str`` objects are bytes: latin1 maps each byte to one character


def latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode(str, "latin1")``, how Python 3 protocol-2 pickles store bytes; other encodings or
    arguments are refused (ValueError), so the admitted function is exactly this pure conversion."""
    if not (isinstance(text, str) and encoding in ("latin1", "latin-1")):
        raise ValueError(f"refused _codecs.encode({text!r:.40}, {encoding!r})")
    return codecs.encode(text, "latin1")


def _inert_globals() -> Mapping[tuple[str, str], Any]:
    numpy_core = {(module, name): getattr(_multiarray, name)
                  for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for name in ("_reconstruct", "scalar")}
    builtins = {(module, t.__name__): t for module in ("builtins", "__builtin__")
                for t in (float, int, complex, list, dict, tuple, set, frozenset, bytes, bytearray, str)}
    return MappingProxyType({
        **numpy_core, **builtins, ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): latin1_bytes,
    })


#: (module, name) -> object: the inert globals every restricted unpickler admits
INERT_GLOBALS: Mapping[tuple[str, str], Any] = _inert_globals()
#: the types whose pickled state (BUILD) is plain data that an unpickler may apply
INERT_STATE_TYPES = (np.ndarray, np.dtype)
