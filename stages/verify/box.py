"""Grounding answers: predicted boxes against the reference boxes by IoU (geometry in `stages/measure.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ..measure import Box, iou, parse_boxes
from .check import Check, checked


def _matched_ious(preds: Sequence[Box], refs: Sequence[Box]) -> list[float]:
    """The IoUs of a greedy one-to-one matching, best pairs first."""
    pairs = sorted(((iou(p, r), i, j) for i, p in enumerate(preds) for j, r in enumerate(refs)), reverse=True)
    used_p: set[int] = set()
    used_r: set[int] = set()
    matched: list[float] = []
    for v, i, j in pairs:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            matched.append(v)
    return matched


def verify_box(
    prediction: str, reference: str, *, iou_threshold: float = 0.5, multiple: Literal["reject", "first"] = "reject"
) -> Check:
    """IoU >= threshold against the reference box; several reference boxes are matched one to one.

    Prediction and reference must be in the same frame (GLM: the 0..1000 grid); the score is the mean
    matched IoU, the verdict goes by the worst one.
    """
    refs = parse_boxes(str(reference))
    if not refs:
        return checked(False, "bad_reference")
    preds = parse_boxes(prediction) if isinstance(prediction, str) else []
    if not preds:
        return checked(False, "unparseable_prediction")
    if len(refs) == 1 and len(preds) > 1:
        if multiple == "reject":
            return checked(False, "multiple_boxes", 0.0)
        preds = preds[:1]
    if len(preds) != len(refs):
        return checked(False, "box_count", 0.0)
    matched = _matched_ious(preds, refs)
    score = sum(matched) / len(matched)
    return checked(min(matched) >= iou_threshold, f"iou={min(matched):.3f}", score)
