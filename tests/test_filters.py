"""Image and caption filters: score() then decide(), thresholds at their exact boundaries, real captions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from mmcurate.schemas import CaptionSample, Source
from mmcurate.stages.base import FILTERS, Filter, Params, load_filters, register
from mmcurate.stages.caption_filters import (
    CaptionBoilerplate,
    CaptionLength,
    CaptionRepetition,
    Language,
    boilerplate_ratio,
    identify_language,
    repetition_ratio,
    words,
)
from mmcurate.stages.image_decode import DecodeParams, decode
from mmcurate.stages.image_filters import AspectRatio, FileSize, MinSide

EXPECTED_FILTERS = {
    "min_side",
    "aspect_ratio",
    "file_size",
    "caption_length",
    "language",
    "caption_repetition",
    "caption_boilerplate",
}


def rec(caption: str = "", width: int = 0, height: int = 0, file_bytes: int = 0) -> CaptionSample:
    return CaptionSample(
        id="0" * 32,
        source=Source("memory:///x", 0),
        caption=caption,
        width=width,
        height=height,
        file_bytes=file_bytes,
    )


def run(f: Filter, record: CaptionSample) -> str | None:
    """The pipeline's order: score into the ledger, then decide from the scores alone."""
    scores, labels = f.score(record)
    return f.decide(scores, labels)


def nonspace(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace())


# ----------------------------------------------------------------------------------------------- registry


def test_registry_holds_every_filter() -> None:
    registry = load_filters()
    assert set(registry) >= EXPECTED_FILTERS
    for name, cls in registry.items():
        assert cls.name == name
        assert cls.reasons, f"{name} declares no reason codes"
        assert issubclass(cls.Params, Params)
        cls(cls.Params())  # defaults are valid


def test_params_reject_unknown_keys_and_are_frozen() -> None:
    """A typo in a threshold must fail loudly, not silently fall back to the default."""
    with pytest.raises(ValidationError):
        MinSide.Params(mn=3)
    p = MinSide.Params(min=10)
    with pytest.raises(ValidationError):
        p.min = 11  # type: ignore[misc]


def test_register_refuses_a_second_filter_with_the_same_name() -> None:
    class Impostor(Filter):
        name = "min_side"

    with pytest.raises(ValueError, match="min_side"):
        register(Impostor)
    assert FILTERS["min_side"] is MinSide
    assert register(MinSide) is MinSide  # re-registering the same class (module reload) is fine


def test_every_reason_a_filter_returns_is_declared() -> None:
    """decide() must only return codes from `reasons`; the drop table and docs list those."""
    cases: list[tuple[Filter, CaptionSample]] = [
        (MinSide(), rec(width=1, height=1)),
        (AspectRatio(), rec(width=1000, height=10)),
        (FileSize(FileSize.Params(max_bytes=2000)), rec(file_bytes=1)),
        (FileSize(FileSize.Params(max_bytes=2000)), rec(file_bytes=5000)),
        (CaptionLength(), rec("")),
        (CaptionLength(), rec("hi")),
        (CaptionLength(CaptionLength.Params(max_words=3)), rec("one two three four")),
        (Language(), rec("Ein brauner Hund läuft über eine grüne Wiese neben einem kleinen Holzhaus.")),
        (CaptionRepetition(), rec("buy buy buy buy now")),
        (CaptionBoilerplate(), rec("IMG_2034.JPG")),
    ]
    for f, r in cases:
        reason = run(f, r)
        assert reason is not None, (f.name, r.caption)
        assert reason in f.reasons, (f.name, reason)


# ----------------------------------------------------------------------------------------------- image filters


def test_min_side_boundary() -> None:
    """Exactly `min` pixels on the short side is kept; one less is dropped, whichever side is short."""
    f = MinSide(MinSide.Params(min=64))
    assert run(f, rec(width=64, height=500)) is None
    assert run(f, rec(width=500, height=64)) is None
    assert run(f, rec(width=63, height=500)) == "too_small"
    assert run(f, rec(width=500, height=63)) == "too_small"
    assert run(f, rec(width=0, height=0)) == "too_small"


def test_image_scores_are_what_the_record_says() -> None:
    scores, labels = MinSide().score(rec(width=300, height=120, file_bytes=4567))
    assert labels == {}
    assert scores == {"width": 300.0, "height": 120.0, "aspect_ratio": 300 / 120, "file_bytes": 4567.0}


