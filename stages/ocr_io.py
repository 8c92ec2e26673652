"""The OCR corpus's reader adapter and listing: ICDAR folders, COCO-Text / COCO / mmocr JSON, mmocr
recognition labels, image + transcript pairs and our own (native) rows, as `OcrSample`s.

Layouts (`read.layout`; "auto" tells them apart by the file's shape, and refuses, naming
`read.layout`, when it cannot):

* **icdar**: a folder of images; each image's ground truth is `gt_<stem>.txt` (or `<stem>.txt`) in
  `read.gt_root` (mirroring the image's sub-folder, then flat) or beside the image. One image, one
  record; the gt files are not records (counted as ignored files, like every non-image file of the
  folder). No gt file: `missing_ground_truth`; a gt file with no line: `empty_ground_truth`; one bad
  line: the image is `bad_label`, naming the file and line (parsers: `stages/ocr_labels.py`).
* **coco_text** (COCO-Text v2 `imgs`/`anns`, or COCO-style `images`/`annotations` with a `text`,
  `transcription` or `utf8_string`), **mmocr** (1.x `data_list`, textdet / textspotting) and **rec**
  (1.x textrecog `labels.json`, the old `filename text` txt and `{"filename", "text"}` jsonl): one
  JSON file is one unit whose records are the images it lists; an image the root lacks is
  `missing_image` for its record alone, a file that does not parse is one `bad_json` record.
  Annotations naming no listed image are not records: counted as ignored members.
* **transcript** (jsonl `{"image", "text" | "transcript" | "lines": [str]}`, webdataset `KEY.jpg` +
  `KEY.txt`: task page) and **native** (`{"image", "lines": [{"quad", "text", "lang", "ignore"}]}`,
  a webdataset `KEY.json` with `lines`). Under auto, each jsonl row and each tar sample is read by
  the layout its keys fit (`ocr_labels.row_layouts`): one only, or the row is quarantined.

Names in JSON / jsonl / label files resolve in `read.image_root` (None: the label file's folder),
kept inside it unless `read.allow_outside_root`. Quads stay in the input's frame (`read.box_frame`
says which); recognition crops have `quad=[]` and the decode stage frames the whole image.

Text label files are the core's `lines` units (`stages/io/containers.py: iter_lines`); a whole JSON
file is this adapter's own container (`OcrAdapter.loop`: its record count is the images it lists,
known once parsed), run inside the core's guard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import posixpath
from collections.abc import Callable, Iterator
from typing import Any, Literal

import fsspec
from pydantic import Field, field_validator, model_validator

from mmcurate.schemas import OcrSample, Record, Source, TextLine

from .chat import data_url_bytes
from .io import (
    TAR_EXTS,
    Adapter,
    BadRow,
    InputError,
    Item,
    ReadBase,
    ReadRefused,
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
from .io.containers import Loop, whole_file_problem
from .ocr_labels import (
    Labels,
    LayoutUnknown,
    bad,
    entry_labels,
    icdar_lines,
    is_rec_line,
    json_entries,
    json_layout,
    member_text,
    rec_labels,
    rec_line,
    row_labels,
    row_layout,
    sample_labels,
)
from .readers import IMAGE_EXTS

__all__ = ["LAYOUTS", "InputError", "OcrReadParams", "ReadReport", "Unit", "list_ocr_units", "ocr_content_id",
           "read_ocr_unit"]  # fmt: skip

LAYOUTS = ("auto", "icdar", "coco_text", "mmocr", "rec", "transcript", "native")
CONTAINERS = {
    "auto": ("json", "jsonl", "lines", "wds"), "icdar": (), "coco_text": ("json",), "mmocr": ("json",),
    "rec": ("json", "jsonl", "lines"), "transcript": ("jsonl", "wds"), "native": ("jsonl", "wds"),
}  # fmt: skip
"""The label containers each layout reads (image folders: icdar and auto only)."""
SNIFF_LINES = 16
"""Lines of a jsonl (or .txt) looked at when listing, to tell its layout."""


class OcrReadParams(ReadBase):
    layout: Literal["auto", "icdar", "coco_text", "mmocr", "rec", "transcript", "native"] = "auto"
    """The input layout (module docstring); "auto": by each file's shape."""
    gt_root: str | None = None
    """ICDAR: the folder holding `gt_<stem>.txt`; None: beside each image."""
    image_root: str | None = None
    """Where image names in json / jsonl / label files resolve; None: the label file's folder."""
    box_frame: Literal["raw", "oriented"] = "raw"
    """The frame the input's boxes are in: the file's pixel grid before EXIF rotation, or after it."""
    lang: str = ""
    """The language given to lines whose input names none."""
    folder_unit_size: int = Field(1000, ge=1)
    """Images per unit when reading an ICDAR folder."""
    jsonl_unit_lines: int = Field(10_000, ge=1)
    """Lines per unit for jsonl and txt label files."""
    allow_outside_root: bool = False
    """Let label files name absolute paths, URIs, `..` out of the root or symlinks leaving it."""
    timeout_s: float = Field(60.0, gt=0)
    """A single image, gt or label file read may take this long before it is `read_timeout`."""

    @field_validator("gt_root", "image_root")
    @classmethod
    def _not_blank(cls, value: str | None, info: Any) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(f"read.{info.field_name}: give a folder (a path or URI), or null")
        return value

    @model_validator(mode="after")
    def _gt_root_for_icdar(self) -> OcrReadParams:
        if self.gt_root is not None and self.layout not in ("auto", "icdar"):
            raise ValueError(f"read.gt_root applies to ICDAR image folders; read.layout is {self.layout!r}")
        return self


