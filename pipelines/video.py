"""The video corpus: videos -> scenes -> clips, scored, thresholded, sharded, queued for annotation.

    'ReadUnits' -> 'SpoolInputs' -> 'SpreadVideos' -> 'AnalyseVideos' -> clips -> 'ScoreWithModels'
        -> 'ApplyThresholds' -> 'DropFrames' -> 'Finish'      (and the videos, from 'AnalyseVideos', -> 'Finish')

'AnalyseVideos' runs probe, scene split, motion, clip extraction and fingerprinting for one video in a
child process with a timeout (stages/isolation.py): a decoder that hangs or crashes costs that video
(quarantined with `decode_timeout` / `decoder_crashed`), never the run. A unit's videos are spread
over the workers as references ('SpreadVideos': a path, a byte range of a tar, a spooled copy of a
compressed tar's member), so a 1,000-video tar is not one worker's work; the bytes are read where a
video is analysed. Elements are videos and clips, never frames or clip bytes: clip files wait in
the run's spool; the model stages decode a clip's frames from it. The shared finish path drops
repeated videos (same bytes) with their clips and repeated clips (same frames, or a re-encoded,
resized or cropped copy: `dedup`), settles
each video from its clips (kept with its kept clips, dropped when none survived, quarantined when
clips failed), and checks both identities:
videos in = kept + dropped + quarantined, clips made = kept + dropped + quarantined.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from pydantic import Field, model_validator

from mmcurate.annotation.queue import queue_bytes, queue_path
from mmcurate.schemas import ClipRecord, Fields, OcrLine, Record, Status, VideoRecord, read_media
from mmcurate.stages.base import Params
from mmcurate.stages.dedup import DedupParams, mean_simhash
from mmcurate.stages.io import Unit
from mmcurate.stages.isolation import ChildFailed, Isolated
from mmcurate.stages.video_analysis import AnalysisParams, VideoResult, analyse, identify, ready
from mmcurate.stages.video_clips import ClipOutputParams, ClipParams, sample_frames
from mmcurate.stages.video_io import VideoReadParams, file_id, list_video_units, read_video_unit
from mmcurate.stages.video_probe import VideoBroken
from mmcurate.stages.video_scan import (
    CLIP_MOTION_LABELS,
    CLIP_MOTION_SCORES,
    DATAJUICER_SCORES,
    MotionParams,
    SceneParams,
)
from mmcurate.stages.writers import (
    FileInfo,
    ShardInfo,
    ShardParams,
    TarWriter,
    atomic_file,
    atomic_write,
    join,
    write_bytes,
)

from . import layout
from .common import ReadUnits, pending
from .config import ConfigError, FilteredConfig
from .corpus import Corpus, remove_tree
from .finish import Finish, Run, count
from .ledger import redecidable
from .models import ModelStage, View, Views, model_fields, model_stages
from .thresholds import Thresholds
from .video_select import DROPPED_MEDIA, ClipFiles, select_clips, settle_before_dedup, settle_video

VIDEOS_TAG = "videos"


class LimitParams(Params):
    """Bounds on one video's work, so a bad file costs that file and never the run."""

    isolate: bool = True
    """Run each video's decode in a child process (killed on timeout or crash). False: in-process, no timeout."""
    probe_timeout_s: float = Field(60, gt=0)
    timeout_s: float = Field(120, gt=0)
    """Analysis timeout: this many seconds, plus `timeout_per_second` per second of video."""
    timeout_per_second: float = Field(2.0, ge=0)
    """Seconds per second of 720p30 video; larger or faster videos get proportionally more."""
    max_tasks: int = Field(500, ge=1)
    """Tasks per child process before it is replaced (two per video: identify, analyse), bounding
    what a native decoder might leak."""


class VideoOutputParams(ClipOutputParams):
    shard: ShardParams = ShardParams(max_samples=1000)
    keep_dropped_media: bool = False
    """Also keep the files of clips dropped by a threshold (`dropped_media/`), so that `mmcurate
    select` can keep them under looser thresholds; without it they are gone after the run."""


