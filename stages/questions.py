"""Question readers (jsonl / parquet) and pass-rate grading: from rollouts to tiers.

Grading is pure arithmetic over verified rollouts, kept apart from selection thresholds so that
`sft` and `rl` (and a later re-selection) decide from the same stored counts.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import pyarrow.parquet as pq

from mmcurate.schemas import AnswerType, Question, Rollout, Source

from .base import Params
from .readers import Unit, _utf8

QUESTION_KEYS = ("question", "problem", "prompt", "query")
ANSWER_KEYS = ("answer", "solution", "ground_truth", "reference")
IMAGE_KEYS = ("images", "image", "image_path")


def question_id(question: str, answer: str, images: list[str], video: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (question, answer, *images, video):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _quarantine(unit: Unit, index: int, member: str, reason: str, error: str) -> Question:
    src = Source(uri=unit.uri, unit=unit.index, member=member, index=index)
    rec = Question(id=question_id(src.ref(), "", [], ""), source=src, question="", answer="")
    return rec.settle(reason, error, stage="read")


def _resolve(path: str, base_uri: str, image_root: str | None) -> str:
    if "://" in path or path.startswith("/"):
        return path
    return posixpath.join(image_root or posixpath.dirname(base_uri), path)


def question_from_row(row: dict[str, Any], unit: Unit, index: int, member: str, image_root: str | None) -> Question:
    """One input row -> Question; raises ValueError with a message for rows that cannot be one."""
    text = next((row[k] for k in QUESTION_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    answer = next((row[k] for k in ANSWER_KEYS if row.get(k) not in (None, "")), None)
    if text is None:
        raise ValueError(f"no question text (looked for {', '.join(QUESTION_KEYS)})")
    if answer is None:
        raise ValueError(f"no reference answer (looked for {', '.join(ANSWER_KEYS)})")
    answer_type = str(row.get("answer_type") or "text").lower()
    if answer_type not in {t.value for t in AnswerType}:
        raise ValueError(f"unknown answer_type {answer_type!r}; one of {[t.value for t in AnswerType]}")
    raw_images = next((row[k] for k in IMAGE_KEYS if row.get(k)), [])
    images = [raw_images] if isinstance(raw_images, str) else list(raw_images)
    images = [_resolve(str(p), unit.uri, image_root) for p in images]
    video = str(row.get("video") or "")
    choices = [str(c) for c in row.get("choices") or row.get("options") or []]
    known = {*QUESTION_KEYS, *ANSWER_KEYS, *IMAGE_KEYS, "answer_type", "video", "choices", "options", "domain"}
    extra = {k: v for k, v in row.items() if k not in known}
    answer_text = json.dumps(answer) if isinstance(answer, (list, dict)) else str(answer)
    return Question(
        id=question_id(text, answer_text, images, video),
        source=Source(uri=unit.uri, unit=unit.index, member=member, index=index),
        question=_utf8(text),
        answer=_utf8(answer_text),
        answer_type=AnswerType(answer_type),
        choices=choices,
        images=images,
        video=video,
        domain=str(row.get("domain") or "general"),
        extra=_utf8(json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str)),
    )


def read_questions(unit: Unit, image_root: str | None = None) -> Iterator[Question]:
    """Every row of a jsonl slice or parquet file as a Question, or quarantined with the reason."""
    count = 0
    try:
        for index, member, row in _rows(unit):
            count += 1
            if isinstance(row, Exception):
                yield _quarantine(unit, index, member, "bad_json", str(row))
                continue
            try:
                q = question_from_row(row, unit, index, member, image_root)
            except ValueError as exc:
                yield _quarantine(unit, index, member, "bad_question", str(exc))
                continue
            missing = [p for p in q.images if not fsspec.core.url_to_fs(p)[0].exists(fsspec.core.url_to_fs(p)[1])]
            if missing:
                q.settle("missing_image", f"not found: {missing}", stage="read")
            yield q
    except Exception as exc:  # the unit broke part-way: one record stands for the unread rest
        yield _quarantine(unit, count, "<unread-remainder>", "read_error", f"{type(exc).__name__}: {exc}")


def _rows(unit: Unit) -> Iterator[tuple[int, str, Any]]:
    if unit.kind == "jsonl":
        with fsspec.open(unit.uri, "rb") as f:
            f.seek(unit.offset)
            for lineno, raw in enumerate(f, unit.start):
                if unit.stop >= 0 and lineno >= unit.stop:
                    break
                try:
                    row = json.loads(raw.decode("utf-8", "replace"))
                    if not isinstance(row, dict):
                        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
                except ValueError as exc:
                    yield lineno, f"line{lineno + 1}", exc
                    continue
                yield lineno, f"line{lineno + 1}", row
    elif unit.kind == "parquet":
        with fsspec.open(unit.uri, "rb") as f:
            i = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    yield i, str(row.get("id") or f"row{i}"), row
                    i += 1
    else:
        raise ValueError(f"questions are read from jsonl or parquet, not {unit.kind} ({unit.uri})")


# ------------------------------------------------------------------------------------------- grading


class GradeParams(Params):
    blind_flag: float = 0.5
    """A question whose blind pass rate (asked without its images) reaches this is `answerable_blind`."""
    leak_min_chars: int = 2
    """Reference answers shorter than this (in letters/digits) are not searched for as leaks."""


PASS_SCORES = tuple(
    f"{prefix}{name}" for prefix in ("", "blind_") for name in ("k", "correct", "unparseable", "pass_rate")
)
"""What grading writes into a question's scores (blind_*: asked without its images or video)."""
PASS_LABELS = ("answerable_blind", "answer_leak", "tier", "response")


def pass_counts(rollouts: Iterable[Rollout]) -> dict[str, float]:
    k = correct = unparseable = 0
    for r in rollouts:
        k += len(r.correct)
        correct += sum(r.correct)
        unparseable += sum(not p for p in r.parsed)
    return {
        "k": float(k),
        "correct": float(correct),
        "unparseable": float(unparseable),
        "pass_rate": correct / k if k else 0.0,
    }


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[^\w]+", " ", text).strip()


def answer_leaks(answer: str, haystack: str, min_chars: int) -> bool:
    """The reference answer appears in `haystack` as whole words (after normalisation)."""
    needle = _norm(answer)
    if sum(ch.isalnum() for ch in needle) < min_chars:
        return False
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", _norm(haystack)) is not None


def grade(q: Question, seen: list[Rollout], blind: list[Rollout], ocr_text: str, params: GradeParams) -> Question:
    """Write pass counts, blind pass counts and leak flags into the question's scores and labels."""
    q.scores.update(pass_counts(seen))
    if blind:
        b = pass_counts(blind)
        q.scores.update({f"blind_{k}": v for k, v in b.items()})
        if b["pass_rate"] >= params.blind_flag:
            q.labels["answerable_blind"] = "true"
    if q.answer_type != AnswerType.CHOICE:
        if answer_leaks(q.answer, q.question, params.leak_min_chars):
            q.labels["answer_leak"] = "question"
        elif ocr_text and answer_leaks(q.answer, ocr_text, params.leak_min_chars):
            q.labels["answer_leak"] = "image_text"
    return q


def histogram(pass_rates: Iterable[float], buckets: int = 10) -> list[int]:
    """Counts of pass rates in [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]."""
    out = [0] * buckets
    for p in pass_rates:
        out[min(int(p * buckets), buckets - 1)] += 1
    return out
