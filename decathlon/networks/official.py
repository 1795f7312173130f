"""Safe reading of the reference code's checkpoint files: no code from the file is ever executed.

This module reads both kinds of official file and maps the residual-adapters networks onto the harness's
ResNet-26 (plain, or with series or parallel adapters: :mod:`decathlon.networks.adapters`); the SpotTune
mapping (two paths and the agent) lives with the method, in
:mod:`spottune.official`.

Two kinds of files exist, both whole pickled ``nn.Module`` objects:

- files of the residual-adapters code (Rebuffi et al.): ``resnet26_pretrained.t7``, ``torch.save`` of a
  ``models.ResNet``, bare or as ``{"net": ...}``, and the training scripts' checkpoints
  ``{"net", "acc", "epoch"}`` (``acc`` a numpy scalar) of networks built with or without adapters
  (``config_task.mode``, a global of that code, inferred from the modules: :func:`official_mode`) for
  one or several tasks; possibly in the legacy (non-zip) format and without ``num_batches_tracked``
  (PyTorch < 0.4.1);
- an official SpotTune checkpoint: ``torch.save({"net": spottune_models.ResNet, "agent": agent_net.ResNet})``.

``torch.load`` drives the reading of both the zip and the legacy formats, but with a restricted pickle
module (:class:`RestrictedUnpickler`): it admits only tensor/storage rebuilding and a few plain containers,
and turns every class of the official code (``models``, ``config_task``, ``spottune_models``,
``agent_net``) and of ``torch.nn.modules`` into an *inert* record (:class:`InertObject`) that keeps the
pickled ``__dict__`` and runs none of the class's code. Any other global (``os.system``, ``builtins.eval``,
``functools.partial``, ...) is refused with :class:`~decathlon.errors.CheckpointError` naming it.

The inert tree is flattened like ``state_dict()`` would, then mapped onto the harness modules by explicit
rename tables (:data:`RESIDUAL_ADAPTERS` here, ``SPOTTUNE_NET``/``SPOTTUNE_AGENT`` in
:mod:`spottune.official`) with shape checks;
the outcome of a mapping is a :class:`LoadReport`.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import re
import tarfile
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from decathlon.errors import CheckpointError, HarnessError
from decathlon.networks.adapters import AdapterResNet26, adapter_resnet26
from decathlon.networks.checkpoint import save_checkpoint
from decathlon.networks.resnet import ResNet26
from decathlon.safe_pickle import INERT_GLOBALS, INERT_STATE_TYPES, PICKLE_ENCODING

# ---------------------------------------------------------------------------------------------------------
# the restricted unpickler

#: modules of the official code whose classes are admitted, as inert records only
OFFICIAL_MODULES = ("models", "config_task", "spottune_models", "agent_net")
#: torch module classes that may appear in a pickled network (admitted as inert records too)
TORCH_MODULE_PREFIX = "torch.nn.modules."
TORCH_CONTAINER_CLASSES = (("torch.nn.parallel.data_parallel", "DataParallel"),)

# Sanity bound on the rank of a rebuilt tensor (network weights have at most 4 dimensions).
MAX_TENSOR_DIMS = 8


class InertObject:
    """Stand-in for a class of the official code or of ``torch.nn.modules``.

    It records the state the pickle would have given the object (``pickled_state``, the module's
    ``__dict__``) and the name of the class it replaces; none of that class's code (``__init__``,
    ``__setstate__``, ``forward``) is ever imported or run.
    """

    official_module = ""
    official_name = ""
    # torch's legacy loader compares saved source with the class's source and writes a patch file when
    # this is True; the stand-in must never trigger that
    dump_patches = False

    def __init__(self, *args: Any, **kwargs: Any):
        self.init_args = args  # only reached when a pickle calls the class; kept for diagnostics

    @property
    def qualified_name(self) -> str:
        return f"{self.official_module}.{self.official_name}"

    def state(self) -> dict:
        """The pickled ``__dict__`` (empty when the pickle gave none)."""
        return getattr(self, "pickled_state", {})

    def __repr__(self) -> str:
        return f"<inert {self.qualified_name}>"


def _inert_class(module: str, name: str) -> type:
    # The module name is not importable on purpose: torch's source check then gives up harmlessly.
    return type(name, (InertObject,), {"official_module": module, "official_name": name,
                                       "__module__": f"<official {module}>", "__qualname__": name})


def _check_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not (isinstance(value, tuple | list) and len(value) <= MAX_TENSOR_DIMS
            and all(isinstance(v, int) and v >= 0 for v in value)):
        raise CheckpointError(f"tensor {what} {value!r}: expected a tuple of at most {MAX_TENSOR_DIMS} "
                              "non-negative ints")
    return tuple(value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
    """A plain tensor view of a loaded storage (torch checks that the view fits the storage)."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError(f"tensor rebuild got a {type(storage).__name__}, expected a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError(f"tensor storage offset {storage_offset!r}: expected an int >= 0")
    size, stride = _check_int_tuple(size, "size"), _check_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} differ in length")
    try:
        return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)
    except RuntimeError as e:
        raise CheckpointError(f"tensor of size {size} does not fit its storage ({e})") from e


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    # requires_grad, hooks and metadata do not matter for importing values
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _tensor_value(data: Any, *rest: Any) -> torch.Tensor:
    """A parameter's values as a plain tensor (``_rebuild_parameter*`` and the legacy ``Parameter(data)``)."""
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"parameter rebuild got a {type(data).__name__}, expected a tensor")
    return data.detach()


