"""Clip filters: thresholds on the scores the video analysis writes (flow speed, Data-Juicer motion, size).

Scores are computed once per clip (stages/video_scan.py, stages/video_clips.py); these filters only
decide, so `mmcurate select` can re-threshold a video run from its ledger.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import Filter, Params, register


class RangeParams(Params):
    """A score's kept range; `min` has the default of the filter that uses it."""

    min: float = Field(0.0, ge=0)
    max: float | None = Field(None, gt=0)

    def model_post_init(self, _context: object) -> None:
        if self.max is not None and self.max <= self.min:
            raise ValueError(f"max ({self.max}) must lie above min ({self.min}): no clip could pass")


class _Range(Filter):
    """Drop clips whose `score` lies below `min` (still clips: slideshows, static shots) or above
    `max` (shaky ones); a clip too short for one flow sample has no score and is not judged."""

    kinds = ("clip",)
    reasons = ("low_motion", "high_motion")
    score_name = ""

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        value = scores.get(self.score_name)
        if value is None:
            return None
        if value < self.params.min:
            return "low_motion"
        if self.params.max is not None and value > self.params.max:
            return "high_motion"
        return None


@register
class FlowSpeed(_Range):
    """On `flow_speed`, the fast flow (frame diagonals per second, every `motion.method`).

    The default minimum 0.0035 is measured, not borrowed (`make bench`, `bench/video_motion.py`):
    the still scenes of the synthetic bench input (a title card, test bars: at most 0.00015 with
    encoding noise) lie far below it and its slowest camera move (0.025) far above; on the 56 clips of
    the peer test videos, `flow_speed >= min` agrees with Data-Juicer's own `motion >= 0.25` on 89 %
    of clips for any minimum from 0.0025 to 0.005 (84 % at 0.001, 77 % at 0.008): 0.0035 is the
    middle of that plateau."""

    name = "flow_speed"
    scores = ("flow_speed",)
    score_name = "flow_speed"

    class Params(RangeParams):
        min: float = Field(0.0035, ge=0)


@register
class Motion(_Range):
    """On Data-Juicer's `motion` score (`motion.method: datajuicer` only), with its filter's default
    minimum 0.25 (`video_motion_score_filter` `min_score`): the same videos pass as in Data-Juicer."""

    name = "motion"
    scores = ("motion",)
    score_name = "motion"

    class Params(RangeParams):
        min: float = Field(0.25, ge=0)


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
