"""Answer extraction and verifiers: real model outputs (GLM-4.5V, Qwen2.5-VL, DeepSeek-R1 style), boundaries,
and property tests that nothing raises or hangs on arbitrary or huge text."""

# ruff: noqa: RUF001  (full-width characters and minus/multiplication signs are test inputs)

from __future__ import annotations

import importlib.util
import inspect
import socket
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mmcurate.schemas.question import AnswerType
from mmcurate.stages import verify as V
from mmcurate.stages.verify import (
    BOX_BEGIN,
    BOX_END,
    VERIFIERS,
    Check,
    Extraction,
    Verdict,
    VerifyParams,
    extract_answer,
    extract_choice,
    iou,
    normalize_text,
    parse_boxes,
    parse_quantity,
    verify,
    verify_box,
    verify_choice,
    verify_math,
    verify_number,
    verify_ocr,
    verify_text,
)
from mmcurate.stages.verify import number as verify_number_module
from mmcurate.stages.verify import symbolic as verify_math_module

# The `rl` extra: without it, only the tests that need a package are skipped.
needs_math_verify = pytest.mark.skipif(importlib.util.find_spec("math_verify") is None, reason="needs math-verify")
needs_pint = pytest.mark.skipif(importlib.util.find_spec("pint") is None, reason="needs pint")
needs_rapidfuzz = pytest.mark.skipif(importlib.util.find_spec("rapidfuzz") is None, reason="needs rapidfuzz")


def box(s: str) -> str:
    return f"{BOX_BEGIN}{s}{BOX_END}"


# ----------------------------------------------------------------------------------------------
# Extraction

GLM_OK = [
    # GLM-4.5V thinking mode, <answer> wrapper
    (
        "<think>The triangle has legs 3 and 4, so by Pythagoras the hypotenuse is 5.</think>"
        f"<answer>The hypotenuse is {box('5')}.</answer>",
        "5",
    ),
    # /nothink: an empty think block
    (f"<think></think>\n{box('B')}", "B"),
    # Chinese around the box
    (f"<think>图中共有三个苹果和两个橙子。</think>图中水果总数为{box('5')}个。", "5"),
    (f"所以答案是 {box('12')}。", "12"),
    # LaTeX inside the box
    ("<think>…</think>The ratio is " + box(r"\dfrac{3}{4}"), r"\dfrac{3}{4}"),
    (f"{box(' $x^{2}+1$ ')}", "$x^{2}+1$"),
    # grounding
    (f"<think>The dog is on the left.</think>{box('[[120, 45, 380, 290]]')}", "[[120, 45, 380, 290]]"),
    # the last </think> counts; a box inside the thinking is ignored
    (f"<think>maybe {box('3')}</think><think>no, 4</think>{box('4')}", "4"),
    # DeepSeek-R1 style: the template opened <think>, the response only closes it
    (f"Let me count the chairs... there are 7.\n</think>\n\n{box('7')}", "7"),
    # a legacy \boxed inside the GLM box is unwrapped
    (box(r"\boxed{42}"), "42"),
    # multi-line answer in the box
    (box("line one\nline two"), "line one\nline two"),
]


@pytest.mark.parametrize(("text", "answer"), GLM_OK)
def test_glm_box_extracts(text: str, answer: str) -> None:
    ex = extract_answer(text, "glm_box")
    assert ex == Extraction(answer, "glm_box", "ok")
    assert extract_answer(text, "any").answer == answer


GLM_BAD = [
    ("The answer is $\\boxed{5}$.", "no_box"),
    ("The answer is 5.", "no_box"),
    (f"{box('5')} or maybe {box('6')}", "multiple_boxes"),
    (f"{box('5')}{box('5')}", "multiple_boxes"),
    (f"{BOX_BEGIN}5{BOX_BEGIN}6{BOX_END}{BOX_END}", "nested_box"),
    (f"The answer is {BOX_BEGIN}5", "unterminated_box"),
    (f"The answer is 5{BOX_END}", "unmatched_end_box"),
    (f"{BOX_END}{box('5')}", "unmatched_end_box"),
    (box("   "), "empty_box"),
    (f"<think>the answer is {box('5')}</think>I am not sure.", "no_box"),
]


@pytest.mark.parametrize(("text", "reason"), GLM_BAD)
def test_glm_box_failures(text: str, reason: str) -> None:
    ex = extract_answer(text, "glm_box")
    assert ex.answer is None
    assert ex.reason == reason


@pytest.mark.parametrize(
    "text",
    [
        "<think>Let me think about this step by step. The area is",
        f"<think>first</think> answer {box('5')} <think>wait",
        "<think>a</think><think>b",
    ],
)
@pytest.mark.parametrize("convention", ["glm_box", "boxed", "any"])
def test_unterminated_think_is_unparseable(text: str, convention: str) -> None:
    assert extract_answer(text, convention) == Extraction(None, "think", "unterminated_think")


def test_malformed_boxes_stay_unparseable_under_any() -> None:
    assert extract_answer(f"{box('1')}{box('2')} \\boxed{{3}}", "any").reason == "multiple_boxes"
    assert extract_answer(f"{BOX_BEGIN}1 \\boxed{{3}}", "any").reason == "unterminated_box"
    # zero boxes falls through to \boxed under `any`, never under glm_box
    assert extract_answer("\\boxed{3}", "any") == Extraction("3", "boxed", "ok")
    assert extract_answer("\\boxed{3}", "glm_box").reason == "no_box"


