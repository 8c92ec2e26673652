"""Near-duplicate text across the whole run: MinHash signatures, LSH bands, estimated-Jaccard decisions.

A document's text is normalised the way datatrove's `simplify_text` does it (lowercase, digits to 0,
punctuation to spaces, whitespace collapsed, diacritics stripped), cut into word n-grams (shingles)
and summarised by a datasketch MinHash signature. Like the pHash path in `stages/dedup.py`, only
small `DedupKey`s travel: each key is emitted once per LSH band (`band_keys`), keys sharing a band
value meet in one group, and `near_text_duplicates` decides inside the group. A band collision is
only a candidate: a member is dropped when a better-ranked member's signature agrees with it on at
least `threshold` of the positions (the estimated Jaccard of their shingle sets), and it points at
the best such member, so the choice is the same whatever the worker layout.

The product code needs datasketch and numpy only; datatrove is what the tests compare against.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import model_validator

from mmcurate.schemas import DedupKey

from .base import Params
from .dedup import Duplicate

SCHEME = "affine32"
"""datasketch's permutation scheme, named explicitly: 2.0 made it the default, and 1.x (only
"legacy") gives other values for the same text, so signatures never change silently with the
library; needs datasketch >= 2.0."""

REASON = "duplicate_text"

_PUNCTUATION = (
    "!/\u2014\u201d:\uff05\uff11\u3008&(\u3001\u2501\\\u3010#%\u300c\u300d\uff0c\u3011\uff1b+^]~\u201c\u300a\u201e';\u2019{|\u2236\xb4"
    '[=-`*\uff0e\uff08\u2013\uff1f\uff01\uff1a$\uff5e\xab\u3009,><\u300b)?\uff09\u3002\u2026@_."}\u25ba\xbb'
    + "".join(chr(x) for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))
)
"""datatrove 0.10 `utils.text.PUNCTUATION` (Apache-2.0), character for character: each becomes a space."""
_PUNCTUATION_RE = re.compile(f"[{re.escape(_PUNCTUATION)}]")
"""One character class: `sub` is ~9x faster than `str.translate` with a table (the same mapping)."""
_NUMBERS = re.compile(r"\d+(?:[.,\u060c\u066b\u2396\u2397\u2398]\d+)?")
"""datatrove's `\\p{Nd}+([.,...]\\p{Nd}+)?` with the stdlib: `\\d` on str is Unicode category Nd as this
Python's unicodedata knows it (3.11: Unicode 14; the `regex` module may know newer digits)."""
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_BLOCK = 1 << 18
"""Signature pairs compared at once in `near_text_duplicates`: a 512 KB count matrix stays in cache."""


class MinHashParams(Params):
    """MinHash LSH over word 5-grams with datatrove's `MinhashConfig` defaults: 14 bands of 8 rows
    (112 permutations), seed 1, its `simplify_text` normalisation. datatrove drops every band
    collision (an S-curve around (1/14)^(1/8) = 0.72); here a collision is a candidate that must also
    reach `threshold` estimated Jaccard, so pairs near 0.5 that collide by chance (about 5% of them
    with 14x8) are not dropped. The signatures are datasketch's (SHA-1 of each shingle, its seeded
    permutations), not datatrove's (xxhash64, its own permutations): the same estimate, other numbers."""

    enabled: bool = True
    """Drop near-duplicate texts across the run (`duplicate_text`); off: no signatures are computed."""
    shingle: int = 5
    """Words per shingle (datatrove `n_grams`)."""
    num_perm: int = 112
    """Permutations in a signature (datatrove: num_buckets x hashes_per_bucket = 14 x 8)."""
    bands: int = 14
    """LSH bands; each holds num_perm // bands rows (datatrove `num_buckets`)."""
    threshold: float = 0.8
    """Estimated Jaccard (share of equal signature positions) at or above which two texts are near
    duplicates; LSH finds a pair at 0.8 with probability 1-(1-0.8^8)^14 = 0.92 at the defaults."""
    seed: int = 1
    """Seed of the permutations (datatrove's and datasketch's default); every worker must share it."""

    @model_validator(mode="after")
    def _check(self) -> MinHashParams:
        if not 1 <= self.shingle <= 64:
            raise ValueError(f"text_dedup.shingle must be within 1..64 words, got {self.shingle}")
        if not 1 <= self.num_perm <= 4096:
            raise ValueError(f"text_dedup.num_perm must be within 1..4096, got {self.num_perm}")
        if not 1 <= self.bands <= self.num_perm or self.num_perm % self.bands:
            raise ValueError(
                f"text_dedup.bands must divide text_dedup.num_perm ({self.num_perm}) into bands of equal rows, "
                f"got {self.bands}"
            )
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"text_dedup.threshold must be within (0, 1], got {self.threshold}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"text_dedup.seed must be within 0..2**32-1, got {self.seed}")
        return self

    @property
    def rows(self) -> int:
        return self.num_perm // self.bands


