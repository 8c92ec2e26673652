"""The pass-rate corpus's reader adapter: jsonl / parquet rows as `Question`s.

A row needs question text and a reference answer; its images are paths inside the input's root (or
`read.image_root`) unless `read.allow_outside_root`. A row with a field of the wrong type (a
`choices` that is not a list, a question that is not text) is quarantined as `bad_question` with
its line or row number; the rest of the unit reads on (`stages/io/reader.py`).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterator
from typing import Any

import fsspec
from pydantic import Field

from mmcurate.schemas import AnswerType, Question, Source

from .base import Params
from .io import Adapter, BadRow, Item, ReadRefused, ReadReport, Unit, check_regular, clean_text, resolve_inside, utf8
from .io import read_unit as read_with

QUESTION_KEYS = ("question", "problem", "prompt", "query")
ANSWER_KEYS = ("answer", "solution", "ground_truth", "reference")
IMAGE_KEYS = ("images", "image", "image_path")
SCALARS = (str, int, float, bool)


class QuestionReadParams(Params):
    jsonl_unit_lines: int = Field(10_000, ge=1)
    image_root: str | None = None
    """Where relative image paths resolve; None = the folder of the file naming them."""
    allow_outside_root: bool = False
    """Let rows name absolute paths, URIs, `..` out of the root or symlinks leaving it (refused by default)."""


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

    def _images(self, row: dict[str, Any], unit: Unit) -> list[str]:
        raw = next((row[k] for k in IMAGE_KEYS if row.get(k)), [])
        root = self.params.image_root or posixpath.dirname(unit.uri)
        return [resolve_inside(p, root, self.params.allow_outside_root) for p in _strings(raw, "images")]

    def from_row(self, unit: Unit, item: Item) -> Question:
        row = item.row or {}
        if unit.kind == "parquet":
            item.member = str(row.get("id") or item.member)
        text = next((row[k] for k in QUESTION_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
        if text is None:
            raise _bad(f"no question text (looked for {', '.join(QUESTION_KEYS)})")
        answer, answer_type = _answer(row), _answer_type(row)
        images = self._images(row, unit)  # a refused path (ReadRefused) quarantines the row with its reason
        video = row.get("video") or ""
        if not isinstance(video, str):
            raise _bad(f"`video` must be a path, got {type(video).__name__}")
        choices = _strings(row.get("choices") or row.get("options"), "choices")
        domain = row.get("domain") or "general"
        if not isinstance(domain, str):
            raise _bad(f"`domain` must be a string, got {type(domain).__name__}")
        known = {*QUESTION_KEYS, *ANSWER_KEYS, *IMAGE_KEYS, "answer_type", "video", "choices", "options", "domain"}
        extra = {k: v for k, v in row.items() if k not in known}
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
        """Images must be there, and be regular files (a FIFO would hang whoever opens it later)."""
        missing = [p for p in q.images if not fsspec.core.url_to_fs(p)[0].exists(fsspec.core.url_to_fs(p)[1])]
        if missing:
            q.settle("missing_image", f"not found: {missing}", stage="read")
            return
        for p in q.images:
            try:
                check_regular(p)
            except ReadRefused as exc:
                q.settle(exc.reason, str(exc), stage="read")
                return


def read_questions(unit: Unit, params: QuestionReadParams, report: ReadReport | None = None) -> Iterator[Question]:
    """Every row of a jsonl slice or parquet file as a Question, or quarantined with the reason."""
    return read_with(unit, QuestionAdapter(params), report)
