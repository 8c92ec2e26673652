"""The container loops, written once for every corpus: tar / tgz, parquet, jsonl, folders of files.

Each yields `Item`s in input order: a tar member group, a parquet row, a jsonl row, or one file of a
folder slice; or an item with a `problem` (reason, error) for what the container could not give:
a line that is no JSON object, the bytes skipped over a corrupt tar header, the unread rest of a
broken stream. A `ReadReport` collects, per unit, how many records the container holds where that
is knowable before parsing (jsonl lines from the listing, parquet rows from the file's metadata,
files of a folder slice), the damaged byte ranges (with "unknown" where the number of records lost
cannot be known), and the members and files that are not records.

Tars are read with `ignore_zeros`, so a corrupt header mid-archive is skipped block by block up to
the next valid header (tarfile alone takes it for the end of the archive); every block skipped is
recorded and reported as one range. A gzip stream is read through `gzip.GzipFile`, which checks the
CRC (tarfile's own stream reader does not).
"""

from __future__ import annotations

import gzip
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow.parquet as pq

from .paths import ReadRefused, check_regular
from .units import Unit, stable_error

_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
"""webdataset's split of a member name into the sample key and the member's extension."""


@dataclass
class Item:
    index: int
    """Position in the unit (jsonl: line number in the file)."""
    member: str
    """Where in the container: tar key, `rowN`, `lineN`, or the file's name relative to the folder."""
    uri: str
    members: dict[str, bytes] | None = None
    row: dict[str, Any] | None = None
    path: str | None = None
    problem: tuple[str, str] | None = None
    """(reason, error) when the container could not give this item."""
    spans: dict[str, tuple[int, int]] | None = None
    """Tar members left unread, by extension: (offset of the data in the tar, size), for the
    adapter to reference instead of holding their bytes (`by_reference`; uncompressed tars only)."""


@dataclass
class ReadReport:
    """What one unit held, measured at the container level."""

    expected: int | None = None
    """Records the container holds, known before parsing (None for tars: only reading tells)."""
    produced: int = 0
    damage: list[dict[str, Any]] = field(default_factory=list)
    """{uri, start, end, error, records}: byte ranges that could not be read; records may be "unknown"."""
    ignored: list[str] = field(default_factory=list)
    """Members or files that are not records (directories in a tar, .DS_Store, an .svg beside images)."""
    not_read: int = 0
    """Records left unread because of a read limit (`--limit`): part of `expected`, not of `produced`."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "expected": self.expected, "produced": self.produced, "damage": self.damage, "ignored": self.ignored,
            "not_read": self.not_read,
        }  # fmt: skip


class _Watched(tarfile.TarInfo):
    """Records where tarfile skipped over an invalid header block (with `ignore_zeros` it goes on)."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tf)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError):
            bad = tf.__dict__.setdefault("mmcurate_bad_blocks", [])
            bad.append(tf.offset)
            raise


