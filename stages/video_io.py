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
from typing import Any

import fsspec
from pydantic import Field

from mmcurate.schemas import Source, VideoRecord, media_ref

from .io import (
    TAR_EXTS,
    Adapter,
    BadRow,
    InputError,
    Item,
    ReadBase,
    ReadReport,
    Unit,
    attach_ignored,
    check_regular,
    clean_text,
    hidden,
    is_local,
    jsonl_units,
    read_bytes,
    resolve_inside,
    scan_inputs,
    utf8,
)
from .io import read_unit as read_with

VIDEO_EXTS = ("mp4", "mkv", "mov", "webm", "avi", "m4v", "mpg", "mpeg", "ts", "flv", "wmv", "3gp")
VIDEO_COLUMNS = ("video", "videos", "mp4", "video_path", "path", "file", "filepath", "file_name")
CAPTION_COLUMNS = ("caption", "text", "txt", "TEXT", "name", "title")
_DJ_TOKENS = ("<__dj__video>", "<|__dj__eoc|>", "<video>")


class VideoReadParams(ReadBase):
    folder_unit_size: int = Field(16, ge=1)
    """Videos per unit of work (and per output shard group) when reading folders of files."""
    jsonl_unit_lines: int = Field(1000, ge=1)
    video_column: str | None = None
    """jsonl key naming the video (path or URI); None = the first of VIDEO_COLUMNS present."""
    caption_column: str | None = None
    video_root: str | None = None
    """Where relative paths in jsonl resolve; None = the jsonl file's folder."""
    allow_outside_root: bool = False
    """Let rows name absolute paths, URIs, `..` out of the root or symlinks leaving it (refused by default)."""
    timeout_s: float = Field(60.0, gt=0)
    """A caption sidecar (`NAME.txt`) read may take this long before its video is quarantined as
    `read_timeout` (videos themselves are read in the analysis child, under `limits`)."""


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


def _classify(path: str) -> str | None:
    if hidden(path):
        return None
    low = path.lower()
    if low.endswith(TAR_EXTS):
        return "wds"
    if low.endswith(".jsonl"):
        return "jsonl"
    ext = low.rsplit(".", 1)[-1]
    if ext in VIDEO_EXTS:
        return "media"
    return "sidecar" if ext in ("txt", "json") else None


def list_video_units(inputs: list[str], params: VideoReadParams) -> list[Unit]:
    """Expand URIs (braces, globs, folders) into a sorted, deterministic list of units; files beside the
    videos that are neither videos nor their sidecars are counted in the manifest (`ignored_files`)."""
    scan = scan_inputs(inputs, _classify, "video files, tar shards or jsonl")
    units: list[Unit] = []
    for (kind, path), given in sorted(scan.containers.items(), key=lambda kv: kv[0][1]):
        if kind == "wds":
            units.append(Unit(len(units), "wds", path, group=given))
        else:
            units += jsonl_units(path, params.jsonl_unit_lines, len(units), given)
    for given, found in scan.loose.items():
        files = sorted({p for _, p in found})
        root = posixpath.commonpath(files) if len(files) > 1 else posixpath.dirname(files[0])
        for i in range(0, len(files), params.folder_unit_size):  # start: where the slice begins (--limit)
            units.append(
                Unit(len(units), "videos", root, tuple(files[i : i + params.folder_unit_size]), start=i, group=given)
            )
    return attach_ignored(units, {given: [p for _, p in other] for given, other in scan.other.items()})


def _clean(caption: str) -> str:
    for tok in _DJ_TOKENS:
        caption = caption.replace(tok, " ")
    return " ".join(clean_text(caption).split())