BOXED_OK = [
    ("The answer is $\\boxed{5}$.", "5"),
    ("Therefore, $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
    ("\\[\\boxed{x^{2}+2x+1}\\]", "x^{2}+2x+1"),
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4"),
    ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\dfrac{\\sqrt{3}}{2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\boxed{\\left(\\frac{1}{2}, 3\\right]}", "\\left(\\frac{1}{2}, 3\\right]"),
    ("\\fbox{7}", "7"),
    ("\\boxed {12}", "12"),
    ("The answer is $\\boxed 5$.", "5"),
    ("\\boxed{\\boxed{9}}", "9"),
    ("\\boxed{\\text{(B) } 42}", "\\text{(B) } 42"),
    ("The probability is \\(\\boxed{\\frac{1}{6}}\\).", "\\frac{1}{6}"),
    ("因此，答案为 $\\boxed{30^\\circ}$。", "30^\\circ"),
    ("Okay, so I need to find the area.\n</think>\n\nThe area is $\\boxed{12\\text{ cm}^2}$.", "12\\text{ cm}^2"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
]


@pytest.mark.parametrize(("text", "answer"), BOXED_OK)
def test_boxed_extracts(text: str, answer: str) -> None:
    assert extract_answer(text, "boxed") == Extraction(answer, "boxed", "ok")
    assert extract_answer(text, "any") == Extraction(answer, "boxed", "ok")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("The answer is \\boxed{\\frac{1}{2}", "unbalanced_boxed"),
        ("\\boxed{3} and finally \\boxed{4", "unbalanced_boxed"),
        ("\\boxed{}", "empty_boxed"),
        ("\\boxed{  }", "empty_boxed"),
        ("\\boxed{\\}", "unbalanced_boxed"),
        ("No box and no answer line here.\nJust reasoning.", "no_answer"),
    ],
)
def test_boxed_failures(text: str, reason: str) -> None:
    ex = extract_answer(text, "boxed")
    assert ex.answer is None and ex.reason == reason


ANSWER_LINES = [
    ("Let me compute. 6 x 7 = 42.\nAnswer: 42", "42"),
    ("**Final Answer:** 42.", "42"),
    ("**Final Answer**: $\\frac{3}{4}$", "$\\frac{3}{4}$"),
    ("The answer is 3.5.", "3.5"),
    ("So the answer is (B).", "(B)"),
    ("Answer: 12\nWait, let me double check.\nFinal answer: 13", "13"),
    ("## Final Answer\n\nFinal Answer:\n\n**17**", "17"),
    ("The correct answer is: Paris", "Paris"),
    ("因此，答案是 5。", "5"),
    ("最终答案：北京", "北京"),
    ("- answer:   a red   car", "a red car"),
]


@pytest.mark.parametrize(("text", "answer"), ANSWER_LINES)
def test_answer_lines(text: str, answer: str) -> None:
    assert extract_answer(text, "boxed") == Extraction(answer, "answer_line", "ok")
    assert extract_answer(text, "any") == Extraction(answer, "answer_line", "ok")
    assert extract_answer(text, "glm_box").reason == "no_box"


@pytest.mark.parametrize(
    ("text", "answer"),
    [("B", "B"), ("  42  ", "42"), ("**Paris**", "Paris"), ("The cat.", "The cat"), ("<think>x</think>7", "7")],
)
def test_any_whole_text_for_short_answers(text: str, answer: str) -> None:
    assert extract_answer(text, "any") == Extraction(answer, "whole", "ok")
    assert extract_answer(text, "boxed").answer is None


@pytest.mark.parametrize("text", ["x" * 51, "two\nlines", "", "   ", "<think>only thinking</think>"])
def test_any_whole_text_limits(text: str) -> None:
    assert extract_answer(text, "any").answer is None


def test_bad_convention_and_non_text() -> None:
    with pytest.raises(ValueError, match="convention"):
        extract_answer("5", "latex")
    assert extract_answer(None, "any").reason == "not_text"  # type: ignore[arg-type]


def test_deep_nesting_never_crashes() -> None:
    for text in (
        "\\boxed{" * 5000,
        "\\boxed{" * 5000 + "1" + "}" * 5000,
        "{" * 100_000,
        BOX_BEGIN * 5000,
        "<think>" * 5000 + "</think>" * 5000,
    ):
        for convention in ("glm_box", "boxed", "any"):
            extract_answer(text, convention)
        extract_choice(text, 4)
    assert extract_answer("\\boxed{" * 5000, "boxed").reason == "unbalanced_boxed"
    balanced = extract_answer("\\boxed{" * 5000 + "1" + "}" * 5000, "boxed")
    assert balanced.answer is not None and balanced.answer.endswith("\\boxed{1" + "}" * 4996)


# ----------------------------------------------------------------------------------------------
# Multiple choice

CHOICE_OK = [
    ("B", "B"),
    ("b", "B"),
    ("(B)", "B"),
    ("(b)", "B"),
    ("[C]", "C"),
    ("B.", "B"),
    ("B)", "B"),
    ("B. 42", "B"),
    ("B: 42 apples", "B"),
    ("(B) 42", "B"),
    ("**C**", "C"),
    ("$\\text{D}$", "D"),
    ("\\textbf{(A)}", "A"),
    ("Option B", "B"),
    ("Answer: B", "B"),
    ("The answer is (B).", "B"),
    ("I think the answer is A because the sky is blue.", "A"),
    ("After comparing all options, the correct option is C", "C"),
    ("Option C is correct.", "C"),
    ("So I'd choose D.", "D"),
    ("答案是C", "C"),
    ("答案：(B)", "B"),
    ("Looking at the chart, A is 10 and B is 20.\nAnswer: B", "B"),
    (f"<think>A? no, C.</think>{box('C')}", "C"),
    ("\\boxed{D}", "D"),
    (box("B. 42"), "B"),
    ("<think>Answer: A</think>The answer is D.", "D"),
]


@pytest.mark.parametrize(("text", "letter"), CHOICE_OK)
def test_extract_choice(text: str, letter: str) -> None:
    assert extract_choice(text, 4) == letter


@pytest.mark.parametrize(
    "text",
    [
        "A cat sits on the mat.",
        "answers",
        "The options are A, B and C.",
        "I cannot determine the answer.",
        "E",  # beyond 4 choices
        "Answer: E",
        "42",
        "",
        box("42"),  # a box is authoritative: no falling back to the text around it
        f"Answer: B {box('42')}",
        "<think>the answer is B",
        "BC",
        "B and C",
    ],
)
def test_extract_choice_none(text: str) -> None:
    assert extract_choice(text, 4) is None


def test_extract_choice_letter_range() -> None:
    assert extract_choice("E", 5) == "E"
    assert extract_choice("E", 4) is None
    assert extract_choice("Z") == "Z"
    assert extract_choice("A", 0) is None


OPTIONS = ["12", "42", "Paris", "the red car"]


@pytest.mark.parametrize(
    ("prediction", "reference", "correct"),
    [
        ("B", "B", True),
        ("(B)", "B", True),
        ("b", "B", True),
        ("B. 42", "B", True),
        ("42", "B", True),  # option text
        ("paris", "C", True),
        ("Paris.", "C", True),
        ("Red car", "D", True),  # articles and case
        ("C", "(C)", True),
        ("B", "42", True),  # reference given as option text
        ("A", "B", False),
        ("12", "B", False),
        ("B. 12", "B", True),  # the letter wins over text
        ("D. 42", "B", False),
        ("London", "C", False),
        ("E", "B", False),  # beyond the options
    ],
)
def test_verify_choice(prediction: str, reference: str, correct: bool) -> None:
    assert bool(verify_choice(prediction, reference, choices=OPTIONS)) is correct


def test_verify_choice_details() -> None:
    assert verify_choice("B", "not an option", choices=OPTIONS).detail == "bad_reference"
    assert verify_choice("London", "C", choices=OPTIONS).detail == "unparseable_prediction"
    assert verify_choice("B", "B").correct  # no option texts: letters only
    assert verify_choice("42", "B").detail == "unparseable_prediction"
    assert not verify_choice("same", "A", choices=["same", "same"])  # ambiguous text matches nothing


# ----------------------------------------------------------------------------------------------
# Numbers

NUMBER_OK = [
    ("42", "42"),
    ("42.0", "42"),
    ("+42", "42"),
    ("−3", "-3"),
    ("1,234", "1234"),
    ("1,234,567.89", "1234567.89"),
    ("1{,}234", "1234"),
    ("$1,234$", "1234"),
    ("3/4", "0.75"),
    ("\\frac{3}{4}", "0.75"),
    ("\\dfrac{3}{4}", "3/4"),
    ("\\frac34", "0.75"),
    ("-\\frac{1}{2}", "-0.5"),
    ("1\\frac{1}{2}", "1.5"),
    ("1 1/2", "1.5"),
    ("2.5e3", "2500"),
    ("2.5E-3", "0.0025"),
    ("2.5 \\times 10^{3}", "2500"),
    ("2.5×10^-3", "0.0025"),
    ("10^{6}", "1000000"),
    ("0.333333", "1/3"),  # relative 1e-4
    ("3.14159", "3.1416"),
    ("0", "0"),
    ("0.000000001", "0"),  # absolute tolerance at zero
    ("45%", "0.45"),
    ("45\\%", "45"),
    ("45 percent", "0.45"),
    ("0.45", "45%"),
    ("45", "45%"),
    ("45%", "45%"),
    ("12 cm", "12"),
    ("12", "12 cm"),
    ("12\\text{ cm}", "12 cm"),
    ("$12\\,\\mathrm{cm}$", "12 cm"),
    ("30°", "30"),
    ("30^\\circ", "30°"),
    ("12 cm²", "12 cm^2"),
    ("5个", "5"),
    ("12 people", "12"),
    ("12 apples", "12 apples"),
    ("$12.50", "12.5"),
    ("€ 12.50", "12.5"),
    ("x = 5", "5"),
    ("≈ 3.14", "3.14"),
    ("approximately 7", "7"),
    ("5.", "5"),
    ("2\\pi", "6.28319"),
    ("４５", "45"),
    ("1e-7", "0.0000001"),
]


@pytest.mark.parametrize(("prediction", "reference"), NUMBER_OK)
def test_number_matches(prediction: str, reference: str) -> None:
    assert verify_number(prediction, reference), (prediction, reference)


@needs_pint
@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("0.12 m", "12 cm"),
        ("1.2 km", "1200 m"),
        ("500 cm/s^2", "5 m/s^2"),
        ("30^{\\circ}", "30 degrees"),
        ("30°", "0.5236 rad"),
        ("100 °F", "37.7778 °C"),
        ("1 ft", "12 in"),
        ("3600 s", "1 hour"),
    ],
)
def test_number_unit_conversion(prediction: str, reference: str) -> None:
    assert verify_number(prediction, reference), (prediction, reference)
    assert verify_number(prediction, reference, units="strict"), (prediction, reference)
    assert not verify_number("2" + prediction.lstrip("0123456789."), reference)


