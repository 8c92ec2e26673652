"""The interleaved corpus's reader adapter and listing: MMC4, OBELICS and Data-Juicer documents.

Layouts (`read.layout`, "auto" tells them apart row by row from their keys):

* **mmc4**: `text_list` (sentences) + `image_info` (`image_name`, `raw_url`, `matched_text_index`,
  `matched_sim`, `face_detections`) + optional `similarity_matrix` (images x sentences) + `url`.
  Images are named, not held: they resolve in the image root.
* **obelics**: `texts` and `images`, lists of equal length with exactly one non-null value per
  position, `metadata` (a JSON string: one dict per image position, None per text position) and
  `general_metadata` (a JSON string holding the document `url`). Images are bytes, `{bytes, path}`
  structs, paths, `data:` URLs, or web URLs (which only an image root indexed by URL can give).
* **datajuicer**: `text` (chunks ended by `<|__dj__eoc|>`, an image where `<__dj__image>` stands)
  + `images` (the images in the order of their tokens).

One row is one `DocumentRecord`; its `slots` payload holds one `ImageSlot` per image position, in
input order, so images in = slots made. A row that breaks its layout is quarantined whole
(`bad_layout`) before any slot is made; an image that cannot be had settles its slot alone
(`image_missing`, `outside_root`, `read_timeout`, `not_a_file`; `bad_anchor` for an MMC4
`matched_text_index` that names no sentence), never the document, whose fate the recipe decides
from its slots.

The image root (`read.image_root`: a folder, tar shards, or parquet files keyed by `image_name`)
is opened once per process and root (`image_root`): shards are indexed once (name -> where the
bytes are) and read by range, so a document reads only its own images.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import posixpath
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import pyarrow.parquet as pq
from pydantic import Field

from mmcurate.schemas import DocumentRecord, ImageSlot, Source

from .chat import data_url_bytes, media_value
from .image_roots import (
    ROOT_BYTES_COLUMNS,
    ROOT_KEY_COLUMNS,
    ImageRoot,
    NoImage,
    RootError,
    image_root,
    is_web_url,
    root_files,
)
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
    clean_text,
    hidden,
    jsonl_units,
    scan_inputs,
    utf8,
)
from .io import read_unit as read_with
from .readers import IMAGE_EXTS

__all__ = [
    "ImageRoot", "InputError", "InterleavedReadParams", "ReadReport", "RootError", "Unit", "content_hash",
    "detect_layout", "document_id", "image_root", "list_interleaved_units", "normalise_url", "read_interleaved_unit",
    "split_datajuicer",
]  # fmt: skip

LAYOUTS = ("mmc4", "obelics", "datajuicer")
MMC4_KEYS = ("text_list", "image_info", "similarity_matrix", "url")
"""MMC4 keys with columns of their own; the others go to the document's `metadata`."""
MMC4_SLOT_KEYS = ("image_name", "raw_url", "matched_text_index")
"""image_info keys with slot columns of their own (name, url, anchor); the others go to `extra`."""
OBELICS_KEYS = ("texts", "images", "metadata", "general_metadata")
DJ_KEYS = ("text", "images")
SAMPLE_ROWS = 16
"""Rows of the first file per folder looked at when listing, to refuse URL-only inputs."""
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


class InterleavedReadParams(ReadBase):
    layout: Literal["auto", "mmc4", "obelics", "datajuicer"] = "auto"
    """The input layout; "auto": by each row's keys (`text_list` + `image_info`: mmc4; `texts` +
    `images` lists: obelics; `text` string + `images`: datajuicer; anything else: `bad_layout`)."""
    image_root: str | None = None
    """Where image names and relative paths resolve: a folder, a tar shard or a glob of them
    (uncompressed), or a parquet file or glob keyed by an `image_name` (or `url`) column with an
    image bytes column. None: the folder of the input file."""
    allow_outside_root: bool = False
    """Let rows name absolute paths, URIs, `..` out of the root or symlinks leaving it (refused by
    default: a row must not make the reader read files outside the corpus)."""
    timeout_s: float = Field(60.0, gt=0)
    """A single image file read from a folder root may take this long before its slot is settled
    `read_timeout`."""
    jsonl_unit_lines: int = Field(10_000, ge=1)
    """Lines per unit for jsonl inputs (a document carries its images: fewer lines than captions)."""
    image_token: str = Field("<__dj__image>", min_length=1)
    """Data-Juicer's image placeholder in `text`."""
    eoc_token: str = Field("<|__dj__eoc|>", min_length=1)
    """Data-Juicer's end-of-chunk mark in `text`."""


