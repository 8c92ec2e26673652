"""Model scoring through Beam's RunInference: CLIP score, aesthetics, OCR, over any record kind.

    records -> 'Example[clip]' -> 'RunInference[clip]' -> 'Merge[clip]' -> ... -> records with model scores

A model stage (`ModelStage`) scores one *view*: an image with its text. A recipe says how its records
are seen (`Views`, given to `ScoreWithModels`): a caption pair is one view, a clip its sampled
frames, a document its images; the views of one record go to the model in the same batch, and the
`Views` folds their results back into the record (one score; mean and max over frames). Stages are
found through `STAGE_BUILDERS`: a new model registers there and nothing else changes.

Failures stay with their record: a batch that raises is retried one record at a time, so one bad
example quarantines only its own record (`model_error`); a stage that degrades a record without
failing it (OCR that could not read a tiny image) notes it in the record's `errors`. This module
imports no model library; `pipelines/inference.py` (RunInference) and the handlers are imported
only when a configured filter needs a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from mmcurate.schemas import OcrLine
from mmcurate.stages.base import Filter, ModelUnavailable
from mmcurate.stages.clip import check_weights, embed_dim
from mmcurate.stages.clip import head_input_dim as aesthetic_input_dim


@dataclasses.dataclass
class View:
    """What a model looks at: one RGB image and its text; the stage's results land here first."""

    pixels: Any
    text: str
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    texts: list[str] | None = None
    """Several texts to compare the image with (an interleaved document's sentences)."""
    similarity: list[float] | None = None
    """The image's similarity with each of `texts` (the alignment stage's result)."""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    ocr: list[OcrLine] | None = None
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    boxes: list[Any] | None = None
    """Regions of the image the stage must look at (an OCR sample's ground-truth quads, in `pixels`)."""
    result: Any = None
    """A stage's prediction as it came, for a `Views` whose `reduce` interprets it (OCR verification)."""
    embedding: Any = None
    """The image's normalised CLIP embedding, when a stage was asked for it (`model_stages(embed=True)`):
    no score (scores become ledger columns); a `Views.reduce` that wants it reads it here."""


@dataclasses.dataclass
class ModelStage:
    name: str
    handler: Any
    """Over single examples (one per view)."""
    example: Callable[[View], Any]
    merge: Callable[[View, Any], None]
    """Writes one prediction into its view."""
    scores: tuple[str, ...]
    """Score names `merge` writes into a view."""
    placement: Any = None
    """Its `models.placement` entry (resource hints, model sharing), when configured."""


class Views:
    """How a record kind is seen by the model stages. The default: one view, `pixels` + `caption`."""

    per_record: int = 1
    """Views per record, to size batches in records."""
    per_view: bool = False
    """A view can fail alone (`failed` settles what it stands for) instead of failing its record."""

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

    def failed(self, rec: Any, stage: ModelStage, views: list[tuple[int, str]]) -> bool:
        """Some views (index, error) failed on their own: settle what they stand for and return True
        when the record goes on with the others (their views are then no longer among `views(rec)`),
        or return False to quarantine the record (`model_error`), as for a record of one view."""
        return False


# -------------------------------------------------------------------------------------------- stages


def clip_example(view: View) -> tuple[Any, str]:
    return (view.pixels, view.text)


def merge_scores(view: View, scores: dict[str, float]) -> None:
    view.scores.update(scores)


def merge_clip(view: View, pred: dict[str, Any]) -> None:
    """CLIP's scores into the view's scores, its image embedding (if asked for) beside them."""
    from mmcurate.stages.clip_model import EMBEDDING

    view.scores.update({k: v for k, v in pred.items() if k != EMBEDDING})
    if EMBEDDING in pred:
        view.embedding = pred[EMBEDDING]


def merge_ocr(view: View, lines: Any) -> None:
    from mmcurate.stages.ocr import ocr_scores

    view.ocr = list(lines)
    view.scores.update(ocr_scores(view.ocr, view.pixels.width, view.pixels.height))
    if getattr(lines, "note", ""):
        view.errors["ocr"] = lines.note


def _clip_stages(config: Any, needed: set[str]) -> list[ModelStage]:
    """CLIP score and aesthetics share one tower (the image is encoded once) unless configured apart.
    `merge_clip` takes an embedding where `embed_images` asked a handler for one."""
    from mmcurate.stages.clip_model import ClipModelHandler

    clip, aesthetic = config.models.clip, config.models.aesthetic
    shared = "aesthetic" in needed and (aesthetic.clip is None or aesthetic.clip.tower == clip.tower)
    stages = []
    if "clip" in needed or shared:
        weights = aesthetic.weights if shared else None
        names = ("clip_score",) * ("clip" in needed) + ("aesthetic",) * shared
        handler = ClipModelHandler(clip, text="clip" in needed, aesthetic_weights=weights)
        stages.append(ModelStage("clip", handler, clip_example, merge_clip, names))
    if "aesthetic" in needed and not shared:
        handler = ClipModelHandler(aesthetic.clip, text=False, aesthetic_weights=aesthetic.weights)
        stages.append(ModelStage("aesthetic", handler, clip_example, merge_clip, ("aesthetic",)))
    return stages


def _ocr_stages(config: Any, needed: set[str]) -> list[ModelStage]:
    from mmcurate.stages.ocr import OCR_SCORES
    from mmcurate.stages.ocr_model import OcrModelHandler

    return [ModelStage("ocr", OcrModelHandler(config.models.ocr), lambda v: v.pixels, merge_ocr, OCR_SCORES)]


