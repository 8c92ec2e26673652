"""The caption corpus's reader adapter and listing, on the shared container loops of `stages/io/`.

Layouts: webdataset tars (`KEY.jpg` + `KEY.txt` / `KEY.json`), parquet (img2dataset / LAION / HF:
image bytes, a path, or a `{bytes, path}` struct, plus a caption column), jsonl (LLaVA style: an
image path and a caption or `conversations`; OpenAI / LLaMA-Factory `messages` with `images`), and
folders of images with sidecar `.txt` captions. Folders in the Hugging Face Hub layout
(`data/train-00000-of-00002.parquet`, `<config>/<split>-*.parquet`, `<split>/*.parquet`) are read
one split at a time (`read.split`, `hub_split`). Each row or member group becomes one
`CaptionSample`, or one quarantined record naming its line, row or member; a bad row never costs
the rest of its unit (`stages/io/reader.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
from typing import Any

import fsspec
import pyarrow.parquet as pq
from pydantic import Field

from mmcurate.schemas import CaptionSample, Source

from .chat import Chat, chat_of, clean_caption, data_url_bytes, image_values, media_value
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
    hidden,
    jsonl_units,
    read_bytes,
    resolve_inside,
    scan_inputs,
    utf8,
)
from .io import read_unit as read_with
from .io.hub import by_split, hub_split

IMAGE_EXTS = (
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "bmp", "gif", "tif", "tiff", "avif", "heic", "heif", "jp2", "ppm",
)  # fmt: skip
SIDECARS = ("txt", "json")

__all__ = [
    "Chat", "InputError", "ReadParams", "ReadReport", "Unit", "chat_of", "content_id", "data_url_bytes", "hub_split",
    "image_values", "list_units", "media_value", "read_unit",
]  # fmt: skip


class ReadParams(ReadBase):
    folder_unit_size: int = Field(1000, ge=1)
    """Images per unit when reading a folder of images with sidecar captions."""
    jsonl_unit_lines: int = Field(100_000, ge=1)
    """Lines per unit for jsonl inputs."""
    image_column: str | None = None
    """Parquet/jsonl column with image bytes or path; None = detect from IMAGE_COLUMNS."""
    caption_column: str | None = None
    """Parquet/jsonl caption column; None = detect (caption, TEXT, text, txt), else the row's chat
    (`messages`, LLaVA `conversations`): its first assistant turn."""
    image_root: str | None = None
    """Where relative image paths in parquet/jsonl resolve; None = the folder of the file naming them."""
    allow_outside_root: bool = False
    """Let rows name absolute paths, URIs, `..` out of the root, or symlinks leaving it (refused by default:
    a row must not make the reader read files outside the corpus)."""
    timeout_s: float = Field(60.0, gt=0)
    """A single image file read may take this long (a hung mount, a stalled bucket) before it is
    quarantined as `read_timeout`."""
    split: str = Field("train", min_length=1)
    """In a folder (or glob) whose files name a Hugging Face split (`hub_split`), read only this one
    ("all": every split); files naming no split, and files given on their own, are always read.
    "train" by default, as `load_dataset(..., split="train")` and LLaMA-Factory read: a Hub folder
    also holds test splits, which must not leak into training data unasked."""


def content_id(image: bytes, caption: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(image)
    h.update(b"\0")
    h.update(caption.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- listing


def _classify(path: str) -> str | None:
    if hidden(path):
        return None
    low = path.lower()
    if low.endswith(TAR_EXTS):
        return "wds"
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith(".jsonl"):
        return "jsonl"
    ext = low.rsplit(".", 1)[-1] if "." in posixpath.basename(low) else ""
    if ext in IMAGE_EXTS:
        return "media"
    return "sidecar" if ext in SIDECARS else None


def _is_image(uri: str) -> bool:
    """A file whose extension says nothing: is it an image Pillow can open? (Never opens a FIFO.)"""
    from PIL import Image

    try:
        check_regular(uri)
        with fsspec.open(uri, "rb") as f, Image.open(f):
            return True
    except Exception:
        return False


def _folder_units(roots: dict[str, list[str]], group: dict[str, str], step: int, first: int) -> list[Unit]:
    """Each folder's sorted images in slices of `step`; a slice knows where in its folder it starts
    (`Unit.start`), so `--limit N` reads the first N images of the folder, not of every slice."""
    units: list[Unit] = []
    for root in sorted(roots):
        images = sorted(set(roots[root]))
        for start in range(0, len(images), step):
            files = tuple(images[start : start + step])
            units.append(Unit(first + len(units), "folder", root, files=files, start=start, group=group[root]))
    return units


def list_units(inputs: list[str], params: ReadParams, media_columns: bool = True) -> list[Unit]:
    """Expand URIs (braces, globs, folders) into a sorted, deterministic list of units.

    Files in an image folder whose extension names no image are opened to see whether Pillow reads
    them (AVIF, HEIC with its plugin, a JPEG without an extension); the rest (an .svg, .DS_Store,
    a Hub folder's README.md and .gitattributes, the files of splits other than `read.split`) are
    not read but counted in the manifest as `ignored_files`."""
    scan = scan_inputs(inputs, _classify, "tar, parquet, jsonl or image files")
    containers, ignored = by_split(scan.containers, params.split)
    if media_columns:
        _check_parquet_columns([p for k, p in containers if k == "parquet"], params)
    units: list[Unit] = []
    for (kind, path), given in sorted(containers.items()):
        if kind == "jsonl":
            units += jsonl_units(path, params.jsonl_unit_lines, len(units), given)
        else:
            units.append(Unit(len(units), kind, path, group=given))
    roots: dict[str, list[str]] = {}
    group: dict[str, str] = {}
    for given, files in [*scan.loose.items(), *scan.other.items()]:
        for root, p in files:
            container_input = given not in scan.loose
            if _classify(p) == "media" or (not hidden(p) and not container_input and _is_image(p)):
                roots.setdefault(root, []).append(p)
                group.setdefault(root, given)
            else:
                ignored.setdefault(given, []).append(p)
    units += _folder_units(roots, group, params.folder_unit_size, len(units))
    return attach_ignored(units, ignored)


def _check_parquet_columns(paths: list[str], params: ReadParams) -> None:
    """Fail before the run when a parquet file has no image column (e.g. URL-only LAION metadata);
    one file per folder is looked at. A file that cannot be opened is the reader's to quarantine."""
    seen: set[str] = set()
    for uri in paths:
        if posixpath.dirname(uri) in seen:
            continue
        try:
            with fsspec.open(uri, "rb") as f:
                names = pq.ParquetFile(f).schema_arrow.names
        except Exception:
            continue  # unreadable (truncated, not parquet): quarantined as a unit when read
        seen.add(posixpath.dirname(uri))
        if _pick(names, params.image_column, IMAGE_COLUMNS, "image", uri) is None:
            raise InputError(
                f"{uri}: no image column among {names}. URL-only metadata must be downloaded first "
                "(img2dataset --output_format parquet); or set read.image_column to the bytes/path column"
            )


# ---------------------------------------------------------------------------------------------- adapter

IMAGE_COLUMNS = (
    "jpg", "image", "img", "png", "webp", "jpeg", "image_bytes", "images", "image_path", "path", "file_name",
)  # fmt: skip
CAPTION_COLUMNS = ("caption", "TEXT", "text", "txt")


def _pick(names: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, uri: str) -> str | None:
    if wanted:
        if wanted not in names:
            raise InputError(f"{uri}: {what} column {wanted!r} not found; columns are {names}")
        return wanted
    return next((c for c in candidates if c in names), None)


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRow("bad_row", f"{what} is a {type(value).__name__}, not a string")
    return clean_caption(value)


def _caption_from_members(sample: dict[str, bytes]) -> tuple[str, dict]:
    meta: dict = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
            if not isinstance(meta, dict):
                meta = {"json": meta}
        except (ValueError, UnicodeDecodeError, RecursionError):
            meta = {"json_error": "unparseable json member"}
    for ext in ("txt", "caption", "text"):
        if ext in sample:
            return clean_caption(sample[ext].decode("utf-8", "replace")), meta
    for key in ("caption", "text", "TEXT"):
        if isinstance(meta.get(key), str):
            return clean_caption(meta.pop(key)), meta
    return "", meta


def _chat_caption(chat: Chat) -> str:
    """The caption of a chat row: its first assistant turn (later turns answer follow-up questions)."""
    if chat.answer is None:
        raise BadRow("bad_row", f"`{chat.key}` has no assistant turn, so no caption")
    return chat.answer


def _one_image(row: dict[str, Any], column: str | None, chat: Chat | None) -> Any:
    """The row's single image. A row of several is dropped (`multi_image`): its caption describes
    them together, and pairing it with one of them would make a wrong pair."""
    values = image_values(row, column, chat)
    if len(values) > 1:
        raise BadRow("multi_image", f"{len(values)} images in one row: a caption pairs with one image")
    if values:
        return values[0]
    if column is None or column not in row:
        raise BadRow("missing_image", f"no {column or 'image'!r} key; keys are {list(row)}")
    raise BadRow("missing_image", "no image bytes or path in this row")


class CaptionAdapter(Adapter):
    params: ReadParams

    def quarantine(self, unit: Unit, item: Item, reason: str, error: str) -> CaptionSample:
        src = Source(uri=utf8(item.uri or unit.uri), unit=unit.index, member=utf8(item.member), index=item.index)
        rec = CaptionSample(id=content_id(src.ref().encode("utf-8", "surrogatepass"), ""), source=src)
        return rec.settle(reason, error, stage="read")

    def _sample(self, unit: Unit, item: Item, image: bytes, caption: str, extra: dict, uri: str = "") -> CaptionSample:
        return CaptionSample(
            id=content_id(image, caption),
            source=Source(uri=utf8(uri or item.uri), unit=unit.index, member=utf8(item.member), index=item.index),
            caption=caption,
            extra=utf8(json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str)),
            file_bytes=len(image),
            image=image,
        )

    def from_members(self, unit: Unit, item: Item) -> CaptionSample:
        sample = item.members or {}
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            present = sorted(sample)
            raise BadRow("missing_image", f"no image member among {present}")
        caption, meta = _caption_from_members(sample)
        return self._sample(unit, item, sample[ext], caption, meta)

    def _image(self, value: Any, unit: Unit) -> tuple[bytes, str]:
        """(bytes, uri-or-empty) from a bytes value, a path, a data: URL, or a HF-datasets {bytes, path} struct."""
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"]), ""
            value = value.get("path")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value), ""
        if value is None or value == "":
            raise BadRow("missing_image", "no image bytes or path in this row")
        if not isinstance(value, str):
            raise BadRow("bad_row", f"the image value is a {type(value).__name__}, not a path or bytes")
        inline = data_url_bytes(value)
        if inline is not None:
            return inline, ""
        root = self.params.image_root or posixpath.dirname(unit.uri)
        uri = resolve_inside(value, root, self.params.allow_outside_root)
        try:
            return read_bytes(uri, self.params.timeout_s), uri
        except FileNotFoundError as exc:
            raise BadRow("missing_image", f"FileNotFoundError: {exc}") from None
        except (OSError, ValueError, ImportError) as exc:  # unreadable, unknown protocol, no fsspec driver
            raise BadRow("missing_image", f"{type(exc).__name__}: {exc}") from None

    def from_row(self, unit: Unit, item: Item) -> CaptionSample:
        row = item.row or {}
        names = list(row)
        p = self.params
        if unit.kind == "parquet":
            item.member = str(row.get("key") or item.member)
            img_col = _pick(names, p.image_column, IMAGE_COLUMNS, "image", unit.uri)
            cap_col = _pick(names, p.caption_column, CAPTION_COLUMNS, "caption", unit.uri)
        else:
            # Rows differ (LLaVA mixes hold text-only rows): a configured column a row lacks is an
            # empty value for that row, never an error that would end the unit.
            img_col = p.image_column or _pick(names, None, IMAGE_COLUMNS, "image", unit.uri)
            cap_col = p.caption_column or _pick(names, None, CAPTION_COLUMNS, "caption", unit.uri)
        chat = None if cap_col else chat_of(row)
        read_out = {img_col, cap_col, chat.key if chat else None}  # the chat's caption and prompt are read out
        extra = {k: v for k, v in row.items() if k not in read_out and not media_value(v)}
        caption = _text(row.get(cap_col), f"column {cap_col!r}") if cap_col else ""
        if chat is not None:
            caption, extra["prompt"] = _chat_caption(chat), chat.prompt
        image, uri = self._image(_one_image(row, img_col, chat), unit)
        return self._sample(unit, item, image, caption, extra, uri=uri if unit.kind == "jsonl" else "")

    def from_file(self, unit: Unit, item: Item) -> CaptionSample:
        uri = item.path or ""
        try:
            image = read_bytes(uri, self.params.timeout_s)
        except FileNotFoundError as exc:
            raise BadRow("read_error", f"FileNotFoundError: {exc}") from None
        caption = ""
        sidecar = uri.rsplit(".", 1)[0] + ".txt"
        with contextlib.suppress(FileNotFoundError):
            caption = clean_caption(read_bytes(sidecar, self.params.timeout_s).decode("utf-8", "replace"))
        return self._sample(unit, item, image, caption, {}, uri=uri)


def read_unit(unit: Unit, params: ReadParams, report: ReadReport | None = None):
    """Every record of `unit`, read or quarantined; never raises for bad data."""
    return read_with(unit, CaptionAdapter(params), report)
