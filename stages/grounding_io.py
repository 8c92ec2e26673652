"""The grounding corpus's reader adapter and listing: ODVG, RefCOCO, conversations with boxes and our
own (native) rows, as `GroundingSample`s each carrying its `RegionRecord`s.

Layouts (`read.layout`; "auto" tells them apart by each row's keys and each file's name):

* **odvg** jsonl (GroundingDINO): `filename`, `width`, `height`, `detection.instances[{bbox, label,
  category}]` (task detection) and / or `grounding.caption` + `grounding.regions[{bbox, phrase}]`
  (task grounding).
* **refcoco**: a refs file (`refs(unc).p`, `refs*.json`) with the COCO `instances.json` beside it
  (or `read.instances`): one record per image, one region per (ref, sentence) (`grounding_refs.py`).
* **conversation** jsonl: LLaVA / ShareGPT rows whose turns write boxes.
* **native**: jsonl `{"image", "width"?, "height"?, "regions": [{box, phrase, category?, task?,
  ref?, split?}]}` and webdataset `KEY.jpg` + `KEY.json` with `regions` (our own output reads back).

The rows' parsers (odvg, conversation, native) are `grounding_chat.py`'s; this module lists, checks
and turns their `Labels` into records. A sample's image that cannot be found drops it
(`image_missing`) with its regions still attached; a row that cannot be a sample is one quarantined
record holding none. Each sample's `negatives` are the distinct phrases of the unit's latest
samples before it (at most `read.negative_pool`, its own left out), in unit order.

Boxes stay as written (`input_box`, in the resolved `box_format`); the decode stage converts them.
A box that is not four numbers, or that its format cannot hold (`contradiction`), settles its region
`bad_box` and the sample goes on; an image with more than `read.max_regions` regions is quarantined
(`bad_row`) before any region record is built. The listing refuses a `read.image_root` that does not
exist, and reads the first `SNIFF_LINES` rows (and refs) of every input, refusing one whose boxes
contradict the format, or look normalised under a pixel format, before the run starts; data it cannot
judge it leaves to the reader, never crashing on it. Every unit is read through the core's guard
(`stages.io.read_unit`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import fsspec
from pydantic import Field, field_validator, model_validator

from mmcurate.schemas import GroundingSample, Record, RegionRecord, Source

from .chat import data_url_bytes
from .grounding_boxes import BoxUnreadable, box_numbers, contradiction
from .grounding_chat import (
    Labels,
    Region,
    conversation_labels,
    native_labels,
    odvg_labels,
    row_layout,
    row_layouts,
    too_many_regions,
)
from .grounding_refs import is_instances, is_refs, refs_items, refs_labels, sniff_refs
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
from .io.paths import filesystem
from .readers import IMAGE_EXTS

__all__ = ["LAYOUTS", "GroundingReadParams", "InputError", "ReadReport", "Unit", "grounding_content_id",
           "list_grounding_units", "read_grounding_unit", "resolved_format"]  # fmt: skip

LAYOUTS = ("auto", "odvg", "refcoco", "conversation", "native")
CONVENTION = {"odvg": "xyxy", "native": "xyxy", "refcoco": "xywh"}
"""The box format a layout documents (conversations: each tagged notation's own, `grid`)."""
CONTAINERS = {
    "auto": ("jsonl", "refs", "wds"), "odvg": ("jsonl",), "refcoco": ("refs",), "conversation": ("jsonl",),
    "native": ("jsonl", "wds"),
}  # fmt: skip
SNIFF_LINES = 64
"""Rows of a jsonl (refs of a refs file) whose boxes the listing checks."""
PIXEL_FORMATS = ("xyxy", "xywh")
BoxFormat = Literal["xyxy", "xywh", "norm", "grid"]


class GroundingReadParams(ReadBase):
    layout: Literal["auto", "odvg", "refcoco", "conversation", "native"] = "auto"
    """The input layout (module docstring); "auto": by each row's keys and each file's name."""
    box_format: Literal["auto", "xyxy", "xywh", "norm", "grid"] = "auto"
    """auto = the layout's own documented convention: odvg and native xyxy pixels, refcoco xywh pixels
    (COCO), conversation tagged boxes (GLM <|begin_of_box|>, Qwen <box>, <|box_start|>) grid; plain
    [x1,y1,x2,y2] in a conversation has no convention and must be declared (norm for LLaVA-1.5/Shikra).
    A tagged box is on the grid by its tag's definition, whatever is declared."""
    box_formats: dict[str, BoxFormat] = {}
    """Per input (the URI exactly as given to --input, i.e. Unit.group) -> its format, overriding box_format."""
    box_frame: Literal["raw", "oriented"] = "raw"
    """The frame of the input's boxes: the file's pixel grid before EXIF rotation, or after it."""
    image_root: str | None = None
    """Where image names resolve; None: the label file's folder."""
    instances: str | None = None
    """RefCOCO: the COCO instances.json; None: instances.json beside the refs file."""
    max_regions: int = Field(1000, ge=1)
    """Regions one image may hold; an image with more is quarantined (bad_row) before any is built."""
    max_refs: int = Field(1_000_000, ge=1)
    """RefCOCO: refs one refs file may hold, each ref's sentences counted too, copies included (a
    pickle repeats an object at ~2 bytes a copy); beyond, the file is one whole-file `bad_refs`."""
    negative_pool: int = Field(16, ge=0)
    """Distinct phrases of the unit's latest samples each sample carries as `negatives`."""
    jsonl_unit_lines: int = Field(10_000, ge=1)
    allow_outside_root: bool = False
    """Let rows name absolute paths, URIs, `..` out of the root or symlinks leaving it."""
    timeout_s: float = Field(60.0, gt=0)
    """A single image or label file read may take this long before it is `read_timeout`."""

    @field_validator("image_root", "instances")
    @classmethod
    def _not_blank(cls, value: str | None, info: Any) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(f"read.{info.field_name}: give a path or URI, or null")
        return value

    @model_validator(mode="after")
    def _instances_for_refcoco(self) -> GroundingReadParams:
        if self.instances is not None and self.layout not in ("auto", "refcoco"):
            raise ValueError(f"read.instances applies to RefCOCO refs files; read.layout is {self.layout!r}")
        return self


def grounding_content_id(image: bytes, regions: Iterable[tuple[str, Sequence[float], str, str]]) -> str:
    """BLAKE2b-128 of the image bytes and every region's (phrase, input box, box format, task): the
    same sample read from any copy has the same id."""
    h = hashlib.blake2b(image, digest_size=16)
    for phrase, box, fmt, task in regions:
        h.update(b"\1" + json.dumps([phrase, list(box), fmt, task], ensure_ascii=False).encode("utf-8", "replace"))
    return h.hexdigest()


def resolved_format(params: GroundingReadParams, layout: str, group: str, notation_frame: str = "") -> str:
    """The format of a box of input `group` (never "auto"): a tagged conversation box's own notation
    (grid, by the tag's definition), else the input's declared format, else the layout's convention;
    a plain conversation box with none is BadRow(bad_box) (the listing makes it an InputError)."""
    if notation_frame:
        return notation_frame
    declared = params.box_formats.get(group, params.box_format)
    if declared != "auto":
        return declared
    if layout in CONVENTION:
        return CONVENTION[layout]
    raise BadRow("bad_box", "a plain [x1, y1, x2, y2] box in a conversation has no frame of its own: declare "
                 "read.box_format (norm for LLaVA-1.5 / Shikra) or read.box_formats for this input")  # fmt: skip


# ---------------------------------------------------------------------------------------------- labels


def row_labels(row: dict[str, Any], params: GroundingReadParams, group: str) -> Labels:
    """A jsonl row's labels in its layout; BadRow when it cannot be a sample (no image name included)."""
    layout = row_layout(row, params.layout)
    if layout == "odvg":
        labels = odvg_labels(row, resolved_format(params, "odvg", group))
    elif layout == "conversation":
        labels = conversation_labels(row, lambda frame: resolved_format(params, "conversation", group, frame))
    else:
        labels = native_labels(row, resolved_format(params, "native", group))
    if not isinstance(labels.image, str) or not labels.image:
        key = "filename" if layout == "odvg" else "image"
        what = "no" if labels.image in (None, "") else f"a {type(labels.image).__name__} as its"
        raise BadRow("bad_row", f"the row names {what} image (`{key}`)")
    return labels


# ---------------------------------------------------------------------------------------------- listing


def _kind(path: str) -> str | None:
    """A file's container by its name: wds, refs, instances, jsonl, media; None."""
    low = path.lower()
    if low.endswith(TAR_EXTS):
        return "wds"
    if is_refs(path):
        return "refs"
    if is_instances(path):
        return "instances"
    ext = low.rsplit(".", 1)[-1] if "." in posixpath.basename(low) else ""
    return "media" if ext in IMAGE_EXTS else "jsonl" if ext == "jsonl" else None


def _classifier(layout: str) -> Any:
    """`scan_inputs`'s classify: refs and instances files are reported as jsonl, re-kinded after."""

    def classify(path: str) -> str | None:
        kind = None if hidden(path) else _kind(path)
        if kind == "media":
            return "media"
        if kind == "instances" and "refs" in CONTAINERS[layout]:
            return "jsonl"
        return None if kind not in CONTAINERS[layout] else "wds" if kind == "wds" else "jsonl"

    return classify


def _head(path: str, n: int = SNIFF_LINES) -> list[bytes]:
    """The first lines of a file; none for one that is unreadable or no regular file."""
    try:
        check_regular(path)
        with fsspec.open(path, "rb") as f:
            return list(itertools.islice(f, n))
    except (OSError, ReadRefused):  # the reader quarantines it when the unit is read
        return []


def _check_boxes(path: str, found: list[tuple[str, Region]]) -> None:
    """Refuse an input whose sniffed boxes contradict their format, or are all within 0-1 under a pixel one."""
    pixel: list[list[float]] = []
    for where, region in found:
        try:
            box = box_numbers(region.box)
        except BoxUnreadable:
            continue  # that region alone is bad_box when read
        why = contradiction(box, region.fmt)
        if why:
            raise InputError(f"{where} ({region.ref}): {why}; declare the input's read.box_format "
                             "(or read.box_formats for it)")  # fmt: skip
        if region.fmt in PIXEL_FORMATS:
            pixel.append(box)
    values = [v for b in pixel for v in b if math.isfinite(v)]
    if len(pixel) >= 4 and values and max(values) <= 1:
        raise InputError(f"{path}: all {len(pixel)} boxes of its first rows are within 0-1 under a pixel "
                         "read.box_format: boxes look normalised: declare read.box_format: norm")  # fmt: skip


def _check_jsonl(path: str, group: str, params: GroundingReadParams) -> None:
    rows = []
    for n, raw in enumerate(_head(path), 1):
        try:
            row = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict):
            rows.append((n, row))
    if rows and params.layout == "auto" and not any(row_layouts(r) for _, r in rows):
        raise InputError(f"{path}: none of its first {SNIFF_LINES} rows fits a grounding layout (odvg, "
                         f"conversation, native); set read.layout ({', '.join(LAYOUTS[1:])})")  # fmt: skip
    found = []
    for n, row in rows:
        try:
            labels = row_labels(row, params, group)
        except BadRow as exc:
            if exc.reason == "bad_box":
                raise InputError(f"{path} line {n}: {exc}") from None
            continue  # that row alone is quarantined when read
        except Exception:  # data the listing cannot judge: the reader's guard quarantines that row
            continue
        found += [(f"{path} line {n}", r) for r in labels.regions if not r.missing]
    _check_boxes(path, found)