NUMBER_WRONG = [
    ("41", "42"),
    ("42.01", "42"),
    ("0.33", "1/3"),
    ("0.0001", "0"),
    ("-42", "42"),
    ("12 m", "12 cm"),
    ("12 kg", "12 cm"),
    ("12 apples", "12 pears"),
    ("0.45%", "45%"),
    ("4.5%", "0.45"),
    ("1,2", "1.2"),
    ("2x", "2"),
    ("x^2+1", "1"),
    ("42 or 43", "42"),
    ("forty-two", "42"),
    ("", "42"),
    ("1e400", "1"),
    ("10^{400}", "1"),
    ("1/0", "1"),
]


@pytest.mark.parametrize(("prediction", "reference"), NUMBER_WRONG)
def test_number_mismatches(prediction: str, reference: str) -> None:
    assert not verify_number(prediction, reference), (prediction, reference)


def test_number_options() -> None:
    assert not verify_number("45%", "0.45", percent="strip")
    assert verify_number("45%", "45", percent="strip")
    assert verify_number("45%", "0.45", percent="scale")
    assert not verify_number("45%", "45", percent="scale")
    assert not verify_number("12 cm", "12", units="strict")
    assert verify_number("12 cm", "12 cm", units="strict")
    assert verify_number("12 m", "12 cm", units="strip")
    assert verify_number("42.01", "42", rel_tol=1e-3)
    assert verify_number("0.001", "0", abs_tol=0.01)
    assert verify_number("x", "42").detail == "unparseable_prediction"
    assert verify_number("42", "many").detail == "bad_reference"
    assert verify_number("12 kg", "12 cm").detail == "unit_mismatch"