class VideoAdapter(Adapter):
    params: VideoReadParams
    by_reference = VIDEO_EXTS

    def quarantine(self, unit: Unit, item: Item, reason: str, error: str) -> VideoRecord:
        src = Source(uri=utf8(item.uri or unit.uri), unit=unit.index, member=utf8(item.member), index=item.index)
        rec = VideoRecord(id=file_id(src.ref().encode("utf-8", "surrogatepass")), source=src)
        return rec.settle(reason, error, stage="read")

    def _record(
        self, unit: Unit, item: Item, uri: str, caption: str, extra: dict, data: bytes | None = None,
        span: tuple[int, int] | None = None,
    ) -> VideoRecord:  # fmt: skip
        """`data`: the video's bytes (a compressed tar's member); `span`: (offset, size) of them
        inside `uri`; neither: `uri` is the video. Only `data` puts bytes on the record: a local
        file is a path, a remote file or a member of a plain tar a reference (`media`), read where
        the video is analysed."""
        fs, path = fsspec.core.url_to_fs(uri)
        local = data is None and span is None and is_local(fs)
        if local:
            check_regular(uri)  # a FIFO or a device is refused here, never handed to a decoder
        size = len(data) if data is not None else span[1] if span is not None else fs.size(path)
        media = None if local or data is not None else media_ref(uri, *((span[0], span[0] + span[1]) if span else ()))
        return VideoRecord(
            # A local file is hashed by the analysis step, in a child process with a timeout: reading can hang.
            id=file_id(data=data) if data is not None else "",
            source=Source(uri=utf8(uri), unit=unit.index, member=utf8(item.member), index=item.index),
            caption=_clean(caption),
            extra=utf8(json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str)),
            file_bytes=size,
            path=path if local else None,
            data=data,
            media=media,
        )

    def from_file(self, unit: Unit, item: Item) -> VideoRecord:
        uri = item.path or ""
        caption = ""
        try:  # refused (a FIFO, a stalled mount): the video is quarantined with the reason
            sidecar = read_bytes(uri.rsplit(".", 1)[0] + ".txt", self.params.timeout_s)
            caption = sidecar.decode("utf-8", "replace").strip()
        except FileNotFoundError:
            pass
        return self._record(unit, item, uri, caption, {})

    def from_members(self, unit: Unit, item: Item) -> VideoRecord:
        sample, spans = item.members or {}, item.spans or {}
        ext = next((e for e in VIDEO_EXTS if e in sample or e in spans), None)
        if ext is None:
            raise BadRow("missing_video", f"no video member among {sorted(sample)}")
        meta: dict[str, Any] = {}
        if "json" in sample:
            try:
                loaded = json.loads(sample["json"])
                meta = loaded if isinstance(loaded, dict) else {"json": loaded}
            except (ValueError, UnicodeDecodeError, RecursionError):
                meta = {"json_error": "unparseable json member"}
        caption = sample["txt"].decode("utf-8", "replace").strip() if "txt" in sample else ""
        if not caption and isinstance(meta.get("caption"), str):
            caption = meta["caption"].strip()
        item.member = f"{item.member}.{ext}"
        if ext in spans:  # a reference into the tar: the bytes are read where the video is analysed
            return self._record(unit, item, unit.uri, caption, meta, span=spans[ext])
        return self._record(unit, item, unit.uri, caption, meta, data=sample[ext])

    def from_row(self, unit: Unit, item: Item) -> VideoRecord:
        row = item.row or {}
        p = self.params
        col = p.video_column or next((c for c in VIDEO_COLUMNS if c in row), None)
        value = row.get(col) if col else None
        if isinstance(value, list):  # Data-Juicer rows list their videos; the video corpus takes the first
            value = value[0] if value else None
        if not isinstance(value, str) or not value:
            raise BadRow("missing_video", f"no video path; keys are {sorted(row)}")
        cap_col = p.caption_column or next((c for c in CAPTION_COLUMNS if c in row), None)
        caption = row.get(cap_col) if cap_col else ""
        if caption is not None and not isinstance(caption, str):
            raise BadRow("bad_row", f"column {cap_col!r} is a {type(caption).__name__}, not a string")
        extra = {k: v for k, v in row.items() if k not in (col, cap_col)}
        uri = resolve_inside(value, p.video_root or posixpath.dirname(unit.uri), p.allow_outside_root)
        try:
            return self._record(unit, item, uri, caption or "", extra)
        except (OSError, ValueError, ImportError) as exc:  # missing, unknown protocol, no network: this row only
            raise BadRow("missing_video", f"{type(exc).__name__}: {exc}") from None


def read_video_unit(unit: Unit, params: VideoReadParams, report: ReadReport | None = None):
    """Yield every video of `unit`, read or quarantined; never raises for bad data."""
    return read_with(unit, VideoAdapter(params), report)


__all__ = ["InputError", "VideoReadParams", "file_id", "list_video_units", "read_video_unit"]
