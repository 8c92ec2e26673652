"""The interleaved corpus's model path: every image of a document against every sentence of it.

The model is real: the tiny open_clip tower of `tiny_models.build_tiny_clip` (random weights, saved
and loaded the real way). `ClipMatrixHandler` is checked against open_clip's own encoders; the whole
recipe (the `alignment` filter's `align` stage through RunInference, then the one-to-one assignment)
is run through the CLI on generated MMC4 rows, and its ledgers are checked against the handler, a
brute-force assignment and both identities (documents and images)."""

from __future__ import annotations

import io
import itertools
import json
import math
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from tiny_models import build_tiny_clip

from mmcurate.cli import main
from mmcurate.pipelines.corpus import get as get_corpus
from mmcurate.stages import clip_model
from mmcurate.stages.base import ModelUnavailable
from mmcurate.stages.clip import ClipParams
from mmcurate.stages.clip_model import ClipMatrixHandler
from mmcurate.stages.image_decode import DecodeParams, decode, pixel_hash

TOL = 1e-5
"""Float32 CLIP cosines computed in different batch shapes (another reduction order) agree to ~1e-7;
1e-5 is the bound the other CLIP tests use."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def params(tiny: dict[str, str], **kw: Any) -> ClipParams:
    return ClipParams(model="mmcurate-tiny-clip", pretrained=tiny["ckpt"], architecture=tiny["arch"], **kw)


def photo(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """Smooth random colours (upsampled noise): distinct per seed, no pHash near duplicates."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ the handler alone


class Reference:
    """open_clip's own model, built from the architecture and loaded from the checkpoint by hand:
    each image and each sentence encoded on its own, normalised, dotted."""

    def __init__(self, tiny: dict[str, str]) -> None:
        import open_clip

        open_clip.add_model_config(tiny["arch"])
        self.model, _, self.preprocess = open_clip.create_model_and_transforms("mmcurate-tiny-clip", pretrained=None)
        self.model.load_state_dict(torch.load(tiny["ckpt"], map_location="cpu", weights_only=True))
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer("mmcurate-tiny-clip")

    def cosines(self, img: Image.Image, texts: Sequence[str]) -> list[float]:
        with torch.no_grad():
            a = torch.nn.functional.normalize(self.model.encode_image(self.preprocess(img)[None]), dim=-1)[0]
            out = []
            for text in texts:
                b = torch.nn.functional.normalize(self.model.encode_text(self.tokenizer([text])), dim=-1)[0]
                out.append(float(a @ b))
        return out


SHARED = "a red cat on a blue sofa"
EXAMPLES_TEXTS: list[list[str]] = [
    [],
    [SHARED],
    ["two dogs in the snow", SHARED, "a chart of prices", "two dogs in the snow", "the sea at night"],
    ["a chart of prices", "a bowl of green soup", "a man with a hat", "the sea at night", SHARED, "a map", "x"],
    [],
]
"""0, 1, 5 (one sentence twice) and 7 sentences; some shared between examples."""


def matrix_examples() -> list[tuple[Image.Image, list[str]]]:
    sizes = [(96, 72), (40, 90), (64, 64), (200, 150), (33, 33)]
    return [(photo(50 + i, size), texts) for i, (size, texts) in enumerate(zip(sizes, EXAMPLES_TEXTS, strict=True))]


def assert_close(got: list[list[float]], want: list[list[float]]) -> None:
    assert [len(r) for r in got] == [len(r) for r in want]
    for g, w in zip(got, want, strict=True):
        assert all(isinstance(v, float) for v in g)
        assert all(math.isclose(a, b, abs_tol=TOL) for a, b in zip(g, w, strict=True)), (g, w)


@pytest.fixture(scope="module")
def matrix_model(tiny: dict[str, str]) -> tuple[ClipMatrixHandler, Any]:
    handler = ClipMatrixHandler(params(tiny, batch_size=8))
    return handler, handler.load_model()


def test_matrix_is_one_open_clip_cosine_per_sentence(tiny: dict[str, str], matrix_model: Any) -> None:
    handler, model = matrix_model
    examples = matrix_examples()
    got = handler.run_inference(examples, model)
    assert [len(r) for r in got] == [len(texts) for _, texts in examples] == [0, 1, 5, 7, 0]
    ref = Reference(tiny)
    assert_close(got, [ref.cosines(img, texts) for img, texts in examples])
    # The same sentence in another example (and twice in one) is the same column of that image.
    assert got[2][0] == got[2][3]
    assert len({round(v, 6) for row in got for v in row}) > 5  # real, differing outputs
    assert all(-1.0 <= v <= 1.0 for row in got for v in row)


