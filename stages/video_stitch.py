"""Scene stitching: a detector cut is removed when the frames either side of it show the same shot.

PySceneDetect cuts wherever consecutive frames differ enough, so a camera flash, an explosion or a
fast movement inside one shot splits it. Panda-70M stitches such pieces back (`event_stitching.py`:
ImageBind embeddings of the frames at 95 % of a scene and 5 % into the next; merged when the L2
distance is at most 0.6). Here, without a model: each frame's analysis frame is reduced at once to a
gray thumbnail (`side` px long side, about 200 bytes), and a cut is compared on frame pairs at equal
distance from it, `skip_s` to `window_s` away (the frames right at the cut are a flash's or the middle
of a fade, which look alike on both sides of a real transition too). The pairs' best SSIM (a single
window over the thumbnail, best over shifts of up to `shift` px, so a pan stays similar) is the cut's
similarity; at or above `threshold` the cut is removed.

Thumbnails are kept only for the frames near a cut: a ring buffer holds the last frames (as many as
the detector may report a cut late), and frames within `window_s` of a reported cut are copied out
of it, so memory stays flat however long the video.
"""

from __future__ import annotations

import bisect
import collections
import math
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from .base import Params

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
"""SSIM's stabilising constants for 8-bit images (Wang et al. 2004: K1 = 0.01, K2 = 0.03)."""


class StitchParams(Params):
    """Merging adjacent scenes whose boundary frames are alike (off by default: cuts are PySceneDetect's)."""

    enabled: bool = False
    threshold: float = Field(0.8, gt=0, le=1)
    """Similarity (SSIM of the boundary thumbnails, at most 1) at or above which a cut is removed.
    Measured: flashes inside one shot 0.94-0.97, hard cuts between different shots 0.43 at most."""
    window_s: float = Field(0.5, gt=0)
    """Frames compared lie at most this far (seconds) from the cut, and never past a neighbouring cut."""
    skip_s: float = Field(0.2, ge=0)
    """Frames closer than this (seconds) to the cut are not compared: a flash of up to this length, or
    the middle of a fade, is stepped over."""
    side: int = Field(16, ge=4, le=64)
    """Long side of the gray thumbnail compared, pixels."""
    shift: int = Field(1, ge=0)
    """Thumbnail pixels of shift searched (1 of 16: 6 % of the frame), so a moving camera still matches."""

    @model_validator(mode="after")
    def _order(self) -> StitchParams:
        if self.skip_s >= self.window_s:
            raise ValueError(f"scenes.stitch.skip_s ({self.skip_s}) must be below scenes.stitch.window_s")
        if 2 * self.shift >= self.side:
            raise ValueError(f"scenes.stitch.shift ({self.shift}) must be below half of scenes.stitch.side")
        return self


def thumbnail(small: np.ndarray, side: int) -> np.ndarray:
    """The gray frame reduced to `side` px on its long side (area averaging), uint8."""
    import cv2

    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    f = side / max(w, h)
    size = (max(2, round(w * f)), max(2, round(h * f)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two equal-sized images as one window: luminance, contrast and structure together, so a
    fade (same structure, another brightness) scores low where plain correlation would not."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    ma, mb = a.mean(), b.mean()
    da, db = a - ma, b - mb
    va, vb, cov = (da * da).mean(), (db * db).mean(), (da * db).mean()
    value = (2 * ma * mb + C1) * (2 * cov + C2) / ((ma * ma + mb * mb + C1) * (va + vb + C2))
    # SSIM's constants swamp the structure of low-contrast frames (a dark or foggy hard cut scored
    # 0.93): weigh by the plain correlation, which is 0 for unrelated or flat frames whatever the contrast.
    corr = cov / np.sqrt(va * vb) if va * vb > 1e-12 else 0.0
    return float(value * max(0.0, corr))


def similarity(a: np.ndarray, b: np.ndarray, shift: int) -> float:
    """Best `ssim` of `a` and `b` over relative shifts of up to `shift` px each way (overlaps only)."""
    h, w = a.shape
    best = -1.0
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            pa = a[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            pb = b[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            best = max(best, ssim(pa, pb))
    return best


class BoundaryFrames:
    """Thumbnails of the frames near each cut, collected during the one decode.

    `add` takes every decoded frame in order, with the frame times so far and the detector's cuts so
    far (PySceneDetect may report a cut up to `lag` frames after it happened)."""

    def __init__(self, params: StitchParams, fps: float, lag: int) -> None:
        self.params = params
        self.window = max(1, round(params.window_s * fps))
        self.skip = round(params.skip_s * fps)
        self.ring: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=lag + self.window + 2)
        self.kept: dict[int, np.ndarray] = {}
        self.keep_until = 0
        self.seen_cuts = 0

    def add(self, n: int, small: np.ndarray, times: list[float], cut_tcs: list[Any]) -> None:
        thumb = thumbnail(small, self.params.side)
        self.ring.append((n, thumb))
        if n < self.keep_until:
            self.kept[n] = thumb
        for tc in cut_tcs[self.seen_cuts :]:
            c = bisect.bisect_left(times, tc.seconds - 1e-9)  # as `scan` maps a cut to its frame
            self.keep_until = max(self.keep_until, c + self.window)
            self.kept.update((i, t) for i, t in self.ring if c - self.window <= i < c + self.window)
        self.seen_cuts = len(cut_tcs)

    def frame(self, i: int) -> np.ndarray | None:
        if i in self.kept:
            return self.kept[i]
        if self.ring and self.ring[0][0] <= i <= self.ring[-1][0]:  # cuts reported at the end of the video
            return self.ring[i - self.ring[0][0]][1]
        return None

    def boundary(self, left: int, right: int, lo: int, hi: int) -> float:
        """Similarity of the scenes [lo, left) and [right, hi) (`left` = `right`: one cut; else a flash
        scene between them): best over the frame pairs (left-1-j, right+j), j from `skip` to `window`
        frames (fewer where a scene is short); NaN if there are none."""
        far = min(self.window, left - lo, hi - right)
        best = math.nan
        for j in range(min(self.skip, far - 1), far):
            a, b = self.frame(left - 1 - j), self.frame(right + j)
            if a is not None and b is not None:
                s = similarity(a, b, self.params.shift)
                best = s if math.isnan(best) else max(best, s)
        return best

    def stitch(self, cuts: list[int], frames: int) -> tuple[list[int], list[int], list[float]]:
        """(cuts kept, cuts removed, similarity at each of `cuts`), left to right: after a removal the
        merged scene is the left neighbour of the next cut. A scene no longer than `skip` (a flash the
        detector made a scene of, with a small `min_scene_len`) is stepped over: both its cuts go
        when the scenes either side of it are alike."""
        kept: list[int] = []
        removed: list[int] = []
        scores: list[float] = []
        i = 0
        while i < len(cuts):
            c, lo = cuts[i], kept[-1] if kept else 0
            nxt = [*cuts[i + 1 : i + 3], frames, frames]
            if nxt[0] < frames and nxt[0] - c <= self.skip:
                s = self.boundary(c, nxt[0], lo, nxt[1])
                if s >= self.params.threshold:
                    removed += [c, nxt[0]]
                    scores += [round(s, 4)] * 2
                    i += 2
                    continue
            s = self.boundary(c, c, lo, nxt[0])
            scores.append(round(s, 4))
            (removed if s >= self.params.threshold else kept).append(c)  # NaN compares False: kept
            i += 1
        return kept, removed, scores
