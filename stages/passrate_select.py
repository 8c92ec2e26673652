"""Selection from pass rates: SFT drops the too easy and the hopeless; RL keeps 0 < p < 1, in tiers.

Thresholds act on the counts `stages/questions.grade` stored, so they can change without new rollouts.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from mmcurate.schemas import Question

from .base import Params


class SftParams(Params):
    too_easy: float = 1.0
    """Drop questions whose pass rate is at least this (the model already knows them)."""
    hopeless: float = 0.0
    """Drop questions whose pass rate is at most this (usually a wrong or unverifiable label)."""
    drop_answerable_blind: bool = False
    drop_answer_leak: bool = True
    response: str = "rollout"
    """Assistant turn: `rollout` (a verified correct sampled response, rejection sampling) or `reference`."""

    def model_post_init(self, _context: object) -> None:
        if not 0.0 <= self.hopeless < self.too_easy <= 1.0:
            raise ValueError("select.sft needs 0 <= hopeless < too_easy <= 1")
        if self.response not in ("rollout", "reference"):
            raise ValueError(f"select.sft.response must be rollout or reference, got {self.response!r}")


TIER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
DEFAULT_TIERS = {"hard": (0.0, 0.34), "medium": (0.34, 0.67), "easy": (0.67, 1.0)}


class RlParams(Params):
    tiers: dict[str, tuple[float, float]] = DEFAULT_TIERS
    """Tier -> [low, high) of pass rate; together they must cover (0, 1) without overlap."""
    drop_answerable_blind: bool = True
    """Questions answered without their image teach the policy to ignore images (reward hacking)."""
    drop_answer_leak: bool = True

    def model_post_init(self, _context: object) -> None:
        for name in self.tiers:  # a tier names a folder (output.per_tier) and a ledger label
            if not TIER_NAME.fullmatch(name):
                raise ValueError(f"select.rl.tiers: {name!r} is not a tier name (letters, digits, '_', '-', '.')")
        spans = sorted(self.tiers.values())
        if not spans or spans[0][0] > 0.0 or spans[-1][1] < 1.0:
            raise ValueError("select.rl.tiers must cover pass rates from 0 to 1")
        for (lo1, hi1), (lo2, _) in itertools.pairwise(spans):
            if hi1 != lo2 or lo1 >= hi1:
                raise ValueError(f"select.rl.tiers must be contiguous, non-overlapping [low, high) spans: {spans}")


def _flag_reason(q: Question, drop_blind: bool, drop_leak: bool) -> str | None:
    if drop_leak and q.labels.get("answer_leak"):
        return "answer_leak"
    if drop_blind and q.labels.get("answerable_blind"):
        return "answerable_blind"
    return None


def decide_sft(q: Question, p: SftParams) -> str | None:
    rate = q.scores.get("pass_rate", 0.0)
    if rate >= p.too_easy:
        return "too_easy"
    if rate <= p.hopeless:
        return "hopeless"
    return _flag_reason(q, p.drop_answerable_blind, p.drop_answer_leak)


def tier_of(rate: float, tiers: dict[str, tuple[float, float]]) -> str:
    for name, (lo, hi) in sorted(tiers.items(), key=lambda kv: kv[1]):
        if lo <= rate < hi:
            return name
    return max(tiers, key=lambda n: tiers[n][1])  # rate == 1.0 lands in the top span


def decide_rl(q: Question, p: RlParams) -> str | None:
    rate = q.scores.get("pass_rate", 0.0)
    if rate >= 1.0:
        return "too_easy"
    if rate <= 0.0:
        return "hopeless"
    reason = _flag_reason(q, p.drop_answerable_blind, p.drop_answer_leak)
    if reason is None:
        q.labels["tier"] = tier_of(rate, p.tiers)
    return reason


def curriculum(questions: list[Any], tiers: dict[str, tuple[float, float]]) -> dict[str, dict[str, int]]:
    """Counts per tier x domain of the kept RL questions (a curriculum sampler's table)."""
    out: dict[str, dict[str, int]] = {t: {} for t in tiers}
    for q in questions:
        row = out.setdefault(q.labels.get("tier", "?"), {})
        row[q.domain] = row.get(q.domain, 0) + 1
    return {t: dict(sorted(d.items())) for t, d in out.items()}
