"""Answer verification for pass-rate grading: extract a model's final answer, check it against the reference.

A pretrained VLM answers each question k times; `verify` turns one response into a `Verdict`, and
pass rate = correct / k. An answer that cannot be extracted (`Verdict.parsed` is False) is counted
apart from a wrong one, as DeepScaleR drops answers its grader cannot parse.

Extraction (`extract_answer`), by `convention`:

* Think blocks: only the text after the last `</think>` counts; a `<think>` that is never closed
  means the model ran out of tokens while thinking: no answer (`unterminated_think`).
* `glm_box` (GLM-4.1V / 4.5V, the default): the answer is between `<|begin_of_box|>` and
  `<|end_of_box|>`, exactly one box, as GLM's reward requires. No box is `no_box` (a legacy
  `\\boxed{}` does not count), two or more `multiple_boxes`, a box opened inside a box `nested_box`,
  an unclosed one `unterminated_box`, an end marker before any begin `unmatched_end_box`.
* `boxed`: the last top-level `\\boxed{...}` / `\\fbox{...}` (braces matched, `\\{` `\\}` escaped);
  an unbalanced last box is `unbalanced_boxed`. Without any, the last `Answer: ...` /
  `Final answer: ...` / `The answer is ...` / `答案是 ...` line (markdown bold and one trailing
  period stripped; an empty `Final Answer:` takes the next non-empty line).
* `any`: the GLM box (multiple or malformed boxes are still unparseable), then `boxed`, then an
  answer line, then the whole remaining text if it is a single line of at most 50 characters.

Verifiers (`VERIFIERS`, keyed by `schemas.question.AnswerType` values) are pure functions
`(prediction, reference, **params) -> Check`, where `Check` is truthy when correct and carries a
score (IoU for boxes, 1 - CER for OCR, else 0/1) and a short detail code. They never raise on any
text; an unusable reference gives `detail="bad_reference"` (a data error for the caller to count).
Unknown parameters raise `TypeError` (a config error).

* `choice`: letters (`B`, `(B)`, `B. 42`, `Answer: B`, `the correct option is B`, `\\text{B}`) or,
  given the option texts (`choices`), the text of an option; a letter wins over text.
* `number`: floats with relative tolerance (absolute when the reference is 0); `1,234`, `1{,}234`,
  `3/4`, `\\frac{3}{4}`, mixed `1\\frac{1}{2}`, `2.5e3`, `2.5 \\times 10^{3}`, `45%`, currency signs,
  a trailing `\\pi`, `x = 5`. Percent: `either` (default; `45%` matches `0.45` and `45`), `scale`
  or `strip`. Units with `pint` (`0.12 m` = `12 cm`, `30°` = `0.5236 rad`); a unit on one side only
  is ignored (`12 cm` = `12`) unless `units="strict"`; units pint does not know are compared as
  normalised strings (`12 apples` != `12 pears`; all units, without pint); `units="strip"` ignores
  them. A lone ASCII letter pint does not know is a variable, not a unit (`2x` is no number).
* `math`: symbolic equivalence with HuggingFace `math-verify` (`parse` + `verify`), after a cheap
  normalised-string check. Bounded: inputs over `max_chars` or nested deeper than `max_depth` are
  rejected up front; in the main thread math-verify's own SIGALRM timeouts apply (`timeout_s` per
  parse and per comparison); in any other thread (Beam's threaded runners, Dataflow's SDK
  harness), where SIGALRM cannot be used, each comparison runs in a worker process (one per calling
  thread, started on first use in about a second, `python -c`, so the caller's `__main__` is never
  re-imported) that is killed and replaced after `3 * timeout_s + 2` s (`isolation="auto"`;
  `"process"` or `"inline"` force one; `"inline"` off the main thread has no timeout). In the main
  thread math-verify's alarm replaces any SIGALRM timer the caller had set.
* `text`: exact after normalisation (NFKC, lowercase, `\\text{}` unwrapped, punctuation, articles
  a/an/the and extra whitespace removed); the reference may list aliases separated by `|`
  (`alias_sep`, None to disable), since short-text answers rarely contain a `|`.
* `box`: grounding boxes `[x1, y1, x2, y2]`, `[[...]]`, `(x1,y1),(x2,y2)`, Qwen's `{"bbox_2d": [...]}`,
  in the same frame as the reference (GLM: integers in [0, 1000)); correct when IoU >= `iou_threshold`
  (0.5). Several reference boxes need as many predicted boxes, matched one to one greedily.
* `ocr`: character error rate (Levenshtein distance / reference length, `rapidfuzz`, or a banded
  DP, O(length * max_cer * length), when it is missing) <= `max_cer` (0.1), after NFKC and
  whitespace collapsing.

`verify(response, reference, answer_type, convention, choices=...)` is the one call a pipeline
needs; `VerifyParams` is the config section (one sub-section per answer type, `kwargs(type)`).
"""

