"""Readers for every caption-corpus layout, through fsspec (local, s3://, gs://, memory://, ...).

Inputs are first listed into *units* (one webdataset shard, one parquet file, one jsonl file, or a
slice of a folder): a unit is one element of parallel work and the grain of output shards. Reading a
unit never raises: a record that cannot be read comes out quarantined with the error, and a unit
that breaks part-way (a truncated tar) yields what it read plus one quarantined record for the rest,
so every input is accounted for.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import braceexpand
import fsspec
import pyarrow.parquet as pq
from webdataset.tariterators import group_by_keys, tar_file_iterator

from mmcurate.schemas import CaptionSample, Source

from .base import Params

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
TAR_EXTS = (".tar", ".tgz", ".tar.gz")


class InputError(ValueError):
    """An input URI that cannot be used: raised before the pipeline starts."""


class ReadParams(Params):
    folder_unit_size: int = 1000
    """Images per unit when reading a folder of images with sidecar captions."""
    jsonl_unit_lines: int = 100_000
    """Lines per unit for jsonl inputs."""
    image_column: str | None = None
    """Parquet/jsonl column with image bytes or path; None = detect from IMAGE_COLUMNS."""
    caption_column: str | None = None
    """Parquet/jsonl caption column; None = detect (caption, TEXT, text, txt), else LLaVA conversations."""
    image_root: str | None = None
    """Where relative image paths in parquet/jsonl resolve; None = the folder of the file naming them."""


@dataclass(frozen=True)
class Unit:
    index: int
    kind: str  # "wds" | "parquet" | "jsonl" | "folder"
    uri: str
    files: tuple[str, ...] = field(default_factory=tuple)
    start: int = 0
    stop: int = -1
    offset: int = 0
    """Byte offset of line `start` (jsonl), so a slice seeks instead of re-reading the lines before it."""
    group: str = ""
    """The --input argument this unit came from: "per input" statistics (top fractions) group by it."""


def content_id(image: bytes, caption: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(image)
    h.update(b"\0")
    h.update(caption.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _classify(path: str) -> str | None:
    low = path.lower()
    if low.endswith(TAR_EXTS):
        return "wds"
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith(".jsonl"):
        return "jsonl"
    if low.rsplit(".", 1)[-1] in IMAGE_EXTS:
        return "image"
    return None


def _unstrip(fs: Any, path: str) -> str:
    return fs.unstrip_protocol(path) if fs.protocol not in ("file", ("file", "local")) else path


def expand_uri(uri: str) -> tuple[Any, str, list[str], bool]:
    """(filesystem, path, the files it names, whether it named a folder): a glob, a folder (hidden
    files left out) or one file, sorted; InputError when nothing is there."""
    fs, path = fsspec.core.url_to_fs(uri)
    if any(c in path for c in "*?["):
        return fs, path, sorted(fs.glob(path)), False
    if fs.isdir(path):
        return fs, path, sorted(p for p in fs.find(path) if not posixpath.basename(p).startswith(".")), True
    if fs.exists(path):
        return fs, path, [path], False
    raise InputError(f"input {uri!r} does not exist")


def jsonl_units(path: str, lines: int, first_index: int, group: str) -> list[Unit]:
    """A jsonl file as units of `lines` lines, each knowing the byte offset where it starts."""
    n, offsets = _line_offsets(path, lines)
    return [
        Unit(first_index + i, "jsonl", path, start=i * lines, stop=min((i + 1) * lines, n), offset=offset, group=group)
        for i, offset in enumerate(offsets)
    ]


def _scan_inputs(inputs: list[str]) -> tuple[dict[tuple[str, str], str], dict[str, list[str]], dict[str, str]]:
    """(containers (kind, path) -> the input naming them, folder root -> images, folder root -> input)."""
    found: dict[tuple[str, str], str] = {}
    folders: dict[str, list[str]] = {}
    folder_group: dict[str, str] = {}
    for given in inputs:
        for uri in braceexpand.braceexpand(given):
            fs, path, paths, is_dir = expand_uri(uri)
            usable = [(k, p) for k, p in ((_classify(p), _unstrip(fs, p)) for p in paths) if k]
            if not usable:
                raise InputError(f"input {uri!r} holds no tar, parquet, jsonl or image files")
            containers = [(k, p) for k, p in usable if k != "image"]
            for c in containers:
                found.setdefault(c, given)
            if not containers:
                # A folder of images with sidecar captions. Images beside a jsonl/parquet are the
                # ones it points at, so they are not read a second time as a folder corpus.
                root = _unstrip(fs, path.rstrip("/")) if is_dir else posixpath.dirname(usable[0][1])
                folders.setdefault(root, []).extend(p for _, p in usable)
                folder_group.setdefault(root, given)
    return found, folders, folder_group


def list_units(inputs: list[str], params: ReadParams, media_columns: bool = True) -> list[Unit]:
    """Expand URIs (braces, globs, folders) into a sorted, deterministic list of units."""
    if not inputs:
        raise InputError("no input given: pass --input URI [URI ...]")
    found, folders, folder_group = _scan_inputs(inputs)
    seen_parquet: set[str] = set()
    for kind, path in found:
        if media_columns and kind == "parquet" and posixpath.dirname(path) not in seen_parquet:
            seen_parquet.add(posixpath.dirname(path))
            _check_parquet(path, params)
    units: list[Unit] = []
    for (kind, path), group in sorted(found.items()):
        if kind == "jsonl":
            units += jsonl_units(path, params.jsonl_unit_lines, len(units), group)
        else:
            units.append(Unit(len(units), kind, path, group=group))
    step = params.folder_unit_size
    for root in sorted(folders):
        images = sorted(set(folders[root]))
        for start in range(0, len(images), step):
            files = tuple(images[start : start + step])
            units.append(Unit(len(units), "folder", root, files=files, group=folder_group[root]))
    return units


def _check_parquet(uri: str, params: ReadParams) -> None:
    """Fail before the run when a parquet file has no image column (e.g. URL-only LAION metadata)."""
    with fsspec.open(uri, "rb") as f:
        names = pq.ParquetFile(f).schema_arrow.names
    if _pick(names, params.image_column, IMAGE_COLUMNS, "image", uri) is None:
        raise InputError(
            f"{uri}: no image column among {names}. URL-only metadata must be downloaded first "
            "(img2dataset --output_format parquet); or set read.image_column to the bytes/path column"
        )


def _line_offsets(uri: str, step: int) -> tuple[int, list[int]]:
    """(number of lines, byte offset of every `step`-th line) in one pass over the file."""
    offsets, pos, n = [0], 0, 0
    with fsspec.open(uri, "rb") as f:
        for n, line in enumerate(f, 1):
            pos += len(line)
            if n % step == 0:
                offsets.append(pos)
    if len(offsets) > 1 and offsets[-1] == pos and n % step == 0:
        offsets.pop()  # no slice starts at the very end
    return n, offsets


def _utf8(text: str) -> str:
    """Replace lone surrogates (JSON escapes like "\\ud83d", undecodable tar names) so columns can be written."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _quarantine(unit: Unit, index: int, member: str, reason: str, error: str, uri: str = "") -> CaptionSample:
    src = Source(uri=uri or unit.uri, unit=unit.index, member=_utf8(member), index=index)
    rec = CaptionSample(id=content_id(src.ref().encode("utf-8", "surrogatepass"), ""), source=src)
    return rec.settle(reason, error, stage="read")


