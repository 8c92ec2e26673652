"""The demo corpus: real photographs from the scikit-image wheel, plus one input of each kind of bad.

`build_corpus(dest)` writes a folder of images with sidecar `.txt` captions (same stem), the layout
`mmcurate caption --input FOLDER` reads. Every photograph ships inside the scikit-image wheel
(`skimage/data/*.png|jpg`), so nothing is downloaded. The folder holds

* good photographs with hand-written alt-text captions, which the caption pipeline keeps;
* one deliberately bad input per failure the pipeline names: broken files (quarantined), filter
  failures and duplicates (dropped).

`EXPECTED` maps every image file name to the (status, reason) the default caption config gives it,
so `mmcurate demo` doubles as an end-to-end check. The build is deterministic: fixed JPEG quality
and PNG compression, no timestamps or EXIF, no randomness; same bytes on every build.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

from mmcurate.pipelines.caption import CORPUS, CaptionConfig
from mmcurate.pipelines.models import needed_models, validate_models
from mmcurate.pipelines.run import OutputError
from mmcurate.stages.base import ModelUnavailable

JPEG_QUALITY = 90
PNG_LEVEL = 9

KEPT = ("kept", "")

# name -> (skimage data file, caption). Captions describe what the photograph actually shows.
GOOD: dict[str, tuple[str, str]] = {
    "astronaut.jpg": (
        "astronaut.png",
        "Portrait of astronaut Eileen Collins in an orange flight suit, holding a white helmet, "
        "with an American flag and a model of the space shuttle behind her.",
    ),
    "brick_wall.png": (
        "brick.png",
        "Grayscale photo of a wall of long, narrow bricks laid in a staggered pattern.",
    ),
    "cameraman.png": (
        "camera.png",
        "Black and white photo of a man in a dark coat looking through a camera on a tripod "
        "in a grassy field, with buildings in the distance.",
    ),
    "cat.jpg": (
        "chelsea.png",
        "Close-up of a ginger tabby cat with green eyes and long white whiskers.",
    ),
    "coffee.jpg": (
        "coffee.png",
        "A cup of coffee on a red saucer with a metal spoon, standing on a wooden table.",
    ),
    "coins.png": (
        "coins.png",
        "Black and white photo of ancient Greek coins laid out in four rows on a dark background.",
    ),
    "galaxies.jpg": (
        "hubble_deep_field.jpg",
        "Hubble Space Telescope deep field image with hundreds of distant galaxies scattered across black space.",
    ),
    "tissue_stain.jpg": (
        "ihc.png",
        "Microscope image of a tissue section stained brown and blue by immunohistochemistry.",
    ),
    "moon_surface.png": (
        "moon.png",
        "Grayscale close-up of the surface of the Moon with small craters and dark patches.",
    ),
    "motorcycle.jpg": (
        "motorcycle_left.png",
        "A red motorcycle with chrome details parked in a workshop with shelves and cardboard boxes.",
    ),
    "retina.jpg": (
        "retina.jpg",
        "Color fundus photograph of a human retina, with the optic disc and blood vessels branching across it.",
    ),
    "rocket.jpg": (
        "rocket.jpg",
        "A rocket standing on its launch pad at dusk between tall lightning towers, lit by floodlights.",
    ),
}

EXPECTED: dict[str, tuple[str, str]] = {
    **{name: KEPT for name in GOOD},
    # Broken files: quarantined before any filter runs.
    "truncated.jpg": ("quarantined", "decode_error"),
    "empty.jpg": ("quarantined", "empty_file"),
    "not_an_image.jpg": ("quarantined", "decode_error"),
    # Readable but refused before pixels are decoded.
    "bomb.png": ("dropped", "decompression_bomb"),
    # Filters, one input each, in config order.
    "tiny.png": ("dropped", "too_small"),
    "retina_strip.jpg": ("dropped", "aspect_ratio"),
    "grass.jpg": ("dropped", "caption_empty"),
    "handwriting.jpg": ("dropped", "caption_boilerplate"),
    "cell.jpg": ("dropped", "caption_repetition"),
    "gravel.jpg": ("dropped", "language"),
    # Model filters (OCR runs offline, so it is always on in the demo).
    "poster.png": ("dropped", "text_heavy"),
    # Duplicates, decided after the filters.
    "coffee_copy.jpg": ("dropped", "duplicate_exact"),
    "rocket_small.jpg": ("dropped", "duplicate_near"),
}

# Which good image each duplicate copies (the kept representative it must point at).
DUPLICATE_OF: dict[str, str] = {"coffee_copy.jpg": "coffee.jpg", "rocket_small.jpg": "rocket.jpg"}


def _skimage_file(name: str) -> Path:
    try:
        import skimage.data
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise RuntimeError("the demo corpus needs scikit-image: pip install 'mmcurate[demo]'") from exc
    path = Path(skimage.data.__file__).parent / name
    if not path.is_file():
        raise RuntimeError(f"{path} is not in the installed scikit-image wheel (scikit-image>=0.22 bundles it)")
    return path


def photo(name: str) -> Image.Image:
    with Image.open(_skimage_file(name)) as img:
        img.load()
        if img.mode in ("RGBA", "P", "LA"):
            return img.convert("RGB")
        return img.copy()


def jpeg_bytes(img: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def _encode(name: str, img: Image.Image) -> bytes:
    return _png(img) if name.endswith(".png") else jpeg_bytes(img)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG whose header declares width x height pixels, in a few kB.

    Written by hand (rows streamed into zlib) so building it never allocates the full image.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" + b"\0" * ((width + 7) // 8)  # filter byte "None", then packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _poster() -> Image.Image:
    """A text-heavy image (a poster): large words over most of a light background, in Pillow's bundled font."""
    from PIL import ImageDraw, ImageFont

    img = Image.new("RGB", (640, 480), (250, 246, 232))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=84)
    for row, line in enumerate(("SUMMER", "SALE ON", "SHOES", "HALF OFF", "TODAY")):
        draw.text((20, 8 + row * 94), line, fill=(20, 20, 20), font=font)
    return img


