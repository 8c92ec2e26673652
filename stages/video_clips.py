"""Scenes -> clips: duration bounds, frame-accurate H.264 extraction with FFmpeg, frames for the models.

Scenes shorter than `min_duration` become dropped clip records (`too_short`); scenes longer than
`max_duration` are split into equal pieces no longer than it. Extraction runs the `ffmpeg` binary
with an argument list (never a shell string): an accurate input seek to just before the first frame
and an exact frame count, so a clip holds exactly frames [start, end) of the source; FFmpeg applies
the display rotation, and `scale=iw*sar:ih` makes pixels square.

`output.cut: keyframe` (fast mode) copies the source's packets instead (`-c:v copy`, no re-encode):
each clip edge moves to a keyframe (`snap_to_keyframes` documents the rule), the plan records the
moved edges and their offsets from the exact cuts, and the clip still holds exactly frames [start, end).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Literal

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


COPY_CODECS = ("h264", "hevc", "av1", "vp9")
"""Video codecs keyframe cuts copy into MP4 (others are cut exactly, re-encoded)."""


class ClipOutputParams(Params):
    ffmpeg: str = "ffmpeg"
    """The FFmpeg binary (a name on PATH or a path)."""
    cut: Literal["exact", "keyframe"] = "exact"
    """exact: re-encode frames [start, end) of the plan to H.264. keyframe: move each edge to a keyframe
    and copy the source's packets (no re-encode: 6-25x faster per clip measured, docs/video.md; the
    offsets are recorded). A video that needs rotating or square pixels, has another codec than
    COPY_CODECS or an open GOP is still cut exactly."""
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

    @model_validator(mode="after")
    def _copy_only(self) -> ClipOutputParams:
        """A stream copy cannot scale, resample or re-encode audio: say so before the run, not per clip."""
        if self.cut == "keyframe":
            for key in ("max_side", "max_fps", "audio"):
                if getattr(self, key):
                    raise ValueError(
                        f"output.{key}: needs re-encoding, which output.cut: keyframe (stream copy) never does; "
                        f"unset output.{key} or use output.cut: exact"
                    )
        return self

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
    copy: bool = False
    """Cut by stream copy: start is a keyframe, end a keyframe or the video's end (`snap_to_keyframes`)."""
    cut_offset_start: float = 0.0
    """Seconds from the exact plan's start to this one's (+: later); 0 for exact cuts."""
    cut_offset_end: float = 0.0
    """Seconds from the exact plan's end to this one's (-: earlier); 0 for exact cuts."""

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


def stream_copyable(facts: dict[str, Any]) -> bool:
    """Whether a stream copy of this video is a clip as the exact cut would store it: upright, square
    pixels (a copy keeps the stored frames, so the model stages would see them sideways or stretched)
    and a codec MP4 holds and trainers decode."""
    return facts.get("codec") in COPY_CODECS and not facts.get("rotation") and facts.get("sar", "1:1") in ("1:1", "0:1")


