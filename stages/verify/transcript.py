"""OCR answers: character error rate against the reference transcript (CER in `stages/measure.py`)."""

from __future__ import annotations

import math

from ..measure import edit_distance, normalize_transcript
from .check import Check, checked


def verify_ocr(
    prediction: str,
    reference: str,
    *,
    max_cer: float = 0.1,
    ignore_case: bool = False,
    ignore_whitespace: bool = False,
    max_chars: int = 50_000,
) -> Check:
    """Character error rate (edit distance / reference length, after `normalize_transcript`) <= `max_cer`.

    The distance is only computed up to the `max_cer` budget, so a hopeless long pair is cheap;
    the score is 1 - CER when correct, else 0.
    """
    if not isinstance(reference, str) or len(reference) > max_chars:
        return checked(False, "bad_reference")
    if not isinstance(prediction, str):
        return checked(False, "unparseable_prediction")
    if len(prediction) > max(max_chars, 2 * len(reference) + 16):
        return checked(False, "too_long")
    ref = normalize_transcript(reference, ignore_case=ignore_case, ignore_whitespace=ignore_whitespace)
    pred = normalize_transcript(prediction, ignore_case=ignore_case, ignore_whitespace=ignore_whitespace)
    if not ref:
        return checked(not pred, "empty_reference")
    budget = math.floor(max_cer * len(ref))
    dist = edit_distance(pred, ref, max_distance=budget)
    if dist > budget:
        return checked(False, f"cer>{max_cer:g}", 0.0)
    cer = dist / len(ref)
    return checked(True, f"cer={cer:.3f}", max(0.0, 1.0 - cer))