class VideoDedupParams(DedupParams):
    """Run-wide dedup of clips (videos with the same file bytes are always dropped but one)."""

    clips: bool = True
    """Fingerprint clips (stages/video_dedup.py) and drop repeated ones across videos: the same
    frames (`duplicate_exact`), or a re-encoded, resized or cropped copy (`duplicate_near`)."""
    near: bool = True
    """Also drop near duplicates (perceptual hash within `max_distance`); exact ones are always dropped."""
    max_distance: int = 8
    """Largest Hamming distance (of 64 bits) between a clip's hash and another's (or one of its
    crops') that makes a near duplicate. Measured: copies re-encoded at half size and crf 35 or
    cropped up to 10 % per side at most 8 (natural video at most 4); unrelated clips 10 and more.
    A video's own clips are never near duplicates of each other (pieces of one long static scene
    are a few bits apart). The hash sees a frame's layout, not its text: white slides of two other
    lectures with a line of text in the same place are near duplicates (0-3 bits); a corpus of
    such videos sets `near: false` or relies on the CLIP pass (`clip_max_distance`)."""
    clip_max_distance: int | None = Field(None, ge=0, le=16)
    """Largest Hamming distance (of 64 bits) between two clips' `clip_simhash` (SimHash of the mean
    CLIP image embedding of their sampled frames) that makes a near duplicate (`duplicate_near`),
    when the CLIP stage runs (a `clip_score` or `aesthetic` filter). A SimHash bit differs with
    probability angle / pi, so distance d stands for cosine ~ cos(pi d / 64): 3 ~ 0.99, 6 ~ 0.955
    (cosine 0.95 is 6.5 bits: 6 is the suggested value), 9 ~ 0.90, 13 ~ 0.80. None (the default):
    no semantic pass (`clip_simhash` is still written, for a later `select`); it drops distinct
    scenes that look alike to the model (other shots of one setting), so a run opts in."""

    def model_post_init(self, context: object) -> None:
        super().model_post_init(context)
        if self.semantic_distance is not None:  # the generic key: clips name theirs
            raise ValueError("dedup.semantic_distance: for clips set dedup.clip_max_distance")

    def semantic(self) -> int | None:
        """The semantic pass's distance, None when it does not run (clip dedup or near dedup off)."""
        return self.clip_max_distance if self.clips and self.near else None


class VideoConfig(FilteredConfig):
    filter_kind = "clip"
    read: VideoReadParams = VideoReadParams()
    scenes: SceneParams = SceneParams()
    motion: MotionParams = MotionParams()
    clips: ClipParams = ClipParams()
    output: VideoOutputParams = VideoOutputParams()
    limits: LimitParams = LimitParams()
    dedup: VideoDedupParams = VideoDedupParams()
    decode_threads: int = Field(1, ge=0)
    """Decoder threads in the scan; 0 = FFmpeg's automatic count."""

    @model_validator(mode="after")
    def _motion_method(self) -> VideoConfig:
        if "motion" in self.filters and self.motion.method != "datajuicer":
            raise ValueError(
                "filters.motion: thresholds Data-Juicer's motion score, which only motion.method: datajuicer "
                "computes; with motion.method: fast threshold flow_speed (filters.flow_speed) instead"
            )
        return self

    def analysis(self) -> AnalysisParams:
        return AnalysisParams(
            scenes=self.scenes, motion=self.motion, clips=self.clips, output=self.output,
            decode_threads=self.decode_threads,
        )  # fmt: skip


def clip_id(video_id: str, start: int, end: int) -> str:
    return hashlib.blake2b(f"{video_id}:{start}:{end}".encode(), digest_size=16).hexdigest()


def spool_path(out_root: str, clip: ClipRecord) -> str:
    return join(out_root, layout.SPOOL, f"{clip.source.unit:05d}", f"{clip.id}.mp4")


def copy_media(ref: str, dest: str, chunk: int = 8 << 20) -> None:
    """The bytes a `media_ref` names, streamed into the local file `dest` (a video can be gigabytes)."""
    import fsspec

    uri, _, span = ref.partition("#bytes=")
    start, end = (int(x) for x in span.split("-")) if span else (0, None)
    with fsspec.open(uri, "rb") as src, open(dest, "wb") as out:
        src.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            block = src.read(chunk if left is None else min(chunk, left))
            if not block:
                break
            out.write(block)
            left = None if left is None else left - len(block)
        if left:
            raise VideoBroken("read_error", f"{ref}: the input ends {left} bytes early")


