"""What a rendered OCR sample looks like: document pages and receipts (this module), scene text and word
crops (`ocr_photo.py`), from the primitives of `ocr_ink.py`.

Every composer takes the sample's own random generator and the resolved `Kit` and returns the image,
its lines and the settings worth recording; nothing else is random, so a sample depends only on its
(seed, index). Geometry is decided before any photometric effect, and the boxes are the ink the
drawing reports, mapped by the very homography that moved the pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageDraw

from mmcurate.schemas import TextLine

from . import ocr_words as vocab
from .measure import Box, box_to_quad
from .ocr_ink import Face, Faces, Style, covers, draw_text, load_font, script, text_width

T = TypeVar("T")
Made = tuple[Image.Image, list[TextLine], dict[str, Any]]
"""A composer's result: the RGB image, its lines, the settings used."""


@dataclass(frozen=True)
class Kit:
    """Everything a composer draws from, resolved and checked once per process (fonts, words, photos)."""

    latin: Faces
    cjk: Faces
    words: Mapping[str, tuple[str, ...]]
    backgrounds: tuple[str, ...]
    zh_share: float
    page: tuple[int, int]
    scene: tuple[int, int]
    blur: tuple[float, float]
    noise: tuple[float, float]
    perspective: float

    def faces(self, lang: str) -> Faces:
        """Fonts by script: Chinese text is only ever drawn with a CJK face (never DejaVu's tofu)."""
        return self.cjk if lang == "zh" else self.latin


def rounded_quad(points: Any) -> list[list[float]]:
    """A quad as the labels store it: floats rounded to 1/1000 px."""
    return [[round(float(x), 3), round(float(y), 3)] for x, y in points]


@dataclass
class Canvas:
    """A surface being drawn on, with the lines drawn so far and the faces and sizes they used."""

    img: Image.Image
    lines: list[TextLine] = field(default_factory=list)
    fonts: set[str] = field(default_factory=set)
    sizes: set[int] = field(default_factory=set)

    def text(self, x: float, baseline: int, text: str, face: Face, style: Style) -> Box | None:
        """Draw one line and record it (its lang: its script); text a face cannot draw is a bug here,
        never tofu in the data."""
        if not covers(face.path, text):
            raise ValueError(f"{face.name} cannot draw {text!r}")
        box = draw_text(self.img, x, baseline, text, style)
        if box is not None:  # the label is the visible text: no leading or trailing spaces
            self.lines.append(TextLine(quad=rounded_quad(box_to_quad(box)), text=text.strip(), lang=script(text)))
            self.fonts.add(face.name)
            self.sizes.add(style.size)
        return box

    def settings(self) -> dict[str, Any]:
        return {"fonts": sorted(self.fonts), "sizes": sorted(self.sizes)}


def pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def language(rng: np.random.Generator, kit: Kit) -> str:
    return "zh" if rng.random() < kit.zh_share else "en"


def phrase(rng: np.random.Generator, kit: Kit, lang: str, lo: int, hi: int, title: bool = False) -> str:
    """`lo`..`hi` words of the language: spaced and capitalised for English, joined for Chinese."""
    words = [pick(rng, kit.words[lang]) for _ in range(int(rng.integers(lo, hi + 1)))]
    if lang == "zh":
        return "".join(words)
    words = [w.capitalize() for w in words] if title else [words[0].capitalize(), *words[1:]]
    return " ".join(words)


