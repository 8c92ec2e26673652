"""Readers: listing inputs into units, and reading every layout without ever losing or inventing a record."""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from webdataset import TarWriter

from mmcurate.schemas import CaptionSample, Question, Status
from mmcurate.stages.image_decode import DecodeParams, decode
from mmcurate.stages.question_io import QuestionReadParams, read_questions
from mmcurate.stages.readers import (
    InputError,
    ReadParams,
    Unit,
    content_id,
    hub_split,
    list_units,
    read_unit,
)

P = ReadParams()


def jpg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """Distinct, deterministic JPEG bytes per seed."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def wds_bytes(samples: list[dict[str, bytes | str]]) -> bytes:
    buf = io.BytesIO()
    with TarWriter(buf, encoder=False) as sink:
        for s in samples:
            sink.write({k: v.encode() if isinstance(v, str) and k != "__key__" else v for k, v in s.items()})
    return buf.getvalue()


def read_all(inputs: list[str], params: ReadParams = P) -> list[CaptionSample]:
    return [r for u in list_units(inputs, params) for r in read_unit(u, params)]


def put(uri: str, data: bytes) -> None:
    with fsspec.open(uri, "wb") as f:
        f.write(data)


@pytest.fixture
def mem() -> Iterator[str]:
    """A fresh memory:// root, removed afterwards (the memory filesystem is process-wide)."""
    root = f"memory://mmcurate-test-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def status(r: CaptionSample) -> tuple[str, str]:
    return r.fate.status.value, r.fate.reason


# ----------------------------------------------------------------------------------------------- listing


def test_list_units_local_folder_sorted_and_numbered(tmp_path: Path) -> None:
    """Containers become one unit each, in sorted order, numbered from 0; hidden files are ignored."""
    for name in ("b.tar", "a.tar", "c.parquet", "d.jsonl"):
        (tmp_path / name).write_bytes(b"")
    pq.write_table(pa.table({"jpg": [jpg(0)], "caption": ["x"]}), tmp_path / "c.parquet")
    (tmp_path / "d.jsonl").write_text('{"image": "x.jpg"}\n')
    (tmp_path / ".hidden.tar").write_bytes(b"")
    (tmp_path / "notes.md").write_text("not an input")
    units = list_units([str(tmp_path)], P)
    assert [u.index for u in units] == list(range(len(units)))
    assert [(u.kind, Path(u.uri).name) for u in units] == [
        ("jsonl", "d.jsonl"),
        ("parquet", "c.parquet"),
        ("wds", "a.tar"),
        ("wds", "b.tar"),
    ]


def test_list_units_brace_expansion_and_glob(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"shard-{i:03d}.tar").write_bytes(wds_bytes([{"__key__": "k", "jpg": jpg(i)}]))
    braces = list_units([f"{tmp_path}/shard-{{000..002}}.tar"], P)
    assert [Path(u.uri).name for u in braces] == ["shard-000.tar", "shard-001.tar", "shard-002.tar"]
    glob = list_units([f"{tmp_path}/shard-00[34].tar"], P)
    assert [Path(u.uri).name for u in glob] == ["shard-003.tar", "shard-004.tar"]
    star = list_units([f"{tmp_path}/*.tar"], P)
    assert len(star) == 5
    both = list_units([f"{tmp_path}/shard-{{000..001}}.tar", f"{tmp_path}/shard-001.tar"], P)
    assert [Path(u.uri).name for u in both] == ["shard-000.tar", "shard-001.tar"]  # named twice, read once


def test_list_units_memory_filesystem(mem: str) -> None:
    """Remote-style URIs keep their protocol, so workers can open them again."""
    put(f"{mem}/shards/00000.tar", wds_bytes([{"__key__": "a", "jpg": jpg(1), "txt": "one"}]))
    put(f"{mem}/shards/00001.tar", wds_bytes([{"__key__": "b", "jpg": jpg(2), "txt": "two"}]))
    for spec in (f"{mem}/shards", f"{mem}/shards/*.tar", f"{mem}/shards/0000{{0,1}}.tar"):
        units = list_units([spec], P)
        assert [u.kind for u in units] == ["wds", "wds"]
        assert all(u.uri.startswith("memory://") for u in units)
        assert [u.uri.rsplit("/", 1)[1] for u in units] == ["00000.tar", "00001.tar"]
    recs = read_all([f"{mem}/shards"])
    assert [(r.caption, r.source.unit) for r in recs] == [("one", 0), ("two", 1)]


@pytest.mark.parametrize("bad", ["missing.tar", "nope/", "shard-{0..1}.tar"])
def test_missing_input_is_an_input_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InputError, match="does not exist"):
        list_units([f"{tmp_path}/{bad}"], P)


def test_missing_memory_input_is_an_input_error(mem: str) -> None:
    with pytest.raises(InputError):
        list_units([f"{mem}/nothing-here.tar"], P)


def test_no_inputs_and_no_usable_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no input"):
        list_units([], P)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match="holds no"):
        list_units([str(tmp_path)], P)


def test_url_only_parquet_is_rejected_before_the_run(tmp_path: Path) -> None:
    """LAION metadata (URL + TEXT) has no pixels: fail at listing time with advice, not per row."""
    pq.write_table(
        pa.table({"URL": ["http://example.com/a.jpg"], "TEXT": ["a cat"], "WIDTH": [640], "HEIGHT": [480]}),
        tmp_path / "laion.parquet",
    )
    with pytest.raises(InputError, match="no image column") as err:
        list_units([str(tmp_path / "laion.parquet")], P)
    assert "URL" in str(err.value)
    assert "img2dataset" in str(err.value)
    with pytest.raises(InputError, match="'pixels' not found"):
        list_units([str(tmp_path / "laion.parquet")], ReadParams(image_column="pixels"))


