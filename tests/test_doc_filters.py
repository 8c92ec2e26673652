"""Document text filters: score() then decide(), hand-checkable ratios, and datatrove's own code as the reference.

datatrove's English word splitter needs spaCy (not installed): its ratio functions get the words our
tokenizer gives, and its whole filters run with their module's `split_into_words` swapped for ours, so
what is compared is everything else (splitting lines and paragraphs, counting, thresholds, order).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import gopher_quality_filter as dt_quality
from datatrove.pipeline.filters import gopher_repetition_filter as dt_rep
from datatrove.pipeline.filters.c4_filters import C4QualityFilter
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcurate.schemas import DocumentRecord, Source
from mmcurate.stages.base import FILTERS, Filter, load_filters
from mmcurate.stages.caption_filters import boilerplate_ratio
from mmcurate.stages.doc_filters import (
    DUP_NGRAMS,
    GOPHER_SCORES,
    TOP_NGRAMS,
    DocBoilerplate,
    DocLanguage,
    DocLength,
    DocNonAlpha,
    DocRepetition,
    GopherRepetition,
    ImageCount,
    ImagesPerWords,
    alpha_word_ratio,
    boilerplate_scores,
    c4_line_rule,
    character_repetition_ratio,
    document_text,
    gopher_repetition,
    gopher_words,
    images_per_100_words,
    is_boilerplate_line,
    non_alpha_char_ratio,
    obelics_words,
    special_character_ratio,
    word_repetition_ratio,
)

DOC_FILTERS: tuple[type[Filter], ...] = (
    DocLength,
    DocRepetition,
    GopherRepetition,
    DocBoilerplate,
    DocLanguage,
    DocNonAlpha,
    ImageCount,
    ImagesPerWords,
)

# Public-domain paragraphs (Project Gutenberg: Austen, Dickens, Melville, Kafka).
AUSTEN = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife.",
    "However little known the feelings or views of such a man may be on his first entering a neighbourhood, "
    "this truth is so well fixed in the minds of the surrounding families, that he is considered the rightful "
    "property of some one or other of their daughters.",
    '"My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield Park is let at last?"',
    "Mr. Bennet replied that he had not.",
]
DICKENS = [
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
    "was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything "
    "before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the "
    "other way\u2014in short, the period was so far like the present period, that some of its noisiest "
    "authorities insisted on its being received, for good or for evil, in the superlative degree of "
    "comparison only."
]
MELVILLE = [
    "Call me Ishmael. Some years ago\u2014never mind how long precisely\u2014having little or no money in my "
    "purse, and nothing particular to interest me on shore, I thought I would sail about a little and see "
    "the watery part of the world.",
    "It is a way I have of driving off the spleen and regulating the circulation.",
]
KAFKA = [
    "Als Gregor Samsa eines Morgens aus unruhigen Tr\xe4umen erwachte, fand er sich in seinem Bett zu einem "
    "ungeheueren Ungeziefer verwandelt. Er lag auf seinem panzerartig harten R\xfccken und sah, wenn er den "
    "Kopf ein wenig hob, seinen gew\xf6lbten, braunen, von bogenf\xf6rmigen Versteifungen geteilten Bauch, auf "
    "dessen H\xf6he sich die Bettdecke, zum g\xe4nzlichen Niedergleiten bereit, kaum noch erhalten konnte."
]
SPAM = [
    "Home | Shop | Deals | Contact",
    "Cheap watches online! Best prices on cheap watches!",
    "Buy cheap watches online now.\nBuy cheap watches online now.\nBuy cheap watches online now.",
    "Buy cheap watches online now.\nBest prices on cheap watches, buy now!",
    "Cheap watches online! Best prices on cheap watches!",
    "This site uses cookies. Read our Privacy Policy and Terms of Use.",
    "\xa9 2024 Cheap Watches Ltd. All rights reserved.",
]
NAVIGATION = [
    "Skip to main content",
    "News \xbb World \xbb Europe",
    "The council approved the new budget on Tuesday after a long debate about the cost of road repairs.",
    "Please enable JavaScript to view the comments.",
    "Share this article",
    "Posted by admin on 12 March",
]
REAL_TEXTS = {"austen": AUSTEN, "dickens": DICKENS, "melville": MELVILLE, "kafka": KAFKA, "spam": SPAM}


def doc(texts: list[Any], images: int = 0) -> DocumentRecord:
    return DocumentRecord(id="x", source=Source("u", 0), texts=texts, images=images)


def run(f: Filter, record: DocumentRecord) -> tuple[dict[str, float], dict[str, str], str | None]:
    """The pipeline's order: score into the ledger, then decide from the scores alone."""
    scores, labels = f.score(record)
    return scores, labels, f.decide(scores, labels)


