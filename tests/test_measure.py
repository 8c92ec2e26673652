"""Box geometry and CER (stages/measure.py): known values, round trips, and EXIF orientations checked
against Pillow actually rotating an image with a rectangle drawn in it."""

from __future__ import annotations

import importlib.util
import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageOps

from mmcurate.stages.measure import (
    GRID,
    area,
    box_from_closed,
    box_to_quad,
    cer,
    clip_box,
    edit_distance,
    from_grid,
    from_normalized,
    inverse_orientation,
    iou,
    orient_box,
    orient_point,
    orient_quad,
    oriented_size,
    parse_boxes,
    quad_to_box,
    resize_factors,
    scale_box,
    scale_quad,
    sorted_box,
    stored_box,
    stored_quad,
    to_grid,
    to_normalized,
    xywh_to_xyxy,
    xyxy_to_xywh,
)

needs_rapidfuzz = pytest.mark.skipif(importlib.util.find_spec("rapidfuzz") is None, reason="needs rapidfuzz")

SIZES = st.floats(1, 10_000)
COORDS = st.floats(-1e4, 1e4, allow_nan=False)
BOXES = st.tuples(COORDS, COORDS, COORDS, COORDS).map(sorted_box)


def close_boxes(a: tuple[float, ...], b: tuple[float, ...], tol: float = 1e-6) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=tol) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------------------------
# Known values


def test_iou_known_values() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)  # contained
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no area
    assert iou((10, 10, 0, 0), (0, 0, 10, 10)) == 1.0  # corners in any order
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert iou((0, 0, math.inf, 1), (0, 0, 1, 1)) == 0.0


def test_parse_boxes_forms() -> None:
    assert parse_boxes("[10, 20, 30, 40]") == [(10, 20, 30, 40)]
    assert parse_boxes('{"bbox_2d": [30, 40, 10, 20]}') == [(10, 20, 30, 40)]  # corners sorted
    assert parse_boxes("(1,2),(3,4) and (5, 6) to (7, 8)") == [(1, 2, 3, 4), (5, 6, 7, 8)]
    assert parse_boxes("x1 1 y1 2 x2 3 y2 4") == [(1, 2, 3, 4)]
    assert parse_boxes("[0,0,1,1]" * 101) == []  # over MAX_BOXES


def test_conversions_known_values() -> None:
    assert xyxy_to_xywh((10, 20, 30, 60)) == (10, 20, 20, 40)
    assert xywh_to_xyxy((10, 20, 20, 40)) == (10, 20, 30, 60)
    assert to_normalized((0, 0, 640, 480), 640, 480) == (0, 0, 1, 1)
    assert from_normalized((0.25, 0.5, 0.5, 1.0), 640, 480) == (160, 240, 320, 480)
    assert to_grid((0, 0, 640, 480), 640, 480) == (0, 0, GRID, GRID)
    assert to_grid((64, 48, 320, 240), 640, 480) == (100, 100, 500, 500)
    assert to_grid((-5, -5, 700, 500), 640, 480) == (0, 0, 1000, 1000)  # clamped to the image
    assert from_grid((100, 100, 500, 500), 640, 480) == pytest.approx((64, 48, 320, 240))
    assert area((0, 0, 10, 5)) == 50
    assert box_from_closed((2, 3, 2, 3)) == (2, 3, 3, 4)  # one pixel is one unit square
    with pytest.raises(ValueError, match="positive"):
        to_normalized((0, 0, 1, 1), 0, 10)


def test_clip_and_quads() -> None:
    assert clip_box((-10, 5, 50, 120), 40, 100) == (0, 5, 40, 100)
    assert area(clip_box((50, 50, 60, 60), 40, 40)) == 0  # wholly outside
    quad = box_to_quad((1, 2, 5, 7))
    assert quad == ((1, 2), (5, 2), (5, 7), (1, 7))  # clockwise from the top-left
    assert quad_to_box(quad) == (1, 2, 5, 7)
    assert quad_to_box([(3, 0), (6, 3), (3, 6), (0, 3)]) == (0, 0, 6, 6)  # a rotated square
    assert scale_quad(quad, 2, 0.5) == ((2, 1), (10, 1), (10, 3.5), (2, 3.5))
    assert scale_box((10, 10, 20, 20), 0.5, 2) == (5, 20, 10, 40)
    assert resize_factors((640, 480), (320, 240)) == (0.5, 0.5)


