"""The grounding corpus's trainer rows (stages/grounding_sft.py) from a hand-built kept sample.

The sample's stored image is 640 x 480 and its regions are known, so every box string below is
worked out by hand from the conventions (GLM: round(x / 640 * 1000), far edge clamped to 999;
Qwen2.5-VL: rounded pixels; Shikra: fractions to 3 decimals). The rows are then read back by the
project's own consumers: the verifier `mmcurate rl` grades with, the question reader, the verl row
builder and its reward function, pyarrow with the ShareGPT schema, json for ODVG."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image
from pydantic import ValidationError

from mmcurate.rewards import compute_score
from mmcurate.schemas import AnswerType, Fields, GroundingSample, Question, RegionRecord, Source, region_json
from mmcurate.stages.grounding_boxes import text_boxes
from mmcurate.stages.grounding_sft import (
    CONVENTIONS,
    GroundingSftParams,
    QuestionParams,
    box_text,
    odvg_rows,
    question_rows,
    sft_rows,
)
from mmcurate.stages.question_io import QuestionReadParams, read_questions
from mmcurate.stages.readers import ReadParams, list_units
from mmcurate.stages.trainer_formats import SHAREGPT_SCHEMA, verify_json, verl_row, verl_schema
from mmcurate.stages.verify import VerifyParams, verify

W, H = 640, 480
IMAGE = "images/0123abcd.jpg"
REGIONS: list[dict[str, Any]] = [
    {"task": "referring", "phrase": "a man in a hat", "box": [64, 48, 320, 240], "ref": "ref:1/sent:2"},
    {"task": "detection", "phrase": "dog", "category": "dog", "box": [10.0, 20.6, 100.7, 200.2], "ref": "ann:7"},
    {"task": "detection", "phrase": "dog", "category": "dog", "box": [400, 300, 640, 480], "ref": "ann:8"},
    {"task": "grounding", "phrase": "a pole", "box": [300, 100, 300.2, 200], "ref": "region:0"},  # a sliver
    {"task": "referring", "phrase": "the red car", "box": [330.456, 250.004, 400.0, 300.999], "ref": "ref:2/sent:3"},
    {"task": "grounding", "phrase": "The red  car", "box": [500, 10, 610, 100], "ref": "region:1"},
    {"task": "detection", "phrase": "cat", "category": "cat", "box": [205, 300, 260, 420], "ref": "ann:9"},
]
"""Slot order. Two dogs (a category repeated), "the red car" twice from different tasks (ambiguous),
a pole 0.2 px wide (no area on any grid)."""

MAN_GLM = "<|begin_of_box|>[100,100,500,500]<|end_of_box|>"
DOGS_GLM = "<|begin_of_box|>[[16,43,157,417],[625,625,999,999]]<|end_of_box|>"
CAT_GLM = "<|begin_of_box|>[320,625,406,875]<|end_of_box|>"
EXPECTED = {
    "glm": (MAN_GLM, DOGS_GLM),
    "qwen25": (
        '{"bbox_2d": [64, 48, 320, 240]}',
        '[{"bbox_2d": [10, 21, 101, 200]}, {"bbox_2d": [400, 300, 640, 480]}]',
    ),
    "shikra": ("[0.100,0.100,0.500,0.500]", "[0.016,0.043,0.157,0.417],[0.625,0.625,1.000,1.000]"),
}


def sample(
    regions: list[dict[str, Any]] = REGIONS,
    *,
    items: bool = False,
    dropped: Collection[int] | None = None,
    **kw: Any,
) -> GroundingSample:
    """A kept sample whose `kept` is what the recipe sets: `region_json` of each kept region record.
    With `dropped` (slots), those regions are not kept and `phrases` names every region, as the
    recipe records it; without, `phrases` is None (a sample from before the field)."""
    src = Source(uri="mem://g.jsonl", unit=0, member="0", index=0)
    records = [
        RegionRecord(
            id=f"r{i}",
            source=src,
            sample_id="s0",
            slot=i,
            frame="stored",
            **{k: v for k, v in r.items() if k != "label"},
        )
        for i, r in enumerate(regions)
    ]
    for rec, r in zip(records, regions, strict=True):
        if "label" in r:
            rec.extra = json.dumps({"label": r["label"]})
    kw.setdefault("width", 1280)
    kw.setdefault("height", 960)
    rec = GroundingSample(id="s0", source=src, out_width=W, out_height=H, out_ext="jpg", **kw)
    rec.kept = [region_json(r, Fields()) for r in records if r.slot not in (dropped or ())]
    rec.phrases = None if dropped is None else [r.phrase for r in records]
    rec.items = records if items else None
    return rec


def user(row: dict[str, Any]) -> str:
    return row["messages"][0]["content"]


def answer(row: dict[str, Any]) -> str:
    return row["messages"][1]["content"]


# ---------------------------------------------------------------------------------------------- box_text


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_box_text_exact_strings(convention: str) -> None:
    man, _ = EXPECTED[convention]
    assert box_text(REGIONS[0]["box"], convention, W, H) == man
    assert box_text([320, 240, 64, 48], convention, W, H) == man  # corners in any order


def test_box_text_clamps_and_refuses_unknown_conventions() -> None:
    assert box_text([-5, -5, 700, 500], "qwen25", W, H) == '{"bbox_2d": [0, 0, 640, 480]}'
    assert box_text([-5, -5, 700, 500], "shikra", W, H) == "[0.000,0.000,1.000,1.000]"
    assert box_text([0, 0, W, H], "glm", W, H) == "<|begin_of_box|>[0,0,999,999]<|end_of_box|>"
    with pytest.raises(ValueError, match="unknown box convention"):
        box_text([0, 0, 1, 1], "kosmos", W, H)


def test_glm_box_text_reads_back_as_a_grid_box() -> None:
    """The project's own box-notation reader sees a GLM box on the grid, numbers as written."""
    (b,) = text_boxes(f"the man {box_text(REGIONS[0]['box'], 'glm', W, H)}")
    assert (b.numbers, b.frame) == ((100.0, 100.0, 500.0, 500.0), "grid")


