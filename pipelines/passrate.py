"""SFT and RL selection from pretrained-model pass rates (`mmcurate sft`, `mmcurate rl`).

    'ListUnits' -> 'ReadQuestions' -> 'JoinCache' (questions x cached rollouts, by question id)
      -> 'Rollouts' (RunInference over the prompts with no cached rollout) -> 'Verify' -> 'CacheRollouts'
      -> 'Grade' (pass rate, blind pass rate, answer leak) -> 'Select' (sft | rl) -> 'WriteUnits' -> manifest

Rollouts are cached under `rollout.cache` keyed by (question, model, prompt hash, sampling hash):
a rerun, a new threshold or a new output never regenerates a key that exists; adding a model
generates only that model's rollouts.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from pydantic import Field

from mmcurate.schemas import SCHEMA_VERSION, Question, Rollout, Status
from mmcurate.stages import passrate_select as sel
from mmcurate.stages import rollout as ro
from mmcurate.stages.base import Params
from mmcurate.stages.ocr import OcrParams
from mmcurate.stages.questions import GradeParams, grade, histogram, read_questions
from mmcurate.stages.readers import Unit
from mmcurate.stages.trainer_formats import dataset_info, sharegpt_row, verl_row
from mmcurate.stages.verify import VerifyParams, verify
from mmcurate.stages.writers import FileInfo, atomic_write, join, json_bytes, parquet_bytes, write_table

from .common import COUNTS_TAG, NS, AccountingError, touch
from .common import run_meta as common_run_meta


class QuestionReadParams(Params):
    jsonl_unit_lines: int = 10_000
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


class PassRateConfig(Params):
    read: QuestionReadParams = Field(default_factory=QuestionReadParams)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    verify: VerifyParams = Field(default_factory=VerifyParams)
    grade: GradeParams = Field(default_factory=GradeParams)
    leak: LeakParams = Field(default_factory=LeakParams)
    ocr: OcrParams = Field(default_factory=OcrParams)
    select: SelectParams = Field(default_factory=SelectParams)
    output: PassRateOutput = Field(default_factory=PassRateOutput)


def make_handler(cfg: RolloutConfig) -> Any:
    if cfg.backend == "transformers":
        return ro.TransformersRolloutHandler(cfg.transformers, cfg.sampling)
    if cfg.backend == "openai":
        return ro.OpenAIRolloutHandler(cfg.openai, cfg.sampling)
    return ro.VLLMRolloutHandler(cfg.vllm, cfg.sampling)


def validate(cfg: PassRateConfig) -> None:
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
        self.hits = Metrics.counter(NS, "rollouts_cached")
        self.misses = Metrics.counter(NS, "rollouts_to_generate")

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[Any]:
        _, group = element
        questions = sorted(group["q"], key=lambda q: (q.source.unit, q.source.index))
        if not questions:
            return  # rollouts of a question no longer in the input
        first, *dups = questions
        for d in dups:
            d.fate = dataclasses.replace(
                d.fate, status=Status.DROPPED, reason="duplicate_question", duplicate_of=first.id
            )
            yield beam.pvalue.TaggedOutput("settled", d)
        cached = {r.key: r for r in group["cached"]}
        for task in tasks_for(first, self.cfg):
            if task.key in cached:
                self.hits.inc()
                yield beam.pvalue.TaggedOutput("rollouts", cached[task.key])
            else:
                self.misses.inc()
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


def _verified(element: tuple[Task, list[str]], params: VerifyParams) -> tuple[int, Rollout]:
    task, responses = element
    return task.question.source.unit, to_rollout(task, responses, params)


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


class GradeFn(beam.DoFn):
    def __init__(self, cfg: PassRateConfig, mode: str) -> None:
        self.cfg, self.mode = cfg, mode

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[Question]:
        _, group = element
        for q in group["q"]:
            rollouts = group["r"]
            seen = [r for r in rollouts if not r.blind]
            blind = [r for r in rollouts if r.blind]
            ocr_text = " ".join(group["ocr"]) if group["ocr"] else ""
            grade(q, seen, blind, ocr_text, self.cfg.grade)
            if self.mode == "sft":
                reason = sel.decide_sft(q, self.cfg.select.sft)
                if reason is None:
                    q.labels["response"] = self._response(q, seen)
            else:
                reason = sel.decide_rl(q, self.cfg.select.rl)
            if reason:
                q.fate = dataclasses.replace(q.fate, status=Status.DROPPED, reason=reason)
                Metrics.counter(NS, f"dropped_{reason}").inc()
            else:
                q.fate = dataclasses.replace(q.fate, status=Status.KEPT)
            yield q

    def _response(self, q: Question, seen: list[Rollout]) -> str:
        if self.cfg.select.sft.response == "rollout":
            for r in sorted(seen, key=lambda r: r.key):
                for text, ok in zip(r.responses, r.correct, strict=True):
                    if ok:
                        return text
        return q.answer


class WriteQuestionsFn(beam.DoFn):
    """One unit's questions -> ledger, dropped/quarantined tables, and the trainer file (RL parquet or SFT JSON)."""

    def __init__(self, out_root: str, cfg: PassRateConfig, mode: str, progress_dir: str | None) -> None:
        self.out_root, self.cfg, self.mode, self.progress_dir = out_root, cfg, mode, progress_dir

    def process(self, element: tuple[int, list[Question]]) -> Iterator[dict]:
        from .common import fate_table

        unit, questions = element
        questions = sorted(questions, key=lambda q: (q.source.index, q.source.member))
        name = f"part-{unit:05d}"
        kept = [q for q in questions if q.fate.status == Status.KEPT]
        instruction = self.cfg.rollout.prompt.answer_instruction
        files: dict[str, list] = {"ledger": [], "dropped": [], "quarantined": [], "data": []}
        files["ledger"].append(write_table(self.out_root, f"ledger/{name}.parquet", Question.to_table(questions)))
        for status in (Status.DROPPED, Status.QUARANTINED):
            rows = [q for q in questions if q.fate.status == status]
            if rows:
                files[status.value].append(
                    write_table(self.out_root, f"{status.value}/{name}.parquet", fate_table(rows))
                )
        if kept and self.mode == "rl":
            rows = [
                verl_row(q, q.source.index, self.cfg.output.name, instruction, self.cfg.output.embed_images)
                for q in kept
            ]
            data = parquet_bytes(pa.Table.from_pylist(rows, schema=_verl_schema()))
            rel = f"rl/{name}.parquet"
            files["data"].append(FileInfo(rel, len(data), atomic_write(join(self.out_root, rel), data)))
        elif kept:
            rows = [sharegpt_row(q, q.labels.get("response", q.answer), instruction) for q in kept]
            data = json_bytes(rows)
            rel = f"sft/{name}.json"
            files["data"].append(FileInfo(rel, len(data), atomic_write(join(self.out_root, rel), data)))
        touch(self.progress_dir, f"write-{unit}")
        yield {
            "unit": unit,
            "counts": collections.Counter(q.fate.status.value for q in questions),
            "reasons": {
                s.value: collections.Counter(q.fate.reason for q in questions if q.fate.status == s)
                for s in (Status.DROPPED, Status.QUARANTINED)
            },
            "files": {k: [dataclasses.asdict(f) for f in v] for k, v in files.items()},
            "pass_rates": [q.scores.get("pass_rate", 0.0) for q in questions if "pass_rate" in q.scores],
            "kept": [(q.labels.get("tier", ""), q.domain) for q in kept],
        }