# ----------------------------------------------------------------------------------------------
# Round trips


@given(box=BOXES, w=SIZES, h=SIZES)
def test_normalized_round_trip(box: tuple[float, ...], w: float, h: float) -> None:
    assert close_boxes(from_normalized(to_normalized(box, w, h), w, h), box, tol=1e-6)


@given(box=BOXES)
def test_xywh_round_trip(box: tuple[float, ...]) -> None:
    xywh = xyxy_to_xywh(box)
    assert xywh[2] >= 0 and xywh[3] >= 0
    assert close_boxes(xywh_to_xyxy(xywh), box, tol=1e-8)


@given(data=st.data(), w=st.integers(1, 8000), h=st.integers(1, 8000))
def test_grid_round_trip_within_one_step(data: st.DataObject, w: int, h: int) -> None:
    xs = sorted(data.draw(st.lists(st.floats(0, w), min_size=2, max_size=2)))
    ys = sorted(data.draw(st.lists(st.floats(0, h), min_size=2, max_size=2)))
    box = (xs[0], ys[0], xs[1], ys[1])
    grid = to_grid(box, w, h)
    assert all(isinstance(v, int) and 0 <= v <= GRID for v in grid)
    back = from_grid(grid, w, h)
    steps = (w / GRID, h / GRID, w / GRID, h / GRID)
    assert all(abs(b - a) <= s for a, b, s in zip(box, back, steps, strict=True))
    assert to_grid(back, w, h) == grid  # a grid box survives the trip exactly


@given(quad=st.lists(st.tuples(COORDS, COORDS), min_size=4, max_size=4))
def test_quad_box_round_trip(quad: list[tuple[float, float]]) -> None:
    box = quad_to_box(quad)
    assert all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in quad)
    assert quad_to_box(box_to_quad(box)) == box


@given(box=BOXES, o=st.integers(1, 8), w=st.integers(1, 5000), h=st.integers(1, 5000))
def test_orientation_inverse(box: tuple[float, ...], o: int, w: int, h: int) -> None:
    there = orient_box(box, o, w, h)
    # Mirroring computes w - x: float rounding at coordinates up to 5000 px (~1e-12 each side)
    assert area(there) == pytest.approx(area(box), abs=1e-9 * max(w, h, *box))
    assert close_boxes(orient_box(there, inverse_orientation(o), *oriented_size(w, h, o)), box, tol=1e-6)


def test_unknown_orientation_is_identity() -> None:
    """As `ImageOps.exif_transpose`, which leaves an image with a bogus tag as it is."""
    for o in (0, 1, 9, 255):
        assert orient_point((3, 4), o, 10, 20) == (3, 4)
        assert oriented_size(10, 20, o) == (10, 20)


# ----------------------------------------------------------------------------------------------
# EXIF orientation and resizing against Pillow

RAW_SIZE = (40, 24)
RECT = (6, 4, 17, 11)  # closed pixel bounds of the drawn rectangle: columns 6..17, rows 4..11
RED, GREEN = (255, 0, 0), (0, 255, 0)


def _file_with_orientation(orientation: int) -> Image.Image:
    """A PNG as a camera would store it: raw pixels plus an orientation tag, the text's first pixel green."""
    img = Image.new("RGB", RAW_SIZE)
    draw = ImageDraw.Draw(img)
    draw.rectangle(RECT, fill=RED)
    draw.point(RECT[:2], fill=GREEN)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=exif.tobytes())
    return Image.open(io.BytesIO(buf.getvalue()))


def _covered(img: Image.Image, colour: tuple[int, int, int], tol: int = 0) -> tuple[float, float, float, float]:
    """The half-open box of the pixels of `colour` (within `tol` per channel)."""
    a = np.asarray(img.convert("RGB")).astype(int)
    ys, xs = np.nonzero(np.all(np.abs(a - colour) <= tol, axis=-1))
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_box_matches_exif_transpose(orientation: int) -> None:
    raw = _file_with_orientation(orientation)
    assert raw.getexif()[0x0112] == orientation
    shown = ImageOps.exif_transpose(raw)
    assert shown.size == oriented_size(*RAW_SIZE, orientation)
    box = box_from_closed(RECT)
    assert orient_box(box, orientation, *RAW_SIZE) == _covered(shown, RED)
    # the quad's first point stays at the corner of the first (green) pixel
    first_pixel = (RECT[0], RECT[1], RECT[0] + 1, RECT[1] + 1)
    green = _covered(shown, GREEN)
    assert orient_box(first_pixel, orientation, *RAW_SIZE) == green
    quad = orient_quad(box_to_quad(box), orientation, *RAW_SIZE)
    assert quad_to_box(quad) == _covered(shown, RED)
    assert green[0] <= quad[0][0] <= green[2] and green[1] <= quad[0][1] <= green[3]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("factor", [2, 0.5])
