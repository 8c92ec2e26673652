"""Rendered OCR samples on photographs: receipts laid on a surface, scene text, word crops.

Text is drawn flat (a sign, a slip, a word), then moved onto the photograph by one homography per
item; the same matrix maps the ink boxes, so each quad frames the warped text exactly. Every mask is
warped and pasted in its own colour (never an RGBA warp, whose un-premultiplied edges would darken),
and blur, noise and JPEG come after all placement: they move no pixel.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from mmcurate.schemas import TextLine

from . import ocr_words as vocab
from .measure import box_to_quad, quad_to_box
from .ocr_ink import (
    Face,
    Style,
    bounds,
    contrasting,
    degrade,
    draw_text,
    homography,
    jitter,
    load_font,
    luminance,
    map_points,
    rotation_about,
    text_width,
    translation,
    warp,
)
from .ocr_scenes import Canvas, Kit, Made, flat_receipt, language, number, phrase, pick, rounded_quad

MAX_SIDE = 1024
"""Photographs are shrunk to this longest side once, when loaded: it bounds each crop's cost."""


@functools.lru_cache(maxsize=32)
def load_background(uri: str) -> Image.Image:
    """A background photograph (any fsspec URI), oriented, RGB, at most `MAX_SIDE`; decoded once per
    process while it is among the 32 last used (at most ~100 MB)."""
    with fsspec.open(uri, "rb") as f:
        img = Image.open(io.BytesIO(f.read()))
        img = ImageOps.exif_transpose(img).convert("RGB")
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return img


def photo_patch(
    rng: np.random.Generator, kit: Kit, size: tuple[int, int], zoom: tuple[float, float]
) -> tuple[Image.Image, str]:
    """A `size` crop of a random photograph: a region `zoom` times `size` (clipped to the photo), resized."""
    uri = pick(rng, kit.backgrounds)
    src = load_background(uri)
    w, h = size
    sw, sh = src.size
    scale = min(sw / w, sh / h, float(rng.uniform(*zoom)))
    cw, ch = w * scale, h * scale
    x0, y0 = rng.uniform(0, max(0.0, sw - cw)), rng.uniform(0, max(0.0, sh - ch))
    img = src.resize(size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img, PurePosixPath(uri).name


def surface(rng: np.random.Generator, kit: Kit, size: tuple[int, int]) -> tuple[Image.Image, str]:
    """What a receipt or a word lies on: a photograph, or a plain colour with a soft gradient."""
    if rng.random() < 0.7:
        return photo_patch(rng, kit, size, (0.5, 3.0))
    w, h = size
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    rows = (a * (1 - t) + b * t).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(rows, (h, w, 3)))), "plain"


def moved(lines: list[TextLine], h: np.ndarray) -> list[TextLine]:
    """The lines' quads through the homography `h`."""
    return [TextLine(quad=rounded_quad(map_points(h, ln.quad)), text=ln.text, lang=ln.lang) for ln in lines]


def paste_warped(img: Image.Image, layers: list[tuple[Image.Image, Any]], h: np.ndarray) -> None:
    """Each (mask, colour) layer warped by `h` into `img`, only over the box the warped masks cover."""
    w, ht = layers[0][0].size
    x0, y0, x1, y1 = bounds(map_points(h, [[0, 0], [w, 0], [w, ht], [0, ht]]))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, img.width), min(y1, img.height)
    local = translation(-x0, -y0) @ h
    for mask, colour in layers:
        img.paste(colour, (x0, y0, x1, y1), warp(mask, local, (x1 - x0, y1 - y0)))


# ----------------------------------------------------------------------------------------------
# Receipts


def receipt(rng: np.random.Generator, kit: Kit) -> Made:
    """A receipt slightly rotated (and tilted by a fraction of `perspective`) on a surface."""
    slip, extra = flat_receipt(rng, kit)
    w, h = slip.img.size
    corners = [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]]
    angle = float(rng.uniform(-4.0, 4.0))
    dst = jitter(map_points(rotation_about(angle, w / 2, h / 2), corners), kit.perspective * 0.2, rng)
    margin = int(rng.integers(16, 64))
    x0, y0, x1, y1 = bounds(dst)
    dst = map_points(translation(margin - x0, margin - y0), dst)
    size = (x1 - x0 + 2 * margin, y1 - y0 + 2 * margin)
    hom = homography(corners, dst)
    img, where = surface(rng, kit, size)
    img.paste(warp(slip.img, hom, size).convert("RGB"), (0, 0), warp(Image.new("L", (w, h), 255), hom, size))
    img, effects = degrade(img, rng, kit.blur, kit.noise)
    return img, moved(slip.lines, hom), {**extra, **effects, "angle": round(angle, 3), "background": where}


# ----------------------------------------------------------------------------------------------
# Scene text: signs and text painted straight onto the photograph


