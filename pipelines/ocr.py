"""The OCR corpus: images with text lines (ICDAR, COCO-Text, mmocr, transcripts, rendered pages,
pseudo-labels from a caption run), their labels checked by the PP-OCR model.

    'ReadUnits' -> 'DecodeAndScore' -> 'ScoreWithModels' (OCR + recognition of each labelled box)
        -> 'ApplyThresholds' -> 'EncodeOutput' -> 'Finish'

Boxes follow the image: the decode moves a sample's quads from the input's frame onto the oriented
image (EXIF rotation), the encode onto the stored image (resize), so `KEY.json` holds the stored
image's pixels. The model reads the whole image (detection at up to `models.ocr.max_side`) and each
labelled box's crop at native resolution; per line that gives the reading, its CER and confidence
(tags `ok`, `hard`, `gt_mismatch`), per image the mean CER, recall and unlabelled text, and the
thresholds decide from those numbers alone (`gt_agreement`). Kept samples also become reading tasks
for SFT (`sft/part-UUUUU.parquet`, LLaMA-Factory's ShareGPT layout, images in `images/`).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from pydantic import Field

from mmcurate.schemas import Fields, OcrLine, OcrSample, Record, Status, TextLine
from mmcurate.stages.base import Filter
from mmcurate.stages.dedup import DedupParams
from mmcurate.stages.image_decode import (
    DecodeParams,
    EncodeParams,
    ImageBroken,
    ImageRejected,
    decode_into,
    encode_into,
)
from mmcurate.stages.io import Unit
from mmcurate.stages.measure import orient_quad, oriented_size, scale_quad
from mmcurate.stages.ocr_io import OcrReadParams, list_ocr_units, read_ocr_unit
from mmcurate.stages.ocr_sft import SftParams, sft_rows
from mmcurate.stages.trainer_formats import SHAREGPT_SCHEMA, media_name
from mmcurate.stages.writers import FileInfo, ShardInfo, ShardParams, write_bytes, write_table

from . import layout
from .common import ReadUnits, Safely, pending
from .config import ConfigError, FilteredConfig
from .corpus import Corpus
from .finish import Finish, Run
from .models import ModelStage, View, Views, model_fields, model_stages, validate_models
from .ocr_from_run import KIND as FROM_RUN
from .ocr_from_run import FromRunParams, list_from_run_units, read_from_run
from .passrate_outputs import merge_dataset_info, sft_parts
from .thresholds import Thresholds


class OcrOutputParams(EncodeParams):
    max_side: int = Field(2048, ge=0)
    """Longest side of the stored image (never upscaled): text needs pixels, so larger than captions'."""
    quality: int = 95
    shard: ShardParams = ShardParams()
    sft: SftParams = SftParams()


class OcrConfig(FilteredConfig):
    filter_kind = "ocr"
    read: OcrReadParams = OcrReadParams()
    from_run: FromRunParams = FromRunParams()
    decode: DecodeParams = DecodeParams(working_side=0)
    dedup: DedupParams = DedupParams()
    output: OcrOutputParams = OcrOutputParams()


def _agreement(config: OcrConfig) -> Any:
    from mmcurate.stages.ocr_verify import AgreementParams

    return AgreementParams(**(config.filters.get("gt_agreement") or {}))


# ------------------------------------------------------------------------------------------------ frames


def full_quad(width: float, height: float) -> list[list[float]]:
    return [[0.0, 0.0], [float(width), 0.0], [float(width), float(height)], [0.0, float(height)]]


def to_image_frame(rec: OcrSample, orientation: int) -> None:
    """The input's quads on the oriented full-resolution image (`width` x `height`); a cropped word's
    (task rec) line without a box frames the whole image."""
    if rec.frame == "raw" and orientation != 1:
        raw = oriented_size(rec.width, rec.height, orientation)  # 5..8 swap back, the rest keep the size
        for line in rec.lines:
            if line.quad:
                line.quad = [list(p) for p in orient_quad(line.quad, orientation, *raw)]
    for line in rec.lines:
        if not line.quad and rec.task == "rec":
            line.quad = full_quad(rec.width, rec.height)
    rec.orientation, rec.frame = orientation, "image"