def _reconstruct(cls: Any, base: Any, state: Any) -> InertObject:
    """``copyreg._reconstructor`` (protocol 0/1 pickles) restricted to inert classes."""
    if not (isinstance(cls, type) and issubclass(cls, InertObject) and base is object and state is None):
        raise CheckpointError(f"refused copyreg._reconstructor({cls!r}, {base!r}, ...): only official module "
                              "classes may be reconstructed")
    return cls.__new__(cls)


def _no_backend(*args: Any) -> None:
    """PyTorch < 0.4 pickled each module's ``_backend`` as a call of this function; the value is unused."""
    return None


# the harness's shared inert types (numpy scalars such as the training script's ``acc``, builtins, bytes),
# plus what a pickled network needs
SAFE_GLOBALS: Mapping[tuple[str, str], Any] = MappingProxyType({
    **INERT_GLOBALS,
    ("collections", "OrderedDict"): OrderedDict,
    ("copyreg", "_reconstructor"): _reconstruct,
    ("builtins", "object"): object,  # the base class argument of copyreg._reconstructor
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _tensor_value,
    ("torch._utils", "_rebuild_parameter_with_state"): _tensor_value,
    ("torch.nn.parameter", "Parameter"): _tensor_value,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
})


def is_official_class(module: str, name: str) -> bool:
    """True for the module classes admitted as inert records."""
    if not name.isidentifier():
        return False
    if module in OFFICIAL_MODULES:
        return True
    if module.startswith(TORCH_MODULE_PREFIX):
        return all(part.isidentifier() for part in module.split("."))
    return (module, name) in TORCH_CONTAINER_CLASSES


def _storage_type(name: str) -> Any:
    try:
        return torch.serialization.StorageType(name)
    except KeyError:
        return None


def _dtype(name: str) -> torch.dtype | None:
    value = getattr(torch, name, None) if name.isidentifier() else None
    return value if isinstance(value, torch.dtype) else None


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that admits tensor rebuilding and inert official modules, and refuses everything else.

    The pure-Python unpickler is used so that BUILD (setting an object's state) can be restricted too:
    state is accepted only for inert records (recorded, never applied) and for tensors (PyTorch < 0.4
    Parameters carried ``(requires_grad, volatile, hooks)``, ignored here).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, **kwargs: Any):
        super().__init__(file, **kwargs)
        self._inert_classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise CheckpointError(f"refused global {module!r}.{name!r}: names must be strings")
        if self.proto < 3 and self.fix_imports:  # Python 2 names (__builtin__, copy_reg)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        if module == "torch":
            found = _storage_type(name) if name.endswith("Storage") else _dtype(name)
            if found is not None:
                return found
        if is_official_class(module, name):
            key = (module, name)
            if key not in self._inert_classes:
                self._inert_classes[key] = _inert_class(module, name)
            return self._inert_classes[key]
        raise CheckpointError(f"refused global {module}.{name}: an official checkpoint may only rebuild "
                              f"tensors and modules of {', '.join(OFFICIAL_MODULES)} or torch.nn")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, InertObject):
            if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
                state = {**(state[0] or {}), **(state[1] or {})}
            if not isinstance(state, dict):
                raise CheckpointError(f"{inst.qualified_name}: pickled state is a {type(state).__name__}, "
                                      "expected a dict")
            inst.pickled_state = {**inst.state(), **state}
        elif isinstance(inst, INERT_STATE_TYPES):  # a numpy array's or dtype's plain-data state
            inst.__setstate__(state)
        elif not isinstance(inst, torch.Tensor):
            raise CheckpointError(f"refused to set the state of a {type(inst).__name__} object")

    dispatch[pickle.BUILD[0]] = load_build


