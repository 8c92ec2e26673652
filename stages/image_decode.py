"""Decode and validate an image with Pillow, cheaply and safely.

Why this shape: most of the cost of a caption corpus is JPEG decode, so the decoder asks Pillow's
draft mode for a reduced-size DCT decode that is still at least as large as anything we output or
hash; original dimensions come from the header. EXIF orientation is applied, every mode is
normalised to RGB, and a pixel bound rejects decompression bombs before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageFile, ImageOps
from pydantic import Field

from mmcurate.schemas import ImageFields

from .base import Params

# A truncated file must fail, not decode into a grey half-image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# The pixel bound is `DecodeParams.max_pixels`, checked from the header before any pixel is decoded;
# Pillow's own global bound would otherwise cap it at 89 MP whatever the config says.
Image.MAX_IMAGE_PIXELS = None


class ImageRejected(Exception):
    """The image is readable but policy says no (dropped, with `reason`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ImageBroken(Exception):
    """The bytes are not a usable image (quarantined, with `reason` and the error text)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DecodeParams(Params):
    max_pixels: int = Field(89_478_485, gt=0)
    """Pixel bound (width x height from the header) against decompression bombs; Pillow's default."""
    working_side: int = Field(512, ge=0)
    """JPEGs are DCT-decoded (draft mode) only as large as needed for this long side; 0 = full size."""


@dataclass
class Decoded:
    image: Image.Image
    """RGB, EXIF orientation applied, possibly reduced by draft mode."""
    width: int
    """Full-resolution width after orientation."""
    height: int
    mode: str
    format: str
    orientation: int = 1
    """The EXIF orientation tag that was applied (1: none); boxes given on the file move with it."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping to white.
        arr = np.asarray(img, dtype=np.int64)
        top = max(int(arr.max()), 1)
        return Image.fromarray((arr * 255 // top).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode(data: bytes, params: DecodeParams) -> Decoded:
    """Decode `data`; raise ImageBroken (quarantine) or ImageRejected (drop)."""
    if not data:
        raise ImageBroken("empty_file", "zero-byte image")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > params.max_pixels:
            raise ImageRejected(
                "decompression_bomb", f"{w}x{h} = {w * h} pixels exceeds max_pixels={params.max_pixels}"
            )
        mode, fmt = img.mode, (img.format or "").lower()
        orientation = img.getexif().get(0x0112, 1)
        side = params.working_side
        if fmt == "jpeg" and side > 0 and max(w, h) > side:
            scale = side / max(w, h)
            img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
        img.load()
        img = ImageOps.exif_transpose(img)
        rgb = _to_rgb(img)
    except (ImageRejected, ImageBroken):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression_bomb", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError, EOFError) as exc:
        raise ImageBroken("decode_error", f"{type(exc).__name__}: {_stable(str(exc))}") from exc
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    orientation = orientation if isinstance(orientation, int) else 1
    return Decoded(image=rgb, width=w, height=h, mode=mode, format=fmt, orientation=orientation)


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _stable(message: str) -> str:
    """Pillow names the stream by its repr (`<_io.BytesIO object at 0x7f..>`): drop the address,
    so the error column of the ledger is the same on every rerun."""
    return _OBJECT_REPR.sub("<image bytes>", message)


def pixel_hash(img: Image.Image) -> str:
    """SHA-256 over size and RGB pixels: identical for byte- or pixel-identical inputs."""
    h = hashlib.sha256(f"{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def perceptual_hash(img: Image.Image) -> str:
    """64-bit DCT pHash as 16 hex digits (robust to resize and recompression)."""
    return str(imagehash.phash(img))


RESAMPLE = {
    "area": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class EncodeParams(Params):
    max_side: int = Field(512, ge=0)
    """Longest side of the output image (never upscaled); 0 keeps the decoded size."""
    format: str = "jpeg"
    quality: int = 90
    resample: str = "area"
    """Downscaling filter: area (pixel-area average, like OpenCV's INTER_AREA that img2dataset uses),
    bilinear, bicubic or lanczos. Each step up is sharper and slower (lanczos ~3x area)."""

    def model_post_init(self, _context: object) -> None:
        if self.resample not in RESAMPLE:
            raise ValueError(f"output.resample must be one of {', '.join(RESAMPLE)}, got {self.resample!r}")
        if self.format not in ("jpeg", "png", "webp"):
            raise ValueError(f"output.format must be one of jpeg, png, webp, got {self.format!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"output.quality must be within 1..100, got {self.quality}")

    @property
    def ext(self) -> str:
        return {"jpeg": "jpg", "png": "png", "webp": "webp"}[self.format]


def encode(img: Image.Image, params: EncodeParams) -> tuple[bytes, int, int]:
    """Resize (keep ratio, never upscale) and re-encode; deterministic for a given input."""
    if params.max_side and max(img.size) > params.max_side:
        scale = params.max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, RESAMPLE[params.resample])
    buf = io.BytesIO()
    if params.format == "jpeg":
        img.save(buf, format="JPEG", quality=params.quality, optimize=False)
    elif params.format == "webp":
        img.save(buf, format="WEBP", quality=params.quality, method=4)
    else:
        img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue(), img.width, img.height


def decode_into(rec: ImageFields, params: DecodeParams) -> Decoded:
    """Decode a record's input bytes (`rec.image`) into its pixels, with the decode facts and hashes
    every image record carries (caption pairs, document image slots, OCR samples alike); raises
    ImageBroken or ImageRejected with the reason, leaving the record as it was. Returns the decode
    (its orientation, for records whose boxes must follow the image)."""
    img = decode(rec.image or b"", params)
    rec.width, rec.height, rec.mode, rec.image_format = img.width, img.height, img.mode, img.format
    rec.pixel_hash, rec.phash = pixel_hash(img.image), perceptual_hash(img.image)
    rec.pixels, rec.image = img.image, None
    return img


def encode_into(rec: ImageFields, params: EncodeParams) -> None:
    """Resize and re-encode a record's pixels into its output bytes (`rec.image`) and output facts."""
    rec.image, rec.out_width, rec.out_height = encode(rec.pixels, params)
    rec.out_ext, rec.pixels = params.ext, None