def _sample(unit: Unit, index: int, member: str, image: bytes, caption: str, extra: dict, uri: str = ""):
    caption = _utf8(caption)
    return CaptionSample(
        id=content_id(image, caption),
        source=Source(uri=uri or unit.uri, unit=unit.index, member=_utf8(member), index=index),
        caption=caption,
        extra=_utf8(json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str)),
        file_bytes=len(image),
        image=image,
    )


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def read_unit(unit: Unit, params: ReadParams) -> Iterator[CaptionSample]:
    """Yield every record of `unit`, read or quarantined; never raises for bad data."""
    reader = {"wds": _read_wds, "parquet": _read_parquet, "jsonl": _read_jsonl, "folder": _read_folder}[unit.kind]
    count = 0
    try:
        for rec in reader(unit, params):
            count += 1
            yield rec
    except Exception as exc:  # the unit broke part-way: account for the unread rest as one record
        # webdataset appends the stream's repr (`@ <...File object at 0x7f..>`): name the unit instead,
        # so the quarantine table is the same on every rerun.
        error = _OBJECT_REPR.sub(unit.uri, f"{type(exc).__name__}: {exc}")
        yield _quarantine(unit, count, "<unread-remainder>", "read_error", error)


def _caption_from(sample: dict[str, Any]) -> tuple[str, dict]:
    meta: dict = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
            if not isinstance(meta, dict):
                meta = {"json": meta}
        except (ValueError, UnicodeDecodeError):
            meta = {"json_error": "unparseable json member"}
    for ext in ("txt", "caption", "text"):
        if ext in sample:
            return sample[ext].decode("utf-8", "replace").strip(), meta
    for key in ("caption", "text", "TEXT"):
        if isinstance(meta.get(key), str):
            return meta.pop(key).strip(), meta
    return "", meta


