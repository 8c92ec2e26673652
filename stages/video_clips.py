"""Scenes -> clips: duration bounds, frame-accurate H.264 extraction with FFmpeg, frames for the models.

Scenes shorter than `min_duration` become dropped clip records (`too_short`); scenes longer than
`max_duration` are split into equal pieces no longer than it. Extraction runs the `ffmpeg` binary
with an argument list (never a shell string): an accurate input seek to just before the first frame
and an exact frame count, so a clip holds exactly frames [start, end) of the source; FFmpeg applies
the display rotation, and `scale=iw*sar:ih` makes pixels square.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from .base import Params


class ClipParams(Params):
    min_duration: float = Field(2.0, ge=0)
    """Seconds; shorter scenes are dropped (`too_short`). Panda-70M keeps events of 2 s and more."""
    max_duration: float = Field(10.0, gt=0)
    """Seconds; longer scenes are split into equal pieces (NeMo Curator cuts 2-10 s clips)."""

    @model_validator(mode="after")
    def _order(self) -> ClipParams:
        if self.max_duration < self.min_duration:
            raise ValueError(f"clips.max_duration ({self.max_duration}) is below clips.min_duration")
        return self


class ClipOutputParams(Params):
    ffmpeg: str = "ffmpeg"
    """The FFmpeg binary (a name on PATH or a path)."""
    max_side: int | None = Field(None, ge=16)
    """Longest side of stored clips in pixels (never upscaled); None keeps the source size."""
    max_fps: float | None = Field(None, gt=0)
    """Frame-rate bound of stored clips; None keeps the source rate."""
    crf: int = Field(23, ge=0, le=51)
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
    ] = "veryfast"
    """libx264 preset."""
    audio: bool = False
    """Keep the audio track (AAC) or drop it."""
    sample_frames: int = Field(3, ge=1)
    """Frames per clip for the model stages (CLIP, aesthetics, OCR), evenly spaced."""
    frame_side: int = Field(512, ge=32)
    """Longest side of those frames."""
    timeout_s: float = Field(300, gt=0)
    """One clip's FFmpeg run may take this long."""

    def check(self) -> None:
        """The binary exists, is FFmpeg, and has the libx264 encoder and `-fps_mode` (FFmpeg >= 5.1)."""
        fix = "install FFmpeg >= 5.1 with libx264 (`apt-get install ffmpeg`) or set output.ffmpeg to one"
        if shutil.which(self.ffmpeg) is None:
            raise FileNotFoundError(f"output.ffmpeg: {self.ffmpeg!r} is not an executable on PATH; {fix}")
        try:
            done = subprocess.run(
                [self.ffmpeg, "-hide_banner", "-h", "encoder=libx264"], capture_output=True, timeout=30, check=False
            )
            opts = subprocess.run([self.ffmpeg, "-hide_banner", "-h", "long"], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise FileNotFoundError(f"output.ffmpeg: {self.ffmpeg!r} does not run ({exc}); {fix}") from None
        if done.returncode != 0 or b"libx264" not in done.stdout:
            raise FileNotFoundError(f"output.ffmpeg: {self.ffmpeg!r} is no FFmpeg with libx264; {fix}")
        if b"-fps_mode" not in opts.stdout:
            raise FileNotFoundError(f"output.ffmpeg: {self.ffmpeg!r} predates -fps_mode (FFmpeg 5.1); {fix}")


@dataclasses.dataclass
class ClipPlan:
    clip_index: int
    scene_index: int
    start: int
    end: int
    start_time: float
    end_time: float
    drop: str = ""

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time


def frame_end_time(times: np.ndarray, end: int, fps: float) -> float:
    """When frame `end - 1` stops showing: the next frame's time, or one frame period after the last."""
    if end < len(times):
        return float(times[end])
    last = float(times[end - 1])
    period = float(np.median(np.diff(times[-16:]))) if len(times) > 1 else 1.0 / (fps or 25.0)
    return last + period


def plan_clips(times: np.ndarray, cuts: list[int], fps: float, params: ClipParams) -> list[ClipPlan]:
    """Scenes (between cuts) -> clip plans: long scenes split in time, short ones marked `too_short`.

    A scene longer than `max_duration` is cut into the fewest equal pieces no longer than it; when
    such pieces would fall below `min_duration` (bounds closer than 2x), it gives pieces of exactly
    `max_duration` and a remainder, which is then `too_short`. Edges are placed by time, not frame
    count, so variable-frame-rate scenes split evenly too.
    """
    n = len(times)
    bounds = [0, *[c for c in cuts if 0 < c < n], n]
    plans: list[ClipPlan] = []
    for scene, (s, e) in enumerate(itertools.pairwise(bounds)):
        t0, t1 = float(times[s]), frame_end_time(times, e, fps)
        duration = t1 - t0
        pieces = max(1, math.ceil(duration / params.max_duration - 1e-9))
        if pieces > 1 and duration / pieces < params.min_duration:
            marks = [t0 + i * params.max_duration for i in range(math.floor(duration / params.max_duration) + 1)]
        else:
            marks = [t0 + i * duration / pieces for i in range(pieces)]
        edges = sorted({s, *(int(np.searchsorted(times, m - 1e-9)) for m in marks[1:]), e})
        for a, b in itertools.pairwise(edges):
            if b <= a:
                continue
            plan = ClipPlan(len(plans), scene, a, b, float(times[a]), frame_end_time(times, b, fps))
            if plan.duration + 1e-6 < params.min_duration:
                plan.drop = "too_short"
            plans.append(plan)
    return plans


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Upright square-pixel size bounded by `max_side`, even (H.264 4:2:0)."""
    if max_side and max(width, height) > max_side:
        f = max_side / max(width, height)
        width, height = round(width * f), round(height * f)
    return max(2, width - width % 2), max(2, height - height % 2)


def ffmpeg_args(src: str, dst: str, plan: ClipPlan, facts: dict[str, Any], params: ClipOutputParams) -> list[str]:
    """The FFmpeg command extracting frames [start, end) of `src` as an H.264 MP4."""
    fps = facts["fps"] or 25.0
    # -ss on the input counts from the container's start (the earliest stream's), our times from the
    # first video frame; seek half a frame early so the first frame kept is `start` itself.
    offset = facts.get("start_time", 0.0) - facts.get("container_start", facts.get("start_time", 0.0))
    seek = max(0.0, offset + plan.start_time - 0.5 / fps)
    w, h = output_size(facts["display_width"], facts["display_height"], params.max_side)
    vf = [f"scale={w}:{h}:flags=area" if params.max_side else f"scale={w}:{h}", "setsar=1"]
    if params.max_fps and fps > params.max_fps:
        vf.append(f"fps={params.max_fps}")
    frames = plan.end - plan.start
    if params.max_fps and fps > params.max_fps:
        frames = max(1, round(plan.duration * params.max_fps))
    # passthrough: an MP4 muxer would otherwise resample to a constant rate, duplicating the first
    # frame after the early seek (and dropping the last) when an audio track sets the clock, and
    # duplicating frames of variable-rate sources.
    sync = [] if params.max_fps and fps > params.max_fps else ["-fps_mode", "passthrough"]
    args = [
        params.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1",
        "-ss", f"{seek:.6f}", "-i", src,
        "-map", "0:v:0", "-frames:v", str(frames), "-vf", ",".join(vf), *sync,
        "-c:v", "libx264", "-preset", params.preset, "-crf", str(params.crf), "-pix_fmt", "yuv420p",
        "-threads", "1", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
    ]  # fmt: skip
    if params.audio and facts.get("has_audio"):
        args += ["-map", "0:a:0?", "-c:a", "aac", "-b:a", "128k", "-t", f"{plan.duration:.6f}"]
    else:
        args += ["-an"]
    return [*args, "-movflags", "+faststart", dst]


class ClipFailed(RuntimeError):
    pass


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked ffmpeg before exec
    """If the analysis process is killed (timeout), its ffmpeg dies with it instead of running on."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def extract(src: str, dst: str, plan: ClipPlan, facts: dict[str, Any], params: ClipOutputParams) -> bytes:
    args = ffmpeg_args(src, dst, plan, facts, params)
    linux = sys.platform.startswith("linux")
    try:
        done = subprocess.run(
            args, capture_output=True, timeout=params.timeout_s, check=False,
            preexec_fn=_die_with_parent if linux else None,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ClipFailed(f"ffmpeg ran over {params.timeout_s} s") from None
    if done.returncode != 0 or not Path(dst).exists():
        raise ClipFailed(f"ffmpeg exit {done.returncode}: {done.stderr.decode('utf-8', 'replace')[-800:]}")
    return Path(dst).read_bytes()


def sample_frames(path: str, count: int, side: int) -> tuple[list[Any], dict[str, Any]]:
    """`count` evenly spaced RGB frames (PIL, long side <= `side`) of a clip, and its stream facts."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        total = stream.frames or 0
        want = {round((i + 0.5) * total / count) for i in range(count)} if total else {0}
        w, h = cc.width, cc.height
        f = min(1.0, side / max(w, h))
        size = (max(1, round(w * f)), max(1, round(h * f)))
        frames = []
        for i, frame in enumerate(container.decode(stream)):
            if i in want:
                frames.append(frame.to_image(width=size[0], height=size[1]))
            if total and i >= max(want):
                break
        fps = float(stream.guessed_rate or stream.average_rate or 0)
        facts = {"width": w, "height": h, "fps": fps, "frames": total}
    return frames, facts
