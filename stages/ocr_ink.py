"""The OCR renderer's primitives: text drawn with its exact ink box, font faces by role, homographies,
photometric effects.

Text is drawn glyph by glyph from a cache of glyph masks: FreeType renders a glyph in ~25 us on every
call, and a page draws thousands of glyphs out of a few hundred distinct ones, so a warm page costs
~10 ms instead of ~100. The ink box of a line is the union of the masks' own ink boxes, at the
integer positions they are pasted at: exact by construction, not a font-metric estimate. Pens
advance by each glyph's advance, as Pillow's BASIC layout does (it kerns only with a legacy `kern`
table, which DejaVu has not); BASIC also keeps any raqm/HarfBuzz version out of the output bytes.
Latin and CJK need no shaping, which is what this drawing supports.

Coordinates follow `stages/measure.py`: continuous pixels, boxes half-open `(x1, y1, x2, y2)`.
Pillow's `Image.transform` samples output pixel centres (x + 0.5, y + 0.5), so an image warped by a
homography H and points mapped by H agree exactly.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .measure import Box

LAYOUT = ImageFont.Layout.BASIC
CJK = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
"""CJK characters and punctuation (ideographs, full-width forms): what makes a line Chinese."""
MISSING = "\U0010ffff"
"""A code point no font maps: what it draws is the font's .notdef glyph (tofu)."""


@functools.lru_cache(maxsize=512)
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """The font at `size` px, loaded once per process (faces are reused across samples)."""
    return ImageFont.truetype(path, size, layout_engine=LAYOUT)


@dataclass(frozen=True)
class Ink:
    """One glyph's coverage: its mask, where the mask sits relative to the pen on the baseline, its
    advance, and the ink box inside the mask (mask and box None: nothing visible, e.g. a space)."""

    mask: Image.Image | None
    dx: int
    dy: int
    advance: float
    box: tuple[int, int, int, int] | None


@functools.lru_cache(maxsize=32768)
def glyph_ink(path: str, size: int, ch: str, stroke: int = 0, oblique: float = 0.0) -> Ink:
    """The cached mask of the character `ch` (stroked by `stroke` px; sheared by `oblique`: a synthetic italic)."""
    font = load_font(path, size)
    advance = font.getlength(ch)
    x0, y0, x1, y1 = (int(v) for v in font.getbbox(ch, anchor="ls", stroke_width=stroke))
    if x1 <= x0 or y1 <= y0:
        return Ink(None, 0, 0, advance, None)
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).text((-x0, -y0), ch, fill=255, font=font, anchor="ls", stroke_width=stroke, stroke_fill=255)
    if oblique:
        mask, x0 = _shear(mask, x0, y0, oblique)
    box = mask.getbbox()
    return Ink(mask if box else None, x0, y0, advance, box)


def _shear(mask: Image.Image, dx: int, dy: int, k: float) -> tuple[Image.Image, int]:
    """The mask slanted right by `k` per pixel above the baseline (what an oblique face does)."""
    w, h = mask.size
    base = -dy  # the baseline's row in mask coordinates
    shift = max(0, int(np.ceil(k * (h - base))))
    width = w + int(np.ceil(k * max(base, 0))) + shift
    data = (1.0, k, -k * base - shift, 0.0, 1.0, 0.0)  # output (X, Y) -> input (X + k (Y - base) - shift, Y)
    return mask.transform((width, h), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR), dx - shift


def text_width(path: str, size: int, text: str) -> float:
    """The advance of `text` as `draw_text` lays it out."""
    return sum(glyph_ink(path, size, ch).advance for ch in text)


@dataclass(frozen=True)
class Style:
    """How a line is drawn: face, size, colours, outline, slant."""

    path: str
    size: int
    fill: Any = 0
    stroke: int = 0
    stroke_fill: Any = None
    oblique: float = 0.0


