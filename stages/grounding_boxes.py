"""Box notations of grounding data: the declared formats of an input, and boxes written inside text.

Formats (`read.box_format`, `schemas.grounding.BOX_FORMATS`): `xyxy` and `xywh` in pixels, `norm`
(corners as fractions 0-1 of the width and height) and `grid` (integer corners on the 0-1000 grid
of GLM-4.5V and Qwen-VL). A value a format cannot hold (above 1 in `norm`, above 1000 on `grid`,
below 0 in either, each beyond `FORMAT_SLACK`; a negative width or height in `xywh`)
contradicts the declaration: the listing refuses such an input before the run starts
(`contradiction`), and a row met later quarantines its region. Pixel corners outside the image
(`xyxy` below 0, or past the width the listing does not know) are no contradiction: the decode
clips them and records by how much (`RegionRecord.clipped`).

Boxes in text (conversations): GLM's `<|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>` and Qwen-VL's
`<box>(x1,y1),(x2,y2)</box>` (Qwen2-VL: `<|box_start|>...<|box_end|>`) are on the 0-1000 grid by
their definition; a plain `[x1, y1, x2, y2]` (LLaVA-1.5, Shikra) has no frame of its own, so the
input must declare one. A box's phrase is the words before it, without the connectors that tie
them to it ("the cat is located at [..]" -> "the cat"). A turn holds at most `MAX_TURN_CHARS`, and
tags are found in one pass (each closing tag looked for once): no text costs more than linear time.
The geometry itself is `stages/measure.py`'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .measure import GRID, Box, from_grid, from_normalized, sorted_box, to_glm_grid, to_normalized, xywh_to_xyxy

FORMAT_SLACK = {"norm": 1e-3, "grid": 0.5, "xyxy": 1.0, "xywh": 1.0}
"""How far past its range a value may be before it contradicts the format (rounding in the source)."""
LIMITS = {"norm": 1.0, "grid": float(GRID)}


class BoxUnreadable(ValueError):
    """A box value that is not four numbers."""


def box_numbers(value: object) -> list[float]:
    """Four floats from a JSON box (numbers or numeric strings); NaN and infinities are kept (the
    geometry filter drops them with their reason); anything else raises BoxUnreadable."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise BoxUnreadable(f"a box is four numbers, got {str(value)[:80]}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise BoxUnreadable(f"box value {v!r} is not a number")
        try:
            out.append(float(v))
        except (ValueError, OverflowError):  # "x", or an integer too large for a float (JSON allows both)
            raise BoxUnreadable(f"box value {v!r} is not a number") from None
    return out


def contradiction(box: Sequence[float], fmt: str) -> str | None:
    """Why `box` cannot be in `fmt` (None when it can): a value above the range of `norm` / `grid` or
    below 0 in them by more than the format's slack, or a negative `xywh` size (a rounded size is
    never negative). NaN is not looked at: the geometry filter drops it."""
    slack = FORMAT_SLACK[fmt]
    finite = [v for v in box if math.isfinite(v)]
    limit = LIMITS.get(fmt)
    if limit is not None and any(v > limit + slack for v in finite):
        return f"value {max(finite):g} above {limit:g} in a box declared {fmt!r}"
    if any(v < -slack for v in finite) and fmt in ("norm", "grid"):
        return f"value {min(finite):g} below 0 in a box declared {fmt!r}"
    if fmt == "xywh" and len(finite) == 4 and (box[2] < 0 or box[3] < 0):
        return f"negative width or height ({box[2]:g}, {box[3]:g}) in a box declared 'xywh'"
    return None


def to_pixels(box: Sequence[float], fmt: str, width: float, height: float) -> Box:
    """The box in `fmt` as pixel corners on a `width` x `height` image (the frame the input is in).
    Corners keep the input's order (a reversed box stays reversed, for the geometry filter to see)."""
    if fmt == "xyxy":
        x1, y1, x2, y2 = box
        return (x1, y1, x2, y2)
    if fmt == "xywh":
        return xywh_to_xyxy(box)
    if fmt == "norm":
        return from_normalized(box, width, height)
    if fmt == "grid":
        return from_grid(box, width, height)
    raise ValueError(f"unknown box format {fmt!r}; one of xyxy, xywh, norm, grid")


