"""Record definitions: one dataclass per record kind, with its pyarrow schema derived from it.

This package imports nothing else of mmcurate.
"""

from .base import SCHEMA_VERSION, Fate, OcrLine, Record, Source, Status, arrow_schema
from .caption import CaptionSample
from .question import AnswerType, Question, Rollout
from .video import ClipRecord, VideoRecord

RECORD_KINDS: dict[str, type[Record]] = {r.kind: r for r in (CaptionSample, Question, Rollout, VideoRecord, ClipRecord)}

__all__ = [
    "RECORD_KINDS",
    "SCHEMA_VERSION",
    "AnswerType",
    "CaptionSample",
    "ClipRecord",
    "Fate",
    "OcrLine",
    "Question",
    "Record",
    "Rollout",
    "Source",
    "Status",
    "VideoRecord",
    "arrow_schema",
]
