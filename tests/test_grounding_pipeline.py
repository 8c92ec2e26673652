"""The grounding corpus end to end: the demo's known boxes and traps, boxes that follow EXIF rotation
and resizing onto the stored image, the trainer files read back by their readers, the ODVG peer
lines, RefCOCO written here, the CLIP agreement through RunInference against the model called
directly, and the recipe under Beam's TestPipeline.

Real components throughout: Pillow, open_clip (a tiny tower built here), Beam's DirectRunner.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import tarfile
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from mmcurate.cli import main
from mmcurate.demo import grounding as demo
from mmcurate.pipelines.grounding import CORPUS
from mmcurate.pipelines.run import new_run
from mmcurate.stages.measure import iou

pytestmark = pytest.mark.slow


def _ledger(out: Path, kind: str) -> list[dict]:
    return [r for f in sorted((out / "ledger" / kind).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


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


def _key(row: dict) -> tuple[int, int]:
    return (row["source"]["unit"], row["source"]["index"])


def _fates(out: Path) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], tuple[str, str]]]:
    """Sample name -> (status, reason); (sample name, phrase[#n]) -> (status, reason)."""
    samples = {_key(r): r for r in _ledger(out, "grounding")}
    by_sample = {r["name"]: (r["fate"]["status"], r["fate"]["reason"]) for r in samples.values()}
    regions: dict[tuple[str, str], tuple[str, str]] = {}
    for r in sorted(_ledger(out, "region"), key=lambda r: (*_key(r), r["slot"])):
        name = samples[_key(r)]["name"]
        key, n = (name, r["phrase"]), 1
        while key in regions:
            n += 1
            key = (name, f"{r['phrase']}#{n}")
        regions[key] = (r["fate"]["status"], r["fate"]["reason"])
    return by_sample, regions


def _write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _no_model_filters() -> dict[str, Any]:
    filters = dict(CORPUS.load_config(None).filters)
    filters.pop("expression_agreement")
    return filters


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--corpus", "grounding", "--workdir", str(work), "--no-progress"]) == 0
    return work / "grounding-output"


def test_demo_samples_and_regions_end_as_built(demo_run: Path) -> None:
    manifest = _manifest(demo_run)
    assert manifest["accounting_ok"], manifest.get("accounting")
    by_sample, regions = _fates(demo_run)
    assert by_sample == {k: (s, r) for k, (s, r) in demo.SAMPLES.items()}
    assert regions == demo.EXPECTED
    counts = manifest["kinds"]["region"]["counts"]
    assert counts["input"] == len(demo.EXPECTED) == counts["kept"] + counts["dropped"] + counts["quarantined"]
    assert manifest["kinds"]["grounding"]["counts"]["input"] == len(demo.SAMPLES)


def _colour_at(img: Image.Image, box: list[float]) -> np.ndarray:
    """Mean colour of the middle half of a box (inside a drawn circle as well as a square)."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) / 4, (y2 - y1) / 4
    crop = img.crop((round(x1 + dx), round(y1 + dy), round(x2 - dx), round(y2 - dy)))
    return np.asarray(crop.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def _ring_share(img: Image.Image, box: list[float], colour: tuple[int, int, int], gap: int = 3) -> float:
    """Share of the pixels 2..2+gap px outside a box (inside the image) that have the shape's colour."""
    arr = np.asarray(img.convert("RGB"), dtype=np.int64)
    h, w = arr.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in box)
    outer = np.zeros((h, w), bool)
    outer[max(0, y1 - 2 - gap) : min(h, y2 + 2 + gap), max(0, x1 - 2 - gap) : min(w, x2 + 2 + gap)] = True
    outer[max(0, y1 - 2) : min(h, y2 + 2), max(0, x1 - 2) : min(w, x2 + 2)] = False
    near = np.abs(arr - np.array(colour)).max(axis=2) < 60
    return float(near[outer].mean()) if outer.any() else 0.0


def test_stored_boxes_hold_their_shapes_after_rotation_and_resize(demo_run: Path) -> None:
    """Every kept drawn region's stored box frames its shape on the stored image: the rocket's boxes
    were given on the sideways file (EXIF 6), the cat's image was resized from 1353 to 1024 px."""
    checked = set()
    for members in _samples(demo_run).values():
        meta = json.loads(members["json"])
        img = Image.open(io.BytesIO(members["jpg"]))
        assert img.size == (meta["out_width"], meta["out_height"])
        for region in meta["regions"]:
            colour = demo.SHAPES.get((meta["name"], region["phrase"]))
            if colour is None:
                continue
            got = _colour_at(img, region["box"])
            assert np.abs(got - np.array(demo.COLOURS[colour])).max() < 40, (meta["name"], region, got)
            if "square" in region["phrase"]:  # a filled square is its box: just outside it, no square colour
                assert _ring_share(img, region["box"], demo.COLOURS[colour]) < 0.2, (meta["name"], region)
            checked.add((meta["name"], region["phrase"]))
    kept_drawn = {k for k, (s, _) in demo.EXPECTED.items() if s == "kept" and k in demo.SHAPES}
    assert checked == kept_drawn
    sizes = {json.loads(m["json"])["name"]: json.loads(m["json"])["out_width"] for m in _samples(demo_run).values()}
    assert sizes["cat_large.jpg"] == 1024 and sizes["rocket_sideways.jpg"] == 640  # upright: 640 x 427


def test_trainer_files_read_back(demo_run: Path) -> None:
    """SFT rows carry GLM boxes of the stored boxes; questions load with the pass-rate reader as box
    questions; the ODVG export reads back through our own reader with the same boxes."""
    from mmcurate.stages.grounding_io import GroundingReadParams, list_grounding_units, read_grounding_unit
    from mmcurate.stages.measure import parse_boxes, to_glm_grid
    from mmcurate.stages.question_io import QuestionReadParams, read_questions

    kept = {}
    for members in _samples(demo_run).values():
        meta = json.loads(members["json"])
        for region in meta["regions"]:
            kept[(meta["name"], region["phrase"])] = (region["box"], meta["out_width"], meta["out_height"])
    rows = [r for f in sorted((demo_run / "sft").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert rows and all((demo_run / r["images"][0]).is_file() for r in rows)
    grids = {tuple(map(int, b)) for box, w, h in kept.values() for b in [to_glm_grid(box, w, h)]}
    answered = [parse_boxes(r["messages"][1]["content"]) for r in rows if "begin_of_box" in r["messages"][1]["content"]]
    assert answered and all(tuple(map(int, b)) in grids for boxes in answered for b in boxes)
    asked = {r["messages"][0]["content"] for r in rows}
    # coffee's second "circle" was merged as the same region: the phrase is still asked
    assert any("Where is circle" in a for a in asked) and any("Where is square" in a for a in asked)
    info = json.loads((demo_run / "dataset_info.json").read_text())
    assert info["mmcurate_grounding"]["formatting"] == "sharegpt"

    params = QuestionReadParams(image_root=str(demo_run))
    units = CORPUS_QUESTIONS(demo_run)
    questions = [q for u in units for q in read_questions(u, params)]
    assert questions and all(q.pending and q.answer_type.value == "box" for q in questions)
    assert all(tuple(int(v) for v in parse_boxes(q.answer)[0]) in grids for q in questions)

    # Open-GroundingDino reads a file in one mode: detection lines (with the label map) apart from grounding ones
    assert json.loads((demo_run / "odvg" / "label_map.json").read_text()) == {"0": "square", "1": "circle"}
    for mode, section in (("od", "detection"), ("vg", "grounding")):
        lines = [json.loads(x) for f in sorted((demo_run / "odvg" / mode).glob("*.jsonl")) for x in f.open()]
        assert lines and all(set(ln) == {"filename", "height", "width", section} for ln in lines)
    read = GroundingReadParams(layout="odvg", image_root=str(demo_run / "images"))
    back = [s for u in list_grounding_units([str(demo_run / "odvg")], read) for s in read_grounding_unit(u, read)]
    assert len(back) == manifest_kept(demo_run)
    for sample in back:
        assert sample.pending, sample.fate
        for region in sample.items or ():
            matches = [box for (name, phrase), (box, _, _) in kept.items() if phrase == region.phrase]
            assert any(iou(region.input_box, box) > 0.999 for box in matches), region


def CORPUS_QUESTIONS(out: Path) -> list[Any]:
    from mmcurate.stages.io import jsonl_units

    return [u for f in sorted((out / "questions").glob("*.jsonl")) for u in jsonl_units(str(f), 10_000, 0, str(f))]


def manifest_kept(out: Path) -> int:
    return _manifest(out)["kinds"]["grounding"]["counts"]["kept"]


def test_odvg_peer_lines_with_stand_in_images(peer_data: Path, tmp_path: Path) -> None:
    """Open-GroundingDino's README lines: with images of the annotated sizes the two detection
    samples keep every box; the grounding lines' image-covering boxes are dropped as such."""
    src = peer_data / "grounding" / "odvg_examples_open_groundingdino_readme.jsonl"
    lines = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for line in lines:
        arr = rng.integers(0, 255, (line["height"], line["width"], 3), dtype=np.uint8)
        Image.fromarray(arr).save(images / line["filename"], quality=90)
    cfg = _write(tmp_path / "cfg.yaml", {"read": {"image_root": str(images)}, "filters": _no_model_filters()})
    out = tmp_path / "out"
    assert main(["grounding", "--input", str(src), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    manifest = _manifest(out)
    assert manifest["accounting_ok"]
    by_sample, regions = _fates(out)
    detection = [ln for ln in lines if "detection" in ln]
    for line in detection:
        assert by_sample[line["filename"]] == ("kept", "")
        phrases = [i["category"] for i in line["detection"]["instances"]]
        mine = [v for (name, _), v in regions.items() if name == line["filename"]]
        assert len(mine) == len(phrases) and all(v == ("kept", "") for v in mine)
    assert regions[("012378809.jpg", "Heart graphics")] == ("kept", "")
    assert regions[("012378809.jpg", "a notebook background")] == ("dropped", "box_covers_image")
    assert by_sample["014127544.jpg"] == ("dropped", "no_regions_left")
    total = sum(len(ln.get("detection", {}).get("instances", [])) + len(ln.get("grounding", {}).get("regions", []))
                for ln in lines)  # fmt: skip
    assert manifest["kinds"]["region"]["counts"]["input"] == total


def test_a_sample_whose_stage_raised_still_hands_on_its_regions() -> None:
    """A stage that raises quarantines its sample (internal_error); the regions it carries stay with it
    (CHILDREN), are split off and then settled after it by the finish path: none goes missing."""
    from mmcurate.pipelines.common import quarantine_failed
    from mmcurate.pipelines.grounding import split_regions
    from mmcurate.schemas import GroundingSample, RegionRecord, Source

    src = Source(uri="u", unit=0, index=3)
    items = [RegionRecord(id=f"r{i}", source=src, slot=i, phrase=f"p{i}") for i in range(3)]
    rec = GroundingSample(id="s", source=src, region_count=3, items=items, image=b"bytes")
    failed = quarantine_failed(rec, "RuntimeError: boom", "decode_and_score")
    assert failed.fate.reason == "internal_error" and failed.image is None
    out = list(split_regions(failed))
    assert out[0] is failed and [r.slot for r in out[1:]] == [0, 1, 2]
    CORPUS.settle_children(failed, out[1:], CORPUS.load_config(None))
    assert {(r.fate.status.value, r.fate.reason) for r in out[1:]} == {("dropped", "sample_dropped")}


def test_boxes_are_checked_without_the_region_box_filter(tmp_path: Path) -> None:
    """With `region_box` left out of `filters`, a NaN box and a box wholly outside the image still
    never become targets; the same regions in another order and notation are the same annotation."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (320, 240), (90, 120, 150)).save(images / "a.jpg", quality=90)
    boxes = {"dog": [20, 30, 120, 150], "cat": [150, 40, 300, 200]}
    lines = [
        {"filename": "a.jpg", "width": 320, "height": 240, "grounding": {"caption": "", "regions": [
            {"bbox": boxes["dog"], "phrase": "dog"}, {"bbox": boxes["cat"], "phrase": "cat"},
            {"bbox": ["nan", 1, 2, 3], "phrase": "nan box"}, {"bbox": [400, 300, 500, 400], "phrase": "far away"}]}},
        {"filename": "a.jpg", "width": 320, "height": 240, "grounding": {"caption": "", "regions": [
            {"bbox": boxes["cat"], "phrase": "cat"}, {"bbox": boxes["dog"], "phrase": "dog"},
            {"bbox": ["nan", 1, 2, 3], "phrase": "nan box"}, {"bbox": [400, 300, 500, 400], "phrase": "far away"}]}},
    ]  # fmt: skip
    src = tmp_path / "odvg.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = _write(tmp_path / "cfg.yaml", {"read": {"image_root": str(images)}, "filters": {"expression": {}}})
    out = tmp_path / "out"
    assert main(["grounding", "--input", str(src), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    _, regions = _fates(out)
    assert _manifest(out)["accounting_ok"]
    assert regions[("a.jpg", "nan box")] == ("dropped", "invalid_box")
    assert regions[("a.jpg", "far away")] == ("dropped", "box_outside")
    samples = sorted((r["fate"]["status"], r["fate"]["reason"]) for r in _ledger(out, "grounding"))
    assert samples == [("dropped", "duplicate_exact"), ("kept", "")]
    (members,) = _samples(out).values()
    assert sorted(r["phrase"] for r in json.loads(members["json"])["regions"]) == ["cat", "dog"]


def test_odvg_label_clashes_are_counted_and_the_first_name_kept(tmp_path: Path) -> None:
    """Two detection lines naming label 0 differently: the label map keeps the first, the manifest counts it."""
    import io as _io

    from mmcurate.pipelines.grounding_outputs import GroundingOutputParams, merge_run_outputs, write_unit_outputs
    from mmcurate.schemas import GroundingSample, Source

    def sample(i: int, category: str) -> GroundingSample:
        buf = _io.BytesIO()
        Image.new("RGB", (64, 48), (10 * i, 0, 0)).save(buf, "JPEG")
        kept = [
            {
                "slot": 0,
                "box": [4.0, 4.0, 40.0, 40.0],
                "phrase": category,
                "category": category,
                "task": "detection",
                "ref": "instance:0",
                "split": "",
                "label": 0,
                "scores": {},
                "labels": {},
            }
        ]
        return GroundingSample(id=f"s{i}", source=Source(uri="u", unit=0, index=i), image=buf.getvalue(),
                               out_ext="jpg", out_width=64, out_height=48, width=64, height=48, kept=kept,
                               phrases=[category])  # fmt: skip

    params = GroundingOutputParams()
    _, extras = write_unit_outputs(0, [sample(1, "cat"), sample(2, "dog")], str(tmp_path), params)
    assert extras["odvg_label_clashes"] == 1 and extras["odvg_labels"] == {"0": "cat"}
    merge_run_outputs(str(tmp_path), params)
    assert json.loads((tmp_path / "odvg" / "label_map.json").read_text()) == {"0": "cat"}


def _refcoco(root: Path) -> tuple[Path, dict]:
    """COCO instances + a refs pickle with known boxes and sentences (no real RefCOCO ships here)."""
    images = root / "train2014"
    images.mkdir(parents=True)
    img = Image.new("RGB", (320, 240), (200, 200, 200))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    draw.rectangle((20, 30, 119, 149), fill=(220, 30, 30))
    draw.ellipse((180, 60, 299, 179), fill=(30, 30, 220))
    img.save(images / "COCO_train2014_000000000001.jpg", quality=92)
    instances = {
        "images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 320, "height": 240}],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [20, 30, 100, 120], "category_id": 1, "iscrowd": 0, "area": 12000},
            {"id": 11, "image_id": 1, "bbox": [180, 60, 120, 120], "category_id": 2, "iscrowd": 0, "area": 11000},
        ],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "ball"}],
    }
    (root / "instances.json").write_text(json.dumps(instances))
    refs = [
        {"ref_id": 0, "ann_id": 10, "image_id": 1, "split": "train", "category_id": 1,
         "sentences": [{"sent_id": 0, "sent": "red box on the left", "raw": "Red box on the left", "tokens": []},
                       {"sent_id": 1, "sent": "left red thing", "raw": "left red thing", "tokens": []}]},
        {"ref_id": 1, "ann_id": 11, "image_id": 1, "split": "val", "category_id": 2,
         "sentences": [{"sent_id": 2, "sent": "blue ball right", "raw": "blue ball right", "tokens": []}]},
    ]  # fmt: skip
    path = root / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs, protocol=2))
    return path, instances


def test_refcoco_regions_per_sentence_and_splits(tmp_path: Path) -> None:
    refs, _ = _refcoco(tmp_path / "refcoco")
    filters = {**_no_model_filters(), "region_split": {"keep": ["train"]}}
    cfg = _write(tmp_path / "cfg.yaml", {"read": {"image_root": str(tmp_path / "refcoco" / "train2014")},
                                          "filters": filters})  # fmt: skip
    out = tmp_path / "out"
    assert main(["grounding", "--input", str(refs), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    assert _manifest(out)["accounting_ok"]
    _, regions = _fates(out)
    name = "COCO_train2014_000000000001.jpg"
    assert regions == {
        (name, "red box on the left"): ("kept", ""),
        (name, "left red thing"): ("kept", ""),
        (name, "blue ball right"): ("dropped", "other_split"),
    }
    (members,) = _samples(out).values()
    meta = json.loads(members["json"])
    assert [r["box"] for r in meta["regions"]] == [[20.0, 30.0, 120.0, 150.0]] * 2
    assert {r["category"] for r in meta["regions"]} == {"box"}


def test_one_image_annotated_twice_is_two_samples_and_a_repeat_is_a_duplicate(tmp_path: Path) -> None:
    """RefCOCO and a second refs file over the same COCO image (RefCOCO+, say) keep both annotation
    sets; the same refs file given twice is an exact duplicate, its regions `duplicate_sample`."""
    refs, _ = _refcoco(tmp_path / "refcoco")
    other = json.loads(json.dumps(pickle.loads(refs.read_bytes())))
    for ref in other:
        for sent in ref["sentences"]:
            sent["sent"] = "the " + sent["sent"]
    plus = tmp_path / "refcoco" / "refs(unc+).json"
    plus.write_text(json.dumps(other))
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "refs(unc).p").write_bytes(refs.read_bytes())
    (copy / "instances.json").write_text((tmp_path / "refcoco" / "instances.json").read_text())
    cfg = _write(tmp_path / "cfg.yaml", {"read": {"image_root": str(tmp_path / "refcoco" / "train2014")},
                                          "filters": _no_model_filters()})  # fmt: skip
    out = tmp_path / "out"
    assert main(["grounding", "--input", str(refs), str(plus), str(copy / "refs(unc).p"), "--output", str(out),
                 "--config", str(cfg), "--no-progress"]) == 0  # fmt: skip
    manifest = _manifest(out)
    assert manifest["accounting_ok"]
    fates = sorted((r["fate"]["status"], r["fate"]["reason"]) for r in _ledger(out, "grounding"))
    assert fates == [("dropped", "duplicate_exact"), ("kept", ""), ("kept", "")]
    regions = collections.Counter((r["fate"]["status"], r["fate"]["reason"]) for r in _ledger(out, "region"))
    assert regions == {("kept", ""): 6, ("dropped", "duplicate_sample"): 3}


# ---------------------------------------------------------------------------------------------- CLIP


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from tiny_models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def test_agreement_through_runinference_equals_the_model_called_directly(tiny: dict[str, str], tmp_path: Path) -> None:
    """Each checked region's cosines (own expression, best rival) are those of open_clip's own
    model on the same crop and texts; the decision follows `min_margin` from the ledger alone."""
    import open_clip
    import torch
    from PIL import ImageOps

    from mmcurate.stages.grounding_filters import AgreementParams, crop_box

    odvg, chat = demo.build_corpus(tmp_path / "demo")
    filters = dict(CORPUS.load_config(None).filters)
    filters["expression_agreement"] = {**filters["expression_agreement"], "min_margin": 0.0}
    clip = {"model": "mmcurate-tiny-clip", "pretrained": tiny["ckpt"], "architecture": tiny["arch"], "device": "cpu"}
    cfg = _write(tmp_path / "cfg.yaml", {"read": {"image_root": str(tmp_path / "demo" / "images")},
                                          "filters": filters, "models": {"clip": clip}})  # fmt: skip
    out = tmp_path / "out"
    assert main(["grounding", "--input", str(odvg), str(chat), "--output", str(out), "--config", str(cfg),
                 "--no-progress"]) == 0  # fmt: skip
    assert _manifest(out)["accounting_ok"]
    model, _, preprocess = open_clip.create_model_and_transforms("mmcurate-tiny-clip", pretrained=None)
    model.load_state_dict(torch.load(tiny["ckpt"], map_location="cpu"))
    model.eval()
    tokenizer = open_clip.get_tokenizer("mmcurate-tiny-clip")
    params = AgreementParams(**filters["expression_agreement"])
    samples = {_key(r): r for r in _ledger(out, "grounding")}
    regions = _ledger(out, "region")
    checked = [r for r in regions if r["labels"]["agreement"] == "checked"]
    assert checked, "no region was compared"
    for r in regions:  # the mismatch decision is the ledger's margin against min_margin
        if r["labels"]["agreement"] == "checked" and r["fate"]["reason"] in ("", "expression_mismatch"):
            assert (r["fate"]["reason"] == "expression_mismatch") == (r["scores"]["region_margin"] < 0)

    def image_box(r: dict, sample: dict) -> list[float]:
        if r["frame"] != "stored":
            return r["box"]
        sx, sy = sample["width"] / r["width"], sample["height"] / r["height"]  # back onto the decoded image
        return [r["box"][0] * sx, r["box"][1] * sy, r["box"][2] * sx, r["box"][3] * sy]

    def embed(image: Image.Image, texts: list[str]) -> list[float]:
        with torch.no_grad():
            img = model.encode_image(preprocess(image).unsqueeze(0)).float()
            txt = model.encode_text(tokenizer([params.template.format(t) for t in texts])).float()
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        return (img @ txt.T)[0].tolist()

    compared = 0
    for key, sample in samples.items():
        # the regions the model saw: those pending then (kept since, or dropped for the model's verdict)
        seen = [r for r in regions if _key(r) == key and r["fate"]["reason"] in ("", "expression_mismatch")]
        if not seen:
            continue
        image = ImageOps.exif_transpose(Image.open(tmp_path / "demo" / "images" / sample["name"])).convert("RGB")
        for r in seen:
            box = image_box(r, sample)
            rivals = list(dict.fromkeys(
                o["phrase"] for o in seen
                if o is not r and o["phrase"].lower() != r["phrase"].lower()
                and iou(image_box(o, sample), box) < params.negative_iou
            ))  # fmt: skip
            if not rivals:  # compared with the fixed negatives and the unit's pool: not rebuilt here
                continue
            crop = crop_box(box, image.width, image.height, params)
            assert crop is not None and r["labels"]["agreement"] == "checked"
            sims = embed(image.crop(crop), [r["phrase"], *rivals])
            assert abs(sims[0] - r["scores"]["region_clip"]) < 2e-3, r
            assert abs(sims[0] - max(sims[1:]) - r["scores"]["region_margin"]) < 2e-3, r
            assert r["scores"]["region_rivals"] == len(rivals)
            compared += 1
    assert compared >= 6


def test_a_sample_with_no_comparable_crop_labels_its_regions_unchecked(tiny: dict[str, str], tmp_path: Path) -> None:
    """With every crop under `min_crop` the model sees nothing of a sample: its regions are still
    labelled `unchecked` (and kept, `unchecked: keep`), never left without a verdict."""
    _, chat = demo.build_corpus(tmp_path / "demo")
    filters = dict(CORPUS.load_config(None).filters)
    filters["expression_agreement"] = {**filters["expression_agreement"], "min_crop": 5000}
    clip = {"model": "mmcurate-tiny-clip", "pretrained": tiny["ckpt"], "architecture": tiny["arch"], "device": "cpu"}
    cfg = _write(tmp_path / "cfg.yaml", {"read": {"image_root": str(tmp_path / "demo" / "images")},
                                          "filters": filters, "models": {"clip": clip}})  # fmt: skip
    out = tmp_path / "out"
    assert main(["grounding", "--input", str(chat), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    regions = _ledger(out, "region")
    assert len(regions) == 2
    assert all(r["labels"]["agreement"] == "unchecked" and r["fate"]["status"] == "kept" for r in regions)


def _region_counts(manifest: dict) -> tuple[int, int]:
    counts = manifest["kinds"]["region"]["counts"]
    return counts["input"], counts["kept"]


def test_recipe_in_a_test_pipeline(tmp_path: Path) -> None:
    """The recipe under Beam's TestPipeline on the demo: counts checked by assert_that."""
    odvg, chat = demo.build_corpus(tmp_path / "demo")
    config = CORPUS.load_config(None)
    config = config.model_copy(update={
        "filters": _no_model_filters(),
        "read": config.read.model_copy(update={"image_root": str(tmp_path / "demo" / "images")}),
    })  # fmt: skip
    inputs = [str(odvg), str(chat)]
    units = CORPUS.list_units(inputs, config)
    kept_regions = sum(1 for status, _ in demo.EXPECTED.values() if status == "kept")
    with TestPipeline() as p:
        manifest = CORPUS.build(p, units, config, new_run(CORPUS, config, inputs, units, str(tmp_path / "out")))
        counts = manifest | beam.Map(lambda m: (*_region_counts(m), m["accounting_ok"]))
        assert_that(counts, equal_to([(len(demo.EXPECTED), kept_regions, True)]))


def test_report_draws_each_sampled_image_with_its_regions(demo_run: Path, tmp_path: Path) -> None:
    """The run report's boxes section: each sampled kept image with its regions' boxes drawn, listed
    with the expressions its KEY.json holds."""
    from mmcurate.report import build_report

    html = Path(build_report(str(demo_run), str(tmp_path / "rep"))).read_text()
    assert '<section id="boxes">' in html
    drawn = sorted((tmp_path / "rep" / "img").glob("boxes-*.jpg"))
    samples = _samples(demo_run)
    assert drawn
    for pic in drawn:
        meta = json.loads(samples[pic.stem.removeprefix("boxes-")]["json"])
        assert meta["regions"] and all(f"<li>{r['phrase']}</li>" in html for r in meta["regions"][:12]), pic.name
