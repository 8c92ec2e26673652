"""Writers: webdataset shards readable by webdataset itself, matching parquet indexes, atomic and reproducible."""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image
from pydantic import ValidationError

from mmcurate.schemas import CaptionSample, Fate, Fields, Source, Status
from mmcurate.stages.writers import ShardParams, atomic_write, json_bytes, write_shards, write_table

FIELDS = Fields(("width", "lang_prob", "clip_score"), ("lang",))
"""What a run would declare: `clip_score` is declared but absent from the samples (NaN in their JSON)."""


def write_unit_shards(samples, unit, out_root, params):
    return write_shards(samples, unit, out_root, params, FIELDS)


def jpg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def kept(i: int, unit: int = 3, size: tuple[int, int] = (64, 48)) -> CaptionSample:
    """A kept sample as it reaches the writer: output image bytes, scores, labels, extra metadata."""
    image = jpg(i, size)
    return CaptionSample(
        id=hashlib.blake2b(image, digest_size=16).hexdigest(),
        source=Source(uri=f"memory:///in/{unit}.tar", unit=unit, member=f"{i:06d}", index=i),
        caption=f"Caption number {i}: a caf\u00e9 on a corner \u2014 \u00e9t\u00e9",
        extra=json.dumps({"url": f"http://example.com/{i}.jpg", "similarity": 0.3 + i / 100}),
        file_bytes=len(image) * 2,
        width=size[0] * 2,
        height=size[1] * 2,
        mode="RGB",
        image_format="jpeg",
        pixel_hash=hashlib.sha256(image).hexdigest(),
        phash=f"{i:016x}",
        out_width=size[0],
        out_height=size[1],
        out_ext="jpg",
        scores={"width": float(size[0] * 2), "lang_prob": 0.9},
        labels={"lang": "en"},
        fate=Fate(Status.KEPT),
        image=image,
    )


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def mem() -> Iterator[str]:
    root = f"memory://mmcurate-writers-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


# ----------------------------------------------------------------------------------------------- shards


def test_shards_are_readable_by_webdataset(tmp_path: Path) -> None:
    samples = [kept(i) for i in range(4)]
    (info,) = write_unit_shards(samples, unit=3, out_root=str(tmp_path), params=ShardParams())
    assert info.path == "shards/part-00003-0000.tar"
    assert info.samples == 4
    ds = wds.WebDataset(str(tmp_path / info.path), shardshuffle=False)
    got = list(ds)
    assert [g["__key__"] for g in got] == [s.id for s in samples]
    for g, s in zip(got, samples, strict=True):
        assert g["jpg"] == s.image
        assert g["txt"].decode("utf-8") == s.caption
        meta = json.loads(g["json"])
        assert json.dumps(meta, sort_keys=True) == json.dumps(s.sample_json(FIELDS), sort_keys=True)
        assert {k: v for k, v in meta["scores"].items() if k != "clip_score"} == s.scores
        assert math.isnan(meta["scores"]["clip_score"])  # declared, not computed: NaN keeps the type
        assert meta["labels"] == s.labels
        assert meta["extra"] == s.extra  # a JSON string: the same type in every sample
        assert meta["errors"] == ""
        assert meta["source"]["member"] == s.source.member
        assert "fate" not in meta
        assert Image.open(io.BytesIO(g["jpg"])).size == (s.out_width, s.out_height)


def test_tar_members_are_fixed_and_ordered(tmp_path: Path) -> None:
    """key.jpg/.json/.txt per sample, in input order, with fixed metadata (reproducible bytes)."""
    samples = [kept(i) for i in range(3)]
    (info,) = write_unit_shards(samples, unit=0, out_root=str(tmp_path), params=ShardParams())
    with tarfile.open(tmp_path / info.path) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == [f"{s.id}.{ext}" for s in samples for ext in ("jpg", "json", "txt")]
    assert {m.mtime for m in members} == {0}
    assert all(m.isreg() for m in members)