class RestrictedPickleModule:
    """The ``pickle_module`` handed to ``torch.load``: every unpickling goes through RestrictedUnpickler."""

    Unpickler = RestrictedUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()


def _refuse_unsafe_containers(path: Path) -> None:
    """Refuse archive shapes that ``torch.load`` would treat unsafely before any unpickling happens.

    A TorchScript zip would be handed to ``torch.jit.load`` (code); a legacy tar archive is extracted
    member by member, so its members must be regular files (no links to elsewhere on disk).
    """
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{path} is a damaged zip archive ({e})") from e
        if any(name.split("/", 1)[-1] == "constants.pkl" for name in names):
            raise CheckpointError(f"{path} is a TorchScript archive, not a pickled official network")
        return
    if tarfile.is_tarfile(path):
        try:
            with tarfile.open(path, mode="r:") as tar:
                members = {m.name: m for m in tar.getmembers()}
        except tarfile.TarError as e:
            raise CheckpointError(f"{path} is a damaged tar archive ({e})") from e
        for name in ("storages", "tensors", "pickle"):
            if name not in members or not members[name].isfile():
                raise CheckpointError(f"{path}: legacy tar checkpoint member {name!r} is missing or not a "
                                      "regular file")


def safe_load(path: str | Path) -> Any:
    """Read a torch file (zip or legacy format) with the restricted unpickler; returns inert objects.

    Raises :class:`CheckpointError` naming the path for a missing, unreadable or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"official checkpoint {path} does not exist")
    _refuse_unsafe_containers(path)
    try:
        with path.open("rb") as f, warnings.catch_warnings():
            # the legacy format's source check cannot find the inert classes' source, and says so
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
            warnings.filterwarnings("ignore", category=torch.serialization.SourceChangeWarning)
            return torch.load(f, map_location="cpu", pickle_module=RestrictedPickleModule,
                              weights_only=False, mmap=False, encoding=PICKLE_ENCODING)  # Python 2 files too
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except HarnessError:
        raise
    except Exception as e:  # any parse failure of a foreign or truncated file (EOF, struct, zip, tar...)
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path} cannot be read as a PyTorch checkpoint ({type(e).__name__}: "
                              f"{first_line})") from e


# ---------------------------------------------------------------------------------------------------------
# flattening the inert tree


def module_state(root: Any, where: str = "net") -> dict[str, torch.Tensor]:
    """Flat ``name -> tensor`` dict of an inert module tree, as ``state_dict()`` would list it.

    Walks ``_parameters``, ``_buffers`` (skipping ``_non_persistent_buffers_set``) and ``_modules``;
    ``None`` entries are skipped as torch does. A ``DataParallel`` wrapper is looked through. A plain
    mapping of tensors (a state_dict) is accepted as is.
    """
    if isinstance(root, Mapping) and not isinstance(root, InertObject):
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in root.items()):
            raise CheckpointError(f"{where} is a mapping but not a state_dict of tensors")
        return dict(root)
    if not isinstance(root, InertObject):
        raise CheckpointError(f"{where} is a {type(root).__name__}, expected a pickled network")
    if root.official_name == "DataParallel":
        child = root.state().get("_modules", {}).get("module")
        return module_state(child, f"{where}.module")
    out: dict[str, torch.Tensor] = {}
    _collect(root, "", out, where, ())
    return out


def _entries(obj: InertObject, attr: str, where: str) -> Mapping:
    value = obj.state().get(attr, {})
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{where}: {attr} of {obj.qualified_name} is a {type(value).__name__}, "
                              "expected a dict")
    return value


def _collect(obj: InertObject, prefix: str, out: dict, where: str, path: tuple[int, ...]) -> None:
    if id(obj) in path:
        raise CheckpointError(f"{where}: module {prefix or '<root>'} contains itself")
    path = (*path, id(obj))
    skip = obj.state().get("_non_persistent_buffers_set", set())
    for attr in ("_parameters", "_buffers"):
        for name, tensor in _entries(obj, attr, where).items():
            if tensor is None or (attr == "_buffers" and name in skip):
                continue
            if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{where}: {prefix}{name!s} in {attr} is a {type(tensor).__name__}, "
                                      "expected a tensor")
            out[prefix + name] = tensor
    for name, child in _entries(obj, "_modules", where).items():
        if child is None:
            continue
        if not isinstance(name, str) or not isinstance(child, InertObject):
            raise CheckpointError(f"{where}: submodule {prefix}{name!s} is a {type(child).__name__}, "
                                  "expected a module")
        _collect(child, f"{prefix}{name}.", out, where, path)


# ---------------------------------------------------------------------------------------------------------
# rename tables


@dataclass(frozen=True)
class RenameRule:
    """Official key (full-match regex) -> harness key.

    Groups: ``s`` stage number, ``b`` block position in the stage, ``p`` parameter/buffer name. In
    `target`, ``{i}`` is the flat block index (blocks of earlier stages + b) and ``{p}`` the name.
    """

    pattern: str
    target: str


@dataclass(frozen=True)
class RuleTable:
    """The rename rules of one official network; `ignore` lists official keys the harness has no use for."""

    name: str
    rules: tuple[RenameRule, ...]
    first_stage: int = 0  # the number of the first stage in the official names (layer1 -> 1)
    ignore: tuple[str, ...] = ()

    def stage_sizes(self, keys: Sequence[str]) -> tuple[int, ...]:
        """Blocks per stage, read from the official keys (max position + 1 for each stage)."""
        sizes: dict[int, int] = {}
        for key in keys:
            for rule in self.rules:
                m = re.fullmatch(rule.pattern, key)
                if m and "s" in m.groupdict():
                    stage = int(m["s"]) - self.first_stage
                    sizes[stage] = max(sizes.get(stage, 0), int(m["b"]) + 1)
                    break
        return tuple(sizes.get(s, 0) for s in range(max(sizes, default=-1) + 1))

    def rename(self, key: str, offsets: Sequence[int]) -> str | None:
        """The harness key of `key`, or None when no rule applies."""
        for rule in self.rules:
            m = re.fullmatch(rule.pattern, key)
            if m is None:
                continue
            groups = m.groupdict()
            index = None
            if "s" in groups:
                stage = int(groups["s"]) - self.first_stage
                if not 0 <= stage < len(offsets):
                    return None
                index = offsets[stage] + int(groups["b"])
            return rule.target.format(i=index, p=groups.get("p"))
        return None

    def ignored(self, key: str) -> bool:
        return any(re.fullmatch(pattern, key) for pattern in self.ignore)


_P = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"
_SB = r"(?P<s>\d+)\.(?P<b>\d+)"

#: the reference's ``config_task.mode`` values -> the harness's adapter mode (None: no adapters)
OFFICIAL_MODES = MappingProxyType({"normal": None, "series_adapters": "series",
                                   "parallel_adapters": "parallel"})


def _conv_task_rules(official: str, conv: str, bn: str, adapter: str, mode: str,
                     task: int) -> tuple[RenameRule, ...]:
    """Rules of one reference ``conv_task`` (shared 3x3 ``conv``, per-task ``bns`` and adapters) at the
    official key prefix `official` onto the harness names `conv`, `bn`, `adapter` (regex / format text)."""
    rules = [RenameRule(rf"{official}\.conv\.weight", conv + ".weight")]
    if mode == "series_adapters":  # bns[task] = Sequential(conv1x1 = {conv: Sequential(BN, Conv 1x1)}, BN)
        rules += [RenameRule(rf"{official}\.bns\.{task}\.0\.conv\.0\.{_P}", adapter + ".bn.{p}"),
                  RenameRule(rf"{official}\.bns\.{task}\.0\.conv\.1\.weight", adapter + ".conv.weight"),
                  RenameRule(rf"{official}\.bns\.{task}\.1\.{_P}", bn + ".{p}")]
    else:
        rules.append(RenameRule(rf"{official}\.bns\.{task}\.{_P}", bn + ".{p}"))
    if mode == "parallel_adapters":  # parallel_conv[task] = conv1x1 = {conv: Conv 1x1}
        rules.append(RenameRule(rf"{official}\.parallel_conv\.{task}\.conv\.weight",
                                adapter + ".conv.weight"))
    return tuple(rules)


def residual_adapters_table(mode: str = "normal", task: int = 0) -> RuleTable:
    """The rename rules of a reference ``models.ResNet`` built in ``config_task.mode`` `mode` (a key of
    :data:`OFFICIAL_MODES`, with the training script's default ``proj='11'``: adapters at every 3x3
    convolution), for the BN / adapter / classifier set of task `task`; the other tasks' sets are ignored.
    """
    if mode not in OFFICIAL_MODES:
        raise ValueError(f"reference mode {mode!r}; expected one of {', '.join(OFFICIAL_MODES)}")
    rules = (
        *_conv_task_rules(r"pre_layers_conv", "stem.conv", "stem.bn", "stem.adapter", mode, task),
        *_conv_task_rules(rf"layer{_SB}\.conv1", "blocks.{i}.conv1", "blocks.{i}.bn1", "blocks.{i}.adapter1",
                          mode, task),
        *_conv_task_rules(rf"layer{_SB}\.conv2\.1", "blocks.{i}.conv2", "blocks.{i}.bn2",
                          "blocks.{i}.adapter2", mode, task),
        RenameRule(rf"end_bns\.{task}\.0\.{_P}", "head.bn.{p}"),
        RenameRule(rf"linears\.{task}\.(?P<p>weight|bias)", "classifier.{p}"),
    )
    other = rf"(?!{task}\.)\d+\..*"  # an index of another task
    ignore = (rf"(.*\.)?bns\.{other}", rf"(.*\.)?parallel_conv\.{other}", rf"end_bns\.{other}",
              rf"linears\.{other}")
    return RuleTable(name=f"residual-adapters models.ResNet ({mode}, task {task})", rules=rules,
                     first_stage=1, ignore=ignore)


RESIDUAL_ADAPTERS = residual_adapters_table()


def official_mode(net: Mapping[str, torch.Tensor], path: Path) -> str:
    """The reference ``config_task.mode`` a residual-adapters network was built in, read from its keys
    (the mode is a global of the reference code, not stored in the file): ``series_adapters`` when its
    ``bns`` entries hold a 1x1 adapter, ``parallel_adapters`` when it has ``parallel_conv`` modules,
    else ``normal``."""
    series = any(re.fullmatch(r"(.*\.)?bns\.\d+\.0\.conv\.1\.weight", k) for k in net)
    parallel = any(re.fullmatch(r"(.*\.)?parallel_conv\.\d+\.conv\.weight", k) for k in net)
    if series and parallel:
        raise CheckpointError(f"{path}: the network has both series and parallel adapters, which the "
                              "reference code never builds")
    return "series_adapters" if series else "parallel_adapters" if parallel else "normal"


def task_count(net: Mapping[str, torch.Tensor], path: Path) -> int:
    """How many tasks (BN / adapter / classifier sets) a residual-adapters network holds: its ``linears``."""
    tasks = {int(m["t"]) for k in net if (m := re.fullmatch(r"linears\.(?P<t>\d+)\.weight", k))}
    if not tasks:
        raise CheckpointError(f"{path}: no classifier (linears.<task>.weight) in the file")
    if tasks != set(range(len(tasks))):
        raise CheckpointError(f"{path}: classifiers of tasks {sorted(tasks)}, expected 0..{len(tasks) - 1}")
    return len(tasks)


# ---------------------------------------------------------------------------------------------------------
# matching by name with shape checks


@dataclass(frozen=True)
class LoadReport:
    """Outcome of mapping official tensors onto a harness model.

    `loaded`: harness keys given a value from the file. `missing`: harness keys the file lacks; those
    in `filled` (``num_batches_tracked``, absent from PyTorch < 0.4.1 files) were set to zero, any other
    is an error. `unexpected`: official keys with no harness counterpart (an error). `ignored`: official
    keys known to be unused. `mismatched`: (harness key, shape in the file, shape in the model).
    """

    loaded: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    filled: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)  # harness key -> official key

    @property
    def ok(self) -> bool:
        return not (self.errors())

    def errors(self) -> list[str]:
        """One message per problem that prevents loading."""
        out = [f"{key} (from {self.sources.get(key, '?')}) has shape {f} in the file, the model expects {m}"
               for key, f, m in self.mismatched]
        out += [f"missing key {key}" for key in self.missing if key not in self.filled]
        out += [f"unexpected key {key}" for key in self.unexpected]
        return out

    def check(self, source: str) -> None:
        """Raise CheckpointError naming `source`, the keys and the shapes when loading is impossible."""
        problems = self.errors()
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise CheckpointError(f"{source}: {'; '.join(problems[:5])}{more}")

    def summary(self) -> str:
        """Readable multi-line account (printed by ``python -m spottune convert``)."""
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.filled:
            lines.append(f"filled with zeros ({len(self.filled)}): num_batches_tracked absent from the file")
        for label, keys in (("ignored (unused by the official forward)", self.ignored),
                            ("unexpected", self.unexpected),
                            ("missing", tuple(k for k in self.missing if k not in self.filled))):
            if keys:
                shown = ", ".join(keys[:6]) + (" ..." if len(keys) > 6 else "")
                lines.append(f"{label} ({len(keys)}): {shown}")
        lines += [f"shape mismatch: {key} file {f} model {m}" for key, f, m in self.mismatched]
        return "\n".join(lines)


def match_official(parts: Sequence[tuple[Mapping[str, torch.Tensor], RuleTable]],
                   model_state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Rename the official tensors of each (state, table) part onto `model_state`'s keys, checking shapes.

    Returns the complete new state (missing ``num_batches_tracked`` filled with zeros) and the report;
    nothing raises here, call :meth:`LoadReport.check`.
    """
    mapped: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    unexpected, ignored, mismatched = [], [], []
    for state, table in parts:
        sizes = table.stage_sizes(list(state))
        offsets = [sum(sizes[:s]) for s in range(len(sizes))]
        for key, tensor in state.items():
            target = table.rename(key, offsets)
            if target is None:
                (ignored if table.ignored(key) else unexpected).append(key)
                continue
            if target not in model_state or target in mapped:
                unexpected.append(f"{key} (-> {target})")
                continue
            sources[target] = key
            expected = tuple(model_state[target].shape)
            if tuple(tensor.shape) != expected:
                mismatched.append((target, tuple(tensor.shape), expected))
                continue
            mapped[target] = tensor
    missing = tuple(k for k in model_state if k not in mapped and k not in {m[0] for m in mismatched})
    filled = tuple(k for k in missing if k.endswith("num_batches_tracked"))
    state = dict(mapped)
    for key in filled:
        state[key] = torch.zeros_like(model_state[key])
    report = LoadReport(loaded=tuple(mapped), missing=missing, filled=filled, unexpected=tuple(unexpected),
                        ignored=tuple(ignored), mismatched=tuple(mismatched), sources=sources)
    return state, report


