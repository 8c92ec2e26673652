"""Exports of kept interleaved documents in the layouts trainers and curation tools already read.

* `mmc4/part-UUUUU/part-UUUUU.jsonl`: MMC4 rows (`image_info`, `similarity_matrix`, `text_list`, `url`, then the
  input's other document fields), as OpenFlamingo-style loaders and Data-Juicer's `dj_to_mmc4` read them.
* `datajuicer/part-UUUUU/part-UUUUU.jsonl`: Data-Juicer's own `mmc4_to_dj` semantics for every input layout (one chunk
  per segment ending with ` <|__dj__eoc|>`, `<__dj__image> ` at the start of the chunk an image is
  anchored to, `images` in order of appearance), then the input layout's other fields.
* `obelics/part-UUUUU.parquet`: OBELICS' four columns (`images`, `metadata`, `general_metadata`,
  `texts`: parallel lists, exactly one non-null per position). The images are embedded as Hugging Face
  `Image` structs (`{bytes, path}`) with the `datasets` features in the schema metadata, so
  `load_dataset("parquet", ...)` gives PIL images and the file is self-contained: a `path`-only image is
  opened relative to the reader's working directory, not the parquet's folder, so written files would
  not resolve once the folder moves (OBELICS on the Hub holds URLs only, which we do not re-download).

The jsonl layouts write each unit as a folder, `<layout>/part-UUUUU/`, holding the unit's jsonl and the
images it names by bare file name (MMC4's own `image_name`s, as the inputs have them): relative to the
jsonl's folder, which is what Data-Juicer resolves them against (`data_juicer/format/formatter.py`,
`unify_format`: `os.path.join(dirname(dataset_path), path)` for a relative path), and what
`dj_to_mmc4` matches `image_name` to (`processed_img.endswith(img_name)`). One folder per unit, as MMC4
pairs each document shard with its image shard: its 12-hex image names are unique only within a
shard, so two units never write one name with different bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from mmcurate.schemas import DocumentRecord, Part, read_media

from .interleaved_io import content_hash
from .writers import FileInfo, write_bytes, write_table

LAYOUTS = ("wds", "obelics", "mmc4", "datajuicer")
"""`wds` is the finish path's own webdataset shards (`write_shards`); the other three are written here."""

DJ_IMAGE = "<__dj__image>"
DJ_EOC = "<|__dj__eoc|>"
"""Data-Juicer's `SpecialTokens.image` and `SpecialTokens.eoc` (`data_juicer/utils/mm_utils.py`)."""
DJ_SEP = " "

MMC4_KEYS = ("image_info", "similarity_matrix", "text_list", "url")
"""MMC4's own document fields, in the order MMC4 writes them; the input's other fields follow."""

_IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
_HF_FEATURES = {
    "images": {"feature": {"_type": "Image"}, "_type": "Sequence"},
    "metadata": {"dtype": "string", "_type": "Value"},
    "general_metadata": {"dtype": "string", "_type": "Value"},
    "texts": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
}
"""`Sequence`, not datasets 4's `List`: datasets 2.x and 3.x read it too, and 4.x and 5.x read it as `List`."""
OBELICS_SCHEMA = pa.schema(
    [
        pa.field("images", pa.list_(_IMAGE)),
        pa.field("metadata", pa.string()),
        pa.field("general_metadata", pa.string()),
        pa.field("texts", pa.list_(pa.string())),
    ],
    metadata={b"huggingface": json.dumps({"info": {"features": _HF_FEATURES}}, sort_keys=True).encode()},
)
"""OBELICS' column order; the `huggingface` metadata makes `datasets` decode `images` as a list of images."""

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_SAME_EXT = {"jpeg": "jpg", "tif": "tiff"}


# ----------------------------------------------------------------------------------------------- names


