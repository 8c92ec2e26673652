"""Chat rows, as both the caption and the question corpus read them.

OpenAI / LLaMA-Factory `messages` (`role`/`content`, content a string or a list of OpenAI parts:
`text`, `image_url`, `image`) and LLaVA / ShareGPT `conversations` (`from`/`value`): the first
exchange, how many images each turn refers to, and the images the turns carry themselves
(`image_url` paths or inline `data:` URLs). A chat of the wrong shape is a bad row, that row alone.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .io import BadRow, clean_text

# Placeholder tokens other tools leave in caption text (LLaVA, Data-Juicer).
_IMAGE_TOKENS = re.compile(r"<image>|<__dj__image>|<\|__dj__eoc\|>")


def clean_caption(text: str) -> str:
    """Captions never carry NUL or other control characters (each becomes a space) or image tokens."""
    return _IMAGE_TOKENS.sub("", clean_text(text)).strip()


CHAT_KEYS = ("messages", "conversations")
"""OpenAI / LLaMA-Factory `messages` ({role, content}) and LLaVA / ShareGPT `conversations` ({from, value})."""
USER_ROLES = frozenset({"user", "human"})
ASSISTANT_ROLES = frozenset({"assistant", "gpt"})
_MARKERS = re.compile(r"<image>|<__dj__image>")


@dataclass(frozen=True)
class Chat:
    """What both corpora read from a chat row: its first exchange, and how many images each part names."""

    key: str
    prompt: str
    """The first user turn, image markers removed."""
    answer: str | None
    """The first assistant turn; None when the row has none."""
    answers: int
    """Assistant turns in the row (more than one: a multi-turn conversation)."""
    prompt_images: int
    """Images the first user turn refers to (`<image>` markers, image content parts)."""
    marked_images: int
    """Images all turns refer to."""
    refs: tuple[str, ...]
    """Images the turns carry themselves (an `image_url` part's URL, an image part's path), in order."""


def _part_ref(part: dict[str, Any], where: str) -> str:
    """An image part's own URL or path ('' for a placeholder whose image is in the row's `images`)."""
    value = part.get("image_url") if part["type"] == "image_url" else next(
        (part[k] for k in ("image", "url", "path") if part.get(k) is not None), None
    )  # fmt: skip
    if isinstance(value, dict):  # OpenAI: {"image_url": {"url": ...}}
        value = value.get("url")
    if value is not None and not isinstance(value, str):
        raise BadRow("bad_row", f"{where}: an image part's URL is a {type(value).__name__}, not a string")
    return value or ""


def _parts(parts: list, where: str) -> tuple[str, int, tuple[str, ...]]:
    """(text, images, image refs) of an OpenAI content list: text, image_url and image parts."""
    texts: list[str] = []
    images, refs = 0, []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("image", "image_url"):
            images += 1
            ref = _part_ref(part, where)
            if ref:
                refs.append(ref)
        elif kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            shown = f"of type {kind!r}" if kind else f"that is a {type(part).__name__}"
            raise BadRow("bad_row", f"{where}: a content part {shown} is neither text (a string) nor an image")
    return "\n".join(texts), images, tuple(refs)


def chat_turn(turn: Any, where: str) -> tuple[str, str, int, tuple[str, ...]]:
    """(role, text, images referred to, image refs) of one turn; a turn of the wrong shape is a bad row."""
    if not isinstance(turn, dict):
        raise BadRow("bad_row", f"{where} is a {type(turn).__name__}, not a turn object")
    role = turn.get("role", turn.get("from"))
    if not isinstance(role, str):
        raise BadRow("bad_row", f"{where} has no role (`role` or `from`)")
    content = turn.get("content", turn.get("value"))
    images, refs = 0, ()
    if isinstance(content, list):
        content, images, refs = _parts(content, where)
    elif content is not None and not isinstance(content, str):
        raise BadRow("bad_row", f"{where}: content is a {type(content).__name__}, not text or a list of parts")
    content = content or ""
    return role.lower(), clean_caption(content), images + len(_MARKERS.findall(content)), refs


def chat_of(row: dict[str, Any]) -> Chat | None:
    """The row's chat (`messages`, else `conversations`); None when it has neither. A chat that is
    no list of turns, or a turn or content of the wrong type, is a bad row."""
    key = next((k for k in CHAT_KEYS if row.get(k) is not None), None)
    if key is None:
        return None
    value = row[key]
    if not isinstance(value, (list, tuple)):
        raise BadRow("bad_row", f"`{key}` is a {type(value).__name__}, not a list of turns")
    turns = [chat_turn(t, f"`{key}`[{i}]") for i, t in enumerate(value)]
    users = [t for t in turns if t[0] in USER_ROLES]
    answers = [t[1] for t in turns if t[0] in ASSISTANT_ROLES]
    first = users[0] if users else ("user", "", 0, ())
    return Chat(
        key=key,
        prompt=first[1],
        answer=answers[0] if answers else None,
        answers=len(answers),
        prompt_images=first[2],
        marked_images=sum(t[2] for t in turns),
        refs=tuple(r for t in turns for r in t[3]),
    )


def data_url_bytes(url: str) -> bytes | None:
    """The bytes a `data:` URL holds (OpenAI image_url parts inline images so); None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise BadRow("bad_row", "a data: URL without its ',' before the data")
    if not header.endswith(";base64"):
        return urllib.parse.unquote_to_bytes(payload)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRow("bad_row", f"a data: URL whose base64 does not decode: {exc}") from None


def media_value(value: Any) -> bool:
    """Image bytes, or a Hugging Face `Image` struct holding them: kept out of `extra` (no image dumped as JSON)."""
    return isinstance(value, (bytes, bytearray)) or (isinstance(value, dict) and isinstance(value.get("bytes"), bytes))


def image_values(row: dict[str, Any], column: str | None, chat: Chat | None) -> list[Any]:
    """Every image a row names: its image column's value (one, or a list) and its chat's own image refs."""
    value = row.get(column) if column else None
    values = list(value) if isinstance(value, (list, tuple)) else [] if value in (None, "") else [value]
    return values + list(chat.refs if chat else ())
