"""Ground truth checked by the OCR model: each labelled box is cropped and read, the whole image is
read too, and the two are compared (score first, decide later).

Per line (`verify_lines`): the crop's reading against the label (`cer`), the share of the box the
detector covered (`found`) and a `tag` (`ok`, `hard`, `gt_mismatch`, `unread`, `ignore`, see
`LINE_TAGS`). Per image: the `VERIFY_SCORES` the `gt_agreement` filter decides on. A transcript
without boxes (task page) is compared as one text in reading order (`page_scores`); an image without
labels gets the model's confident lines as labels (`pseudo_lines`). `gt_boxes` catches labels in the
wrong frame (boxes outside the image) before any model runs.

Polygon areas use shapely (2.x), imported where they are computed, so a run that never verifies does
not need it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from mmcurate.schemas import OcrLine, TextLine

from .base import Filter, Params, register
from .measure import cer, normalize_transcript, quad_to_box

VERIFY_SCORES = ("ocr_cer", "ocr_recall", "ocr_found", "ocr_extra", "gt_mismatch_share", "hard_share", "gt_lines")
"""What the `ocr_verify` model stage writes for each image (NaN where undefined: no line to average)."""

BOX_SCORES = ("gt_outside", "gt_clipped")

TALL_CROP = 1.5
"""A crop at least this many times taller than wide is turned 90 degrees counter-clockwise before
recognition (vertical text), as PaddleOCR's `get_rotate_crop_image` does."""

MAX_CROP_SIDE = 4096
"""Longest side of a rectified crop: a quad with absurd coordinates cannot allocate a giant image
(the recogniser scales every crop to 48 px high anyway)."""

NAN = math.nan

# ------------------------------------------------------------------------------------------------
# Geometry


