"""Video inputs through fsspec: folders or URIs of video files, video webdataset shards
(video2dataset's `KEY.mp4` + `KEY.json` + `KEY.txt`), and jsonl rows naming a video and its caption.

As for images, inputs are listed into units (a slice of a folder, one tar shard, a slice of a jsonl
file) and reading a unit never raises: what cannot be read comes out quarantined with the error.
Records carry a local path when the video is a local file, else its bytes (tar members, remote
files), which the analysis step spools to a temporary file for the decoders.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterator
from typing import Any

import braceexpand
import fsspec
from webdataset.tariterators import group_by_keys, tar_file_iterator

from mmcurate.schemas import Source, VideoRecord

from .base import Params
from .readers import _OBJECT_REPR, TAR_EXTS, InputError, Unit, _unstrip, _utf8, expand_uri, jsonl_units

VIDEO_EXTS = ("mp4", "mkv", "mov", "webm", "avi", "m4v", "mpg", "mpeg", "ts", "flv", "wmv", "3gp")
VIDEO_COLUMNS = ("video", "videos", "mp4", "video_path", "path", "file", "filepath", "file_name")
CAPTION_COLUMNS = ("caption", "text", "txt", "TEXT", "name", "title")
_DJ_TOKENS = ("<__dj__video>", "<|__dj__eoc|>", "<video>")


class VideoReadParams(Params):
    folder_unit_size: int = 16
    """Videos per unit of work (and per output shard group) when reading folders of files."""
    jsonl_unit_lines: int = 1000
    video_column: str | None = None
    """jsonl key naming the video (path or URI); None = the first of VIDEO_COLUMNS present."""
    caption_column: str | None = None
    video_root: str | None = None
    """Where relative paths in jsonl resolve; None = the jsonl file's folder."""


def file_id(data: bytes | None = None, path: str | None = None) -> str:
    """BLAKE2b-128 of the video bytes (streamed from `path` when given)."""
    h = hashlib.blake2b(digest_size=16)
    if path is not None:
        with fsspec.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    else:
        h.update(data or b"")
    return h.hexdigest()


def _kind(path: str) -> str | None:
    low = path.lower()
    if low.endswith(TAR_EXTS):
        return "wds"
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.rsplit(".", 1)[-1] in VIDEO_EXTS:
        return "video"
    return None


def _scan_video_inputs(inputs: list[str]) -> tuple[dict[tuple[str, str], str], dict[str, list[str]]]:
    """(containers (kind, path) -> the input naming them, input -> the loose video files it names)."""
    containers: dict[tuple[str, str], str] = {}
    loose: dict[str, list[str]] = {}
    for given in inputs:
        for uri in braceexpand.braceexpand(given):
            fs, _, paths, _ = expand_uri(uri)
            usable = [(k, p) for k, p in ((_kind(p), _unstrip(fs, p)) for p in paths) if k]
            if not usable:
                raise InputError(f"input {uri!r} holds no video files, tar shards or jsonl")
            for k, p in usable:
                if k == "video":
                    loose.setdefault(given, []).append(p)
                else:
                    containers.setdefault((k, p), given)
    return containers, loose


def list_video_units(inputs: list[str], params: VideoReadParams) -> list[Unit]:
    """Expand URIs (braces, globs, folders) into a sorted, deterministic list of units."""
    if not inputs:
        raise InputError("no input given: pass --input URI [URI ...]")
    containers, loose = _scan_video_inputs(inputs)
    units: list[Unit] = []
    for (kind, path), given in sorted(containers.items(), key=lambda kv: kv[0][1]):
        if kind == "wds":
            units.append(Unit(len(units), "wds", path, group=given))
        else:
            units += jsonl_units(path, params.jsonl_unit_lines, len(units), given)
    for given, files in loose.items():
        files = sorted(set(files))
        root = posixpath.commonpath(files) if len(files) > 1 else posixpath.dirname(files[0])
        for i in range(0, len(files), params.folder_unit_size):
            units.append(Unit(len(units), "videos", root, tuple(files[i : i + params.folder_unit_size]), group=given))
    return units


def _quarantine(unit: Unit, index: int, member: str, reason: str, error: str, uri: str = "") -> VideoRecord:
    src = Source(uri=uri or unit.uri, unit=unit.index, member=_utf8(member), index=index)
    rec = VideoRecord(id=file_id(src.ref().encode("utf-8", "surrogatepass")), source=src)
    return rec.settle(reason, error, stage="read")


def _clean(caption: str) -> str:
    for tok in _DJ_TOKENS:
        caption = caption.replace(tok, " ")
    return " ".join(caption.split())


def _record(unit: Unit, index: int, member: str, uri: str, caption: str, extra: dict, data: bytes | None = None):
    fs, path = fsspec.core.url_to_fs(uri)
    local = data is None and fs.protocol in ("file", ("file", "local"))
    if data is None and not local:
        with fs.open(path, "rb") as f:
            data = f.read()
    return VideoRecord(
        # A local file is hashed by the analysis step, in a child process with a timeout: reading can hang.
        id=file_id(data=data) if data is not None else "",
        source=Source(uri=_utf8(uri), unit=unit.index, member=_utf8(member), index=index),
        caption=_utf8(caption),
        extra=_utf8(json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str)),
        file_bytes=len(data) if data is not None else fs.size(path),
        path=path if local else None,
        data=data,
    )