# ---------------------------------------------------------------------------------------------------------
# reading an official file


KINDS = ("residual_adapters", "spottune")


@dataclass(frozen=True)
class OfficialFile:
    """The flattened tensors of an official file: `kind` is one of :data:`KINDS`."""

    path: Path
    kind: str
    net: Mapping[str, torch.Tensor]
    agent: Mapping[str, torch.Tensor] | None = None
    classes: tuple[str, ...] = ()  # pickled root classes, e.g. ("spottune_models.ResNet", "agent_net.ResNet")


def _root_class(obj: Any) -> str:
    return obj.qualified_name if isinstance(obj, InertObject) else type(obj).__name__


def read_official(path: str | Path) -> OfficialFile:
    """Safely read an official file and tell which kind it is (residual-adapters ResNet or SpotTune)."""
    path = Path(path)
    content = safe_load(path)
    if isinstance(content, Mapping) and "net" in content:
        net_obj, agent_obj = content["net"], content.get("agent")
    else:
        net_obj, agent_obj = content, None
    net = module_state(net_obj, f"{path}: net")
    classes = (_root_class(net_obj),) + ((_root_class(agent_obj),) if agent_obj is not None else ())
    if "pre_layers_conv.conv.weight" in net:
        return OfficialFile(path, "residual_adapters", net, None, classes)
    if "conv1.weight" in net and any(k.startswith("parallel_blocks.") for k in net):
        if agent_obj is None:
            raise CheckpointError(f"{path}: SpotTune network without its 'agent' (policy network) entry")
        return OfficialFile(path, "spottune", net, module_state(agent_obj, f"{path}: agent"), classes)
    raise CheckpointError(f"{path}: not a residual-adapters ResNet (pre_layers_conv.*) nor an official "
                          f"SpotTune checkpoint (conv1.*, parallel_blocks.*); its first keys are "
                          f"{list(net)[:4]}")