# ruff: noqa: RUF001  (full-width punctuation, minus and multiplication signs in patterns are meant)

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import logging
import math
import os
import re
import string
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field

from .base import Params

log = logging.getLogger(__name__)

CONVENTIONS = ("glm_box", "boxed", "any")
BOX_BEGIN = "<|begin_of_box|>"
BOX_END = "<|end_of_box|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
WHOLE_TEXT_MAX_CHARS = 50


# ----------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True)
class Extraction:
    """The final answer of a response; `answer` is None when none could be extracted (see `reason`)."""

    answer: str | None
    method: str
    """glm_box, boxed, answer_line, whole, think or none."""
    reason: str
    """ok, or why there is no answer: unterminated_think, no_box, multiple_boxes, nested_box, ..."""


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


def _ok(correct: bool, detail: str | None = None, score: float | None = None) -> Check:
    return Check(
        correct,
        (1.0 if correct else 0.0) if score is None else score,
        detail or ("ok" if correct else "mismatch"),
    )


# ----------------------------------------------------------------------------------------------
# Extraction


def _after_think(text: str) -> str | None:
    """The text after the last `</think>`; None when a think block is never closed."""
    cut = text.rfind(THINK_CLOSE)
    body = text[cut + len(THINK_CLOSE) :] if cut != -1 else text
    return None if THINK_OPEN in body else body


def _glm_box(text: str) -> tuple[str | None, str]:
    if BOX_BEGIN not in text and BOX_END not in text:
        return None, "no_box"
    contents: list[str] = []
    pos = 0
    while True:
        b = text.find(BOX_BEGIN, pos)
        e = text.find(BOX_END, pos)
        if b == -1 and e == -1:
            break
        if b == -1 or (e != -1 and e < b):
            return None, "unmatched_end_box"
        start = b + len(BOX_BEGIN)
        e = text.find(BOX_END, start)
        if e == -1:
            return None, "unterminated_box"
        nb = text.find(BOX_BEGIN, start)
        if nb != -1 and nb < e:
            return None, "nested_box"
        contents.append(text[start:e])
        if len(contents) > 1:
            return None, "multiple_boxes"
        pos = e + len(BOX_END)
    answer = _unwrap_boxed(contents[0].strip())
    return (answer, "ok") if answer else (None, "empty_box")


_BRACE_OR_ESCAPE = re.compile(r"[{}\\]")
_BOXED_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BOXED_BARE = re.compile(r"[ \t]+([^\s$]+)")


def _match_brace(text: str, i: int) -> int:
    """Index of the `}` closing the `{` at `i` (`\\{`, `\\}` are escaped), or -1 if it never closes."""
    depth = 0
    pos = i
    while True:
        m = _BRACE_OR_ESCAPE.search(text, pos)
        if m is None:
            return -1
        c = m.group()
        if c == "\\":
            pos = m.end() + 1
            continue
        depth += 1 if c == "{" else -1
        if depth == 0:
            return m.start()
        pos = m.end()


def _boxed_spans(text: str) -> tuple[list[str], str]:
    """Contents of the top-level `\\boxed{}` / `\\fbox{}` in order, or the failure of the last one."""
    spans: list[str] = []
    pos = 0
    while True:
        m = _BOXED_START.search(text, pos)
        if m is None:
            return spans, "ok"
        i = m.end()
        while i < len(text) and text[i] in " \t" and i - m.end() < 8:
            i += 1
        if i < len(text) and text[i] == "{":
            j = _match_brace(text, i)
            if j == -1:
                return spans, "unbalanced_boxed"
            spans.append(text[i + 1 : j])
            pos = j + 1
            continue
        bare = _BOXED_BARE.match(text, m.end())  # "\boxed 5" (Hendrycks MATH style)
        if bare is not None:
            spans.append(bare.group(1))
            pos = bare.end()
        else:
            pos = m.end()


def _unwrap_boxed(s: str) -> str:
    """`\\boxed{x}` -> `x` when the whole string is one box (a few levels at most)."""
    for _ in range(3):
        m = _BOXED_START.match(s)
        if m is None:
            return s
        i = m.end()
        if i >= len(s) or s[i] != "{" or _match_brace(s, i) != len(s) - 1:
            return s
        s = s[i + 1 : -1].strip()
    return s


def _last_boxed(text: str) -> tuple[str | None, str]:
    spans, status = _boxed_spans(text)
    if status != "ok":
        return None, status
    if not spans:
        return None, "no_boxed"
    answer = _unwrap_boxed(spans[-1].strip())
    return (answer, "ok") if answer else (None, "empty_boxed")