def _read_wds(unit: Unit, params: ReadParams) -> Iterator[CaptionSample]:
    with fsspec.open(unit.uri, "rb") as f:
        members = ({**m, "__url__": unit.uri} for m in tar_file_iterator(f))
        for i, sample in enumerate(group_by_keys(members)):
            key = sample["__key__"]
            ext = next((e for e in IMAGE_EXTS if e in sample), None)
            if ext is None:
                present = sorted(k for k in sample if not k.startswith("__"))
                yield _quarantine(unit, i, key, "missing_image", f"no image member among {present}")
                continue
            caption, meta = _caption_from(sample)
            yield _sample(unit, i, key, sample[ext], caption, meta)


IMAGE_COLUMNS = (
    "jpg", "image", "img", "png", "webp", "jpeg", "image_bytes", "images", "image_path", "path", "file_name",
)  # fmt: skip
# Placeholder tokens other tools leave in caption text (LLaVA, Data-Juicer).
_IMAGE_TOKENS = re.compile(r"<image>|<__dj__image>|<\|__dj__eoc\|>")
CAPTION_COLUMNS = ("caption", "TEXT", "text", "txt")


def _pick(names: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, uri: str) -> str | None:
    if wanted:
        if wanted not in names:
            raise InputError(f"{uri}: {what} column {wanted!r} not found; columns are {names}")
        return wanted
    return next((c for c in candidates if c in names), None)


def _resolve(path: str, base_uri: str, params: ReadParams) -> str:
    if "://" in path or path.startswith("/"):
        return path
    root = params.image_root or posixpath.dirname(base_uri)
    return posixpath.join(root, path)


