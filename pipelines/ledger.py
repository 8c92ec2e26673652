"""Reading a finished run back: its ledgers, as records whose threshold verdicts can be made again.

`mmcurate select` starts here for every corpus. A record's fate is re-opened (made pending again)
when it was kept or when its reason is one the registry marks `redecide` (thresholds, dedup,
verdicts derived from children); quarantines and facts about the input stay as they were.
"""

from __future__ import annotations

from typing import Any

import fsspec
import pyarrow.parquet as pq

from mmcurate.schemas import REASONS, Fate, Record, Status
from mmcurate.stages.writers import join

from . import layout


def read_ledger(run_root: str, cls: type[Record], unit: int) -> list[Any]:
    """The records of one kind of one unit of a run, in ledger order ([] when the unit wrote none)."""
    fs, path = fsspec.core.url_to_fs(join(run_root, layout.ledger(cls.kind, unit)))
    if not fs.exists(path):
        return []
    with fs.open(path, "rb") as f:
        return [cls.from_row(row) for row in pq.read_table(f).to_pylist()]


def redecidable(rec: Record) -> bool:
    if rec.fate.status == Status.KEPT:
        return True
    if not rec.fate.final:
        return False
    known = REASONS.get(rec.fate.reason)
    if known is None:  # the code of a `where` rule of the parent's config: a threshold's verdict
        return rec.fate.status == Status.DROPPED
    return known.redecide


def reopen(rec: Record) -> Record:
    """Pending again if its verdict follows from scores; as it was otherwise."""
    if redecidable(rec):
        rec.fate = Fate()
    return rec