def normalise(text: str) -> str:
    """datatrove's `simplify_text` at its default `TextNormConfig`, step by step in its order, so near
    duplicates that differ in case, numbers, punctuation, spacing or accents share their shingles."""
    text = _NUMBERS.sub("0", text.lower())
    text = " ".join(_PUNCTUATION_RE.sub(" ", text).split())  # split() is `\s+` and strip(): both str.isspace
    if not text.isascii():  # ASCII has no combining marks and is its own NFD
        text = _NON_ASCII.sub(_strip_marks, unicodedata.normalize("NFD", text))
    return text.strip()


def _strip_marks(run: re.Match[str]) -> str:
    return "".join(c for c in run.group() if unicodedata.category(c) != "Mn")


def shingles(text: str, n: int) -> set[bytes]:
    """The word n-grams of the normalised text (UTF-8, words joined by one space). A text of fewer than
    n words is one shingle of all its words, so short texts still get a signature (datatrove gives
    them none); an empty text has none. Words are split on whitespace (datatrove uses its language's
    word tokenizer: the same words for space-separated scripts once punctuation is gone)."""
    words = normalise(text).split()
    if len(words) <= n:
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> np.ndarray:
    """datasketch draws the permutations from a seeded RandomState per MinHash; draw them once."""
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations


def signature(text: str, params: MinHashParams) -> tuple[int, ...] | None:
    """The datasketch MinHash of the text's shingles (SHA-1 based, seeded permutations: the same in
    every process and on every machine), or None when the text has no words."""
    from datasketch import MinHash

    grams = shingles(text, params.shingle)
    if not grams:
        return None
    m = MinHash(
        num_perm=params.num_perm,
        seed=params.seed,
        scheme=SCHEME,
        permutations=_permutations(params.num_perm, params.seed),
    )
    m.update_batch(grams)
    return tuple(m.hashvalues.tolist())


def band_keys(sig: Sequence[int], params: MinHashParams) -> list[tuple[int, int]]:
    """(band, 64-bit BLAKE2b of the band's values) for each band: two signatures share a key exactly
    when they agree on every row of that band (a false collision has probability 2^-64)."""
    if len(sig) != params.num_perm:
        raise ValueError(f"a signature of {len(sig)} values, but text_dedup.num_perm is {params.num_perm}")
    rows = np.asarray(sig, dtype="<u8").reshape(params.bands, params.rows)
    return [
        (i, int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little"))
        for i, row in enumerate(rows)
    ]


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """Estimated Jaccard of two shingle sets: the share of positions where their signatures agree."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"signatures of {len(a)} and {len(b)} values cannot be compared")
    return float(np.mean(np.asarray(a, dtype=np.uint64) == np.asarray(b, dtype=np.uint64)))


def _agreement_needed(threshold: float, p: int) -> int:
    """The fewest equal positions k with k / p >= threshold, the float comparison `jaccard` makes."""
    k = min(p, math.ceil(threshold * p))
    while k > 0 and (k - 1) / p >= threshold:
        k -= 1
    while k < p and k / p < threshold:
        k += 1
    return k


def _earliest_similar(sigs: np.ndarray, threshold: float) -> np.ndarray:
    """For each row u, the first row v <= u whose agreement with u reaches the threshold (u itself at
    worst). Blocks of rows are compared with all earlier rows one signature position at a time: a 2-D
    count matrix in cache is ~5x faster than one 3-D comparison, so a band of 10,000 distinct
    near-identical signatures takes seconds, not minutes."""
    n, p = sigs.shape
    cols = np.ascontiguousarray(sigs.T.astype(np.uint32 if int(sigs.max()) < 2**32 else np.uint64))
    need = _agreement_needed(threshold, p)
    out = np.empty(n, dtype=np.int64)
    step = max(1, _BLOCK // n)
    for s in range(0, n, step):
        e = min(n, s + step)
        agree = np.zeros((e - s, e), dtype=np.uint16 if p < 2**16 else np.uint32)
        for col in cols:
            agree += col[s:e, None] == col[None, :e]
        out[s:e] = np.argmax(agree >= need, axis=1)  # row u agrees fully with itself
    return out


def near_text_duplicates(group: Iterable[DedupKey], threshold: float) -> list[Duplicate]:
    """For each member with a better-ranked member of estimated Jaccard >= threshold, the best such
    member (the contract of `dedup.near_duplicates`). Members with equal signatures are compared once."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"text_dedup.threshold must be within (0, 1], got {threshold}")
    members = sorted(k for k in group if k.sig)
    if len(members) < 2:
        return []
    lengths = {len(m.sig) for m in members}  # type: ignore[arg-type]
    if len(lengths) > 1:
        raise ValueError(f"signatures of different lengths {sorted(lengths)} in one band group")
    sigs = np.array([m.sig for m in members], dtype=np.uint64)
    uniq, first, inverse = np.unique(sigs, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # distinct signatures in rank order of their best member
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    best = first[order][_earliest_similar(uniq[order], threshold)]  # per distinct signature
    out = []
    for j, b in enumerate(best[position[inverse.reshape(-1)]].tolist()):
        if b < j:
            rep = members[b]
            out.append(Duplicate(members[j].uid, members[j].unit, REASON, rep.id, rep.rank))
    return out