def verify_example(view: View) -> tuple[Any, list[Any]]:
    return (view.pixels, list(view.boxes or ()))


def merge_result(view: View, result: Any) -> None:
    view.result = result
    note = getattr(getattr(result, "lines", None), "note", "")
    if note:
        view.errors["ocr_verify"] = note


def _verify_stages(config: Any, needed: set[str]) -> list[ModelStage]:
    """OCR of the whole image and recognition of each ground-truth box, on one engine per worker."""
    from mmcurate.stages.ocr_model import OcrVerifyHandler
    from mmcurate.stages.ocr_verify import VERIFY_SCORES

    handler = OcrVerifyHandler(config.models.ocr)
    return [ModelStage("ocr_verify", handler, verify_example, merge_result, VERIFY_SCORES)]


def align_example(view: View) -> tuple[Any, tuple[str, ...]]:
    return (view.pixels, tuple(view.texts or ()))


def merge_similarity(view: View, sims: list[float]) -> None:
    view.similarity = [float(s) for s in sims]


def _align_stages(config: Any, needed: set[str]) -> list[ModelStage]:
    """Every image of a document against every sentence of it, on the CLIP tower of `models.clip`."""
    from mmcurate.stages.clip_model import ClipMatrixHandler

    handler = ClipMatrixHandler(config.models.clip)
    return [ModelStage("align", handler, align_example, merge_similarity, ())]


STAGE_BUILDERS: dict[tuple[str, ...], Callable[[Any, set[str]], list[ModelStage]]] = {
    ("clip", "aesthetic"): _clip_stages,
    ("ocr",): _ocr_stages,
    ("align",): _align_stages,
    ("ocr_verify",): _verify_stages,
}
"""Model names -> the builder of their stages, in the order the stages run."""


def needed_models(filters: Iterable[Filter]) -> set[str]:
    return {f.model for f in filters} - {""}


def model_stages(config: Any, embed: bool = False) -> list[ModelStage]:
    """The RunInference stages the configured filters need. `embed`: the first CLIP stage also
    returns each image's embedding (into `View.embedding`; see `embed_images`)."""
    needed = needed_models(config.build_filters())
    stages = [st for names, build in STAGE_BUILDERS.items() if needed & set(names) for st in build(config, needed)]
    placement = getattr(getattr(config, "models", None), "placement", None) or {}
    check_placement_of(placement, {st.name: st.handler for st in stages}, "models.placement", needed)
    for st in stages:
        st.placement = placement.get(st.name)
    return embed_images(stages) if embed else stages


def check_placement_of(placement: dict[str, Any], handlers: dict[str, Any], key: str, needed: set[str]) -> None:
    """Fail fast on placement a stage cannot honour: model sharing across processes serves the model
    through Beam's multi-process proxy, which passes method calls only, and our CLIP, OCR and
    transformers models are read by attribute (so every record would fail); an `aesthetic` entry
    when the aesthetic head rides on the CLIP stage (that stage's entry is `clip`)."""
    from mmcurate.pipelines.config import ConfigError

    if "aesthetic" in placement and "aesthetic" not in handlers and "aesthetic" in needed:
        raise ConfigError(f"{key}.aesthetic: the aesthetic head shares the CLIP stage's tower; place `clip`")
    for name, p in placement.items():
        handler = handlers.get(name)
        shares = p.share_model or p.model_copies is not None
        if handler is not None and shares and not getattr(handler, "proxy_safe", False):
            raise ConfigError(
                f"{key}.{name}.share_model: the {name} model is loaded once per worker process and read by "
                "attribute, which Beam's shared-model proxy does not pass; leave share_model and model_copies unset"
            )


def embed_images(stages: list[ModelStage]) -> list[ModelStage]:
    """Ask the first CLIP-tower stage for image embeddings too (the image is encoded there anyway);
    nothing is asked when no such stage runs (no CLIP-scoring filter is configured)."""
    from mmcurate.stages.clip_model import ClipModelHandler

    for st in stages:
        if type(st.handler) is ClipModelHandler:
            st.handler.embed = True
            break
    return stages


def model_fields(config: Any, views: Views | None = None) -> tuple[str, ...]:
    """Score names the model stages write on records seen through `views`, without building a stage
    (a run that only declares its columns imports no model library)."""
    views = views or Views()
    needed = needed_models(config.build_filters())
    clip_scores = ("clip_score",) * ("clip" in needed) + ("aesthetic",) * ("aesthetic" in needed)
    stages = [ModelStage("clip", None, clip_example, merge_scores, clip_scores)] if clip_scores else []
    if "ocr" in needed:
        from mmcurate.stages.ocr import OCR_SCORES

        stages.append(ModelStage("ocr", None, lambda v: v.pixels, merge_ocr, OCR_SCORES))
    if "ocr_verify" in needed:
        from mmcurate.stages.ocr_verify import VERIFY_SCORES

        stages.append(ModelStage("ocr_verify", None, verify_example, merge_result, VERIFY_SCORES))
    return tuple(name for st in stages for name in views.fields(st))


def validate_models(config: Any) -> None:
    """Everything a model stage needs, checked on the driver before the pipeline starts."""
    needed = needed_models(config.build_filters())
    if config.models.placement:  # the stages are built (no model loaded) to check what is placed on them
        model_stages(config)
    clip, aesthetic = config.models.clip, config.models.aesthetic
    if needed & {"clip", "align"}:
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
    if needed & {"ocr", "ocr_verify"}:
        from mmcurate.stages.ocr import check_backend

        check_backend(config.models.ocr)
