"""Data-Juicer's motion score, reproduced exactly (`motion.method: datajuicer`).

Data-Juicer 1.6.1's `video_motion_score_filter` (Apache-2.0) decodes with `cv2.VideoCapture`, reads
frame 0, then frame 1, then seeks to every `step`-th frame (`step = round(fps / min(sampling_fps,
fps))`, at most `frames - 1`, at least 1), converts each BGR frame to grey with `cv2.cvtColor`,
resizes it first when `size` / `max_size` ask (`calculate_resized_dimensions`, then
`cv2.resize(frame, (h, w))`: OpenCV reads that size as (width, height), so the resized frame's
aspect is swapped; reproduced as is, since the point is Data-Juicer's number), and scores each
pair of consecutive sampled frames by the mean Farneback flow magnitude (OpenCV's defaults:
0.5, 3, 15, 3, 5, 1.2, 0), divided by the resized frame's diagonal when `relative`. A video's score
is the mean over its pairs, -1 with none. With `step` 1 the pairs are (0, 1), (1, 1), (1, 2), ...:
the seek after the first pair lands on frame 1 again.

Here the same frames are read in decode order (`grab` skips the ones not needed, no seeking: on
files with few keyframes each of Data-Juicer's seeks decodes again from a distant keyframe), and a
clip is scored as Data-Juicer scores a video holding exactly the clip's frames. Checked against
goldens made by the real op on Data-Juicer's own test videos (`tests/goldens/`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from .base import Params

FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0}
"""Data-Juicer's `_default_kwargs`: OpenCV's documented example values."""


class DataJuicerMotion(Params):
    """Data-Juicer's frame-size options (its `size`, `max_size`, `divisible`, `relative`)."""

    size: list[int] | None = None
    """[short side] or [h, w]; None: the decoded size."""
    max_size: int | None = Field(None, ge=1)
    """Longest side after `size` at most this."""
    divisible: int = Field(1, ge=1)
    relative: bool = False
    """Divide each pair's magnitude by the (resized) frame's diagonal."""

    @field_validator("size")
    @classmethod
    def _one_or_two(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) not in (1, 2) or any(v < 1 for v in value)):
            raise ValueError("motion.datajuicer.size: [short side] or [height, width], positive integers")
        return value


def resized_dimensions(
    height: float, width: float, size: Sequence[int] | None, max_size: int | None, divisible: int
) -> tuple[int, int]:
    """Data-Juicer's `calculate_resized_dimensions` ((height, width) in, "(height, width)" out)."""
    short_edge, long_edge = sorted((width, height))
    if size:
        if len(size) == 1:
            new_short, new_long = size[0], int(size[0] * long_edge / short_edge)
        else:
            new_short, new_long = min(size), max(size)
    else:
        new_short, new_long = short_edge, long_edge
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(new_short * (max_size / new_long)), max_size
    dims = (new_short, new_long) if width >= height else (new_long, new_short)
    return tuple(int(d / divisible) * divisible for d in dims)  # type: ignore[return-value]


def sampled(frames: int, step: int) -> list[int]:
    """The frame offsets Data-Juicer reads from a video of `frames` frames: 0, 1, then every step-th."""
    if frames < 1:
        return []
    offsets = [0] + ([1] if frames > 1 else [])
    offsets += list(range(step, frames, step))
    return offsets


def step_of(fps: float, sampling_fps: float, frames: int) -> int:
    step = round(fps / min(sampling_fps, fps)) if fps > 0 else 1
    return max(min(step, frames - 1), 1)


class _Range:
    """One clip's sampled frames and its pair scores as the decode reaches them."""

    def __init__(self, start: int, end: int, fps: float, sampling_fps: float) -> None:
        self.wanted = [start + o for o in sampled(end - start, step_of(fps, sampling_fps, end - start))]
        self.pos = 0
        self.prev: np.ndarray | None = None
        self.scores: list[float] = []

    def feed(self, index: int, gray: np.ndarray, score: Any) -> None:
        while self.pos < len(self.wanted) and self.wanted[self.pos] == index:  # (1, 1) when step is 1
            if self.prev is not None:
                self.scores.append(score(self.prev, gray))
            self.prev = gray
            self.pos += 1


def datajuicer_scores(
    path: str, ranges: Sequence[tuple[int, int]], sampling_fps: float, params: DataJuicerMotion
) -> list[list[float]]:
    """Per [start, end) frame range: the pair scores Data-Juicer's op gives a video of those frames.
    `ranges=[(0, frames)]` with the container's frame count is the op on the whole file."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return [[] for _ in ranges]
        fps = cap.get(cv2.CAP_PROP_FPS)
        height, width = cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FRAME_WIDTH)
        new_size = resized_dimensions(height, width, params.size, params.max_size, params.divisible)
        todo = [_Range(a, b, fps, sampling_fps) for a, b in ranges]
        wanted = sorted({i for r in todo for i in r.wanted})

        def score(prev: np.ndarray, cur: np.ndarray) -> float:
            flow = cv2.calcOpticalFlowFarneback(prev, cur, None, **FARNEBACK)
            mag, _ = cv2.cartToPolar(flow[..., 0], flow[..., 1])
            value = np.mean(mag)
            if params.relative:
                value /= np.hypot(*cur.shape[:2])
            return float(value)

        index = 0
        for target in wanted:
            while index < target:  # frames no range asks for: decoded, never converted
                if not cap.grab():
                    return [r.scores for r in todo]
                index += 1
            ok, frame = cap.read()
            if not ok:
                break
            index += 1
            if new_size != (height, width):
                frame = cv2.resize(frame, new_size, interpolation=cv2.INTER_AREA)
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            for r in todo:
                r.feed(target, gray, score)
        return [r.scores for r in todo]
    finally:
        cap.release()


def datajuicer_motion(path: str, sampling_fps: float = 2.0, params: DataJuicerMotion | None = None) -> float:
    """Data-Juicer's `video_motion_score` of a whole file (-1.0 when no pair can be scored)."""
    import cv2

    cap = cv2.VideoCapture(path)
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    (scores,) = datajuicer_scores(path, [(0, frames)], sampling_fps, params or DataJuicerMotion())
    return float(np.mean(scores)) if scores else -1.0
