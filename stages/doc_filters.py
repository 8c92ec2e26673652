"""Interleaved-document text filters: length, repetition, boilerplate, language, non-alphabetic share, images.

Every filter scores the document text that `document_text` gives (the non-empty text segments joined by
a blank line, as OBELICS' document-level filters join them) and decides from those scores alone (the
ledger holds every score, so a threshold can move without scoring again; `select` does not re-decide
interleaved runs yet).

Defaults are the published ones, and each filter says where from:

- OBELICS (huggingface/OBELICS @ 0fca7ba, `obelics/configs/config_filter_web_documents.yaml`, the
  `*_doc_level_*` keys; the functions are `FilteringFunctions` in `obelics/processors/web_document_filtering.py`
  and `SPECIAL_CHARACTERS` in `obelics/utils/filtering_utils.py`): 10..2000 words, 1..30 images,
  character 10-gram repetition <= 0.1, word 5-gram repetition <= 0.2, special characters <= 0.275,
  language probability >= 0.8.
- Gopher (Rae et al. 2021, Table A1), as datatrove 0.10 implements it (`GopherRepetitionFilter`,
  `GopherQualityFilter`): duplicate line/paragraph fractions, top and duplicated n-gram character
  fractions, >= 80 % of words with a letter.
- C4 (Raffel et al. 2020), as datatrove's `C4QualityFilter` implements it: lines naming javascript or a
  cookie/privacy/terms policy are boilerplate; "lorem ipsum" or a curly bracket drops the page.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from typing import Any

from .base import Filter, Params, register
from .caption_filters import boilerplate_ratio, identify_language


def document_text(record: Any) -> str:
    """The document's text: its non-empty segments joined by a blank line (OBELICS' `full_text`).

    Every filter here reads the text through this one helper, so they all judge the same string.
    Segments are made valid UTF-8 first (a lone surrogate from a badly decoded input becomes `?`;
    bytes are decoded with replacement), so no filter ever raises on a broken input."""
    parts = []
    for seg in getattr(record, "texts", None) or ():
        if isinstance(seg, (bytes, bytearray)):
            seg = bytes(seg).decode("utf-8", "replace")
        elif not isinstance(seg, str):
            continue
        seg = seg.encode("utf-8", "replace").decode("utf-8")
        if seg:
            parts.append(seg)
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------- OBELICS words

OBELICS_WHITESPACE = frozenset(
    " \u2009\u200a\u202f\u2005\u3000\u2002 \u2008\u2003\ufffc\x84\xa0",
)
"""`FilteringFunctions.standardize_whitespace`'s list: each becomes a plain space before anything is counted."""

_OBELICS_OTHER = (
    "\x92\u2009\x93\x97\u200a\x9d\x99\u202f\x96\u2005\x95\x91\x9c\u3000\u2002 \u2008\x98\x81\u2003\x82\ufffc"
    "\x83\x84\u2019\u201c\u201d\u2013\u30fc\u4e00\u25ac\u2026\u2726\ufffd\xad\xa3\u200b\u2022\u20ac\xab\xbb"
    "\xb0\xb7\u2550\xd7\u58eb\uff3e\u02d8\u21d3\u2193\u2191\u2190\u2192\uff08\uff09\xa7\u2033\u2032\xb4\xbf"
    "\u2212\xb1\u2208\ufeff\xa2\xf8\u201a\u201e\xbd\xbc\xbe\xb9\xb2\xb3\u2015\u2043\uff0c\u02cc\xb8\u2039"
    "\u203a\u02ba\u02c8\u02bb\xa6\u2010\u2800\u2030\x85\x85\u2011\u2264\u2265\u2016\u25c6\u25cf\u25a0\u25ba"
    "\u25bc\u25b2\u25b4\u2206\u25bb\xa1\u2605\u2606\u2731\u02d0\xba\u3002\xaf\u02dc\xa5\u026a\u2248\u2020"
    "\u4e0a\u30f3\uff1a\u223c\u2044\u30fb\u2661\u2713\u2295\u2024\uff0e\u22c5\xf7\uff11\u201f\uff1b\u060c"
    "\u3001\xa8\u093e\u09be\u0940\u094d\u0947\u25e6\u02da\u309c\u02bc\u2256\u02bc\xa4\u30c3\u30c4\u30b7\u2103"
    "\u221a\uff01\u3010\u3011\u203f\u221e\u27a4\uff5e\u03c0\u0647\u06e9\u261b\u20a8\u27a9\u263b\u0e51\u066a"
    "\u2665\u0131\u097d\u300a\u2018\xa9\ufd3f\u066c\uff1f\u25b7\u0413\u266b\u221f\u2122\xaa\u20aa\xae\u300c"
    "\u2014\u2756\u300d\ufd3e\u300b"
)
OBELICS_SPECIAL = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" + "0123456789" + " \t\n\r\x0b\x0c" + _OBELICS_OTHER)
"""OBELICS' `SPECIAL_CHARACTERS` less its emoji (string.punctuation + digits + whitespace + its list)."""