def test_aspect_ratio_boundary() -> None:
    """A ratio exactly at `max` is kept; a pixel more on the long side is dropped, in either orientation."""
    f = AspectRatio(AspectRatio.Params(max=3.0))
    assert run(f, rec(width=300, height=100)) is None
    assert run(f, rec(width=100, height=300)) is None
    assert run(f, rec(width=301, height=100)) == "aspect_ratio"
    assert run(f, rec(width=100, height=301)) == "aspect_ratio"
    assert run(f, rec(width=200, height=200)) is None


def test_aspect_ratio_of_a_zero_side_does_not_divide_by_zero() -> None:
    scores, _ = AspectRatio().score(rec(width=50, height=0))
    assert math.isfinite(scores["aspect_ratio"])
    assert AspectRatio().decide(scores, {}) == "aspect_ratio"


def test_file_size_boundaries() -> None:
    f = FileSize(FileSize.Params(min_bytes=1024, max_bytes=4096))
    assert run(f, rec(file_bytes=1024)) is None
    assert run(f, rec(file_bytes=1023)) == "file_too_small"
    assert run(f, rec(file_bytes=4096)) is None
    assert run(f, rec(file_bytes=4097)) == "file_too_large"
    unbounded = FileSize(FileSize.Params(min_bytes=1024, max_bytes=0))
    assert run(unbounded, rec(file_bytes=10**12)) is None


def test_decide_uses_scores_only() -> None:
    """`mmcurate select` re-decides from the ledger: changing thresholds needs no record, only scores."""
    scores, labels = MinSide().score(rec(width=100, height=80))
    assert MinSide(MinSide.Params(min=80)).decide(scores, labels) is None
    assert MinSide(MinSide.Params(min=81)).decide(scores, labels) == "too_small"


def test_geometry_filters_on_img2dataset_images(peer_data: Path) -> None:
    """Real JPEGs: decoded sizes match Pillow's own reading, and decisions match thresholds made from them."""
    folder = peer_data / "img2dataset" / "resize_test_image"
    files = sorted(folder.glob("*.jpg"))
    assert files
    for path in files:
        raw = path.read_bytes()
        with Image.open(path) as im:
            pil_size = im.size
        d = decode(raw, DecodeParams())
        assert (d.width, d.height) == pil_size
        r = rec("x", width=d.width, height=d.height, file_bytes=len(raw))
        short, long = min(pil_size), max(pil_size)
        assert run(MinSide(MinSide.Params(min=short)), r) is None
        assert run(MinSide(MinSide.Params(min=short + 1)), r) == "too_small"
        ratio = long / short
        assert run(AspectRatio(AspectRatio.Params(max=ratio)), r) is None
        assert run(AspectRatio(AspectRatio.Params(max=math.nextafter(ratio, 0))), r) == "aspect_ratio"
        assert run(FileSize(FileSize.Params(min_bytes=len(raw))), r) is None
        assert run(FileSize(FileSize.Params(min_bytes=len(raw) + 1)), r) == "file_too_small"
    # The file names say WIDTH_HEIGHT; the ones with a 3.7:1 ratio are banners by the default rule.
    names = {p.stem: tuple(int(v) for v in p.stem.split("_")) for p in files}
    for path in files:
        with Image.open(path) as im:
            assert im.size == names[path.stem]
    banners = {s for s, (w, h) in names.items() if max(w, h) / min(w, h) > AspectRatio.Params().max}
    kept = {s for s, (w, h) in names.items() if run(AspectRatio(), rec(width=w, height=h)) is None}
    assert banners
    assert kept == set(names) - banners


# ----------------------------------------------------------------------------------------------- caption length


def test_caption_length_scores() -> None:
    text = "  A red bicycle, leaning on a wall.  "
    scores, _ = CaptionLength().score(rec(text))
    assert scores["caption_chars"] == len(text.strip())
    assert scores["caption_words"] == 7


def test_caption_length_boundaries() -> None:
    p = CaptionLength.Params(min_words=2, max_words=5, min_chars=6, max_chars=30)
    f = CaptionLength(p)
    assert run(f, rec("")) == "caption_empty"
    assert run(f, rec("   \n\t ")) == "caption_empty"
    assert run(f, rec("...!!!")) == "caption_empty"  # characters but no words
    assert run(f, rec("a dog")) == "caption_too_short"  # 2 words but 5 chars
    assert run(f, rec("a dogs")) is None  # 2 words, 6 chars: both minima met exactly
    assert run(f, rec("puppies")) == "caption_too_short"  # 1 word
    assert run(f, rec("one two three four five")) is None  # 5 words
    assert run(f, rec("one two three four five six")) == "caption_too_long"
    at_max = "a" * 14 + " " + "b" * 15  # 30 chars, 2 words
    assert run(f, rec(at_max)) is None
    assert run(f, rec(at_max + "b")) == "caption_too_long"