class SpoolInputsFn(beam.DoFn):
    """Videos whose bytes came in memory (members of a compressed tar) are written to the run's spool
    before the reshuffle that spreads a unit's videos over workers: references cross it, never bytes."""

    def __init__(self, out_root: str) -> None:
        self.out_root = out_root

    def process(self, video: Record) -> Iterator[Record]:
        if isinstance(video, VideoRecord) and video.pending and video.data is not None:
            ext = posixpath.splitext(video.source.member or video.source.uri)[1] or ".mp4"
            video.media = join(self.out_root, layout.SPOOL, "inputs", layout.part(video.source.unit),
                               f"{video.source.index:09d}{ext}")  # fmt: skip
            atomic_write(video.media, video.data)
            video.data = None
        yield video


def _name_unhashed(video: VideoRecord) -> None:
    """A video quarantined before its bytes were hashed is named by where it was read."""
    video.id = video.id or file_id(data=video.source.ref().encode("utf-8", "surrogatepass"))


CHILD_REASONS = {"timeout": "decode_timeout", "crashed": "decoder_crashed"}
CLIP_DUPLICATE_REASONS = ("duplicate_exact", "duplicate_near")


class AnalyseVideosFn(beam.DoFn):
    """Video in; the video (tagged `videos`) and one ClipRecord per scene piece out."""

    def __init__(self, config: VideoConfig, out_root: str) -> None:
        self.config, self.out_root = config, out_root
        self.child: Isolated | None = None

    def setup(self) -> None:
        limits = self.config.limits
        self.child = Isolated(limits.isolate, limits.max_tasks, passthrough=(VideoBroken,), ready=ready)
        self.params = self.config.analysis()
        # which worker process analysed how many videos: in metrics.json only, never in a ledger
        self.worker_counter = f"video.analysed_by.pid{os.getpid()}"

    def teardown(self) -> None:
        if self.child is not None:
            self.child.close()

    def _run(self, fn: Any, args: tuple, timeout: float, stage: str) -> Any:
        """`fn(*args)` in the child; failures become VideoBroken with a reason code."""
        assert self.child is not None
        try:
            return self.child.call(fn, args, timeout, stage)
        except ChildFailed as exc:
            raise VideoBroken(CHILD_REASONS.get(exc.kind, f"{stage}_error"), str(exc)) from None

    def process(self, video: VideoRecord) -> Iterator[Any]:
        """All or nothing per video: the clips are built before anything is emitted, and anything
        unexpected quarantines the video (`internal_error`) instead of failing the run."""
        if not pending(video):
            yield beam.pvalue.TaggedOutput(VIDEOS_TAG, video)
            return
        count(self.worker_counter)
        workdir = tempfile.mkdtemp(prefix="mmcurate-video-")
        try:
            clips = self._analyse(video, workdir)
        except VideoBroken as exc:
            _name_unhashed(video)
            yield beam.pvalue.TaggedOutput(VIDEOS_TAG, video.settle(exc.reason, str(exc), stage="analyse"))
            return
        except Exception as exc:
            _name_unhashed(video)
            video.clips = 0
            error = f"analyse_videos: {type(exc).__name__}: {exc}"
            yield beam.pvalue.TaggedOutput(VIDEOS_TAG, video.settle("internal_error", error, stage="analyse"))
            return
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        count("clip.made", len(clips))
        yield beam.pvalue.TaggedOutput(VIDEOS_TAG, video)
        yield from clips

    def _analyse(self, video: VideoRecord, workdir: str) -> list[ClipRecord]:
        path = video.path
        if path is None:
            ext = posixpath.splitext(video.source.member or video.source.uri)[1] or ".mp4"
            path = os.path.join(workdir, "input" + ext)
            if video.data is not None:
                Path(path).write_bytes(video.data)
            else:
                copy_media(video.media or "", path)
        video.data = video.media = None
        limits = self.config.limits
        vid, facts = self._run(identify, (path, not video.id), limits.probe_timeout_s, "probe")
        video.id = video.id or vid
        if isinstance(facts, VideoBroken):
            raise facts
        # per second of 720p30-equivalent video: decoding and encoding scale with pixels and frames
        load = max(1.0, facts["width"] * facts["height"] / (1280 * 720)) * max(1.0, facts["fps"] / 30)
        budget = limits.timeout_s + limits.timeout_per_second * facts["duration"] * load
        result: VideoResult = self._run(analyse, (path, facts, self.params, workdir), budget, "analysis")
        clips = list(self._clips(video, result))
        for key, value in result.facts.items():
            if hasattr(video, key) and key not in ("id", "source", "caption", "extra", "fate"):
                setattr(video, key, value)
        video.clips = len(clips)
        video.path = None
        return clips

    def _clips(self, video: VideoRecord, result: VideoResult) -> Iterator[ClipRecord]:
        for res in result.clips:
            plan = res.plan
            clip = ClipRecord(
                id=clip_id(video.id, plan["start"], plan["end"]),
                video_id=video.id,
                source=video.source,
                clip_index=plan["clip_index"],
                scene_index=plan["scene_index"],
                caption=video.caption,
                start_frame=plan["start"],
                end_frame=plan["end"],
                start_time=plan["start_time"],
                end_time=plan["end_time"],
                duration=plan["end_time"] - plan["start_time"],
                cut_offset_start=plan.get("cut_offset_start", 0.0),
                cut_offset_end=plan.get("cut_offset_end", 0.0),
                scores=dict(res.scores),
                labels=dict(res.labels),
            )
            if plan["drop"]:
                yield clip.settle(plan["drop"])
                continue
            if res.error:
                yield clip.settle("clip_error", res.error, stage="extract")
                continue
            data = Path(res.mp4_path).read_bytes()
            clip.media = spool_path(self.out_root, clip)
            atomic_write(clip.media, data)
            clip.out_bytes = len(data)
            clip.width, clip.height, clip.fps = res.out["width"], res.out["height"], res.out["fps"]
            clip.scores.update({"width": float(clip.width), "height": float(clip.height)})
            if self.config.dedup.clips:
                clip.frame_hash, clip.phash = res.out["frame_hash"], res.out["phash"]
                clip.phash_crops = list(res.out["phash_crops"])
            yield clip