def test_stored_box_exact_for_integer_resizes(orientation: int, factor: float) -> None:
    """Nearest-neighbour resizing by 2 or 1/2 of a rectangle on even pixel edges is exact."""
    shown = ImageOps.exif_transpose(_file_with_orientation(orientation))
    stored = shown.resize((round(shown.width * factor), round(shown.height * factor)), Image.Resampling.NEAREST)
    box = box_from_closed(RECT)
    assert stored_box(box, RAW_SIZE, stored.size, orientation) == _covered(stored, RED)
    quad = stored_quad(box_to_quad(box), RAW_SIZE, stored.size, orientation)
    assert quad_to_box(quad) == _covered(stored, RED)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_stored_box_for_odd_resizes(orientation: int) -> None:
    """Any resize: the mapped box is where the rectangle lands, to within a pixel of filter blur."""
    shown = ImageOps.exif_transpose(_file_with_orientation(orientation))
    stored = shown.resize((shown.width * 7 // 10, shown.height * 13 // 10), Image.Resampling.BILINEAR)
    mapped = stored_box(box_from_closed(RECT), RAW_SIZE, stored.size, orientation)
    solid = _covered(stored, RED, tol=100)  # pixels at least about half red
    assert all(abs(a - b) <= 1.0 for a, b in zip(mapped, solid, strict=True)), (mapped, solid)
    assert iou(mapped, solid) > 0.8


# ----------------------------------------------------------------------------------------------
# Character error rate


def _textbook_levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@needs_rapidfuzz
def test_cer_known_values() -> None:
    assert cer("sitting", "kitten") == pytest.approx(3 / 6)
    assert cer("kitten", "sitting") == pytest.approx(3 / 7)  # per reference character
    assert cer("STOP", "STOP") == 0.0
    assert cer("", "STOP") == 1.0
    assert cer("STOPSTOP", "ST") == 3.0  # insertions can take it past 1
    assert cer("", "") == 0.0 and cer("x", "") == math.inf
    assert cer("Hello\n  World", "Hello World") == 0.0  # layout whitespace is no error
    assert cer("\uff33\uff34\uff2f\uff30", "STOP") == 0.0  # full-width letters (NFKC)
    assert cer("stop", "STOP") == 1.0 and cer("stop", "STOP", ignore_case=True) == 0.0
    assert cer("HelloWorld", "Hello World") == pytest.approx(1 / 11)
    assert cer("HelloWorld", "Hello World", ignore_whitespace=True) == 0.0
    assert cer("北京欢迎你", "北京欢迎您") == pytest.approx(1 / 5)


@needs_rapidfuzz
@given(st.text(max_size=40), st.text(min_size=1, max_size=40), st.booleans(), st.booleans())
@settings(max_examples=300)
def test_cer_is_rapidfuzz_levenshtein_over_reference_length(
    prediction: str, reference: str, ignore_case: bool, ignore_whitespace: bool
) -> None:
    from rapidfuzz.distance import Levenshtein

    from mmcurate.stages.measure import normalize_transcript

    kw = {"ignore_case": ignore_case, "ignore_whitespace": ignore_whitespace}
    ref, pred = normalize_transcript(reference, **kw), normalize_transcript(prediction, **kw)
    if ref:
        assert cer(prediction, reference, **kw) == Levenshtein.distance(pred, ref) / len(ref)


@needs_rapidfuzz
@given(st.text(max_size=30), st.text(max_size=30), st.integers(0, 35))
@settings(max_examples=300)
def test_bounded_edit_distance(a: str, b: str, k: int) -> None:
    exact = _textbook_levenshtein(a, b)
    assert edit_distance(a, b) == exact
    assert edit_distance(a, b, max_distance=k) == (exact if exact <= k else k + 1)
