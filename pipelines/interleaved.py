"""The interleaved corpus: documents of text segments with images among them (MMC4, OBELICS, Data-Juicer).

    'ReadUnits' -> 'DecodeAndScore' -> 'ScoreWithModels' -> 'Align' -> 'SplitImages'
        -> 'ApplyThresholds' -> 'EncodeImages' -> 'Finish'

A document travels with its image slots until 'SplitImages' (the slots' pixels, its sentences and
the alignment need each other); from there a document and each of its images are records of their
own, decided by the filters of their kind, joined again by the finish path: a duplicate document's
images follow it, a dropped image leaves its document, and a document left with fewer than
`min_images` images is dropped (`no_images_left`). Two identities hold in the manifest: documents in
= kept + dropped + quarantined, and images in (the slots the documents hold) = kept + dropped +
quarantined. Dedup is run-wide: images by pixels and pHash (as the caption corpus), documents by
normalised URL and by MinHash LSH over word shingles of their text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import apache_beam as beam
from pydantic import Field, field_validator

from mmcurate.schemas import DocumentRecord, Fields, ImageSlot, Part, Record, Status
from mmcurate.stages.alignment import Alignment, assign
from mmcurate.stages.base import Filter
from mmcurate.stages.dedup import DedupParams
from mmcurate.stages.doc_filters import document_text
from mmcurate.stages.image_decode import (
    DecodeParams,
    EncodeParams,
    ImageBroken,
    ImageRejected,
    decode_into,
)
from mmcurate.stages.interleaved_formats import LAYOUTS, write_export
from mmcurate.stages.interleaved_io import InterleavedReadParams, list_interleaved_units, read_interleaved_unit
from mmcurate.stages.io import Unit
from mmcurate.stages.minhash import MinHashParams, signature
from mmcurate.stages.writers import FileInfo, ShardInfo, ShardParams

from .common import EncodePending, ReadUnits, Safely
from .config import FilteredConfig
from .corpus import Corpus
from .counters import count
from .finish import Finish, Run
from .models import ModelStage, View, Views, model_fields, model_stages, validate_models
from .thresholds import Thresholds, apply_thresholds

KINDS = ("document", "image")
EXPORTS = tuple(layout for layout in LAYOUTS if layout != "wds")


class InterleavedOutputParams(EncodeParams):
    layout: list[Literal["wds", "obelics", "mmc4", "datajuicer"]] = Field(default_factory=lambda: ["wds"])
    """What to write: `wds` (webdataset shards + parquet index: one sample per document, `KEY.json`
    with the ordered items and `KEY.<slot>.<ext>` per image) and/or exports in the layouts of MMC4,
    OBELICS and Data-Juicer (`mmc4/`, `obelics/`, `datajuicer/`), to move a corpus between tools."""
    shard: ShardParams = ShardParams(max_samples=2000)

    @field_validator("layout", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("layout")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("output.layout: name at least one of wds, obelics, mmc4, datajuicer")
        return list(dict.fromkeys(value))


class InterleavedConfig(FilteredConfig):
    filter_kind = KINDS
    read: InterleavedReadParams = InterleavedReadParams()
    decode: DecodeParams = DecodeParams()
    dedup: DedupParams = DedupParams()
    """Images, run-wide and across documents: exact pixels and pHash near duplicates."""
    text_dedup: MinHashParams = MinHashParams()
    """Documents: near-duplicate text by MinHash LSH (exact URL duplicates always go)."""
    min_images: int = Field(1, ge=0)
    """Kept images a kept document needs once every image is decided; 0: keep text-only documents."""
    output: InterleavedOutputParams = InterleavedOutputParams()


# -------------------------------------------------------------------------------------------- scoring


class DecodeAndScoreFn(beam.DoFn):
    """Per document: decode and score every image slot, then the document's text (and its images'
    sizes, for the vision-token estimate), and its dedup signature."""

    def __init__(self, config: InterleavedConfig) -> None:
        self.config = config
        self.image_filters: list[Filter] = []
        self.doc_filters: list[Filter] = []

    def setup(self) -> None:
        filters = self.config.build_filters()
        self.image_filters = [f for f in filters if "image" in f.kinds]
        self.early = [f for f in self.image_filters if not f.model]
        self.doc_filters = [f for f in filters if "document" in f.kinds]

    def process(self, doc: DocumentRecord) -> Iterator[DocumentRecord]:
        if not doc.pending:
            yield doc
            return
        for slot in doc.slots or ():
            if slot.pending:
                self._image(slot)
                # the image filters that need no model decide now: the document's scores (its
                # vision tokens) count only the images that are still in it
                apply_thresholds(slot, self.early, {}, "", [], "image", local=True)
        for f in self.doc_filters:
            scores, labels = f.score(doc)
            doc.scores.update(scores)
            doc.labels.update(labels)
        text = self.config.text_dedup
        doc.minhash = (list(signature(document_text(doc), text) or ()) or None) if text.enabled else None
        yield doc

    def _image(self, slot: ImageSlot) -> None:
        try:
            decode_into(slot, self.config.decode)
        except (ImageBroken, ImageRejected) as exc:
            slot.settle(exc.reason, str(exc), stage="decode")
            return
        for f in self.image_filters:
            scores, labels = f.score(slot)
            slot.scores.update(scores)
            slot.labels.update(labels)


def _scored_slots(doc: DocumentRecord) -> list[ImageSlot]:
    return [s for s in doc.slots or () if s.pending and s.pixels is not None]


class DocumentImages(Views):
    """A document is seen as its decoded images, each with all of the document's sentences: image
    stages score each image (its own scores), the alignment stage gives each image's row of the
    image x sentence similarity matrix."""

    per_record = 3
    per_view = True

    def views(self, rec: DocumentRecord) -> list[View]:
        return [View(s.pixels, "", texts=list(rec.texts)) for s in _scored_slots(rec)]

    def reduce(self, rec: DocumentRecord, stage: ModelStage, views: list[View]) -> None:
        slots = _scored_slots(rec)
        if stage.name == "align":
            rows = [[math.nan] * len(rec.texts) for _ in range(rec.images)]
            for slot, view in zip(slots, views, strict=True):
                rows[slot.slot] = list(view.similarity or [])
            rec.similarity, rec.similarity_from = rows, "model"
            return
        for slot, view in zip(slots, views, strict=True):
            slot.scores.update(view.scores)
            slot.labels.update(view.labels)
            slot.errors.update(view.errors)

    def fields(self, stage: ModelStage) -> tuple[str, ...]:
        return stage.scores

    def failed(self, rec: DocumentRecord, stage: ModelStage, views: list[tuple[int, str]]) -> bool:
        """An image the model fails on is quarantined (`model_error`); its document goes on without it."""
        slots = _scored_slots(rec)
        for index, error in views:
            slots[index].settle("model_error", f"{stage.name}: {error}", stage=stage.name)
        return True


class DocumentModelStages(beam.PTransform):
    """The model stages a document needs: image scorers, and CLIP only for the documents whose
    matrix the alignment takes from the model (`source: auto` uses an input's matrix as given)."""

    def __init__(self, stages: list[ModelStage], align: Alignment | None) -> None:
        super().__init__()
        self.stages, self.align = stages, align

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        from .inference import ScoreWithModels

        views = DocumentImages()
        source = self.align.params.source if self.align else "input"
        plain = [st for st in self.stages if st.name != "align"]
        aligners = [st for st in self.stages if st.name == "align"]
        if plain:
            docs = docs | "ScoreImages" >> ScoreWithModels(plain, views)
        if aligners:
            docs = docs | "AlignWithModel" >> ScoreWithModels(aligners, _NeedsModel(source))
        return docs


class _NeedsModel(DocumentImages):
    """Only the documents whose matrix comes from the model are shown to it."""

    def __init__(self, source: str) -> None:
        self.source = source

    def views(self, rec: DocumentRecord) -> list[View]:
        if not rec.texts or (self.source == "auto" and rec.similarity_from == "input"):
            return []
        return super().views(rec)


class AlignFn(beam.DoFn):
    """Re-anchor each image at its sentence under a one-to-one assignment over the document's matrix
    (the model's, or the input's), and score it: `alignment` = its similarity there."""

    def __init__(self, align: Alignment) -> None:
        self.align = align

    def process(self, doc: DocumentRecord) -> Iterator[DocumentRecord]:
        if doc.pending and doc.similarity and self._usable(doc):
            slots = [s for s in doc.slots or () if s.pending]
            if self.align.params.reanchor:
                for slot_index, (col, sim) in assign(doc.similarity, [s.slot for s in slots]).items():
                    slot = next(s for s in slots if s.slot == slot_index)
                    slot.anchor, slot.scores["alignment"] = col, sim
            else:
                for slot in slots:
                    row = doc.similarity[slot.slot] if slot.slot < len(doc.similarity) else []
                    if 0 <= slot.anchor < len(row) and math.isfinite(row[slot.anchor]):
                        slot.scores["alignment"] = row[slot.anchor]
        yield doc

    def _usable(self, doc: DocumentRecord) -> bool:
        return not (self.align.params.source == "model" and doc.similarity_from != "model")


def split_images(doc: Record) -> Iterator[Record]:
    """A document and its image slots become records of their own (the slots carry their pixels on)."""
    if not isinstance(doc, DocumentRecord):  # a unit's end marker
        yield doc
        return
    slots, doc.slots = doc.slots or [], None
    count("image.made", len(slots))
    yield doc
    yield from slots


# ------------------------------------------------------------------------------------------ settling

DUPLICATE_REASONS = ("duplicate_url", "duplicate_text", "duplicate_exact")


def _part(img: ImageSlot) -> Part:
    return Part(
        slot=img.slot, anchor=img.anchor, ext=img.out_ext, media=img.media or "", name=img.name, url=img.url,
        width=img.out_width, height=img.out_height, extra=img.extra,
    )  # fmt: skip


class InterleavedCorpus(Corpus):
    name = "interleaved"
    defaults = "interleaved.yaml"
    config_class = InterleavedConfig
    kinds = (DocumentRecord, ImageSlot)
    sample_kind = "document"
    decided_kind = KINDS
    outputs = EXPORTS

    def validate(self, config: InterleavedConfig) -> None:
        validate_models(config)

    def list_units(self, inputs: list[str], config: InterleavedConfig) -> list[Unit]:
        return list_interleaved_units(inputs, config.read)

    def fields(self, config: InterleavedConfig) -> dict[str, Fields]:
        filters = config.build_filters()
        out = {}
        for kind in KINDS:
            mine = [f for f in filters if kind in f.kinds]
            scores = [s for f in mine for s in f.scores]
            if kind == "image":
                scores += model_fields(config.model_copy(update={"filters": _only(config, "image")}), DocumentImages())
            out[kind] = Fields(tuple(scores), tuple(lb for f in mine for lb in f.labels))
        return out

    def dedup(self, config: InterleavedConfig) -> DedupParams:
        return config.dedup

    def text_dedup(self, config: InterleavedConfig) -> MinHashParams:
        return config.text_dedup

    def shard(self, config: InterleavedConfig) -> ShardParams | None:
        return config.output.shard if "wds" in config.output.layout else None

    def build(self, p: beam.Pipeline, units: list[Unit], config: InterleavedConfig, run: Run) -> beam.PCollection:
        docs = p | "Read" >> ReadUnits(run.to_read(units), config.read, read_interleaved_unit)
        docs = docs | "DecodeAndScore" >> Safely(DecodeAndScoreFn(config), "decode_and_score")
        align = next((f for f in config.build_filters() if isinstance(f, Alignment)), None)
        stages = model_stages(config)
        if stages:  # RunInference (and torch) only for a run whose filters need a model
            docs = docs | "ScoreWithModels" >> DocumentModelStages(stages, align)
        if align is not None:
            docs = docs | "Align" >> Safely(AlignFn(align), "align")
        records = (
            docs
            | "SplitImages" >> beam.FlatMap(split_images)
            | "ApplyThresholds" >> Thresholds(config, units, KINDS)
            | "EncodeImages" >> Safely(EncodePending(config.output, ImageSlot), "encode_images")
        )
        return records | "Finish" >> Finish(self.name, run, config)

    def before_dedup(self, records: dict[str, list[Record]], config: InterleavedConfig) -> None:
        """A document with fewer than `min_images` images left must not win dedup over a healthy copy:
        settle it (and its images) first."""
        if config.min_images == 0:
            return
        alive: dict[str, list[Record]] = {}
        for img in records.get("image", []):
            if img.pending:
                alive.setdefault(img.parent_uid or "", []).append(img)
        for doc in records.get("document", []):
            left = alive.get(doc.uid, [])
            if doc.pending and len(left) < config.min_images:
                doc.settle("no_images_left" if not left else "too_few_images", f"{len(left)} of {doc.images} left")
                for img in left:
                    img.settle("document_dropped", f"document dropped: {doc.fate.reason}")

    def settle_children(self, parent: Record, children: list[Record], config: InterleavedConfig) -> None:
        duplicate = parent.fate.reason in DUPLICATE_REASONS
        for img in children:
            if img.pending:
                if duplicate:
                    img.settle("duplicate_document", duplicate_of=parent.fate.duplicate_of)
                else:
                    img.settle("document_dropped", f"document {parent.fate.status.value}: {parent.fate.reason}")

    def settle_parent(self, parent: Record, children: list[Record], config: InterleavedConfig) -> None:
        """Kept with its kept images; dropped when fewer than `min_images` are left (and its images with it)."""
        assert isinstance(parent, DocumentRecord)
        kept = sorted((c for c in children if c.fate.status == Status.KEPT), key=lambda c: c.slot)  # type: ignore[attr-defined]
        if len(kept) < config.min_images:
            parent.settle("no_images_left" if not kept else "too_few_images", f"{len(kept)} of {parent.images} left")
            for img in kept:
                img.settle("document_dropped", f"document dropped: {parent.fate.reason}")
            return
        parent.kept_images = len(kept)
        parent.parts = [_part(img) for img in kept]  # type: ignore[arg-type]
        parent.keep()

    def unit_outputs(
        self, unit: int, records: dict[str, list[Record]], shards: list[ShardInfo], run: Run,
        config: InterleavedConfig, media: dict[str, Any],
    ) -> tuple[list[FileInfo], dict[str, Any]]:  # fmt: skip
        kept = [d for d in records.get("document", []) if d.fate.status == Status.KEPT]
        files = [
            f
            for layout in config.output.layout
            if layout != "wds"
            for f in write_export(layout, unit, kept, run.out_root)
        ]
        return files, {"kept_images": sum(d.kept_images for d in kept), "vision_tokens": _kept_tokens(kept, config)}  # type: ignore[attr-defined]

    def fold_extras(self, extras: list[dict[str, Any]], config: InterleavedConfig) -> dict[str, Any]:
        return {
            "kept_images": sum(e.get("kept_images", 0) for e in extras),
            "vision_tokens": int(sum(e.get("vision_tokens", 0.0) for e in extras)),
        }

    def describe(self, manifest: dict[str, Any]) -> list[Any]:
        extras = manifest.get("extras", {})
        return [
            f"{extras.get('kept_images', 0)} images in kept documents, {extras.get('vision_tokens', 0)} vision tokens"
        ]


def _kept_tokens(docs: list[Record], config: InterleavedConfig) -> int:
    """Vision tokens of the images the kept documents hold, as stored (the `vision_tokens` score was
    taken before dedup and alignment, over the images a document still had then)."""
    from mmcurate.stages.vision_tokens import ImageRefused, VisionTokens, image_tokens

    counter = next((f for f in config.build_filters() if isinstance(f, VisionTokens)), None)
    if counter is None:
        return 0
    total = 0
    for doc in docs:
        for part in doc.parts or ():  # type: ignore[attr-defined]
            try:
                total += image_tokens(part.height, part.width, counter.params)
            except ImageRefused:
                continue
    return total


def _only(config: InterleavedConfig, kind: str) -> dict[str, Any]:
    registry = {f.name: f for f in config.build_filters()}
    return {name: params for name, params in config.filters.items() if kind in registry[name].kinds}


CORPUS = InterleavedCorpus()

__all__ = ["CORPUS", "InterleavedConfig"]