class Frames(Views):
    """A clip is seen as its sampled frames: each image stage scores every frame; the clip gets the
    mean and the max of each score, and the OCR lines of the frame with the most text."""

    def __init__(self, frames: int = 3, side: int = 512) -> None:
        self.per_record, self.side = frames, side

    def views(self, rec: ClipRecord) -> list[View]:
        """The clip's frames, decoded from its spooled file the first time a model stage looks (the
        analysis returns none: an hour of video would be half a gigabyte of frames at once)."""
        if rec.frames is None and rec.media:
            rec.frames = clip_frames(rec.media, self.per_record, self.side)
        return [View(f, rec.caption) for f in rec.frames or ()]

    def reduce(self, rec: ClipRecord, stage: ModelStage, views: list[View]) -> None:
        for key in sorted({k for v in views for k in v.scores}):
            values = [v.scores[key] for v in views if key in v.scores]
            rec.scores[key] = sum(values) / len(values)
            rec.scores[f"{key}_max"] = max(values)
        for v in views:
            rec.errors.update(v.errors)
        if any(v.ocr for v in views):
            best = max(views, key=lambda v: v.scores.get("ocr_text_area", 0.0))
            fx, fy = rec.width / best.pixels.width, rec.height / best.pixels.height
            rec.ocr = [OcrLine([[x * fx, y * fy] for x, y in ln.box], ln.text, ln.confidence) for ln in best.ocr or ()]
        if stage.name == "ocr":
            rec.scores["ocr_text_frames"] = sum(bool(v.ocr) for v in views) / len(views)
        embeddings = [v.embedding for v in views if v.embedding is not None]
        if embeddings:  # the clip's semantic dedup key: SimHash of its frames' mean direction
            rec.clip_simhash = mean_simhash(embeddings)

    def fields(self, stage: ModelStage) -> tuple[str, ...]:
        extra = ("ocr_text_frames",) if stage.name == "ocr" else ()
        return (*stage.scores, *(f"{s}_max" for s in stage.scores), *extra)


def clip_frames(ref: str, count: int, side: int) -> list[Any]:
    """`sample_frames` of a clip file: read in place when local, else (object storage, a tar
    member) its bytes in memory, one clip at a time."""
    import io

    import fsspec

    source: Any = None
    if "#bytes=" not in ref and "::" not in ref:
        fs, path = fsspec.core.url_to_fs(ref)
        source = path if "file" in fs.protocol else None
    frames, _ = sample_frames(source or io.BytesIO(read_media(ref)), count, side)
    return frames


