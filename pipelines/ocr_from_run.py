"""`mmcurate ocr --from-run CAPTION_RUN`: the images a finished caption run dropped for their text,
made into pseudo-labelled OCR samples, so nothing text-rich is wasted.

Dropped images are not stored, so they are read again from their sources through the caption run's
own units (`units.json`) and read settings (its manifest's config), joined to its ledger by place and
checked against the content id. The books of this run are the ledger's: one unit per caption unit
that holds such images, and its input count is the number of ledger rows with one of the reasons; a
row whose source no longer holds the image (or holds other bytes) is quarantined `source_changed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fsspec
from pydantic import Field, field_validator

from mmcurate.schemas import CaptionSample, OcrSample, Record, Source
from mmcurate.stages.base import Params
from mmcurate.stages.io import InputError, ReadReport, Unit, utf8
from mmcurate.stages.readers import ReadParams, read_unit
from mmcurate.stages.writers import join

from . import layout
from .common import load_units
from .ledger import read_ledger

KIND = "caption_run"
"""The unit kind of a caption run's unit read back here (`files[0]`: the caption unit's index)."""


class FromRunParams(Params):
    run: str | None = None
    """A finished caption run (its output folder); None: read `--input` as OCR datasets."""
    reasons: list[str] = Field(default_factory=lambda: ["text_heavy"])
    """The caption run's drop reasons whose images become OCR samples."""
    min_confidence: float = Field(0.8, ge=0.0, le=1.0)
    """The model's lines at or above this confidence become the sample's labels (tag `pseudo`)."""
    lang: str = ""
    """Language recorded on the pseudo-labels ('' : unknown)."""

    @field_validator("reasons")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("from_run.reasons: name at least one drop reason of the caption run (e.g. text_heavy)")
        return value


def _manifest(run_root: str) -> dict[str, Any]:
    try:
        with fsspec.open(join(run_root, layout.MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise InputError(f"--from-run {run_root}: no manifest.json (not a finished run)") from None
    if manifest.get("corpus") != "caption":
        raise InputError(f"--from-run {run_root}: a {manifest.get('corpus')!r} run; only caption runs are read")
    return manifest


def list_from_run_units(params: FromRunParams) -> list[Unit]:
    """One unit per caption unit whose ledger holds an image dropped for one of `params.reasons`."""
    run_root = (params.run or "").rstrip("/")
    manifest = _manifest(run_root)
    known = set(manifest["kinds"]["caption"]["reasons"]["dropped"]) | set(
        manifest["kinds"]["caption"]["reasons"]["quarantined"]
    )
    unknown = [r for r in params.reasons if r not in known]
    if unknown and not known & set(params.reasons):
        raise InputError(
            f"--reasons {', '.join(unknown)}: the run at {run_root} dropped nothing for that; "
            f"its reasons are {', '.join(sorted(known)) or 'none'}"
        )
    units: list[Unit] = []
    for unit in load_units(run_root):
        rows = read_ledger(run_root, CaptionSample, unit.index)
        if any(r.fate.reason in params.reasons for r in rows):
            units.append(Unit(len(units), KIND, run_root, files=(str(unit.index),), group=run_root))
    return units


def _sample(unit: Unit, rec: CaptionSample, row: CaptionSample, lang: str) -> OcrSample:
    extra = {"caption_run_uid": row.uid, "caption_reason": row.fate.reason, "caption": row.caption}
    return OcrSample(
        id=row.id, source=Source(uri=rec.source.uri, unit=unit.index, member=rec.source.member, index=rec.source.index),
        origin="pseudo", task="det", name=utf8(rec.source.member or rec.source.uri), frame="oriented",
        image=rec.image, file_bytes=len(rec.image or b""), extra=json.dumps(extra, ensure_ascii=False, sort_keys=True),
    )  # fmt: skip


def _missing(unit: Unit, row: CaptionSample, error: str) -> OcrSample:
    src = Source(uri=row.source.uri, unit=unit.index, member=row.source.member, index=row.source.index)
    return OcrSample(id=row.id, source=src, origin="pseudo").settle("source_changed", error, stage="read")  # type: ignore[return-value]


def read_from_run(unit: Unit, params: FromRunParams, report: ReadReport | None = None) -> Iterator[Record]:
    """The unit's wanted images, read from the caption run's source; the ledger rows say how many."""
    report = report if report is not None else ReadReport()
    run_root, parent_index = unit.uri, int(unit.files[0])
    manifest = _manifest(run_root)
    parent = next(u for u in load_units(run_root) if u.index == parent_index)
    wanted = {r.source.index: r for r in read_ledger(run_root, CaptionSample, parent_index)}
    wanted = {i: r for i, r in wanted.items() if r.fate.reason in params.reasons}
    report.expected = len(wanted)
    read = ReadParams(**{**manifest["config"].get("read", {}), "limit": None})
    for rec in read_unit(parent, read):
        row = wanted.pop(rec.source.index, None)
        if row is None:
            continue
        report.produced += 1
        if rec.id != row.id or rec.image is None:
            yield _missing(unit, row, f"content id {rec.id} differs from the caption ledger's {row.id}")
            continue
        yield _sample(unit, rec, row, params.lang)
    for row in wanted.values():
        report.produced += 1
        yield _missing(unit, row, f"in the caption ledger of {run_root} but no longer in its source")
