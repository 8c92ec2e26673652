"""Label Studio results <-> our annotation records (schemas/annotation.py).

Frames: Label Studio counts from 1 and its timeline ranges include both ends; ours count from 0 and
are half-open, so range {start: s, end: e} is frames [s - 1, e). Boxes: Label Studio keeps keyframes
in percent of the frame; `videorectangle` tracks are expanded to one box per frame by the SDK's own
`extract_key_frames` (the interpolation Label Studio's editor shows), then moved to stored pixels.

Per-region controls (a segment's description, a text box's transcription and language) come back as
results of their own that share the region's `id`. Nothing here raises on a bad result: what cannot
be read is named in the annotation's `problems` and left out, the rest still counts.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmcurate.schemas.annotation import FAMILIES, ClipAnnotation, FrameBox, TextTrack, TimeSegment

from .label_configs import SCENE_CONTROL, family_controls


@dataclass(frozen=True)
class ClipFrame:
    """What converting needs of a clip: its frame count, rate and stored size."""

    frames: int
    fps: float
    width: int
    height: int


def ls_range(start_frame: int, end_frame: int) -> dict[str, int]:
    """Our half-open [start_frame, end_frame) as Label Studio's 1-based inclusive range."""
    return {"start": start_frame + 1, "end": end_frame}


def our_frames(ls: Mapping[str, Any]) -> tuple[int, int]:
    """Label Studio's {start, end} (1-based, inclusive) as our [start_frame, end_frame)."""
    return int(ls["start"]) - 1, int(ls["end"])


def timeline_matrix(
    regions: Iterable[Mapping[str, Any]], label_map: Mapping[str, int], frames: int | None = None
) -> np.ndarray:
    """(frames, labels) 0/1: row i is Label Studio frame i + 1 (our frame i), column the label's
    index; `frames` None: up to the last range's end. Labels not in the map are skipped."""
    regions = list(regions)
    if frames is None:
        frames = max((int(r["end"]) for g in regions for r in g["value"]["ranges"]), default=0)
    out = np.zeros((frames, len(label_map)), dtype=int)
    for region in regions:
        for label in region["value"]["timelinelabels"]:
            if label not in label_map:
                continue
            for r in region["value"]["ranges"]:
                start, end = our_frames(r)
                out[max(start, 0) : min(end, frames), label_map[label]] = 1
    return out


def timeline_regions(
    probs: np.ndarray | list[list[float]],
    label_map: Mapping[str, int],
    from_name: str,
    threshold: float = 0.5,
    to_name: str = "video",
) -> list[dict[str, Any]]:
    """Per-frame label scores as Label Studio timeline predictions: one region per run of frames at
    or above the threshold, its score the mean over the run, ids `N_START_END`, in the order runs
    end (labels in map order at a shared end)."""
    p = np.asarray(probs, dtype=float)
    if p.size == 0:
        return []
    active = p >= threshold
    regions: list[dict[str, Any]] = []
    open_at: dict[str, int] = {}
    for i in range(len(p) + 1):
        for label, j in label_map.items():
            on = i < len(p) and bool(active[i, j])
            if on and label not in open_at:
                open_at[label] = i
            elif not on and label in open_at:
                start = open_at.pop(label)
                regions.append({
                    "id": f"{len(regions)}_{start + 1}_{i}",
                    "type": "timelinelabels",
                    "value": {"ranges": [ls_range(start, i)], "timelinelabels": [label]},
                    "to_name": to_name,
                    "from_name": from_name,
                    "score": float(p[start:i, j].mean()),
                })  # fmt: skip
    return regions


def keyframe_boxes(value: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A `videorectangle` value's keyframes expanded to every frame the box is on, in Label
    Studio's percent units and 1-based frames (the SDK's `extract_key_frames`)."""
    from label_studio_sdk._extensions.label_studio_tools.postprocessing.video import extract_key_frames

    result = {"type": "videorectangle", "value": copy.deepcopy(dict(value))}
    (expanded,) = extract_key_frames([result]) or [{"value": {"sequence": []}}]
    return expanded["value"]["sequence"]


def _pixels(box: Mapping[str, Any], clip: ClipFrame, problems: list[str], region: str) -> FrameBox | None:
    """A Label Studio box (percent) on our frame, in stored pixels, clipped to the frame; None when
    nothing of it is inside the frame or inside the clip's frames."""
    frame = int(box["frame"]) - 1
    x, y = float(box["x"]) * clip.width / 100, float(box["y"]) * clip.height / 100
    w, h = float(box["width"]) * clip.width / 100, float(box["height"]) * clip.height / 100
    if not 0 <= frame < clip.frames:
        problems.append(f"region {region}: frame {frame + 1} is outside the clip's {clip.frames} frames")
        return None
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, clip.width), min(y + h, clip.height)
    if x1 <= x0 or y1 <= y0:
        problems.append(f"region {region}: box on frame {frame + 1} lies outside the frame")
        return None
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        problems.append(f"region {region}: box on frame {frame + 1} clipped to the frame")
    rotation = float(box.get("rotation", 0) or 0)
    return FrameBox(frame, x0, y0, x1 - x0, y1 - y0, rotation, bool(box.get("auto", False)))


