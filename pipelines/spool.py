"""Phase 1 of the finish path: a unit's scored records wait on storage, never in a shuffle.

Every recipe's per-record stages end in 'SpoolUnits'. It moves each record's media bytes (an
encoded image) into a spool file of its unit and keeps only a byte-range reference on the record,
then writes the unit's records (small now: ids, hashes, scores, fates) as one part file. When all
of a unit's records are there (the reader's `UnitEnd` says how many it produced, parents say how
many children they made) it writes the unit's "spooled" marker: its records scored, its hashes
and read counts durable. A unit whose records a runner spread over several bundles (a shuffle
inside the recipe) is marked once its parts are grouped.

    OUT/_work/spooled/part-UUUUU.json          the marker: parts, record counts, the read report
    OUT/_work/spooled/part-UUUUU/<token>.pkl   records of the unit from one bundle
    OUT/_spool/part-UUUUU/<token>.bin          their media bytes

A part is written under a fresh token per bundle attempt and only parts a marker names are read,
so a retried or killed bundle leaves at most an unread file. A unit's `_spool/` media go once its
summary is written (CommitUnitFn); `_work/` and what is left of `_spool/` go with the manifest.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import apache_beam as beam
import fsspec
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from mmcurate.schemas import PAYLOAD, Fate, Record, Source, Status, media_ref
from mmcurate.stages.writers import atomic_file, atomic_write, join, json_bytes

from . import corpus as corpora
from . import layout

KEEP_ON_SPOOL = ("media", "overlay", "rank")
"""Payload a spooled record keeps: where its bytes are, the overlay rows `where` rules read, the
values it adds to run-wide cutoffs, and any field a kind marks `"spool": True` (a document's MinHash
signature). Pixels, frames and raw bytes are gone by then."""


@dataclass(kw_only=True)
class UnitEnd(Record):
    """Emitted by a unit's reader after its last record: how many records the unit produced and what
    the container held (`stages.io.ReadReport`). It is settled (never pending), so every stage
    passes it through untouched, and it ends at 'SpoolUnits', which counts the unit's records against it."""

    kind: ClassVar[str] = "unit_end"
    report: dict[str, Any] = field(default_factory=dict, metadata=PAYLOAD)

    @classmethod
    def of(cls, unit: int, uri: str, report: dict[str, Any]) -> UnitEnd:
        return cls(id="", source=Source(uri, unit, "", -1), fate=Fate(Status.KEPT), report=report)


def strip(rec: Record) -> Record:
    """Drop what a spooled record no longer needs: in-memory bytes, pixels, frames."""
    for f in rec.__dataclass_fields__.values():
        if f.metadata.get("arrow") is False and f.name not in KEEP_ON_SPOOL and not f.metadata.get("spool"):
            setattr(rec, f.name, None)
    return rec


class _UnitBuffer:
    """One unit's records in one bundle: media bytes streamed to the unit's spool file as they come."""

    def __init__(self, out_root: str, unit: int) -> None:
        self.out_root, self.unit, self.token = out_root, unit, uuid.uuid4().hex[:16]
        self.records: list[Record] = []
        self.counts: collections.Counter = collections.Counter()
        self.children: collections.Counter = collections.Counter()
        self.report: dict[str, Any] | None = None
        self._media: Any = None
        self._media_cm: Any = None
        self._pos = 0

    @property
    def media_uri(self) -> str:
        return join(self.out_root, layout.SPOOL, layout.part(self.unit), f"{self.token}.bin")

    def add(self, rec: Record) -> None:
        data = rec.spool()
        if data is not None:
            if self._media is None:
                self._media_cm = atomic_file(self.media_uri)
                self._media = self._media_cm.__enter__()
            self._media.write(data)
            rec.media = media_ref(self.media_uri, self._pos, self._pos + len(data))
            self._pos += len(data)
        self.records.append(strip(rec))
        self.counts[rec.kind] += 1
        self.children.update(rec.expected_children())

    def complete(self, primary: str) -> bool:
        return is_complete(self.counts, self.children, self.report, primary)

    def write(self) -> str | None:
        """The part file (after its media file is in place); None when the bundle held no record of it."""
        if self._media_cm is not None:
            self._media_cm.__exit__(None, None, None)
            self._media_cm = self._media = None
        if not self.records:
            return None
        rel = f"{layout.spooled_dir(self.unit)}/{self.token}.pkl"
        atomic_write(join(self.out_root, rel), pickle.dumps(self.records, protocol=pickle.HIGHEST_PROTOCOL))
        return rel

    def abort(self) -> None:
        if self._media_cm is not None:
            self._media_cm.__exit__(RuntimeError, RuntimeError("bundle failed"), None)


@dataclass
class PartStat:
    """What one bundle spooled of one unit: small, it crosses the shuffle that marks the unit."""

    part: str | None
    counts: dict[str, int]
    report: dict[str, Any] | None
    marked: bool
    children: dict[str, int] = field(default_factory=dict)


def is_complete(counts: dict[str, int], children: dict[str, int], report: dict[str, Any] | None, primary: str) -> bool:
    """All of a unit's records arrived: the reader's count of the primary kind, and every child its
    parents say they made."""
    if report is None or counts.get(primary, 0) != report["produced"]:
        return False
    return all(counts.get(kind, 0) == n for kind, n in children.items())


