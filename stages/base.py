"""The contract every filter follows: score first (into the ledger), decide later (from scores alone).

A newcomer adds a filter by writing one module in `stages/` with a subclass of `Filter` carrying a
pydantic `Params` model; `@register` makes it available to every pipeline config by its `name`.
"""

from __future__ import annotations

import abc
import importlib
import pkgutil
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from mmcurate.schemas import Status, register_reason


class ModelUnavailable(RuntimeError):
    """A model (its weights, files or package) cannot run here: the message says what to install or set."""


class Params(BaseModel):
    """Base of every stage's parameters: unknown keys are an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Filter(abc.ABC):
    """A rule-based filter.

    `score` computes numbers (and string labels) from a decoded record; they go into the score
    ledger. `decide` looks only at those scores and returns a reason code to drop, or None to keep,
    so `mmcurate select` can re-decide with new thresholds without recomputing anything.
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = ("caption",)
    Params: ClassVar[type[Params]] = Params
    reasons: ClassVar[tuple[str, ...]] = ()
    """Drop reasons `decide` may return (registered as drops that `select` may re-decide)."""
    scores: ClassVar[tuple[str, ...]] = ()
    """Score names `score` writes (or the model stage behind the filter writes): ledger columns."""
    labels: ClassVar[tuple[str, ...]] = ()
    model: ClassVar[str] = ""
    """The model stage that computes this filter's scores (clip, aesthetic, ocr), or '' for none."""

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return {}, {}

    @abc.abstractmethod
    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        """A drop reason code, or None to keep; from scores and labels only."""


def hub_answer(repo: str, filename: str) -> str | None:
    """None when the Hugging Face hub is reachable and holds `repo/filename`; else why not, in words.

    Used when weights are not in the local cache: a connected cluster downloads them at load time,
    an offline machine must fail before the run starts.
    """
    import os

    import huggingface_hub as hf

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return "HF_HUB_OFFLINE is set"
    try:
        return None if hf.file_exists(repo, filename) else "the hub has no such file"
    except Exception as exc:  # no network, DNS failure, proxy, gated repo: all mean the same here
        return f"the hub cannot be reached ({type(exc).__name__})"


def require_hub(repo: str, filename: str, cache_dir: str | None, key: str, what: str, instead: str) -> None:
    """Weights not in the cache are fine only if the hub answers (a connected cluster downloads them
    at load time); otherwise fail now, saying how to fetch them and which key to point elsewhere.
    `what` names the missing thing, `instead` the local alternative for `key`."""
    import huggingface_hub as hf

    why = hub_answer(repo, filename)
    if why is None:
        return
    cache = cache_dir or hf.constants.HF_HUB_CACHE
    fetch = f"hf download {repo}{f' {filename}' if filename != 'config.json' else ''} --cache-dir {cache}"
    raise ModelUnavailable(
        f"{key}: {what} not in the cache {cache}, and {why}. "
        f"Download it on a connected machine (`{fetch}`), or point {key} at {instead}"
    )


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
    """Make a filter known by its `name`, and its reasons known to the reason registry as drops."""
    if cls.name in FILTERS and FILTERS[cls.name] is not cls:
        raise ValueError(f"two filters are named {cls.name!r}")
    doc = (cls.__doc__ or cls.name).strip().splitlines()[0]
    for code in cls.reasons:
        register_reason(code, Status.DROPPED, f"filter {cls.name}: {doc}", redecide=True)
    FILTERS[cls.name] = cls
    return cls


def load_filters() -> dict[str, type[Filter]]:
    """Import every module of `stages` that registers a filter (it says `@register`), so each is
    known by its name; modules that only run models or read inputs are not imported for this
    (they may pull in torch: a run without model filters never loads it)."""
    from pathlib import Path

    from mmcurate import stages

    for mod in pkgutil.iter_modules(stages.__path__):
        path = Path(stages.__path__[0]) / f"{mod.name}.py"
        if not mod.ispkg and "@register" in path.read_text(encoding="utf-8"):
            importlib.import_module(f"{stages.__name__}.{mod.name}")
    return FILTERS