REGION_TYPES = ("timelinelabels", "videorectangle")

PER_REGION_TYPES = ("textarea", "choices")
TEXT_REGION_CONTROLS = ("transcription", "lang")
"""The text family's per-region answers: never part of an action's description (combined config)."""


def _per_region(results: list[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Per-region answers by region id: {region id: {control name: text or choice}}, for every
    timeline or box region (a textarea or choices result sharing its id answers for it)."""
    out: dict[str, dict[str, str]] = {str(r.get("id")): {} for r in results if r.get("type") in REGION_TYPES}
    for r in results:
        value = r.get("value") if isinstance(r.get("value"), Mapping) else {}
        answer = value.get("text") or value.get("choices")
        if r.get("type") in PER_REGION_TYPES and str(r.get("id")) in out and isinstance(answer, list):
            out[str(r["id"])][str(r.get("from_name", ""))] = " ".join(map(str, answer))
    return out


def _segment(r: Mapping[str, Any], clip: ClipFrame, extra: dict[str, str], problems: list[str]) -> list[TimeSegment]:
    value, region = r["value"], r.get("id", "?")
    out = []
    for label in value["timelinelabels"]:
        for rng in value["ranges"]:
            start, end = our_frames(rng)
            if end <= start:
                problems.append(f"region {region}: empty range {dict(rng)}")
                continue
            if start < 0 or end > clip.frames:
                problems.append(f"region {region}: range {dict(rng)} clipped to the clip's {clip.frames} frames")
                start, end = max(start, 0), min(end, clip.frames)
                if end <= start:
                    continue
            text = " ".join(v for k, v in extra.items() if k not in TEXT_REGION_CONTROLS)
            out.append(TimeSegment(str(label), start, end, start / clip.fps, end / clip.fps, text))
    return out


def _track(r: Mapping[str, Any], clip: ClipFrame, extra: dict[str, str], problems: list[str]) -> TextTrack | None:
    region = str(r.get("id", "?"))
    boxes = [b for b in (_pixels(k, clip, problems, region) for k in keyframe_boxes(r["value"])) if b]
    if not boxes:
        problems.append(f"region {region}: no box inside the clip")
        return None
    text = extra.get("transcription") or next((v for k, v in extra.items() if "lang" not in k), "")
    lang = next((v for k, v in extra.items() if "lang" in k), "")
    return TextTrack(tuple(boxes), text, lang)


def annotation_record(
    clip_id: str, family: str, annotation: Mapping[str, Any], clip: ClipFrame, task_id: int = 0
) -> ClipAnnotation:
    """One exported Label Studio annotation of a clip's task as our record."""
    who = annotation.get("completed_by")
    who = who.get("email") or who.get("id") if isinstance(who, Mapping) else who
    rec = ClipAnnotation(clip_id, family, str(who), task_id, int(annotation.get("id") or 0))
    rec.lead_time = float(annotation.get("lead_time") or 0.0)
    results = annotation.get("result")
    if not isinstance(results, list):
        rec.problems.append(f"annotation {rec.annotation_id}: `result` is not a list")
        return rec
    regions = _per_region([r for r in results if isinstance(r, Mapping)])
    for i, r in enumerate(results):
        try:
            _add(rec, r, clip, regions)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            rec.problems.append(f"result {i} ({r.get('type') if isinstance(r, Mapping) else r!r}): malformed, {exc!r}")
    return rec


def _add(rec: ClipAnnotation, r: Mapping[str, Any], clip: ClipFrame, regions: dict[str, dict[str, str]]) -> None:
    kind = r["type"]
    extra = regions.get(str(r.get("id")), {})
    if r.get("from_name") == SCENE_CONTROL:
        return  # the scenes we pre-annotated, kept in the answer: no label of the annotator's
    if kind == "timelinelabels":
        rec.segments += _segment(r, clip, extra, rec.problems)
    elif kind == "videorectangle":
        track = _track(r, clip, extra, rec.problems)
        if track is not None:
            rec.tracks.append(track)
    elif kind in PER_REGION_TYPES and str(r.get("id")) in regions:
        return  # read with its region
    elif kind == "choices":
        rec.choices[str(r["from_name"])] = str(r["value"]["choices"][0])
    else:
        rec.problems.append(f"result {r.get('id', '?')}: type {kind!r} is not one this family reads")


def split_families(rec: ClipAnnotation) -> list[ClipAnnotation]:
    """An answer to the combined config as one record per family: its segments to `actions`, its
    tracks to `text`, each choice to the family whose config has the control. Problems go with the
    first family (counted once)."""
    out = []
    for i, family in enumerate(FAMILIES):
        mine = family_controls(family)
        out.append(dataclasses.replace(
            rec, family=family,
            segments=list(rec.segments) if family == "actions" else [],
            tracks=list(rec.tracks) if family == "text" else [],
            choices={k: v for k, v in rec.choices.items() if k in mine},
            problems=list(rec.problems) if i == 0 else [],
        ))  # fmt: skip
    return out
