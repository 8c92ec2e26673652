"""The final answer of a model response (`extract_answer`), by `convention`.

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
"""

# ruff: noqa: RUF001  (full-width punctuation in patterns is meant)

from __future__ import annotations

import dataclasses
import re

CONVENTIONS = ("glm_box", "boxed", "any")
BOX_BEGIN = "<|begin_of_box|>"
BOX_END = "<|end_of_box|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
WHOLE_TEXT_MAX_CHARS = 50


@dataclasses.dataclass(frozen=True)
class Extraction:
    """The final answer of a response; `answer` is None when none could be extracted (see `reason`)."""

    answer: str | None
    method: str
    """glm_box, boxed, answer_line, whole, think or none."""
    reason: str
    """ok, or why there is no answer: unterminated_think, no_box, multiple_boxes, nested_box, ..."""


def after_think(text: str) -> str | None:
    """The text after the last `</think>`; None when a think block is never closed."""
    cut = text.rfind(THINK_CLOSE)
    body = text[cut + len(THINK_CLOSE) :] if cut != -1 else text
    return None if THINK_OPEN in body else body


def glm_box(text: str) -> tuple[str | None, str]:
    """The content of the one GLM box in `text`, or None and why (no_box, multiple_boxes, ...)."""
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


def last_boxed(text: str) -> tuple[str | None, str]:
    """The content of the last top-level `\\boxed{}`, or None and why (no_boxed, unbalanced_boxed, ...)."""
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
    body = after_think(text)
    if body is None:
        return Extraction(None, "think", "unterminated_think")
    if not body.strip():
        return Extraction(None, "none", "empty")
    if convention in ("glm_box", "any"):
        answer, reason = glm_box(body)
        if answer is not None:
            return Extraction(answer, "glm_box", "ok")
        if reason != "no_box" or convention == "glm_box":
            return Extraction(None, "glm_box", reason)
    return _extract_unboxed(body, whole=convention == "any")


def _extract_unboxed(body: str, whole: bool) -> Extraction:
    """Without a GLM box: the last `\\boxed{}`, else an answer line, else (`whole`) a short one-line text."""
    answer, reason = last_boxed(body)
    if answer is not None:
        return Extraction(answer, "boxed", "ok")
    if reason != "no_boxed":
        return Extraction(None, "boxed", reason)
    answer = _answer_line(body)
    if answer is not None:
        return Extraction(answer, "answer_line", "ok")
    if whole:
        text = _clean_answer(body.strip())
        if text and "\n" not in text and len(text) <= WHOLE_TEXT_MAX_CHARS:
            return Extraction(text, "whole", "ok")
    return Extraction(None, "none", "no_answer")