def _points(quad: Sequence[Sequence[float]]) -> np.ndarray | None:
    """The quad as a 4 x 2 float array; any other point count becomes its bounding box; None if not finite."""
    try:
        arr = np.asarray(quad, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return None
    if len(arr) < 3 or not np.isfinite(arr).all():
        return None
    if len(arr) != 4:
        (x0, y0), (x1, y1) = arr.min(axis=0), arr.max(axis=0)
        arr = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return arr


def _shoelace(arr: np.ndarray) -> float:
    x, y = arr[:, 0], arr[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def _homography(dst_w: int, dst_h: int, src: np.ndarray) -> tuple[float, ...]:
    """PIL's PERSPECTIVE coefficients taking the output rectangle's corners to the quad's (output -> input)."""
    dst = np.array([[0, 0], [dst_w, 0], [dst_w, dst_h], [0, dst_h]], dtype=np.float64)
    rows, rhs = [], []
    for (u, v), (x, y) in zip(dst, src, strict=True):
        rows.append([u, v, 1, 0, 0, 0, -u * x, -v * x])
        rows.append([0, 0, 0, u, v, 1, -u * y, -v * y])
        rhs += [x, y]
    return tuple(np.linalg.solve(np.array(rows), np.array(rhs)).tolist())


def crop_quad(image: Image.Image, quad: Sequence[Sequence[float]]) -> Image.Image | None:
    """The quad's text rectified upright: a perspective warp of its four corners onto a rectangle as
    wide as its longer horizontal edge and as high as its longer vertical edge (PaddleOCR's
    `get_rotate_crop_image`), turned 90 degrees when much taller than wide. None for a degenerate quad
    (not finite, under 2 px on a side, under 1 px of area, three corners on a line) or one wholly
    outside the image.

    Only the quad's window is warped; what lies outside the image is filled with the window's mean
    colour (black would read as a stroke).
    """
    arr = _points(quad)
    if arr is None or _shoelace(arr) < 1.0:
        return None
    width = int(max(np.linalg.norm(arr[0] - arr[1]), np.linalg.norm(arr[2] - arr[3])))
    height = int(max(np.linalg.norm(arr[0] - arr[3]), np.linalg.norm(arr[1] - arr[2])))
    if width < 2 or height < 2:
        return None
    scale = min(1.0, MAX_CROP_SIDE / max(width, height))
    width, height = max(2, round(width * scale)), max(2, round(height * scale))
    (x0, y0), (x1, y1) = np.floor(arr.min(axis=0)), np.ceil(arr.max(axis=0))
    box = (int(max(x0, 0)), int(max(y0, 0)), int(min(x1, image.width)), int(min(y1, image.height)))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return None
    window = image.crop(box)
    window = window if window.mode == "RGB" else window.convert("RGB")
    fill = tuple(int(v) for v in np.asarray(window).reshape(-1, 3).mean(axis=0))
    try:
        coeffs = _homography(width, height, arr - np.array(box[:2], dtype=np.float64))
    except np.linalg.LinAlgError:  # three corners on a line: no perspective maps a rectangle onto it
        return None
    crop = window.transform(
        (width, height), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC, fillcolor=fill
    )
    return crop.transpose(Image.Transpose.ROTATE_90) if height >= TALL_CROP * width else crop


def clip_quad(quad: Sequence[Sequence[float]], width: float, height: float) -> list[list[float]]:
    """The quad with every point clamped into the `width` x `height` image (for partly-outside boxes)."""
    return [[min(max(float(x), 0.0), float(width)), min(max(float(y), 0.0), float(height))] for x, y in quad]


def _polygon(quad: Sequence[Sequence[float]]) -> Any:
    """A valid shapely polygon of the quad (a self-intersecting one is repaired), or None."""
    import shapely

    arr = _points(quad)
    if arr is None:
        return None
    poly = shapely.Polygon(arr)
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    return poly if poly.area > 0 else None


# ------------------------------------------------------------------------------------------------
# Parameters


class AgreementParams(Params):
    """When a label and the model's reading of it disagree enough to act on.

    The defaults come from the ICDAR 2015 sample (mmocr toy set, 21 cared-for lines on 8 images,
    rapidocr 3.10, crops read without the line classifier): correct labels read at confidence >= 0.9
    are at most 0.14 CER off, the model's own misreadings ("I2R" as "IK", "CC22" as "CCZZ") come at
    <= 0.88, and the only lines beyond both bounds are label errors by eye ("bua" boxing "Buona",
    read at 0.996; "62-03" boxing "[62-03]", read "[82-03]" at 0.946).
    """

    mismatch_cer: float = 0.5
    """A line whose reading is further than this from its label (CER) ..."""
    mismatch_confidence: float = 0.9
    """... read with at least this confidence is a likely label error (`gt_mismatch`)."""
    hard_confidence: float = 0.6
    """Below this recognition confidence a line is a hard example (`hard`): kept, the data a model
    learns from; so is a line the model reads otherwise (CER past `mismatch_cer`) without the
    conviction of a `gt_mismatch` (toy set: "I2R" read "IK" at 0.70, "smrt" read "SmRT" at 0.82).
    Toy set: no cared-for line reads below 0.6 (the lowest at 0.70); 34 of the 61 do-not-care
    (`###`) crops do."""
    found_overlap: float = 0.5
    """A detected line covering this share of a label's box finds it (recall, `found`). Toy set: a
    box is covered 0 or >= 0.95, so any value between gives the same recall."""
    max_mismatch_share: float = 0.0
    """The sample is dropped (`gt_mismatch`) when more of its lines than this share are mismatched:
    one confident contradiction is enough (toy set: 2 of 8 images, both with a wrong label)."""
    max_extra: float | None = None
    """Drop (`unlabelled_text`) when more of the model's text than this share lies outside every label
    box (incomplete labels); None: not decided on. 0.0 on every toy image (ICDAR boxes all text,
    illegible text as `###`), so a set labelled like it can enable it; one that labels only some
    of its text would lose most of its images."""
    ignore_case: bool = False
    """Compare labels and readings case-insensitively. Off: a label is a training target, its case
    included (toy set: mean CER 0.207 and recall 0.417 as is, 0.146 and 0.479 ignoring case)."""

    def model_post_init(self, _context: object) -> None:
        key = "filters.gt_agreement"
        if not (math.isfinite(self.mismatch_cer) and self.mismatch_cer >= 0):
            raise ValueError(f"{key}.mismatch_cer must be a finite number >= 0, got {self.mismatch_cer}")
        for name in ("mismatch_confidence", "hard_confidence", "max_mismatch_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key}.{name} must be within 0..1, got {value}")
        if not 0.0 < self.found_overlap <= 1.0:
            raise ValueError(f"{key}.found_overlap must be within (0, 1], got {self.found_overlap}")
        if self.max_extra is not None and not 0.0 <= self.max_extra <= 1.0:
            raise ValueError(f"{key}.max_extra must be within 0..1 or null, got {self.max_extra}")
        if self.hard_confidence > self.mismatch_confidence:
            raise ValueError(
                f"{key}.hard_confidence ({self.hard_confidence}) must not exceed {key}.mismatch_confidence "
                f"({self.mismatch_confidence}): a reading cannot be too weak to trust and confident enough to overrule"
            )


# ------------------------------------------------------------------------------------------------
# Verification


def _norm(text: str, params: AgreementParams) -> str:
    return normalize_transcript(text, ignore_case=params.ignore_case)


def _chars(text: str) -> int:
    return len("".join(text.split()))


def _tag(line: TextLine, params: AgreementParams) -> str:
    if line.ignore:
        return "ignore"
    if math.isnan(line.confidence):
        return "unread"
    if line.cer > params.mismatch_cer and line.confidence >= params.mismatch_confidence:
        return "gt_mismatch"
    if line.confidence < params.hard_confidence or line.cer > params.mismatch_cer:
        # the model cannot read it (or reads it otherwise without conviction): a hard example, kept
        return "hard"
    return "ok"


def _coverage(line: TextLine, polys: list[Any]) -> list[float]:
    """The share of the line's box each model line covers (0 for all when the box is degenerate)."""
    poly = _polygon(line.quad) if line.quad else None
    if poly is None:
        return [0.0] * len(polys)
    return [min(1.0, poly.intersection(p).area / poly.area) if p is not None else 0.0 for p in polys]


def _read_by(line: TextLine, cover: list[float], model_lines: Sequence[OcrLine], params: AgreementParams) -> bool:
    """ICDAR-style "found and read": one model line covers the box enough and its text holds the label's."""
    want = _norm(line.text, params)
    return bool(want) and any(
        c >= params.found_overlap and want in _norm(m.text, params) for c, m in zip(cover, model_lines, strict=True)
    )


def _extra(model_lines: Sequence[OcrLine], polys: list[Any], lines: list[TextLine]) -> float:
    """Share of the model's characters on lines overlapping no label box (ignore boxes included)."""
    boxes = [p for p in (_polygon(ln.quad) for ln in lines if ln.quad) if p is not None]
    total = outside = 0
    for m, poly in zip(model_lines, polys, strict=True):
        n = _chars(m.text)
        total += n
        if poly is None or not any(poly.intersects(b) and poly.intersection(b).area > 0 for b in boxes):
            outside += n
    return outside / total if total else NAN


def _share(count: int, of: int) -> float:
    return count / of if of else NAN


def verify_lines(lines: list[TextLine], model_lines: Sequence[OcrLine], params: AgreementParams) -> dict[str, float]:
    """Set each line's `cer`, `found` and `tag` from its crop reading (`read`, `confidence`: NaN when
    it was not read) and the model's lines (same pixel frame); return the image's `VERIFY_SCORES`.

    Lines tagged `pseudo` (the model's own lines as labels) keep their tag. Each line counts at most
    1 in the mean CER, so one runaway reading cannot outweigh the rest of the image.
    """
    polys = [_polygon(m.box) for m in model_lines]
    cared = recalled = found = 0
    cers: list[float] = []
    tags: list[str] = []
    for line in lines:
        cover = _coverage(line, polys)
        line.found = max(cover, default=0.0)
        read = not line.ignore and not math.isnan(line.confidence)
        line.cer = cer(line.read, line.text, ignore_case=params.ignore_case) if read else NAN
        if line.tag != "pseudo":
            line.tag = _tag(line, params)
        if line.ignore:
            continue
        cared += 1
        found += line.found >= params.found_overlap
        recalled += _read_by(line, cover, model_lines, params)
        if read:
            cers.append(min(line.cer, 1.0))
        tags.append(line.tag)
    return {
        "ocr_cer": float(np.mean(cers)) if cers else NAN,
        "ocr_recall": _share(recalled, cared),
        "ocr_found": _share(found, cared),
        "ocr_extra": _extra(model_lines, polys, lines),
        "gt_mismatch_share": _share(tags.count("gt_mismatch"), cared),
        "hard_share": _share(tags.count("hard"), cared),
        "gt_lines": float(cared),
    }


def reading_order(model_lines: Sequence[OcrLine]) -> str:
    """The lines' text top to bottom, left to right: a line joins the current row when its vertical
    centre lies within the row's first line's height; rows are joined by newlines, a row's lines by
    spaces. One column only: side-by-side columns interleave row by row.
    """
    boxes = [(quad_to_box(m.box), m.text.strip()) for m in model_lines if m.box and m.text.strip()]
    boxes.sort(key=lambda b: ((b[0][1] + b[0][3]) / 2, b[0][0]))
    rows: list[list[tuple[Any, str]]] = []
    for box, text in boxes:
        centre = (box[1] + box[3]) / 2
        if rows and rows[-1][0][0][1] <= centre <= rows[-1][0][0][3]:
            rows[-1].append((box, text))
        else:
            rows.append([(box, text)])
    return "\n".join(" ".join(t for _, t in sorted(row, key=lambda b: b[0][0])) for row in rows)


def page_scores(transcript: str, model_lines: Sequence[OcrLine], params: AgreementParams) -> dict[str, float]:
    """A transcript without boxes against the model's text in reading order: `ocr_cer`, and the page
    as one line for `gt_mismatch_share` / `hard_share` (the mean confidence of the model's lines,
    0 when it found none). Recall, detection and extra text need boxes: NaN.
    """
    confidence = float(np.mean([m.confidence for m in model_lines])) if model_lines else 0.0
    labelled = bool(_norm(transcript, params))
    error = cer(reading_order(model_lines), transcript, ignore_case=params.ignore_case) if labelled else NAN
    mismatch = labelled and error > params.mismatch_cer and confidence >= params.mismatch_confidence
    hard = labelled and not mismatch and confidence < params.hard_confidence
    return {
        "ocr_cer": error,
        "ocr_recall": NAN,
        "ocr_found": NAN,
        "ocr_extra": NAN,
        "gt_mismatch_share": float(mismatch) if labelled else NAN,
        "hard_share": float(hard) if labelled else NAN,
        "gt_lines": float(labelled),
    }


def pseudo_lines(model_lines: Sequence[OcrLine], min_confidence: float, lang: str = "") -> list[TextLine]:
    """The model's lines at or above `min_confidence` as the labels of an image that has none: tag
    `pseudo`, read as labelled (cer 0, found 1), the model's confidence kept."""
    out = []
    for m in model_lines:
        if m.confidence < min_confidence or not m.text.strip():
            continue
        verified = {"read": m.text, "confidence": m.confidence, "cer": 0.0, "found": 1.0, "tag": "pseudo"}
        out.append(TextLine([list(p) for p in m.box], m.text, lang, **verified))  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------------------------------------
# Filters


@register
class GtAgreement(Filter):
    """Drop samples whose labels the model contradicts, that hold nothing to learn, or much unlabelled text.

    `score` computes nothing: the `ocr_verify` model stage (whole-image OCR plus recognition of each
    labelled box) writes `VERIFY_SCORES`, and `decide` reads them.
    """

    kinds = ("ocr",)
    name = "gt_agreement"
    reasons = ("no_text", "gt_mismatch", "unlabelled_text")
    scores = VERIFY_SCORES
    model: ClassVar[str] = "ocr_verify"
    Params = AgreementParams

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return {}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        p: AgreementParams = self.params  # type: ignore[assignment]
        if scores["gt_lines"] == 0:
            return "no_text"
        if scores["gt_mismatch_share"] > p.max_mismatch_share:
            return "gt_mismatch"
        if p.max_extra is not None and scores["ocr_extra"] > p.max_extra:
            return "unlabelled_text"
        return None


def box_inside(quad: Sequence[Sequence[float]], width: float, height: float) -> tuple[bool, bool]:
    """(outside, clipped) for one label box on a `width` x `height` image: outside when under 1 px of
    its area lies inside (a degenerate box: when a corner lies outside), clipped when partly outside."""
    import shapely

    arr = _points(quad)
    if arr is None:
        return True, False
    beyond = bool((arr[:, 0] < 0).any() or (arr[:, 0] > width).any() or (arr[:, 1] < 0).any())
    beyond = beyond or bool((arr[:, 1] > height).any())
    poly = _polygon(quad)
    if poly is None or poly.area < 1.0:
        return beyond, False
    inside = poly.intersection(shapely.box(0, 0, width, height)).area
    outside = inside < 1.0
    return outside, beyond and not outside


@register
class GtBoxes(Filter):
    """Drop samples with label boxes outside their image (labels in another frame, or corrupt).

    Every line with a box counts, do-not-care ones too: a box outside the image says the labels are in
    the wrong frame, whatever its text.
    """

    kinds = ("ocr",)
    name = "gt_boxes"
    reasons = ("box_outside_image",)
    scores = BOX_SCORES

    class Params(Params):
        max_outside: int = 0
        """Most lines whose box lies (all but under 1 px) outside the image."""

        def model_post_init(self, _context: object) -> None:
            if self.max_outside < 0:
                raise ValueError(f"filters.gt_boxes.max_outside must be >= 0, got {self.max_outside}")

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        outside = clipped = 0
        for line in record.lines:
            if not line.quad:
                continue
            out, clip = box_inside(line.quad, record.width, record.height)
            outside += out
            clipped += clip
        return {"gt_outside": float(outside), "gt_clipped": float(clipped)}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        return "box_outside_image" if scores["gt_outside"] > self.params.max_outside else None  # type: ignore[attr-defined]
