"""Model scoring through Beam's RunInference: CLIP score, aesthetics, OCR, over any record kind.

    records -> 'Example[clip]' -> 'RunInference[clip]' -> 'Merge[clip]' -> ... -> records with model scores

A model stage (`ModelStage`) scores one *view*: an image with its text. A recipe says how its records
are seen (`Views`, given to `ScoreWithModels`): a caption pair is one view, a clip its sampled
frames, a document its images; the views of one record go to the model in the same batch, and the
`Views` folds their results back into the record (one score; mean and max over frames). Stages are
found through `STAGE_BUILDERS`: a new model registers there and nothing else changes.

Failures stay with their record: a batch that raises is retried one record at a time, so one bad
example quarantines only its own record (`model_error`); a stage that degrades a record without
failing it (OCR that could not read a tiny image) notes it in the record's `errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from mmcurate.schemas import OcrLine, Record
from mmcurate.stages.base import Filter
from mmcurate.stages.clip import ClipModelHandler, ModelUnavailable, check_weights, embed_dim
from mmcurate.stages.clip import head_input_dim as aesthetic_input_dim

from .common import pending


@dataclasses.dataclass
class View:
    """What a model looks at: one RGB image and its text; the stage's results land here first."""

    pixels: Any
    text: str
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    ocr: list[OcrLine] | None = None
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ModelStage:
    name: str
    handler: ModelHandler
    """Over single examples (one per view)."""
    example: Callable[[View], Any]
    merge: Callable[[View, Any], None]
    """Writes one prediction into its view."""
    scores: tuple[str, ...]
    """Score names `merge` writes into a view."""


class Views:
    """How a record kind is seen by the model stages. The default: one view, `pixels` + `caption`."""

    per_record: int = 1
    """Views per record, to size batches in records."""

    def views(self, rec: Any) -> list[View]:
        pixels = getattr(rec, "pixels", None)
        return [View(pixels, getattr(rec, "caption", ""))] if pixels is not None else []

    def reduce(self, rec: Any, stage: ModelStage, views: list[View]) -> None:
        (view,) = views
        rec.scores.update(view.scores)
        rec.labels.update(view.labels)
        rec.errors.update(view.errors)
        if view.ocr is not None:
            # lines come in the pixels of the (possibly draft-reduced) decode: store them in width x height
            fx, fy = rec.width / view.pixels.width, rec.height / view.pixels.height
            rec.ocr = [OcrLine([[x * fx, y * fy] for x, y in ln.box], ln.text, ln.confidence) for ln in view.ocr]

    def fields(self, stage: ModelStage) -> tuple[str, ...]:
        return stage.scores


# -------------------------------------------------------------------------------------------- stages


def clip_example(view: View) -> tuple[Any, str]:
    return (view.pixels, view.text)


def merge_scores(view: View, scores: dict[str, float]) -> None:
    view.scores.update(scores)


def merge_ocr(view: View, lines: Any) -> None:
    from mmcurate.stages.ocr import ocr_scores

    view.ocr = list(lines)
    view.scores.update(ocr_scores(view.ocr, view.pixels.width, view.pixels.height))
    if getattr(lines, "note", ""):
        view.errors["ocr"] = lines.note


def _clip_stages(config: Any, needed: set[str]) -> list[ModelStage]:
    """CLIP score and aesthetics share one tower (the image is encoded once) unless configured apart."""
    clip, aesthetic = config.models.clip, config.models.aesthetic
    shared = "aesthetic" in needed and (aesthetic.clip is None or aesthetic.clip.tower == clip.tower)
    stages = []
    if "clip" in needed or shared:
        weights = aesthetic.weights if shared else None
        names = ("clip_score",) * ("clip" in needed) + ("aesthetic",) * shared
        handler = ClipModelHandler(clip, text="clip" in needed, aesthetic_weights=weights)
        stages.append(ModelStage("clip", handler, clip_example, merge_scores, names))
    if "aesthetic" in needed and not shared:
        handler = ClipModelHandler(aesthetic.clip, text=False, aesthetic_weights=aesthetic.weights)
        stages.append(ModelStage("aesthetic", handler, clip_example, merge_scores, ("aesthetic",)))
    return stages


def _ocr_stages(config: Any, needed: set[str]) -> list[ModelStage]:
    from mmcurate.stages.ocr import OCR_SCORES, OcrModelHandler

    return [ModelStage("ocr", OcrModelHandler(config.models.ocr), lambda v: v.pixels, merge_ocr, OCR_SCORES)]


STAGE_BUILDERS: dict[tuple[str, ...], Callable[[Any, set[str]], list[ModelStage]]] = {
    ("clip", "aesthetic"): _clip_stages,
    ("ocr",): _ocr_stages,
}
"""Model names -> the builder of their stages, in the order the stages run."""


def needed_models(filters: Iterable[Filter]) -> set[str]:
    return {f.model for f in filters} - {""}


def model_stages(config: Any) -> list[ModelStage]:
    """The RunInference stages the configured filters need."""
    needed = needed_models(config.build_filters())
    return [st for names, build in STAGE_BUILDERS.items() if needed & set(names) for st in build(config, needed)]


def model_fields(config: Any, views: Views | None = None) -> tuple[str, ...]:
    """Score names the model stages write on records seen through `views` (without loading a model)."""
    views = views or Views()
    return tuple(name for st in model_stages(config) for name in views.fields(st))


