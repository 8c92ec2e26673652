"""The record contract every corpus shares, and the one mechanism that turns a record into columns.

Every record kind is a dataclass defined once in `schemas/`; its pyarrow schema is derived from the
type hints, so the Python type and the columns on disk can never disagree. Scores and labels are a
struct of the names the run declares (`Fields`), never an Arrow `map`, so every table loads with
Hugging Face `datasets`, DuckDB and pandas alike, and `scores.clip_score` is a real column.

A record knows its identity (`id`, `uid`, `source`), its fate, the errors its stages hit, how it
becomes a webdataset sample (`members`, `sample_json`), what makes it a duplicate (`dedup_key`) and
how many children it made (`expected_children`): the finish path needs nothing else of it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Union, get_args, get_origin, get_type_hints

import pyarrow as pa

SCHEMA_VERSION = "2.0"
ERROR_MAX_CHARS = 2000


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
    """The input file (a tar shard, parquet, jsonl, or the media file itself for folders)."""
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
    """Content id of the kept record this one duplicates."""

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


class DedupKey(NamedTuple):
    """The little that run-wide dedup needs of a record: no payload travels through the shuffle."""

    rank: tuple
    """Total order: the smallest rank of a duplicate group is the one kept."""
    uid: str
    id: str
    unit: int
    exact: str
    """Records with equal `exact` are exact duplicates (pixel hash, file hash, question id)."""
    near: int | None = None
    """A 64-bit perceptual hash for near duplicates, or None when the kind has none."""
    sig: tuple[int, ...] | None = None
    """A MinHash signature for near duplicates of text (LSH bands, estimated Jaccard), or None."""
    near_probes: tuple[int, ...] | None = None
    """More 64-bit hashes of the same record (a video clip's crops): another record is also its near
    duplicate when that one's `near` is within the distance of a probe, or this `near` of one of its."""
    semantic: int | None = None
    """A 64-bit SimHash of an embedding (a clip's CLIP image embedding), banded in a pass of its own
    with its own distance (`DedupParams.semantic_distance`), or None."""
    group: str | None = None
    """Records of one group (a video's clips) are never near duplicates of each other: pieces of one
    long static scene look alike and are still different footage. Exact duplicates still are."""


@dataclass(frozen=True)
class Fields:
    """The score and label names one record kind carries in one run: the struct fields of its
    `scores` and `labels` columns. Declared by the corpus from its configured stages."""

    scores: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", tuple(sorted(set(self.scores))))
        object.__setattr__(self, "labels", tuple(sorted(set(self.labels))))

    def to_dict(self) -> dict[str, list[str]]:
        return {"scores": list(self.scores), "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fields:
        return cls(tuple(d.get("scores", ())), tuple(d.get("labels", ())))


class UndeclaredField(ValueError):
    """A stage wrote a score or label the corpus did not declare: a bug, caught before any file is written."""


# ----------------------------------------------------------------------------------------------- arrow

PAYLOAD = {"arrow": False}
"""Field metadata of data that travels with a record but is no ledger column (bytes, pixels, frames)."""
CHILDREN = {"arrow": False, "children": True}
"""Child records a parent carries through the recipe until they are split off (never a column)."""
DECLARED_SCORES = {"declared": "scores"}
DECLARED_LABELS = {"declared": "labels"}
ERRORS = {"pairs": ("stage", "error")}
TRAILING = ("scores", "labels", "errors", "fate")
"""Columns every record kind ends with, in this order."""

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
}


def arrow_type(hint: Any) -> tuple[pa.DataType, bool]:
    """Map one type hint to (arrow type, nullable). `dict` has no mapping: declare it (see `Fields`)."""
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
    if dataclasses.is_dataclass(hint):
        return pa.struct(dataclass_fields(hint)), False
    raise TypeError(f"no arrow type for {hint!r} (a dict field needs `declared` or `pairs` metadata)")


@functools.cache
def _columns(cls: type) -> list[dataclasses.Field]:
    """Ledger columns of a row class, in order (payload left out, TRAILING last); once per class."""
    cols = [f for f in dataclasses.fields(cls) if f.metadata.get("arrow") is not False]
    head = [f for f in cols if f.name not in TRAILING]
    tail = sorted((f for f in cols if f.name in TRAILING), key=lambda f: TRAILING.index(f.name))
    return head + tail


def _column_type(f: dataclasses.Field, hint: Any, fields: Fields) -> pa.DataType | None:
    declared = f.metadata.get("declared")
    if declared is not None:
        names = getattr(fields, declared)
        value = pa.float64() if declared == "scores" else pa.string()
        return pa.struct([pa.field(n, value) for n in names]) if names else None  # parquet has no empty struct
    pairs = f.metadata.get("pairs")
    if pairs is not None:
        return pa.list_(pa.struct([pa.field(pairs[0], pa.string()), pa.field(pairs[1], pa.string())]))
    return arrow_type(hint)[0]


def dataclass_fields(cls: type, fields: Fields = Fields()) -> list[pa.Field]:
    hints = get_type_hints(cls)
    out = []
    for f in _columns(cls):
        typ = _column_type(f, hints[f.name], fields)
        if typ is None:
            continue
        special = "declared" in f.metadata or "pairs" in f.metadata
        out.append(pa.field(f.name, typ, nullable=special or arrow_type(hints[f.name])[1]))
    return out


_PLAIN = (str, int, float, bool, bytes, type(None))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _to_plain(value: Any) -> Any:
    if type(value) in _PLAIN:  # most values: one check (a row is written per record, several times)
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {name: _to_plain(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


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
        hints = _hints(hint)
        return hint(**{k: _from_plain(hints[k], v) for k, v in value.items() if k in hints})
    if origin in (list, tuple):
        (it,) = get_args(hint)[:1]
        return [_from_plain(it, v) for v in value]
    return value


def _declared(values: dict[str, Any], names: tuple[str, ...], what: str, kind: str) -> dict[str, Any] | None:
    extra = set(values) - set(names)
    if extra:
        raise UndeclaredField(f"{kind} records carry {what} {sorted(extra)} that the corpus did not declare")
    return {n: values.get(n) for n in names} if names else None


class Row:
    """Mixin for dataclasses stored as arrow rows (records, and cache rows such as rollouts)."""

    kind: ClassVar[str] = "row"

    def to_row(self, fields: Fields = Fields()) -> dict[str, Any]:
        """The arrow row: scores and labels as dicts of exactly the declared names (None where absent)."""
        row: dict[str, Any] = {}
        for f in _columns(type(self)):
            value = getattr(self, f.name)
            declared, pairs = f.metadata.get("declared"), f.metadata.get("pairs")
            if declared is not None:
                plain = _declared(value, getattr(fields, declared), declared, self.kind)
                if plain is not None:
                    row[f.name] = plain
            elif pairs is not None:
                row[f.name] = [{pairs[0]: k, pairs[1]: v} for k, v in sorted(value.items())]
            else:
                row[f.name] = _to_plain(value)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Any:
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in _columns(cls):
            if f.name not in row:
                continue
            raw = row[f.name]
            if "declared" in f.metadata:
                values[f.name] = {k: v for k, v in (raw or {}).items() if v is not None}
            elif "pairs" in f.metadata:
                a, b = f.metadata["pairs"]
                values[f.name] = {p[a]: p[b] for p in raw or ()}
            else:
                values[f.name] = _from_plain(hints[f.name], raw)
        return cls(**values)

    @classmethod
    def arrow_schema(cls, fields: Fields = Fields()) -> pa.Schema:
        meta = {"mmcurate.schema_version": SCHEMA_VERSION, "mmcurate.kind": cls.kind}
        return pa.schema(dataclass_fields(cls, fields), metadata=meta)

    @classmethod
    def to_table(cls, records: typing.Iterable[Row], fields: Fields = Fields()) -> pa.Table:
        return pa.Table.from_pylist([r.to_row(fields) for r in records], schema=cls.arrow_schema(fields))


def clean_error(text: str) -> str:
    """What every error on a record goes through: secrets scrubbed (a URL's credentials, a key quoted
    by a library), cut to a bounded length, made valid UTF-8 (file names need not be)."""
    from .redact import redact_text

    return redact_text(text)[:ERROR_MAX_CHARS].encode("utf-8", "replace").decode("utf-8")


@dataclass(kw_only=True)
class Record(Row):
    """What every curated record has. Subclasses add their own columns and payload fields."""

    kind: ClassVar[str] = "record"
    parent_kind: ClassVar[str | None] = None
    """The kind whose records this one's fate feeds into (clips -> their video), or None."""

    id: str
    """Content id: stable across reruns and locations."""
    source: Source
    scores: dict[str, float] = field(default_factory=dict, metadata=DECLARED_SCORES)
    labels: dict[str, str] = field(default_factory=dict, metadata=DECLARED_LABELS)
    errors: dict[str, str] = field(default_factory=dict, metadata=ERRORS)
    """Stage -> what went wrong there, also on records that were kept degraded (e.g. OCR skipped)."""
    fate: Fate = field(default_factory=Fate)
    overlay: dict[str, dict[str, Any]] | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """Overlay name -> that overlay's row for this record's id, while `select` decides (never written)."""
    media: str | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """Where the sample's media bytes wait while the run needs them (see `read_media`): records cross
    Beam's shuffles small, and the unit writer reads the bytes when it writes the shard."""
    rank: list[tuple[str, float]] | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """(cutoff key, score) pairs this record adds to run-wide `top_fraction` cutoffs, taken when the
    thresholds first see it (so a record a cheaper filter drops still counts in the population)."""

    @property
    def uid(self) -> str:
        """Unique within a run even for identical content: the place it was read from."""
        return f"{self.source.unit:06d}:{self.source.index:09d}"

    @property
    def parent_uid(self) -> str | None:
        return None

    @property
    def pending(self) -> bool:
        return self.fate.status == Status.PENDING

    def settle(self, code: str, error: str = "", *, duplicate_of: str = "", stage: str = "") -> Record:
        """End the record with a registered reason (its status comes from the registry); drops the
        payload, which a settled record never needs again. `stage` also files the error under it."""
        from .reasons import reason

        status = reason(code).status
        error = clean_error(error)
        self.fate = Fate(status=status, reason=code, error=error, duplicate_of=duplicate_of)
        if stage and error:
            self.errors[stage] = error
        self.clear_payload()
        return self

    def keep(self) -> Record:
        self.fate = Fate(status=Status.KEPT)
        return self

    def note(self, stage: str, error: str) -> None:
        """A stage degraded the record without deciding its fate: the record says so."""
        self.errors[stage] = clean_error(error)

    def clear_payload(self) -> Record:
        """Drop the payload. Child records a parent carries (`CHILDREN`) stay with it, their own
        payload dropped: a parent settled before its children are split off (a read refusal, a stage
        that raised) still hands every child on, so the children's identity holds."""
        for f in dataclasses.fields(self):
            if f.metadata.get("children"):
                for child in getattr(self, f.name) or ():
                    child.clear_payload()
            elif f.metadata.get("arrow") is False:
                setattr(self, f.name, None)
        return self

    def members(self) -> dict[str, bytes]:
        """The webdataset sample's members other than `json` (extension -> bytes); {} = not a sample."""
        return {}

    def sample_json(self, fields: Fields) -> dict[str, Any]:
        """The sample's JSON member: every column with a type that is the same for every sample
        (all declared scores, NaN where absent; labels '' where absent; errors as one string; no list
        columns: Hugging Face's webdataset loader infers types from the first samples, and `[]` has
        none; no fate: a sample is always kept)."""
        row = self.to_row(fields)
        row.pop("fate", None)
        row["scores"] = {k: (math.nan if v is None else v) for k, v in (row.get("scores") or {}).items()}
        row["labels"] = {k: ("" if v is None else v) for k, v in (row.get("labels") or {}).items()}
        row["errors"] = "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        for name in [k for k, v in row.items() if isinstance(v, list)]:
            del row[name]
        return row

    def dedup_key(self) -> DedupKey | None:
        """None: records of this kind are not deduplicated by the finish path."""
        return None

    def spool(self) -> bytes | None:
        """Media bytes held in memory that must wait in the spool (None: none, or already in a file)."""
        return None

    def expected_children(self) -> dict[str, int]:
        """Kind -> how many child records this record made: the input count of that kind's identity."""
        return {}


class SlotChild:
    """A child record numbered by `slot` within the input row its parent was read from (an image
    of a document, a region of a grounding sample): its uid is the parent's plus the slot."""

    source: Source
    slot: int

    @property
    def uid(self) -> str:
        return f"{self.source.unit:06d}:{self.source.index:09d}:{self.slot:05d}"

    @property
    def parent_uid(self) -> str:
        return f"{self.source.unit:06d}:{self.source.index:09d}"


def media_ref(uri: str, start: int | None = None, end: int | None = None) -> str:
    """A reference to bytes: a whole file (`uri`) or the range [start, end) of one (`uri#bytes=S-E`)."""
    return uri if start is None else f"{uri}#bytes={start}-{end}"


@functools.lru_cache(maxsize=256)
def _fs_of(uri: str) -> tuple[Any, str, bool]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return fs, path, "file" in protocols


def read_media(ref: str) -> bytes:
    """The bytes a `media_ref` names (any fsspec URI; `tar://member::archive` too). A unit writer
    reads every sample of its shards this way: a local range is one seek and one read."""
    uri, _, span = ref.partition("#bytes=")
    if not span:
        import fsspec

        with fsspec.open(uri, "rb") as f:
            return f.read()
    start, end = (int(x) for x in span.split("-"))
    fs, path, local = _fs_of(uri)
    if local:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        if len(data) != end - start:
            raise OSError(f"{uri}: {end - start} bytes at {start} wanted, {len(data)} there")
        return data
    return fs.cat_file(path, start=start, end=end)


def sample_json_bytes(rec: Record, fields: Fields) -> bytes:
    return json.dumps(rec.sample_json(fields), sort_keys=True, ensure_ascii=False).encode("utf-8")
