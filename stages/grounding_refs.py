"""RefCOCO / RefCOCO+ / RefCOCOg (the refer toolkit's files): refs files and their COCO instances.

A refs file (`refs(unc).p`, `refs(google).p`, `refs(umd).p`: Python 2 cPickle; or `refs*.json`, a
JSON conversion) is a list of refs `{ref_id, ann_id, image_id, split, category_id, sentences:
[{sent_id, sent, raw, tokens}]}`; the boxes are in the COCO `instances.json` the refs point into
(`annotations[].bbox`, x,y,w,h pixels). One entry per image, in the order of its first ref; one
region per (ref, sentence).

Pickles are read by `RestrictedUnpickler`: `find_class` refuses every global, so only what pickle
builds without one (dict, list, tuple, str, bytes, int, float, bool, None) can come out and nothing
in the file is ever called; a refused file is `bad_refs` as a whole, and so is a file that is no
list of dicts.

A pickle's memo can repeat one object at ~2 bytes a copy (8 KB can name millions of refs), so
nothing here is walked per copy more than once and nothing grows with them: a ref whose `ref_id`
the file already gave, and a sentence whose `sent_id` (or, without one, the very object) its ref
already gave, is no new one but an ignored member (`ref:ID(repeat)`); a file with more refs and
sentences than `read.max_refs`, or whose sentences hold more text than its bytes can write, is
`bad_refs` whole; an image with more regions than `read.max_regions` is quarantined `bad_row`
before any region is built.

A ref that cannot be read (a key missing, an id that is no id) is not the file's problem but its
own: each of its regions is settled `bad_row` naming it; one whose `image_id` is unusable names no
image to hold them, so it is an ignored member with a damage note. The instances index skips (and
names, as ignored) images, annotations and categories whose ids are no ids.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec

from .grounding_chat import Labels, Region, claimed_size, field_text, too_many_regions
from .io import BadRow, InputError, Item, ReadRefused, ReadReport, Unit, read_bytes, utf8
from .io.containers import whole_file_problem

REFS_NAME = re.compile(r"^refs.*\.(p|pkl|pickle|json)$", re.IGNORECASE)
INSTANCES_NAME = re.compile(r"^instances.*\.json$", re.IGNORECASE)
MAX_ID_CHARS = 256
"""A string id longer than this is no id (it would be copied into every region's name)."""
ID_BOUND = 2**63
"""An integer id is within +-2^63 (COCO's are int64)."""
NOT_AN_ID = f"not an id (an int, or a str of at most {MAX_ID_CHARS} characters)"
TEXT_PER_BYTE = 2
TEXT_SLACK = 1 << 20
"""The sentences and region names of a refs file hold at most TEXT_PER_BYTE characters per byte of
the file (plus TEXT_SLACK): JSON and pickle write each character of a string at least once, unless a
pickle's memo repeats one string; beyond, the file is `bad_refs`."""


def is_refs(path: str) -> bool:
    return bool(REFS_NAME.match(posixpath.basename(path)))


def is_instances(path: str) -> bool:
    return bool(INSTANCES_NAME.match(posixpath.basename(path)))


def is_id(value: Any) -> bool:
    """An id a ref or COCO entry may have: an int (not a bool) within `ID_BOUND`, or a short str."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -ID_BOUND <= value < ID_BOUND
    return isinstance(value, str) and len(value) <= MAX_ID_CHARS


def _lookup(index: dict[Any, Any], key: Any) -> Any:
    """`index[key]` or None, for any key (a list, a dict: data, never a TypeError)."""
    return index.get(key) if is_id(key) else None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global at all: a pickle needing a class or a function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the pickle asks for {module}.{name}; only builtin containers and scalars "
                                     "are read (nothing is executed)")  # fmt: skip


def bad_refs(message: str) -> BadRow:
    return BadRow("bad_refs", message)


def load_refs(data: bytes, name: str, max_refs: int) -> list[dict[str, Any]]:
    """The refs a file holds (a pickle through `RestrictedUnpickler`, latin1 for Python 2 str; or
    JSON); BadRow(bad_refs) for anything refused, no list of dicts, or more than `max_refs` refs."""
    if name.lower().endswith(".json"):
        try:
            refs = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise bad_refs(f"{name} does not parse as JSON: {type(exc).__name__}: {str(exc)[:300]}") from None
    else:
        try:
            refs = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
        except Exception as exc:  # refused global, truncated or not a pickle at all: never executed
            raise bad_refs(f"{name}: {type(exc).__name__}: {str(exc)[:300]}") from None
    if not isinstance(refs, list):
        raise bad_refs(f"{name} holds a {type(refs).__name__}, not a list of refs")
    if len(refs) > max_refs:
        raise bad_refs(f"{name} holds {len(refs):,} refs, more than read.max_refs ({max_refs:,}) allows")
    bad = next((i for i, ref in enumerate(refs) if not isinstance(ref, dict)), None)
    if bad is not None:
        raise bad_refs(f"{name}: ref {bad} is a {type(refs[bad]).__name__}, not a dict: no list of refs")
    return refs


MAX_SPLIT_CHARS = 64
"""A ref's `split` longer than this makes the ref unreadable (the text budget counts sentences only)."""


def _text(value: Any) -> str:
    """A text field; a number as written; '' for anything else (never the str of a container)."""
    return value if isinstance(value, str) else str(value) if isinstance(value, float) or is_id(value) else ""


@dataclass
class Ref:
    """A ref as read once: its distinct sentences as (region name, phrase), or why it cannot be read."""

    ref_id: Any
    label: str
    """`ref:ID`, or `refs[i]` (its position) when its ref_id is no id."""
    image_id: Any
    """None when it is no id: no image can hold the ref's regions."""
    ann_id: Any
    category_id: Any
    split: str
    sentences: list[tuple[str, str]]
    problem: str = ""


@dataclass
class RefsRead:
    """A refs file's distinct refs, the copies and unplaceable refs it held (ignored member names),
    and a damage note per unplaceable ref."""

    refs: list[Ref] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)