def mmc4_texts(peer_data: Path) -> list[str]:
    """The MMC4 README document's sentences (real web text)."""
    line = (peer_data / "interleaved" / "mmc4_readme_example.jsonl").read_text(encoding="utf-8").splitlines()[0]
    return json.loads(line)["text_list"]


def corpus(peer: list[str] | None = None) -> dict[str, str]:
    texts = {name: "\n\n".join(segs) for name, segs in REAL_TEXTS.items()}
    texts["navigation"] = "\n\n".join(NAVIGATION)
    if peer:
        texts["mmc4"] = "\n\n".join(peer)
    return texts


@pytest.fixture(params=["gutenberg_and_spam", pytest.param("mmc4", marks=pytest.mark.peerdata)])
def texts(request: pytest.FixtureRequest) -> dict[str, str]:
    """The cross-check texts: the paragraphs above, then the MMC4 document (skipped without peer data)."""
    if request.param == "mmc4":
        return {"mmc4": corpus(mmc4_texts(request.getfixturevalue("peer_data")))["mmc4"]}
    return corpus()


@pytest.fixture
def mmc4(peer_data: Path) -> list[str]:
    return mmc4_texts(peer_data)


# ----------------------------------------------------------------------------------------------- registry


def test_registered_as_document_filters_with_declared_fields() -> None:
    registry = load_filters()
    names = [cls.name for cls in DOC_FILTERS]
    assert len(set(names)) == len(names)
    for cls in DOC_FILTERS:
        assert registry[cls.name] is cls
        assert cls.kinds == ("document",)
        assert cls.reasons
        scores, labels = cls().score(doc(AUSTEN, images=2))
        assert set(scores) == set(cls.scores), cls.name
        assert set(labels) == set(cls.labels), cls.name
        assert all(isinstance(v, float) for v in scores.values())
    # No score or label name of a document filter is also one of another kind's filters: one meaning per name.
    others = [f for f in FILTERS.values() if "document" not in f.kinds]
    for cls in DOC_FILTERS:
        for other in others:
            assert not set(cls.scores) & set(other.scores), (cls.name, other.name)
            assert not set(cls.labels) & set(other.labels), (cls.name, other.name)


def test_document_text_joins_non_empty_segments_with_a_blank_line() -> None:
    assert document_text(doc(["a b", "", "c"])) == "a b\n\nc"
    assert document_text(doc([])) == ""
    assert document_text(doc(["bad \udcff byte"])) == "bad ? byte"
    assert document_text(doc([b"caf\xc3\xa9 \xff"])) == "caf\xe9 \ufffd"


# ----------------------------------------------------------------------------------------------- length


def test_obelics_words_split_lower_and_strip_special_characters() -> None:
    assert obelics_words('"Hello,"  WORLD!!\tit\'s\n(2024) -- ok.') == ("hello", "world", "it's", "ok")
    assert obelics_words("123 --- ... \u2014") == ()
    assert obelics_words("a\xa0b c\u3000d") == ("a", "b", "c", "d")  # OBELICS' whitespace standardisation
    assert obelics_words("fun\U0001f600 \U0001f44d") == ("fun",)  # emoji are special characters


