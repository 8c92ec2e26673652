"""RefCOCO / RefCOCO+ / RefCOCOg (the refer toolkit's files): refs files and their COCO instances.

A refs file (`refs(unc).p`, `refs(google).p`, `refs(umd).p`: Python 2 cPickle; or `refs*.json`, a
JSON conversion) is a list of refs `{ref_id, ann_id, image_id, split, category_id, sentences:
[{sent_id, sent, raw, tokens}]}`; the boxes are in the COCO `instances.json` the refs point into
(`annotations[].bbox`, x,y,w,h pixels). One entry per image, in the order of its first ref; one
region per (ref, sentence).

Pickles are read by `RestrictedUnpickler`: `find_class` refuses every global, so only what pickle
builds without one (dict, list, tuple, str, bytes, int, float, bool, None) can come out and nothing
in the file is ever called; a refused file is `bad_refs` as a whole.
"""

from __future__ import annotations

import io
import json
import pickle
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .io import BadRow

REFS_NAME = re.compile(r"^refs.*\.(p|pkl|pickle|json)$", re.IGNORECASE)
INSTANCES_NAME = re.compile(r"^instances.*\.json$", re.IGNORECASE)


def is_refs(path: str) -> bool:
    return bool(REFS_NAME.match(posixpath.basename(path)))


def is_instances(path: str) -> bool:
    return bool(INSTANCES_NAME.match(posixpath.basename(path)))


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global at all: a pickle needing a class or a function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the pickle asks for {module}.{name}; only builtin containers and scalars "
                                     "are read (nothing is executed)")  # fmt: skip


def bad_refs(message: str) -> BadRow:
    return BadRow("bad_refs", message)


def load_refs(data: bytes, name: str) -> list[dict[str, Any]]:
    """The refs a file holds (a pickle through `RestrictedUnpickler`, latin1 for Python 2 str; or
    JSON); BadRow(bad_refs) for anything refused or of the wrong shape."""
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
    for i, ref in enumerate(refs):
        _check_ref(ref, i, name)
    return refs


def _check_ref(ref: Any, i: int, name: str) -> None:
    if not isinstance(ref, dict):
        raise bad_refs(f"{name}: ref {i} is a {type(ref).__name__}, not a dict")
    missing = [k for k in ("ref_id", "ann_id", "image_id", "sentences") if k not in ref]
    if missing:
        raise bad_refs(f"{name}: ref {i} has no {', '.join(missing)}")
    if not all(isinstance(ref[k], int | str) for k in ("ref_id", "ann_id", "image_id")):
        raise bad_refs(f"{name}: ref {i}'s ref_id, ann_id and image_id are not all ids (int or str)")
    sentences = ref["sentences"]
    if not isinstance(sentences, list) or not all(isinstance(s, dict) for s in sentences):
        raise bad_refs(f"{name}: ref {i}'s sentences are no list of sentence dicts")


@dataclass
class Instances:
    """What the refs need of a COCO instances.json: images, annotations and category names by id."""

    images: dict[Any, dict[str, Any]] = field(default_factory=dict)
    anns: dict[Any, dict[str, Any]] = field(default_factory=dict)
    categories: dict[Any, str] = field(default_factory=dict)


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
    index.images = {img["id"]: img for img in doc["images"] if isinstance(img, dict) and "id" in img}
    index.anns = {a["id"]: a for a in doc["annotations"] if isinstance(a, dict) and "id" in a}
    for cat in doc.get("categories") or ():
        if isinstance(cat, dict) and "id" in cat:
            index.categories[cat["id"]] = str(cat.get("name", ""))
    return index


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _regions(ref: dict[str, Any], inst: Instances) -> list[dict[str, Any]]:
    """One region per sentence of a ref: the annotation's box, or why there is none."""
    ann = inst.anns.get(ref["ann_id"])
    category = inst.categories.get(ref.get("category_id", (ann or {}).get("category_id")), "")
    extra = {"ann_id": ref["ann_id"], "image_id": ref["image_id"]}
    if ann is not None and "iscrowd" in ann:
        extra["iscrowd"] = ann["iscrowd"]
    return [
        {
            "box": ann.get("bbox") if ann is not None else None,
            "missing": "" if ann is not None else f"ann {ref['ann_id']} not in instances.json",
            "phrase": _text(s.get("sent")),
            "category": category,
            "split": _text(ref.get("split")),
            "ref": f"ref:{ref['ref_id']}/sent:{s.get('sent_id', j)}",
            "extra": extra,
        }
        for j, s in enumerate(ref["sentences"])
    ]


def refs_entries(refs: Iterable[dict[str, Any]], inst: Instances) -> list[tuple[str, dict[str, Any]]]:
    """(member, entry) per image, in the order of its first ref: `image` (the COCO file_name, None
    when instances.json lacks the image), `width`, `height`, `image_id`, `missing` and `regions`."""
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ref in refs:
        by_image.setdefault(ref["image_id"], []).append(ref)
    out = []
    for image_id, group in by_image.items():
        img = inst.images.get(image_id)
        name = _text(img.get("file_name")) if img is not None else ""
        entry = {
            "image": name or None, "width": (img or {}).get("width"), "height": (img or {}).get("height"),
            "image_id": image_id, "missing": "" if img is not None else f"image {image_id} not in instances.json",
            "regions": [r for ref in group for r in _regions(ref, inst)],
        }  # fmt: skip
        out.append((name or f"image:{image_id}", entry))
    return out


def sniff_boxes(refs: list[dict[str, Any]], inst: Instances, n: int) -> list[tuple[str, Any]]:
    """(where, bbox) of the first `n` distinct annotations the refs point at, for the listing's checks."""
    seen: dict[Any, tuple[str, Any]] = {}
    for ref in refs:
        if len(seen) >= n:
            break
        ann = inst.anns.get(ref["ann_id"])
        if ann is not None and ref["ann_id"] not in seen:
            seen[ref["ann_id"]] = (f"ref {ref['ref_id']} (ann {ref['ann_id']})", ann.get("bbox"))
    return list(seen.values())