def _norm_ext(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    return _SAME_EXT.get(ext, ext)


def export_name(part: Part, data: bytes) -> str:
    """The image's file name in an export: a plain file name the input gave (MMC4's `image_name`) is
    kept, with its extension replaced when the re-encoded format differs, so a reader of the input finds
    the same names; anything else (a path, a URL, `bytes`) becomes `<content id>.<ext>`."""
    name, ext = part.name, _norm_ext(part.ext)
    if _PLAIN_NAME.fullmatch(name) and "." in name and name not in (".", ".."):
        stem, _, old = name.rpartition(".")
        if stem:
            return name if _norm_ext(old) == ext else f"{stem}.{ext}"
    return f"{content_hash(data)}.{ext}"


def _fields(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------------- per-image fields


def image_fields(doc: DocumentRecord, part: Part) -> dict[str, Any]:
    """The input's own fields of one image: `extra`; for an OBELICS document whose reader left them in
    the document's `metadata` list instead, that list's entry for this slot (its non-null entries are
    the images in order)."""
    fields = _fields(part.extra)
    if fields or doc.layout != "obelics":
        return fields
    per_position = doc.meta().get("metadata")
    if isinstance(per_position, str):
        per_position = _fields_list(per_position)
    entries = [e for e in per_position or () if isinstance(e, dict)] if isinstance(per_position, list) else []
    return dict(entries[part.slot]) if len(entries) == doc.images and part.slot < len(entries) else {}


def _fields_list(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def document_fields(doc: DocumentRecord, reserved: Iterable[str] = ()) -> dict[str, Any]:
    """The input's other document fields in their input order, less the keys the layout writes itself
    (and, for OBELICS, less the per-position `metadata` list: its image entries travel per image)."""
    skip = set(reserved) | ({"metadata"} if doc.layout == "obelics" else set())
    return {k: v for k, v in doc.meta().items() if k not in skip}


def _similarity(doc: DocumentRecord, slot: int, segment: int) -> float | None:
    if slot < len(doc.similarity) and 0 <= segment < len(doc.similarity[slot]):
        return doc.similarity[slot][segment]
    return None


# --------------------------------------------------------------------------------------------- layouts


def _mmc4_image(doc: DocumentRecord, part: Part, name: str) -> dict[str, Any]:
    info = image_fields(doc, part)
    # MMC4 indexes text_list with it: an image after the last segment is matched to the last one.
    index = min(part.anchor, max(len(doc.texts) - 1, 0))
    info.update(image_name=name, matched_text_index=index)
    sim = _similarity(doc, part.slot, index)
    if sim is not None:
        info["matched_sim"] = sim
    if part.url:
        info["raw_url"] = part.url
    return dict(sorted(info.items()))


def to_mmc4(doc: DocumentRecord, names: dict[int, str]) -> dict[str, Any]:
    """One MMC4 row: `image_info` in slot order (keys sorted, as MMC4 writes them; `matched_sim` from
    the similarity matrix at the current anchor when the matrix has it, else the input's), the matrix
    restricted to the kept images' rows (absent when the document has none for them), `text_list`,
    `url`, then the input's other fields (MMC4's `could_have_url_duplicate`)."""
    parts = sorted(doc.parts or (), key=lambda p: p.slot)
    row: dict[str, Any] = {"image_info": [_mmc4_image(doc, p, names[p.slot]) for p in parts]}
    if doc.similarity and all(p.slot < len(doc.similarity) for p in parts):
        row["similarity_matrix"] = [list(doc.similarity[p.slot]) for p in parts]
    row["text_list"] = list(doc.texts)
    row["url"] = doc.url
    row.update(document_fields(doc, MMC4_KEYS))
    return row


def _general_metadata(doc: DocumentRecord) -> str:
    meta = doc.meta()
    if doc.layout == "obelics" and "general_metadata" in meta:
        value = meta["general_metadata"]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    general = {"url": doc.url} if doc.url else {}
    general.update(document_fields(doc, ("url",)))
    return json.dumps(general, ensure_ascii=False)


def _obelics_image_meta(doc: DocumentRecord, part: Part) -> dict[str, Any]:
    meta = image_fields(doc, part)
    if part.url and "src" not in meta:
        meta["src"] = part.url
    return meta


def _positions(doc: DocumentRecord) -> list[Part | str]:
    """The items in order: a segment's text, or the kept image's part."""
    by_slot = {p.slot: p for p in doc.parts or ()}
    return [
        item["text"] if item["type"] == "text" else by_slot[int(item["image"].split(".", 1)[0])] for item in doc.items()
    ]


def obelics_metadata(doc: DocumentRecord) -> str:
    """OBELICS' `metadata`: a JSON list with an image's metadata at its position and null at a text's
    (`src` from the image URL when the input's fields have none)."""
    meta = [_obelics_image_meta(doc, x) if isinstance(x, Part) else None for x in _positions(doc)]
    return json.dumps(meta, ensure_ascii=False)


def to_obelics(doc: DocumentRecord, names: dict[int, str], data: dict[int, bytes] | None = None) -> dict[str, Any]:
    """One OBELICS row: `images` and `texts` parallel in item order (exactly one of them non-null at
    each position), `metadata` and `general_metadata` the JSON strings OBELICS has. The images are
    `{bytes, path}` (bytes from `data`, slot -> bytes, else read through the media ref)."""
    images: list[dict[str, Any] | None] = []
    texts: list[str | None] = []
    for x in _positions(doc):
        if isinstance(x, Part):
            payload = data[x.slot] if data is not None else read_media(x.media)
            images.append({"bytes": payload, "path": names[x.slot]})
            texts.append(None)
        else:
            images.append(None)
            texts.append(x)
    return {
        "images": images,
        "metadata": obelics_metadata(doc),
        "general_metadata": _general_metadata(doc),
        "texts": texts,
    }


def _dj_clean(text: str) -> str:
    """A segment holding Data-Juicer's own tokens would shift every later image: they are removed."""
    return text.replace(DJ_IMAGE, "").replace(DJ_EOC, "")


def dj_text(doc: DocumentRecord) -> tuple[str, list[Part]]:
    """Data-Juicer's interleaved text and the images in order of appearance (`mmc4_to_dj` with its
    defaults: images before their chunk; an image after the last segment goes after that segment's
    text, Data-Juicer's `after` position, as `dj_to_mmc4` reads it back)."""
    by_anchor: dict[int, list[Part]] = {}
    for part in sorted(doc.parts or (), key=lambda p: p.slot):
        by_anchor.setdefault(min(part.anchor, len(doc.texts)), []).append(part)
    chunks, order = [], []
    for i, segment in enumerate(doc.texts):
        here = by_anchor.get(i, [])
        order += here
        chunks.append(DJ_SEP.join([DJ_IMAGE] * len(here) + [_dj_clean(segment)]))
    tail = by_anchor.get(len(doc.texts), [])
    if tail:
        order += tail
        tokens = DJ_SEP.join([DJ_IMAGE] * len(tail))
        chunks[-1:] = [DJ_SEP.join([*chunks[-1:], tokens])]
    text = f" {DJ_EOC}{DJ_SEP}".join(chunks) + f" {DJ_EOC}"
    return text, order


def to_datajuicer(doc: DocumentRecord, names: dict[int, str]) -> dict[str, Any]:
    """One Data-Juicer row: `text`, `images`, then the input layout's other fields as `mmc4_to_dj`
    keeps them (`keep_other_fields`): MMC4's own fields (see `to_mmc4`), OBELICS' `metadata` and
    `general_metadata`, or any other input's fields."""
    text, order = dj_text(doc)
    row: dict[str, Any] = {"text": text, "images": [names[p.slot] for p in order]}
    if doc.layout == "mmc4":
        row.update(to_mmc4(doc, names))
    elif doc.layout == "obelics":
        row.update(metadata=obelics_metadata(doc), general_metadata=_general_metadata(doc))
    else:
        if doc.url and "url" not in doc.meta():
            row["url"] = doc.url
        row.update(document_fields(doc, ("text", "images")))
    return row


# ----------------------------------------------------------------------------------------------- write


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    """Key order is meaningful here (the layouts' own order), so keys are not sorted; MMC4's separators."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


class _UnitImages:
    """A unit's image folder: each name written once; a name already taken by other bytes falls back
    to the content id (two inputs can give different images one plain name)."""

    def __init__(self, out_root: str, layout: str, part: str) -> None:
        self.out_root, self.layout, self.part = out_root, layout, part
        self.written: dict[str, FileInfo] = {}
        self.sha: dict[str, str] = {}

    def add(self, part: Part, data: bytes) -> str:
        name = export_name(part, data)
        sha = hashlib.sha256(data).hexdigest()
        if self.sha.get(name, sha) != sha:
            name = f"{content_hash(data)}.{_norm_ext(part.ext)}"
        if name not in self.written:
            self.written[name] = write_bytes(self.out_root, f"{self.layout}/{self.part}/{name}", data)
            self.sha[name] = sha
        return name


def _write_jsonl(layout: str, unit: int, docs: list[DocumentRecord], out_root: str) -> list[FileInfo]:
    part = f"part-{unit:05d}"
    images = _UnitImages(out_root, layout, part)
    rows = []
    for doc in docs:
        names = {p.slot: images.add(p, read_media(p.media)) for p in sorted(doc.parts or (), key=lambda p: p.slot)}
        rows.append(to_mmc4(doc, names) if layout == "mmc4" else to_datajuicer(doc, names))
    table = write_bytes(out_root, f"{layout}/{part}/{part}.jsonl", _jsonl(rows))
    return [*sorted(images.written.values(), key=lambda f: f.path), table]


def _write_obelics(unit: int, docs: list[DocumentRecord], out_root: str) -> list[FileInfo]:
    rows = []
    for doc in docs:
        data = {p.slot: read_media(p.media) for p in doc.parts or ()}
        names = {p.slot: export_name(p, data[p.slot]) for p in doc.parts or ()}
        rows.append(to_obelics(doc, names, data))
    table = pa.Table.from_pylist(rows, OBELICS_SCHEMA)
    return [write_table(out_root, f"obelics/part-{unit:05d}.parquet", table)]


def write_export(layout: str, unit: int, docs: Iterable[DocumentRecord], out_root: str) -> list[FileInfo]:
    """Write one unit's kept, settled documents (in input order) in `layout`; the files for the manifest.

    A unit with no documents writes nothing (as the trainer files of other corpora). `wds` writes
    nothing here: the finish path's shards are that layout. Reads each image once through its media ref."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown interleaved export layout {layout!r}; one of {LAYOUTS}")
    docs = list(docs)
    if layout == "wds" or not docs:
        return []
    if layout == "obelics":
        return _write_obelics(unit, docs, out_root)
    return _write_jsonl(layout, unit, docs, out_root)