def _sentences(value: Any, label: str) -> tuple[list[tuple[str, str]], list[str], str]:
    """(distinct sentences, names of the repeated ones, why the list cannot be read or '')."""
    if not isinstance(value, list):
        return [], [], f"`sentences` is a {type(value).__name__}, not a list of sentences"
    out, repeats, seen = [], [], set()
    for j, s in enumerate(value):
        if not isinstance(s, dict):
            return [], [], f"sentence {j} is a {type(s).__name__}, not a dict"
        if "sent_id" in s and not is_id(s["sent_id"]):
            return [], [], f"sentence {j}'s sent_id is {NOT_AN_ID}"
        key = ("id", s["sent_id"]) if "sent_id" in s else ("object", id(s))
        name = f"{label}/sent:{s.get('sent_id', j)}"
        if key in seen:
            repeats.append(f"{name}(repeat)")
            continue
        seen.add(key)
        out.append((name, _text(s.get("sent"))))
    return out, repeats, ""


def _read_ref(raw: dict[str, Any], label: str, ignored: list[str]) -> Ref:
    """One ref; its problems (if any) joined, its sentences kept so each region can be named."""
    problems = []
    missing = [k for k in ("ref_id", "ann_id", "image_id", "sentences") if k not in raw]
    if missing:
        problems.append(f"no {', '.join(missing)}")
    cat = raw.get("category_id")
    not_ids = [k for k in ("ref_id", "ann_id", "image_id") if k in raw and not is_id(raw[k])]
    not_ids += ["category_id"] if cat is not None and not is_id(cat) else []
    if not_ids:
        problems.append(f"{', '.join(not_ids)}: {NOT_AN_ID}")
    sentences, repeats, why = _sentences(raw.get("sentences", []), label)
    problems += [why] if why else []
    split = _text(raw.get("split"))
    if len(split) > MAX_SPLIT_CHARS:  # a split names a partition (train, testA): a long one is an attack or junk
        problems.append(f"split of {len(split):,} characters (at most {MAX_SPLIT_CHARS})")
        split = ""
    ignored += repeats
    problem = "; ".join(problems)
    image_id = raw["image_id"] if is_id(raw.get("image_id")) else None
    return Ref(raw.get("ref_id"), label, image_id, raw.get("ann_id"), cat, split,
               sentences or ([(label, "")] if problem else []), problem)  # fmt: skip


