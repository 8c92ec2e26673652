"""`mmcurate demo` end to end: the real CLI on the demo corpus, checked file by file.

Every expectation comes from what the demo builder wrote: the corpus files on disk (bytes and
sidecar captions) and `demo.EXPECTED` / `demo.DUPLICATE_OF`; nothing is mocked.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from PIL import Image

from mmcurate.cli import main
from mmcurate.demo import caption as demo
from mmcurate.pipelines.run import OutputError

pytestmark = pytest.mark.slow


def corpus_inputs(corpus: Path) -> dict[str, tuple[bytes, str]]:
    """Image file name -> (bytes, caption as the folder reader sees it), read back from disk."""
    out = {}
    for path in sorted(corpus.iterdir()):
        if path.suffix == ".txt":
            continue
        caption = (corpus / demo.caption_file(path.name)).read_text(encoding="utf-8").strip()
        out[path.name] = (path.read_bytes(), caption)
    return out


def content_id(image: bytes, caption: str) -> str:
    """BLAKE2b-128 of image bytes, a NUL and the caption: the record id the design card specifies."""
    h = hashlib.blake2b(digest_size=16)
    h.update(image + b"\0" + caption.encode("utf-8"))
    return h.hexdigest()


def read_rows(root: Path, folder: str) -> list[dict]:
    return [row for path in sorted((root / folder).glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


TABLE_DIRS = ("shards", "index", "ledger", "dropped", "quarantined")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    work = tmp_path_factory.mktemp("demo")
    rc = main(["demo", "--workdir", str(work), "--no-progress"])
    return rc, work


@pytest.fixture(scope="module")
def ledger(demo_run: tuple[int, Path]) -> dict[str, dict]:
    """Ledger rows by source member (the file name inside the corpus folder)."""
    rows = read_rows(demo_run[1] / "output", "ledger/caption")
    by_member = {r["source"]["member"]: r for r in rows}
    assert len(by_member) == len(rows), "two ledger rows for one input file"
    return by_member


def test_demo_corpus_is_what_expected_describes(demo_run: tuple[int, Path]) -> None:
    corpus = demo_run[1] / "corpus"
    inputs = corpus_inputs(corpus)
    assert set(inputs) == set(demo.EXPECTED)
    assert sorted(p.name for p in corpus.iterdir() if p.suffix == ".txt") == sorted(
        demo.caption_file(n) for n in inputs
    )
    assert sum(p.stat().st_size for p in corpus.iterdir()) < 5_000_000
    for name, (status, reason) in demo.EXPECTED.items():
        assert status in ("kept", "dropped", "quarantined"), name
        assert (reason == "") == (status == "kept"), name
    for copy, original in demo.DUPLICATE_OF.items():
        assert demo.EXPECTED[original] == ("kept", "")
        if demo.EXPECTED[copy][1] == "duplicate_exact":
            assert inputs[copy][0] == inputs[original][0]
            assert inputs[copy][1] != inputs[original][1]


def test_demo_exit_code_and_accounting(demo_run: tuple[int, Path]) -> None:
    rc, work = demo_run
    assert rc == 0
    manifest = json.loads((work / "output" / "manifest.json").read_text())
    counts = manifest["kinds"]["caption"]["counts"]
    n_images = len(corpus_inputs(work / "corpus"))
    assert counts["input"] == n_images == len(demo.EXPECTED)
    assert counts["input"] == counts["kept"] + counts["dropped"] + counts["quarantined"]
    assert manifest["accounting_ok"] is True
    want_status = collections.Counter(status for status, _ in demo.EXPECTED.values())
    assert {k: counts[k] for k in ("kept", "dropped", "quarantined")} == {
        k: want_status.get(k, 0) for k in ("kept", "dropped", "quarantined")
    }
    for status in ("dropped", "quarantined"):
        want = collections.Counter(r for s, r in demo.EXPECTED.values() if s == status)
        assert manifest["kinds"]["caption"]["reasons"][status] == dict(want)


def test_every_input_gets_its_expected_fate(demo_run: tuple[int, Path], ledger: dict[str, dict]) -> None:
    inputs = corpus_inputs(demo_run[1] / "corpus")
    assert set(ledger) == set(inputs)
    got = {name: (row["fate"]["status"], row["fate"]["reason"]) for name, row in ledger.items()}
    assert got == demo.EXPECTED
    for name, row in ledger.items():
        image, caption = inputs[name]
        assert row["id"] == content_id(image, caption), name
        assert row["caption"] == caption, name
        assert row["file_bytes"] == len(image), name
        if row["fate"]["status"] == "quarantined":
            assert row["fate"]["error"], name


def test_duplicates_point_at_the_kept_original(demo_run: tuple[int, Path], ledger: dict[str, dict]) -> None:
    inputs = corpus_inputs(demo_run[1] / "corpus")
    for name, row in ledger.items():
        if name in demo.DUPLICATE_OF:
            original = demo.DUPLICATE_OF[name]
            assert ledger[original]["fate"]["status"] == "kept"
            assert row["fate"]["duplicate_of"] == ledger[original]["id"] == content_id(*inputs[original])
        else:
            assert row["fate"]["duplicate_of"] == "", name
    exact = [n for n in demo.DUPLICATE_OF if demo.EXPECTED[n][1] == "duplicate_exact"]
    near = [n for n in demo.DUPLICATE_OF if demo.EXPECTED[n][1] == "duplicate_near"]
    assert exact and near
    for name in exact:
        assert ledger[name]["pixel_hash"] == ledger[demo.DUPLICATE_OF[name]]["pixel_hash"]
    for name in near:
        original = ledger[demo.DUPLICATE_OF[name]]
        assert ledger[name]["pixel_hash"] != original["pixel_hash"]
        assert ledger[name]["width"] * ledger[name]["height"] < original["width"] * original["height"]
        distance = bin(int(ledger[name]["phash"], 16) ^ int(original["phash"], 16)).count("1")
        manifest = json.loads((demo_run[1] / "output" / "manifest.json").read_text())
        assert distance <= manifest["config"]["dedup"]["max_distance"]


@pytest.mark.parametrize("status", ["dropped", "quarantined"])
def test_fate_tables_hold_exactly_their_records(
    demo_run: tuple[int, Path], ledger: dict[str, dict], status: str
) -> None:
    rows = read_rows(demo_run[1] / "output", f"{status}/caption")
    want = {r["id"]: r for r in ledger.values() if r["fate"]["status"] == status}
    assert len(rows) == len(want)
    assert {r["id"] for r in rows} == set(want)
    for row in rows:
        fate = want[row["id"]]["fate"]
        assert (row["reason"], row["error"], row["duplicate_of"]) == (
            fate["reason"],
            fate["error"],
            fate["duplicate_of"],
        )
        assert row["source"].endswith("#" + want[row["id"]]["source"]["member"])


def test_manifest_files_match_disk(demo_run: tuple[int, Path]) -> None:
    out = demo_run[1] / "output"
    manifest = json.loads((out / "manifest.json").read_text())
    listed = []
    for shard in manifest["files"]["shards"]:
        listed += [shard, shard["index"]]
    for kind in ("ledger", "dropped", "quarantined", "outputs"):
        listed += manifest["files"][kind]
    for info in listed:
        path = out / info["path"]
        assert path.is_file(), info["path"]
        assert path.stat().st_size == info["bytes"], info["path"]
        assert sha256(path) == info["sha256"], info["path"]
    on_disk = {str(p.relative_to(out)) for d in TABLE_DIRS for p in (out / d).rglob("*") if p.is_file()}
    assert on_disk == {info["path"] for info in listed}
    assert {str(p.relative_to(out)) for p in (out / "shards").iterdir()} == {
        s["path"] for s in manifest["files"]["shards"]
    }  # only tars in shards/: load_dataset("webdataset", data_dir=...) reads the folder


def test_shards_hold_exactly_the_kept_samples(demo_run: tuple[int, Path], ledger: dict[str, dict]) -> None:
    out = demo_run[1] / "output"
    manifest = json.loads((out / "manifest.json").read_text())
    kept = {r["id"]: r for r in ledger.values() if r["fate"]["status"] == "kept"}
    max_side = manifest["config"]["output"]["max_side"]
    seen: list[str] = []
    for shard in manifest["files"]["shards"]:
        samples = list(wds.WebDataset(str(out / shard["path"]), shardshuffle=False, empty_check=False))
        assert len(samples) == shard["samples"]
        index = pq.read_table(out / shard["index"]["path"]).to_pylist()
        assert [r["key"] for r in index] == [s["__key__"] for s in samples]
        assert {r["shard"] for r in index} == {Path(shard["path"]).name}
        for sample in samples:
            key = sample["__key__"]
            rec = kept[key]
            assert set(sample) - {"__key__", "__url__", "__local_path__"} == {rec["out_ext"], "txt", "json"}
            meta = json.loads(sample["json"])
            assert sample["txt"].decode("utf-8") == rec["caption"] == meta["caption"]
            assert meta["id"] == key
            assert meta["scores"] == rec["scores"]  # every declared score is computed for a kept sample
            assert meta["labels"] == rec["labels"]
            assert meta["source"] == rec["source"]
            with Image.open(io.BytesIO(sample[rec["out_ext"]])) as img:
                img.load()
                assert img.size == (rec["out_width"], rec["out_height"]) == (meta["out_width"], meta["out_height"])
                assert max(img.size) <= max_side
                assert max(img.size) == min(max_side, max(rec["width"], rec["height"]))
            seen.append(key)
    assert len(seen) == len(set(seen)) == len(kept)
    assert set(seen) == set(kept)
    assert manifest["totals"]["samples"] == len(kept)
    assert manifest["totals"]["bytes"] == sum(s["bytes"] for s in manifest["files"]["shards"])


def test_corpus_build_is_deterministic(tmp_path: Path) -> None:
    a = demo.build_corpus(tmp_path / "a")
    b = demo.build_corpus(tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_build_refuses_a_folder_with_other_files(tmp_path: Path) -> None:
    corpus = demo.build_corpus(tmp_path / "corpus")
    assert demo.build_corpus(corpus) == corpus  # rebuilding over a demo corpus is fine
    (corpus / "holiday.jpg").write_bytes(b"not a demo file")
    with pytest.raises(OutputError, match=r"holiday\.jpg"):
        demo.build_corpus(corpus)
    assert (corpus / "holiday.jpg").read_bytes() == b"not a demo file"


def test_rerun_into_another_folder_is_byte_identical(tmp_path: Path) -> None:
    corpus = demo.build_corpus(tmp_path / "corpus")
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(demo.demo_config()[0].model_dump(mode="json")))
    outs = [tmp_path / "out1", tmp_path / "out2"]
    for out in outs:
        args = ["caption", "--input", str(corpus), "--output", str(out), "--config", str(config), "--no-progress"]
        assert main(args) == 0
    manifests = [json.loads((out / "manifest.json").read_text()) for out in outs]
    assert manifests[0]["files"] == manifests[1]["files"]
    assert manifests[0]["files"]["shards"], "the demo run wrote no shards"
    for folder in TABLE_DIRS:
        files = sorted(str(p.relative_to(outs[0])) for p in (outs[0] / folder).rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(outs[1])) for p in (outs[1] / folder).rglob("*") if p.is_file())
        assert files, folder
        for name in files:
            assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