def test_number_without_pint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pint, units are compared as normalised strings (a unit on one side only is still ignored)."""
    monkeypatch.setattr(verify_number_module, "_unit_registry", lambda: None)
    verify_number_module._pint_unit.cache_clear()
    try:
        assert verify_number("12 cm", "12 cm")
        assert verify_number("12 Cm.", "12 cm")
        assert verify_number("12 cm", "12")
        assert verify_number("0.12 km", "120 cm").detail == "unit_mismatch"
        assert verify_number("2x", "2").detail == "unparseable_prediction"
    finally:
        verify_number_module._pint_unit.cache_clear()


def test_parse_quantity() -> None:
    assert parse_quantity("12 cm") == V.Quantity(12.0, "cm")
    assert parse_quantity("45\\%") == V.Quantity(45.0, "", True)
    assert parse_quantity("1,234.5 km/h") == V.Quantity(1234.5, "km/h")
    assert parse_quantity("a lot") is None
    assert parse_quantity("1" * 1000) is None


# ----------------------------------------------------------------------------------------------
# Math (math-verify)

MATH_OK = [
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\frac{1}{2}"),
    ("\\dfrac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}"),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
    ("\\sqrt{12}", "2\\sqrt{3}"),
    ("(x+1)^2", "x^2+2x+1"),
    ("b^2+a^2", "a^2+b^2"),
    ("2\\pi", "6.283185307"),
    ("\\frac{\\pi}{6}", "\\pi/6"),
    ("30^\\circ", "30"),
    ("10\\%", "0.1"),
    ("x=3", "3"),
    ("3", "x = 3"),
    ("y = 1 + 2x", "y=2x+1"),
    ("\\{2, 1\\}", "\\{1,2\\}"),
    ("2, 1", "1, 2"),
    ("[1, 2)", "[1,2)"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("2.5e3", "2500"),
    ("1{,}000", "1000"),
    ("$\\frac{1}{3}$", "\\frac13"),
    ("\\text{east}", "east"),
    ("\\left( \\frac{1}{2}, 3 \\right)", "(\\frac{1}{2}, 3)"),
]


@needs_math_verify
@pytest.mark.parametrize(("prediction", "reference"), MATH_OK)
def test_math_equivalent(prediction: str, reference: str) -> None:
    assert verify_math(prediction, reference), (prediction, reference)


MATH_WRONG = [
    ("5", "6"),
    ("\\frac{1}{3}", "0.33"),
    ("1.414", "\\sqrt{2}"),
    ("(x-1)^2", "x^2+2x+1"),
    ("(1, 2)", "[1, 2]"),
    ("\\frac{\\pi}{6}", "30^\\circ"),
    ("-\\frac{1}{2}", "\\frac{1}{2}"),
    ("x^2", "x^3"),
    ("\\{1, 2, 3\\}", "\\{1, 2\\}"),
]


@needs_math_verify
@pytest.mark.parametrize(("prediction", "reference"), MATH_WRONG)
def test_math_not_equivalent(prediction: str, reference: str) -> None:
    assert not verify_math(prediction, reference), (prediction, reference)


def test_math_guards() -> None:
    assert verify_math("1" * 2000, "1").detail == "too_long"
    assert verify_math("(" * 100 + "1" + ")" * 100, "1").detail == "too_deep"
    assert verify_math("", "1").detail == "unparseable_prediction"
    assert verify_math("1", "").detail == "bad_reference"
    assert verify_math("0.5", "\\frac{1}{2}", max_chars=5).detail == "bad_reference"


@needs_math_verify
@pytest.mark.parametrize("expr", ["2^{2^{2^{2^{100}}}}", "(10^{10})!"])
def test_math_pathological_input_times_out_in_main_thread(expr: str) -> None:
    start = time.monotonic()
    check = verify_math(expr, "1", timeout_s=1)
    assert not check.correct
    assert check.detail == "timeout"
    assert time.monotonic() - start < 5


@needs_math_verify
def test_math_outside_main_thread_uses_a_killable_worker() -> None:
    """SIGALRM cannot be used in Beam's worker threads: there a worker process bounds the time."""
    results: dict[str, Check] = {}

    def run() -> None:
        results["ok"] = verify_math("\\frac{1}{2}", "0.5", timeout_s=1)
        start = time.monotonic()
        results["slow"] = verify_math("2^{2^{2^{2^{100}}}}", "1", timeout_s=1)
        results["elapsed"] = time.monotonic() - start  # type: ignore[assignment]
        results["after"] = verify_math("x^2+2x+1", "(x+1)^2", timeout_s=1)

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert results["ok"].correct and results["after"].correct
    assert results["slow"] == Check(False, 0.0, "timeout")
    assert results["elapsed"] < 10  # type: ignore[operator]


