"""The video corpus pipeline: videos -> scenes -> clips, scored, thresholded, sharded, queued for annotation.

    'ReadUnits' -> 'AnalyseVideos' -> clips -> 'ScoreWithModels' -> 'ApplyThresholds' -> 'WriteUnits'
                                   \\-> videos -------------------------------------------/      -> 'WriteManifest'

'AnalyseVideos' runs probe, scene split, motion, clip extraction and frame sampling for one video in a
child process with a timeout (pebble): a decoder that hangs or crashes costs that video (quarantined
with `decode_timeout` / `decoder_crashed`), never the run. Elements are videos and clips, never
frames. Per unit, 'WriteUnits' settles each video from its clips (kept with its kept clips, dropped
when none survived, quarantined when unreadable), writes the clip shards (mp4 + json + txt) with a
parquet index, both ledgers, the drop/quarantine tables and the annotation queue; the manifest then
checks both identities: videos in = kept + dropped + quarantined, clips made = kept + dropped +
quarantined.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.metrics import Metrics
from pydantic import Field, field_validator

from mmcurate.schemas import ClipRecord, OcrLine, Status, VideoRecord
from mmcurate.stages.base import Filter, Params
from mmcurate.stages.readers import Unit
from mmcurate.stages.video_analysis import AnalysisParams, VideoResult, analyse, identify, ready
from mmcurate.stages.video_clips import ClipOutputParams, ClipParams
from mmcurate.stages.video_io import VideoReadParams, file_id, read_video_unit
from mmcurate.stages.video_probe import VideoBroken
from mmcurate.stages.video_scan import MotionParams, SceneParams
from mmcurate.stages.writers import ShardParams, atomic_write, join, write_table, write_unit_shards

from .caption import Thresholds
from .common import (
    COUNTS_TAG,
    NS,
    AccountingError,
    ReadUnitFn,
    clear_payload,
    fate_table,
    pending,
    run_meta,
    touch,
)
from .config import ModelsConfig, build_filters, check_filters
from .models import ModelStage, ScoreWithModels, model_stages

SPOOL = "_spool"
"""Clip files between extraction and shard writing; removed when the manifest is written (not per
unit: a runner that retries a writing bundle must find them again)."""
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


class VideoConfig(Params):
    read: VideoReadParams = VideoReadParams()
    scenes: SceneParams = SceneParams()
    motion: MotionParams = MotionParams()
    clips: ClipParams = ClipParams()
    output: VideoOutputParams = VideoOutputParams()
    limits: LimitParams = LimitParams()
    decode_threads: int = Field(1, ge=0)
    """Decoder threads in the scan; 0 = FFmpeg's automatic count."""
    filters: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    """Clip filters, applied in this order; the first failing one names the drop reason."""
    models: ModelsConfig = ModelsConfig()

    @field_validator("filters")
    @classmethod
    def _known_filters(cls, value: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any] | None]:
        return check_filters(value, "clip")

    def build_filters(self) -> list[Filter]:
        return build_filters(self.filters)

    def analysis(self) -> AnalysisParams:
        return AnalysisParams(
            scenes=self.scenes, motion=self.motion, clips=self.clips, output=self.output,
            decode_threads=self.decode_threads,
        )  # fmt: skip


def clip_id(video_id: str, start: int, end: int) -> str:
    return hashlib.blake2b(f"{video_id}:{start}:{end}".encode(), digest_size=16).hexdigest()


def _settle(rec: Any, status: Status, reason: str, error: str = "") -> Any:
    error = error[:2000].encode("utf-8", "replace").decode("utf-8")  # file names need not be UTF-8
    rec.fate = dataclasses.replace(rec.fate, status=status, reason=reason, error=error)
    clear_payload(rec)
    Metrics.counter(NS, f"{rec.kind}_{status.value}_{reason}").inc()
    return rec


def _name_unhashed(video: VideoRecord) -> None:
    """A video quarantined before its bytes were hashed is named by where it was read."""
    video.id = video.id or file_id(data=video.source.ref().encode("utf-8", "surrogatepass"))


class _InProcess:
    """The child-process pool's interface, run in this process (limits.isolate = false)."""

    def schedule(self, fn: Any, args: tuple = (), timeout: float | None = None) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def close(self) -> None:
        pass

    def join(self) -> None:
        pass


