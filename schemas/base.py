"""Shared record parts and the one mechanism that turns a record dataclass into a pyarrow schema.

Every record kind is a dataclass defined once in `schemas/`; its pyarrow schema is derived from the
type hints here, so the Python type and the columns on disk can never disagree.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

import pyarrow as pa

SCHEMA_VERSION = "1.0"


class Status(str, enum.Enum):
    """The three fates a record can end in; every input record ends in exactly one."""

    PENDING = "pending"
    KEPT = "kept"
    DROPPED = "dropped"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class Source:
    """Where a record came from: enough to find it again (and to re-read it in `mmcurate select`)."""

    uri: str
    """The input file (a tar shard, parquet, jsonl, or the image itself for folders)."""
    unit: int
    """Index of the unit of parallel work (shard, file, or slice of a folder) it was read in."""
    member: str = ""
    """Key inside the unit: tar member key, parquet row, jsonl line number, or relative file name."""
    index: int = 0
    """Position inside the unit, used to keep outputs in input order."""

    def ref(self) -> str:
        return f"{self.uri}#{self.member}" if self.member else self.uri


@dataclass
class Fate:
    """What happened to a record: kept, dropped with a reason code, or quarantined with the error."""

    status: Status = Status.PENDING
    reason: str = ""
    error: str = ""
    duplicate_of: str = ""

    @property
    def final(self) -> bool:
        return self.status in (Status.DROPPED, Status.QUARANTINED)


@dataclass
class OcrLine:
    """One line of text found in an image: its quadrilateral, the text, and the recogniser's confidence."""

    box: list[list[float]]
    """Four (x, y) corners in pixels of the scored image, clockwise from top-left."""
    text: str
    confidence: float


_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
}


def arrow_type(hint: Any) -> tuple[pa.DataType, bool]:
    """Map one type hint to (arrow type, nullable)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only Optional[X] unions are supported, got {hint}")
        return arrow_type(args[0])[0], True
    if hint in _SCALARS:
        return _SCALARS[hint], False
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return pa.string(), False
    if origin in (list, tuple, typing.Sequence):
        (item,) = get_args(hint)[:1]
        return pa.list_(arrow_type(item)[0]), False
    if origin is dict:
        key, value = get_args(hint)
        return pa.map_(arrow_type(key)[0], arrow_type(value)[0]), False
    if dataclasses.is_dataclass(hint):
        return pa.struct(arrow_fields(hint)), False
    raise TypeError(f"no arrow type for {hint!r}")


def arrow_fields(cls: type, exclude: tuple[str, ...] = ()) -> list[pa.Field]:
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or f.metadata.get("arrow") is False:
            continue
        typ, nullable = arrow_type(hints[f.name])
        out.append(pa.field(f.name, typ, nullable=nullable))
    return out


def arrow_schema(cls: type, exclude: tuple[str, ...] = ()) -> pa.Schema:
    """The pyarrow schema of a record dataclass; payload fields (`payload=True`) are left out."""
    return pa.schema(arrow_fields(cls, exclude), metadata={"mmcurate.schema_version": SCHEMA_VERSION})


PAYLOAD = {"arrow": False}
"""Field metadata of data that travels with a record but is no ledger column (image bytes, pixels)."""


def _to_plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return [(k, _to_plain(v)) for k, v in sorted(value.items())]
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _from_plain(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in get_args(hint) if a is not type(None)]
        return _from_plain(inner, value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if dataclasses.is_dataclass(hint):
        hints = get_type_hints(hint)
        return hint(**{k: _from_plain(hints[k], v) for k, v in value.items() if k in hints})
    if origin is dict:
        _, vt = get_args(hint)
        items = value.items() if isinstance(value, dict) else value
        return {k: _from_plain(vt, v) for k, v in items}
    if origin in (list, tuple):
        (it,) = get_args(hint)[:1]
        return [_from_plain(it, v) for v in value]
    return value


class Record:
    """Mixin for record dataclasses: rows for arrow tables, and back."""

    kind: ClassVar[str] = "record"

    def to_row(self) -> dict[str, Any]:
        return {
            f.name: _to_plain(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.metadata.get("arrow") is not False
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Record:
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("arrow") is not False}  # type: ignore[arg-type]
        return cls(**{k: _from_plain(hints[k], v) for k, v in row.items() if k in names})

    @classmethod
    def arrow_schema(cls) -> pa.Schema:
        return arrow_schema(cls)

    @classmethod
    def to_table(cls, records: typing.Iterable[Record]) -> pa.Table:
        return pa.Table.from_pylist([r.to_row() for r in records], schema=cls.arrow_schema())
