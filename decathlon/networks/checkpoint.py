"""The harness checkpoint format: plain containers of tensors, loadable with ``weights_only=True``.

A checkpoint is a dict ``{"format": FORMAT, "model_state": {...}, "config": {...}, "extra": {...}}`` whose
leaves are tensors, str, int, float, bool or None, in dicts, lists and tuples. Nothing is pickled as an
object, so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)`` and a checkpoint can
never run code. Files are written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from decathlon.errors import CheckpointError
from decathlon.io import atomic_write_bytes

FORMAT = "spottune-decathlon/1"

_SCALARS = (str, int, float, bool, type(None))


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Raise CheckpointError unless `value` is made only of tensors, scalars, dicts, lists and tuples."""
    if isinstance(value, (torch.Tensor, *_SCALARS)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise CheckpointError(f"{where}: key {key!r} is a {type(key).__name__}; "
                                      "keys must be str or int")
            check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    raise CheckpointError(f"{where} is a {type(value).__name__}; a checkpoint holds only tensors, str, int, "
                          "float, bool, None, dicts, lists and tuples (convert first, e.g. numpy -> tensor)")


def save_checkpoint(path: str | Path, *, model_state: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write a harness checkpoint atomically and return its path.

    `model_state` is a state_dict, `config` the settings that made the model (e.g. the RunConfig as a
    dict, or ``{"backbone": "resnet26", "width": 1.0, "num_classes": 1000}``), `extra` anything else
    (optimiser states, RNG states as tensors, position). Values that ``weights_only`` loading would
    refuse raise :class:`CheckpointError` before anything is written.
    """
    path = Path(path)
    content = {"format": FORMAT, "model_state": dict(model_state), "config": dict(config),
               "extra": dict(extra or {})}
    check_plain(content, str(path))
    buffer = io.BytesIO()
    torch.save(content, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _load_plain(path: Path, map_location: Any) -> Any:
    """torch.load with weights_only=True; CheckpointError when the file is missing or unreadable."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - junk bytes fail in torch's readers with any error (KeyError, ...)
        raise CheckpointError(f"{path} cannot be read as a plain tensor file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from e


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a harness checkpoint (``weights_only=True``): a dict with model_state, config and extra.

    A missing, truncated or foreign file raises :class:`CheckpointError` naming the path.
    """
    path = Path(path)
    return _validated(_load_plain(path, map_location), path)


def _validated(content: Any, path: Path) -> dict[str, Any]:
    if not (isinstance(content, dict) and content.get("format") == FORMAT):
        raise CheckpointError(f"{path} is not a harness checkpoint (expected a dict with format={FORMAT!r}; "
                              "official files are converted with `python -m spottune convert`)")
    for key in ("model_state", "config", "extra"):
        if not isinstance(content.get(key), dict):
            raise CheckpointError(f"{path}: entry {key!r} is missing or not a dict")
    return content


def read_harness_checkpoint(path: str | Path) -> tuple[str, Any]:
    """Classify a weights file: ("harness", checkpoint), ("state_dict", tensors) or ("other", None).

    "other" means the file is not loadable with ``weights_only=True`` (e.g. an official pickled module,
    which :mod:`spottune.official` imports safely) or holds something else.
    """
    path = Path(path)
    try:
        content = _load_plain(path, "cpu")
    except CheckpointError:
        if not path.is_file():
            raise
        return "other", None
    if isinstance(content, dict) and content.get("format") == FORMAT:
        return "harness", _validated(content, path)
    content, done = unwrap_state_dict(content)
    if _is_state_dict(content):
        if done:
            warnings.warn(f"{path}: read as a state_dict after {' and '.join(done)}", stacklevel=2)
        return "state_dict", content
    return "other", None


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")  # common training-script wrappers
DATA_PARALLEL_PREFIX = "module."  # what nn.DataParallel / DistributedDataParallel put before every key


def _is_state_dict(content: Any) -> bool:
    return isinstance(content, dict) and bool(content) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items())


def unwrap_state_dict(content: Any) -> tuple[Any, list[str]]:
    """A state_dict out of the common wrappers, and what was done: ``{'state_dict': sd, ...}`` (or
    ``model_state_dict``, ``model``, ``net``) is unwrapped and the ``module.`` prefix that DataParallel adds
    to every key is removed. Anything else is returned unchanged with no step."""
    done: list[str] = []
    if isinstance(content, dict) and not _is_state_dict(content):
        key = next((k for k in WRAPPER_KEYS if _is_state_dict(content.get(k))), None)
        if key is not None:
            content = content[key]
            done.append(f"taking its {key!r} entry")
    if _is_state_dict(content) and all(k.startswith(DATA_PARALLEL_PREFIX) for k in content):
        content = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in content.items()}
        done.append(f"removing the {DATA_PARALLEL_PREFIX!r} prefix of DataParallel")
    return content, done