@needs_math_verify
def test_math_worker_is_killed_when_it_overruns() -> None:
    worker = verify_math_module._MathWorker()
    try:
        assert worker.call(("x^2+2x+1", "(x+1)^2", 2, 6, 15, True), 30) == (True, "ok")
        assert worker.call(("1", "2^{2^{2^{2^{100}}}}", 30, 6, 15, True), 0.5) is None
        assert not worker.alive()
    finally:
        worker.close()


@needs_math_verify
def test_math_verify_works_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert verify_math("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", isolation="inline")
    assert not verify_math("\\frac{\\sqrt{3}}{3}", "\\sqrt{3}/2", isolation="inline")


@needs_math_verify
def test_math_verify_api() -> None:
    """The installed math-verify: `parse` returns [sympy, str]; `verify(gold, target)` is not symmetric."""
    from math_verify import parse
    from math_verify import verify as mv_verify

    gold, pred = parse("$\\frac{1}{2}$"), parse("The answer is $0.5$")
    assert len(gold) == 2 and str(gold[1]) == "\\frac{1}{2}"
    assert mv_verify(gold, pred)
    assert "timeout_seconds" in inspect.signature(mv_verify).parameters
    assert "parsing_timeout" in inspect.signature(parse).parameters


# ----------------------------------------------------------------------------------------------
# Text

TEXT_OK = [
    ("Paris", "paris"),
    ("Paris.", "Paris"),
    ("**Paris**", "Paris"),
    ("The Eiffel Tower", "eiffel tower"),
    ("a red car", "Red car"),
    ("  New   York ", "new york"),
    ("\\text{north}", "North"),
    ("NYC", "New York|NYC|New York City"),
    ("New York", "New York | NYC"),
    ("北京。", "北京"),
    ("ＡＢＣ", "abc"),  # NFKC full-width
    ("rock-and-roll", "rock and roll"),
    ("Yes", "yes"),
]


@pytest.mark.parametrize(("prediction", "reference"), TEXT_OK)
def test_text_matches(prediction: str, reference: str) -> None:
    assert verify_text(prediction, reference)


TEXT_WRONG = [
    ("London", "Paris"),
    ("Paris, France", "Paris"),
    ("The city is Paris", "Paris"),
    ("yes", "no"),
    ("", "Paris"),
    ("the", "the"),  # nothing left after normalisation
    ("上海", "北京"),
]


@pytest.mark.parametrize(("prediction", "reference"), TEXT_WRONG)
def test_text_mismatches(prediction: str, reference: str) -> None:
    assert not verify_text(prediction, reference)


def test_text_aliases_can_be_disabled() -> None:
    assert not verify_text("NYC", "New York|NYC", alias_sep=None)
    assert verify_text("New York|NYC", "New York|NYC", alias_sep=None)
    assert verify_text("x", "|||").detail == "bad_reference"
    assert normalize_text("The  Quick, Brown fox!") == "quick brown fox"


# ----------------------------------------------------------------------------------------------
# Grounding boxes


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((10, 10, 0, 0), (0, 0, 10, 10)) == 1.0  # corners in any order
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # degenerate


