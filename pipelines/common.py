"""Beam building blocks every corpus pipeline shares: read units, dead letters, dedup, write, manifest.

The shape of every pipeline is

    units -> 'ReadUnits' -> records -> (corpus-specific scoring and thresholds) -> 'Finish'

where 'Finish' drops duplicates across the whole run, groups records by unit, writes shards,
the score ledger and the drop/quarantine tables per unit, and finally the manifest, which checks
that every record read was kept, dropped or quarantined.
"""

from __future__ import annotations

import collections
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
import pyarrow as pa
from apache_beam.metrics import Metrics

from mmcurate import __version__
from mmcurate.schemas import SCHEMA_VERSION, Status
from mmcurate.stages import dedup
from mmcurate.stages.readers import Unit, read_unit
from mmcurate.stages.writers import ShardParams, atomic_write, join, json_bytes, write_table, write_unit_shards

NS = "mmcurate"
COUNTS_TAG = "read_counts"


class AccountingError(RuntimeError):
    """Records went missing: inputs != kept + dropped + quarantined."""


def touch(progress_dir: str | None, name: str) -> None:
    if progress_dir:
        Path(progress_dir, name).touch()


class ReadUnitFn(beam.DoFn):
    """One unit in, every record of it out; also the count of records read, for the accounting check."""

    def __init__(
        self,
        params: Any,
        progress_dir: str | None = None,
        reader: Callable[[Unit, Any], Iterable[Any]] = read_unit,
        counter: str = "records_read",
    ) -> None:
        self.params, self.progress_dir, self.reader = params, progress_dir, reader
        self.read = Metrics.counter(NS, counter)
        self.units = Metrics.counter(NS, "units_read")

    def process(self, unit: Unit) -> Iterator[Any]:
        n = 0
        for rec in self.reader(unit, self.params):
            n += 1
            self.read.inc()
            yield rec
        self.units.inc()
        touch(self.progress_dir, f"read-{unit.index}")
        yield beam.pvalue.TaggedOutput(COUNTS_TAG, n)


def clear_payload(rec: Any) -> Any:
    """Drop the data a record carries but never writes to a ledger (bytes, pixels, frames)."""
    for f in dataclasses.fields(rec):
        if f.metadata.get("arrow") is False:
            setattr(rec, f.name, None)
    return rec


def quarantine_failed(element: Any, error: str, stage: str) -> Any:
    """A record whose stage raised unexpectedly becomes a quarantined record, never a lost one."""
    rec = clear_payload(dataclasses.replace(element))
    rec.fate = dataclasses.replace(
        rec.fate, status=Status.QUARANTINED, reason="internal_error", error=f"{stage}: {error}"[:2000]
    )
    Metrics.counter(NS, f"internal_error_{stage}").inc()
    return rec


