"""Deciding from scores: every filter's threshold, run-wide quantile cutoffs, `where` rules on columns.

The same transform decides in a corpus run and in `mmcurate select` (which feeds it ledger rows and
overlays), so a threshold means the same in both. Only records of the decided kind are looked at;
the others pass through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from mmcurate.stages.base import Filter
from mmcurate.stages.clip import QuantileFilter
from mmcurate.stages.columns import WhereRule, column_value, failed_rule
from mmcurate.stages.io import Unit

from .common import Safely

QUANTILES = 1001


def cutoff_key(f: QuantileFilter, group: str) -> str:
    return f"{f.name}|{group if f.params.per == 'input' else '*'}"


def apply_thresholds(
    rec: Any, filters: list[Filter], cutoffs: dict[str, float], group: str, rules: list[WhereRule], kind: str
) -> Any:
    """The first filter whose threshold fails names the drop reason, then the first failing `where`
    rule; scores come from the record only (and run-wide cutoffs, computed from scores too)."""
    if not rec.pending or rec.kind != kind:
        return rec
    for f in filters:
        if isinstance(f, QuantileFilter):
            reason = f.decide_with(rec.scores, rec.labels, cutoffs.get(cutoff_key(f, group)))
        else:
            reason = f.decide(rec.scores, rec.labels)
        if reason:
            return rec.settle(reason)
    rule = failed_rule(rec, rules)
    if rule is not None:
        value = column_value(rec, rule.column)
        return rec.settle(rule.reason, f"{rule.column} = {value!r}"[:200])
    return rec


class ApplyThresholds(beam.DoFn):
    def __init__(self, config: Any, kind: str, groups: dict[int, str]) -> None:
        self.config, self.kind, self.groups = config, kind, groups

    def setup(self) -> None:
        self.filters = self.config.build_filters()
        self.rules = list(self.config.where)
        for rule in self.rules:
            rule.register()

    def process(self, rec: Any, cutoffs: dict[str, float] | None = None) -> Iterator[Any]:
        group = self.groups.get(rec.source.unit, "")
        yield apply_thresholds(rec, self.filters, cutoffs or {}, group, self.rules, self.kind)


class Cutoffs(beam.PTransform):
    """Run-wide score cutoffs for `top_fraction` filters: (filter|group) -> the score at that quantile."""

    def __init__(self, filters: list[Filter], groups: dict[int, str], kind: str) -> None:
        super().__init__()
        self.filters = [f for f in filters if isinstance(f, QuantileFilter) and f.params.top_fraction]
        self.groups, self.kind = groups, kind

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        filters, groups, kind = self.filters, self.groups, self.kind

        def values(rec: Any) -> list[tuple[str, float]]:
            if not rec.pending or rec.kind != kind:
                return []
            group = groups.get(rec.source.unit, "")
            return [(cutoff_key(f, group), rec.scores[f.score_name]) for f in filters if f.score_name in rec.scores]

        def cutoff(key: str, quantiles: list[float]) -> tuple[str, float]:
            name = key.split("|", 1)[0]
            frac = next(f.params.top_fraction for f in filters if f.name == name)
            return key, quantiles[round((1.0 - frac) * (len(quantiles) - 1))]

        return (
            records
            | "ScoresToRank" >> beam.FlatMap(values)
            | "Quantiles" >> beam.ApproximateQuantiles.PerKey(QUANTILES)
            | "Cutoff" >> beam.MapTuple(cutoff)
        )


class Thresholds(beam.PTransform):
    """Run-wide cutoffs (when a filter asks for a top fraction), then every filter and `where` rule."""

    def __init__(self, config: Any, units: list[Unit], kind: str) -> None:
        super().__init__()
        self.config, self.kind, self.groups = config, kind, {u.index: u.group for u in units}

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        filters = self.config.build_filters()
        fn = ApplyThresholds(self.config, self.kind, self.groups)
        if not any(isinstance(f, QuantileFilter) and f.params.top_fraction for f in filters):
            return records | "Apply" >> Safely(fn, "apply_thresholds")
        cutoffs = records | "Cutoffs" >> Cutoffs(filters, self.groups, self.kind)
        return records | "Apply" >> Safely(fn, "apply_thresholds", cutoffs=beam.pvalue.AsDict(cutoffs))