# ----------------------------------------------------------------------------------------------- language

SENTENCES = {
    "en": "A brown dog is running across a green field next to a small wooden house.",
    "de": "Ein brauner Hund läuft über eine grüne Wiese neben einem kleinen Holzhaus.",
    "fr": "Un chien brun court à travers un champ vert à côté d'une petite maison en bois.",
    "it": "Un cane marrone corre attraverso un campo verde vicino a una piccola casa di legno.",
    "nl": "Een bruine hond rent over een groen veld naast een klein houten huis.",
    "ru": "Коричневая собака бежит по зелёному полю рядом с маленьким деревянным домом.",  # noqa: RUF001
    "el": "Ένας καφέ σκύλος τρέχει σε ένα πράσινο χωράφι δίπλα σε ένα μικρό ξύλινο σπίτι.",
    "ja": "茶色の犬が小さな木造の家の隣の緑の野原を走っています。",
    "ko": "갈색 개가 작은 나무 집 옆의 푸른 들판을 가로질러 달리고 있습니다.",
}


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_language_identifies_real_sentences(lang: str) -> None:
    scores, labels = Language().score(rec(SENTENCES[lang]))
    assert labels == {"lang": lang}
    assert 0.5 < scores["lang_prob"] <= 1.0
    english_only = Language(Language.Params(allowed=("en",)))
    assert english_only.decide(scores, labels) == (None if lang == "en" else "language")
    assert Language(Language.Params(allowed=(lang, "en"))).decide(scores, labels) is None


def test_language_min_prob_boundary() -> None:
    """The threshold is inclusive: a caption scored exactly at min_prob is kept, just above it is dropped."""
    scores, labels = Language().score(rec(SENTENCES["en"]))
    prob = scores["lang_prob"]
    assert Language(Language.Params(min_prob=prob)).decide(scores, labels) is None
    assert Language(Language.Params(min_prob=math.nextafter(prob, 2.0))).decide(scores, labels) == "language"


def test_language_leaves_empty_captions_to_the_length_filter() -> None:
    for text in ("", "   ", "\n"):
        scores, labels = Language().score(rec(text))
        assert labels == {"lang": ""}
        assert scores == {"lang_prob": 0.0}
        assert Language().decide(scores, labels) is None
    assert identify_language("") == ("", 0.0)


def test_language_probabilities_are_normalised() -> None:
    """Normalised probabilities (not raw log scores) are what min_prob is compared against."""
    for text in [*SENTENCES.values(), "IMG_2034.JPG", "12345", "ok"]:
        _, prob = identify_language(text)
        assert 0.0 <= prob <= 1.0


# ----------------------------------------------------------------------------------------------- repetition


def test_repetition_ratio_counts_repeated_tokens() -> None:
    assert repetition_ratio("") == 0.0
    assert repetition_ratio("dog") == 0.0
    assert repetition_ratio("a brown dog on a green lawn") == pytest.approx(1 - 6 / 7)
    assert repetition_ratio("Sale sale SALE sale") == pytest.approx(1 - 1 / 4)  # case-insensitive
    spam = "cheap shoes cheap shoes cheap shoes cheap shoes best price"
    toks = spam.split()
    assert repetition_ratio(spam) == pytest.approx(1 - len(set(toks)) / len(toks))


def test_repetition_boundary() -> None:
    f = CaptionRepetition(CaptionRepetition.Params(max_ratio=0.5))
    assert repetition_ratio("red red blue blue") == 0.5
    assert run(f, rec("red red blue blue")) is None
    assert repetition_ratio("red red red red blue") == pytest.approx(0.6)
    assert run(f, rec("red red red red blue")) == "caption_repetition"
    assert run(f, rec("A woman walking her dog along the beach at sunset")) is None


# ----------------------------------------------------------------------------------------------- boilerplate