def _check_refs(path: str, group: str, params: GroundingReadParams) -> None:
    fmt = resolved_format(params, "refcoco", group)
    found = sniff_refs(path, params.timeout_s, params.instances, params.max_refs, SNIFF_LINES)
    _check_boxes(path, [(f"{path} {where}", Region("referring", "", box, fmt, ref="bbox")) for where, box in found])


def _check_image_root(root: str | None) -> None:
    """InputError for a `read.image_root` that does not exist, where its filesystem can tell (a web
    server need not answer for a folder; an unreachable store is the reader's to report per image)."""
    if root is None or root.split("://", 1)[0].lower() in ("http", "https"):
        return
    fs, path = filesystem(root, InputError)
    try:
        there = fs.exists(path)
    except Exception:  # no answer (credentials, network): each image says it when read
        return
    if not there:
        raise InputError(f"read.image_root {root!r} does not exist: give the folder (or URI) the label files' "
                         "image names resolve in, or null for each label file's own folder")  # fmt: skip


def _check_box_formats(inputs: list[str], params: GroundingReadParams) -> None:
    unknown = sorted(set(params.box_formats) - set(inputs))
    if unknown:
        raise InputError(f"read.box_formats names {', '.join(map(repr, unknown))}, not among the inputs "
                         f"(keys are the --input URIs exactly as given: {', '.join(map(repr, inputs))})")  # fmt: skip


