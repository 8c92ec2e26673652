"""The grounding corpus: images with regions (a box and the expression or category naming it), from
ODVG, RefCOCO and grounding conversations, validated, checked against CLIP, emitted for trainers.

    'ReadUnits' -> 'DecodeAndScore' -> 'ScoreWithModels' (CLIP: each region's crop x expressions)
        -> 'SplitRegions' -> 'ApplyThresholds' -> 'EncodeOutput' -> 'Finish'

A sample travels with its regions until 'SplitRegions' (the crops need the pixels, the rivals need
the other regions); from there a sample and each region are records of their own, decided by the
filters of their kind and joined again by the finish path: a region of a dropped or duplicate
sample follows it, and a sample left with fewer than `min_regions` regions is dropped. Two
identities hold in the manifest: samples in = kept + dropped + quarantined, and regions in (what the
samples hold) = kept + dropped + quarantined.

Boxes: the decode converts each input box (its declared format) to pixels of the oriented
full-resolution image and scores its geometry before clipping it in; a kept sample's regions move
onto the stored image when it is settled, so `KEY.json`, the region ledger of kept samples, the SFT
rows, the questions and the ODVG export all start from the stored image's pixels.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from pydantic import Field

from mmcurate.schemas import Fields, GroundingSample, Record, RegionRecord, Status, region_json
from mmcurate.stages.base import Filter, Params
from mmcurate.stages.dedup import DedupParams
from mmcurate.stages.grounding_boxes import to_pixels
from mmcurate.stages.grounding_filters import AgreementParams, geometry, normal_phrase
from mmcurate.stages.grounding_io import GroundingReadParams, list_grounding_units, read_grounding_unit
from mmcurate.stages.image_decode import (
    DecodeParams,
    ImageBroken,
    ImageRejected,
    decode_into,
)
from mmcurate.stages.io import Unit
from mmcurate.stages.measure import clip_box, iou, orient_box, oriented_size, scale_box
from mmcurate.stages.writers import FileInfo, ShardInfo, ShardParams

from .common import EncodePending, ReadUnits, Safely, pending
from .config import FilteredConfig
from .corpus import Corpus
from .counters import count
from .finish import Finish, Run
from .grounding_outputs import GroundingOutputParams, fold_outputs, merge_run_outputs, write_unit_outputs
from .models import ModelStage, View, Views, model_stages, validate_models
from .thresholds import Thresholds, apply_thresholds

KINDS = ("grounding", "region")


class RegionParams(Params):
    merge_iou: float = Field(0.9, ge=0, le=1)
    """Two regions of an image with the same phrase and boxes overlapping above this are one (the
    later is `duplicate_region` of the earlier)."""


class GroundingConfig(FilteredConfig):
    filter_kind = KINDS
    read: GroundingReadParams = GroundingReadParams()
    decode: DecodeParams = DecodeParams(working_side=0)
    regions: RegionParams = RegionParams()
    min_regions: int = Field(1, ge=1)
    """Kept regions a kept sample needs once every region is decided."""
    dedup: DedupParams = DedupParams()
    output: GroundingOutputParams = GroundingOutputParams()


def _agreement(config: GroundingConfig) -> AgreementParams:
    return AgreementParams(**(config.filters.get("expression_agreement") or {}))


# ------------------------------------------------------------------------------------------------ frames


def to_image_frame(rec: GroundingSample, orientation: int) -> None:
    """Every readable region's input box as pixels of the oriented full-resolution image (`width` x
    `height`): the declared format converted with the real size of the frame the boxes are in."""
    rec.orientation = orientation
    raw = oriented_size(rec.width, rec.height, orientation)  # 5..8 swap back; the file's own grid
    frame = raw if rec.box_frame == "raw" else (rec.width, rec.height)
    for region in rec.items or ():
        region.width, region.height = rec.width, rec.height
        if not region.pending:
            continue
        box = to_pixels(region.input_box, region.box_format, *frame)
        if rec.box_frame == "raw" and orientation != 1:
            box = orient_box(box, orientation, *raw) if all(map(_finite, box)) else box
        region.box, region.frame = [float(v) for v in box], "image"


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))


def clip_region(region: RegionRecord) -> None:
    """Clip a valid box into its image, recording how far a side moved (the overshoot was scored
    first: `region_box` decides from it, before clipping hides it)."""
    clipped = clip_box(region.box, region.width, region.height)
    region.clipped = max(abs(a - b) for a, b in zip(region.box, clipped, strict=True))
    region.box = [float(v) for v in clipped]


def to_stored_frame(rec: GroundingSample, regions: list[RegionRecord]) -> None:
    """The regions of a kept sample onto the stored (resized) image."""
    sx, sy = rec.out_width / rec.width, rec.out_height / rec.height
    for region in regions:
        if region.frame == "image" and region.scores.get("box_valid", 1.0) >= 1 and all(map(_finite, region.box)):
            box = clip_box(scale_box(region.box, sx, sy), rec.out_width, rec.out_height)
            region.box = [float(v) for v in box]
        region.width, region.height, region.frame = rec.out_width, rec.out_height, "stored"


def merge_duplicates(regions: list[RegionRecord], bound: float) -> None:
    """A pending region with the phrase of an earlier pending region and a box overlapping it above
    `bound` is that region again: the earlier one stays."""
    firsts: list[RegionRecord] = []
    for region in regions:
        if not region.pending:
            continue
        key = normal_phrase(region.phrase)
        same = next((f for f in firsts if normal_phrase(f.phrase) == key and iou(f.box, region.box) > bound), None)
        if same is None:
            firsts.append(region)
        else:
            region.settle("duplicate_region", f"IoU {iou(same.box, region.box):.3f} with slot {same.slot}",
                          duplicate_of=same.uid)  # fmt: skip


# ------------------------------------------------------------------------------------------------ stages


class DecodeAndScore(beam.DoFn):
    """Decode, put the boxes on the image, score the sample and its regions (geometry, expressions),
    clip the boxes, decide what needs no model and merge duplicate regions."""

    def __init__(self, config: GroundingConfig) -> None:
        self.config = config
        self.sample_filters: list[Filter] = []
        self.region_filters: list[Filter] = []

    def setup(self) -> None:
        filters = [f for f in self.config.build_filters() if not f.model]
        self.sample_filters = [f for f in filters if "grounding" in f.kinds]
        self.region_filters = [f for f in filters if "region" in f.kinds]

    def process(self, rec: GroundingSample) -> Iterator[GroundingSample]:
        if not pending(rec):
            yield rec
            return
        try:
            decoded = decode_into(rec, self.config.decode)
        except (ImageBroken, ImageRejected) as exc:
            yield rec.settle(exc.reason, str(exc), stage="decode")
            return
        to_image_frame(rec, decoded.orientation)
        rec.annotation_id = annotation_id(rec.items or [])
        for f in self.sample_filters:
            scores, labels = f.score(rec)
            rec.scores.update(scores)
            rec.labels.update(labels)
        regions = [r for r in rec.items or () if r.pending]
        for region in regions:
            geo = geometry(region.box, region.width, region.height)
            if not geo["box_valid"]:
                # not a box (NaN, x1 >= x2): never a training target, whichever filters are configured
                region.settle("invalid_box", f"box {region.box} (input {region.input_box}, {region.box_format})")
                continue
            if not geo["box_area"] > 0:  # wholly outside the image: nothing of it is there to learn
                region.settle("box_outside", f"box {region.box} lies outside the {region.width}x{region.height} image")
                continue
            for f in self.region_filters:
                scores, labels = f.score(region)
                region.scores.update(scores)
                region.labels.update(labels)
            clip_region(region)
            apply_thresholds(region, self.region_filters, {}, "", [], "region", local=True)
        merge_duplicates(regions, self.config.regions.merge_iou)
        yield rec


def annotation_id(regions: list[RegionRecord]) -> str:
    """BLAKE2b-128 of the regions as a set: each region's phrase, task and box on the decoded image
    (to 0.01 px; the input box for one that has none), sorted, so the same regions in another order
    or another notation (COCO xywh, ODVG xyxy, 0-1) are the same annotation."""
    keys = sorted(
        json.dumps([r.phrase, r.task, [round(v, 2) for v in (r.box if r.frame == "image" else r.input_box)]],
                   allow_nan=True)
        for r in regions
    )  # fmt: skip
    h = hashlib.blake2b(digest_size=16)
    for key in keys:
        h.update(key.encode("utf-8", "replace"))
        h.update(b"\1")
    return h.hexdigest()


class RegionViews(Views):
    """A sample is seen as its pending regions' crops, each with its own expression first and then
    its rivals (`stages/grounding_filters.rivals`); the cosines become the region's agreement scores."""

    per_record = 4
    per_view = True

    def __init__(self, params: AgreementParams) -> None:
        self.params = params

    def _checkable(self, rec: GroundingSample) -> list[tuple[RegionRecord, Any, list[str]]]:
        from mmcurate.stages.grounding_filters import crop_box, rivals

        if rec.pixels is None:
            return []
        sx, sy = rec.pixels.width / rec.width, rec.pixels.height / rec.height
        regions = [r for r in rec.items or () if r.pending]
        out = []
        for region in regions:
            texts = rivals(region, regions, list(rec.negatives or ()), self.params)
            crop = crop_box(list(scale_box(region.box, sx, sy)), rec.pixels.width, rec.pixels.height, self.params)
            if crop is None or not region.phrase.strip() or not texts:
                continue
            out.append((region, crop, [region.phrase, *texts]))
        return out

    def views(self, rec: GroundingSample) -> list[View]:
        template = self.params.template
        return [
            View(rec.pixels.crop(crop), region.phrase, texts=[template.format(t) for t in texts])
            for region, crop, texts in self._checkable(rec)
        ]

    def reduce(self, rec: GroundingSample, stage: ModelStage, views: list[View]) -> None:
        from mmcurate.stages.grounding_filters import agreement_scores

        checked = self._checkable(rec)
        for (region, _, _), view in zip(checked, views, strict=True):
            scores, labels = agreement_scores(list(view.similarity or []))
            region.scores.update(scores)
            region.labels.update(labels)
        done = {id(region) for region, _, _ in checked}
        for region in rec.items or ():
            if region.pending and id(region) not in done:
                scores, labels = agreement_scores([])
                region.scores.update(scores)
                region.labels.update(labels)

    def failed(self, rec: GroundingSample, stage: ModelStage, views: list[tuple[int, str]]) -> bool:
        """A crop the model fails on quarantines its region (`model_error`); the sample goes on."""
        checked = self._checkable(rec)
        for index, error in views:
            checked[index][0].settle("model_error", f"{stage.name}: {error}", stage=stage.name)
        return True


