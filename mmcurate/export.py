"""`mmcurate export`: a run's kept data as a Hugging Face `datasets` folder (`save_to_disk` layout).

For users who train from `datasets.load_from_disk`. The folder is built by `datasets`' own loaders
on our outputs, the same ones the docs show (`load_dataset("webdataset")` on the shards,
`load_dataset("parquet")` on verl's files, `load_dataset("json")` on the SFT rows), so the export
holds exactly what a trainer reading the run directly would see:

* a caption or video run: its webdataset shards, one `train` split;
* an interleaved run: its shards too; a document has as many image members as it kept images, so the
  features are given to the loader (`json` plus every `<slot>.<ext>` member the shards hold, a missing
  one None) instead of inferred from the first samples, which `datasets` requires to hold the same members;
* an RL run: `train` and `validation` from `rl/train/` and `rl/val/` (per-tier folders included);
* an SFT run: the ShareGPT rows with their images embedded (`datasets.Image`), so the folder needs
  nothing beside it unless rows have videos (those stay paths relative to the run folder).

The output is refused when it is the run folder, lies inside it or holds it (an export must not mix
with, or with `--overwrite` delete, the run it reads), and when it is not empty, unless `--overwrite`
says to replace it: then it is removed once the new data is built, just before it is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import fsspec

from mmcurate.stages.io.paths import is_local

SPLITS = {"train": "train", "val": "validation"}


class ExportError(ValueError):
    """The run cannot be exported as asked (not a finished local run, nothing kept)."""


def _datasets() -> Any:
    try:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        import datasets
    except ImportError as exc:
        raise ExportError("export needs Hugging Face datasets: pip install 'mmcurate[hf]'") from exc
    datasets.disable_progress_bars()
    return datasets


def _files(folder: Path, pattern: str) -> list[str]:
    return sorted(str(p) for p in folder.glob(pattern))


def _rl(ds: Any, run: Path, cache: str | None) -> dict[str, Any]:
    files = {name: _files(run / "rl" / split, "**/*.parquet") for split, name in SPLITS.items()}
    files = {name: paths for name, paths in files.items() if paths}
    return dict(ds.load_dataset("parquet", data_files=files, cache_dir=cache))


def _sft(ds: Any, run: Path, cache: str | None) -> dict[str, Any]:
    train = ds.load_dataset("parquet", data_files=_files(run / "sft", "*.parquet"), split="train", cache_dir=cache)

    def embed(row: dict[str, Any]) -> dict[str, Any]:
        return {"images": [{"bytes": (run / p).read_bytes(), "path": p} for p in row["images"]]}

    features = train.features.copy()
    features["images"] = ds.List(ds.Image())
    train = train.map(embed, features=features)
    return {"train": train}


def _shards(ds: Any, run: Path, cache: str | None, features: Any = None) -> dict[str, Any]:
    train = ds.load_dataset(
        "webdataset", data_dir=str(run / "shards"), split="train", cache_dir=cache, features=features
    )
    return {"train": train}


def shard_features(ds: Any, shards: list[str]) -> Any:
    """The features of shards whose samples hold different members (interleaved documents): the
    first sample's `json` structure (every sample's JSON has the same columns) and every other
    member name any sample has, as an image."""
    import tarfile

    import pyarrow as pa

    names: set[str] = set()
    first: dict[str, Any] | None = None
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                field = member.name.partition(".")[2]
                if field != "json":
                    names.add(field)
                elif first is None:
                    first = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    structure = ds.Features.from_arrow_schema(pa.Table.from_pylist([first or {}]).schema)
    images = {name: ds.Image() for name in sorted(names, key=lambda n: (len(n), n))}
    return ds.Features(
        {"__key__": ds.Value("string"), "__url__": ds.Value("string"), "json": dict(structure), **images}
    )


def _interleaved(ds: Any, run: Path, cache: str | None) -> dict[str, Any]:
    return _shards(ds, run, cache, shard_features(ds, _files(run / "shards", "*.tar")))


def _check_output(run: Path, out: str, overwrite: bool) -> tuple[Any, str] | None:
    """Refuse an output that is, or overlaps, the run folder, or holds files and no `--overwrite`;
    return (filesystem, path) to remove before writing when `--overwrite` replaces something."""
    fs, path = fsspec.core.url_to_fs(out)
    if is_local(fs):
        target, source = Path(path).resolve(), run.resolve()
        if target == source or source in target.parents:
            raise ExportError(f"--output {out} is inside the run folder {run}: write the export somewhere else")
        if target in source.parents:
            raise ExportError(f"--output {out} holds the run {run}: write the export somewhere else")
    if not fs.exists(path) or (fs.isdir(path) and not fs.ls(path, detail=False)):
        return None
    if not overwrite:
        raise ExportError(
            f"--output {out} is not empty: pass --overwrite to replace what it holds, or name a new folder"
        )
    return fs, path


def export_hf(run_uri: str, out: str, cache: str | None = None, overwrite: bool = False) -> dict[str, int]:
    """Write the run's kept data to `out` with `save_to_disk`; return rows per split.
    `overwrite`: replace what `out` holds (by default it must be empty or absent)."""
    ds = _datasets()
    run = Path(run_uri)
    manifest_path = run / "manifest.json"
    if not manifest_path.is_file():
        raise ExportError(f"{run_uri}: no manifest.json (a finished local run is exported; copy a remote one first)")
    corpus = json.loads(manifest_path.read_text()).get("corpus", "")
    build = {"rl": _rl, "sft": _sft, "interleaved": _interleaved}.get(corpus, _shards)
    if build in (_shards, _interleaved) and not _files(run / "shards", "*.tar"):
        raise ExportError(f"{run_uri}: the run kept no sample (shards/ is empty)")
    if build in (_rl, _sft) and not _files(run / corpus, "**/*.*"):
        raise ExportError(f"{run_uri}: the run kept no question ({corpus}/ is empty)")
    replace = _check_output(run, out, overwrite)
    with tempfile.TemporaryDirectory(prefix="mmcurate-export-") as scratch:  # the loaders' cache: not kept
        splits = build(ds, run, cache or scratch)
        if replace is not None:
            replace[0].rm(replace[1], recursive=True)
        ds.DatasetDict(splits).save_to_disk(out)
        return {name: split.num_rows for name, split in splits.items()}
