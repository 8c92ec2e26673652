"""Clip filters: thresholds on the scores the video analysis writes (motion, size).

Scores are computed once per clip (stages/video_scan.py, stages/video_clips.py); these filters only
decide, so `mmcurate select` can re-threshold a video run from its ledger.
"""

from __future__ import annotations

from typing import Any

from .base import Filter, Params, register


@register
class Motion(Filter):
    """Drop still clips (slideshows, static shots) and, optionally, shaky ones.

    `motion` is the clip score of `motion.method`: `fast` (ours: 128 px flow in display pixels per
    sampling interval) or `datajuicer` (Data-Juicer's score exactly, whose filter keeps >= 0.25 by
    default; that minimum means Data-Juicer's quantity, not the fast one's).
    """

    name = "motion"
    kinds = ("clip",)
    reasons = ("low_motion", "high_motion")
    scores = ("motion",)

    class Params(Params):
        min: float = 0.25
        max: float | None = None

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        value = scores.get("motion")
        if value is None:  # a clip too short for one flow sample: nothing to judge
            return None
        if value < self.params.min:
            return "low_motion"
        if self.params.max is not None and value > self.params.max:
            return "high_motion"
        return None


@register
class ClipSize(Filter):
    """Drop clips whose stored frames are smaller than `min_side` pixels on the short side."""

    name = "clip_size"
    kinds = ("clip",)
    reasons = ("too_small",)
    scores = ("width", "height")

    class Params(Params):
        min_side: int = 224

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return {"width": float(record.width), "height": float(record.height)}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        return "too_small" if min(scores["width"], scores["height"]) < self.params.min_side else None
