"""Interleaved image-text documents (MMC4, OBELICS, Data-Juicer layouts): a document and its image slots.

A document is its text segments in order plus image slots anchored between them; each slot is an
`ImageSlot` record (the shared image fields), joined to its document by document uid and slot, like
clips to their video. The ordered items are never stored twice: an image sits right before the text
segment it is anchored to (`anchor` = that segment's index; `len(texts)` = after the last one), the
convention MMC4's `matched_text_index` and Data-Juicer's `<__dj__image>` placement share. Both kinds
have their identity: documents in = kept + dropped + quarantined, images in = kept + dropped +
quarantined, where the images in are the slots the documents say they hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .base import CHILDREN, PAYLOAD, DedupKey, Fields, Record, SlotChild, read_media
from .image import ImageFields

SPOOLED = {"arrow": False, "spool": True}
"""Payload that waits in the spool with the record (no ledger column) because the finish path needs it."""


@dataclass(kw_only=True)
class ImageSlot(SlotChild, ImageFields, Record):
    """One image position of a document: what the input named, the decode facts, where it is anchored.

    `id` is the BLAKE2b-128 of the image bytes (of the name when the bytes could not be had)."""

    kind = "image"
    parent_kind = "document"

    doc_id: str = ""
    slot: int = 0
    """Position among the document's images in input order (0-based)."""
    name: str = ""
    """How the input named the image: MMC4 `image_name`, a path, a URL, or `bytes` for embedded ones."""
    url: str = ""
    """Where it was on the web (MMC4 `raw_url`, an OBELICS URL), when the input says."""
    anchor: int = 0
    """The text segment this image sits before (after re-alignment); `len(texts)`: after the last."""
    original_anchor: int = 0
    """The anchor the input gave (MMC4 `matched_text_index`, the OBELICS position)."""
    extra: str = "{}"
    """Input fields of the image with no column of their own (MMC4 `matched_sim`, `face_detections`), JSON."""

    def spool(self) -> bytes | None:
        return self.image

    def dedup_key(self) -> DedupKey | None:
        """Exact pixels and pHash as every image, but the earliest document's copy wins (not the
        largest, as for caption pairs): documents are deduplicated in the same run-wide pass with the
        earliest kept, so a kept document never loses its image to a copy in a document that goes."""
        key = self.image_key(self.uid, self.id, self.source.unit, self.source.index)
        return None if key is None else key._replace(rank=(self.source.unit, self.source.index, self.slot))


@dataclass
class Part:
    """A kept image of a kept document, as the shard and the exports need it (never a column)."""

    slot: int
    anchor: int
    ext: str
    media: str
    """A `media_ref` to the encoded bytes (the spool while the run works)."""
    name: str
    url: str
    width: int
    height: int
    extra: str = "{}"


@dataclass(kw_only=True)
class DocumentRecord(Record):
    """One interleaved document. `id` is the BLAKE2b-128 of its text segments and image names."""

    kind = "document"

    url: str = ""
    layout: str = ""
    """The input layout: mmc4 | obelics | datajuicer."""
    texts: list[str] = field(default_factory=list)
    """Text segments in order (MMC4 sentences, OBELICS paragraphs, Data-Juicer chunks)."""
    images: int = 0
    """Image slots the input holds: the input count of the image identity."""
    kept_images: int = 0
    similarity: list[list[float]] = field(default_factory=list)
    """Images x text segments: the image-text similarities the alignment used ([] when none)."""
    similarity_from: str = ""
    """Where `similarity` came from: model (CLIP here) | input (MMC4's similarity_matrix) | '' (none)."""
    metadata: str = "{}"
    """Input fields with no column of their own (OBELICS metadata / general_metadata, MMC4's
    could_have_url_duplicate, ...), as a JSON object string."""
    slots: list[ImageSlot] | None = field(default=None, metadata=CHILDREN, repr=False, compare=False)
    """The document's image records while the recipe scores them together (split off before Finish)."""
    minhash: list[int] | None = field(default=None, metadata=SPOOLED, repr=False, compare=False)
    """MinHash signature of the text for run-wide near-duplicate detection (None: dedup off or no text)."""
    url_key: str = field(default="", metadata=SPOOLED, repr=False, compare=False)
    """The normalised URL exact dedup compares ('' : none)."""
    parts: list[Part] | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """Kept images in slot order, set when the document is settled (for the shard and the exports)."""

    def expected_children(self) -> dict[str, int]:
        return {"image": self.images}

    def dedup_key(self) -> DedupKey | None:
        exact = f"url:{self.url_key}" if self.url_key else f"doc:{self.id}"
        rank = (self.source.unit, self.source.index)
        return DedupKey(rank, self.uid, self.id, self.source.unit, exact, None, tuple(self.minhash or ()) or None)

    def items(self) -> list[dict[str, Any]]:
        """The ordered items: text segments with the kept images before the segment each is anchored to."""
        by_anchor: dict[int, list[Part]] = {}
        for part in self.parts or ():
            by_anchor.setdefault(min(part.anchor, len(self.texts)), []).append(part)
        out: list[dict[str, Any]] = []
        for i in range(len(self.texts) + 1):
            for part in sorted(by_anchor.get(i, ()), key=lambda p: p.slot):
                out.append({"type": "image", "text": "", "image": f"{part.slot}.{part.ext}"})
            if i < len(self.texts):
                out.append({"type": "text", "text": self.texts[i], "image": ""})
        return out

    def members(self) -> dict[str, bytes]:
        """`KEY.<slot>.<ext>` for every kept image (read from the spool when the shard is written)."""
        return {f"{p.slot}.{p.ext}": read_media(p.media) for p in self.parts or ()}

    def sample_json(self, fields: Fields) -> dict[str, Any]:
        """The shared sample JSON plus the ordered items (text, or the member holding the image)."""
        row = super().sample_json(fields)
        row["items"] = self.items()
        return row

    def meta(self) -> dict[str, Any]:
        try:
            value = json.loads(self.metadata)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
