"""Box notations of grounding inputs (stages/grounding_boxes.py): round trips between the declared
formats with their exact error bounds, the edges of `contradiction`, `box_numbers` on what JSON can
hold, and boxes written in text by GLM, Qwen-VL, Qwen2-VL, Shikra and LLaVA-1.5: their phrases, and
the bounds that keep hostile text (a megabyte of unclosed tags) from costing more than one pass."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcurate.stages.grounding_boxes import (
    FORMAT_SLACK,
    MAX_TURN_CHARS,
    BadBoxText,
    BoxUnreadable,
    box_numbers,
    contradiction,
    from_pixels,
    strip_boxes,
    text_boxes,
    to_pixels,
)

GRID = 1000
EPS = 1e-9
"""Float noise allowed on top of a bound (pixel sizes up to 10^4: relative error ~1e-12)."""

SIZES = st.integers(1, 10_000)
UNIT = st.floats(0, 1, allow_nan=False)


@st.composite
def image_and_box(draw: st.DrawFn) -> tuple[int, int, tuple[float, float, float, float]]:
    """An image size and a sorted pixel box inside it (corners anywhere in [0, width] x [0, height])."""
    w, h = draw(SIZES), draw(SIZES)
    xs = sorted(draw(UNIT) * w for _ in range(2))
    ys = sorted(draw(UNIT) * h for _ in range(2))
    return w, h, (xs[0], ys[0], xs[1], ys[1])


def moved(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(abs(p - q) for p, q in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------- round trips


@given(image_and_box())
@settings(max_examples=400)
def test_pixel_norm_pixel_within_a_pixel(case: tuple[int, int, tuple[float, ...]]) -> None:
    """pixel -> norm -> pixel: the coarser grid is the pixel grid, so a corner may move 1 px at most
    (it moves by float noise only: norm is continuous)."""
    w, h, box = case
    back = to_pixels(from_pixels(box, "norm", w, h), "norm", w, h)
    assert max(moved(back, box)) <= 1.0
    assert max(moved(back, box)) <= EPS * max(w, h)


@given(image_and_box())
@settings(max_examples=400)
def test_pixel_grid_pixel_within_one_grid_step(case: tuple[int, int, tuple[float, ...]]) -> None:
    """pixel -> grid -> pixel: a corner moves at most one step of the 0-1000 grid along its own axis,
    |dx| <= width/1000 and |dy| <= height/1000 px (rounding is half a step; the far edge 1000 is
    clamped to GLM's 999, a whole step), so at most max(width, height)/1000 px, and on an image under
    1000 px (where the pixel grid is the coarser one) under 1 px."""
    w, h, box = case
    grid = from_pixels(box, "grid", w, h)
    assert all(isinstance(v, int) and 0 <= v < GRID for v in grid)
    dx1, dy1, dx2, dy2 = moved(to_pixels(grid, "grid", w, h), box)
    assert max(dx1, dx2) <= w / GRID + EPS * w
    assert max(dy1, dy2) <= h / GRID + EPS * h
    assert max(dx1, dy1, dx2, dy2) <= max(w, h) / GRID + EPS * max(w, h)
    if max(w, h) < GRID:
        assert max(dx1, dy1, dx2, dy2) < 1.0


@st.composite
def grid_box(draw: st.DrawFn, top: int = GRID - 1) -> tuple[int, int, int, int]:
    xs = sorted(draw(st.integers(0, top)) for _ in range(2))
    ys = sorted(draw(st.integers(0, top)) for _ in range(2))
    return (xs[0], ys[0], xs[1], ys[1])


@given(grid_box(), SIZES, SIZES)
@settings(max_examples=400)
def test_grid_pixel_grid_is_exact_on_glm_grid(box: tuple[int, ...], w: int, h: int) -> None:
    """grid -> pixel -> grid: GLM's integers in [0, 1000) come back exactly (0 grid units moved)."""
    assert from_pixels(to_pixels(box, "grid", w, h), "grid", w, h) == box


@given(grid_box(top=GRID), SIZES, SIZES, st.floats(-0.49, 0.49))
@settings(max_examples=400)
def test_grid_pixel_grid_within_one_unit(box: tuple[int, ...], w: int, h: int, jitter: float) -> None:
    """Any value of the 0..1000 grid (1000 itself, fractional values as some inputs write them)
    comes back within one grid unit: half for rounding, one where 1000 becomes 999."""
    written = tuple(min(GRID, max(0.0, v + jitter)) for v in box)
    back = from_pixels(to_pixels(written, "grid", w, h), "grid", w, h)
    assert max(moved(back, written)) <= 1.0 + EPS


@given(st.lists(st.integers(-(2**20), 2**20), min_size=4, max_size=4), st.integers(0, 6))
def test_xywh_xyxy_exact(ints: list[int], shift: int) -> None:
    """xywh <-> xyxy is exact for coordinates a float adds exactly (integers, or multiples of 2^-k
    of moderate size: what COCO pixel boxes are, up to their decimals)."""
    x, y, w, h = (ints[0] / 2**shift, ints[1] / 2**shift, abs(ints[2]) / 2**shift, abs(ints[3]) / 2**shift)
    xyxy = to_pixels((x, y, w, h), "xywh", 640, 480)
    assert xyxy == (x, y, x + w, y + h)
    assert from_pixels(xyxy, "xywh", 640, 480) == (x, y, w, h)
    xs, ys = sorted((ints[0], ints[2])), sorted((ints[1], ints[3]))  # any sorted xyxy box back and forth
    box = (xs[0] / 2**shift, ys[0] / 2**shift, xs[1] / 2**shift, ys[1] / 2**shift)
    assert to_pixels(from_pixels(box, "xywh", 640, 480), "xywh", 640, 480) == box


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=4, max_size=4))
def test_xywh_xyxy_arbitrary_floats_within_rounding(v: list[float]) -> None:
    """With arbitrary floats the round trip is exact up to one rounding of a sum (relative 1e-12)."""
    box = to_pixels(v, "xywh", 640, 480)
    back = from_pixels(box, "xywh", 1, 1)  # xywh needs no image size
    assert all(math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9) for a, b in zip(back, v, strict=True))