# (caption, the parts of it that are boilerplate), as LAION-style alt text comes.
ALT_TEXTS = [
    ("IMG_2034.JPG", ["IMG_2034.JPG"]),
    ("DSC01234", ["DSC01234"]),
    ("click to enlarge", ["click to enlarge"]),
    ("Shutterstock", ["Shutterstock"]),
    ("https://cdn.example.com/photos/2019/05/beach.jpg", ["https://cdn.example.com/photos/2019/05/beach.jpg"]),
    ("Stock Photo - royalty free image of a smiling businesswoman in an office", ["Stock Photo", "royalty free"]),
    ("image may contain: 2 people, people smiling", ["image may contain"]),
    ("Sunset over the harbour. Copyright 2015 John Smith, all rights reserved", ["Copyright", "all rights reserved"]),
    ("A golden retriever puppy playing with a red ball on the grass", []),
]


@pytest.mark.parametrize(("caption", "parts"), ALT_TEXTS)
def test_boilerplate_ratio_on_alt_text(caption: str, parts: list[str]) -> None:
    """The ratio is the share of non-space characters inside boilerplate phrases."""
    expected = sum(nonspace(p) for p in parts) / nonspace(caption)
    assert boilerplate_ratio(caption) == pytest.approx(expected)


def test_boilerplate_decisions_on_alt_text() -> None:
    f = CaptionBoilerplate()
    dropped = {c for c, _ in ALT_TEXTS if run(f, rec(c)) == "caption_boilerplate"}
    expected = {c for c, parts in ALT_TEXTS if sum(nonspace(p) for p in parts) / nonspace(c) > f.params.max_ratio}
    assert dropped == expected
    assert "IMG_2034.JPG" in dropped
    assert "A golden retriever puppy playing with a red ball on the grass" not in dropped


def test_boilerplate_boundary() -> None:
    """Exactly half boilerplate is kept at max_ratio=0.5; a character more is dropped."""
    caption = "untitled abcdefgh"  # 8 boilerplate characters of 16
    assert boilerplate_ratio(caption) == 0.5
    f = CaptionBoilerplate(CaptionBoilerplate.Params(max_ratio=0.5))
    assert run(f, rec(caption)) is None
    assert run(f, rec("untitled abcdefg")) == "caption_boilerplate"


def test_boilerplate_needs_word_boundaries() -> None:
    """'unknown' the word is boilerplate; inside another word it is not."""
    assert boilerplate_ratio("unknownst") == 0.0
    assert boilerplate_ratio("downloaded photos") == 0.0
    assert boilerplate_ratio("free download") == 1.0


# ----------------------------------------------------------------------------------------------- properties

CAPTION_FILTERS: list[type[Filter]] = [CaptionLength, Language, CaptionRepetition, CaptionBoilerplate]
ANY_TEXT = st.one_of(
    st.text(),
    # Lone surrogates are valid Python str and come out of JSON escapes such as "\\ud800".
    st.text(st.one_of(st.characters(), st.characters(categories=["Cs"]))),
    st.lists(st.sampled_from(["IMG_1.jpg", "stock photo", "dog", "©", "a", " ", "\n", "😀", "ß"])).map("".join),
)


@settings(deadline=None, max_examples=150)
@given(ANY_TEXT)
def test_caption_scores_never_raise_and_ratios_stay_in_range(text: str) -> None:
    r = rec(text)
    for cls in CAPTION_FILTERS:
        f = cls()
        scores, labels = f.score(r)
        assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
        assert all(isinstance(v, str) for v in labels.values())
        reason = f.decide(scores, labels)
        assert reason is None or reason in f.reasons
    assert 0.0 <= repetition_ratio(text) < 1.0
    assert 0.0 <= boilerplate_ratio(text) <= 1.0
    _, prob = identify_language(text)
    assert 0.0 <= prob <= 1.0


@given(st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=1, max_size=30))
def test_repetition_ratio_matches_distinct_word_share(tokens: list[str]) -> None:
    expected = 0.0 if len(tokens) < 2 else 1 - len(set(tokens)) / len(tokens)
    assert repetition_ratio(" ".join(tokens)) == pytest.approx(expected)
    assert words(" ".join(tokens)) == tokens


class _Upper(Filter):
    """A throwaway filter to check that Filter's defaults are usable by subclasses."""

    name = "_test_upper"
    reasons: ClassVar[tuple[str, ...]] = ("shouting",)

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        return None


def test_filter_base_defaults() -> None:
    f: Any = _Upper()
    assert isinstance(f.params, Params)
    assert f.score(rec("x")) == ({}, {})
    with pytest.raises(TypeError, match="abstract"):  # a filter without `decide` cannot even be built
        Filter()
