"""Record definitions: one dataclass per record kind, with its pyarrow schema derived from it.

This package imports nothing else of mmcurate.
"""

from .base import SCHEMA_VERSION, Fate, OcrLine, Record, Source, Status, arrow_schema
from .caption import CaptionSample

RECORD_KINDS: dict[str, type[Record]] = {CaptionSample.kind: CaptionSample}

__all__ = [
    "RECORD_KINDS",
    "SCHEMA_VERSION",
    "CaptionSample",
    "Fate",
    "OcrLine",
    "Record",
    "Source",
    "Status",
    "arrow_schema",
]
