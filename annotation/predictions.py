"""The models' guesses as Label Studio predictions, per label family: the clip's scenes as timeline
segments, the camera-motion guess as a choice scored by the flow's confidence in it, OCR lines as
one-keyframe `videorectangle` regions with their text; the combined config gets them all in one."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from mmcurate.schemas.annotation import FAMILIES

from .convert import ls_range
from .label_configs import COMBINED, SCENE_CONTROL

STATIC_SPEED = 0.02
"""The video corpus's default `motion.static_speed` (stages/video_scan.py), when a run states none."""


def motion_confidence(scores: Mapping[str, Any], label: str, static_speed: float = STATIC_SPEED) -> float | None:
    """How sure the flow is of its camera-motion guess, from the clip's flow statistics: for a
    moving label, its component's share of pan, tilt and zoom (1: a pure pan); for `static`, how far
    below the static bound the fastest component stays (1: no motion at all). None without them."""
    try:
        speeds = {"pan": abs(float(scores["camera_pan"])), "tilt": abs(float(scores["camera_tilt"])),
                  "zoom": abs(float(scores["camera_zoom"])) / 4}  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
    if label == "static":
        return 1.0 - min(1.0, max(speeds.values()) / static_speed) if static_speed > 0 else 1.0
    total = sum(speeds.values())
    return speeds.get(label.split("_")[0], 0.0) / total if total > 0 else 0.0


def flow_stats(scores: Mapping[str, Any]) -> dict[str, float]:
    """The flow statistics behind the camera-motion guess, put in the task's data for the reviewer."""
    keys = ("flow_speed", "flow_speed_max", "camera_pan", "camera_tilt", "camera_zoom")
    return {k: round(float(scores[k]), 5) for k in keys if isinstance(scores.get(k), int | float)}


def predictions(row: Mapping[str, Any], family: str, static_speed: float = STATIC_SPEED) -> list[dict[str, Any]]:
    """The models' guesses for one family as Label Studio predictions (one prediction, or none); for
    the combined config every family's guesses in one prediction (its score their mean)."""
    if family == COMBINED:
        parts = [p for f in FAMILIES for p in predictions(row, f, static_speed)]
        if not parts:
            return []
        return [{"model_version": "mmcurate-combined", "score": sum(p["score"] for p in parts) / len(parts),
                 "result": [r for p in parts for r in p["result"]]}]  # fmt: skip
    pre = row.get("pre_annotations") or {}
    result: list[dict[str, Any]] = []
    if family == "cinematic" and pre.get("camera_motion"):
        result.append({"from_name": "camera_motion", "to_name": "video", "type": "choices",
                       "value": {"choices": [pre["camera_motion"]]}})  # fmt: skip
        score = motion_confidence(row.get("scores") or {}, pre["camera_motion"], static_speed)
        return [{"model_version": "mmcurate-flow", "score": score if score is not None else 0.0, "result": result}]
    if family == "actions":
        result += scene_segments(row)
    if family == "text" and row.get("width") and row.get("height"):
        frames = max(1, int(row["end_frame"]) - int(row["start_frame"]))
        for i, line in enumerate(pre.get("text") or []):
            xs, ys = [p[0] for p in line["box"]], [p[1] for p in line["box"]]
            w, h = float(row["width"]), float(row["height"])
            box = {
                "x": 100 * min(xs) / w,
                "y": 100 * min(ys) / h,
                "width": 100 * (max(xs) - min(xs)) / w,
                "height": 100 * (max(ys) - min(ys)) / h,
                "rotation": 0,
                "enabled": True,
                "frame": 1,
                "time": 0.0,
            }
            rid = f"ocr{i}"
            result.append(
                {
                    "id": rid,
                    "from_name": "text_box",
                    "to_name": "video",
                    "type": "videorectangle",
                    "value": {"framesCount": frames, "duration": frames / float(row["fps"] or 1), "sequence": [box]},
                }
            )
            result.append({"id": rid, "from_name": "transcription", "to_name": "video", "type": "textarea",
                           "value": {"text": [line["text"]]}})  # fmt: skip
    if not result:
        return []
    scores = [float(line.get("confidence", 0)) for line in pre.get("text") or []] if family == "text" else []
    return [{"model_version": f"mmcurate-{family}", "score": max(scores, default=0.0), "result": result}]


def scene_segments(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The clip's scenes (split at `scene_cuts`, the detector cuts stitching merged away) as segments
    of the actions config's `scene` timeline: the annotator sees where the shots change."""
    frames = int(row["end_frame"]) - int(row["start_frame"])
    cuts = [c for c in (row.get("pre_annotations") or {}).get("scene_cuts") or [] if 0 < c < frames]
    edges = [0, *sorted(set(cuts)), frames]
    return [
        {"id": f"scene{i}", "from_name": SCENE_CONTROL, "to_name": "video", "type": "timelinelabels",
         "value": {"ranges": [ls_range(a, b)], "timelinelabels": ["scene"]}}
        for i, (a, b) in enumerate(itertools.pairwise(edges)) if b > a
    ]  # fmt: skip
