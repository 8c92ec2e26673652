"""From every annotator's answers to one label per clip, and how far the annotators agree.

Per clip: choices by majority (ties to the annotators better on gold tasks), action segments by
frame majority (a frame carries a label when more than half the clip's annotators marked it), text
tracks of the annotator who agrees most with the others. Per family: kappa per choice control over
the clips with the most common number of annotators, mean temporal IoU of action segments, mean
track IoU and CER of text; per annotator: gold accuracy and how many tasks they answered. Clips
whose agreement is below `bound` are named for the next push, with higher overlap.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mmcurate.schemas.annotation import ClipAnnotation, TimeSegment

from .agreement import kappa, label_frames, majority, temporal_iou, text_agreement
from .label_configs import control_names, label_config


def gold_accuracy(
    anns: Sequence[ClipAnnotation], gold: Mapping[str, Mapping[str, str]], controls: Collection[str] | None = None
) -> dict[str, float]:
    """Per annotator: the share of gold answers (clip id -> {control: answer}) they gave right,
    over the `controls` their family asks (all when None: a cinematic answer is no actions question)."""
    right: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    for a in anns:
        for control, answer in gold.get(a.clip_id, {}).items():
            if controls is not None and control not in controls:
                continue
            asked[a.annotator] += 1
            right[a.annotator] += a.choices.get(control) == answer
    return {who: right[who] / n for who, n in asked.items()}


def frame_majority(anns: Sequence[ClipAnnotation], fps: float) -> list[TimeSegment]:
    """Segments where more than half the annotators marked the label, frame by frame."""
    votes: dict[str, Counter[int]] = defaultdict(Counter)
    for a in anns:
        for label, frames in label_frames(a.segments).items():
            votes[label].update(frames)
    out = []
    for label in sorted(votes):
        on = sorted(f for f, n in votes[label].items() if n * 2 > len(anns))
        for _, run in itertools.groupby(enumerate(on), key=lambda p: p[1] - p[0]):
            frames = [f for _, f in run]
            start, end = frames[0], frames[-1] + 1
            out.append(TimeSegment(label, start, end, start / fps, end / fps, _description(anns, label, start, end)))
    return out


def _description(anns: Sequence[ClipAnnotation], label: str, start: int, end: int) -> str:
    """The annotators' description of a consensus segment: that of their segment of the label
    overlapping it most (the longer text, then the earlier annotator, on a tie); "" with none."""
    best: tuple[int, int, str] = (0, 0, "")
    for a in anns:
        for s in a.segments:
            overlap = min(end, s.end_frame) - max(start, s.start_frame)
            if s.label == label and s.text and overlap > 0 and (overlap, len(s.text)) > best[:2]:
                best = (overlap, len(s.text), s.text)
    return best[2]


def _pair_agreement(anns: Sequence[ClipAnnotation], family: str) -> float | None:
    """Mean pairwise agreement of one clip's annotators in a family, None with one annotator."""
    pairs = list(itertools.combinations(anns, 2))
    if not pairs:
        return None
    scores = []
    for a, b in pairs:
        parts = []
        if a.choices or b.choices:
            keys = a.choices.keys() | b.choices.keys()
            parts.append(sum(a.choices.get(k) == b.choices.get(k) for k in keys) / len(keys))
        if family == "actions":
            parts.append(temporal_iou(a.segments, b.segments))
        if family == "text":
            iou, cer = text_agreement(a.tracks, b.tracks)
            parts.append((iou + (1 - min(cer, 1.0))) / 2)
        scores.append(sum(parts) / len(parts) if parts else 1.0)
    return sum(scores) / len(scores)


@dataclass
class FamilySummary:
    family: str
    clips: int = 0
    annotations: int = 0
    empty: int = 0
    """Annotations submitted with nothing labelled (counted, not used)."""
    problems: int = 0
    kappa: dict[str, float] = field(default_factory=dict)
    """Per choice control, over the clips with the most common number of annotators (>= 2)."""
    kappa_items: dict[str, int] = field(default_factory=dict)
    """How many clips each kappa is over (1.0 over one clip says little)."""
    temporal_iou: float | None = None
    text_iou: float | None = None
    text_cer: float | None = None
    gold_accuracy: dict[str, float] = field(default_factory=dict)
    """Per annotator, over their answers to gold clips: the gold copies and the clips' own tasks."""
    gold_answers: int = 0
    """Answers to gold copies (left out of the consensus and the agreement)."""
    tasks_per_annotator: dict[str, int] = field(default_factory=dict)
    requeue: list[str] = field(default_factory=list)
    """Clips below the agreement bound: push them again with higher overlap."""


