"""Box geometry and character error rate, shared by answer verification and the OCR and grounding corpora.

Box conventions (every function here follows them):

* A box is `(x1, y1, x2, y2)` ("xyxy") in continuous image coordinates: pixel units, x to the
  right, y down, origin at the top-left corner of the top-left pixel. Pixel (i, j) covers
  [i, i + 1) x [j, j + 1), so on the pixel grid a box is half-open: it holds the pixels
  x1 <= i < x2, y1 <= j < y2, and its width is x2 - x1. Closed (inclusive) pixel bounds, as PIL's
  `ImageDraw.rectangle` fills them, convert with `box_from_closed`.
* COCO's `(x, y, w, h)` ("xywh") is the same frame: x2 = x + w.
* Normalised coordinates are fractions of the image width and height, [0, 1] over the image.
* The 1000 grid is GLM-4.1V / GLM-4.5V's `<|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>` (and
  Qwen2-VL's `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`) frame: `round(x / width * 1000)`,
  integers 0..1000. Qwen2.5-VL answers in absolute pixels of its resized input instead.
* A quad is four (x, y) points in reading order, clockwise from the text's top-left corner, as
  ICDAR and PaddleOCR detectors give them.
* Only `to_grid` rounds (Python's `round`, ties to even); everything else returns floats.

Character error rate is Levenshtein distance / reference length (`rapidfuzz`, the `rl` extra),
over code points after `normalize_transcript`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence

Box = tuple[float, float, float, float]
Point = tuple[float, float]
Quad = tuple[Point, Point, Point, Point]

GRID = 1000
"""Side of the integer grid GLM-4.5V and Qwen2-VL give box coordinates on."""
MAX_BOXES = 100
"""More boxes than this in one text is not an answer: `parse_boxes` returns none."""

# ----------------------------------------------------------------------------------------------
# Boxes in model text

_BN = r"[-+]?\d+(?:\.\d+)?"
_BOX_FORMS = re.compile(
    rf"[\[(]\s*(?P<a>{_BN})\s*,\s*(?P<b>{_BN})\s*,\s*(?P<c>{_BN})\s*,\s*(?P<d>{_BN})\s*[\])]"
    rf"|\(\s*(?P<e>{_BN})\s*,\s*(?P<f>{_BN})\s*\)\s*,?\s*(?:to\s*|-\s*)?\(\s*(?P<g>{_BN})\s*,\s*(?P<h>{_BN})\s*\)"
)
_LOOSE_NUMBER = re.compile(rf"(?<![\w.]){_BN}(?![\w.])")


def parse_boxes(text: str, max_chars: int = 100_000) -> list[Box]:
    """Boxes in model text, corners sorted, in order of appearance; [] when there are over `MAX_BOXES`.

    Forms: `[x1, y1, x2, y2]`, `(x1, y1, x2, y2)`, `[[...], [...]]`, `(x1,y1),(x2,y2)` (also with
    `to` or `-` between the points), Qwen's `{"bbox_2d": [...]}`; without any, a text holding exactly
    four numbers is one box. Coordinates are returned as written, in whatever frame the model used.
    """
    if not isinstance(text, str) or len(text) > max_chars:
        return []
    text = " ".join(text.split())
    boxes: list[Box] = []
    for m in _BOX_FORMS.finditer(text):
        nums = [v for v in m.groups() if v is not None]
        boxes.append(sorted_box(map(float, nums)))
        if len(boxes) > MAX_BOXES:
            return []
    if not boxes:
        nums = _LOOSE_NUMBER.findall(text)
        if len(nums) == 4:
            boxes.append(sorted_box(map(float, nums)))
    return [b for b in boxes if all(math.isfinite(v) for v in b)]


# ----------------------------------------------------------------------------------------------
# Box geometry


def sorted_box(box: Iterable[float]) -> Box:
    """`(x1, y1, x2, y2)` with x1 <= x2 and y1 <= y2, from two opposite corners in any order."""
    x1, y1, x2, y2 = box
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def area(box: Sequence[float]) -> float:
    """Area of a box (corners in any order)."""
    x1, y1, x2, y2 = sorted_box(box)
    return (x2 - x1) * (y2 - y1)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (corners in any order); 0 when the union is empty or not finite."""
    ax1, ay1, ax2, ay2 = sorted_box(a)
    bx1, by1, bx2, by2 = sorted_box(b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if not union > 0 or not math.isfinite(union):
        return 0.0
    return max(0.0, min(1.0, inter / union))


def box_from_closed(box: Sequence[float]) -> Box:
    """The half-open box of closed pixel bounds (first and last pixel included, as `ImageDraw.rectangle`)."""
    x1, y1, x2, y2 = sorted_box(box)
    return (x1, y1, x2 + 1, y2 + 1)


def xyxy_to_xywh(box: Sequence[float]) -> Box:
    """`(x1, y1, x2, y2)` -> COCO `(x, y, w, h)` (corners sorted first, so w, h >= 0)."""
    x1, y1, x2, y2 = sorted_box(box)
    return (x1, y1, x2 - x1, y2 - y1)


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    """COCO `(x, y, w, h)` -> `(x1, y1, x2, y2)`."""
    x, y, w, h = box
    return (x, y, x + w, y + h)


def _check_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got {width}x{height}")


def to_normalized(box: Sequence[float], width: float, height: float) -> Box:
    """Pixel box -> fractions of the image size ([0, 1] inside the image)."""
    _check_size(width, height)
    x1, y1, x2, y2 = box
    return (x1 / width, y1 / height, x2 / width, y2 / height)


def from_normalized(box: Sequence[float], width: float, height: float) -> Box:
    """Fractions of the image size -> pixel box."""
    _check_size(width, height)
    x1, y1, x2, y2 = box
    return (x1 * width, y1 * height, x2 * width, y2 * height)


def to_grid(box: Sequence[float], width: float, height: float, grid: int = GRID) -> tuple[int, int, int, int]:
    """Pixel box -> integers on the 0..`grid` grid (`round(x / width * grid)`, clamped to the image)."""
    _check_size(width, height)
    x1, y1, x2, y2 = box

    def step(v: float, size: float) -> int:
        return min(grid, max(0, round(v / size * grid)))

    return (step(x1, width), step(y1, height), step(x2, width), step(y2, height))


def to_glm_grid(box: Sequence[float], width: float, height: float) -> tuple[int, int, int, int]:
    """Pixel box -> GLM-4.5V's answer grid: integers in [0, 1000) (`to_grid`, the far edge clamped to 999)."""
    return tuple(min(v, GRID - 1) for v in to_grid(sorted_box(box), width, height))  # type: ignore[return-value]


def from_grid(box: Sequence[float], width: float, height: float, grid: int = GRID) -> Box:
    """0..`grid` grid coordinates -> pixel box (exact inverse of `to_grid` up to its rounding: half a step)."""
    _check_size(width, height)
    x1, y1, x2, y2 = box
    return (x1 / grid * width, y1 / grid * height, x2 / grid * width, y2 / grid * height)


def clip_box(box: Sequence[float], width: float, height: float) -> Box:
    """The part of a box inside a `width` x `height` image; zero-area (check `area`) when it lies outside."""
    x1, y1, x2, y2 = sorted_box(box)
    x1, x2 = (min(max(v, 0.0), width) for v in (x1, x2))
    y1, y2 = (min(max(v, 0.0), height) for v in (y1, y2))
    return (x1, y1, x2, y2)


def box_to_quad(box: Sequence[float]) -> Quad:
    """The four corners of a box: top-left, top-right, bottom-right, bottom-left (clockwise)."""
    x1, y1, x2, y2 = sorted_box(box)
    return ((x1, y1), (x2, y1), (x2, y2), (x1, y2))


def _quad(points: Iterable[Point]) -> Quad:
    a, b, c, d = points  # exactly four
    return (a, b, c, d)


def quad_to_box(quad: Sequence[Sequence[float]]) -> Box:
    """The axis-aligned box enclosing a quad (or any list of points)."""
    xs = [p[0] for p in quad]
    ys = [p[1] for p in quad]
    return (min(xs), min(ys), max(xs), max(ys))


# ----------------------------------------------------------------------------------------------
# Resizing and EXIF orientation: annotations of the original file onto the stored image


def resize_factors(src_size: tuple[float, float], dst_size: tuple[float, float]) -> tuple[float, float]:
    """`(sx, sy)` taking coordinates on a `src_size` (width, height) image to a resize of it to `dst_size`."""
    _check_size(*src_size)
    return (dst_size[0] / src_size[0], dst_size[1] / src_size[1])


def scale_box(box: Sequence[float], sx: float, sy: float) -> Box:
    """A box on an image resized by (sx, sy); edges scale with the image, so pixel coverage is kept."""
    x1, y1, x2, y2 = box
    return sorted_box((x1 * sx, y1 * sy, x2 * sx, y2 * sy))


def scale_quad(quad: Sequence[Sequence[float]], sx: float, sy: float) -> Quad:
    """A quad on an image resized by (sx, sy), points in the same order."""
    return _quad((x * sx, y * sy) for x, y in quad)


# Where a point of the stored file (width w, height h) lands once PIL's `ImageOps.exif_transpose`
# has applied the orientation tag; 5..8 swap the sides.
_ORIENT: dict[int, Callable[[float, float, float, float], Point]] = {
    2: lambda x, y, w, h: (w - x, y),  # mirrored horizontally
    3: lambda x, y, w, h: (w - x, h - y),  # rotated 180
    4: lambda x, y, w, h: (x, h - y),  # mirrored vertically
    5: lambda x, y, w, h: (y, x),  # transposed (mirrored about the main diagonal)
    6: lambda x, y, w, h: (h - y, x),  # rotated 90 clockwise to display
    7: lambda x, y, w, h: (h - y, w - x),  # transversed (mirrored about the anti-diagonal)
    8: lambda x, y, w, h: (y, w - x),  # rotated 90 counter-clockwise to display
}
_INVERSE_ORIENTATION = {6: 8, 8: 6}


def oriented_size(width: float, height: float, orientation: int) -> tuple[float, float]:
    """The (width, height) of a `width` x `height` image after applying EXIF `orientation`."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def inverse_orientation(orientation: int) -> int:
    """The orientation that undoes `orientation` (applied to the oriented image): 6 <-> 8, others self-inverse."""
    return _INVERSE_ORIENTATION.get(orientation, orientation)


def orient_point(point: Sequence[float], orientation: int, width: float, height: float) -> Point:
    """A point of a `width` x `height` image (sizes before rotation) after EXIF `orientation` is applied.

    Matches `PIL.ImageOps.exif_transpose`: values outside 2..8 leave the image (and the point) as is.
    """
    x, y = point
    f = _ORIENT.get(orientation)
    return (x, y) if f is None else f(x, y, width, height)


def orient_box(box: Sequence[float], orientation: int, width: float, height: float) -> Box:
    """A box of a `width` x `height` image (sizes before rotation) on that image after EXIF `orientation`."""
    x1, y1, x2, y2 = box
    (ax, ay), (bx, by) = (orient_point(p, orientation, width, height) for p in ((x1, y1), (x2, y2)))
    return sorted_box((ax, ay, bx, by))


def orient_quad(quad: Sequence[Sequence[float]], orientation: int, width: float, height: float) -> Quad:
    """A quad after EXIF `orientation`, point for point: the first point stays the text's first corner.

    The mirroring orientations (2, 4, 5, 7) reverse the winding, as they mirror the text.
    """
    return _quad(orient_point(p, orientation, width, height) for p in quad)


def stored_box(
    box: Sequence[float], raw_size: tuple[float, float], stored_size: tuple[float, float], orientation: int = 1
) -> Box:
    """A box on the original file (`raw_size`, before EXIF rotation) on the oriented, resized `stored_size` image."""
    oriented = orient_box(box, orientation, *raw_size)
    return scale_box(oriented, *resize_factors(oriented_size(*raw_size, orientation), stored_size))


def stored_quad(
    quad: Sequence[Sequence[float]],
    raw_size: tuple[float, float],
    stored_size: tuple[float, float],
    orientation: int = 1,
) -> Quad:
    """A quad on the original file (`raw_size`, before EXIF rotation) on the oriented, resized `stored_size` image."""
    oriented = orient_quad(quad, orientation, *raw_size)
    return scale_quad(oriented, *resize_factors(oriented_size(*raw_size, orientation), stored_size))


# ----------------------------------------------------------------------------------------------
# Character error rate


def normalize_transcript(text: str, *, ignore_case: bool = False, ignore_whitespace: bool = False) -> str:
    """NFKC, whitespace runs collapsed to one space (removed with `ignore_whitespace`), lowercased with `ignore_case`.

    Layout whitespace (line breaks, double spaces) is not a recognition error, and full-width or
    other compatibility forms of a letter are the same character.
    """
    s = unicodedata.normalize("NFKC", text)
    s = "".join(s.split()) if ignore_whitespace else " ".join(s.split())
    return s.lower() if ignore_case else s


def edit_distance(a: str, b: str, *, max_distance: int | None = None) -> int:
    """Levenshtein distance over code points; `max_distance + 1` as soon as it is known to exceed `max_distance`.

    The bound makes a hopeless pair cheap (rapidfuzz stops early), which matters for long transcripts.
    """
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError as e:
        raise ImportError("edit distance needs rapidfuzz: pip install 'mmcurate[rl]'") from e
    return int(Levenshtein.distance(a, b, score_cutoff=max_distance))


def cer(prediction: str, reference: str, *, ignore_case: bool = False, ignore_whitespace: bool = False) -> float:
    """Character error rate: edit distance / reference length, both `normalize_transcript`-ed.

    0 for two empty strings; infinite for a non-empty prediction of an empty reference. It exceeds 1
    when the prediction is much longer than the reference.
    """
    ref = normalize_transcript(reference, ignore_case=ignore_case, ignore_whitespace=ignore_whitespace)
    pred = normalize_transcript(prediction, ignore_case=ignore_case, ignore_whitespace=ignore_whitespace)
    if not ref:
        return 0.0 if not pred else math.inf
    return edit_distance(pred, ref) / len(ref)
