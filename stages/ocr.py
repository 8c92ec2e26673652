"""OCR: its parameters, the scores of the text lines found, and the `text_area` filter.

The engines and their Beam `ModelHandler` are in `ocr_model.py`, imported only when the OCR stage
runs. Two backends sit behind one interface, a callable `backend(images) -> [[OcrLine, ...], ...]`:

* `rapidocr` (default): the PP-OCR detector, orientation classifier and recogniser exported to ONNX,
  shipped inside the `rapidocr` wheel and run by onnxruntime, so it works on an offline machine.
* `paddleocr`: PaddleOCR 3.x on PaddlePaddle (GPU capable). It downloads its models on first use
  unless given local model directories, so those are required (`models.ocr.det_model_dir`,
  `models.ocr.rec_model_dir`); `check_backend` says what is missing before a pipeline starts.
  A missing backend is an error, never a silent fallback to the other one.

Every image is shrunk so its longest side is at most `max_side` before OCR, and the boxes are mapped
back to the coordinates of the image that was given (the decoded `pixels`). The model stage writes
`ocr_scores(...)` (`ocr_text_area`, `ocr_lines`, `ocr_chars`, `ocr_mean_confidence`) into the
ledger; the `text_area` filter decides from `ocr_text_area` alone.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageDraw

from mmcurate.schemas import OcrLine

from .base import Filter, ModelUnavailable, Params, register
from .io.weights import WeightsUnavailable, is_remote, stat

OCR_SCORES = ("ocr_text_area", "ocr_lines", "ocr_chars", "ocr_mean_confidence")


class OcrLines(list):
    """The lines found in one image; `note` says why there are none when OCR could not look at the
    image (too small, an engine error that means "no readable text"), so the record can say that it
    was scored degraded instead of claiming a clean zero."""

    note: str = ""

    def __init__(self, lines: Iterable[OcrLine] = (), note: str = "") -> None:
        super().__init__(lines)
        self.note = note


OcrBackend = Callable[[list[Image.Image]], list[OcrLines]]

MIN_SIDE = 8
"""Images whose shorter side (after the `max_side` shrink) is below this hold no legible text line:
they get no lines instead of being blown up by the detector's own upscaling (a 2 x 960 strip would
become a 3630 x 14400 detector input)."""

TALL = 8
"""rapidocr backend: images taller than this many widths are padded (see `RapidOcrBackend.engine`)."""

MASK_SIDE = 512
"""Longest side of the mask `text_area_ratio` rasterises the text boxes on."""

_DEVICE = re.compile(r"auto|cpu|(gpu|npu|xpu|mlu|dcu)(:\d+)?")


class OcrFailed(RuntimeError):
    """The backend raised on one image of a batch; the pipeline quarantines the batch's records."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(f"OCR failed on image {index} of the batch: {type(cause).__name__}: {cause}")
        self.index = index


