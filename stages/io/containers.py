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

With a read limit, a tar is streamed only as far as the first sample past it; the samples after it
are counted from their headers alone on a seekable, uncompressed file (tarfile seeks over member
data), so the limit's `not_read` stays exact without reading the rest. Where that cannot be done (a
compressed or unseekable stream, a damaged header past the limit) the count is a lower bound and
the report says so (`not_read_unknown`).
"""

from __future__ import annotations

import gzip
import json
import re
import tarfile
from collections.abc import Callable, Container, Iterator
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
    not_read_unknown: bool = False
    """True when the rest of a tar past the limit could not be counted to its end (a compressed or
    unseekable stream, a damaged header): `not_read` is then what was counted, a lower bound."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "expected": self.expected, "produced": self.produced, "damage": self.damage, "ignored": self.ignored,
            "not_read": self.not_read, "not_read_unknown": self.not_read_unknown,
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


class _Strict(tarfile.TarInfo):
    """For counting past a limit: a damaged header ends the count at once (tarfile with
    `ignore_zeros` would read on block by block through the member's data to the next header)."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tf)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:
            raise tarfile.SubsequentHeaderError(str(exc)) from None  # next() raises it as a ReadError


def _ranges(blocks: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for b in blocks:
        if out and out[-1][1] == b:
            out[-1] = (out[-1][0], b + tarfile.BLOCKSIZE)
        else:
            out.append((b, b + tarfile.BLOCKSIZE))
    return out


def sample_key(info: tarfile.TarInfo) -> tuple[str, str] | None:
    """(sample key, extension) of a tar member by webdataset's rule; None for a member of no sample
    (a directory, a link, a name with no extension, `__x__` and what is under `__x__/`). The one rule
    both the reading and the counting past a limit use, so both see the same samples."""
    if not info.isreg():
        return None
    m = _KEY.match(info.name)
    if m is None or re.match(r"__[^/]*__($|/)", info.name):
        return None
    return m.group(1), m.group(2).lower()


def starts_sample(key: str, ext: str, current: str | None, exts: Container[str]) -> bool:
    """Whether a member begins a new sample: another key, or an extension the current one already has."""
    return key != current or ext in exts


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except Exception:  # a file object with no (working) seekable(): treat as a stream
        return False


class _TarReader:
    """One tar (or tgz) unit as items; see the module docstring."""

    def __init__(
        self, unit: Unit, report: ReadReport, by_reference: tuple[str, ...] = (), limit: int | None = None
    ) -> None:
        self.unit, self.report, self.by_reference, self.limit = unit, report, by_reference, limit
        self.index, self.key, self.group = 0, None, {}
        self.spans: dict[str, tuple[int, int]] = {}
        self.group_offset = 0
        self.seen_bad = 0
        self.gz = False
        self.rest_from: int | None = None
        """Offset of the header of the first sample past the limit, once it is met: counted from there."""
        self.done = False
        self.offset = 0
        """Offset of the member being read (where a broken stream's unread remainder starts)."""

    def _past_limit(self) -> bool:
        """Whether the next item would lie past the read limit (its record is counted, never read)."""
        return self.limit is not None and self.index >= self.limit

    def _stop_unknown(self) -> None:
        """Past the limit, what follows cannot be counted (damage, a broken stream): a lower bound."""
        self.report.not_read_unknown, self.done = True, True

    def _flush(self) -> Iterator[Item]:
        if self.key is not None:
            yield Item(self.index, self.key, self.unit.uri, members=self.group, spans=self.spans or None)
            self.index += 1
        self.key, self.group, self.spans = None, {}, {}

    def _skipped(self, tf: tarfile.TarFile) -> Iterator[Item]:
        bad = tf.__dict__.get("mmcurate_bad_blocks", [])
        new, self.seen_bad = bad[self.seen_bad :], len(bad)
        for start, end in _ranges(new):
            yield from self._flush()
            if self._past_limit():  # damage past the limit: how many records it held is not known
                self._stop_unknown()
                return
            where = "decompressed bytes" if self.gz else "bytes"
            error = f"corrupt tar header: {where} {start}-{end} skipped to the next valid header"
            self.report.damage.append({"uri": self.unit.uri, "start": start, "end": end, "error": error,
                                       "records": "unknown"})  # fmt: skip
            yield Item(self.index, f"<skipped {start}-{end}>", self.unit.uri, problem=("read_error", error))
            self.index += 1

    def _ignore(self, info: tarfile.TarInfo) -> None:
        if not info.isdir():
            self.report.ignored.append(f"{self.unit.uri}#{info.name}")

    def _add(self, tf: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[Item]:
        found = sample_key(info)
        if found is None:
            self._ignore(info)
            return
        key, ext = found
        if starts_sample(key, ext, self.key, {*self.group, *self.spans}):
            yield from self._flush()
            if self._past_limit():  # the first sample past the limit: counted from its header on
                self.rest_from, self.done = info.offset, True
                return
            self.key, self.group_offset = key, info.offset
        if ext in self.by_reference and not self.gz:  # tarfile skips the data itself: nothing is held
            self.spans[ext] = (info.offset_data, info.size)
            return
        data = tf.extractfile(info)
        self.group[ext] = data.read() if data is not None else b""

    def _stream(self, tf: tarfile.TarFile) -> Iterator[Item]:
        for info in tf:
            self.offset = info.offset
            yield from self._skipped(tf)
            if not self.done:
                yield from self._add(tf, info)
            if self.done:
                return
        yield from self._skipped(tf)

    def _broken(self, exc: Exception, raw: Any) -> Iterator[Item]:
        """A broken stream: the rest, from the sample it broke in, as one record (or, past the
        limit, not a record: unknown)."""
        offset = self.group_offset if self.key is not None else self.offset
        if self.key is None and self._past_limit():
            self._stop_unknown()
            return
        self.key, self.group, self.spans = None, {}, {}  # the sample in progress cannot be known complete
        where = f"compressed bytes {raw.tell()}-end" if self.gz else f"bytes {offset}-end"
        error = f"{stable_error(exc, self.unit.uri)} in {self.unit.uri} ({where} unread)"
        self.report.damage.append({"uri": self.unit.uri, "start": offset, "end": None, "error": error,
                                   "records": "unknown"})  # fmt: skip
        yield Item(self.index, "<unread-remainder>", self.unit.uri, problem=("read_error", error))

    def items(self) -> Iterator[Item]:
        with fsspec.open(self.unit.uri, "rb") as raw:
            self.gz = raw.read(2) == b"\x1f\x8b"  # by content: a .tar may be compressed, a .tgz may not
            raw.seek(0)
            stream: Any = gzip.GzipFile(fileobj=raw) if self.gz else raw
            self.offset = 0
            try:
                with tarfile.open(fileobj=stream, mode="r|", ignore_zeros=True, tarinfo=_Watched) as tf:
                    yield from self._stream(tf)
            except Exception as exc:
                yield from self._broken(exc, raw)
                return
            if self.rest_from is not None:
                self._count_rest(raw, self.rest_from)
            yield from self._flush()

    def _count_rest(self, raw: Any, offset: int) -> None:
        """Count the samples from the header at `offset` to the end by their headers alone: on a
        seekable file tarfile's `next()` seeks over member data, so nothing past the limit is read
        but headers. A compressed or unseekable stream, or a damaged header, ends the count there."""
        self.report.not_read = 1  # the sample whose first member was met
        if self.gz or not _seekable(raw):  # counting would mean reading (decompressing) every byte
            self.report.not_read_unknown = True
            return
        self.report.not_read, key, exts = 0, None, set()
        try:
            raw.seek(offset)
            with tarfile.TarFile(fileobj=raw, mode="r", ignore_zeros=True, tarinfo=_Strict) as tf:
                while (info := tf.next()) is not None:
                    found = sample_key(info)
                    if found is None:
                        self._ignore(info)
                    elif starts_sample(*found, key, exts):
                        self.report.not_read, key, exts = self.report.not_read + 1, found[0], {found[1]}
                    else:
                        exts.add(found[1])
        except Exception:  # a damaged header or truncated data past the limit: the rest is not known
            self.report.not_read = max(self.report.not_read, 1)
            self.report.not_read_unknown = True


def iter_tar(
    unit: Unit, report: ReadReport, by_reference: tuple[str, ...] = (), limit: int | None = None
) -> Iterator[Item]:
    """The samples of a tar; with `limit`, only the first `limit` items, the rest counted (module docstring)."""
    yield from _TarReader(unit, report, by_reference, limit).items()


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


def iter_lines(unit: Unit, report: ReadReport) -> Iterator[Item]:
    """Lines [start, stop) of a text file as items holding their raw bytes (`row["bytes"]`, line
    ending included); their number was counted when the units were listed (`jsonl_units`), and lines
    the file no longer has (it changed since) come out as problems, one per line."""
    if unit.stop >= 0:
        report.expected = unit.stop - unit.start
    lineno = unit.start - 1
    with fsspec.open(unit.uri, "rb") as f:
        f.seek(unit.offset)
        for lineno, raw in enumerate(f, unit.start):
            if unit.stop >= 0 and lineno >= unit.stop:
                lineno -= 1
                break
            yield Item(lineno, f"line{lineno + 1}", unit.uri, row={"bytes": raw})
    for missing in range(lineno + 1, unit.stop):
        error = f"the file has no line {missing + 1} any more (it changed after the run was listed)"
        yield Item(missing, f"line{missing + 1}", unit.uri, problem=("read_error", error))


def iter_jsonl(unit: Unit, report: ReadReport) -> Iterator[Item]:
    """`iter_lines`, each line parsed as a JSON object (a line that is none is a `bad_json` problem)."""
    for item in iter_lines(unit, report):
        if item.problem is None:
            row, error = _json_row((item.row or {})["bytes"])
            item.row, item.problem = row, ("bad_json", error) if row is None else None
        yield item


def iter_files(unit: Unit, report: ReadReport) -> Iterator[Item]:
    """The files of a folder slice, by name (the adapter reads them, so a video need not be in memory)."""
    report.expected = len(unit.files)
    root = unit.uri
    for i, uri in enumerate(unit.files):
        member = uri[len(root) + 1 :] if uri.startswith(root + "/") else uri.rsplit("/", 1)[-1]
        yield Item(i, member, uri, path=uri)


ITERATORS = {
    "wds": iter_tar, "parquet": iter_parquet, "jsonl": iter_jsonl, "lines": iter_lines, "folder": iter_files,
    "videos": iter_files,
}  # fmt: skip
Loop = Callable[[Unit, ReadReport], Iterator[Item]]
"""A container loop of an adapter's own (`Adapter.loop`), for a unit kind the core has none for."""


def iter_unit(
    unit: Unit,
    report: ReadReport,
    by_reference: tuple[str, ...] = (),
    limit: int | None = None,
    loop: Loop | None = None,
) -> Iterator[Item]:
    """Every item of `unit`; a container that is not a regular file, or that breaks in a way its loop
    does not handle, gives one problem item for what it did not read. Tar members whose extension
    is in `by_reference` come as spans, not bytes, where the tar is not compressed. `limit` is for
    tars, which stop at it and count the rest themselves (`report.not_read`); the caller applies it
    to the other containers, whose item counts are known. `loop` replaces the core's loop for the
    unit (an adapter's own container, e.g. a whole JSON file), inside the same guard."""
    n = 0
    report.ignored.extend(unit.ignored)
    try:
        if unit.kind not in ("folder", "videos"):
            check_regular(unit.uri)
        if loop is not None:
            items = loop(unit, report)
        elif unit.kind == "wds":
            items = iter_tar(unit, report, by_reference, limit)
        else:
            items = ITERATORS[unit.kind](unit, report)
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


def whole_file_problem(unit: Unit, report: ReadReport, reason: str, error: str) -> Item:
    """The one problem item standing for a container that cannot be read at all (a whole-JSON file
    that does not parse): quarantined by the adapter, its damage reported with an unknown count."""
    report.damage.append({"uri": unit.uri, "start": 0, "end": None, "error": error, "records": "unknown"})
    return Item(0, "<whole-file>", unit.uri, problem=(reason, error))