def _bad_inputs(good: dict[str, tuple[bytes, str]]) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, caption) for every deliberately bad input; `good` are the good files."""
    motorcycle = jpeg_bytes(photo("motorcycle_right.png"))  # the other eye of the stereo pair
    rocket = photo("rocket.jpg")
    small_rocket = rocket.resize((round(rocket.width * 0.7), round(rocket.height * 0.7)), Image.Resampling.LANCZOS)
    retina = photo("retina.jpg")
    top = (retina.height - 64) // 2
    strip = retina.crop((0, top, 1280, top + 64))  # 1280x64 = 20:1, short side exactly min_side
    return {
        "truncated.jpg": (
            motorcycle[: len(motorcycle) // 2],
            "A red motorcycle parked indoors next to a wooden bench and metal shelving.",
        ),
        "empty.jpg": (b"", "A photograph that was never written to disk."),
        "not_an_image.jpg": (
            b"This is a plain text note saved with a .jpg extension, not an image.\n",
            "A handwritten shopping list on a sheet of lined paper.",
        ),
        "bomb.png": (_bomb_png(10_000, 10_000), "A completely black square image with nothing in it."),
        "tiny.png": (
            _png(photo("coffee.png").resize((40, 30), Image.Resampling.LANCZOS)),
            "A tiny thumbnail of a coffee cup on a wooden table.",
        ),
        "retina_strip.jpg": (
            jpeg_bytes(strip),
            "A thin horizontal strip cut from a photograph of a retina, showing blood vessels.",
        ),
        "grass.jpg": (jpeg_bytes(photo("grass.png")), ""),
        "handwriting.jpg": (jpeg_bytes(photo("text.png")), "IMG_2034.JPG"),
        "cell.jpg": (
            jpeg_bytes(photo("cell.png")),
            "cell image cell image cell image cell image cell image cell image",
        ),
        "gravel.jpg": (
            jpeg_bytes(photo("gravel.png")),
            "Grauer Kies aus vielen kleinen, kantigen Steinen, von oben fotografiert.",
        ),
        "poster.png": (_png(_poster()), "A shop poster announcing a summer sale on shoes at half price."),
        "coffee_copy.jpg": (
            good["coffee.jpg"][0],  # byte-identical; sorts after coffee.jpg, so coffee.jpg is kept
            "Espresso in a red cup and saucer on a rustic wooden tabletop.",
        ),
        "rocket_small.jpg": (
            jpeg_bytes(small_rocket, quality=60),
            "Rocket on the launch pad at twilight, surrounded by lightning rods and bright lights.",
        ),
    }


def corpus_files() -> dict[str, tuple[bytes, str]]:
    """Every demo input as name -> (image file bytes, caption), in memory, sorted by name."""
    files = {name: (_encode(name, photo(src)), caption) for name, (src, caption) in GOOD.items()}
    files.update(_bad_inputs(files))
    if set(files) != set(EXPECTED):
        raise AssertionError(f"demo corpus and EXPECTED disagree: {sorted(set(files) ^ set(EXPECTED))}")
    return dict(sorted(files.items()))


def caption_file(name: str) -> str:
    """The sidecar caption file of image `name` (same stem, `.txt`)."""
    return name.rsplit(".", 1)[0] + ".txt"


def build_corpus(dest: Path) -> Path:
    """Write the demo corpus into `dest` and return `dest`.

    Rebuilding over an earlier demo corpus replaces it; a folder holding anything else is refused
    rather than cleared, since every image in the folder would otherwise become a demo input.
    """
    dest = Path(dest)
    files = corpus_files()
    names = set(files) | {caption_file(n) for n in files}
    if dest.is_dir():
        foreign = sorted(p.name for p in dest.iterdir() if p.name not in names)
        if foreign:
            raise OutputError(
                f"{dest} holds files that are not part of the demo corpus ({', '.join(foreign[:5])}); "
                "choose another --workdir"
            )
    dest.mkdir(parents=True, exist_ok=True)
    for name, (data, caption) in files.items():
        (dest / name).write_bytes(data)
        (dest / caption_file(name)).write_bytes(caption.encode("utf-8") + (b"\n" if caption else b""))
    return dest


def demo_config() -> tuple[CaptionConfig, list[str]]:
    """The embedded defaults, less the model filters whose weights this machine cannot have.

    Each model filter is checked on its own; one that cannot run here is switched off and the reason
    is returned, to be printed: the demo says what it left out, the pipeline itself never does.
    """
    return without_unavailable_models(CORPUS.load_config(None))


def without_unavailable_models(config: Any) -> tuple[Any, list[str]]:
    """`config` less each model filter that cannot run here, and why (any corpus's demo)."""
    filters, notes = dict(config.filters), []
    for name, params in config.filters.items():
        trial = config.model_copy(update={"filters": {name: params}})
        if not needed_models(trial.build_filters()):
            continue
        try:
            validate_models(trial)
        except ModelUnavailable as exc:
            del filters[name]
            notes.append(f"filter {name} is off in this demo: {exc}")
    return config.model_copy(update={"filters": filters}), notes