class AnalyseVideosFn(beam.DoFn):
    """Video in; the video (tagged `videos`) and one ClipRecord per scene piece out."""

    def __init__(self, config: VideoConfig, out_root: str) -> None:
        self.config, self.out_root = config, out_root
        self.pool: Any = None

    def setup(self) -> None:
        if self.config.limits.isolate:
            import pebble

            self.pool = pebble.ProcessPool(
                max_workers=1, max_tasks=self.config.limits.max_tasks, context=multiprocessing.get_context("spawn")
            )
            # A child that cannot start or import its decoders would otherwise quarantine every video
            # as a probe error; fail the run instead, saying why.
            try:
                self.pool.schedule(ready).result(timeout=300)
            except Exception as exc:
                self.pool.stop()
                raise RuntimeError(
                    f"the video analysis child process cannot start: {type(exc).__name__}: {exc}"
                ) from exc
        else:
            self.pool = _InProcess()
        self.params = self.config.analysis()

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()

    def _run(self, fn: Any, args: tuple, timeout: float, stage: str) -> Any:
        """`fn(*args)` in the child; failures become VideoBroken with a reason code."""
        import pebble

        try:
            return self.pool.schedule(fn, args=args, timeout=timeout).result()
        except VideoBroken:
            raise
        except concurrent.futures.TimeoutError:
            raise VideoBroken("decode_timeout", f"{stage} ran over {timeout:.0f} s and was killed") from None
        except pebble.ProcessExpired as exc:
            raise VideoBroken("decoder_crashed", f"{stage}: the decoding process died ({exc})") from None
        except Exception as exc:
            raise VideoBroken(f"{stage}_error", f"{type(exc).__name__}: {exc}") from None

    def process(self, video: VideoRecord) -> Iterator[Any]:
        """All or nothing per video: the clips are built before anything is emitted, and anything
        unexpected quarantines the video (`internal_error`) instead of failing the run."""
        if not pending(video):
            yield beam.pvalue.TaggedOutput(VIDEOS_TAG, video)
            return
        workdir = tempfile.mkdtemp(prefix="mmcurate-video-")
        try:
            clips = self._analyse(video, workdir)
        except VideoBroken as exc:
            _name_unhashed(video)
            yield beam.pvalue.TaggedOutput(VIDEOS_TAG, _settle(video, Status.QUARANTINED, exc.reason, str(exc)))
            return
        except Exception as exc:
            _name_unhashed(video)
            video.clips = 0
            error = f"analyse_videos: {type(exc).__name__}: {exc}"
            yield beam.pvalue.TaggedOutput(VIDEOS_TAG, _settle(video, Status.QUARANTINED, "internal_error", error))
            return
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        Metrics.counter(NS, "clips_made").inc(len(clips))
        yield beam.pvalue.TaggedOutput(VIDEOS_TAG, video)
        yield from clips

    def _analyse(self, video: VideoRecord, workdir: str) -> list[ClipRecord]:
        path = video.path
        if path is None:
            ext = posixpath.splitext(video.source.member or video.source.uri)[1] or ".mp4"
            path = os.path.join(workdir, "input" + ext)
            Path(path).write_bytes(video.data or b"")
        video.data = None
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
                scores=dict(res.scores),
                labels=dict(res.labels),
            )
            if plan["drop"]:
                yield _settle(clip, Status.DROPPED, plan["drop"])
                continue
            if res.error:
                yield _settle(clip, Status.QUARANTINED, "clip_error", res.error)
                continue
            data = Path(res.mp4_path).read_bytes()
            clip.spool = join(self.out_root, SPOOL, f"{clip.source.unit:05d}", f"{clip.id}.mp4")
            atomic_write(clip.spool, data)
            clip.out_bytes = len(data)
            clip.width, clip.height, clip.fps = res.out["width"], res.out["height"], res.out["fps"]
            clip.scores.update({"width": float(clip.width), "height": float(clip.height)})
            clip.frames = res.frames
            yield clip


# Model stages on clips: each image stage runs on every sampled frame; scores are averaged per clip.


@dataclasses.dataclass
class _Frame:
    pixels: Any
    caption: str
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    ocr: list[OcrLine] = dataclasses.field(default_factory=list)