def draw_text(img: Image.Image, x: float, baseline: int, text: str, style: Style) -> Box | None:
    """Draw `text` with its pen starting at (x, baseline); the ink box drawn (None when nothing is).
    An outline is drawn under every glyph before any fill, so no outline covers a neighbour's fill."""
    placed: list[tuple[float, str, Ink]] = []
    for ch in text:
        ink = glyph_ink(style.path, style.size, ch, 0, style.oblique)
        if ink.mask is not None:
            placed.append((x, ch, ink))
        x += ink.advance
    if not placed:
        return None
    layers = [(style.stroke, style.stroke_fill), (0, style.fill)] if style.stroke else [(0, style.fill)]
    left = top = 1 << 30
    right = bottom = -(1 << 30)
    for stroke, colour in layers:
        for pen, ch, plain in placed:
            ink = glyph_ink(style.path, style.size, ch, stroke, style.oblique) if stroke else plain
            if ink.mask is None or ink.box is None:
                continue
            px, py = round(pen) + ink.dx, baseline + ink.dy
            img.paste(colour, (px, py, px + ink.mask.width, py + ink.mask.height), ink.mask)
            left, top = min(left, px + ink.box[0]), min(top, py + ink.box[1])
            right, bottom = max(right, px + ink.box[2]), max(bottom, py + ink.box[3])
    return (float(left), float(top), float(right), float(bottom))


@functools.lru_cache(maxsize=65536)
def _glyph(path: str, ch: str) -> tuple[int, int, bytes]:
    ink = glyph_ink(path, 24, ch)
    return (ink.dx, ink.dy, ink.mask.tobytes() if ink.mask is not None else b"")


def script(text: str) -> str:
    """A line's language label by its script: `zh` when it holds CJK characters, else `en` (a figure
    in a Chinese table is a figure)."""
    return "zh" if CJK.search(text) else "en"


def covers(path: str, text: str) -> bool:
    """Whether the font draws every character of `text` (none falls back to its .notdef box)."""
    tofu = _glyph(path, MISSING)
    return all(ch.isspace() or _glyph(path, ch) != tofu for ch in set(text))


# ----------------------------------------------------------------------------------------------
# Font faces by role


@dataclass(frozen=True)
class Face:
    """A font file and what it is for: its family and style as the file names them, and whether it is
    bold, italic (oblique) or monospaced (measured: 'i' as wide as 'M')."""

    path: str
    family: str
    style: str
    bold: bool
    italic: bool
    mono: bool

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}"


def describe_face(path: str) -> Face:
    """Read a font's family and style and measure its roles."""
    font = load_font(path, 32)
    family, style = font.getname()
    family, style = family or path, style or "Regular"
    low = style.lower()
    mono = abs(font.getlength("i") - font.getlength("M")) < 0.5
    return Face(path, family, style, "bold" in low, "italic" in low or "oblique" in low, mono)


OBLIQUE = 0.21
"""Slant of a synthetic italic (DejaVu Sans Oblique's is about 12 degrees): used when the fonts hold
no italic face, e.g. fonts-dejavu-core, whose italics are in fonts-dejavu-extra."""


@dataclass(frozen=True)
class Faces:
    """The faces of one script; `pick` finds a face for a role, falling back to the nearest one."""

    faces: tuple[Face, ...]

    def pick(
        self, rng: np.random.Generator, *, bold: bool = False, italic: bool = False, mono: bool = False,
        family: str | None = None,
    ) -> tuple[Face, float]:  # fmt: skip
        """A face (and a synthetic slant when an italic was asked for and none exists)."""
        pool = [f for f in self.faces if f.mono == mono] or list(self.faces)
        if family is not None:
            pool = [f for f in pool if f.family == family] or pool
        styled = [f for f in pool if f.bold == bold and f.italic == italic]
        if styled:
            return styled[int(rng.integers(len(styled)))], 0.0
        upright = [f for f in pool if f.bold == bold and not f.italic] or [f for f in pool if not f.italic] or pool
        face = upright[int(rng.integers(len(upright)))]
        return face, OBLIQUE if italic else 0.0


# ----------------------------------------------------------------------------------------------
# Geometry


def homography(src: Sequence[Sequence[float]], dst: Sequence[Sequence[float]]) -> np.ndarray:
    """The 3x3 projective map taking the four points `src` onto `dst` (H[2, 2] = 1)."""
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst, strict=True)):
        a[2 * i] = (x, y, 1, 0, 0, 0, -u * x, -u * y)
        a[2 * i + 1] = (0, 0, 0, x, y, 1, -v * x, -v * y)
        b[2 * i], b[2 * i + 1] = u, v
    return np.append(np.linalg.solve(a, b), 1.0).reshape(3, 3)


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def map_points(h: np.ndarray, points: Sequence[Sequence[float]]) -> list[list[float]]:
    """Points through the homography `h`."""
    pts = np.asarray(points, dtype=float)
    out = np.c_[pts, np.ones(len(pts))] @ h.T
    return (out[:, :2] / out[:, 2:]).tolist()


