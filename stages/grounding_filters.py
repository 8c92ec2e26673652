"""Grounding filters: box geometry, the annotated image size, expressions, and expression-region agreement.

Every filter scores first (into the region or sample ledger) and decides from its scores alone, so
`mmcurate select` can re-decide. The geometry scores are taken on the box as converted from the
input, before it is clipped: `box_overshoot` is how far it reaches past the image, and the recipe
then clips it into the image (recording `clipped`), so a small overshoot keeps a clipped box and a
large one drops the region (`box_outside`).

Agreement (`expression_agreement`, model `align`: CLIP on every region's crop against several
texts): a region's crop is compared with its own expression and its rivals: the expressions of
the image's other regions that name something else (a different phrase, a box overlapping it less
than `negative_iou`), and for an image with no such rival the configured negatives plus other
images' expressions from the same unit. `region_margin` = own cosine - the best rival's; a region
whose own expression does not win by `min_margin` is `expression_mismatch`. A region with no rival
at all is labelled `unchecked`, never silently passed (kept, or dropped with `unchecked: drop`).
"""

from __future__ import annotations

import math
import string
from typing import Literal

from pydantic import Field

from mmcurate.schemas import GroundingSample, RegionRecord

from .base import Filter, Params, register
from .measure import area, clip_box, iou, oriented_size

NEGATIVES = (
    "a blank wall",
    "the sky",
    "a patch of grass",
    "a wooden floor",
    "an empty road",
    "a page of text",
    "water",
    "a dark background",
)
"""Rivals for a lone region's crop: scene stuff a named object is rarely the best match for."""


def geometry(box: list[float], width: float, height: float) -> dict[str, float]:
    """The geometry scores of a pixel box on a `width` x `height` image (before clipping)."""
    nan = math.nan
    valid = len(box) == 4 and all(math.isfinite(v) for v in box) and box[0] < box[2] and box[1] < box[3]
    if not valid or not (width > 0 and height > 0):
        return {"box_valid": 0.0, "box_overshoot": nan, "box_area": nan, "box_min_side": nan, "box_share": nan}
    x1, y1, x2, y2 = box
    overshoot = max(0.0, -x1, -y1, x2 - width, y2 - height)
    cx1, cy1, cx2, cy2 = clip_box(box, width, height)
    inside = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1)
    return {
        "box_valid": 1.0,
        "box_overshoot": overshoot,
        "box_area": inside,
        "box_min_side": max(0.0, min(cx2 - cx1, cy2 - cy1)),
        "box_share": inside / (width * height),
    }