def _width(net: Mapping[str, torch.Tensor], key: str, path: Path) -> float:
    width = net[key].shape[0] / ResNet26.STEM_CHANNELS
    if width <= 0:
        raise CheckpointError(f"{path}: {key} has shape {tuple(net[key].shape)}, expected 32 * width outputs")
    return width


def _num_classes(net: Mapping[str, torch.Tensor], key: str, path: Path) -> int:
    if key not in net or net[key].dim() != 2:
        raise CheckpointError(f"{path}: classifier weight {key} is missing or not 2-D")
    return int(net[key].shape[0])


def _load_into(model: nn.Module, parts: Sequence[tuple[Mapping[str, torch.Tensor], RuleTable]],
               source: str) -> LoadReport:
    state, report = match_official(parts, model.state_dict())
    report.check(source)
    model.load_state_dict(state, strict=True)
    model.eval()
    return report


def model_from_official(official: OfficialFile, task: int = 0) -> tuple[nn.Module, LoadReport]:
    """The harness model of a residual-adapters network (eval mode) for task `task`, and the report.

    ``normal`` networks give a :class:`ResNet26`, networks with series or parallel adapters an
    :class:`~decathlon.networks.adapters.AdapterResNet26` of that mode (the mode read from the keys,
    :func:`official_mode`). Class count, width and blocks per stage come from the file. A `task` outside
    the file's tasks raises :class:`CheckpointError` naming the file and the number of tasks.
    """
    if official.kind != "residual_adapters":
        raise CheckpointError(f"{official.path} is an official {official.kind} checkpoint, not a "
                              "residual-adapters network; use spottune.official.load_official for it")
    net = official.net
    mode, tasks = official_mode(net, official.path), task_count(net, official.path)
    if not (isinstance(task, int) and 0 <= task < tasks):
        raise CheckpointError(f"{official.path}: task={task!r}, but the file holds {tasks} task(s) "
                              f"(task 0..{tasks - 1})")
    table = residual_adapters_table(mode, task)
    try:
        model = ResNet26(_num_classes(net, f"linears.{task}.weight", official.path),
                         width=_width(net, "pre_layers_conv.conv.weight", official.path),
                         layers=table.stage_sizes(list(net)))
        if OFFICIAL_MODES[mode] is not None:
            model = AdapterResNet26(model, OFFICIAL_MODES[mode])
    except HarnessError as e:
        raise CheckpointError(f"{official.path}: the file describes no ResNet-26 the harness can build "
                              f"({e})") from e
    report = _load_into(model, [(net, table)], f"{official.path} ({table.name})")
    return model, report