@pytest.mark.parametrize(("convention", "graded_with"), [("glm", "glm_box"), ("qwen25", "any"), ("shikra", "any")])
def test_verifier_grades_box_text(convention: str, graded_with: str) -> None:
    """`stages.verify.verify` (what `mmcurate rl` and the verl reward call): IoU 1 against a reference
    in the same frame; a box moved by 200 px fails."""
    reference = box_text(REGIONS[0]["box"], convention, W, H)
    if convention == "glm":
        reference = "[100,100,500,500]"  # the question row's answer: the grid string alone
    kwargs = VerifyParams().kwargs("box")
    good = verify(box_text(REGIONS[0]["box"], convention, W, H), reference, "box", graded_with, **kwargs)
    assert good.correct and good.parsed and good.score == 1.0
    shifted = verify(box_text([264, 48, 520, 240], convention, W, H), reference, "box", graded_with, **kwargs)
    assert shifted.parsed and not shifted.correct and shifted.score < 0.5


# ---------------------------------------------------------------------------------------------- SFT rows


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_sft_rows_of_the_sample(convention: str) -> None:
    """Where-is rows for the unique phrases and for the repeated category (all its boxes in one answer);
    none for the ambiguous red car or the sliver; describe rows for every region with an area."""
    rows = sft_rows(sample(), IMAGE, GroundingSftParams(convention=convention))
    man, dogs = EXPECTED[convention]
    where = [(user(r), answer(r)) for r in rows if user(r).startswith("<image>Where is")]
    described = [(user(r), answer(r)) for r in rows if user(r).startswith("<image>Describe")]
    assert len(where) + len(described) == len(rows) == 9
    assert [q for q, _ in where] == [
        "<image>Where is a man in a hat in the image? Answer with its bounding box.",
        "<image>Where is dog in the image? Answer with its bounding box.",
        "<image>Where is cat in the image? Answer with its bounding box.",
    ]
    assert [a for _, a in where][:2] == [man, dogs]
    assert described[0] == (f"<image>Describe the region {man} in a short phrase.", "a man in a hat")
    assert [a for _, a in described] == ["a man in a hat", "dog", "dog", "the red car", "The red car", "cat"]
    assert all(r["images"] == [IMAGE] and r["videos"] == [] for r in rows)
    if convention == "glm":
        assert where[2][1] == CAT_GLM


