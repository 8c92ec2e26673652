"""Accounting true to the input: bad rows, damaged containers, FIFOs, links out of the corpus, files
Pillow reads whatever their name, files that are no images. Every case runs the real caption CLI;
the manifest's counts must match what the files hold (lines, rows, members, files) and the run must
complete."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcurate.cli import main

RULES = "filters:\n  min_side: {min: 16}\n  caption_length: {min_words: 1}\ndedup: {near: false}\n"


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """A hang fails the test (SIGALRM) instead of stalling the suite."""

    def fire(*_: object) -> None:
        raise TimeoutError(f"the run did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def jpg(seed: int, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize(size).save(buf, fmt)
    return buf.getvalue()


def run(tmp_path: Path, *inputs: Path | str, extra: str = "") -> dict:
    cfg = tmp_path / "rules.yaml"
    cfg.write_text(RULES + extra)
    out = tmp_path / "out"
    with deadline(240):
        rc = main(["caption", "--input", *map(str, inputs), "--output", str(out), "--config", str(cfg),
                   "--no-progress", "--overwrite"])  # fmt: skip
    assert rc == 0
    return json.loads((out / "manifest.json").read_text())


def ledger(tmp_path: Path) -> dict[str, dict]:
    rows = pq.read_table(tmp_path / "out" / "ledger" / "caption").to_pylist()
    return {r["source"]["member"]: r for r in rows}


def fates(tmp_path: Path) -> dict[str, tuple[str, str]]:
    return {m: (r["fate"]["status"], r["fate"]["reason"]) for m, r in ledger(tmp_path).items()}


def counts(m: dict) -> dict[str, int]:
    return m["kinds"]["caption"]["counts"]


# ------------------------------------------------------------------------------------------- jsonl rows


def test_each_kind_of_bad_jsonl_row_costs_only_its_line(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for i in range(4):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(jpg(i))
    deep = "[" * 100_000 + "]" * 100_000
    lines = [
        json.dumps({"image": "img/0.jpg", "caption": "a good first row"}),
        json.dumps({"image": "img/1.jpg", "caption": {"text": "a dict where a string belongs"}}),
        '{"image": "img/1.jpg", "caption": ' + deep + "}",
        json.dumps({"image": "http://example.com/x.jpg", "caption": "a remote image"}),
        json.dumps({"image": "../outside.jpg", "caption": "a path out of the corpus"}),
        json.dumps({"image": ["img/2.jpg"], "caption": "a list of images: the first is read"}),
        json.dumps({"image": 7, "caption": "a number where a path belongs"}),
        "not json at all",
        json.dumps({"image": "img/3.jpg", "caption": "caption\x00with a NUL and a \x07bell"}),
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(lines) + "\n")
    m = run(tmp_path, data)
    assert counts(m)["input"] == len(lines) and m["accounting_ok"]
    got = fates(tmp_path)
    assert got == {
        "line1": ("kept", ""),
        "line2": ("quarantined", "bad_row"),
        "line3": ("quarantined", "bad_json"),
        "line4": ("quarantined", "outside_root"),
        "line5": ("quarantined", "outside_root"),
        "line6": ("kept", ""),
        "line7": ("quarantined", "bad_row"),
        "line8": ("quarantined", "bad_json"),
        "line9": ("kept", ""),
    }
    rows = ledger(tmp_path)
    assert "RecursionError" in rows["line3"]["fate"]["error"]
    assert rows["line9"]["caption"] == "caption with a NUL and a  bell"  # never written raw
    assert "\x00" not in json.dumps([r["caption"] for r in rows.values()])


# ------------------------------------------------------------------------------------------- tars


def tar_bytes(n: int, gz: bool = False) -> tuple[bytes, dict[str, int]]:
    buf = io.BytesIO()
    offsets = {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(n):
            for ext, data in (("jpg", jpg(100 + i)), ("txt", f"sample number {i}".encode())):
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(data)
                offsets[info.name] = buf.tell()
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return (gzip.compress(raw, mtime=0) if gz else raw), offsets


def test_a_corrupt_tar_header_mid_archive_costs_one_sample_not_the_rest(tmp_path: Path) -> None:
    raw, offsets = tar_bytes(8)
    bad = bytearray(raw)
    o = offsets["s003.jpg"]
    bad[o : o + 100] = b"\xff" * 100  # the header's name and checksum: tarfile alone would stop here
    shard = tmp_path / "in.tar"
    shard.write_bytes(bytes(bad))
    m = run(tmp_path, shard)
    got = fates(tmp_path)
    kept = sorted(k for k, f in got.items() if f == ("kept", ""))
    assert kept == [f"s{i:03d}" for i in range(8) if i != 3]  # every member after the damage is read
    skipped = [k for k in got if k.startswith("<skipped")]
    assert len(skipped) == 1 and got[skipped[0]] == ("quarantined", "read_error")
    assert got["s003"] == ("quarantined", "missing_image")  # its caption member survived, its image did not
    (damage,) = m["unreadable_remainder"]
    assert damage["start"] == o and damage["records"] == "unknown" and not m["inputs_fully_read"]
    assert counts(m)["input"] == len(got) and m["accounting_ok"]


def test_a_corrupt_gzip_stream_reports_what_it_could_not_read(tmp_path: Path) -> None:
    raw, _ = tar_bytes(8, gz=True)
    bad = bytearray(raw)
    middle = len(bad) // 2
    bad[middle : middle + 64] = bytes(64)  # deflate data destroyed: the rest cannot be decompressed
    shard = tmp_path / "in.tgz"
    shard.write_bytes(bytes(bad))
    m = run(tmp_path, shard)
    got = fates(tmp_path)
    assert "<unread-remainder>" in got and got["<unread-remainder>"] == ("quarantined", "read_error")
    assert 0 < sum(f == ("kept", "") for f in got.values()) < 8
    assert not m["inputs_fully_read"]
    assert any(d["records"] == "unknown" for d in m["unreadable_remainder"])
    assert counts(m)["input"] == len(got) and m["accounting_ok"]

    whole, _ = tar_bytes(8, gz=True)
    bad = bytearray(whole)
    bad[-8] ^= 0xFF  # the CRC of an otherwise intact stream: tarfile's own gzip reader never checks it
    shard.write_bytes(bytes(bad))
    m = run(tmp_path, shard)
    assert not m["inputs_fully_read"] and "CRC" in json.dumps(m["unreadable_remainder"])


# ------------------------------------------------------------------------------------------- parquet


def parquet(path: Path, n: int, seed: int) -> None:
    table = pa.table({"jpg": [jpg(seed + i) for i in range(n)], "caption": [f"row number {i}" for i in range(n)]})
    pq.write_table(table, path)


@pytest.mark.parametrize("where", ["alone", "first", "last"])
def test_a_truncated_parquet_is_quarantined_as_a_unit_wherever_it_is(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    parquet(folder / "b-good.parquet", 3, 10)
    parquet(folder / "c-good.parquet", 2, 20)
    broken = {"alone": "x.parquet", "first": "a.parquet", "last": "z.parquet"}[where]
    parquet(tmp_path / "tmp.parquet", 4, 30)
    data = (tmp_path / "tmp.parquet").read_bytes()
    (folder / broken).write_bytes(data[: len(data) // 2])
    inputs = [folder / broken] if where == "alone" else [folder]
    m = run(tmp_path, *inputs)
    got = fates(tmp_path)
    assert got["<unreadable-file>"] == ("quarantined", "read_error")
    assert counts(m)["input"] == (1 if where == "alone" else 1 + 3 + 2) and m["accounting_ok"]
    assert [d["uri"].endswith(broken) for d in m["unreadable_remainder"]] == [True]


def test_a_hugging_face_hub_folder_and_chat_rows_through_the_pipeline(tmp_path: Path) -> None:
    """A folder as `push_to_hub` lays it out (built with `datasets`) beside LLaMA-Factory chat rows:
    the train split is read (its Image structs decoded), the test split, the card and .gitattributes
    are counted as ignored files, and a two-image chat row is dropped with its reason."""
    import datasets

    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    for name, captions, seed in (("train-00000-of-00001", ["a red bus in town", "a green field"], 10),
                                 ("test-00000-of-00001", ["a held-out cat"], 20)):  # fmt: skip
        images = [{"bytes": jpg(seed + i), "path": f"{i}.jpg"} for i in range(len(captions))]
        ds = datasets.Dataset.from_dict({"image": images, "text": captions}).cast_column("image", datasets.Image())
        ds.to_parquet(str(hub / "data" / f"{name}.parquet"))
    (hub / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# card\n")
    (hub / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "0.jpg").write_bytes(jpg(30))
    (tmp_path / "img" / "1.jpg").write_bytes(jpg(31))
    turns = [{"role": "user", "content": "<image>Describe the picture."}, {"role": "assistant", "content": "A cat."}]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps({"messages": turns, "images": ["img/0.jpg"]}) + "\n"
        + json.dumps({"messages": turns, "images": ["img/0.jpg", "img/1.jpg"]}) + "\n"
        + json.dumps({"messages": {"role": "user"}, "images": ["img/0.jpg"]}) + "\n"
    )  # fmt: skip
    m = run(tmp_path, hub, chat)
    rows = pq.read_table(tmp_path / "out" / "ledger" / "caption").to_pylist()
    got = {(Path(r["source"]["uri"]).name, r["source"]["member"]): (r["fate"]["status"], r["fate"]["reason"])
           for r in rows}  # fmt: skip
    assert got == {
        ("train-00000-of-00001.parquet", "row0"): ("kept", ""),
        ("train-00000-of-00001.parquet", "row1"): ("kept", ""),
        ("0.jpg", "line1"): ("kept", ""),
        ("chat.jsonl", "line2"): ("dropped", "multi_image"),
        ("chat.jsonl", "line3"): ("quarantined", "bad_row"),
    }
    assert sorted(r["caption"] for r in rows if r["fate"]["status"] == "kept") == ["A cat.", "a green field",
                                                                                   "a red bus in town"]  # fmt: skip
    ignored = sorted(Path(n).name for n in m["ignored_files"]["names"])
    assert ignored == [".gitattributes", "README.md", "test-00000-of-00001.parquet"]
    assert counts(m)["input"] == len(rows) == 5 and m["accounting_ok"]


# ------------------------------------------------------------------------------------------- folders


def test_fifos_links_out_of_the_root_avif_and_svg(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jpg").write_bytes(jpg(1))
    (corpus / "a.txt").write_text("a jpeg with its caption")
    (corpus / "b.avif").write_bytes(jpg(2, fmt="AVIF"))
    (corpus / "b.txt").write_text("an avif picture")
    (corpus / "noext").write_bytes(jpg(3))  # a JPEG without an extension: Pillow reads it
    (corpus / "noext.txt").write_text("a jpeg without a name")
    (corpus / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    os.mkfifo(corpus / "stuck.jpg")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpg(4))
    (corpus / "link.jpg").symlink_to(outside)
    (corpus / "link.txt").write_text("a link to an image kept elsewhere")
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "a.jpg").write_bytes(jpg(5))
    os.mkfifo(rows / "stuck.jpg")
    (rows / "link.jpg").symlink_to(outside)
    (rows / "rows.jsonl").write_text(
        json.dumps({"image": "a.jpg", "caption": "a row naming a real image"}) + "\n"
        + json.dumps({"image": "stuck.jpg", "caption": "a row naming a FIFO"}) + "\n"
        + json.dumps({"image": "link.jpg", "caption": "a row naming a link out of the corpus"}) + "\n"
    )  # fmt: skip
    m = run(tmp_path, corpus, rows / "rows.jsonl")
    got = fates(tmp_path)
    assert got["a.jpg"] == got["b.avif"] == got["noext"] == ("kept", "")
    assert got["stuck.jpg"] == ("quarantined", "not_a_file")
    assert got["line1"] == ("kept", "") and got["line2"] == ("quarantined", "not_a_file")
    assert got["line3"] == ("quarantined", "outside_root")
    assert got["link.jpg"] == ("kept", "")  # a link file in the folder itself is the folder's own input
    assert m["ignored_files"]["count"] >= 1 and any(n.endswith("logo.svg") for n in m["ignored_files"]["names"])
    assert counts(m)["input"] == len(got) and m["accounting_ok"]


def test_bounds_in_the_config_fail_fast_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a.jpg").write_bytes(jpg(1))
    for text, key in (("decode: {max_pixels: -5}\n", "decode.max_pixels"), ("output: {max_side: -1}\n",
                      "output.max_side"), ("read: {folder_unit_size: 0}\n", "read.folder_unit_size")):  # fmt: skip
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(text)
        assert main(["caption", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--config", str(cfg)]) == 2
        assert key in capsys.readouterr().err