class _Guarded(beam.DoFn):
    """Runs a DoFn and turns an exception on one element into that element, quarantined.

    Why not `ParDo(...).with_exception_handling()` plus a Flatten of the dead letters: on the
    DirectRunner's FnApiRunner a Flatten is always materialised, so every record (decoded pixels
    included) would be pickled at each guarded step, and with several workers Beam 2.77 lost large
    elements at such Flattens (bench/run.py found both). Catching inside one DoFn keeps the whole
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


def pending(rec: Any) -> bool:
    return rec.fate.status == Status.PENDING


class Dedup(beam.PTransform):
    """Records -> (unit, Duplicate) for every record to drop as an exact or near duplicate, run-wide."""

    def __init__(self, params: dedup.DedupParams) -> None:
        super().__init__()
        self.params = params

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        keys = records | "Candidates" >> beam.Filter(pending) | "DedupKeys" >> beam.Map(dedup.dedup_key)
        by_pixels = keys | "KeyByPixelHash" >> beam.Map(lambda k: (k.pixel_hash, k)) | "GroupExact" >> beam.GroupByKey()
        exact = by_pixels | "ExactDuplicates" >> beam.FlatMapTuple(lambda _, group: dedup.exact_duplicates(group))
        found = [exact]
        if self.params.near:
            dist = self.params.max_distance
            survivors = (
                by_pixels
                | "ExactRepresentatives" >> beam.MapTuple(lambda _, group: min(group))
                | "Bands" >> beam.FlatMap(lambda k: [(band, k) for band in dedup.band_keys(k.phash, dist)])
                | "GroupBands" >> beam.GroupByKey()
                | "NearInBand" >> beam.FlatMapTuple(lambda _, group: dedup.near_duplicates(group, dist))
                | "KeyByRecord" >> beam.Map(lambda d: (d.uid, d))
                | "BestRepresentative" >> beam.CombinePerKey(dedup.best_duplicate)
                | "DropKey" >> beam.Values()
            )
            found.append(survivors)
        return (
            found
            | "AllDuplicates" >> beam.Flatten()
            | "CountDuplicates" >> beam.Map(_count_dup)
            | "KeyDupByUnit" >> beam.Map(lambda d: (d.unit, d))
        )


def _count_dup(d: dedup.Duplicate) -> dedup.Duplicate:
    Metrics.counter(NS, d.reason).inc()
    return d


FATE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("uid", pa.string()),
        pa.field("source", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("error", pa.string()),
        pa.field("duplicate_of", pa.string()),
    ]
)


def fate_table(records: Iterable[Any]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "id": r.id,
                "uid": r.uid,
                "source": r.source.ref(),
                "reason": r.fate.reason,
                "error": r.fate.error,
                "duplicate_of": r.fate.duplicate_of,
            }
            for r in records
        ],
        schema=FATE_SCHEMA,
    )


class WriteUnitFn(beam.DoFn):
    """All records of one unit (plus its duplicate decisions) -> shards, ledger, drop/quarantine tables."""

    def __init__(self, out_root: str, shard: ShardParams, progress_dir: str | None = None) -> None:
        self.out_root, self.shard, self.progress_dir = out_root, shard, progress_dir

    def process(self, element: tuple[int, dict[str, list]]) -> Iterator[dict]:
        unit, grouped = element
        dups = {d.uid: d for d in grouped["dups"]}
        records = sorted(grouped["records"], key=lambda r: (r.source.index, r.source.member))
        for rec in records:
            d = dups.get(rec.uid)
            if d is not None and rec.fate.status == Status.PENDING:
                rec.fate = dataclasses.replace(
                    rec.fate, status=Status.DROPPED, reason=d.reason, duplicate_of=d.duplicate_of
                )
            if rec.fate.status == Status.PENDING:
                rec.fate = dataclasses.replace(rec.fate, status=Status.KEPT)
            if rec.fate.status != Status.KEPT:
                rec.image = None
            rec.pixels = None
        kept = [r for r in records if r.fate.status == Status.KEPT]
        shards = write_unit_shards(kept, unit, self.out_root, self.shard)
        name = f"part-{unit:05d}.parquet"
        ledger = write_table(self.out_root, f"ledger/{name}", type(records[0]).to_table(records))
        summary: dict[str, Any] = {
            "unit": unit,
            "counts": collections.Counter(r.fate.status.value for r in records),
            "reasons": {
                s.value: collections.Counter(r.fate.reason for r in records if r.fate.status == s)
                for s in (Status.DROPPED, Status.QUARANTINED)
            },
            "shards": [s.to_dict() for s in shards],
            "ledger": [dataclasses.asdict(ledger)],
        }
        for status in (Status.DROPPED, Status.QUARANTINED):
            rows = [r for r in records if r.fate.status == status]
            info = write_table(self.out_root, f"{status.value}/{name}", fate_table(rows)) if rows else None
            summary[status.value] = [dataclasses.asdict(info)] if info else []
        Metrics.counter(NS, "kept").inc(len(kept))
        touch(self.progress_dir, f"write-{unit}")
        yield summary


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


def build_manifest(summaries: list[dict], read_total: int, meta: dict) -> dict:
    """Fold unit summaries into the manifest and check the accounting identity exactly."""
    counts: collections.Counter = collections.Counter()
    reasons: dict[str, collections.Counter] = {"dropped": collections.Counter(), "quarantined": collections.Counter()}
    files: dict[str, list] = {"shards": [], "ledger": [], "dropped": [], "quarantined": []}
    for s in sorted(summaries, key=lambda s: s["unit"]):
        counts.update(s["counts"])
        for k in reasons:
            reasons[k].update(s["reasons"][k])
        for k in files:
            files[k].extend(s[k])
    total = {"input": read_total, **{k: counts.get(k, 0) for k in ("kept", "dropped", "quarantined")}}
    ok = total["input"] == total["kept"] + total["dropped"] + total["quarantined"]
    return {
        "format": "mmcurate.manifest/1",
        **meta,
        "schema_version": SCHEMA_VERSION,
        "counts": total,
        "accounting_ok": ok,
        "reasons": {k: dict(sorted(v.items())) for k, v in reasons.items()},
        "totals": {
            "shards": len(files["shards"]),
            "samples": sum(s["samples"] for s in files["shards"]),
            "bytes": sum(s["bytes"] for s in files["shards"]),
        },
        **files,
    }


def write_manifest(summaries: list[dict], read_total: int, out_root: str, meta: dict) -> dict:
    manifest = build_manifest(summaries, read_total, meta)
    atomic_write(join(out_root, "manifest.json"), json_bytes(manifest))
    if not manifest["accounting_ok"]:
        raise AccountingError(f"records went missing: {json.dumps(manifest['counts'])}")
    return manifest


class Finish(beam.PTransform):
    """Dedup across the run, then per-unit writes, then the manifest (with its accounting check)."""

    def __init__(
        self,
        out_root: str,
        dedup_params: dedup.DedupParams,
        shard: ShardParams,
        read_counts: beam.PCollection,
        meta: dict,
        progress_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.out_root, self.dedup_params, self.shard = out_root, dedup_params, shard
        self.read_counts, self.meta, self.progress_dir = read_counts, meta, progress_dir

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        dups = records | "Dedup" >> Dedup(self.dedup_params)
        by_unit = records | "KeyByUnit" >> beam.Map(lambda r: (r.source.unit, r))
        total = self.read_counts | "CountInputs" >> beam.CombineGlobally(sum)
        return (
            {"records": by_unit, "dups": dups}
            | "GroupByUnit" >> beam.CoGroupByKey()
            | "WriteUnits" >> beam.ParDo(WriteUnitFn(self.out_root, self.shard, self.progress_dir))
            | "CollectSummaries" >> beam.combiners.ToList()
            | "WriteManifest"
            >> beam.Map(
                write_manifest, read_total=beam.pvalue.AsSingleton(total), out_root=self.out_root, meta=self.meta
            )
        )


def run_meta(kind: str, inputs: list[str], config: Any, units: list[Unit], extra: dict | None = None) -> dict:
    return {
        "kind": kind,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "inputs": list(inputs),
        "units": len(units),
        "config": config.model_dump(mode="json"),
        "lineage": extra or {},
        "host": os.uname().nodename,
    }


def write_units(out_root: str, units: list[Unit]) -> None:
    """The unit list, so `mmcurate select` can re-read exactly the same sources."""
    # ASCII JSON: a file name that is not UTF-8 (a lone surrogate in Python) survives the round trip.
    text = json.dumps([dataclasses.asdict(u) for u in units], indent=2, sort_keys=True, ensure_ascii=True)
    atomic_write(join(out_root, "units.json"), (text + "\n").encode("ascii"))


def load_units(out_root: str) -> list[Unit]:
    with fsspec.open(join(out_root, "units.json"), "rt") as f:
        return [Unit(**{**u, "files": tuple(u["files"])}) for u in json.load(f)]
