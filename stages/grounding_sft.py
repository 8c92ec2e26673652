"""Trainer rows from kept grounding samples: ShareGPT SFT, pass-rate box questions, ODVG lines.

Every row starts from `GroundingSample.kept` (the kept regions in slot order, boxes `x1,y1,x2,y2`
in pixels of the stored `out_width` x `out_height` image) and names the stored image by a path
relative to the output folder.

Box notations (`box_text`, `CONVENTIONS`):

* `glm`: GLM-4.1V / 4.5V, `<|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>`, integers in [0, 1000) of
  the width and height (`measure.to_glm_grid`); several boxes `[[..],[..]]` inside one box.
* `qwen25`: Qwen2.5-VL, `{"bbox_2d": [x1, y1, x2, y2]}` in integer pixels of the stored image;
  several boxes a JSON list of those. Qwen2.5-VL reads absolute coordinates of the image its
  processor sees, so these match only when the trainer does not resize the image (LLaMA-Factory's
  `image_max_pixels`, the processor's `max_pixels` and its rounding to multiples of 28 do): keep the
  stored image within those bounds (`output.max_side`) or prefer `glm`, which no resize moves.
* `shikra`: Shikra / LLaVA-1.5, `[0.123,0.456,0.789,0.912]`, fractions with 3 decimals; several
  boxes `[..],[..]`.

A box that has no area in the notation it is written in (a sliver under one grid step) is never
asked about nor described. "Where is X" needs X to name one thing: a phrase two kept regions share
is asked only when every one of them is a detection label (a category repeated in the image), and
then the answer is all of its boxes in one answer; questions for the pass-rate corpus (`question_rows`)
have one reference box, so only phrases unique in the image become questions. What the image names is
every region's phrase (`GroundingSample.phrases`, dropped regions included; the kept ones when a
sample does not say): a phrase with a dropped copy is never asked, since the kept boxes would be an
incomplete answer and a rollout finding the dropped one would score wrong. Describe rows are per box
and ask nothing of the others.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from mmcurate.schemas import GroundingSample

from .base import Params
from .grounding_filters import template_problem
from .measure import area, sorted_box, to_glm_grid
from .trainer_formats import IMAGE_TOKEN, VIDEO_TOKEN
from .verify.extract import BOX_BEGIN, BOX_END

CONVENTIONS = ("glm", "qwen25", "shikra")


# ---------------------------------------------------------------------------------------------- notations


def _clamp(v: float, hi: float) -> float:
    return min(max(v, 0.0), hi)


def box_numbers_in(box: Sequence[float], convention: str, width: int, height: int) -> tuple[float, ...]:
    """The four numbers `convention` writes for a pixel box (corners sorted, clamped into the image)."""
    if convention == "glm":
        return to_glm_grid(box, width, height)
    x1, y1, x2, y2 = sorted_box(box)
    if convention == "qwen25":
        return tuple(round(_clamp(v, s)) for v, s in ((x1, width), (y1, height), (x2, width), (y2, height)))
    if convention == "shikra":
        return tuple(round(_clamp(v / s, 1.0), 3) for v, s in ((x1, width), (y1, height), (x2, width), (y2, height)))
    raise ValueError(f"unknown box convention {convention!r}; one of {', '.join(CONVENTIONS)}")


def grid_string(numbers: Sequence[float]) -> str:
    """`[x1,y1,x2,y2]` of integers: GLM's box content, and the reference answer of a box question."""
    return "[" + ",".join(str(int(v)) for v in numbers) + "]"


