"""Caption text filters: length, language, repetition and boilerplate.

Thresholds follow what LAION/DataComp-style pipelines use: captions are short, so ratios are over
word tokens, and language id uses py3langid's bundled model with normalised probabilities.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .base import Filter, Params, register

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@register
class CaptionLength(Filter):
    """Empty, too short or too long captions (in words and characters)."""

    name = "caption_length"
    reasons = ("caption_empty", "caption_too_short", "caption_too_long")
    scores = ("caption_chars", "caption_words")

    class Params(Params):
        min_words: int = 2
        max_words: int = 200
        min_chars: int = 5
        max_chars: int = 2000

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        text = record.caption.strip()
        return {"caption_chars": float(len(text)), "caption_words": float(len(words(text)))}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        p, n, c = self.params, scores["caption_words"], scores["caption_chars"]
        if n == 0:
            return "caption_empty"
        if n < p.min_words or c < p.min_chars:
            return "caption_too_short"
        if n > p.max_words or c > p.max_chars:
            return "caption_too_long"
        return None


@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    """py3langid's bundled model, loaded once per worker process (from an unpacked cache)."""
    from .langid_model import load_identifier

    return load_identifier()


def identify_language(text: str) -> tuple[str, float]:
    if not text.strip():
        return "", 0.0
    lang, prob = _identifier().classify(text)
    return str(lang), float(prob)


@register
class Language(Filter):
    """Keep captions in `allowed` languages (ISO 639-1) identified with at least `min_prob`."""

    name = "language"
    reasons = ("language",)
    scores = ("lang_prob",)
    labels = ("lang",)

    class Params(Params):
        allowed: tuple[str, ...] = ("en",)
        min_prob: float = 0.5

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        lang, prob = identify_language(record.caption)
        return {"lang_prob": prob}, {"lang": lang}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        lang = labels.get("lang", "")
        if not lang:
            return None  # nothing to identify: the length filter speaks for empty captions
        ok = lang in self.params.allowed and scores["lang_prob"] >= self.params.min_prob
        return None if ok else "language"


def repetition_ratio(text: str) -> float:
    """Share of word tokens that repeat an earlier token (0 = all distinct, ->1 = one word over and over)."""
    toks = words(text)
    if len(toks) < 2:
        return 0.0
    return 1.0 - len(set(toks)) / len(toks)


@register
class CaptionRepetition(Filter):
    """Drop spam captions made of the same words again and again."""

    name = "caption_repetition"
    reasons = ("caption_repetition",)
    scores = ("repetition_ratio",)

    class Params(Params):
        max_ratio: float = 0.5

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return {"repetition_ratio": repetition_ratio(record.caption)}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        return "caption_repetition" if scores["repetition_ratio"] > self.params.max_ratio else None


BOILERPLATE_PATTERNS = (
    r"https?://\S+|www\.\S+",
    r"\b[\w-]+\.(?:jpe?g|png|gif|webp|bmp|tiff?)\b",
    r"\b(?:img|dsc|dscn|dscf|pxl|screenshot)[_ -]?\d+\b",
    r"\bstock (?:photo|image|picture|footage|vector)s?\b",
    r"\broyalty[- ]free\b",
    r"\b(?:shutterstock|getty ?images|alamy|dreamstime|depositphotos|istock(?:photo)?|123rf|adobe stock)\b",
    r"\bimage may contain\b",
    r"\b(?:click|tap) (?:here|to (?:enlarge|view|zoom|download))\b",
    r"\b(?:free )?download\b",
    r"\ball rights reserved\b|\bcopyright\b|©",
    r"\bno (?:image|photo|preview) available\b|\bimage not found\b|\bplaceholder\b",
    r"\bunknown\b|\buntitled\b|\bnull\b|\bundefined\b",
)
_BOILERPLATE = re.compile("|".join(f"(?:{p})" for p in BOILERPLATE_PATTERNS), re.IGNORECASE)


def boilerplate_ratio(text: str) -> float:
    """Share of the caption's characters (spaces excluded) covered by boilerplate patterns."""
    total = sum(1 for ch in text if not ch.isspace())
    if total == 0:
        return 0.0
    covered = sum(sum(1 for ch in m.group(0) if not ch.isspace()) for m in _BOILERPLATE.finditer(text))
    return min(1.0, covered / total)


@register
class CaptionBoilerplate(Filter):
    """Drop captions that are mostly file names, URLs, stock-photo or alt-text boilerplate."""

    name = "caption_boilerplate"
    reasons = ("caption_boilerplate",)
    scores = ("boilerplate_ratio",)

    class Params(Params):
        max_ratio: float = 0.5

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return {"boilerplate_ratio": boilerplate_ratio(record.caption)}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        return "caption_boilerplate" if scores["boilerplate_ratio"] > self.params.max_ratio else None
