"""The OCR engines (rapidocr's PP-OCR ONNX models, PaddleOCR) and their Beam `ModelHandler`s,
imported only when an OCR stage runs.

Every image is shrunk so its longest side is at most `max_side` before OCR, and the boxes are mapped
back to the coordinates of the image that was given. Images run one at a time (both engines take one
image per call anyway), so a result never depends on which other images share the batch.

Verification (`OcrVerifyHandler`) also recognises given boxes: each quad is cropped from the
native-resolution image (`ocr_verify.crop_quad`) and read by the recogniser alone, one crop per call,
so a line's reading depends neither on the other lines of its image nor on the batch.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from apache_beam.ml.inference.base import ModelHandler
from PIL import Image

from mmcurate.schemas import OcrLine

from .io.weights import is_remote, local_copy
from .ocr import MIN_SIDE, TALL, OcrBackend, OcrFailed, OcrLines, OcrParams
from .ocr_verify import crop_quad

Quad = Sequence[Sequence[float]]
Reading = tuple[str, float]


class OcrReading(NamedTuple):
    """What verification learns of one image: the model's own lines (detection + recognition, in the
    given image's pixels) and its reading of each given quad's crop (None: a degenerate quad)."""

    lines: OcrLines
    reads: list[Reading | None]


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _quad(points: Any) -> list[list[float]]:
    """Four corners from a backend's polygon; any other point count becomes its bounding box."""
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(arr) != 4:
        (x0, y0), (x1, y1) = arr.min(axis=0), arr.max(axis=0)
        arr = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return arr.tolist()