def _scaled(quad: list[list[float]], sx: float, sy: float) -> list[list[float]]:
    return [list(p) for p in scale_quad(quad, sx, sy)]


def to_stored_frame(rec: OcrSample) -> None:
    """Every quad (labels and the model's lines) on the stored, resized image, clipped into it."""
    from mmcurate.stages.ocr_verify import clip_quad

    sx, sy = rec.out_width / rec.width, rec.out_height / rec.height
    for line in rec.lines:
        if line.quad:
            line.quad = [list(p) for p in clip_quad(_scaled(line.quad, sx, sy), rec.out_width, rec.out_height)]
    rec.ocr = [
        OcrLine([list(p) for p in clip_quad(_scaled(ln.box, sx, sy), rec.out_width, rec.out_height)], ln.text,
                ln.confidence)
        for ln in rec.ocr
    ]  # fmt: skip
    rec.frame = "stored"


# ------------------------------------------------------------------------------------------------ stages


class DecodeAndScore(beam.DoFn):
    """Decode at full resolution (OCR reads native pixels), move the labels onto the image, and
    compute every filter's scores that need no model."""

    def __init__(self, config: OcrConfig) -> None:
        self.config = config
        self.filters: list[Filter] = []

    def setup(self) -> None:
        self.filters = [f for f in self.config.build_filters() if not f.model]

    def process(self, rec: OcrSample) -> Iterator[OcrSample]:
        if not pending(rec):
            yield rec
            return
        try:
            decoded = decode_into(rec, self.config.decode)
        except (ImageBroken, ImageRejected) as exc:
            yield rec.settle(exc.reason, str(exc), stage="decode")
            return
        to_image_frame(rec, decoded.orientation)
        for f in self.filters:
            scores, labels = f.score(rec)
            rec.scores.update(scores)
            rec.labels.update(labels)
        yield rec


class OcrViews(Views):
    """An OCR sample is seen as its image plus the boxes of its lines to recognise; the verification's
    per-line and per-image numbers are computed when the reading comes back."""

    def __init__(self, config: OcrConfig) -> None:
        self.agreement = _agreement(config)
        self.pseudo = config.from_run

    @staticmethod
    def _asked(rec: OcrSample) -> list[TextLine]:
        return [ln for ln in rec.lines if ln.quad and not ln.ignore]

    def views(self, rec: OcrSample) -> list[View]:
        if rec.pixels is None:
            return []
        sx, sy = rec.pixels.width / rec.width, rec.pixels.height / rec.height
        return [View(rec.pixels, "", boxes=[_scaled(ln.quad, sx, sy) for ln in self._asked(rec)])]

    def reduce(self, rec: OcrSample, stage: ModelStage, views: list[View]) -> None:
        from mmcurate.stages.ocr_verify import page_scores, pseudo_lines, verify_lines

        (view,) = views
        reading = view.result
        fx, fy = rec.width / view.pixels.width, rec.height / view.pixels.height
        rec.ocr = [OcrLine(_scaled(ln.box, fx, fy), ln.text, ln.confidence) for ln in reading.lines]
        for line, read in zip(self._asked(rec), reading.reads, strict=True):
            if read is not None:
                line.read, line.confidence = read
        rec.errors.update(view.errors)
        if rec.origin == "pseudo":
            rec.lines = pseudo_lines(rec.ocr, self.pseudo.min_confidence, self.pseudo.lang)
        if rec.task == "page":
            scores = page_scores(rec.transcript, rec.ocr, self.agreement)
        else:
            scores = verify_lines(rec.lines, rec.ocr, self.agreement)
        if rec.origin == "pseudo":
            for line in rec.lines:
                line.tag = "pseudo"
        elif rec.origin in EXACT:
            trust_labels(rec, scores)
        rec.scores.update(scores)


EXACT = ("rendered",)
"""Origins whose labels are exact by construction: a line the model misreads measures the model."""


