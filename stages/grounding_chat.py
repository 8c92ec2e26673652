"""Grounding rows as labels: ODVG and native rows, and conversations with the boxes their turns write.

* **odvg** (GroundingDINO): `filename`, `width`, `height`, `detection.instances[{bbox, label,
  category}]` (task detection, phrase = category) and / or `grounding.caption` +
  `grounding.regions[{bbox, phrase}]` (task grounding); a line may have both.
* **native** (our own rows and `KEY.json`s): `image`, `regions[{box, phrase, category?, task?, ref?,
  split?}]`, the claimed size `out_width`/`out_height` (a stored sample's boxes are on the stored
  image), else `width`/`height`.
* **conversation**: LLaVA's `{"image", "conversations": [{"from", "value"}]}` or ShareGPT's
  `{"images": [one], "messages": [{"role", "content"}]}` (turns as `stages/chat.py` reads them).
  Every box of every turn (`grounding_boxes.text_boxes`: GLM, Qwen, Qwen2 tags, plain
  `[x1, y1, x2, y2]`) is a region, named `turn:{t}/box:{b}`. Its phrase is the one written with it
  (a `<ref>`, or the words before it); a box written alone takes it from the exchange around it:
  in an assistant turn (referring expression comprehension, LLaVA-1.5's "... this sentence
  describes: a man in red." -> "[0.1, 0.2, 0.5, 0.9]") the previous user turn's words, the part
  after its last ':' when it has one; in a user turn (the inverse task, "describe this region
  [..]") the next assistant turn's words; trailing '.', '?' and '!' taken off. A tagged box whose
  content is no box, or a turn over `grounding_boxes.MAX_TURN_CHARS`, is `bad_conversation`,
  naming the text.

A row that cannot be a sample (a part of the wrong type, a claimed size no image has) raises
BadRow; a region whose box is bad is not refused here: `Region.read_box` says why, and the reader
settles that region alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mmcurate.schemas import REGION_TASKS

from .chat import ASSISTANT_ROLES, USER_ROLES, chat_turn
from .grounding_boxes import BadBoxText, BoxUnreadable, TextBox, box_numbers, contradiction, strip_boxes, text_boxes
from .io import BadRow, clean_text

CHAT_ROWS = (("conversations", "image"), ("messages", "images"))
"""(turns key, image key) of LLaVA and ShareGPT rows."""


@dataclass(frozen=True)
class Turn:
    role: str
    """user | assistant | another role as written (system, ...)."""
    text: str
    """The turn's text, image markers and control characters removed."""


@dataclass(frozen=True)
class ChatBox:
    """One box of a conversation, where it was written and the phrase it answers."""

    turn: int
    index: int
    """The box's position among its turn's boxes."""
    found: TextBox
    phrase: str

    @property
    def ref(self) -> str:
        return f"turn:{self.turn}/box:{self.index}"


def _role(role: str) -> str:
    return "user" if role in USER_ROLES else "assistant" if role in ASSISTANT_ROLES else role


def chat_turns(row: dict[str, Any]) -> tuple[str, list[Turn]]:
    """(turns key, turns) of a conversation row; a chat that is no list of turns is a bad row."""
    key = next((k for k, _ in CHAT_ROWS if row.get(k) is not None), None)
    if key is None:
        raise BadRow("bad_row", "a conversation row has `conversations` or `messages`")
    value = row[key]
    if not isinstance(value, list):
        raise BadRow("bad_row", f"`{key}` is a {type(value).__name__}, not a list of turns")
    turns = [chat_turn(t, f"`{key}`[{i}]") for i, t in enumerate(value)]
    return key, [Turn(_role(role), text) for role, text, _, _ in turns]


def chat_image(row: dict[str, Any]) -> Any:
    """The one image a conversation row names (`image`, or a one-item `images` list); more is a bad row."""
    value = next((row[k] for _, k in CHAT_ROWS if row.get(k) is not None), None)
    if isinstance(value, list):
        if len(value) > 1:
            raise BadRow("bad_row", f"the row names {len(value)} images; a grounding sample is one image")
        value = value[0] if value else None
    return value


def _words(text: str) -> str:
    return strip_boxes(text).rstrip(" .?!")


LEAD_IN = re.compile(
    r"^(?:please\s+|can you\s+|could you\s+)*(?:(?:tell me\s+)?where\s+(?:is|are)|find|locate|detect|point to|"
    r"show(?: me)?|ground|give(?: me)? the (?:bounding )?box(?:es)? (?:of|for)|output the (?:bounding )?box(?:es)? "
    r"(?:of|for))\s+",
    re.I,
)
"""An English request before the phrase it asks about ("Where is the red car?" -> "the red car")."""
TAIL = re.compile(r"\s+(?:in|on) (?:the|this) (?:image|picture|photo)$", re.I)


