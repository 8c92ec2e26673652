"""Real-world inputs from other projects (../shared/peer-data) through the whole caption pipeline.

Skipped cleanly when ../shared is absent (a user's fresh clone has none).
"""

from __future__ import annotations

import collections
import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcurate.cli import main

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer-data"
pytestmark = pytest.mark.peerdata


def need(rel: str) -> Path:
    path = PEER / rel
    if not path.exists():
        pytest.skip(f"peer data {rel} not present (../shared/peer-data)")
    return path


def run(tmp_path: Path, inputs: list[Path], config: str) -> tuple[dict, dict[str, dict]]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config)
    out = tmp_path / "out"
    args = ["caption", "--input", *map(str, inputs), "--output", str(out), "--config", str(cfg), "--no-progress"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    rows = {}
    for f in sorted((out / "ledger" / "caption").glob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            rows[r["source"]["uri"].rsplit("/", 1)[-1] + "#" + r["source"]["member"]] = r
    assert manifest["accounting_ok"]
    c = manifest["kinds"]["caption"]["counts"]
    assert c["input"] == len(rows) == c["kept"] + c["dropped"] + c["quarantined"]
    return manifest, rows


def test_data_juicer_images_dedup(tmp_path: Path) -> None:
    """Byte-identical copies in Data-Juicer's test images are exact duplicates of one kept image."""
    folder = need("data_juicer/tests_ops_data")
    images = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    _, rows = run(tmp_path, [folder], "filters: {}\ndedup: {near: true, max_distance: 4}\n")
    by_md5 = collections.defaultdict(list)
    for p in images:
        by_md5[hashlib.md5(p.read_bytes()).hexdigest()].append(p.name)
    fates = {k.split("#", 1)[1]: r for k, r in rows.items()}
    assert set(fates) == {p.name for p in images}
    ids = {name: r["id"] for name, r in fates.items()}
    for group in by_md5.values():
        pixels = {fates[n]["pixel_hash"] for n in group}
        assert len(pixels) == 1  # byte-identical files decode to identical pixels
        survivors = [n for n in group if fates[n]["fate"]["reason"] != "duplicate_exact"]
        assert len(survivors) == 1, group
        for n in group:
            if n != survivors[0]:
                assert fates[n]["fate"]["duplicate_of"] == ids[survivors[0]]
    assert sum(len(g) - 1 for g in by_md5.values()) >= 4  # the copies PROVENANCE.md lists
    for name, r in fates.items():  # every near duplicate really is within the distance of its keeper
        if r["fate"]["reason"] == "duplicate_near":
            keeper = next(v for v in fates.values() if v["id"] == r["fate"]["duplicate_of"])
            assert bin(int(r["phash"], 16) ^ int(keeper["phash"], 16)).count("1") <= 4, name


def test_img2dataset_resize_images_size_and_aspect(tmp_path: Path) -> None:
    """img2dataset's resize test images through min_side and aspect_ratio, judged on Pillow's own sizes."""
    folder = need("img2dataset/resize_test_image")
    _, rows = run(
        tmp_path, [folder], "filters:\n  min_side: {min: 200}\n  aspect_ratio: {max: 1.5}\ndedup: {near: false}\n"
    )
    for key, r in rows.items():
        with Image.open(folder / key.split("#", 1)[1]) as im:
            w, h = im.size
        assert (r["width"], r["height"]) == (w, h)
        want = "too_small" if min(w, h) < 200 else "aspect_ratio" if max(w, h) / min(w, h) > 1.5 else ""
        assert r["fate"]["reason"] == want, key
        assert r["fate"]["status"] == ("kept" if not want else "dropped")


def test_webdataset_shards_accounted(tmp_path: Path) -> None:
    """webdataset's own test shards (mostly non-image payloads) and NeMo Curator's image shard."""
    shards = [need("nemo_curator/image_data_00000_old.tar"), *sorted(need("webdataset/testdata").glob("*.tar"))]
    shards.append(need("webdataset/testdata/sample.tgz"))
    manifest, rows = run(tmp_path, shards, "filters:\n  min_side: {min: 16}\n")
    for shard in shards:
        with tarfile.open(shard) as tf:
            keys = {m.name.split(".", 1)[0] for m in tf.getmembers() if m.isfile()}
        mine = {k for k in rows if k.startswith(shard.name + "#")}
        assert len(mine) == len(keys), shard.name
    missing = [r for r in rows.values() if r["fate"]["reason"] == "missing_image"]
    assert missing and all(
        r["fate"]["status"] == "quarantined" and "no image member" in r["fate"]["error"] for r in missing
    )
    nemo = [r for k, r in rows.items() if k.startswith("image_data_00000_old.tar#")]
    assert len(nemo) == 1 and nemo[0]["fate"]["status"] == "kept" and nemo[0]["caption"]
    assert manifest["totals"]["samples"] == manifest["kinds"]["caption"]["counts"]["kept"] >= 1
