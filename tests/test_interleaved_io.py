"""The interleaved corpus's reader: MMC4 / OBELICS / Data-Juicer rows into documents and image slots.

Every case checks the books: records produced + not read == the lines or rows of the input, and the
images the documents announce == the slot records they carry."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcurate.schemas import DocumentRecord, Status
from mmcurate.stages.interleaved_io import (
    InputError,
    InterleavedReadParams,
    ReadReport,
    image_root,
    list_interleaved_units,
    normalise_url,
    read_interleaved_unit,
    split_datajuicer,
)

MMC4_NAMES = ("b9040a0dbb22.jpg", "db1c21bc8474.jpg")


def _blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _records_in(path: Path) -> int:
    """Lines of a jsonl or rows of a parquet, counted without the reader."""
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return len(path.read_bytes().splitlines())


def read_all(inputs: list[Path], **params: Any) -> list[DocumentRecord]:
    """List and read every unit, checking both identities on the way."""
    image_root.cache_clear()  # each test builds its own roots under tmp_path
    p = InterleavedReadParams(**params)
    docs: list[DocumentRecord] = []
    produced = not_read = 0
    for unit in list_interleaved_units([str(i) for i in inputs], p):
        report = ReadReport()
        docs += list(read_interleaved_unit(unit, p, report))
        produced, not_read = produced + report.produced, not_read + report.not_read
    files = [
        f for i in inputs for f in ([i] if i.is_file() else sorted(i.rglob("*"))) if f.suffix in (".jsonl", ".parquet")
    ]
    assert produced + not_read == sum(_records_in(f) for f in files)
    assert len(docs) == produced
    assert sum(d.images for d in docs) == sum(len(d.slots or ()) for d in docs)
    for d in docs:
        assert d.slots is None or all(s.doc_id == d.id and s.source == d.source for s in d.slots)
        assert d.slots is None or [s.slot for s in d.slots] == list(range(len(d.slots)))
    return docs


def _jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    img = Image.new("RGB", size, (seed * 70 % 256, 120, 200 - seed * 30))
    for x in range(0, size[0], 8):
        img.putpixel((x, seed % size[1]), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------------------------- MMC4


@pytest.fixture
def mmc4(peer_data: Path) -> Path:
    path = peer_data / "interleaved" / "mmc4_readme_example.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


def test_mmc4_readme_example_without_images(mmc4: Path, tmp_path: Path) -> None:
    raw = json.loads(mmc4.read_text())
    (tmp_path / "empty").mkdir()
    (doc,) = read_all([mmc4], image_root=str(tmp_path / "empty"))
    assert doc.fate.status == Status.PENDING and doc.layout == "mmc4"
    assert doc.texts == raw["text_list"]
    assert doc.similarity == raw["similarity_matrix"] and doc.similarity_from == "input"
    assert doc.url == raw["url"] and doc.url_key == "http://www.hfitinfo.com/hofi-48.html"
    assert json.loads(doc.metadata) == {"could_have_url_duplicate": 0}
    assert doc.images == 2
    slots = doc.slots or []
    assert [s.name for s in slots] == list(MMC4_NAMES)
    assert [s.anchor for s in slots] == [2, 1] == [s.original_anchor for s in slots]
    assert [s.url for s in slots] == [i["raw_url"] for i in raw["image_info"]]
    for slot, info in zip(slots, raw["image_info"], strict=True):
        assert slot.fate.status == Status.DROPPED and slot.fate.reason == "image_missing"
        assert slot.image is None and slot.id == _blake(slot.name.encode())
        # What an MMC4 export needs to rebuild image_info: every other key, under its own name.
        assert json.loads(slot.extra) == {k: v for k, v in info.items() if k not in ("image_name", "raw_url",
                                                                                     "matched_text_index")}  # fmt: skip


def _folder_root(tmp_path: Path, images: dict[str, bytes]) -> str:
    root = tmp_path / "images"
    root.mkdir()
    for name, data in images.items():
        (root / name).write_bytes(data)
    return str(root)


def _tar_root(tmp_path: Path, images: dict[str, bytes]) -> str:
    path = tmp_path / "images-00000.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in images.items():
            info = tarfile.TarInfo(f"shard0/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return str(path)


def _parquet_root(tmp_path: Path, images: dict[str, bytes]) -> str:
    path = tmp_path / "images.parquet"
    names = ["unrelated.jpg", *images]
    table = pa.table({"image_name": names, "image": [_jpeg(9), *images.values()]})
    pq.write_table(table, path, row_group_size=2)  # the two images land in different row groups
    return str(path)


@pytest.mark.parametrize("make_root", [_folder_root, _tar_root, _parquet_root], ids=["folder", "tar", "parquet"])
def test_mmc4_readme_example_with_images(mmc4: Path, tmp_path: Path, make_root: Any) -> None:
    images = {name: _jpeg(i) for i, name in enumerate(MMC4_NAMES)}
    root = make_root(tmp_path, images)
    (doc,) = read_all([mmc4], image_root=root)
    slots = doc.slots or []
    assert [s.fate.status for s in slots] == [Status.PENDING, Status.PENDING]
    for slot in slots:
        assert slot.image == images[slot.name] and slot.file_bytes == len(images[slot.name])
        assert slot.id == _blake(images[slot.name])
        with Image.open(io.BytesIO(slot.image)) as img:
            assert img.format == "JPEG"
    assert [s.anchor for s in slots] == [2, 1]
    assert doc.similarity == json.loads(mmc4.read_text())["similarity_matrix"]


def test_mmc4_document_id_depends_on_texts_and_names_only(mmc4: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (without,) = read_all([mmc4], image_root=str(tmp_path / "empty"))
    (with_images,) = read_all([mmc4], image_root=_folder_root(tmp_path, {n: _jpeg(3) for n in MMC4_NAMES}))
    assert without.id == with_images.id  # the same document wherever its images are
    row = json.loads(mmc4.read_text())
    row["text_list"][0] += " (edited)"
    (edited,) = read_all([_jsonl(tmp_path / "edited.jsonl", [row])], image_root=str(tmp_path / "empty"))
    assert edited.id != without.id


def test_mmc4_default_root_is_the_input_folder(tmp_path: Path) -> None:
    data = _jpeg(1)
    (tmp_path / "a.jpg").write_bytes(data)
    row = {"text_list": ["one", "two"], "image_info": [{"image_name": "a.jpg", "matched_text_index": 1,
                                                        "matched_sim": 0.3}], "url": "https://x.org/p"}  # fmt: skip
    (doc,) = read_all([_jsonl(tmp_path / "docs.jsonl", [row])])
    (slot,) = doc.slots or []
    assert slot.image == data and slot.anchor == 1 and doc.similarity == [] and doc.similarity_from == ""


# ---------------------------------------------------------------------------------------------- OBELICS


def _obelics_rows(img_path: str, img_bytes: bytes) -> dict[str, list]:
    """Two documents: <img bytes> t0 <img path> t1 <img url>, and t0 t1 (no image). A parquet list
    holds one type, so mixed images are Hugging Face `Image` structs ({bytes, path})."""
    url = "https://example.com/pic3.png"
    images = [{"bytes": img_bytes, "path": None}, None, {"bytes": None, "path": img_path}, None, {"bytes": None,
              "path": url}]  # fmt: skip
    meta0 = [{"src": "https://example.com/pic1.jpg", "alt_text": "first"}, None,
             {"src": "https://example.com/pic2.jpg", "alt_text": "second"}, None, {"src": url}]  # fmt: skip
    return {
        "images": [images, [None, None]],
        "texts": [[None, "Paragraph one.", None, "Paragraph two.", None], ["Only text.", "More text."]],
        "metadata": [json.dumps(meta0), json.dumps([None, None])],
        "general_metadata": [
            json.dumps({"url": "HTTPS://Example.COM:443/Doc/#top", "warc_filename": "w.gz"}),
            json.dumps({"url": "https://example.com/other"}),
        ],
    }


def _check_obelics_first(doc: DocumentRecord, embedded: bytes, on_disk: bytes) -> None:
    assert doc.layout == "obelics" and doc.texts == ["Paragraph one.", "Paragraph two."]
    assert doc.url == "HTTPS://Example.COM:443/Doc/#top" and doc.url_key == "https://example.com/Doc"
    assert json.loads(doc.metadata)["general_metadata"] == {"url": "HTTPS://Example.COM:443/Doc/#top",
                                                            "warc_filename": "w.gz"}  # fmt: skip
    slots = doc.slots or []
    assert doc.images == 3 == len(slots)
    # OBELICS positions 0, 2, 4: the next text among the texts is 0, 1, and none (len(texts) = 2).
    assert [s.anchor for s in slots] == [0, 1, 2]
    assert [s.anchor + s.slot for s in slots] == [0, 2, 4]  # the position is recoverable
    assert slots[0].image == embedded and slots[0].name == "bytes" and slots[0].id == _blake(embedded)
    assert slots[1].image == on_disk and slots[1].name == "img/b.jpg"
    assert json.loads(slots[0].extra) == {"src": "https://example.com/pic1.jpg", "alt_text": "first"}
    assert slots[0].url == "https://example.com/pic1.jpg"
    assert slots[2].fate.reason == "image_missing" and "img2dataset" in slots[2].fate.error
    assert slots[2].url == "https://example.com/pic3.png"


def test_obelics_parquet(tmp_path: Path) -> None:
    embedded, on_disk = _jpeg(1), _jpeg(2)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "b.jpg").write_bytes(on_disk)
    path = tmp_path / "obelics.parquet"
    pq.write_table(pa.table(_obelics_rows("img/b.jpg", embedded)), path)
    plain = tmp_path / "plain.parquet"  # list<binary> images, and list<string> paths
    pq.write_table(pa.table({"images": [[embedded, None]], "texts": [[None, "t"]]}), tmp_path / "bytes.parquet")
    pq.write_table(pa.table({"images": [[None, "img/b.jpg"]], "texts": [["t", None]]}), plain)
    as_bytes, first, second, as_path = read_all([tmp_path / "bytes.parquet", path, plain])
    _check_obelics_first(first, embedded, on_disk)
    assert second.texts == ["Only text.", "More text."] and second.images == 0 and second.slots == []
    assert second.fate.status == Status.PENDING
    assert [s.image for s in as_bytes.slots or []] == [embedded] and [s.anchor for s in as_bytes.slots or []] == [0]
    assert [s.image for s in as_path.slots or []] == [on_disk] and [s.anchor for s in as_path.slots or []] == [1]


def test_obelics_struct_images_and_jsonl(tmp_path: Path) -> None:
    """HF `Image` structs ({bytes, path}) and data: URLs hold their bytes; jsonl metadata may be parsed JSON."""
    a, b = _jpeg(4), _jpeg(5)
    data_url = "data:image/jpeg;base64," + base64.b64encode(a).decode()
    row = {"texts": ["x", None, None], "images": [None, {"bytes": None, "path": "b.jpg"}, data_url]}
    rows = [
        {**row, "metadata": [None, {"alt_text": "b"}, {"alt_text": "a"}], "general_metadata": {"url": "http://h.org"}}
    ]
    (tmp_path / "b.jpg").write_bytes(b)
    (doc,) = read_all([_jsonl(tmp_path / "o.jsonl", rows)])
    slots = doc.slots or []
    assert [s.image for s in slots] == [b, a] and [s.anchor for s in slots] == [1, 1]
    assert [s.name for s in slots] == ["b.jpg", "bytes"] and doc.url_key == "http://h.org"
    assert json.loads(slots[1].extra) == {"alt_text": "a"}


def test_obelics_bad_metadata_json_is_kept_and_noted(tmp_path: Path) -> None:
    row = {"texts": ["t"], "images": [None], "metadata": "[null", "general_metadata": "{not json"}
    (doc,) = read_all([_jsonl(tmp_path / "o.jsonl", [row])])
    assert doc.fate.status == Status.PENDING
    meta = json.loads(doc.metadata)
    assert meta == {"general_metadata": "{not json", "metadata": "[null"}
    assert (
        "general_metadata is not valid JSON" in doc.errors["read"]
        and "metadata is not valid JSON" in doc.errors["read"]
    )


def test_obelics_path_outside_root_settles_the_slot(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(_jpeg(6))
    (tmp_path / "docs").mkdir()
    rows = [{"texts": ["t", None, None], "images": [None, "../secret.jpg", str(outside)]}]
    (doc,) = read_all([_jsonl(tmp_path / "docs" / "o.jsonl", rows)])
    assert [s.fate.reason for s in doc.slots or []] == ["outside_root", "outside_root"]
    assert doc.fate.status == Status.PENDING
    (allowed,) = read_all([tmp_path / "docs" / "o.jsonl"], allow_outside_root=True)
    assert [s.image for s in allowed.slots or []] == [outside.read_bytes()] * 2


def test_url_only_obelics_is_refused_at_listing(tmp_path: Path) -> None:
    path = tmp_path / "obelics.parquet"
    rows = {"images": [["https://a.org/1.jpg", None], [None, "https://a.org/2.jpg"]],
            "texts": [[None, "t"], ["u", None]], "metadata": ["[]", "[]"],
            "general_metadata": ['{"url": "https://a.org"}'] * 2}  # fmt: skip
    pq.write_table(pa.table(rows), path)
    with pytest.raises(InputError, match="img2dataset"):
        list_interleaved_units([str(tmp_path)], InterleavedReadParams())
    _jsonl(tmp_path / "more.jsonl", [{"texts": ["t", None], "images": [None, "https://a.org/3.jpg"]}])
    with pytest.raises(InputError, match="web URLs only"):
        list_interleaved_units([str(tmp_path / "more.jsonl")], InterleavedReadParams())


def test_url_only_obelics_reads_from_img2dataset_shards(tmp_path: Path) -> None:
    """Once downloaded (img2dataset webdataset: KEY.jpg + KEY.json with the url), the URLs resolve."""
    img = _jpeg(7)
    shard = tmp_path / "dl" / "00000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tf:
        for name, data in (
            ("000000000.jpg", img),
            ("000000000.json", json.dumps({"url": "https://a.org/1.jpg"}).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    docs = tmp_path / "docs"
    docs.mkdir()
    rows = [{"texts": [None, "t", None], "images": ["https://a.org/1.jpg", None, "https://a.org/404.jpg"]}]
    _jsonl(docs / "o.jsonl", rows)
    (doc,) = read_all([docs], image_root=str(shard))
    slots = doc.slots or []
    assert slots[0].image == img and slots[0].url == "https://a.org/1.jpg"
    assert slots[1].fate.reason == "image_missing" and "download" in slots[1].fate.error


# ---------------------------------------------------------------------------------------------- Data-Juicer


def test_datajuicer_from_mmc4_conversion(peer_data: Path, tmp_path: Path) -> None:
    """Data-Juicer's own mmc4_to_dj output of the README example reads back as the MMC4 document."""
    path = peer_data / "interleaved" / "mmc4_to_data_juicer_expected.json"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    sample = json.loads(path.read_text())["expected_dj_sample"]
    (tmp_path / "empty").mkdir()
    (doc,) = read_all(
        [_jsonl(tmp_path / "dj.jsonl", [sample])], image_root=str(tmp_path / "empty"), layout="datajuicer"
    )
    assert doc.layout == "datajuicer" and doc.texts == sample["text_list"]
    by_name = {s.name: s.anchor for s in doc.slots or []}
    assert by_name == {i["image_name"]: i["matched_text_index"] for i in sample["image_info"]}
    assert [s.name for s in doc.slots or []] == sample["images"]


