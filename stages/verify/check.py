"""The results every verifier and `verify` return, shared by the verifier modules."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Check:
    """A verifier's result; truthy when correct."""

    correct: bool
    score: float
    """1.0/0.0, IoU for boxes, max(0, 1 - CER) for OCR."""
    detail: str
    """ok, mismatch, bad_reference, unparseable_prediction, timeout, too_long, iou=..., cer=..."""

    def __bool__(self) -> bool:
        return self.correct


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One response graded: `parsed` False = no answer could be extracted (counted apart from wrong)."""

    correct: bool
    parsed: bool
    extracted: str | None
    reason: str
    """The extraction's failure reason when not parsed, else the verifier's detail."""
    score: float = 0.0
    method: str = "none"


def checked(correct: bool, detail: str | None = None, score: float | None = None) -> Check:
    """A `Check` whose score defaults to 1/0 and detail to ok/mismatch."""
    return Check(
        correct,
        (1.0 if correct else 0.0) if score is None else score,
        detail or ("ok" if correct else "mismatch"),
    )