def validate_models(config: Any) -> None:
    """Everything a model stage needs, checked on the driver before the pipeline starts."""
    needed = needed_models(config.build_filters())
    clip, aesthetic = config.models.clip, config.models.aesthetic
    if "clip" in needed:
        check_weights(clip, "models.clip")
    if "aesthetic" in needed:
        if not aesthetic.weights:
            raise ModelUnavailable(
                "filters.aesthetic needs models.aesthetic.weights: the LAION aesthetic predictor's state dict "
                "(e.g. sac+logos+ava1-l14-linearMSE.pth for ViT-L-14, or the linear ViT-B-32 head)"
            )
        tower, key = (aesthetic.clip, "models.aesthetic.clip") if aesthetic.clip else (clip, "models.clip")
        check_weights(tower, key)
        want, have = aesthetic_input_dim(aesthetic.weights), embed_dim(tower)
        if have is not None and want != have:
            raise ModelUnavailable(
                f"models.aesthetic.weights expects {want}-d CLIP embeddings but {key} ({tower.model}) gives {have}-d; "
                "set models.aesthetic.clip to the tower the head was trained on"
            )
    if "ocr" in needed:
        from mmcurate.stages.ocr import check_backend

        check_backend(config.models.ocr)


# --------------------------------------------------------------------------------------- RunInference


@dataclasses.dataclass(frozen=True)
class ModelFailure:
    error: str


class GuardedHandler(ModelHandler):
    """Wraps one of our handlers so every record can flow through RunInference in one fused stage.

    An example is None (the record needs no model: no call, None back) or the list of a record's
    view examples; all views of a batch go to the inner handler in one call. A batch whose inference
    raises is run again one record at a time, so only the records that fail on their own get a
    `ModelFailure`. There is no Partition, dead-letter output or Flatten: on the FnApiRunner those
    materialise every element (decoded pixels included), and Beam 2.77 lost large elements at
    Flattens with several workers.
    """

    def __init__(self, inner: ModelHandler, per_record: int = 1) -> None:
        super().__init__()
        self.inner, self.per_record = inner, max(1, per_record)

    def load_model(self) -> Any:
        return self.inner.load_model()

    def _infer(self, groups: list[list[Any]], model: Any, inference_args: dict[str, Any] | None) -> list[list[Any]]:
        flat = [ex for group in groups for ex in group]
        preds = list(self.inner.run_inference(flat, model, inference_args))
        if len(preds) != len(flat):
            raise RuntimeError(f"the model returned {len(preds)} predictions for {len(flat)} examples")
        out, i = [], 0
        for group in groups:
            out.append(preds[i : i + len(group)])
            i += len(group)
        return out

    def run_inference(self, batch: Any, model: Any, inference_args: dict[str, Any] | None = None) -> list[Any]:
        todo = [i for i, ex in enumerate(batch) if ex]
        out: list[Any] = [None] * len(batch)
        if not todo:
            return out
        try:
            results = self._infer([batch[i] for i in todo], model, inference_args)
        except Exception:
            results = []
            for i in todo:  # one at a time: the failure stays with the record that causes it
                try:
                    results.append(self._infer([batch[i]], model, inference_args)[0])
                except Exception as exc:
                    results.append(ModelFailure(f"{type(exc).__name__}: {exc}"))
        for i, res in zip(todo, results, strict=True):
            out[i] = res
        return out

    def get_num_bytes(self, batch: Any) -> int:
        flat = [ex for group in batch if group for ex in group]
        return self.inner.get_num_bytes(flat) if flat else 0

    def get_metrics_namespace(self) -> str:
        return self.inner.get_metrics_namespace()

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        self.inner.validate_inference_args(inference_args)

    def batch_elements_kwargs(self) -> Any:
        kw = dict(self.inner.batch_elements_kwargs())
        for key in ("min_batch_size", "max_batch_size"):
            if kw.get(key):
                kw[key] = max(1, kw[key] // self.per_record)
        return kw

    def share_model_across_processes(self) -> bool:
        return self.inner.share_model_across_processes()

    def model_copies(self) -> int:
        return self.inner.model_copies()


def _examples(rec: Record, stage: ModelStage, views: Views) -> tuple[Record, list[Any] | None]:
    if not pending(rec):
        return rec, None
    try:
        return rec, [stage.example(v) for v in views.views(rec)] or None
    except Exception as exc:  # this record only (an image its views cannot be made of)
        error = f"example[{stage.name}]: {type(exc).__name__}: {exc}"
        return rec.settle("internal_error", error, stage=stage.name), None


def _merge(element: tuple[Record, Any], stage: ModelStage, views: Views) -> Record:
    rec, pred = element
    if pred is None:
        return rec
    if isinstance(pred, ModelFailure):
        return rec.settle("model_error", f"{stage.name}: {pred.error}", stage=stage.name)
    try:
        seen = views.views(rec)
        for view, p in zip(seen, pred, strict=True):
            stage.merge(view, p)
        views.reduce(rec, stage, seen)
    except Exception as exc:  # scoring code on a model's output: this record only
        return rec.settle("internal_error", f"merge[{stage.name}]: {type(exc).__name__}: {exc}", stage=stage.name)
    return rec


class ScoreWithModels(beam.PTransform):
    """Every stage in turn over every record; records that need no model pass through unscored."""

    def __init__(self, stages: list[ModelStage], views: Views | None = None) -> None:
        """`views`: how the records are seen (default: one image and its caption per record)."""
        super().__init__()
        self.stages, self.views = stages, views or Views()

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        for st in self.stages:
            handler = KeyedModelHandler(GuardedHandler(st.handler, self.views.per_record))
            records = (
                records
                | f"Example[{st.name}]" >> beam.Map(_examples, stage=st, views=self.views)
                | f"RunInference[{st.name}]" >> RunInference(handler)
                | f"Merge[{st.name}]" >> beam.Map(_merge, stage=st, views=self.views)
            )
        return records
