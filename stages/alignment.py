"""Image-text alignment of interleaved documents: re-anchor each image at its best sentence, one to one.

MMC4 places each image by a linear assignment over its document's image x sentence CLIP similarity
matrix (each sentence takes at most one image, the total similarity is maximal). We do the same with
scipy's `linear_sum_assignment`, on the matrix the model computed here or, with the model off, the
one the input carries (MMC4's `similarity_matrix`): on MMC4's own README example this reproduces its
`matched_text_index` values. An image whose best similarity is under `min` is dropped as `unaligned`
(its fate is decided from the `alignment` score alone, which the ledger keeps).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from .base import Filter, Params, register


def assign(matrix: list[list[float]], rows: list[int]) -> dict[int, tuple[int, float]]:
    """Row -> (column, similarity) for the given rows of an images x sentences matrix, one to one.

    Rows with a non-finite value take no part. When there are more rows than columns, the rows the
    assignment leaves out (each column already holds an image) go to their own best column."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    usable = [r for r in rows if r < len(matrix) and matrix[r] and all(math.isfinite(v) for v in matrix[r])]
    if not usable:
        return {}
    sims = np.array([matrix[r] for r in usable], dtype=np.float64)
    picked, cols = linear_sum_assignment(sims, maximize=True)
    out = {usable[i]: (int(c), float(sims[i, c])) for i, c in zip(picked, cols, strict=True)}
    for i, r in enumerate(usable):
        if r not in out:
            c = int(np.argmax(sims[i]))
            out[r] = (c, float(sims[i, c]))
    return out


@register
class Alignment(Filter):
    """Drop images whose best similarity to any sentence of their document (after the one-to-one
    re-anchoring) is under `min`: an image the text never talks about."""

    name = "alignment"
    kinds = ("image",)
    reasons = ("unaligned",)
    scores = ("alignment",)
    model = "align"

    class Params(Params):
        min: float = 0.15
        """MMC4 keeps images whose assigned CLIP ViT-L/14 similarity is at least 0.15."""
        source: Literal["auto", "model", "input"] = "auto"
        """Where the matrix comes from: `input` = the input's (MMC4 similarity_matrix) only, no model;
        `model` = CLIP here always; `auto` = the input's when a document has one, else CLIP."""
        reanchor: bool = True
        """Move each image to its assigned sentence (false: keep the input's anchor, only score it)."""

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.model = "" if self.params.source == "input" else "align"

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        value = scores.get("alignment")
        if value is None or not math.isfinite(value):
            return None  # no matrix (no text, or the model is off and the input has none): not judged
        return "unaligned" if value < self.params.min else None