def read_video_unit(unit: Unit, params: VideoReadParams) -> Iterator[VideoRecord]:
    """Yield every video of `unit`, read or quarantined; never raises for bad data."""
    reader = {"wds": _read_wds, "jsonl": _read_jsonl, "videos": _read_files}[unit.kind]
    count = 0
    try:
        for rec in reader(unit, params):
            count += 1
            yield rec
    except Exception as exc:  # the unit broke part-way (a truncated tar): the unread rest is one record
        error = _OBJECT_REPR.sub(unit.uri, f"{type(exc).__name__}: {exc}")
        yield _quarantine(unit, count, "<unread-remainder>", "read_error", error)


def _read_files(unit: Unit, params: VideoReadParams) -> Iterator[VideoRecord]:
    for i, uri in enumerate(unit.files):
        member = uri[len(unit.uri) + 1 :] if uri.startswith(unit.uri + "/") else posixpath.basename(uri)
        try:
            caption = ""
            try:
                with fsspec.open(uri.rsplit(".", 1)[0] + ".txt", "rb") as f:
                    caption = f.read().decode("utf-8", "replace").strip()
            except FileNotFoundError:
                pass
            yield _record(unit, i, member, uri, caption, {})
        except Exception as exc:  # this video (or its caption) only: the rest of the unit reads on
            yield _quarantine(unit, i, member, "read_error", f"{type(exc).__name__}: {exc}", uri=_utf8(uri))


def _resolve(base: str, value: str) -> str:
    """A jsonl's video path: URIs and absolute paths as given, relative ones against `base` (any fsspec URI)."""
    if "://" in value or value.startswith("/"):
        return value
    if "://" in base:
        protocol, rest = base.split("://", 1)
        return f"{protocol}://{posixpath.normpath(posixpath.join(rest, value))}"
    return posixpath.normpath(posixpath.join(base, value))


def _read_wds(unit: Unit, params: VideoReadParams) -> Iterator[VideoRecord]:
    with fsspec.open(unit.uri, "rb") as f:
        members = ({**m, "__url__": unit.uri} for m in tar_file_iterator(f))
        for i, sample in enumerate(group_by_keys(members)):
            key = sample["__key__"]
            ext = next((e for e in VIDEO_EXTS if e in sample), None)
            if ext is None:
                present = sorted(k for k in sample if not k.startswith("__"))
                yield _quarantine(unit, i, key, "missing_video", f"no video member among {present}")
                continue
            meta: dict[str, Any] = {}
            if "json" in sample:
                try:
                    loaded = json.loads(sample["json"])
                    meta = loaded if isinstance(loaded, dict) else {"json": loaded}
                except (ValueError, UnicodeDecodeError):
                    meta = {"json_error": "unparseable json member"}
            caption = sample["txt"].decode("utf-8", "replace").strip() if "txt" in sample else ""
            if not caption and isinstance(meta.get("caption"), str):
                caption = meta["caption"].strip()
            yield _record(unit, i, f"{key}.{ext}", unit.uri, caption, meta, data=sample[ext])


def _read_jsonl(unit: Unit, params: VideoReadParams) -> Iterator[VideoRecord]:
    base = params.video_root or posixpath.dirname(unit.uri)
    with fsspec.open(unit.uri, "rb") as f:
        f.seek(unit.offset)
        for lineno, raw in enumerate(f, unit.start):
            if unit.stop >= 0 and lineno >= unit.stop:
                break
            member = f"line{lineno + 1}"
            try:
                row = json.loads(raw.decode("utf-8", "replace"))
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as exc:
                yield _quarantine(unit, lineno, member, "bad_json", str(exc))
                continue
            col = params.video_column or next((c for c in VIDEO_COLUMNS if c in row), None)
            value = row.get(col) if col else None
            if isinstance(value, list):  # Data-Juicer rows list their videos; the video corpus takes the first
                value = value[0] if value else None
            if not isinstance(value, str) or not value:
                yield _quarantine(unit, lineno, member, "missing_video", f"no video path; keys are {sorted(row)}")
                continue
            cap_col = params.caption_column or next((c for c in CAPTION_COLUMNS if c in row), None)
            caption = _clean(str(row.get(cap_col) or "")) if cap_col else ""
            extra = {k: v for k, v in row.items() if k not in (col, cap_col)}
            uri = _resolve(base, value)
            try:
                record = _record(unit, lineno, member, uri, caption, extra)
            except Exception as exc:  # missing file, unknown protocol, no network: this row only
                error = f"{type(exc).__name__}: {exc}"
                yield _quarantine(unit, lineno, member, "missing_video", error, uri=_utf8(uri))
                continue
            yield record