def test_index_rows_match_the_shard(tmp_path: Path) -> None:
    samples = [kept(i) for i in range(5)]
    (info,) = write_unit_shards(samples, unit=7, out_root=str(tmp_path), params=ShardParams())
    assert info.index.path == "index/part-00007-0000.parquet"
    table = pq.read_table(tmp_path / info.index.path)
    assert table.column_names[:2] == ["key", "shard"]
    assert set(CaptionSample.arrow_schema(FIELDS).names) <= set(table.column_names)
    assert table.schema.field("scores").type == pa.struct([(n, pa.float64()) for n in FIELDS.scores])
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == [s.id for s in samples]
    assert {r["shard"] for r in rows} == {"part-00007-0000.tar"}
    assert [CaptionSample.from_row(r) for r in rows] == samples
    with tarfile.open(tmp_path / info.path) as tf:
        keys = list(dict.fromkeys(m.name.split(".")[0] for m in tf.getmembers()))
    assert keys == [r["key"] for r in rows]


def test_shard_info_sizes_and_hashes_match_the_files(tmp_path: Path) -> None:
    infos = write_unit_shards([kept(i) for i in range(3)], unit=1, out_root=str(tmp_path), params=ShardParams())
    for info in infos:
        tar = (tmp_path / info.path).read_bytes()
        idx = (tmp_path / info.index.path).read_bytes()
        assert (info.bytes, info.sha256) == (len(tar), hashlib.sha256(tar).hexdigest())
        assert (info.index.bytes, info.index.sha256) == (len(idx), hashlib.sha256(idx).hexdigest())
        d = info.to_dict()
        assert d["sha256"] == info.sha256
        assert d["index"]["path"] == info.index.path
        json.dumps(d)  # goes into the manifest as is


def test_max_samples_splits_into_shards(tmp_path: Path) -> None:
    samples = [kept(i) for i in range(5)]
    infos = write_unit_shards(samples, unit=2, out_root=str(tmp_path), params=ShardParams(max_samples=2))
    assert [i.samples for i in infos] == [2, 2, 1]
    assert [i.path for i in infos] == [f"shards/part-00002-{n:04d}.tar" for n in range(3)]
    keys = [s["__key__"] for i in infos for s in wds.WebDataset(str(tmp_path / i.path), shardshuffle=False)]
    assert keys == [s.id for s in samples]  # input order across shards
    index_keys = [r["key"] for i in infos for r in pq.read_table(tmp_path / i.index.path).to_pylist()]
    assert index_keys == keys


def test_max_bytes_splits_into_shards_within_the_bound(tmp_path: Path) -> None:
    samples = [kept(i, size=(160, 120)) for i in range(6)]
    per_sample = max(len(s.image or b"") for s in samples)
    bound = 3 * per_sample + 4 * 4096  # room for a couple of samples with their headers and JSON, not all six
    infos = write_unit_shards(samples, unit=0, out_root=str(tmp_path), params=ShardParams(max_bytes=bound))
    assert len(infos) > 1
    assert sum(i.samples for i in infos) == len(samples)
    for i in infos:
        assert (tmp_path / i.path).stat().st_size <= bound
    keys = [s["__key__"] for i in infos for s in wds.WebDataset(str(tmp_path / i.path), shardshuffle=False)]
    assert keys == [s.id for s in samples]


def test_max_bytes_holds_for_every_bound(tmp_path: Path) -> None:
    """Whatever the bound, a shard of several samples never exceeds it: tar block and record padding
    and long per-sample JSON (a LLaVA conversation in `extra`) are all counted."""
    samples = [kept(i, size=(96, 72)) for i in range(6)]
    for i, s in enumerate(samples):
        s.extra = json.dumps({"conversation": "word " * (400 * i)})
    for n, bound in enumerate(range(12_000, 90_000, 3_500)):
        out = tmp_path / str(n)
        infos = write_unit_shards(samples, unit=0, out_root=str(out), params=ShardParams(max_bytes=bound))
        assert sum(i.samples for i in infos) == len(samples)
        for info in infos:
            size = (out / info.path).stat().st_size
            assert size == info.bytes
            assert info.samples == 1 or size <= bound, (bound, info)


def test_a_sample_larger_than_max_bytes_still_gets_a_shard(tmp_path: Path) -> None:
    """Nothing kept may vanish: an oversized sample is written alone rather than dropped."""
    samples = [kept(i, size=(200, 200)) for i in range(3)]
    assert all(len(s.image or b"") > 1024 for s in samples)
    infos = write_unit_shards(samples, unit=0, out_root=str(tmp_path), params=ShardParams(max_bytes=1024))
    assert [i.samples for i in infos] == [1, 1, 1]


