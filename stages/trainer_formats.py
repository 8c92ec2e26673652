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
from typing import Any

import fsspec
import pyarrow as pa

from mmcurate.schemas import Question

IMAGE_TOKEN = "<image>"
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

VERL_SCHEMA = pa.schema(
    [
        pa.field("data_source", pa.string()),
        pa.field("prompt", pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))),
        pa.field("images", pa.list_(pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())]))),
        pa.field("ability", pa.string()),
        pa.field("reward_model", pa.struct([pa.field("style", pa.string()), pa.field("ground_truth", pa.string())])),
        pa.field("extra_info", EXTRA_INFO),
    ]
)


def user_text(q: Question, instruction: str) -> str:
    """The user turn with one `<image>` marker per image, choices as lettered lines, and the answer instruction."""
    parts = [IMAGE_TOKEN * len(q.images) + q.question.strip()]
    if q.choices:
        parts.append("\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(q.choices)))
    if instruction:
        parts.append(instruction)
    return "\n".join(parts)


def read_image(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as f:
        return f.read()


def split_of(question_id: str, val_fraction: float) -> str:
    """`train` or `val`, from the question id alone: the same question lands in the same split on
    every run, whatever the partitioning, the other questions or a threshold change."""
    if val_fraction <= 0:
        return "train"
    h = int.from_bytes(hashlib.sha256(f"split:{question_id}".encode()).digest()[:8], "big")
    return "val" if h / 2**64 < val_fraction else "train"


def data_source_of(domain: str, template: str, per_domain: dict[str, str]) -> str:
    """verl's `data_source`: the domain's own name if configured, else the template (`{domain}` filled)."""
    return per_domain.get(domain) or template.format(domain=domain or "general")


def verl_row(
    q: Question, index: int, data_source: str, instruction: str, embed_images: bool, split: str, verify: str
) -> dict[str, Any]:
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": user_text(q, instruction)}],
        "images": [{"bytes": read_image(p) if embed_images else None, "path": p} for p in q.images],
        "ability": q.domain,
        "reward_model": {"style": "rule", "ground_truth": q.answer},
        "extra_info": {
            "index": index,
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


def image_name(data: bytes, uri: str, folder: str = "images") -> str:
    """A content-addressed relative path: the same image under two names is stored once."""
    ext = posixpath.splitext(uri.split("?", 1)[0])[1].lower() or ".bin"
    return f"{folder}/{hashlib.sha256(data).hexdigest()}{ext}"


def sharegpt_row(q: Question, response: str, instruction: str, images: list[str]) -> dict[str, Any]:
    """`images` are the paths relative to the dataset folder (see `image_name`)."""
    return {
        "messages": [
            {"role": "user", "content": user_text(q, instruction)},
            {"role": "assistant", "content": response},
        ],
        "images": images,
    }


def dataset_info(name: str, file_name: str) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entry for a ShareGPT-style multimodal file (or folder of files)."""
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    }


def verify_json(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))