@functools.lru_cache(maxsize=4096)
def is_special(ch: str) -> bool:
    """One character of OBELICS' `SPECIAL_CHARACTERS`.

    OBELICS adds every emoji of the `emoji` package (< 2.0, not installed here); a single-code-point
    emoji is a Unicode "So" symbol (or a skin-tone modifier), so those categories stand in for it."""
    return ch in OBELICS_SPECIAL or unicodedata.category(ch) == "So" or "\U0001f3fb" <= ch <= "\U0001f3ff"


def obelics_text(text: str) -> str:
    """The text as OBELICS' document-level filters see it: its node level standardised whitespace first."""
    return "".join(" " if ch in OBELICS_WHITESPACE else ch for ch in text)


def _strip_special(word: str) -> str:
    start, end = 0, len(word)
    while start < end and is_special(word[start]):
        start += 1
    while end > start and is_special(word[end - 1]):
        end -= 1
    return word[start:end]


@functools.lru_cache(maxsize=16)
def obelics_words(text: str) -> tuple[str, ...]:
    """OBELICS' `get_words_from_text` on `obelics_text(text)`: split on space, newline and tab,
    lower-cased, special characters stripped from both ends, empty words left out."""
    words = (_strip_special(w.lower()) for w in re.split(" |\n|\t", obelics_text(text)) if w)
    return tuple(w for w in words if w)


def character_repetition_ratio(text: str, n: int = 10) -> float:
    """OBELICS' `compute_character_repetition_ratio`: the share of all character n-grams taken by the
    floor(sqrt(#distinct)) most frequent ones, counting only n-grams seen more than once.

    0 when the text has no n-gram; 1.0 for one n-gram repeated throughout ("ab" * 50 at n=10)."""
    freq = sorted(Counter(text[i : i + n] for i in range(len(text) - n + 1)).values(), reverse=True)
    if not freq:
        return 0.0
    once = sum(1 for f in freq if f == 1)
    top = min(math.isqrt(len(freq)), len(freq) - once)
    return sum(freq[:top]) / sum(freq)


def word_repetition_ratio(words: tuple[str, ...] | list[str], n: int = 5) -> float:
    """OBELICS' `compute_word_repetition_ratio` over OBELICS words: the share of word n-grams
    (space-joined) that occur more than once. 0 when there are fewer than n words."""
    freq = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1)).values()
    total = sum(freq)
    return sum(f for f in freq if f > 1) / total if total else 0.0


def special_character_ratio(text: str) -> float:
    """OBELICS' `compute_special_character_ratio`: share of all characters (whitespace included,
    and whitespace is special there) that are special characters; 0 for an empty text."""
    return sum(1 for ch in text if is_special(ch)) / len(text) if text else 0.0


# ----------------------------------------------------------------------------------------------- Gopher words

_TOKEN = re.compile(r"\w+|[^\w\s]+")


@functools.lru_cache(maxsize=16)
def gopher_words(text: str) -> tuple[str, ...]:
    """Words for the Gopher ratios: runs of word characters, and runs of other non-space characters as
    tokens of their own (datatrove uses spaCy's English tokenizer, which also keeps punctuation as tokens;
    spaCy is no dependency here). Case is kept, as spaCy keeps it."""
    return tuple(_TOKEN.findall(text))


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(elements, characters) repeating an earlier element: datatrove's `find_duplicates`."""
    seen: set[str] = set()
    elements = chars = 0
    for item in items:
        if item in seen:
            elements += 1
            chars += len(item)
        else:
            seen.add(item)
    return elements, chars