@pytest.mark.parametrize(
    ("text", "boxes"),
    [
        ("[120, 45, 380, 290]", [(120, 45, 380, 290)]),
        ("[[120,45,380,290]]", [(120, 45, 380, 290)]),
        ("(120,45),(380,290)", [(120, 45, 380, 290)]),
        ("<|box_start|>(120,45),(380,290)<|box_end|>", [(120, 45, 380, 290)]),
        ('```json\n[{"bbox_2d": [120, 45, 380, 290], "label": "dog"}]\n```', [(120, 45, 380, 290)]),
        ("The dog is at [380, 290, 120, 45].", [(120, 45, 380, 290)]),
        ("[[1, 2, 3, 4], [5, 6, 7, 8]]", [(1, 2, 3, 4), (5, 6, 7, 8)]),
        ("x1=120, y1=45, x2=380, y2=290", [(120, 45, 380, 290)]),
        ("[0.1, 0.2, 0.5, 0.6]", [(0.1, 0.2, 0.5, 0.6)]),
        ("no box here", []),
        ("[1, 2, 3]", []),
    ],
)
def test_parse_boxes(text: str, boxes: list[tuple[float, ...]]) -> None:
    assert parse_boxes(text) == boxes


@pytest.mark.parametrize(
    ("prediction", "reference", "correct"),
    [
        ("[[120, 45, 380, 290]]", "[120, 45, 380, 290]", True),
        ("[125, 50, 375, 285]", "[120, 45, 380, 290]", True),
        ("(120,45),(380,290)", "[120, 45, 380, 290]", True),
        ("[0, 0, 100, 100]", "[50, 0, 150, 100]", False),  # IoU 1/3
        ("[0, 0, 100, 100]", "[0, 0, 100, 200]", True),  # IoU exactly 0.5
        ("[0, 0, 100, 99]", "[0, 0, 100, 200]", False),
        ("[[1, 2, 3, 4], [120, 45, 380, 290]]", "[120, 45, 380, 290]", False),  # several boxes: rejected
        ("[[0,0,10,10],[20,20,30,30]]", "[[20,20,30,30],[0,0,10,10]]", True),  # matched one to one
        ("[[0,0,10,10]]", "[[20,20,30,30],[0,0,10,10]]", False),
        ("the dog", "[120, 45, 380, 290]", False),
    ],
)
def test_verify_box(prediction: str, reference: str, correct: bool) -> None:
    assert bool(verify_box(prediction, reference)) is correct


def test_verify_box_options_and_scores() -> None:
    check = verify_box("[0, 0, 100, 100]", "[50, 0, 150, 100]")
    assert check.score == pytest.approx(1 / 3) and check.detail == "iou=0.333"
    assert verify_box("[0, 0, 100, 100]", "[50, 0, 150, 100]", iou_threshold=0.3)
    assert verify_box("[[0, 0, 10, 10], [5, 5, 9, 9]]", "[0, 0, 10, 10]", multiple="first")
    assert verify_box("[0, 0, 10, 10]", "none").detail == "bad_reference"
    assert verify_box("none", "[0, 0, 10, 10]").detail == "unparseable_prediction"


# ----------------------------------------------------------------------------------------------
# OCR


@pytest.mark.parametrize(
    ("prediction", "reference", "correct"),
    [
        ("STOP", "STOP", True),
        ("Hello World", "Hello  World ", True),  # whitespace collapsed
        ("The quick brown fox jumps", "The quick brown fox jumps", True),
        ("The quick brown f0x jumps", "The quick brown fox jumps", True),  # 1/25 = 0.04
        ("The quack brawn fix jumps", "The quick brown fox jumps", False),  # 3/25 = 0.12
        ("stop", "STOP", False),
        ("ＳＴＯＰ", "STOP", True),  # NFKC
        ("北京欢迎你", "北京欢迎您", False),  # 1/5 = 0.2
        ("", "STOP", False),
        ("", "", True),
        ("x", "", False),
    ],
)
@needs_rapidfuzz
def test_verify_ocr(prediction: str, reference: str, correct: bool) -> None:
    assert bool(verify_ocr(prediction, reference)) is correct


@needs_rapidfuzz
def test_verify_ocr_options() -> None:
    assert verify_ocr("stop", "STOP", ignore_case=True)
    assert verify_ocr("HelloWorld", "Hello World", ignore_whitespace=True)
    assert verify_ocr("The quack brawn fix jumps", "The quick brown fox jumps", max_cer=0.2)
    check = verify_ocr("The quick brown f0x jumps", "The quick brown fox jumps")
    assert check.detail == "cer=0.040" and check.score == pytest.approx(0.96)


@needs_rapidfuzz
def test_ocr_hopeless_long_pairs_are_cheap() -> None:
    start = time.monotonic()
    assert not verify_ocr("a" * 5000, "b" * 5000)  # the distance stops at the max_cer * length budget
    assert not verify_ocr("a" * 50_000, "b" * 50_000)
    assert time.monotonic() - start < 5


def test_ocr_without_rapidfuzz_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rapidfuzz.distance", None)  # `from rapidfuzz.distance import ...` fails
    with pytest.raises(ImportError, match="rapidfuzz"):
        verify_ocr("The quick brown f0x jumps", "The quick brown fox jumps")
    assert verify_ocr("x", "").detail == "empty_reference"  # no distance needed


# ----------------------------------------------------------------------------------------------
# The top-level call, on whole responses


