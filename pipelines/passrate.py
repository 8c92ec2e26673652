"""SFT and RL selection from pretrained-model pass rates (`mmcurate sft`, `mmcurate rl`).

    'ReadUnits' -> 'JoinCache' (questions x cached rollouts, by question id)
      -> 'Rollouts' (RunInference over the prompts with no cached rollout) -> 'Verify' -> 'CacheRollouts'
      -> 'GradeAndSelect' (pass rate, blind pass rate, answer leak; sft | rl verdict) -> 'ApplyThresholds' -> 'Finish'

Rollouts are cached under `rollout.cache` keyed by (question, model, prompt hash, sampling hash):
a rerun, a new threshold or a new output never regenerates a key that exists; adding a model
generates only that model's rollouts. The trainer files (verl parquet, LLaMA-Factory JSON) are the
corpus's unit outputs in the shared finish path.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
import pyarrow.parquet as pq
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from pydantic import Field

from mmcurate.schemas import Fields, Question, Rollout, Status
from mmcurate.stages import passrate_select as sel
from mmcurate.stages import rollout as ro
from mmcurate.stages.base import Params
from mmcurate.stages.ocr import OcrParams
from mmcurate.stages.questions import PASS_LABELS, PASS_SCORES, GradeParams, grade, read_questions
from mmcurate.stages.readers import ReadParams, Unit, list_units
from mmcurate.stages.verify import VerifyParams, verify
from mmcurate.stages.writers import FileInfo, atomic_write, join, parquet_bytes

from .common import COUNTS_TAG, ReadUnits
from .config import CorpusConfig
from .finish import Finish, Run, count
from .models import GuardedHandler, ModelFailure
from .passrate_outputs import TrainerOutputs
from .thresholds import Thresholds


class QuestionReadParams(Params):
    jsonl_unit_lines: int = Field(10_000, ge=1)
    image_root: str | None = None


class RolloutConfig(Params):
    backend: str = "transformers"
    """transformers (CPU/GPU, small models), openai (an OpenAI-compatible endpoint: vLLM or SGLang
    serve), or vllm (Beam's vLLM handler: a vLLM server per worker, GPU hosts)."""
    transformers: ro.TransformersParams = Field(default_factory=ro.TransformersParams)
    openai: ro.OpenAIParams = Field(default_factory=ro.OpenAIParams)
    vllm: ro.VLLMParams = Field(default_factory=ro.VLLMParams)
    sampling: ro.SamplingParams = Field(default_factory=ro.SamplingParams)
    prompt: ro.PromptParams = Field(default_factory=ro.PromptParams)
    blind: bool = True
    """Also sample each question without its images/video, to flag `answerable_blind`."""
    cache: str | None = None
    """Rollout cache URI shared across runs; null = <output>/rollouts."""

    def model_post_init(self, _context: object) -> None:
        if self.backend not in ("transformers", "openai", "vllm"):
            raise ValueError(f"rollout.backend must be transformers, openai or vllm, got {self.backend!r}")

    @property
    def model_name(self) -> str:
        return {"transformers": self.transformers.model, "openai": self.openai.model, "vllm": self.vllm.model}[
            self.backend
        ]


class LeakParams(Params):
    ocr: bool = False
    """Also look for the reference answer in the OCR text of the question's images (PP-OCR)."""


class SelectParams(Params):
    sft: sel.SftParams = Field(default_factory=sel.SftParams)
    rl: sel.RlParams = Field(default_factory=sel.RlParams)


class PassRateOutput(Params):
    name: str = "mmcurate"
    """Dataset name: verl's data_source and the LLaMA-Factory dataset_info key."""
    embed_images: bool = True
    """verl parquet: image bytes inside the parquet (true) or paths only (false)."""


class PassRateConfig(CorpusConfig):
    read: QuestionReadParams = Field(default_factory=QuestionReadParams)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    verify: VerifyParams = Field(default_factory=VerifyParams)
    grade: GradeParams = Field(default_factory=GradeParams)
    leak: LeakParams = Field(default_factory=LeakParams)
    ocr: OcrParams = Field(default_factory=OcrParams)
    select: SelectParams = Field(default_factory=SelectParams)
    output: PassRateOutput = Field(default_factory=PassRateOutput)

    def cache_uri(self, out_root: str) -> str:
        return self.rollout.cache or join(out_root, "rollouts")


def make_handler(cfg: RolloutConfig) -> Any:
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


def tasks_for(q: Question, cfg: RolloutConfig) -> list[Task]:
    out = []
    for blind in (False, True) if cfg.blind and (q.images or q.video) else (False,):
        messages = ro.build_messages(q, cfg.prompt, cfg.sampling, blind=blind)
        key = (q.id, cfg.model_name, ro.prompt_hash(messages), cfg.sampling.digest())
        out.append(Task(q, blind, messages, key))
    return out


class JoinCacheFn(beam.DoFn):
    """Per question id: one representative question, the cached rollouts it can use, the tasks it still needs."""

    def __init__(self, cfg: RolloutConfig) -> None:
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
        else:
            yield task.question.source.unit, to_rollout(task, pred[0], self.params)


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
        yield FileInfo(name, len(data), atomic_write(join(self.cache, name), data))


def first_correct(rollouts: list[Rollout]) -> str | None:
    """The SFT response by rejection sampling: the first verified-correct sampled answer."""
    for r in sorted(rollouts, key=lambda r: r.key):
        if r.blind:
            continue
        for text, ok in zip(r.responses, r.correct, strict=True):
            if ok:
                return text
    return None


def decide(q: Question, cfg: PassRateConfig, mode: str, seen: list[Rollout]) -> Question:
    """The sft or rl verdict from the grade (a pending question is kept by the finish path)."""
    if mode == "sft":
        reason = sel.decide_sft(q, cfg.select.sft)
        if reason is None:
            response = first_correct(seen) if cfg.select.sft.response == "rollout" else None
            q.labels["response"] = response or q.labels.get("response") or q.answer
    else:
        reason = sel.decide_rl(q, cfg.select.rl)
    return q.settle(reason) if reason else q


class GradeFn(beam.DoFn):
    def __init__(self, cfg: PassRateConfig, mode: str) -> None:
        self.cfg, self.mode = cfg, mode

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[Question]:
        _, group = element
        for q in group["q"]:
            if group["failed"]:
                yield q.settle("model_error", f"rollout: {group['failed'][0]}", stage="rollout")
                continue
            rollouts = group["r"]
            seen = [r for r in rollouts if not r.blind]
            blind = [r for r in rollouts if r.blind]
            failures = [t for t in group["ocr"] if isinstance(t, ModelFailure)]
            if failures:
                q.note("leak_ocr", failures[0].error)  # graded without the image text of some images
            ocr_text = " ".join(t for t in group["ocr"] if isinstance(t, str))
            grade(q, seen, blind, ocr_text, self.cfg.grade)
            yield decide(q, self.cfg, self.mode, seen)


class OcrText(beam.PTransform):
    """The OCR text of each question's images, keyed by question id (for answer-leak checks)."""

    def __init__(self, params: OcrParams) -> None:
        super().__init__()
        self.params = params

    def expand(self, questions: beam.PCollection) -> beam.PCollection:
        from PIL import Image

        from mmcurate.stages.ocr import OcrModelHandler

        def images(q: Question) -> Iterator[Any]:
            for uri in q.images:
                try:
                    with fsspec.open(uri, "rb") as f:
                        img = Image.open(f)
                        img.load()
                    yield q.id, [img.convert("RGB")]
                except Exception as exc:  # this image only: the question is graded without its text
                    yield beam.pvalue.TaggedOutput("unreadable", (q.id, ModelFailure(f"{uri}: {exc}")))

        def text(qid: str, pred: Any) -> tuple[str, Any]:
            return qid, pred if isinstance(pred, ModelFailure) else " ".join(line.text for line in pred[0])

        loaded = questions | "LoadImages" >> beam.FlatMap(images).with_outputs("unreadable", main="images")
        texts = (
            loaded.images
            | "OCR" >> RunInference(KeyedModelHandler(GuardedHandler(OcrModelHandler(self.params))))
            | "Texts" >> beam.MapTuple(text)
        )
        return (texts, loaded.unreadable) | "AllTexts" >> beam.Flatten()


def _read(unit: Unit, params: QuestionReadParams) -> Iterator[Question]:
    return read_questions(unit, params.image_root)


class PassRateCorpus(TrainerOutputs):
    """Questions graded by k rollouts; `mode` (sft or rl) says which verdict and which trainer file."""

    defaults = "passrate.yaml"
    config_class = PassRateConfig
    kinds = (Question,)
    mode: str

    def validate(self, cfg: PassRateConfig) -> None:
        """Everything the run needs, checked before it starts (model folder, endpoint, vLLM)."""
        r = cfg.rollout
        if r.backend == "transformers":
            ro.check_model(r.transformers)
        elif r.backend == "openai":
            ro.check_endpoint(r.openai)
        else:
            ro.check_vllm(r.vllm)
        if cfg.leak.ocr:
            from mmcurate.stages.ocr import check_backend

            check_backend(cfg.ocr)

    def list_units(self, inputs: list[str], cfg: PassRateConfig) -> list[Unit]:
        return list_units(inputs, ReadParams(jsonl_unit_lines=cfg.read.jsonl_unit_lines), media_columns=False)

    def fields(self, cfg: PassRateConfig) -> dict[str, Fields]:
        return {"question": Fields(PASS_SCORES, PASS_LABELS)}

    def lineage(self, cfg: PassRateConfig) -> dict[str, Any]:
        return {"rollout_cache": cfg.rollout.cache, "model": cfg.rollout.model_name}

    def build(self, p: beam.Pipeline, units: list[Unit], cfg: PassRateConfig, run: Run) -> beam.PCollection:
        cache = cfg.cache_uri(run.out_root)
        read = p | "Read" >> ReadUnits(units, cfg.read, _read, run.progress_dir)
        questions = read.records
        settled = questions | "Quarantined" >> beam.Filter(lambda q: q.fate.status != Status.PENDING)
        cached = p | "CacheFiles" >> beam.Create([cache]) | "ReadCache" >> beam.FlatMap(read_cache)
        joined = (
            {
                "q": questions
                | "Pending" >> beam.Filter(lambda q: q.pending)
                | "KeyQ" >> beam.Map(lambda q: (q.id, q)),
                "cached": cached | "KeyCached" >> beam.Map(lambda r: (r.question_id, r)),
            }
            | "JoinCache" >> beam.CoGroupByKey()
            | "Tasks"
            >> beam.ParDo(JoinCacheFn(cfg.rollout)).with_outputs("settled", "rollouts", "graded", main="tasks")
        )
        inference = {"sampling": cfg.rollout.sampling.model_dump()}
        handler = KeyedModelHandler(GuardedHandler(make_handler(cfg.rollout)))
        verified = (
            joined.tasks
            | "Prompt" >> beam.Map(lambda t: (t, [t.messages]))
            | "Rollouts" >> RunInference(handler, inference_args=inference)
            | "Verify" >> beam.ParDo(VerifyFn(cfg.verify)).with_outputs("failed", main="rollouts")
        )
        generated = verified.rollouts
        _ = generated | "GroupNewRollouts" >> beam.GroupByKey() | "CacheRollouts" >> beam.ParDo(WriteRolloutsFn(cache))
        rollouts = (joined.rollouts, generated | "DropUnit" >> beam.Values()) | "AllRollouts" >> beam.Flatten()
        ocr = p | "NoOcr" >> beam.Create([])
        if cfg.leak.ocr:
            ocr = joined.graded | "OcrImages" >> OcrText(cfg.ocr)
        graded = (
            {
                "q": joined.graded | "KeyGraded" >> beam.Map(lambda q: (q.id, q)),
                "r": rollouts | "KeyRollouts" >> beam.Map(lambda r: (r.question_id, r)),
                "ocr": ocr,
                "failed": verified.failed,
            }
            | "JoinRollouts" >> beam.CoGroupByKey()
            | "GradeAndSelect" >> beam.ParDo(GradeFn(cfg, self.mode))
        )
        records = (
            (graded, settled, joined.settled)
            | "AllQuestions" >> beam.Flatten()
            | "ApplyThresholds" >> Thresholds(cfg, units, "question")
        )
        return records | "Finish" >> Finish(self.name, run, cfg, read[COUNTS_TAG])

    def select(self, p: beam.Pipeline, units: list[Unit], cfg: PassRateConfig, run: Run) -> beam.PCollection:
        from .passrate_outputs import select_questions

        return select_questions(self, p, units, cfg, run)


class SftCorpus(PassRateCorpus):
    name = mode = "sft"
    outputs = ("sft", "dataset_info.json")


class RlCorpus(PassRateCorpus):
    name = mode = "rl"
    outputs = ("rl",)


SFT = SftCorpus()
RL = RlCorpus()