def test_text_chunks_and_batching_do_not_change_values(matrix_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    handler, model = matrix_model
    examples = matrix_examples()
    together = handler.run_inference(examples, model)
    alone = [handler.run_inference([ex], model)[0] for ex in examples]
    assert_close(together, alone)
    monkeypatch.setattr(clip_model, "TEXT_BATCH", 2)
    passes: list[int] = []
    encode_text = model.model.encode_text

    def counted(tokens: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        passes.append(len(tokens))
        return encode_text(tokens, *args, **kw)

    monkeypatch.setattr(model.model, "encode_text", counted)  # the real encoder, its calls counted
    assert_close(handler.run_inference(examples, model), together)
    assert passes == [2, 2, 2, 2]  # the 8 distinct sentences of the batch, each encoded once
    assert_close([handler.run_inference([ex], model)[0] for ex in examples], together)
    # A batch without any sentence still encodes its images and answers one empty row each.
    assert handler.run_inference([examples[0], examples[4]], model) == [[], []]


# ------------------------------------------------------------------------------------ the whole recipe


def ledger(out: Path, kind: str) -> list[dict[str, Any]]:
    return [r for f in sorted((out / "ledger" / kind).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


class Corpus:
    """MMC4 rows written as jsonl, their JPEGs in a folder image root (the bytes kept for the checks)."""

    def __init__(self, root: Path) -> None:
        self.root, self.images = root, root / "images"
        self.images.mkdir(parents=True)
        self.bytes: dict[str, bytes] = {}
        self.rows: list[dict[str, Any]] = []

    def image(self, name: str, data: bytes) -> str:
        (self.images / name).write_bytes(data)
        self.bytes[name] = data
        return name

    def mmc4(
        self,
        n_images: int,
        n_sentences: int,
        matrix: list[list[float]] | None = None,
        names: dict[int, str] | None = None,
        sizes: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        """One document; `names`: slots that name a given image, `sizes`: slots with another size."""
        d, names, sizes = len(self.rows), names or {}, sizes or {}
        words = ("cat", "tree", "boat", "soup", "chart", "river", "hat")
        texts = [
            f"document {d} line {k}: a {words[(d + k) % len(words)]} seen from the left" for k in range(n_sentences)
        ]
        info = []
        for i in range(n_images):
            name = names.get(i) or self.image(f"d{d}_{i}.jpg", jpeg(photo(100 * d + i, sizes.get(i, (96, 72)))))
            info.append({"image_name": name, "raw_url": f"https://img.example/{name}", "matched_text_index": 0,
                         "matched_sim": 0.2})  # fmt: skip
        row: dict[str, Any] = {"url": f"https://doc{d}.example/page", "text_list": texts, "image_info": info}
        if matrix is not None:
            row["similarity_matrix"] = matrix
        self.rows.append(row)

    def obelics_without_text(self, n_images: int) -> None:
        d = len(self.rows)
        names = [self.image(f"d{d}_{i}.jpg", jpeg(photo(100 * d + i))) for i in range(n_images)]
        meta = json.dumps({"url": f"https://doc{d}.example/page"})
        self.rows.append({"texts": [None] * n_images, "images": names, "general_metadata": meta})

    def run(self, tiny: dict[str, str], alignment: dict[str, Any], name: str = "out", **extra: Any) -> Path:
        docs = self.root / "docs.jsonl"
        docs.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        clip = {
            "model": "mmcurate-tiny-clip",
            "pretrained": tiny["ckpt"],
            "architecture": tiny["arch"],
            "batch_size": 4,
        }
        cfg: dict[str, Any] = {
            "read": {"image_root": str(self.images)},
            "filters": {"alignment": alignment},  # the alignment alone: nothing else decides a record
            "text_dedup": {"enabled": False},
            "dedup": {"near": False},
            "models": {"clip": clip},
        }
        merge(cfg, extra)
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out = self.root / name
        argv = ["interleaved", "--input", str(docs), "--output", str(out), "--config", str(path), "--no-progress"]
        assert main(argv) == 0
        return out


def merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Nested keys of `more` replace those of `into`, the others stay."""
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def check_books(out: Path) -> dict[str, Any]:
    """Both identities, from the manifest and again from the ledgers."""
    manifest = json.loads((out / "manifest.json").read_text())
    docs, images = ledger(out, "document"), ledger(out, "image")
    for kind, rows in (("document", docs), ("image", images)):
        section = manifest["kinds"][kind]
        counts = section["counts"]
        assert section["accounting_ok"] is True, kind
        assert counts["input"] == counts["kept"] + counts["dropped"] + counts["quarantined"] == len(rows), kind
        for status in ("kept", "dropped", "quarantined"):
            assert counts[status] == sum(r["fate"]["status"] == status for r in rows), (kind, status)
    assert manifest["kinds"]["image"]["counts"]["input"] == sum(d["images"] for d in docs)
    return manifest


def by_doc(out: Path) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(document row, its image rows in slot order), documents in input order."""
    images: dict[str, list[dict[str, Any]]] = {}
    for img in ledger(out, "image"):
        images.setdefault(img["doc_id"], []).append(img)
    docs = sorted(ledger(out, "document"), key=lambda d: d["source"]["index"])
    return [(d, sorted(images.get(d["id"], []), key=lambda i: i["slot"])) for d in docs]


def best_assignment(matrix: list[list[float]], rows: list[int]) -> tuple[float, dict[int, int]]:
    """Brute force: the one-to-one row -> column map of the largest summed similarity (every row
    matched when rows <= columns; every column when there are more rows)."""
    cols = range(len(matrix[0]))
    best: tuple[float, dict[int, int]] = (-math.inf, {})
    if len(rows) <= len(cols):
        for perm in itertools.permutations(cols, len(rows)):
            total = sum(matrix[r][c] for r, c in zip(rows, perm, strict=True))
            if total > best[0]:
                best = (total, dict(zip(rows, perm, strict=True)))
    else:
        for perm in itertools.permutations(rows, len(cols)):
            total = sum(matrix[r][c] for r, c in zip(perm, cols, strict=True))
            if total > best[0]:
                best = (total, dict(zip(perm, cols, strict=True)))
    return best


def check_assignment(doc: dict[str, Any], images: list[dict[str, Any]]) -> None:
    """Each scored image sits at its column of the brute-force optimum (the images the optimum leaves
    out, when there are more images than sentences, at their own best column), scored with the
    matrix value there; one to one when images <= sentences."""
    matrix = doc["similarity"]
    scored = [i for i in images if i["scores"]["alignment"] is not None]
    assert scored, doc["id"]
    for img in scored:
        assert img["scores"]["alignment"] == matrix[img["slot"]][img["anchor"]]
    rows = [i["slot"] for i in scored]
    total, best = best_assignment(matrix, rows)
    assert math.isclose(sum(matrix[i["slot"]][i["anchor"]] for i in scored if i["slot"] in best), total, abs_tol=1e-12)
    for img in scored:
        row = matrix[img["slot"]]
        assert img["anchor"] == best.get(img["slot"], int(np.argmax(row))), (doc["id"], img["slot"])
    if len(scored) <= len(doc["texts"]):
        assert len({i["anchor"] for i in scored}) == len(scored)


@pytest.fixture(scope="module")
def model_run(tiny: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Corpus]:
    corpus = Corpus(tmp_path_factory.mktemp("interleaved_model"))
    corpus.mmc4(2, 3)
    broken = corpus.image("broken.jpg", jpeg(photo(999))[:300])  # the header, then the file ends
    corpus.mmc4(3, 2, names={1: broken})  # two decodable images for two sentences
    corpus.mmc4(1, 4, sizes={0: (1100, 820)})  # draft-decoded at half size, re-encoded for the shard
    corpus.mmc4(4, 6)
    corpus.mmc4(4, 1)  # more images than sentences
    corpus.mmc4(2, 3, matrix=[[0.9, 0.0, 0.0], [0.0, 0.0, 0.9]])  # an input matrix: source model replaces it
    corpus.mmc4(2, 0)  # no text: MMC4's matched_text_index cannot name a sentence
    corpus.obelics_without_text(2)  # no text, decodable images
    return corpus.run(tiny, {"source": "model", "min": -1.0}), corpus


@pytest.mark.slow
def test_model_matrix_shape_nans_and_books(model_run: tuple[Path, Corpus]) -> None:
    out, _ = model_run
    manifest = check_books(out)
    docs = by_doc(out)
    assert len(docs) == 8
    for doc, images in docs:
        assert len(images) == doc["images"]
        if not doc["texts"]:
            assert doc["similarity"] == [] and doc["similarity_from"] == ""
            assert all(i["scores"]["alignment"] is None for i in images)
            continue
        assert doc["similarity_from"] == "model"
        assert len(doc["similarity"]) == doc["images"]
        assert all(len(row) == len(doc["texts"]) for row in doc["similarity"])
        for img in images:
            row = doc["similarity"][img["slot"]]
            if img["pixel_hash"]:
                assert all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in row)
            else:  # never decoded: no row of its own
                assert all(math.isnan(v) for v in row) and img["scores"]["alignment"] is None
    # min -1 keeps every image the model scored; the broken one is quarantined, MMC4 images of a
    # document without text have no sentence to be matched to, the OBELICS ones are not judged.
    fates = [[(i["fate"]["status"], i["fate"]["reason"]) for i in images] for _, images in docs]
    assert fates[1] == [("kept", ""), ("quarantined", "decode_error"), ("kept", "")]
    assert fates[6] == [("quarantined", "bad_anchor")] * 2
    assert fates[7] == [("kept", "")] * 2
    assert sum(f == ("kept", "") for row in fates for f in row) == manifest["kinds"]["image"]["counts"]["kept"] == 17
    assert [d["fate"]["reason"] for d, _ in docs] == [""] * 6 + ["no_images_left", ""]
    assert docs[5][0]["similarity"] != [[0.9, 0.0, 0.0], [0.0, 0.0, 0.9]]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distributions"]["mmcurate_clip_matrix/load_model_latency_milli_secs"]["count"] >= 1


@pytest.mark.slow
def test_model_assignment_is_the_best_one_to_one(model_run: tuple[Path, Corpus]) -> None:
    out, _ = model_run
    checked = 0
    for doc, images in by_doc(out):
        if doc["texts"]:
            check_assignment(doc, images)
            checked += 1
    assert checked == 6
    moved = [i for _, images in by_doc(out) for i in images if i["scores"]["alignment"] is not None]
    assert any(i["anchor"] != i["original_anchor"] for i in moved)  # re-anchored, not the input's 0
    assert all(i["original_anchor"] == 0 for i in moved)


@pytest.mark.slow
def test_shards_place_each_image_before_its_new_anchor(model_run: tuple[Path, Corpus]) -> None:
    """What a trainer reads: in each kept document's sample JSON, the kept images (slot order)
    stand right before the sentence the assignment gave them (after the last one: at the end)."""
    out, _ = model_run
    manifest = json.loads((out / "manifest.json").read_text())
    samples = {}
    for shard in manifest["files"]["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    sample = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    samples[sample["id"]] = sample
    kept = [(d, imgs) for d, imgs in by_doc(out) if d["fate"]["status"] == "kept"]
    assert len(kept) == len(samples) == 7
    for doc, images in kept:
        want: list[tuple[str, str]] = []
        for k in range(len(doc["texts"]) + 1):
            here = [i for i in images if i["fate"]["status"] == "kept" and min(i["anchor"], len(doc["texts"])) == k]
            want += [("image", f"{i['slot']}.{i['out_ext']}") for i in here]
            want += [("text", doc["texts"][k])] if k < len(doc["texts"]) else []
        got = [(it["type"], it["image"] or it["text"]) for it in samples[doc["id"]]["items"]]
        assert got == want, doc["id"]


@pytest.mark.slow
def test_model_matrix_equals_the_handler_on_the_decoded_image(
    model_run: tuple[Path, Corpus], matrix_model: Any
) -> None:
    """The pipeline's matrix is the handler's on the same pixels: the input bytes decoded by the
    pipeline's own `decode` (draft mode included) give the ledger's pixel hash, so only the batch
    composition differs (tolerance TOL); the re-encoded shard image is never what was scored."""
    out, corpus = model_run
    handler, model = matrix_model
    examples, want, drafted = [], [], 0
    for doc, images in by_doc(out):
        for img in images:
            if doc["texts"] and img["pixel_hash"]:
                decoded = decode(corpus.bytes[img["name"]], DecodeParams())
                assert pixel_hash(decoded.image) == img["pixel_hash"]
                assert (decoded.width, decoded.height) == (img["width"], img["height"])
                drafted += decoded.image.width < decoded.width
                examples.append((decoded.image, doc["texts"]))
                want.append(doc["similarity"][img["slot"]])
    assert len(examples) == 15 and drafted == 1  # the 1100 x 820 JPEG was scored at its draft size
    assert_close(handler.run_inference(examples, model), want)


@pytest.mark.slow
def test_auto_keeps_an_input_matrix_and_asks_the_model_for_the_rest(
    tiny: dict[str, str], tmp_path: Path, matrix_model: Any
) -> None:
    given = [[0.31, 0.12, 0.27], [0.05, 0.44, 0.41], [0.22, 0.43, 0.02]]
    corpus = Corpus(tmp_path)
    corpus.mmc4(3, 3, matrix=given)
    corpus.mmc4(2, 4)
    out = corpus.run(tiny, {"source": "auto", "min": -1.0})
    check_books(out)
    (first, first_images), (second, second_images) = by_doc(out)
    assert first["similarity_from"] == "input" and first["similarity"] == given
    check_assignment(first, first_images)
    assert [i["anchor"] for i in first_images] == [0, 2, 1]  # 0.31 + 0.41 + 0.43, the best of 6 orders
    assert second["similarity_from"] == "model"
    check_assignment(second, second_images)
    handler, model = matrix_model
    examples = [(decode(corpus.bytes[i["name"]], DecodeParams()).image, second["texts"]) for i in second_images]
    assert_close(handler.run_inference(examples, model), second["similarity"])


@pytest.mark.slow
def test_min_above_every_similarity_drops_every_image_and_document(tiny: dict[str, str], tmp_path: Path) -> None:
    corpus = Corpus(tmp_path)
    for n_images, n_sentences in ((1, 3), (3, 2), (2, 5)):
        corpus.mmc4(n_images, n_sentences)
    out = corpus.run(tiny, {"source": "model", "min": 1.5}, min_images=1)  # a cosine is at most 1
    manifest = check_books(out)
    docs = by_doc(out)
    for doc, images in docs:
        assert doc["fate"]["status"] == "dropped" and doc["fate"]["reason"] == "no_images_left"
        for img in images:
            assert (img["fate"]["status"], img["fate"]["reason"]) == ("dropped", "unaligned")
            assert img["scores"]["alignment"] < 1.5  # decided from the score the ledger holds
    assert manifest["kinds"]["image"]["reasons"]["dropped"] == {"unaligned": 6}
    assert manifest["kinds"]["document"]["reasons"]["dropped"] == {"no_images_left": 3}


@pytest.mark.slow
def test_source_input_loads_no_model(tiny: dict[str, str], tmp_path: Path) -> None:
    """Weights that do not exist are no error when the matrix comes from the input only."""
    given = [[0.1, 0.5], [0.6, 0.2]]
    corpus = Corpus(tmp_path)
    corpus.mmc4(2, 2, matrix=given)
    corpus.mmc4(2, 3)
    missing = str(tmp_path / "no-such-weights.pt")
    out = corpus.run(tiny, {"source": "input", "min": 0.3}, models={"clip": {"pretrained": missing}})
    check_books(out)
    (first, first_images), (second, second_images) = by_doc(out)
    assert first["similarity"] == given and first["similarity_from"] == "input"
    assert [i["anchor"] for i in first_images] == [1, 0]
    assert [i["scores"]["alignment"] for i in first_images] == [0.5, 0.6]
    # No matrix and no model: the images are not judged (kept), the document has no matrix.
    assert second["similarity"] == [] and second["similarity_from"] == ""
    assert [(i["fate"]["status"], i["scores"]["alignment"]) for i in second_images] == [("kept", None)] * 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert not [k for section in metrics.values() if isinstance(section, dict) for k in section if "clip" in k]


@pytest.mark.parametrize("source", ["model", "auto"])
def test_missing_weights_fail_validate_when_the_model_may_be_needed(
    tiny: dict[str, str], tmp_path: Path, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = get_corpus("interleaved")
    missing = str(tmp_path / "no-such-weights.pt")
    clip = params(tiny).model_copy(update={"pretrained": missing}).model_dump()
    config = corpus.config_class(filters={"alignment": {"source": source}}, models={"clip": clip})
    with pytest.raises(ModelUnavailable, match=r"models\.clip\.pretrained: checkpoint .*no-such-weights\.pt"):
        corpus.validate(config)
    corpus.validate(corpus.config_class(filters={"alignment": {"source": "input"}}, models={"clip": clip}))
    # The CLI stops before listing anything or writing the output folder.
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text_list": ["a"], "image_info": []}) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"filters": {"alignment": {"source": source}}, "models": {"clip": clip}}))
    argv = ["interleaved", "--input", str(docs), "--output", str(tmp_path / "o"), "--config", str(cfg)]
    assert main(argv) == 2
    assert "models.clip.pretrained" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