def trust_labels(rec: OcrSample, scores: dict[str, float]) -> None:
    """A rendered line the model contradicts is a hard example, never a label error."""
    moved = 0
    for line in rec.lines:
        if line.tag == "gt_mismatch":
            line.tag, moved = "hard", moved + 1
    cared = scores.get("gt_lines", 0.0)
    if moved and cared:
        scores["hard_share"] = scores.get("hard_share", 0.0) + moved / cared
        scores["gt_mismatch_share"] = 0.0


class EncodeOutput(beam.DoFn):
    """Resize and re-encode what survived; every quad moves onto the stored image with it."""

    def __init__(self, params: EncodeParams) -> None:
        self.params = params

    def process(self, rec: OcrSample) -> Iterator[OcrSample]:
        if pending(rec):
            encode_into(rec, self.params)
            to_stored_frame(rec)
        yield rec


def read_units(unit: Unit, config: OcrConfig, report: Any) -> Iterator[Record]:
    """A caption run's unit (`--from-run`) or an OCR dataset's."""
    if unit.kind == FROM_RUN:
        return read_from_run(unit, config.from_run, report)
    return read_ocr_unit(unit, config.read, report)


# ------------------------------------------------------------------------------------------------ outputs


def sft_files(unit: int, kept: list[OcrSample], run: Run, config: OcrConfig) -> tuple[list[FileInfo], int]:
    """The unit's reading rows (`sft/part-U.parquet`) and the stored images they name (`images/`)."""
    from mmcurate.stages.ocr_verify import reading_order

    rows, images = [], {}
    for rec in kept:
        data = rec.members()[rec.out_ext]
        name = media_name(data, f"x.{rec.out_ext}", "images")
        mine = sft_rows(rec, name, config.output.sft, reading_order)
        if mine and name not in images:
            images[name] = write_bytes(run.out_root, name, data)
        rows += mine
    if not rows:
        return [], 0
    table = pa.Table.from_pylist(rows, SHAREGPT_SCHEMA)
    return [*images.values(), write_table(run.out_root, f"sft/{layout.part(unit)}.parquet", table)], len(rows)