_BOLD = re.compile(r"\*\*|__")
_ANSWER_LINE = re.compile(
    r"(?:\b(?:final\s+answer|answer)\s*(?:is\s*)?[:：]"
    r"|\bthe\s+(?:final\s+|correct\s+)?answer\s+(?:is|should\s+be|would\s+be|will\s+be)\b\s*[:：]?"
    r"|(?:最终)?答案\s*(?:是|为|[:：]))[ \t]*(?P<a>.*)$",
    re.IGNORECASE,
)


def _clean_answer(s: str) -> str:
    s = _BOLD.sub("", s).strip()
    if s.endswith((".", "。")):
        s = s[:-1].rstrip()
    return s


def _answer_line(text: str) -> str | None:
    """The answer of the last `Answer: ...` / `The answer is ...` line (or the line after an empty one)."""
    lines = text.splitlines()
    for n in range(len(lines) - 1, -1, -1):
        line = " ".join(_BOLD.sub("", lines[n]).split())
        matches = list(_ANSWER_LINE.finditer(line))
        if not matches:
            continue
        answer = _clean_answer(matches[-1].group("a"))
        if answer:
            return answer
        following = next((ln for ln in lines[n + 1 :] if ln.strip()), "")
        answer = _clean_answer(following)
        if answer:
            return answer
    return None