def _asked(words: str) -> str:
    """The phrase a question asks the box of: after a colon (LLaVA-1.5's "...this sentence describes:
    a man in red."), else the question without its request words."""
    if ":" in words:
        return words.rsplit(":", 1)[-1].strip().rstrip(" .?!")
    words = words.rstrip(" .?!")
    return TAIL.sub("", LEAD_IN.sub("", words)).strip()


def _context(turns: list[Turn], t: int) -> str:
    """The phrase for a box written alone in turn `t`: from the exchange around it (module docstring)."""
    if turns[t].role == "assistant":
        before = next((u.text for u in reversed(turns[:t]) if u.role == "user"), "")
        return _asked(strip_boxes(before))
    if turns[t].role == "user":
        return _words(next((a.text for a in turns[t + 1 :] if a.role == "assistant"), ""))
    return ""


def chat_boxes(turns: list[Turn]) -> list[ChatBox]:
    """Every box of the conversation in turn order, with its phrase; BadRow(bad_conversation)
    naming the text when a tagged box holds no box or a turn is too long. Every turn is read
    before any phrase is taken from a neighbour, so none is looked at unchecked."""
    found = []
    for t, turn in enumerate(turns):
        try:
            found.append(text_boxes(turn.text))
        except BadBoxText as exc:
            raise BadRow("bad_conversation", f"turn {t} ({turn.role}): {exc}") from None
    return [ChatBox(t, b, box, box.phrase or _context(turns, t)) for t, boxes in enumerate(found)
            for b, box in enumerate(boxes)]  # fmt: skip


# ---------------------------------------------------------------------------------------------- labels


@dataclass
class Region:
    """A region as a layout gives it, before its box is read."""

    task: str
    phrase: str
    box: Any
    fmt: str
    category: str = ""
    ref: str = ""
    split: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    missing: str = ""
    """Why the input has no box for it (a RefCOCO ann not in instances.json): bad_box."""
    problem: str = ""
    """Why the input's record of it cannot be read at all (a malformed RefCOCO ref): bad_row."""

    @property
    def reason(self) -> str:
        """The reason `read_box`'s why settles the region with."""
        return "bad_row" if self.problem else "bad_box"

    def read_box(self) -> tuple[list[float], str]:
        """(input box, why it is bad (`reason`) or '')."""
        if self.problem:
            return [], f"{self.ref}: {self.problem}"
        if self.missing:
            return [], f"{self.ref}: {self.missing}"
        try:
            box = box_numbers(self.box)
        except BoxUnreadable as exc:
            return [], f"{self.ref}: {exc} (read.box_format: {self.fmt})"
        why = contradiction(box, self.fmt)
        return box, f"{self.ref}: {why} (read.box_format: {self.fmt})" if why else ""


@dataclass
class Labels:
    """What a layout found for one image, before its bytes are read."""

    image: Any
    """A path or data: URL, the bytes (a tar member), or None with `missing` saying why."""
    name: str
    origin: str
    regions: list[Region]
    caption: str = ""
    width: int = 0
    height: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    missing: str = ""


def field_text(value: Any) -> str:
    """A text field of the input, control characters out; '' for anything not a string."""
    return clean_text(value).strip() if isinstance(value, str) else ""


MAX_CLAIMED_SIDE = 2**31 - 1
"""The largest side an image file can declare (PNG's bound; JPEG's is 65,535)."""