class OcrCorpus(Corpus):
    name = "ocr"
    defaults = "ocr.yaml"
    config_class = OcrConfig
    kinds = (OcrSample,)
    sample_kind = "ocr"
    outputs = ("sft", "images")

    def validate(self, config: OcrConfig) -> None:
        side, ocr_side = config.decode.working_side, config.models.ocr.max_side
        if 0 < side < ocr_side:
            raise ConfigError(
                f"decode.working_side = {side} would hand OCR a reduced image; set it to 0 (full resolution) "
                f"or at least models.ocr.max_side ({ocr_side})"
            )
        if config.from_run.run and config.read.layout != "auto":
            raise ConfigError("from_run.run reads a caption run; read.layout applies to --input datasets only")
        validate_models(config)

    def list_units(self, inputs: list[str], config: OcrConfig) -> list[Unit]:
        if config.from_run.run:
            if inputs:
                raise ConfigError("--from-run reads a caption run's sources: give no --input with it")
            return list_from_run_units(config.from_run)
        return list_ocr_units(inputs, config.read)

    def lineage(self, config: OcrConfig) -> dict[str, Any]:
        if not config.from_run.run:
            return {}
        return {"from_run": config.from_run.run, "from_run_reasons": list(config.from_run.reasons)}

    def fields(self, config: OcrConfig) -> dict[str, Fields]:
        filters = config.build_filters()
        scores = [s for f in filters if not f.model for s in f.scores] + list(model_fields(config, OcrViews(config)))
        return {"ocr": Fields(tuple(scores), tuple(lb for f in filters for lb in f.labels))}

    def dedup(self, config: OcrConfig) -> DedupParams:
        return config.dedup

    def shard(self, config: OcrConfig) -> ShardParams:
        return config.output.shard

    def build(self, p: beam.Pipeline, units: list[Unit], config: OcrConfig, run: Run) -> beam.PCollection:
        records = p | "Read" >> ReadUnits(run.to_read(units), config, read_units)
        records = records | "DecodeAndScore" >> Safely(DecodeAndScore(config), "decode_and_score")
        stages = model_stages(config)
        if stages:  # RunInference (and onnxruntime) only for a run whose filters need a model
            from .inference import ScoreWithModels

            records = records | "ScoreWithModels" >> ScoreWithModels(stages, OcrViews(config))
        records = (
            records
            | "ApplyThresholds" >> Thresholds(config, units, "ocr")
            | "EncodeOutput" >> Safely(EncodeOutput(config.output), "encode_output")
        )
        return records | "Finish" >> Finish(self.name, run, config)

    def unit_outputs(
        self, unit: int, records: dict[str, list[Record]], shards: list[ShardInfo], run: Run, config: OcrConfig,
        media: dict[str, Any],
    ) -> tuple[list[FileInfo], dict[str, Any]]:  # fmt: skip
        samples: list[OcrSample] = records["ocr"]  # type: ignore[assignment]
        kept = [r for r in samples if r.fate.status == Status.KEPT]
        files, rows = sft_files(unit, kept, run, config) if config.output.sft.enabled else ([], 0)
        tags = collections.Counter(ln.tag for r in kept for ln in r.lines)
        origins = collections.Counter(r.origin for r in kept)
        return files, {"sft_rows": rows, "kept_lines": dict(tags), "kept_origins": dict(origins),
                       **_verified(samples)}  # fmt: skip

    def fold_extras(self, extras: list[dict[str, Any]], config: OcrConfig) -> dict[str, Any]:
        tags: collections.Counter = collections.Counter()
        origins: collections.Counter = collections.Counter()
        cer_sum = recall_sum = 0.0
        scored = 0
        for e in extras:
            tags.update(e.get("kept_lines", {}))
            origins.update(e.get("kept_origins", {}))
            cer_sum += e.get("cer_sum", 0.0)
            recall_sum += e.get("recall_sum", 0.0)
            scored += e.get("scored", 0)
        return {
            "sft_rows": sum(e.get("sft_rows", 0) for e in extras),
            "kept_lines": dict(sorted(tags.items())),
            "kept_origins": dict(sorted(origins.items())),
            "verified_images": scored,
            "mean_cer": cer_sum / scored if scored else None,
            "mean_recall": recall_sum / scored if scored else None,
        }

    def run_outputs(self, run: Run, config: OcrConfig) -> list[FileInfo]:
        """LLaMA-Factory's dataset_info.json entry for `sft/` (merged into one the folder has)."""
        if config.output.sft.enabled:
            merge_dataset_info(run.out_root, config.output.sft.name, bool(sft_parts(run.out_root)))
        return []

    def describe(self, manifest: dict[str, Any]) -> list[Any]:
        e = manifest.get("extras", {})
        lines = [
            "kept lines by tag: " + (", ".join(f"{k} {v}" for k, v in e.get("kept_lines", {}).items()) or "none"),
            f"{e.get('sft_rows', 0)} SFT reading rows in sft/ (LLaMA-Factory ShareGPT; dataset_info.json)",
        ]
        if e.get("verified_images"):
            lines.append(
                f"verified {e['verified_images']} images: mean CER {e['mean_cer']:.3f}, "
                f"mean word recall {e['mean_recall']:.3f}"
            )
        return lines


def _verified(samples: list[OcrSample]) -> dict[str, Any]:
    """Sums of the model's agreement with the labels over every verified boxed sample of the unit,
    whatever its fate (pseudo-labels agree with themselves, transcripts have no recall)."""
    pairs = [
        (r.scores.get("ocr_cer"), r.scores.get("ocr_recall"))
        for r in samples
        if r.origin != "pseudo" and r.task != "page"
    ]
    pairs = [(c, r) for c, r in pairs if _finite(c) and _finite(r)]
    return {"cer_sum": sum(c for c, _ in pairs), "recall_sum": sum(r for _, r in pairs), "scored": len(pairs)}


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


CORPUS = OcrCorpus()

__all__ = ["CORPUS", "OcrConfig", "to_image_frame", "to_stored_frame"]