def extract_answer(text: str, convention: str = "glm_box") -> Extraction:
    """The final answer of a model response under `convention` (glm_box, boxed or any); never raises on text."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if not isinstance(text, str):
        return Extraction(None, "none", "not_text")
    body = _after_think(text)
    if body is None:
        return Extraction(None, "think", "unterminated_think")
    if not body.strip():
        return Extraction(None, "none", "empty")
    if convention in ("glm_box", "any"):
        answer, reason = _glm_box(body)
        if answer is not None:
            return Extraction(answer, "glm_box", "ok")
        if reason != "no_box" or convention == "glm_box":
            return Extraction(None, "glm_box", reason)
    answer, reason = _last_boxed(body)
    if answer is not None:
        return Extraction(answer, "boxed", "ok")
    if reason != "no_boxed":
        return Extraction(None, "boxed", reason)
    answer = _answer_line(body)
    if answer is not None:
        return Extraction(answer, "answer_line", "ok")
    if convention == "any":
        whole = _clean_answer(body.strip())
        if whole and "\n" not in whole and len(whole) <= WHOLE_TEXT_MAX_CHARS:
            return Extraction(whole, "whole", "ok")
    return Extraction(None, "none", "no_answer")


# ----------------------------------------------------------------------------------------------
# Multiple choice

_LATEX_WRAP = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|operatorname|mbox)\s*\{([^{}]*)\}")
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
    return _collapse_space(_CHOICE_CLEAN.sub("", _LATEX_WRAP.sub(r"\1", text))).strip()


def _letter(m: re.Match[str] | None, n_choices: int) -> str | None:
    if m is None:
        return None
    letter = (m.group("p") or m.group("b") or "").upper()
    return letter if letter and LETTERS.index(letter) < n_choices else None


def extract_choice(text: str, n_choices: int = len(LETTERS)) -> str | None:
    """The chosen option letter (A, B, ...) of a response or an extracted answer, or None.

    A GLM box or `\\boxed{}` is authoritative when present; otherwise the whole text as one choice
    ("B", "(B)", "B. 42", "Option B"), then the last phrase like "the answer is (B)", "Answer: B",
    "the correct option is C", "答案是C".
    """
    if not isinstance(text, str) or n_choices < 1:
        return None
    body = _after_think(text)
    if body is None:
        return None
    boxed, reason = _glm_box(body)
    if boxed is None and reason == "no_box":
        boxed, reason = _last_boxed(body)
        if reason == "no_boxed":
            reason = "no_box"
    if reason != "no_box":
        if boxed is None:
            return None
        body = boxed
    cleaned = _choice_text(body)
    letter = _letter(_CHOICE_WHOLE.fullmatch(cleaned), n_choices)
    if letter is not None:
        return letter
    last = None
    for m in _CHOICE_PHRASE.finditer(cleaned):
        last = m
    return _letter(last, n_choices)


def verify_choice(prediction: str, reference: str, *, choices: Sequence[str] | None = None) -> Check:
    """Letter or option-text equivalence; `choices` are the option texts in letter order."""
    options = [str(c) for c in choices or ()][: len(LETTERS)]
    n = len(options) or len(LETTERS)

    def by_text(s: str) -> str | None:
        if not options or len(s) > 10_000:
            return None
        norm = normalize_text(s)
        hits = [LETTERS[i] for i, o in enumerate(options) if norm and normalize_text(o) == norm]
        return hits[0] if len(hits) == 1 else None

    ref = extract_choice(str(reference), n) or by_text(str(reference))
    if ref is None:
        return _ok(False, "bad_reference")
    if not isinstance(prediction, str):
        return _ok(False, "unparseable_prediction")
    pred = extract_choice(prediction, n) or by_text(prediction)
    if pred is None:
        return _ok(False, "unparseable_prediction")
    return _ok(pred == ref)


# ----------------------------------------------------------------------------------------------
# Text


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_text(s: str) -> str:
    """NFKC, `\\text{}` unwrapped, lowercase, punctuation and English articles removed, spaces collapsed."""
    s = unicodedata.normalize("NFKC", s)
    s = _LATEX_WRAP.sub(r"\1", s).lower()
    s = "".join(" " if c in _PUNCT or unicodedata.category(c).startswith("P") else c for c in s)
    return " ".join(_ARTICLES.sub(" ", s).split())


def verify_text(prediction: str, reference: str, *, alias_sep: str | None = "|", max_chars: int = 10_000) -> Check:
    """Exact match after `normalize_text`; the reference may list aliases separated by `alias_sep`."""
    if not isinstance(reference, str) or len(reference) > max_chars:
        return _ok(False, "bad_reference")
    refs = [normalize_text(r) for r in (reference.split(alias_sep) if alias_sep else [reference])]
    refs = [r for r in refs if r]
    if not refs:
        return _ok(False, "bad_reference")
    if not isinstance(prediction, str) or len(prediction) > max_chars:
        return _ok(False, "too_long")
    pred = normalize_text(prediction)
    return _ok(bool(pred) and pred in refs)


# ----------------------------------------------------------------------------------------------
# Numbers

_SUPERSCRIPTS = str.maketrans({"²": "^2", "³": "^3", "−": "-", "–": "-", "\u00a0": " ", "\u2009": " ", "\u202f": " "})
_NUM_LATEX = [
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\\$"), ""),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree"), "°"),
    (re.compile(r"\\(?:left|right|displaystyle)(?![A-Za-z])|\\[,;:! ]|~|\$|\\[()\[\]]"), " "),
    (re.compile(r"\\(?:times|cdot)(?![A-Za-z])|×"), "×"),
]
_APPROX = re.compile(
    r"^(?:(?:approximately|approx\.?|about|around|roughly|≈|~|=)\s*|[A-Za-z]\w{0,15}\s*(?:=|≈)\s*)", re.IGNORECASE
)
_CURRENCY = re.compile(r"^(?:US\s?)?[$€£¥₹￥]\s*")
_N = r"(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER_FORMS = [
    # mixed / plain LaTeX fraction: -1\frac{1}{2}, \frac{3}{4}, \frac34
    (
        "frac",
        re.compile(
            rf"(?P<sign>[-+]?)\s*(?:(?P<whole>\d+)\s*)?\\frac\s*(?:\{{\s*(?P<n>{_N})\s*\}}\s*\{{\s*(?P<d>{_N})\s*\}}|(?P<n1>\d)(?P<d1>\d))"
        ),
    ),
    ("slash", re.compile(rf"(?P<sign>[-+]?)\s*(?:(?P<whole>\d+)\s+)?(?P<n>{_N})\s*/\s*(?P<d>{_N})")),
    (
        "sci",
        re.compile(rf"(?P<sign>[-+]?)\s*(?P<m>{_N})\s*(?:×|x|\*|·)\s*10\s*(?:\^|\*\*)\s*\{{?\s*(?P<e>[-+]?\d+)\s*\}}?"),
    ),
    ("pow10", re.compile(r"(?P<sign>[-+]?)\s*10\s*(?:\^|\*\*)\s*\{?\s*(?P<e>[-+]?\d+)\s*\}?")),
    ("plain", re.compile(rf"(?P<sign>[-+]?)\s*(?P<m>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|{_N}(?:[eE][-+]?\d+)?)")),
]
_UNIT_WORD = re.compile(r"^(?:[^\W\d_]|°)[^\d+=<>|\\,;]*$")
_UNIT_POWER = re.compile(r"(?:\^|\*\*)\s*-?\d+")
_PI = re.compile(r"^(?:\\pi|π)(?![A-Za-z])")


@dataclasses.dataclass(frozen=True)
class Quantity:
    value: float
    unit: str = ""
    percent: bool = False


def parse_quantity(text: str, max_chars: int = 200) -> Quantity | None:
    """A number with an optional unit or percent sign, from a short answer; None if it is not one."""
    if not isinstance(text, str) or len(text) > max_chars:
        return None
    s = unicodedata.normalize("NFKC", text.translate(_SUPERSCRIPTS))
    s = _LATEX_WRAP.sub(r" \1 ", s)
    for pattern, repl in _NUM_LATEX:
        s = pattern.sub(repl, s)
    s = s.strip().rstrip(".。").strip()
    s = _APPROX.sub("", s, count=1)
    s = _CURRENCY.sub("", s, count=1).strip()
    for kind, pattern in _NUMBER_FORMS:
        m = pattern.match(s)
        if m is None:
            continue
        try:
            value = _number_value(kind, m)
        except (ValueError, ZeroDivisionError, OverflowError):
            return None
        return None if value is None else _with_unit(value, s[m.end() :].strip())
    return None


def _number_value(kind: str, m: re.Match[str]) -> float | None:
    g = m.groupdict()
    sign = -1.0 if g.get("sign") == "-" else 1.0
    if kind in ("frac", "slash"):
        n = float(g.get("n") or g["n1"])
        d = float(g.get("d") or g["d1"])
        return sign * (float(g["whole"] or 0) + n / d)
    if kind == "sci":
        return sign * float(g["m"]) * 10.0 ** int(g["e"])
    if kind == "pow10":
        return sign * 10.0 ** int(g["e"])
    return sign * float(g["m"].replace(",", ""))


def _with_unit(value: float, rest: str) -> Quantity | None:
    if _PI.match(rest):
        value *= math.pi
        rest = _PI.sub("", rest).strip()
    percent = False
    low = rest.lower()
    if rest.startswith("%"):
        percent, rest = True, rest[1:].strip()
    elif low.startswith(("percent", "per cent")):
        percent, rest = True, rest[len("per cent") if low.startswith("per cent") else len("percent") :].strip()
    unit = " ".join(rest.replace("{", " ").replace("}", " ").split()).rstrip(".。").strip()
    if not math.isfinite(value):
        return None
    if unit and (len(unit) > 40 or not _UNIT_WORD.match(_UNIT_POWER.sub("", unit))):
        return None
    if unit and len(unit) == 1 and unit.isascii() and unit.isalpha() and _pint_unit(unit) is None:
        return None  # "2x": a variable, not a unit
    return Quantity(value, unit, percent)


@functools.lru_cache(maxsize=1)
def _unit_registry() -> Any:
    try:
        import pint
    except ImportError:  # units are then compared as normalised strings
        return None
    return pint.UnitRegistry()


@functools.lru_cache(maxsize=4096)
def _pint_unit(unit: str) -> Any:
    ureg = _unit_registry()
    if ureg is None:
        return None
    try:
        spelled = re.sub(r"°\s*([CF])\b", r"deg\1", unit).replace("°", "degree")
        return ureg.parse_units(spelled)
    except Exception:
        return None


def _norm_unit(unit: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", unit).lower() if c.isalnum() or c == "°")


def _converted(value: float, unit: str, to: str, mode: str) -> float | None:
    """`value unit` in `to` units, or None when they cannot be compared."""
    if mode == "strip" or (not unit and not to):
        return value
    if not unit or not to:
        return None if mode == "strict" else value
    if _norm_unit(unit) == _norm_unit(to):
        return value
    src, dst = _pint_unit(unit), _pint_unit(to)
    if src is None or dst is None:
        return None
    try:
        ureg = _unit_registry()
        return float(ureg.Quantity(value, src).to(dst).magnitude)
    except Exception:
        return None


def _close(a: float, b: float, rel_tol: float, abs_tol: float) -> bool:
    if b == 0:
        return abs(a) <= abs_tol
    return abs(a - b) <= rel_tol * abs(b)


def verify_number(
    prediction: str,
    reference: str,
    *,
    rel_tol: float = 1e-4,
    abs_tol: float = 1e-8,
    percent: Literal["either", "scale", "strip"] = "either",
    units: Literal["convert", "strip", "strict"] = "convert",
) -> Check:
    """Numeric equality within `rel_tol` of the reference (`abs_tol` when it is 0), with percent and units."""
    ref = parse_quantity(str(reference))
    if ref is None:
        return _ok(False, "bad_reference")
    pred = parse_quantity(prediction) if isinstance(prediction, str) else None
    if pred is None:
        return _ok(False, "unparseable_prediction")
    value = _converted(pred.value, pred.unit, ref.unit, units)
    if value is None:
        return _ok(False, "unit_mismatch")
    if pred.percent == ref.percent or percent == "strip":
        pairs = [(value, ref.value)]
    elif percent == "scale":
        pairs = [(value / 100 if pred.percent else value, ref.value / 100 if ref.percent else ref.value)]
    else:  # either: the percent side read as a fraction or as its bare number
        pairs = [(value / 100, ref.value) if pred.percent else (value, ref.value / 100), (value, ref.value)]
    return _ok(any(_close(a, b, rel_tol, abs_tol) for a, b in pairs))


# ----------------------------------------------------------------------------------------------
# Math (math-verify, bounded)

_SCI = re.compile(r"(?<![\w\\.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
_MATH_STRIP = re.compile(r"\s+|\$|\\[,;:! ]|\\(?:left|right|displaystyle)(?![A-Za-z])")
_DELIMS = re.compile(r"^\s*(?:\$\$?|\\\(|\\\[)\s*|\s*(?:\$\$?|\\\)|\\\])\s*$")


def _math_norm(s: str) -> str:
    s = _LATEX_WRAP.sub(r"\1", s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac"))
    return _MATH_STRIP.sub("", s).rstrip(".")


def _depth(s: str) -> int:
    depth = peak = 0
    for m in re.finditer(r"[{}()\[\]]", s):
        depth = depth + 1 if m.group() in "{([" else max(depth - 1, 0)
        peak = max(peak, depth)
    return peak


def _math_input(s: str) -> str:
    s = _DELIMS.sub("", _DELIMS.sub("", s.strip()))
    s = _SCI.sub(r"\1\\times 10^{\2}", s)
    return "\\boxed{" + s + "}"


def _math_compare(
    gold: str, pred: str, timeout_s: int | None, float_rounding: int, numeric_precision: int, strict: bool
) -> tuple[bool, str]:
    """math-verify's parse and verify; with `timeout_s` its SIGALRM timeouts apply (main thread only)."""
    from math_verify import parse
    from math_verify import verify as mv_verify
    from math_verify.errors import TimeoutException

    t = timeout_s or None
    parsed = []
    for side in (gold, pred):
        try:
            parsed.append(parse(_math_input(side), parsing_timeout=t, raise_on_error=True))
        except TimeoutException:
            return False, "timeout"
        except Exception:
            parsed.append([])
    if not parsed[0]:
        return False, "bad_reference"
    if not parsed[1]:
        return False, "unparseable_prediction"
    start = time.monotonic()
    try:
        ok = mv_verify(
            parsed[0],
            parsed[1],
            float_rounding=float_rounding,
            numeric_precision=numeric_precision,
            strict=strict,
            timeout_seconds=t,
        )
    except TimeoutException:
        return False, "timeout"
    except Exception:
        return False, "error"
    if not ok and t is not None and time.monotonic() - start >= 0.9 * t:
        return False, "timeout"
    return bool(ok), "ok" if ok else "mismatch"