def backbone_from_official(official: OfficialFile) -> tuple[nn.Module, LoadReport]:
    """The harness ResNet26 holding a plain residual-adapters network's weights (eval mode), task 0."""
    mode = official_mode(official.net, official.path) if official.kind == "residual_adapters" else "normal"
    if mode != "normal":
        raise CheckpointError(f"{official.path} is a residual-adapters network with {mode}, not a plain "
                              "ResNet-26; load it with decathlon.networks.load_official")
    return model_from_official(official)


def load_official_backbone(path: str | Path) -> nn.Module:
    """The residual-adapters ``resnet26_pretrained.t7`` as a harness ResNet26 in eval mode.

    The class count, width and blocks per stage come from the file. No code from the file runs;
    an unsafe, foreign or mismatching file, or a network with adapters, raises :class:`CheckpointError`.
    """
    return backbone_from_official(read_official(path))[0]


def load_official(path: str | Path, task: int = 0) -> nn.Module:
    """Any file written by the residual-adapters code as a harness model in eval mode.

    The plain ResNet-26 (``resnet26_pretrained.t7``) gives a :class:`ResNet26`; a network trained with
    series or parallel adapters (``train_new_task_adapters.py``'s ``{'net', 'acc', 'epoch'}``) an
    :class:`~decathlon.networks.adapters.AdapterResNet26` whose logits equal the reference model's for
    task `task` (default 0; the file may hold several tasks' BN / adapter / classifier sets). See
    :func:`model_from_official`. An official SpotTune checkpoint is read by
    :func:`spottune.official.load_official` instead.
    """
    return model_from_official(read_official(path), task)[0]


