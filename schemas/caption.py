"""The image-caption sample (LAION / CC / COCO style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import PAYLOAD, Fate, OcrLine, Record, Source


@dataclass(kw_only=True)
class CaptionSample(Record):
    """One image with its caption, from read to shard.

    `image` holds the raw input bytes until the decode stage replaces them with the re-encoded
    output bytes; it is a payload field, so it never reaches the ledger or the parquet index.
    """

    kind = "caption"

    id: str
    """Content hash (BLAKE2b-128 of image bytes and caption): stable across reruns and locations."""
    source: Source
    caption: str = ""
    extra: str = "{}"
    """Input metadata that has no column of its own (url, conversation, ...), as a JSON string."""
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
    scores: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ocr: list[OcrLine] = field(default_factory=list)
    """Text lines found by the OCR stage (when enabled), in the coordinates of `width` x `height`."""
    fate: Fate = field(default_factory=Fate)
    image: bytes | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    pixels: Any = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """The decoded RGB image between decode and encode (never written, never shuffled)."""

    @property
    def uid(self) -> str:
        """Unique within a run even for identical content: the place it was read from."""
        return f"{self.source.unit:06d}:{self.source.index:09d}"

    def media(self) -> tuple[str, bytes | None]:
        """(extension, bytes) of the sample's media member in a shard."""
        return self.out_ext, self.image
