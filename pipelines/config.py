"""Pipeline configuration: YAML validated in full before anything runs.

A wrong key or value stops the run at once with a message naming the key path (e.g.
`filters.min_side.mn: unknown key`), the way Data-Juicer users wished theirs did (#1019).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, ValidationError, field_validator

from mmcurate.stages.base import Filter, Params, load_filters
from mmcurate.stages.clip import AestheticParams, ClipParams
from mmcurate.stages.columns import WhereRule
from mmcurate.stages.ocr import OcrParams

DEFAULTS_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """Bad configuration: the message says which key and what to fix."""


class ModelsConfig(Params):
    """Models behind the model filters; a model runs only when a configured filter needs it."""

    clip: ClipParams = ClipParams()
    aesthetic: AestheticParams = AestheticParams()
    ocr: OcrParams = OcrParams()


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
