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
    motion: float = math.nan
    """Its clips' `motion` (the clip score, same unit), weighted by their durations: the whole
    video's, as Data-Juicer and video2dataset users filter videos (NaN when no clip has one)."""
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
    """Decoded-frame indices where a new scene starts (0-based)."""
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
    width: int = 0
    """Size of the stored clip (upright, square pixels, after any max-side bound)."""
    height: int = 0
    fps: float = 0.0
    out_bytes: int = 0
    ocr: list[OcrLine] = field(default_factory=list)
    """Text lines of the sampled frame with the most text (coordinates of `width` x `height`)."""
    frames: Any = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """Sampled RGB frames (PIL images) for the model stages; never written."""

    @property
    def uid(self) -> str:
        return f"{self.source.unit:06d}:{self.source.index:09d}:{self.clip_index:05d}"

    @property
    def parent_uid(self) -> str:
        return f"{self.source.unit:06d}:{self.source.index:09d}"

    def members(self) -> dict[str, bytes]:
        """Read when the shard is built, so a unit's writer holds one sample's clip at a time. The clip
        file is in the run's spool already (cut there), or in select the parent's shard."""
        if not self.media:
            raise ValueError(f"clip {self.uid} has no file to write")
        return {"mp4": read_media(self.media), "txt": self.caption.encode("utf-8")}
