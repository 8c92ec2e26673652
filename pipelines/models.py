"""Model scoring through Beam's RunInference: CLIP score, aesthetics, OCR.

    records -> 'Model[clip]' -> 'Model[aesthetic]' -> 'Model[ocr]' -> records with model scores

Each model stage runs only when a configured filter needs it. The records that can be scored
(pending, decoded) go through `RunInference(KeyedModelHandler(handler))`, keyed by the record
itself, so scores land on the record they belong to; the rest bypass. Batches that fail are
quarantined (`model_error`), never lost. Models load once per worker (`load_model`), batch sizes
come from config, and RunInference's own metrics (inference counts, batch sizes and latencies,
model load time) reach the run summary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from mmcurate.schemas import Status
from mmcurate.stages.base import Filter
from mmcurate.stages.clip import ClipModelHandler, ModelUnavailable, QuantileFilter, check_weights, embed_dim
from mmcurate.stages.clip import head_input_dim as aesthetic_input_dim

from .common import NS, clear_payload, pending

QUANTILES = 1001


@dataclasses.dataclass
class ModelStage:
    name: str
    handler: ModelHandler
    example: Callable[[Any], Any]
    merge: Callable[[Any, Any], Any]


def _clip_example(rec: Any) -> tuple[Any, str]:
    return (rec.pixels, rec.caption)


def _merge_scores(rec: Any, scores: dict[str, float]) -> Any:
    rec.scores.update(scores)
    return rec


def needed_models(filters: list[Filter]) -> set[str]:
    return {getattr(f, "model", "") for f in filters} - {""}


def model_stages(config: Any) -> list[ModelStage]:
    """The RunInference stages the configured filters need, sharing a CLIP tower where they can."""
    models = needed_models(config.build_filters())
    stages: list[ModelStage] = []
    clip, aesthetic = config.models.clip, config.models.aesthetic
    shared = "aesthetic" in models and (aesthetic.clip is None or aesthetic.clip.tower == clip.tower)
    if "clip" in models or shared:
        weights = aesthetic.weights if shared else None
        stages.append(
            ModelStage(
                "clip",
                ClipModelHandler(clip, text="clip" in models, aesthetic_weights=weights),
                _clip_example,
                _merge_scores,
            )
        )
    if "aesthetic" in models and not shared:
        stages.append(
            ModelStage(
                "aesthetic",
                ClipModelHandler(aesthetic.clip, text=False, aesthetic_weights=aesthetic.weights),
                _clip_example,
                _merge_scores,
            )
        )
    if "ocr" in models:
        from mmcurate.stages.ocr import OcrModelHandler, ocr_scores

        def merge_ocr(rec: Any, lines: Any) -> Any:
            rec.ocr = list(lines)
            rec.scores.update(ocr_scores(rec.ocr, rec.pixels.width, rec.pixels.height))
            return rec

        stages.append(ModelStage("ocr", OcrModelHandler(config.models.ocr), lambda r: r.pixels, merge_ocr))
    return stages


def validate_models(config: Any) -> None:
    """Everything a model stage needs, checked on the driver before the pipeline starts."""
    models = needed_models(config.build_filters())
    clip, aesthetic = config.models.clip, config.models.aesthetic
    if "clip" in models:
        check_weights(clip, "models.clip")
    if "aesthetic" in models:
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
    if "ocr" in models:
        from mmcurate.stages.ocr import check_backend

        check_backend(config.models.ocr)


@dataclasses.dataclass(frozen=True)
class ModelFailure:
    error: str


class GuardedHandler(ModelHandler):
    """Wraps one of our handlers so every record can flow through RunInference in one fused stage.

    Records that need no scoring carry `None` as their example and get `None` back (no model call);
    a batch whose inference raises gets a `ModelFailure` per record, which the merge step turns into
    a quarantined record. So there is no Partition, no dead-letter output and no Flatten: on the
    FnApiRunner those materialise every element (decoded pixels included), and Beam 2.77 lost large
    elements at Flattens with several workers.
    """

    def __init__(self, inner: ModelHandler) -> None:
        super().__init__()
        self.inner = inner

    def load_model(self) -> Any:
        return self.inner.load_model()

    def run_inference(self, batch: Any, model: Any, inference_args: dict[str, Any] | None = None) -> list[Any]:
        todo = [i for i, ex in enumerate(batch) if ex is not None]
        out: list[Any] = [None] * len(batch)
        if not todo:
            return out
        try:
            preds = self.inner.run_inference([batch[i] for i in todo], model, inference_args)
        except Exception as exc:
            preds = [ModelFailure(f"{type(exc).__name__}: {exc}")] * len(todo)
        for i, pred in zip(todo, preds, strict=True):
            out[i] = pred
        return out

    def get_num_bytes(self, batch: Any) -> int:
        return self.inner.get_num_bytes([ex for ex in batch if ex is not None]) if any(batch) else 0

    def get_metrics_namespace(self) -> str:
        return self.inner.get_metrics_namespace()

    def batch_elements_kwargs(self) -> Any:
        return self.inner.batch_elements_kwargs()

    def share_model_across_processes(self) -> bool:
        return self.inner.share_model_across_processes()

    def model_copies(self) -> int:
        return self.inner.model_copies()


def _merge(element: tuple[Any, Any], stage: str, merge: Callable[[Any, Any], Any]) -> Any:
    rec, pred = element
    if pred is None:
        return rec
    if isinstance(pred, ModelFailure):
        rec.fate = dataclasses.replace(
            rec.fate, status=Status.QUARANTINED, reason="model_error", error=f"{stage}: {pred.error}"[:2000]
        )
        clear_payload(rec)
        beam.metrics.Metrics.counter(NS, f"model_error_{stage}").inc()
        return rec
    return merge(rec, pred)


class ScoreWithModels(beam.PTransform):
    def __init__(self, stages: list[ModelStage]) -> None:
        super().__init__()
        self.stages = stages

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        for st in self.stages:
            records = (
                records
                | f"Example[{st.name}]"
                >> beam.Map(lambda r, fn=st.example: (r, fn(r) if pending(r) and r.pixels is not None else None))
                | f"RunInference[{st.name}]" >> RunInference(KeyedModelHandler(GuardedHandler(st.handler)))
                | f"Merge[{st.name}]" >> beam.Map(_merge, stage=st.name, merge=st.merge)
            )
        return records


def cutoff_key(f: QuantileFilter, group: str) -> str:
    return f"{f.name}|{group if f.params.per == 'input' else '*'}"


class Cutoffs(beam.PTransform):
    """Run-wide score cutoffs for `top_fraction` filters: (filter|group) -> the score at that quantile."""

    def __init__(self, filters: list[Filter], groups: dict[int, str]) -> None:
        super().__init__()
        self.filters = [f for f in filters if isinstance(f, QuantileFilter) and f.params.top_fraction]
        self.groups = groups

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        filters, groups = self.filters, self.groups

        def values(rec: Any) -> list[tuple[str, float]]:
            if not pending(rec):
                return []
            group = groups.get(rec.source.unit, "")
            return [(cutoff_key(f, group), rec.scores[f.score_name]) for f in filters if f.score_name in rec.scores]

        def cutoff(key: str, quantiles: list[float]) -> tuple[str, float]:
            name = key.split("|", 1)[0]
            frac = next(f.params.top_fraction for f in filters if f.name == name)
            return key, quantiles[round((1.0 - frac) * (len(quantiles) - 1))]

        return (
            records
            | "ScoresToRank" >> beam.FlatMap(values)
            | "Quantiles" >> beam.ApproximateQuantiles.PerKey(QUANTILES)
            | "Cutoff" >> beam.MapTuple(cutoff)
        )
