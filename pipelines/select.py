"""`mmcurate select`: re-apply thresholds to an earlier run's score ledger, without recomputing scores.

    'ListUnits' -> 'ReadWithLedger' -> 'ApplyThresholds' -> 'Redecode' -> 'EncodeOutput' -> 'Finish'

Each unit's source is read again only to re-materialise the images that are kept; every score,
label and hash comes from the parent run's ledger (`ledger/part-NNNNN.parquet`), joined by the
record's place in its unit and checked against its content id. Records the parent quarantined,
or dropped before they were ever scored (decompression bombs), keep that fate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
import pyarrow.parquet as pq

from mmcurate.schemas import CaptionSample, Fate, Status
from mmcurate.stages.image_decode import DecodeParams, ImageBroken, ImageRejected, decode
from mmcurate.stages.readers import ReadParams, Unit, read_unit
from mmcurate.stages.writers import join

from .caption import EncodeOutput, Thresholds, settle
from .common import COUNTS_TAG, Finish, Safely, load_units, pending, run_meta, touch
from .config import CaptionConfig, ConfigError, load_config
from .run import execute


def _changed(rec: CaptionSample, why: str) -> CaptionSample:
    return settle(rec, Status.QUARANTINED, "source_changed", why)


class ReadWithLedgerFn(beam.DoFn):
    """Re-read one unit and attach the parent run's ledger rows to its records."""

    def __init__(self, run_root: str, params: ReadParams, progress_dir: str | None = None) -> None:
        self.run_root, self.params, self.progress_dir = run_root, params, progress_dir

    def process(self, unit: Unit) -> Iterator[Any]:
        path = join(self.run_root, "ledger", f"part-{unit.index:05d}.parquet")
        with fsspec.open(path, "rb") as f:
            rows = pq.read_table(f).to_pylist()
        ledger = {r["source"]["index"]: CaptionSample.from_row(r) for r in rows}
        n = 0
        for rec in read_unit(unit, self.params):
            n += 1
            prior = ledger.pop(rec.source.index, None)
            if prior is None:
                yield _changed(rec, f"not in the ledger of {self.run_root}")
            elif prior.fate.status == Status.QUARANTINED or not prior.pixel_hash:
                yield prior  # never scored: its fate does not depend on thresholds
            elif prior.id != rec.id:
                yield _changed(prior, f"content id {rec.id} differs from the ledger's {prior.id}")
            else:
                prior.fate, prior.image = Fate(), rec.image
                yield prior
        for prior in ledger.values():  # in the ledger, gone from the source
            n += 1
            yield _changed(prior, "in the ledger but no longer in the source")
        touch(self.progress_dir, f"read-{unit.index}")
        yield beam.pvalue.TaggedOutput(COUNTS_TAG, n)


class Redecode(beam.DoFn):
    """Decode the survivors again only to re-encode them; their scores stay the ledger's."""

    def __init__(self, params: DecodeParams) -> None:
        self.params = params

    def process(self, rec: CaptionSample) -> Iterator[CaptionSample]:
        if pending(rec):
            try:
                rec.pixels, rec.image = decode(rec.image or b"", self.params).image, None
            except (ImageBroken, ImageRejected) as exc:
                rec = settle(rec, Status.QUARANTINED, "source_changed", f"decodes no more: {exc}")
        yield rec


def build(
    p: beam.Pipeline, units: list[Unit], config: CaptionConfig, out_root: str, meta: dict, progress_dir: str | None
) -> beam.PCollection:
    run_root = meta["lineage"]["parent_run"]
    read = (
        p
        | "ListUnits" >> beam.Create(units, reshuffle=True)
        | "ReadWithLedger"
        >> beam.ParDo(ReadWithLedgerFn(run_root, config.read, progress_dir)).with_outputs(COUNTS_TAG, main="records")
    )
    records = (
        read.records
        | "ApplyThresholds" >> Thresholds(config, units)
        | "Redecode" >> Safely(Redecode(config.decode), "redecode")
        | "EncodeOutput" >> Safely(EncodeOutput(config.output), "encode_output")
    )
    return records | "Finish" >> Finish(
        out_root, config.dedup, config.output.shard, read[COUNTS_TAG], meta, progress_dir
    )


def run(
    run_root: str,
    out_root: str,
    config_path: str | None,
    beam_args: list[str],
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Select from `run_root`'s ledger into `out_root`; thresholds from `config_path`, else the parent's."""
    with fsspec.open(join(run_root, "manifest.json"), "rb") as f:
        raw = f.read()
    parent = json.loads(raw)
    if parent.get("kind", "caption") != "caption":
        raise ConfigError(
            f"select: {run_root} is a {parent.get('kind')} run; select re-thresholds caption runs "
            "(rerun `mmcurate video` with new thresholds)"
        )
    parent_config = CaptionConfig(**parent["config"])
    config = load_config(config_path) if config_path else parent_config
    if config.read != parent_config.read:
        raise ConfigError("select: the `read` section must match the parent run's (the same units are re-read)")
    unscored = [name for name in config.filters if name not in parent_config.filters]
    if unscored:
        raise ConfigError(
            f"select: filters {unscored} were not scored by the parent run {run_root}; "
            "select only re-thresholds existing scores (run `mmcurate caption` with them)"
        )
    units = load_units(run_root)
    lineage = {
        "parent_run": run_root,
        "parent_manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "parent_counts": parent["counts"],
        "step": "select",
    }
    meta = run_meta("caption", parent["inputs"], config, units, lineage)
    return execute(build, units, config, out_root, meta, beam_args, overwrite, progress)


__all__ = ["build", "run"]