def converted_config(model: nn.Module, task: int) -> dict[str, Any]:
    """The ``config`` of a converted residual-adapters checkpoint: what :func:`build_converted` needs."""
    config = {"model": "resnet26", "backbone": "resnet26", "num_classes": model.classifier.out_features,
              "width": model.width, "layers": list(model.layers), "task": task}
    if isinstance(model, AdapterResNet26):
        config.update(model="adapter-resnet26", adapters=model.mode)
    return config


def build_converted(config: Mapping[str, Any]) -> nn.Module:
    """An untrained harness model of the shape a converted residual-adapters checkpoint's ``config``
    describes (``model`` ``resnet26`` or ``adapter-resnet26``); load its ``model_state`` into it."""
    shape = {"width": float(config["width"]), "layers": tuple(config["layers"])}
    if config.get("model") == "resnet26":
        return ResNet26(int(config["num_classes"]), **shape)
    if config.get("model") == "adapter-resnet26":
        return adapter_resnet26(int(config["num_classes"]), mode=config["adapters"], **shape)
    raise CheckpointError(f"converted checkpoint of model {config.get('model')!r}; expected resnet26 or "
                          "adapter-resnet26 (SpotTune checkpoints are rebuilt by spottune.official)")


def convert_official(source: str | Path, target: str | Path,
                     task: int = 0) -> tuple[OfficialFile, LoadReport]:
    """Convert a residual-adapters file (task `task`) into the harness checkpoint format at `target`.

    The checkpoint's ``config`` says which harness model to build (:func:`converted_config`: ``model``
    "resnet26" or "adapter-resnet26" with ``adapters`` "series" / "parallel", ``backbone``,
    ``num_classes``, ``width``, ``layers``, ``task``; :func:`build_converted` builds it); ``extra``
    records the source file, its pickled classes and the load report. An official SpotTune file raises
    CheckpointError: ``python -m spottune convert`` (:func:`spottune.official.convert_official`) converts
    both kinds.
    """
    official = read_official(source)
    model, report = model_from_official(official, task)
    write_converted(target, official, model, report, converted_config(model, task))
    return official, report


def write_converted(target: str | Path, official: OfficialFile, model: nn.Module, report: LoadReport,
                    config: Mapping[str, Any]) -> None:
    """Save `model` as a harness checkpoint recording where it came from (the source file and report)."""
    extra = {"source": str(official.path.resolve()), "source_kind": official.kind,
             "source_classes": list(official.classes), "report": report.summary()}
    save_checkpoint(target, model_state=model.state_dict(), config=dict(config), extra=extra)