def test_jsonl_is_split_into_line_ranges(tmp_path: Path) -> None:
    """Each line belongs to exactly one unit; together the units read every line once."""
    (tmp_path / "img.jpg").write_bytes(jpg(0))
    lines = [json.dumps({"image": "img.jpg", "caption": f"caption {i}"}) for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    params = ReadParams(jsonl_unit_lines=2)
    units = list_units([str(tmp_path / "d.jsonl")], params)
    assert [(u.start, u.stop) for u in units] == [(0, 2), (2, 4), (4, 5)]
    recs = [r for u in units for r in read_unit(u, params)]
    assert [r.caption for r in recs] == [f"caption {i}" for i in range(5)]
    assert [r.source.unit for r in recs] == [0, 0, 1, 1, 2]
    assert [r.source.member for r in recs] == [f"line{i + 1}" for i in range(5)]


def test_folder_units_are_slices_of_the_sorted_files(tmp_path: Path) -> None:
    for i in range(7):
        (tmp_path / f"{i:02d}.jpg").write_bytes(jpg(i))
    units = list_units([str(tmp_path)], ReadParams(folder_unit_size=3))
    assert [u.kind for u in units] == ["folder"] * 3
    assert [len(u.files) for u in units] == [3, 3, 1]
    assert [Path(f).name for u in units for f in u.files] == [f"{i:02d}.jpg" for i in range(7)]
    assert {u.uri for u in units} == {str(tmp_path)}


def test_images_beside_a_jsonl_are_not_read_twice(tmp_path: Path) -> None:
    """The images a jsonl points at are its payload, not a second folder corpus."""
    (tmp_path / "a.jpg").write_bytes(jpg(1))
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "a.jpg", "caption": "a thing"}) + "\n")
    units = list_units([str(tmp_path)], P)
    assert [u.kind for u in units] == ["jsonl"]


# ----------------------------------------------------------------------------------------------- webdataset


def test_wds_captions_from_txt_and_json_and_missing_images(mem: str) -> None:
    a, b, c = jpg(1), jpg(2), jpg(3)
    meta = {"caption": "  A cat on a mat.  ", "url": "http://example.com/b.jpg", "width": 64}
    put(
        f"{mem}/s.tar",
        wds_bytes(
            [
                {"__key__": "000", "jpg": a, "txt": "  A dog in the snow \n"},
                {"__key__": "001", "jpg": b, "json": json.dumps(meta)},
                {"__key__": "002", "txt": "a caption whose image went missing", "json": "{}"},
                {"__key__": "003", "png": c, "txt": "png too", "json": json.dumps({"similarity": 0.31})},
            ]
        ),
    )
    recs = read_all([f"{mem}/s.tar"])
    assert [r.source.member for r in recs] == ["000", "001", "002", "003"]
    assert [r.source.index for r in recs] == [0, 1, 2, 3]
    assert {r.source.uri for r in recs} == {f"memory:///{mem.split('://')[1]}/s.tar"}
    r0, r1, r2, r3 = recs
    assert (r0.caption, r0.image, r0.file_bytes, r0.id) == ("A dog in the snow", a, len(a), content_id(a, r0.caption))
    assert json.loads(r0.extra) == {}
    assert r1.caption == "A cat on a mat."
    assert json.loads(r1.extra) == {"url": "http://example.com/b.jpg", "width": 64}  # caption moved out
    assert r1.image == b
    assert status(r2) == ("quarantined", "missing_image")
    assert "txt" in r2.fate.error and "json" in r2.fate.error
    assert r2.image is None
    assert (r3.caption, r3.image, json.loads(r3.extra)) == ("png too", c, {"similarity": 0.31})
    assert all(status(r) == ("pending", "") for r in (r0, r1, r3))


def test_wds_unparseable_json_member_is_kept_as_a_note(mem: str) -> None:
    put(f"{mem}/s.tar", wds_bytes([{"__key__": "k", "jpg": jpg(4), "json": b"{not json", "txt": "ok caption"}]))
    (r,) = read_all([f"{mem}/s.tar"])
    assert status(r) == ("pending", "")
    assert r.caption == "ok caption"
    assert "json_error" in json.loads(r.extra)


def tar_cut_inside(data: bytes, member: str) -> int:
    """A byte offset in the middle of `member`'s data in tar `data`."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        info = tf.getmember(member)
        return info.offset_data + info.size // 2


def test_truncated_tar_yields_the_samples_before_the_cut_and_one_remainder(mem: str) -> None:
    """Cut inside sample 3's second member: samples 0-2 come out whole, the rest is one read_error record."""
    samples = [{"__key__": f"s{i:03d}", "jpg": jpg(i, (96, 96)), "txt": f"caption number {i}"} for i in range(6)]
    data = wds_bytes(samples)
    cut = tar_cut_inside(data, "s003.txt")
    put(f"{mem}/full.tar", data)
    put(f"{mem}/cut.tar", data[:cut])
    full = read_all([f"{mem}/full.tar"])
    part = read_all([f"{mem}/cut.tar"])
    assert len(full) == 6
    assert [(r.id, r.caption, r.source.member) for r in part[:3]] == [
        (r.id, r.caption, r.source.member) for r in full[:3]
    ]
    assert len(part) == 4
    rest = part[3]
    assert status(rest) == ("quarantined", "read_error")
    assert rest.source.index == 3
    assert rest.source.member == "<unread-remainder>"
    assert rest.fate.error.startswith("ReadError")
    # The error names the shard, never a memory address, so reruns write identical quarantine tables.
    assert rest.source.uri in rest.fate.error
    assert not re.search(r"0x[0-9a-fA-F]{6,}", rest.fate.error)
    assert read_all([f"{mem}/cut.tar"])[3].fate.error == rest.fate.error