def ocr_content_id(image: bytes, lines: list[TextLine], transcript: str) -> str:
    """BLAKE2b-128 of the image bytes, every line's quad, text and do-not-care flag, and the
    transcript: the same sample read from any copy (or any of its label formats) has the same id.
    The language is not part of it (a read setting can give it)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(image)
    h.update(b"\0")
    for ln in lines:
        h.update(json.dumps([ln.quad, ln.text, ln.ignore], ensure_ascii=False).encode("utf-8", "surrogatepass"))
        h.update(b"\1")
    h.update(b"\0")
    h.update(transcript.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- listing


def _kind(path: str) -> str | None:
    """The container a file is by its name: wds, json, jsonl, lines (.txt), media; None."""
    low = path.lower()
    if low.endswith(TAR_EXTS):
        return "wds"
    ext = low.rsplit(".", 1)[-1] if "." in posixpath.basename(low) else ""
    if ext in IMAGE_EXTS:
        return "media"
    return {"json": "json", "jsonl": "jsonl", "txt": "lines"}.get(ext)


def _head(path: str, n: int = SNIFF_LINES) -> list[bytes]:
    """The first lines of a file; none for one that is unreadable or no regular file (a FIFO is never opened)."""
    try:
        check_regular(path)
        with fsspec.open(path, "rb") as f:
            return list(itertools.islice(f, n))
    except (OSError, ReadRefused):  # the reader quarantines it when the unit is read
        return []


def _is_label_file(path: str) -> bool:
    """A .txt whose first non-blank line reads `name.jpg text` (mmocr's old rec labels); gt files
    (`gt_*.txt`, coordinate lines), READMEs and image lists are not."""
    if posixpath.basename(path).startswith("gt_"):
        return False
    first = next((r for r in _head(path) if r.strip()), b"")
    return is_rec_line(first.decode("utf-8", "replace").lstrip("\ufeff"))


def _classifier(layout: str) -> Callable[[str], str | None]:
    """`scan_inputs`'s classify for a layout. It knows wds / jsonl / media containers only, so json
    and txt label files are reported as jsonl and re-kinded by name (`_kind`) after the scan."""

    def classify(path: str) -> str | None:
        kind = None if hidden(path) else _kind(path)
        if kind == "media":
            return "media"
        if kind not in CONTAINERS[layout] or (kind == "lines" and not _is_label_file(path)):
            return None
        return "wds" if kind == "wds" else "jsonl"

    return classify


def _refuse(path: str, why: str) -> InputError:
    return InputError(f"{path}: {why}; cannot tell its layout: set read.layout ({', '.join(LAYOUTS[1:])})")


def _check_json(path: str) -> None:
    try:
        doc = json.loads(read_bytes(path))
    except (OSError, ValueError, RecursionError, ReadRefused):
        return  # unreadable or unparseable: one quarantined record when read
    try:
        json_layout(doc)
    except LayoutUnknown as exc:
        raise _refuse(path, str(exc)) from None


def _check_jsonl(path: str) -> None:
    head = _head(path)
    for raw in head:
        try:
            row = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict):
            try:
                row_layout(row)
                return
            except LayoutUnknown as exc:
                raise _refuse(path, f"its first row: {exc}") from None
    if any(r.strip() for r in head):
        raise _refuse(path, f"none of its first {SNIFF_LINES} lines is a JSON object")


CHECKS = {"json": _check_json, "jsonl": _check_jsonl}
"""Listing checks under auto (a tar is read sample by sample, by the members each one has)."""


def _folder_units(loose: dict[str, list[tuple[str, str]]], params: OcrReadParams, first: int) -> list[Unit]:
    """Each input folder's sorted images in slices of `folder_unit_size` (ICDAR)."""
    if loose and params.layout not in ("auto", "icdar"):
        given = next(iter(loose))
        raise InputError(f"input {given!r} holds images but no {params.layout} label files (read.layout)")
    if loose and params.gt_root:
        fs, path = fsspec.core.url_to_fs(params.gt_root)
        if not fs.isdir(path):
            raise InputError(f"read.gt_root {params.gt_root!r} is not a folder")
    units: list[Unit] = []
    for given, found in sorted(loose.items()):
        roots: dict[str, list[str]] = {}
        for root, p in found:
            roots.setdefault(root, []).append(p)
        for root in sorted(roots):
            images = sorted(set(roots[root]))
            for start in range(0, len(images), params.folder_unit_size):
                files = tuple(images[start : start + params.folder_unit_size])
                units.append(Unit(first + len(units), "folder", root, files=files, start=start, group=given))
    return units


def list_ocr_units(inputs: list[str], params: OcrReadParams) -> list[Unit]:
    """Expand URIs (braces, globs, folders) into a sorted, deterministic list of units: a slice of an
    ICDAR image folder, one JSON label file, a slice of a jsonl or txt label file, one tar shard.
    Files that are not records (gt files, READMEs) are counted as `ignored_files`; InputError for an
    input with nothing to read, or (auto) a file whose layout cannot be told."""
    scan = scan_inputs(inputs, _classifier(params.layout), "OCR images or label files")
    units: list[Unit] = []
    for (_, path), given in sorted(scan.containers.items(), key=lambda kv: kv[0][1]):
        kind = _kind(path) or "jsonl"
        if params.layout == "auto" and kind in CHECKS:
            CHECKS[kind](path)
        if kind in ("jsonl", "lines"):
            made = jsonl_units(path, params.jsonl_unit_lines, len(units), given)
            units += [dataclasses.replace(u, kind=kind) for u in made]
        else:
            units.append(Unit(len(units), kind, path, group=given))
    units += _folder_units(scan.loose, params, len(units))
    return attach_ignored(units, {given: [p for _, p in other] for given, other in scan.other.items()})


# ---------------------------------------------------------------------------------------------- containers


def iter_json(
    unit: Unit,
    report: ReadReport,
    entries: Callable[[Any], tuple[list[tuple[str, dict]], list[str]]],
    timeout_s: float | None = None,
) -> Iterator[Item]:
    """A whole-JSON file as items: `entries(doc)` gives (member, row) per record it holds (their
    number is the container's count, known once parsed) and the names of parts that are none. A
    file that does not parse, or that `entries` refuses (BadRow), is one problem item."""
    data = read_bytes(unit.uri, timeout_s)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        yield whole_file_problem(unit, report, "bad_json", f"{type(exc).__name__}: {str(exc)[:300]}")
        return
    try:
        rows, ignored = entries(doc)
    except BadRow as exc:
        yield whole_file_problem(unit, report, exc.reason, str(exc))
        return
    report.expected = len(rows)
    report.ignored.extend(f"{unit.uri}#{name}" for name in ignored)
    for i, (member, row) in enumerate(rows):
        yield Item(i, utf8(member), unit.uri, row=row)


# ---------------------------------------------------------------------------------------------- adapter

ORIGIN_BY_KIND = {"folder": "icdar", "lines": "rec"}


class OcrAdapter(Adapter):
    params: OcrReadParams

    def loop(self, unit: Unit) -> Loop | None:
        """A COCO / COCO-Text / mmocr JSON file is one container whose records are the images it lists."""
        if unit.kind != "json":
            return None
        return lambda u, report: iter_json(u, report, self.entries, self.params.timeout_s)

    def __init__(self, params: OcrReadParams) -> None:
        super().__init__(params)
        self.json_layout = ""

    def entries(self, doc: Any) -> tuple[list[tuple[str, dict]], list[str]]:
        """The images a whole-JSON file lists, in its layout (remembered for the records' origin)."""
        try:
            self.json_layout = json_layout(doc, self.params.layout)
        except LayoutUnknown as exc:
            raise BadRow("bad_row", f"{exc} (read.layout)") from None
        return json_entries(doc, self.json_layout)

    def _origin(self, unit: Unit) -> str:
        if unit.kind == "json":
            return self.json_layout
        layout = self.params.layout
        return ORIGIN_BY_KIND.get(unit.kind, layout if layout != "auto" else "")

    @staticmethod
    def _name(unit: Unit, item: Item) -> str:
        """The image's name as far as the item says it (quarantined records carry it too)."""
        if unit.kind in ("jsonl", "lines"):
            row = item.row or {}
            value = row.get("image", row.get("filename"))
            return utf8(value) if isinstance(value, str) else ""
        return "" if item.member.startswith("<") else item.member

    def quarantine(self, unit: Unit, item: Item, reason: str, error: str) -> OcrSample:
        src = Source(uri=utf8(item.uri or unit.uri), unit=unit.index, member=utf8(item.member), index=item.index)
        origin = self._origin(unit)
        rec = OcrSample(
            id=ocr_content_id(src.ref().encode("utf-8", "surrogatepass"), [], ""), source=src,
            name=self._name(unit, item), origin=origin, frame=self.params.box_frame,
            task={"rec": "rec", "transcript": "page"}.get(origin, "det"),
        )  # fmt: skip
        return rec.settle(reason, error, stage="read")

    @staticmethod
    def _labelled(labels: Labels, where: str) -> Labels:
        """The labels, unless there are none: checked before the image is read (a drop needs no bytes)."""
        if labels.empty:
            raise BadRow("empty_ground_truth", f"{where}: no text line and no transcript")
        return labels

    def _sample(self, unit: Unit, item: Item, image: bytes, labels: Labels, uri: str = "") -> OcrSample:
        return OcrSample(
            id=ocr_content_id(image, labels.lines, labels.transcript),
            source=Source(uri=utf8(uri or item.uri), unit=unit.index, member=utf8(item.member), index=item.index),
            image=image, file_bytes=len(image), name=utf8(labels.name), origin=labels.origin, task=labels.task,
            frame=self.params.box_frame, lines=labels.lines, transcript=labels.transcript,
            extra=utf8(json.dumps(labels.extra, sort_keys=True, ensure_ascii=False, default=str)),
        )  # fmt: skip

    def _read(self, uri: str, missing: str) -> bytes:
        try:
            return read_bytes(uri, self.params.timeout_s)
        except FileNotFoundError as exc:
            raise BadRow(missing, f"FileNotFoundError: {exc}") from None
        except (OSError, ValueError, ImportError) as exc:  # unreadable, unknown protocol, no fsspec driver
            raise BadRow(missing, f"{type(exc).__name__}: {exc}") from None

    def _image(self, value: Any, unit: Unit) -> tuple[bytes, str]:
        """(bytes, uri) of the image a label file names: a path in the image root, or a data: URL."""
        if value is None or value == "":
            raise BadRow("missing_image", "no image path in this row")
        if not isinstance(value, str):
            raise BadRow("bad_row", f"the image value is a {type(value).__name__}, not a path")
        inline = data_url_bytes(value)
        if inline is not None:
            return inline, ""
        root = self.params.image_root or posixpath.dirname(unit.uri)
        uri = resolve_inside(value, root, self.params.allow_outside_root)
        return self._read(uri, "missing_image"), uri

    def _ground_truth(self, item: Item) -> tuple[str, str]:
        """(uri, text) of an ICDAR image's gt file: `gt_<stem>.txt`, then `<stem>.txt`."""
        stem = posixpath.splitext(posixpath.basename(item.member))[0]
        sub = posixpath.dirname(item.member)
        gt_root = self.params.gt_root
        folders = [posixpath.dirname(item.path or "")] if not gt_root else [posixpath.join(gt_root, sub), gt_root]
        for folder in dict.fromkeys(folders):
            for name in (f"gt_{stem}.txt", f"{stem}.txt"):
                uri = posixpath.join(folder, name)
                try:
                    data = read_bytes(uri, self.params.timeout_s)
                except FileNotFoundError:
                    continue
                return uri, member_text(data, name)
        raise BadRow("missing_ground_truth", f"no gt_{stem}.txt or {stem}.txt in {', '.join(dict.fromkeys(folders))}")

    def from_file(self, unit: Unit, item: Item) -> OcrSample:
        gt_uri, text = self._ground_truth(item)
        lines = icdar_lines(text, posixpath.basename(gt_uri), self.params.lang)
        labels = self._labelled(Labels(None, item.member, lines, origin="icdar", extra={"gt_file": gt_uri}), gt_uri)
        return self._sample(unit, item, self._read(item.path or "", "read_error"), labels)

    def _label_line(self, item: Item) -> Labels:
        text = member_text((item.row or {})["bytes"], f"line {item.index + 1}")
        if not text.strip():
            raise bad(f"line {item.index + 1} is empty")
        name, words = rec_line(text)
        return rec_labels(name, [words], self.params.lang)

    def _row(self, row: dict[str, Any]) -> Labels:
        try:
            layout = row_layout(row, self.params.layout)
        except LayoutUnknown as exc:
            raise BadRow("bad_row", f"{exc} (read.layout)") from None
        labels = row_labels(row, layout, self.params.lang)
        if any("\ufffd" in t for t in (labels.transcript, *(ln.text for ln in labels.lines))):
            raise bad("the text is not valid UTF-8 (U+FFFD where undecodable bytes were)")
        return labels

    def from_row(self, unit: Unit, item: Item) -> OcrSample:
        row = item.row or {}
        if unit.kind == "json":
            labels = entry_labels(row, self.params.lang)
        elif unit.kind == "lines":
            labels = self._label_line(item)
        else:
            labels = self._row(row)
        image, uri = self._image(self._labelled(labels, labels.name or item.member).image, unit)
        return self._sample(unit, item, image, labels, uri)

    def from_members(self, unit: Unit, item: Item) -> OcrSample:
        members = item.members or {}
        ext = next((e for e in IMAGE_EXTS if e in members), None)
        if ext is None:
            raise BadRow("missing_image", f"no image member among {sorted(members)}")
        wanted = self.params.layout if self.params.layout in ("native", "transcript") else "auto"
        labels = self._labelled(sample_labels(members, item.member, wanted, self.params.lang), item.member)
        return self._sample(unit, item, members[ext], labels)


def read_ocr_unit(unit: Unit, params: OcrReadParams, report: ReadReport | None = None) -> Iterator[Record]:
    """Every record of `unit`, read or quarantined; never raises for bad data."""
    return read_with(unit, OcrAdapter(params), report)
