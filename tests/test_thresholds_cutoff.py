"""Run-wide `top_fraction` cutoffs: from counts only, so the same however the values were split."""

from __future__ import annotations

import math
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from mmcurate.pipelines.thresholds import Cutoffs, ScoreHistogram, bin_floor, cutoff_from_counts, score_bin
from mmcurate.stages.clip import ClipScore


def histogram(values: list[float], parts: int, seed: int) -> dict[int, int]:
    """The combiner as a runner would use it: `parts` partial accumulators, merged in some order."""
    fn = ScoreHistogram()
    shuffled = values[:]
    random.Random(seed).shuffle(shuffled)
    accs = []
    for i in range(parts):
        acc = fn.create_accumulator()
        for v in shuffled[i::parts]:
            acc = fn.add_input(acc, v)
        accs.append(acc)
    random.Random(seed + 1).shuffle(accs)
    return fn.extract_output(fn.merge_accumulators(accs))


def test_cutoff_does_not_depend_on_partitioning() -> None:
    rng = random.Random(0)
    values = [rng.gauss(0.3, 0.05) for _ in range(300_000)]
    cutoffs = {cutoff_from_counts(histogram(values, parts, seed), 0.1) for parts, seed in ((1, 0), (2, 1), (7, 2))}
    assert len(cutoffs) == 1
    (cut,) = cutoffs
    kept = sum(v >= cut for v in values)
    exact = math.ceil(0.1 * len(values))
    assert exact <= kept <= exact + len(values) * 0.002  # at most one bin (7e-5 wide) more


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.05, 1.0])
def test_cutoff_keeps_exactly_the_fraction_of_well_separated_scores(fraction: float) -> None:
    values = [-2.0 + 0.01 * i for i in range(400)]  # negative, zero and positive scores
    cut = cutoff_from_counts(histogram(values, 3, 5), fraction)
    kept = sorted(v for v in values if v >= cut)
    assert len(kept) == math.ceil(round(fraction * len(values), 9))
    assert kept == sorted(values)[len(values) - len(kept) :]


def test_bins_sort_as_scores_and_floor_is_inside_the_bin() -> None:
    values = sorted([-1e9, -3.5, -1e-300, -0.0, 0.0, 1e-300, 0.28, 0.2801, 0.3, 7.0, 1e12])
    bins = [score_bin(v) for v in values]
    assert bins == sorted(bins)
    for v in values:
        assert bin_floor(score_bin(v)) <= v
        assert score_bin(bin_floor(score_bin(v))) == score_bin(v)


def test_cutoffs_transform_in_a_pipeline() -> None:
    """The transform the finish path uses: one cutoff per key (the whole run, or one input group)."""
    clip = ClipScore(ClipScore.Params(top_fraction=0.25))
    values = [("clip_score|*", 0.1 * i) for i in range(1, 9)] + [("clip_score|b", 5.0)]
    with TestPipeline() as p:
        cut = p | beam.Create(values) | Cutoffs([clip])
        expected = [("clip_score|*", bin_floor(score_bin(0.7))), ("clip_score|b", bin_floor(score_bin(5.0)))]
        assert_that(cut, equal_to(expected))


def test_an_undefined_score_never_passes_a_threshold() -> None:
    """NaN is left out of the run's histogram and fails `min` and `top_fraction` alike."""
    clip = ClipScore(ClipScore.Params(min=0.1, top_fraction=0.5))
    assert clip.decide_with({"clip_score": math.nan}, {}, 0.2) == "clip_score_low"
    assert clip.decide_with({"clip_score": 0.3}, {}, 0.2) is None
    assert clip.decide_with({}, {}, 0.2) is None  # not scored at all: not this filter's call