def test_datajuicer_jsonl(tmp_path: Path) -> None:
    a, b = _jpeg(1), _jpeg(2)
    (tmp_path / "a.jpg").write_bytes(a)
    (tmp_path / "b.jpg").write_bytes(b)
    rows = [
        {"text": "<__dj__image> A cat. <|__dj__eoc|> Its owner. <__dj__image> <|__dj__eoc|>",
         "images": ["a.jpg", "b.jpg"], "__dj__meta__": {"lang": "en"}},
        {"text": "<__dj__image> A bus.", "images": ["a.jpg"]},
    ]  # fmt: skip
    first, second = read_all([_jsonl(tmp_path / "dj.jsonl", rows)])
    assert first.texts == ["A cat.", "Its owner."] and [s.anchor for s in first.slots or []] == [0, 2]
    assert [s.image for s in first.slots or []] == [a, b]
    assert json.loads(first.metadata) == {"__dj__meta__": {"lang": "en"}}
    assert second.texts == ["A bus."] and [s.anchor for s in second.slots or []] == [0]


def test_split_datajuicer_custom_tokens() -> None:
    assert split_datajuicer("[img]x[eoc][img][eoc]  y [img]", "[img]", "[eoc]") == (["x", "y"], [0, 1, 2])
    assert split_datajuicer("no tokens", "[img]", "[eoc]") == (["no tokens"], [])


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_rows_are_quarantined_one_by_one(tmp_path: Path) -> None:
    mmc4 = {"text_list": ["a", "b"], "image_info": [{"image_name": "x.jpg", "matched_text_index": 0}]}
    lines = [
        "{not json",
        {"texts": ["a", None], "images": [None]},  # unequal lengths
        {"texts": ["a", "b"], "images": [None, "x.jpg"]},  # both at position 1
        {"texts": [None, "b"], "images": [None, "x.jpg"]},  # neither at position 0
        {**mmc4, "image_info": [{"image_name": "x.jpg", "matched_text_index": 5}]},
        {**mmc4, "similarity_matrix": [[0.1, 0.2, 0.3]]},  # 1x3 for 1 image x 2 sentences
        {**mmc4, "similarity_matrix": [[0.1, float("nan")]]},
        {"text_list": [], "image_info": []},
        {"texts": [], "images": []},
        {"caption": "no layout"},
        {"text": "<__dj__image> one token", "images": ["x.jpg", "y.jpg"]},
        mmc4,
    ]
    path = _jsonl(tmp_path / "bad.jsonl", lines)
    with path.open("ab") as f:  # a line whose text is not UTF-8
        f.write(b'{"texts": ["caf\xe9 au lait"], "images": [null]}\n')
    docs = read_all([path])
    reasons = [d.fate.reason for d in docs]
    assert reasons == ["bad_json", "bad_layout", "bad_layout", "bad_layout", "", "bad_layout", "bad_layout",
                       "empty_document", "empty_document", "bad_layout", "bad_layout", "", "bad_row"]  # fmt: skip
    assert "position 1 holds both" in docs[2].fate.error and "position 0 holds neither" in docs[3].fate.error
    assert "2x2" not in docs[5].fate.error and "1x2" in docs[5].fate.error
    assert "text_list" in docs[9].fate.error or "caption" in docs[9].fate.error
    assert "UTF-8" in docs[12].fate.error
    assert docs[7].fate.status == Status.DROPPED and docs[1].fate.status == Status.QUARANTINED
    for d in docs:
        if d.fate.reason:
            assert d.images == 0 and not d.slots
    (bad_anchor,) = docs[4].slots or []
    assert bad_anchor.fate.reason == "bad_anchor" and bad_anchor.original_anchor == 5
    assert docs[4].fate.status == Status.PENDING  # the document stays: only its slot is settled
    assert [s.fate.reason for s in docs[11].slots or []] == ["image_missing"]


