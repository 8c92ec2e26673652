"""Record definitions: one dataclass per record kind, with its pyarrow schema derived from it.

This package imports nothing else of mmcurate.
"""

from .base import (
    CHILDREN,
    PAYLOAD,
    SCHEMA_VERSION,
    DedupKey,
    Fate,
    Fields,
    OcrLine,
    Record,
    Row,
    Source,
    Status,
    UndeclaredField,
    clean_error,
    media_ref,
    read_media,
    sample_json_bytes,
)
from .caption import CaptionSample
from .grounding import BOX_FORMATS, REGION_TASKS, GroundingSample, RegionRecord, region_json
from .image import ImageFields
from .interleaved import DocumentRecord, ImageSlot, Part
from .ocr import LINE_TAGS, OcrSample, TextLine
from .question import AnswerType, Question, Rollout
from .reasons import REASONS, Reason, UnknownReason, reason, register_reason
from .video import ClipRecord, VideoRecord

RECORD_KINDS: dict[str, type[Record]] = {
    r.kind: r
    for r in (
        CaptionSample,
        Question,
        VideoRecord,
        ClipRecord,
        DocumentRecord,
        ImageSlot,
        OcrSample,
        GroundingSample,
        RegionRecord,
    )
}
ROW_KINDS: dict[str, type[Row]] = {**RECORD_KINDS, Rollout.kind: Rollout}

__all__ = [
    "BOX_FORMATS",
    "CHILDREN",
    "LINE_TAGS",
    "PAYLOAD",
    "REASONS",
    "RECORD_KINDS",
    "REGION_TASKS",
    "ROW_KINDS",
    "SCHEMA_VERSION",
    "AnswerType",
    "CaptionSample",
    "ClipRecord",
    "DedupKey",
    "DocumentRecord",
    "Fate",
    "Fields",
    "GroundingSample",
    "ImageFields",
    "ImageSlot",
    "OcrLine",
    "OcrSample",
    "Part",
    "Question",
    "Reason",
    "Record",
    "RegionRecord",
    "Rollout",
    "Row",
    "Source",
    "Status",
    "TextLine",
    "UndeclaredField",
    "UnknownReason",
    "VideoRecord",
    "clean_error",
    "media_ref",
    "read_media",
    "reason",
    "region_json",
    "register_reason",
    "sample_json_bytes",
]
