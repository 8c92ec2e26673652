"""The annotation queue: every kept clip, where it sits in the shards, and the models' guesses.

One jsonl per unit (`annotation/part-UUUUU.jsonl`), one row per kept clip, joined to the corpus by
clip id; the Label Studio round trip pushes these rows as tasks with the pre-annotations attached.
"""

from __future__ import annotations

import json
from typing import Any

from mmcurate.schemas import ClipRecord

QUEUE_DIR = "annotation"


def queue_row(clip: ClipRecord, shard: str) -> dict[str, Any]:
    """One clip for human annotation: where it is, and the model pre-annotations to start from."""
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
            "text": [{"text": line.text, "box": line.box, "confidence": line.confidence} for line in clip.ocr],
        },
        "scores": dict(sorted(clip.scores.items())),
    }


def queue_bytes(kept: list[ClipRecord], shard_of: dict[str, str]) -> bytes:
    """The queue file of one unit: `shard_of` maps clip id -> the shard path holding it."""
    lines = (json.dumps(queue_row(c, shard_of[c.id]), sort_keys=True, ensure_ascii=False) + "\n" for c in kept)
    return "".join(lines).encode("utf-8")


def queue_path(unit: int) -> str:
    return f"{QUEUE_DIR}/part-{unit:05d}.jsonl"