def _worker_stdio() -> None:
    """A math worker process: answers `_math_compare` calls, pickled over its stdin/stdout, until EOF.

    Started as `python -c` (not multiprocessing's spawn, which re-imports the caller's `__main__`).
    Its own stdout is moved to stderr first so that nothing a library prints can corrupt the pipe.
    """
    from multiprocessing.connection import Connection

    import math_verify  # noqa: F401  (imported once, before saying ready)

    rfd, wfd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    reader, writer = Connection(rfd, writable=False), Connection(wfd, readable=False)
    writer.send("ready")
    while True:
        try:
            args = reader.recv()
        except (EOFError, OSError):
            return
        try:
            result = _math_compare(*args)
        except BaseException as e:  # a worker answers every call
            result = (False, f"error:{type(e).__name__}")
        writer.send(result)


class _MathWorker:
    """A worker process for math comparisons outside the main thread; killed when a call overruns."""

    STARTUP_S = 60.0
    COMMAND = "from mmcurate.stages.verify import _worker_stdio; _worker_stdio()"

    def __init__(self) -> None:
        from multiprocessing.connection import Connection

        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.COMMAND], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.writer = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.reader = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        try:
            ready = self.reader.poll(self.STARTUP_S) and self.reader.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.close()
            raise RuntimeError("the math-verify worker did not start (is math-verify installed?)")

    def call(self, args: tuple[Any, ...], hard_timeout_s: float) -> tuple[bool, str] | None:
        """The worker's answer, or None when it overran (it is then killed) or died."""
        try:
            self.writer.send(args)
            if self.reader.poll(hard_timeout_s):
                return self.reader.recv()
        except (EOFError, OSError):
            pass
        self.close()
        return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.writer.close()
        self.reader.close()