def test_read_limit_counts_the_rest(tmp_path: Path) -> None:
    rows = [{"texts": [f"t{i}"], "images": [None]} for i in range(5)]
    docs = read_all([_jsonl(tmp_path / "o.jsonl", rows)], limit=2)
    assert [d.texts for d in docs] == [["t0"], ["t1"]]


def test_jsonl_units_and_root_parquet_inside_the_input(tmp_path: Path) -> None:
    rows = [
        {"text_list": [f"s{i}"], "image_info": [{"image_name": "a.jpg", "matched_text_index": 0}]} for i in range(5)
    ]
    _jsonl(tmp_path / "docs.jsonl", rows)
    (tmp_path / "README.md").write_text("readme")
    root = _parquet_root(tmp_path, {"a.jpg": _jpeg(1)})
    p = InterleavedReadParams(jsonl_unit_lines=2, image_root=root)
    image_root.cache_clear()
    units = list_interleaved_units([str(tmp_path)], p)
    assert [(u.kind, u.start, u.stop) for u in units] == [("jsonl", 0, 2), ("jsonl", 2, 4), ("jsonl", 4, 5)]
    assert sorted(Path(f).name for f in units[0].ignored) == ["README.md", "images.parquet"]
    docs = [d for u in units for d in read_interleaved_unit(u, p)]
    assert [d.texts[0] for d in docs] == [f"s{i}" for i in range(5)]
    assert all((d.slots or [])[0].image == _jpeg(1) for d in docs)


