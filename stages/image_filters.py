"""Geometry and size filters on the decoded image (scores come from the decode stage)."""

from __future__ import annotations

from typing import Any

from .base import Filter, Params, register

IMAGE_SCORES = ("width", "height", "aspect_ratio", "file_bytes")
IMAGE_KINDS = ("caption", "image", "ocr", "grounding")
"""A caption pair's image and an interleaved document's image slot: the same fields, the same filters."""


def _image_scores(record: Any) -> dict[str, float]:
    w, h = record.width, record.height
    return {
        "width": float(w),
        "height": float(h),
        "aspect_ratio": max(w, h) / max(min(w, h), 1),
        "file_bytes": float(record.file_bytes),
    }


@register
class MinSide(Filter):
    """Drop images whose shorter side is below `min` pixels (thumbnails, icons, tracking pixels)."""

    name = "min_side"
    kinds = IMAGE_KINDS
    reasons = ("too_small",)
    scores = IMAGE_SCORES

    class Params(Params):
        min: int = 64

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return _image_scores(record), {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        return "too_small" if min(scores["width"], scores["height"]) < self.params.min else None


@register
class AspectRatio(Filter):
    """Drop banners and slivers: long side / short side above `max`."""

    name = "aspect_ratio"
    kinds = IMAGE_KINDS
    reasons = ("aspect_ratio",)
    scores = IMAGE_SCORES

    class Params(Params):
        max: float = 3.0

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return _image_scores(record), {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        return "aspect_ratio" if scores["aspect_ratio"] > self.params.max else None


@register
class FileSize(Filter):
    """Drop files below `min_bytes` (placeholders, blank images) or above `max_bytes` (0 = no bound)."""

    name = "file_size"
    kinds = IMAGE_KINDS
    reasons = ("file_too_small", "file_too_large")
    scores = IMAGE_SCORES

    class Params(Params):
        min_bytes: int = 1024
        max_bytes: int = 0

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return _image_scores(record), {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        size = scores["file_bytes"]
        if size < self.params.min_bytes:
            return "file_too_small"
        if self.params.max_bytes and size > self.params.max_bytes:
            return "file_too_large"
        return None
