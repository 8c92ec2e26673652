"""The image fields every record that holds one image shares: decode facts, hashes, output, payload.

A caption pair, an OCR sample, a grounding sample and every image slot of an interleaved document
carry the same columns for their image, decided by the same decode stage; dedup reads its keys
from here (exact: pixel hash; near: pHash; the larger, heavier, earlier image wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import PAYLOAD, DedupKey


@dataclass(kw_only=True)
class ImageFields:
    file_bytes: int = 0
    width: int = 0
    """Width after EXIF orientation, at full resolution (from the header, not the draft decode)."""
    height: int = 0
    mode: str = ""
    """Pillow mode of the input before normalisation (RGB, L, CMYK, I;16, P, ...)."""
    image_format: str = ""
    pixel_hash: str = ""
    """SHA-256 of the normalised decoded pixels: equal for byte-identical or pixel-identical images."""
    phash: str = ""
    """64-bit DCT perceptual hash (imagehash.phash) in hex, for near duplicates."""
    out_width: int = 0
    out_height: int = 0
    out_ext: str = ""
    image: bytes | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """The raw input bytes until decode, then the re-encoded output bytes (never a ledger column)."""
    pixels: Any = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """The decoded RGB image between decode and encode (never written, never shuffled)."""

    def image_key(self, uid: str, rid: str, unit: int, index: int) -> DedupKey | None:
        """Dedup key of a decoded image; None before decode (nothing to compare)."""
        if not self.pixel_hash:
            return None
        rank = (-(self.width * self.height), -self.file_bytes, unit, index)
        return DedupKey(rank, uid, rid, unit, self.pixel_hash, int(self.phash or "0", 16))