def top_ngram_chars(words: tuple[str, ...], n: int) -> int:
    """Characters of the most frequent word n-gram (space-joined) times its count: datatrove's
    `find_top_duplicate` on `get_n_grams`; 0 when there are fewer than n words."""
    counts = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return len(gram) * count


def duplicate_ngram_chars(words: tuple[str, ...], n: int) -> int:
    """Characters (words concatenated) in n-grams repeating an earlier one, skipping past each repeat
    so no word counts twice: datatrove's `find_all_duplicate`."""
    seen: set[str] = set()
    chars = idx = 0
    while idx < len(words) - n + 1:
        gram = "".join(words[idx : idx + n])
        if gram in seen:
            chars += len(gram)
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return chars


TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
GOPHER_SCORES = (
    "dup_para_frac",
    "dup_para_char_frac",
    "dup_line_frac",
    "dup_line_char_frac",
    *(f"top_{n}gram_char_frac" for n in TOP_NGRAMS),
    *(f"dup_{n}gram_char_frac" for n in DUP_NGRAMS),
)
"""In the order `GopherRepetitionFilter.filter` tests them."""


def gopher_repetition(text: str, words: tuple[str, ...]) -> dict[str, float]:
    """The fractions `GopherRepetitionFilter` compares with its thresholds, computed as it computes
    them (paragraphs split at 2+ newlines of the stripped text, lines at 1+ newlines, characters over
    `len(text)`); all 0 for an empty text (datatrove drops those as `empty`; here `doc_length` does).
    A top n-gram fraction can exceed 1 on a text without spaces: its n-grams are joined by spaces."""
    if not text:
        return dict.fromkeys(GOPHER_SCORES, 0.0)
    out: dict[str, float] = {}
    for unit, parts in (("para", re.split(r"\n{2,}", text.strip())), ("line", re.split("\n+", text))):
        dups, chars = find_duplicates(parts)
        out[f"dup_{unit}_frac"] = dups / len(parts)
        out[f"dup_{unit}_char_frac"] = chars / len(text)
    for n in TOP_NGRAMS:
        out[f"top_{n}gram_char_frac"] = top_ngram_chars(words, n) / len(text)
    for n in DUP_NGRAMS:
        out[f"dup_{n}gram_char_frac"] = duplicate_ngram_chars(words, n) / len(text)
    return out


# ----------------------------------------------------------------------------------------------- filters


def _outside(value: float, low: float | None, high: float | None) -> int:
    """-1 below `low`, 1 above `high`, 0 inside (None: no bound)."""
    if low is not None and value < low:
        return -1
    if high is not None and value > high:
        return 1
    return 0


@register
class DocLength(Filter):
    """Drop documents with too few or too many words (OBELICS: 10..2000) or characters (no bound by default).

    Words are OBELICS words (`obelics_words`); characters are those of `document_text`."""

    name = "doc_length"
    kinds = ("document",)
    reasons = ("doc_too_short", "doc_too_long")
    scores = ("doc_words", "doc_chars")

    class Params(Params):
        min_words: int | None = 10
        max_words: int | None = 2000
        min_chars: int | None = None
        max_chars: int | None = None

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        text = document_text(record)
        return {"doc_words": float(len(obelics_words(text))), "doc_chars": float(len(text))}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        p = self.params
        side = _outside(scores["doc_words"], p.min_words, p.max_words) or _outside(
            scores["doc_chars"], p.min_chars, p.max_chars
        )
        return {-1: "doc_too_short", 1: "doc_too_long"}.get(side)


