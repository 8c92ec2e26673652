"""Grounding samples: an image and its regions, each a box with the expression (or category) naming it.

A sample is the image (the shared image fields) with its regions in input order; each region is a
`RegionRecord` of its own, joined to its sample by uid and slot as an image slot to its document,
so regions have their identity: regions in (what the samples hold) = kept + dropped + quarantined.

Frames: a reader keeps each box as the input gave it (`input_box`, in `box_format`) and the decode
stage sets `box` in pixels of the oriented full-resolution image (`frame` "image"): the declared
format converted with the image's real size, EXIF rotation applied, clipped into the image. A kept
sample's regions move onto the stored image when it is settled (`frame` "stored"), so its `KEY.json`
holds `x1,y1,x2,y2` in pixels of the stored `KEY.jpg`, the one frame every export starts from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .base import CHILDREN, PAYLOAD, DedupKey, Fields, Record, SlotChild, read_media
from .image import ImageFields

BOX_FORMATS = ("xyxy", "xywh", "norm", "grid")
"""How an input writes a box: pixel corners `x1,y1,x2,y2`; pixel `x,y,w,h` (COCO); corners as
fractions of the image's width and height (0-1); corners as integers on the 0-1000 grid (GLM-4.5V,
Qwen-VL's `<box>`)."""
REGION_TASKS = ("detection", "grounding", "referring", "conversation")
"""Where a region comes from: a detection label (ODVG `detection`), a phrase of a caption (ODVG
`grounding`), a referring expression (RefCOCO), a box in a conversation's text."""


@dataclass(kw_only=True)
class RegionRecord(SlotChild, Record):
    """One region of a grounding sample. `id` is the BLAKE2b-128 of the sample id, the slot, the
    phrase and the input box."""

    kind = "region"
    parent_kind = "grounding"

    sample_id: str = ""
    slot: int = 0
    """Position among the sample's regions in input order (0-based)."""
    task: str = "detection"
    """One of `REGION_TASKS`."""
    phrase: str = ""
    """The expression (or the category name, for a detection label) the box answers."""
    category: str = ""
    """The detection category the input gives ('' when none)."""
    ref: str = ""
    """The source's own id of the region: `ann:123`, `ref:45/sent:67`, `instance:3`, `region:0`, `turn:1/box:0`."""
    split: str = ""
    """The input's split of the region (RefCOCO's train / val / testA / testB), '' when none."""
    input_box: list[float] = field(default_factory=list)
    """The box as the input wrote it, in `box_format` (floats; NaN kept as NaN)."""
    box_format: str = "xyxy"
    box: list[float] = field(default_factory=list)
    """`x1,y1,x2,y2` in `frame` pixels ([] before the decode, or when the input box is unusable)."""
    frame: str = "input"
    """The frame `box` is in: input (not converted yet) | image (oriented, full resolution) | stored."""
    width: int = 0
    """Width of the image `box` is on (the oriented image, then the stored one): the box normalises alone."""
    height: int = 0
    clipped: float = 0.0
    """The largest distance (pixels) a side moved when the box was clipped into the image."""
    extra: str = "{}"
    """Input fields of the region with no column of their own (ODVG `label`, COCO `iscrowd`), JSON."""


@dataclass(kw_only=True)
class GroundingSample(ImageFields, Record):
    """One image with its regions. `id` is the BLAKE2b-128 of the image bytes and the regions' input."""

    kind = "grounding"

    origin: str = ""
    """Where the labels come from: odvg | refcoco | conversation | native."""
    name: str = ""
    """The image's name in the input (ODVG `filename`, COCO `file_name`, the conversation's `image`)."""
    caption: str = ""
    """The caption the phrases are taken from (ODVG grounding), '' when none."""
    claimed_width: int = 0
    """The width the annotation says the image has (0: it says none); compared with the real size."""
    claimed_height: int = 0
    orientation: int = 1
    """The EXIF orientation the decode applied (1: none)."""
    box_frame: str = "raw"
    """The frame the input's boxes are in: raw (the file's pixel grid before EXIF rotation) | oriented."""
    region_count: int = 0
    """Regions the input holds: the input count of the region identity."""
    kept_regions: int = 0
    annotation_id: str = ""
    """BLAKE2b-128 of the regions as the input gives them: with the image's pixels, the sample's
    exact-duplicate key (one image annotated twice, RefCOCO and RefCOCO+, is two samples)."""
    extra: str = "{}"
    """Input fields with no column of their own (a conversation's turns, RefCOCO's image id), JSON."""
    items: list[RegionRecord] | None = field(default=None, metadata=CHILDREN, repr=False, compare=False)
    """The sample's region records while the recipe scores them together (split off before Finish)."""
    negatives: list[str] | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """Expressions of other images of the unit, to compare a lone region against (the reader's pool)."""
    kept: list[dict[str, Any]] | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """The kept regions in slot order, stored pixels, as `KEY.json` lists them (set when settled)."""
    phrases: list[str] | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """Every region's phrase in slot order, whatever its fate (set when settled): a trainer file asks
    "where is X" only of a phrase the image names once, a dropped second X included."""

    def expected_children(self) -> dict[str, int]:
        return {"region": self.region_count}

    def members(self) -> dict[str, bytes]:
        image = self.image if self.image is not None else read_media(self.media) if self.media else None
        if image is None:
            raise ValueError(f"grounding sample {self.uid} has no encoded image to write")
        return {self.out_ext: image}

    def sample_json(self, fields: Fields) -> dict[str, Any]:
        """The shared sample JSON plus the kept regions (boxes in the stored image's pixels)."""
        row = super().sample_json(fields)
        row["regions"] = list(self.kept or [])
        return row

    def spool(self) -> bytes | None:
        return self.image

    def dedup_key(self) -> DedupKey | None:
        """The same pixels with the same regions are one sample (the larger, heavier, earlier copy
        wins); the same pixels annotated otherwise are two. pHash near duplicates (`dedup.near`, off
        by default for grounding) compare images only, so they drop the other copy's regions."""
        key = self.image_key(self.uid, self.id, self.source.unit, self.source.index)
        if key is None:
            return None
        return key._replace(exact=f"{key.exact}/{self.annotation_id}") if self.annotation_id else key


def region_json(region: RegionRecord, fields: Fields) -> dict[str, Any]:
    """A kept region as the sample's JSON lists it: the same keys for every region (HF datasets infer
    one type), declared scores NaN where absent, labels '' where absent."""
    scores = {k: _number(region.scores.get(k)) for k in fields.scores}
    return {
        "slot": region.slot,
        "box": [float(v) for v in region.box],
        "phrase": region.phrase,
        "category": region.category,
        "task": region.task,
        "ref": region.ref,
        "split": region.split,
        "label": _label(region.extra),
        "scores": scores,
        "labels": {k: str(region.labels.get(k, "")) for k in fields.labels},
    }


def _label(extra: str) -> int:
    """The input's integer class label of a region (ODVG `label`), -1 when it has none."""
    try:
        value = json.loads(extra).get("label")
    except (ValueError, AttributeError):
        return -1
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.nan