def test_doc_length_bounds() -> None:
    f = DocLength()
    assert run(f, doc([" ".join(["word"] * 10)]))[2] is None
    assert run(f, doc([" ".join(["word"] * 9)]))[2] == "doc_too_short"
    assert run(f, doc([" ".join(["word"] * 2000)]))[2] is None
    assert run(f, doc([" ".join(["word"] * 2001)]))[2] == "doc_too_long"
    scores, _, verdict = run(f, doc([], images=3))
    assert scores == {"doc_words": 0.0, "doc_chars": 0.0} and verdict == "doc_too_short"
    scores = f.score(doc(["one two", "three"]))[0]
    assert scores == {"doc_words": 3.0, "doc_chars": float(len("one two\n\nthree"))}
    chars = DocLength(DocLength.Params(min_words=None, max_words=None, min_chars=10, max_chars=14))
    assert chars.decide(scores, {}) is None
    assert chars.decide({"doc_words": 3.0, "doc_chars": 9.0}, {}) == "doc_too_short"
    assert chars.decide({"doc_words": 3.0, "doc_chars": 15.0}, {}) == "doc_too_long"


# ----------------------------------------------------------------------------------------------- OBELICS repetition


def test_character_repetition_ratio_by_hand() -> None:
    assert character_repetition_ratio("a" * 50, 10) == 1.0  # one 10-gram, repeated throughout
    # "ab" * 50 has 91 10-grams: "abab..." 46 times, "baba..." 45 times; floor(sqrt(2 distinct)) = 1 of them counts.
    assert character_repetition_ratio("ab" * 50, 10) == 46 / 91
    assert character_repetition_ratio("abcdefghijklmnopqrstuvwxyz", 10) == 0.0  # every 10-gram once
    assert character_repetition_ratio("short", 10) == 0.0  # no 10-gram at all
    # 3-grams of "abcabcabcX": abc x3, bca x2, cab x2, bcX x1; floor(sqrt(4)) = 2 most frequent: (3 + 2) / 8.
    assert character_repetition_ratio("abcabcabcX", 3) == pytest.approx(5 / 8)


def test_word_repetition_ratio_by_hand() -> None:
    # 2-grams of a b c a b c: "a b" x2, "b c" x2, "c a" x1 -> (2 + 2) / 5.
    assert word_repetition_ratio(("a", "b", "c", "a", "b", "c"), 2) == pytest.approx(4 / 5)
    assert word_repetition_ratio(tuple("abcdefgh"), 5) == 0.0
    assert word_repetition_ratio(("a", "b"), 5) == 0.0
    assert word_repetition_ratio(("spam",) * 20, 5) == 1.0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.integers(1, 12))
def test_repetition_ratios_are_shares(text: str, n: int) -> None:
    c = character_repetition_ratio(text, n)
    w = word_repetition_ratio(obelics_words(text), n)
    assert 0.0 <= c <= 1.0 and 0.0 <= w <= 1.0
    assert character_repetition_ratio("".join(sorted(set(text))), n) == 0.0  # distinct characters: no repeat
    if text:
        assert character_repetition_ratio(text[0] * (n + 5), n) == 1.0  # one n-gram over and over


def test_doc_repetition_on_real_and_repeated_text() -> None:
    f = DocRepetition()
    assert run(f, doc(AUSTEN))[2] is None
    assert run(f, doc(MELVILLE))[2] is None
    scores, _, verdict = run(f, doc(["Buy cheap watches online now."] * 8))
    assert scores["char_repetition_ratio"] > 0.1 and verdict == "doc_char_repetition"
    assert f.decide({"char_repetition_ratio": 0.1, "word_repetition_ratio": 0.2}, {}) is None  # cutoffs keep
    assert f.decide({"char_repetition_ratio": 0.1, "word_repetition_ratio": 0.2001}, {}) == "doc_word_repetition"
    off = DocRepetition(DocRepetition.Params(max_char_repetition_ratio=None, max_word_repetition_ratio=None))
    assert off.decide({"char_repetition_ratio": 1.0, "word_repetition_ratio": 1.0}, {}) is None


