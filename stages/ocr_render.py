"""Synthetic OCR samples with exact ground truth: document pages, receipts, scene text, word crops.

GLM-4.5V's pre-training mix puts rendered text beside real scene text: rendered samples cost nothing
to label, and their labels are exact. Sample i depends only on (seed, i) (its own random generator),
so any worker order, any split of the index range, gives the same bytes. The composers are in
`ocr_scenes.py` (pages, receipts) and `ocr_photo.py` (photographs), their primitives in `ocr_ink.py`.

What is written (`write_rendered`) is the "native" layout the OCR reader reads:
`images/<kind>-<index:08d>.<png|jpg>` and `labels-<part:05d>.jsonl`, one row per sample.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fsspec
import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from mmcurate.schemas import TextLine

from . import ocr_words as vocab
from .base import Params
from .ocr_ink import Faces, covers, describe_face, load_font
from .ocr_photo import receipt, scene, word
from .ocr_scenes import Kit, Made, document
from .writers import atomic_write

KINDS = ("document", "receipt", "scene", "word")
TASKS = {"document": "det", "receipt": "det", "scene": "det", "word": "rec"}
COMPOSERS: dict[str, Callable[[np.random.Generator, Kit], Made]] = {
    "document": document, "receipt": receipt, "scene": scene, "word": word,
}  # fmt: skip

DEJAVU = "/usr/share/fonts/truetype/dejavu"
LATIN_FONTS = [
    f"{DEJAVU}/{name}.ttf"
    for name in (
        "DejaVuSans",
        "DejaVuSans-Bold",
        "DejaVuSerif",
        "DejaVuSerif-Bold",
        "DejaVuSansMono",
        "DejaVuSansMono-Bold",
    )
]
"""fonts-dejavu-core's faces. Its italics are in fonts-dejavu-extra: add them to `fonts.latin` to use
them; without an italic face, italics are the regular face slanted (`ocr_ink.OBLIQUE`)."""
CJK_FONTS = ["/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"]
PACKAGES = {"latin": "fonts-dejavu-core", "cjk": "fonts-wqy-zenhei"}
"""The Debian package holding each script's default fonts: what a missing-font error tells to install."""
PROBES = {"latin": "Aa0", "cjk": "中文"}

PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "retina.jpg", "rocket.jpg",
)  # fmt: skip
"""scikit-image's bundled photographs used as backgrounds. Left out: those with real text the labels
would not name (motorcycle_left/right: a YAMAHA badge; page.png, text.png), and synthetic or tiny
ones (chessboard, color, logo, horse, phantom, clock_motion, microaneurysms)."""
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
FIGURES = "0123456789.,:-/%$€¥x() "
"""Characters the composers write around the words (prices, dates, list markers): the Latin faces must draw them."""
PNG_LEVEL = 1
"""zlib level of document PNGs: on 1240x1754 pages level 1 encodes in 16 ms to 110 KB, 3 in 19 ms to
107 KB, 6 in 25 ms to 92 KB (JPEG at quality 90: 4 ms, but 330 KB and lossy)."""


