"""Agreement between annotators of one label family, and the consensus label.

Label Studio's open-source edition has no agreement metrics, so mmcurate computes them from the
exported annotations:
- choices (camera motion, shot size, ...): Cohen's kappa for two annotators (scikit-learn), Fleiss'
  kappa for three or more (statsmodels), over the clips they all labelled;
- action segments: temporal IoU, per label, of the frames each annotator marked;
- in-scene text: box IoU of tracks on the frames both have, and CER of their transcriptions.
The consensus of a choice is the majority (ties: the gold-weighted vote, then the first answer in
annotator order), so the same annotations always give the same label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from mmcurate.schemas.annotation import TextTrack, TimeSegment
from mmcurate.stages.measure import cer


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two annotators' answers to the same items (1.0 when both always agree,
    including on one label only, where scikit-learn's ratio is 0/0)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b) or not a:
        raise ValueError(f"cohen_kappa needs two equally long, non-empty answer lists ({len(a)}, {len(b)})")
    if list(a) == list(b):
        return 1.0
    return float(cohen_kappa_score(list(a), list(b)))


def fleiss_kappa(answers: Sequence[Sequence[str]]) -> float:
    """Fleiss' kappa: `answers[i]` is every annotator's answer to item i (the same count per item)."""
    from statsmodels.stats.inter_rater import aggregate_raters
    from statsmodels.stats.inter_rater import fleiss_kappa as _fleiss

    if not answers or len({len(row) for row in answers}) != 1 or len(answers[0]) < 2:
        raise ValueError("fleiss_kappa needs items each answered by the same number (>= 2) of annotators")
    if all(len(set(row)) == 1 for row in answers) and len({row[0] for row in answers}) == 1:
        return 1.0  # one label only: statsmodels' ratio is 0/0
    table, _ = aggregate_raters(np.asarray(answers, dtype=object))
    return float(_fleiss(table, method="fleiss"))


def kappa(answers: Sequence[Sequence[str]], same_raters: bool = True) -> float:
    """Cohen's kappa for two annotators per item, Fleiss' kappa for three or more, or when the
    items' annotators differ (`same_raters` False): Cohen's chance term is per rater, so position 0
    must be the same person on every item; Fleiss' is not."""
    if answers and len(answers[0]) == 2 and same_raters:
        return cohen_kappa([r[0] for r in answers], [r[1] for r in answers])
    return fleiss_kappa(answers)


def label_frames(segments: Sequence[TimeSegment]) -> dict[str, set[int]]:
    """label -> the frames segments of it cover."""
    out: dict[str, set[int]] = {}
    for s in segments:
        out.setdefault(s.label, set()).update(range(s.start_frame, s.end_frame))
    return out


def temporal_iou(a: Sequence[TimeSegment], b: Sequence[TimeSegment]) -> float:
    """Frames both marked with a label over frames either marked with it, summed over labels
    (1.0 when neither marked anything: they agree there is no action)."""
    fa, fb = label_frames(a), label_frames(b)
    inter = sum(len(fa.get(k, set()) & fb.get(k, set())) for k in fa.keys() | fb.keys())
    union = sum(len(fa.get(k, set()) | fb.get(k, set())) for k in fa.keys() | fb.keys())
    return inter / union if union else 1.0


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two (x, y, width, height) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def track_iou(a: TextTrack, b: TextTrack) -> float:
    """Mean box IoU over the frames either track is on (a frame only one has counts 0)."""
    ba = {x.frame: (x.x, x.y, x.width, x.height) for x in a.boxes}
    bb = {x.frame: (x.x, x.y, x.width, x.height) for x in b.boxes}
    frames = ba.keys() | bb.keys()
    if not frames:
        return 0.0
    return sum(box_iou(ba[f], bb[f]) for f in ba.keys() & bb.keys()) / len(frames)


def text_agreement(a: Sequence[TextTrack], b: Sequence[TextTrack]) -> tuple[float, float]:
    """(mean track IoU, mean CER) of two annotators' text tracks, each of a's matched to b's track
    it overlaps most (unmatched tracks: IoU 0, CER 1). Both empty: (1.0, 0.0)."""
    if not a and not b:
        return 1.0, 0.0
    ious, cers, used = [], [], set()
    for t in a:
        scored = sorted(((track_iou(t, u), j) for j, u in enumerate(b) if j not in used), reverse=True)
        if scored and scored[0][0] > 0:
            iou, j = scored[0]
            used.add(j)
            ious.append(iou)
            cers.append(min(1.0, cer(b[j].text, t.text)) if t.text or b[j].text else 0.0)
        else:
            ious.append(0.0)
            cers.append(1.0)
    unmatched = len(b) - len(used)
    ious += [0.0] * unmatched
    cers += [1.0] * unmatched
    return float(np.mean(ious)), float(np.mean(cers))


def majority(answers: Sequence[str], weights: Mapping[int, float] | None = None) -> str:
    """The consensus answer: the most votes; a tie goes to the larger weight sum (annotators'
    gold accuracy, by position), then to the earliest answer."""
    counts = Counter(answers)
    weight: dict[str, float] = {}
    for i, ans in enumerate(answers):
        weight[ans] = weight.get(ans, 0.0) + (weights or {}).get(i, 0.0)
    first = {ans: answers.index(ans) for ans in counts}
    return max(counts, key=lambda ans: (counts[ans], weight[ans], -first[ans]))
