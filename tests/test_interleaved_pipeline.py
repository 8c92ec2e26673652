"""The interleaved corpus end to end: the demo's traps, the real MMC4 example, bad input, the recipe.

Every run checks both identities (documents in = kept + dropped + quarantined, images in = the slots
the documents hold = kept + dropped + quarantined) and the fate of each record by name.
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
from PIL import Image

from mmcurate.cli import main
from mmcurate.demo import interleaved as demo
from mmcurate.pipelines.corpus import SelectUnsupported
from mmcurate.pipelines.interleaved import CORPUS, InterleavedConfig
from mmcurate.pipelines.run import new_run

pytestmark = pytest.mark.slow


def _rows(out: Path, kind: str) -> list[dict]:
    return [r for f in sorted((out / "ledger" / kind).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _identities(manifest: dict) -> None:
    assert manifest["accounting_ok"]
    for kind in ("document", "image"):
        c = manifest["kinds"][kind]["counts"]
        assert c["input"] == c["kept"] + c["dropped"] + c["quarantined"], (kind, c)
        assert manifest["kinds"][kind]["accounting_ok"]


def _named(row: dict) -> tuple[str, int]:
    src = row["source"]
    return Path(src["uri"]).name, int(src["member"].removeprefix("line"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--corpus", "interleaved", "--workdir", str(work), "--no-progress"]) == 0
    return work / "interleaved-output"


def test_demo_documents_and_images_end_as_built(demo_run: Path) -> None:
    manifest = _manifest(demo_run)
    _identities(manifest)
    names = demo.line_names()
    docs = {names[_named(r)]: r for r in _rows(demo_run, "document")}
    assert {n: (d["fate"]["status"], d["fate"]["reason"]) for n, d in docs.items()} == demo.EXPECTED_DOCUMENTS
    by_uid = {r["id"]: n for n, r in docs.items()}
    images = {(names[_named(r)], r["slot"]): r for r in _rows(demo_run, "image")}
    assert set(images) == set(demo.EXPECTED_IMAGES)
    for key, (status, reason, anchor) in demo.EXPECTED_IMAGES.items():
        row = images[key]
        assert (row["fate"]["status"], row["fate"]["reason"]) == (status, reason), key
        assert by_uid[row["doc_id"]] == key[0]
        if anchor is not None:
            assert row["anchor"] == anchor, key
    # the misplaced images moved to the sentences the matrix says, and the ledger keeps where they were
    assert [(images["space", s]["original_anchor"], images["space", s]["anchor"]) for s in (0, 1)] == [(3, 1), (0, 3)]
    assert docs["space"]["similarity_from"] == "input" and len(docs["space"]["similarity"]) == 2
    # the duplicates point at the kept documents
    assert docs["kitchen_copy"]["fate"]["duplicate_of"] == docs["kitchen"]["id"]
    assert docs["space_again"]["fate"]["duplicate_of"] == docs["space"]["id"]
    assert manifest["kinds"]["image"]["counts"]["input"] == sum(d["images"] for d in docs.values())


def test_demo_shards_hold_one_sample_per_kept_document_in_item_order(demo_run: Path) -> None:
    docs = {r["id"]: r for r in _rows(demo_run, "document") if r["fate"]["status"] == "kept"}
    kept_images = {(r["doc_id"], r["slot"]): r for r in _rows(demo_run, "image") if r["fate"]["status"] == "kept"}
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted((demo_run / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()  # type: ignore[union-attr]
    assert set(samples) == set(docs)
    for key, members in samples.items():
        meta = json.loads(members["json"])
        items = meta["items"]
        texts = [i["text"] for i in items if i["type"] == "text"]
        assert texts == docs[key]["texts"]
        pictured = [i["image"] for i in items if i["type"] == "image"]
        assert sorted(pictured) == sorted(e for e in members if e != "json")
        assert len(pictured) == meta["kept_images"] == sum(1 for d, _ in kept_images if d == key)
        position = 0
        for item in items:  # each image stands right before the segment it is anchored to
            if item["type"] == "text":
                position += 1
                continue
            slot = int(item["image"].split(".")[0])
            assert kept_images[key, slot]["anchor"] == position
            with Image.open(io.BytesIO(members[item["image"]])) as im:
                assert im.size == (kept_images[key, slot]["out_width"], kept_images[key, slot]["out_height"])
    index = [r for f in sorted((demo_run / "index").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted(r["key"] for r in index) == sorted(docs)


def test_demo_outputs_load_with_hugging_face_datasets_and_webdataset(demo_run: Path, tmp_path: Path) -> None:
    """Every table (ledgers, fate tables, indexes) with `load_dataset("parquet")`, the shards with
    `load_dataset("webdataset")` given the features (documents hold different image members), and
    with the webdataset library itself; `mmcurate export` builds the same rows."""
    import webdataset as wds
    from hf_loaders import assert_loads_everything

    seen = assert_loads_everything(demo_run, tmp_path / "cache")
    kept = _manifest(demo_run)["kinds"]["document"]["counts"]["kept"]
    assert seen["shards"] == kept and seen["ledger/document"] == len(demo.EXPECTED_DOCUMENTS)
    samples = list(wds.WebDataset(sorted(str(p) for p in (demo_run / "shards").glob("*.tar")), shardshuffle=False))
    assert len(samples) == kept
    for sample in samples:
        items = json.loads(sample["json"])["items"]
        assert {i["image"] for i in items if i["type"] == "image"} == {
            k for k in sample if not k.startswith("__") and k != "json"
        }
    assert main(["export", "--run", str(demo_run), "--output", str(tmp_path / "hf")]) == 0
    import datasets

    train = datasets.load_from_disk(str(tmp_path / "hf"))["train"]
    assert train.num_rows == kept
    for row in train:
        pictured = [i["image"] for i in row["json"]["items"] if i["type"] == "image"]
        assert all(row[name] is not None for name in pictured)
        assert all(row[n] is None for n in row if n.endswith(".jpg") and n not in pictured)


def _mmc4_config(tmp: Path, root: Path | None, **extra: object) -> Path:
    cfg = {
        "read": {"image_root": str(root) if root else None},
        "filters": {"file_size": {"min_bytes": 1024}, "min_side": {"min": 64}, "doc_length": {"min_words": 10},
                    "image_count": {"max": 30}, "alignment": {"source": "input", "min": 0.15}},
        "output": {"layout": ["wds", "datajuicer", "mmc4", "obelics"]},
        **extra,
    }  # fmt: skip
    path = tmp / "mmc4.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _stand_ins(folder: Path) -> None:
    """Two valid JPEGs under MMC4's names; unlike each other (noise), so dedup keeps both."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("b9040a0dbb22.jpg", "db1c21bc8474.jpg")):
        pixels = (np.random.default_rng(i).random((240, 320, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(folder / name, quality=95)


@pytest.mark.peerdata
@pytest.mark.parametrize("min_images", [1, 0])
def test_mmc4_example_without_its_images(peer_data: Path, tmp_path: Path, min_images: int) -> None:
    docs = peer_data / "interleaved" / "mmc4_readme_example.jsonl"
    empty = tmp_path / "no-images"
    empty.mkdir()
    out = tmp_path / "out"
    cfg = _mmc4_config(tmp_path, empty, min_images=min_images)
    assert main(["interleaved", "--input", str(docs), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    manifest = _manifest(out)
    _identities(manifest)
    images = _rows(out, "image")
    assert [(r["slot"], r["fate"]["reason"], r["original_anchor"]) for r in images] == [
        (0, "image_missing", 2), (1, "image_missing", 1),
    ]  # fmt: skip
    (doc,) = _rows(out, "document")
    if min_images:
        assert (doc["fate"]["status"], doc["fate"]["reason"]) == ("dropped", "no_images_left")
    else:  # kept as text
        assert doc["fate"]["status"] == "kept" and doc["kept_images"] == 0
        (line,) = (out / "datajuicer" / "part-00000" / "part-00000.jsonl").read_text().splitlines()
        assert json.loads(line)["images"] == [] and "<__dj__image>" not in json.loads(line)["text"]


@pytest.mark.peerdata
def test_mmc4_example_with_stand_in_images_keeps_its_positions_and_exports_as_data_juicer_does(
    peer_data: Path, tmp_path: Path
) -> None:
    docs = peer_data / "interleaved" / "mmc4_readme_example.jsonl"
    root = tmp_path / "images"
    _stand_ins(root)
    out = tmp_path / "out"
    cfg = _mmc4_config(tmp_path, root)
    assert main(["interleaved", "--input", str(docs), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    _identities(_manifest(out))
    (doc,) = _rows(out, "document")
    assert doc["fate"]["status"] == "kept" and doc["similarity_from"] == "input"
    images = _rows(out, "image")
    # the one-to-one assignment over MMC4's own similarity_matrix gives MMC4's matched_text_index
    assert [(r["anchor"], r["original_anchor"]) for r in images] == [(2, 2), (1, 1)]
    assert [r["scores"]["alignment"] for r in images] == [0.27694183588027954, 0.3234919607639313]
    expected = json.loads((peer_data / "interleaved" / "mmc4_to_data_juicer_expected.json").read_text())
    (line,) = (out / "datajuicer" / "part-00000" / "part-00000.jsonl").read_text(encoding="utf-8").splitlines()
    got = json.loads(line)
    assert got == expected["expected_dj_sample"]
    assert list(got) == list(expected["expected_dj_sample"])  # key order too
    folder = out / "datajuicer" / "part-00000"
    for name in got["images"]:  # the names resolve beside the jsonl, as Data-Juicer opens them
        with Image.open(folder / name) as im:
            assert im.size == (320, 240)
    (mmc4,) = (out / "mmc4" / "part-00000" / "part-00000.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(mmc4) == json.loads(docs.read_text(encoding="utf-8"))  # nothing re-anchored: the input row


BAD_LINES = [
    '{"text_list": ["broken',  # malformed
    json.dumps({"texts": ["a b c d e f g h i j k", None], "images": [None]}),  # unequal lengths
    json.dumps({"texts": ["one two three four five six seven eight nine ten"], "images": ["x.jpg"]}),  # both at 0
    json.dumps({"text_list": ["only one sentence with quite a few words in it to pass"], "url": "u1",
                "image_info": [{"image_name": "a.jpg", "matched_text_index": 5}]}),  # anchor out of range
    json.dumps({"text_list": ["s one two three four five six", "s two"], "url": "u2", "similarity_matrix": [[0.1]],
                "image_info": [{"image_name": "a.jpg", "matched_text_index": 0}]}),  # matrix of the wrong shape
    json.dumps({"text_list": [], "image_info": [], "url": "u3"}),  # empty document
]  # fmt: skip
BAD_FATES = [
    ("quarantined", "bad_json"),
    ("quarantined", "bad_layout"),
    ("quarantined", "bad_layout"),
    ("dropped", "no_images_left"),
    ("quarantined", "bad_layout"),
    ("dropped", "empty_document"),
    ("quarantined", "bad_row"),  # the non-UTF-8 line
]


def test_bad_input_ends_with_reasons_and_both_identities_hold(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (200, 200), (10, 200, 30)).save(src / "a.jpg", quality=95)
    data = "\n".join(BAD_LINES).encode() + b'\n{"text_list": ["caf\xe9 au lait"], "image_info": [], "url": "u4"}\n'
    (src / "bad.jsonl").write_bytes(data)
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"filters": {"min_side": {"min": 64}}}))
    assert main(["interleaved", "--input", str(src), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    manifest = _manifest(out)
    _identities(manifest)
    docs = sorted(_rows(out, "document"), key=lambda r: r["source"]["index"])
    assert [(d["fate"]["status"], d["fate"]["reason"]) for d in docs] == BAD_FATES
    assert all(d["fate"]["error"] for d in docs if d["fate"]["status"] == "quarantined")
    (img,) = _rows(out, "image")  # the out-of-range anchor: that image, never its document's error
    assert img["fate"]["reason"] == "bad_anchor" and img["original_anchor"] == 5


def test_recipe_in_a_test_pipeline(tmp_path: Path) -> None:
    """The recipe under Beam's TestPipeline: the manifest's identities, checked by assert_that."""
    work = tmp_path / "demo"
    docs = demo.build_corpus(work)
    config, _ = demo.demo_config(str(work / "images"))
    assert isinstance(config, InterleavedConfig)
    units = CORPUS.list_units([str(docs)], config)
    assert len(units) == 2
    out = tmp_path / "out"
    with TestPipeline() as p:
        manifest = CORPUS.build(p, units, config, new_run(CORPUS, config, [str(docs)], units, str(out)))
        counts = manifest | beam.Map(
            lambda m: {
                k: (v["counts"]["input"], v["counts"]["kept"], v["accounting_ok"]) for k, v in m["kinds"].items()
            }
        )
        kept_docs = sum(1 for s, _ in demo.EXPECTED_DOCUMENTS.values() if s == "kept")
        kept_images = sum(1 for s, _, _ in demo.EXPECTED_IMAGES.values() if s == "kept")
        assert_that(
            counts,
            equal_to([{"document": (len(demo.EXPECTED_DOCUMENTS), kept_docs, True),
                       "image": (len(demo.EXPECTED_IMAGES), kept_images, True)}]),
        )  # fmt: skip


def test_select_is_refused_with_a_reason() -> None:
    with pytest.raises(SelectUnsupported):
        CORPUS.select(None, [], None, None)  # type: ignore[arg-type]


PAGE = [
    "The harbour wakes up early, when the fishing boats come back with their nets full of silver fish.",
    "Gulls follow every boat, and the market hall fills with voices long before the sun is up.",
    "By noon the stalls are empty again and the fishermen mend their nets on the warm stones.",
]


def _run(tmp_path: Path, rows: list[dict], images: dict[str, Image.Image], **config: object) -> Path:
    src, root, out = tmp_path / "in", tmp_path / "images", tmp_path / "out"
    src.mkdir()
    root.mkdir()
    for name, img in images.items():
        img.save(root / name, quality=95)
    (src / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    filters = {"min_side": {"min": 64}, "doc_length": {"min_words": 10},
               "vision_tokens": {"max_tokens": 0, "output_max_side": 512}}  # fmt: skip
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"read": {"image_root": str(root)}, "filters": filters, **config}))
    assert main(["interleaved", "--input", str(src), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    _identities(_manifest(out))
    return out


def _row(url: str, names: list[str], texts: list[str] = PAGE) -> dict:
    info = [{"image_name": n, "matched_text_index": i % len(texts)} for i, n in enumerate(names)]
    return {"text_list": texts, "image_info": info, "url": url}


def _noise(seed: int, size: int = 200) -> Image.Image:
    import numpy as np

    small = (np.random.default_rng(seed).random((25, 25, 3)) * 255).astype("uint8")
    return Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)


def test_a_copy_with_the_larger_image_never_costs_the_kept_document_its_image(tmp_path: Path) -> None:
    """Image and document dedup run in one pass: the earlier document's image copy wins, as the
    earlier document does, so the kept document keeps its image (the larger copy goes with its page)."""
    out = _run(tmp_path, [_row("https://a.org/1", ["small.jpg"]), _row("https://b.org/2", ["big.jpg"])],
               {"small.jpg": _noise(1, 200), "big.jpg": _noise(1, 400)})  # fmt: skip
    docs = sorted(_rows(out, "document"), key=lambda r: r["source"]["index"])
    assert [(d["fate"]["status"], d["fate"]["reason"], d["kept_images"]) for d in docs] == [
        ("kept", "", 1), ("dropped", "duplicate_text", 0),
    ]  # fmt: skip
    images = {r["name"]: r["fate"]["reason"] for r in _rows(out, "image")}
    assert images["small.jpg"] == "" and images["big.jpg"] in ("duplicate_near", "duplicate_document")


def test_a_copy_short_of_min_images_loses_dedup_to_a_healthy_one(tmp_path: Path) -> None:
    rows = [_row("https://a.org/1", ["a1.jpg", "missing.jpg"]), _row("https://b.org/2", ["b1.jpg", "b2.jpg"])]
    out = _run(tmp_path, rows, {"a1.jpg": _noise(1), "b1.jpg": _noise(2), "b2.jpg": _noise(3)}, min_images=2)
    docs = sorted(_rows(out, "document"), key=lambda r: r["source"]["index"])
    assert [(d["fate"]["reason"], d["kept_images"]) for d in docs] == [("too_few_images", 0), ("", 2)]
    assert {r["name"]: r["fate"]["reason"] for r in _rows(out, "image")} == {
        "a1.jpg": "document_dropped", "missing.jpg": "image_missing", "b1.jpg": "", "b2.jpg": "",
    }  # fmt: skip


def test_equal_pages_at_two_urls_are_two_samples_with_their_own_keys(tmp_path: Path) -> None:
    import webdataset as wds

    rows = [_row("https://a.org/1", []), _row("https://a.org/2", [])]
    out = _run(tmp_path, rows, {}, min_images=0, text_dedup={"enabled": False})
    docs = _rows(out, "document")
    assert [d["fate"]["status"] for d in docs] == ["kept", "kept"] and len({d["id"] for d in docs}) == 2
    samples = list(wds.WebDataset([str(p) for p in sorted((out / "shards").glob("*.tar"))], shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(d["id"] for d in docs)


def test_the_manifest_counts_the_vision_tokens_of_the_images_kept(tmp_path: Path) -> None:
    from mmcurate.stages.vision_tokens import VisionTokens, image_tokens

    out = _run(tmp_path, [_row("https://a.org/1", ["x.jpg", "x.jpg"])], {"x.jpg": _noise(4, 300)})
    (doc,) = _rows(out, "document")
    assert [r["fate"]["reason"] for r in _rows(out, "image")] == ["", "duplicate_exact"]
    one = image_tokens(300, 300, VisionTokens.Params(output_max_side=512))
    assert doc["scores"]["vision_tokens"] == 2 * one  # scored before dedup: both slots
    assert _manifest(out)["extras"]["vision_tokens"] == one  # the manifest: what the shards hold


class _FailsOnNarrowImages:
    """A ModelHandler whose model cannot take images 13 pixels wide (the kind of input that breaks a
    real preprocessor): every other image gets its width back as the score."""

    def __new__(cls):  # built lazily: apache_beam.ml imports torch
        from apache_beam.ml.inference.base import ModelHandler

        class Handler(ModelHandler):
            def load_model(self):
                return None

            def run_inference(self, batch, model, inference_args=None):
                if any(img.width == 13 for img in batch):
                    raise ValueError("13 pixels wide")
                return [float(img.width) for img in batch]

        return Handler()


def test_an_image_the_model_fails_on_is_quarantined_and_its_document_goes_on(tmp_path: Path) -> None:
    from mmcurate.pipelines.inference import ScoreWithModels
    from mmcurate.pipelines.interleaved import DocumentImages
    from mmcurate.pipelines.models import ModelStage
    from mmcurate.schemas import DocumentRecord, ImageSlot, Source

    def doc(index: int, widths: list[int]) -> DocumentRecord:
        src = Source("docs.jsonl", 0, f"line{index + 1}", index)
        slots = [
            ImageSlot(id=f"{index}-{i}", source=src, slot=i, pixels=Image.new("RGB", (w, 20)))
            for i, w in enumerate(widths)
        ]
        return DocumentRecord(id=str(index), source=src, texts=["a"], images=len(slots), slots=slots)

    def merge(view, width):
        view.scores["w"] = width

    stage = ModelStage("widths", _FailsOnNarrowImages(), lambda v: v.pixels, merge, ("w",))

    def outcome(d: DocumentRecord) -> tuple:
        return (d.id, d.fate.status.value, tuple((s.fate.reason, s.scores.get("w")) for s in d.slots or ()))

    with TestPipeline() as p:
        got = (
            p
            | beam.Create([doc(0, [40, 13, 50]), doc(1, [60]), doc(2, [13])])
            | ScoreWithModels([stage], DocumentImages())
            | beam.Map(outcome)
        )
        assert_that(
            got,
            equal_to([
                ("0", "pending", (("", 40.0), ("model_error", None), ("", 50.0))),  # the document goes on
                ("1", "pending", (("", 60.0),)),
                ("2", "pending", (("model_error", None),)),  # its only image failed: the image, not the page
            ]),
        )  # fmt: skip


def test_report_renders_sampled_documents_with_alignment_in_place(demo_run: Path, tmp_path: Path) -> None:
    """The run report's documents section: each sampled kept document's texts in order, its images
    in place, each with the alignment score the image ledger holds for its slot."""
    import re

    import pyarrow.parquet as pq

    from mmcurate.report import build_report

    html = Path(build_report(str(demo_run), str(tmp_path / "rep"))).read_text()
    assert '<section id="documents">' in html
    images = [
        r for f in sorted((demo_run / "ledger" / "image").glob("*.parquet")) for r in pq.read_table(f).to_pylist()
    ]
    articles = re.findall(r'<article class="doc".*?</article>', html, flags=re.S)
    assert articles
    for art in articles:
        doc = re.search(r"<b>([0-9a-f]{32})</b>", art).group(1)
        want = [f"{r['scores']['alignment']:.3f}" for r in sorted(images, key=lambda r: r["slot"])
                if r["doc_id"] == doc and r["fate"]["status"] == "kept"]  # fmt: skip
        assert re.findall(r"alignment ([0-9.]+)", art) == want, doc