def claimed_size(value: Any, key: str = "width") -> int:
    """A width or height the annotation gives (`key` names it); 0 for none (or one that is no positive
    number); BadRow(bad_row) for a number no image has (not finite, above `MAX_CLAIMED_SIDE`, an
    integer too large for a float): the row is quarantined, never an OverflowError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if (isinstance(value, float) and not math.isfinite(value)) or value > MAX_CLAIMED_SIDE:
        shown = f"{value!r}" if isinstance(value, float) else f"an integer of {value.bit_length()} bits"
        raise BadRow("bad_row", f"`{key}` is {shown}: no image has that side (at most {MAX_CLAIMED_SIDE:,} px)")
    return int(value) if value > 0 else 0


def too_many_regions(count: int, cap: int) -> str:
    """Why an image with `count` regions is quarantined (bad_row) before any region record is built."""
    return f"the image has {count:,} regions, more than read.max_regions ({cap:,}) allows: none is read"


def _rest(obj: dict[str, Any], used: Iterable[str]) -> dict[str, Any]:
    used = set(used)
    return {k: v for k, v in obj.items() if k not in used}


def _objects(parent: Any, key: str, where: str) -> list[dict[str, Any]]:
    """`parent[key]` as a list of objects (absent: none); anything else: the row is no sample."""
    if not isinstance(parent, dict):
        raise BadRow("bad_row", f"`{where}` is a {type(parent).__name__}, not an object")
    value = parent.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadRow("bad_row", f"`{where}.{key}` is no list of objects")
    return value


def odvg_labels(row: dict[str, Any], fmt: str) -> Labels:
    """An ODVG line: detection instances (phrase = category, `label` kept in extra), then grounding regions."""
    regions = []
    for i, inst in enumerate(_objects(row["detection"], "instances", "detection") if "detection" in row else []):
        cat = field_text(inst.get("category"))
        regions.append(Region("detection", cat, inst.get("bbox"), fmt, cat, f"instance:{i}",
                              extra=_rest(inst, ("bbox", "category"))))  # fmt: skip
    caption = ""
    if "grounding" in row:
        for i, reg in enumerate(_objects(row["grounding"], "regions", "grounding")):
            regions.append(Region("grounding", field_text(reg.get("phrase")), reg.get("bbox"), fmt, ref=f"region:{i}",
                                  extra=_rest(reg, ("bbox", "phrase"))))  # fmt: skip
        caption = field_text(row["grounding"].get("caption"))
    extra = _rest(row, ("filename", "width", "height", "detection", "grounding"))
    name = row.get("filename")
    w, h = claimed_size(row.get("width")), claimed_size(row.get("height"), "height")
    return Labels(name, name, "odvg", regions, caption, w, h, extra)


NATIVE_REGION_KEYS = ("box", "phrase", "category", "task", "ref", "split")
NATIVE_KEYS = ("image", "width", "height", "out_width", "out_height", "regions", "caption")


def native_labels(meta: dict[str, Any], fmt: str) -> Labels:
    """Our own rows (and `KEY.json`s): the claimed size is `out_width`/`out_height` (a stored
    sample's boxes are on the stored image), else `width`/`height`."""
    if not isinstance(meta.get("regions"), list):
        raise BadRow("bad_row", f"`regions` is a {type(meta.get('regions')).__name__}, not a list")
    regions = []
    for i, reg in enumerate(_objects(meta, "regions", "row")):
        phrase, category = field_text(reg.get("phrase")), field_text(reg.get("category"))
        task = reg.get("task") or ("grounding" if phrase else "detection")
        if task not in REGION_TASKS:
            raise BadRow("bad_row", f"regions[{i}]: task {task!r} is not one of {', '.join(REGION_TASKS)}")
        ref, split = field_text(reg.get("ref")) or f"region:{i}", field_text(reg.get("split"))
        extra = _rest(reg, NATIVE_REGION_KEYS)
        regions.append(Region(task, phrase or category, reg.get("box"), fmt, category, ref, split, extra))
    w, h = (claimed_size(meta.get("out_width"), "out_width"), claimed_size(meta.get("out_height"), "out_height"))
    if not (w and h):
        w, h = claimed_size(meta.get("width")), claimed_size(meta.get("height"), "height")
    image = meta.get("image")
    return Labels(image, image, "native", regions, field_text(meta.get("caption")), w, h, _rest(meta, NATIVE_KEYS))


def conversation_labels(row: dict[str, Any], fmt_of: Callable[[str], str]) -> Labels:
    """A conversation row; `fmt_of(notation frame)` is each box's format (BadRow when it has none)."""
    image = chat_image(row)
    key, turns = chat_turns(row)
    regions = [
        Region("conversation", field_text(b.phrase), list(b.found.numbers), fmt_of(b.found.frame), ref=b.ref,
               extra={"notation": b.found.notation, "role": turns[b.turn].role})
        for b in chat_boxes(turns)
    ]  # fmt: skip
    extra = {"conversation": [{"role": t.role, "text": t.text} for t in turns], **_rest(row, (key, "image", "images"))}
    return Labels(image, image, "conversation", regions, extra=extra)


def row_layouts(row: dict[str, Any]) -> list[str]:
    """The layouts whose keys a jsonl row has."""
    fits = ["odvg"] if "filename" in row and ("detection" in row or "grounding" in row) else []
    fits += ["conversation"] if "conversations" in row or "messages" in row else []
    return fits + (["native"] if "regions" in row else [])


def row_layout(row: dict[str, Any], wanted: str) -> str:
    if wanted != "auto":
        return wanted
    fits = row_layouts(row)
    if len(fits) != 1:
        seen = ", ".join(sorted(row)[:12])
        why = f"fits {' and '.join(fits)}" if fits else "fits no grounding layout (odvg, conversation, native)"
        raise BadRow("bad_row", f"the row {why}; its keys: {seen}; set read.layout")
    return fits[0]
