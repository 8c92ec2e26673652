"""The image-caption corpus pipeline (LAION / CC / COCO style).

    'ReadUnits' -> 'DecodeAndScore' -> 'ApplyThresholds' -> 'EncodeOutput' -> 'Finish'

Scores (geometry, caption length, language, repetition, boilerplate, hashes) go into the ledger;
thresholds are applied from those scores alone, so `mmcurate select` can re-decide later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from mmcurate.schemas import CaptionSample, Status
from mmcurate.stages.base import Filter
from mmcurate.stages.clip import QuantileFilter
from mmcurate.stages.image_decode import (
    DecodeParams,
    EncodeParams,
    ImageBroken,
    ImageRejected,
    decode,
    encode,
    perceptual_hash,
    pixel_hash,
)
from mmcurate.stages.readers import Unit

from .common import COUNTS_TAG, NS, Finish, ReadUnitFn, Safely, clear_payload, pending, run_meta, write_units
from .config import CaptionConfig
from .models import Cutoffs, ScoreWithModels, cutoff_key, model_stages


def settle(rec: CaptionSample, status: Status, reason: str, error: str = "") -> CaptionSample:
    rec.fate = dataclasses.replace(rec.fate, status=status, reason=reason, error=error[:2000])
    clear_payload(rec)
    Metrics.counter(NS, f"{status.value}_{reason}").inc()
    return rec


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
            img = decode(rec.image or b"", self.decode_params)
        except ImageBroken as exc:
            yield settle(rec, Status.QUARANTINED, exc.reason, str(exc))
            return
        except ImageRejected as exc:
            yield settle(rec, Status.DROPPED, exc.reason, str(exc))
            return
        rec.width, rec.height, rec.mode, rec.image_format = img.width, img.height, img.mode, img.format
        rec.pixel_hash, rec.phash = pixel_hash(img.image), perceptual_hash(img.image)
        rec.pixels, rec.image = img.image, None
        for f in self.filters:
            scores, labels = f.score(rec)
            rec.scores.update(scores)
            rec.labels.update(labels)
        yield rec


def apply_thresholds(rec: Any, filters: list[Filter], cutoffs: dict[str, float], group: str = "") -> Any:
    """The first filter whose threshold fails names the drop reason; scores come from the record only
    (and run-wide cutoffs, for `top_fraction` filters, which were computed from scores too)."""
    if not pending(rec):
        return rec
    for f in filters:
        if isinstance(f, QuantileFilter):
            reason = f.decide_with(rec.scores, rec.labels, cutoffs.get(cutoff_key(f, group)))
        else:
            reason = f.decide(rec.scores, rec.labels)
        if reason:
            return settle(rec, Status.DROPPED, reason)
    return rec


class ApplyThresholds(beam.DoFn):
    def __init__(self, config: CaptionConfig, groups: dict[int, str] | None = None) -> None:
        self.config, self.groups = config, groups or {}

    def setup(self) -> None:
        self.filters = self.config.build_filters()

    def process(self, rec: Any, cutoffs: dict[str, float] | None = None) -> Iterator[Any]:
        yield apply_thresholds(rec, self.filters, cutoffs or {}, self.groups.get(rec.source.unit, ""))


class Thresholds(beam.PTransform):
    """Run-wide cutoffs (when a filter asks for a top fraction), then every filter's threshold."""

    def __init__(self, config: CaptionConfig, units: list[Unit]) -> None:
        super().__init__()
        self.config, self.groups = config, {u.index: u.group for u in units}

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        filters = self.config.build_filters()
        fn = ApplyThresholds(self.config, self.groups)
        if not any(isinstance(f, QuantileFilter) and f.params.top_fraction for f in filters):
            return records | "Apply" >> Safely(fn, "apply_thresholds")
        cutoffs = records | "Cutoffs" >> Cutoffs(filters, self.groups)
        return records | "Apply" >> Safely(fn, "apply_thresholds", cutoffs=beam.pvalue.AsDict(cutoffs))


class EncodeOutput(beam.DoFn):
    """Resize and re-encode what survived the thresholds (dropped records never pay for encoding)."""

    def __init__(self, params: EncodeParams) -> None:
        self.params = params

    def process(self, rec: CaptionSample) -> Iterator[CaptionSample]:
        if pending(rec):
            rec.image, rec.out_width, rec.out_height = encode(rec.pixels, self.params)
            rec.out_ext, rec.pixels = self.params.ext, None
        yield rec


def build(
    p: beam.Pipeline,
    units: list[Unit],
    config: CaptionConfig,
    out_root: str,
    meta: dict,
    progress_dir: str | None = None,
) -> beam.PCollection:
    """The caption recipe; returns the PCollection holding the manifest."""
    read = (
        p
        | "ListUnits" >> beam.Create(units, reshuffle=True)
        | "ReadUnits" >> beam.ParDo(ReadUnitFn(config.read, progress_dir)).with_outputs(COUNTS_TAG, main="records")
    )
    records = (
        read.records
        | "DecodeAndScore" >> Safely(DecodeAndScore(config.decode, config), "decode_and_score")
        | "ScoreWithModels" >> ScoreWithModels(model_stages(config))
        | "ApplyThresholds" >> Thresholds(config, units)
        | "EncodeOutput" >> Safely(EncodeOutput(config.output), "encode_output")
    )
    return records | "Finish" >> Finish(
        out_root, config.dedup, config.output.shard, read[COUNTS_TAG], meta, progress_dir
    )


def meta_for(inputs: list[str], config: CaptionConfig, units: list[Unit]) -> dict:
    return run_meta("caption", inputs, config, units)


__all__ = ["build", "meta_for", "write_units"]
