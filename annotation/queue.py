"""The annotation queue: every kept clip, where it sits in the shards, and the models' guesses.

One jsonl per unit (`annotation/part-UUUUU.jsonl`), one row per kept clip, joined to the corpus by
clip id; the Label Studio round trip pushes these rows as tasks with the pre-annotations attached.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mmcurate.schemas import ClipRecord

QUEUE_DIR = "annotation"


def queue_row(clip: ClipRecord, shard: str, cuts: Sequence[int] = ()) -> dict[str, Any]:
    """One clip for human annotation: where it is, and the model pre-annotations to start from.
    `cuts` are its video's detector cuts (decoded-frame indices); those inside the clip (scenes that
    stitching merged) become `scene_cuts`, in the clip's own frames, so the annotator sees the scenes."""
    inner = sorted({c - clip.start_frame for c in cuts if clip.start_frame < c < clip.end_frame})
    return {
        "clip_id": clip.id,
        "video_id": clip.video_id,
        "shard": shard,
        "key": clip.id,
        "source": clip.source.ref(),
        "start_time": round(clip.start_time, 6),
        "end_time": round(clip.end_time, 6),
        "start_frame": clip.start_frame,
        "end_frame": clip.end_frame,
        "fps": clip.fps,
        "width": clip.width,
        "height": clip.height,
        "caption": clip.caption,
        "pre_annotations": {
            "camera_motion": clip.labels.get("camera_motion", ""),
            "scene_cuts": inner,
            "text": [{"text": line.text, "box": line.box, "confidence": line.confidence} for line in clip.ocr],
        },
        "scores": dict(sorted(clip.scores.items())),
    }


def queue_bytes(
    kept: list[ClipRecord], shard_of: Mapping[str, str], cuts_of: Mapping[str, Sequence[int]] | None = None
) -> bytes:
    """The queue file of one unit: `shard_of` maps clip id -> the shard path holding it, `cuts_of`
    video id -> its detector cuts (stitched ones included)."""
    cuts_of = cuts_of or {}
    lines = (
        json.dumps(queue_row(c, shard_of[c.id], cuts_of.get(c.video_id, ())), sort_keys=True, ensure_ascii=False) + "\n"
        for c in kept
    )
    return "".join(lines).encode("utf-8")


def queue_path(unit: int) -> str:
    return f"{QUEUE_DIR}/part-{unit:05d}.jsonl"