# ----------------------------------------------------------------------------------------------- Gopher vs datatrove


def test_gopher_fractions_equal_datatrove_functions(texts: dict[str, str]) -> None:
    ref = dt_rep.GopherRepetitionFilter()
    for name, text in texts.items():
        words = gopher_words(text)
        ours = gopher_repetition(text, words)
        for unit, parts in (("para", ref.paragraph_exp.split(text.strip())), ("line", ref._line_splitter.split(text))):
            dups, chars = dt_rep.find_duplicates(parts)
            assert ours[f"dup_{unit}_frac"] == dups / len(parts), (name, unit)
            assert ours[f"dup_{unit}_char_frac"] == chars / len(text), (name, unit)
        for n in TOP_NGRAMS:
            grams = dt_rep.get_n_grams(list(words), n)
            expected = dt_rep.find_top_duplicate(grams) / len(text) if grams else 0.0
            assert ours[f"top_{n}gram_char_frac"] == expected, (name, n)
        for n in DUP_NGRAMS:
            assert ours[f"dup_{n}gram_char_frac"] == dt_rep.find_all_duplicate(list(words), n) / len(text), (name, n)
    spam = gopher_repetition(corpus()["spam"], gopher_words(corpus()["spam"]))
    assert spam["dup_line_frac"] > 0.3 and spam["dup_para_frac"] > 0  # the page repeats itself


def _datatrove_reason_group(reason: str) -> str:
    if reason.startswith("top_"):
        return "gopher_top_ngram"
    return "gopher_dup_ngram" if reason.startswith("duplicated_") else "gopher_dup_lines"


def _datatrove_verdict(text: str, params: GopherRepetition.Params) -> str | None:
    p = params.model_dump()
    ref = dt_rep.GopherRepetitionFilter(
        dup_line_frac=p["max_dup_line_frac"],
        dup_para_frac=p["max_dup_para_frac"],
        dup_line_char_frac=p["max_dup_line_char_frac"],
        dup_para_char_frac=p["max_dup_para_char_frac"],
        top_n_grams=tuple((n, p[f"max_top_{n}gram_char_frac"]) for n in TOP_NGRAMS if p[f"max_top_{n}gram_char_frac"]),
        dup_n_grams=tuple((n, p[f"max_dup_{n}gram_char_frac"]) for n in DUP_NGRAMS if p[f"max_dup_{n}gram_char_frac"]),
    )
    result = ref.filter(Document(text=text, id="x"))
    return None if result is True else _datatrove_reason_group(result[1])


