"""The OCR stage with the real PP-OCR models (rapidocr + onnxruntime, bundled in the wheel, offline).

Text is rendered with a real font at known places, so what the model must read and where is known
exactly; the ICDAR 2015 sample images from mmocr measure word recall on real scene text.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import _photo
from PIL import Image, ImageDraw, ImageFont

from mmcurate.schemas import OcrLine
from mmcurate.stages.base import FILTERS
from mmcurate.stages.image_decode import DecodeParams, decode
from mmcurate.stages.ocr import (
    MIN_SIDE,
    ModelUnavailable,
    OcrFailed,
    OcrParams,
    TextArea,
    check_backend,
    ocr_scores,
    text_area_ratio,
)
from mmcurate.stages.ocr_model import OcrModelHandler

LINES = ["Curating vision data", "with Apache Beam 2025", "seven quick zebras jump"]
ICDAR = Path(__file__).resolve().parents[2] / "shared" / "peer-data" / "mmocr" / "v0.6.3" / "toy_dataset"
ICDAR_MIN_RECALL = 0.40
"""Measured 0.50 (11 of the 22 cared-for words in the 8 images that have any) with the defaults
(rapidocr 3.10, PP-OCRv6 small det/rec, max_side 960) on a 2-core x86 CPU; the bound leaves two
words of slack for onnxruntime kernels that differ between CPUs."""


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)  # fonts-dejavu-core
    except OSError:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font


def _render(
    background: Image.Image, lines: list[str], size: int = 64, fill: str = "black", stroke: int = 0, left: int = 80
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Draw `lines` on a copy of `background`; return it with each line's ink box."""
    img = background.copy()
    draw = ImageDraw.Draw(img)
    font = _font(size)
    boxes = []
    for i, line in enumerate(lines):
        xy = (left, 80 + i * round(size * 3.4))
        draw.text(xy, line, font=font, fill=fill, stroke_width=stroke, stroke_fill="black")
        boxes.append(draw.textbbox(xy, line, font=font, stroke_width=stroke))
    return img, boxes


def _words(texts: list[str]) -> set[str]:
    """Lower-case words with everything but letters and digits stripped ("[06]" -> "06", "Front→" -> "front")."""
    words = ("".join(ch for ch in w if ch.isalnum()) for t in texts for w in t.lower().split())
    return {w for w in words if w}


def _found(lines: list[OcrLine], expected: list[str]) -> float:
    want = _words(expected)
    return len(want & _words([line.text for line in lines])) / len(want)


def _bbox(line: OcrLine) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in line.box], [p[1] for p in line.box]
    return min(xs), min(ys), max(xs), max(ys)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def _drawn_area(boxes: list[tuple[int, int, int, int]], size: tuple[int, int]) -> float:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return float(mask.mean())


@pytest.fixture(scope="module")
def handler() -> OcrModelHandler:
    return OcrModelHandler(OcrParams())


@pytest.fixture(scope="module")
def model(handler: OcrModelHandler):
    pytest.importorskip("rapidocr")
    return handler.load_model()


@pytest.fixture(scope="module")
def inputs() -> dict[str, tuple[Image.Image, list[tuple[int, int, int, int]]]]:
    """1600 x 800 (shrunk to 960 x 480 before OCR, so boxes must be mapped back) and degenerate inputs."""
    white = Image.new("RGB", (1600, 800), "white")
    return {
        "white": _render(white, LINES),
        "photo": _render(_photo((1600, 800), seed=3), LINES, fill="white", stroke=3),
        "no_text": (_photo((800, 600), seed=1), []),
        "black": (Image.new("RGB", (640, 480)), []),
        "pixel": (Image.new("RGB", (1, 1), (200, 30, 30)), []),
    }


@pytest.fixture(scope="module")
def batched(handler: OcrModelHandler, model, inputs) -> dict[str, list[OcrLine]]:
    """Everything in `inputs` through run_inference as one batch."""
    names = list(inputs)
    out = list(handler.run_inference([inputs[n][0] for n in names], model))
    assert len(out) == len(names)
    return dict(zip(names, out, strict=True))


