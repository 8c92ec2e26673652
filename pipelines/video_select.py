"""`mmcurate select` on a video run: re-threshold clips from the ledgers, without decoding a frame.

    'ListUnits' -> 'ReadLedgers' (videos + clips, verdicts re-opened) -> 'AttachOverlays' -> 'ApplyThresholds'
      -> 'LocateMedia' (kept clips: the parent's shards; dropped ones: the parent's dropped_media/) -> 'Finish'

A clip the parent dropped, and that the new thresholds keep, needs its file: the parent kept it only
with `output.keep_dropped_media: true`; otherwise the clip is dropped as `media_not_kept`, and the
summary says how many.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
import pyarrow.parquet as pq

from mmcurate.schemas import ClipRecord, Record, Status, VideoRecord
from mmcurate.stages.io import ReadReport, Unit
from mmcurate.stages.writers import join

from . import layout
from .corpus import Corpus
from .finish import Finish, Run
from .ledger import read_ledger, reopen
from .overlays import AttachOverlays
from .spool import UnitEnd
from .thresholds import Thresholds

DROPPED_MEDIA = "dropped_media"


class ReadVideoLedgersFn(beam.DoFn):
    """One unit of the parent: its videos and clips, re-opened where their verdicts follow from scores
    (a clip only when its video is re-opened: the clips of a broken video stay as they were)."""

    def __init__(self, parent: str) -> None:
        self.parent = parent

    def process(self, unit: Unit) -> Iterator[Any]:
        videos = read_ledger(self.parent, VideoRecord, unit.index)
        open_videos = {v.uid for v in videos if reopen(v).pending}
        yield from videos
        for clip in read_ledger(self.parent, ClipRecord, unit.index):
            yield reopen(clip) if clip.parent_uid in open_videos else clip
        yield UnitEnd.of(unit.index, unit.uri, ReadReport(produced=len(videos)).to_dict())


def settle_video(video: Record, clips: list[Record]) -> None:
    """A video's fate from its clips: kept with a kept (or still pending) clip; quarantined when clips
    failed (an error, not a verdict); dropped when its scenes were all too short or its clips dropped."""
    failed = [c for c in clips if c.fate.status == Status.QUARANTINED]
    if any(c.fate.status == Status.KEPT or c.pending for c in clips):
        video.keep()
    elif failed:
        first = failed[0].fate.error
        video.settle("clips_failed", f"{len(failed)} of {len(clips)} clips failed; first: {first}")
    elif clips and all(c.fate.reason == "too_short" for c in clips):
        video.settle("no_clip_long_enough")
    else:
        video.settle("all_clips_dropped")


def settle_before_dedup(records: dict[str, list[Record]]) -> None:
    """A video none of whose clips survived is settled before run-wide dedup chooses which copy of
    a repeated video to keep (a copy whose clips all failed must not win over a healthy one)."""
    families: dict[str, list[Record]] = {}
    for clip in records.get("clip", []):
        families.setdefault(clip.parent_uid or "", []).append(clip)
    for video in records.get("video", []):
        clips = families.get(video.uid, [])
        if video.pending and not any(c.pending for c in clips):
            settle_video(video, clips)


class ClipFiles:
    """Where a parent run keeps a clip's file: a member of its shards (found by clip id, first in the
    clip's own unit, else anywhere: the copy of a repeated video has its original's clip ids), or a
    member of its dropped_media/ tars. Indexes are read once per worker, lazily."""

    def __init__(self, parent: str) -> None:
        self.parent = parent
        self._units: dict[int, dict[str, str]] = {}
        self._all: dict[str, str] | None = None
        self._dropped: dict[int, frozenset[str]] = {}

    def _index(self, pattern: str) -> dict[str, str]:
        fs, root = fsspec.core.url_to_fs(join(self.parent, layout.INDEX))
        out: dict[str, str] = {}
        for path in sorted(fs.glob(posixpath.join(root, pattern))):
            with fs.open(path, "rb") as f:
                for row in pq.read_table(f, columns=["key", "shard"]).to_pylist():
                    out[row["key"]] = row["shard"]
        return out

    def _dropped_keys(self, unit: int) -> frozenset[str]:
        if unit not in self._dropped:
            fs, path = fsspec.core.url_to_fs(self._dropped_tar(unit))
            keys: frozenset[str] = frozenset()
            if fs.exists(path):
                with fs.open(path, "rb") as f, tarfile.open(fileobj=f) as tar:
                    keys = frozenset(name.rsplit(".", 1)[0] for name in tar.getnames())
            self._dropped[unit] = keys
        return self._dropped[unit]

    def _dropped_tar(self, unit: int) -> str:
        return join(self.parent, DROPPED_MEDIA, f"{layout.part(unit)}.tar")

    def locate(self, clip: ClipRecord) -> str | None:
        unit = clip.source.unit
        if unit not in self._units:
            self._units[unit] = self._index(f"{layout.part(unit)}-*.parquet")
        shard = self._units[unit].get(clip.id)
        if shard is None and clip.id in self._dropped_keys(unit):
            return f"tar://{clip.id}.mp4::{self._dropped_tar(unit)}"
        if shard is None:
            self._all = self._all if self._all is not None else self._index("*.parquet")
            shard = self._all.get(clip.id)
        return f"tar://{clip.id}.mp4::{join(self.parent, layout.SHARDS, shard)}" if shard else None


class LocateMediaFn(beam.DoFn):
    """Pending clips get the parent's copy of their file, or `media_not_kept` when there is none."""

    def __init__(self, parent: str) -> None:
        self.parent = parent

    def setup(self) -> None:
        self.files = ClipFiles(self.parent)

    def process(self, rec: Record) -> Iterator[Record]:
        if isinstance(rec, ClipRecord) and rec.pending:
            rec.media = self.files.locate(rec)
            if rec.media is None:
                rec.settle("media_not_kept", "the parent run kept no file of this dropped clip "
                           "(run it with output.keep_dropped_media: true to re-select dropped clips)")  # fmt: skip
        yield rec


def select_clips(corpus: Corpus, p: beam.Pipeline, units: list[Unit], config: Any, run: Run) -> beam.PCollection:
    parent = run.meta["lineage"]["parent_run"]
    records = (
        p
        | "ListUnits" >> beam.Create(run.to_read(units), reshuffle=True)
        | "ReadLedgers" >> beam.ParDo(ReadVideoLedgersFn(parent))
        | "AttachOverlays" >> AttachOverlays(parent, config, "clip")
        | "ApplyThresholds" >> Thresholds(config, units, "clip")
        | "LocateMedia" >> beam.ParDo(LocateMediaFn(parent))
    )
    return records | "Finish" >> Finish(corpus.name, run, config)
