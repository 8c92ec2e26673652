"""SFT and RL selection from pretrained-model pass rates (`mmcurate sft`, `mmcurate rl`).

    'ReadUnits' -> 'JoinCache' (questions x cached rollouts, by question id)
      -> 'Rollouts' (RunInference over the prompts with no cached rollout) -> 'Verify' -> 'CacheRollouts'
      -> 'GradeAndSelect' (pass rate, blind pass rate, answer leak; sft | rl verdict) -> 'ApplyThresholds' -> 'Finish'

Rollouts are cached under `rollout.cache` keyed by (question, model, prompt hash, sampling hash):
a rerun, a new threshold or a new output never regenerates a key that exists; adding a model
generates only that model's rollouts. The trainer files (verl parquet, LLaMA-Factory ShareGPT parquet) are the
corpus's unit outputs in the shared finish path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from pydantic import Field, field_validator

from mmcurate.schemas import Fields, Question, Status
from mmcurate.stages import passrate_select as sel
from mmcurate.stages import rollout as ro
from mmcurate.stages.base import Params
from mmcurate.stages.io import Unit
from mmcurate.stages.ocr import OcrParams
from mmcurate.stages.question_io import QuestionReadParams, read_questions
from mmcurate.stages.questions import PASS_LABELS, PASS_SCORES, GradeParams, grade
from mmcurate.stages.readers import ReadParams, list_units
from mmcurate.stages.verify import VerifyParams
from mmcurate.stages.writers import join

from .common import ReadUnits
from .config import CorpusConfig, PlacementParams, check_placement
from .finish import Finish, Run
from .inference import GuardedHandler, ModelFailure, placed
from .passrate_outputs import TrainerOutputs
from .rollouts import JoinCacheFn, VerifyFn, WriteRolloutsFn, decide, make_handler, read_cache
from .thresholds import Thresholds


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
    """Dataset name: the LLaMA-Factory dataset_info.json key."""
    data_source: str = "mmcurate/{domain}"
    """verl's `data_source` of each row (`{domain}` is filled in): verl picks the reward function by
    it; `mmcurate.rewards.compute_score` knows every name starting with `mmcurate`."""
    data_sources: dict[str, str] = Field(default_factory=dict)
    """Per-domain `data_source` overrides, e.g. {math: "hiyouga/geometry3k"} to use verl's own reward."""
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    """RL: the share of kept questions in `rl/val/`, chosen by a hash of the question's text, answer,
    choices and media paths relative to its input file (`split_key`): stable across runs and copies."""
    per_tier: bool = False
    """RL: one folder per tier (`rl/{split}/{tier}/`) for curriculum schedules, instead of `rl/{split}/`."""
    embed_images: bool = True
    """verl parquet: image bytes inside the parquet (true), or `{"image": path}` pointers (false:
    local or http(s) paths only, what verl's `qwen_vl_utils.fetch_image` opens; not s3:// or gs://)."""
    media_timeout_s: float = Field(60.0, gt=0)
    """Reading one image or video into a trainer file may take this long before its question is
    quarantined (`read_timeout`)."""

    def model_post_init(self, _context: object) -> None:
        try:
            self.data_source.format(domain="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"output.data_source: {self.data_source!r} may hold only {{domain}} ({type(exc).__name__}: {exc})"
            ) from None


class PassRateConfig(CorpusConfig):
    read: QuestionReadParams = Field(default_factory=QuestionReadParams)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    verify: VerifyParams = Field(default_factory=VerifyParams)
    grade: GradeParams = Field(default_factory=GradeParams)
    leak: LeakParams = Field(default_factory=LeakParams)
    ocr: OcrParams = Field(default_factory=OcrParams)
    select: SelectParams = Field(default_factory=SelectParams)
    output: PassRateOutput = Field(default_factory=PassRateOutput)
    placement: dict[str, PlacementParams] = Field(default_factory=dict)
    """Per model stage (rollout, ocr): resource hints and model sharing, as `models.placement`."""

    @field_validator("placement")
    @classmethod
    def _stages(cls, value: dict[str, PlacementParams]) -> dict[str, PlacementParams]:
        return check_placement(value, ("rollout", "ocr"))

    def cache_uri(self, out_root: str) -> str:
        return self.rollout.cache or join(out_root, "rollouts")