# -- reading rendered text ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["white", "photo"])
def test_reads_rendered_text(batched, name: str) -> None:
    lines = batched[name]
    assert _found(lines, LINES) >= 0.9, [line.text for line in lines]
    assert all(0.5 <= line.confidence <= 1.0 for line in lines)


@pytest.mark.parametrize("name", ["white", "photo"])
def test_boxes_lie_where_the_text_was_drawn(batched, inputs, name: str) -> None:
    """Boxes come back in the coordinates of the 1600 x 800 input, not the 960 x 480 OCR copy."""
    lines, (img, drawn) = batched[name], inputs[name]
    assert len(lines) == len(drawn)
    for line, box in zip(sorted(lines, key=lambda ln: _bbox(ln)[1]), drawn, strict=True):
        assert _iou(_bbox(line), box) > 0.6, (line, box)
        assert all(0 <= x <= img.width and 0 <= y <= img.height for x, y in line.box)
        assert len(line.box) == 4


@pytest.mark.parametrize("name", ["white", "photo"])
def test_text_area_is_near_the_drawn_area(batched, inputs, name: str) -> None:
    img, drawn = inputs[name]
    truth, measured = _drawn_area(drawn, img.size), text_area_ratio(batched[name], *img.size)
    # Detector boxes are padded around the ink (DB unclip), so a bit larger than the ink boxes.
    assert 0.9 * truth <= measured <= 1.6 * truth, (truth, measured)


@pytest.mark.parametrize("name", ["no_text", "black", "pixel"])
def test_images_without_text_give_no_lines(batched, inputs, name: str) -> None:
    img = inputs[name][0]
    assert batched[name] == []
    assert text_area_ratio(batched[name], *img.size) == 0.0
    assert ocr_scores(batched[name], *img.size) == {
        "ocr_text_area": 0.0,
        "ocr_lines": 0.0,
        "ocr_chars": 0.0,
        "ocr_mean_confidence": 0.0,
    }


def test_results_do_not_depend_on_the_batch(handler, model, inputs, batched) -> None:
    for name, (img, _) in inputs.items():
        assert list(handler.run_inference([img], model)) == [batched[name]], name


def test_degenerate_shapes(model) -> None:
    """Slivers hold no legible line; a tall strip is padded, not blown up by the detector's upscaling."""
    slivers = [Image.new("RGB", (5, 3000), "white"), Image.new("RGB", (3000, 20), "white")]
    assert all(min(s.width, s.height) * 960 / 3000 < MIN_SIDE for s in slivers)
    assert model(slivers) == [[], []]
    tall, drawn = _render(Image.new("RGB", (160, 1600), "white"), ["EXIT"], size=56, left=8)
    started = time.perf_counter()
    (lines,) = model([tall])
    assert time.perf_counter() - started < 30  # unpadded, this shape took minutes
    assert [ln.text for ln in lines] == ["EXIT"]
    x0, y0, x1, y1 = _bbox(lines[0])
    cx, cy = (drawn[0][0] + drawn[0][2]) / 2, (drawn[0][1] + drawn[0][3]) / 2
    assert x0 < cx < x1 and y0 < cy < y1
    assert x0 >= 0 and x1 <= tall.width


@pytest.mark.parametrize("mode", ["I;16", "CMYK", "L"])
def test_other_modes_after_the_decode_stage(model, mode: str) -> None:
    """16-bit, CMYK and grey files reach OCR as the RGB the decode stage makes of them."""
    words = ["Harbour front exit"]
    rgb, _ = _render(Image.new("RGB", (720, 200), "white"), words, size=48)
    buf = io.BytesIO()
    if mode == "I;16":
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey, "I;16").save(buf, format="PNG")
    elif mode == "CMYK":
        rgb.convert("CMYK").save(buf, format="JPEG", quality=92)
    else:
        rgb.convert("L").save(buf, format="PNG")
    decoded = decode(buf.getvalue(), DecodeParams())
    assert decoded.mode == mode and decoded.image.mode == "RGB"
    (lines,) = model([decoded.image])
    assert _found(lines, words) >= 0.9, [ln.text for ln in lines]
    # The handler also takes a non-RGB image as is (converted with Pillow).
    if mode == "L":
        assert [ln.text for ln in model([rgb.convert("L")])[0]] == [ln.text for ln in lines]