def _verl_schema() -> pa.Schema:
    from mmcurate.stages.trainer_formats import VERL_SCHEMA

    return VERL_SCHEMA


def write_manifest(
    summaries: list[dict], read_total: int, out_root: str, meta: dict, cfg: PassRateConfig, mode: str
) -> dict:
    counts: collections.Counter = collections.Counter()
    reasons: dict[str, collections.Counter] = {"dropped": collections.Counter(), "quarantined": collections.Counter()}
    files: dict[str, list] = collections.defaultdict(list)
    rates: list[float] = []
    kept: list[tuple[str, str]] = []
    for s in sorted(summaries, key=lambda s: s["unit"]):
        counts.update(s["counts"])
        for k in reasons:
            reasons[k].update(s["reasons"][k])
        for k, v in s["files"].items():
            files[k].extend(v)
        rates.extend(s["pass_rates"])
        kept.extend(s["kept"])
    total = {"input": read_total, **{k: counts.get(k, 0) for k in ("kept", "dropped", "quarantined")}}
    ok = total["input"] == total["kept"] + total["dropped"] + total["quarantined"]
    manifest: dict[str, Any] = {
        "format": "mmcurate.manifest/1",
        **meta,
        "counts": total,
        "accounting_ok": ok,
        "reasons": {k: dict(sorted(v.items())) for k, v in reasons.items()},
        "pass_rate_histogram": {
            "buckets": [f"[{i / 10:.1f}, {(i + 1) / 10:.1f})" for i in range(10)],
            "counts": histogram(rates),
        },
        **{k: v for k, v in files.items()},
    }
    if mode == "rl":
        tiers = cfg.select.rl.tiers
        table: dict[str, dict[str, int]] = {t: {} for t in tiers}
        for tier, domain in kept:
            table.setdefault(tier, {})[domain] = table.setdefault(tier, {}).get(domain, 0) + 1
        manifest["curriculum"] = {"tiers": {t: list(v) for t, v in tiers.items()}, "counts": table}
    else:
        info = dataset_info(cfg.output.name, "sft")
        atomic_write(join(out_root, "dataset_info.json"), json_bytes(info))
        manifest["dataset_info"] = info
    atomic_write(join(out_root, "manifest.json"), json_bytes(manifest))
    if not ok:
        raise AccountingError(f"questions went missing: {json.dumps(total)}")
    return manifest