class RenderParams(Params):
    """How many samples, which kinds in what mix, the fonts, words and photos, the distortion ranges."""

    count: int = Field(ge=0)
    seed: int = Field(0, ge=0)
    mix: dict[str, float] = {"document": 0.3, "receipt": 0.2, "scene": 0.3, "word": 0.2}
    """Kind -> weight (normalised; a kind left out is never drawn)."""
    fonts: dict[str, list[str]] = {"latin": LATIN_FONTS, "cjk": CJK_FONTS}
    """Font files by script: `latin` draws English, `cjk` Chinese (each line in a face of its script)."""
    words: dict[str, str | None] = {"en": None, "zh": None}
    """A word-list file (one word per line, any fsspec URI) per language; None: the built-in list."""
    backgrounds: str | None = None
    """A folder of photographs (any fsspec URI); None: scikit-image's bundled photographs (`PHOTOS`)."""
    zh_share: float = 0.3
    """Share of text blocks (paragraphs, tables, signs, receipts, words) in Chinese."""
    page: tuple[int, int] = (1240, 1754)
    """Document page size (A4 at 150 dpi); text sizes scale with the width."""
    scene: tuple[int, int] = (640, 480)
    """Scene image size."""
    jpeg_quality: tuple[int, int] = (60, 95)
    blur: tuple[float, float] = (0.0, 1.2)
    """Gaussian blur radius range, pixels (receipts, scenes, words)."""
    noise: tuple[float, float] = (0.0, 6.0)
    """Gaussian noise sigma range, grey levels (receipts, scenes, words)."""
    perspective: float = 0.12
    """Corner jitter of a homography, as a share of the text's width and height (scene text; half for
    words, a fifth for receipts). Below 0.25, so a quad stays convex."""
    document_format: Literal["png", "jpeg"] = "png"
    """Pages are PNG by default: lossless edges around small text (the label is exact) and, for a page
    of flat paper, a third of the bytes of JPEG at quality 90."""

    @model_validator(mode="after")
    def _check(self) -> RenderParams:
        _check_mix(self.mix)
        _check_fonts(self.fonts)
        _check_words(self.words)
        background_uris(self.backgrounds)
        _span("render.page", self.page, 256, 10000, ordered=False)
        _span("render.scene", self.scene, 128, 4096, ordered=False)
        _span("render.jpeg_quality", self.jpeg_quality, 1, 100)
        _span("render.blur", self.blur, 0.0, 8.0)
        _span("render.noise", self.noise, 0.0, 64.0)
        if not 0.0 <= self.zh_share <= 1.0:
            raise ValueError(f"render.zh_share must be within 0..1, got {self.zh_share}")
        if not 0.0 <= self.perspective < 0.25:
            raise ValueError(
                f"render.perspective must be within [0, 0.25) (a larger jitter can fold a quad), got {self.perspective}"
            )
        return self


def _span(key: str, pair: tuple[float, float], lo: float, hi: float, ordered: bool = True) -> None:
    a, b = pair
    if not all(math.isfinite(v) and lo <= v <= hi for v in pair):
        raise ValueError(f"{key} values must be within {lo}..{hi}, got {list(pair)}")
    if ordered and a > b:
        raise ValueError(f"{key} is a [low, high] range, got {list(pair)}")


def _check_mix(mix: dict[str, float]) -> None:
    unknown = sorted(set(mix) - set(KINDS))
    if unknown:
        raise ValueError(f"render.mix: unknown kind(s) {unknown}; the kinds are {', '.join(KINDS)}")
    bad = {k: v for k, v in mix.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"render.mix weights must be finite and >= 0, got {bad}")
    if not sum(mix.values()) > 0:
        raise ValueError(f"render.mix must give some kind a positive weight, got {mix}")


def _check_fonts(fonts: dict[str, list[str]]) -> None:
    if set(fonts) != set(PACKAGES):
        raise ValueError(f"render.fonts needs exactly the scripts {sorted(PACKAGES)}, got {sorted(fonts)}")
    for script, paths in fonts.items():
        if not paths:
            raise ValueError(f"render.fonts.{script} names no font file")
        for i, path in enumerate(paths):
            key = f"render.fonts.{script}[{i}]"
            if not os.path.isfile(path):
                raise ValueError(
                    f"{key}: font file {path} does not exist; install the Debian package {PACKAGES[script]} "
                    f"(apt-get install {PACKAGES[script]}, or `make fonts`) or name another font file"
                )
            try:
                load_font(path, 24)
            except OSError as exc:
                raise ValueError(f"{key}: {path} is not a font FreeType can read ({exc})") from None
            if not covers(path, PROBES[script]):
                raise ValueError(f"{key}: {path} cannot draw {script} text ({PROBES[script]!r})")


def _check_words(words: dict[str, str | None]) -> None:
    if set(words) != {"en", "zh"}:
        raise ValueError(f"render.words needs exactly the languages ['en', 'zh'], got {sorted(words)}")
    for lang, uri in words.items():
        if uri is None:
            continue
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.isfile(path):
            raise ValueError(f"render.words.{lang}: word list {uri} does not exist")