def test_sft_rows_follow_the_params() -> None:
    rec = sample()
    only_first = sft_rows(rec, IMAGE, GroundingSftParams(regions_per_image=1))
    assert [answer(r) for r in only_first] == [MAN_GLM, "a man in a hat"]
    where_only = sft_rows(rec, IMAGE, GroundingSftParams(describe=False))
    assert [answer(r) for r in where_only] == [MAN_GLM, DOGS_GLM, CAT_GLM]
    assert sft_rows(rec, IMAGE, GroundingSftParams(regions_per_image=0)) == []
    custom = GroundingSftParams(ground_prompt="Find {expression}. <image>", describe_prompt="<image>{box}?")
    rows = sft_rows(rec, IMAGE, custom)
    assert (user(rows[0]), user(rows[1])) == ("Find a man in a hat. <image>", f"<image>{MAN_GLM}?")


def test_a_repeated_category_with_a_sliver_is_not_asked() -> None:
    """A dog under one grid step wide would make the all-dogs answer hold a box without area: no row."""
    regions = [*REGIONS[:3], {"task": "detection", "phrase": "dog", "category": "dog", "box": [50, 50, 50.2, 90]}]
    rows = sft_rows(sample(regions), IMAGE, GroundingSftParams())
    assert [answer(r) for r in rows] == [MAN_GLM, "a man in a hat", "dog", "dog"]


def test_phrases_lose_media_markers() -> None:
    """An `<image>` inside a phrase would pair the row with a second image it does not have."""
    regions = [{**REGIONS[0], "phrase": "a man <image> in a hat"}]
    rows = sft_rows(sample(regions), IMAGE, GroundingSftParams())
    assert all(user(r).count("<image>") == 1 for r in rows)
    assert answer(rows[1]) == "a man in a hat"


CATS = [
    REGIONS[0],
    {"task": "detection", "phrase": "cat", "category": "cat", "box": [205, 300, 260, 420], "ref": "ann:9"},
    {"task": "detection", "phrase": "Cat ", "category": "cat", "box": [20, 300, 21, 301], "ref": "ann:10"},
]
"""A man and two cats, the second a 1 px box the recipe drops (box_too_small); its phrase differs
from the first's only in case and whitespace, so it names the same thing."""


def where_phrases(rows: list[dict[str, Any]]) -> list[str]:
    prefix, suffix = "<image>Where is ", " in the image? Answer with its bounding box."
    return [user(r).removeprefix(prefix).removesuffix(suffix) for r in rows if user(r).startswith(prefix)]


def test_a_phrase_with_a_dropped_copy_is_not_asked() -> None:
    """Two cats, one dropped: "where is cat" answered with one box would be incomplete, and a box
    question on it would score the other cat wrong; so neither, while the kept cat is still described
    and the man (named once) still asked. Without `phrases` only the kept regions count."""
    rec = sample(CATS, dropped={2})
    assert [r["phrase"] for r in rec.kept or []] == ["a man in a hat", "cat"]
    rows = sft_rows(rec, IMAGE, GroundingSftParams())
    assert where_phrases(rows) == ["a man in a hat"]
    assert [answer(r) for r in rows] == [MAN_GLM, "a man in a hat", "cat"]
    assert [r["phrase"] for r in question_rows(rec, IMAGE, QuestionParams())] == ["a man in a hat"]
    legacy = sample(CATS[:2])  # the same kept regions, no record of the dropped one
    assert where_phrases(sft_rows(legacy, IMAGE, GroundingSftParams())) == ["a man in a hat", "cat"]
    assert [r["phrase"] for r in question_rows(legacy, IMAGE, QuestionParams())] == ["a man in a hat", "cat"]