def test_writing_twice_gives_identical_bytes(tmp_path: Path) -> None:
    samples = [kept(i) for i in range(7)]
    params = ShardParams(max_samples=3)
    a = write_unit_shards(samples, unit=4, out_root=str(tmp_path / "a"), params=params)
    b = write_unit_shards([kept(i) for i in range(7)], unit=4, out_root=str(tmp_path / "b"), params=params)
    assert a == b
    assert files(tmp_path / "a") == files(tmp_path / "b")
    again = write_unit_shards(samples, unit=4, out_root=str(tmp_path / "a"), params=params)  # overwrite in place
    assert again == a
    assert files(tmp_path / "a") == files(tmp_path / "b")


def test_no_samples_writes_nothing(tmp_path: Path) -> None:
    assert write_unit_shards([], unit=0, out_root=str(tmp_path / "out"), params=ShardParams()) == []
    assert not (tmp_path / "out").exists()


def test_shards_on_memory_filesystem(mem: str) -> None:
    samples = [kept(i) for i in range(3)]
    (info,) = write_unit_shards(samples, unit=0, out_root=mem, params=ShardParams())
    with fsspec.open(f"{mem}/{info.path}", "rb") as f:
        data = f.read()
    assert hashlib.sha256(data).hexdigest() == info.sha256
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert len(tf.getmembers()) == 3 * len(samples)
    fs = fsspec.filesystem("memory")
    assert not [p for p in fs.find(mem) if ".tmp-" in p]


@pytest.mark.parametrize("bad", [{"max_samples": 0}, {"max_bytes": 1023}, {"max_sample": 5}])
def test_shard_params_validation(bad: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        ShardParams(**bad)


# ----------------------------------------------------------------------------------------------- atomic writes


def test_atomic_write_local(tmp_path: Path) -> None:
    data = b"payload " * 1000
    target = tmp_path / "deep" / "er" / "file.bin"
    sha = atomic_write(str(target), data)
    assert target.read_bytes() == data
    assert sha == hashlib.sha256(data).hexdigest()
    atomic_write(str(target), b"replaced")
    assert target.read_bytes() == b"replaced"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no *.tmp-* left behind


def test_atomic_write_memory(mem: str) -> None:
    sha = atomic_write(f"{mem}/a/b.json", b"{}")
    assert sha == hashlib.sha256(b"{}").hexdigest()
    atomic_write(f"{mem}/a/b.json", b"[]")
    with fsspec.open(f"{mem}/a/b.json", "rb") as f:
        assert f.read() == b"[]"
    fs = fsspec.filesystem("memory")
    assert [p.rsplit("/", 1)[1] for p in fs.find(mem)] == ["b.json"]


def test_atomic_write_failure_leaves_no_temporary(tmp_path: Path) -> None:
    """If the write fails, neither a half file nor a temporary stays behind."""
    (tmp_path / "target").mkdir()  # a directory where the file should go: the rename must fail
    with pytest.raises(OSError):
        atomic_write(str(tmp_path / "target"), b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["target"]
    assert list((tmp_path / "target").iterdir()) == []


def test_write_table_and_json_bytes(tmp_path: Path) -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "\u00e9"]})
    info = write_table(str(tmp_path), "ledger/part-00000.parquet", table)
    data = (tmp_path / "ledger" / "part-00000.parquet").read_bytes()
    assert (info.path, info.bytes, info.sha256) == (
        "ledger/part-00000.parquet",
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    assert pq.read_table(tmp_path / info.path).equals(table)
    assert write_table(str(tmp_path / "again"), info.path, table).sha256 == info.sha256

    obj = {"z": 1, "a": {"y": [1, 2], "b": "\u00e9t\u00e9"}, "p": Path("/x")}
    out = json_bytes(obj)
    assert out.endswith(b"\n")
    assert json.loads(out) == {"z": 1, "a": {"y": [1, 2], "b": "\u00e9t\u00e9"}, "p": "/x"}
    assert "\u00e9t\u00e9".encode() in out  # human-readable, not \\u escapes
    assert out.index(b'"a"') < out.index(b'"p"') < out.index(b'"z"')
    assert json_bytes(dict(reversed(list(obj.items())))) == out