def warp(
    img: Image.Image, h: np.ndarray, size: tuple[int, int], resample: Any = Image.Resampling.BILINEAR
) -> Image.Image:
    """`img` seen through `h` on a `size` canvas (output pixel p shows input h^-1 p; outside is 0).
    Bilinear (as OpenCV's warpPerspective default): text is warped near 1:1, and bicubic costs 3x."""
    inv = np.linalg.inv(h)
    inv = inv / inv[2, 2]
    return img.transform(size, Image.Transform.PERSPECTIVE, tuple(inv.flatten()[:8]), resample)


def rotation_about(angle_deg: float, cx: float, cy: float) -> np.ndarray:
    """A rotation by `angle_deg` (counter-clockwise on screen) about (cx, cy), as a homography."""
    t = np.deg2rad(angle_deg)
    c, s = np.cos(t), np.sin(t)
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    return translation(cx, cy) @ rot @ translation(-cx, -cy)


def jitter(corners: Sequence[Sequence[float]], amount: float, rng: np.random.Generator) -> list[list[float]]:
    """Each corner moved by up to `amount` of the quad's width (x) and height (y): a perspective view.
    Below 0.25 a corner stays in its own quarter, so the quad stays convex and keeps its winding."""
    pts = np.asarray(corners, dtype=float)
    span = pts.max(axis=0) - pts.min(axis=0)
    return (pts + rng.uniform(-amount, amount, size=(4, 2)) * span).tolist()


def bounds(points: Sequence[Sequence[float]]) -> tuple[int, int, int, int]:
    """The integer pixel box covering `points` (floor of the minimum, ceiling of the maximum)."""
    pts = np.asarray(points, dtype=float)
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


# ----------------------------------------------------------------------------------------------
# Photometric effects: applied after placement only, so every quad stays exact


NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], dtype=np.float64)
"""Standard normal quantiles at the midpoints of 256 equal-probability bins (a byte -> a normal deviate)."""


def degrade(
    img: Image.Image, rng: np.random.Generator, blur: tuple[float, float], noise: tuple[float, float]
) -> tuple[Image.Image, dict[str, float]]:
    """Gaussian blur then Gaussian noise, each drawn from its range; returns the settings used. The
    noise is one plane added to every channel (sensor grain), drawn as random bytes through the
    normal distribution's 256 quantiles: a Gaussian to 1/256 in probability, at a fifth of the cost of
    `standard_normal` (which made noise the dearest step of a scene)."""
    radius = float(rng.uniform(*blur))
    sigma = float(rng.uniform(*noise))
    if radius >= 0.05:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    if sigma >= 0.05:
        levels = np.rint(sigma * NORMAL_QUANTILES).astype(np.int16)
        grain = levels[np.frombuffer(rng.bytes(img.width * img.height), dtype=np.uint8)].reshape(img.height, img.width)
        arr = np.asarray(img, dtype=np.int16)
        arr += grain[..., None] if arr.ndim == 3 else grain
        img = Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8), img.mode)
    return img, {"blur": round(radius, 3), "noise": round(sigma, 3)}


def luminance(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    """Mean grey level (0-255) of `img` inside `box`: what a text colour must stand out from."""
    region = img.crop(box).convert("L")
    if min(region.size) >= 8:
        region = region.reduce(4)
    return float(np.asarray(region, dtype=np.float32).mean())


def contrasting(rng: np.random.Generator, level: float) -> tuple[int, int, int]:
    """A text colour that stands out from a background of grey `level`: dark on light, light on dark."""
    if level > 128:
        v = int(rng.integers(0, max(1, int(level) - 110)))
        return (v, v, v) if rng.random() < 0.6 else tuple(int(c) for c in rng.integers(0, max(1, int(level) - 110), 3))
    v = int(rng.integers(min(254, int(level) + 120), 256))
    return (v, v, v) if rng.random() < 0.6 else tuple(int(c) for c in rng.integers(min(254, int(level) + 120), 256, 3))
