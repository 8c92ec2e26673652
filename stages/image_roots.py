"""Where an interleaved corpus's images live when its documents only name them (MMC4 ships them apart):
a folder, uncompressed tar shards (members by name, or img2dataset `.json` sidecars by `url`), or
parquet files keyed by `image_name` / `url`, each indexed once per process and read by range.
"""

from __future__ import annotations

import abc
import functools
import json
import posixpath
import tarfile
from typing import Any

import fsspec
import pyarrow.parquet as pq

from mmcurate.schemas import media_ref, read_media

from .io import (
    TAR_EXTS,
    InputError,
    ReadRefused,
    expand_uri,
    read_bytes,
    resolve_inside,
    unstrip,
)
from .io.containers import sample_key
from .readers import IMAGE_EXTS

WEB_SCHEMES = ("http", "https", "ftp")
ROOT_KEY_COLUMNS = ("image_name", "url")
"""Parquet image-root columns an image is looked up by (`url`: img2dataset's parquet output)."""
ROOT_BYTES_COLUMNS = ("image", "bytes", "jpg", "jpeg", "png", "webp", "image_bytes", "img")


def is_web_url(value: Any) -> bool:
    return isinstance(value, str) and value.split("://", 1)[0].lower() in WEB_SCHEMES and "://" in value


class RootError(ValueError):
    """An image root that cannot be used (nothing there, a compressed tar, no key or bytes column)."""


class NoImage(Exception):
    """The image of one slot cannot be had: `reason` is the slot's code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ImageRoot(abc.ABC):
    """Where a document's named images are: `get(name)` -> bytes, or NoImage."""

    uri: str

    @abc.abstractmethod
    def get(self, name: str) -> bytes:
        """The bytes of the image `name` (an MMC4 image_name, a relative path, a web URL)."""

    def has(self, name: str) -> bool:
        """Whether the root holds `name`, without reading it (indexed roots only; a folder says False
        for URLs and cannot know the rest without a read)."""
        return False


class FolderRoot(ImageRoot):
    def __init__(self, uri: str, allow_outside: bool, timeout_s: float) -> None:
        self.uri, self.allow_outside, self.timeout_s = uri.rstrip("/") or "/", allow_outside, timeout_s

    def get(self, name: str) -> bytes:
        if is_web_url(name):
            raise NoImage("image_missing", f"{name!r} is a web URL: download the images first (img2dataset)")
        try:
            return read_bytes(resolve_inside(name, self.uri, self.allow_outside), self.timeout_s)
        except ReadRefused as exc:
            raise NoImage(exc.reason, str(exc)) from None
        except FileNotFoundError:
            raise NoImage("image_missing", f"{name!r} is not in {self.uri}") from None
        except (OSError, ValueError, ImportError) as exc:  # unreadable, unknown protocol, no fsspec driver
            raise NoImage("image_missing", f"{name!r}: {type(exc).__name__}: {exc}") from None


def _lookup_keys(name: str) -> list[str]:
    """The keys an indexed root is asked for: the name, without `./`, then its file name alone."""
    plain = posixpath.normpath(name) if name and not is_web_url(name) else name
    return list(dict.fromkeys([name, plain, posixpath.basename(plain)]))


class _IndexedRoot(ImageRoot):
    """A root of shards whose images are found by an index built once (name -> location)."""

    index: dict[str, Any]

    def _where(self, name: str) -> Any:
        for key in _lookup_keys(name):
            if key in self.index:
                return self.index[key]
        hint = " (a web URL: download the images first, img2dataset)" if is_web_url(name) else ""
        raise NoImage("image_missing", f"{name!r} is not in the image root {self.uri}{hint}")

    def has(self, name: str) -> bool:
        return any(key in self.index for key in _lookup_keys(name))