def test_xyxy_passes_through_and_from_pixels_sorts() -> None:
    """`to_pixels` keeps a reversed box reversed (for the geometry filter); `from_pixels` sorts."""
    assert to_pixels((30, 40, 10, 20), "xyxy", 100, 100) == (30, 40, 10, 20)
    assert from_pixels((30, 40, 10, 20), "xyxy", 100, 100) == (10, 20, 30, 40)
    assert from_pixels((30, 40, 10, 20), "norm", 100, 200) == (0.1, 0.1, 0.3, 0.2)
    assert from_pixels((640, 480, 0, 0), "grid", 640, 480) == (0, 0, 999, 999)
    with pytest.raises(ValueError, match="unknown box format"):
        to_pixels((0, 0, 1, 1), "cxcywh", 10, 10)


# ---------------------------------------------------------------------------------------------- contradiction


@pytest.mark.parametrize(
    ("box", "fmt", "why"),
    [
        ((0, 0, 1, 1), "norm", None),
        ((0, 0, 1 + FORMAT_SLACK["norm"], 1), "norm", None),  # at the slack: rounding in the source
        ((0, 0, 1.0011, 1), "norm", "above 1"),
        ((-0.001, 0, 0.5, 0.5), "norm", None),
        ((-0.0011, 0, 0.5, 0.5), "norm", "below 0"),
        ((0, 0, 12, 0.5), "norm", "above 1"),  # pixels declared as fractions
        ((0, 0, 1000, 1000), "grid", None),
        ((0, 0, 1000.5, 999), "grid", None),
        ((0, 0, 1000.51, 999), "grid", "above 1000"),
        ((-0.5, 0, 10, 10), "grid", None),
        ((-0.51, 0, 10, 10), "grid", "below 0"),
        ((0, 0, 1920, 1080), "grid", "above 1000"),  # pixels declared as grid
        ((-3, -2, 5000, 5000), "xyxy", None),  # outside the image: clipped by the decode, not refused
        ((10, 10, 0, 0), "xywh", None),
        ((10, 10, -0.01, 5), "xywh", "negative width"),
        ((10, 10, 5, -1), "xywh", "negative width or height"),
        ((-4, -4, 5, 5), "xywh", None),
        ((math.nan, 0, 2, 2), "norm", "above 1"),  # NaN is not looked at, the rest is
        ((math.nan, math.inf, 0.5, 0.5), "norm", None),
        ((0, 0, math.nan, 5), "xywh", None),
    ],
)
def test_contradiction_edges(box: tuple[float, ...], fmt: str, why: str | None) -> None:
    got = contradiction(box, fmt)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got and repr(fmt) in got


# ---------------------------------------------------------------------------------------------- box_numbers


