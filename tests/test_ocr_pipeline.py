"""The OCR corpus end to end: the demo's traps, boxes that follow a rotated and resized image, the
ICDAR 2015 toy set against the OCR stage's own reading, pseudo-labels from a caption run, the recipe.

Real components throughout: rapidocr's PP-OCR models, Pillow, Beam's DirectRunner, HF datasets.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image, ImageDraw, ImageFont

from mmcurate.cli import main
from mmcurate.demo import ocr as demo
from mmcurate.pipelines.ocr import CORPUS
from mmcurate.pipelines.run import new_run
from mmcurate.schemas import TextLine
from mmcurate.stages.measure import cer
from mmcurate.stages.ocr import OcrParams
from mmcurate.stages.ocr_model import make_backend
from mmcurate.stages.ocr_verify import AgreementParams, crop_quad, verify_lines

pytestmark = pytest.mark.slow


def _rows(out: Path) -> list[dict]:
    return [r for f in sorted((out / "ledger" / "ocr").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _samples(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()  # type: ignore[union-attr]
    return samples


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--corpus", "ocr", "--workdir", str(work), "--no-progress"]) == 0
    return work / "ocr-output"


def test_demo_samples_end_as_built(demo_run: Path) -> None:
    manifest = _manifest(demo_run)
    counts = manifest["kinds"]["ocr"]["counts"]
    assert manifest["accounting_ok"] and counts["input"] == len(demo.EXPECTED) + demo.RENDERED
    assert counts["input"] == counts["kept"] + counts["dropped"] + counts["quarantined"]
    fates = {Path(r["source"]["uri"]).name: (r["fate"]["status"], r["fate"]["reason"]) for r in _rows(demo_run)}
    for name, want in demo.EXPECTED.items():
        assert fates[name] == want, name
    rendered = [r for r in _rows(demo_run) if r["origin"] == "rendered"]
    assert len(rendered) == demo.RENDERED and all(r["fate"]["status"] == "kept" for r in rendered)
    sign = next(r for r in _rows(demo_run) if r["name"] == "sign_zh.jpg")
    # single characters are text: the CJK character and the lone letter read at the defaults
    assert {ln["text"]: ln["tag"] for ln in sign["lines"]} == {"东": "ok", "W": "ok", "309": "ok", "北京路": "ok"}
    wrong = next(r for r in _rows(demo_run) if r["name"] == "wrong_label.jpg")
    assert [ln["tag"] for ln in wrong["lines"]] == ["gt_mismatch"] and wrong["lines"][0]["read"] == "OPEN DAILY"
    dont = next(r for r in _rows(demo_run) if r["name"] == "exit_dont_care.jpg")
    assert [ln["tag"] for ln in dont["lines"]] == ["ok", "ignore"]


def test_stored_boxes_frame_the_text_of_a_rotated_and_resized_image(demo_run: Path, tmp_path: Path) -> None:
    """The EXIF-rotated sign (boxes given on the file's pixels) read from the shard: its stored box,
    cropped from the stored image, reads back; and the same with the output resized to half."""
    backend = make_backend(OcrParams())
    outs = [demo_run]
    icdar = demo_run.parent / "ocr" / "icdar"
    config = tmp_path / "half.yaml"
    config.write_text(json.dumps({"output": {"max_side": 280}}))
    half = tmp_path / "half"
    assert main(["ocr", "--input", str(icdar), "--output", str(half), "--config", str(config), "--no-progress"]) == 0
    outs.append(half)
    for out in outs:
        (sample,) = [s for s in _samples(out).values() if json.loads(s["json"])["name"] == "rotated_exif.jpg"]
        meta = json.loads(sample["json"])
        image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
        assert image.size == (meta["out_width"], meta["out_height"]) and image.width > image.height  # upright
        (line,) = meta["lines"]
        crop = crop_quad(image, line["quad"])
        assert crop is not None
        ((text, _conf),) = backend.recognise([crop])
        assert cer(text, "PLATFORM 9") <= 0.1, (out.name, text)


def test_demo_sft_rows_load_and_name_their_images(demo_run: Path, tmp_path: Path) -> None:
    import datasets

    info = json.loads((demo_run / "dataset_info.json").read_text())
    assert info["mmcurate_ocr"]["formatting"] == "sharegpt" and info["mmcurate_ocr"]["file_name"] == "sft"
    rows = datasets.load_dataset("parquet", data_dir=str(demo_run / "sft"), cache_dir=str(tmp_path))["train"]
    assert rows.num_rows == _manifest(demo_run)["extras"]["sft_rows"] > 0
    boxes = 0
    for row in rows:
        (image,) = row["images"]
        assert (demo_run / image).is_file()
        user, answer = row["messages"]
        assert user["content"].count("<image>") == 1 and answer["content"].strip()
        if "in the box [" in user["content"]:
            coords = [int(v) for v in user["content"].split("[", 1)[1].split("]", 1)[0].split(",")]
            assert all(0 <= v < 1000 for v in coords) and coords[0] < coords[2] and coords[1] < coords[3]
            boxes += 1
    assert boxes > 0


@pytest.mark.peerdata
def test_icdar2015_toy_set_recall_is_the_ocr_stages_own(peer_data: Path, tmp_path: Path) -> None:
    """The pipeline (decode, frames, batching, resize of the stored image) loses nothing against the
    OCR stage's model called directly on the same files with the same settings."""
    root = peer_data / "mmocr" / "v0.6.3" / "toy_dataset"
    config = tmp_path / "icdar.yaml"
    config.write_text(json.dumps({"read": {"gt_root": str(root / "annotations" / "test")}}))
    out = tmp_path / "out"
    argv = ["ocr", "--input", str(root / "imgs" / "test"), "--output", str(out), "--config", str(config)]
    assert main([*argv, "--no-progress"]) == 0
    extras = _manifest(out)["extras"]
    # the stage alone: full OCR + each labelled box's crop, on the files as PIL reads them
    cfg = CORPUS.load_config(str(config))
    backend = make_backend(cfg.models.ocr)
    recalls, cers = [], []
    for gt in sorted((root / "annotations" / "test").glob("gt_*.txt")):
        lines = []
        for raw in gt.read_text(encoding="utf-8-sig").splitlines():
            parts = raw.split(",")
            quad = [[float(parts[i]), float(parts[i + 1])] for i in range(0, 8, 2)]
            text = ",".join(parts[8:])
            lines.append(TextLine(quad=quad, text="" if text == "###" else text, ignore=text == "###"))
        image = Image.open(root / "imgs" / "test" / gt.name.removeprefix("gt_").replace(".txt", ".jpg")).convert("RGB")
        asked = [ln for ln in lines if not ln.ignore]
        for line, read in zip(asked, backend.recognise([crop_quad(image, ln.quad) for ln in asked]), strict=True):
            line.read, line.confidence = read
        scores = verify_lines(lines, backend([image])[0], AgreementParams())
        if asked:
            recalls.append(scores["ocr_recall"])
            cers.append(scores["ocr_cer"])
    direct_recall, direct_cer = sum(recalls) / len(recalls), sum(cers) / len(cers)
    print(f"ICDAR 2015 toy set: pipeline CER {extras['mean_cer']:.3f} recall {extras['mean_recall']:.3f}; "
          f"OCR stage alone CER {direct_cer:.3f} recall {direct_recall:.3f} ({len(recalls)} images)")  # fmt: skip
    assert extras["verified_images"] == len(recalls) == 8
    assert extras["mean_recall"] >= direct_recall - 1e-9 and extras["mean_recall"] >= 0.33
    assert extras["mean_cer"] <= direct_cer + 1e-9


def _text_heavy(path: Path, words: list[str]) -> None:
    img = Image.new("RGB", (640, 400), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 64)
    for i, word in enumerate(words):
        draw.text((30, 20 + i * 90), word, font=font, fill="black")
    img.save(path, quality=92)


def test_from_a_caption_run_text_heavy_images_become_pseudo_labelled_samples(tmp_path: Path) -> None:
    import numpy as np

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _text_heavy(corpus / "poster.jpg", ["GRAND SALE", "EVERYTHING", "HALF PRICE", "TODAY"])
    (corpus / "poster.txt").write_text("a sale poster")
    _text_heavy(corpus / "menu.jpg", ["COFFEE 3.50", "TEA 2.80", "CAKE 4.20"])
    (corpus / "menu.txt").write_text("a cafe menu")
    noise = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype("uint8")
    Image.fromarray(noise).save(corpus / "noise.jpg", quality=90)
    (corpus / "noise.txt").write_text("grain")
    caption_cfg = tmp_path / "caption.yaml"
    caption_cfg.write_text(json.dumps({"filters": {"text_area": {"max": 0.05}}}))
    cap = tmp_path / "caption-run"
    argv = ["caption", "--input", str(corpus), "--output", str(cap), "--config", str(caption_cfg), "--no-progress"]
    assert main(argv) == 0
    dropped = _manifest(cap)["kinds"]["caption"]["reasons"]["dropped"]
    assert dropped.get("text_heavy") == 2
    out = tmp_path / "ocr-run"
    assert main(["ocr", "--from-run", str(cap), "--reasons", "text_heavy", "--output", str(out), "--no-progress"]) == 0
    manifest = _manifest(out)
    assert manifest["kinds"]["ocr"]["counts"] == {"input": 2, "kept": 2, "dropped": 0, "quarantined": 0}
    assert manifest["lineage"]["from_run"] == str(cap)
    rows = {r["name"]: r for r in _rows(out)}
    assert set(rows) == {"poster.jpg", "menu.jpg"}
    poster = [ln["text"] for ln in rows["poster.jpg"]["lines"]]
    assert poster == ["GRAND SALE", "EVERYTHING", "HALF PRICE", "TODAY"]
    assert all(ln["tag"] == "pseudo" and ln["confidence"] >= 0.8 for r in rows.values() for ln in r["lines"])
    # a caption run is not an OCR dataset: --input and --from-run are exclusive
    with pytest.raises(SystemExit):
        main(["ocr", "--from-run", str(cap), "--input", str(corpus), "--output", str(tmp_path / "x")])


def test_recipe_in_a_test_pipeline(tmp_path: Path) -> None:
    """The recipe under Beam's TestPipeline on the demo's ICDAR folder: counts checked by assert_that."""
    demo.build_icdar(tmp_path / "icdar")
    config = CORPUS.load_config(None)
    inputs = [str(tmp_path / "icdar")]
    units = CORPUS.list_units(inputs, config)
    kept = sum(1 for status, _ in demo.EXPECTED.values() if status == "kept")
    with TestPipeline() as p:
        manifest = CORPUS.build(p, units, config, new_run(CORPUS, config, inputs, units, str(tmp_path / "out")))
        counts = manifest | beam.Map(lambda m: (m["kinds"]["ocr"]["counts"]["input"],
                                                m["kinds"]["ocr"]["counts"]["kept"], m["accounting_ok"]))  # fmt: skip
        assert_that(counts, equal_to([(len(demo.EXPECTED), kept, True)]))


def test_report_draws_each_sampled_image_with_its_lines(demo_run: Path, tmp_path: Path) -> None:
    """The run report's boxes section: a kept image with its stored quads drawn, listed with the
    transcripts its KEY.json holds (the page itself is opened in a browser in tests/test_report.py)."""
    import tarfile

    from mmcurate.report import build_report

    html = Path(build_report(str(demo_run), str(tmp_path / "rep"))).read_text()
    assert '<section id="boxes">' in html
    drawn = sorted((tmp_path / "rep" / "img").glob("boxes-*.jpg"))
    assert drawn
    for pic in drawn:
        key = pic.stem.removeprefix("boxes-")
        for shard in sorted((demo_run / "shards").glob("*.tar")):
            with tarfile.open(shard) as tar:
                if f"{key}.json" in tar.getnames():
                    lines = json.loads(tar.extractfile(f"{key}.json").read())["lines"]
        texts = [ln["text"] or "(no text)" for ln in lines][:12]
        assert all(f"<li>{t}</li>" in html for t in texts if "<" not in t and "&" not in t), key