def boxes_text(boxes: Sequence[Sequence[float]], convention: str, width: int, height: int) -> str:
    """Pixel boxes written in `convention`: one box as `box_text`, several as the notation lists them."""
    if not boxes:
        raise ValueError("boxes_text needs at least one box")
    nums = [box_numbers_in(b, convention, width, height) for b in boxes]
    if convention == "glm":
        inner = [grid_string(n) for n in nums]
        return BOX_BEGIN + (inner[0] if len(inner) == 1 else "[" + ",".join(inner) + "]") + BOX_END
    if convention == "qwen25":
        objs = [{"bbox_2d": list(n)} for n in nums]
        return json.dumps(objs[0] if len(objs) == 1 else objs)
    return ",".join("[" + ",".join(f"{v:.3f}" for v in n) + "]" for n in nums)


def box_text(box: Sequence[float], convention: str, width: int, height: int) -> str:
    """One pixel box of a `width` x `height` image as `convention` writes it (see the module doc)."""
    return boxes_text([box], convention, width, height)


def _degenerate(box: Sequence[float], convention: str, width: int, height: int) -> bool:
    """No area once written in `convention` (x1 == x2 or y1 == y2 there)."""
    return area(box_numbers_in(box, convention, width, height)) <= 0


# ---------------------------------------------------------------------------------------------- the regions


@dataclass(frozen=True)
class _Region:
    slot: int
    box: tuple[float, float, float, float]
    phrase: str
    key: str
    """The phrase folded (case, whitespace): what decides whether two regions share a name."""
    task: str
    ref: str


def _size(rec: GroundingSample) -> tuple[int, int]:
    width, height = rec.out_width or rec.width, rec.out_height or rec.height
    if not (width > 0 and height > 0):
        raise ValueError(f"grounding sample {rec.uid} has no stored image size ({width}x{height})")
    return width, height