def test_a_failing_image_names_its_index(model, inputs) -> None:
    with pytest.raises(OcrFailed, match="image 1 of the batch") as err:
        model([inputs["black"][0], "not an image"])  # type: ignore[list-item]
    assert err.value.index == 1


def test_min_confidence_discards_weak_lines(model, inputs) -> None:
    strict = OcrModelHandler(OcrParams(min_confidence=1.0))
    lines = strict.run_inference([inputs["white"][0].resize((800, 400))], strict.load_model())
    assert list(lines) == [[]]


# -- Beam -------------------------------------------------------------------------------------------


def test_handler_contract(handler) -> None:
    assert handler.get_metrics_namespace() == "mmcurate_ocr"
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 8}
    assert OcrModelHandler(OcrParams(batch_size=3)).batch_elements_kwargs()["max_batch_size"] == 3
    assert handler.get_num_bytes([Image.new("RGB", (10, 20))]) == 600


def test_run_inference_in_a_pipeline(model, inputs) -> None:
    images = [inputs["white"][0].resize((800, 400)), inputs["black"][0]]
    with test_pipeline.TestPipeline() as p:
        texts = (
            p
            | beam.Create(images)
            | RunInference(OcrModelHandler(OcrParams(batch_size=2)))
            | beam.Map(lambda lines: sorted(_words([ln.text for ln in lines])))
        )
        assert_that(texts, equal_to([sorted(_words(LINES)), []]))


# -- scores and the filter --------------------------------------------------------------------------


def _rect(x0: float, y0: float, x1: float, y1: float, text: str = "ab c", conf: float = 0.9) -> OcrLine:
    return OcrLine(box=[[x0, y0], [x1, y0], [x1, y1], [x0, y1]], text=text, confidence=conf)


def test_text_area_ratio_geometry() -> None:
    assert text_area_ratio([], 100, 100) == 0.0
    assert text_area_ratio([_rect(0, 0, 50, 100)], 100, 100) == pytest.approx(0.5, abs=0.02)
    # overlapping boxes count once; boxes reaching outside the image are clipped
    assert text_area_ratio([_rect(0, 0, 50, 100), _rect(25, 0, 75, 100)], 100, 100) == pytest.approx(0.75, abs=0.02)
    assert text_area_ratio([_rect(-50, -50, 500, 500)], 100, 100) == 1.0
    # a large image is measured on a <= 512 px mask; a rotated quadrilateral by its shoelace area
    diamond = OcrLine(box=[[2000, 0], [4000, 1500], [2000, 3000], [0, 1500]], text="x", confidence=1.0)
    assert text_area_ratio([diamond], 4000, 3000) == pytest.approx(0.5, abs=0.01)
    assert text_area_ratio([_rect(0, 0, 10, 10)], 0, 0) == 0.0


def test_ocr_scores() -> None:
    lines = [_rect(0, 0, 50, 10, "ab c", 0.9), _rect(0, 20, 50, 30, " de ", 0.7)]
    scores = ocr_scores(lines, 100, 100)
    assert scores["ocr_lines"] == 2.0
    assert scores["ocr_chars"] == 5.0  # whitespace does not count
    assert scores["ocr_mean_confidence"] == pytest.approx(0.8)
    assert scores["ocr_text_area"] == pytest.approx(0.1, abs=0.02)


def test_text_area_filter() -> None:
    assert FILTERS["text_area"] is TextArea
    f = TextArea()
    assert f.model == "ocr"
    assert f.score(object()) == ({}, {})
    assert f.decide({"ocr_text_area": 0.31}, {}) == "text_heavy"
    assert f.decide({"ocr_text_area": 0.3}, {}) is None
    assert TextArea(TextArea.Params(max=0.05)).decide({"ocr_text_area": 0.1}, {}) == "text_heavy"
    with pytest.raises(ValueError, match=r"filters\.text_area\.max"):
        TextArea.Params(max=1.5)