_local = threading.local()
_all_workers: list[_MathWorker] = []
_workers_lock = threading.Lock()


def _thread_worker() -> _MathWorker:
    worker = getattr(_local, "worker", None)
    if worker is None or not worker.alive():
        worker = _MathWorker()
        _local.worker = worker
        with _workers_lock:
            _all_workers[:] = [w for w in _all_workers if w.alive()] + [worker]
    return worker


@atexit.register
def _close_workers() -> None:
    with _workers_lock:
        for w in _all_workers:
            w.close()
        _all_workers.clear()


def verify_math(
    prediction: str,
    reference: str,
    *,
    timeout_s: int = 2,
    isolation: Literal["auto", "process", "inline"] = "auto",
    max_chars: int = 1000,
    max_depth: int = 40,
    float_rounding: int = 6,
    numeric_precision: int = 15,
    strict: bool = True,
) -> Check:
    """Symbolic equivalence with math-verify; bounded in input size, nesting and time (see module doc)."""
    if not isinstance(reference, str) or not reference.strip() or len(reference) > max_chars:
        return _ok(False, "bad_reference")
    if _depth(reference) > max_depth:
        return _ok(False, "bad_reference")
    if not isinstance(prediction, str) or not prediction.strip():
        return _ok(False, "unparseable_prediction")
    if len(prediction) > max_chars:
        return _ok(False, "too_long")
    if _depth(prediction) > max_depth:
        return _ok(False, "too_deep")
    if _math_norm(prediction) == _math_norm(reference):
        return _ok(True, "string_match")
    main = threading.current_thread() is threading.main_thread()
    use_process = isolation == "process" or (isolation == "auto" and not main)
    args = (reference, prediction, timeout_s, float_rounding, numeric_precision, strict)
    if use_process:
        try:
            worker = _thread_worker()
        except Exception as e:  # e.g. inside a daemonic process: no children allowed
            log.warning("math-verify worker unavailable (%s); comparing without a timeout", e)
        else:
            result = worker.call(args, 3 * max(timeout_s, 1) + 2)
            if result is None:
                _local.worker = None
                return _ok(False, "timeout")
            correct, detail = result
            return _ok(correct, detail)
    if not main:
        args = (reference, prediction, None, float_rounding, numeric_precision, strict)
    correct, detail = _math_compare(*args)
    return _ok(correct, detail)