def drop_frames(clip: ClipRecord) -> ClipRecord:
    """Sampled frames served the model stages; they never cross the shuffle to the writers."""
    clip.frames = None
    return clip


class VideoCorpus(Corpus):
    name = "video"
    defaults = "video.yaml"
    config_class = VideoConfig
    kinds = (VideoRecord, ClipRecord)
    sample_kind = "clip"
    decided_kind = "clip"
    outputs = ("annotation", DROPPED_MEDIA)

    def validate(self, config: VideoConfig) -> None:
        """FFmpeg present, model weights where filters need them."""
        from .models import validate_models

        try:
            config.output.check()
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
        validate_models(config)

    def list_units(self, inputs: list[str], config: VideoConfig) -> list[Unit]:
        return list_video_units(inputs, config.read)

    def fields(self, config: VideoConfig) -> dict[str, Fields]:
        filters = config.build_filters()
        scores = [*CLIP_MOTION_SCORES, "duration", "width", "height", *(s for f in filters for s in f.scores)]
        if config.motion.method == "datajuicer":
            scores += DATAJUICER_SCORES
        scores += model_fields(config, Frames(config.output.sample_frames))
        labels = [*CLIP_MOTION_LABELS, *(lb for f in filters for lb in f.labels)]
        return {"video": Fields(), "clip": Fields(tuple(scores), tuple(labels))}

    def dedup(self, config: VideoConfig) -> DedupParams:
        """Videos by file bytes (exact only); clips by frame hash, and by perceptual hash and CLIP
        SimHash (near)."""
        d = config.dedup
        semantic = d.semantic()
        return DedupParams(
            near=d.clips and d.near,
            max_distance=d.max_distance,
            semantic_distance=semantic,
        )

    def shard(self, config: VideoConfig) -> ShardParams:
        return config.output.shard

    def build(self, p: beam.Pipeline, units: list[Unit], config: VideoConfig, run: Run) -> beam.PCollection:
        read = (
            p
            | "Read" >> ReadUnits(run.to_read(units), config.read, read_video_unit)
            | "SpoolInputs" >> beam.ParDo(SpoolInputsFn(run.out_root))
            | "SpreadVideos" >> beam.Reshuffle()  # a unit's videos over the workers: as references
        )
        analysed = read | "AnalyseVideos" >> beam.ParDo(AnalyseVideosFn(config, run.out_root)).with_outputs(
            VIDEOS_TAG, main="clips"
        )
        clips = analysed.clips
        stages = model_stages(config, embed=config.dedup.clips)  # clip_simhash, with clip fingerprints
        if stages:  # RunInference (and torch) only for a run whose filters need a model
            from .inference import ScoreWithModels

            frames = Frames(config.output.sample_frames, config.output.frame_side)
            clips = clips | "ScoreWithModels" >> ScoreWithModels(stages, frames)
        clips = clips | "ApplyThresholds" >> Thresholds(config, units, "clip") | "DropFrames" >> beam.Map(drop_frames)
        records = (analysed[VIDEOS_TAG], clips) | "VideosAndClips" >> beam.Flatten()
        return records | "Finish" >> Finish(self.name, run, config)

    def before_dedup(self, records: dict[str, list[Record]], config: VideoConfig) -> None:
        settle_before_dedup(records)

    def settle_children(self, parent: Record, children: list[Record], config: VideoConfig) -> None:
        """The clips of a repeated video go with it (`duplicate_video`), also those clip dedup
        already matched to the kept copy's clips (the same frames: the same clip ids)."""
        if parent.fate.reason == "duplicate_exact":
            for clip in children:
                if clip.pending or clip.fate.reason in CLIP_DUPLICATE_REASONS:
                    clip.settle("duplicate_video", duplicate_of=parent.fate.duplicate_of)

    def settle_parent(self, parent: Record, children: list[Record], config: VideoConfig) -> None:
        settle_video(parent, children)

    def unit_outputs(
        self, unit: int, records: dict[str, list[Record]], shards: list[ShardInfo], run: Run, config: VideoConfig,
        media: dict[str, Any],
    ) -> tuple[list[FileInfo], dict[str, Any]]:  # fmt: skip
        clips: list[ClipRecord] = records["clip"]  # type: ignore[assignment]
        kept = [c for c in clips if c.fate.status == Status.KEPT]
        files = []
        if kept:
            shard_of, i = {}, 0
            for s in shards:
                for c in kept[i : i + s.samples]:
                    shard_of[c.id] = s.path
                i += s.samples
            cuts = {v.id: sorted(v.cuts + v.stitched_cuts) for v in records.get("video", [])}  # type: ignore[attr-defined]
            data, rel = queue_bytes(kept, shard_of, cuts), queue_path(unit)
            files.append(write_bytes(run.out_root, rel, data))
        if config.output.keep_dropped_media:
            files += keep_dropped_media(unit, clips, run)
        return files, {"clip_seconds": sum(c.duration for c in kept)}

    def release(self, unit: int, run: Run, config: VideoConfig) -> None:
        """A committed unit's clip files (`_spool/UUUUU/`, read by its shards and dropped media only)
        and its spooled input copies (`_spool/inputs/part-UUUUU/`, read by the analysis only)."""
        remove_tree(join(run.out_root, layout.SPOOL, f"{unit:05d}"))
        remove_tree(join(run.out_root, layout.SPOOL, "inputs", layout.part(unit)))

    def fold_extras(self, extras: list[dict[str, Any]], config: VideoConfig) -> dict[str, Any]:
        return {"clip_seconds": round(sum(e.get("clip_seconds", 0.0) for e in extras), 3)}

    def describe(self, manifest: dict[str, Any]) -> list[Any]:
        hours = manifest.get("extras", {}).get("clip_seconds", 0.0) / 3600
        lines: list[Any] = [f"{hours:.3f} hours of kept clips"]
        lost = manifest["kinds"].get("clip", {}).get("reasons", {}).get("dropped", {}).get("media_not_kept", 0)
        if lost:
            lines.append(
                f"{lost} clips pass the new thresholds but their files were not kept by the parent run: "
                "run it with output.keep_dropped_media: true to re-select dropped clips"
            )
        return lines

    def check_select(self, config: VideoConfig, parent_config: VideoConfig, parent: dict) -> None:
        """Clips are copied from the parent: what decides how they were cut and encoded must not change."""
        fixed = ("read", "scenes", "motion", "clips", "decode_threads")
        changed = [k for k in fixed if getattr(config, k) != getattr(parent_config, k)]
        keep = {"shard", "keep_dropped_media"}
        mine, theirs = config.output.model_dump(exclude=keep), parent_config.output.model_dump(exclude=keep)
        changed += [f"output.{k}" for k in mine if mine[k] != theirs[k]]
        if changed:
            raise ConfigError(
                f"select: {', '.join(changed)} must match the parent run's: select copies its clips; "
                "rerun `mmcurate video` to cut or encode them anew"
            )

    def select(self, p: beam.Pipeline, units: list[Unit], config: VideoConfig, run: Run) -> beam.PCollection:
        return select_clips(self, p, units, config, run)