class FramesHandler(beam.ml.inference.base.ModelHandler):
    """Examples are lists (a clip's frames) of the inner handler's examples; one batched call for all."""

    def __init__(self, inner: Any, frames: int) -> None:
        super().__init__()
        self.inner, self.frames = inner, frames

    def load_model(self) -> Any:
        return self.inner.load_model()

    def run_inference(self, batch: Any, model: Any, inference_args: dict[str, Any] | None = None) -> list[Any]:
        flat = [ex for examples in batch for ex in examples]
        preds = list(self.inner.run_inference(flat, model, inference_args)) if flat else []
        out, i = [], 0
        for examples in batch:
            out.append(preds[i : i + len(examples)])
            i += len(examples)
        return out

    def get_num_bytes(self, batch: Any) -> int:
        return self.inner.get_num_bytes([ex for examples in batch for ex in examples])

    def get_metrics_namespace(self) -> str:
        return self.inner.get_metrics_namespace()

    def batch_elements_kwargs(self) -> Any:
        kw = dict(self.inner.batch_elements_kwargs())
        for key in ("min_batch_size", "max_batch_size"):
            if kw.get(key):
                kw[key] = max(1, kw[key] // self.frames)
        return kw


def _repeats(content_id: str, copies: Any) -> Iterator[tuple[int, tuple[str, str]]]:
    """The same video bytes read more than once: the first (by unit, position) stays, the others
    become (unit, (uid, the kept copy's source)) for the writer to drop as `duplicate`."""
    first, *rest = sorted(copies)
    for unit, _, uid, _ref in rest:
        yield unit, (uid, first[3])


def _drop_frames(clip: ClipRecord) -> ClipRecord:
    """Sampled frames served the model stages; they never cross the shuffle to the writers."""
    clip.frames = None
    return clip


def per_frame(stage: ModelStage, frames: int) -> ModelStage:
    def example(rec: ClipRecord) -> list[Any]:
        return [stage.example(_Frame(f, rec.caption)) for f in rec.frames]

    def merge(rec: ClipRecord, preds: list[Any]) -> ClipRecord:
        done = [stage.merge(_Frame(f, rec.caption), p) for f, p in zip(rec.frames, preds, strict=True)]
        for key in sorted({k for d in done for k in d.scores}):
            values = [d.scores[key] for d in done if key in d.scores]
            rec.scores[key] = sum(values) / len(values)
            rec.scores[f"{key}_max"] = max(values)
        if any(d.ocr for d in done):
            best = max(done, key=lambda d: d.scores.get("ocr_text_area", 0.0))
            fx, fy = rec.width / best.pixels.width, rec.height / best.pixels.height
            rec.ocr = [
                OcrLine([[x * fx, y * fy] for x, y in line.box], line.text, line.confidence) for line in best.ocr
            ]
            rec.scores["ocr_text_frames"] = sum(bool(d.ocr) for d in done) / len(done)
        return rec

    return ModelStage(stage.name, FramesHandler(stage.handler, frames), example, merge)


# Writing: per unit, videos settle from their clips.


class WriteVideoUnitFn(beam.DoFn):
    def __init__(self, out_root: str, shard: ShardParams, progress_dir: str | None = None) -> None:
        self.out_root, self.shard, self.progress_dir = out_root, shard, progress_dir

    def process(self, element: tuple[int, dict[str, list]]) -> Iterator[dict]:
        unit, grouped = element
        videos = sorted(grouped["videos"], key=lambda v: (v.source.index, v.source.member))
        clips = sorted(grouped["clips"], key=lambda c: (c.source.index, c.clip_index))
        repeated = dict(grouped["duplicates"])
        video_uid = {f"{v.source.index}:{v.id}": v.uid for v in videos}
        by_video: dict[str, list[ClipRecord]] = collections.defaultdict(list)
        for clip in clips:
            original = repeated.get(video_uid.get(f"{clip.source.index}:{clip.video_id}", ""))
            if original is not None and clip.fate.status == Status.PENDING:
                clip.fate = dataclasses.replace(
                    clip.fate, status=Status.DROPPED, reason="duplicate_video", duplicate_of=original
                )
            if clip.fate.status == Status.PENDING:
                clip.fate = dataclasses.replace(clip.fate, status=Status.KEPT)
            if clip.fate.status != Status.KEPT:
                clip.spool = None
            clip.frames = None
            by_video[f"{clip.source.index}:{clip.video_id}"].append(clip)
        for video in videos:
            if video.fate.status != Status.PENDING:
                continue
            mine = by_video.get(f"{video.source.index}:{video.id}", [])
            failed = [c for c in mine if c.fate.status == Status.QUARANTINED]
            if video.uid in repeated:
                video.fate = dataclasses.replace(
                    video.fate, status=Status.DROPPED, reason="duplicate", duplicate_of=repeated[video.uid]
                )
            elif any(c.fate.status == Status.KEPT for c in mine):
                video.fate = dataclasses.replace(video.fate, status=Status.KEPT)
            elif failed:  # nothing kept because clips could not be made or scored: an error, not a verdict
                video.fate = dataclasses.replace(
                    video.fate, status=Status.QUARANTINED, reason="clips_failed",
                    error=f"{len(failed)} of {len(mine)} clips failed; first: {failed[0].fate.error}"[:2000],
                )  # fmt: skip
            elif mine and all(c.fate.reason == "too_short" for c in mine):
                video.fate = dataclasses.replace(video.fate, status=Status.DROPPED, reason="no_clip_long_enough")
            else:
                video.fate = dataclasses.replace(video.fate, status=Status.DROPPED, reason="all_clips_dropped")
        kept = [c for c in clips if c.fate.status == Status.KEPT]
        shards = write_unit_shards(kept, unit, self.out_root, self.shard)
        name = f"part-{unit:05d}"
        summary: dict[str, Any] = {"unit": unit, "shards": [s.to_dict() for s in shards], "files": []}
        for kind, records, cls in (("videos", videos, VideoRecord), ("clips", clips, ClipRecord)):
            summary[kind] = {
                "counts": collections.Counter(r.fate.status.value for r in records),
                "reasons": {
                    s.value: collections.Counter(r.fate.reason for r in records if r.fate.status == s)
                    for s in (Status.DROPPED, Status.QUARANTINED)
                },
            }
            if records:
                ledger = write_table(self.out_root, f"ledger/{kind}/{name}.parquet", cls.to_table(records))
                summary["files"].append(dataclasses.asdict(ledger))
            for status in (Status.DROPPED, Status.QUARANTINED):
                rows = [r for r in records if r.fate.status == status]
                if rows:
                    info = write_table(self.out_root, f"{status.value}/{kind}/{name}.parquet", fate_table(rows))
                    summary["files"].append(dataclasses.asdict(info))
        summary["clips_made"] = sum(v.clips for v in videos)
        summary["clip_seconds"] = sum(c.duration for c in kept)
        if kept:
            info = write_queue(self.out_root, f"annotation/{name}.jsonl", kept, shards)
            summary["files"].append(dataclasses.asdict(info))
        Metrics.counter(NS, "clips_kept").inc(len(kept))
        # the spool stays until the manifest: a retried bundle finds its clips again
        touch(self.progress_dir, f"write-{unit}")
        yield summary


def queue_row(clip: ClipRecord, shard: str) -> dict[str, Any]:
    """One clip for human annotation: where it is, and the model pre-annotations to start from."""
    return {
        "clip_id": clip.id,
        "video_id": clip.video_id,
        "shard": shard,
        "key": clip.id,
        "source": clip.source.ref(),
        "start_time": round(clip.start_time, 6),
        "end_time": round(clip.end_time, 6),
        "start_frame": clip.start_frame,
        "end_frame": clip.end_frame,
        "fps": clip.fps,
        "width": clip.width,
        "height": clip.height,
        "caption": clip.caption,
        "pre_annotations": {
            "camera_motion": clip.labels.get("camera_motion", ""),
            "text": [{"text": line.text, "box": line.box, "confidence": line.confidence} for line in clip.ocr],
        },
        "scores": dict(sorted(clip.scores.items())),
    }


def write_queue(out_root: str, rel: str, kept: list[ClipRecord], shards: list[Any]) -> Any:
    from mmcurate.stages.writers import FileInfo

    where: dict[str, str] = {}
    i = 0
    for s in shards:
        for c in kept[i : i + s.samples]:
            where[c.id] = s.path
        i += s.samples
    text = "".join(json.dumps(queue_row(c, where[c.id]), sort_keys=True, ensure_ascii=False) + "\n" for c in kept)
    data = text.encode("utf-8")
    return FileInfo(rel, len(data), atomic_write(join(out_root, rel), data))


def build_manifest(summaries: list[dict], read_total: int, meta: dict) -> dict:
    summaries = sorted(summaries, key=lambda s: s["unit"])
    out: dict[str, Any] = {"format": "mmcurate.manifest/1", **meta}
    sections = {}
    for kind in ("videos", "clips"):
        counts: collections.Counter = collections.Counter()
        reasons: dict[str, collections.Counter] = {k: collections.Counter() for k in ("dropped", "quarantined")}
        for s in summaries:
            counts.update(s[kind]["counts"])
            for k in reasons:
                reasons[k].update(s[kind]["reasons"][k])
        sections[kind] = (counts, reasons)
    vc, vr = sections["videos"]
    cc, cr = sections["clips"]
    made = sum(s["clips_made"] for s in summaries)
    counts = {"input": read_total, **{k: vc.get(k, 0) for k in ("kept", "dropped", "quarantined")}}
    clip_counts = {"input": made, **{k: cc.get(k, 0) for k in ("kept", "dropped", "quarantined")}}
    shards = [sh for s in summaries for sh in s["shards"]]
    out.update(
        {
            "counts": counts,
            "reasons": {k: dict(sorted(v.items())) for k, v in vr.items()},
            "clips": {"counts": clip_counts, "reasons": {k: dict(sorted(v.items())) for k, v in cr.items()}},
            "accounting_ok": counts["input"] == counts["kept"] + counts["dropped"] + counts["quarantined"]
            and clip_counts["input"] == clip_counts["kept"] + clip_counts["dropped"] + clip_counts["quarantined"],
            "totals": {
                "shards": len(shards),
                "samples": sum(s["samples"] for s in shards),
                "bytes": sum(s["bytes"] for s in shards),
                "clip_seconds": round(sum(s["clip_seconds"] for s in summaries), 3),
            },
            "shards": shards,
            "files": [f for s in summaries for f in s["files"]],
        }
    )
    return out


def write_manifest(summaries: list[dict], read_total: int, out_root: str, meta: dict) -> dict:
    from mmcurate.stages.writers import json_bytes

    manifest = build_manifest(summaries, read_total, meta)
    fs, spool = fsspec.core.url_to_fs(join(out_root, SPOOL))
    if fs.exists(spool):
        fs.rm(spool, recursive=True)
    atomic_write(join(out_root, "manifest.json"), json_bytes(manifest))
    if not manifest["accounting_ok"]:
        raise AccountingError(f"records went missing: {json.dumps([manifest['counts'], manifest['clips']['counts']])}")
    return manifest


def build(
    p: beam.Pipeline,
    units: list[Unit],
    config: VideoConfig,
    out_root: str,
    meta: dict,
    progress_dir: str | None = None,
) -> beam.PCollection:
    """The video recipe; returns the PCollection holding the manifest."""
    read = (
        p
        | "ListUnits" >> beam.Create(units, reshuffle=True)
        | "ReadUnits"
        >> beam.ParDo(ReadUnitFn(config.read, progress_dir, read_video_unit, "videos_read")).with_outputs(
            COUNTS_TAG, main="videos"
        )
    )
    analysed = read.videos | "AnalyseVideos" >> beam.ParDo(AnalyseVideosFn(config, out_root)).with_outputs(
        VIDEOS_TAG, main="clips"
    )
    stages = [per_frame(st, config.output.sample_frames) for st in model_stages(config)]
    clips = (
        analysed.clips
        | "ScoreWithModels" >> ScoreWithModels(stages)
        | "ApplyThresholds" >> Thresholds(config, units)
        | "DropFrames" >> beam.Map(_drop_frames)
    )
    videos = analysed[VIDEOS_TAG]
    duplicates = (
        videos
        | "AnalysedVideos" >> beam.Filter(pending)
        | "KeyByContent" >> beam.Map(lambda v: (v.id, (v.source.unit, v.source.index, v.uid, v.source.ref())))
        | "GroupByContent" >> beam.GroupByKey()
        | "RepeatedVideos" >> beam.FlatMapTuple(_repeats)
    )
    total = read[COUNTS_TAG] | "CountInputs" >> beam.CombineGlobally(sum)
    return (
        {
            "videos": videos | "KeyVideos" >> beam.Map(lambda v: (v.source.unit, v)),
            "clips": clips | "KeyClips" >> beam.Map(lambda c: (c.source.unit, c)),
            "duplicates": duplicates,
        }
        | "GroupByUnit" >> beam.CoGroupByKey()
        | "WriteUnits" >> beam.ParDo(WriteVideoUnitFn(out_root, config.output.shard, progress_dir))
        | "CollectSummaries" >> beam.combiners.ToList()
        | "WriteManifest"
        >> beam.Map(write_manifest, read_total=beam.pvalue.AsSingleton(total), out_root=out_root, meta=meta)
    )


def validate(config: VideoConfig) -> None:
    """What must hold before any video is read: FFmpeg present, model weights where filters need them."""
    from .config import ConfigError
    from .models import validate_models

    try:
        config.output.check()
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    validate_models(config)


def meta_for(inputs: list[str], config: VideoConfig, units: list[Unit]) -> dict:
    return run_meta("video", inputs, config, units)


__all__ = ["VideoConfig", "build", "meta_for", "validate"]
