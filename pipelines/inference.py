"""Model stages through Beam's RunInference: every record flows through, failures stay with it.

Imported only when a configured filter needs a model (it loads apache_beam.ml, which imports torch).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from mmcurate.schemas import Record

from .models import ModelStage, Views


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

    def __init__(self, inner: ModelHandler, per_record: int = 1, per_view: bool = False, placement: Any = None) -> None:
        """`per_view`: a failing record of several examples is retried example by example, and gets
        a list with a `ModelFailure` where one failed (its `Views.failed` settles what they stand for).
        `placement`: the stage's `models.placement` entry (model sharing across processes)."""
        super().__init__()
        self.inner, self.per_record, self.per_view = inner, max(1, per_record), per_view
        self.placement = placement

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
                    failure = ModelFailure(f"{type(exc).__name__}: {exc}")
                    results.append(
                        self._each_view(batch[i], model, inference_args, failure) if self.per_view else failure
                    )
        for i, res in zip(todo, results, strict=True):
            out[i] = res
        return out

    def _each_view(self, group: list[Any], model: Any, inference_args: Any, failure: ModelFailure) -> Any:
        """A record that fails, each of its examples alone: a failure stays with the view that causes
        it (one image of a document); all of them failing is the record's own failure."""
        if len(group) < 2:
            return failure
        preds: list[Any] = []
        for example in group:
            try:
                preds.append(self._infer([[example]], model, inference_args)[0][0])
            except Exception as one:
                preds.append(ModelFailure(f"{type(one).__name__}: {one}"))
        return failure if all(isinstance(p, ModelFailure) for p in preds) else preds

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
        share = getattr(self.placement, "share_model", None)
        return self.inner.share_model_across_processes() if share is None else share

    def model_copies(self) -> int:
        copies = getattr(self.placement, "model_copies", None)
        return self.inner.model_copies() if copies is None else copies


def _examples(rec: Record, stage: ModelStage, views: Views) -> tuple[Record, list[Any] | None]:
    if not rec.pending:
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
        every = [(i, pred.error) for i in range(len(views.views(rec)))] if views.per_view else []
        if every and views.failed(rec, stage, every):
            return rec
        return rec.settle("model_error", f"{stage.name}: {pred.error}", stage=stage.name)
    failed = [(i, p.error) for i, p in enumerate(pred) if isinstance(p, ModelFailure)]
    if failed:
        if not views.failed(rec, stage, failed):
            return rec.settle("model_error", f"{stage.name}: {failed[0][1]}", stage=stage.name)
        pred = [p for p in pred if not isinstance(p, ModelFailure)]
    try:
        seen = views.views(rec)
        for view, p in zip(seen, pred, strict=True):
            stage.merge(view, p)
        views.reduce(rec, stage, seen)
    except Exception as exc:  # scoring code on a model's output: this record only
        return rec.settle("internal_error", f"merge[{stage.name}]: {type(exc).__name__}: {exc}", stage=stage.name)
    return rec


def placed(infer: beam.PTransform, placement: Any) -> beam.PTransform:
    """`infer` with its stage's resource hints (`PlacementParams`), set on the model call alone so
    that the decode and merge steps around it stay on plain CPU workers."""
    hints = placement.hints() if placement is not None else {}
    return infer.with_resource_hints(**hints) if hints else infer


class ScoreWithModels(beam.PTransform):
    """Every stage in turn over every record; records that need no model pass through unscored."""

    def __init__(self, stages: list[ModelStage], views: Views | None = None) -> None:
        """`views`: how the records are seen (default: one image and its caption per record)."""
        super().__init__()
        self.stages, self.views = stages, views or Views()

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        for st in self.stages:
            guarded = GuardedHandler(st.handler, self.views.per_record, self.views.per_view, st.placement)
            records = (
                records
                | f"Example[{st.name}]" >> beam.Map(_examples, stage=st, views=self.views)
                | f"RunInference[{st.name}]" >> placed(RunInference(KeyedModelHandler(guarded)), st.placement)
                | f"Merge[{st.name}]" >> beam.Map(_merge, stage=st, views=self.views)
            )
        return records
