"""Video inputs: jsonl rows resolved against any fsspec URI, one bad row costing only itself, file
names that are not UTF-8, truncated shards with a stable error."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from mmcurate.demo.video import Segment, make_video
from mmcurate.schemas import Status, read_media
from mmcurate.stages.video_io import VideoReadParams, list_video_units, read_video_unit


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("v") / "v.mp4"
    make_video(path, [Segment("testsrc2", 30)], size=(160, 96))
    return path.read_bytes()


def _read_all(inputs: list[str]) -> list:
    params = VideoReadParams()
    return [r for u in list_video_units(inputs, params) for r in read_video_unit(u, params)]


def test_remote_jsonl_resolves_relative_paths_and_a_bad_row_costs_only_itself(clip_bytes: bytes) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/vids-test/clips/a.mp4", clip_bytes)
    rows = [
        {"video": "clips/a.mp4", "caption": "a test pattern"},
        {"video": "foo://nowhere/b.mp4", "caption": "unknown protocol"},
        {"video": "clips/missing.mp4"},
        {"videos": ["clips/a.mp4"], "text": "<__dj__video> Data-Juicer style"},
    ]
    fs.pipe("/vids-test/list.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    recs = _read_all(["memory://vids-test/list.jsonl"])
    assert [r.fate.status for r in recs] == [Status.PENDING, Status.QUARANTINED, Status.QUARANTINED, Status.PENDING]
    # A remote video is a reference, read where it is analysed (its bytes never cross a shuffle).
    assert recs[0].source.uri.endswith("//vids-test/clips/a.mp4") and recs[0].data is None
    assert read_media(recs[0].media) == clip_bytes and recs[0].file_bytes == len(clip_bytes)
    assert recs[0].media == recs[3].media and recs[3].caption == "Data-Juicer style"
    assert recs[1].fate.reason == "outside_root"  # a URI a row names is not read unless allowed
    assert recs[2].fate.reason == "missing_video"
    params = VideoReadParams(allow_outside_root=True)
    allowed = [
        r for u in list_video_units(["memory://vids-test/list.jsonl"], params) for r in read_video_unit(u, params)
    ]
    assert allowed[1].fate.reason == "missing_video"  # allowed, then unreadable: an unknown protocol


def test_file_names_that_are_not_utf8_are_read_and_written(tmp_path: Path, clip_bytes: bytes) -> None:
    from mmcurate.cli import main

    corpus = tmp_path / "in"
    corpus.mkdir()
    name = os.fsdecode(b"bad\xff.mp4")
    (corpus / name).write_bytes(clip_bytes)
    out = tmp_path / "out"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("clips: {min_duration: 0.5}\nfilters: {clip_size: {min_side: 64}}\n")
    assert main(["video", "--input", str(corpus), "--output", str(out), "--no-progress", "--config", str(cfg)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["kinds"]["video"]["counts"]["kept"] == 1 and m["accounting_ok"]


def test_truncated_shard_error_is_stable_and_accounted(tmp_path: Path, clip_bytes: bytes) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key in ("000", "001", "002"):
            for ext, data in (("mp4", clip_bytes), ("txt", b"caption")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    shard = tmp_path / "cut.tar"
    shard.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    first = _read_all([str(shard)])
    again = _read_all([str(shard)])
    assert first[-1].fate.reason == "read_error" and first[-1].source.member == "<unread-remainder>"
    assert first[-1].fate.error == again[-1].fate.error and " at 0x" not in first[-1].fate.error
    assert all(r.fate.status == Status.PENDING for r in first[:-1])


def test_tar_members_are_references_and_compressed_ones_bytes_spooled_by_the_recipe(
    tmp_path: Path, clip_bytes: bytes
) -> None:
    """A plain tar's videos are byte ranges of it (nothing held, nothing shuffled); a compressed tar
    cannot be read at an offset, so its members come as bytes, which the recipe spools before its
    reshuffle. Both runs cut the same clips."""
    from mmcurate.cli import main

    other = tmp_path / "b.mp4"
    make_video(other, [Segment("smptebars", 30)], size=(160, 96))
    for name, mode in (("plain.tar", "w"), ("packed.tgz", "w:gz")):
        (tmp_path / name.split(".")[0]).mkdir()
        with tarfile.open(tmp_path / name.split(".")[0] / name, mode) as tar:
            for key, data in (("000", clip_bytes), ("001", other.read_bytes())):
                for ext, payload in (("mp4", data), ("txt", b"a test pattern")):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    plain = _read_all([str(tmp_path / "plain")])
    assert [r.data for r in plain] == [None, None]
    for rec, data in zip(plain, (clip_bytes, other.read_bytes()), strict=True):
        assert "#bytes=" in rec.media and read_media(rec.media) == data and rec.file_bytes == len(data)
    packed = _read_all([str(tmp_path / "packed")])
    assert [r.data for r in packed] == [clip_bytes, other.read_bytes()] and packed[0].media is None

    cfg = tmp_path / "c.yaml"
    cfg.write_text("clips: {min_duration: 0.5}\nfilters: {clip_size: {min_side: 64}}\n")
    ledgers = []
    for name in ("plain", "packed"):
        out = tmp_path / f"out-{name}"
        args = ["video", "--input", str(tmp_path / name), "--output", str(out), "--config", str(cfg), "--no-progress"]
        assert main(args) == 0
        m = json.loads((out / "manifest.json").read_text())
        assert m["accounting_ok"] and m["kinds"]["clip"]["counts"]["kept"] == 2
        assert not (out / "_spool").exists()
        ledgers.append(sorted((r["id"], r["video_id"]) for r in pq.read_table(out / "ledger" / "clip").to_pylist()))
    assert ledgers[0] == ledgers[1]  # the same videos (ids are content hashes), the same clips


def test_a_fifo_caption_sidecar_quarantines_its_video_and_never_blocks(tmp_path: Path, clip_bytes: bytes) -> None:
    """`stuck.txt` beside `stuck.mp4` is a FIFO: opening it would block the reader for ever."""
    (tmp_path / "ok.mp4").write_bytes(clip_bytes)
    (tmp_path / "ok.txt").write_text("a caption")
    (tmp_path / "stuck.mp4").write_bytes(clip_bytes)
    os.mkfifo(tmp_path / "stuck.txt")
    recs = {r.source.uri.rsplit("/", 1)[-1]: r for r in _read_all([str(tmp_path)])}
    assert recs["ok.mp4"].caption == "a caption" and recs["ok.mp4"].fate.status == Status.PENDING
    assert recs["stuck.mp4"].fate.status == Status.QUARANTINED and recs["stuck.mp4"].fate.reason == "not_a_file"
