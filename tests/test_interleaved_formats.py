"""Interleaved exports: Data-Juicer's own MMC4 sample reproduced, MMC4 rows round-tripped, OBELICS rows
with exactly one non-null per position, and written parts that load (jsonl images that resolve the way
Data-Juicer resolves relative paths, an OBELICS parquet `datasets` loads as images)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image

from mmcurate.schemas import DocumentRecord, Part, Source
from mmcurate.stages.interleaved_formats import (
    DJ_EOC,
    DJ_IMAGE,
    LAYOUTS,
    export_name,
    to_datajuicer,
    to_mmc4,
    to_obelics,
    write_export,
)
from mmcurate.stages.interleaved_io import content_hash

INTERLEAVED = "interleaved"


def _media(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / "spool" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _jpeg(photo: Callable[..., Image.Image], to_bytes: Callable[..., bytes], seed: int, size=(24, 16)) -> bytes:
    return to_bytes(photo(size, seed), "JPEG", quality=80)


def mmc4_document(row: dict[str, Any], media: list[str], index: int = 0) -> DocumentRecord:
    """The record an MMC4 reader makes of one row: segments, similarity, the other fields as metadata,
    and one part per image (anchor = matched_text_index, per-image fields other than the named ones
    kept in `extra` with their names)."""
    parts = []
    for slot, (info, ref) in enumerate(zip(row["image_info"], media, strict=True)):
        extra = {k: v for k, v in info.items() if k not in ("image_name", "matched_text_index", "raw_url")}
        with Image.open(ref) as im:
            width, height = im.size
        parts.append(
            Part(
                slot=slot,
                anchor=info["matched_text_index"],
                ext="jpg",
                media=ref,
                name=info["image_name"],
                url=info["raw_url"],
                width=width,
                height=height,
                extra=json.dumps(extra),
            )
        )
    other = {k: v for k, v in row.items() if k not in ("image_info", "similarity_matrix", "text_list", "url")}
    return DocumentRecord(
        id=f"doc{index}",
        source=Source("mmc4.jsonl", 0, str(index), index),
        url=row["url"],
        layout="mmc4",
        texts=list(row["text_list"]),
        images=len(parts),
        kept_images=len(parts),
        similarity=row["similarity_matrix"],
        similarity_from="input",
        metadata=json.dumps(other),
        parts=parts,
    ).keep()


@pytest.fixture
def mmc4_example(peer_data: Path, tmp_path: Path, photo, to_bytes) -> tuple[dict[str, Any], DocumentRecord]:
    line = (peer_data / INTERLEAVED / "mmc4_readme_example.jsonl").read_text(encoding="utf-8")
    row = json.loads(line)
    media = [_media(tmp_path, f"{i}.jpg", _jpeg(photo, to_bytes, i)) for i in range(len(row["image_info"]))]
    return row, mmc4_document(row, media)


def _names(doc: DocumentRecord) -> dict[int, str]:
    return {p.slot: p.name for p in doc.parts or ()}


# ------------------------------------------------------------------------------ the real MMC4 example


def test_reproduces_data_juicers_own_mmc4_sample(mmc4_example, peer_data: Path) -> None:
    _, doc = mmc4_example
    expected = json.loads((peer_data / INTERLEAVED / "mmc4_to_data_juicer_expected.json").read_text())
    want = expected["expected_dj_sample"]
    got = to_datajuicer(doc, _names(doc))
    assert got == want
    assert list(got) == list(want)
    assert [list(i) for i in got["image_info"]] == [list(i) for i in want["image_info"]]
    assert json.dumps(got, ensure_ascii=False) == json.dumps(want, ensure_ascii=False)


def test_mmc4_row_round_trips_byte_for_byte(mmc4_example, peer_data: Path) -> None:
    row, doc = mmc4_example
    got = to_mmc4(doc, _names(doc))
    assert got == row
    assert list(got) == list(row)
    line = (peer_data / INTERLEAVED / "mmc4_readme_example.jsonl").read_text(encoding="utf-8").strip()
    assert json.dumps(got, ensure_ascii=False) == line


def test_mmc4_after_a_dropped_and_a_re_anchored_image(mmc4_example) -> None:
    """The matrix keeps only the kept images' rows; `matched_sim` follows the new anchor."""
    row, doc = mmc4_example
    doc.parts = [doc.parts[1]]
    doc.parts[0].anchor = 2
    got = to_mmc4(doc, _names(doc))
    assert got["similarity_matrix"] == [row["similarity_matrix"][1]]
    (info,) = got["image_info"]
    assert info["image_name"] == row["image_info"][1]["image_name"]
    assert info["matched_text_index"] == 2
    assert info["matched_sim"] == row["similarity_matrix"][1][2] != row["image_info"][1]["matched_sim"]
    assert info["face_detections"] is None and info["raw_url"] == row["image_info"][1]["raw_url"]
    dj = to_datajuicer(doc, _names(doc))
    assert dj["images"] == [row["image_info"][1]["image_name"]]
    assert dj["text"].count(DJ_IMAGE) == 1