def _ranges(blocks: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for b in blocks:
        if out and out[-1][1] == b:
            out[-1] = (out[-1][0], b + tarfile.BLOCKSIZE)
        else:
            out.append((b, b + tarfile.BLOCKSIZE))
    return out


class _TarReader:
    """One tar (or tgz) unit as items; see the module docstring."""

    def __init__(self, unit: Unit, report: ReadReport, by_reference: tuple[str, ...] = ()) -> None:
        self.unit, self.report, self.by_reference = unit, report, by_reference
        self.index, self.key, self.group = 0, None, {}
        self.spans: dict[str, tuple[int, int]] = {}
        self.group_offset = 0
        self.seen_bad = 0
        self.gz = False

    def _flush(self) -> Iterator[Item]:
        if self.key is not None:
            yield Item(self.index, self.key, self.unit.uri, members=self.group, spans=self.spans or None)
            self.index += 1
        self.key, self.group, self.spans = None, {}, {}

    def _skipped(self, tf: tarfile.TarFile) -> Iterator[Item]:
        bad = tf.__dict__.get("mmcurate_bad_blocks", [])
        new, self.seen_bad = bad[self.seen_bad :], len(bad)
        for start, end in _ranges(new):
            where = "decompressed bytes" if self.gz else "bytes"
            error = f"corrupt tar header: {where} {start}-{end} skipped to the next valid header"
            self.report.damage.append({"uri": self.unit.uri, "start": start, "end": end, "error": error,
                                       "records": "unknown"})  # fmt: skip
            yield from self._flush()
            yield Item(self.index, f"<skipped {start}-{end}>", self.unit.uri, problem=("read_error", error))
            self.index += 1

    def _add(self, tf: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[Item]:
        if not info.isreg():
            if not info.isdir():
                self.report.ignored.append(f"{self.unit.uri}#{info.name}")
            return
        m = _KEY.match(info.name)
        if m is None or re.match(r"__[^/]*__($|/)", info.name):
            self.report.ignored.append(f"{self.unit.uri}#{info.name}")
            return
        key, ext = m.group(1), m.group(2).lower()
        if key != self.key or ext in self.group or ext in self.spans:
            yield from self._flush()
            self.key, self.group_offset = key, info.offset
        if ext in self.by_reference and not self.gz:  # tarfile skips the data itself: nothing is held
            self.spans[ext] = (info.offset_data, info.size)
            return
        data = tf.extractfile(info)
        self.group[ext] = data.read() if data is not None else b""

    def items(self) -> Iterator[Item]:
        with fsspec.open(self.unit.uri, "rb") as raw:
            self.gz = raw.read(2) == b"\x1f\x8b"  # by content: a .tar may be compressed, a .tgz may not
            raw.seek(0)
            stream: Any = gzip.GzipFile(fileobj=raw) if self.gz else raw
            offset = 0
            try:
                with tarfile.open(fileobj=stream, mode="r|", ignore_zeros=True, tarinfo=_Watched) as tf:
                    for info in tf:
                        offset = info.offset
                        yield from self._skipped(tf)
                        yield from self._add(tf, info)
                    yield from self._skipped(tf)
            except Exception as exc:  # a broken stream: the rest, from the sample it broke in, as one record
                offset = self.group_offset if self.key is not None else offset
                self.key, self.group, self.spans = None, {}, {}  # the sample in progress cannot be known complete
                where = f"compressed bytes {raw.tell()}-end" if self.gz else f"bytes {offset}-end"
                error = f"{stable_error(exc, self.unit.uri)} in {self.unit.uri} ({where} unread)"
                self.report.damage.append({"uri": self.unit.uri, "start": offset, "end": None, "error": error,
                                           "records": "unknown"})  # fmt: skip
                yield Item(self.index, "<unread-remainder>", self.unit.uri, problem=("read_error", error))
                return
            yield from self._flush()


def iter_tar(unit: Unit, report: ReadReport, by_reference: tuple[str, ...] = ()) -> Iterator[Item]:
    yield from _TarReader(unit, report, by_reference).items()


def iter_parquet(unit: Unit, report: ReadReport, batch_size: int = 256) -> Iterator[Item]:
    """Rows with their index; the row count comes from the file's metadata and is checked: rows the
    file promises but cannot give (a damaged row group) come out as problems, one per row."""
    with fsspec.open(unit.uri, "rb") as f:
        try:
            pf = pq.ParquetFile(f)
            report.expected = pf.metadata.num_rows
        except Exception as exc:  # not parquet, truncated footer: the file is unreadable as a whole
            error = stable_error(exc, unit.uri)
            report.damage.append({"uri": unit.uri, "start": 0, "end": None, "error": error, "records": "unknown"})
            yield Item(0, "<unreadable-file>", unit.uri, problem=("read_error", error))
            return
        i = 0
        try:
            for batch in pf.iter_batches(batch_size=batch_size):
                for row in batch.to_pylist():
                    yield Item(i, f"row{i}", unit.uri, row=row)
                    i += 1
        except Exception as exc:
            error = stable_error(exc, unit.uri)
            for j in range(i, report.expected):
                yield Item(j, f"row{j}", unit.uri, problem=("read_error", f"row {j} unreadable: {error}"))
            i = report.expected


def _json_row(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    line = raw.decode("utf-8", "replace")
    if not line.strip():
        return None, "empty line"
    try:
        row = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: a value nested thousands deep
        return None, f"{type(exc).__name__}: {str(exc)[:300]}"
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    return row, ""


def iter_jsonl(unit: Unit, report: ReadReport) -> Iterator[Item]:
    """Lines [start, stop) of the file; their number was counted when the units were listed, and
    lines the file no longer has (it changed since) come out as problems, one per line."""
    if unit.stop >= 0:
        report.expected = unit.stop - unit.start
    lineno = unit.start - 1
    with fsspec.open(unit.uri, "rb") as f:
        f.seek(unit.offset)
        for lineno, raw in enumerate(f, unit.start):
            if unit.stop >= 0 and lineno >= unit.stop:
                lineno -= 1
                break
            row, error = _json_row(raw)
            problem = ("bad_json", error) if row is None else None
            yield Item(lineno, f"line{lineno + 1}", unit.uri, row=row, problem=problem)
    for missing in range(lineno + 1, unit.stop):
        error = f"the file has no line {missing + 1} any more (it changed after the run was listed)"
        yield Item(missing, f"line{missing + 1}", unit.uri, problem=("read_error", error))


def iter_files(unit: Unit, report: ReadReport) -> Iterator[Item]:
    """The files of a folder slice, by name (the adapter reads them, so a video need not be in memory)."""
    report.expected = len(unit.files)
    root = unit.uri
    for i, uri in enumerate(unit.files):
        member = uri[len(root) + 1 :] if uri.startswith(root + "/") else uri.rsplit("/", 1)[-1]
        yield Item(i, member, uri, path=uri)


ITERATORS = {"wds": iter_tar, "parquet": iter_parquet, "jsonl": iter_jsonl, "folder": iter_files, "videos": iter_files}


def iter_unit(unit: Unit, report: ReadReport, by_reference: tuple[str, ...] = ()) -> Iterator[Item]:
    """Every item of `unit`; a container that is not a regular file, or that breaks in a way its loop
    does not handle, gives one problem item for what it did not read. Tar members whose extension
    is in `by_reference` come as spans, not bytes, where the tar is not compressed."""
    n = 0
    report.ignored.extend(unit.ignored)
    try:
        if unit.kind not in ("folder", "videos"):
            check_regular(unit.uri)
        items = iter_tar(unit, report, by_reference) if unit.kind == "wds" else ITERATORS[unit.kind](unit, report)
        for item in items:
            n += 1
            yield item
    except Exception as exc:
        reason = exc.reason if isinstance(exc, ReadRefused) else "read_error"
        error = stable_error(exc, unit.uri) if not isinstance(exc, ReadRefused) else str(exc)
        report.damage.append({"uri": unit.uri, "start": None, "end": None, "error": error, "records": "unknown"})
        if report.expected is not None and report.expected > n:
            report.expected = None  # what it held can no longer be told
        yield Item(n, "<unread-remainder>", unit.uri, problem=(reason, error))