def read_refs(refs: list[dict[str, Any]], name: str, max_refs: int, size: int) -> RefsRead:
    """The distinct refs of a file of `size` bytes (module docstring); BadRow(bad_refs) beyond
    `max_refs` refs and sentences (copies included, counted before a ref's sentences are walked) or
    beyond the text its bytes can hold."""
    out = RefsRead()
    seen: set[tuple[str, Any]] = set()
    entries, chars, budget = len(refs), 0, TEXT_PER_BYTE * size + TEXT_SLACK
    for i, raw in enumerate(refs):
        rid = raw.get("ref_id")
        label, key = (f"ref:{rid}", ("id", rid)) if is_id(rid) else (f"refs[{i}]", ("object", id(raw)))
        if key in seen:
            out.ignored.append(f"{label}(repeat)")
            continue
        seen.add(key)
        sentences = raw.get("sentences")
        entries += len(sentences) if isinstance(sentences, list) else 0
        if entries > max_refs:
            raise bad_refs(f"{name} holds more than read.max_refs ({max_refs:,}) refs and sentences (copies "
                           "included): not read")  # fmt: skip
        ref = _read_ref(raw, label, out.ignored)
        chars += sum(len(n) + len(p) for n, p in ref.sentences)
        if chars > budget:
            raise bad_refs(f"{name}: its sentences hold more text than its {size:,} bytes can write (over "
                           f"{budget:,} characters: a pickle repeating one string): not read")  # fmt: skip
        if ref.image_id is None:
            out.ignored.append(label)
            out.damage.append(f"{name} {label}: {ref.problem}: no image holds its regions")
            continue
        out.refs.append(ref)
    # one name per repeated object, with its count: 200k memo copies are one line of the summary
    counts = collections.Counter(out.ignored)
    out.ignored = [name if n == 1 else f"{name} x{n}" for name, n in counts.items()]
    return out


