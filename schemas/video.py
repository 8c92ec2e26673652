"""Video corpus records: the source video, and the clips cut from it at scene boundaries.

A video ends kept (with its kept clips), dropped (no clip survived, with the reason) or quarantined
(unreadable, with the error). Every scene piece becomes a `ClipRecord`, kept or dropped with a reason
(`too_short`, a failed threshold), so the ledger explains each second of every input video.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import PAYLOAD, Fate, OcrLine, Record, Source


@dataclass(kw_only=True)
class VideoRecord(Record):
    """One input video: what the probe found, where the cuts are, how many clips it gave."""

    kind = "video"

    id: str
    """Content hash (BLAKE2b-128 of the file bytes): stable across reruns and locations."""
    source: Source
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
    start_time: float = 0.0
    """Presentation time of the first frame, seconds (non-zero for delayed-start files)."""
    has_audio: bool = False
    audio_codec: str = ""
    decoded_frames: int = 0
    cuts: list[int] = field(default_factory=list)
    """Decoded-frame indices where a new scene starts (0-based)."""
    clips: int = 0
    """Clip records made from this video (kept or dropped): the accounting check for clips."""
    scores: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    fate: Fate = field(default_factory=Fate)
    path: str | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """A local file holding the video (the input itself, or a spooled copy of a tar member)."""
    data: bytes | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """The video bytes when they came from inside a container (tar member) and are not on disk yet."""

    @property
    def uid(self) -> str:
        return f"{self.source.unit:06d}:{self.source.index:09d}"


@dataclass(kw_only=True)
class ClipRecord(Record):
    """One clip: a scene (or a piece of a long scene) of a source video, with its scores."""

    kind = "clip"

    id: str
    """BLAKE2b-128 of (video id, first frame, end frame): stable across reruns."""
    video_id: str
    source: Source
    """The source video's location; `index` is the video's position in its unit."""
    clip_index: int
    """Position of this clip in its video (0-based, in time order)."""
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
    scores: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    """`camera_motion` (static, pan_left, pan_right, tilt_up, tilt_down, zoom_in, zoom_out) and others."""
    ocr: list[OcrLine] = field(default_factory=list)
    """Text lines of the sampled frame with the most text (coordinates of `width` x `height`)."""
    fate: Fate = field(default_factory=Fate)
    mp4: bytes | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """The clip file's bytes, loaded only while its shard is written."""
    spool: str | None = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """Where the clip file waits (under the run's output) between extraction and shard writing, so
    that clips cross Beam's shuffles as small records."""
    frames: Any = field(default=None, metadata=PAYLOAD, repr=False, compare=False)
    """Sampled RGB frames (PIL images) for the model stages; never written."""

    @property
    def uid(self) -> str:
        return f"{self.source.unit:06d}:{self.source.index:09d}:{self.clip_index:05d}"

    @property
    def pixels(self) -> Any:
        """The middle sampled frame: what single-image model stages see."""
        return self.frames[len(self.frames) // 2] if self.frames else None

    def media(self) -> tuple[str, bytes | None]:
        """The shard member: the bytes in memory, else the spooled file, read when the shard is built
        (so a unit's writer holds one shard's clips at a time, not all of them)."""
        if self.mp4 is None and self.spool:
            import fsspec

            with fsspec.open(self.spool, "rb") as f:
                return "mp4", f.read()
        return "mp4", self.mp4