def test_box_numbers_reads_numbers_and_numeric_strings() -> None:
    assert box_numbers([1, 2.5, "3", " 4e1 "]) == [1.0, 2.5, 3.0, 40.0]
    assert box_numbers((0, 0, 0, 0)) == [0.0, 0.0, 0.0, 0.0]
    nan_box = box_numbers([math.nan, "nan", "inf", -1])
    assert math.isnan(nan_box[0]) and math.isnan(nan_box[1]) and nan_box[2] == math.inf and nan_box[3] == -1.0


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ([1, 2, True, 4], "True"),  # JSON true is no coordinate
        ([1, 2, None, 4], "None"),
        ([1, 2, "three", 4], "three"),
        ([1, 2, "", 4], "''"),
        ([1, 2, [3], 4], "[3]"),
        ([1, 2, 10**400, 4], "is not a number"),  # too large for a float (JSON allows it)
        ([1, 2, 3], "four numbers"),
        ([1, 2, 3, 4, 5], "four numbers"),
        (None, "four numbers"),
        ("1,2,3,4", "four numbers"),
        ({"x": 1, "y": 2, "w": 3, "h": 4}, "four numbers"),
    ],
)
def test_box_numbers_refuses_what_is_no_box(value: object, said: str) -> None:
    with pytest.raises(BoxUnreadable) as exc:
        box_numbers(value)
    assert said in str(exc.value)


# ---------------------------------------------------------------------------------------------- text boxes


def test_glm_single_and_multi_boxes() -> None:
    text = "The dog is at <|begin_of_box|>[12, 34,560,780]<|end_of_box|>."
    (b,) = text_boxes(text)
    assert (b.numbers, b.notation, b.frame, b.phrase) == ((12.0, 34.0, 560.0, 780.0), "glm", "grid", "The dog")
    assert text[b.start : b.end] == "<|begin_of_box|>[12, 34,560,780]<|end_of_box|>"
    two = text_boxes("both cats are at <|begin_of_box|>[[1,2,3,4], [5,6,7,8]]<|end_of_box|>")
    assert [t.numbers for t in two] == [(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)]
    assert [t.phrase for t in two] == ["both cats"] * 2


def test_qwen_vl_ref_and_box() -> None:
    (b,) = text_boxes("<ref>a dog</ref><box>(10,20),(300,400)</box> is running")
    assert (b.numbers, b.notation, b.frame, b.phrase) == ((10.0, 20.0, 300.0, 400.0), "qwen", "grid", "a dog")


def test_qwen_vl_phrase_is_the_ref_right_before_its_box() -> None:
    """A ref without a box before the one with it does not leak into the phrase."""
    (b,) = text_boxes("<ref>a cat</ref> and <ref>a dog</ref><box>(1,2),(3,4)</box>")
    assert b.phrase == "a dog"


def test_qwen2_vl_tokens() -> None:
    text = (
        "<|object_ref_start|>the red car<|object_ref_end|><|box_start|>(5,6),(70,80)<|box_end|> and "
        "<|object_ref_start|>a tree<|object_ref_end|><|box_start|>(100, 200), (300, 400)<|box_end|>"
    )
    boxes = text_boxes(text)
    assert [(t.numbers, t.notation, t.phrase) for t in boxes] == [
        ((5.0, 6.0, 70.0, 80.0), "qwen2", "the red car"),
        ((100.0, 200.0, 300.0, 400.0), "qwen2", "a tree"),
    ]
    assert all(t.frame == "grid" for t in boxes)


def test_plain_shikra_and_llava_boxes() -> None:
    (b,) = text_boxes("the dog[0.1,0.2,0.3,0.4] runs")
    assert (b.numbers, b.notation, b.frame, b.phrase) == ((0.1, 0.2, 0.3, 0.4), "plain", "", "the dog")
    (llava,) = text_boxes("[0.12, 0.34, 0.56, 0.78]")  # LLaVA-1.5's answer: the box alone
    assert (llava.numbers, llava.notation, llava.phrase) == ((0.12, 0.34, 0.56, 0.78), "plain", "")
    assert text_boxes("a list [1, 2] and [a, b, c, d] hold no box") == []


def test_phrase_starts_at_the_last_sentence_boundary() -> None:
    """The phrase is the text since the previous box or sentence; a decimal point is no boundary."""
    boxes = text_boxes("I see two things. A 3.5 m boat[0.1,0.2,0.3,0.4]; then a man[0.5,0.5,0.6,0.9].")
    assert [t.phrase for t in boxes] == ["A 3.5 m boat", "then a man"]