def _image_value(value: Any, base_uri: str, params: ReadParams) -> tuple[bytes, str]:
    """(bytes, uri-or-empty) from a bytes value, a path, or a HF-datasets {bytes, path} struct."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"], ""
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), ""
    if isinstance(value, str) and value:
        uri = _resolve(value, base_uri, params)
        with fsspec.open(uri, "rb") as f:
            return f.read(), uri
    raise FileNotFoundError("no image bytes or path in this row")


def _read_parquet(unit: Unit, params: ReadParams) -> Iterator[CaptionSample]:
    with fsspec.open(unit.uri, "rb") as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        img_col = _pick(names, params.image_column, IMAGE_COLUMNS, "image", unit.uri)
        cap_col = _pick(names, params.caption_column, CAPTION_COLUMNS, "caption", unit.uri)
        if img_col is None:
            raise InputError(f"{unit.uri}: no image column among {names}; set read.image_column")
        i = 0
        for batch in pf.iter_batches(batch_size=256):
            for row in batch.to_pylist():
                member = str(row.get("key") or f"row{i}")
                caption = _clean_caption(str(row.get(cap_col) or "")) if cap_col else ""
                extra = {k: v for k, v in row.items() if k not in (img_col, cap_col) and not isinstance(v, bytes)}
                try:
                    image, _ = _image_value(row.get(img_col), unit.uri, params)
                except (OSError, ValueError) as exc:
                    yield _quarantine(unit, i, member, "missing_image", f"{type(exc).__name__}: {exc}")
                else:
                    yield _sample(unit, i, member, image, caption, extra)
                i += 1


def _llava_caption(conv: list[dict]) -> tuple[str, str]:
    """(assistant answer, user prompt) of the first exchange of a LLaVA/ShareGPT conversation."""

    def first(roles: tuple[str, ...]) -> str:
        turn = next((t for t in conv if isinstance(t, dict) and t.get("from", t.get("role")) in roles), {})
        return _clean_caption(str(turn.get("value", turn.get("content", ""))))

    return first(("gpt", "assistant")), first(("human", "user"))


def _clean_caption(text: str) -> str:
    return _IMAGE_TOKENS.sub("", text).strip()


def _read_jsonl(unit: Unit, params: ReadParams) -> Iterator[CaptionSample]:
    with fsspec.open(unit.uri, "rb") as f:
        f.seek(unit.offset)
        for lineno, raw in enumerate(f, unit.start):
            if unit.stop >= 0 and lineno >= unit.stop:
                break
            line = raw.decode("utf-8", "replace")
            member = f"line{lineno + 1}"
            if not line.strip():
                yield _quarantine(unit, lineno, member, "bad_json", "empty line")
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as exc:
                yield _quarantine(unit, lineno, member, "bad_json", str(exc))
                continue
            names = list(row)
            # Rows differ (LLaVA mixes hold text-only rows): a configured column a row lacks is an empty
            # value for that row, never an error that would end the unit.
            img_col = params.image_column or _pick(names, None, IMAGE_COLUMNS, "image", unit.uri)
            cap_col = params.caption_column or _pick(names, None, CAPTION_COLUMNS, "caption", unit.uri)
            extra = {k: v for k, v in row.items() if k not in (img_col, cap_col)}
            caption = _clean_caption(str(row.get(cap_col) or "")) if cap_col else ""
            if not cap_col and isinstance(row.get("conversations"), list):
                caption, prompt = _llava_caption(row["conversations"])
                extra["prompt"] = prompt
            if img_col and img_col not in row:
                yield _quarantine(unit, lineno, member, "missing_image", f"no {img_col!r} key; keys are {names}")
                continue
            value = row.get(img_col) if img_col else None
            if isinstance(value, list):  # LLaVA multi-image rows: the caption corpus takes the first
                value = value[0] if value else None
            try:
                image, uri = _image_value(value, unit.uri, params)
            except (OSError, ValueError) as exc:
                yield _quarantine(unit, lineno, member, "missing_image", f"{type(exc).__name__}: {exc}")
                continue
            yield _sample(unit, lineno, member, image, caption, extra, uri=uri)


def _read_folder(unit: Unit, params: ReadParams) -> Iterator[CaptionSample]:
    root = unit.uri
    for i, uri in enumerate(unit.files):
        member = posixpath.relpath(uri, root) if not uri.startswith(root + "/") else uri[len(root) + 1 :]
        try:
            with fsspec.open(uri, "rb") as f:
                image = f.read()
        except OSError as exc:
            yield _quarantine(unit, i, member, "read_error", f"{type(exc).__name__}: {exc}", uri=uri)
            continue
        caption = ""
        sidecar = uri.rsplit(".", 1)[0] + ".txt"
        try:
            with fsspec.open(sidecar, "rb") as f:
                caption = f.read().decode("utf-8", "replace").strip()
        except FileNotFoundError:
            pass
        yield _sample(unit, i, member, image, caption, {}, uri=uri)