def test_unusable_inputs(tmp_path: Path) -> None:
    (tmp_path / "only.jpg").write_bytes(_jpeg(1))
    with pytest.raises(InputError, match="no jsonl or parquet"):
        list_interleaved_units([str(tmp_path)], InterleavedReadParams())
    with pytest.raises(InputError, match="does not exist"):
        list_interleaved_units([str(tmp_path / "missing.jsonl")], InterleavedReadParams())
    _jsonl(tmp_path / "d.jsonl", [{"texts": ["t"], "images": [None]}])
    with pytest.raises(InputError, match="image root"):
        list_interleaved_units([str(tmp_path / "d.jsonl")], InterleavedReadParams(image_root=str(tmp_path / "nope")))
    gz = tmp_path / "shards" / "images.tar"  # gzip data under a .tar name: no range reads
    gz.parent.mkdir()
    with tarfile.open(gz, "w:gz") as tf:
        tf.addfile(tarfile.TarInfo("a.jpg"), io.BytesIO(b""))
    with pytest.raises(InputError, match="compressed tar"):
        list_interleaved_units([str(tmp_path / "d.jsonl")], InterleavedReadParams(image_root=str(gz)))
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "shards" / "keys.parquet")
    with pytest.raises(InputError, match="key column"):
        root = str(tmp_path / "shards" / "*.parquet")
        list_interleaved_units([str(tmp_path / "d.jsonl")], InterleavedReadParams(image_root=root))


def test_normalise_url() -> None:
    assert normalise_url("HTTP://Example.COM:80/a/b/?q=1#frag") == "http://example.com/a/b?q=1"
    assert normalise_url("https://example.com:8443/") == "https://example.com:8443"
    assert normalise_url("https://example.com") == normalise_url("https://EXAMPLE.com/") == "https://example.com"
    assert normalise_url("") == "" == normalise_url("   ")
