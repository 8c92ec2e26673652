"""Pipeline configuration: YAML validated in full before anything runs.

A wrong key or value stops the run at once with a message naming the key path (e.g.
`filters.min_side.mn: unknown key`), the way Data-Juicer users wished theirs did (#1019).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from mmcurate.stages.base import Filter, Params, load_filters
from mmcurate.stages.clip import AestheticParams, ClipParams
from mmcurate.stages.columns import WhereRule
from mmcurate.stages.ocr import OcrParams

DEFAULTS_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """Bad configuration: the message says which key and what to fix."""


MODEL_STAGES = ("clip", "aesthetic", "ocr", "ocr_verify", "align")
"""Names of the RunInference stages (`pipelines.models.STAGE_BUILDERS`), as `models.placement` keys."""
ACCELERATOR = r"type:[A-Za-z0-9._-]+(;count:[1-9][0-9]*)?(;[A-Za-z0-9_-]+(:[A-Za-z0-9._-]+)?)*"
"""Beam's accelerator hint as Dataflow reads it: `type:nvidia-l4;count:1;install-nvidia-driver`."""


class PlacementParams(Params):
    """Where one model stage runs on a cluster, as Beam resource hints on its RunInference (Dataflow
    right-fitting puts the stage on workers that have them, the decode stages stay on plain CPU
    workers), and how its model is shared among a worker's processes."""

    accelerator: str | None = None
    """e.g. `type:nvidia-l4;count:1;install-nvidia-driver`; null = no accelerator asked for."""
    min_ram: str | None = None
    """Least memory per worker, e.g. `16GB` (Beam's min_ram hint)."""
    cpu_count: int | None = None
    """Least vCPUs per worker (Beam's cpu_count hint)."""
    share_model: bool | None = None
    """One copy per machine shared by its SDK processes (RunInference's multi-process shared model,
    for a model too large for one copy per process); null = the model handler's own default."""
    model_copies: int | None = None
    """With share_model: this many copies per machine (e.g. one per GPU)."""

    @field_validator("accelerator")
    @classmethod
    def _accelerator(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(ACCELERATOR, value):
            raise PydanticCustomError("placement", "must read type:NAME[;count:N][;install-nvidia-driver]")
        return value

    @field_validator("min_ram")
    @classmethod
    def _ram(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*(B|[KMGT]i?B)?", value):
            raise PydanticCustomError("placement", "must be a size such as 16GB or 512MiB")
        return value

    @field_validator("cpu_count", "model_copies")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise PydanticCustomError("placement", "must be at least 1")
        return value

    def hints(self) -> dict[str, Any]:
        """The resource hints to set (Beam's names), only those configured."""
        cpus = str(self.cpu_count) if self.cpu_count is not None else None  # Beam parses hint strings
        hints = {"accelerator": self.accelerator, "min_ram": self.min_ram, "cpu_count": cpus}
        return {k: v for k, v in hints.items() if v is not None}


class ModelsConfig(Params):
    """Models behind the model filters; a model runs only when a configured filter needs it."""

    clip: ClipParams = ClipParams()
    aesthetic: AestheticParams = AestheticParams()
    ocr: OcrParams = OcrParams()
    placement: dict[str, PlacementParams] = {}
    """Per model stage (clip, aesthetic, ocr, ocr_verify, align): resource hints and model sharing."""

    @field_validator("placement")
    @classmethod
    def _stages(cls, value: dict[str, PlacementParams]) -> dict[str, PlacementParams]:
        return check_placement(value, MODEL_STAGES)


def check_placement(value: dict[str, PlacementParams], known: tuple[str, ...]) -> dict[str, PlacementParams]:
    """A `placement` map names only stages the pipeline has."""
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise PydanticCustomError(
            "placement",
            "unknown model stage(s) {unknown}; known: {known}",
            {"unknown": unknown, "known": ", ".join(known)},
        )
    return value


def as_kinds(kind: str | tuple[str, ...]) -> tuple[str, ...]:
    return (kind,) if isinstance(kind, str) else tuple(kind)


def check_filters(
    value: dict[str, dict[str, Any] | None], kind: str | tuple[str, ...]
) -> dict[str, dict[str, Any] | None]:
    """Every filter named exists, applies to one of these record kinds, and accepts its parameters."""
    registry = load_filters()
    kinds = as_kinds(kind)
    what = " or ".join(kinds)
    usable = sorted(n for n, f in registry.items() if set(kinds) & set(f.kinds))
    for name, params in value.items():
        if name not in registry:
            raise ValueError(f"filters.{name}: unknown filter; known {what} filters: {', '.join(usable)}")
        if not set(kinds) & set(registry[name].kinds):
            raise ValueError(f"filters.{name}: not a {what} filter; {what} filters are: {', '.join(usable)}")
        try:
            registry[name].Params(**(params or {}))
        except ValidationError as exc:
            raise ValueError(_format(exc, prefix=f"filters.{name}.")) from None
    return value


def build_filters(filters: dict[str, dict[str, Any] | None]) -> list[Filter]:
    registry = load_filters()
    return [registry[name](registry[name].Params(**(p or {}))) for name, p in filters.items()]


class CorpusConfig(Params):
    """What every corpus config has: `where` rules on ledger and overlay columns."""

    where: list[WhereRule] = Field(default_factory=list)
    """Column thresholds applied after the filters, in order (see stages/columns.py)."""

    def build_filters(self) -> list[Filter]:
        return []


class FilteredConfig(CorpusConfig):
    """A corpus config with a `filters` recipe deciding records of `filter_kind`: one kind, or several
    (a document and its images), each filter deciding the records of the kinds it names."""

    filter_kind: ClassVar[str | tuple[str, ...]]
    filters: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    """Filter name -> parameters, applied in this order; a filter left out is not applied."""
    models: ModelsConfig = ModelsConfig()

    @field_validator("filters")
    @classmethod
    def _known_filters(cls, value: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any] | None]:
        return check_filters(value, cls.filter_kind)

    def build_filters(self) -> list[Filter]:
        return build_filters(self.filters)


def _format(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = prefix + ".".join(str(p) for p in err["loc"])
        if err["type"] == "value_error":  # our validators name the key path, or the prefix does
            msg, head = str(err["ctx"]["error"]), prefix.rstrip(".")
            lines.append(msg if not head or msg.startswith(head) else f"{head}: {msg}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key (check the spelling)")
        else:
            lines.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def _read_yaml(source: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {source} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {source} must hold a mapping at the top level")
    return data


WHOLE = ("filters", "tiers")
"""Keys a config file replaces as a whole, at any depth: an ordered filter recipe, a set of RL tiers
(a partial override would mix two partitions of the pass rates)."""


def merge(base: dict[str, Any], override: dict[str, Any], replace: tuple[str, ...] = WHOLE) -> dict[str, Any]:
    """Deep-merge `override` onto `base`; keys in `replace` are taken whole."""
    out = dict(base)
    for key, value in override.items():
        if key not in replace and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, replace)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None, model: type[Params], default: str, base: dict | None = None) -> Any:
    """The embedded defaults (or `base`: a parent run's config), overridden key by key by the YAML at
    `path`, validated in full. `filters` and RL `tiers` are replaced as a whole when given."""
    defaults = DEFAULTS_DIR / default
    data = base if base is not None else _read_yaml(defaults)
    source = defaults
    if path:
        source = Path(path)
        data = merge(data, _read_yaml(source))
    try:
        return model(**data)
    except ValidationError as exc:
        raise ConfigError(f"config error in {source}: {_format(exc)}") from None
