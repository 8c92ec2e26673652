"""Prompts: a question as OpenAI-style chat messages with inlined media, and the hash that names them."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from mmcurate.schemas.question import Question

from .params import PromptParams, SamplingParams

Messages = list[dict[str, Any]]

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _mime(data: bytes, uri: str) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    ext = uri.rsplit(".", 1)[-1].lower()
    return {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime"}.get(ext, "image/jpeg")


def _data_url(uri: str) -> str:
    import fsspec

    with fsspec.open(uri, "rb") as f:
        data = f.read()
    return f"data:{_mime(data, uri)};base64,{base64.b64encode(data).decode('ascii')}"


def question_text(q: Question, prompt: PromptParams, sampling: SamplingParams) -> str:
    """The text of the user turn: question, 'A. choice' lines, the answer instruction, no-think marker."""
    lines = [q.question.strip()]
    if len(q.choices) > len(_LETTERS):
        raise ValueError(f"question {q.id}: {len(q.choices)} choices, at most {len(_LETTERS)} can be lettered")
    lines += [f"{letter}. {choice.strip()}" for letter, choice in zip(_LETTERS, q.choices, strict=False)]
    if prompt.answer_instruction:
        lines.append(prompt.answer_instruction)
    text = "\n".join(lines)
    if not sampling.thinking:
        text += prompt.nothink_suffix
    return text


def build_messages(q: Question, prompt: PromptParams, sampling: SamplingParams, blind: bool = False) -> Messages:
    """OpenAI chat messages for one question; `blind` asks the same question without its images/video.

    Media are read (fsspec) and inlined as base64 data URLs, so the messages are self-contained for
    any backend, and `prompt_hash` changes when an image's bytes do.
    """
    parts: list[dict[str, Any]] = []
    if not blind:
        media = [("image", uri) for uri in q.images] + ([("video", q.video)] if q.video else [])
        for kind, uri in media:
            if prompt.image_placeholder is not None:
                parts.append({"type": "text", "text": prompt.image_placeholder})
            else:
                parts.append({"type": f"{kind}_url", f"{kind}_url": {"url": _data_url(uri)}})
    parts.append({"type": "text", "text": question_text(q, prompt, sampling)})
    messages: Messages = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append({"role": "user", "content": parts})
    return messages


def prompt_hash(messages: Messages) -> str:
    """sha256 hex of the messages as canonical JSON (media bytes included)."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
