"""The pass-rate corpus's reader adapter: jsonl / parquet rows as `Question`s.

A row needs question text and a reference answer (`question`/`answer` keys, or the first user and
assistant turns of OpenAI / LLaMA-Factory `messages` or LLaVA `conversations`); its images are paths
inside the input's root (or `read.image_root`) unless `read.allow_outside_root`. Images stored in
the row itself (a Hugging Face `Image` column's bytes, `data:` URLs) are written once to
`read.embedded_images` and referred to by that path, since every stage that reads a question's
images (rollout prompts, OCR, trainer files) opens a URI; without that folder such a row is
quarantined as `embedded_image`. A row with a field of the wrong type (a `choices` that is not a
list, a question that is not text) is quarantined as `bad_question` with its line or row number;
the rest of the unit reads on (`stages/io/reader.py`).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from pydantic import Field

from mmcurate.schemas import AnswerType, Question, Source

from .chat import Chat, chat_of, data_url_bytes, image_values, media_value
from .io import (
    Adapter,
    BadRow,
    Item,
    ReadBase,
    ReadRefused,
    ReadReport,
    Unit,
    check_regular,
    clean_text,
    resolve_inside,
    unstrip,
    utf8,
)
from .io import read_unit as read_with

QUESTION_KEYS = ("question", "problem", "prompt", "query")
ANSWER_KEYS = ("answer", "solution", "ground_truth", "reference")
IMAGE_KEYS = ("images", "image", "image_path")
SCALARS = (str, int, float, bool)


class QuestionReadParams(ReadBase):
    jsonl_unit_lines: int = Field(10_000, ge=1)
    image_root: str | None = None
    """Where relative image paths resolve; None = the folder of the file naming them."""
    allow_outside_root: bool = False
    """Let rows name absolute paths, URIs, `..` out of the root or symlinks leaving it (refused by default)."""
    split: str = Field("train", min_length=1)
    """The Hugging Face split to read from a folder whose files name splits ("all": every one), as the
    caption corpus's `read.split` (stages/readers.py)."""
    embedded_images: str | None = None
    """Folder (local or a URI) where images stored in the rows (HF `Image` bytes, `data:` URLs) are
    written, each once under its content hash, for questions to refer to by path; None: such rows
    are quarantined as `embedded_image`."""