def test_a_category_group_with_a_dropped_member_is_not_asked() -> None:
    """Three dogs, all kept: one row with all three boxes; one dropped: no dog row (the answer would
    miss a dog), the kept dogs described; dropping the man does not touch the dogs."""
    dog = {"task": "detection", "phrase": "dog", "category": "dog", "box": [100, 300, 200, 400], "ref": "ann:11"}
    regions = [*REGIONS[:3], dog]
    everything = sft_rows(sample(regions, dropped=()), IMAGE, GroundingSftParams())
    assert where_phrases(everything) == ["a man in a hat", "dog"]
    assert answer(everything[2]).count("],[") == 2  # three boxes in the one answer
    assert everything == sft_rows(sample(regions), IMAGE, GroundingSftParams())  # all kept: as without phrases
    one_dog_less = sft_rows(sample(regions, dropped={3}), IMAGE, GroundingSftParams())
    assert where_phrases(one_dog_less) == ["a man in a hat"]
    assert [answer(r) for r in one_dog_less] == [MAN_GLM, "a man in a hat", "dog", "dog"]
    no_man = sft_rows(sample(regions, dropped={0}), IMAGE, GroundingSftParams())
    assert where_phrases(no_man) == ["dog"]


def test_sft_rows_fit_the_sharegpt_schema() -> None:
    rows = [r for c in CONVENTIONS for r in sft_rows(sample(), IMAGE, GroundingSftParams(convention=c))]
    table = pa.Table.from_pylist(rows, schema=SHAREGPT_SCHEMA)
    assert table.schema == SHAREGPT_SCHEMA
    assert table.to_pylist() == rows


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"ground_prompt": "Where is {expression}?"}, "output.sft.ground_prompt"),
        ({"ground_prompt": "<image><image>Where is {expression}?"}, "output.sft.ground_prompt"),
        ({"ground_prompt": "<image>Where is it?"}, "output.sft.ground_prompt"),
        ({"ground_prompt": "<image>Where is {expression} {x}?"}, "output.sft.ground_prompt"),
        ({"ground_prompt": "<image>Where is {expression} {?"}, "output.sft.ground_prompt"),
        ({"describe_prompt": "<image>Describe the region."}, "output.sft.describe_prompt"),
        ({"describe_prompt": "Describe {box}."}, "output.sft.describe_prompt"),
        ({"ground_prompt": "<image>Where is {{expression}}?"}, "output.sft.ground_prompt"),  # a literal, no field
        ({"ground_prompt": "<image>Where is {expression!r}?"}, "output.sft.ground_prompt"),
        ({"ground_prompt": "<image>Where is {expression:>30}?"}, "output.sft.ground_prompt"),
        ({"ground_prompt": "<image>Where is {expression.upper}?"}, "output.sft.ground_prompt"),
        ({"ground_prompt": "<image>Where is {expression} }?"}, "output.sft.ground_prompt"),
        ({"describe_prompt": "<image>Describe {box} and {}."}, "output.sft.describe_prompt"),
        ({"name": ""}, "output.sft.name"),
        ({"name": "  "}, "output.sft.name"),
    ],
)
def test_sft_prompt_errors_name_the_key(params: dict[str, str], key: str) -> None:
    with pytest.raises(ValidationError, match=key.replace(".", r"\.")):
        GroundingSftParams(**params)


