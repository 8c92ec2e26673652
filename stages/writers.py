"""Writers: webdataset shards, parquet tables and JSON, all atomic and byte-for-byte reproducible.

Atomic: every file is written under a temporary name beside its destination and renamed into place,
so a killed run leaves no half-written file. Reproducible: tar members carry a fixed mtime and owner,
JSON keys are sorted, records are written in input order, parquet is written with fixed options, so
a rerun on the same input gives identical bytes. Shards are streamed to disk one sample at a time
(a shard is never held in memory) and rotate on a sample count or a byte size.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from mmcurate.schemas import Fields, Record, sample_json_bytes

from .base import Params
from .io.paths import is_local

FIXED_MTIME = 0
"""An int: a float mtime makes tarfile add a PAX header (1 KiB) to every member."""
OWNER = "bigdata"
"""webdataset's member owner and group: shards read the same whichever tool wrote them."""


class TarWriter:
    """webdataset's sample layout (`KEY.EXT` members, sorted by extension, mode 0444, fixed mtime and
    owner) written with tarfile itself: importing webdataset pulls in torch (2 s of every start-up)."""

    def __init__(self, fileobj: Any) -> None:
        self.tar = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 - close()

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        for ext in sorted(k for k in sample if not k.startswith("_")):
            data = sample[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), FIXED_MTIME, 0o444, OWNER, OWNER
            self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()

    def __enter__(self) -> TarWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


TAR_END = 1024
"""Two zero blocks end a tar archive."""


class ShardParams(Params):
    max_samples: int = Field(10_000, ge=1)
    """Most samples in one shard."""
    max_bytes: int = Field(1_000_000_000, ge=1024)
    """Most bytes in one shard (tar headers and padding included); whichever bound is hit first closes it."""


def join(root: str, *parts: str) -> str:
    return posixpath.join(root.rstrip("/"), *parts)


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what passes through it."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner, self.sha, self.size = inner, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += len(view)
        self.inner.write(view)
        return len(view)


@contextlib.contextmanager
def atomic_file(uri: str) -> Iterator[_Hashing]:
    """A binary file that appears at `uri` only when the block ends without an error.

    Local: a temporary name in the destination's folder, then `os.replace`. Elsewhere: a local
    temporary file, uploaded under a temporary name, then moved. `.sha` and `.size` describe it."""
    fs, path = fsspec.core.url_to_fs(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    local = is_local(fs)
    if local:
        staging = tmp
    else:
        fd, staging = tempfile.mkstemp(prefix="mmcurate-")
        os.close(fd)
    try:
        with open(staging, "wb") as raw:
            out = _Hashing(raw)
            yield out
        if local:
            os.replace(staging, path)
        else:
            fs.put_file(staging, tmp)
            fs.mv(tmp, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
        if not local and fs.exists(tmp):
            fs.rm(tmp)


def atomic_write(uri: str, data: bytes) -> str:
    """Write `data` to `uri` atomically; return its sha256."""
    with atomic_file(uri) as f:
        f.write(data)
    return f.sha.hexdigest()


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ShardInfo:
    path: str
    samples: int
    bytes: int
    sha256: str
    index: FileInfo

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_bytes(out_root: str, rel: str, data: bytes) -> FileInfo:
    """`data` written atomically at `out_root/rel`; the manifest's entry for it (size, sha256)."""
    return FileInfo(rel, len(data), atomic_write(join(out_root, rel), data))


def write_table(out_root: str, rel: str, table: pa.Table) -> FileInfo:
    return write_bytes(out_root, rel, parquet_bytes(table))


def write_json(out_root: str, rel: str, obj: Any) -> FileInfo:
    return write_bytes(out_root, rel, json_bytes(obj))


def index_schema(record_schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field("key", pa.string()), pa.field("shard", pa.string()), *record_schema])


def _tar_size(members: dict[str, bytes]) -> int:
    """Bytes a sample adds to a tar: a 512-byte header per member plus its data padded to 512."""
    return sum(512 + -(-len(v) // 512) * 512 for v in members.values())


def _padded(size: int) -> int:
    """tar pads the archive (end blocks included) to a multiple of its record size (10 KiB)."""
    return -(-(size + TAR_END) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


class _Shard:
    """One shard being written: its tar streams to an atomic file, its index rows wait in memory."""

    def __init__(self, out_root: str, name: str, record_schema: pa.Schema) -> None:
        self.out_root, self.name, self.schema = out_root, name, record_schema
        self.rel = f"shards/{name}.tar"
        self._file = atomic_file(join(out_root, self.rel))
        self._out = self._file.__enter__()
        self._tar = TarWriter(self._out)
        self.rows: list[dict[str, Any]] = []
        self.size = 0

    def add(self, key: str, members: dict[str, bytes], row: dict[str, Any]) -> None:
        self._tar.write({"__key__": key, **members})
        self.rows.append({"key": key, "shard": self.name + ".tar", **row})
        self.size += _tar_size(members)

    def close(self) -> ShardInfo:
        self._tar.close()
        self._file.__exit__(None, None, None)
        index = write_table(
            self.out_root, f"index/{self.name}.parquet", pa.Table.from_pylist(self.rows, schema=self.schema)
        )
        return ShardInfo(self.rel, len(self.rows), self._out.size, self._out.sha.hexdigest(), index)

    def abort(self, exc: BaseException) -> None:
        with contextlib.suppress(Exception):
            self._file.__exit__(type(exc), exc, exc.__traceback__)


def write_shards(
    samples: Iterable[Record], unit: int, out_root: str, params: ShardParams, fields: Fields
) -> list[ShardInfo]:
    """Write one unit's kept samples (in input order) as `shards/part-UUUUU-NNNN.tar` with one parquet
    index each under `index/`. A sample's members are built once, right before it is written."""
    infos: list[ShardInfo] = []
    shard: _Shard | None = None
    schema: pa.Schema | None = None
    try:
        for rec in samples:
            try:
                members = {**rec.members(), "json": sample_json_bytes(rec, fields)}
            except Exception as exc:  # its media cannot be had (a spool file gone): this sample only
                rec.settle("internal_error", f"write: {type(exc).__name__}: {exc}", stage="write")
                continue
            size = _tar_size(members)
            if shard is not None and (
                len(shard.rows) >= params.max_samples or _padded(shard.size + size) > params.max_bytes
            ):
                infos.append(shard.close())
                shard = None
            if shard is None:
                schema = schema or index_schema(type(rec).arrow_schema(fields))
                shard = _Shard(out_root, f"part-{unit:05d}-{len(infos):04d}", schema)
            shard.add(rec.id, members, rec.to_row(fields))
        if shard is not None:
            infos.append(shard.close())
            shard = None
    except BaseException as exc:
        if shard is not None:
            shard.abort(exc)
        raise
    return infos
