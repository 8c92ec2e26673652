"""`--limit N` reads the first N records of every input file or folder and the manifest says
exactly what was left: per folder (not per folder slice), per tar counted from headers without
reading the data past the limit, a lower bound said to be one where a tar cannot be counted to its
end, never `inputs_fully_read` when records were left, and a select run carries its parent's figures
instead of counting the ledger it reads. Every run is the real caption CLI on files written here."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmcurate.cli import main
from mmcurate.stages.io import ReadReport, Unit
from mmcurate.stages.readers import ReadParams, list_units, read_unit
from mmcurate.stages.video_io import VideoReadParams, list_video_units, read_video_unit

RULES = "filters:\n  min_side: {min: 16}\n  caption_length: {min_words: 1}\ndedup: {near: false}\n"


def caption_run(tmp_path: Path, inputs: list[Path], *extra: str, read: str = "", out: str = "out") -> dict:
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(RULES + (f"read: {read}\n" if read else ""))
    rc = main(["caption", "--input", *map(str, inputs), "--output", str(tmp_path / out), "--config", str(cfg),
               "--no-progress", *extra])  # fmt: skip
    assert rc == 0
    return json.loads((tmp_path / out / "manifest.json").read_text())


def ledger(root: Path) -> list[dict]:
    return [r for f in sorted((root / "ledger" / "caption").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def write_tar(path: Path, members: list[tuple[str, bytes]], gz: bool = False) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0) if gz else buf.getvalue())


def samples(n: int, image: Callable[[int], bytes]) -> list[tuple[str, bytes]]:
    return [m for i in range(n) for m in ((f"s{i:03d}.jpg", image(i)), (f"s{i:03d}.txt", f"bus number {i}".encode()))]


@pytest.fixture
def jpg(photo: Callable, to_bytes: Callable) -> Callable[[int], bytes]:
    return lambda seed: to_bytes(photo((64, 48), seed=seed))


# ------------------------------------------------------------------------------------------- folders


def test_a_folder_is_limited_as_a_whole_not_per_slice(tmp_path: Path, jpg: Callable) -> None:
    """7 images in slices of 3 with --limit 2 read 2 (not 2 + 2 + 1); another folder gets its own 2."""
    folders = []
    for k, n in enumerate((7, 4)):
        folders.append(tmp_path / f"f{k}")
        folders[-1].mkdir()
        for i in range(n):
            (folders[-1] / f"{i}.jpg").write_bytes(jpg(10 * k + i))
            (folders[-1] / f"{i}.txt").write_text(f"a photo of bus {i}")
    units = list_units(list(map(str, folders)), ReadParams(folder_unit_size=3))
    assert [(Path(u.uri).name, u.start, len(u.files)) for u in units] == [
        ("f0", 0, 3), ("f0", 3, 3), ("f0", 6, 1), ("f1", 0, 3), ("f1", 3, 1),
    ]  # fmt: skip
    # Sources are the place in the slice, as before: the slice's start is for the limit only.
    unlimited = [r.source for u in units for r in read_unit(u, ReadParams(folder_unit_size=3))]
    assert [(s.unit, s.index, s.member) for s in unlimited[:4]] == [(0, 0, "0.jpg"), (0, 1, "1.jpg"), (0, 2, "2.jpg"),
                                                                    (1, 0, "3.jpg")]  # fmt: skip

    m = caption_run(tmp_path, folders, "--limit", "2", read="{folder_unit_size: 3}")
    assert m["limit"] == {"records_per_input": 2, "read": 4, "not_read": 5 + 2, "held": 11}
    assert m["accounting_ok"] and not m["inputs_fully_read"] and m["unreadable_remainder"] == []
    read = sorted((Path(r["source"]["uri"]).parent.name, r["source"]["member"]) for r in ledger(tmp_path / "out"))
    assert read == [("f0", "0.jpg"), ("f0", "1.jpg"), ("f1", "0.jpg"), ("f1", "1.jpg")]


def test_a_folder_of_videos_is_limited_as_a_whole(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    for i in range(7):
        (tmp_path / "v" / f"{i}.mp4").write_bytes(b"not decoded when read" * (i + 1))
    params = VideoReadParams(folder_unit_size=3, limit=2)
    units = list_video_units([str(tmp_path / "v")], params)
    assert [u.start for u in units] == [0, 3, 6]
    reports = [ReadReport() for _ in units]
    got = [r.source.member for u, rep in zip(units, reports, strict=True) for r in read_video_unit(u, params, rep)]
    assert got == ["0.mp4", "1.mp4"] and sum(r.not_read for r in reports) == 5


# ---------------------------------------------------------------------------------------------- tars


def rchar() -> int:
    """Bytes this process has read through system calls (Linux), page cache or not."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_a_tar_past_the_limit_is_counted_from_its_headers_without_reading_its_data(tmp_path: Path) -> None:
    big = tmp_path / "big.tar"
    members = samples(40, lambda i: os.urandom(512 * 1024))
    write_tar(big, [*members[:30], ("README", b"no sample"), *members[30:]])
    report = ReadReport()
    before = rchar()
    records = list(read_unit(Unit(0, "wds", str(big)), ReadParams(limit=3), report))
    read = rchar() - before
    assert [r.source.member for r in records] == ["s000", "s001", "s002"]
    assert report.not_read == 37 and not report.not_read_unknown
    assert report.ignored == [f"{big}#README"]  # as a full read lists it
    assert read < big.stat().st_size / 5, f"read {read} of {big.stat().st_size} bytes"

    # Compressed: counting would mean decompressing everything; the rest is a lower bound, said so.
    gz = tmp_path / "small.tgz"
    write_tar(gz, samples(10, lambda i: b"x" * 100), gz=True)
    report = ReadReport()
    assert len(list(read_unit(Unit(0, "wds", str(gz)), ReadParams(limit=3), report))) == 3
    assert report.not_read == 1 and report.not_read_unknown