def write_marker(out_root: str, unit: int, stats: list[PartStat], primary: str) -> dict[str, Any]:
    """The unit's spooled marker. One a runner left short of records (no UnitEnd, fewer records than
    the reader made) says `complete: false`: the manifest's accounting fails, and `--resume` reads
    the unit again instead of trusting it."""
    counts: collections.Counter = collections.Counter()
    children: collections.Counter = collections.Counter()
    for s in stats:
        counts.update(s.counts)
        children.update(s.children)
    report = next((s.report for s in stats if s.report is not None), None)
    marker = {
        "unit": unit,
        "parts": sorted(s.part for s in stats if s.part),
        "records": dict(sorted(counts.items())),
        "report": report if report is not None else {"expected": None, "produced": 0, "damage": [], "ignored": []},
        "complete": is_complete(counts, children, report, primary),
    }
    atomic_write(join(out_root, layout.spooled_marker(unit)), json_bytes(marker))
    failpoint("spooled", out_root)
    return marker


class SpoolUnitsFn(beam.DoFn):
    """Records (and each unit's `UnitEnd`) in; (unit, PartStat) out, one per unit and bundle."""

    def __init__(self, corpus: str, out_root: str) -> None:
        self.corpus_name, self.out_root = corpus, out_root

    def setup(self) -> None:
        self.primary = corpora.get(self.corpus_name).primary

    def start_bundle(self) -> None:
        self.units: dict[int, _UnitBuffer] = {}

    def process(self, rec: Record) -> Iterator[tuple[int, PartStat]]:
        unit = rec.source.unit
        buf = self.units.get(unit)
        if buf is None:
            buf = self.units[unit] = _UnitBuffer(self.out_root, unit)
        if isinstance(rec, UnitEnd):
            buf.report = rec.report
        else:
            buf.add(rec)
        if buf.complete(self.primary):
            del self.units[unit]
            stat = self._stat(buf)
            write_marker(self.out_root, unit, [stat], self.primary)
            stat.marked = True
            yield unit, stat

    def _stat(self, buf: _UnitBuffer) -> PartStat:
        return PartStat(buf.write(), dict(buf.counts), buf.report, marked=False, children=dict(buf.children))

    def finish_bundle(self) -> Iterator[WindowedValue]:
        """Units with records in other bundles too: their parts, marked after the grouping."""
        for unit, buf in sorted(self.units.items()):
            yield WindowedValue((unit, self._stat(buf)), MIN_TIMESTAMP, [GlobalWindow()])
        self.units = {}

    def teardown(self) -> None:
        for buf in getattr(self, "units", {}).values():
            buf.abort()


class MarkSpooledFn(beam.DoFn):
    """(unit, its PartStats) -> unit, its marker written when no bundle could write it alone."""

    def __init__(self, corpus: str, out_root: str) -> None:
        self.corpus_name, self.out_root = corpus, out_root

    def setup(self) -> None:
        self.primary = corpora.get(self.corpus_name).primary

    def process(self, element: tuple[int, list[PartStat]]) -> Iterator[int]:
        unit, stats = element
        stats = list(stats)
        if not any(s.marked for s in stats):
            write_marker(self.out_root, unit, stats, self.primary)
        yield unit


class SpoolUnits(beam.PTransform):
    """Records -> the indexes of the units now spooled (each with its marker on storage)."""

    def __init__(self, corpus: str, out_root: str) -> None:
        super().__init__()
        self.corpus, self.out_root = corpus, out_root

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "Spool" >> beam.ParDo(SpoolUnitsFn(self.corpus, self.out_root))
            | "GroupParts" >> beam.GroupByKey()
            | "Mark" >> beam.ParDo(MarkSpooledFn(self.corpus, self.out_root))
        )


def read_marker(out_root: str, unit: int) -> dict[str, Any]:
    with fsspec.open(join(out_root, layout.spooled_marker(unit)), "rb") as f:
        return json.loads(f.read())


def load_unit(out_root: str, unit: int) -> tuple[list[Record], dict[str, Any]]:
    """A spooled unit's records (each once, in input order) and its read report."""
    marker = read_marker(out_root, unit)
    seen: dict[str, Record] = {}
    for rel in marker["parts"]:
        with fsspec.open(join(out_root, rel), "rb") as f:
            for rec in pickle.loads(f.read()):
                seen.setdefault(f"{rec.kind}/{rec.uid}", rec)
    records = sorted(seen.values(), key=lambda r: (r.source.index, r.uid, r.kind))
    return records, marker["report"]


# -------------------------------------------------------------------------------------- fail points

FAILPOINT_ENV = "MMCURATE_FAILPOINT"
"""`spooled:N` or `committed:N`: once N units have that marker on storage, the process group is
killed with SIGKILL, as a machine that dies would be. For kill-and-resume tests: a deterministic
point in the run, not a sleep."""


def failpoint(phase: str, out_root: str) -> None:
    spec = os.environ.get(FAILPOINT_ENV, "")
    if not spec.startswith(phase + ":"):
        return
    markers = layout.spooled_glob() if phase == "spooled" else layout.summary_glob()
    fs, root = fsspec.core.url_to_fs(out_root)
    if len(fs.glob(join(root, markers))) >= int(spec.split(":", 1)[1]):
        os.killpg(os.getpgrp(), signal.SIGKILL)