class GradeFn(beam.DoFn):
    def __init__(self, cfg: PassRateConfig, mode: str) -> None:
        self.cfg, self.mode = cfg, mode

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[Question]:
        _, group = element
        for q in group["q"]:
            if group["failed"]:
                yield q.settle("model_error", f"rollout: {group['failed'][0]}", stage="rollout")
                continue
            try:
                yield self._grade(q, group)
            except Exception as exc:  # this question only
                yield q.settle("internal_error", f"grade: {type(exc).__name__}: {exc}", stage="grade")

    def _grade(self, q: Question, group: dict[str, list]) -> Question:
        rollouts = group["r"]
        seen = [r for r in rollouts if not r.blind]
        blind = [r for r in rollouts if r.blind]
        failures = [t for t in group["ocr"] if isinstance(t, ModelFailure)]
        if failures:
            q.note("leak_ocr", failures[0].error)  # graded without the image text of some images
        ocr_text = " ".join(t for t in group["ocr"] if isinstance(t, str))
        grade(q, seen, blind, ocr_text, self.cfg.grade)
        return decide(q, self.cfg, self.mode, seen)


class OcrText(beam.PTransform):
    """The OCR text of each question's images, keyed by question id (for answer-leak checks)."""

    def __init__(self, params: OcrParams, placement: PlacementParams | None = None) -> None:
        super().__init__()
        self.params, self.placement = params, placement

    def expand(self, questions: beam.PCollection) -> beam.PCollection:
        from PIL import Image

        from mmcurate.stages.ocr_model import OcrModelHandler

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

        handler = KeyedModelHandler(GuardedHandler(OcrModelHandler(self.params), placement=self.placement))
        loaded = questions | "LoadImages" >> beam.FlatMap(images).with_outputs("unreadable", main="images")
        texts = loaded.images | "OCR" >> placed(RunInference(handler), self.placement) | "Texts" >> beam.MapTuple(text)
        return (texts, loaded.unreadable) | "AllTexts" >> beam.Flatten()


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
        from .models import check_placement_of

        handlers = {"rollout": make_handler(cfg.rollout), "ocr": object() if cfg.leak.ocr else None}
        check_placement_of(cfg.placement, handlers, "placement", set())

    def list_units(self, inputs: list[str], cfg: PassRateConfig) -> list[Unit]:
        return list_units(
            inputs, ReadParams(jsonl_unit_lines=cfg.read.jsonl_unit_lines, split=cfg.read.split), media_columns=False
        )

    def fields(self, cfg: PassRateConfig) -> dict[str, Fields]:
        return {"question": Fields(PASS_SCORES, PASS_LABELS)}

    def lineage(self, cfg: PassRateConfig) -> dict[str, Any]:
        return {"rollout_cache": cfg.rollout.cache, "model": cfg.rollout.model_name}

    def build(self, p: beam.Pipeline, units: list[Unit], cfg: PassRateConfig, run: Run) -> beam.PCollection:
        cache = cfg.cache_uri(run.out_root)
        questions = p | "Read" >> ReadUnits(run.to_read(units), cfg.read, read_questions)
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
        placement = cfg.placement.get("rollout")
        handler = KeyedModelHandler(GuardedHandler(make_handler(cfg.rollout), placement=placement))
        verified = (
            joined.tasks
            | "Prompt" >> beam.Map(lambda t: (t, [t.messages]))
            | "Rollouts" >> placed(RunInference(handler, inference_args=inference), placement)
            | "Verify" >> beam.ParDo(VerifyFn(cfg.verify)).with_outputs("failed", main="rollouts")
        )
        generated = verified.rollouts
        _ = generated | "GroupNewRollouts" >> beam.GroupByKey() | "CacheRollouts" >> beam.ParDo(WriteRolloutsFn(cache))
        rollouts = (joined.rollouts, generated | "DropUnit" >> beam.Values()) | "AllRollouts" >> beam.Flatten()
        ocr = p | "NoOcr" >> beam.Create([])
        if cfg.leak.ocr:
            ocr = joined.graded | "OcrImages" >> OcrText(cfg.ocr, cfg.placement.get("ocr"))
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
        return records | "Finish" >> Finish(self.name, run, cfg)

    def select(self, p: beam.Pipeline, units: list[Unit], cfg: PassRateConfig, run: Run) -> beam.PCollection:
        from .passrate_outputs import select_questions

        return select_questions(self, p, units, cfg, run)


class SftCorpus(PassRateCorpus):
    name = mode = "sft"
    outputs = ("sft", "images", "videos")


class RlCorpus(PassRateCorpus):
    name = mode = "rl"
    outputs = ("rl",)


SFT = SftCorpus()
RL = RlCorpus()