def test_truncated_tar_inside_a_first_member_accounts_for_the_rest(mem: str) -> None:
    """A cut inside a sample's first member: what comes out is an exact prefix, then exactly one remainder.

    The group in progress when the stream broke cannot be known complete, so it may go into the remainder.
    """
    samples = [{"__key__": f"s{i:03d}", "jpg": jpg(i, (96, 96)), "txt": f"caption number {i}"} for i in range(6)]
    data = wds_bytes(samples)
    put(f"{mem}/full.tar", data)
    put(f"{mem}/cut.tar", data[: tar_cut_inside(data, "s004.jpg")])
    full = read_all([f"{mem}/full.tar"])
    part = read_all([f"{mem}/cut.tar"])
    read, rest = part[:-1], part[-1]
    assert 3 <= len(read) <= 4
    assert [r.id for r in read] == [r.id for r in full[: len(read)]]
    assert all(status(r) == ("pending", "") for r in read)
    assert status(rest) == ("quarantined", "read_error")
    assert rest.source.index == len(read)


def test_unreadable_unit_becomes_one_quarantined_record(tmp_path: Path) -> None:
    """read_unit never raises: a shard that vanished after listing is still accounted for."""
    unit = Unit(index=4, kind="wds", uri=str(tmp_path / "gone.tar"))
    (r,) = list(read_unit(unit, P))
    assert status(r) == ("quarantined", "read_error")
    assert (r.source.unit, r.source.index) == (4, 0)


def test_garbage_tar_becomes_one_quarantined_record(tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar file at all" * 40)
    recs = read_all([str(tmp_path / "junk.tar")])
    assert [status(r) for r in recs] == [("quarantined", "read_error")]


# ----------------------------------------------------------------------------------------------- parquet


def test_parquet_with_image_bytes(tmp_path: Path) -> None:
    imgs = [jpg(i) for i in range(3)]
    table = pa.table(
        {
            "key": ["k0", "k1", None],
            "jpg": imgs,
            "caption": ["<image> first caption ", "second", None],
            "url": ["u0", "u1", "u2"],
        }
    )
    pq.write_table(table, tmp_path / "x.parquet")
    recs = read_all([str(tmp_path / "x.parquet")])
    assert [r.source.member for r in recs] == ["k0", "k1", "row2"]
    assert [r.source.index for r in recs] == [0, 1, 2]
    assert [r.caption for r in recs] == ["first caption", "second", ""]
    assert [r.image for r in recs] == imgs
    assert [json.loads(r.extra)["url"] for r in recs] == ["u0", "u1", "u2"]
    assert all("jpg" not in json.loads(r.extra) for r in recs)
    assert [r.id for r in recs] == [content_id(i, r.caption) for i, r in zip(imgs, recs, strict=True)]


def test_parquet_with_relative_paths(tmp_path: Path) -> None:
    """Relative paths resolve against the parquet's folder, or against read.image_root when set."""
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "imgs").mkdir()
    (tmp_path / "elsewhere" / "imgs").mkdir(parents=True)
    a, b = jpg(10), jpg(11)
    (tmp_path / "meta" / "imgs" / "a.jpg").write_bytes(a)
    (tmp_path / "elsewhere" / "imgs" / "a.jpg").write_bytes(b)
    pq.write_table(
        pa.table({"image_path": ["imgs/a.jpg", "imgs/missing.jpg"], "text": ["a photo", "lost"]}),
        tmp_path / "meta" / "x.parquet",
    )
    recs = read_all([str(tmp_path / "meta" / "x.parquet")])
    assert (recs[0].image, recs[0].caption) == (a, "a photo")
    assert status(recs[1]) == ("quarantined", "missing_image")
    assert "missing.jpg" in recs[1].fate.error
    rooted = read_all([str(tmp_path / "meta" / "x.parquet")], ReadParams(image_root=str(tmp_path / "elsewhere")))
    assert rooted[0].image == b


def test_parquet_with_absolute_paths(tmp_path: Path) -> None:
    """An absolute path leaves the input's root: refused unless read.allow_outside_root."""
    (tmp_path / "img.jpg").write_bytes(jpg(12))
    (tmp_path / "m").mkdir()
    pq.write_table(pa.table({"path": [str(tmp_path / "img.jpg")], "caption": ["x y"]}), tmp_path / "m" / "p.parquet")
    (refused,) = read_all([str(tmp_path / "m" / "p.parquet")])
    assert status(refused) == ("quarantined", "outside_root") and "allow_outside_root" in refused.fate.error
    (r,) = read_all([str(tmp_path / "m" / "p.parquet")], ReadParams(allow_outside_root=True))
    assert r.image == jpg(12)


def test_parquet_hf_image_struct(mem: str) -> None:
    """HF datasets store images as {bytes, path}: bytes win, a path-only row is read from the path."""
    a, b = jpg(20), jpg(21)
    put(f"{mem}/ds/train/b.jpg", b)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array(
        [{"bytes": a, "path": "a.jpg"}, {"bytes": None, "path": "b.jpg"}, {"bytes": None, "path": None}], type=struct
    )
    buf = io.BytesIO()
    pq.write_table(pa.table({"image": images, "text": ["one", "two", "three"]}), buf)
    put(f"{mem}/ds/train/data-00000.parquet", buf.getvalue())
    recs = read_all([f"{mem}/ds/train/data-00000.parquet"])
    assert [r.image for r in recs[:2]] == [a, b]
    assert [r.caption for r in recs[:2]] == ["one", "two"]
    assert status(recs[2]) == ("quarantined", "missing_image")