def _video_packets(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Presentation times (seconds from the first frame) of every video packet and of the keyframes,
    by demuxing only (no decoding). None when there is no clean cut point to find: packets without
    timestamps (raw elementary streams), or an open GOP (a packet after a keyframe in decode order
    shown before it: a leading picture that needs the previous GOP, so a copy from there is broken)."""
    import av

    stamps: list[int] = []
    flags: list[bool] = []
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:  # the flush packet; edit-list leaders the decoder drops
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                return None
            stamps.append(ts)
            flags.append(bool(packet.is_keyframe))
    if not stamps or tb is None:
        return None
    pts, key = np.asarray(stamps, dtype=np.int64), np.asarray(flags)
    gop = np.cumsum(key) - 1  # each packet's GOP in decode order (-1: before the first keyframe)
    inside = (gop >= 0) & ~key
    if (pts[inside] < pts[key][gop[inside]]).any():
        return None
    first = pts.min()
    return (pts - first) * float(tb), (pts[key] - first) * float(tb)


def keyframes(path: str, times: np.ndarray | None = None) -> list[int] | None:
    """Decoded-frame indices (presentation order, as the scan counts) of the video's keyframes.

    A packet demux, no decoding. With the scan's `times`, each keyframe is the frame shown at its
    time (within half a frame; one that matches none is left out); without, it is its packet's rank in
    presentation order. None when the video has no clean cut points (see `_video_packets`): cut it
    exactly."""
    found = _video_packets(path)
    if found is None:
        return None
    stamps, keys = found
    if times is None:
        return sorted({int(i) for i in np.searchsorted(np.sort(stamps), keys)})
    tol = 0.5 * float(np.median(np.diff(times))) if len(times) > 1 else 0.5
    first = np.searchsorted(times, keys - tol)  # the first frame shown within half a frame of each keyframe
    return sorted({int(i) for i, k in zip(first, keys, strict=True) if i < len(times) and times[i] <= k + tol})


def _snap_scene(group: list[ClipPlan], keys: np.ndarray, times: np.ndarray, fps: float) -> list[ClipPlan]:
    """One scene's exact pieces moved to keyframes (see `snap_to_keyframes`), drops not yet decided."""
    n = len(times)
    s, e, scene = group[0].start, group[-1].end, group[0].scene_index
    later, before = keys[keys >= s], keys[keys <= e]
    a = int(later[0]) if len(later) else n
    b = e if e == n else int(before[-1]) if len(before) else -1
    if b <= a:  # no whole GOP inside the scene: an empty clip at its end
        t = frame_end_time(times, e, fps)
        return [ClipPlan(0, scene, e, e, t, t, "too_short", True, t - float(times[s]), 0.0)]
    cands = np.unique(np.append(keys[(keys >= a) & (keys <= b)], b))
    ctimes = np.array([frame_end_time(times, int(c), fps) for c in cands])
    true = {a: s, b: e}  # keyframe used -> the exact edge it stands for: the scene's own cuts at a and b
    for p in group[:-1]:  # interior edges: the nearest keyframe in [a, b] (ties: the earlier)
        t = frame_end_time(times, p.end, fps)
        i = int(np.argmin(np.abs(ctimes - t)))
        x, old = int(cands[i]), true.get(int(cands[i]))
        if old is None or (x not in (a, b) and abs(t - ctimes[i]) < abs(frame_end_time(times, old, fps) - ctimes[i])):
            true[x] = p.end  # of several edges on one keyframe, the nearest one
    edges = sorted(true)
    plans = []
    for x0, x1 in itertools.pairwise(edges):  # edges on one keyframe merged the pieces between them
        t0, t1 = frame_end_time(times, x0, fps), frame_end_time(times, x1, fps)
        offsets = t0 - frame_end_time(times, true[x0], fps), t1 - frame_end_time(times, true[x1], fps)
        plans.append(ClipPlan(0, scene, x0, x1, t0, t1, "", True, *offsets))
    return plans


def snap_to_keyframes(
    plans: list[ClipPlan], keys: list[int], times: np.ndarray, fps: float, params: ClipParams
) -> list[ClipPlan]:
    """Exact plans (`plan_clips`) -> plans a stream copy can cut: every edge on a keyframe.

    A scene's first edge moves to the first keyframe at or after its start and its last edge to the
    last keyframe at or before its end (the video's end needs none), so a clip never shows a frame of
    another scene. Edges inside a long scene move to the nearest keyframe in that span (ties: the
    earlier); two edges on one keyframe merge their pieces, so a piece may exceed `max_duration` by up
    to a GOP. A piece then shorter than `min_duration` is `too_short`; a scene holding no whole GOP
    becomes one empty `too_short` clip at its end frame. An offset is an edge's time minus that of
    the exact edge it stands for: the scene's cut at the scene's first and last keyframe, else the
    nearest exact edge moved onto it; adjacent clips share the edge and its offset.
    """
    karr = np.asarray(sorted(k for k in keys if 0 <= k < len(times)), dtype=np.int64)
    out: list[ClipPlan] = []
    for _, group in itertools.groupby(plans, key=lambda p: p.scene_index):
        out += _snap_scene(list(group), karr, times, fps)
    for i, plan in enumerate(out):
        plan.clip_index = i
        if plan.duration + 1e-6 < params.min_duration:
            plan.drop = "too_short"
    return out


def keyframe_plans(
    path: str, plans: list[ClipPlan], times: np.ndarray, fps: float, params: ClipParams
) -> list[ClipPlan]:
    """`snap_to_keyframes` on the video's own keyframes; the exact plans when it has no clean cut
    points (no packet timestamps, an open GOP)."""
    keys = keyframes(path, times)
    return plans if keys is None else snap_to_keyframes(plans, keys, times, fps, params)


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Upright square-pixel size bounded by `max_side`, even (H.264 4:2:0)."""
    if max_side and max(width, height) > max_side:
        f = max_side / max(width, height)
        width, height = round(width * f), round(height * f)
    return max(2, width - width % 2), max(2, height - height % 2)


def ffmpeg_args(src: str, dst: str, plan: ClipPlan, facts: dict[str, Any], params: ClipOutputParams) -> list[str]:
    """The FFmpeg command extracting frames [start, end) of `src` as an H.264 MP4 (a stream copy for
    keyframe plans)."""
    if plan.copy:
        return copy_args(src, dst, plan, facts, params)
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


def copy_args(src: str, dst: str, plan: ClipPlan, facts: dict[str, Any], params: ClipOutputParams) -> list[str]:
    """The FFmpeg command copying the packets of frames [start, end) of `src` (start a keyframe) into an MP4.

    An input seek lands on the last keyframe at or before the seek time, and a copy keeps the packets
    from there: seek a little after the keyframe (never before: that lands on the previous one). The
    copied keyframe then has a slightly negative time, which an MP4 edit list would hide (players and
    decoders skip it): `-avoid_negative_ts make_zero` shifts the clip to start at 0 instead. A closed
    GOP (x264's and most encoders' default) holds the frames shown from its keyframe up to the next,
    so `end - start` packets in decode order are exactly frames [start, end).
    """
    fps = facts["fps"] or 25.0
    offset = facts.get("start_time", 0.0) - facts.get("container_start", facts.get("start_time", 0.0))
    seek = max(0.0, offset + plan.start_time + 0.25 / fps)
    return [
        params.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-ss", f"{seek:.6f}", "-i", src,
        "-map", "0:v:0", "-frames:v", str(plan.end - plan.start), "-c:v", "copy", "-an", "-sn", "-dn",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-avoid_negative_ts", "make_zero",
        "-movflags", "+faststart", dst,
    ]  # fmt: skip


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


def sample_frames(path: str | IO[bytes], count: int, side: int) -> tuple[list[Any], dict[str, Any]]:
    """`count` evenly spaced RGB frames (PIL, long side <= `side`) of a clip (a path or an open
    binary file), and its stream facts."""
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