@register
class DocRepetition(Filter):
    """Drop documents repeating themselves: OBELICS' character and word repetition ratios.

    OBELICS' document level: character 10-grams, max 0.1; word 5-grams, max 0.2 (the n are scoring
    parameters: a run re-decided with another n needs its scores recomputed)."""

    name = "doc_repetition"
    kinds = ("document",)
    reasons = ("doc_char_repetition", "doc_word_repetition")
    scores = ("char_repetition_ratio", "word_repetition_ratio")

    class Params(Params):
        char_repetition_length: int = 10
        max_char_repetition_ratio: float | None = 0.1
        word_repetition_length: int = 5
        max_word_repetition_ratio: float | None = 0.2

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        text = document_text(record)
        p = self.params
        return {
            "char_repetition_ratio": character_repetition_ratio(obelics_text(text), p.char_repetition_length),
            "word_repetition_ratio": word_repetition_ratio(obelics_words(text), p.word_repetition_length),
        }, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        p = self.params
        if _outside(scores["char_repetition_ratio"], None, p.max_char_repetition_ratio) > 0:
            return "doc_char_repetition"
        if _outside(scores["word_repetition_ratio"], None, p.max_word_repetition_ratio) > 0:
            return "doc_word_repetition"
        return None


def _gopher_reason(score: str) -> str:
    if score.startswith("top_"):
        return "gopher_top_ngram"
    return "gopher_dup_ngram" if "gram" in score else "gopher_dup_lines"