def test_gopher_verdict_equals_datatrove_filter(texts: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults, then every threshold alone at our value (kept: not above) and just below it (dropped)."""
    monkeypatch.setattr(dt_rep, "split_into_words", lambda text, language="en": list(gopher_words(text)))
    off = dict.fromkeys(GopherRepetition.Params.model_fields)
    verdicts: list[str | None] = []
    for name, text in texts.items():
        scores, _ = GopherRepetition().score(doc([text]))
        settings_ = [GopherRepetition.Params()]
        for score in GOPHER_SCORES:
            if scores[score] > 0:
                at = scores[score]
                settings_ += [
                    GopherRepetition.Params(**{**off, f"max_{score}": at}),
                    GopherRepetition.Params(**{**off, f"max_{score}": math.nextafter(at, 0.0)}),
                ]
        for params in settings_:
            ours = GopherRepetition(params).decide(scores, {})
            assert ours == _datatrove_verdict(text, params), (name, params)
            verdicts.append(ours)
    assert None in verdicts
    if "spam" in texts:
        assert {"gopher_dup_lines", "gopher_top_ngram", "gopher_dup_ngram"} <= set(verdicts)


def test_gopher_defaults_on_real_text() -> None:
    f = GopherRepetition()
    assert run(f, doc(AUSTEN))[2] is None
    assert run(f, doc(MELVILLE))[2] is None
    assert run(f, doc(SPAM))[2] == "gopher_dup_lines"
    assert run(f, doc([]))[0] == dict.fromkeys(GOPHER_SCORES, 0.0)


# ----------------------------------------------------------------------------------------------- non-alpha


def test_non_alpha_ratios_by_hand() -> None:
    text = "123 456 !!! abc"
    assert gopher_words(text) == ("123", "456", "!!!", "abc")
    assert alpha_word_ratio(gopher_words(text)) == 1 / 4
    assert non_alpha_char_ratio(text) == 9 / 12  # 12 non-space characters, 3 of them letters
    assert special_character_ratio(text) == 12 / 15  # digits, "!" and spaces are special in OBELICS
    assert alpha_word_ratio(()) == 1.0 and non_alpha_char_ratio("  ") == 0.0 and special_character_ratio("") == 0.0
    assert non_alpha_char_ratio("\xc9t\xe9 \u0434\u0430") == 0.0  # letters of any script


def test_alpha_word_ratio_equals_datatrove_gopher_quality(
    texts: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dt_quality, "split_into_words", lambda text, language="en": list(gopher_words(text)))
    only_alpha = dict.fromkeys(
        (
            "min_doc_words",
            "max_doc_words",
            "min_avg_word_length",
            "max_avg_word_length",
            "max_symbol_word_ratio",
            "max_bullet_lines_ratio",
            "max_ellipsis_lines_ratio",
            "min_stop_words",
        )
    )
    texts = {**texts, "symbols": "Price: $ 5 , 10 % off !!! 2024 - 12 - 01 >>> ### ok"}
    verdicts = []
    for name, text in texts.items():
        scores, _ = DocNonAlpha().score(doc([text]))
        at = scores["alpha_word_ratio"]
        for thr in (0.8, at, math.nextafter(at, 1.0)):
            ref = dt_quality.GopherQualityFilter(**only_alpha, max_non_alpha_words_ratio=thr)
            kept = ref.filter(Document(text=text, id="x")) is True
            ours = DocNonAlpha(DocNonAlpha.Params(min_alpha_word_ratio=thr, max_special_char_ratio=None)).decide(
                scores, {}
            )
            assert kept == (ours is None), (name, thr)
            verdicts.append(ours)
    assert None in verdicts and "doc_non_alpha_words" in verdicts


def test_doc_non_alpha_defaults() -> None:
    f = DocNonAlpha()
    assert run(f, doc(AUSTEN))[2] is None
    assert run(f, doc(["12 34 56 78 | 90 -- ## ok"]))[2] == "doc_non_alpha_words"
    scores, _, verdict = run(f, doc(["abc1234 def5678"]))  # every word has letters; 8 digits + 1 space of 15
    assert scores["alpha_word_ratio"] == 1.0 and scores["special_char_ratio"] == 9 / 15
    assert verdict == "doc_special_chars"
    on = DocNonAlpha(
        DocNonAlpha.Params(min_alpha_word_ratio=None, max_special_char_ratio=None, max_non_alpha_char_ratio=0.5)
    )
    assert on.decide({"alpha_word_ratio": 1.0, "special_char_ratio": 0.0, "non_alpha_char_ratio": 0.5}, {}) is None
    assert on.decide({"alpha_word_ratio": 1.0, "special_char_ratio": 0.0, "non_alpha_char_ratio": 0.51}, {}) == (
        "doc_non_alpha_chars"
    )


# ----------------------------------------------------------------------------------------------- boilerplate


def test_c4_rules_equal_datatrove_c4_filter(texts: dict[str, str]) -> None:
    """datatrove's C4 filter with only its substring rules on: same page verdict, same lines removed."""
    texts = {
        **texts,
        "lorem": "Welcome to our site.\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
        "code": "Use it like this.\nfunction f() { return 1; }\nThat is all.",
        "js_brace": "Enable JavaScript: if (x) { run(); }\nThanks for reading.",
    }
    removed_any = False
    for name, text in texts.items():
        ref = C4QualityFilter(
            filter_no_terminal_punct=False,
            min_num_sentences=-1,
            min_words_per_line=-1,
            max_word_length=-1,
            remove_citations=False,
        )
        d = Document(text=text, id="x")
        result = ref.filter(d)
        scores = boilerplate_scores(text)
        if result is not True:
            assert scores[result[1]] == 1.0, name  # lorem_ipsum / curly_bracket: the page rule that fired
            continue
        assert scores["lorem_ipsum"] == scores["curly_bracket"] == 0.0, name
        lines = [line.strip() for line in text.splitlines()]
        kept = [line for line in lines if c4_line_rule(line) not in ("javascript", "policy")]
        assert d.text == "\n".join(kept).strip(), name
        for line in set(lines) - set(kept):
            assert is_boilerplate_line(line)
            removed_any = True
    assert removed_any


def test_boilerplate_share_on_a_web_page() -> None:
    boiler = [NAVIGATION[i] for i in (0, 1, 3, 4, 5)]
    body = NAVIGATION[2]
    assert all(is_boilerplate_line(line) for line in boiler)
    assert not is_boilerplate_line(body)
    size = {line: sum(1 for ch in line if not ch.isspace()) for line in NAVIGATION}
    scores, _, verdict = run(DocBoilerplate(), doc(NAVIGATION))
    assert scores["doc_boilerplate_ratio"] == sum(size[line] for line in boiler) / sum(size.values())
    assert scores["doc_boilerplate_ratio"] > 0.5 and verdict == "doc_boilerplate"
    # The caption patterns count where they cover most of a short line.
    assert boilerplate_ratio("IMG_2041.jpg") > 0.5 and is_boilerplate_line("IMG_2041.jpg")
    # A long paragraph that mentions a footer phrase is text, not a footer.
    assert not is_boilerplate_line(AUSTEN[1] + " Click here, she said, and all rights reserved.")


def test_doc_boilerplate_decisions() -> None:
    f = DocBoilerplate()
    for texts in (AUSTEN, DICKENS, MELVILLE, KAFKA):
        scores, _, verdict = run(f, doc(texts))
        assert scores == {"doc_boilerplate_ratio": 0.0, "lorem_ipsum": 0.0, "curly_bracket": 0.0}
        assert verdict is None
    assert run(f, doc([*AUSTEN, "Lorem ipsum dolor sit amet."]))[2] == "doc_lorem_ipsum"
    assert run(f, doc([*AUSTEN, "var x = {a: 1};"]))[2] == "doc_curly_bracket"
    lenient = DocBoilerplate(DocBoilerplate.Params(drop_lorem_ipsum=False, drop_curly_bracket=False, max_ratio=None))
    assert run(lenient, doc(["Lorem ipsum.", "{}"]))[2] is None


# ----------------------------------------------------------------------------------------------- language


def test_doc_language() -> None:
    f = DocLanguage()
    scores, labels, verdict = run(f, doc(AUSTEN))
    assert labels == {"doc_lang": "en"} and scores["doc_lang_prob"] >= 0.8 and verdict is None
    scores, labels, verdict = run(f, doc(KAFKA))
    assert labels == {"doc_lang": "de"} and verdict == "doc_language"
    assert DocLanguage(DocLanguage.Params(allowed=("en", "de"))).decide(scores, labels) is None
    assert run(f, doc(["   ", ""]))[1:] == ({"doc_lang": ""}, None)
    assert f.decide({"doc_lang_prob": 0.8}, {"doc_lang": "en"}) is None
    assert f.decide({"doc_lang_prob": 0.79}, {"doc_lang": "en"}) == "doc_language"


# ----------------------------------------------------------------------------------------------- images


def test_image_count_bounds() -> None:
    assert run(ImageCount(), doc(AUSTEN, images=0))[2] is None  # no lower bound unless asked: min_images is it
    f = ImageCount(ImageCount.Params(min=1, max=30))
    assert run(f, doc(AUSTEN, images=0))[2] == "doc_too_few_images"
    assert run(f, doc(AUSTEN, images=1))[2] is None
    assert run(f, doc(AUSTEN, images=30))[2] is None
    scores, _, verdict = run(f, doc(AUSTEN, images=31))
    assert scores == {"doc_images": 31.0} and verdict == "doc_too_many_images"


def test_image_count_counts_the_slots_still_in_the_document() -> None:
    """Slots an early image filter settled (icons) do not count, as in OBELICS."""
    from mmcurate.schemas import ImageSlot, Source

    record = doc(AUSTEN, images=3)
    record.slots = [ImageSlot(id=str(i), source=Source("u", 0), slot=i) for i in range(3)]
    record.slots[1].settle("too_small")
    assert run(ImageCount(ImageCount.Params(min=3)), record)[:3:2] == ({"doc_images": 2.0}, "doc_too_few_images")


def test_images_per_100_words() -> None:
    assert images_per_100_words(3, 150) == 2.0
    assert images_per_100_words(0, 0) == 0.0
    assert images_per_100_words(2, 0) == 200.0  # no words: counted as one, finite and above any sensible max
    words = len(obelics_words("\n\n".join(AUSTEN)))
    scores, _, verdict = run(ImagesPerWords(), doc(AUSTEN, images=2))
    assert scores == {"images_per_100_words": 200.0 / words} and verdict is None  # both bounds off by default
    bounded = ImagesPerWords(ImagesPerWords.Params(min=0.5, max=10.0))
    assert bounded.decide({"images_per_100_words": 0.4}, {}) == "doc_images_too_sparse"
    assert bounded.decide({"images_per_100_words": 10.0}, {}) is None
    assert bounded.decide({"images_per_100_words": 200.0}, {}) == "doc_images_too_dense"


# ----------------------------------------------------------------------------------------------- robustness


BROKEN = [
    [],
    [""],
    ["   \n\t  ", "\n\n\n"],
    ["bad \udcff\udcfe bytes", "\x00\x01\x02"],
    [b"\xff\xfe\xfa not utf-8"],
    ["\ufffd" * 50],
    ["{" * 30 + "\n" * 30],
]


@pytest.mark.parametrize("texts", BROKEN, ids=range(len(BROKEN)))
def test_broken_documents_never_raise(texts: list[Any]) -> None:
    for cls in DOC_FILTERS:
        scores, _, _ = run(cls(), doc(texts, images=2))
        assert set(scores) == set(cls.scores)
        assert all(math.isfinite(v) for v in scores.values()), cls.name


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=5), st.integers(0, 40))
def test_any_document_scores_finite_shares(texts: list[str], images: int) -> None:
    record = doc(texts, images=images)
    for cls in DOC_FILTERS:
        f = cls()
        scores, labels = f.score(record)
        f.decide(scores, labels)
        for name, value in scores.items():
            assert math.isfinite(value)
            if name.startswith("top_"):  # datatrove counts n-grams joined by spaces the text may lack
                assert value >= 0.0
            elif name.endswith(("_ratio", "_frac")) or name in ("lorem_ipsum", "curly_bracket", "doc_lang_prob"):
                assert 0.0 <= value <= 1.0, (name, value)


def test_peer_mmc4_document_is_kept(mmc4: list[str]) -> None:
    """The MMC4 README document (three sentences of a car manual, two images) passes every text default."""
    record = doc(mmc4, images=2)
    for cls in DOC_FILTERS:
        assert run(cls(), record)[2] is None, cls.name
