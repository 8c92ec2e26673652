"""The contract every filter follows: score first (into the ledger), decide later (from scores alone).

A newcomer adds a filter by writing one module in `stages/` with a subclass of `Filter` carrying a
pydantic `Params` model; `@register` makes it available to every pipeline config by its `name`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ModelUnavailable(RuntimeError):
    """A model (its weights, files or package) cannot run here: the message says what to install or set."""


class Params(BaseModel):
    """Base of every stage's parameters: unknown keys are an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Filter:
    """A rule-based filter.

    `score` computes numbers (and string labels) from a decoded record; they go into the score
    ledger. `decide` looks only at those scores and returns a reason code to drop, or None to keep,
    so `mmcurate select` can re-decide with new thresholds without recomputing anything.
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = ("caption",)
    Params: ClassVar[type[Params]] = Params
    reasons: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return {}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        raise NotImplementedError


def resolve_device(device: str, key: str) -> str:
    """`auto` -> CUDA when visible, else CPU; an explicit CUDA device without one fails, naming `key`."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable(f"{key} is {device!r} but no CUDA device is visible")
    return device


FILTERS: dict[str, type[Filter]] = {}


def register(cls: type[Filter]) -> type[Filter]:
    if cls.name in FILTERS and FILTERS[cls.name] is not cls:
        raise ValueError(f"two filters are named {cls.name!r}")
    FILTERS[cls.name] = cls
    return cls


def load_filters() -> dict[str, type[Filter]]:
    """Import every module of `stages` once, so each registers its filters."""
    from mmcurate import stages

    for mod in pkgutil.iter_modules(stages.__path__):
        importlib.import_module(f"{stages.__name__}.{mod.name}")
    return FILTERS