def from_pixels(box: Sequence[float], fmt: str, width: float, height: float) -> tuple[float, ...]:
    """A pixel box in `fmt`: `grid` as GLM-4.5V's integers in [0, 1000), `norm` fractions, `xywh`, `xyxy`."""
    if fmt == "grid":
        return to_glm_grid(box, width, height)
    if fmt == "norm":
        return to_normalized(sorted_box(box), width, height)
    if fmt == "xywh":
        x1, y1, x2, y2 = sorted_box(box)
        return (x1, y1, x2 - x1, y2 - y1)
    return tuple(sorted_box(box))


# ---------------------------------------------------------------------------------------------- text boxes

MAX_TURN_CHARS = 20_000
"""Characters one turn of a conversation may hold; a longer turn is refused (its row `bad_conversation`)."""
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_FOUR = rf"\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*"
_PAIRS = {"<|begin_of_box|>": ("glm", "<|end_of_box|>"), "<box>": ("qwen", "</box>"),
          "<|box_start|>": ("qwen2", "<|box_end|>")}  # fmt: skip
"""Opening tag -> (notation, closing tag)."""
_OPENER = re.compile(r"<\|begin_of_box\|>|<box>|<\|box_start\|>|\[")
_PLAIN = re.compile(rf"\[({_FOUR})\]")
"""A plain box: four numbers in brackets (its match stops at the next `[`, so the scan stays linear)."""
_REF = re.compile(
    r"(?:<ref>(?P<a>(?:(?!<ref>).)*?)</ref>"
    r"|<\|object_ref_start\|>(?P<b>(?:(?!<\|object_ref_start\|>).)*?)<\|object_ref_end\|>)\s*$",
    re.S,
)
"""The ref right before a box; its phrase never spans another ref (`<ref>a</ref> and <ref>b</ref><box>`)."""
_ONE = re.compile(rf"\[{_FOUR}\]")
_POINTS = re.compile(rf"^\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*$")
_BOUNDARY = re.compile(r"[!?;\n]|[.:](?!\d)|(?<!\d)[.:]")
"""A sentence boundary: a period or colon between digits (`3.5 m`, `12:30`) is none."""
_STRAY = re.compile(r"<\|begin_of_box\|>|<\|end_of_box\|>|</?box>|<\|box_start\|>|<\|box_end\|>")
"""A box tag left outside a complete tag pair: unclosed or unopened."""
_TAG_TEXT = re.compile(r"<\|?[a-z_]+\|?>|</?[a-z]+>")
_LINK = r"(?:(?:is|are)(?: located)?(?: (?:at|in|on))?|located (?:at|in|on)|at)"
_TRAILING = re.compile(rf"(?:(?:^| ){_LINK}|(?:^| ?)[:\-\u2013\u2014]){{1,4}}$", re.I)
"""Connectors between a phrase and its box ("is located at", "at", ":", "-"), on whitespace-folded text."""
_LEADING = re.compile(r"^and ", re.I)


class BadBoxText(ValueError):
    """A box tag whose content is no box, or a tag without its pair: `text` is what failed."""

    def __init__(self, text: str, why: str = "") -> None:
        super().__init__(why or f"cannot read a box from {text[:200]!r}")
        self.text = text


@dataclass(frozen=True)
class TextBox:
    """A box found in a turn: its numbers as written, the frame its notation implies ('' for a plain
    `[..]`: the input's declared format), the phrase written with it ('' when the turn gives none)."""

    numbers: tuple[float, float, float, float]
    notation: str
    """glm | qwen | qwen2 | plain."""
    phrase: str
    start: int
    end: int

    @property
    def frame(self) -> str:
        return "" if self.notation == "plain" else "grid"


