"""The OCR corpus's label parsers: pure functions from what an input says to `TextLine`s (no I/O).

* A quad is four `[x, y]` floats clockwise on screen (x right, y down) from the text's top-left, in
  the input's frame. Four input points keep their order (reversed after the first when they run
  counter-clockwise); three or more than four become their *minimum-area* rectangle (rotating
  calipers over the hull) from the corner nearest the first point (the text's top-left in ICDAR,
  Total-Text, CTW1500, COCO-Text): a rotated or curved line keeps a tight box a recogniser can read.
* ICDAR `###` is do-not-care: `ignore=True`, text `""` (the marker is no transcription, so no trainer
  can take it for one). So is an annotation with no transcription (COCO without `text`, an empty
  ICDAR field, COCO-Text without `utf8_string`); COCO `iscrowd`, COCO-Text `illegible` and mmocr
  `ignore` are do-not-care with their text kept.
* A line that cannot be read raises `BadRow("bad_label")` naming where it is: the caller settles the
  whole image (a partly labelled image would teach that its unlabelled text is background).
* Recognition crops (task `rec`) carry `quad=[]`: the decode stage frames the whole image.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mmcurate.schemas import TextLine

from .io import BadRow, clean_text
from .readers import IMAGE_EXTS

IGNORE_MARK = "###"
TEXT_KEYS = ("text", "transcription", "utf8_string")
"""Where COCO-style annotations keep their transcription, in order of preference."""
COCO_TEXT_LANGS = {"english": "en"}
"""COCO-Text `language` values naming a language; `not english` names none we can write ('': unknown),
`na` none at all (the read's `lang`). The raw value stays in `extra`."""
COCO = {  # flavour -> (polygon key, keys read out of an annotation)
    "v2": ("mask", ("mask", "bbox", "utf8_string", "image_id")),
    "coco": ("segmentation", ("segmentation", "bbox", "iscrowd", "image_id", *TEXT_KEYS)),
}
NATIVE_KEYS = ("image", "lines", "transcript", "origin", "task")
_ICDAR13_SPACE = re.compile(r'^\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(".*)$')
Quad = list[list[float]]


class LayoutUnknown(ValueError):
    """The input's shape fits no layout, or more than one: the message says which keys were seen."""


@dataclass
class Labels:
    """What a label parser found for one image, before its bytes are read."""

    image: Any
    """The image as the input names it (a path, a `data:` URL); None when the caller holds the bytes."""
    name: str
    lines: list[TextLine] = field(default_factory=list)
    transcript: str = ""
    task: str = "det"
    origin: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.lines and not self.transcript.strip()


def bad(message: str) -> BadRow:
    return BadRow("bad_label", message)


def _str_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _rest(entry: dict[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in used}


# ---------------------------------------------------------------------------------------------- geometry


def number(value: Any, what: str) -> float:
    """A JSON coordinate: a finite int or float (never a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(f"{what}: {value!r} is not a number")
    if not math.isfinite(value):
        raise bad(f"{what}: {value!r} is not finite")
    return float(value)


def _signed_area(p: Sequence[Sequence[float]]) -> float:
    """Twice the signed area; positive for points running clockwise on screen (y down)."""
    return sum(p[i - 1][0] * p[i][1] - p[i][0] * p[i - 1][1] for i in range(len(p)))


def _tidy(points: Sequence[Sequence[float]]) -> Quad:
    return [[round(float(x), 4) + 0.0, round(float(y), 4) + 0.0] for x, y in points]


def clockwise(p: Sequence[Sequence[float]]) -> Quad:
    """Four points, the first kept, made to run clockwise on screen."""
    return _tidy([p[0], p[3], p[2], p[1]] if _signed_area(p) < 0 else p)


def box_quad(x1: float, y1: float, x2: float, y2: float) -> Quad:
    """An axis-aligned box (two opposite corners) as its quad from the top-left."""
    x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
    return _tidy([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])


def _hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Convex hull (Andrew's monotone chain), collinear points dropped."""
    pts = sorted(set(points))
    chains: list[list[tuple[float, float]]] = [[], []]
    for chain, seq in zip(chains, (pts, pts[::-1]), strict=True):
        for p in seq:
            while len(chain) >= 2 and _signed_area([chain[-2], chain[-1], p]) <= 0:  # not a left turn
                chain.pop()
            chain.append(p)
    return pts if len(pts) <= 2 else chains[0][:-1] + chains[1][:-1]


def _rect_along(hull: list[tuple[float, float]], i: int) -> tuple[float, list[tuple[float, float]]]:
    """(area, corners) of the hull's bounding rectangle with one side on edge i."""
    (x0, y0), (x1, y1) = hull[i - 1], hull[i]
    n = math.hypot(x1 - x0, y1 - y0)
    ux, uy = (x1 - x0) / n, (y1 - y0) / n
    us, vs = [x * ux + y * uy for x, y in hull], [y * ux - x * uy for x, y in hull]
    u0, u1, v0, v1 = min(us), max(us), min(vs), max(vs)
    corners = ((u0, v0), (u1, v0), (u1, v1), (u0, v1))
    return (u1 - u0) * (v1 - v0), [(u * ux - v * uy, u * uy + v * ux) for u, v in corners]


def min_area_quad(points: Sequence[Sequence[float]]) -> Quad:
    """The minimum-area rectangle around `points`, clockwise from the corner nearest `points[0]`."""
    hull = _hull([(float(x), float(y)) for x, y in points])
    if len(hull) < 3:  # collinear or one point: a degenerate box, kept for the filters to judge
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return box_quad(min(xs), min(ys), max(xs), max(ys))
    best = min((_rect_along(hull, i) for i in range(len(hull))), key=lambda r: r[0])[1]
    best = best[::-1] if _signed_area(best) < 0 else best
    start = min(range(4), key=lambda k: math.dist(best[k], points[0]))
    return _tidy(best[start:] + best[:start])


def points_of(value: Any, what: str) -> list[tuple[float, float]]:
    """A polygon as flat `[x1, y1, x2, y2, ...]` or as `[[x, y], ...]`, checked."""
    if not isinstance(value, list):
        raise bad(f"{what}: a {type(value).__name__}, not a list of coordinates")
    if value and all(isinstance(p, list) for p in value):
        if any(len(p) != 2 for p in value):
            raise bad(f"{what}: a point that is not [x, y]")
        value = [v for p in value for v in p]
    if len(value) % 2:
        raise bad(f"{what}: {len(value)} numbers, not x, y pairs")
    nums = [number(v, what) for v in value]
    return list(zip(nums[0::2], nums[1::2], strict=True))


def polygon_quad(value: Any, what: str) -> Quad:
    """Four points as given (made clockwise); three or more than four: their minimum-area rectangle."""
    points = points_of(value, what)
    if len(points) < 3:
        raise bad(f"{what}: {len(points)} points, a polygon needs at least 3")
    return clockwise(points) if len(points) == 4 else min_area_quad(points)


def bbox_quad(value: Any, what: str, form: str) -> Quad:
    """A COCO `xywh` or an mmocr `xyxy` box as its quad."""
    if not isinstance(value, list) or len(value) != 4:
        raise bad(f"{what}: expected 4 numbers ({form}), got {value!r}"[:300])
    a, b, c, d = (number(v, what) for v in value)
    return box_quad(a, b, a + c, b + d) if form == "xywh" else box_quad(a, b, c, d)


# ---------------------------------------------------------------------------------------------- ICDAR


def _text_number(field_: str) -> float | None:
    """A coordinate written as text; None when it is none (NaN and infinities are refused apart)."""
    try:
        value = float(field_)
    except ValueError:
        return None
    if not math.isfinite(value):
        raise ValueError(f"coordinate {field_.strip()!r} is NaN or infinite")
    return value


def _icdar2013(fields: list[str], quoted: str) -> tuple[Quad, str]:
    """A box and ICDAR 2013's `"text"`: quotes stripped, `\\"` and `\\\\` unescaped."""
    nums = [_text_number(f) for f in fields]
    if any(v is None for v in nums):
        raise ValueError(f"a box coordinate is not a number: {fields}")
    s = quoted.strip()
    if len(s) < 2 or not s.endswith('"'):
        raise ValueError(f"the transcription {s!r} opens a quote it does not close")
    return box_quad(*nums), re.sub(r'\\(["\\])', r"\1", s[1:-1])  # type: ignore[arg-type]


def _icdar2015(line: str) -> tuple[Quad, str]:
    fields = line.split(",", 8)
    nums: list[float] = []
    for f in fields[:8]:
        if (value := _text_number(f)) is None:
            break
        nums.append(value)
    if len(nums) == 8 and len(fields) == 9:
        return clockwise(list(zip(nums[0::2], nums[1::2], strict=True))), fields[8]
    if len(nums) == len(fields):
        raise ValueError(f"{len(nums)} coordinates and no transcription after them, expected 8 and a transcription")
    if len(nums) == len(fields) - 1:  # the rest is the transcription: too few numbers before it
        raise ValueError(f"{len(nums)} coordinates before the transcription, expected 8 (x1,y1,...,x4,y4)")
    raise ValueError(f"coordinate {len(nums) + 1} is not a number: {fields[len(nums)].strip()!r}")


def icdar_line(line: str) -> tuple[Quad, str]:
    """(quad, transcription) of one ground-truth line: 2015 `x1,y1,...,x4,y4,text` (commas in the
    text kept), or 2013 `x1,y1,x2,y2,"text"` / `x1 y1 x2 y2 "text"`; ValueError saying what is wrong."""
    m = _ICDAR13_SPACE.match(line)
    if m and "," not in m.group(1):
        return _icdar2013(list(m.groups()[:4]), m.group(5))
    fields = line.split(",", 4)
    if len(fields) == 5 and fields[4].lstrip().startswith('"') and all(_text_number(f) is not None for f in fields[:4]):
        return _icdar2013(fields[:4], fields[4])
    return _icdar2015(line)


def icdar_lines(text: str, file: str, lang: str) -> list[TextLine]:
    """Every line of a ground-truth file (BOM, CRLF and blank lines tolerated); the first bad line
    raises bad_label naming the file and its line number."""
    out = []
    for n, raw in enumerate(text.lstrip("\ufeff").split("\n"), 1):
        if not raw.strip():
            continue
        try:
            quad, words = icdar_line(raw.rstrip("\r"))
        except ValueError as exc:
            raise bad(f"{file} line {n}: {exc}") from None
        words = clean_text(words)
        ignore = words.strip() in (IGNORE_MARK, "")
        out.append(TextLine(quad, "" if ignore else words, lang=lang, ignore=ignore))
    return out


# ---------------------------------------------------------------------------------------------- recognition


def rec_line(line: str) -> tuple[str, str]:
    """`filename text` (mmocr's old txt labels): split on the first space; the text may hold spaces."""
    name, space, text = line.rstrip("\r\n").partition(" ")
    if not space or not name:
        raise bad(f"no space between the image name and its text in {line[:200]!r}")
    return name, text


def is_rec_line(line: str) -> bool:
    """Whether a text line reads `name.jpg text` (what makes a .txt a label file, not a gt file)."""
    name, space, text = line.strip().partition(" ")
    return bool(space and text.strip()) and "." in name and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTS


def rec_labels(name: Any, texts: list[Any], lang: str, extra: dict[str, Any] | None = None) -> Labels:
    """A cropped word or line: one line per text, with no box (the decode frames the whole image)."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise bad(f"text {i} is a {type(text).__name__}, not a string")
    lines = [TextLine([], clean_text(t), lang=lang) for t in texts if t.strip()]
    return Labels(name, _str_or_empty(name), lines, task="rec", origin="rec", extra=extra or {})


# ---------------------------------------------------------------------------------------------- whole-JSON files


def _data_list_kind(doc: dict[str, Any]) -> list[str]:
    """mmocr 1.x: `metainfo.task_name`, else what the first instance holds (boxes: det; text: rec)."""
    meta = doc.get("metainfo")
    task = meta.get("task_name") if isinstance(meta, dict) else None
    if task in ("textdet", "textspotting", "textrecog"):
        return ["rec" if task == "textrecog" else "mmocr"]
    for entry in doc["data_list"]:
        for inst in (entry.get("instances") or []) if isinstance(entry, dict) else []:
            if isinstance(inst, dict) and ("polygon" in inst or "bbox" in inst or "text" in inst):
                return ["mmocr" if "polygon" in inst or "bbox" in inst else "rec"]
    return ["mmocr", "rec"]


def _coco_flavour(doc: dict[str, Any]) -> str | None:
    """`v2` (COCO-Text: `imgs` / `anns` objects), `coco` (`images` / `annotations` lists) or None."""
    v2 = isinstance(doc.get("imgs"), dict) and isinstance(doc.get("anns"), dict)
    coco = isinstance(doc.get("images"), list) and isinstance(doc.get("annotations"), list)
    if v2 and coco:
        raise LayoutUnknown("the file holds both COCO-Text `imgs`/`anns` and COCO `images`/`annotations`")
    return "v2" if v2 else "coco" if coco else None


def json_layout(doc: Any, wanted: str = "auto") -> str:
    """A whole-JSON label file's layout: coco_text (COCO-Text v2, or COCO-style with transcriptions),
    mmocr (1.x textdet / textspotting) or rec (1.x textrecog); LayoutUnknown when its keys fit none,
    or (auto) more than one."""
    if not isinstance(doc, dict):
        raise LayoutUnknown(f"the top level is a {type(doc).__name__}, not an object")
    listed = isinstance(doc.get("data_list"), list)
    fits = (["coco_text"] if _coco_flavour(doc) else []) + (_data_list_kind(doc) if listed else [])
    if wanted != "auto":
        if wanted not in fits and not (listed and wanted in ("mmocr", "rec")):
            raise LayoutUnknown(f"read.layout {wanted} does not fit a file with the keys {sorted(doc)[:12]}")
        return wanted
    if len(fits) != 1:
        raise LayoutUnknown(
            f"the file could be any of {fits} (a data_list with no task_name nor instances)"
            if fits else f"no OCR layout has the keys {sorted(doc)[:12]}"
        )  # fmt: skip
    return fits[0]


def _name(entry: Any, key: str, fallback: str) -> str:
    value = entry.get(key) if isinstance(entry, dict) else None
    return value if isinstance(value, str) and value else fallback


def _coco_entries(doc: dict[str, Any], flavour: str) -> tuple[list[tuple[str, dict]], list[str]]:
    if flavour == "v2":
        images, anns = [(str(k), v) for k, v in doc["imgs"].items()], list(doc["anns"].items())
    else:
        images = [(str(v.get("id")) if isinstance(v, dict) else f"#{i}", v) for i, v in enumerate(doc["images"])]
        anns = [(a.get("id", i) if isinstance(a, dict) else i, a) for i, a in enumerate(doc["annotations"])]
    by_image: dict[str, list[Any]] = {key: [] for key, _ in images}
    orphans = []
    for aid, ann in anns:
        key = str(ann.get("image_id")) if isinstance(ann, dict) else None
        if key in by_image:
            by_image[key].append(ann)
        else:  # no image of the file has it: not a record, counted with the ignored members
            orphans.append(f"annotation {aid}")
    rows = [(_name(img, "file_name", f"image {key}"), {"flavour": flavour, "image": img, "anns": by_image[key]})
            for key, img in images]  # fmt: skip
    return rows, orphans


def json_entries(doc: dict[str, Any], layout: str) -> tuple[list[tuple[str, dict]], list[str]]:
    """(member name, row) per image the file lists (the container's record count), and the
    annotations that belong to no listed image."""
    if layout == "coco_text":
        return _coco_entries(doc, _coco_flavour(doc) or "coco")
    return [(_name(e, "img_path", f"data_list[{i}]"), {"flavour": layout, "entry": e})
            for i, e in enumerate(doc["data_list"])], []  # fmt: skip


def _extra(image: dict[str, Any], used: tuple[str, ...], per_line: list[dict[str, Any]]) -> dict[str, Any]:
    """The input's image fields with no column, and its per-line ones (one object per line) if any."""
    return {"image": _rest(image, used), **({"lines": per_line} if any(per_line) else {})}


def _quad_of(ann: dict[str, Any], poly_key: str, what: str, form: str) -> Quad:
    """The polygon (COCO: all its parts together), else the box."""
    poly = ann.get(poly_key)
    if isinstance(poly, list) and poly and all(isinstance(p, list) for p in poly) and poly_key == "segmentation":
        return polygon_quad([list(pt) for part in poly for pt in points_of(part, what)], what)
    return polygon_quad(poly, what) if isinstance(poly, list) and poly else bbox_quad(ann.get("bbox"), what, form)


def _coco_line(ann: Any, i: int, flavour: str, lang: str) -> tuple[TextLine, dict[str, Any]]:
    what = f"annotation {i}"
    if not isinstance(ann, dict):
        raise bad(f"{what} is a {type(ann).__name__}, not an object")
    poly_key, used = COCO[flavour]
    text = next((ann[k] for k in TEXT_KEYS if ann.get(k) is not None), "")
    if not isinstance(text, str):
        raise bad(f"{what}: the transcription is a {type(text).__name__}, not a string")
    raw_lang = ann.get("language")
    if flavour == "v2":
        ln_lang = COCO_TEXT_LANGS.get(raw_lang, "") if raw_lang not in (None, "na") else lang
        ignore = ann.get("legibility", "legible") != "legible"
    else:
        ln_lang, ignore = raw_lang if isinstance(raw_lang, str) else lang, bool(ann.get("iscrowd"))
    line = TextLine(_quad_of(ann, poly_key, what, "xywh"), clean_text(text), ln_lang, ignore or not text.strip())
    return line, _rest(ann, used)


def _mmocr_line(inst: Any, i: int, lang: str) -> tuple[TextLine, dict[str, Any]]:
    what = f"instance {i}"
    if not isinstance(inst, dict) or not isinstance(inst.get("text", ""), str):
        raise bad(f"{what}: not an object with a string text")
    line = TextLine(_quad_of(inst, "polygon", what, "xyxy"), clean_text(inst.get("text", "")), lang)
    line.ignore = bool(inst.get("ignore"))
    return line, _rest(inst, ("polygon", "bbox", "ignore", "text"))


def entry_labels(row: dict[str, Any], lang: str) -> Labels:
    """The labels of one image a whole-JSON file lists (a row of `json_entries`)."""
    flavour = row["flavour"]
    entry = row["image"] if flavour in COCO else row["entry"]
    insts = row["anns"] if flavour in COCO else entry.get("instances") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or not isinstance(insts or [], list):
        raise BadRow("bad_row", "an image entry that is not an object (with an `instances` list)")
    key, used = ("file_name", ("file_name",)) if flavour in COCO else ("img_path", ("img_path", "instances"))
    if flavour == "rec":
        texts = [i.get("text") if isinstance(i, dict) else i for i in insts or []]
        return rec_labels(entry.get(key), texts, lang, _extra(entry, used, []))
    made = [_coco_line(a, i, flavour, lang) if flavour in COCO else _mmocr_line(a, i, lang)
            for i, a in enumerate(insts or [])]  # fmt: skip
    name, extra = entry.get(key), _extra(entry, used, [r for _, r in made])
    origin = "coco_text" if flavour in COCO else "mmocr"
    return Labels(name, _str_or_empty(name), [ln for ln, _ in made], origin=origin, extra=extra)


# ---------------------------------------------------------------------------------------------- rows and samples


def row_layouts(row: dict[str, Any]) -> list[str]:
    """The layouts a jsonl row fits: native (`image` + `lines` of objects), transcript (`image` +
    `text` / `transcript`, or `lines` of strings), rec (mmocr's old `filename` + `text`)."""
    fits = []
    if "image" in row:
        lines = row.get("lines")
        if isinstance(lines, list) and lines and isinstance(lines[0], dict):
            fits.append("native")
        elif (isinstance(lines, list) and lines) or "transcript" in row or "text" in row:
            fits.append("transcript")
    return fits + (["rec"] if "filename" in row and "text" in row else [])


def row_layout(row: dict[str, Any], wanted: str = "auto") -> str:
    """The row's layout: `wanted`, or the one layout its keys fit; LayoutUnknown otherwise."""
    fits = [wanted] if wanted != "auto" else row_layouts(row)
    if len(fits) != 1:
        raise LayoutUnknown(f"the keys {sorted(row)[:12]} fit " + (" and ".join(fits) or "no OCR layout"))
    return fits[0]


def _string(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRow("bad_row", f"`{key}` is a {type(value).__name__}, not a string")
    return value or ""


def transcript_of(row: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """(transcript, keys read): `transcript`, else `text`, else `lines` of strings joined by newlines."""
    for key in ("transcript", "text"):
        if row.get(key) is not None:
            return clean_text(_string(row, key)), (key,)
    lines = row.get("lines")
    if lines is not None and (not isinstance(lines, list) or not all(isinstance(s, str) for s in lines)):
        raise BadRow("bad_row", "`lines` of a transcript row must be a list of strings")
    return clean_text("\n".join(lines or [])), ("lines",) if lines is not None else ()


def _native_line(value: Any, i: int, lang: str) -> TextLine:
    what = f"lines[{i}]"
    if not isinstance(value, dict):
        raise bad(f"{what} is a {type(value).__name__}, not an object")
    quad, text, ignore = value.get("quad") or [], value.get("text", ""), value.get("ignore", False)
    ln_lang = value.get("lang") or lang
    if not isinstance(text, str) or not isinstance(ln_lang, str) or not isinstance(ignore, bool):
        raise bad(f"{what}: text and lang must be strings, ignore true or false")
    return TextLine(polygon_quad(quad, f"{what}.quad") if quad else [], clean_text(text), ln_lang, ignore)


def native_labels(row: dict[str, Any], lang: str) -> Labels:
    """Our own rows (the renderer's jsonl, a shard's `KEY.json`): lines with quads, a transcript,
    the origin and task when given (else det with boxes, rec without, page for a transcript alone)."""
    raw = row.get("lines") or []
    if not isinstance(raw, list):
        raise bad(f"`lines` is a {type(raw).__name__}, not a list")
    lines = [_native_line(v, i, lang) for i, v in enumerate(raw)]
    task = row.get("task")
    if task not in ("det", "rec", "page"):
        task = "det" if any(ln.quad for ln in lines) else "rec" if lines else "page"
    origin, image = _string(row, "origin") or "native", row.get("image")
    transcript = clean_text(_string(row, "transcript"))
    return Labels(image, _str_or_empty(image), lines, transcript, task, origin, _rest(row, NATIVE_KEYS))


def row_labels(row: dict[str, Any], layout: str, lang: str) -> Labels:
    """The labels of one jsonl row in its layout (`row_layout`)."""
    if layout == "rec":
        return rec_labels(row.get("filename"), [row.get("text")], lang, _rest(row, ("filename", "text")))
    if layout == "native":
        return native_labels(row, lang)
    transcript, used = transcript_of(row)
    image = row.get("image")
    return Labels(image, _str_or_empty(image), [], transcript, "page", "transcript", _rest(row, ("image", *used)))


def member_text(data: bytes, what: str) -> str:
    """A file's or member's text: UTF-8 (a BOM tolerated), never silently altered."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bad(f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _member_json(members: dict[str, bytes], key: str) -> dict[str, Any]:
    if "json" not in members:
        return {}
    try:
        meta = json.loads(member_text(members["json"], f"{key}.json"))
    except (ValueError, RecursionError) as exc:
        raise bad(f"{key}.json is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(meta, dict):
        raise bad(f"{key}.json holds a {type(meta).__name__}, not an object")
    return meta


def sample_labels(members: dict[str, bytes], key: str, wanted: str, lang: str) -> Labels:
    """A webdataset sample: `KEY.json` with `lines` (native; `KEY.txt`, if any, its transcript when
    the json has none), or `KEY.txt` / a json `text` / `transcript` (a page transcript)."""
    meta = _member_json(members, key)
    txt = member_text(members["txt"], f"{key}.txt") if "txt" in members else None
    lines = meta.get("lines")
    native = isinstance(lines, list) and bool(lines) and isinstance(lines[0], dict)
    if (wanted if wanted != "auto" else "native" if native else "transcript") == "native":
        if "lines" not in meta:
            raise BadRow("missing_ground_truth", f"{key}.json has no `lines`")
        labels = native_labels({**meta, "transcript": meta.get("transcript") or txt}, lang)
        return dataclasses.replace(labels, image=None, name=key)
    if txt is None and meta.get("transcript") is None and meta.get("text") is None:
        raise BadRow("missing_ground_truth", f"sample {key} has no .txt member and no transcript in a .json")
    transcript, used = (clean_text(txt), ()) if txt is not None else transcript_of(meta)
    return Labels(None, key, [], transcript, "page", "transcript", _rest(meta, used))