# ---------------------------------------------------------------------------------- synthetic documents


def _doc(
    tmp: Path, photo, to_bytes, texts: list[str], anchors: list[int | None], layout: str = "obelics", **kw: Any
) -> DocumentRecord:
    """A document with one slot per anchor; None = a slot that was dropped (no part)."""
    parts = []
    for slot, anchor in enumerate(anchors):
        if anchor is None:
            continue
        doc_id = kw.get("id", "d")
        data = _jpeg(photo, to_bytes, 1000 * ord(doc_id[0]) + slot, (20 + slot, 12))
        ref = _media(tmp, f"{doc_id}-{slot}.bin", data)
        parts.append(
            Part(slot, anchor, "jpg", ref, kw.get("name", f"https://img.example/{slot}.jpg"), "", 20 + slot, 12)
        )
    return DocumentRecord(
        id=kw.get("id", "d"),
        source=Source("in.parquet", 0, "0", 0),
        url=kw.get("url", "https://example.org/page"),
        layout=layout,
        texts=texts,
        images=len(anchors),
        kept_images=len(parts),
        metadata=kw.get("metadata", "{}"),
        parts=parts,
    ).keep()


def dj_read_back(text: str) -> tuple[list[str], list[int]]:
    """Data-Juicer's `dj_to_mmc4` parse of a sample's text: the chunks between eoc tokens, with the
    image tokens at a chunk's start or end counted as images matched to that chunk, in order."""
    chunks = [c.strip() for c in text.split(DJ_EOC) if c.strip()]
    sentences, anchors = [], []
    for i, chunk in enumerate(chunks):
        sent = chunk
        while sent.startswith(DJ_IMAGE):
            sent = sent[len(DJ_IMAGE) :].strip()
            anchors.append(i)
        while sent.endswith(DJ_IMAGE):
            sent = sent[: -len(DJ_IMAGE)].strip()
            anchors.append(i)
        sentences.append(sent)
    return sentences, anchors


def test_datajuicer_text_reads_back_with_data_juicers_rules(tmp_path: Path, photo, to_bytes) -> None:
    texts = ["First part.", "Second part with <__dj__image> a stray token.", "Third."]
    doc = _doc(tmp_path, photo, to_bytes, texts, [1, 0, None, 1, 3])
    names = {p.slot: f"n{p.slot}.jpg" for p in doc.parts or ()}
    row = to_datajuicer(doc, names)
    assert row["text"].endswith(f" {DJ_EOC}") and row["text"].count(DJ_EOC) == len(texts)
    assert row["text"].count(DJ_IMAGE) == len(row["images"]) == 4
    sentences, anchors = dj_read_back(row["text"])
    assert sentences == [t.replace(DJ_IMAGE, "") for t in texts]  # a stray token would shift the images
    # images in order of appearance: anchor 0 (slot 1), anchor 1 (slots 0, 3), after the last (slot 4)
    assert row["images"] == ["n1.jpg", "n0.jpg", "n3.jpg", "n4.jpg"]
    assert anchors == [0, 1, 1, 2]  # the trailing image reads back as matched to the last segment
    assert list(row)[:2] == ["text", "images"]
    assert json.loads(row["general_metadata"]) == {"url": doc.url}