def question_id(question: str, answer: str, images: list[str], video: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (question, answer, *images, video):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _bad(message: str) -> BadRow:
    return BadRow("bad_question", message)


def _answer(row: dict[str, Any]) -> str:
    answer = next((row[k] for k in ANSWER_KEYS if row.get(k) not in (None, "")), None)
    if answer is None:
        raise _bad(f"no reference answer (looked for {', '.join(ANSWER_KEYS)})")
    if isinstance(answer, (list, dict)):
        return json.dumps(answer, sort_keys=True, ensure_ascii=False)
    if not isinstance(answer, SCALARS):
        raise _bad(f"the answer is a {type(answer).__name__}")
    return str(answer)


def _text_and_answer(row: dict[str, Any], chat: Chat | None) -> tuple[str, str]:
    """Question text and reference answer: the named keys first, else the chat's first exchange."""
    text = next((row[k] for k in QUESTION_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    if text is None and chat is not None and chat.prompt:
        text = chat.prompt
    if text is None:
        also = f", the first user turn of `{chat.key}`" if chat else ""
        raise _bad(f"no question text (looked for {', '.join(QUESTION_KEYS)}{also})")
    if chat is None or any(row.get(k) not in (None, "") for k in ANSWER_KEYS):
        return text, _answer(row)
    if not chat.answer:
        raise _bad(f"no reference answer: `{chat.key}` has no assistant turn with text")
    return text, chat.answer


def _first_question_images(values: list[Any], chat: Chat | None) -> list[Any]:
    """A multi-turn chat is read as its first exchange: the images its first user turn refers to,
    counting `<image>` markers in order (LLaMA-Factory's rule); with no markers, all of the row's."""
    if chat is None or chat.answers <= 1 or chat.marked_images == 0:
        return values
    if chat.marked_images != len(values):
        raise _bad(
            f"{chat.answers} exchanges whose {chat.marked_images} image markers do not match the row's "
            f"{len(values)} images: which images the first question shows cannot be told"
        )
    return values[: chat.prompt_images]


def save_image(data: bytes, folder: str) -> str:
    """The URI of `data` under `folder` as `<content hash>.<format>`, written once (by a temporary name
    and a rename): a retry, a rerun or the same image in another row finds it there."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "img").lower()
    except Exception as exc:  # not an image, or one Pillow refuses to open
        error = f"the image stored in the row does not open: {type(exc).__name__}: {exc}"
        raise BadRow("decode_error", error) from None
    ext = {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt)
    fs, root = fsspec.core.url_to_fs(folder)
    path = posixpath.join(root, f"{hashlib.blake2b(data, digest_size=16).hexdigest()}.{ext}")
    if not fs.exists(path):
        fs.makedirs(root, exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    return unstrip(fs, path)


def _strings(value: Any, what: str) -> list[str]:
    """A list of scalars as strings (one string is a list of one); anything else is a bad row."""
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, SCALARS) for v in value):
        raise _bad(f"`{what}` must be a list of strings, got {type(value).__name__}")
    return [str(v) for v in value]


def _answer_type(row: dict[str, Any]) -> AnswerType:
    value = row.get("answer_type") or "text"
    if not isinstance(value, str) or value.lower() not in {t.value for t in AnswerType}:
        raise _bad(f"unknown answer_type {value!r}; one of {[t.value for t in AnswerType]}")
    return AnswerType(value.lower())


class QuestionAdapter(Adapter):
    params: QuestionReadParams

    def quarantine(self, unit: Unit, item: Item, reason: str, error: str) -> Question:
        src = Source(uri=utf8(unit.uri), unit=unit.index, member=utf8(item.member), index=item.index)
        rec = Question(id=question_id(src.ref(), "", [], ""), source=src, question="", answer="")
        return rec.settle(reason, error, stage="read")

    def from_members(self, unit: Unit, item: Item) -> Question:
        raise _bad(f"questions are read from jsonl or parquet, not tar shards ({unit.uri})")

    def from_file(self, unit: Unit, item: Item) -> Question:
        raise _bad(f"questions are read from jsonl or parquet, not folders ({unit.uri})")

    def _images(self, row: dict[str, Any], unit: Unit, chat: Chat | None) -> list[str]:
        column = next((k for k in IMAGE_KEYS if row.get(k)), None)
        root = self.params.image_root or posixpath.dirname(unit.uri)
        return [self._image(v, root) for v in _first_question_images(image_values(row, column, chat), chat)]

    def _image(self, value: Any, root: str) -> str:
        """A path inside the root, or where an image stored in the row (HF `{bytes, path}`, bytes, a
        data: URL) was written; a path-only HF struct is its path."""
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
            if not value:
                raise BadRow("missing_image", "an image struct with neither bytes nor a path")
        inline = data_url_bytes(value) if isinstance(value, str) else value
        if isinstance(inline, (bytes, bytearray)):
            if not self.params.embedded_images:
                raise BadRow(
                    "embedded_image",
                    "the row stores its image itself (Hugging Face Image bytes or a data: URL); questions "
                    "refer to images by path: set read.embedded_images to a folder to write such images to",
                )
            return save_image(bytes(inline), self.params.embedded_images)
        if not isinstance(value, str) or not value:
            raise _bad(f"an image must be a path, a data: URL or a {{bytes, path}} struct, not {value!r:.60}")
        return resolve_inside(value, root, self.params.allow_outside_root)

    def from_row(self, unit: Unit, item: Item) -> Question:
        row = item.row or {}
        if unit.kind == "parquet":
            item.member = str(row.get("id") or item.member)
        chat = chat_of(row)
        text, answer = _text_and_answer(row, chat)
        answer_type = _answer_type(row)
        images = self._images(row, unit, chat)  # a refused path (ReadRefused) quarantines the row with its reason
        video = row.get("video") or ""
        if not isinstance(video, str):
            raise _bad(f"`video` must be a path, got {type(video).__name__}")
        if video:  # resolved and kept inside the root exactly as images are
            video = resolve_inside(
                video, self.params.image_root or posixpath.dirname(unit.uri), self.params.allow_outside_root
            )
        choices = _strings(row.get("choices") or row.get("options"), "choices")
        domain = row.get("domain") or "general"
        if not isinstance(domain, str):
            raise _bad(f"`domain` must be a string, got {type(domain).__name__}")
        known = {*QUESTION_KEYS, *ANSWER_KEYS, *IMAGE_KEYS, "answer_type", "video", "choices", "options", "domain"}
        known.add(chat.key if chat else "")
        extra = {k: v for k, v in row.items() if k not in known and not media_value(v)}
        q = Question(
            id=question_id(text, answer, images, video),
            source=Source(uri=unit.uri, unit=unit.index, member=utf8(item.member), index=item.index),
            question=clean_text(text),
            answer=clean_text(answer),
            answer_type=answer_type,
            choices=[clean_text(c) for c in choices],
            images=images,
            video=video,
            domain=utf8(domain),
            extra=utf8(json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str)),
        )
        self._check_images(q)
        return q

    def _check_images(self, q: Question) -> None:
        """Images (and the video) must be there, and be regular files (a FIFO would hang whoever opens it)."""
        media = [*q.images, *([q.video] if q.video else [])]
        missing = [p for p in media if not fsspec.core.url_to_fs(p)[0].exists(fsspec.core.url_to_fs(p)[1])]
        if missing:
            q.settle("missing_image", f"not found: {missing}", stage="read")
            return
        for p in media:
            try:
                check_regular(p)
            except ReadRefused as exc:
                q.settle(exc.reason, str(exc), stage="read")
                return


def read_questions(unit: Unit, params: QuestionReadParams, report: ReadReport | None = None) -> Iterator[Question]:
    """Every row of a jsonl slice or parquet file as a Question, or quarantined with the reason."""
    return read_with(unit, QuestionAdapter(params), report)