def background_uris(folder: str | None) -> tuple[str, ...]:
    """The photographs to paste text on, sorted (a folder's image files, or scikit-image's)."""
    if folder is None:
        try:
            import skimage.data
        except ImportError:
            raise ValueError(
                "render.backgrounds: None means scikit-image's photographs, but scikit-image is not installed "
                "(pip install 'mmcurate[ocr]'); or name a folder of photographs"
            ) from None
        root = Path(skimage.data.__file__).parent
        return tuple(str(root / name) for name in PHOTOS if (root / name).is_file())
    fs, path = fsspec.core.url_to_fs(folder)
    if not fs.isdir(path):
        raise ValueError(f"render.backgrounds: {folder} is not a folder")
    found = sorted(p for p in fs.find(path) if p.lower().endswith(PHOTO_SUFFIXES))
    if not found:
        raise ValueError(f"render.backgrounds: {folder} holds no image file ({', '.join(PHOTO_SUFFIXES)})")
    return tuple(fs.unstrip_protocol(p) for p in found)


# ----------------------------------------------------------------------------------------------
# Resolving fonts, words and photographs (once per process and parameter set)


def _word_list(lang: str, uri: str | None, faces: Faces) -> tuple[str, ...]:
    if uri is None:
        raw = vocab.ZH_WORDS if lang == "zh" else vocab.EN_WORDS
    else:
        with fsspec.open(uri, "rt", encoding="utf-8") as f:
            raw = tuple(line.strip() for line in f)
    drawable = tuple(w for w in dict.fromkeys(raw) if w and all(covers(f.path, w) for f in faces.faces))
    if not drawable:
        raise ValueError(f"render.words.{lang}: no word of {uri or 'the built-in list'} can be drawn by every font of "
                         f"render.fonts.{'cjk' if lang == 'zh' else 'latin'}")  # fmt: skip
    return drawable


def _check_fixed_text(latin: Faces, cjk: Faces) -> None:
    """The built-in strings the composers write (shops, items, signs, figures) must draw in every face."""
    fixed = {
        "latin": FIGURES + "".join(vocab.EN_SHOPS + vocab.EN_ITEMS + vocab.EN_SIGNS + vocab.EN_STREETS)
        + "".join(vocab.EN_RECEIPT.values()),
        "cjk": FIGURES + "".join(vocab.ZH_SHOPS + vocab.ZH_ITEMS + vocab.ZH_SIGNS + vocab.ZH_STREETS)
        + "".join(vocab.ZH_RECEIPT.values()) + "号" + vocab.ZH_PUNCTUATION,
    }  # fmt: skip
    for script, faces in (("latin", latin), ("cjk", cjk)):
        for i, face in enumerate(faces.faces):
            missing = sorted(ch for ch in set(fixed[script]) if not covers(face.path, ch))
            if missing:
                raise ValueError(f"render.fonts.{script}[{i}]: {face.path} cannot draw {''.join(missing)!r}")


SAMPLING = {"count", "seed", "mix", "jpeg_quality", "document_format"}
"""Parameters that choose samples, not resources: left out of the kit's cache key."""


@functools.lru_cache(maxsize=8)
def _kit(resources_json: str) -> Kit:
    p = RenderParams(count=0, **json.loads(resources_json))
    latin = Faces(tuple(describe_face(path) for path in p.fonts["latin"]))
    cjk = Faces(tuple(describe_face(path) for path in p.fonts["cjk"]))
    _check_fixed_text(latin, cjk)
    words = {"en": _word_list("en", p.words["en"], latin), "zh": _word_list("zh", p.words["zh"], cjk)}
    return Kit(latin, cjk, words, background_uris(p.backgrounds), p.zh_share, p.page, p.scene, p.blur, p.noise,
               p.perspective)  # fmt: skip


def resolve_kit(params: RenderParams) -> Kit:
    """The fonts (by role), word lists and photographs of `params`, checked and cached per process."""
    return _kit(params.model_dump_json(exclude=SAMPLING))


