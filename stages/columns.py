"""Thresholds on any ledger or overlay column (`where:` in a config), decided from the record alone.

A rule names a column by its path in the ledger row: a top-level column (`width`, `domain`), a score
or label (`scores.clip_score`, `labels.lang`), or a column of an overlay joined by record id
(`overlays.human.action_ok`: overlay `human`, column `action_ok`). The record is dropped with the
rule's reason when the value fails the rule; a missing value keeps the record unless `missing: drop`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from mmcurate.schemas import Status, register_reason

from .base import Params

MISSING = object()


class WhereRule(Params):
    column: str
    """`scores.NAME`, `labels.NAME`, `overlays.OVERLAY.COLUMN`, or a top-level ledger column."""
    min: float | None = None
    max: float | None = None
    equals: str | float | bool | None = None
    one_of: list[str | float | bool] | None = None
    none_of: list[str | float | bool] | None = None
    missing: Literal["keep", "drop"] = "keep"
    """What a record without a value in the column gets (no such overlay row, a score never computed)."""
    reason: str = Field("column_threshold", pattern=r"^[a-z][a-z0-9_]*$")
    """The drop reason code (registered as a drop that select may re-decide)."""

    @model_validator(mode="after")
    def _some_test(self) -> WhereRule:
        if all(v is None for v in (self.min, self.max, self.equals, self.one_of, self.none_of)):
            raise ValueError(f"where rule on {self.column!r} needs one of min, max, equals, one_of, none_of")
        parts = self.column.split(".")
        if parts[0] in ("scores", "labels") and len(parts) != 2:
            raise ValueError(f"where rule column {self.column!r}: use {parts[0]}.NAME")
        if parts[0] == "overlays" and len(parts) != 3:
            raise ValueError(f"where rule column {self.column!r}: use overlays.OVERLAY.COLUMN")
        if parts[0] == "labels":
            self._check_label_rule()
        return self

    def _check_label_rule(self) -> None:
        """Labels are strings: a numeric bound, or a value of another type, would never mean what it says."""
        if self.min is not None or self.max is not None:
            raise ValueError(f"where rule on {self.column!r}: labels are strings; use equals, one_of or none_of")
        values = [self.equals, *(self.one_of or ()), *(self.none_of or ())]
        if any(v is not None and not isinstance(v, str) for v in values):
            raise ValueError(f"where rule on {self.column!r}: compare a label with strings (e.g. 'true', not true)")

    def register(self) -> None:
        """Make the rule's reason known in this process (workers call this in setup)."""
        register_reason(self.reason, Status.DROPPED, f"where rule on {self.column}", redecide=True)


def column_value(rec: Any, path: str) -> Any:
    """The value at `path` on a record (see the module docstring), or MISSING."""
    head, *rest = path.split(".")
    if head in ("scores", "labels"):
        return getattr(rec, head).get(rest[0], MISSING)
    if head == "overlays":
        row = (getattr(rec, "overlay", None) or {}).get(rest[0])
        return row.get(rest[1], MISSING) if row else MISSING
    value = getattr(rec, head, MISSING)
    for part in rest:
        value = getattr(value, part, MISSING) if not isinstance(value, dict) else value.get(part, MISSING)
    return value


def _present(value: Any) -> Any:
    """A value that says nothing (None, NaN) is missing: NaN would pass every bound."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return value


def _passes(rule: WhereRule, value: Any) -> bool:
    if rule.equals is not None and value != rule.equals:
        return False
    if rule.one_of is not None and value not in rule.one_of:
        return False
    if rule.none_of is not None and value in rule.none_of:
        return False
    if rule.min is not None or rule.max is not None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False
        if (rule.min is not None and number < rule.min) or (rule.max is not None and number > rule.max):
            return False
    return True


def failed_rule(rec: Any, rules: list[WhereRule]) -> WhereRule | None:
    """The first rule the record fails, or None."""
    for rule in rules:
        value = _present(column_value(rec, rule.column))
        if value is MISSING:
            if rule.missing == "drop":
                return rule
            continue
        if not _passes(rule, value):
            return rule
    return None