RESPONSES = [
    # (response, reference, answer_type, convention, correct, parsed)
    (f"<think>3 apples and 2 oranges.</think>There are {box('5')} fruits.", "5", "number", "glm_box", True, True),
    (f"<think>…</think>图中共有{box('5个')}水果。", "5", "number", "glm_box", True, True),
    pytest.param(f"<think>…</think>{box('1,250 m')}", "1.25 km", "number", "glm_box", True, True, marks=needs_pint),
    (f"<think>…</think>{box('45%')}", "0.45", "number", "glm_box", True, True),
    ("The answer is $\\boxed{5}$.", "5", "number", "glm_box", False, False),  # GLM rejects legacy boxes
    ("The answer is $\\boxed{5}$.", "5", "number", "any", True, True),
    pytest.param(
        "Okay, let me see.\n</think>\n\nThe probability is $\\boxed{\\dfrac{1}{6}}$.",
        "1/6",
        "math",
        "boxed",
        True,
        True,
        marks=needs_math_verify,
    ),
    pytest.param("So $\\boxed{2\\sqrt{3}}$", "\\sqrt{12}", "math", "boxed", True, True, marks=needs_math_verify),
    pytest.param("So $\\boxed{2\\sqrt{3}}$", "\\sqrt{13}", "math", "boxed", False, True, marks=needs_math_verify),
    ("So $\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt{3}}{2}", "math", "boxed", True, True),
    (f"<think>Option B says 42.</think>{box('B')}", "B", "choice", "glm_box", True, True),
    (f"{box('(C) Paris')}", "C", "choice", "glm_box", True, True),
    ("The correct option is C.", "C", "choice", "any", True, True),
    ("**Answer:** (B) 42", "B", "choice", "boxed", True, True),
    ("<think>The chart peaks in", "B", "choice", "glm_box", False, False),
    (f"{box('Paris')}", "Paris|Paris, France", "text", "glm_box", True, True),
    (f"{box('London')}", "Paris", "text", "glm_box", False, True),
    (f"{box('[[120, 45, 380, 290]]')}", "[[118, 40, 382, 300]]", "box", "glm_box", True, True),
    ('```json\n[{"bbox_2d": [10, 10, 50, 50], "label": "cat"}]\n```', "[10,10,50,50]", "box", "any", False, False),
    ("Answer: [10, 10, 50, 50]", "[10,10,50,50]", "box", "any", True, True),
    pytest.param(f"{box('Hello World')}", "Hello World", "ocr", "glm_box", True, True, marks=needs_rapidfuzz),
    (f"{box('2')}{box('3')}", "3", "number", "glm_box", False, False),
]


@pytest.mark.parametrize(("response", "reference", "answer_type", "convention", "correct", "parsed"), RESPONSES)
def test_verify_responses(
    response: str, reference: str, answer_type: str, convention: str, correct: bool, parsed: bool
) -> None:
    verdict = verify(response, reference, answer_type, convention, choices=["12", "42", "Paris", "Rome"])
    assert (verdict.correct, verdict.parsed) == (correct, parsed), verdict
    assert (verdict.extracted is not None) is parsed


def test_verify_verdict_fields() -> None:
    v = verify(f"<think>x</think>{box('[0, 0, 100, 100]')}", "[50, 0, 150, 100]", AnswerType.BOX)
    assert v == Verdict(False, True, "[0, 0, 100, 100]", "iou=0.333", pytest.approx(1 / 3), "glm_box")
    v = verify("no box", "5", "number")
    assert v == Verdict(False, False, None, "no_box", 0.0, "glm_box")


def test_verify_config_errors() -> None:
    with pytest.raises(ValueError, match="answer_type"):
        verify(box("5"), "5", "date")
    with pytest.raises(TypeError):
        verify(box("5"), "5", "number", iou_threshold=0.5)
    with pytest.raises(ValueError, match="convention"):
        verify(box("5"), "5", "number", "latex")
    # the pass-rate pipeline passes choices for every type: only the choice verifier gets them
    assert verify(box("5"), "5", "number", choices=[]).correct


def test_verifiers_cover_answer_types() -> None:
    assert set(VERIFIERS) == {t.value for t in AnswerType}


def test_verify_params() -> None:
    params = VerifyParams()
    for kind in VERIFIERS:
        kwargs = params.kwargs(kind)
        assert set(kwargs) <= set(inspect.signature(VERIFIERS[kind]).parameters)
        VERIFIERS[kind]("1", "1", **kwargs)
    assert params.kwargs("number")["rel_tol"] == 1e-4
    assert params.kwargs(AnswerType.CHOICE) == {}
    custom = VerifyParams.model_validate({"box": {"iou_threshold": 0.7}, "convention": "any"})
    assert custom.kwargs("box") == {"iou_threshold": 0.7, "multiple": "reject"}
    with pytest.raises(ValidationError):
        VerifyParams.model_validate({"box": {"iou": 0.7}})
    with pytest.raises(ValidationError):
        VerifyParams.model_validate({"convention": "latex"})


# ----------------------------------------------------------------------------------------------
# Properties: nothing raises, nothing hangs, box contents round-trip

