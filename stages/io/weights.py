"""Model weights on object storage (`s3://`, `gs://`, any fsspec URL): copied once per machine into a
local cache, so that a cluster's workers load the same checkpoint from the bucket the run's config
names, and the model libraries (open_clip, transformers, torch) get the local path they need.

The cache entry is keyed by the URL and what the store says of the object (size, ETag, generation
or modification time), so a replaced checkpoint is fetched again. The SDK processes of one machine
take a file lock on the entry: one downloads (to a temporary name, renamed into place), the others
wait and load its copy. Local paths pass through unchanged. URLs in messages are redacted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fsspec

from mmcurate.schemas.redact import redact_text

CACHE_ENV = "MMCURATE_WEIGHTS_CACHE"
"""Where remote weights are cached; default ~/.cache/mmcurate/weights."""
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class WeightsUnavailable(FileNotFoundError):
    """A weights URL that cannot be read; the message names it."""


def is_remote(uri: str | None) -> bool:
    """A URL of a filesystem other than the local one (`file://` is local)."""
    return bool(uri) and bool(_URL.match(uri)) and not uri.startswith("file://")  # type: ignore[arg-type]


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mmcurate" / "weights")


def _identity(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any]) -> dict[str, Any]:
    """What identifies this version of the object (or of every file of a folder)."""
    if info.get("type") == "directory":
        files = sorted(fs.find(path, detail=True).items())
        return {"files": [[name[len(path) :], _version(i)] for name, i in files]}
    return {"file": _version(info)}


def _version(info: dict[str, Any]) -> list[Any]:
    keys = ("ETag", "etag", "generation", "md5Hash", "sha256", "blob_id", "mtime", "LastModified", "last_modified")
    stamp = next((info[k] for k in keys if info.get(k)), None)
    return [info.get("size"), str(stamp) if stamp is not None else None]


def stat(uri: str) -> dict[str, Any]:
    """The object's (or folder's) metadata; WeightsUnavailable when it is not there."""
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        return fs.info(path)
    except FileNotFoundError:
        raise WeightsUnavailable(f"{redact_text(uri)} does not exist") from None
    except Exception as exc:  # credentials, network, an unknown protocol: say which URL
        raise WeightsUnavailable(redact_text(f"{uri} cannot be read: {type(exc).__name__}: {exc}")) from None


def local_copy(uri: str) -> str:
    """A local path holding `uri` (a file or a folder): `uri` itself when local, else the cached copy."""
    if not is_remote(uri):
        return uri.removeprefix("file://")
    fs, path = fsspec.core.url_to_fs(uri)
    info = stat(uri)
    key = json.dumps([uri, _identity(fs, path, info)], sort_keys=True)
    entry = cache_root() / hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
    dest = entry / Path(path.rstrip("/")).name
    if dest.exists():
        return str(dest)
    entry.mkdir(parents=True, exist_ok=True)
    with _locked(entry / ".lock"):
        if not dest.exists():  # another process of this machine may have copied it while we waited
            _download(fs, path, info, dest)
    return str(dest)


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any], dest: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".part-", dir=dest.parent))
    try:
        target = tmp / dest.name
        if info.get("type") == "directory":
            fs.get(path.rstrip("/") + "/", str(target), recursive=True)
        else:
            fs.get(path, str(target))
        os.rename(target, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
