"""Video corpus records: the source video, and the clips cut from it at scene boundaries.

A video ends kept (with its kept clips), dropped (no clip survived, with the reason) or quarantined
(unreadable, with the error). Every scene piece becomes a `ClipRecord`, kept or dropped with a reason
(`too_short`, a failed threshold), so the ledger explains each second of every input video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .base import PAYLOAD, DedupKey, OcrLine, Record, read_media


@dataclass(kw_only=True)
class VideoRecord(Record):
    """One input video: what the probe found, where the cuts are, how many clips it gave.

    `id` is the BLAKE2b-128 of the file bytes (empty until the analysis hashes a local file)."""

    kind = "video"

    caption: str = ""
    extra: str = "{}"
    """Input metadata with no column of its own (video2dataset's json member, jsonl keys), as JSON."""
    file_bytes: int = 0
    container: str = ""
    codec: str = ""
    width: int = 0
    """Coded (stored) frame size, before rotation and sample aspect ratio."""
    height: int = 0
    display_width: int = 0
    """Upright size as a player shows it: rotation applied, pixels made square (SAR)."""
    display_height: int = 0
    rotation: int = 0
    """Degrees clockwise (0, 90, 180, 270) to turn stored frames upright (from the display matrix)."""
    sar: str = "1:1"
    """Sample (pixel) aspect ratio, num:den."""
    fps: float = 0.0
    """Nominal frame rate (stream's guessed rate); see `avg_fps` for variable frame rate."""
    avg_fps: float = 0.0
    vfr: bool = False
    frames: int = 0
    """Frame count as decord indexes it (what a trainer's reader sees)."""
    duration: float = 0.0
    """Seconds: the video stream's duration (`stream_duration`), the container's when the stream
    states none, else frames / fps (streamed WebM). What clip planning and the timeouts use."""
    flow_speed: float = math.nan
    """Its clips' `flow_speed` (frame diagonals per second), weighted by their durations: the whole
    video's, as video2dataset and Data-Juicer users filter videos (NaN when no clip has one)."""
    motion: float = math.nan
    """The same for Data-Juicer's `motion` score (`motion.method: datajuicer`; NaN otherwise)."""
    stream_duration: float = 0.0
    """The video stream's own duration as its header states it (0: it states none)."""
    container_duration: float = 0.0
    """The container's duration (FFmpeg's `format.duration`, every stream): tens of milliseconds off
    the stream's on real files (audio longer than video, edit lists); 0 when it states none."""
    start_time: float = 0.0
    """Presentation time of the first frame, seconds (non-zero for delayed-start files)."""
    has_audio: bool = False
    audio_codec: str = ""
    decoded_frames: int = 0
    cuts: list[int] = field(default_factory=list)
    """Decoded-frame indices where a new scene starts (0-based): the cuts clips are planned from
    (PySceneDetect's, less `stitched_cuts`)."""
    stitched_cuts: list[int] = field(default_factory=list)
    """PySceneDetect's cuts that scene stitching (`scenes.stitch`) removed, merging the scenes either
    side: `cuts` + `stitched_cuts` are the detector's cuts. Empty when stitching is off."""
    cut_similarity: list[float] = field(default_factory=list)
    """Stitching's similarity (SSIM of the boundary thumbnails) at each detector cut, in the order of
    `sorted(cuts + stitched_cuts)`; a cut at or above `scenes.stitch.threshold` was removed (NaN: no
    frames to compare). Empty when stitching is off."""
    clips: int = 0
    """Clip records made from this video (kept or dropped): the input count of the clip identity."""
    path: str | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """A local file holding the video (the input itself)."""
    data: bytes | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """The video bytes when they came from a container that cannot be read at an offset (a member of
    a compressed tar), until the recipe spools them. Otherwise `path`, or `media` (a remote file, a
    byte range of a plain tar) says where the bytes are, and they cross no shuffle."""

    def dedup_key(self) -> DedupKey | None:
        if not self.id:
            return None
        return DedupKey((self.source.unit, self.source.index), self.uid, self.id, self.source.unit, self.id)

    def expected_children(self) -> dict[str, int]:
        return {"clip": self.clips}


@dataclass(kw_only=True)
class ClipRecord(Record):
    """One clip: a scene (or a piece of a long scene) of a source video, with its scores.

    `id` is the BLAKE2b-128 of (video id, first frame, end frame): stable across reruns."""

    kind = "clip"
    parent_kind = "video"

    video_id: str
    clip_index: int
    """Position of this clip in its video (0-based, in time order); `source` is the video's."""
    scene_index: int = 0
    caption: str = ""
    start_frame: int = 0
    """First decoded frame of the clip (0-based, decode order)."""
    end_frame: int = 0
    """One past the last frame."""
    start_time: float = 0.0
    """Seconds from the start of the video (first frame = 0), start of the first frame."""
    end_time: float = 0.0
    duration: float = 0.0
    cut_offset_start: float = 0.0
    """Seconds from the exact cut to this clip's start (+: later), with `output.cut: keyframe`, where
    edges move to keyframes (start/end frames and times are where the clip really is); 0 for exact cuts."""
    cut_offset_end: float = 0.0
    """The same at the end (-: the clip ends earlier than the exact cut)."""
    width: int = 0
    """Size of the stored clip (upright, square pixels, after any max-side bound)."""
    height: int = 0
    fps: float = 0.0
    out_bytes: int = 0
    ocr: list[OcrLine] = field(default_factory=list)
    """Text lines of the sampled frame with the most text (coordinates of `width` x `height`)."""
    frame_hash: str = ""
    """BLAKE2b-128 of every decoded frame's pixels: the exact dedup key (clips cut from the same
    source frames are bit-identical encodes). Empty when unknown (`dedup.clips: false`, no file)."""
    phash: str = ""
    """64-bit perceptual hash (16 hex digits) of the whole frame, in 4 frames: the near dedup key,
    robust to re-encoding at another size and bitrate (stages/video_dedup.py)."""
    phash_crops: list[str] = field(default_factory=list)
    """The same hash of 16 sub-windows (edges up to 10 % in): a cropped copy's `phash` is near one."""
    clip_simhash: str = ""
    """64-bit SimHash (16 hex digits) of the mean L2-normalised CLIP image embedding of the sampled
    frames: the semantic near dedup key (`dedup.clip_max_distance`). Empty when no CLIP stage ran."""
    frames: Any = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """Sampled RGB frames (PIL images), decoded from the clip file when a model stage runs; never
    written, and cleared before the records cross to the writers."""

    @property
    def uid(self) -> str:
        return f"{self.source.unit:06d}:{self.source.index:09d}:{self.clip_index:05d}"

    @property
    def parent_uid(self) -> str:
        return f"{self.source.unit:06d}:{self.source.index:09d}"

    def dedup_rank(self) -> tuple:
        """The copy kept of duplicate clips: the most pixels, then the longest, then the first read
        (a total order, so the choice is the same whatever the worker layout)."""
        return (-self.width * self.height, -self.duration, self.source.unit, self.source.index, self.clip_index)

    def dedup_key(self) -> DedupKey | None:
        """Exact: the frame hash; near: the whole-frame hash, its crops as probes; semantic: the CLIP
        SimHash; group: the video (its own clips are never near duplicates of each other: pieces of
        one long static scene). None without a fingerprint."""
        if not self.frame_hash:
            return None
        near = int(self.phash, 16) if self.phash else None
        probes = tuple(int(h, 16) for h in self.phash_crops) or None
        semantic = int(self.clip_simhash, 16) if self.clip_simhash else None
        rank = self.dedup_rank()
        unit = self.source.unit
        return DedupKey(rank, self.uid, self.id, unit, self.frame_hash, near, None, probes, semantic, self.video_id)

    def members(self) -> dict[str, bytes]:
        """Read when the shard is built, so a unit's writer holds one sample's clip at a time. The clip
        file is in the run's spool already (cut there), or in select the parent's shard."""
        if not self.media:
            raise ValueError(f"clip {self.uid} has no file to write")
        return {"mp4": read_media(self.media), "txt": self.caption.encode("utf-8")}
