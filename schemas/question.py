"""Questions graded by pass rate (SFT/RL selection), and the rollouts that grade them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .base import Record, Row


class AnswerType(str, enum.Enum):
    """How a reference answer is checked (one verifier each, in stages/verify/)."""

    CHOICE = "choice"
    NUMBER = "number"
    MATH = "math"
    TEXT = "text"
    BOX = "box"
    OCR = "ocr"


@dataclass(kw_only=True)
class Question(Record):
    """A question with its reference answer, the images or video clip it is about, and its grade.

    `id` hashes question, answer and media refs. `scores` gets `pass_rate`, `blind_pass_rate`,
    `correct`, `unparseable`, `k` (and blind counterparts); `labels` gets `tier` and flags such as
    `answerable_blind` and `answer_leak`.
    """

    kind = "question"

    question: str
    answer: str
    answer_type: AnswerType = AnswerType.TEXT
    choices: list[str] = field(default_factory=list)
    """Option texts for multiple choice, in letter order (A, B, ...)."""
    images: list[str] = field(default_factory=list)
    """Image URIs (local paths, s3://, ...), in the order the question refers to them."""
    video: str = ""
    """The video the question is about (a path or URI, resolved and checked like the images), if any."""
    domain: str = "general"
    """STEM, chart, OCR, grounding, counting, video, ... (tiers and RL curricula are per domain)."""
    extra: str = "{}"


@dataclass(kw_only=True)
class Rollout(Row):
    """k sampled answers of one model to one prompt, with their verdicts: the rollout cache.

    Keyed by (question_id, model, prompt_hash, sampling_hash): re-running selection, or adding a
    model, never regenerates a key that exists.
    """

    kind = "rollout"

    question_id: str
    model: str
    prompt_hash: str
    """Hash of the rendered chat messages (so a blind prompt, a new template or new images differ)."""
    sampling_hash: str
    """Hash of the sampling parameters (k, temperature, top_p, max_tokens, thinking, seed)."""
    blind: bool = False
    """The question was asked without its images/video (to find questions answerable without looking)."""
    responses: list[str] = field(default_factory=list)
    extracted: list[str] = field(default_factory=list)
    """The answer extracted from each response ('' when unparseable)."""
    parsed: list[bool] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.question_id, self.model, self.prompt_hash, self.sampling_hash)