class TarRoot(_IndexedRoot):
    """Uncompressed tar shards: member name, its file name, and the `url` of an img2dataset `.json`
    sidecar -> (tar, data offset, size); an image is one range read."""

    def __init__(self, uri: str, files: list[str]) -> None:
        self.uri, self.index = uri, {}
        for tar in files:
            self._add(tar)

    def _add(self, tar: str) -> None:
        images: dict[str, tuple[str, int, int]] = {}
        urls: dict[str, str] = {}
        with fsspec.open(tar, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                raise RootError(f"{tar}: a compressed tar cannot be read by range; decompress the image shards")
            f.seek(0)
            with tarfile.open(fileobj=f, mode="r:") as tf:
                for info in tf:
                    self._member(tf, info, tar, images, urls)
        for key, url in urls.items():
            if key in images:
                self.index.setdefault(url, images[key])

    def _member(self, tf: tarfile.TarFile, info: tarfile.TarInfo, tar: str, images: dict, urls: dict) -> None:
        found = sample_key(info)
        if found is None:
            return
        key, ext = found
        if ext in IMAGE_EXTS:
            where = (tar, info.offset_data, info.size)
            images.setdefault(key, where)
            self.index.setdefault(info.name, where)
            self.index.setdefault(posixpath.basename(info.name), where)
        elif ext == "json" and info.size < 1 << 20:
            url = _json_url(tf.extractfile(info))
            if url:
                urls[key] = url

    def get(self, name: str) -> bytes:
        tar, offset, size = self._where(name)
        try:
            return read_media(media_ref(tar, offset, offset + size))
        except OSError as exc:
            raise NoImage("image_missing", f"{name!r} in {tar}: {type(exc).__name__}: {exc}") from None


def _json_url(member: Any) -> str:
    try:
        meta = json.loads(member.read()) if member is not None else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    url = meta.get("url") if isinstance(meta, dict) else None
    return url if isinstance(url, str) else ""


class ParquetRoot(_IndexedRoot):
    """Parquet files with an `image_name` (or `url`) column and an image bytes column: key -> (file,
    row group, row); a row group's bytes column is read when one of its images is asked for (the
    last few are cached, since documents name images stored near each other)."""

    def __init__(self, uri: str, files: list[str]) -> None:
        self.uri, self.index, self.column = uri, {}, {}
        for path in files:
            self._add(path)

    def _add(self, path: str) -> None:
        with fsspec.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            keys = [c for c in ROOT_KEY_COLUMNS if c in names]
            data = next((c for c in ROOT_BYTES_COLUMNS if c in names), None)
            if not keys or data is None:
                raise RootError(
                    f"{path}: an image-root parquet needs a key column ({' or '.join(ROOT_KEY_COLUMNS)}) and a bytes "
                    f"column ({', '.join(ROOT_BYTES_COLUMNS)}); its columns are {names}"
                )
            self.column[path] = data
            for rg in range(pf.metadata.num_row_groups):
                table = pf.read_row_group(rg, columns=keys)
                for key in keys:
                    for row, value in enumerate(table.column(key).to_pylist()):
                        if isinstance(value, str) and value:
                            self.index.setdefault(value, (path, rg, row))

    def get(self, name: str) -> bytes:
        path, rg, row = self._where(name)
        value = _row_group_column(path, rg, self.column[path])[row]
        if isinstance(value, dict):
            value = value.get("bytes")
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise NoImage("image_missing", f"{name!r} in {path} has no image bytes")
        return bytes(value)


@functools.lru_cache(maxsize=2)
def _row_group_column(path: str, rg: int, column: str) -> list[Any]:
    with fsspec.open(path, "rb") as f:
        return pq.ParquetFile(f).read_row_group(rg, columns=[column]).column(0).to_pylist()


def root_files(uri: str) -> tuple[str, list[str]]:
    """(kind, files) of an image root: "folder" (no files listed), "tar" or "parquet" shards."""
    low = uri.lower()
    if not any(c in uri for c in "*?[") and not low.endswith((*TAR_EXTS, ".parquet")):
        return "folder", []
    try:
        fs, _, paths, _ = expand_uri(uri)
    except InputError as exc:
        raise RootError(f"image root {uri!r}: {exc}") from None
    files = [unstrip(fs, p) for p in paths]
    kinds = {
        "tar" if p.lower().endswith(TAR_EXTS) else "parquet" if p.lower().endswith(".parquet") else "" for p in files
    }
    if len(kinds) != 1 or "" in kinds:
        raise RootError(f"image root {uri!r} must name tar shards or parquet files of one kind; it names {files[:5]}")
    return kinds.pop(), files


@functools.lru_cache(maxsize=16)
def image_root(uri: str, allow_outside: bool = False, timeout_s: float = 60.0) -> ImageRoot:
    """The image root at `uri`, opened (and indexed) once per process: workers read many units of
    the same corpus, and an index of a million images is built once, not per document."""
    kind, files = root_files(uri)
    if kind == "folder":
        return FolderRoot(uri, allow_outside, timeout_s)
    return TarRoot(uri, files) if kind == "tar" else ParquetRoot(uri, files)