def list_grounding_units(inputs: list[str], params: GroundingReadParams) -> list[Unit]:
    """Expand URIs into a sorted, deterministic list of units (a slice of a jsonl, a refs file, a
    tar shard), checking each input's first boxes; InputError for an input with nothing to read, a
    refs file without its instances.json, an instances.json alone, or boxes that refute the format."""
    _check_box_formats(inputs, params)
    _check_image_root(params.image_root)
    scan = scan_inputs(inputs, _classifier(params.layout), "grounding label files (jsonl, refs files, tars)")
    if scan.loose:
        given = next(iter(scan.loose))
        raise InputError(f"input {given!r} holds images but no grounding label file (jsonl, refs file, tar)")
    ignored = {given: [p for _, p in other] for given, other in scan.other.items()}
    containers = []
    for (_, path), given in sorted(scan.containers.items(), key=lambda kv: kv[0][1]):
        if _kind(path) == "instances":
            ignored.setdefault(given, []).append(path)
        else:
            containers.append((path, given))
    alone = {g for (_, p), g in scan.containers.items() if _kind(p) == "instances"} - {g for _, g in containers}
    if alone:
        raise InputError(f"input {sorted(alone)[0]!r} is a COCO instances file alone: give the RefCOCO refs file "
                         "(refs(unc).p, refs*.json) as the input; its instances.json is read beside it "
                         "(or from read.instances)")  # fmt: skip
    units: list[Unit] = []
    for path, given in containers:
        kind = _kind(path)
        if kind == "jsonl":
            _check_jsonl(path, given, params)
            units += jsonl_units(path, params.jsonl_unit_lines, len(units), given)
            continue
        if kind == "refs":
            _check_refs(path, given, params)
        units.append(Unit(len(units), kind or "jsonl", path, group=given))
    return attach_ignored(units, ignored)