@dataclass
class Instances:
    """What the refs need of a COCO instances.json: images, annotations and category names by id,
    and the entries skipped for having no usable id (`images[3]`)."""

    images: dict[Any, dict[str, Any]] = field(default_factory=dict)
    anns: dict[Any, dict[str, Any]] = field(default_factory=dict)
    categories: dict[Any, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _by_id(entries: list[Any], key: str, skipped: list[str]) -> dict[Any, dict[str, Any]]:
    out = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and is_id(entry.get("id")):
            out[entry["id"]] = entry
        else:
            skipped.append(f"{key}[{i}]")
    return out


def load_instances(data: bytes, name: str) -> Instances:
    """The index of an instances.json; ValueError naming the file when it is no COCO instances file."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{name} does not parse as JSON: {type(exc).__name__}: {str(exc)[:300]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ValueError(f"{name} is no COCO instances file (no `images` list)")
    if not isinstance(doc.get("annotations"), list):
        raise ValueError(f"{name} is no COCO instances file (no `annotations` list)")
    index = Instances()
    index.images = _by_id(doc["images"], "images", index.skipped)
    index.anns = _by_id(doc["annotations"], "annotations", index.skipped)
    cats = doc.get("categories")
    categories = _by_id(cats, "categories", index.skipped) if isinstance(cats, list) else {}
    index.categories = {k: _text(c.get("name")) for k, c in categories.items()}
    return index


def instances_uri(refs_uri: str, instances: str | None) -> str:
    """The instances.json of a refs file: `read.instances`, else the one beside it."""
    return instances or posixpath.join(posixpath.dirname(refs_uri), "instances.json")


def _regions(ref: Ref, inst: Instances) -> list[dict[str, Any]]:
    """One region per sentence of a ref: the annotation's box, or why there is none."""
    ann = None if ref.problem else inst.anns.get(ref.ann_id)
    cat = ref.category_id if ref.category_id is not None else (ann or {}).get("category_id")
    extra = {k: v for k, v in (("ann_id", ref.ann_id), ("image_id", ref.image_id)) if is_id(v)}
    if ann is not None and "iscrowd" in ann:
        extra["iscrowd"] = ann["iscrowd"]
    missing = "" if ref.problem or ann is not None else f"ann {ref.ann_id} not in instances.json"
    return [
        {"box": ann.get("bbox") if ann is not None else None, "missing": missing, "problem": ref.problem,
         "phrase": phrase, "category": "" if ref.problem else _lookup(inst.categories, cat) or "",
         "split": ref.split, "ref": name, "extra": extra}
        for name, phrase in ref.sentences
    ]  # fmt: skip


def refs_entries(read: RefsRead, inst: Instances, max_regions: int) -> list[tuple[str, dict[str, Any]]]:
    """(member, entry) per image, in the order of its first ref: `image` (the COCO file_name, None
    when instances.json lacks the image), `width`, `height`, `image_id`, `missing`, `regions`, and
    `problem` (too many regions: none built)."""
    by_image: dict[Any, list[Ref]] = {}
    for ref in read.refs:
        by_image.setdefault(ref.image_id, []).append(ref)
    out = []
    for image_id, group in by_image.items():
        img = inst.images.get(image_id)
        name = _text(img.get("file_name")) if img is not None else ""
        count = sum(len(ref.sentences) for ref in group)
        entry = {
            "image": name or None, "width": (img or {}).get("width"), "height": (img or {}).get("height"),
            "image_id": image_id, "missing": "" if img is not None else f"image {image_id} not in instances.json",
            "problem": too_many_regions(count, max_regions) if count > max_regions else "",
            "regions": [r for ref in group for r in _regions(ref, inst)] if count <= max_regions else [],
        }  # fmt: skip
        out.append((name or f"image:{image_id}", entry))
    return out


def refs_labels(entry: dict[str, Any], fmt: str) -> Labels:
    """An image of a refs file (`refs_entries`); BadRow(bad_row) for one with too many regions or
    a claimed size no image has."""
    if entry["problem"]:
        raise BadRow("bad_row", entry["problem"])
    regions = [
        Region("referring", field_text(r["phrase"]), r["box"], fmt, field_text(r["category"]), r["ref"], r["split"],
               r["extra"], r["missing"], r["problem"])
        for r in entry["regions"]
    ]  # fmt: skip
    w, h = claimed_size(entry["width"]), claimed_size(entry["height"], "height")
    return Labels(entry["image"], entry["image"] or "", "refcoco", regions, "", w, h, {"image_id": entry["image_id"]},
                  entry["missing"])  # fmt: skip


def refs_items(unit: Unit, report: ReadReport, timeout_s: float, instances: str | None, max_refs: int,
               max_regions: int) -> Iterator[Item]:  # fmt: skip
    """A refs file as one container whose items are the images its refs name; the copies and
    unplaceable refs it held, and the instances entries skipped, are ignored members."""
    base = posixpath.basename(unit.uri)
    try:
        data = read_bytes(unit.uri, timeout_s)
        read = read_refs(load_refs(data, base, max_refs), base, max_refs, len(data))
    except BadRow as exc:
        yield whole_file_problem(unit, report, exc.reason, str(exc))
        return
    uri = instances_uri(unit.uri, instances)
    try:
        inst = load_instances(read_bytes(uri, timeout_s), uri)
    except ValueError as exc:
        yield whole_file_problem(unit, report, "bad_json", str(exc))
        return
    entries = refs_entries(read, inst, max_regions)
    report.expected = len(entries)
    report.ignored += [f"{unit.uri}#{n}" for n in read.ignored] + [f"{uri}#{n}" for n in inst.skipped]
    report.damage += [{"uri": unit.uri, "start": None, "end": None, "error": e, "records": "unknown"}
                      for e in read.damage]  # fmt: skip
    for i, (member, entry) in enumerate(entries):
        yield Item(i, utf8(member), unit.uri, row=entry)


def sniff_boxes(refs: list[Ref], inst: Instances, n: int) -> list[tuple[str, Any]]:
    """(where, bbox) of the first `n` distinct annotations the readable refs point at, for the listing's checks."""
    seen: dict[Any, tuple[str, Any]] = {}
    for ref in refs:
        if len(seen) >= n:
            break
        ann = None if ref.problem or ref.ann_id in seen else inst.anns.get(ref.ann_id)
        if ann is not None:
            seen[ref.ann_id] = (f"ref {ref.ref_id} (ann {ref.ann_id})", ann.get("bbox"))
    return list(seen.values())


def sniff_refs(path: str, timeout_s: float, instances: str | None, max_refs: int, n: int) -> list[tuple[str, Any]]:
    """The listing's look at a refs file: (where, bbox) of its first `n` annotations; InputError when
    its instances.json is missing or no COCO instances file; none when the refs cannot be read (the
    reader quarantines the file, or the refs): the listing never fails on data it cannot judge."""
    uri = instances_uri(path, instances)
    fs, inner = fsspec.core.url_to_fs(uri)
    if not fs.isfile(inner):
        raise InputError(f"{path}: its COCO instances file {uri} does not exist; set read.instances to the "
                         "instances.json the refs point into")  # fmt: skip
    try:
        inst = load_instances(read_bytes(uri, timeout_s), uri)
    except ValueError as exc:
        raise InputError(f"{exc} (read.instances)") from None
    except (OSError, ReadRefused):
        return []  # the refs file is quarantined whole when read
    try:
        data, name = read_bytes(path, timeout_s), posixpath.basename(path)
        return sniff_boxes(read_refs(load_refs(data, name, max_refs), name, max_refs, len(data)).refs, inst, n)
    except Exception:  # unreadable or refused: the reader quarantines the file (or its refs)
        return []
