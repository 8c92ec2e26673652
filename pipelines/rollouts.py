"""The rollout steps of the pass-rate corpora: prompts as tasks, the rollout cache, verification,
and the sft / rl verdict from a grade.

A task is one prompt of one question (seen, or blind: without its images) sampled k times; its key
(question id, model, prompt hash, sampling hash) keys the cache, so a rerun, a new threshold or a
select never regenerates a rollout that exists, and an SFT response is always taken from rollouts of
exactly the prompts the run would send.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
import pyarrow.parquet as pq

from mmcurate.schemas import Question, Rollout
from mmcurate.stages import passrate_select as sel
from mmcurate.stages import rollout as ro
from mmcurate.stages.verify import VerifyParams, verify
from mmcurate.stages.writers import FileInfo, parquet_bytes, write_bytes

from .finish import count
from .inference import ModelFailure


def make_handler(cfg: Any) -> Any:
    if cfg.backend == "transformers":
        return ro.TransformersRolloutHandler(cfg.transformers, cfg.sampling)
    if cfg.backend == "openai":
        return ro.OpenAIRolloutHandler(cfg.openai, cfg.sampling)
    return ro.VLLMRolloutHandler(cfg.vllm, cfg.sampling)


@dataclasses.dataclass
class Task:
    """One prompt to sample k times: a question, seen or blind."""

    question: Question
    blind: bool
    messages: list
    key: tuple[str, str, str, str]


def tasks_for(q: Question, cfg: Any) -> list[Task]:
    out = []
    for blind in (False, True) if cfg.blind and (q.images or q.video) else (False,):
        messages = ro.build_messages(q, cfg.prompt, cfg.sampling, blind=blind)
        key = (q.id, cfg.model_name, ro.prompt_hash(messages), cfg.sampling.digest())
        out.append(Task(q, blind, messages, key))
    return out


class JoinCacheFn(beam.DoFn):
    """Per question id: one representative question, the cached rollouts it can use, the tasks it still needs."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[Any]:
        _, group = element
        questions = sorted(group["q"], key=lambda q: (q.source.unit, q.source.index))
        if questions:  # else: rollouts of a question no longer in the input
            yield from self._tasks(questions, {r.key: r for r in group["cached"]})

    def _tasks(self, questions: list[Question], cached: dict[tuple, Rollout]) -> Iterator[Any]:
        first, *dups = questions
        for d in dups:
            yield beam.pvalue.TaggedOutput("settled", d.settle("duplicate_exact", duplicate_of=first.id))
        for task in tasks_for(first, self.cfg):
            if task.key in cached:
                count("rollout.cached")
                yield beam.pvalue.TaggedOutput("rollouts", cached[task.key])
            else:
                count("rollout.to_generate")
                yield task
        yield beam.pvalue.TaggedOutput("graded", first)


def to_rollout(task: Task, responses: list[str], params: VerifyParams) -> Rollout:
    q = task.question
    kind = q.answer_type.value
    verdicts = [
        verify(text, q.answer, kind, params.convention, choices=q.choices, **params.kwargs(kind)) for text in responses
    ]
    return Rollout(
        question_id=q.id,
        model=task.key[1],
        prompt_hash=task.key[2],
        sampling_hash=task.key[3],
        blind=task.blind,
        responses=list(responses),
        extracted=[v.extracted or "" for v in verdicts],
        parsed=[v.parsed for v in verdicts],
        correct=[v.correct for v in verdicts],
    )


class VerifyFn(beam.DoFn):
    """A task's k responses -> (unit, verified Rollout); a task whose generation failed (after the
    one-at-a-time retry) -> (question id, error), tagged `failed`: its question is quarantined."""

    def __init__(self, params: VerifyParams) -> None:
        self.params = params

    def process(self, element: tuple[Task, Any]) -> Iterator[Any]:
        task, pred = element
        if isinstance(pred, ModelFailure):
            yield beam.pvalue.TaggedOutput("failed", (task.question.id, pred.error))
            return
        try:
            rollout = to_rollout(task, pred[0], self.params)
        except Exception as exc:  # a verifier that breaks on one response costs its question only
            yield beam.pvalue.TaggedOutput("failed", (task.question.id, f"verify: {type(exc).__name__}: {exc}"))
            return
        yield task.question.source.unit, rollout


def read_cache(uri: str) -> Iterator[Rollout]:
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return
    for f in sorted(fs.find(path)):
        if f.endswith(".parquet"):
            with fs.open(f, "rb") as fh:
                for row in pq.read_table(fh).to_pylist():
                    yield Rollout.from_row(row)


class WriteRolloutsFn(beam.DoFn):
    """New rollouts of one unit -> one parquet file in the cache, named by its content (never overwritten)."""

    def __init__(self, cache: str) -> None:
        self.cache = cache

    def process(self, element: tuple[int, list[Rollout]]) -> Iterator[FileInfo]:
        unit, rollouts = element
        rollouts = sorted(rollouts, key=lambda r: r.key)
        digest = hashlib.sha256("\n".join("|".join(r.key) for r in rollouts).encode()).hexdigest()[:16]
        data = parquet_bytes(Rollout.to_table(rollouts))
        name = f"part-{unit:05d}-{digest}.parquet"
        yield write_bytes(self.cache, name, data)


def first_correct(rollouts: list[Rollout]) -> str | None:
    """The SFT response by rejection sampling: the first verified-correct sampled answer."""
    for r in sorted(rollouts, key=lambda r: r.key):
        if r.blind:
            continue
        for text, ok in zip(r.responses, r.correct, strict=True):
            if ok:
                return text
    return None


def decide(q: Question, cfg: Any, mode: str, seen: list[Rollout]) -> Question:
    """The sft or rl verdict from the grade (a pending question is kept by the finish path)."""
    if mode == "sft":
        reason = sel.decide_sft(q, cfg.select.sft)
        if reason is None:
            response = first_correct(seen) if cfg.select.sft.response == "rollout" else None
            q.labels["response"] = response or q.labels.get("response") or q.answer
    else:
        reason = sel.decide_rl(q, cfg.select.rl)
    return q.settle(reason) if reason else q
