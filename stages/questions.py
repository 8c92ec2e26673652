"""Pass-rate grading: from verified rollouts to pass rates, blind pass rates and answer-leak flags.

Grading is pure arithmetic over verified rollouts, kept apart from selection thresholds so that
`sft` and `rl` (and a later re-selection) decide from the same stored counts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from mmcurate.schemas import AnswerType, Question, Rollout

from .base import Params

# ------------------------------------------------------------------------------------------- grading


class GradeParams(Params):
    blind_flag: float = 0.5
    """A question whose blind pass rate (asked without its images) reaches this is `answerable_blind`."""
    leak_min_chars: int = 2
    """Reference answers shorter than this (in letters/digits) are not searched for as leaks."""


PASS_SCORES = tuple(
    f"{prefix}{name}" for prefix in ("", "blind_") for name in ("k", "correct", "unparseable", "pass_rate")
)
"""What grading writes into a question's scores (blind_*: asked without its images or video)."""
PASS_LABELS = ("answerable_blind", "answer_leak", "tier", "response")


def pass_counts(rollouts: Iterable[Rollout]) -> dict[str, float]:
    k = correct = unparseable = 0
    for r in rollouts:
        k += len(r.correct)
        correct += sum(r.correct)
        unparseable += sum(not p for p in r.parsed)
    return {
        "k": float(k),
        "correct": float(correct),
        "unparseable": float(unparseable),
        "pass_rate": correct / k if k else 0.0,
    }


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[^\w]+", " ", text).strip()


def answer_leaks(answer: str, haystack: str, min_chars: int) -> bool:
    """The reference answer appears in `haystack` as whole words (after normalisation)."""
    needle = _norm(answer)
    if sum(ch.isalnum() for ch in needle) < min_chars:
        return False
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", _norm(haystack)) is not None


def grade(q: Question, seen: list[Rollout], blind: list[Rollout], ocr_text: str, params: GradeParams) -> Question:
    """Write pass counts, blind pass counts and leak flags into the question's scores and labels."""
    q.scores.update(pass_counts(seen))
    if blind:
        b = pass_counts(blind)
        q.scores.update({f"blind_{k}": v for k, v in b.items()})
        if b["pass_rate"] >= params.blind_flag:
            q.labels["answerable_blind"] = "true"
    if q.answer_type != AnswerType.CHOICE:
        if answer_leaks(q.answer, q.question, params.leak_min_chars):
            q.labels["answer_leak"] = "question"
        elif ocr_text and answer_leaks(q.answer, ocr_text, params.leak_min_chars):
            q.labels["answer_leak"] = "image_text"
    return q


def histogram(pass_rates: Iterable[float], buckets: int = 10) -> list[int]:
    """Counts of pass rates in [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]."""
    out = [0] * buckets
    for p in pass_rates:
        out[min(int(p * buckets), buckets - 1)] += 1
    return out