def _clip_file(clip: ClipRecord, run: Run, parent: ClipFiles | None) -> str | None:
    """Where a clip's file is: this run's spool, else (select) the parent's shards or dropped media."""
    import fsspec

    spooled = spool_path(run.out_root, clip)
    fs, path = fsspec.core.url_to_fs(spooled)
    if fs.exists(path):
        return spooled
    return parent.locate(clip) if parent is not None else None


def keep_dropped_media(unit: int, clips: list[ClipRecord], run: Run) -> list[FileInfo]:
    """The files of clips a threshold dropped, as one tar per unit (`dropped_media/part-UUUUU.tar`);
    a select run keeps what its parent kept of them."""
    import fsspec

    parent_run = run.meta.get("lineage", {}).get("parent_run")
    parent = ClipFiles(parent_run) if parent_run else None
    dropped = [c for c in clips if c.fate.status == Status.DROPPED and c.out_bytes and redecidable(c)]
    found = [(c, where) for c in dropped if (where := _clip_file(c, run, parent))]
    if not found:
        return []
    rel = f"{DROPPED_MEDIA}/{layout.part(unit)}.tar"
    with atomic_file(join(run.out_root, rel)) as out, TarWriter(out) as sink:
        for c, where in found:
            with fsspec.open(where, "rb") as f:
                sink.write({"__key__": c.id, "mp4": f.read()})
    return [FileInfo(rel, out.size, out.sha.hexdigest())]


CORPUS = VideoCorpus()

__all__ = ["CORPUS", "VideoConfig"]
