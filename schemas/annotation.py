"""Human labels of video clips, as they come back from Label Studio: one `ClipAnnotation` per
annotator per task per label family, in our clips' frame convention.

Label Studio counts video frames from 1 and its timeline ranges are inclusive at both ends; our clips
count from 0 and are half-open (`ClipRecord.start_frame` / `end_frame`). Every frame here is ours:
`TimeSegment(start_frame=0, end_frame=3)` is Label Studio's range {start: 1, end: 3}. Boxes are in
the clip's stored pixels (`ClipRecord.width` x `height`); Label Studio's are percent of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FAMILIES = ("actions", "text", "cinematic")
"""Label families: one Label Studio project each by default, so agreement is measured per family."""


@dataclass(frozen=True)
class TimeSegment:
    """An action (or other timeline label) over frames [start_frame, end_frame) of the clip."""

    label: str
    start_frame: int
    end_frame: int
    start_time: float
    """Seconds from the clip's start: start_frame / fps."""
    end_time: float
    text: str = ""
    """The annotator's free-text description of the segment, if any."""


@dataclass(frozen=True)
class FrameBox:
    """One frame of a box track, in stored pixels (top-left x, y; rotation in degrees, clockwise)."""

    frame: int
    x: float
    y: float
    width: float
    height: float
    rotation: float = 0.0
    auto: bool = False
    """Interpolated between keyframes (as Label Studio interpolates), not drawn by the annotator."""


@dataclass(frozen=True)
class TextTrack:
    """In-scene text: a box followed over frames, what it reads and its language."""

    boxes: tuple[FrameBox, ...]
    text: str = ""
    lang: str = ""


@dataclass
class ClipAnnotation:
    """What one annotator said about one clip in one label family."""

    clip_id: str
    family: str
    annotator: str
    task_id: int = 0
    annotation_id: int = 0
    lead_time: float = 0.0
    """Seconds the annotator spent on the task (Label Studio's `lead_time`)."""
    segments: list[TimeSegment] = field(default_factory=list)
    tracks: list[TextTrack] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    """Single-choice answers by control name (camera_motion: pan_left, shot_size: close_up, ...)."""
    gold: bool = False
    """An answer to a gold copy (push's `--gold-rate`): scores the annotator, never the consensus."""
    problems: list[str] = field(default_factory=list)
    """What was wrong in this annotation and left out or clipped (a box outside the frame, a range
    past the clip's end, an unknown label); the rest of the annotation still counts."""

    @property
    def empty(self) -> bool:
        """The annotator submitted without labelling anything."""
        return not (self.segments or self.tracks or self.choices)
