"""Answer verification for pass-rate grading: extract a model's final answer, check it against the reference.

A pretrained VLM answers each question k times; `verify` turns one response into a `Verdict`, and
pass rate = correct / k. An answer that cannot be extracted (`Verdict.parsed` is False) is counted
apart from a wrong one, as DeepScaleR drops answers its grader cannot parse.

Extraction (`extract_answer`, `extract.py`) reads only the text after the last `</think>`, then by
`convention`: `glm_box` (default) exactly one `<|begin_of_box|>...<|end_of_box|>`; `boxed` the last
`\\boxed{}`, else an `Answer: ...` line; `any` all of these, then a short one-line text.

Verifiers (`VERIFIERS`, keyed by `schemas.question.AnswerType` values) are pure functions
`(prediction, reference, **params) -> Check`, where `Check` is truthy when correct and carries a
score (IoU for boxes, 1 - CER for OCR, else 0/1) and a short detail code. They never raise on any
text; an unusable reference gives `detail="bad_reference"` (a data error for the caller to count).
Unknown parameters raise `TypeError` (a config error).

* `choice` (`choice.py`): letters (`B`, `(B)`, `B. 42`, `Answer: B`, `the correct option is B`,
  `\\text{B}`) or, given the option texts (`choices`), the text of an option; a letter wins over text.
* `number` (`number.py`): floats with relative tolerance (absolute when the reference is 0); `1,234`,
  `1{,}234`, `3/4`, `\\frac{3}{4}`, mixed `1\\frac{1}{2}`, `2.5e3`, `2.5 \\times 10^{3}`, `45%`,
  currency signs, a trailing `\\pi`, `x = 5`. Percent: `either` (default; `45%` matches `0.45` and
  `45`), `scale` or `strip`. Units with `pint` (`0.12 m` = `12 cm`, `30°` = `0.5236 rad`); a unit on
  one side only is ignored (`12 cm` = `12`) unless `units="strict"`; units pint does not know are
  compared as normalised strings (`12 apples` != `12 pears`; all units, without pint);
  `units="strip"` ignores them. A lone ASCII letter pint does not know is a variable, not a unit
  (`2x` is no number).
* `math` (`symbolic.py`): symbolic equivalence with HuggingFace `math-verify` (`parse` + `verify`),
  after a cheap normalised-string check, bounded in input size, nesting and time, also off the main
  thread (a killable worker process per thread).
* `text` (`text.py`): exact after normalisation (NFKC, lowercase, `\\text{}` unwrapped, punctuation,
  articles a/an/the and extra whitespace removed); the reference may list aliases separated by `|`
  (`alias_sep`, None to disable), since short-text answers rarely contain a `|`.
* `box` (`box.py`): grounding boxes `[x1, y1, x2, y2]`, `[[...]]`, `(x1,y1),(x2,y2)`, Qwen's
  `{"bbox_2d": [...]}`, in the same frame as the reference (GLM: integers on the 0..1000 grid);
  correct when IoU >= `iou_threshold` (0.5). Several reference boxes need as many predicted boxes,
  matched one to one greedily. Parsing and IoU live in `stages/measure.py`.
* `ocr` (`transcript.py`): character error rate (Levenshtein distance / reference length,
  `rapidfuzz`, computed only up to the `max_cer` budget) <= `max_cer` (0.1), after NFKC and
  whitespace collapsing (`stages/measure.py`).

`verify(response, reference, answer_type, convention, choices=...)` is the one call a pipeline
needs; `VerifyParams` is the config section (one sub-section per answer type, `kwargs(type)`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field

from ..base import Params
from ..measure import MAX_BOXES, Box, iou, parse_boxes
from .box import verify_box
from .check import Check, Verdict
from .choice import LETTERS, extract_choice, verify_choice
from .extract import (
    BOX_BEGIN,
    BOX_END,
    CONVENTIONS,
    THINK_CLOSE,
    THINK_OPEN,
    WHOLE_TEXT_MAX_CHARS,
    Extraction,
    extract_answer,
)
from .number import Quantity, parse_quantity, verify_number
from .symbolic import verify_math
from .text import normalize_text, verify_text
from .transcript import verify_ocr

__all__ = [
    "BOX_BEGIN",
    "BOX_END",
    "CONVENTIONS",
    "LETTERS",
    "MAX_BOXES",
    "THINK_CLOSE",
    "THINK_OPEN",
    "VERIFIERS",
    "WHOLE_TEXT_MAX_CHARS",
    "Box",
    "BoxParams",
    "CerParams",
    "Check",
    "Extraction",
    "MathParams",
    "NumberParams",
    "Quantity",
    "TextParams",
    "Verdict",
    "VerifyParams",
    "extract_answer",
    "extract_choice",
    "iou",
    "normalize_text",
    "parse_boxes",
    "parse_quantity",
    "verify",
    "verify_box",
    "verify_choice",
    "verify_math",
    "verify_number",
    "verify_ocr",
    "verify_text",
]

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