class OcrParams(Params):
    backend: str = "rapidocr"
    """rapidocr (ONNX PP-OCR models inside the wheel, offline) or paddleocr (needs local model dirs)."""
    min_confidence: float = 0.5
    """Lines whose recognition confidence is below this are discarded."""
    min_chars: int = 1
    """Lines with fewer letters or digits are discarded. 1: a single character is text (one CJK
    character, a lone letter or digit on a sign) and must survive the defaults; set 2 to discard the
    detector's commonest false positive on photographs, a lone "O" or "0" boxing a round object (a
    retina, a coin, an eye), at the price of those."""
    single_char_confidence: float = 0.9
    """A line of one letter or digit needs at least this confidence: a lone glyph boxing a round
    object (an "O" over a whole retina photograph, read at 0.53) is the detector's commonest false
    positive, while real single characters on signs (`东`, `W`) read at 0.99 and more."""
    max_side: int = 960
    """The image is shrunk so its longest side is at most this before OCR (boxes are mapped back)."""
    batch_size: int = 8
    lang: str = "en"
    """paddleocr only: the language of the models in the model dirs. PaddleOCR 3.x ignores `lang`
    whenever model dirs are given (paddleocr/_pipelines/ocr.py), so it is documentation, not passed."""
    det_model_dir: str | None = None
    """paddleocr only: a PaddleX text detection model dir (inference.yml + weights), e.g. PP-OCRv5_mobile_det."""
    rec_model_dir: str | None = None
    """paddleocr only: a PaddleX text recognition model dir, e.g. en_PP-OCRv5_mobile_rec."""
    cls_model_dir: str | None = None
    """paddleocr only, optional: a text line orientation model dir (PP-LCNet_x0_25_textline_ori);
    null = no orientation classifier (upside-down lines are then misread)."""
    device: str = "auto"
    """paddleocr only: auto (GPU 0 when available, else CPU), cpu, gpu, gpu:N."""

    def model_post_init(self, _context: object) -> None:
        if self.backend not in ("rapidocr", "paddleocr"):
            raise ValueError(f"models.ocr.backend must be rapidocr or paddleocr, got {self.backend!r}")
        self._check_values()
        if self.backend == "rapidocr":
            self._check_rapidocr_settings()

    def _check_values(self) -> None:
        if not 0.0 <= self.single_char_confidence <= 1.0:
            raise ValueError(
                f"models.ocr.single_char_confidence must be within 0..1, got {self.single_char_confidence}"
            )
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"models.ocr.min_confidence must be within 0..1, got {self.min_confidence}")
        if self.min_chars < 0:
            raise ValueError(f"models.ocr.min_chars must be >= 0, got {self.min_chars}")
        if self.max_side < 32:
            raise ValueError(f"models.ocr.max_side must be at least 32 pixels, got {self.max_side}")
        if self.batch_size < 1:
            raise ValueError(f"models.ocr.batch_size must be at least 1, got {self.batch_size}")
        if not self.lang.strip():
            raise ValueError("models.ocr.lang must not be empty")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"models.ocr.device must be auto, cpu, gpu or gpu:N, got {self.device!r}")
        for key in ("det_model_dir", "rec_model_dir", "cls_model_dir"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                raise ValueError(f"models.ocr.{key} must be a directory or null, got an empty string")

    def _check_rapidocr_settings(self) -> None:
        """Settings that only the paddleocr backend reads would silently do nothing here."""
        ignored = [k for k in ("det_model_dir", "rec_model_dir", "cls_model_dir") if getattr(self, k)]
        ignored += ["device"] if self.device != "auto" else []
        ignored += ["lang"] if self.lang != "en" else []
        if ignored:
            keys = ", ".join(f"models.ocr.{k}" for k in ignored)
            verb = "applies" if len(ignored) == 1 else "apply"
            raise ValueError(f"{keys} only {verb} to models.ocr.backend = paddleocr (the backend is rapidocr)")


# ------------------------------------------------------------------------------------------------
# Scores


def text_area_ratio(lines: Sequence[OcrLine], width: int, height: int) -> float:
    """Share of the `width` x `height` image covered by the union of the text quadrilaterals.

    The boxes are filled on a mask at most `MASK_SIDE` pixels on its long side, so overlapping
    boxes count once; edge pixels count as covered, which overestimates tiny boxes slightly.
    """
    if not lines or width <= 0 or height <= 0:
        return 0.0
    scale = min(1.0, MASK_SIDE / max(width, height))
    mw, mh = max(1, round(width * scale)), max(1, round(height * scale))
    sx, sy = mw / width, mh / height
    mask = Image.new("L", (mw, mh), 0)
    draw = ImageDraw.Draw(mask)
    for line in lines:
        points = [(x * sx, y * sy) for x, y in line.box]
        if len(points) >= 3:
            draw.polygon(points, fill=255)
    covered = int(np.count_nonzero(np.asarray(mask)))
    return min(1.0, max(0.0, covered / (mw * mh)))


def ocr_scores(lines: Sequence[OcrLine], width: int, height: int) -> dict[str, float]:
    """The ledger columns of the OCR stage for one image (`width` x `height`: the scored image)."""
    n = len(lines)
    return {
        "ocr_text_area": text_area_ratio(lines, width, height),
        "ocr_lines": float(n),
        "ocr_chars": float(sum(len("".join(line.text.split())) for line in lines)),
        "ocr_mean_confidence": float(sum(line.confidence for line in lines) / n) if n else 0.0,
    }


# ------------------------------------------------------------------------------------------------
# Backends


def _importable(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # an ImportError, or a broken install that fails while importing
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_rapidocr(params: OcrParams) -> None:
    for module, install in (("onnxruntime", "onnxruntime"), ("rapidocr", "rapidocr onnxruntime")):
        error = _importable(module)
        if error:
            raise ModelUnavailable(
                f"models.ocr.backend = rapidocr needs the {module} package ({error}): pip install {install}"
            )
    from .ocr_model import RapidOcrBackend

    try:
        RapidOcrBackend(params).load()
    except Exception as exc:
        raise ModelUnavailable(
            "models.ocr.backend = rapidocr could not load the PP-OCR ONNX models that ship inside the "
            f"rapidocr wheel ({type(exc).__name__}: {exc}); reinstall rapidocr"
        ) from exc


def _paddle_dir_problems(params: OcrParams) -> list[str]:
    problems = []
    for key, what in (("det_model_dir", "text detection"), ("rec_model_dir", "text recognition")):
        if not getattr(params, key):
            problems.append(
                f"models.ocr.{key} is not set: PaddleOCR downloads its {what} model on first use, which an "
                f"offline machine cannot; download it once (e.g. PP-OCRv5_mobile_det / en_PP-OCRv5_mobile_rec "
                f"inference models) and set models.ocr.{key} to its directory"
            )
    for key in ("det_model_dir", "rec_model_dir", "cls_model_dir"):
        value = getattr(params, key)
        if not value:
            continue
        if is_remote(value):  # a model folder in a bucket: each worker copies it once
            try:
                stat(value.rstrip("/") + "/inference.yml")
            except WeightsUnavailable as exc:
                problems.append(f"models.ocr.{key} = {value!r}: {exc} (a PaddleX inference model directory)")
            continue
        path = Path(value).expanduser()
        if not path.is_dir():
            problems.append(f"models.ocr.{key} = {value!r}: no such directory")
        elif not (path / "inference.yml").is_file():
            problems.append(
                f"models.ocr.{key} = {value!r} has no inference.yml: PaddleOCR 3.x needs a PaddleX inference "
                "model directory (inference.yml next to the inference.json/pdiparams weights)"
            )
    return problems


def check_backend(params: OcrParams) -> None:
    """Raise `ModelUnavailable` naming what is missing and the config key to set; return if OCR can run."""
    if params.backend == "rapidocr":
        _check_rapidocr(params)
        return
    from .ocr_model import no_model_source_check

    problems = _paddle_dir_problems(params)
    no_model_source_check()
    for module in ("paddleocr", "paddle"):
        error = _importable(module)
        if error:
            problems.append(
                f"models.ocr.backend = paddleocr needs the {module} package ({error}): "
                "pip install paddleocr paddlepaddle (or paddlepaddle-gpu)"
            )
            break
    if problems:
        raise ModelUnavailable("OCR backend paddleocr cannot run:\n  - " + "\n  - ".join(problems))


# ------------------------------------------------------------------------------------------------
# Filter


@register
class TextArea(Filter):
    """Drop text-heavy images (screenshots, posters, scanned pages): OCR text covers more than `max`.

    `score` computes nothing: `ocr_text_area` is written by the model stage named by `model`, which
    the pipeline runs (through RunInference) only when a filter with `model = "ocr"` is configured.
    """

    kinds = ("caption", "clip", "image")
    name = "text_area"
    reasons = ("text_heavy",)
    scores = OCR_SCORES
    model: ClassVar[str] = "ocr"

    class Params(Params):
        max: float = 0.3
        """Largest share of the image that text boxes may cover (0..1)."""

        def model_post_init(self, _context: object) -> None:
            if not 0.0 <= self.max <= 1.0:
                raise ValueError(f"filters.text_area.max must be within 0..1, got {self.max}")

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return {}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        return "text_heavy" if scores["ocr_text_area"] > self.params.max else None