# ----------------------------------------------------------------------------------------------
# Grounding boxes

_BN = r"[-+]?\d+(?:\.\d+)?"
_BOX_FORMS = re.compile(
    rf"[\[(]\s*(?P<a>{_BN})\s*,\s*(?P<b>{_BN})\s*,\s*(?P<c>{_BN})\s*,\s*(?P<d>{_BN})\s*[\])]"
    rf"|\(\s*(?P<e>{_BN})\s*,\s*(?P<f>{_BN})\s*\)\s*,?\s*(?:to\s*|-\s*)?\(\s*(?P<g>{_BN})\s*,\s*(?P<h>{_BN})\s*\)"
)
_LOOSE_NUMBER = re.compile(rf"(?<![\w.]){_BN}(?![\w.])")
MAX_BOXES = 100

Box = tuple[float, float, float, float]


def parse_boxes(text: str, max_chars: int = 100_000) -> list[Box]:
    """Boxes (x1, y1, x2, y2), corners sorted, in order of appearance; a bare list of 4 numbers is one box."""
    if not isinstance(text, str) or len(text) > max_chars:
        return []
    text = " ".join(text.split())
    boxes: list[Box] = []
    for m in _BOX_FORMS.finditer(text):
        nums = [v for v in m.groups() if v is not None]
        boxes.append(_box(*map(float, nums)))
        if len(boxes) > MAX_BOXES:
            return []
    if not boxes:
        nums = _LOOSE_NUMBER.findall(text)
        if len(nums) == 4:
            boxes.append(_box(*map(float, nums)))
    return [b for b in boxes if all(math.isfinite(v) for v in b)]


def _box(x1: float, y1: float, x2: float, y2: float) -> Box:
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when the union is empty."""
    ax1, ay1, ax2, ay2 = _box(*a)
    bx1, by1, bx2, by2 = _box(*b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if not union > 0 or not math.isfinite(union):
        return 0.0
    return max(0.0, min(1.0, inter / union))


def verify_box(
    prediction: str, reference: str, *, iou_threshold: float = 0.5, multiple: Literal["reject", "first"] = "reject"
) -> Check:
    """IoU >= threshold against the reference box; several reference boxes are matched one to one."""
    refs = parse_boxes(str(reference))
    if not refs:
        return _ok(False, "bad_reference")
    preds = parse_boxes(prediction) if isinstance(prediction, str) else []
    if not preds:
        return _ok(False, "unparseable_prediction")
    if len(refs) == 1 and len(preds) > 1:
        if multiple == "reject":
            return _ok(False, "multiple_boxes", 0.0)
        preds = preds[:1]
    if len(preds) != len(refs):
        return _ok(False, "box_count", 0.0)
    pairs = sorted(((iou(p, r), i, j) for i, p in enumerate(preds) for j, r in enumerate(refs)), reverse=True)
    used_p: set[int] = set()
    used_r: set[int] = set()
    matched: list[float] = []
    for v, i, j in pairs:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            matched.append(v)
    score = sum(matched) / len(matched)
    return _ok(min(matched) >= iou_threshold, f"iou={min(matched):.3f}", score)


# ----------------------------------------------------------------------------------------------
# OCR


def _levenshtein(a: str, b: str, cutoff: int) -> int:
    """Edit distance, or any value > cutoff once it is known to exceed it."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        pass
    else:
        return int(Levenshtein.distance(a, b, score_cutoff=cutoff))
    return _banded_levenshtein(a, b, cutoff)


def _banded_levenshtein(a: str, b: str, k: int) -> int:
    """Edit distance when it is <= k, else k + 1 (only cells within k of the diagonal are computed)."""
    n, m, big = len(a), len(b), k + 1
    if abs(n - m) > k:
        return big
    prev = [j if j <= k else big for j in range(m + 1)]
    for i in range(1, n + 1):
        lo, hi = max(1, i - k), min(m, i + k)
        cur = [big] * (m + 1)
        cur[0] = i if i <= k else big
        for j in range(lo, hi + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]), big)
        if min(cur[lo - 1 : hi + 1]) > k:
            return big
        prev = cur
    return min(prev[m], big)


