"""The image-caption sample (LAION / CC / COCO style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import DedupKey, OcrLine, Record, read_media
from .image import ImageFields


@dataclass(kw_only=True)
class CaptionSample(ImageFields, Record):
    """One image with its caption, from read to shard.

    `id` is the BLAKE2b-128 of image bytes and caption; `image` holds the raw input bytes until the
    decode stage, then the re-encoded output bytes (a payload field: never a ledger column).
    """

    kind = "caption"

    caption: str = ""
    extra: str = "{}"
    """Input metadata that has no column of its own (url, conversation, ...), as a JSON string."""
    ocr: list[OcrLine] = field(default_factory=list)
    """Text lines found by the OCR stage (when enabled), in the coordinates of `width` x `height`."""

    def members(self) -> dict[str, bytes]:
        image = self.image if self.image is not None else read_media(self.media) if self.media else None
        if image is None:
            raise ValueError(f"caption sample {self.uid} has no encoded image to write")
        return {self.out_ext: image, "txt": self.caption.encode("utf-8")}

    def spool(self) -> bytes | None:
        """The encoded image, to wait in the unit's spool while the record crosses the shuffles."""
        return self.image

    def dedup_key(self) -> DedupKey | None:
        return self.image_key(self.uid, self.id, self.source.unit, self.source.index)