# ----------------------------------------------------------------------------------------------
# Samples


@dataclass
class Rendered:
    """One rendered sample: the RGB image (before JPEG), its kind and task, its lines, its settings."""

    image: Image.Image
    kind: str
    task: str
    lines: list[TextLine]
    extra: dict[str, Any]
    """What was drawn how: size, format, JPEG quality, fonts, sizes, blur, noise, angle, background."""


def sample_kind(rng: np.random.Generator, mix: dict[str, float]) -> str:
    """The kind of a sample, from the first draw of its generator."""
    weights = np.array([mix.get(k, 0.0) for k in KINDS], dtype=float)
    cum = np.cumsum(weights / weights.sum())
    return KINDS[min(int(np.searchsorted(cum, rng.random(), side="right")), len(KINDS) - 1)]


def render_sample(index: int, params: RenderParams) -> Rendered:
    """Sample `index`: a function of (params.seed, index) alone."""
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    kit = resolve_kit(params)
    rng = np.random.default_rng([params.seed, index])
    kind = sample_kind(rng, params.mix)
    image, lines, settings = COMPOSERS[kind](rng, kit)
    fmt = params.document_format if kind == "document" else "jpeg"
    quality = int(rng.integers(params.jpeg_quality[0], params.jpeg_quality[1] + 1)) if fmt == "jpeg" else None
    extra = {"width": image.width, "height": image.height, "format": fmt, "jpeg_quality": quality,
             "gray": kind == "document", **settings}  # fmt: skip
    return Rendered(image, kind, TASKS[kind], lines, extra)


def encode_rendered(r: Rendered, params: RenderParams, index: int) -> bytes:
    """The sample's file: PNG or JPEG at the quality drawn with it (JPEG artefacts are the last effect).
    A grey page is stored as one channel (lossless: R = G = B), a third of the bytes and time."""
    fmt, quality = r.extra.get("format"), r.extra.get("jpeg_quality")
    if fmt not in ("png", "jpeg") or (fmt == "jpeg" and not isinstance(quality, int)):
        raise ValueError(f"sample {index} ({r.kind}) has no format and quality to encode with: {r.extra}")
    img = r.image.getchannel("R") if r.extra.get("gray") else r.image
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, "PNG", compress_level=PNG_LEVEL)
    else:
        img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def image_name(r: Rendered, index: int) -> str:
    """Where the sample's image goes under the output folder."""
    return f"images/{r.kind}-{index:08d}.{'png' if r.extra['format'] == 'png' else 'jpg'}"


def label_row(r: Rendered, image: str) -> dict[str, Any]:
    """The sample's row of `labels-*.jsonl` (the native layout the OCR reader reads)."""
    lines = [{"quad": ln.quad, "text": ln.text, "lang": ln.lang, "ignore": False} for ln in r.lines]
    return {"image": image, "lines": lines, "origin": "rendered", "kind": r.kind, "task": r.task, "extra": r.extra}


def write_rendered(
    out: str, params: RenderParams, start: int = 0, stop: int | None = None, part: int = 0
) -> dict[str, int]:
    """Render samples `start`..`stop` (default: to `params.count`) under `out` (any fsspec URI): their
    images, then `labels-<part>.jsonl` (atomic, last: a labels file always has its images). Returns
    the number of samples of each kind."""
    stop = params.count if stop is None else stop
    if not 0 <= start <= stop <= params.count:
        raise ValueError(f"samples {start}..{stop} are not within 0..{params.count} (render.count)")
    root = out.rstrip("/")
    counts = dict.fromkeys(KINDS, 0)
    rows = []
    for i in range(start, stop):
        r = render_sample(i, params)
        name = image_name(r, i)
        atomic_write(f"{root}/{name}", encode_rendered(r, params, i))
        rows.append(label_row(r, name))
        counts[r.kind] += 1
    text = "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows)
    atomic_write(f"{root}/labels-{part:05d}.jsonl", text.encode())
    return counts
