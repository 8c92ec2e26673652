"""Deciding from scores: every filter's threshold, run-wide quantile cutoffs, `where` rules on columns.

The same transform decides in a corpus run and in `mmcurate select` (which feeds it ledger rows and
overlays), so a threshold means the same in both. Only records of the decided kinds are looked at
(each filter decides the kinds it names; `where` rules the first decided kind); the others pass through.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from mmcurate.stages.base import Filter
from mmcurate.stages.clip import QuantileFilter
from mmcurate.stages.columns import WhereRule, column_value, failed_rule
from mmcurate.stages.io import Unit

from .common import Safely

BIN_SHIFT = 40
"""Scores are counted in bins of the top 24 bits of their order-preserving 64-bit form (sign, exponent
and 12 mantissa bits): a relative width of 2^-12 (an 0.3 CLIP score's bin is 7e-5 wide), at most
4,096 bins per power of two, whatever the run's size."""
_SIGN = 1 << 63
_ALL = (1 << 64) - 1


def cutoff_key(f: QuantileFilter, group: str) -> str:
    return f"{f.name}|{group if f.params.per == 'input' else '*'}"


def with_cutoff(f: Filter) -> bool:
    return isinstance(f, QuantileFilter) and bool(f.params.top_fraction)


def rank_values(rec: Any, filters: list[Filter], group: str) -> list[tuple[str, float]]:
    """What a record adds to the run-wide score distributions its `top_fraction` filters cut."""
    quantile = [f for f in filters if isinstance(f, QuantileFilter) and with_cutoff(f) and rec.kind in f.kinds]
    values = [(cutoff_key(f, group), rec.scores.get(f.score_name)) for f in quantile]
    return [(k, float(v)) for k, v in values if v is not None and math.isfinite(v)]


def score_bin(value: float) -> int:
    """The bin of a finite score; bins sort as the scores do (negative ones included)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", value))
    return (bits ^ _ALL if bits & _SIGN else bits | _SIGN) >> BIN_SHIFT


def bin_floor(b: int) -> float:
    """The smallest score in bin `b`: every score of the bin is >= it."""
    key = b << BIN_SHIFT
    bits = key & ~_SIGN if key & _SIGN else key ^ _ALL
    return struct.unpack(">d", struct.pack(">Q", bits))[0]


def cutoff_from_counts(counts: dict[int, int], fraction: float) -> float:
    """The floor of the highest bins that together hold at least `fraction` of the scores: what is
    >= it is kept. Computed from counts only, so it is the same however the runner split the work
    (an interrupted and resumed run, one or many workers) and exact up to one bin."""
    total = sum(counts.values())
    need = max(1, math.ceil(round(fraction * total, 9)))
    seen = 0
    for b in sorted(counts, reverse=True):
        seen += counts[b]
        if seen >= need:
            return bin_floor(b)
    return bin_floor(min(counts))


class ScoreHistogram(beam.CombineFn):
    """Scores -> {bin: count}: a sum, so the result does not depend on how values were grouped."""

    def create_accumulator(self) -> dict[int, int]:
        return {}

    def add_input(self, acc: dict[int, int], value: float) -> dict[int, int]:
        b = score_bin(value)
        acc[b] = acc.get(b, 0) + 1
        return acc

    def merge_accumulators(self, accs: Any) -> dict[int, int]:
        out: dict[int, int] = {}
        for acc in accs:
            for b, n in acc.items():
                out[b] = out.get(b, 0) + n
        return out

    def extract_output(self, acc: dict[int, int]) -> dict[int, int]:
        return acc


def apply_thresholds(
    rec: Any,
    filters: list[Filter],
    cutoffs: dict[str, float],
    group: str,
    rules: list[WhereRule],
    kind: str | tuple[str, ...],
    local: bool = False,
) -> Any:
    """The first filter whose threshold fails names the drop reason, then the first failing `where`
    rule; scores come from the record only (and run-wide cutoffs, computed from scores too).

    `local`: decide only up to the first filter that needs a run-wide cutoff; the record stays
    pending for the rest, which the finish path applies once the cutoffs are known."""
    kinds = (kind,) if isinstance(kind, str) else kind
    if not rec.pending or rec.kind not in kinds:
        return rec
    for f in filters:
        if rec.kind not in f.kinds:
            continue
        if isinstance(f, QuantileFilter):
            if local and with_cutoff(f):
                return rec
            reason = f.decide_with(rec.scores, rec.labels, cutoffs.get(cutoff_key(f, group)))
        else:
            reason = f.decide(rec.scores, rec.labels)
        if reason:
            return rec.settle(reason)
    if rec.kind != kinds[0]:
        return rec
    rule = failed_rule(rec, rules)
    if rule is not None:
        value = column_value(rec, rule.column)
        return rec.settle(rule.reason, f"{rule.column} = {value!r}"[:200])
    return rec


class Decider:
    """The thresholds of one run's config, for records of the decided kinds (built once per worker)."""

    def __init__(self, config: Any, kind: str | tuple[str, ...], groups: dict[int, str]) -> None:
        self.config, self.kind, self.groups = config, kind, groups
        self.filters: list[Filter] = []
        self.rules: list[WhereRule] = []

    def setup(self) -> Decider:
        self.filters = self.config.build_filters()
        self.rules = list(self.config.where)
        for rule in self.rules:
            rule.register()
        return self

    @property
    def deferred(self) -> bool:
        """Some filter needs a run-wide cutoff: the finish path decides what the recipe could not."""
        return any(with_cutoff(f) for f in self.filters)

    def local(self, rec: Any) -> Any:
        """In the recipe: every threshold that needs no run-wide cutoff (records that fail one are
        never encoded), after noting what the record adds to the run-wide distributions."""
        group = self.groups.get(rec.source.unit, "")
        kinds = (self.kind,) if isinstance(self.kind, str) else self.kind
        ranked = rank_values(rec, self.filters, group) if rec.pending and rec.kind in kinds else None
        rec = apply_thresholds(rec, self.filters, {}, group, self.rules, self.kind, local=True)
        if ranked:
            rec.rank = ranked
        return rec

    def final(self, rec: Any, cutoffs: dict[str, float]) -> Any:
        """In the finish path, with the cutoffs: the rest of the filters and the `where` rules."""
        if not self.deferred:
            return rec
        group = self.groups.get(rec.source.unit, "")
        return apply_thresholds(rec, self.filters, cutoffs, group, self.rules, self.kind)


class ApplyThresholds(beam.DoFn):
    def __init__(self, config: Any, kind: str | tuple[str, ...], groups: dict[int, str]) -> None:
        self.decider = Decider(config, kind, groups)

    def setup(self) -> None:
        self.decider.setup()

    def process(self, rec: Any) -> Iterator[Any]:
        yield self.decider.local(rec)


class Cutoffs(beam.PTransform):
    """(cutoff key, score) pairs -> (cutoff key, the score the top `top_fraction` of that key's records
    reach). Beam's ApproximateQuantiles was not used: above ~15k values per key its result depends on
    how the runner partitioned the values, so a resumed run could cut elsewhere than an uninterrupted one."""

    def __init__(self, filters: list[Filter]) -> None:
        super().__init__()
        self.fractions = {f.name: f.params.top_fraction for f in filters if with_cutoff(f)}  # type: ignore[attr-defined]

    def expand(self, values: beam.PCollection) -> beam.PCollection:
        fractions = self.fractions

        def cutoff(key: str, counts: dict[int, int]) -> tuple[str, float]:
            return key, cutoff_from_counts(counts, fractions[key.split("|", 1)[0]])

        return values | "Histogram" >> beam.CombinePerKey(ScoreHistogram()) | "Cutoff" >> beam.MapTuple(cutoff)


class Thresholds(beam.PTransform):
    """Every filter and `where` rule that needs no run-wide cutoff; the finish path applies the rest
    (`Decider.final`) once the spooled records' scores have given the cutoffs."""

    def __init__(self, config: Any, units: list[Unit], kind: str | tuple[str, ...]) -> None:
        super().__init__()
        self.config, self.kind, self.groups = config, kind, {u.index: u.group for u in units}

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        fn = ApplyThresholds(self.config, self.kind, self.groups)
        return records | "Apply" >> Safely(fn, "apply_thresholds")
