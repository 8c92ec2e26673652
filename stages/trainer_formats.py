"""The formats trainers already read: verl RL parquet and LLaMA-Factory (ShareGPT-style) SFT JSON."""

from __future__ import annotations

import json
from typing import Any

import fsspec
import pyarrow as pa

from mmcurate.schemas import Question

IMAGE_TOKEN = "<image>"

VERL_SCHEMA = pa.schema(
    [
        pa.field("data_source", pa.string()),
        pa.field("prompt", pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))),
        pa.field("images", pa.list_(pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())]))),
        pa.field("ability", pa.string()),
        pa.field("reward_model", pa.struct([pa.field("style", pa.string()), pa.field("ground_truth", pa.string())])),
        pa.field("extra_info", pa.string()),
    ]
)
"""`extra_info` is a JSON string: verl passes it through untouched, and a JSON string keeps the
parquet schema fixed whatever keys a dataset adds."""


def user_text(q: Question, instruction: str) -> str:
    """The user turn with one `<image>` marker per image, choices as lettered lines, and the answer instruction."""
    parts = [IMAGE_TOKEN * len(q.images) + q.question.strip()]
    if q.choices:
        parts.append("\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(q.choices)))
    if instruction:
        parts.append(instruction)
    return "\n".join(parts)


def _image_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as f:
        return f.read()


def verl_row(q: Question, index: int, data_source: str, instruction: str, embed_images: bool) -> dict[str, Any]:
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": user_text(q, instruction)}],
        "images": [{"bytes": _image_bytes(p) if embed_images else None, "path": p} for p in q.images],
        "ability": q.domain,
        "reward_model": {"style": "rule", "ground_truth": q.answer},
        "extra_info": json.dumps(
            {
                "split": "train",
                "index": index,
                "id": q.id,
                "question": q.question,
                "answer": q.answer,
                "answer_type": q.answer_type.value,
                "choices": q.choices,
                "domain": q.domain,
                "tier": q.labels.get("tier", ""),
                "pass_rate": q.scores.get("pass_rate"),
                "blind_pass_rate": q.scores.get("blind_pass_rate"),
                "k": q.scores.get("k"),
            },
            sort_keys=True,
            ensure_ascii=False,
        ),
    }


def sharegpt_row(q: Question, response: str, instruction: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": user_text(q, instruction)},
            {"role": "assistant", "content": response},
        ],
        "images": list(q.images),
    }


def dataset_info(name: str, file_name: str) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entry for a ShareGPT-style multimodal file."""
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    }