def test_prompts_with_literal_braces_are_accepted() -> None:
    """Doubled braces are literal text: valid, and they come out single in the rows."""
    params = GroundingSftParams(ground_prompt="<image>Where is {expression}? Answer {{like this}}.", describe=False)
    assert (
        user(sft_rows(sample(REGIONS[:1]), IMAGE, params)[0]) == "<image>Where is a man in a hat? Answer {like this}."
    )
    question = QuestionParams(prompt="Box {expression} as {{x1,y1,x2,y2}} ({expression}).")
    rows = question_rows(sample(REGIONS[:1]), IMAGE, question)
    assert rows[0]["question"] == "Box a man in a hat as {x1,y1,x2,y2} (a man in a hat)."


def test_question_prompt_errors_name_the_key() -> None:
    bad_prompts = (
        "<image>Where is {expression}?",
        "Where is it?",
        "Where is {expression} on {grid}?",
        "Where is {{expression}}?",
        "Where is {expression!s}?",
        "Where is {expression[0]}?",
        "Where is {expression",
    )
    for bad in bad_prompts:
        with pytest.raises(ValidationError, match=r"output\.questions\.prompt"):
            QuestionParams(prompt=bad)
    with pytest.raises(ValidationError, match="convention"):
        GroundingSftParams(convention="kosmos")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="regions_per_image"):
        GroundingSftParams(regions_per_image=-1)


# ---------------------------------------------------------------------------------------------- questions


def write_corpus(tmp_path: Path, photo: Callable[..., Image.Image], rows: list[dict[str, Any]]) -> Path:
    """The layout the recipe writes: images/ and questions/part-00000.jsonl under one output folder."""
    (tmp_path / "images").mkdir()
    photo((W, H), 3).save(tmp_path / IMAGE, "JPEG")
    (tmp_path / "questions").mkdir()
    path = tmp_path / "questions" / "part-00000.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_back(path: Path, root: Path) -> list[Question]:
    params = QuestionReadParams(image_root=str(root))
    units = list_units([str(path)], ReadParams(), media_columns=False)
    return [q for u in units for q in read_questions(u, params)]


def test_question_rows_read_back_as_box_questions(tmp_path: Path, photo: Callable[..., Image.Image]) -> None:
    """Only phrases unique in the image with an area on the grid; the real question reader takes the
    rows as box questions whose images exist, with the row's own keys in `extra`."""
    rows = question_rows(sample(), IMAGE, QuestionParams())
    assert [(r["phrase"], r["answer"]) for r in rows] == [
        ("a man in a hat", "[100,100,500,500]"),
        ("cat", "[320,625,406,875]"),
    ]
    qs = read_back(write_corpus(tmp_path, photo, rows), tmp_path)
    assert [q.fate.status.value for q in qs] == ["pending", "pending"]
    q = qs[0]
    assert q.answer_type == AnswerType.BOX and q.domain == "grounding"
    assert (
        q.question
        == "Where is a man in a hat in the image? Give its bounding box as [x1, y1, x2, y2] on a 0-1000 grid."
    )
    assert "<image>" not in q.question  # the rollout sends the image as its own part
    assert q.answer == "[100,100,500,500]"
    assert q.images == [str(tmp_path / IMAGE)]
    assert json.loads(q.extra) == {"phrase": "a man in a hat", "ref": "ref:1/sent:2", "sample_id": "s0", "slot": 0}
    assert len(question_rows(sample(), IMAGE, QuestionParams(per_image=1))) == 1
    assert question_rows(sample(), IMAGE, QuestionParams(per_image=0)) == []