def test_parquet_explicit_columns(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"pixels": [jpg(30)], "alt": ["explicit caption"], "caption": ["the other one"]}),
        tmp_path / "x.parquet",
    )
    (r,) = read_all([str(tmp_path / "x.parquet")], ReadParams(image_column="pixels", caption_column="alt"))
    assert (r.image, r.caption) == (jpg(30), "explicit caption")
    assert json.loads(r.extra) == {"caption": "the other one"}


# ----------------------------------------------------------------------------------------------- jsonl


def llava_line(image: str, answer: str, question: str = "<image>\nDescribe the image briefly.") -> str:
    return json.dumps(
        {
            "id": image.split(".")[0],
            "image": image,
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
        }
    )


def test_jsonl_llava_conversations(tmp_path: Path) -> None:
    (tmp_path / "coco").mkdir()
    a = jpg(40)
    (tmp_path / "coco" / "0001.jpg").write_bytes(a)
    lines = [
        llava_line("coco/0001.jpg", "A man riding a bicycle down a city street."),
        "{broken json",
        llava_line("coco/0002.jpg", "This image is not on disk."),
        "",
        "[1, 2, 3]",
        json.dumps({"images": ["coco/0001.jpg"], "text": "<__dj__image> a man on a bike <|__dj__eoc|>"}),
    ]
    (tmp_path / "llava.jsonl").write_text("\n".join(lines) + "\n")
    recs = read_all([str(tmp_path / "llava.jsonl")])
    assert [r.source.member for r in recs] == [f"line{i + 1}" for i in range(6)]
    assert [r.source.index for r in recs] == list(range(6))
    first = recs[0]
    assert first.caption == "A man riding a bicycle down a city street."
    assert first.image == a
    assert first.source.uri == str(tmp_path / "coco" / "0001.jpg")
    extra = json.loads(first.extra)
    assert extra["prompt"] == "Describe the image briefly."  # <image> token stripped
    assert extra["id"] == "coco/0001"
    assert [status(r) for r in recs[1:5]] == [
        ("quarantined", "bad_json"),
        ("quarantined", "missing_image"),
        ("quarantined", "bad_json"),
        ("quarantined", "bad_json"),
    ]
    assert recs[1].source.uri == str(tmp_path / "llava.jsonl")
    dj = recs[5]
    assert (dj.caption, dj.image) == ("a man on a bike", a)


def test_jsonl_on_memory_with_openai_roles(mem: str) -> None:
    put(f"{mem}/imgs/x.jpg", jpg(41))
    row = {
        "image": "imgs/x.jpg",
        "conversations": [
            {"role": "user", "content": "What is shown? <image>"},
            {"role": "assistant", "content": "Two red apples on a table."},
        ],
    }
    put(f"{mem}/d.jsonl", (json.dumps(row) + "\n").encode())
    (r,) = read_all([f"{mem}/d.jsonl"])
    assert r.caption == "Two red apples on a table."
    assert json.loads(r.extra)["prompt"] == "What is shown?"
    assert r.image == jpg(41)


