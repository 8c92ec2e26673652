"""How many vision tokens a trainer's image processor makes of a document's images, found before training.

A Qwen2-VL-style processor resizes every image to a multiple of `patch_size * merge_size` within a
pixel budget (transformers' `smart_resize`), cuts it into patches and merges `merge_size**2` patches
into one LLM token. This module re-implements that arithmetic for the two resize rules transformers
ships (`qwen2_vl` and `glm4v`, which differ: GLM-4V counts the temporal patch in its budget and
first scales images with a side under one factor up to it) without importing transformers, so a
curation worker never loads torch for it. The tests hold it equal to transformers' own processors.

Defaults are GLM-4.5V's published `preprocessor_config.json` (the GLM-V family's, also GLM-4.6V's):
`size = {"shortest_edge": 12544, "longest_edge": 9633792}`, patch 14, merge 2, temporal patch 2.
`9633792 = 14*14 * 2*2 * 2 * 6144`: at most 6144 tokens per image. Note that constructing
`Glm4vImageProcessor()` without a config gives another budget (`longest_edge = 28*28*15000`, 7500
tokens): set `max_pixels` to what the trainer's checkpoint says.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Filter, Params, register

MAX_RATIO = 200
"""transformers' `smart_resize` refuses an image whose long side is over 200 times its short side."""


class ImageRefused(ValueError):
    """The trainer's image processor would raise on this image (transformers raises ValueError too)."""


class VisionTokenParams(Params):
    """The image processor's resize settings, named as in a `preprocessor_config.json`
    (`min_pixels` / `max_pixels` are its `size.shortest_edge` / `size.longest_edge`)."""

    policy: Literal["glm4v", "qwen2_vl"] = "glm4v"
    """The resize rule: transformers' `glm4v` or `qwen2_vl` `smart_resize` (Qwen2.5-VL uses the latter)."""
    patch_size: int = Field(14, ge=1)
    merge_size: int = Field(2, ge=1)
    temporal_patch_size: int = Field(2, ge=1)
    min_pixels: int = Field(112 * 112, ge=1)
    """Pixel floor (glm4v: of temporal_patch_size x height x width; qwen2_vl: of height x width)."""
    max_pixels: int = Field(14 * 14 * 2 * 2 * 2 * 6144, ge=1)
    """Pixel budget, counted as `min_pixels` is (GLM-4.5V's 9633792: 6144 tokens per image)."""

    @model_validator(mode="after")
    def _bounds(self) -> VisionTokenParams:
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"max_pixels ({self.max_pixels}) is below min_pixels ({self.min_pixels})")
        return self


def _refuse_ratio(height: int, width: int) -> None:
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ImageRefused(
            f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {max(height, width) / min(height, width)}"
        )


def _qwen2_vl_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize, step for step."""
    _refuse_ratio(height, width)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _glm4v_resize(
    height: int, width: int, factor: int, temporal: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """transformers.models.glm4v.image_processing_glm4v.smart_resize as its processor calls it for an
    image (num_frames = temporal_factor = temporal_patch_size), step for step."""
    frames = temporal
    if height < factor or width < factor:  # a side under one factor is scaled up to it first
        scale = max(factor / height, factor / width)
        height = int(height * scale)
        width = int(width * scale)
    _refuse_ratio(height, width)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(frames / temporal) * temporal
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resized(height: int, width: int, params: VisionTokenParams) -> tuple[int, int]:
    """(height, width) the processor resizes an image to; ImageRefused where it would raise."""
    if height <= 0 or width <= 0:
        raise ValueError(f"an image has positive sides, got {width}x{height}")
    factor = params.patch_size * params.merge_size
    if params.policy == "glm4v":
        return _glm4v_resize(height, width, factor, params.temporal_patch_size, params.min_pixels, params.max_pixels)
    return _qwen2_vl_resize(height, width, factor, params.min_pixels, params.max_pixels)


def image_grid(height: int, width: int, params: VisionTokenParams) -> tuple[int, int, int]:
    """(grid_t, grid_h, grid_w): the processor's `image_grid_thw` row for one image of this size
    (a still image is one temporal patch: its frame repeated temporal_patch_size times)."""
    h, w = resized(height, width, params)
    return 1, h // params.patch_size, w // params.patch_size


def image_tokens(height: int, width: int, params: VisionTokenParams) -> int:
    """Tokens the LLM sees for one image: grid_t * grid_h * grid_w / merge_size**2."""
    t, h, w = image_grid(height, width, params)
    return t * h * w // params.merge_size**2


def output_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) the encode stage writes (longest side capped at `max_side`, never upscaled,
    rounded as `stages.image_decode.encode` rounds): what the trainer will load from the shard."""
    if not max_side or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


@register
class VisionTokens(Filter):
    """Drop documents whose images would make more than `max_tokens` vision tokens for the trainer."""

    name = "vision_tokens"
    kinds = ("document",)
    reasons = ("too_many_tokens", "image_refused")
    scores = ("vision_tokens", "max_image_tokens", "refused_images")

    class Params(VisionTokenParams):
        max_tokens: int = Field(16384, ge=0)
        """Bound on the summed vision tokens of a document's images (0 = no bound)."""
        output_max_side: int = Field(0, ge=0)
        """The encode stage's `max_side` when the shards hold downscaled images (0: the trainer
        gets them at decoded size). Slots already encoded (`out_width` set) use their output size."""
        drop_refused: bool = True
        """Drop a document holding an image the processor raises on (aspect ratio over 200): it
        would fail the trainer's whole batch."""

    def _size(self, slot: Any) -> tuple[int, int]:
        if slot.out_width > 0 and slot.out_height > 0:
            return slot.out_height, slot.out_width
        return output_size(slot.height, slot.width, self.params.output_max_side)

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        """Sum over the slots that decoded and are not settled dropped or quarantined."""
        total = largest = refused = 0
        for slot in record.slots or ():
            if slot.fate.final or slot.width <= 0 or slot.height <= 0:
                continue
            try:
                n = image_tokens(*self._size(slot), self.params)
            except ImageRefused:
                refused += 1
                continue
            total, largest = total + n, max(largest, n)
        return {"vision_tokens": float(total), "max_image_tokens": float(largest), "refused_images": float(refused)}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        if self.params.drop_refused and scores.get("refused_images", 0.0) > 0:
            return "image_refused"
        if self.params.max_tokens and scores["vision_tokens"] > self.params.max_tokens:
            return "too_many_tokens"
        return None