@register
class GopherRepetition(Filter):
    """Drop documents whose lines, paragraphs or word n-grams repeat (Gopher, Table A1).

    The thresholds are datatrove's `GopherRepetitionFilter` defaults (Gopher's Table A1); a threshold
    of None (or 0) turns that test off. A document is dropped when a fraction exceeds its threshold."""

    name = "gopher_repetition"
    kinds = ("document",)
    reasons = ("gopher_dup_lines", "gopher_top_ngram", "gopher_dup_ngram")
    scores = GOPHER_SCORES

    class Params(Params):
        max_dup_para_frac: float | None = 0.3
        max_dup_para_char_frac: float | None = 0.2
        max_dup_line_frac: float | None = 0.3
        max_dup_line_char_frac: float | None = 0.2
        max_top_2gram_char_frac: float | None = 0.20
        max_top_3gram_char_frac: float | None = 0.18
        max_top_4gram_char_frac: float | None = 0.16
        max_dup_5gram_char_frac: float | None = 0.15
        max_dup_6gram_char_frac: float | None = 0.14
        max_dup_7gram_char_frac: float | None = 0.13
        max_dup_8gram_char_frac: float | None = 0.12
        max_dup_9gram_char_frac: float | None = 0.11
        max_dup_10gram_char_frac: float | None = 0.10

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        text = document_text(record)
        return gopher_repetition(text, gopher_words(text)), {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        for name in GOPHER_SCORES:
            limit = getattr(self.params, f"max_{name}")
            if limit and scores[name] > limit:
                return _gopher_reason(name)
        return None


# ----------------------------------------------------------------------------------------------- boilerplate

C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
"""datatrove's `c4_filters.POLICY_SUBSTRINGS` (C4's reference code)."""

DOC_BOILERPLATE_PATTERNS = (
    r"\bclick here\b",
    r"\ball rights reserved\b",
    r"^(?:\xa9|\(c\)|copyright\b)",
    r"^(?:skip to (?:main )?content|back to top|read more|continue reading|share (?:this|on)\b|follow us"
    r"|subscribe\b|sign (?:in|up)\b|log ?in\b|leave a (?:comment|reply)|(?:previous|next) (?:post|page|article)"
    r"|posted (?:by|in|on)\b|tags?:|categories:)",
    r"^(?:[^|\xbb\u203a\u2022\xb7]{1,30}[|\xbb\u203a\u2022\xb7]\s*){2,}[^|\xbb\u203a\u2022\xb7]{0,30}$",
)
"""Whole-line boilerplate of web pages besides C4's rules: calls to click, copyright footers,
navigation and sharing links, and menus (three or more short items between | >> > bullets)."""
_DOC_BOILERPLATE = re.compile("|".join(f"(?:{p})" for p in DOC_BOILERPLATE_PATTERNS), re.IGNORECASE)
MAX_BOILERPLATE_LINE_WORDS = 20
"""A line longer than this is text that mentions a footer phrase, not a footer (C4's own rules aside)."""


def c4_line_rule(line: str) -> str:
    """Which of C4's rules (datatrove's `C4QualityFilter` order) a stripped line meets: `lorem_ipsum`
    and `curly_bracket` drop the page, `javascript` and `policy` drop the line; '' for none."""
    low = line.lower()
    if "lorem ipsum" in low:
        return "lorem_ipsum"
    if "javascript" in low:
        return "javascript"
    if "{" in line:
        return "curly_bracket"
    if any(p in low for p in C4_POLICY):
        return "policy"
    return ""


def is_boilerplate_line(line: str) -> bool:
    """A stripped line C4 would drop, or a short one that is a footer, menu or link, or that the caption
    boilerplate patterns (URLs, file names, stock-photo phrases) cover for more than half."""
    if c4_line_rule(line):
        return True
    if len(line.split()) > MAX_BOILERPLATE_LINE_WORDS:
        return False
    return bool(_DOC_BOILERPLATE.search(line)) or boilerplate_ratio(line) > 0.5


def boilerplate_scores(text: str) -> dict[str, float]:
    """Share of the non-space characters in boilerplate lines, and C4's two page-level flags (0/1)."""
    total = covered = 0
    rules: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        size = sum(1 for ch in line if not ch.isspace())
        total += size
        rules.add(c4_line_rule(line))
        if size and is_boilerplate_line(line):
            covered += size
    return {
        "doc_boilerplate_ratio": covered / total if total else 0.0,
        "lorem_ipsum": float("lorem_ipsum" in rules),
        "curly_bracket": float("curly_bracket" in rules),
    }


@register
class DocBoilerplate(Filter):
    """Drop pages that are mostly boilerplate lines, or that C4 drops whole ("lorem ipsum", a curly bracket).

    C4's page rules are on by default as in C4 (`drop_lorem_ipsum`, `drop_curly_bracket`); the share of
    boilerplate lines has no published cutoff: `max_ratio` 0.5 (more than half the text) is ours."""

    name = "doc_boilerplate"
    kinds = ("document",)
    reasons = ("doc_boilerplate", "doc_lorem_ipsum", "doc_curly_bracket")
    scores = ("doc_boilerplate_ratio", "lorem_ipsum", "curly_bracket")

    class Params(Params):
        max_ratio: float | None = 0.5
        drop_lorem_ipsum: bool = True
        drop_curly_bracket: bool = True

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return boilerplate_scores(document_text(record)), {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        p = self.params
        if p.drop_lorem_ipsum and scores["lorem_ipsum"]:
            return "doc_lorem_ipsum"
        if p.drop_curly_bracket and scores["curly_bracket"]:
            return "doc_curly_bracket"
        if _outside(scores["doc_boilerplate_ratio"], None, p.max_ratio) > 0:
            return "doc_boilerplate"
        return None


# ----------------------------------------------------------------------------------------------- language


@register
class DocLanguage(Filter):
    """Keep documents in `allowed` languages (ISO 639-1) identified with at least `min_prob`.

    The caption corpus' identifier (py3langid, normalised probabilities) on the whole text with newlines
    as spaces (OBELICS does the same before fastText); 0.8 is OBELICS' `lang_id_doc_level_min_cutoff`."""

    name = "doc_language"
    kinds = ("document",)
    reasons = ("doc_language",)
    scores = ("doc_lang_prob",)
    labels = ("doc_lang",)

    class Params(Params):
        allowed: tuple[str, ...] = ("en",)
        min_prob: float = 0.8

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        lang, prob = identify_language(document_text(record).replace("\n", " "))
        return {"doc_lang_prob": prob}, {"doc_lang": lang}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        lang = labels.get("doc_lang", "")
        if not lang:
            return None  # no text to identify: doc_length speaks for empty documents
        ok = lang in self.params.allowed and scores["doc_lang_prob"] >= self.params.min_prob
        return None if ok else "doc_language"


# ----------------------------------------------------------------------------------------------- non-alpha


def non_alpha_char_ratio(text: str) -> float:
    """Share of the non-space characters that are not letters (digits, punctuation, symbols); 0 if none."""
    chars = [ch for ch in text if not ch.isspace()]
    return sum(1 for ch in chars if not ch.isalpha()) / len(chars) if chars else 0.0


def alpha_word_ratio(words: tuple[str, ...] | list[str]) -> float:
    """Share of words with at least one letter, as `GopherQualityFilter` computes it (its
    `max_non_alpha_words_ratio` test: drop below 0.8); 1.0 when there are no words (nothing fails)."""
    return sum(any(c.isalpha() for c in w) for w in words) / len(words) if words else 1.0


@register
class DocNonAlpha(Filter):
    """Drop documents that are mostly not words: symbol, digit or special-character soup.

    `alpha_word_ratio` is Gopher's (>= 0.8 of the words hold a letter: 1 minus the share of words
    without one); `special_char_ratio` is OBELICS' (<= 0.275, whitespace counts as special there);
    `non_alpha_char_ratio` (non-space characters that are no letter) has no published cutoff: off."""

    name = "doc_non_alpha"
    kinds = ("document",)
    reasons = ("doc_non_alpha_words", "doc_special_chars", "doc_non_alpha_chars")
    scores = ("alpha_word_ratio", "special_char_ratio", "non_alpha_char_ratio")

    class Params(Params):
        min_alpha_word_ratio: float | None = 0.8
        max_special_char_ratio: float | None = 0.275
        max_non_alpha_char_ratio: float | None = None

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        text = document_text(record)
        return {
            "alpha_word_ratio": alpha_word_ratio(gopher_words(text)),
            "special_char_ratio": special_character_ratio(obelics_text(text)),
            "non_alpha_char_ratio": non_alpha_char_ratio(text),
        }, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        p = self.params
        if _outside(scores["alpha_word_ratio"], p.min_alpha_word_ratio, None) < 0:
            return "doc_non_alpha_words"
        if _outside(scores["special_char_ratio"], None, p.max_special_char_ratio) > 0:
            return "doc_special_chars"
        if _outside(scores["non_alpha_char_ratio"], None, p.max_non_alpha_char_ratio) > 0:
            return "doc_non_alpha_chars"
        return None


# ----------------------------------------------------------------------------------------------- images


@register
class ImageCount(Filter):
    """Drop documents holding too few or too many images (OBELICS: 1..30).

    Counted over the slots still in the document when it is scored (the input's count when it carries
    none); the count after dedup and alignment is the recipe's `min_images` check."""

    name = "image_count"
    kinds = ("document",)
    reasons = ("doc_too_few_images", "doc_too_many_images")
    scores = ("doc_images",)

    class Params(Params):
        min: int | None = None
        """None: the recipe's `min_images` (over the images kept at the end) is the lower bound."""
        max: int | None = 30

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        return {"doc_images": float(images_left(record))}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        side = _outside(scores["doc_images"], self.params.min, self.params.max)
        return {-1: "doc_too_few_images", 1: "doc_too_many_images"}.get(side)


def images_left(record: Any) -> int:
    """The images still in the document when it is scored (after the image filters that need no model:
    icons `min_side` dropped do not count, as in OBELICS, whose image filters run first); the input's
    count for a document that carries no slots."""
    slots = getattr(record, "slots", None)
    if slots is not None:
        return sum(1 for s in slots if not s.fate.final)
    return max(int(record.images or 0), 0)


def images_per_100_words(images: int, words: int) -> float:
    """Images per 100 OBELICS words; a document without words counts as one word (so 2 images and no
    text give 200: above any sensible maximum, and finite, which JSON samples need); 0 without images."""
    return 100.0 * max(images, 0) / max(words, 1)


@register
class ImagesPerWords(Filter):
    """Drop documents whose images are too sparse or too dense for their text (images per 100 words).

    No published cutoff: both bounds are off by default (OBELICS' 1..30 images and 10..2000 words
    allow 0.05..300); the recipe sets them."""

    name = "images_per_words"
    kinds = ("document",)
    reasons = ("doc_images_too_sparse", "doc_images_too_dense")
    scores = ("images_per_100_words",)

    class Params(Params):
        min: float | None = None
        max: float | None = None

    def score(self, record: Any) -> tuple[dict[str, float], dict[str, str]]:
        words = len(obelics_words(document_text(record)))
        return {"images_per_100_words": images_per_100_words(images_left(record), words)}, {}

    def decide(self, scores: dict[str, float], labels: dict[str, str]) -> str | None:
        side = _outside(scores["images_per_100_words"], self.params.min, self.params.max)
        return {-1: "doc_images_too_sparse", 1: "doc_images_too_dense"}.get(side)