def split_regions(rec: Record, agreement: bool = False) -> Iterator[Record]:
    """A sample and its regions become records of their own. With the agreement filter on, a pending
    region the model never saw (its sample had no comparable crop at all) is labelled `unchecked`
    here, as one the model stage passed over is: never a region without a verdict."""
    if not isinstance(rec, GroundingSample):  # a unit's end marker
        yield rec
        return
    items, rec.items = rec.items or [], None
    rec.negatives = None
    if agreement and rec.pending:
        from mmcurate.stages.grounding_filters import agreement_scores

        for region in items:
            if region.pending and "agreement" not in region.labels:
                scores, labels = agreement_scores([])
                region.scores.update(scores)
                region.labels.update(labels)
    count("region.made", len(items))
    yield rec
    yield from items


def read_units(unit: Unit, config: GroundingConfig, report: Any) -> Iterator[Record]:
    return read_grounding_unit(unit, config.read, report)


# ------------------------------------------------------------------------------------------------ corpus

DUPLICATE_REASONS = ("duplicate_exact", "duplicate_near")


class GroundingCorpus(Corpus):
    name = "grounding"
    defaults = "grounding.yaml"
    config_class = GroundingConfig
    kinds = (GroundingSample, RegionRecord)
    sample_kind = "grounding"
    decided_kind = KINDS
    outputs = ("sft", "images", "questions", "odvg")

    def validate(self, config: GroundingConfig) -> None:
        validate_models(config)

    def list_units(self, inputs: list[str], config: GroundingConfig) -> list[Unit]:
        return list_grounding_units(inputs, config.read)

    def fields(self, config: GroundingConfig) -> dict[str, Fields]:
        return _fields(config)

    def dedup(self, config: GroundingConfig) -> DedupParams:
        return config.dedup

    def shard(self, config: GroundingConfig) -> ShardParams:
        return config.output.shard

    def build(self, p: beam.Pipeline, units: list[Unit], config: GroundingConfig, run: Run) -> beam.PCollection:
        records = p | "Read" >> ReadUnits(run.to_read(units), config, read_units)
        records = records | "DecodeAndScore" >> Safely(DecodeAndScore(config), "decode_and_score")
        stages = model_stages(config)
        if stages:  # RunInference (and torch) only for a run whose filters need a model
            from .inference import ScoreWithModels

            records = records | "ScoreWithModels" >> ScoreWithModels(stages, RegionViews(_agreement(config)))
        records = (
            records
            | "SplitRegions" >> beam.FlatMap(split_regions, agreement=bool(stages))
            | "ApplyThresholds" >> Thresholds(config, units, KINDS)
            | "EncodeOutput" >> Safely(EncodePending(config.output, GroundingSample), "encode_output")
        )
        return records | "Finish" >> Finish(self.name, run, config)

    def before_dedup(self, records: dict[str, list[Record]], config: GroundingConfig) -> None:
        """A sample with fewer than `min_regions` regions left must not win dedup over a healthy copy."""
        alive: dict[str, list[Record]] = {}
        for region in records.get("region", []):
            if region.pending:
                alive.setdefault(region.parent_uid or "", []).append(region)
        for rec in records.get("grounding", []):
            left = alive.get(rec.uid, [])
            if rec.pending and len(left) < config.min_regions:
                _too_few(rec, left, config)

    def settle_children(self, parent: Record, children: list[Record], config: GroundingConfig) -> None:
        duplicate = parent.fate.reason in DUPLICATE_REASONS
        for region in children:
            if region.pending:
                if duplicate:
                    region.settle("duplicate_sample", duplicate_of=parent.fate.duplicate_of)
                else:
                    region.settle("sample_dropped", f"sample {parent.fate.status.value}: {parent.fate.reason}")

    def settle_parent(self, parent: Record, children: list[Record], config: GroundingConfig) -> None:
        """Kept with its kept regions (on the stored image); dropped with fewer than `min_regions`."""
        assert isinstance(parent, GroundingSample)
        kept = sorted((c for c in children if c.fate.status == Status.KEPT), key=lambda c: c.slot)  # type: ignore[attr-defined]
        if len(kept) < config.min_regions:
            _too_few(parent, kept, config)
            return
        to_stored_frame(parent, children)  # type: ignore[arg-type]
        fields = _fields(config)["region"]
        parent.kept = [region_json(r, fields) for r in kept]  # type: ignore[arg-type]
        # a merged duplicate is the same region again, not a second one the phrase names
        alike = [c for c in children if c.fate.reason != "duplicate_region"]
        parent.phrases = [c.phrase for c in sorted(alike, key=lambda c: c.slot)]  # type: ignore[attr-defined]
        parent.kept_regions = len(kept)
        parent.keep()

    def unit_outputs(
        self, unit: int, records: dict[str, list[Record]], shards: list[ShardInfo], run: Run,
        config: GroundingConfig, media: dict[str, Any],
    ) -> tuple[list[FileInfo], dict[str, Any]]:  # fmt: skip
        samples: list[GroundingSample] = records.get("grounding", [])  # type: ignore[assignment]
        kept = [r for r in samples if r.fate.status == Status.KEPT]
        files, extras = write_unit_outputs(unit, kept, run.out_root, config.output)
        tasks = collections.Counter(
            r.task
            for r in records.get("region", [])
            if r.fate.status == Status.KEPT  # type: ignore[attr-defined]
        )
        return files, {**extras, "kept_regions_by_task": dict(tasks)}

    def fold_extras(self, extras: list[dict[str, Any]], config: GroundingConfig) -> dict[str, Any]:
        tasks: collections.Counter = collections.Counter()
        for e in extras:
            tasks.update(e.get("kept_regions_by_task", {}))
        return {**fold_outputs(extras), "kept_regions_by_task": dict(sorted(tasks.items()))}

    def run_outputs(self, run: Run, config: GroundingConfig) -> list[FileInfo]:
        return merge_run_outputs(run.out_root, config.output)

    def describe(self, manifest: dict[str, Any]) -> list[Any]:
        e = manifest.get("extras", {})
        tasks = ", ".join(f"{k} {v}" for k, v in e.get("kept_regions_by_task", {}).items()) or "none"
        return [
            f"kept regions by task: {tasks}",
            f"{e.get('sft_rows', 0)} SFT rows in sft/ (LLaMA-Factory ShareGPT), {e.get('questions', 0)} box "
            f"questions in questions/ (input of `mmcurate rl`), {e.get('odvg_rows', 0)} ODVG lines in odvg/",
            f"{len(e.get('odvg_labels', {}))} detection labels in odvg/label_map.json"
            + (f" ({e['odvg_label_clashes']} lines name a label otherwise)" if e.get("odvg_label_clashes") else ""),
        ]


def _too_few(rec: Record, left: list[Record], config: GroundingConfig) -> None:
    regions = getattr(rec, "region_count", 0)
    rec.settle("no_regions_left" if not left else "too_few_regions", f"{len(left)} of {regions} regions left")
    for region in left:
        region.settle("sample_dropped", f"sample dropped: {rec.fate.reason}")


@functools.lru_cache(maxsize=8)
def _fields_cached(key: str) -> dict[str, Fields]:
    config = GroundingConfig.model_validate_json(key)
    filters = config.build_filters()
    out = {}
    for kind in KINDS:
        mine = [f for f in filters if kind in f.kinds]
        out[kind] = Fields(tuple(s for f in mine for s in f.scores), tuple(lb for f in mine for lb in f.labels))
    return out


def _fields(config: GroundingConfig) -> dict[str, Fields]:
    return _fields_cached(config.model_dump_json())


CORPUS = GroundingCorpus()

__all__ = ["CORPUS", "GroundingConfig", "to_image_frame", "to_stored_frame"]