def _box(region: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    value = region.get("box")
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return sorted_box(float(v) for v in value)


def _words(value: Any) -> str:
    """A phrase with its whitespace folded and no media markers: a stray `<image>` in a prompt would
    pair the row with an image it does not have."""
    text = str(value or "").replace(IMAGE_TOKEN, " ").replace(VIDEO_TOKEN, " ")
    return " ".join(text.split())


def _named(rec: GroundingSample) -> list[_Region]:
    """The kept regions with a phrase and a usable box, in slot order."""
    out = []
    for i, region in enumerate(rec.kept or []):
        phrase = _words(region.get("phrase"))
        box = _box(region)
        if phrase and box is not None:
            slot = int(region.get("slot", i))
            task, ref = str(region.get("task", "")), str(region.get("ref", ""))
            out.append(_Region(slot, box, phrase, phrase.casefold(), task, ref))
    return out


def _groups(regions: list[_Region]) -> dict[str, list[_Region]]:
    groups: dict[str, list[_Region]] = {}
    for r in regions:
        groups.setdefault(r.key, []).append(r)
    return groups


def _name_counts(rec: GroundingSample, named: list[_Region]) -> Counter[str]:
    """How many regions of the image each folded phrase names: all of them, dropped ones included,
    when the recipe recorded them (`rec.phrases`), else the kept ones."""
    if rec.phrases is None:
        return Counter(r.key for r in named)
    return Counter(key for key in (_words(p).casefold() for p in rec.phrases) if key)


def _complete(group: list[_Region], counts: Counter[str]) -> bool:
    """The kept regions of a phrase are every region the image names with it (none was dropped)."""
    return counts[group[0].key] == len(group)


# ---------------------------------------------------------------------------------------------- SFT


def _check_prompt(section: str, key: str, value: str, field: str, images: int) -> None:
    """`value` holds `images` `<image>` markers and formats with `{field}` alone (no conversion, spec,
    attribute or index: `template_problem`), else a ValueError naming the key."""
    if value.count(IMAGE_TOKEN) != images:
        want = "exactly one <image> placeholder (LLaMA-Factory pairs each with one image)" if images else "no <image>"
        raise ValueError(f"{section}.{key} must hold {want}, got {value!r}")
    problem = template_problem(value, field)
    if problem:
        raise ValueError(f"{section}.{key} {problem}")


class GroundingSftParams(Params):
    enabled: bool = True
    """Write `sft/part-UUUUU.parquet` (+ `images/`, `dataset_info.json`) beside the shards."""
    name: str = "mmcurate_grounding"
    """The dataset's name in LLaMA-Factory's dataset_info.json (not empty: it is the entry's key)."""
    convention: Literal["glm", "qwen25", "shikra"] = "glm"
    """How boxes are written (module doc): the notation of the model being trained."""
    ground_prompt: str = "<image>Where is {expression} in the image? Answer with its bounding box."
    """`{expression}`: the region's phrase; the answer is its box (all boxes of a repeated category)."""
    describe_prompt: str = "<image>Describe the region {box} in a short phrase."
    """`{box}`: the region's box in `convention`; the answer is its phrase."""
    describe: bool = True
    """Also the inverse task: box -> phrase."""
    regions_per_image: int = Field(8, ge=0)
    """Regions asked about per image at most (the first in slot order); 0: none."""

    def model_post_init(self, _context: object) -> None:
        if not self.name.strip():
            raise ValueError(f"output.sft.name must be a non-empty dataset name, got {self.name!r}")
        _check_prompt("output.sft", "ground_prompt", self.ground_prompt, "expression", 1)
        _check_prompt("output.sft", "describe_prompt", self.describe_prompt, "box", 1)


def _row(prompt: str, answer: str, image: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "images": [image],
        "videos": [],
    }


def _askable(group: list[_Region], convention: str, width: int, height: int) -> bool:
    """One region, or a category repeated: only detection labels, each with an area in `convention`."""
    if len(group) > 1 and any(r.task != "detection" for r in group):
        return False
    return not any(_degenerate(r.box, convention, width, height) for r in group)


def sft_rows(rec: GroundingSample, image: str, params: GroundingSftParams) -> list[dict[str, Any]]:
    """The ShareGPT rows of one kept sample whose stored image is at `image` (relative to the dataset
    folder): "where is" -> box (all boxes of a repeated category in one answer; a phrase that names
    several regions otherwise, or one of which was dropped, is not asked), and with `describe` box -> phrase."""
    width, height = _size(rec)
    conv = params.convention
    named = _named(rec)
    groups, counts = _groups(named), _name_counts(rec, named)
    subjects = [r for r in named if not _degenerate(r.box, conv, width, height)][: params.regions_per_image]
    rows: list[dict[str, Any]] = []
    asked: set[str] = set()
    for r in subjects:
        group = groups[r.key]
        if r.key not in asked and _complete(group, counts) and _askable(group, conv, width, height):
            asked.add(r.key)
            answer = boxes_text([g.box for g in group], conv, width, height)
            rows.append(_row(params.ground_prompt.format(expression=r.phrase), answer, image))
        if params.describe:
            prompt = params.describe_prompt.format(box=box_text(r.box, conv, width, height))
            rows.append(_row(prompt, r.phrase, image))
    return rows


# ---------------------------------------------------------------------------------------------- questions


class QuestionParams(Params):
    enabled: bool = True
    """Write `questions/part-UUUUU.jsonl`: box questions in the pass-rate corpus's input format."""
    prompt: str = "Where is {expression} in the image? Give its bounding box as [x1, y1, x2, y2] on a 0-1000 grid."
    """`{expression}`: the region's phrase. No `<image>`: the question reader keeps the text as it is
    and the rollout sends the image as its own part (trainer files add the markers they need)."""
    per_image: int = Field(4, ge=0)
    """Questions per image at most (the first unique phrases in slot order); 0: none."""

    def model_post_init(self, _context: object) -> None:
        _check_prompt("output.questions", "prompt", self.prompt, "expression", 0)


def question_rows(rec: GroundingSample, image: str, params: QuestionParams) -> list[dict[str, Any]]:
    """Box questions for `stages/question_io.py`: `question`, `answer` (the reference box on GLM's grid,
    `[x1,y1,x2,y2]`, which verl's `reward_model.ground_truth` gets as is), `answer_type` box, `images`,
    `domain` grounding; `sample_id`, `slot`, `ref` and `phrase` are keys the reader does not read, so
    they land in the Question's `extra` as they are. Only phrases the image names once (`_name_counts`:
    dropped regions count), so one box answers, with an area on the grid."""
    width, height = _size(rec)
    named = _named(rec)
    groups, counts = _groups(named), _name_counts(rec, named)
    rows: list[dict[str, Any]] = []
    for r in named:
        if len(rows) >= params.per_image:
            break
        grid = to_glm_grid(r.box, width, height)
        if len(groups[r.key]) != 1 or not _complete(groups[r.key], counts) or area(grid) <= 0:
            continue
        rows.append(
            {
                "question": params.prompt.format(expression=r.phrase),
                "answer": grid_string(grid),
                "answer_type": "box",
                "images": [image],
                "domain": "grounding",
                "sample_id": rec.id,
                "slot": r.slot,
                "ref": r.ref,
                "phrase": r.phrase,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------- ODVG


def _json_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _as_label(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None  # region_json writes -1 for "no label"
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _input_label(region: Mapping[str, Any], extras: Mapping[int, dict[str, Any]]) -> int | None:
    """The input's integer label of a region: the kept dict's `label`, its `extra`'s, or (while the
    sample still holds its region records) the record's `extra`; None when the input gave none."""
    for value in (region.get("label"), _json_dict(region.get("extra")).get("label")):
        label = _as_label(value)
        if label is not None:
            return label
    return _as_label(extras.get(int(region.get("slot", -1)), {}).get("label"))


def _pixel_bbox(region: Mapping[str, Any]) -> list[float] | None:
    box = _box(region)
    if box is None:
        return None
    bbox = [round(v, 2) for v in box]
    return bbox if area(bbox) > 0 else None


def _caption(caption: str, phrases: list[str]) -> str:
    """The sample's caption when it holds every phrase, else the phrases as GroundingDINO joins them."""
    folded = caption.casefold()
    if caption.strip() and all(p.casefold() in folded for p in phrases):
        return caption
    return " . ".join(dict.fromkeys(phrases)) + " ."


def odvg_rows(rec: GroundingSample, image: str, *, label_map: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """The sample as one ODVG line (Open-GroundingDino `data_format.md`): `filename`, `height` and
    `width` of the stored image, `detection.instances` [{bbox, label, category}] for kept regions with
    a category and an integer label (the input's, see `_input_label`, else `label_map[category]`),
    `grounding` {caption, regions [{bbox, phrase}]} for the others with a phrase (or a category).
    Boxes are stored-pixel `x1,y1,x2,y2` rounded to 2 decimals; zero-area boxes are left out.

    A section is there only when it has entries, and [] comes back when neither has: Open-GroundingDino
    reads a file in one mode (with a label map every line's `detection`, without one every line's
    `grounding.regions`, which must not be empty), so lines of the two kinds go to separate files."""
    width, height = _size(rec)
    extras = {r.slot: _json_dict(r.extra) for r in rec.items or []}
    instances: list[dict[str, Any]] = []
    regions: list[dict[str, Any]] = []
    for region in rec.kept or []:
        bbox = _pixel_bbox(region)
        if bbox is None:
            continue
        category = _words(region.get("category"))
        label = _input_label(region, extras)
        if label is None and category and label_map is not None:
            label = label_map.get(category)
        phrase = _words(region.get("phrase")) or category
        if category and label is not None:
            instances.append({"bbox": bbox, "label": label, "category": category})
        elif phrase:
            regions.append({"bbox": bbox, "phrase": phrase})
    if not instances and not regions:
        return []
    line: dict[str, Any] = {"filename": image, "height": height, "width": width}
    if instances:
        line["detection"] = {"instances": instances}
    if regions:
        line["grounding"] = {"caption": _caption(rec.caption, [r["phrase"] for r in regions]), "regions": regions}
    return [line]