# ---------------------------------------------------------------------------------------------- identity


def content_hash(data: bytes) -> str:
    """BLAKE2b-128 of bytes: a slot's id (of its image, or of its name when the image cannot be had)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _blake(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def document_id(texts: list[str], images: list[str], url: str = "") -> str:
    """BLAKE2b-128 over the text segments, a separator, then one token per image (its name, or the
    hash of its bytes when the row held them), then the URL: the same document read from another
    copy of the corpus has the same id, and two pages with the same content at two URLs have two
    (each kept one is a sample of its own; its id is the sample's key)."""
    tail = (b"\2", _enc(url)) if url else ()
    return _blake(*(_enc(t) for t in texts), b"\1", *(_enc(i) for i in images), *tail)


def normalise_url(url: str) -> str:
    """The URL exact dedup compares: scheme and host lowercased, no fragment, no default port, no
    trailing slash on the path; '' for none. Query strings stay (they often name the page)."""
    url = (url or "").strip()
    if not url:
        return ""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # unparseable (an unclosed IPv6 bracket): compared as given
        return utf8(url)
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower()
    try:
        if parts.port is not None and _DEFAULT_PORTS.get(scheme) == parts.port:
            netloc = netloc.rsplit(":", 1)[0]
    except ValueError:  # a port that is no number: keep the netloc as given
        pass
    path = parts.path.rstrip("/")
    return utf8(urllib.parse.urlunsplit((scheme, netloc, path, parts.query, "")))


# ---------------------------------------------------------------------------------------------- layouts


@dataclass
class _Ref:
    """One image position as the layout gives it, before its bytes are looked for."""

    value: Any
    name: str
    url: str = ""
    anchor: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    problem: tuple[str, str] | None = None
    """(code, why) when the position is settled before any read (a bad anchor)."""


@dataclass
class _Doc:
    texts: list[str]
    refs: list[_Ref]
    url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    similarity: list[list[float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def detect_layout(row: dict[str, Any], wanted: str = "auto") -> str:
    """The row's layout: `wanted`, or by its keys; BadRow(bad_layout) naming them for none."""
    if wanted != "auto":
        return wanted
    if "text_list" in row and "image_info" in row:
        return "mmc4"
    if isinstance(row.get("texts"), list) and isinstance(row.get("images"), list):
        return "obelics"
    if isinstance(row.get("text"), str) and "images" in row:
        return "datajuicer"
    raise BadRow("bad_layout", f"no interleaved layout (mmc4, obelics, datajuicer) has the keys {sorted(row)}")


def _str(value: Any) -> str:
    return utf8(value) if isinstance(value, str) else ""


def _segments(values: Any, what: str) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadRow("bad_layout", f"{what} is not a list of strings")
    return [clean_text(v) for v in values]


def _anchor_problem(index: Any, sentences: int) -> tuple[str, str] | None:
    if isinstance(index, bool) or not isinstance(index, int):
        return "bad_anchor", f"matched_text_index {index!r} is no sentence index"
    if not 0 <= index < sentences:
        return "bad_anchor", f"matched_text_index {index} is outside the document's {sentences} sentences"
    return None


def _mmc4_ref(info: dict[str, Any], sentences: int) -> _Ref:
    index = info.get("matched_text_index")
    anchor = index if isinstance(index, int) and not isinstance(index, bool) else -1
    extra = {k: v for k, v in info.items() if k not in MMC4_SLOT_KEYS}
    name = _str(info.get("image_name"))
    return _Ref(name, name, _str(info.get("raw_url")), anchor, extra, _anchor_problem(index, sentences))


def _similarity(value: Any, images: int, sentences: int) -> list[list[float]]:
    """MMC4's similarity_matrix, checked: images x sentences of finite numbers, else bad_layout."""
    if value is None:
        return []
    rows = value if isinstance(value, list) else None
    shape_ok = (
        rows is not None and len(rows) == images and all(isinstance(r, list) and len(r) == sentences for r in rows)
    )
    if not shape_ok:
        got = f"{len(rows)} rows" if rows is not None else type(value).__name__
        raise BadRow("bad_layout", f"similarity_matrix is {got}, expected images x sentences = {images}x{sentences}")
    numbers = [v for r in rows for v in r]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise BadRow("bad_layout", "similarity_matrix holds a value that is no finite number")
    return [[float(v) for v in r] for r in rows]


def _mmc4(row: dict[str, Any], params: InterleavedReadParams) -> _Doc:
    texts = _segments(row.get("text_list"), "text_list")
    infos = row.get("image_info") or []
    if not isinstance(infos, list) or not all(isinstance(i, dict) for i in infos):
        raise BadRow("bad_layout", "image_info is not a list of objects")
    refs = [_mmc4_ref(info, len(texts)) for info in infos]
    similarity = _similarity(row.get("similarity_matrix"), len(refs), len(texts))
    meta = {k: v for k, v in row.items() if k not in MMC4_KEYS and not media_value(v)}
    return _Doc(texts, refs, _str(row.get("url")), meta, similarity)


def _json_field(row: dict[str, Any], key: str, doc: _Doc) -> Any:
    """An OBELICS JSON-string column, parsed; bad JSON keeps the raw string and says so."""
    value = row.get(key)
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        doc.notes.append(f"{key} is not valid JSON ({type(exc).__name__}): kept as the raw string")
        return value


def _obelics_positions(images: list[Any], texts: list[Any]) -> None:
    if len(images) != len(texts):
        raise BadRow("bad_layout", f"texts has {len(texts)} positions, images {len(images)}: they must be equal")
    for p, (image, text) in enumerate(zip(images, texts, strict=True)):
        if (image is None) == (text is None):
            held = "both a text and an image" if image is not None else "neither a text nor an image"
            raise BadRow("bad_layout", f"position {p} holds {held}: exactly one is needed")
        if text is not None and not isinstance(text, str):
            raise BadRow("bad_layout", f"position {p}: the text is a {type(text).__name__}, not a string")


def _image_name(value: Any) -> str:
    """How the input named an image: its path or URL, or `bytes` for one held in the row."""
    if isinstance(value, dict):
        return _str(value.get("path")) or "bytes"
    if isinstance(value, str) and not value.startswith("data:"):
        return utf8(value)
    return "bytes"


def _position_meta(meta: Any, positions: int, doc: _Doc) -> list[dict[str, Any]]:
    """OBELICS `metadata`: one dict per position (None for texts); anything else is kept on the
    document and noted, and the slots get no per-image metadata."""
    if isinstance(meta, list) and len(meta) == positions:
        return [m if isinstance(m, dict) else {} for m in meta]
    if meta is not None:
        doc.metadata["metadata"] = meta
        if not isinstance(meta, str):
            doc.notes.append(f"metadata is no list of {positions} positions: kept on the document")
    return [{} for _ in range(positions)]


def _obelics(row: dict[str, Any], params: InterleavedReadParams) -> _Doc:
    images, texts = row.get("images") or [], row.get("texts") or []
    _obelics_positions(images, texts)
    doc = _Doc([], [], metadata={k: v for k, v in row.items() if k not in OBELICS_KEYS and not media_value(v)})
    general = _json_field(row, "general_metadata", doc)
    if general is not None:
        doc.metadata["general_metadata"] = general
    per_image = _position_meta(_json_field(row, "metadata", doc), len(images), doc)
    for image, text, meta in zip(images, texts, per_image, strict=True):
        if text is not None:
            doc.texts.append(clean_text(text))
            continue
        url = utf8(image) if is_web_url(image) else _str(meta.get("src"))
        doc.refs.append(_Ref(image, _image_name(image), url, len(doc.texts), dict(meta)))
    url = general.get("url") if isinstance(general, dict) else row.get("url")
    doc.url = _str(url)
    return doc


def split_datajuicer(text: str, image_token: str, eoc_token: str) -> tuple[list[str], list[int]]:
    """(segments, anchor of each image token) of a Data-Juicer `text`.

    The text is cut at every image token and every end-of-chunk mark; each piece between two cuts
    is cleaned (`clean_text`) and stripped, and an empty piece is dropped, so `a <eoc> <img> b
    <eoc>` is the segments ["a", "b"]. Each image token's anchor is the index of the first segment
    after it (the chunk it precedes; `len(segments)` when no text follows), the convention MMC4's
    `matched_text_index` shares: Data-Juicer's `mmc4_to_dj` writes an image as `<__dj__image> `
    at the start of the chunk it is matched to."""
    pattern = f"({re.escape(image_token)}|{re.escape(eoc_token)})"
    segments: list[str] = []
    anchors: list[int] = []
    for piece in re.split(pattern, text):
        if piece == image_token:
            anchors.append(len(segments))
        elif piece != eoc_token and (seg := clean_text(piece).strip()):
            segments.append(seg)
    return segments, anchors


def _datajuicer(row: dict[str, Any], params: InterleavedReadParams) -> _Doc:
    text, images = row.get("text"), row.get("images")
    if not isinstance(text, str):
        raise BadRow("bad_layout", f"text is a {type(text).__name__}, not a string")
    images = [] if images is None else images
    if not isinstance(images, list):
        raise BadRow("bad_layout", f"images is a {type(images).__name__}, not a list")
    texts, anchors = split_datajuicer(text, params.image_token, params.eoc_token)
    if len(anchors) != len(images):
        raise BadRow("bad_layout", f"text holds {len(anchors)} {params.image_token} tokens for {len(images)} images")
    refs = [
        _Ref(image, _image_name(image), utf8(image) if is_web_url(image) else "", a)
        for image, a in zip(images, anchors, strict=True)
    ]
    meta = {k: v for k, v in row.items() if k not in DJ_KEYS and not media_value(v)}
    return _Doc(texts, refs, _str(row.get("url")), meta)


PARSERS = {"mmc4": _mmc4, "obelics": _obelics, "datajuicer": _datajuicer}


def _check_text(texts: list[str]) -> None:
    """A segment holding U+FFFD came from bytes that are not UTF-8 (the jsonl reader replaces them):
    such a document is quarantined, never written with its text silently altered."""
    for i, text in enumerate(texts):
        if "\ufffd" in text:
            raise BadRow("bad_row", f"text segment {i} is not valid UTF-8 (U+FFFD where undecodable bytes were)")


# ---------------------------------------------------------------------------------------------- adapter


def _dumps(value: dict[str, Any]) -> str:
    return utf8(json.dumps(value, ensure_ascii=False, default=str))


def _embedded(value: Any) -> bytes | None:
    """The bytes a position holds itself (bytes, a struct's bytes, a data: URL); None if it names them."""
    if isinstance(value, dict):
        value = value.get("bytes") or None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value.startswith("data:"):
        try:
            return data_url_bytes(value)
        except BadRow as exc:
            raise NoImage("image_missing", str(exc)) from None
    return None


class InterleavedAdapter(Adapter):
    params: InterleavedReadParams

    def _source(self, unit: Unit, item: Item) -> Source:
        return Source(uri=utf8(item.uri or unit.uri), unit=unit.index, member=utf8(item.member), index=item.index)

    def quarantine(self, unit: Unit, item: Item, reason: str, error: str) -> DocumentRecord:
        src = self._source(unit, item)
        rec = DocumentRecord(id=_blake(_enc(src.ref())), source=src)
        return rec.settle(reason, error, stage="read")

    def from_members(self, unit: Unit, item: Item) -> DocumentRecord:
        raise BadRow("bad_layout", "a tar member group is no interleaved document (give jsonl or parquet)")

    def from_file(self, unit: Unit, item: Item) -> DocumentRecord:
        raise BadRow("bad_layout", "a loose file is no interleaved document (give jsonl or parquet)")

    def _root(self, unit: Unit) -> ImageRoot:
        p = self.params
        try:
            return image_root(p.image_root or posixpath.dirname(unit.uri), p.allow_outside_root, p.timeout_s)
        except (RootError, OSError, ValueError) as exc:
            raise NoImage("image_missing", f"image root: {type(exc).__name__}: {exc}") from None

    def _bytes(self, ref: _Ref, unit: Unit) -> tuple[bytes, bool]:
        """(bytes, whether the row held them) of one position; NoImage when they cannot be had."""
        inline = _embedded(ref.value)
        if inline is not None:
            return inline, True
        value = ref.value.get("path") if isinstance(ref.value, dict) else ref.value
        if not isinstance(value, str) or not value:
            raise NoImage("image_missing", "no image bytes, path or name at this position")
        return self._root(unit).get(value), False

    def _slot(self, src: Source, index: int, ref: _Ref, unit: Unit) -> tuple[ImageSlot, str]:
        """The slot of one position and its token for the document id (name, or bytes hash)."""
        slot = ImageSlot(
            id=content_hash(_enc(ref.name)), source=src, slot=index, name=ref.name, url=ref.url, anchor=ref.anchor,
            original_anchor=ref.anchor, extra=_dumps(ref.extra),
        )  # fmt: skip
        if ref.problem is not None:
            slot.settle(*ref.problem, stage="read")
            return slot, ref.name
        try:
            data, embedded = self._bytes(ref, unit)
        except NoImage as exc:
            slot.settle(exc.reason, str(exc), stage="read")
            return slot, ref.name
        slot.id, slot.image, slot.file_bytes = content_hash(data), data, len(data)
        return slot, slot.id if embedded else ref.name

    def from_row(self, unit: Unit, item: Item) -> DocumentRecord:
        row = item.row or {}
        layout = detect_layout(row, self.params.layout)
        doc = PARSERS[layout](row, self.params)
        if unit.kind == "jsonl":  # parquet strings are UTF-8 by format: U+FFFD there is the page's own
            _check_text(doc.texts)
        src = self._source(unit, item)
        rec = DocumentRecord(
            id="", source=src, url=doc.url, url_key=normalise_url(doc.url), layout=layout, texts=doc.texts,
            similarity=doc.similarity, similarity_from="input" if doc.similarity else "", metadata=_dumps(doc.metadata),
        )  # fmt: skip
        for note in doc.notes:
            rec.errors["read"] = "; ".join(filter(None, (rec.errors.get("read"), note)))
        if not doc.refs and not any(t.strip() for t in doc.texts):
            rec.id = document_id(doc.texts, [], doc.url)
            return rec.settle("empty_document", "the document has neither text nor images", stage="read")
        made = [self._slot(src, i, ref, unit) for i, ref in enumerate(doc.refs)]
        rec.id = document_id(doc.texts, [token for _, token in made], doc.url)
        rec.slots = [slot for slot, _ in made]
        rec.images = len(rec.slots)
        for slot in rec.slots:
            slot.doc_id = rec.id
        return rec


def read_interleaved_unit(
    unit: Unit, params: InterleavedReadParams, report: ReadReport | None = None
) -> Iterator[DocumentRecord]:
    """Every document of `unit`, read or quarantined, its slots on it; never raises for bad data."""
    return read_with(unit, InterleavedAdapter(params), report)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- listing


def _classify(path: str) -> str | None:
    """Documents are jsonl or parquet; images and tar shards beside them are what rows point at."""
    if hidden(path):
        return None
    low = path.lower()
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith(".jsonl"):
        return "jsonl"
    ext = low.rsplit(".", 1)[-1] if "." in posixpath.basename(low) else ""
    return "media" if low.endswith(TAR_EXTS) or ext in IMAGE_EXTS else None


def _sample_rows(kind: str, uri: str) -> list[dict[str, Any]]:
    """The first rows of a file (what can be parsed of them): enough to see how it names images."""
    rows: list[Any] = []
    try:
        with fsspec.open(uri, "rb") as f:
            if kind == "parquet":
                batch = next(pq.ParquetFile(f).iter_batches(batch_size=SAMPLE_ROWS), None)
                rows = batch.to_pylist() if batch is not None else []
            else:
                for raw in itertools.islice(f, SAMPLE_ROWS):
                    try:
                        rows.append(json.loads(raw))
                    except (ValueError, RecursionError):
                        continue
    except Exception:  # unreadable: the reader quarantines it when the unit is read
        return []
    return [r for r in rows if isinstance(r, dict)]


def _image_values(row: dict[str, Any], layout: str) -> list[Any]:
    try:
        found = detect_layout(row, layout)
    except BadRow:
        return []
    if found == "mmc4":
        return []  # MMC4 names images (image_name), never by URL alone
    images = row.get("images")
    values = [v for v in images if v is not None] if isinstance(images, list) else []
    return [(v.get("bytes") or v.get("path")) if isinstance(v, dict) else v for v in values]


def _root_of(params: InterleavedReadParams) -> ImageRoot:
    return image_root(params.image_root or "", params.allow_outside_root, params.timeout_s)


def _refuse_url_only(containers: list[tuple[str, str]], params: InterleavedReadParams) -> None:
    """Fail before the run when the first file of a folder names its images by web URL alone
    (OBELICS as published): nothing could be read but `image_missing` slots. An image root indexed
    by URL (img2dataset shards with `.json` sidecars, a parquet with a `url` column) makes them usable."""
    seen: set[str] = set()
    for kind, uri in sorted(containers, key=lambda c: c[1]):
        if posixpath.dirname(uri) in seen:
            continue
        seen.add(posixpath.dirname(uri))
        values = [v for row in _sample_rows(kind, uri) for v in _image_values(row, params.layout)]
        if not values or not all(is_web_url(v) for v in values):
            continue
        if params.image_root and any(_root_of(params).has(v) for v in values):
            continue
        raise InputError(
            f"{uri}: its images are web URLs only ({values[0]!r}, ...). Download them first (img2dataset, "
            "e.g. --output_format webdataset or parquet) and set read.image_root to the downloaded shards"
        )


def _root_inputs(params: InterleavedReadParams) -> set[str]:
    """Check the image root before the run; the parquet files it names are not documents."""
    if not params.image_root:
        return set()
    try:
        kind, files = root_files(params.image_root)
    except RootError as exc:
        raise InputError(str(exc)) from None
    if kind == "folder":
        fs, path = fsspec.core.url_to_fs(params.image_root)
        if not fs.isdir(path):
            raise InputError(f"image root {params.image_root!r} is no folder, tar shard or parquet file")
    elif files:
        _check_shard(kind, files[0])
    return set(files)


def _check_shard(kind: str, uri: str) -> None:
    """The first shard of an image root, looked at before the run: a compressed tar (no range
    reads) or a parquet without a key or bytes column would leave every slot `image_missing`."""
    with fsspec.open(uri, "rb") as f:
        if kind == "tar" and f.read(2) == b"\x1f\x8b":
            raise InputError(f"image root {uri}: a compressed tar cannot be read by range; decompress the shards")
        if kind == "parquet":
            names = pq.ParquetFile(f).schema_arrow.names
            if not any(c in names for c in ROOT_KEY_COLUMNS) or not any(c in names for c in ROOT_BYTES_COLUMNS):
                raise InputError(
                    f"image root {uri}: needs a key column ({' or '.join(ROOT_KEY_COLUMNS)}) and an image bytes "
                    f"column ({', '.join(ROOT_BYTES_COLUMNS)}); its columns are {names}"
                )


def list_interleaved_units(inputs: list[str], params: InterleavedReadParams) -> list[Unit]:
    """Expand URIs (braces, globs, folders) into a sorted, deterministic list of units: one parquet
    file, or `jsonl_unit_lines` lines of a jsonl. Files that are neither (a README) are counted in
    the manifest (`ignored_files`); InputError for an input with no documents, an unusable image
    root, or documents whose images are web URLs only."""
    scan = scan_inputs(inputs, _classify, "jsonl or parquet documents")
    if scan.loose:
        given = next(iter(scan.loose))
        raise InputError(f"input {given!r} holds images or tar shards but no jsonl or parquet documents")
    root_files = _root_inputs(params)
    ignored = {given: [p for _, p in other] for given, other in scan.other.items()}
    containers: dict[tuple[str, str], str] = {}
    for (kind, path), given in scan.containers.items():
        if path in root_files:  # the image root's own parquet, found inside an input folder
            ignored.setdefault(given, []).append(path)
        else:
            containers[(kind, path)] = given
    _refuse_url_only(list(containers), params)
    units: list[Unit] = []
    for (kind, path), given in sorted(containers.items(), key=lambda kv: kv[0][1]):
        if kind == "jsonl":
            units += jsonl_units(path, params.jsonl_unit_lines, len(units), given)
        else:
            units.append(Unit(len(units), kind, path, group=given))
    return attach_ignored(units, ignored)
