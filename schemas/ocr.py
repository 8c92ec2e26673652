"""The OCR sample: an image with its text lines (ground truth, rendered or pseudo-labelled) and the
model's reading of it.

Frames: a reader gives ground-truth quads in the input's frame (`OcrSample.frame`: `raw`, the file's
pixel grid before EXIF rotation, as ICDAR's tools and PIL read it; or `oriented`, after it). The
decode stage moves them onto the oriented full-resolution image (`width` x `height`, the frame the
model's lines are in too) and the encode stage onto the stored image (`out_width` x `out_height`),
with the shared geometry of `stages/measure.py`; the shard's `KEY.json` always holds stored pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .base import DedupKey, Fields, OcrLine, Record, read_media
from .image import ImageFields

LINE_TAGS = ("ok", "hard", "gt_mismatch", "unread", "ignore", "pseudo")
"""What verification made of a ground-truth line: `ok` (the model reads it as labelled), `hard`
(the model cannot read it, or reads it otherwise without conviction: kept, the data a model learns
from; every misread line of a rendered sample, whose label is exact by construction), `gt_mismatch` (the
model reads something else with high confidence: a likely label error, marked do-not-care in the
output), `unread` (not verified: no model ran, or the box was degenerate), `ignore` (the input's own
do-not-care, ICDAR `###`, COCO `iscrowd`), `pseudo` (a pseudo-label: the model's own line)."""


@dataclass
class TextLine:
    """One line (or word) of text and its box; the verification's per-line numbers beside it."""

    quad: list[list[float]]
    """Four (x, y) corners clockwise from the text's top-left, in the record's current frame; [] for a
    transcript without boxes."""
    text: str
    lang: str = ""
    ignore: bool = False
    """Do not care: ICDAR's `###`, COCO-Text's illegible / `iscrowd`; never a training target."""
    read: str = ""
    """The model's reading of this box (recognition on the box's crop)."""
    confidence: float = math.nan
    """The recogniser's confidence in `read`."""
    cer: float = math.nan
    """Character error rate of `read` against `text` (normalised: NFKC, whitespace runs)."""
    found: float = 0.0
    """Share of the box the best-overlapping detected line covers (0: the detector missed it)."""
    tag: str = "unread"
    """One of `LINE_TAGS`."""


@dataclass(kw_only=True)
class OcrSample(ImageFields, Record):
    """One OCR training sample. `id` is the BLAKE2b-128 of the image bytes and the labels."""

    kind = "ocr"

    origin: str = ""
    """Where the labels come from: icdar | coco_text | mmocr | rec | transcript | native | rendered | pseudo."""
    task: str = "det"
    """det: lines with boxes; rec: one cropped word or line (its box is the whole image); page: a
    transcript without boxes."""
    name: str = ""
    """The image's name in the input (file name, member key, `file_name`)."""
    frame: str = "raw"
    """The frame `lines` are in now: raw | oriented (input frames), image (width x height), stored."""
    orientation: int = 1
    """The EXIF orientation the decode applied (1: none)."""
    lines: list[TextLine] = field(default_factory=list)
    """Ground truth (or, for pseudo labels, the model's confident lines), in input order."""
    transcript: str = ""
    """The page-level transcript when the input has no boxes (task page)."""
    ocr: list[OcrLine] = field(default_factory=list)
    """Every line the model found on the whole image (detection + recognition), in `frame` pixels
    once the decode has run (the shared OcrLine: `box` is its quad)."""
    extra: str = "{}"
    """Input fields with no column of their own (COCO-Text `legibility`, `class`, render settings), JSON."""

    def members(self) -> dict[str, bytes]:
        image = self.image if self.image is not None else read_media(self.media) if self.media else None
        if image is None:
            raise ValueError(f"ocr sample {self.uid} has no encoded image to write")
        return {self.out_ext: image}

    def sample_json(self, fields: Fields) -> dict[str, Any]:
        """The shared sample JSON plus the lines (boxes in the stored image's pixels) and the model's lines."""
        row = super().sample_json(fields)
        row["lines"] = [_line_json(ln) for ln in self.lines]
        row["model_lines"] = [{"quad": ln.box, "text": ln.text, "confidence": ln.confidence} for ln in self.ocr]
        return row

    def spool(self) -> bytes | None:
        return self.image

    def dedup_key(self) -> DedupKey | None:
        return self.image_key(self.uid, self.id, self.source.unit, self.source.index)

    def targets(self) -> list[TextLine]:
        """The lines a model should learn to read: not do-not-care, not contradicted by the model."""
        return [ln for ln in self.lines if not ln.ignore and ln.tag != "gt_mismatch" and ln.text]


def _line_json(line: TextLine) -> dict[str, Any]:
    row = asdict(line)
    for key in ("confidence", "cer"):
        if isinstance(row[key], float) and not math.isfinite(row[key]):
            row[key] = None  # JSON has no NaN or Infinity (an empty label's CER is infinite)
    return row
