"""Reading a unit: the container loop (containers.py) plus a corpus's adapter, every item guarded.

An adapter turns one item (a tar member group, a parquet or jsonl row, a file of a folder) into a
record; anything it raises quarantines that one item, named by its line, row or member, never the
rest of the unit: `BadRow` and `ReadRefused` carry their own reason, any other exception becomes
`bad_row` with its message.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from mmcurate.schemas import Record
from mmcurate.stages.base import Params

from .containers import Item, Loop, ReadReport, iter_unit
from .paths import ReadRefused
from .units import Unit, stable_error


class ReadBase(Params):
    """What every corpus's `read` section has."""

    limit: int | None = Field(None, ge=0)
    """Read only the first N records of each input file (of each folder of images or videos), to
    try a config (`--limit N`); the manifest counts the records left unread."""


class BadRow(Exception):
    """This row cannot be a record: `reason` is the quarantine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Adapter(abc.ABC):
    """A corpus's reading of container items. `params` are its read parameters."""

    by_reference: tuple[str, ...] = ()
    """Tar member extensions to get as spans (`Item.spans`) instead of bytes: media too large to
    carry through a shuffle, read where they are processed."""

    def __init__(self, params: Any) -> None:
        self.params = params

    @abc.abstractmethod
    def from_members(self, unit: Unit, item: Item) -> Record:
        """A tar member group (`item.members`: extension -> bytes)."""

    @abc.abstractmethod
    def from_row(self, unit: Unit, item: Item) -> Record:
        """A parquet or jsonl row (`item.row`)."""

    @abc.abstractmethod
    def from_file(self, unit: Unit, item: Item) -> Record:
        """One file of a folder slice (`item.path`)."""

    @abc.abstractmethod
    def quarantine(self, unit: Unit, item: Item, reason: str, error: str) -> Record:
        """The record that stands for an item that could not be read."""

    def loop(self, unit: Unit) -> Loop | None:
        """The container loop for a unit kind of this adapter's own (None: the core's loop for the
        kind); it runs inside the core's guard, so a container that breaks is still counted."""
        return None

    def make(self, unit: Unit, item: Item) -> Record:
        if item.members is not None:
            return self.from_members(unit, item)
        if item.row is not None:
            return self.from_row(unit, item)
        return self.from_file(unit, item)


def read_unit(unit: Unit, adapter: Adapter, report: ReadReport | None = None) -> Iterator[Record]:
    """Every record of `unit`, read or quarantined; never raises for bad data.

    With a read limit (`params.limit`, the CLI's `--limit N`), items at positions N and beyond in
    their input file (or folder) are not made into records but counted (`report.not_read`), so the
    books still add up to the input; a tar stops at the limit itself and counts the rest from its
    headers (`iter_unit`)."""
    report = report if report is not None else ReadReport()
    limit = getattr(adapter.params, "limit", None)
    for item in iter_unit(unit, report, adapter.by_reference, limit, adapter.loop(unit)):
        if limit is not None and position(unit, item) >= limit:
            if _skip_rest(report):
                return
            continue
        if item.problem is not None:
            rec = adapter.quarantine(unit, item, *item.problem)
        else:
            try:
                rec = adapter.make(unit, item)
            except (BadRow, ReadRefused) as exc:
                rec = adapter.quarantine(unit, item, exc.reason, str(exc))
            except Exception as exc:  # anything else this row does: this row only
                rec = adapter.quarantine(unit, item, "bad_row", stable_error(exc, unit.uri))
        report.produced += 1
        yield rec


def position(unit: Unit, item: Item) -> int:
    """An item's place in its input for the read limit: a folder slice's files come after the
    `unit.start` files of its folder before it (jsonl items already carry their line number; the
    record's own `source.index` stays the place in the unit)."""
    return unit.start + item.index if unit.kind in ("folder", "videos") else item.index


def _skip_rest(report: ReadReport) -> bool:
    """Count one item past the limit; True when the container already said how many it holds, so
    the rest need not be read (jsonl slices, parquet files, folders). Tars stop at the limit and
    count their own rest; any other item past it is counted here, one by one."""
    if report.expected is None:
        report.not_read += 1
        return False
    report.not_read = report.expected - report.produced  # items come in position order
    return True