def number(rng: np.random.Generator, what: str, lang: str = "en") -> str:
    """A table cell's or receipt's figure: amount, count, date or percentage."""
    if what == "price":
        value = f"{rng.integers(1, 50000) / 100:.2f}"
        mark = pick(rng, ("", "", "$", "€")) if lang == "en" else pick(rng, ("", "¥"))
        return mark + value
    if what == "count":
        n = int(rng.integers(1, 100000))
        return f"{n:,}" if rng.random() < 0.5 else str(n)
    if what == "date":
        y, m, d = int(rng.integers(1990, 2031)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        return f"{y}-{m:02d}-{d:02d}" if rng.random() < 0.6 else f"{m:02d}/{d:02d}/{y}"
    return f"{rng.uniform(0, 100):.1f}%"


def fit(text: str, lang: str, width: float, path: str, size: int) -> str:
    """`text` cut (at a word, or a character for Chinese) until it fits `width`; '' if nothing does."""
    while text and text_width(path, size, text) > width:
        text = text[:-1] if lang == "zh" else text.rpartition(" ")[0]
    return text


# ----------------------------------------------------------------------------------------------
# Document pages


SIZES = (18, 20, 22, 24, 26)
"""Body text sizes of a 1240 px wide page (scaled with the width). Sizes come from short lists so the
glyph cache stays small and warm (a continuous range would make most glyphs a cache miss)."""
TITLE_SCALES = (1.6, 1.8, 2.0)
HEADING_SCALES = (1.2, 1.35, 1.5)


class Page(Canvas):
    """A document page being laid out top to bottom (grey levels: a page is ink on paper)."""

    def __init__(self, rng: np.random.Generator, kit: Kit) -> None:
        w, h = kit.page
        super().__init__(Image.new("L", (w, h), int(rng.integers(238, 256))))
        self.rng, self.kit = rng, kit
        self.unit = w / 1240
        self.left = int(w * rng.uniform(0.07, 0.11))
        self.right = w - int(w * rng.uniform(0.07, 0.11))
        self.y = int(h * rng.uniform(0.05, 0.08))
        self.bottom = h - int(h * rng.uniform(0.05, 0.08))
        self.body = max(9, round(self.unit * pick(rng, SIZES)))
        self.ink = int(rng.integers(0, 60))
        self.body_face, _ = kit.latin.pick(rng)  # headings use its family's bold
        self.spacing = float(rng.uniform(1.25, 1.6))

    def face(self, lang: str, *, bold: bool = False, italic: bool = False, mono: bool = False) -> tuple[Face, Style]:
        faces = self.kit.faces(lang)
        family = None if lang == "zh" or mono else self.body_face.family
        face, oblique = faces.pick(self.rng, bold=bold, italic=italic, mono=mono, family=family)
        return face, Style(face.path, self.body, self.ink, oblique=oblique)

    def put(self, x: float, text: str, face: Face, style: Style) -> bool:
        """One line at the cursor, then the cursor moves down; False when the page has no room left."""
        ascent, descent = load_font(style.path, style.size).getmetrics()
        if self.y + ascent + descent > self.bottom:
            return False
        if text:
            self.text(x, self.y + ascent, text, face, style)
        self.y += round((ascent + descent) * self.spacing)
        return True

    def gap(self, lines: float = 0.6) -> None:
        self.y += round(self.body * lines)


def _strong(face: Face, style: Style, size: int) -> Style:
    """A heading's style: a bold face as is, a face with no bold (WenQuanYi) thickened by a stroke."""
    stroke = 0 if face.bold else max(1, size // 28)
    return Style(style.path, size, style.fill, stroke=stroke, stroke_fill=style.fill, oblique=style.oblique)


def heading(page: Page, numbered: int | None, scale: float) -> bool:
    rng, lang = page.rng, language(page.rng, page.kit)
    face, base = page.face(lang, bold=True)
    size = round(page.body * scale)
    style = _strong(face, base, size)
    text = phrase(rng, page.kit, lang, 2, 5 if lang == "en" else 3, title=True)
    if numbered is not None:
        text = f"{numbered}. {text}" if lang == "zh" else f"{numbered} {text}"
    text = fit(text, lang, page.right - page.left, style.path, size)
    page.gap(0.4)
    x = page.left
    if numbered is None and rng.random() < 0.5:  # a centred title
        x = (page.left + page.right - text_width(style.path, size, text)) / 2
    ok = page.put(x, text, face, style)
    page.gap(0.3)
    return ok


CLOSING = frozenset(vocab.ZH_PUNCTUATION)
"""Chinese punctuation that stays at the end of a line instead of opening the next."""
FIGURE_START = frozenset("0123456789$€¥")


def _wrap(words: list[str], lang: str, width: float, first: float, style: Style) -> list[str]:
    """Greedy line filling: English by words, Chinese by characters (punctuation never opens a line)."""
    lines: list[str] = []
    sep = "" if lang == "zh" else " "
    space = text_width(style.path, style.size, sep)
    line, used, room = "", 0.0, width - first
    for word in words:
        w = text_width(style.path, style.size, word)
        if not line or used + space + w <= room or word in CLOSING:
            line, used = (f"{line}{sep}{word}", used + space + w) if line else (word, w)
            continue
        lines.append(line)
        line, used, room = word, w, width
    return [*lines, line] if line else lines


def paragraph(page: Page) -> bool:
    rng, kit = page.rng, page.kit
    lang = language(rng, kit)
    face, style = page.face(lang, italic=lang == "en" and rng.random() < 0.15)
    if lang == "zh":
        clauses = [phrase(rng, kit, "zh", 2, 5) for _ in range(int(rng.integers(3, 12)))]
        text = "".join(c + (vocab.ZH_STOP if rng.random() < 0.4 else vocab.ZH_COMMA) for c in clauses)
        tokens = list(text)
    else:
        sentences = [
            phrase(rng, kit, "en", 5, 14) + pick(rng, (".", ".", ".", "?", ";")) for _ in range(int(rng.integers(2, 7)))
        ]
        tokens = " ".join(sentences).split(" ")
    indent = style.size * 2 if rng.random() < 0.4 else 0
    for i, line in enumerate(_wrap(tokens, lang, page.right - page.left, indent, style)):
        x = page.left + (indent if i == 0 else 0)
        # a word wider than the column (a long word of a custom list) is cut, never drawn off the page
        if not page.put(x, fit(line, lang, page.right - x + style.size, style.path, style.size), face, style):
            return False
    page.gap()
    return True


def numbered_list(page: Page) -> bool:
    rng = page.rng
    lang = language(rng, page.kit)
    face, style = page.face(lang)
    marker = pick(rng, ("{}.", "{})", "({})"))
    x = page.left + style.size * 1.5
    for i in range(1, int(rng.integers(3, 7)) + 1):
        text = f"{marker.format(i)} {phrase(rng, page.kit, lang, 2, 7 if lang == 'en' else 4)}"
        if not page.put(x, fit(text, lang, page.right - x, style.path, style.size), face, style):
            return False
    page.gap()
    return True


COLUMNS = ("word", "price", "count", "date", "percent")


def _table_cells(page: Page, lang: str, cols: int, rows: int) -> list[list[str]]:
    rng, kit = page.rng, page.kit
    kinds = ["word", *(pick(rng, COLUMNS) for _ in range(cols - 1))]
    head = [phrase(rng, kit, lang, 1, 2 if lang == "en" else 1, title=True) for _ in range(cols)]
    body = [
        [phrase(rng, kit, lang, 1, 2, title=True) if k == "word" else number(rng, k, lang) for k in kinds]
        for _ in range(rows)
    ]
    return [head, *body]


def table(page: Page) -> bool:
    """A bordered table, one line per cell, header row bold; numbers right-aligned."""
    rng = page.rng
    lang = language(rng, page.kit)
    face, style = page.face(lang)
    bold_face, bold = page.face(lang, bold=True)
    size = max(8, round(page.body * pick(rng, (0.9, 1.0))))
    style, bold = (Style(s.path, size, s.fill, oblique=s.oblique) for s in (style, bold))
    bold = _strong(bold_face, bold, size)
    ascent, descent = load_font(style.path, size).getmetrics()
    pad = max(3, round(size * 0.45))
    row_h = ascent + descent + 2 * pad + 2
    rows = min(int(rng.integers(3, 9)), (page.bottom - page.y) // row_h - 1)
    if rows < 2:
        return False
    cells = _table_cells(page, lang, int(rng.integers(2, 6)), rows)
    widths = [max(text_width(bold.path, size, row[j]) for row in cells) + 2 * pad + 4 for j in range(len(cells[0]))]
    while sum(widths) > page.right - page.left and len(widths) > 2:
        widths.pop()
    cells = [row[: len(widths)] for row in cells]
    spare = (page.right - page.left - sum(widths)) * rng.uniform(0.0, 1.0)
    widths = [w + spare / len(widths) for w in widths]
    edges = np.cumsum([page.left, *widths]).round().astype(int).tolist()
    top = page.y + pad
    _table_rules(page, edges, top, row_h, len(cells))
    for r, row in enumerate(cells):
        base = top + r * row_h + (row_h + ascent - descent) // 2
        for j, text in enumerate(row):
            text = fit(text, lang, edges[j + 1] - edges[j] - 2 * pad - 4, style.path, size)
            st, fc = (bold, bold_face) if r == 0 else (style, face)
            right_aligned = r > 0 and text[:1] in FIGURE_START
            x = edges[j + 1] - pad - 2 - text_width(st.path, size, text) if right_aligned else edges[j] + pad + 2
            if text:
                page.text(x, base, text, fc, st)
    page.y = top + len(cells) * row_h + pad
    page.gap()
    return True


def _table_rules(page: Page, edges: list[int], top: int, row_h: int, rows: int) -> None:
    rng = page.rng
    draw = ImageDraw.Draw(page.img)
    colour, width = int(rng.integers(0, 100)), max(1, round(page.unit * rng.uniform(1.0, 2.5)))
    bottom = top + rows * row_h
    if rng.random() < 0.5:  # a shaded header row
        draw.rectangle((edges[0], top, edges[-1], top + row_h), fill=int(rng.integers(215, 236)))
    grid = rng.random() < 0.7
    for r in range(rows + 1) if grid else (0, 1, rows):
        draw.line((edges[0], top + r * row_h, edges[-1], top + r * row_h), fill=colour, width=width)
    if grid:
        for x in edges:
            draw.line((x, top, x, bottom), fill=colour, width=width)


def document(rng: np.random.Generator, kit: Kit) -> Made:
    """A page of headings, paragraphs, numbered lists and tables in mixed faces and sizes."""
    page = Page(rng, kit)
    heading(page, None, pick(rng, TITLE_SCALES))
    blocks = (paragraph, paragraph, paragraph, numbered_list, table, heading)
    chapter, tables = 1, 0
    while page.y < page.bottom - 3 * page.body:
        block = blocks[int(rng.integers(len(blocks)))]
        if block is table and tables >= 2:
            block = paragraph
        if block is heading:
            ok = heading(page, chapter, pick(rng, HEADING_SCALES))
            chapter += 1
        else:
            ok = block(page)
        tables += block is table
        if not ok:
            break
    extra = {**page.settings(), "paper": int(page.img.getpixel((0, 0))), "ink": page.ink}
    return Image.merge("RGB", (page.img, page.img, page.img)), page.lines, extra


# ----------------------------------------------------------------------------------------------
# Receipts (drawn flat here; `ocr_photo.receipt` lays them on a surface, slightly rotated)


class Slip(Canvas):
    """A receipt being printed line by line: monospace figures, sans or CJK text."""

    def __init__(self, rng: np.random.Generator, kit: Kit, lang: str) -> None:
        width = pick(rng, (384, 448, 512, 576))
        # 4 widths hold the longest receipt (32 rows of <= 31 px, 5 rules); cropped to the content at the end
        super().__init__(Image.new("L", (width, 4 * width), int(rng.integers(232, 253))))
        self.rng, self.kit, self.lang = rng, kit, lang
        self.size = int(rng.integers(18, 25))
        self.ink = int(rng.integers(0, 80))
        self.margin = int(rng.integers(14, 30))
        self.y = self.margin
        self.mono, _ = kit.latin.pick(rng, mono=True)
        self.mono_bold, _ = kit.latin.pick(rng, mono=True, bold=True)
        self.sans, _ = kit.latin.pick(rng)
        self.sans_bold, _ = kit.latin.pick(rng, bold=True, family=self.sans.family)
        self.word = kit.cjk.pick(rng)[0] if lang == "zh" else self.sans
        self.labels = vocab.ZH_RECEIPT if lang == "zh" else vocab.EN_RECEIPT

    def style(self, face: Face, scale: float = 1.0, bold: bool = False) -> Style:
        size = round(self.size * scale)
        base = Style(face.path, size, self.ink)
        return _strong(face, base, size) if bold and not face.bold else base

    def row(self, left: str, right: str = "", *, centre: bool = False, scale: float = 1.0, bold: bool = False) -> None:
        """A printed line: `left` at the margin (or centred), `right` flush right in the monospace face."""
        lang = "zh" if any(not covers(self.mono.path, ch) for ch in left) else "en"
        if lang == "zh":
            face = self.word
        elif centre:
            face = self.sans_bold if bold else self.sans
        else:
            face = self.mono_bold if bold else self.mono
        style = self.style(face, scale, bold)
        font = load_font(style.path, style.size)
        ascent, descent = font.getmetrics()
        base = self.y + ascent
        width = self.img.width - 2 * self.margin
        rface = self.mono_bold if bold else self.mono
        rstyle = self.style(rface, scale, bold)
        room = width - (text_width(rstyle.path, rstyle.size, right) + style.size if right else 0)
        left = fit(left, lang, room, style.path, style.size)
        x = (self.img.width - text_width(style.path, style.size, left)) / 2 if centre else self.margin
        if left:
            self.text(x, base, left, face, style)
        if right:
            x = self.img.width - self.margin - text_width(rstyle.path, rstyle.size, right)
            self.text(x, base, right, rface, rstyle)
        self.y += round((ascent + descent) * 1.3)

    def rule(self) -> None:
        """A dashed separator: graphics, not text (no label for a row of dashes)."""
        draw, y = ImageDraw.Draw(self.img), self.y + self.size // 3
        dash = int(self.rng.integers(4, 10))
        for x in range(self.margin, self.img.width - self.margin - dash, 2 * dash):
            draw.line((x, y, x + dash, y), fill=self.ink, width=2)
        self.y += self.size


def _receipt_items(slip: Slip) -> float:
    rng, lang = slip.rng, slip.lang
    items = vocab.ZH_ITEMS if lang == "zh" else vocab.EN_ITEMS
    total = 0.0
    for _ in range(int(rng.integers(3, 11))):
        qty, unit = int(rng.integers(1, 4)), int(rng.integers(50, 5000)) / 100
        name = pick(rng, items)
        if qty > 1 and rng.random() < 0.5:
            slip.row(name)
            slip.row(f"  {qty} x {unit:.2f}", f"{qty * unit:.2f}")
        else:
            slip.row(f"{name} x{qty}" if qty > 1 else name, f"{qty * unit:.2f}")
        total += qty * unit
    return total


def flat_receipt(rng: np.random.Generator, kit: Kit) -> tuple[Slip, dict[str, Any]]:
    """A receipt, unrotated: shop, address, date, items with prices flush right, total, payment."""
    lang = language(rng, kit)
    slip = Slip(rng, kit, lang)
    labels = slip.labels
    slip.row(pick(rng, vocab.ZH_SHOPS if lang == "zh" else vocab.EN_SHOPS), centre=True, scale=1.4, bold=True)
    street = pick(rng, vocab.ZH_STREETS if lang == "zh" else vocab.EN_STREETS)
    house = int(rng.integers(1, 400))
    slip.row(f"{street}{house}号" if lang == "zh" else f"{house} {street}", centre=True, scale=0.9)
    slip.row(f"{labels['tel']} 0{rng.integers(10, 99)}-{rng.integers(1000000, 9999999)}", centre=True, scale=0.9)
    slip.rule()
    slip.row(f"{number(rng, 'date')} {rng.integers(7, 23):02d}:{rng.integers(0, 60):02d}")
    slip.row(f"{labels['receipt']} {rng.integers(1, 999999):06d}")
    slip.rule()
    subtotal = _receipt_items(slip)
    slip.rule()
    rate = pick(rng, (0, 5, 8, 10, 13))
    tax = round(subtotal * rate / 100, 2)
    slip.row(labels["subtotal"], f"{subtotal:.2f}")
    slip.row(f"{labels['tax']} {rate}%", f"{tax:.2f}")
    slip.row(labels["total"], f"{subtotal + tax:.2f}", scale=1.2, bold=True)
    if rng.random() < 0.5:
        paid = float(np.ceil((subtotal + tax) / 10) * 10)
        slip.row(labels["cash"], f"{paid:.2f}")
        slip.row(labels["change"], f"{paid - subtotal - tax:.2f}")
    else:
        slip.row(labels["card"], f"{subtotal + tax:.2f}")
    slip.rule()
    slip.row(labels["thanks"], centre=True, scale=1.1)
    slip.img = slip.img.crop((0, 0, slip.img.width, slip.y + slip.margin))
    return slip, {**slip.settings(), "paper": int(slip.img.getpixel((0, 0))), "ink": slip.ink, "lang": lang}