class _Backend(abc.ABC):
    """Shared per-image frame: RGB, shrink, run the engine, map boxes back, drop weak lines.

    Images run one at a time (both engines take one image per call anyway), so a result never
    depends on which other images share the batch.
    """

    benign: tuple[type[BaseException], ...] = ()
    """Engine errors that mean "this image holds no readable text" (degenerate sizes), not a failure:
    the image gets no lines and a note."""

    def __init__(self, params: OcrParams) -> None:
        self.params = params

    def __call__(self, images: list[Image.Image]) -> list[OcrLines]:
        out = []
        for index, image in enumerate(images):
            try:
                out.append(self.lines(image))
            except Exception as exc:
                raise OcrFailed(index, exc) from exc
        return out

    def verify(self, examples: Sequence[tuple[Image.Image, Sequence[Quad]]]) -> list[OcrReading]:
        """Per (image, quads): the image's lines and the reading of each quad's crop."""
        out = []
        for index, (image, quads) in enumerate(examples):
            try:
                out.append(self.read(image, quads))
            except Exception as exc:
                raise OcrFailed(index, exc) from exc
        return out

    def lines(self, image: Image.Image) -> OcrLines:
        """`one`, with the engine errors that mean "no readable text" turned into a note."""
        try:
            return self.one(image)
        except self.benign as exc:
            return OcrLines(note=f"no text read: {type(exc).__name__}: {exc}")

    def read(self, image: Image.Image, quads: Sequence[Quad]) -> OcrReading:
        """The whole image at OCR size, and each quad cropped from the image as given (native pixels)."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        crops = [crop_quad(image, quad) for quad in quads]
        texts = iter([self.recognise([c])[0] for c in crops if c is not None])
        return OcrReading(self.lines(image), [next(texts) if c is not None else None for c in crops])

    def one(self, image: Image.Image) -> OcrLines:
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        small = _shrink(image, self.params.max_side)
        if min(small.size) < MIN_SIDE:
            return OcrLines(note=f"not read: {width}x{height} is below {MIN_SIDE} px on its short side at OCR size")
        sx, sy = width / small.width, height / small.height
        lines = []
        for points, text, score in self.engine(small):
            text = text.strip()
            chars = sum(ch.isalnum() for ch in text)
            if score < self.params.min_confidence or chars < self.params.min_chars:
                continue
            if chars == 1 and score < self.params.single_char_confidence:
                continue
            box = [
                [round(min(max(x * sx, 0.0), width), 2), round(min(max(y * sy, 0.0), height), 2)]
                for x, y in _quad(points)
            ]
            lines.append(OcrLine(box=box, text=text, confidence=float(score)))
        return OcrLines(lines)

    @abc.abstractmethod
    def engine(self, image: Image.Image) -> Iterable[tuple[Any, str, float]]:
        """(corner points, text, confidence) per line the backend finds in `image`."""

    @abc.abstractmethod
    def recognise(self, crops: list[Image.Image]) -> list[Reading]:
        """(text, confidence) per cropped line image: recognition only, no detection."""

    @abc.abstractmethod
    def load_recogniser(self) -> None:
        """Load what `recognise` needs now (verification loads it once per worker, in `load_model`)."""


class RapidOcrBackend(_Backend):
    """rapidocr 3.x: `RapidOCR(params=...)(image)` returns a `RapidOCROutput` whose `boxes` is an
    (N, 4, 2) array of corners (clockwise from top-left, in the input image's pixels), with `txts`
    and `scores` tuples of the same length; all three are None when no text is found.

    Only `Global.text_score` (= min_confidence) and the log level are changed; detector and
    recogniser settings stay at rapidocr's defaults (PP-OCRv6 small det/rec, PP-OCR v2 mobile cls).
    """

    def __init__(self, params: OcrParams) -> None:
        super().__init__(params)
        from rapidocr import RapidOCR
        from rapidocr.ch_ppocr_det.utils import ResizeImgError as DetResizeError
        from rapidocr.utils.process_img import ResizeImgError

        self.benign = (ResizeImgError, DetResizeError)
        self.ocr = RapidOCR(params={"Global.text_score": params.min_confidence, "Global.log_level": "error"})

    def load(self) -> None:
        """Load the three ONNX sessions now (rapidocr loads them lazily on first use)."""
        for loader in ("_load_det_model", "_load_cls_model", "_load_rec_model"):
            getattr(self.ocr, loader, lambda: None)()

    def engine(self, image: Image.Image) -> Iterable[tuple[Any, str, float]]:
        if image.height > TALL * image.width:
            # rapidocr pads wide images (width > 8 x height) to keep the detector input bounded, but
            # not tall ones: its detector scales the short side up to 736 px, so a 9 x 960 strip
            # became a 736 x 78000 input (75 s). Pad on the right to a quarter of the height, as it
            # does for wide ones, so box coordinates are unchanged. Edge pixels, not black: with a
            # black band the detector missed short words that it found with a replicated edge.
            arr = np.asarray(image)
            pad = math.ceil(image.height / 4) - image.width
            image = Image.fromarray(np.pad(arr, ((0, 0), (0, pad), (0, 0)), mode="edge"))
        # A PIL image is converted RGB -> BGR by rapidocr's LoadImage.
        result = self.ocr(image)
        if result.boxes is None or result.txts is None or result.scores is None:
            return []
        return zip(result.boxes, result.txts, result.scores, strict=True)

    def load_recogniser(self) -> None:
        self.ocr._load_rec_model()

    def recognise(self, crops: list[Image.Image]) -> list[Reading]:
        """The recogniser alone on the crops (BGR, as rapidocr's loader makes of a PIL image).

        Called directly, not as `RapidOCR.__call__(img, use_det=False, ...)`: that stores its use_*
        flags on the engine, so every later full OCR of the worker would run without detection.
        No 0/180 degree line classifier: on the ICDAR 2015 sample it turned legible crops upside
        down ("Carpark" read "Carpdark"), mean CER 0.224 with it, 0.197 without, and 34 vs 20 ms a
        line; the quads' corner order already sets the text upright.
        """
        if not crops:
            return []
        from rapidocr.ch_ppocr_rec import TextRecInput

        bgr = [np.ascontiguousarray(np.asarray(c.convert("RGB"))[:, :, ::-1]) for c in crops]
        result = self.ocr._load_rec_model()(TextRecInput(img=bgr))
        return [(str(t).strip(), float(c)) for t, c in zip(result.txts, result.scores, strict=True)]


def _paddle_model_name(model_dir: str) -> str | None:
    """The model name PaddleX expects for a dir: `Global.model_name` of its inference.yml.

    PaddleX checks the name it is given against this and otherwise uses its pipeline default
    (PP-OCRv5_server_det/rec), so a mobile or language-specific model dir fails without it.
    """
    import yaml

    config = Path(model_dir) / "inference.yml"
    if not config.is_file():
        return None
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    name = (data.get("Global") or {}).get("model_name")
    return str(name) if name else None


def no_model_source_check() -> None:
    """All models come from local dirs: skip PaddleX's probe of its model hosts on import, which
    stalls and then fails on an offline machine (must be set before paddleocr is imported)."""
    os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")


class PaddleOcrBackend(_Backend):
    """PaddleOCR 3.x (PaddleX pipeline "OCR").

    Constructor names checked against paddleocr/_pipelines/ocr.py and _common_args.py of the
    PaddleOCR repository (3.x): `text_detection_model_dir`/`_name`, `text_recognition_model_dir`/`_name`,
    `textline_orientation_model_dir`/`_name`, `use_textline_orientation`, `use_doc_orientation_classify`,
    `use_doc_unwarping`, `device` (None = GPU 0 if available, else CPU). `predict(ndarray)` returns one
    result per image with `rec_texts`, `rec_scores` and `rec_polys` (4-point int16 arrays); an ndarray
    input is read as BGR (paddlex/inference/common/reader/image_reader.py). Not run here: paddleocr
    is not installed on the development machines.
    """

    def __init__(self, params: OcrParams) -> None:
        super().__init__(params)
        no_model_source_check()
        from paddleocr import PaddleOCR

        self.recogniser: Any = None
        local = {k: local_copy(v) if v and is_remote(v) else v  # bucket folders: copied once per machine
                 for k, v in (("det", params.det_model_dir), ("rec", params.rec_model_dir),
                              ("cls", params.cls_model_dir))}  # fmt: skip
        cls_dir = local["cls"]
        self.rec_dir = local["rec"]
        self.ocr = PaddleOCR(
            text_detection_model_dir=local["det"],
            text_detection_model_name=_paddle_model_name(local["det"] or ""),
            text_recognition_model_dir=local["rec"],
            text_recognition_model_name=_paddle_model_name(local["rec"] or ""),
            textline_orientation_model_dir=cls_dir,
            textline_orientation_model_name=_paddle_model_name(cls_dir) if cls_dir else None,
            use_textline_orientation=cls_dir is not None,
            # The document preprocessor's models would be downloaded: keep it off.
            use_doc_orientation_classify=False,
            use_doc_unwarping=False,
            text_rec_score_thresh=params.min_confidence,
            device=None if params.device == "auto" else params.device,
        )

    def engine(self, image: Image.Image) -> Iterable[tuple[Any, str, float]]:
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
        (result,) = self.ocr.predict(bgr)
        return zip(result["rec_polys"], result["rec_texts"], result["rec_scores"], strict=True)

    def load_recogniser(self) -> None:
        """A second copy of the recogniser, as PaddleOCR's own predictor (the OCR pipeline's is not
        public); only verification loads it."""
        if self.recogniser is None:
            from paddleocr import TextRecognition

            rec_dir = self.rec_dir
            self.recogniser = TextRecognition(
                model_name=_paddle_model_name(rec_dir or ""),
                model_dir=rec_dir,
                device=None if self.params.device == "auto" else self.params.device,
            )

    def recognise(self, crops: list[Image.Image]) -> list[Reading]:
        """PaddleOCR 3.x's `TextRecognition` predictor on `rec_model_dir`.

        Written from PaddleOCR's docs (docs/version3.x/module_usage/text_recognition.md) and code
        (paddleocr/_models/text_recognition.py, base.py): `TextRecognition(model_name=, model_dir=,
        device=)`, `predict(input=[ndarray, ...], batch_size=)` gives one result per crop with
        `rec_text` and `rec_score`; ndarrays are read as BGR. Not run here: paddleocr cannot run on
        the development machines. No line orientation classifier: a crop is read as rectified.
        """
        if not crops:
            return []
        self.load_recogniser()
        bgr = [np.ascontiguousarray(np.asarray(c.convert("RGB"))[:, :, ::-1]) for c in crops]
        results = self.recogniser.predict(input=bgr, batch_size=1)
        return [(str(r["rec_text"]).strip(), float(r["rec_score"])) for r in results]


def make_backend(params: OcrParams) -> OcrBackend:
    """Build the configured backend (models load here; call once per worker)."""
    if params.backend == "paddleocr":
        return PaddleOcrBackend(params)
    backend = RapidOcrBackend(params)
    backend.load()
    return backend


# ------------------------------------------------------------------------------------------------
# Beam


class OcrModelHandler(ModelHandler[Image.Image, OcrLines, OcrBackend]):
    """RunInference handler: RGB PIL images in, one `OcrLines` (a list of `OcrLine`) per image out."""

    def __init__(self, params: OcrParams | None = None) -> None:
        self.params = params if params is not None else OcrParams()
        super().__init__(min_batch_size=1, max_batch_size=self.params.batch_size)

    def load_model(self) -> OcrBackend:
        return make_backend(self.params)

    def run_inference(
        self,
        batch: Sequence[Image.Image],
        model: OcrBackend,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[OcrLines]:
        return model(list(batch))

    def get_num_bytes(self, batch: Sequence[Image.Image]) -> int:
        return sum(image.width * image.height * len(image.getbands()) for image in batch)

    def get_metrics_namespace(self) -> str:
        return "mmcurate_ocr"


class OcrVerifyHandler(ModelHandler[tuple[Image.Image, Sequence[Quad]], OcrReading, Any]):
    """RunInference handler for verification: an example is (RGB PIL image, quads in its pixels), its
    result an `OcrReading`: the image's OCR lines (shrunk to `max_side`, boxes mapped back) and the
    recognition of each quad's native-resolution crop (None for a degenerate quad). An engine error on
    one example raises `OcrFailed` naming its index, as `OcrModelHandler` does."""

    def __init__(self, params: OcrParams | None = None) -> None:
        self.params = params if params is not None else OcrParams()
        super().__init__(min_batch_size=1, max_batch_size=self.params.batch_size)

    def load_model(self) -> Any:
        backend = make_backend(self.params)
        backend.load_recogniser()  # type: ignore[attr-defined]  # every backend is a _Backend
        return backend

    def run_inference(
        self,
        batch: Sequence[tuple[Image.Image, Sequence[Quad]]],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[OcrReading]:
        return model.verify(list(batch))

    def get_num_bytes(self, batch: Sequence[tuple[Image.Image, Sequence[Quad]]]) -> int:
        return sum(image.width * image.height * len(image.getbands()) for image, _ in batch)

    def get_metrics_namespace(self) -> str:
        return "mmcurate_ocr_verify"
