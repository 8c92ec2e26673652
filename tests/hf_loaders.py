"""Hugging Face `datasets` on a run's outputs: every parquet table and the shard folder must load as
they are, with the library's own loaders (`load_dataset("parquet")`, `load_dataset("webdataset")`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # offline before the import: datasets reads these once

datasets.disable_progress_bars()


def table_dirs(out: Path) -> list[Path]:
    """Every folder of the run that holds parquet files (one table each)."""
    return sorted({p.parent for p in out.rglob("*.parquet")})


def assert_loads_everything(out: Path, cache: Path) -> dict[str, int]:
    """Load each table folder and the shards; rows and samples must match what pyarrow and the
    manifest say. Returns rows per folder (relative name), so callers can check what was there."""
    seen: dict[str, int] = {}
    for folder in table_dirs(out):
        rel = str(folder.relative_to(out))
        want = sum(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet"))
        ds = datasets.load_dataset("parquet", data_dir=str(folder), split="train", cache_dir=str(cache / rel))
        assert ds.num_rows == want, rel
        if want:
            first = ds[0]  # decodes a row: every column has a datasets type
            assert set(first) == set(pq.read_schema(next(folder.glob("*.parquet"))).names), rel
        seen[rel] = want
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest["totals"]["samples"]:
        features = None
        if manifest.get("corpus") == "interleaved":  # samples hold different members: features are given
            from mmcurate.export import shard_features

            features = shard_features(datasets, sorted(str(p) for p in (out / "shards").glob("*.tar")))
        ds = datasets.load_dataset(
            "webdataset", data_dir=str(out / "shards"), split="train", cache_dir=str(cache / "shards"),
            features=features,
        )  # fmt: skip
        assert ds.num_rows == manifest["totals"]["samples"]
        for name, feature in ds.features.items():
            if isinstance(feature, datasets.Video):  # decoding needs torchcodec; the bytes are what we check
                ds = ds.cast_column(name, datasets.Video(decode=False))
        keys = {row["__key__"] for row in ds}
        assert len(keys) == ds.num_rows
        index = {r["key"] for p in (out / "index").glob("*.parquet") for r in pq.read_table(p).to_pylist()}
        assert keys == index
        seen["shards"] = ds.num_rows
    return seen
