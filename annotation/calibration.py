"""How well the automatic decisions match what annotators said, and the threshold that would match best.

For each clip score people also judged:
- `flow_speed` against "the camera moves" (consensus `camera_motion` other than static): the run
  keeps a clip at `flow_speed >= min`;
- the camera-motion guess against the consensus camera motion (exact label);
- "the OCR found text" against the consensus `text_present`;
- "kept" against the consensus `usable` (every queued clip was kept: the share people found usable).
A threshold report gives precision and recall of the automatic "yes" against the people's "yes",
their agreement, and the threshold over the observed scores that maximises agreement (ties: the one
nearest the current threshold), so a run can be re-selected with it (`mmcurate select`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any


def threshold_report(scores: Sequence[float], truth: Sequence[bool], threshold: float | None) -> dict[str, Any]:
    """Automatic yes = score >= threshold, against `truth`; and the best threshold by agreement.
    `threshold` None: the run made no such decision, so only the suggestion (the lowest best)."""
    n = len(scores)
    if n == 0 or n != len(truth):
        return {"clips": 0}
    if threshold is None:
        return _suggestion(scores, truth)
    auto = [s >= threshold for s in scores]
    tp = sum(a and t for a, t in zip(auto, truth, strict=True))
    fp = sum(a and not t for a, t in zip(auto, truth, strict=True))
    fn = sum(t and not a for a, t in zip(auto, truth, strict=True))
    values = sorted(set(scores))
    candidates = sorted(
        {threshold, values[0], values[-1] + 1e-12, *((a + b) / 2 for a, b in itertools.pairwise(values))}
    )

    def agree(t: float) -> float:
        return _agreement(scores, truth, t)

    best = max(candidates, key=lambda t: (agree(t), -abs(t - threshold)))
    return {
        "clips": n,
        "threshold": threshold,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "agreement": agree(threshold),
        "suggested_threshold": best,
        "suggested_agreement": agree(best),
    }


def calibration(
    rows: Sequence[Mapping[str, Any]], labels: Mapping[str, Mapping[str, Any]], thresholds: Mapping[str, float]
) -> dict[str, Any]:
    """The reports for every decision people judged on some clip (`labels`: clip id -> consensus)."""
    by_id = {str(r["clip_id"]): r for r in rows}
    judged = [(by_id[c], lab) for c, lab in sorted(labels.items()) if c in by_id]
    out: dict[str, Any] = {}
    motion = [(r, lab["camera_motion"]) for r, lab in judged if lab.get("camera_motion")]
    flows = [
        (float(r["scores"]["flow_speed"]), m != "static") for r, m in motion if "flow_speed" in r.get("scores", {})
    ]
    if flows:
        out["flow_speed"] = threshold_report([f for f, _ in flows], [t for _, t in flows], thresholds.get("flow_speed"))
    guesses = [((r.get("pre_annotations") or {}).get("camera_motion"), m) for r, m in motion]
    guesses = [(g, m) for g, m in guesses if g]
    if guesses:
        out["camera_motion_label"] = {"clips": len(guesses), "accuracy": sum(g == m for g, m in guesses) / len(guesses)}
    text = [(bool((r.get("pre_annotations") or {}).get("text")), lab["text_present"] == "text")
            for r, lab in judged if lab.get("text_present")]  # fmt: skip
    if text:
        out["ocr_text_present"] = threshold_report([float(a) for a, _ in text], [t for _, t in text], 0.5)
    usable = [lab["usable"] == "usable" for _, lab in judged if lab.get("usable")]
    if usable:
        out["kept_usable"] = {"clips": len(usable), "precision": sum(usable) / len(usable)}
    return out


def _suggestion(scores: Sequence[float], truth: Sequence[bool]) -> dict[str, Any]:
    values = sorted(set(scores))
    candidates = [values[0], *((a + b) / 2 for a, b in itertools.pairwise(values)), values[-1] + 1e-12]

    def agree(t: float) -> float:
        return _agreement(scores, truth, t)

    best = max(candidates, key=lambda t: (agree(t), -t))
    return {"clips": len(scores), "threshold": None, "precision": None, "recall": None, "agreement": None,
            "suggested_threshold": best, "suggested_agreement": agree(best)}  # fmt: skip


def _agreement(scores: Sequence[float], truth: Sequence[bool], t: float) -> float:
    return sum((s >= t) == y for s, y in zip(scores, truth, strict=True)) / len(scores)