# -- configuration and pre-flight checks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"backend": "tesseract"}, "backend"),
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"max_side": 16}, "max_side"),
        ({"batch_size": 0}, "batch_size"),
        ({"backend": "paddleocr", "device": "cuda"}, "device"),
        ({"backend": "paddleocr", "lang": ""}, "lang"),
        ({"backend": "paddleocr", "det_model_dir": ""}, "det_model_dir"),
        ({"det_model_dir": "/models/det"}, "det_model_dir"),  # a paddle-only key with rapidocr
        ({"device": "gpu:0"}, "device"),
    ],
)
def test_bad_params_name_the_key(values: dict, key: str) -> None:
    with pytest.raises(ValueError, match=rf"models\.ocr\.{key}\b"):
        OcrParams(**values)


def test_check_backend_rapidocr() -> None:
    try:
        import rapidocr  # noqa: F401
    except ImportError:
        with pytest.raises(ModelUnavailable, match="pip install rapidocr onnxruntime"):
            check_backend(OcrParams())
    else:
        check_backend(OcrParams())


def test_check_backend_paddle_without_model_dirs() -> None:
    with pytest.raises(ModelUnavailable) as err:
        check_backend(OcrParams(backend="paddleocr"))
    message = str(err.value)
    assert "models.ocr.det_model_dir" in message and "models.ocr.rec_model_dir" in message
    assert "downloads" in message and "offline" in message
    try:
        import paddleocr  # noqa: F401
    except ImportError:
        assert "pip install paddleocr paddlepaddle (or paddlepaddle-gpu)" in message


def test_check_backend_paddle_with_bad_model_dirs(tmp_path: Path) -> None:
    det = tmp_path / "PP-OCRv5_mobile_det"
    det.mkdir()
    (det / "inference.yml").write_text("Global:\n  model_name: PP-OCRv5_mobile_det\n")
    rec_without_config = tmp_path / "en_rec"
    rec_without_config.mkdir()
    missing = tmp_path / "nowhere"
    params = OcrParams(
        backend="paddleocr", det_model_dir=str(det), rec_model_dir=str(rec_without_config), cls_model_dir=str(missing)
    )
    with pytest.raises(ModelUnavailable) as err:
        check_backend(params)
    message = str(err.value)
    assert f"models.ocr.cls_model_dir = {str(missing)!r}: no such directory" in message
    assert "models.ocr.rec_model_dir" in message and "inference.yml" in message
    assert not re.search(r"models\.ocr\.det_model_dir", message)


# -- real scene text: ICDAR 2015 samples ----------------------------------------------------------


def _icdar_words(path: Path) -> list[str]:
    """Words of the cared-for transcriptions of one ground-truth file (`###` = do not care)."""
    words = []
    for row in path.read_text(encoding="utf-8-sig").splitlines():
        parts = row.split(",", 8)
        if len(parts) == 9 and parts[8] != "###":
            words.extend(sorted(_words([parts[8]])))
    return words


def test_icdar2015_word_recall(peer_data: Path, model) -> None:
    if not ICDAR.is_dir():
        pytest.skip(f"no ICDAR sample at {ICDAR}")
    found = total = 0
    for gt in sorted((ICDAR / "annotations" / "test").glob("gt_img_*.txt")):
        want = _icdar_words(gt)
        if not want:  # images whose text is all "do not care" would only cost time
            continue
        img = Image.open(ICDAR / "imgs" / "test" / f"{gt.stem[3:]}.jpg").convert("RGB")
        (lines,) = model([img])
        got = _words([line.text for line in lines])
        found += sum(w in got for w in want)
        total += len(want)
    recall = found / total
    print(f"ICDAR2015 toy word recall: {recall:.3f} ({found}/{total})")
    assert recall >= ICDAR_MIN_RECALL
