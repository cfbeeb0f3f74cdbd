"""The streaming separator interface and the registry of separators.

A separator is loaded once and serves every session. It declares a :class:`~rtsep.specs.ModelSpec`
(model rate, step, look-ahead, number of outputs); each session keeps its own streaming state, made by
:meth:`StreamingSeparator.new_state`. The runtime gathers one step of many sessions into one batch and calls
:meth:`StreamingSeparator.process`, which updates every session's state in place.

Time alignment: the ``k``-th call of a session consumes input samples ``[k*step, (k+1)*step)`` and returns
output samples ``[k*step - lookahead, (k+1)*step - lookahead)`` of every source (the model's look-ahead is
paid as a delay of the output). Outputs at negative times, at the very start of a stream, are meaningless
and are returned as they come out of the model.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rtsep.errors import ConfigError
from rtsep.specs import ModelSpec


class StreamingSeparator(ABC):
    """A causal (or windowed) separator that consumes fixed steps of mono audio per session."""

    spec: ModelSpec

    @abstractmethod
    def new_state(self) -> Any:
        """A fresh per-session streaming state (caches, statistics), on the separator's device."""

    @abstractmethod
    def process(self, chunks: torch.Tensor, states: Sequence[Any]) -> torch.Tensor:
        """Separate one step of ``B`` sessions at once.

        ``chunks``: ``(B, step_samples)`` float32 at ``spec.sample_rate_hz``, on the separator's device.
        ``states``: the ``B`` sessions' states, in the order of ``chunks``; each is updated in place.
        Returns ``(B, num_outputs, step_samples)`` float32, delayed by ``spec.lookahead_samples``.
        """

    @abstractmethod
    def to(self, device: torch.device | str) -> StreamingSeparator:
        """Move the model (and states made from now on) to ``device``; returns ``self``."""

    @property
    def latency_s(self) -> float:
        """Algorithmic latency: step buffering plus look-ahead."""
        return self.spec.algorithmic_latency_s

    def validate_batch(self, chunks: torch.Tensor, states: Sequence[Any]) -> None:
        step = self.spec.step_samples
        if chunks.ndim != 2 or chunks.shape[1] != step:
            raise ValueError(f"{self.spec.name}: chunks must be (B, {step}), got {tuple(chunks.shape)}")
        if chunks.shape[0] != len(states):
            raise ValueError(f"{self.spec.name}: {chunks.shape[0]} chunks but {len(states)} states")


SeparatorFactory = Callable[..., StreamingSeparator]

_REGISTRY: dict[str, SeparatorFactory] = {}
# built-in separators are imported on first use, so that importing the registry loads no model code
_BUILTINS: dict[str, str] = {
    "convtasnet": "rtsep.separate.convtasnet:create_separator",
    "sepformer": "rtsep.separate.sepformer:create_separator",
    "tfmask": "rtsep.separate.tfmask:create_separator",
}


def register_separator(name: str, factory: SeparatorFactory, *, replace: bool = False) -> None:
    """Make ``create_separator(name, **options)`` call ``factory(**options)``."""
    if not name or not name.replace("-", "_").isidentifier():
        raise ConfigError(f"invalid separator name {name!r}")
    if not replace and (name in _REGISTRY or name in _BUILTINS):
        raise ConfigError(f"separator {name!r} is already registered")
    _BUILTINS.pop(name, None)
    _REGISTRY[name] = factory


def available_separators() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTINS))


def create_separator(name: str, **options: Any) -> StreamingSeparator:
    """Build the separator registered as ``name``; ``options`` are that separator's own keyword options."""
    factory = _REGISTRY.get(name)
    if factory is None and name in _BUILTINS:
        module_name, attr = _BUILTINS[name].split(":")
        factory = getattr(importlib.import_module(module_name), attr)
        _REGISTRY[name] = factory
    if factory is None:
        raise ConfigError(f"unknown separator {name!r}; available: {', '.join(available_separators())}")
    return factory(**options)