def test_obelics_positions_hold_exactly_one_value(tmp_path: Path, photo, to_bytes) -> None:
    general = {"url": "https://example.org/a", "warc_filename": "crawl.warc.gz", "warc_record_offset": 7}
    per_image = [{"src": "https://img.example/0.jpg", "alt_text": "zero"}, {"src": "https://img.example/1.jpg"}]
    texts = ["alpha", "beta", "gamma"]
    cases = [
        ([0, 2], {}),
        ([3, None, 0, 0], {}),
        ([None, 1], {}),
        ([0, 1], {"metadata": json.dumps({"metadata": [per_image[0], None, per_image[1], None, None],
                                           "general_metadata": general})}),
    ]  # fmt: skip
    for i, (anchors, kw) in enumerate(cases):
        doc = _doc(tmp_path, photo, to_bytes, texts, anchors, id=f"o{i}", **kw)
        names = {p.slot: f"{p.slot}.jpg" for p in doc.parts or ()}
        row = to_obelics(doc, names)
        assert len(row["images"]) == len(row["texts"]) == len(texts) + len(doc.parts or ())
        assert all((img is None) != (txt is None) for img, txt in zip(row["images"], row["texts"], strict=True))
        assert [t for t in row["texts"] if t is not None] == texts
        meta = json.loads(row["metadata"])
        assert len(meta) == len(row["texts"])
        assert [m is None for m in meta] == [t is not None for t in row["texts"]]
        shown = [img["path"] for img in row["images"] if img is not None]
        assert shown == [it["image"] for it in doc.items() if it["type"] == "image"]
        for img in row["images"]:
            if img is not None:
                with Image.open(io.BytesIO(img["bytes"])) as im:
                    im.load()
        if kw:
            assert json.loads(row["general_metadata"]) == general
            assert [m for m in meta if m is not None] == per_image


def test_export_names(tmp_path: Path) -> None:
    data = b"\xff\xd8 not really a jpeg"
    cid = hashlib.blake2b(data, digest_size=16).hexdigest()
    assert content_hash(data) == cid

    def part(name: str, ext: str = "jpg") -> Part:
        return Part(0, 0, ext, "unused", name, "", 1, 1)

    assert export_name(part("b9040a0dbb22.jpg"), data) == "b9040a0dbb22.jpg"
    assert export_name(part("b9040a0dbb22.jpeg"), data) == "b9040a0dbb22.jpeg"  # the same format
    assert export_name(part("b9040a0dbb22.png"), data) == "b9040a0dbb22.jpg"
    assert export_name(part("b9040a0dbb22.gif", "webp"), data) == "b9040a0dbb22.webp"
    for name in ("images/a.jpg", "https://x.org/a.jpg", "bytes", "../a.jpg", ".hidden.jpg", "noext", "a b.jpg"):
        assert export_name(part(name), data) == f"{cid}.jpg", name


# ----------------------------------------------------------------------------------------------- writes


def _units(tmp_path: Path, photo, to_bytes) -> list[DocumentRecord]:
    """Two documents that name different images alike (`same.jpg`), a URL-named one, a trailing image."""
    return [
        _doc(tmp_path, photo, to_bytes, ["one", "two"], [0, 2], layout="mmc4", id="a", name="same.jpg",
             metadata=json.dumps({"could_have_url_duplicate": 1})),
        _doc(tmp_path, photo, to_bytes, ["three"], [None, 0], layout="mmc4", id="b", name="same.jpg"),
        _doc(tmp_path, photo, to_bytes, ["four", "five"], [1], layout="datajuicer", id="c"),
    ]  # fmt: skip


