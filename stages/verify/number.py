"""Numeric answers: a number with tolerance, LaTeX forms, percents and units (`pint`, when installed)."""

# ruff: noqa: RUF001  (minus, multiplication and full-width signs in patterns are meant)

from __future__ import annotations

import dataclasses
import functools
import math
import re
import unicodedata
from typing import Any, Literal

from .check import Check, checked
from .text import LATEX_WRAP

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
    s = LATEX_WRAP.sub(r" \1 ", s)
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


def _readings(pred: Quantity, value: float, ref: Quantity, percent: str) -> list[tuple[float, float]]:
    """The (prediction, reference) value pairs to compare under the `percent` mode; any close pair is correct."""
    if pred.percent == ref.percent or percent == "strip":
        return [(value, ref.value)]
    if percent == "scale":
        return [(value / 100 if pred.percent else value, ref.value / 100 if ref.percent else ref.value)]
    # either: the percent side read as a fraction or as its bare number
    return [(value / 100, ref.value) if pred.percent else (value, ref.value / 100), (value, ref.value)]


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
        return checked(False, "bad_reference")
    pred = parse_quantity(prediction) if isinstance(prediction, str) else None
    if pred is None:
        return checked(False, "unparseable_prediction")
    value = _converted(pred.value, pred.unit, ref.unit, units)
    if value is None:
        return checked(False, "unit_mismatch")
    return checked(any(_close(a, b, rel_tol, abs_tol) for a, b in _readings(pred, value, ref, percent)))
