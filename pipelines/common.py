"""Beam building blocks every recipe starts with: list units, read them, guard the per-record stages.

Every recipe has the shape

    units -> 'ReadUnits' -> records (and each unit's `UnitEnd`) -> corpus stages -> 'Finish'

where 'Finish' (pipelines/finish.py) is shared by all corpora.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import fsspec

from mmcurate import __version__
from mmcurate.schemas import Record
from mmcurate.schemas.redact import install_log_redaction, redact
from mmcurate.stages.io import ReadReport, Unit
from mmcurate.stages.writers import atomic_write, join

from . import layout
from .counters import count
from .spool import UnitEnd


class ReadUnitFn(beam.DoFn):
    """One unit in; every record of it out, then its `UnitEnd` (how many records it produced and what
    the container held: `ReadReport.to_dict()`, the input side of the accounting)."""

    def __init__(self, params: Any, reader: Callable[[Unit, Any, ReadReport], Iterable[Record]]) -> None:
        self.params, self.reader = params, reader

    def setup(self) -> None:
        install_log_redaction()  # workers are processes of their own: their logs are scrubbed too

    def process(self, unit: Unit) -> Iterator[Any]:
        report = ReadReport()
        yield from self.reader(unit, self.params, report)
        count("units.read")
        yield UnitEnd.of(unit.index, unit.uri, report.to_dict())


class ReadUnits(beam.PTransform):
    """'ListUnits' + 'ReadUnits': the records of every unit, each unit's ending in its `UnitEnd`."""

    def __init__(
        self, units: list[Unit], params: Any, reader: Callable[[Unit, Any, ReadReport], Iterable[Record]]
    ) -> None:
        super().__init__()
        self.units, self.fn = units, ReadUnitFn(params, reader)

    def expand(self, p: beam.pvalue.PBegin) -> Any:
        return p | "ListUnits" >> beam.Create(self.units, reshuffle=True) | "ReadUnits" >> beam.ParDo(self.fn)


def quarantine_failed(element: Any, error: str, stage: str) -> Any:
    """A record whose stage raised unexpectedly becomes a quarantined record, never a lost one."""
    rec = dataclasses.replace(element)
    return rec.settle("internal_error", f"{stage}: {error}", stage=stage)


class _Guarded(beam.DoFn):
    """Runs a DoFn and turns an exception on one element into that element, quarantined.

    Why not `ParDo(...).with_exception_handling()` plus a Flatten of the dead letters: on the
    DirectRunner's FnApiRunner a Flatten is always materialised, so every record (decoded pixels
    included) would be pickled at each guarded step, and with several workers Beam 2.77 lost large
    elements at such Flattens (bench/ found both). Catching inside one DoFn keeps the whole
    read -> score -> encode chain one fused stage with a single output.
    """

    def __init__(self, fn: beam.DoFn, stage: str) -> None:
        self.fn, self.stage = fn, stage

    def setup(self) -> None:
        self.fn.setup()

    def start_bundle(self) -> None:
        self.fn.start_bundle()

    def finish_bundle(self) -> Any:
        return self.fn.finish_bundle()

    def teardown(self) -> None:
        self.fn.teardown()

    def process(self, element, **side_inputs):  # unannotated: Beam reads hints from this signature
        try:
            out = list(self.fn.process(element, **side_inputs))  # all or nothing for this element
        except Exception as exc:
            yield quarantine_failed(element, f"{type(exc).__name__}: {exc}", self.stage)
            return
        yield from out


class Safely(beam.PTransform):
    """A ParDo whose failures on single elements come out as quarantined records, in the same output."""

    def __init__(self, fn: beam.DoFn, stage: str, **side_inputs: Any) -> None:
        super().__init__()
        self.fn, self.stage, self.fn_kwargs = fn, stage, side_inputs

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | beam.ParDo(_Guarded(self.fn, self.stage), **self.fn_kwargs)


def pending(rec: Record) -> bool:
    return rec.pending


class EncodePending(beam.DoFn):
    """Resize and re-encode the records still pending (dropped ones never pay for encoding); with
    `kind`, only records of that class (a document's images, not the document)."""

    def __init__(self, params: Any, kind: type[Record] | None = None) -> None:
        self.params, self.kind = params, kind

    def process(self, rec: Record) -> Iterator[Record]:
        from mmcurate.stages.image_decode import encode_into

        if (self.kind is None or isinstance(rec, self.kind)) and rec.pending:
            encode_into(rec, self.params)
        yield rec


def code_version() -> dict[str, str]:
    version = {"mmcurate": __version__, "apache_beam": beam.__version__}
    try:
        repo = Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        version["git_commit"] = commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def run_meta(corpus: str, inputs: list[str], config: Any, units: list[Unit], lineage: dict | None = None) -> dict:
    """The manifest's header. The config is redacted: no key, token or password reaches a manifest."""
    return {
        "corpus": corpus,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "inputs": redact(list(inputs)),
        "units": len(units),
        "config": redact(config.model_dump(mode="json")),
        "lineage": redact(lineage or {}),
        "host": os.uname().nodename,
    }


def write_units(out_root: str, units: list[Unit]) -> None:
    """The unit list, so `mmcurate select` can re-read exactly the same sources."""
    # ASCII JSON: a file name that is not UTF-8 (a lone surrogate in Python) survives the round trip.
    # Redacted: a URI with credentials in it would put them in an output (select then refuses such units).
    rows = redact([dataclasses.asdict(u) for u in units])
    text = json.dumps(rows, indent=2, sort_keys=True, ensure_ascii=True)
    atomic_write(join(out_root, layout.UNITS), (text + "\n").encode("ascii"))


def load_units(out_root: str) -> list[Unit]:
    with fsspec.open(join(out_root, layout.UNITS), "rt") as f:
        return [Unit(**{**u, "files": tuple(u["files"])}) for u in json.load(f)]