@pytest.mark.parametrize(
    ("text", "failed"),
    [
        ("<|begin_of_box|>[1,2,3]<|end_of_box|>", "[1,2,3]"),
        ("<|begin_of_box|>the dog<|end_of_box|>", "the dog"),
        ("<|begin_of_box|>[1,2,3,4] and more<|end_of_box|>", "[1,2,3,4] and more"),
        ("<ref>x</ref><box>(10,20)</box>", "(10,20)"),
        ("<box>10,20,30,40</box>", "10,20,30,40"),
        ("<|box_start|>(1,2),(3,x)<|box_end|>", "(1,2),(3,x)"),
        ("see <|begin_of_box|>[1,2,3,4]", "see <|begin_of_box|>"),  # unclosed: not a plain box
        ("a dog</box> [1,2,3,4]", "a dog</box> "),  # closed, never opened
        ("[1,2,3,4] then <|box_start|>(1,2),(3,4)", " then <|box_start|>(1,2),(3,4)"),
    ],
)
def test_malformed_tags_raise_with_their_text(text: str, failed: str) -> None:
    with pytest.raises(BadBoxText) as exc:
        text_boxes(text)
    assert exc.value.text == failed
    assert repr(failed[:200]) in str(exc.value)


def test_strip_boxes_keeps_the_words() -> None:
    assert strip_boxes("<image>\n<ref>a dog</ref><box>(10,20),(300,400)</box>  runs") == "a dog runs"
    glm = "It is <|begin_of_box|>[[1,2,3,4],[5,6,7,8]]<|end_of_box|> there"
    assert strip_boxes(glm) == "It is there"
    qwen2 = "<|object_ref_start|>a tree<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|>!"
    assert strip_boxes(qwen2) == "a tree !"
    assert strip_boxes("the dog[0.1, 0.2, 0.3, 0.4] runs") == "the dog runs"
    assert strip_boxes("no boxes [1, 2] here") == "no boxes [1, 2] here"


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        ("The cat is at <|begin_of_box|>[1,2,3,4]<|end_of_box|>", ["The cat"]),
        ("the dog[0.1,0.2,0.3,0.4] and the cat is located at [0.5,0.5,0.6,0.6]", ["the dog", "the cat"]),
        ("two cats are in <box>(1,2),(3,4)</box>, and a dog is <box>(5,6),(7,8)</box>", ["two cats", "a dog"]),
        ("a red car - <|box_start|>(1,2),(3,4)<|box_end|>", ["a red car"]),
        ("The lamp at [1,2,3,4]", ["The lamp"]),
        ("this is [1,2,3,4]", ["this"]),  # "this" ends in "is": only a whole word is a connector
        ("the man on [1,2,3,4]", ["the man on"]),  # a bare "on" may be the phrase's own
    ],
)
def test_phrase_drops_connectors_around_it(text: str, phrases: list[str]) -> None:
    """The words before a box lose the connectors that tie them to it ("is located at", "-") and a
    leading "and": what is left is the phrase the box answers."""
    assert [b.phrase for b in text_boxes(text)] == phrases


UNCLOSED = ("<|begin_of_box|>", "<box>", "<|box_start|>", "see <|begin_of_box|>[1,2,3,4] ")


@pytest.mark.parametrize("unit", [*UNCLOSED, "[0.5, ", "[" + "9" * 50, "<ref>a", "</ref> "])
def test_hostile_text_costs_one_pass(unit: str) -> None:
    """A megabyte of unclosed tags (or of brackets that never hold a box) is refused or read in well
    under a second: a turn over MAX_TURN_CHARS is refused whole, and the tag scan is linear (each
    closing tag is looked for once), for `strip_boxes` too, which has no length bound."""
    text = unit * (1_000_000 // len(unit))
    start = time.perf_counter()
    with pytest.raises(BadBoxText, match=r"MAX_TURN_CHARS \(20,000\)") as exc:
        text_boxes(text)
    assert f"{len(text):,} characters" in str(exc.value)
    words = text.replace("[1,2,3,4]", " ").replace("<ref>", " ").replace("</ref>", " ")
    assert strip_boxes(text) == " ".join(words.split())  # unclosed tags stay: they are no box
    window = text[: MAX_TURN_CHARS - len(unit)]
    if unit in UNCLOSED:
        with pytest.raises(BadBoxText, match="cannot read a box"):
            text_boxes(window)
    else:
        text_boxes(window)
    assert time.perf_counter() - start < 1.0