# ---------------------------------------------------------------------------------------------- adapter


def _json(value: dict[str, Any]) -> str:
    return utf8(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str))


def _digest(*parts: Any) -> str:
    data = json.dumps(parts, ensure_ascii=False).encode("utf-8", "replace")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class GroundingAdapter(Adapter):
    """Reads items into samples; keeps the unit's pool of recent phrases (the samples' negatives)."""

    params: GroundingReadParams

    def __init__(self, params: GroundingReadParams) -> None:
        super().__init__(params)
        self.pool: dict[str, None] = {}

    def loop(self, unit: Unit) -> Any:
        """A refs file is one container whose records are the images its refs name."""
        return self._refs if unit.kind == "refs" else None

    def _refs(self, unit: Unit, report: ReadReport) -> Iterator[Item]:
        p = self.params
        return refs_items(unit, report, p.timeout_s, p.instances, p.max_refs, p.max_regions)

    def _origin(self, unit: Unit, row: dict[str, Any] | None) -> str:
        if unit.kind in ("refs", "wds"):
            return "refcoco" if unit.kind == "refs" else "native"
        if self.params.layout != "auto":
            return self.params.layout
        fits = row_layouts(row) if isinstance(row, dict) else []
        return fits[0] if len(fits) == 1 else ""

    @staticmethod
    def _source(unit: Unit, item: Item, uri: str = "") -> Source:
        return Source(uri=utf8(uri or item.uri or unit.uri), unit=unit.index, member=utf8(item.member),
                      index=item.index)  # fmt: skip

    def quarantine(self, unit: Unit, item: Item, reason: str, error: str) -> GroundingSample:
        src = self._source(unit, item)
        row = item.row if isinstance(item.row, dict) else {}
        name = next((v for k in ("filename", "image") if isinstance(v := row.get(k), str)), "")
        rec = GroundingSample(
            id=grounding_content_id(src.ref().encode("utf-8", "replace"), []), source=src,
            name=utf8(name if not name.startswith("data:") else ""), origin=self._origin(unit, item.row),
            box_frame=self.params.box_frame, items=[],
        )  # fmt: skip
        return rec.settle(reason, error, stage="read")

    def from_row(self, unit: Unit, item: Item) -> GroundingSample:
        row = item.row or {}
        if unit.kind == "refs":
            labels = refs_labels(row, resolved_format(self.params, "refcoco", unit.group))
        else:
            labels = row_labels(row, self.params, unit.group)
        return self._sample(unit, item, labels)

    def from_members(self, unit: Unit, item: Item) -> GroundingSample:
        members = item.members or {}
        if "json" not in members:
            raise BadRow("bad_row", f"sample {item.member} has no .json member with its regions")
        try:
            meta = json.loads(members["json"].decode("utf-8-sig"))
        except (ValueError, RecursionError) as exc:
            raise BadRow("bad_row", f"{item.member}.json is not valid JSON: {type(exc).__name__}: {exc}") from None
        if not isinstance(meta, dict):
            raise BadRow("bad_row", f"{item.member}.json holds a {type(meta).__name__}, not an object")
        labels = native_labels(meta, resolved_format(self.params, "native", unit.group))
        ext = next((e for e in IMAGE_EXTS if e in members), None)
        missing = "" if ext else f"no image member among {sorted(members)}"
        return self._sample(unit, item, dataclasses.replace(labels, image=members.get(ext or ""), name=item.member,
                                                            missing=missing))  # fmt: skip

    def from_file(self, unit: Unit, item: Item) -> GroundingSample:
        raise BadRow("bad_row", "grounding inputs are label files; an image alone has no regions")

    def _image(self, labels: Labels, unit: Unit) -> tuple[bytes, str]:
        """(bytes, uri) of the sample's image: a tar member's, a data: URL's, or a file in the image root."""
        if labels.missing:
            raise BadRow("image_missing", labels.missing)
        if isinstance(labels.image, bytes):
            return labels.image, ""
        inline = data_url_bytes(labels.image)
        if inline is not None:
            return inline, ""
        root = self.params.image_root or posixpath.dirname(unit.uri)
        uri = resolve_inside(labels.image, root, self.params.allow_outside_root)
        try:
            return read_bytes(uri, self.params.timeout_s), uri
        except FileNotFoundError as exc:  # the root does not hold it: a drop, as the reason registry says
            raise BadRow("image_missing", f"FileNotFoundError: {exc}") from None
        except (OSError, ValueError, ImportError) as exc:  # unreadable, unknown protocol, no fsspec driver
            raise BadRow("read_error", f"{type(exc).__name__}: {exc}") from None

    def _negatives(self, phrases: list[str]) -> list[str]:
        """The pool as it was before this sample, less its own phrases; then its phrases join the pool."""
        own = dict.fromkeys(p for p in phrases if p)
        negatives = [p for p in self.pool if p not in own]
        for p in own:
            self.pool.pop(p, None)
            self.pool[p] = None
        while len(self.pool) > self.params.negative_pool:
            del self.pool[next(iter(self.pool))]
        return negatives

    def _sample(self, unit: Unit, item: Item, labels: Labels) -> GroundingSample:
        if len(labels.regions) > self.params.max_regions:
            raise BadRow("bad_row", too_many_regions(len(labels.regions), self.params.max_regions))
        src = self._source(unit, item)
        image, problem = None, None
        if labels.regions:
            try:
                image, uri = self._image(labels, unit)
                src = self._source(unit, item, uri)
            except (BadRow, ReadRefused) as exc:
                problem = (exc.reason, str(exc))
        read = [(r, *r.read_box()) for r in labels.regions]
        body = image if image is not None else src.ref().encode("utf-8", "replace")
        sid = grounding_content_id(body, [(r.phrase, box, r.fmt, r.task) for r, box, _ in read])
        items = [self._region(src, sid, slot, *r) for slot, r in enumerate(read)]
        rec = GroundingSample(
            id=sid, source=src, image=image, file_bytes=len(image or b""), origin=labels.origin,
            name=utf8(labels.name) if isinstance(labels.name, str) and not labels.name.startswith("data:") else "",
            caption=labels.caption, claimed_width=labels.width, claimed_height=labels.height,
            box_frame=self.params.box_frame, region_count=len(items), extra=_json(labels.extra), items=items,
            negatives=self._negatives([r.phrase for r in labels.regions]),
        )  # fmt: skip
        if not items:
            return rec.settle("no_regions", f"{src.ref()}: the input holds no region for this image", stage="read")
        return rec.settle(*problem, stage="read") if problem else rec

    @staticmethod
    def _region(src: Source, sid: str, slot: int, r: Region, box: list[float], why: str) -> RegionRecord:
        """Region `slot` of sample `sid`, with the sample's source; `why` settles it (bad_box, or
        bad_row for a region whose input record is unreadable)."""
        rec = RegionRecord(
            id=_digest(sid, slot, r.phrase, box), source=src, sample_id=sid, slot=slot, task=r.task,
            phrase=r.phrase, category=r.category, ref=utf8(r.ref), split=r.split, input_box=box,
            box_format=r.fmt, extra=_json(r.extra),
        )  # fmt: skip
        return rec.settle(r.reason, why, stage="read") if why else rec


def read_grounding_unit(unit: Unit, params: GroundingReadParams, report: ReadReport | None = None) -> Iterator[Record]:
    """Every record of `unit` (samples carrying their regions), read or quarantined; never raises for bad data."""
    return read_with(unit, GroundingAdapter(params), report)
