"""Writers: webdataset shards, parquet files and JSON, all atomic and byte-for-byte reproducible.

Atomic: every file is written under a temporary name and renamed into place, so a killed run
leaves no half-written shard. Reproducible: tar members carry a fixed mtime/owner, JSON keys are
sorted and records are written in input order, so a rerun on the same input gives identical bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from webdataset import TarWriter

from mmcurate.schemas import CaptionSample

from .base import Params

FIXED_MTIME = 0
"""An int: a float mtime makes tarfile add a PAX header (1 KiB) to every member."""


class ShardParams(Params):
    max_samples: int = 10_000
    """Most samples in one shard."""
    max_bytes: int = 1_000_000_000
    """Most bytes in one shard (tar headers included); whichever bound is hit first closes a shard."""

    def model_post_init(self, _context: object) -> None:
        if self.max_samples < 1 or self.max_bytes < 1024:
            raise ValueError("output.shard.max_samples must be >= 1 and output.shard.max_bytes >= 1024")


def join(root: str, *parts: str) -> str:
    return posixpath.join(root.rstrip("/"), *parts)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def atomic_write(uri: str, data: bytes) -> str:
    """Write `data` to `uri` under a temporary name, then rename; return its sha256."""
    fs, path = fsspec.core.url_to_fs(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        if _is_local(fs):
            os.replace(tmp, path)
        else:
            fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    return hashlib.sha256(data).hexdigest()


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode()


@dataclass
class FileInfo:
    path: str
    """Relative to the output root."""
    bytes: int
    sha256: str


@dataclass
class ShardInfo:
    path: str
    samples: int
    bytes: int
    sha256: str
    index: FileInfo

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_json(rec: CaptionSample) -> dict[str, Any]:
    """The per-sample JSON member: everything a trainer or auditor needs, scores included."""
    row = rec.to_row()
    row["scores"] = dict(row["scores"])
    row["labels"] = dict(row["labels"])
    if hasattr(rec, "extra"):
        row["extra"] = json.loads(rec.extra or "{}")
    row.pop("fate", None)
    return row


def _members(rec: CaptionSample) -> dict[str, bytes | None]:
    """The tar members of one sample, by extension (a missing image fails in TarWriter, loudly)."""
    ext, media = rec.media()
    return {
        ext: media,
        "txt": rec.caption.encode("utf-8"),
        "json": json.dumps(sample_json(rec), sort_keys=True, ensure_ascii=False).encode("utf-8"),
    }


def _tar_bytes(samples: Sequence[CaptionSample]) -> bytes:
    buf = io.BytesIO()
    with TarWriter(buf, encoder=False, mtime=FIXED_MTIME) as sink:
        for rec in samples:
            sink.write({"__key__": rec.id, **_members(rec)})
    return buf.getvalue()


def index_schema(record_schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field("key", pa.string()), pa.field("shard", pa.string()), *record_schema])


def _chunks(samples: Sequence[CaptionSample], params: ShardParams) -> Iterable[Sequence[CaptionSample]]:
    chunk: list[CaptionSample] = []
    size = 1024  # tar end-of-archive blocks
    for rec in samples:
        rec_bytes = sum(512 + -(-len(v or b"") // 512) * 512 for v in _members(rec).values())
        # tar pads the whole archive to a multiple of its record size (10 KiB); count that too.
        padded = -(-(size + rec_bytes) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE
        if chunk and (len(chunk) >= params.max_samples or padded > params.max_bytes):
            yield chunk
            chunk, size = [], 1024
        chunk.append(rec)
        size += rec_bytes
    if chunk:
        yield chunk


def write_unit_shards(
    samples: Sequence[CaptionSample], unit: int, out_root: str, params: ShardParams
) -> list[ShardInfo]:
    """Write one unit's kept samples (already in input order) as shards plus a parquet index each."""
    infos = []
    schema = index_schema(type(samples[0]).arrow_schema()) if samples else None
    for n, chunk in enumerate(_chunks(samples, params)):
        name = f"part-{unit:05d}-{n:04d}"
        tar = _tar_bytes(chunk)
        tar_sha = atomic_write(join(out_root, "shards", name + ".tar"), tar)
        rows = [{"key": r.id, "shard": name + ".tar", **r.to_row()} for r in chunk]
        index = parquet_bytes(pa.Table.from_pylist(rows, schema=schema))
        index_sha = atomic_write(join(out_root, "shards", name + ".parquet"), index)
        infos.append(
            ShardInfo(
                path=f"shards/{name}.tar",
                samples=len(chunk),
                bytes=len(tar),
                sha256=tar_sha,
                index=FileInfo(f"shards/{name}.parquet", len(index), index_sha),
            )
        )
    return infos


def write_table(out_root: str, rel: str, table: pa.Table) -> FileInfo:
    data = parquet_bytes(table)
    return FileInfo(rel, len(data), atomic_write(join(out_root, rel), data))


def local_tempdir() -> str:
    return tempfile.mkdtemp(prefix="mmcurate-")