def consensus(
    anns: Sequence[ClipAnnotation],
    family: str,
    fps: Mapping[str, float],
    gold: Mapping[str, Mapping[str, str]] | None = None,
    bound: float = 0.5,
) -> tuple[dict[str, dict[str, Any]], FamilySummary]:
    """Per clip id, the consensus columns of one family; and the family's agreement summary."""
    gold = gold or {}
    summary = FamilySummary(family, annotations=len(anns))
    summary.problems = sum(len(a.problems) for a in anns)
    summary.empty = sum(a.empty for a in anns)
    answered = [a for a in anns if not a.empty]
    summary.gold_accuracy = gold_accuracy(answered, gold, control_names(label_config(family)))
    summary.gold_answers = sum(a.gold for a in answered)
    used = [a for a in answered if not a.gold]  # a gold copy scores its annotator, not the clip
    summary.tasks_per_annotator = dict(sorted(Counter(a.annotator for a in used).items()))
    by_clip: dict[str, list[ClipAnnotation]] = defaultdict(list)
    for a in sorted(used, key=lambda a: (a.clip_id, a.annotator, a.annotation_id)):
        by_clip[a.clip_id].append(a)
    summary.clips = len(by_clip)
    rows: dict[str, dict[str, Any]] = {}
    for cid, group in by_clip.items():
        rows[cid] = _row(group, family, fps.get(cid, 1.0), summary.gold_accuracy)
        agree = _pair_agreement(group, family)
        rows[cid][f"{family}_agreement"] = agree
        if agree is not None and agree < bound:
            summary.requeue.append(cid)
    _family_stats(summary, by_clip, family)
    return rows, summary


def _row(group: list[ClipAnnotation], family: str, fps: float, accuracy: Mapping[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {f"{family}_annotators": len(group)}
    for control in sorted({k for a in group for k in a.choices}):
        said = [a for a in group if control in a.choices]  # answers and weights by the same positions
        row[control] = majority([a.choices[control] for a in said],
                                {i: accuracy.get(a.annotator, 0.0) for i, a in enumerate(said)})  # fmt: skip
    if family == "actions":
        segs = frame_majority(group, fps)
        row["actions"] = json.dumps([asdict(s) for s in segs], sort_keys=True)
    if family == "text":
        best = max(group, key=lambda a: sum(text_agreement(a.tracks, b.tracks)[0] for b in group if b is not a))
        row["text"] = json.dumps([{"text": t.text, "lang": t.lang, "frames": len(t.boxes)} for t in best.tracks],
                                 sort_keys=True, ensure_ascii=False)  # fmt: skip
    return row


def _family_stats(summary: FamilySummary, by_clip: Mapping[str, list[ClipAnnotation]], family: str) -> None:
    counts = Counter(len(g) for g in by_clip.values() if len(g) >= 2)
    if not counts:
        return
    n = counts.most_common(1)[0][0]
    groups = [g[:n] for g in by_clip.values() if len(g) >= n]
    controls = sorted({k for g in groups for a in g for k in a.choices})
    for control in controls:
        rated = [g for g in groups if all(control in a.choices for a in g)]
        if rated:
            same = len({tuple(a.annotator for a in g) for g in rated}) == 1
            summary.kappa[control] = kappa([[a.choices[control] for a in g] for g in rated], same)
            summary.kappa_items[control] = len(rated)
    pairs = [(a, b) for g in groups for a, b in itertools.combinations(g, 2)]
    if family == "actions" and pairs:
        summary.temporal_iou = sum(temporal_iou(a.segments, b.segments) for a, b in pairs) / len(pairs)
    if family == "text" and pairs:
        stats = [text_agreement(a.tracks, b.tracks) for a, b in pairs]
        summary.text_iou = sum(s[0] for s in stats) / len(stats)
        summary.text_cer = sum(s[1] for s in stats) / len(stats)
