"""The image-caption corpus (LAION / CC / COCO style).

    'ReadUnits' -> 'DecodeAndScore' -> 'ScoreWithModels' -> 'ApplyThresholds' -> 'EncodeOutput' -> 'Finish'

Scores (geometry, caption length, language, repetition, boilerplate, models, hashes) go into the
ledger; thresholds are applied from those scores alone, so `mmcurate select` can re-decide later:
it re-reads each unit only to re-encode the images still kept ('ReadWithLedger' -> 'ApplyThresholds'
-> 'Redecode' -> 'EncodeOutput' -> 'Finish').
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from mmcurate.schemas import CaptionSample, Fate, Fields
from mmcurate.stages.base import Filter
from mmcurate.stages.dedup import DedupParams
from mmcurate.stages.image_decode import (
    DecodeParams,
    EncodeParams,
    ImageBroken,
    ImageRejected,
    decode,
    decode_into,
)
from mmcurate.stages.io import ReadReport
from mmcurate.stages.readers import ReadParams, Unit, list_units, read_unit
from mmcurate.stages.writers import ShardParams

from .common import EncodePending, ReadUnits, Safely, pending
from .config import ConfigError, FilteredConfig
from .corpus import Corpus
from .finish import Finish, Run
from .ledger import read_ledger, redecidable
from .models import model_fields, model_stages, validate_models
from .overlays import AttachOverlays
from .spool import UnitEnd
from .thresholds import Thresholds


class OutputParams(EncodeParams):
    shard: ShardParams = ShardParams()


class CaptionConfig(FilteredConfig):
    filter_kind = "caption"
    read: ReadParams = ReadParams()
    decode: DecodeParams = DecodeParams()
    dedup: DedupParams = DedupParams()
    output: OutputParams = OutputParams()


class DecodeAndScore(beam.DoFn):
    """Decode once, hash, and compute every filter's scores into the record (the ledger row)."""

    def __init__(self, decode_params: DecodeParams, config: CaptionConfig) -> None:
        self.decode_params, self.config = decode_params, config
        self.filters: list[Filter] = []

    def setup(self) -> None:
        self.filters = self.config.build_filters()

    def process(self, rec: CaptionSample) -> Iterator[CaptionSample]:
        if not pending(rec):
            yield rec
            return
        try:
            decode_into(rec, self.decode_params)
        except (ImageBroken, ImageRejected) as exc:
            yield rec.settle(exc.reason, str(exc), stage="decode")
            return
        for f in self.filters:
            scores, labels = f.score(rec)
            rec.scores.update(scores)
            rec.labels.update(labels)
        yield rec


class ReadWithLedgerFn(beam.DoFn):
    """select: re-read one unit and attach the parent run's ledger rows to its records.

    Every score, label and hash comes from the ledger, joined by the record's place in its unit and
    checked against its content id; the source is read again only for the bytes of what may be kept.
    Records the parent quarantined, or dropped before they were ever scored (decompression bombs),
    keep that fate."""

    def __init__(self, run_root: str, params: ReadParams) -> None:
        self.run_root, self.params = run_root, params

    def process(self, unit: Unit) -> Iterator[Any]:
        ledger = {r.source.index: r for r in read_ledger(self.run_root, CaptionSample, unit.index)}
        n = 0
        for rec in read_unit(unit, self.params):
            n += 1
            yield self._joined(rec, ledger.pop(rec.source.index, None))
        for prior in ledger.values():  # in the ledger, gone from the source
            n += 1
            yield prior.settle("source_changed", "in the ledger but no longer in the source", stage="select")
        yield UnitEnd.of(unit.index, unit.uri, ReadReport(produced=n).to_dict())

    def _joined(self, rec: CaptionSample, prior: CaptionSample | None) -> CaptionSample:
        if prior is None:
            return rec.settle("source_changed", f"not in the ledger of {self.run_root}", stage="select")
        if (prior.fate.final and not redecidable(prior)) or not prior.pixel_hash:
            return prior  # never scored, or a fact about the input: its fate does not depend on thresholds
        if prior.id != rec.id:
            return prior.settle("source_changed", f"content id {rec.id} differs from the ledger's {prior.id}")
        prior.fate, prior.image = Fate(), rec.image
        return prior


class Redecode(beam.DoFn):
    """select: decode the survivors again only to re-encode them; their scores stay the ledger's."""

    def __init__(self, params: DecodeParams) -> None:
        self.params = params

    def process(self, rec: CaptionSample) -> Iterator[CaptionSample]:
        if pending(rec):
            try:
                rec.pixels, rec.image = decode(rec.image or b"", self.params).image, None
            except (ImageBroken, ImageRejected) as exc:
                rec = rec.settle("source_changed", f"decodes no more: {exc}", stage="select")
        yield rec


class CaptionCorpus(Corpus):
    name = "caption"
    defaults = "caption.yaml"
    config_class = CaptionConfig
    kinds = (CaptionSample,)
    sample_kind = "caption"

    def validate(self, config: CaptionConfig) -> None:
        validate_models(config)

    def list_units(self, inputs: list[str], config: CaptionConfig) -> list[Unit]:
        return list_units(inputs, config.read)

    def fields(self, config: CaptionConfig) -> dict[str, Fields]:
        filters = config.build_filters()
        scores = [s for f in filters for s in f.scores] + list(model_fields(config))
        return {"caption": Fields(tuple(scores), tuple(lb for f in filters for lb in f.labels))}

    def dedup(self, config: CaptionConfig) -> DedupParams:
        return config.dedup

    def shard(self, config: CaptionConfig) -> ShardParams:
        return config.output.shard

    def build(self, p: beam.Pipeline, units: list[Unit], config: CaptionConfig, run: Run) -> beam.PCollection:
        read = p | "Read" >> ReadUnits(run.to_read(units), config.read, read_unit)
        records = read | "DecodeAndScore" >> Safely(DecodeAndScore(config.decode, config), "decode_and_score")
        stages = model_stages(config)
        if stages:  # RunInference (and torch) only for a run whose filters need a model
            from .inference import ScoreWithModels

            records = records | "ScoreWithModels" >> ScoreWithModels(stages)
        records = (
            records
            | "ApplyThresholds" >> Thresholds(config, units, "caption")
            | "EncodeOutput" >> Safely(EncodePending(config.output), "encode_output")
        )
        return records | "Finish" >> Finish(self.name, run, config)

    def check_select(self, config: CaptionConfig, parent_config: CaptionConfig, parent: dict) -> None:
        if config.read != parent_config.read:
            raise ConfigError("select: the `read` section must match the parent run's (the same units are re-read)")

    def select(self, p: beam.Pipeline, units: list[Unit], config: CaptionConfig, run: Run) -> beam.PCollection:
        parent = run.meta["lineage"]["parent_run"]
        records = (
            p
            | "ListUnits" >> beam.Create(run.to_read(units), reshuffle=True)
            | "ReadWithLedger" >> beam.ParDo(ReadWithLedgerFn(parent, config.read))
            | "AttachOverlays" >> AttachOverlays(parent, config, "caption")
            | "ApplyThresholds" >> Thresholds(config, units, "caption")
            | "Redecode" >> Safely(Redecode(config.decode), "redecode")
            | "EncodeOutput" >> Safely(EncodePending(config.output), "encode_output")
        )
        return records | "Finish" >> Finish(self.name, run, config)


CORPUS = CaptionCorpus()
