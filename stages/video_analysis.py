"""Everything done to one video, in one call: probe, scan (cuts + motion), plan clips, extract them,
score motion per clip and fingerprint each clip file for dedup (no frames: the model stages decode
theirs from the clip file when they run).

The pipeline runs `analyse` in a child process with a timeout (a decoder that hangs is killed and
the video quarantined), so it takes and returns plain picklable values. Clip files are written to
`workdir`; the caller reads and removes them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from .base import Params
from .video_clips import (
    ClipFailed,
    ClipOutputParams,
    ClipParams,
    extract,
    keyframe_plans,
    plan_clips,
    stream_copyable,
)
from .video_dedup import fingerprint
from .video_io import file_id
from .video_probe import VideoBroken, probe
from .video_scan import MotionParams, SceneParams, clip_motion, scan


class AnalysisParams(Params):
    scenes: SceneParams = SceneParams()
    motion: MotionParams = MotionParams()
    clips: ClipParams = ClipParams()
    output: ClipOutputParams = ClipOutputParams()
    decode_threads: int = 1
    """Decoder threads per video (Beam runs videos in parallel; 1 keeps each worker on one core)."""


@dataclasses.dataclass
class ClipResult:
    plan: dict[str, Any]
    scores: dict[str, float]
    labels: dict[str, str]
    mp4_path: str = ""
    out: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The clip file's stream facts and dedup keys (`video_dedup.fingerprint`)."""
    error: str = ""


@dataclasses.dataclass
class VideoResult:
    facts: dict[str, Any]
    clips: list[ClipResult]


def ready() -> dict[str, str]:
    """What a fresh child process can import: checked once per worker before any video is judged."""
    import av
    import cv2
    import decord
    import scenedetect

    return {"av": av.__version__, "opencv": cv2.__version__, "decord": decord.__version__,
            "scenedetect": scenedetect.__version__}  # fmt: skip


def identify(path: str, hash_file: bool) -> tuple[str, dict[str, Any] | VideoBroken]:
    """(content id, probe facts or why the video is unusable). Hashing runs here, in the child process
    with a timeout, because reading the file can hang too (a stalled mount, a FIFO)."""
    vid = file_id(path=path) if hash_file else ""
    try:
        return vid, probe(path)
    except VideoBroken as exc:
        return vid, exc


def analyse(path: str, facts: dict[str, Any], params: AnalysisParams, workdir: str) -> VideoResult:
    """Scan, plan, extract and score the clips of the (already probed) video at `path`."""
    import av

    try:
        found = scan(path, params.scenes, params.motion, params.decode_threads)
    except av.FFmpegError as exc:
        raise VideoBroken("decode_error", f"{type(exc).__name__}: {exc}") from None
    if found.frames < 2:
        raise VideoBroken("too_few_frames", f"{found.frames} frame(s) decoded")
    facts = dict(
        facts,
        decoded_frames=found.frames,
        cuts=found.cuts,
        vfr=facts.get("vfr", False) or found.vfr,
        cut_frame_numbers=found.cut_frame_numbers,
        stitched_cuts=found.stitched,
        cut_similarity=found.cut_similarity,
    )
    plans = plan_clips(found.times, found.cuts, facts["fps"], params.clips)
    if params.output.cut == "keyframe" and stream_copyable(facts):  # else re-encoded: upright, square pixels
        plans = keyframe_plans(path, plans, found.times, facts["fps"], params.clips)
    dj = _datajuicer(path, plans, params.motion) if params.motion.method == "datajuicer" else None
    results = []
    diagonal = math.hypot(facts["display_width"], facts["display_height"])
    for i, plan in enumerate(plans):
        scores, labels = clip_motion(found.pairs, plan.start, plan.end, facts["rotation"], params.motion, diagonal)
        if dj is not None and dj[i]:
            scores["motion"], scores["motion_max"] = float(np.mean(dj[i])), max(dj[i])
        scores["duration"] = plan.duration
        res = ClipResult(dataclasses.asdict(plan), scores, labels)
        results.append(res)
        if plan.drop:
            continue
        dst = os.path.join(workdir, f"clip-{plan.clip_index:05d}.mp4")
        try:
            extract(path, dst, plan, facts, params.output)
            res.out = fingerprint(dst)
        except (ClipFailed, av.FFmpegError, OSError) as exc:
            res.error = f"{type(exc).__name__}: {exc}"[:2000]
            continue
        res.mp4_path = dst
        expected = plan.end - plan.start
        if not params.output.max_fps and res.out["frames"] and res.out["frames"] != expected:
            res.error = f"clip holds {res.out['frames']} frames, expected {expected}"
    facts["flow_speed"] = video_motion(results, "flow_speed")
    facts["motion"] = video_motion(results, "motion")
    return VideoResult(facts, results)


def _datajuicer(path: str, plans: list[Any], motion: MotionParams) -> list[list[float]]:
    """Data-Juicer's pair scores of each planned clip (a clip scored as the op scores a video of its frames)."""
    from .video_motion import datajuicer_scores

    return datajuicer_scores(path, [(p.start, p.end) for p in plans], motion.sample_fps, motion.datajuicer)


def video_motion(results: list[ClipResult], score: str = "flow_speed") -> float:
    """The video's `score` as the peers filter whole videos: its clips' values weighted by their
    durations (every planned clip, kept or too short: the whole video); NaN when none has one."""
    pairs = [(r.scores[score], r.scores.get("duration", 0.0)) for r in results if score in r.scores]
    weight = sum(d for _, d in pairs)
    return sum(m * d for m, d in pairs) / weight if weight > 0 else math.nan