def build(
    p: beam.Pipeline,
    units: list[Unit],
    cfg: PassRateConfig,
    out_root: str,
    meta: dict,
    progress_dir: str | None,
    mode: str,
) -> beam.PCollection:
    cache = cfg.rollout.cache or join(out_root, "rollouts")
    read = (
        p
        | "ListUnits" >> beam.Create(units, reshuffle=True)
        | "ReadQuestions"
        >> beam.ParDo(_ReadQuestionsFn(cfg.read.image_root, progress_dir)).with_outputs(COUNTS_TAG, main="questions")
    )
    questions = read.questions
    settled = questions | "Quarantined" >> beam.Filter(lambda q: q.fate.status != Status.PENDING)
    cached = p | "CacheFiles" >> beam.Create([cache]) | "ReadCache" >> beam.FlatMap(read_cache)
    joined = (
        {
            "q": questions
            | "Pending" >> beam.Filter(lambda q: q.fate.status == Status.PENDING)
            | "KeyQ" >> beam.Map(lambda q: (q.id, q)),
            "cached": cached | "KeyCached" >> beam.Map(lambda r: (r.question_id, r)),
        }
        | "JoinCache" >> beam.CoGroupByKey()
        | "Tasks" >> beam.ParDo(JoinCacheFn(cfg.rollout)).with_outputs("settled", "rollouts", "graded", main="tasks")
    )
    inference = {"sampling": cfg.rollout.sampling.model_dump()}
    generated = (
        joined.tasks
        | "Prompt" >> beam.Map(lambda t: (t, t.messages))
        | "Rollouts" >> RunInference(KeyedModelHandler(make_handler(cfg.rollout)), inference_args=inference)
        | "Verify" >> beam.Map(_verified, params=cfg.verify)
    )
    _ = generated | "GroupNewRollouts" >> beam.GroupByKey() | "CacheRollouts" >> beam.ParDo(WriteRolloutsFn(cache))
    rollouts = (joined.rollouts, generated | "DropUnit" >> beam.Values()) | "AllRollouts" >> beam.Flatten()
    ocr = p | "NoOcr" >> beam.Create([])
    if cfg.leak.ocr:
        ocr = joined.graded | "OcrImages" >> _OcrText(cfg.ocr)
    graded = (
        {
            "q": joined.graded | "KeyGraded" >> beam.Map(lambda q: (q.id, q)),
            "r": rollouts | "KeyRollouts" >> beam.Map(lambda r: (r.question_id, r)),
            "ocr": ocr,
        }
        | "JoinRollouts" >> beam.CoGroupByKey()
        | "GradeAndSelect" >> beam.ParDo(GradeFn(cfg, mode))
    )
    total = read[COUNTS_TAG] | "CountInputs" >> beam.CombineGlobally(sum)
    return (
        (graded, settled, joined.settled)
        | "AllQuestions" >> beam.Flatten()
        | "KeyByUnit" >> beam.Map(lambda q: (q.source.unit, q))
        | "GroupByUnit" >> beam.GroupByKey()
        | "WriteUnits" >> beam.ParDo(WriteQuestionsFn(out_root, cfg, mode, progress_dir))
        | "CollectSummaries" >> beam.combiners.ToList()
        | "WriteManifest"
        >> beam.Map(
            write_manifest, read_total=beam.pvalue.AsSingleton(total), out_root=out_root, meta=meta, cfg=cfg, mode=mode
        )
    )


class _ReadQuestionsFn(beam.DoFn):
    def __init__(self, image_root: str | None, progress_dir: str | None) -> None:
        self.image_root, self.progress_dir = image_root, progress_dir

    def process(self, unit: Unit) -> Iterator[Any]:
        n = 0
        for q in read_questions(unit, self.image_root):
            n += 1
            yield q
        touch(self.progress_dir, f"read-{unit.index}")
        yield beam.pvalue.TaggedOutput(COUNTS_TAG, n)


class _OcrText(beam.PTransform):
    """The OCR text of each question's images, keyed by question id (for answer-leak checks)."""

    def __init__(self, params: OcrParams) -> None:
        super().__init__()
        self.params = params

    def expand(self, questions: beam.PCollection) -> beam.PCollection:
        from PIL import Image

        from mmcurate.stages.ocr import OcrModelHandler

        def images(q: Question) -> Iterator[tuple[str, Any]]:
            for uri in q.images:
                with fsspec.open(uri, "rb") as f:
                    img = Image.open(f)
                    img.load()
                yield q.id, img.convert("RGB")

        return (
            questions
            | "LoadImages" >> beam.FlatMap(images)
            | "OCR" >> RunInference(KeyedModelHandler(OcrModelHandler(self.params)))
            | "Texts" >> beam.MapTuple(lambda qid, lines: (qid, " ".join(line.text for line in lines)))
        )


def run_meta(mode: str, inputs: list[str], cfg: PassRateConfig, units: list[Unit]) -> dict:
    lineage = {"rollout_cache": cfg.rollout.cache, "model": cfg.rollout.model_name}
    return {**common_run_meta(mode, inputs, cfg, units, lineage), "schema_version": SCHEMA_VERSION}