def test_limit_counts_tar_parquet_and_jsonl_exactly_and_fully_read_only_when_nothing_was_left(
    tmp_path: Path, jpg: Callable
) -> None:
    root = tmp_path / "in"
    (root / "img").mkdir(parents=True)
    write_tar(root / "shard.tar", samples(25, jpg))
    pq.write_table(pa.table({"jpg": [jpg(100 + i) for i in range(6)], "caption": ["a bus"] * 6}), root / "t.parquet")
    for i in range(9):
        (root / "img" / f"{i}.jpg").write_bytes(jpg(200 + i))
    (root / "rows.jsonl").write_text("".join(json.dumps({"image": f"img/{i}.jpg", "caption": "a bus"}) + "\n"
                                             for i in range(9)))  # fmt: skip
    inputs = [root / "shard.tar", root / "t.parquet", root / "rows.jsonl"]
    m = caption_run(tmp_path, inputs, "--limit", "4", read="{jsonl_unit_lines: 3}")
    assert m["limit"] == {"records_per_input": 4, "read": 12, "not_read": 21 + 2 + 5, "held": 25 + 6 + 9}
    assert m["kinds"]["caption"]["counts"]["input"] == 12 and m["accounting_ok"]
    assert not m["inputs_fully_read"] and m["unreadable_remainder"] == []

    m = caption_run(tmp_path, inputs, "--limit", "25", read="{jsonl_unit_lines: 3}", out="all")
    assert m["limit"] == {"records_per_input": 25, "read": 40, "not_read": 0, "held": 40}
    assert m["inputs_fully_read"]


def test_a_damaged_tar_past_the_limit_is_a_lower_bound_not_a_held_record(tmp_path: Path, jpg: Callable) -> None:
    members = samples(20, jpg)
    shard, cut = tmp_path / "damaged.tar", tmp_path / "cut.tar"
    write_tar(shard, members)
    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tf:
        at = tf.getmember("s012.jpg").offset
        inside = tf.getmember("s015.jpg").offset_data + 100
    data[at : at + 512] = b"\xff" * 512  # a header past the limit destroyed: what follows cannot be counted
    shard.write_bytes(bytes(data))
    cut.write_bytes(bytes(data[:inside]))  # and a second tar cut inside a member further on
    for path, counted in ((shard, 12 - 5), (cut, 12 - 5)):
        report = ReadReport()
        assert len(list(read_unit(Unit(0, "wds", str(path)), ReadParams(limit=5), report))) == 5
        assert report.not_read == counted and report.not_read_unknown and report.damage == []
    whole = tmp_path / "cut-only.tar"
    write_tar(whole, members)
    whole.write_bytes(whole.read_bytes()[:inside])
    report = ReadReport()
    list(read_unit(Unit(0, "wds", str(whole)), ReadParams(limit=5), report))
    assert report.not_read == 16 - 5 and report.not_read_unknown  # s015's header was counted, its data is cut

    m = caption_run(tmp_path, [shard], "--limit", "5")
    assert m["limit"] == {"records_per_input": 5, "read": 5, "not_read": 7, "held": 12, "not_read_exact": False}
    assert m["kinds"]["caption"]["counts"] == {"input": 5, "kept": 5, "dropped": 0, "quarantined": 0}
    assert m["accounting_ok"] and not m["inputs_fully_read"] and m["unreadable_remainder"] == []


# -------------------------------------------------------------------------------------------- select


def test_a_select_run_carries_its_parent_s_limit(tmp_path: Path, jpg: Callable, capsys) -> None:
    write_tar(tmp_path / "shard.tar", samples(9, jpg))
    parent = caption_run(tmp_path, [tmp_path / "shard.tar"], "--limit", "4", out="parent")
    assert parent["limit"] == {"records_per_input": 4, "read": 4, "not_read": 5, "held": 9}
    capsys.readouterr()
    assert main(["select", "--run", str(tmp_path / "parent"), "--output", str(tmp_path / "sel"), "--no-progress"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    m = json.loads((tmp_path / "sel" / "manifest.json").read_text())
    assert m["lineage"]["parent_run"] == str(tmp_path / "parent")
    assert m["limit"] == {**parent["limit"], "from_parent": True}
    assert m["kinds"]["caption"]["counts"]["input"] == 4 and m["accounting_ok"] and not m["inputs_fully_read"]
    assert "4 of the 9 records in the inputs read, 5 not read" in text

    # A select of that select: still the first run's figures.
    assert main(["select", "--run", str(tmp_path / "sel"), "--output", str(tmp_path / "sel2"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "sel2" / "manifest.json").read_text())["limit"] == m["limit"]
