"""Short-text answers: exact match after normalisation, with `|`-separated aliases in the reference."""

from __future__ import annotations

import re
import string
import unicodedata

from .check import Check, checked

LATEX_WRAP = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|operatorname|mbox)\s*\{([^{}]*)\}")
"""A LaTeX text or font command around plain text (`\\text{B}`): group 1 is the text."""
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_text(s: str) -> str:
    """NFKC, `\\text{}` unwrapped, lowercase, punctuation and English articles removed, spaces collapsed."""
    s = unicodedata.normalize("NFKC", s)
    s = LATEX_WRAP.sub(r"\1", s).lower()
    s = "".join(" " if c in _PUNCT or unicodedata.category(c).startswith("P") else c for c in s)
    return " ".join(_ARTICLES.sub(" ", s).split())


def verify_text(prediction: str, reference: str, *, alias_sep: str | None = "|", max_chars: int = 10_000) -> Check:
    """Exact match after `normalize_text`; the reference may list aliases separated by `alias_sep`."""
    if not isinstance(reference, str) or len(reference) > max_chars:
        return checked(False, "bad_reference")
    refs = [normalize_text(r) for r in (reference.split(alias_sep) if alias_sep else [reference])]
    refs = [r for r in refs if r]
    if not refs:
        return checked(False, "bad_reference")
    if not isinstance(prediction, str) or len(prediction) > max_chars:
        return checked(False, "too_long")
    pred = normalize_text(prediction)
    return checked(bool(pred) and pred in refs)