def test_jsonl_text_only_rows_with_an_explicit_image_column(tmp_path: Path) -> None:
    """LLaVA mixes hold text-only rows: with read.image_column set they are quarantined one by one.

    They must not end the unit early (which would fold every later line into one unread remainder).
    """
    (tmp_path / "a.jpg").write_bytes(jpg(42))
    lines = [
        llava_line("a.jpg", "A first caption here."),
        json.dumps({"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}),
        llava_line("a.jpg", "A third caption here."),
    ]
    (tmp_path / "mix.jsonl").write_text("\n".join(lines) + "\n")
    recs = read_all([str(tmp_path / "mix.jsonl")], ReadParams(image_column="image"))
    assert [status(r) for r in recs] == [
        ("pending", ""),
        ("quarantined", "missing_image"),
        ("pending", ""),
    ]
    assert recs[2].caption == "A third caption here."
    assert "'image'" in recs[1].fate.error  # says which key the row lacks


def test_lone_surrogates_from_json_escapes_do_not_break_the_ledger(tmp_path: Path) -> None:
    """'\\ud83d' without its pair is legal JSON but not encodable UTF-8; the record must still be writable."""
    (tmp_path / "a.jpg").write_bytes(jpg(43))
    line = '{"image": "a.jpg", "caption": "a smiling face \\ud83d here", "note": "half \\udc00 pair"}'
    (tmp_path / "d.jsonl").write_text(line + "\n")
    (r,) = read_all([str(tmp_path / "d.jsonl")])
    assert status(r) == ("pending", "")
    r.caption.encode("utf-8")
    r.extra.encode("utf-8")
    assert r.caption.startswith("a smiling face ") and r.caption.endswith(" here")
    assert json.loads(r.extra)["note"].startswith("half ")
    CaptionSample.to_table([r])  # the ledger write must not raise


def test_wds_member_names_that_are_not_utf8(tmp_path: Path) -> None:
    """A tar made on a Latin-1 system has undecodable key bytes; the ledger must still be writable."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        for ext, data in (("jpg", jpg(44)), ("txt", b"caf\xe9 au lait")):
            info = tarfile.TarInfo(f"caf\xe9.{ext}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (tmp_path / "latin1.tar").write_bytes(buf.getvalue())
    (r,) = read_all([str(tmp_path / "latin1.tar")])
    assert status(r) == ("pending", "")
    assert r.image == jpg(44)
    r.source.member.encode("utf-8")
    assert r.source.member.startswith("caf")
    CaptionSample.to_table([r])


# ----------------------------------------------------------------------------------------------- folders


def test_folder_with_sidecar_captions(mem: str) -> None:
    a, b, c = jpg(50), jpg(51), jpg(52)
    put(f"{mem}/pics/a.jpg", a)
    put(f"{mem}/pics/a.txt", b"  A sleeping cat.\n")
    put(f"{mem}/pics/b.png", b)
    put(f"{mem}/pics/sub/c.jpeg", c)
    put(f"{mem}/pics/sub/c.txt", "Caf\u00e9 terrace at night".encode())
    recs = read_all([f"{mem}/pics"])
    assert [r.source.member for r in recs] == ["a.jpg", "b.png", "sub/c.jpeg"]
    assert [r.caption for r in recs] == ["A sleeping cat.", "", "Caf\u00e9 terrace at night"]
    assert [r.image for r in recs] == [a, b, c]
    assert [r.source.index for r in recs] == [0, 1, 2]
    assert all(r.source.uri.endswith(r.source.member) for r in recs)
    assert all(status(r) == ("pending", "") for r in recs)


def test_folder_file_that_vanished_is_quarantined(tmp_path: Path) -> None:
    (tmp_path / "here.jpg").write_bytes(jpg(53))
    unit = Unit(0, "folder", str(tmp_path), files=(str(tmp_path / "gone.jpg"), str(tmp_path / "here.jpg")))
    recs = list(read_unit(unit, P))
    assert [status(r) for r in recs] == [("quarantined", "read_error"), ("pending", "")]
    assert recs[0].source.member == "gone.jpg"


# ----------------------------------------------------------------------------------------------- ids


def test_ids_are_content_hashes_across_layouts(tmp_path: Path, mem: str) -> None:
    """The same image and caption get the same id whatever the layout or place; a different caption does not."""
    img, caption = jpg(60), "A lighthouse on a rocky coast."
    put(f"{mem}/a.tar", wds_bytes([{"__key__": "x", "jpg": img, "txt": caption}]))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "p.jpg").write_bytes(img)
    (tmp_path / "folder" / "p.txt").write_text(caption)
    pq.write_table(pa.table({"jpg": [img, img], "caption": [caption, caption + "!"]}), tmp_path / "t.parquet")
    ids = [r.id for r in read_all([f"{mem}/a.tar"])]
    ids += [r.id for r in read_all([str(tmp_path / "folder")])]
    pq_ids = [r.id for r in read_all([str(tmp_path / "t.parquet")])]
    assert ids[0] == ids[1] == pq_ids[0] == content_id(img, caption)
    assert pq_ids[1] != pq_ids[0]
    assert re.fullmatch(r"[0-9a-f]{32}", ids[0])
    assert content_id(b"ab", "c") != content_id(b"a", "bc")  # the separator keeps the boundary


def test_quarantined_ids_are_distinct_per_place(mem: str) -> None:
    put(f"{mem}/s.tar", wds_bytes([{"__key__": f"k{i}", "txt": "no image"} for i in range(3)]))
    recs = read_all([f"{mem}/s.tar"])
    assert len({r.id for r in recs}) == 3
    assert len({r.uid for r in recs}) == 3


# ----------------------------------------------------------------------------------------------- peer data


def tar_groups(path: Path) -> list[tuple[str, set[str]]]:
    """Member groups the webdataset way (key = path up to the first dot of the file name), in tar order."""
    groups: list[tuple[str, set[str]]] = []
    with tarfile.open(path) as tf:
        for m in tf:
            if not m.isfile():
                continue
            folder, _, name = m.name.rpartition("/")
            stem, _, ext = name.partition(".")
            key = f"{folder}/{stem}" if folder else stem
            if not groups or groups[-1][0] != key:
                groups.append((key, set()))
            groups[-1][1].add(ext.lower())
    return groups


@pytest.mark.parametrize("name", ["compressed.tar", "mpdata.tar", "tendata.tar", "testgz.tar", "sample.tgz"])
def test_webdataset_testdata_shards(peer_data: Path, name: str) -> None:
    """webdataset's own test shards: one record per member group, image-less groups quarantined."""
    path = peer_data / "webdataset" / "testdata" / name
    groups = tar_groups(path)
    recs = read_all([str(path)])
    assert len(recs) == len(groups)
    assert [r.source.member for r in recs] == [k for k, _ in groups]
    for r, (_, exts) in zip(recs, groups, strict=True):
        has_image = bool(exts & {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
        assert status(r) == (("pending", "") if has_image else ("quarantined", "missing_image"))


def test_webdataset_sample_tgz_images_decode(peer_data: Path) -> None:
    """The PNGs in sample.tgz come out byte-exact and decode at the size Pillow reads."""
    path = peer_data / "webdataset" / "testdata" / "sample.tgz"
    with tarfile.open(path) as tf:
        pngs = {m.name[: -len(".png")]: tf.extractfile(m).read() for m in tf if m.name.endswith(".png")}  # type: ignore[union-attr]
    recs = read_all([str(path)])
    assert pngs
    assert {r.source.member: r.image for r in recs} == pngs
    for r in recs[:10]:
        assert r.image is not None
        d = decode(r.image, DecodeParams())
        assert (d.width, d.height) == Image.open(io.BytesIO(r.image)).size


def test_nemo_curator_shard(peer_data: Path) -> None:
    path = peer_data / "nemo_curator" / "image_data_00000_old.tar"
    with tarfile.open(path) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf}  # type: ignore[union-attr]
    (r,) = read_all([str(path)])
    caption = members["0.txt"].decode().strip()
    assert caption
    assert r.caption == caption
    assert r.image == members["0.jpg"]
    assert r.id == content_id(members["0.jpg"], caption)
    assert json.loads(r.extra) == json.loads(members["0.json"])
    assert r.source.member == "0"


def test_data_juicer_demo_folder_reads_every_image(peer_data: Path) -> None:
    """A real folder of images without sidecars: every image read once, byte-exact, empty captions."""
    folder = peer_data / "data_juicer" / "tests_ops_data"
    images = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    recs = read_all([f"{folder}/*.jpg", f"{folder}/*.png"])
    assert sorted(r.source.uri for r in recs) == sorted(str(p) for p in images)
    by_uri = {r.source.uri: r for r in recs}
    for p in images:
        assert by_uri[str(p)].image == p.read_bytes()
        assert by_uri[str(p)].caption == ""


def test_readers_never_invent_records(mem: str) -> None:
    """Total records read equals total member groups, whatever mix of good and bad groups."""
    samples: list[dict[str, bytes | str]] = []
    for i in range(20):
        s: dict[str, bytes | str] = {"__key__": f"{i:04d}"}
        if i % 3:
            s["jpg"] = jpg(i)
        if i % 2:
            s["txt"] = f"caption {i}"
        if i % 5 == 0:
            s["json"] = json.dumps({"i": i})
        samples.append(s)
    put(f"{mem}/mix.tar", wds_bytes(samples))
    groups = [s for s in samples if len(s) > 1]  # a key with no members leaves nothing in the tar
    recs = read_all([f"{mem}/mix.tar"])
    assert [r.source.member for r in recs] == [s["__key__"] for s in groups]
    assert [r.fate.status is Status.QUARANTINED for r in recs] == ["jpg" not in s for s in groups]


# ------------------------------------------------------------------ chat rows (OpenAI, LLaMA-Factory)


def chat_line(messages: object, **more: object) -> str:
    return json.dumps({"messages": messages, **more})


def user(content: object) -> dict:
    return {"role": "user", "content": content}


def assistant(content: object) -> dict:
    return {"role": "assistant", "content": content}


def data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def test_messages_rows_caption_is_the_first_assistant_turn(tmp_path: Path) -> None:
    """OpenAI / LLaMA-Factory rows: caption = first assistant turn, image = the row's one image (from
    `images`, or inline in an image_url part); 2+ images drop the row, a malformed chat quarantines it."""
    (tmp_path / "img").mkdir()
    imgs = [jpg(70 + i) for i in range(3)]
    for i, data in enumerate(imgs):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(data)
    parts = [{"type": "image"}, {"type": "text", "text": "What is this?"}]
    lines = [
        chat_line(
            [
                {"role": "system", "content": "You are a helpful assistant."},
                user("<image>Describe the picture."),
                assistant("A red bus on a street."),
            ],
            images=["img/0.jpg"],
        ),
        chat_line(
            [
                user(
                    [
                        {"type": "image_url", "image_url": {"url": data_url(imgs[1])}},
                        {"type": "text", "text": "Describe it."},
                    ]
                ),
                assistant([{"type": "text", "text": "A green field under clouds."}]),
            ]
        ),
        chat_line(
            [user(parts), assistant("A blue door."), user("And the wall?"), assistant("White brick.")],
            images=["img/2.jpg"],
        ),
        chat_line(
            [user("<image><image>Compare them."), assistant("The left one is brighter.")],
            images=["img/0.jpg", "img/1.jpg"],
        ),
        chat_line("not a list of turns", images=["img/0.jpg"]),
        chat_line([user("<image>Describe the picture.")], images=["img/0.jpg"]),
        chat_line([user("<image>Describe."), assistant(5)], images=["img/0.jpg"]),
        chat_line(
            [user([{"type": "video"}, {"type": "text", "text": "What happens?"}]), assistant("A jump.")],
            images=["img/0.jpg"],
        ),
        chat_line(["a bare string turn"], images=["img/0.jpg"]),
    ]
    (tmp_path / "chat.jsonl").write_text("\n".join(lines) + "\n")
    recs = read_all([str(tmp_path / "chat.jsonl")])
    assert len(recs) == len(lines)  # every line ends as a record
    assert [status(r) for r in recs] == [
        ("pending", ""),
        ("pending", ""),
        ("pending", ""),
        ("dropped", "multi_image"),
        ("quarantined", "bad_row"),
        ("quarantined", "bad_row"),
        ("quarantined", "bad_row"),
        ("quarantined", "bad_row"),
        ("quarantined", "bad_row"),
    ]
    first, inline, multi_turn = recs[:3]
    assert (first.caption, first.image, first.source.uri) == (
        "A red bus on a street.",
        imgs[0],
        str(tmp_path / "img" / "0.jpg"),
    )
    assert json.loads(first.extra) == {"prompt": "Describe the picture."}  # the chat itself is read out
    assert (inline.caption, inline.image) == ("A green field under clouds.", imgs[1])
    assert inline.source.uri == str(tmp_path / "chat.jsonl")  # the image came from the line itself
    assert "base64" not in inline.extra  # the inline image is not copied into the ledger
    assert (multi_turn.caption, multi_turn.image) == ("A blue door.", imgs[2])
    assert json.loads(multi_turn.extra)["prompt"] == "What is this?"
    errors = [r.fate.error for r in recs[3:]]
    assert "2 images" in errors[0]
    assert "not a list of turns" in errors[1]
    assert "no assistant turn" in errors[2]
    assert "content is a int" in errors[3]
    assert "'video'" in errors[4]
    assert "not a turn object" in errors[5]


def test_sharegpt_conversations_with_several_images_are_dropped(tmp_path: Path) -> None:
    """The rule is the layout's, not the key's: a LLaVA row of two images is no caption pair either."""
    (tmp_path / "a.jpg").write_bytes(jpg(80))
    (tmp_path / "b.jpg").write_bytes(jpg(81))
    row = {
        "image": ["a.jpg", "b.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nDiff?"},
            {"from": "gpt", "value": "Only colour."},
        ],
    }
    (tmp_path / "d.jsonl").write_text(json.dumps(row) + "\n")
    (r,) = read_all([str(tmp_path / "d.jsonl")])
    assert status(r) == ("dropped", "multi_image")


# ------------------------------------------------------------------------- Hugging Face Hub folders


def hf_parquet(path: Path, captions: list[str], seed: int) -> list[bytes]:
    """A parquet file as `datasets` writes one: an `Image` feature ({bytes, path}) and a text column."""
    import datasets

    images = [jpg(seed + i) for i in range(len(captions))]
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": f"{seed + i}.jpg"} for i, b in enumerate(images)], "text": captions}
    ).cast_column("image", datasets.Image())
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return images


def hub_folder(root: Path) -> dict[str, list[bytes]]:
    """The layout `push_to_hub` leaves: data/{split}-NNNNN-of-NNNNN.parquet, a README.md card, .gitattributes."""
    train = hf_parquet(root / "data" / "train-00000-of-00002.parquet", ["a red bus", "a green field"], 100)
    train += hf_parquet(root / "data" / "train-00001-of-00002.parquet", ["a blue door"], 110)
    test = hf_parquet(root / "data" / "test-00000-of-00001.parquet", ["a held-out cat"], 120)
    (root / "README.md").write_text("---\nconfigs:\n- config_name: default\n---\n# a dataset card\n")
    (root / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    return {"train": train, "test": test}


def test_hugging_face_hub_folder_reads_the_train_split(tmp_path: Path) -> None:
    """Default read.split = train: the test split, the card and .gitattributes are counted, not read."""
    images = hub_folder(tmp_path / "ds")
    units = list_units([str(tmp_path / "ds")], P)
    assert [Path(u.uri).name for u in units] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert sorted(Path(f).name for f in units[0].ignored) == [
        ".gitattributes",
        "README.md",
        "test-00000-of-00001.parquet",
    ]
    recs = [r for u in units for r in read_unit(u, P)]
    assert [status(r) for r in recs] == [("pending", "")] * 3
    assert [r.image for r in recs] == images["train"]
    assert [r.caption for r in recs] == ["a red bus", "a green field", "a blue door"]
    assert all(json.loads(r.extra) == {} for r in recs)  # the image struct is not dumped into extra
    test = read_all([str(tmp_path / "ds")], ReadParams(split="test"))
    assert [r.caption for r in test] == ["a held-out cat"] and test[0].image == images["test"][0]
    assert len(read_all([str(tmp_path / "ds")], ReadParams(split="all"))) == 4
    with pytest.raises(InputError, match=r"no file of split 'validation'.*\['test', 'train'\]"):
        list_units([str(tmp_path / "ds")], ReadParams(split="validation"))
    named = tmp_path / "ds" / "data" / "test-00000-of-00001.parquet"
    assert [r.caption for r in read_all([str(named)])] == ["a held-out cat"]  # a file named on its own is read


def test_hub_split_names_the_splits_datasets_finds(tmp_path: Path) -> None:
    """`hub_split` agrees with Hugging Face's own split inference on each Hub layout, and a folder
    whose names hold no split keyword (img2dataset's 00000.parquet) has none: read whatever the split."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    layouts = {
        "sharded": [
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/test-00000-of-00001.parquet",
        ],
        "split_dirs": ["train/0000.parquet", "validation/0000.parquet", "test/0000.parquet"],
        "config_split_dirs": ["default/train/0000.parquet", "default/val/0000.parquet"],
        "split_files": ["train.jsonl", "dev.jsonl", "test-part1.parquet"],
        "plain": ["00000.parquet", "00001.parquet"],
    }
    for name, files in layouts.items():
        root = tmp_path / name
        for rel in files:
            hf_parquet(root / rel, ["one caption"], 130)
        (root / "README.md").write_text("# card\n")
        found = DataFilesDict.from_patterns(get_data_patterns(str(root)), base_path=str(root))
        theirs = {Path(f).relative_to(root).as_posix(): split for split, fs in found.items() for f in fs}
        ours = {rel: hub_split(rel) or "train" for rel in files}  # no split: datasets calls it all train
        assert ours == theirs, name
    units = list_units([str(tmp_path / "split_dirs")], ReadParams(split="validation"))
    assert [u.uri.split("/")[-2:] for u in units] == [["validation", "0000.parquet"]]
    assert len(list_units([str(tmp_path / "plain")], ReadParams(split="test"))) == 2


# ------------------------------------------------------------------------------ the question corpus


def read_questions_of(inputs: list[str], params: QuestionReadParams | None = None) -> list[Question]:
    params = params or QuestionReadParams()
    units = list_units(
        inputs, ReadParams(jsonl_unit_lines=params.jsonl_unit_lines, split=params.split), media_columns=False
    )
    return [q for u in units for q in read_questions(u, params)]


def test_question_rows_from_messages(tmp_path: Path) -> None:
    """Question = first user turn without `<image>` markers, answer = first assistant turn, images
    from `images` resolved against the jsonl's folder; a multi-turn row keeps its first turn's images."""
    (tmp_path / "q" / "img").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "q" / "img" / name).write_bytes(jpg(len(name) + ord(name[0])))
    img = str(tmp_path / "q" / "img")
    lines = [
        chat_line([user("<image>How many buses are there?"), assistant("2")], images=["img/a.jpg"], domain="count"),
        chat_line(
            [
                {"role": "system", "content": "Answer briefly."},
                user([{"type": "image"}, {"type": "text", "text": "What colour is the door?"}]),
                assistant([{"type": "text", "text": "blue"}]),
            ],
            images=["img/b.jpg"],
        ),
        chat_line(
            [user("<image>What is left?"), assistant("a cat"), user("<image>And right?"), assistant("a dog")],
            images=["img/a.jpg", "img/c.jpg"],
        ),
        chat_line(
            [user("<image><image>Q?"), assistant("x"), user("more?"), assistant("y")],
            images=["img/a.jpg", "img/b.jpg", "img/c.jpg"],
        ),
        chat_line({"role": "user"}, images=["img/a.jpg"]),
        chat_line([user("<image>An unanswered question?")], images=["img/a.jpg"]),
        chat_line([user(["just a string part"]), assistant("x")]),
        chat_line(
            [
                user(
                    [
                        {"type": "image_url", "image_url": {"url": data_url(jpg(90))}},
                        {"type": "text", "text": "What is shown?"},
                    ]
                ),
                assistant("noise"),
            ]
        ),
        json.dumps(
            {
                "question": "Which is bigger?",
                "answer": "B",
                "answer_type": "choice",
                "choices": ["x", "y"],
                "images": ["img/c.jpg"],
            }
        ),  # the named keys read as before
    ]
    (tmp_path / "q" / "q.jsonl").write_text("\n".join(lines) + "\n")
    qs = read_questions_of([str(tmp_path / "q")])
    assert len(qs) == len(lines)
    assert [(q.fate.status.value, q.fate.reason) for q in qs] == [
        ("pending", ""),
        ("pending", ""),
        ("pending", ""),
        ("quarantined", "bad_question"),
        ("quarantined", "bad_row"),
        ("quarantined", "bad_question"),
        ("quarantined", "bad_row"),
        ("quarantined", "embedded_image"),
        ("pending", ""),
    ]
    one, two, multi = qs[:3]
    assert (one.question, one.answer, one.images, one.domain) == (
        "How many buses are there?",
        "2",
        [f"{img}/a.jpg"],
        "count",
    )
    assert (two.question, two.answer, two.images) == ("What colour is the door?", "blue", [f"{img}/b.jpg"])
    assert (multi.question, multi.answer, multi.images) == ("What is left?", "a cat", [f"{img}/a.jpg"])
    assert "messages" not in json.loads(one.extra)
    assert "markers do not match" in qs[3].fate.error
    assert "no reference answer" in qs[5].fate.error
    assert "read.embedded_images" in qs[7].fate.error
    assert qs[8].images == [f"{img}/c.jpg"] and qs[8].choices == ["x", "y"]


def test_question_hub_folder_with_image_bytes(tmp_path: Path) -> None:
    """A Hub folder whose `Image` column holds bytes: quarantined as `embedded_image` until
    read.embedded_images names a folder; then each image is written there once, by content hash."""
    import datasets

    images = [jpg(140), jpg(141), jpg(140)]  # the third row shows the first row's image again
    ds = datasets.Dataset.from_dict(
        {
            "question": ["What is it?", "How many?", "Which colour?"],
            "answer": ["a cat", "3", "red"],
            "image": [{"bytes": b, "path": "x.jpg"} for b in images],
        }
    ).cast_column("image", datasets.Image())
    (tmp_path / "ds" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "ds" / "data" / "train-00000-of-00001.parquet"))
    ds.select([0]).to_parquet(str(tmp_path / "ds" / "data" / "test-00000-of-00001.parquet"))
    (tmp_path / "ds" / "README.md").write_text("# card\n")
    refused = read_questions_of([str(tmp_path / "ds")])
    assert [q.fate.reason for q in refused] == ["embedded_image"] * 3  # the train split only
    params = QuestionReadParams(embedded_images=str(tmp_path / "extracted"))
    qs = read_questions_of([str(tmp_path / "ds")], params)
    assert [q.fate.status.value for q in qs] == ["pending"] * 3
    assert [Path(q.images[0]).read_bytes() for q in qs] == images
    assert qs[0].images == qs[2].images and qs[0].images[0].endswith(".jpg")
    assert sorted(p.name for p in (tmp_path / "extracted").iterdir()) == sorted({Path(q.images[0]).name for q in qs})
    again = read_questions_of([str(tmp_path / "ds")], params)
    assert [q.id for q in again] == [q.id for q in qs]  # a rerun finds the same files: same ids
    assert "image" not in json.loads(qs[0].extra)


def test_question_hub_folder_with_image_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`datasets` keeps an Image cast from paths as {bytes: None, path}: read as the path, against the file's folder."""
    import datasets

    data = tmp_path / "ds" / "data"
    (data / "img").mkdir(parents=True)
    (data / "img" / "a.jpg").write_bytes(jpg(150))
    monkeypatch.chdir(data)  # datasets opens the relative path to size it, as where such a dataset is built
    ds = datasets.Dataset.from_dict({"question": ["What is it?"], "answer": ["a cat"], "image": ["img/a.jpg"]})
    ds.cast_column("image", datasets.Image()).to_parquet(str(data / "train-00000-of-00001.parquet"))
    assert pq.read_table(data / "train-00000-of-00001.parquet").column("image").to_pylist() == [
        {"bytes": None, "path": "img/a.jpg"}
    ]
    (q,) = read_questions_of([str(tmp_path / "ds")])
    assert q.fate.status.value == "pending" and q.images == [str(data / "img" / "a.jpg")]
