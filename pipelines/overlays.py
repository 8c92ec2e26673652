"""Overlays: facts about records that arrive after their run (human labels, contamination marks).

An overlay is a named, append-only set of parquet tables under `OUT/overlays/{name}/{kind}/`, each
with an `id` column (the record's content id) and any other columns. Nothing ever rewrites a
ledger: `mmcurate select` joins ledger rows with the overlays by id, and a `where` rule can threshold
any overlay column (`overlays.{name}.{column}`). When several rows name one id, the row of the
latest file wins (files are named by a sequence number), so a correction is one more append.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from mmcurate.schemas import Record
from mmcurate.stages.writers import FileInfo, atomic_write, join, parquet_bytes, write_bytes

from . import layout


class OverlayError(ValueError):
    """An overlay table that cannot be joined (no `id` column, a bad name)."""


def _dir(run_root: str, name: str, kind: str) -> str:
    return join(run_root, layout.OVERLAYS, name, kind)


def overlay_files(run_root: str, name: str, kind: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(_dir(run_root, name, kind))
    if not fs.exists(path):
        return []
    return [fs.unstrip_protocol(p) if fs.protocol not in ("file", ("file", "local")) else p
            for p in sorted(fs.find(path)) if p.endswith(".parquet")]  # fmt: skip


def write_overlay(run_root: str, name: str, kind: str, table: pa.Table) -> FileInfo:
    """Append `table` (an `id` column plus any others) to overlay `name` of `kind` records."""
    if not name.replace("_", "").isalnum():
        raise OverlayError(f"overlay name {name!r}: use letters, digits and underscores")
    if "id" not in table.column_names:
        raise OverlayError(f"overlay {name}: the table has no `id` column (columns: {table.column_names})")
    data = parquet_bytes(table)
    seq = len(overlay_files(run_root, name, kind))
    rel = posixpath.join(layout.OVERLAYS, name, kind, f"{seq:06d}-{hashlib.sha256(data).hexdigest()[:12]}.parquet")
    return write_bytes(run_root, rel, data)


def read_overlay(run_root: str, name: str, kind: str) -> dict[str, dict[str, Any]]:
    """id -> the overlay's columns for it (the latest file's row when several name one id)."""
    rows: dict[str, dict[str, Any]] = {}
    for path in overlay_files(run_root, name, kind):
        with fsspec.open(path, "rb") as f:
            for row in pq.read_table(f).to_pylist():
                rows[str(row.pop("id"))] = row
    return rows


def overlay_names(run_root: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(join(run_root, layout.OVERLAYS))
    return sorted(posixpath.basename(p) for p in fs.ls(path, detail=False)) if fs.exists(path) else []


def overlay_listing(run_root: str) -> list[str]:
    """Every overlay file of a run, relative to it (their names carry a content hash): a select
    run's lineage, so resuming one after an overlay was added is refused."""
    fs, path = fsspec.core.url_to_fs(join(run_root, layout.OVERLAYS))
    if not fs.exists(path):
        return []
    return sorted(posixpath.join(layout.OVERLAYS, posixpath.relpath(f, path)) for f in fs.find(path))


def copy_overlays(src_root: str, dst_root: str) -> None:
    """A select run keeps its parent's overlays: its records have the same ids."""
    for name in overlay_names(src_root):
        fs, path = fsspec.core.url_to_fs(join(src_root, layout.OVERLAYS, name))
        for f in sorted(fs.find(path)):
            rel = posixpath.relpath(f, posixpath.dirname(posixpath.dirname(path)))
            with fs.open(f, "rb") as fh:
                atomic_write(join(dst_root, rel), fh.read())


def referenced(config: Any) -> list[str]:
    """The overlays the config's `where` rules read."""
    return sorted({r.column.split(".")[1] for r in config.where if r.column.startswith("overlays.")})


def overlay_columns(run_root: str, name: str, kind: str) -> set[str]:
    """The columns overlay `name` has for `kind` records (from the files' schemas, no row is read)."""
    cols: set[str] = set()
    for path in overlay_files(run_root, name, kind):
        with fsspec.open(path, "rb") as f:
            cols |= set(pq.read_schema(f).names)
    return cols - {"id"}


class AttachOverlaysFn(beam.DoFn):
    """Puts the overlay rows of each record's id on it (`rec.overlay`), for the `where` rules that need
    them. Overlays are loaded once per worker: they hold facts about some records, not a second ledger."""

    def __init__(self, run_root: str, names: list[str], kind: str) -> None:
        self.run_root, self.names, self.kind = run_root, names, kind

    def setup(self) -> None:
        self.tables = {name: read_overlay(self.run_root, name, self.kind) for name in self.names}

    def process(self, rec: Record) -> Iterator[Record]:
        if rec.kind == self.kind:
            found = {name: table[rec.id] for name, table in self.tables.items() if rec.id in table}
            if found:
                rec.overlay = found
        yield rec


class AttachOverlays(beam.PTransform):
    def __init__(self, run_root: str, config: Any, kind: str) -> None:
        super().__init__()
        self.fn = AttachOverlaysFn(run_root, referenced(config), kind)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        if not self.fn.names:
            return records
        return records | beam.ParDo(self.fn)