def _inner(notation: str, body: str) -> list[tuple[float, float, float, float]]:
    """The boxes inside one tag: GLM's `[x1,y1,x2,y2]` or `[[...], [...]]`, Qwen's `(x1,y1),(x2,y2)`."""
    if notation == "glm":
        found = [tuple(float(g) for g in m.groups()) for m in _ONE.finditer(body)]
        if not found or _ONE.sub("", body).strip(" \t\n,[]"):
            raise BadBoxText(body)
        return found  # type: ignore[return-value]
    m = _POINTS.match(body)
    if not m:
        raise BadBoxText(body)
    return [tuple(float(g) for g in m.groups())]  # type: ignore[list-item]


def _preceding(text: str, start: int, after: int) -> str:
    """The phrase before a box: a `<ref>` right before it, else the text since the last box or the
    last sentence boundary, without tags, a leading "and" and the connectors that end it."""
    before = text[after:start]
    ref = _REF.search(before)
    if ref:
        return " ".join((ref.group("a") or ref.group("b") or "").split())
    cuts = list(_BOUNDARY.finditer(before))
    segment = before[cuts[-1].end() :] if cuts else before
    words = " ".join(_TAG_TEXT.sub(" ", segment).split()).strip(" ,")
    return _LEADING.sub("", _TRAILING.sub("", words).strip(" ,"))


def _tags(text: str) -> Iterator[tuple[str, int, int, str]]:
    """(notation, start, end, content) of every complete tag pair and plain box, in order, in one
    pass: a closing tag not found after one opening is not looked for again (none follows a later
    one either), so an unclosed tag costs one search, not one per opening."""
    pos, unclosed = 0, set()
    while (m := _OPENER.search(text, pos)) is not None:
        if m.group() == "[":
            plain = _PLAIN.match(text, m.start())
            if plain:
                yield "plain", plain.start(), plain.end(), plain.group(1)
            pos = plain.end() if plain else m.end()
            continue
        notation, closing = _PAIRS[m.group()]
        close = -1 if notation in unclosed else text.find(closing, m.end())
        if close < 0:
            unclosed.add(notation)  # left as it is: the stray check names it
            pos = m.end()
            continue
        yield notation, m.start(), close + len(closing), text[m.end() : close]
        pos = close + len(closing)


def text_boxes(text: str) -> list[TextBox]:
    """Every box written in `text`, in order; BadBoxText for a tagged box whose content is no box, for
    a box tag left unclosed or unopened (an unclosed GLM box around `[..]` is not a plain box of the
    input's frame: its tag says grid), and for a text over `MAX_TURN_CHARS`. A plain bracket holds
    four numbers by construction, anything else in brackets is not a box."""
    if len(text) > MAX_TURN_CHARS:
        raise BadBoxText(text[:200], f"a turn of {len(text):,} characters, more than MAX_TURN_CHARS "
                                     f"({MAX_TURN_CHARS:,}) a turn may hold: no box of it is read")  # fmt: skip
    out: list[TextBox] = []
    after = 0
    for notation, start, end, content in _tags(text):
        _no_stray(text[after:start])
        found = [tuple(float(v) for v in content.split(","))] if notation == "plain" else _inner(notation, content)
        phrase = _preceding(text, start, after)
        out += [TextBox(n, notation, phrase, start, end) for n in found]  # type: ignore[arg-type]
        after = end
    _no_stray(text[after:])
    return out


def _no_stray(segment: str) -> None:
    if _STRAY.search(segment):
        raise BadBoxText(segment)


def strip_boxes(text: str) -> str:
    """The text with its boxes (and ref tags) taken out, whitespace folded: the words of a turn."""
    parts, after = [], 0
    for _, start, end, _ in _tags(text):
        parts.append(text[after:start])
        after = end
    text = " ".join([*parts, text[after:]])
    text = re.sub(r"</?ref>|<\|object_ref_(?:start|end)\|>", " ", text)
    return " ".join(text.replace("<image>", " ").split())
