"""Decoding, hashing and re-encoding images: every mode, EXIF orientation, bombs, broken bytes, draft mode."""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from skimage import data as skdata

from mmcurate.stages.dedup import DedupParams
from mmcurate.stages.image_decode import (
    DecodeParams,
    EncodeParams,
    ImageBroken,
    ImageRejected,
    decode,
    encode,
    perceptual_hash,
    pixel_hash,
)

ORIENTATION = 0x0112


def save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims `width` x `height` (a decompression bomb's calling card).

    Patching IHDR (and its CRC) keeps the file a few hundred bytes without ever allocating the pixels.
    """
    data = save(Image.new("1", (8, 8)), "PNG")
    assert data[12:16] == b"IHDR"
    ihdr = bytearray(data[16:29])
    struct.pack_into(">II", ihdr, 0, width, height)
    return data[:16] + bytes(ihdr) + struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr))) + data[33:]


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


# ----------------------------------------------------------------------------------------------- modes


def test_rgb_png_is_lossless() -> None:
    """The decoded pixels are exactly the ones written, at the written size."""
    arr = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    d = decode(save(Image.fromarray(arr), "PNG"), DecodeParams())
    assert (d.width, d.height, d.mode, d.format) == (53, 37, "RGB", "png")
    assert d.image.mode == "RGB"
    assert np.array_equal(np.asarray(d.image), arr)


def test_greyscale_l_becomes_grey_rgb() -> None:
    arr = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    d = decode(save(Image.fromarray(arr, "L"), "PNG"), DecodeParams())
    out = np.asarray(d.image)
    assert d.mode == "L"
    assert out.shape == (10, 64, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], arr)


def test_one_bit_black_and_white() -> None:
    arr = np.zeros((16, 24), dtype=bool)
    arr[:, 12:] = True
    d = decode(save(Image.fromarray(arr), "PNG"), DecodeParams())
    out = np.asarray(d.image)
    assert d.mode == "1"
    assert (out[:, :12] == 0).all()
    assert (out[:, 12:] == 255).all()


def test_palette_with_transparency_composites_on_white() -> None:
    """Transparent palette entries become white, not whatever colour the palette slot happens to hold."""
    img = Image.new("P", (20, 10), 0)
    img.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)  # slot 0 black (transparent), slot 1 red-ish
    img.paste(1, (10, 0, 20, 10))
    d = decode(save(img, "PNG", transparency=0), DecodeParams())
    out = np.asarray(d.image)
    assert d.mode == "P"
    assert (out[:, :10] == 255).all()
    assert (out[:, 10:] == (200, 30, 40)).all()


def test_palette_without_transparency_keeps_colours() -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 10, 120, 250] + [0] * 762)
    out = np.asarray(decode(save(img, "PNG"), DecodeParams()).image)
    assert (out == (10, 120, 250)).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composites_on_white(mode: str) -> None:
    """Alpha 0 -> white, alpha 255 -> the colour, partial alpha -> the blend with white."""
    colour = (40, 90, 160) if mode == "RGBA" else (90,)
    alphas = (0, 255, 128)
    img = Image.new(mode, (30, 10))
    for i, a in enumerate(alphas):
        img.paste((*colour, a), (i * 10, 0, i * 10 + 10, 10))
    d = decode(save(img, "PNG"), DecodeParams())
    out = np.asarray(d.image).astype(int)
    assert d.mode == mode
    full = np.array(colour * 3 if mode == "LA" else colour)
    for i, a in enumerate(alphas):
        expected = (full * a + 255 * (255 - a)) / 255
        assert np.abs(out[:, i * 10 : i * 10 + 10] - expected).max() <= 1, (mode, a)


def test_cmyk_converts_to_rgb() -> None:
    """Pure C, M, Y inks and no ink map to their RGB complements and white (lossless via TIFF)."""
    img = Image.new("CMYK", (40, 10))
    inks = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 0)]
    for i, ink in enumerate(inks):
        img.paste(ink, (i * 10, 0, i * 10 + 10, 10))
    d = decode(save(img, "TIFF"), DecodeParams())
    out = np.asarray(d.image)
    assert d.mode == "CMYK"
    for i, (c, m, y, _) in enumerate(inks):
        assert (out[:, i * 10 : i * 10 + 10] == (255 - c, 255 - m, 255 - y)).all()


def test_cmyk_jpeg_decodes() -> None:
    """CMYK JPEGs (print workflows) go through the draft path and still come out RGB at the right size."""
    img = Image.new("CMYK", (900, 600), (0, 255, 255, 0))
    d = decode(save(img, "JPEG", quality=95), DecodeParams(working_side=300))
    assert (d.mode, d.format, d.width, d.height, d.image.mode) == ("CMYK", "jpeg", 900, 600, "RGB")
    r, g, b = np.asarray(d.image).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60  # no cyan, no black: red


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    """I;16 values are scaled by the image maximum: a dark 16-bit image must not turn white or black."""
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7).astype(np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    d = decode(save(img, "PNG"), DecodeParams())
    out = np.asarray(d.image)[..., 0].astype(int)
    top = int(arr.max())
    assert d.mode == "I;16"
    assert np.array_equal(out, arr.astype(np.int64) * 255 // top)
    assert out.max() == 255 and out.min() == 0
    assert len(np.unique(out)) == 256  # the full 8-bit range is used


# ----------------------------------------------------------------------------------------------- EXIF


def corner_marked(w: int, h: int) -> Image.Image:
    """Grey image with a red block in the stored top-left corner, so rotations are visible."""
    img = Image.new("RGB", (w, h), (128, 128, 128))
    img.paste((255, 0, 0), (0, 0, w // 4, h // 4))
    return img


def with_orientation(img: Image.Image, fmt: str, orientation: int, **kw: object) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return save(img, fmt, exif=exif, **kw)


# EXIF spec: where the stored top-left corner lands when displayed, and whether the sides swap.
ORIENTATIONS = {
    1: ("top-left", False),
    3: ("bottom-right", False),
    6: ("top-right", True),
    8: ("bottom-left", True),
}


def corner_of_red(img: Image.Image) -> str:
    arr = np.asarray(img).astype(int)
    h, w = arr.shape[:2]
    corners = {
        "top-left": arr[h // 16, w // 16],
        "top-right": arr[h // 16, w - 1 - w // 16],
        "bottom-left": arr[h - 1 - h // 16, w // 16],
        "bottom-right": arr[h - 1 - h // 16, w - 1 - w // 16],
    }
    red = [name for name, px in corners.items() if px[0] > 200 and px[1] < 60 and px[2] < 60]
    assert len(red) == 1, corners
    return red[0]


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_png(orientation: int) -> None:
    """Width/height and pixels are as displayed, per the EXIF spec, not as stored."""
    w, h = 120, 80
    d = decode(with_orientation(corner_marked(w, h), "PNG", orientation), DecodeParams())
    corner, swap = ORIENTATIONS[orientation]
    assert (d.width, d.height) == ((h, w) if swap else (w, h))
    assert d.image.size == (d.width, d.height)
    assert corner_of_red(d.image) == corner


def test_exif_orientation_6_on_a_drafted_jpeg() -> None:
    """Draft decode and rotation together: header size swapped at full resolution, pixels rotated."""
    w, h = 1600, 1000
    d = decode(with_orientation(corner_marked(w, h), "JPEG", 6, quality=90), DecodeParams(working_side=256))
    assert (d.width, d.height) == (h, w)
    assert d.image.width < d.image.height
    assert max(d.image.size) >= 256
    assert max(d.image.size) < w
    assert corner_of_red(d.image) == "top-right"


# ----------------------------------------------------------------------------------------------- draft mode


def test_draft_decodes_big_jpeg_smaller_but_not_below_working_side(
    photo: Callable[..., Image.Image],
) -> None:
    """The DCT-scaled decode is cheaper yet still at least `working_side` on its long side."""
    w, h = 2400, 1500
    jpg = save(photo((w, h), seed=3), "JPEG", quality=85)
    for side in (256, 512, 700):
        d = decode(jpg, DecodeParams(working_side=side))
        assert (d.width, d.height) == (w, h)  # full size, from the header
        assert side <= max(d.image.size) < w
        assert d.image.size[0] / d.image.size[1] == pytest.approx(w / h, rel=0.02)
    full = decode(jpg, DecodeParams(working_side=0))
    assert full.image.size == (w, h)


def test_no_draft_for_small_jpeg_or_png(photo: Callable[..., Image.Image]) -> None:
    """Images already within working_side, and non-JPEGs, decode at full size."""
    small = decode(save(photo((400, 300), seed=4), "JPEG"), DecodeParams(working_side=512))
    assert small.image.size == (400, 300)
    big_png = decode(save(photo((1200, 700), seed=4), "PNG"), DecodeParams(working_side=256))
    assert big_png.image.size == (1200, 700)


# ----------------------------------------------------------------------------------------------- bad input


def test_decompression_bomb_by_header_is_rejected_before_decoding() -> None:
    """A few hundred bytes claiming 20000x20000 pixels: rejected (dropped), not decoded, not quarantined."""
    bomb = png_declaring(20000, 20000)
    assert len(bomb) < 1000
    assert struct.unpack(">II", bomb[16:24]) == (20000, 20000)
    with pytest.raises(ImageRejected) as err:
        decode(bomb, DecodeParams())
    assert err.value.reason == "decompression_bomb"


def test_image_just_over_the_default_bound_is_rejected() -> None:
    """One row of pixels over the default bound (where Pillow itself would only warn) is refused."""
    bound = DecodeParams().max_pixels
    side = math.isqrt(bound)
    assert side * (side + 1) > bound
    with pytest.raises(ImageRejected) as err:
        decode(png_declaring(side, side + 1), DecodeParams())
    assert err.value.reason == "decompression_bomb"


def test_max_pixels_boundary(photo: Callable[..., Image.Image]) -> None:
    """Exactly max_pixels is allowed; one pixel fewer allowed rejects it."""
    w, h = 100, 80
    png = save(photo((w, h)), "PNG")
    assert decode(png, DecodeParams(max_pixels=w * h)).width == w
    with pytest.raises(ImageRejected) as err:
        decode(png, DecodeParams(max_pixels=w * h - 1))
    assert err.value.reason == "decompression_bomb"
    assert str(w * h) in str(err.value)


def test_truncated_jpeg_is_broken(photo: Callable[..., Image.Image]) -> None:
    """A cut file must fail (quarantine), not decode into a grey half image."""
    jpg = save(photo((640, 480), seed=5), "JPEG", quality=90)
    for params in (DecodeParams(), DecodeParams(working_side=0)):
        with pytest.raises(ImageBroken) as err:
            decode(jpg[: len(jpg) // 2], params)
        assert err.value.reason == "decode_error"


def test_truncated_png_is_broken(photo: Callable[..., Image.Image]) -> None:
    png = save(photo((300, 200), seed=6), "PNG")
    with pytest.raises(ImageBroken) as err:
        decode(png[: len(png) * 2 // 3], DecodeParams())
    assert err.value.reason == "decode_error"


def test_zero_bytes_is_empty_file() -> None:
    with pytest.raises(ImageBroken) as err:
        decode(b"", DecodeParams())
    assert err.value.reason == "empty_file"


@pytest.mark.parametrize(
    "payload",
    [
        b"<html><body>404 Not Found</body></html>",
        b"a caption, not an image",
        b"\xff\xd8\xff" + b"\x00" * 20,  # a JPEG signature and nothing else
        bytes(range(256)) * 4,
    ],
)
def test_non_image_bytes_are_broken(payload: bytes) -> None:
    with pytest.raises(ImageBroken) as err:
        decode(payload, DecodeParams())
    assert err.value.reason == "decode_error"
    assert str(err.value)  # the error text goes into the quarantine table


# ----------------------------------------------------------------------------------------------- hashes


def test_pixel_hash_ignores_encoding_but_not_pixels(photo: Callable[..., Image.Image]) -> None:
    """Same pixels in differently compressed PNGs (and TIFF) hash alike; one changed pixel does not."""
    img = photo((200, 150), seed=7)
    fast, small, tiff = save(img, "PNG", compress_level=1), save(img, "PNG", compress_level=9), save(img, "TIFF")
    assert len({fast, small, tiff}) == 3
    hashes = {pixel_hash(decode(b, DecodeParams()).image) for b in (fast, small, tiff)}
    assert len(hashes) == 1
    changed = img.copy()
    px = changed.getpixel((10, 10))
    changed.putpixel((10, 10), ((px[0] + 1) % 256, px[1], px[2]))
    assert pixel_hash(decode(save(changed, "PNG"), DecodeParams()).image) not in hashes


def test_pixel_hash_includes_the_size() -> None:
    """Same bytes in a different shape are a different image."""
    raw = np.random.default_rng(8).integers(0, 256, (4 * 16 * 3,), dtype=np.uint8)
    a = Image.fromarray(raw.reshape(4, 16, 3))
    b = Image.fromarray(raw.reshape(16, 4, 3))
    assert a.tobytes() == b.tobytes()
    assert pixel_hash(a) != pixel_hash(b)


def test_perceptual_hash_near_for_a_resized_recompressed_copy_and_far_otherwise() -> None:
    """A half-size JPEG copy lands within the dedup distance; different photos are far apart."""
    near_bound = DedupParams().max_distance
    photos = [Image.fromarray(f()).convert("RGB") for f in (skdata.astronaut, skdata.coffee, skdata.rocket)]
    hashes = [perceptual_hash(decode(save(p, "PNG"), DecodeParams()).image) for p in photos]
    assert all(len(h) == 16 for h in hashes)
    for img, h in zip(photos, hashes, strict=True):
        copy = img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS)
        copy_hash = perceptual_hash(decode(save(copy, "JPEG", quality=70), DecodeParams()).image)
        assert hamming(h, copy_hash) <= near_bound
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            assert hamming(hashes[i], hashes[j]) > 4 * near_bound


# ----------------------------------------------------------------------------------------------- encode


def test_encode_never_upscales(photo: Callable[..., Image.Image]) -> None:
    img = photo((100, 50), seed=9)
    out, w, h = encode(img, EncodeParams(max_side=512))
    assert (w, h) == (100, 50)
    assert Image.open(io.BytesIO(out)).size == (100, 50)


@pytest.mark.parametrize(("size", "max_side"), [((1000, 500), 512), ((300, 900), 256), ((640, 640), 100)])
def test_encode_fits_max_side_keeping_ratio(
    photo: Callable[..., Image.Image], size: tuple[int, int], max_side: int
) -> None:
    out, w, h = encode(photo(size, seed=10), EncodeParams(max_side=max_side))
    assert max(w, h) == max_side
    assert w / h == pytest.approx(size[0] / size[1], abs=0.01)
    assert Image.open(io.BytesIO(out)).size == (w, h)


def test_encode_max_side_zero_keeps_size(photo: Callable[..., Image.Image]) -> None:
    _, w, h = encode(photo((1100, 700), seed=11), EncodeParams(max_side=0))
    assert (w, h) == (1100, 700)


@pytest.mark.parametrize(
    ("fmt", "pil", "ext"), [("jpeg", "JPEG", "jpg"), ("png", "PNG", "png"), ("webp", "WEBP", "webp")]
)
def test_encode_formats(photo: Callable[..., Image.Image], fmt: str, pil: str, ext: str) -> None:
    params = EncodeParams(format=fmt)
    out, w, h = encode(photo((300, 200), seed=12), params)
    assert params.ext == ext
    back = Image.open(io.BytesIO(out))
    assert back.format == pil
    assert back.size == (w, h) == (300, 200)


def test_encode_png_is_lossless(photo: Callable[..., Image.Image]) -> None:
    img = photo((120, 90), seed=13)
    out, _, _ = encode(img, EncodeParams(format="png"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out)).convert("RGB")), np.asarray(img))


def test_encode_quality_matters(photo: Callable[..., Image.Image]) -> None:
    """Higher quality: bigger file and closer to the source."""
    img = photo((400, 300), seed=14)
    hi, _, _ = encode(img, EncodeParams(quality=95))
    lo, _, _ = encode(img, EncodeParams(quality=20))
    assert len(hi) > len(lo)
    err = [np.abs(rgb(Image.open(io.BytesIO(b))) - rgb(img)).mean() for b in (hi, lo)]
    assert err[0] < err[1]


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_is_deterministic(photo: Callable[..., Image.Image], fmt: str) -> None:
    """Reruns must give byte-identical shards, so encoding twice gives the same bytes."""
    img = photo((900, 600), seed=15)
    params = EncodeParams(format=fmt, max_side=256)
    assert encode(img, params) == encode(img.copy(), params)


def test_encode_does_not_modify_the_input(photo: Callable[..., Image.Image]) -> None:
    img = photo((800, 400), seed=16)
    before = img.tobytes()
    encode(img, EncodeParams(max_side=100))
    assert img.size == (800, 400)
    assert img.tobytes() == before


@pytest.mark.parametrize("bad", [{"format": "gif"}, {"quality": 0}, {"quality": 101}, {"max_sid": 3}])
def test_encode_params_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EncodeParams(**bad)
