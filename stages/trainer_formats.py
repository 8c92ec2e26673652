"""The formats trainers already read: verl RL parquet and LLaMA-Factory (ShareGPT-style) SFT JSON.

verl (`verl.utils.dataset.rl_dataset.RLHFDataset`) reads `extra_info` as a dict (`.get("index")`,
`tools_kwargs`, `interaction_kwargs`), so it is a struct with a fixed set of fields, and it passes
`data_source` and `extra_info` on to the reward function (`mmcurate.rewards.compute_score`).
LLaMA-Factory resolves image paths against its `dataset_dir`; SFT rows name their images relative
to the output folder (where `dataset_info.json` lives), so the folder can move.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from typing import Any

import pyarrow as pa

from mmcurate.schemas import Question

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
SPLITS = ("train", "val")

EXTRA_INFO = pa.struct(
    [
        pa.field("index", pa.int64()),
        pa.field("split", pa.string()),
        pa.field("id", pa.string()),
        pa.field("question", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("answer_type", pa.string()),
        pa.field("choices", pa.list_(pa.string())),
        pa.field("domain", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("pass_rate", pa.float64()),
        pa.field("blind_pass_rate", pa.float64()),
        pa.field("k", pa.int64()),
        pa.field("verify", pa.string()),
    ]
)
"""A struct, not a JSON string: verl calls `extra_info.get(...)` on every row. `verify` holds the
verifier settings the grading used (JSON), so the reward a trainer computes is the selection's."""

_MESSAGES = pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))
EMBEDDED_IMAGES = pa.list_(pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())]))
IMAGE_PATHS = pa.list_(pa.struct([pa.field("image", pa.string())]))
"""verl opens `bytes` whenever the key is there, so rows that only point at their images have no such key:
`{"image": uri}` is what `qwen_vl_utils.fetch_image` reads."""
VIDEOS = pa.list_(pa.struct([pa.field("video", pa.string())]))
SHAREGPT_SCHEMA = pa.schema(
    [
        pa.field("messages", _MESSAGES),
        pa.field("images", pa.list_(pa.string())),
        pa.field("videos", pa.list_(pa.string())),
    ]
)
"""LLaMA-Factory's ShareGPT columns with their types fixed: a part with no video (or no image) has the
same schema as one with, so the folder loads as one table (JSON parts would each infer their own)."""
REWARD_MODEL = pa.struct([pa.field("style", pa.string()), pa.field("ground_truth", pa.string())])


def verl_schema(embed_images: bool) -> pa.Schema:
    return pa.schema(
        [
            pa.field("data_source", pa.string()),
            pa.field("prompt", _MESSAGES),
            pa.field("images", EMBEDDED_IMAGES if embed_images else IMAGE_PATHS),
            pa.field("videos", VIDEOS),
            pa.field("ability", pa.string()),
            pa.field("reward_model", REWARD_MODEL),
            pa.field("extra_info", EXTRA_INFO),
        ]
    )


VERL_SCHEMA = verl_schema(True)

_MARKER = re.compile(re.escape(IMAGE_TOKEN))
UNIT_STRIDE = 10**9
"""`extra_info.index` = unit * UNIT_STRIDE + position in the unit: unique across a run's inputs."""


def user_text(q: Question, instruction: str) -> str:
    """The user turn with one `<image>` marker per image (a question that already places as many keeps
    them where they are; stray ones are removed), `<video>` for a video, choices as lettered lines,
    and the answer instruction."""
    text = q.question.strip()
    if len(_MARKER.findall(text)) != len(q.images):
        text = IMAGE_TOKEN * len(q.images) + _MARKER.sub("", text).strip()
    if text.count(VIDEO_TOKEN) != (1 if q.video else 0):
        text = (VIDEO_TOKEN if q.video else "") + text.replace(VIDEO_TOKEN, "").strip()
    parts = [text]
    if q.choices:
        parts.append("\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(q.choices)))
    if instruction:
        parts.append(instruction)
    return "\n".join(parts)


def split_key(q: Question) -> str:
    """What decides a question's split: its text, answer, choices and media paths relative to the
    file the question came from, not where the corpus lies (the question id hashes the media refs as
    given, absolute paths included) and not the bare file names (`0001/image.jpg`, `0002/image.jpg`)."""
    base = posixpath.dirname(q.source.uri)
    media = [posixpath.relpath(u, base) if base and u.startswith(base + "/") else u for u in (*q.images, q.video) if u]
    return json.dumps([q.question, q.answer, list(q.choices), media], ensure_ascii=False)


def split_of(key: str, val_fraction: float) -> str:
    """`train` or `val`, from `split_key` alone: the same question lands in the same split on every
    run, wherever the corpus lies, whatever the partitioning, the other questions or the thresholds."""
    if val_fraction <= 0:
        return "train"
    h = int.from_bytes(hashlib.sha256(f"split:{key}".encode()).digest()[:8], "big")
    return "val" if h / 2**64 < val_fraction else "train"


def data_source_of(domain: str, template: str, per_domain: dict[str, str]) -> str:
    """verl's `data_source`: the domain's own name if configured, else the template (`{domain}` filled)."""
    return per_domain.get(domain) or template.format(domain=domain or "general")


def verl_row(
    q: Question, data_source: str, instruction: str, images: list[bytes] | None, split: str, verify: str
) -> dict[str, Any]:
    """One verl row; `images` are the images' bytes to embed, or None to point at them by URI."""
    shown = (
        [{"bytes": b, "path": p} for b, p in zip(images, q.images, strict=True)]
        if images is not None
        else [{"image": p} for p in q.images]
    )
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": user_text(q, instruction)}],
        "images": shown,
        "videos": [{"video": q.video}] if q.video else [],
        "ability": q.domain,
        "reward_model": {"style": "rule", "ground_truth": q.answer},
        "extra_info": {
            "index": q.source.unit * UNIT_STRIDE + q.source.index,
            "split": split,
            "id": q.id,
            "question": q.question,
            "answer": q.answer,
            "answer_type": q.answer_type.value,
            "choices": list(q.choices),
            "domain": q.domain,
            "tier": q.labels.get("tier", ""),
            "pass_rate": q.scores.get("pass_rate"),
            "blind_pass_rate": q.scores.get("blind_pass_rate"),
            "k": None if q.scores.get("k") is None else int(q.scores["k"]),
            "verify": verify,
        },
    }


def media_name(data: bytes, uri: str, folder: str) -> str:
    """A content-addressed relative path (`images/<sha256>.<ext>`): the same file under two names is
    stored once, and two files of one name never collide."""
    ext = posixpath.splitext(uri.split("?", 1)[0])[1].lower() or ".bin"
    return f"{folder}/{hashlib.sha256(data).hexdigest()}{ext}"


def sharegpt_row(q: Question, response: str, instruction: str, images: list[str], videos: list[str]) -> dict[str, Any]:
    """`images` and `videos` are the paths relative to the dataset folder (see `media_name`)."""
    return {
        "messages": [
            {"role": "user", "content": user_text(q, instruction)},
            {"role": "assistant", "content": response},
        ],
        "images": images,
        "videos": videos,  # always there (LLaMA-Factory reads [] as none)
    }


def dataset_info(name: str, file_name: str) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entry for a ShareGPT-style multimodal file (or folder of files)."""
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images", "videos": "videos"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    }


def verify_json(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))
