"""Multiple-choice answers: the chosen letter (`B`, `(B)`, `B. 42`, `Answer: B`, ...) or an option's text."""

# ruff: noqa: RUF001  (full-width brackets and punctuation in patterns are meant)

from __future__ import annotations

import re
from collections.abc import Sequence

from .check import Check, checked
from .extract import after_think, glm_box, last_boxed
from .text import LATEX_WRAP, normalize_text

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_CHOICE_CLEAN = re.compile(r"\*\*|__|\$|\\[()\[\]]|`")
_CHOICE_WHOLE = re.compile(
    r"(?:(?:option|choice|answer)\b\s?[:：]?\s?)?"
    r"(?:[(\[（]\s?(?P<p>[A-Za-z])\s?[)\]）](?:\s.*)?"
    r"|(?P<b>[A-Za-z])(?:\s?[.)．:：、](?:\s.*)?)?)",
    re.IGNORECASE | re.DOTALL,
)
_CHOICE_PHRASE = re.compile(
    r"(?:\b(?:answer|option|choice|choose|select|pick)\b"
    r"\s*(?:is|should\s+be|would\s+be|will\s+be|must\s+be|=|[:：])?\s*(?:(?:option|choice)\b)?\s*[:：]?\s*"
    r"|(?:答案|选项|选择|选)\s*(?:是|为|[:：])?\s*)"
    r"(?:[(\[（]\s*(?P<p>[A-Za-z])\s*[)\]）]"
    r"|(?P<b>[A-Za-z])(?![A-Za-z0-9])(?=\s*(?:$|[.,;:!?)\]}*。，；、：]|(?:is|because|since|as|which)\b)))",
    re.IGNORECASE | re.MULTILINE,
)
_SPACES = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\s*\n\s*")


def _collapse_space(text: str) -> str:
    """Whitespace runs to one space (one newline if they hold one), so that no pattern backtracks on them."""
    return _NEWLINES.sub("\n", _SPACES.sub(" ", text))


def _choice_text(text: str) -> str:
    return _collapse_space(_CHOICE_CLEAN.sub("", LATEX_WRAP.sub(r"\1", text))).strip()


def _letter(m: re.Match[str] | None, n_choices: int) -> str | None:
    if m is None:
        return None
    letter = (m.group("p") or m.group("b") or "").upper()
    return letter if letter and LETTERS.index(letter) < n_choices else None


def _choice_body(text: str) -> str | None:
    """The text to read a choice from: a GLM box or `\\boxed{}` when there is one (None if it is malformed)."""
    body = after_think(text)
    if body is None:
        return None
    boxed, reason = glm_box(body)
    if boxed is None and reason == "no_box":
        boxed, reason = last_boxed(body)
        if reason == "no_boxed":
            reason = "no_box"
    if reason == "no_box":
        return body
    return boxed


def extract_choice(text: str, n_choices: int = len(LETTERS)) -> str | None:
    """The chosen option letter (A, B, ...) of a response or an extracted answer, or None.

    A GLM box or `\\boxed{}` is authoritative when present; otherwise the whole text as one choice
    ("B", "(B)", "B. 42", "Option B"), then the last phrase like "the answer is (B)", "Answer: B",
    "the correct option is C", "答案是C".
    """
    if not isinstance(text, str) or n_choices < 1:
        return None
    body = _choice_body(text)
    if body is None:
        return None
    cleaned = _choice_text(body)
    letter = _letter(_CHOICE_WHOLE.fullmatch(cleaned), n_choices)
    if letter is not None:
        return letter
    last = None
    for m in _CHOICE_PHRASE.finditer(cleaned):
        last = m
    return _letter(last, n_choices)


def _choice_by_text(s: str, options: list[str]) -> str | None:
    """The letter of the one option whose normalised text is `s`'s, or None."""
    if not options or len(s) > 10_000:
        return None
    norm = normalize_text(s)
    hits = [LETTERS[i] for i, o in enumerate(options) if norm and normalize_text(o) == norm]
    return hits[0] if len(hits) == 1 else None


def verify_choice(prediction: str, reference: str, *, choices: Sequence[str] | None = None) -> Check:
    """Letter or option-text equivalence; `choices` are the option texts in letter order."""
    options = [str(c) for c in choices or ()][: len(LETTERS)]
    n = len(options) or len(LETTERS)
    ref = extract_choice(str(reference), n) or _choice_by_text(str(reference), options)
    if ref is None:
        return checked(False, "bad_reference")
    if not isinstance(prediction, str):
        return checked(False, "unparseable_prediction")
    pred = extract_choice(prediction, n) or _choice_by_text(prediction, options)
    if pred is None:
        return checked(False, "unparseable_prediction")
    return checked(pred == ref)