CONVENTIONS = st.sampled_from(["glm_box", "boxed", "any"])
MARKUP = st.sampled_from(
    [BOX_BEGIN, BOX_END, "<think>", "</think>", "\\boxed{", "\\fbox{", "{", "}", "\\", "$", "Answer:", "(B)", "\n"]
)
NASTY = st.lists(st.one_of(st.text(max_size=20), MARKUP), max_size=30).map("".join)
FAST_VERIFIERS = [k for k in VERIFIERS if k != "math" and (k != "ocr" or importlib.util.find_spec("rapidfuzz"))]


@given(text=st.one_of(st.text(), NASTY), convention=CONVENTIONS)
@settings(max_examples=300)
def test_extraction_never_raises(text: str, convention: str) -> None:
    ex = extract_answer(text, convention)
    assert (ex.answer is None) != (ex.reason == "ok")
    assert ex.answer is None or ex.answer == ex.answer.strip()
    letter = extract_choice(text, 4)
    assert letter is None or letter in "ABCD"


@given(prediction=st.one_of(st.text(), NASTY), reference=st.one_of(st.text(), NASTY))
@settings(max_examples=150)
@pytest.mark.parametrize("kind", FAST_VERIFIERS)
def test_verifiers_never_raise(kind: str, prediction: str, reference: str) -> None:
    check = VERIFIERS[kind](prediction, reference)
    assert isinstance(check, Check) and 0.0 <= check.score <= 1.0


@needs_math_verify
@given(
    prediction=st.one_of(st.text(max_size=40), NASTY),
    reference=st.one_of(st.sampled_from(["\\frac{1}{2}", "x^2", "3", "\\{1, 2\\}"]), st.text(max_size=20)),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_math_never_raises(prediction: str, reference: str) -> None:
    assert isinstance(verify_math(prediction, reference, timeout_s=1), Check)


@given(response=st.one_of(st.text(), NASTY), convention=CONVENTIONS, kind=st.sampled_from(FAST_VERIFIERS))
@settings(max_examples=150)
def test_top_level_never_raises(response: str, convention: str, kind: str) -> None:
    v = verify(response, "B", kind, convention, choices=["x", "y"])
    assert v.parsed or not v.correct


HUGE = [
    "a" * 1_000_000,
    " " * 1_000_000,
    "answer " + " " * 1_000_000 + "is",
    "Answer:" + " " * 1_000_000,
    "(1, 2)" + " " * 500_000 + "(3, 4)",
    "\\boxed{" * 200_000,
    "{" * 1_000_000,
    "1" * 1_000_000,
    "<think>" + "x" * 1_000_000,
    "</think>" * 100_000,
    BOX_BEGIN + "x" * 1_000_000 + BOX_END,
    "A. " * 300_000,
    "é中\u200b" * 300_000,
]


@pytest.mark.parametrize("text", HUGE, ids=range(len(HUGE)))
def test_huge_inputs_are_bounded(text: str) -> None:
    start = time.monotonic()
    for convention in ("glm_box", "boxed", "any"):
        extract_answer(text, convention)
    extract_choice(text, 4)
    for kind in FAST_VERIFIERS:
        VERIFIERS[kind](text, "[0, 0, 10, 10]" if kind == "box" else "B")
        VERIFIERS[kind]("B", text)
    verify_math(text, "1")
    verify_math("1", text)
    assert time.monotonic() - start < 10


def _no_markup(s: str) -> bool:
    return not any(m in s for m in (BOX_BEGIN, BOX_END, "<think>", "</think>", "\\boxed", "\\fbox"))


@given(content=st.text().filter(_no_markup), before=st.text().filter(_no_markup), after=st.text().filter(_no_markup))
@settings(max_examples=300)
def test_glm_box_content_round_trips(content: str, before: str, after: str) -> None:
    ex = extract_answer(before + box(content) + after, "glm_box")
    if content.strip():
        assert ex == Extraction(content.strip(), "glm_box", "ok")
    else:
        assert ex.reason == "empty_box"


BALANCED = st.recursive(
    st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=10),
    lambda inner: st.lists(st.one_of(inner, inner.map(lambda s: "{" + s + "}")), max_size=4).map("".join),
    max_leaves=20,
)


@given(content=BALANCED.filter(_no_markup), before=st.text().filter(_no_markup))
@settings(max_examples=300)
def test_boxed_content_round_trips(content: str, before: str) -> None:
    ex = extract_answer(before.replace("\\", "") + "\\boxed{" + content + "}", "boxed")
    if content.strip():
        assert ex == Extraction(content.strip(), "boxed", "ok")
    else:
        assert ex.reason == "empty_boxed"


@given(
    a=st.tuples(*[st.floats(-1e6, 1e6, allow_nan=False)] * 4),
    b=st.tuples(*[st.floats(-1e6, 1e6, allow_nan=False)] * 4),
)
def test_iou_properties(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    v = iou(a, b)
    assert 0.0 <= v <= 1.0
    assert v == pytest.approx(iou(b, a))
    if (a[2] - a[0]) * (a[3] - a[1]) > 1e-6:
        assert iou(a, a) == pytest.approx(1.0)


@given(x=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300))
def test_number_round_trips_repr(x: float) -> None:
    assert verify_number(repr(x), repr(x))


@given(n=st.integers(-(10**15), 10**15))
def test_thousands_separators(n: int) -> None:
    assert verify_number(f"{n:,}", str(n))
    assert verify_number(f"{n:,}", f"{n}.0")
