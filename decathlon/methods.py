"""The method interface and the method registry.

A method is a small object: it builds a model from a pretrained backbone and a domain spec, declares
its parameter groups, and may add a loss term. The one training engine (:mod:`decathlon.engine`) runs
every method. Methods live in ``spottune/methods.py`` and ``baselines/``; each of those modules lists its
methods in a ``METHODS`` tuple, and :func:`all_methods` collects them from :data:`METHOD_MODULES`.

To add a baseline: write ``baselines/<name>.py`` with a :class:`Method` subclass and add it to
``baselines/__init__.py``'s ``METHODS``. The registry tests then cover it without new test code.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from decathlon.errors import UnknownNameError

if TYPE_CHECKING:  # torch only in annotations: importing the registry's interface stays light (--help)
    import torch
    from torch import nn

    from decathlon.config import RunConfig
    from decathlon.domains import DomainSpec

# Modules whose METHODS tuples make up the registry (a constant list of names, not mutable state).
METHOD_MODULES = ("spottune.methods", "baselines")


@dataclass
class Output:
    """What a method's forward returns: logits, and for routing methods the hard policy used."""

    logits: torch.Tensor
    policy: torch.Tensor | None = None  # (batch, blocks) floats in {0, 1}; 1 = fine-tuned path
    aux: Mapping[str, torch.Tensor] | None = None  # e.g. soft decisions for Global-k's v


class Method(ABC):
    """Base class. Subclasses set the class attributes and override what differs."""

    name: str = ""
    label: str = ""  # the paper's row name, shown in tables (falls back to the registry name)
    summary: str = ""  # one line, shown by `run_all.py --list-methods` and in the docs
    label: str = ""  # the paper's row name, shown in tables (falls back to the registry name)
    routing: bool = False  # records policy statistics (per-block usage, histograms)
    learned_routing: bool = False  # routing decided per image by a trained policy (not drawn at random)
    trains: bool = True  # False: evaluation only, from another method's checkpoint
    reuses: str | None = None  # with trains=False: the method whose checkpoint is evaluated
    settings: tuple[str, ...] = ("decathlon", "extra")  # which settings (table families) it runs in
    pretrained: bool = True  # False: the backbone is randomly initialised (scratch)
    optimizer: str = "sgd"  # the engine's optimiser over param_groups: "sgd" (momentum) or "adam"

    @abstractmethod
    def build(self, backbone: nn.Module, spec: DomainSpec, num_classes: int, config: RunConfig) -> nn.Module:
        """Return the model to train. `backbone` is a fresh pretrained copy the method may consume."""

    def param_groups(self, model: nn.Module, config: RunConfig, weight_decay: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups (only trainable parameters). Default: one group, the network
        settings."""
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"name": "network", "params": params, "lr": config.lr, "weight_decay": weight_decay,
                 "momentum": config.momentum}]

    def forward(self, model: nn.Module, images: torch.Tensor, *,
                generator: torch.Generator | None = None) -> Output:
        """Run the model. `generator` drives any sampling (Gumbel noise, random routing)."""
        return Output(model(images))

    def extra_loss(self, model: nn.Module, output: Output, config: RunConfig) -> torch.Tensor | None:
        """A term added to the classification loss (Global-k, L2-SP), or None."""
        return None

    def weights_flag(self, config: RunConfig) -> str:
        """The command-line flag that gives this method's pretrained weights (named when they are missing)."""
        return "--pretrained"

    def train_mode(self, model: nn.Module, config: RunConfig) -> None:
        """Put the model in training mode (methods with frozen BN override to keep parts in eval)."""
        model.train()


def all_methods() -> Mapping[str, Method]:
    """Every registered method by name, in registration order."""
    out: dict[str, Method] = {}
    for module_name in METHOD_MODULES:
        for method in importlib.import_module(module_name).METHODS:
            if method.name in out:
                raise ValueError(f"method {method.name!r} registered twice (second time in {module_name})")
            out[method.name] = method
    return MappingProxyType(out)


def get_method(name: str) -> Method:
    methods = all_methods()
    try:
        return methods[name]
    except KeyError:
        raise UnknownNameError("method", name, methods) from None
