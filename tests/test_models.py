"""Model stages over records: a failure stays with its own record, a degraded record says so.

The models are real: a tiny open_clip model built and loaded the real way, and rapidocr's PP-OCR.
The failing input is one the real library cannot handle (an image with no pixels), not a mock."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from PIL import Image
from tiny_models import build_tiny_clip
from webdataset import TarWriter

from mmcurate.cli import main
from mmcurate.pipelines.inference import ScoreWithModels
from mmcurate.pipelines.models import ModelStage, View, clip_example, merge_scores
from mmcurate.schemas import CaptionSample, Source, Status
from mmcurate.stages.clip import ClipParams
from mmcurate.stages.clip_model import ClipModelHandler


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def photo(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def record(i: int, pixels: Image.Image) -> CaptionSample:
    return CaptionSample(
        id=f"id{i:02d}", source=Source("u", 0, f"m{i}", i), caption=f"a photo number {i}", pixels=pixels,
        width=max(pixels.width, 1), height=max(pixels.height, 1),
    )  # fmt: skip


class RecordingClip(ClipModelHandler):
    """The real handler; it also appends each batch's size to a file (the pipeline runs a pickled copy)."""

    def __init__(self, params: ClipParams, log: str) -> None:
        super().__init__(params, text=True)
        self.log = log

    def run_inference(self, batch, model, inference_args=None):
        with open(self.log, "a") as f:
            f.write(f"{len(batch)}\n")
        return super().run_inference(batch, model, inference_args)


def test_one_bad_image_in_a_batch_of_32_quarantines_only_its_record(tiny: dict[str, str], tmp_path: Path) -> None:
    params = ClipParams(
        model="mmcurate-tiny-clip", pretrained=tiny["ckpt"], architecture=tiny["arch"], batch_size=32
    )  # min_batch_size = batch_size: the 32 records form one batch
    log = tmp_path / "batches.txt"
    handler = RecordingClip(params, str(log))
    images = [photo(i) for i in range(32)]
    images[13] = Image.new("RGB", (0, 0))  # open_clip's resize divides by its size
    model = handler.load_model()
    with pytest.raises(ZeroDivisionError):
        handler.run_inference([(img, f"a photo number {i}") for i, img in enumerate(images)], model)
    want = {
        f"id{i:02d}": handler.run_inference([(img, f"a photo number {i}")], model)[0]["clip_score"]
        for i, img in enumerate(images)
        if i != 13
    }
    log.unlink()
    stage = ModelStage("clip", handler, clip_example, merge_scores, ("clip_score",))

    def check(records: list[CaptionSample]) -> None:
        assert len(records) == 32
        bad = [r for r in records if r.fate.status == Status.QUARANTINED]
        assert [r.id for r in bad] == ["id13"]
        assert bad[0].fate.reason == "model_error" and "ZeroDivisionError" in bad[0].errors["clip"]
        scored = {r.id: r.scores["clip_score"] for r in records if r.pending}
        assert scored.keys() == want.keys()
        assert all(math.isclose(scored[k], want[k], abs_tol=1e-5) for k in want)

    with TestPipeline() as p:
        out = (
            p
            | beam.Create([record(i, img) for i, img in enumerate(images)], reshuffle=False)
            | ScoreWithModels([stage])
            | beam.combiners.ToList()
        )
        assert_that(out, lambda got: check(got[0]))
    # One batch of 32 (it raised), then one call per record: the failure is found and kept to itself.
    assert [int(n) for n in log.read_text().split()] == [32] + [1] * 32


def test_views_of_a_caption_sample_are_its_one_image() -> None:
    from mmcurate.pipelines.models import Views

    rec = record(0, photo(0))
    (view,) = Views().views(rec)
    assert isinstance(view, View) and view.pixels is rec.pixels and view.text == rec.caption
    assert Views().views(record(1, photo(1)).clear_payload()) == []  # not decoded: no view


def test_an_image_ocr_could_not_read_is_kept_and_says_so(tmp_path: Path) -> None:
    """A 4000 x 12 strip is below the OCR minimum once shrunk to OCR size: no text area (the record is
    kept) and the record's `errors` say why, in the ledger and in its sample JSON."""
    shard = tmp_path / "in.tar"
    strip, normal = Image.new("RGB", (4000, 12), "white"), photo(3, (320, 240))
    with TarWriter(str(shard), encoder=False, mtime=0) as sink:
        for key, img in (("strip", strip), ("normal", normal)):
            buf = io.BytesIO()
            img.save(buf, "PNG")
            sink.write({"__key__": key, "png": buf.getvalue(), "txt": b"a white strip"})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("filters:\n  text_area: {max: 0.3}\ndedup: {near: false}\n")
    out = tmp_path / "out"
    assert main(["caption", "--input", str(shard), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    rows = {r["source"]["member"]: r for r in pq.read_table(out / "ledger" / "caption").to_pylist()}
    assert rows["strip"]["fate"]["status"] == "kept" and rows["strip"]["scores"]["ocr_text_area"] == 0.0
    (err,) = rows["strip"]["errors"]
    assert err["stage"] == "ocr" and err["error"].startswith("not read: ")
    assert rows["normal"]["errors"] == []
    index = pq.read_table(out / "index").to_pylist()
    assert {r["key"] for r in index} == {rows["strip"]["id"], rows["normal"]["id"]}
    shard_path = out / json.loads((out / "manifest.json").read_text())["files"]["shards"][0]["path"]
    with tarfile.open(shard_path) as tar:
        meta = json.loads(tar.extractfile(f"{rows['strip']['id']}.json").read())
    assert meta["errors"].startswith("ocr: not read: ")