def _ocr_norm(s: str, ignore_case: bool, ignore_whitespace: bool) -> str:
    s = unicodedata.normalize("NFKC", s)
    s = "".join(s.split()) if ignore_whitespace else " ".join(s.split())
    return s.lower() if ignore_case else s


def verify_ocr(
    prediction: str,
    reference: str,
    *,
    max_cer: float = 0.1,
    ignore_case: bool = False,
    ignore_whitespace: bool = False,
    max_chars: int = 50_000,
) -> Check:
    """Character error rate (edit distance / reference length) <= `max_cer`."""
    if not isinstance(reference, str) or len(reference) > max_chars:
        return _ok(False, "bad_reference")
    if not isinstance(prediction, str):
        return _ok(False, "unparseable_prediction")
    if len(prediction) > max(max_chars, 2 * len(reference) + 16):
        return _ok(False, "too_long")
    ref = _ocr_norm(reference, ignore_case, ignore_whitespace)
    pred = _ocr_norm(prediction, ignore_case, ignore_whitespace)
    if not ref:
        return _ok(not pred, "empty_reference")
    cutoff = math.floor(max_cer * len(ref))
    dist = _levenshtein(pred, ref, cutoff)
    cer = dist / len(ref)
    correct = dist <= cutoff
    return _ok(correct, f"cer={cer:.3f}" if correct else f"cer>{max_cer:g}", max(0.0, 1.0 - cer) if correct else 0.0)


# ----------------------------------------------------------------------------------------------
# Registry and the top-level call

VERIFIERS: dict[str, Callable[..., Check]] = {
    "choice": verify_choice,
    "number": verify_number,
    "math": verify_math,
    "text": verify_text,
    "box": verify_box,
    "ocr": verify_ocr,
}


def verify(
    response_text: str,
    reference: str,
    answer_type: str,
    convention: str = "glm_box",
    *,
    choices: Sequence[str] | None = None,
    **params: Any,
) -> Verdict:
    """Extract the final answer of `response_text` and check it against `reference` by `answer_type`.

    `choices` (option texts) go to the choice verifier only; `params` go to the verifier of
    `answer_type` (an unknown one raises TypeError, an unknown answer type or convention ValueError).
    """
    kind = getattr(answer_type, "value", answer_type)
    if kind not in VERIFIERS:
        raise ValueError(f"answer_type must be one of {sorted(VERIFIERS)}, got {answer_type!r}")
    ex = extract_answer(response_text, convention)
    if ex.answer is None:
        return Verdict(False, False, None, ex.reason, 0.0, ex.method)
    if kind == "choice":
        params = {"choices": choices, **params}
    check = VERIFIERS[kind](ex.answer, reference, **params)
    return Verdict(check.correct, True, ex.answer, check.detail, check.score, ex.method)


# ----------------------------------------------------------------------------------------------
# Config


class NumberParams(Params):
    rel_tol: float = 1e-4
    abs_tol: float = 1e-8
    percent: Literal["either", "scale", "strip"] = "either"
    units: Literal["convert", "strip", "strict"] = "convert"


class MathParams(Params):
    timeout_s: int = Field(2, ge=1)
    isolation: Literal["auto", "process", "inline"] = "auto"
    max_chars: int = 1000
    max_depth: int = 40
    float_rounding: int = 6
    numeric_precision: int = 15
    strict: bool = True


class TextParams(Params):
    alias_sep: str | None = "|"
    max_chars: int = 10_000


class BoxParams(Params):
    iou_threshold: float = Field(0.5, ge=0, le=1)
    multiple: Literal["reject", "first"] = "reject"


class CerParams(Params):
    max_cer: float = Field(0.1, ge=0)
    ignore_case: bool = False
    ignore_whitespace: bool = False
    max_chars: int = 50_000


class VerifyParams(Params):
    """Verifier settings for a pipeline config: one section per answer type."""

    convention: Literal["glm_box", "boxed", "any"] = "glm_box"
    number: NumberParams = Field(default_factory=NumberParams)
    math: MathParams = Field(default_factory=MathParams)
    text: TextParams = Field(default_factory=TextParams)
    box: BoxParams = Field(default_factory=BoxParams)
    ocr: CerParams = Field(default_factory=CerParams)

    def kwargs(self, answer_type: str) -> dict[str, Any]:
        """The keyword arguments of `answer_type`'s verifier."""
        kind = getattr(answer_type, "value", answer_type)
        section = getattr(self, kind, None) if kind != "choice" else None
        return section.model_dump() if isinstance(section, Params) else {}
