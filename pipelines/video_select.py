"""`mmcurate select` on a video run: re-threshold clips from the ledgers, without decoding a frame.

    'ListUnits' -> 'ReadLedgers' (videos + clips, verdicts re-opened) -> 'AttachOverlays' -> 'ApplyThresholds'
      -> 'LocateMedia' (kept clips: the parent's shards; dropped ones: the parent's dropped_media/) -> 'Finish'

A clip the parent dropped, and that the new thresholds keep, needs its file: the parent kept it only
with `output.keep_dropped_media: true`; otherwise the clip is dropped as `media_not_kept`, and the
summary says how many.
"""

from __future__ import annotations

import functools
import posixpath
import tarfile
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
import pyarrow.parquet as pq

from mmcurate.schemas import ClipRecord, Record, VideoRecord
from mmcurate.stages.readers import Unit
from mmcurate.stages.writers import join

from . import layout
from .common import COUNTS_TAG
from .corpus import Corpus
from .finish import Finish, Run, touch
from .ledger import read_ledger, reopen
from .overlays import AttachOverlays
from .thresholds import Thresholds

DROPPED_MEDIA = "dropped_media"


class ReadVideoLedgersFn(beam.DoFn):
    """One unit of the parent: its videos and clips, re-opened where their verdicts follow from scores
    (a clip only when its video is re-opened: the clips of a broken video stay as they were)."""

    def __init__(self, parent: str, progress_dir: str | None) -> None:
        self.parent, self.progress_dir = parent, progress_dir

    def process(self, unit: Unit) -> Iterator[Any]:
        videos = read_ledger(self.parent, VideoRecord, unit.index)
        open_videos = {v.uid for v in videos if reopen(v).pending}
        yield from videos
        for clip in read_ledger(self.parent, ClipRecord, unit.index):
            yield reopen(clip) if clip.parent_uid in open_videos else clip
        touch(self.progress_dir, f"read-{unit.index}")
        yield beam.pvalue.TaggedOutput(COUNTS_TAG, (unit.index, len(videos)))


@functools.lru_cache(maxsize=64)
def _shard_index(parent: str, unit: int) -> dict[str, str]:
    """Clip id -> the parent's shard holding it, for one unit (from the shard indexes)."""
    fs, root = fsspec.core.url_to_fs(join(parent, layout.INDEX))
    out: dict[str, str] = {}
    for path in sorted(fs.glob(posixpath.join(root, f"{layout.part(unit)}-*.parquet"))):
        with fs.open(path, "rb") as f:
            for row in pq.read_table(f, columns=["key", "shard"]).to_pylist():
                out[row["key"]] = row["shard"]
    return out


@functools.lru_cache(maxsize=64)
def _dropped_media(parent: str, unit: int) -> frozenset[str]:
    uri = join(parent, DROPPED_MEDIA, f"{layout.part(unit)}.tar")
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return frozenset()
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f) as tar:
        return frozenset(name.rsplit(".", 1)[0] for name in tar.getnames())


def _tar_member(tar_uri: str, member: str) -> str:
    return f"tar://{member}::{tar_uri}"


class LocateMediaFn(beam.DoFn):
    """Pending clips get the parent's copy of their file, or `media_not_kept` when there is none."""

    def __init__(self, parent: str) -> None:
        self.parent = parent

    def process(self, rec: Record) -> Iterator[Record]:
        if not isinstance(rec, ClipRecord) or not rec.pending:
            yield rec
            return
        unit = rec.source.unit
        shard = _shard_index(self.parent, unit).get(rec.id)
        if shard is not None:
            rec.media = _tar_member(join(self.parent, layout.SHARDS, shard), f"{rec.id}.mp4")
        elif rec.id in _dropped_media(self.parent, unit):
            rec.media = _tar_member(join(self.parent, DROPPED_MEDIA, f"{layout.part(unit)}.tar"), f"{rec.id}.mp4")
        else:
            rec.settle("media_not_kept", "the parent run kept no file of this dropped clip "
                       "(run it with output.keep_dropped_media: true to re-select dropped clips)")  # fmt: skip
        yield rec


def select_clips(corpus: Corpus, p: beam.Pipeline, units: list[Unit], config: Any, run: Run) -> beam.PCollection:
    parent = run.meta["lineage"]["parent_run"]
    read = (
        p
        | "ListUnits" >> beam.Create(units, reshuffle=True)
        | "ReadLedgers"
        >> beam.ParDo(ReadVideoLedgersFn(parent, run.progress_dir)).with_outputs(COUNTS_TAG, main="records")
    )
    records = (
        read.records
        | "AttachOverlays" >> AttachOverlays(parent, config, "clip")
        | "ApplyThresholds" >> Thresholds(config, units, "clip")
        | "LocateMedia" >> beam.ParDo(LocateMediaFn(parent))
    )
    return records | "Finish" >> Finish(corpus.name, run, config, read[COUNTS_TAG])