def test_verl_row_of_a_question_grades_box_text(tmp_path: Path, photo: Callable[..., Image.Image]) -> None:
    """The verl row built from a read question carries the answer string as ground truth, fits verl's
    schema, and the reward function gives 1 for the region's GLM box and 0 for a shifted one."""
    (q, _) = read_back(write_corpus(tmp_path, photo, question_rows(sample(), IMAGE, QuestionParams())), tmp_path)
    row = verl_row(q, "mmcurate_grounding", "", None, "train", verify_json(VerifyParams().model_dump()))
    assert row["reward_model"]["ground_truth"] == q.answer == "[100,100,500,500]"
    assert row["prompt"][0]["content"].startswith("<image>Where is a man in a hat")
    assert row["images"] == [{"image": str(tmp_path / IMAGE)}]
    pa.Table.from_pylist([row], schema=verl_schema(False))
    truth, info = row["reward_model"]["ground_truth"], row["extra_info"]
    good = compute_score(row["data_source"], box_text(REGIONS[0]["box"], "glm", W, H), truth, info)
    assert good == {"score": 1.0, "parsed": 1.0, "partial": 1.0}
    bad = compute_score(row["data_source"], box_text([264, 48, 520, 240], "glm", W, H), truth, info)
    assert bad["score"] == 0.0 and bad["parsed"] == 1.0


# ---------------------------------------------------------------------------------------------- ODVG

ODVG_TOP = {"filename", "height", "width"}


def test_odvg_without_input_labels_is_grounding() -> None:
    """The kept dict carries no input label, so every region is a grounding region (the category as
    its phrase); boxes in stored pixels rounded to 2 decimals; the caption is built from the phrases."""
    (line,) = odvg_rows(sample(), "0123abcd.jpg")
    back = json.loads(json.dumps(line))
    assert set(back) == ODVG_TOP | {"grounding"}
    assert (back["filename"], back["height"], back["width"]) == ("0123abcd.jpg", H, W)
    assert set(back["grounding"]) == {"caption", "regions"}
    regions = back["grounding"]["regions"]
    assert all(set(r) == {"bbox", "phrase"} for r in regions)
    assert [r["phrase"] for r in regions] == [" ".join(r["phrase"].split()) for r in REGIONS]  # whitespace folded
    assert regions[4]["bbox"] == [330.46, 250.0, 400.0, 301.0]
    assert regions[3]["bbox"] == [300.0, 100.0, 300.2, 200.0]  # 0.2 px has an area in pixels
    assert back["grounding"]["caption"] == "a man in a hat . dog . a pole . the red car . The red car . cat ."


def test_odvg_detection_from_input_labels_and_a_label_map() -> None:
    """Regions with a category and an integer label (the input's, from the region records) are
    detection instances; a label map names labels for categories the input left unlabelled."""
    regions = [dict(r) for r in REGIONS]
    regions[1]["label"], regions[2]["label"] = 16, 16
    (line,) = odvg_rows(sample(regions, items=True), "x.jpg")
    back = json.loads(json.dumps(line))
    assert set(back) == ODVG_TOP | {"detection", "grounding"}
    instances = back["detection"]["instances"]
    assert instances == [
        {"bbox": [10.0, 20.6, 100.7, 200.2], "label": 16, "category": "dog"},
        {"bbox": [400.0, 300.0, 640.0, 480.0], "label": 16, "category": "dog"},
    ]
    assert "cat" in [r["phrase"] for r in back["grounding"]["regions"]]
    (mapped,) = odvg_rows(sample(regions, items=True), "x.jpg", label_map={"cat": 15})
    assert [i["label"] for i in mapped["detection"]["instances"]] == [16, 16, 15]
    assert "cat" not in [r["phrase"] for r in mapped["grounding"]["regions"]]


def test_odvg_caption_and_empty_samples() -> None:
    """The sample's caption is kept when it holds every phrase; no region with an area: no line."""
    captioned = sample(REGIONS[:1], caption="A man in a hat walks by.")
    assert odvg_rows(captioned, "x.jpg")[0]["grounding"]["caption"] == "A man in a hat walks by."
    other = sample(REGIONS[:2], caption="A man in a hat walks by.")
    assert odvg_rows(other, "x.jpg")[0]["grounding"]["caption"] == "a man in a hat . dog ."
    assert odvg_rows(sample([{**REGIONS[0], "box": [5, 5, 5, 50]}]), "x.jpg") == []