@dataclass
class Item:
    """One flat piece of scene text: its masks (drawn in order), its lines, and whether it is a sign."""

    canvas: Canvas
    sign: Image.Image | None = None
    """A sign's plate (None: the text is painted straight onto the photograph)."""
    frame: Image.Image | None = None
    outline: Image.Image | None = None
    """The stroked text (drawn under the fill in another colour)."""


def _item_text(rng: np.random.Generator, kit: Kit, lang: str, sign: bool) -> list[str]:
    first = pick(rng, vocab.ZH_SIGNS if lang == "zh" else vocab.EN_SIGNS) if rng.random() < 0.5 else ""
    first = first or phrase(rng, kit, lang, 1, 3 if lang == "en" else 2, title=True)
    if lang == "en" and rng.random() < 0.3:
        first = first.upper()
    lines = [first]
    for _ in range(int(rng.integers(0, 3)) if sign else 0):
        if rng.random() < 0.4:
            lines.append(number(rng, pick(rng, ("price", "count", "date")), lang))
        else:
            lines.append(phrase(rng, kit, lang, 1, 3 if lang == "en" else 2))
    return lines


def _item(rng: np.random.Generator, kit: Kit, scale: float) -> Item:
    """Lines of text on a flat patch; a sign gets a plate (and maybe a frame), direct text maybe an outline."""
    lang, sign = language(rng, kit), rng.random() < 0.55
    face, oblique = kit.faces(lang).pick(rng, bold=rng.random() < 0.6, italic=lang == "en" and rng.random() < 0.1)
    size = max(10, round(pick(rng, (20, 24, 28, 32, 36, 40, 46, 52)) * scale))
    stroke = max(1, size // 14) if not sign and rng.random() < 0.5 else 0
    texts = _item_text(rng, kit, lang, sign)
    ascent, descent = load_font(face.path, size).getmetrics()
    step = round((ascent + descent) * 1.15)
    pad = round(size * (0.5 if sign else 0.2)) + stroke + 2
    width = max(text_width(face.path, size, t) for t in texts) + 2 * pad + size * oblique
    item = Item(Canvas(Image.new("L", (round(width), step * len(texts) + 2 * pad), 0)))
    style = Style(face.path, size, 255, stroke=stroke, stroke_fill=255, oblique=oblique)
    for i, text in enumerate(texts):
        x = (item.canvas.img.width - text_width(face.path, size, text)) / 2
        item.canvas.text(x, pad + i * step + ascent, text, face, style)
    if stroke:  # the outline is the stroked mask; the fill is drawn again without the stroke
        item.outline, fill = item.canvas.img, Image.new("L", item.canvas.img.size, 0)
        for i, text in enumerate(texts):
            x = (fill.width - text_width(face.path, size, text)) / 2
            draw_text(fill, x, pad + i * step + ascent, text, Style(face.path, size, 255, oblique=oblique))
        item.canvas.img = fill
    if sign:
        item.sign = Image.new("L", item.canvas.img.size, 255)
        if rng.random() < 0.5:
            inset = max(2, pad // 3)
            frame = Image.new("L", item.sign.size, 0)
            corners = (inset, inset, frame.width - inset - 1, frame.height - inset - 1)
            ImageDraw.Draw(frame).rectangle(corners, outline=255, width=max(2, size // 12))
            item.frame = frame
    return item


def _destination(
    rng: np.random.Generator, kit: Kit, size: tuple[int, int], taken: list[tuple[int, int, int, int]]
) -> list[list[float]] | None:
    """Where a patch of `size` goes: rotated, tilted, inside the scene, clear of the patches placed."""
    w, h = size
    sw, sh = kit.scene
    corners = [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]]
    for _ in range(8):
        angle = float(rng.uniform(-25, 25) if rng.random() < 0.3 else rng.uniform(-6, 6))
        quad = jitter(map_points(rotation_about(angle, w / 2, h / 2), corners), kit.perspective, rng)
        x0, y0, x1, y1 = bounds(quad)
        if x1 - x0 > sw - 8 or y1 - y0 > sh - 8:
            continue
        tx, ty = rng.uniform(4 - x0, sw - 4 - x1), rng.uniform(4 - y0, sh - 4 - y1)
        box = (int(x0 + tx), int(y0 + ty), int(x1 + tx) + 1, int(y1 + ty) + 1)
        if all(box[2] + 4 < b[0] or b[2] + 4 < box[0] or box[3] + 4 < b[1] or b[3] + 4 < box[1] for b in taken):
            taken.append(box)
            return map_points(translation(tx, ty), quad)
    return None


def _colours(
    rng: np.random.Generator, img: Image.Image, item: Item, box: tuple[int, int, int, int]
) -> list[tuple[Image.Image, Any]]:
    """The item's masks with their colours: text that stands out from what is behind it."""
    if item.sign is not None:
        plate = tuple(int(c) for c in rng.integers(0, 256, 3))
        ink = contrasting(rng, float(np.dot(plate, (0.299, 0.587, 0.114))))
        layers = [(item.sign, plate), (item.canvas.img, ink)]
        if item.frame is not None:
            layers.insert(1, (item.frame, ink))
        return layers
    level = luminance(img, box)
    ink = contrasting(rng, level)
    if item.outline is None:
        return [(item.canvas.img, ink)]
    return [(item.outline, contrasting(rng, 255.0 * (level < 128))), (item.canvas.img, ink)]


def scene(rng: np.random.Generator, kit: Kit) -> Made:
    """One to five signs or painted words on a photograph, each under its own perspective."""
    img, where = photo_patch(rng, kit, kit.scene, (0.45, 1.0))
    scale = min(kit.scene) / 480
    lines: list[TextLine] = []
    taken: list[tuple[int, int, int, int]] = []
    fonts: set[str] = set()
    sizes: set[int] = set()
    for _ in range(int(rng.integers(1, 6))):
        item = _item(rng, kit, scale)
        w, h = item.canvas.img.size
        quad = _destination(rng, kit, (w, h), taken)
        if quad is None:
            continue
        hom = homography([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]], quad)
        paste_warped(img, _colours(rng, img, item, taken[-1]), hom)
        lines += moved(item.canvas.lines, hom)
        fonts |= item.canvas.fonts
        sizes |= item.canvas.sizes
    img, effects = degrade(img, rng, kit.blur, kit.noise)
    return img, lines, {"fonts": sorted(fonts), "sizes": sorted(sizes), **effects, "background": where}


# ----------------------------------------------------------------------------------------------
# Word crops (task rec)


def _word_text(rng: np.random.Generator, kit: Kit, lang: str) -> str:
    if rng.random() < 0.12:
        return number(rng, pick(rng, ("price", "count", "date", "percent")), lang)
    if lang == "zh":
        return phrase(rng, kit, "zh", 1, 2)
    word = pick(rng, kit.words["en"])
    return pick(rng, (word, word, word.capitalize(), word.upper()))


def word(rng: np.random.Generator, kit: Kit) -> Made:
    """One word on a patch of photo or colour, seen at an angle; the line's quad is the whole crop and
    `extra.word_quad` the word's own exact quad."""
    lang = language(rng, kit)
    face, oblique = kit.faces(lang).pick(rng, bold=rng.random() < 0.4, italic=lang == "en" and rng.random() < 0.15)
    size = pick(rng, (28, 32, 36, 40, 44, 48, 56))
    stroke = max(1, size // 15) if rng.random() < 0.25 else 0
    text = _word_text(rng, kit, lang)
    canvas, mask_w, fill = _word_masks(face, size, stroke, oblique, text)
    x0, y0, x1, y1 = quad_to_box(canvas.lines[0].quad)
    mx, my = ((y1 - y0) * rng.uniform(0.08, 0.45, 2)).tolist()
    region = [[x0 - mx, y0 - my], [x1 + mx, y0 - my], [x1 + mx, y1 + my], [x0 - mx, y1 + my]]
    angle = float(rng.uniform(-6, 6))
    dst = jitter(map_points(rotation_about(angle, (x0 + x1) / 2, (y0 + y1) / 2), region), kit.perspective * 0.5, rng)
    bx0, by0, bx1, by1 = bounds(dst)
    hom = translation(-bx0, -by0) @ homography(region, dst)
    size_out = (bx1 - bx0, by1 - by0)
    img, where = surface(rng, kit, size_out)
    level = luminance(img, (0, 0, *size_out))
    ink = contrasting(rng, level)
    if stroke:
        img.paste(contrasting(rng, 255.0 * (level < 128)), (0, 0), warp(mask_w, hom, size_out))
    img.paste(ink, (0, 0), warp(fill, hom, size_out))
    word_quad = rounded_quad(map_points(hom, canvas.lines[0].quad))
    img, effects = degrade(img, rng, kit.blur, kit.noise)
    w, h = img.size
    drawn = canvas.lines[0]
    line = TextLine(quad=rounded_quad(box_to_quad((0, 0, w, h))), text=drawn.text, lang=drawn.lang)
    extra = {**canvas.settings(), **effects, "angle": round(angle, 3), "background": where, "word_quad": word_quad}
    return img, [line], extra


def _word_masks(
    face: Face, size: int, stroke: int, oblique: float, text: str
) -> tuple[Canvas, Image.Image, Image.Image]:
    """The word drawn flat: its canvas (the line's ink quad), the outlined mask and the fill mask."""
    ascent, descent = load_font(face.path, size).getmetrics()
    pad = size + stroke
    shape = (round(text_width(face.path, size, text) + 2 * pad + size * oblique), ascent + descent + 2 * pad)
    canvas = Canvas(Image.new("L", shape, 0))
    canvas.text(pad, pad + ascent, text, face, Style(face.path, size, 255, stroke, 255, oblique))
    if not stroke:
        return canvas, canvas.img, canvas.img
    fill = Image.new("L", shape, 0)
    draw_text(fill, pad, pad + ascent, text, Style(face.path, size, 255, oblique=oblique))
    return canvas, canvas.img, fill
