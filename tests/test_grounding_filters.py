"""The grounding filters (stages/grounding_filters.py) on hand-built regions and samples, no model.

Every expected number is worked out by hand from the box and the image size; the language filter
runs py3langid's bundled model (installed with the project), the agreement filter is fed cosines as
the `align` stage would hand them over, so what is tested is how they are turned into decisions."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from mmcurate.schemas import GroundingSample, RegionRecord, Source
from mmcurate.stages.grounding_filters import (
    NEGATIVES,
    AgreementParams,
    Expression,
    ExpressionAgreement,
    ExpressionLanguage,
    ImageSize,
    RegionBox,
    RegionSplit,
    agreement_scores,
    crop_box,
    geometry,
    rivals,
    size_error,
    template_problem,
)

SRC = Source(uri="mem://g.jsonl", unit=0, member="0", index=0)
KEYS = ("box_valid", "box_overshoot", "box_area", "box_min_side", "box_share")


def region(phrase: str = "a red car", box: list[float] | None = None, slot: int = 0, **kw: Any) -> RegionRecord:
    """A region of a 200 x 100 image (the decode stage's frame) unless told otherwise."""
    kw.setdefault("width", 200)
    kw.setdefault("height", 100)
    return RegionRecord(
        id=f"r{slot}", source=SRC, sample_id="s0", slot=slot, phrase=phrase, box=box or [0, 0, 10, 10], **kw
    )


def grounding(**kw: Any) -> GroundingSample:
    return GroundingSample(id="s0", source=SRC, **kw)


# ---------------------------------------------------------------------------------------------- geometry


def test_geometry_of_a_box_inside_the_image() -> None:
    assert geometry([10, 20, 110, 70], 200, 100) == {
        "box_valid": 1.0,
        "box_overshoot": 0.0,
        "box_area": 5000.0,  # 100 x 50
        "box_min_side": 50.0,
        "box_share": 0.25,  # of 200 x 100
    }


@pytest.mark.parametrize(
    ("box", "width", "height"),
    [
        ([math.nan, 0, 10, 10], 200, 100),
        ([0, 0, math.inf, 10], 200, 100),
        ([10, 10, 10, 50], 200, 100),  # x1 == x2
        ([10, 50, 60, 50], 200, 100),  # y1 == y2
        ([110, 20, 10, 70], 200, 100),  # corners reversed: the input wrote something else
        ([0, 0, 10], 200, 100),
        ([0, 0, 10, 10], 0, 100),  # no image size
    ],
)
def test_geometry_of_what_is_not_a_box(box: list[float], width: float, height: float) -> None:
    scores = geometry(box, width, height)
    assert scores["box_valid"] == 0.0
    assert all(math.isnan(scores[k]) for k in KEYS[1:])


def test_geometry_measures_overshoot_before_and_area_after_clipping() -> None:
    """5 px past the right edge, 3 px past the left: overshoot is the larger; the area is what lies inside."""
    scores = geometry([-3, 10, 205, 60], 200, 100)
    assert scores == {
        "box_valid": 1.0,
        "box_overshoot": 5.0,
        "box_area": 10000.0,  # 200 x 50 once clipped
        "box_min_side": 50.0,
        "box_share": 0.5,
    }
    outside = geometry([300, 10, 400, 50], 200, 100)
    assert (outside["box_overshoot"], outside["box_area"], outside["box_min_side"], outside["box_share"]) == (
        200.0,
        0.0,
        0.0,
        0.0,
    )
    assert geometry([0, 0, 200, 100], 200, 100)["box_share"] == 1.0


# ---------------------------------------------------------------------------------------------- region_box


def good_scores(**kw: float) -> dict[str, float]:
    return {"box_valid": 1.0, "box_overshoot": 0.0, "box_area": 400.0, "box_min_side": 20.0, "box_share": 0.5, **kw}


def test_region_box_reasons_come_in_order() -> None:
    """Invalid before outside before too small before covering: the first thing wrong is the reason."""
    f = RegionBox()
    everything = good_scores(box_valid=0.0, box_overshoot=50.0, box_area=1.0, box_min_side=1.0, box_share=1.0)
    assert f.decide(everything, {}) == "invalid_box"
    assert f.decide({**everything, "box_valid": 1.0}, {}) == "box_outside"
    assert f.decide({**everything, "box_valid": 1.0, "box_overshoot": 0.0}, {}) == "box_too_small"
    assert f.decide(good_scores(box_share=1.0), {}) == "box_covers_image"
    assert f.decide(good_scores(), {}) is None
    assert set(RegionBox.reasons) == {"invalid_box", "box_outside", "box_too_small", "box_covers_image"}


@pytest.mark.parametrize(
    ("key", "edge", "past", "reason"),
    [
        ("box_overshoot", 4.0, 4.01, "box_outside"),
        ("box_area", 16.0, 15.99, "box_too_small"),
        ("box_min_side", 2.0, 1.99, "box_too_small"),
        ("box_share", 0.95, 0.951, "box_covers_image"),
    ],
)
def test_region_box_thresholds_keep_their_edge(key: str, edge: float, past: float, reason: str) -> None:
    f = RegionBox()
    assert f.decide(good_scores(**{key: edge}), {}) is None
    assert f.decide(good_scores(**{key: past}), {}) == reason


def test_region_box_scores_the_record_and_follows_its_params() -> None:
    """3 px past the edge is clipped and kept, 5 px is outside; a stricter tolerance drops the 3."""
    f = RegionBox()
    near = region(box=[-3, 10, 50, 60])
    far = region(box=[-5, 10, 50, 60])
    assert f.decide(*f.score(near)) is None
    assert f.decide(*f.score(far)) == "box_outside"
    strict = RegionBox(RegionBox.Params(clip_tolerance=2.0))
    assert strict.decide(*strict.score(near)) == "box_outside"
    assert f.decide(*f.score(region(box=[10, 10, 13, 13]))) == "box_too_small"  # 9 px^2
    assert f.decide(*f.score(region(box=[10, 10, 11, 90]))) == "box_too_small"  # 80 px^2 but 1 px wide
    assert f.decide(*f.score(region(box=[0, 0, 200, 100]))) == "box_covers_image"
    assert f.decide(*f.score(region(box=[50, 40, 10, 10]))) == "invalid_box"


# ---------------------------------------------------------------------------------------------- image_size


def test_size_error_in_the_frame_of_the_boxes() -> None:
    """The decoded size is after EXIF rotation: with orientation 6 a 640 x 480 file shows 480 x 640.
    Boxes on the raw file grid compare the claimed size with the raw size, oriented boxes with the
    oriented one; orientation 1 changes nothing."""
    rotated = {"width": 480, "height": 640, "orientation": 6, "claimed_width": 640, "claimed_height": 480}
    assert size_error(grounding(**rotated, box_frame="raw")) == 0.0
    assert size_error(grounding(**rotated, box_frame="oriented")) == 160.0
    upright = {"width": 640, "height": 480, "orientation": 1, "claimed_width": 641, "claimed_height": 477}
    assert size_error(grounding(**upright, box_frame="raw")) == 3.0
    assert size_error(grounding(**upright, box_frame="oriented")) == 3.0
    assert math.isnan(size_error(grounding(width=640, height=480)))  # the input claims no size
    assert math.isnan(size_error(grounding(claimed_width=640, claimed_height=480)))  # not decoded


def test_image_size_tolerance() -> None:
    f = ImageSize()
    base = {"width": 640, "height": 480, "claimed_height": 480}
    assert f.decide(*f.score(grounding(**base, claimed_width=641))) is None  # 1 px: the tolerance
    assert f.decide(*f.score(grounding(**base, claimed_width=642))) == "size_mismatch"
    assert f.decide(*f.score(grounding(width=640, height=480))) is None  # NaN: nothing to compare
    assert ImageSize(ImageSize.Params(tolerance=5)).decide({"size_error": 5.0}, {}) is None


# ---------------------------------------------------------------------------------------------- expressions


def test_expression_empty_and_too_long() -> None:
    f = Expression()
    assert f.score(region("  a   red\tcar ")) == ({"expr_chars": 9.0, "expr_words": 3.0}, {})
    assert f.decide(*f.score(region(""))) == "empty_expression"
    assert f.decide(*f.score(region(" \n\t "))) == "empty_expression"
    assert f.decide(*f.score(region("x" * 200))) is None
    assert f.decide(*f.score(region("x" * 201))) == "expression_too_long"
    assert f.decide(*f.score(region(" ".join(["a"] * 40)))) is None
    assert f.decide(*f.score(region(" ".join(["a"] * 41)))) == "expression_too_long"
    short = Expression(Expression.Params(max_chars=5, max_words=2))
    assert short.decide(*short.score(region("a red car"))) == "expression_too_long"  # 3 words, 9 chars
    assert short.decide(*short.score(region("a car"))) is None


GERMAN = "der große rote Hund neben dem alten Auto"


def test_expression_language_with_the_bundled_model() -> None:
    """Short phrases are not judged at all; a long German one is dropped when only English is allowed."""
    f = ExpressionLanguage()
    scores, labels = f.score(region("ein Hund"))
    assert math.isnan(scores["expr_lang_prob"]) and labels == {"expr_lang": ""}
    assert f.decide(scores, labels) is None
    scores, labels = f.score(region(GERMAN))
    assert labels == {"expr_lang": "de"} and scores["expr_lang_prob"] >= 0.9
    assert f.decide(scores, labels) == "expression_language"
    assert ExpressionLanguage(ExpressionLanguage.Params(allowed=["en", "de"])).decide(scores, labels) is None
    english = f.score(region("the big red dog next to the old car"))
    assert english[1] == {"expr_lang": "en"} and f.decide(*english) is None


def test_expression_language_needs_confidence() -> None:
    f = ExpressionLanguage()
    assert f.decide({"expr_lang_prob": 0.9}, {"expr_lang": "de"}) == "expression_language"
    assert f.decide({"expr_lang_prob": 0.89}, {"expr_lang": "de"}) is None
    lenient = ExpressionLanguage(ExpressionLanguage.Params(min_words=2))
    assert lenient.score(region("ein Hund"))[1]["expr_lang"] != ""  # now judged


def test_region_split() -> None:
    f = RegionSplit()
    assert [f.decide(*f.score(region(split=s))) for s in ("", "train", "val", "testA")] == [
        None,
        None,
        "other_split",
        "other_split",
    ]
    both = RegionSplit(RegionSplit.Params(keep=["train", "val"]))
    assert both.decide(*both.score(region(split="val"))) is None


# ---------------------------------------------------------------------------------------------- agreement


def test_rivals_are_other_regions_naming_something_else() -> None:
    """Other phrases whose box overlaps less than negative_iou, distinct by normalised phrase (the
    first spelling wins), in the others' order; the region itself, its own phrase, blanks never."""
    own = region("a red car", [0, 0, 100, 100], slot=0)
    others = [
        own,
        region("A Dog", [150, 0, 200, 50], slot=1),  # no overlap
        region("A  red CAR", [150, 50, 200, 100], slot=2),  # the same phrase: never a rival
        region("a tree", [0, 0, 100, 90], slot=3),  # IoU 0.9: the same thing, likely
        region("a dog", [100, 50, 150, 100], slot=4),  # a second spelling of a rival
        region("  ", [150, 0, 200, 100], slot=5),
        region("a bike", [50, 0, 150, 100], slot=6),  # IoU 5000 / 15000 = 0.33
        region("a sign", [0, 0, 100, 50], slot=7),  # IoU exactly 0.5: not under it
    ]
    params = AgreementParams()
    assert rivals(own, others, ["a cat"], params) == ["A Dog", "a bike"]
    assert rivals(own, others, [], AgreementParams(negative_iou=0.3)) == ["A Dog"]
    assert rivals(own, others, [], AgreementParams(negative_iou=0.55)) == ["A Dog", "a bike", "a sign"]
    assert rivals(own, list(reversed(others)), [], params) == ["a bike", "a dog"]


def test_rivals_fall_back_to_negatives_and_the_pool_only_when_none() -> None:
    """A lone region (or one whose others all share its phrase or box) gets the configured negatives
    and the unit's pool, distinct, in that order, without its own phrase."""
    own = region("a red car", [0, 0, 100, 100])
    twin = region("A red car", [150, 0, 200, 50], slot=1)
    params = AgreementParams(negatives=["the sky", "Water", "a red car"])
    pool = ["water", "a cat", "", "The  Sky", "a cat"]
    assert rivals(own, [own], pool, params) == ["the sky", "Water", "a cat"]
    assert rivals(own, [own, twin], pool, params) == ["the sky", "Water", "a cat"]
    assert rivals(own, [own], [], AgreementParams()) == list(NEGATIVES)
    with_rival = [own, region("a dog", [150, 0, 200, 50], slot=1)]
    assert rivals(own, with_rival, pool, params) == ["a dog"]  # the pool is not used then


def test_crop_box_context_clipping_and_min_crop() -> None:
    p = AgreementParams()
    assert crop_box([100, 100, 200, 150], 400, 300, p) == (90, 95, 210, 155)  # 10% of 100 x 50 each side
    assert crop_box([0, 0, 50, 40], 400, 300, p) == (0, 0, 55, 44)  # clipped at the top-left corner
    assert crop_box([10.5, 10.5, 30.2, 30.2], 400, 300, AgreementParams(context=0)) == (10, 10, 31, 31)
    assert crop_box([100, 100, 105, 105], 400, 300, p) is None  # 99..106: 7 px < 8
    assert crop_box([100, 100, 105, 105], 400, 300, AgreementParams(min_crop=7)) == (99, 99, 106, 106)
    assert crop_box([395, 10, 400, 100], 400, 300, p) is None  # clipped to 6 px wide
    assert crop_box([500, 10, 600, 100], 400, 300, p) is None  # outside the image


def test_agreement_scores_checked_and_unchecked() -> None:
    scores, labels = agreement_scores([0.30, 0.25, 0.28])
    assert labels == {"agreement": "checked"}
    assert scores["region_clip"] == 0.30 and scores["region_rivals"] == 2.0
    assert scores["region_margin"] == pytest.approx(0.02)  # own - the best rival
    for sims, clip, n in (([0.3], 0.3, 0.0), ([], math.nan, 0.0), ([0.3, math.nan], 0.3, 1.0)):
        scores, labels = agreement_scores(sims)
        assert labels == {"agreement": "unchecked"}, sims
        assert math.isnan(scores["region_margin"]) and scores["region_rivals"] == n
        assert scores["region_clip"] == clip or (math.isnan(clip) and math.isnan(scores["region_clip"]))
    assert math.isnan(agreement_scores([math.nan, 0.2])[0]["region_clip"])


def test_expression_agreement_decides_on_the_margin() -> None:
    f = ExpressionAgreement()
    checked = {"agreement": "checked"}
    assert f.decide(*agreement_scores([0.30, 0.31])) == "expression_mismatch"
    assert f.decide({"region_margin": 0.0}, checked) is None  # the best match, by nothing
    assert f.decide({"region_margin": math.nan}, checked) == "expression_mismatch"
    strict = ExpressionAgreement(AgreementParams(min_margin=0.05))
    assert strict.decide(*agreement_scores([0.30, 0.25, 0.28])) == "expression_mismatch"  # wins by 0.02
    assert strict.decide(*agreement_scores([0.36, 0.25, 0.28])) is None  # by 0.08


def test_unchecked_regions_are_kept_or_dropped() -> None:
    unchecked = agreement_scores([0.3])
    assert ExpressionAgreement().decide(*unchecked) is None
    drop = ExpressionAgreement(AgreementParams(unchecked="drop"))
    assert drop.decide(*unchecked) == "unchecked_region"
    assert drop.decide({}, {}) == "unchecked_region"  # no label at all: never silently passed
    assert drop.decide(*agreement_scores([0.3, 0.2])) is None


@pytest.mark.parametrize(
    ("template", "text"),
    [("{}", "cat"), ("a photo of {}", "a photo of cat"), ("{}{{}}", "cat{}"), ("{{{}}} in braces", "{cat} in braces")],
)
def test_agreement_templates_accepted(template: str, text: str) -> None:
    """Doubled braces are literal: what the `align` stage puts to CLIP (`template.format(expression)`)."""
    assert AgreementParams(template=template).template.format("cat") == text


@pytest.mark.parametrize(
    "template",
    ["a photo of {} {x}", "{} }", "{ {}", "{{}}", "{}{}", "", "{0}", "{!r}", "{:>5}", "{x}", "{[0]}"],
)
def test_agreement_template_errors_name_the_key(template: str) -> None:
    with pytest.raises(ValidationError, match=r"filters\.expression_agreement\.template"):
        AgreementParams(template=template)


def test_template_problem() -> None:
    """The one check behind the agreement template and the trainer prompts."""
    assert template_problem("{}", once=True) is None
    assert template_problem("{expression} and {expression}", "expression") is None
    assert template_problem("{expression} and {expression}", "expression", once=True) is not None
    assert "not a format string" in (template_problem("{} }", once=True) or "")
    assert "bare {expression}" in (template_problem("{expression!r}", "expression") or "")
    assert "needs a {box}" in (template_problem("{{box}}", "box") or "")