def _decoded(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()
        return im.size


@pytest.mark.parametrize("layout", ["mmc4", "datajuicer"])
def test_jsonl_exports_name_files_that_resolve_beside_them(tmp_path: Path, photo, to_bytes, layout: str) -> None:
    docs = _units(tmp_path, photo, to_bytes)
    out = tmp_path / "out"
    files = write_export(layout, 3, docs, str(out))
    paths = [f.path for f in files]
    assert paths[-1] == f"{layout}/part-00003/part-00003.jsonl"  # the unit's folder: jsonl + its images
    for f in files:
        data = (out / f.path).read_bytes()
        assert len(data) == f.bytes and hashlib.sha256(data).hexdigest() == f.sha256
    jsonl = out / paths[-1]
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(docs)
    for doc, row in zip(docs, rows, strict=True):
        named = [i["image_name"] for i in row["image_info"]] if layout == "mmc4" else row["images"]
        assert len(named) == len(doc.parts or ())
        for name in named:
            # Data-Juicer's unify_format: os.path.join(dirname(dataset_path), path) for a relative path
            resolved = Path(os.path.join(os.path.dirname(jsonl), name))
            assert resolved.is_file(), name
            assert _decoded(resolved)[1] == 12
        by_name = dict(zip(named, sorted(doc.parts or (), key=lambda p: p.slot), strict=True))
        if layout == "datajuicer":
            by_name = dict(zip(named, sorted(doc.parts or (), key=lambda p: (p.anchor, p.slot)), strict=True))
        for name, part in by_name.items():
            assert (jsonl.parent / name).read_bytes() == Path(part.media).read_bytes()
    first = rows[0]["image_info"] if layout == "mmc4" else rows[0]["images"]
    second = rows[1]["image_info"] if layout == "mmc4" else rows[1]["images"]
    # `same.jpg` twice with other bytes: the first keeps the name, the other gets its content id
    names = [x["image_name"] if layout == "mmc4" else x for x in (*first, *second)]
    assert names[0] == "same.jpg" and len(set(names)) == 3
    if layout == "mmc4":
        assert rows[0]["could_have_url_duplicate"] == 1 and list(rows[0])[-1] == "could_have_url_duplicate"
        assert "similarity_matrix" not in rows[0]  # the documents carry none
        assert rows[0]["image_info"][1]["matched_text_index"] == 1  # after the last: MMC4 indexes text_list


def test_obelics_parquet_loads_with_datasets(tmp_path: Path, photo, to_bytes) -> None:
    docs = _units(tmp_path, photo, to_bytes)
    out = tmp_path / "out"
    (info,) = write_export("obelics", 0, docs, str(out))
    assert info.path == "obelics/part-00000.parquet"
    ds = datasets.load_dataset("parquet", data_files=str(out / info.path), split="train", cache_dir=str(tmp_path / "c"))
    assert isinstance(ds.features["images"].feature, datasets.Image)
    assert len(ds) == len(docs)
    for doc, row in zip(docs, ds, strict=True):
        assert [t for t in row["texts"] if t is not None] == doc.texts
        shown = [img for img in row["images"] if img is not None]
        assert len(shown) == len(doc.parts or ())
        order = [int(it["image"].split(".")[0]) for it in doc.items() if it["type"] == "image"]
        widths = {p.slot: p.width for p in doc.parts or ()}
        assert [im.size for im in shown] == [(widths[s], 12) for s in order]
        assert all((i is None) != (t is None) for i, t in zip(row["images"], row["texts"], strict=True))
        assert json.loads(row["general_metadata"])["url"] == doc.url


def test_exports_are_deterministic_and_wds_is_the_shards(tmp_path: Path, photo, to_bytes) -> None:
    docs = _units(tmp_path, photo, to_bytes)
    for layout in ("mmc4", "datajuicer", "obelics"):
        a = write_export(layout, 1, docs, str(tmp_path / "a"))
        b = write_export(layout, 1, docs, str(tmp_path / "b"))
        assert [f.to_dict() for f in a] == [f.to_dict() for f in b]
    assert LAYOUTS == ("wds", "obelics", "mmc4", "datajuicer")
    assert write_export("wds", 1, docs, str(tmp_path / "w")) == []
    assert write_export("mmc4", 1, [], str(tmp_path / "w")) == []
    assert not (tmp_path / "w").exists()
    with pytest.raises(ValueError, match="unknown"):
        write_export("llava", 1, docs, str(tmp_path / "w"))