@register
class RegionBox(Filter):
    """Drop regions whose box is not a box, lies outside the image, is too small, or covers the image."""

    name = "region_box"
    kinds = ("region",)
    reasons = ("invalid_box", "box_outside", "box_too_small", "box_covers_image")
    scores = ("box_valid", "box_overshoot", "box_area", "box_min_side", "box_share")

    class Params(Params):
        clip_tolerance: float = Field(4.0, ge=0)
        """Pixels a box may reach past the image and still be clipped into it (annotation tools
        round outward); beyond it the region is `box_outside`."""
        min_area: float = Field(16.0, ge=0)
        """Least area in pixels of the full-resolution image (after clipping)."""
        min_side: float = Field(2.0, ge=0)
        max_share: float = Field(0.95, gt=0, le=1)
        """Most of the image a box may cover: one that is the whole image says nothing about where."""

    def score(self, record: RegionRecord) -> tuple[dict[str, float], dict[str, str]]:
        return geometry(record.box, record.width, record.height), {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        p = self.params
        if scores.get("box_valid", 1.0) < 1:
            return "invalid_box"
        if scores.get("box_overshoot", 0.0) > p.clip_tolerance:
            return "box_outside"
        if scores.get("box_area", math.inf) < p.min_area or scores.get("box_min_side", math.inf) < p.min_side:
            return "box_too_small"
        if scores.get("box_share", 0.0) > p.max_share:
            return "box_covers_image"
        return None


def size_error(rec: GroundingSample) -> float:
    """Pixels between the size the annotation claims and the image's real size, in the frame the
    boxes are in (the raw file grid, or after EXIF rotation); NaN when the input claims no size."""
    if not (rec.claimed_width and rec.claimed_height and rec.width and rec.height):
        return math.nan
    real = (rec.width, rec.height)
    if rec.box_frame == "raw":
        real = oriented_size(rec.width, rec.height, rec.orientation)  # 5..8 swap back
    return float(max(abs(real[0] - rec.claimed_width), abs(real[1] - rec.claimed_height)))


@register
class ImageSize(Filter):
    """Drop samples whose image is not the size the annotation claims (a file re-encoded since it was labelled)."""

    name = "image_size"
    kinds = ("grounding",)
    reasons = ("size_mismatch",)
    scores = ("size_error",)

    class Params(Params):
        tolerance: float = Field(1.0, ge=0)
        """Pixels the real width or height may differ from the claimed one."""

    def score(self, record: GroundingSample) -> tuple[dict[str, float], dict[str, str]]:
        return {"size_error": size_error(record)}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        value = scores.get("size_error", math.nan)
        return "size_mismatch" if math.isfinite(value) and value > self.params.tolerance else None


@register
class Expression(Filter):
    """Drop regions with an empty or overlong expression."""

    name = "expression"
    kinds = ("region",)
    reasons = ("empty_expression", "expression_too_long")
    scores = ("expr_chars", "expr_words")

    class Params(Params):
        max_chars: int = Field(200, ge=1)
        max_words: int = Field(40, ge=1)

    def score(self, record: RegionRecord) -> tuple[dict[str, float], dict[str, str]]:
        text = " ".join(record.phrase.split())
        return {"expr_chars": float(len(text)), "expr_words": float(len(text.split()))}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        if scores.get("expr_chars", 1.0) < 1:
            return "empty_expression"
        too_long = scores.get("expr_chars", 0.0) > self.params.max_chars
        if too_long or scores.get("expr_words", 0.0) > self.params.max_words:
            return "expression_too_long"
        return None


@register
class ExpressionLanguage(Filter):
    """Drop regions whose expression is confidently in a language not allowed (short ones are not judged)."""

    name = "expression_language"
    kinds = ("region",)
    reasons = ("expression_language",)
    scores = ("expr_lang_prob",)
    labels = ("expr_lang",)

    class Params(Params):
        allowed: list[str] = Field(default_factory=lambda: ["en"])
        min_prob: float = Field(0.9, ge=0, le=1)
        """A language other than `allowed` drops the region only when identified this surely."""
        min_words: int = Field(3, ge=1)
        """Expressions shorter than this are not judged (one or two words say too little)."""

    def score(self, record: RegionRecord) -> tuple[dict[str, float], dict[str, str]]:
        from .caption_filters import identify_language

        text = " ".join(record.phrase.split())
        if len(text.split()) < self.params.min_words:
            return {"expr_lang_prob": math.nan}, {"expr_lang": ""}
        lang, prob = identify_language(text)
        return {"expr_lang_prob": prob}, {"expr_lang": lang}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        lang = labels.get("expr_lang", "")
        if not lang or lang in self.params.allowed:
            return None
        return "expression_language" if scores.get("expr_lang_prob", 0.0) >= self.params.min_prob else None


@register
class RegionSplit(Filter):
    """Drop regions of the input's other splits (RefCOCO val / testA / testB out of a training corpus)."""

    name = "region_split"
    kinds = ("region",)
    reasons = ("other_split",)
    labels = ("split",)

    class Params(Params):
        keep: list[str] = Field(default_factory=lambda: ["train"])
        """Splits kept; a region whose input names no split is kept."""

    def score(self, record: RegionRecord) -> tuple[dict[str, float], dict[str, str]]:
        return {}, {"split": record.split}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        split = labels.get("split", "")
        return "other_split" if split and split not in self.params.keep else None


def template_problem(template: str, field: str = "", *, once: bool = False) -> str | None:
    """Why `template` is not a format string whose replacement fields are all a bare `{field}` (`{}`
    for field '': no conversion, spec, attribute or index), at least one (exactly one with `once`);
    None when it is. Checked at config time: a template that fails to format would fail every row."""
    shown = "{" + field + "}"
    doubled = "(write literal braces doubled: {{ }})"
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return f"is not a format string: {exc} {doubled}, got {template!r}"
    if any(name != field or spec or conv for name, spec, conv in fields):
        return f"may hold no replacement field but a bare {shown} {doubled}, got {template!r}"
    if not fields or (once and len(fields) != 1):
        return f"needs {'exactly one' if once else 'a'} {shown} for the text, got {template!r}"
    try:
        template.format(**{field: "x"}) if field else template.format("x")
    except (ValueError, IndexError, KeyError) as exc:
        return f"does not format: {type(exc).__name__}: {exc} {doubled}, got {template!r}"
    return None


class AgreementParams(Params):
    min_margin: float = 0.0
    """Cosine by which a crop's own expression must beat its best rival (0: be the best match)."""
    negative_iou: float = Field(0.5, ge=0, le=1)
    """Another region of the image is a rival only if its box overlaps this one less than this (IoU)."""
    negatives: list[str] = Field(default_factory=lambda: list(NEGATIVES))
    """Fixed rivals for an image without rival regions, with other images' expressions of the unit."""
    template: str = "{}"
    """How an expression is put to CLIP, e.g. "a photo of {}": exactly one bare `{}` (other braces doubled)."""
    context: float = Field(0.1, ge=0, le=1)
    """The crop reaches this share of the box's size past each side (CLIP sees a little context)."""
    min_crop: int = Field(8, ge=1)
    """Crops smaller than this on a side are not compared (labelled unchecked)."""
    unchecked: Literal["keep", "drop"] = "keep"
    """A region that cannot be compared (no rival, crop too small): kept with the label, or dropped."""

    def model_post_init(self, _context: object) -> None:
        problem = template_problem(self.template, once=True)
        if problem:
            raise ValueError(f"filters.expression_agreement.template {problem}")


@register
class ExpressionAgreement(Filter):
    """Drop regions whose crop matches another expression better than its own (CLIP, by a margin)."""

    name = "expression_agreement"
    kinds = ("region",)
    reasons = ("expression_mismatch", "unchecked_region")
    scores = ("region_clip", "region_margin", "region_rivals")
    labels = ("agreement",)
    model = "align"
    Params = AgreementParams

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        if labels.get("agreement", "") != "checked":
            return "unchecked_region" if self.params.unchecked == "drop" else None
        margin = scores.get("region_margin", math.nan)
        return "expression_mismatch" if not margin >= self.params.min_margin else None


def normal_phrase(text: str) -> str:
    return " ".join(text.lower().split())


def rivals(region: RegionRecord, others: list[RegionRecord], pool: list[str], params: AgreementParams) -> list[str]:
    """The texts a region's crop is compared against besides its own (distinct, in a stable order)."""
    own = normal_phrase(region.phrase)
    found: dict[str, str] = {}
    for other in others:
        if other is region or not other.phrase.strip():
            continue
        key = normal_phrase(other.phrase)
        if key != own and key not in found and iou(region.box, other.box) < params.negative_iou:
            found[key] = other.phrase
    if not found:
        for text in (*params.negatives, *pool):
            key = normal_phrase(text)
            if key and key != own and key not in found:
                found[key] = text
    return list(found.values())


def crop_box(
    box: list[float], width: float, height: float, params: AgreementParams
) -> tuple[int, int, int, int] | None:
    """The pixel crop CLIP sees for a box (with `context` around it, inside the image), or None when too small."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * params.context, (y2 - y1) * params.context
    cx1, cy1, cx2, cy2 = clip_box((x1 - dx, y1 - dy, x2 + dx, y2 + dy), width, height)
    left, top, right, bottom = math.floor(cx1), math.floor(cy1), math.ceil(cx2), math.ceil(cy2)
    if right - left < params.min_crop or bottom - top < params.min_crop or area((left, top, right, bottom)) <= 0:
        return None
    return left, top, right, bottom


def agreement_scores(sims: list[float]) -> tuple[dict[str, float], dict[str, str]]:
    """Scores from the crop's cosines with [own, *rivals]."""
    if len(sims) < 2 or not all(math.isfinite(s) for s in sims):
        own = sims[0] if sims and math.isfinite(sims[0]) else math.nan
        return {"region_clip": own, "region_margin": math.nan, "region_rivals": float(max(0, len(sims) - 1))}, {
            "agreement": "unchecked"
        }
    own, best = sims[0], max(sims[1:])
    return {"region_clip": own, "region_margin": own - best, "region_rivals": float(len(sims) - 1)}, {
        "agreement": "checked"
    }


__all__ = [
    "NEGATIVES",
    "AgreementParams",
    "agreement_scores",
    "crop_box",
    "geometry",
    "normal_phrase",
    "rivals",
    "size_error",
    "template_problem",
]
