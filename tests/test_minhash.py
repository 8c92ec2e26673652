"""MinHash near-duplicate text: datatrove's normalisation, datasketch's MinHash and LSH, the decision contract."""

# ruff: noqa: RUF001  (full-width, CJK and typographic punctuation are test inputs)

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.text import PUNCTUATION, simplify_text
from pydantic import ValidationError

from mmcurate.schemas import DedupKey, DocumentRecord, Source
from mmcurate.stages import minhash as mh
from mmcurate.stages.dedup import Duplicate, best_duplicate
from mmcurate.stages.minhash import (
    MinHashParams,
    band_keys,
    jaccard,
    near_text_duplicates,
    normalise,
    shingles,
    signature,
)

P = MinHashParams()

WRITTEN = [
    "Café au lait, crème brûlée & naïve façades — 3.14159 % of Zoë's résumé!",
    "The 2nd of March, 1,234.5 km... Was it 10:30? (No: 11:45.)   Tabs\tand\nnewlines\r\n  too.",
    "東京は日本の首都です。人口は約１４００万人、面積は２,１９４km²です！",
    "北京欢迎你，《红楼梦》是一部小说；“引号”和「括号」【方括号】。",
    "Ｆｕｌｌｗｉｄｔｈ　ＡＳＣＩＩ：１２３，４５６．７８９！",
    "Αθήνα — Ελληνικά με τόνους· Ελλάδα; русский текст: «ёжик», 42 рубля.",
    "العربية ١٢٣٫٤٥ والأرقام ٦٧٨، नमस्ते दुनिया १२३४ ৫৬৭ ۸۹",
    "emoji 🙂 and symbols ©®™ ±×÷ ½ ¼ ² ³ ► » « ´ ` ~ ^ | \\ / @ # $ * _ + = < > [ ] { }",
    "don’t “smart quotes” ‘single’ „low“ — en–dash … ellipsis • bullet ・ katakana dot",
    "Ünïcödé ÀÉÎÕÜ ǅ ß ẞ ﬁ ligature, combining e\u0301 and n\u0303, Hangul 한국어 텍스트 123",
]


def words(rng: random.Random, n: int) -> list[str]:
    """n random lowercase words of 2..9 letters: a vocabulary large enough that unrelated texts share
    (almost) no 5-word shingle."""
    return ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(n)]


def edit(rng: random.Random, doc: list[str], changes: int) -> list[str]:
    out = list(doc)
    for i in rng.sample(range(len(out)), changes):
        out[i] = out[i] + "x"
    return out


def true_jaccard(a: str, b: str, n: int = P.shingle) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb)


def corpus(seed: int = 0) -> tuple[list[str], dict[int, int]]:
    """300 documents of 300-500 words: originals, planted near duplicates of earlier originals (one or
    two words changed: true Jaccard >= 0.9; or case and punctuation changed: the same shingles) and
    unrelated texts. Returns the texts and planted index -> the original it copies."""
    rng = random.Random(seed)
    texts: list[str] = []
    planted: dict[int, int] = {}
    originals: list[int] = []
    for _ in range(300):
        roll = rng.random()
        if originals and roll < 0.25:
            src = rng.choice(originals)
            planted[len(texts)] = src
            texts.append(" ".join(edit(rng, texts[src].split(), rng.randint(1, 2))))
        elif originals and roll < 0.3:
            src = rng.choice(originals)
            planted[len(texts)] = src
            texts.append(texts[src].upper().replace(" ", ",  ", 5))
        else:
            originals.append(len(texts))
            texts.append(" ".join(words(rng, rng.randint(300, 500))))
    return texts, planted


def key(i: int, sig: tuple[int, ...] | None, unit: int = 0) -> DedupKey:
    return DedupKey((unit, i), f"{unit:06d}:{i:09d}", f"id-{unit}-{i}", unit, f"doc:{unit}-{i}", None, sig)


def run_dedup(keys: list[DedupKey], params: MinHashParams = P) -> dict[str, Duplicate]:
    """The finish path without Beam: every key once per band, each band group decided, best per uid."""
    bands: dict[tuple[int, int], list[DedupKey]] = defaultdict(list)
    for k in keys:
        if k.sig is not None:
            for band in band_keys(k.sig, params):
                bands[band].append(k)
    per_uid: dict[str, list[Duplicate]] = defaultdict(list)
    for group in bands.values():
        for d in near_text_duplicates(group, params.threshold):
            per_uid[d.uid].append(d)
    return {uid: best_duplicate(c) for uid, c in per_uid.items()}


# ----------------------------------------------------------------------------------------------- params


def test_defaults_are_datatrove_minhash_config() -> None:
    cfg = MinhashConfig()
    assert (P.shingle, P.bands, P.rows, P.seed) == (cfg.n_grams, cfg.num_buckets, cfg.hashes_per_bucket, cfg.seed)
    assert P.num_perm == cfg.num_buckets * cfg.hashes_per_bucket


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"bands": 13}, "text_dedup.bands"),
        ({"num_perm": 100, "bands": 14}, "text_dedup.bands"),
        ({"bands": 0}, "text_dedup.bands"),
        ({"num_perm": 0}, "text_dedup.num_perm"),
        ({"shingle": 0}, "text_dedup.shingle"),
        ({"threshold": 0.0}, "text_dedup.threshold"),
        ({"threshold": 1.5}, "text_dedup.threshold"),
        ({"seed": -1}, "text_dedup.seed"),
    ],
)
def test_params_refuse_bad_settings_naming_the_key(kwargs: dict, names: str) -> None:
    with pytest.raises(ValidationError, match=names):
        MinHashParams(**kwargs)


def test_params_refuse_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        MinHashParams(num_buckets=14)  # datatrove's name is not ours


# ----------------------------------------------------------------------------------------------- normalisation


def peer_paragraphs(peer: Path) -> list[str]:
    out: list[str] = []
    mmc4 = peer / "interleaved" / "mmc4_readme_example.jsonl"
    for line in mmc4.read_text(encoding="utf-8").splitlines():
        out += json.loads(line)["text_list"]
    for name in ("demo-dataset-images.jsonl", "demo-dataset-videos.jsonl"):
        for line in (peer / "data_juicer" / "demos" / name).read_text(encoding="utf-8").splitlines():
            out.append(json.loads(line)["text"])
    for line in (peer / "grounding" / "odvg_examples_open_groundingdino_readme.jsonl").read_text().splitlines():
        out.append(json.dumps(json.loads(line), ensure_ascii=False))  # captions, phrases, digits, brackets
    return out


def test_normalisation_equals_datatrove_on_real_paragraphs(peer_data: Path) -> None:
    paragraphs = peer_paragraphs(peer_data)
    assert len(paragraphs) >= 10
    for text in paragraphs:
        assert normalise(text) == simplify_text(text), text
    assert normalise(paragraphs[0]) != paragraphs[0]  # the MMC4 sentence has case and punctuation to fold


def test_normalisation_equals_datatrove_on_written_paragraphs() -> None:
    for text in [*WRITTEN, "", "   ", "...", "a", "A-B", " \u0301 x \u0301 "]:
        assert normalise(text) == simplify_text(text), text


def test_normalisation_per_character() -> None:
    """Every punctuation character datatrove folds, every whitespace and combining mark, and every
    decimal digit this Python knows (a digit Unicode added after its unicodedata version is the one
    documented difference)."""
    assert mh._PUNCTUATION == PUNCTUATION
    every = [chr(c) for c in range(sys.maxunicode + 1)]
    digits = [c for c in every if unicodedata.category(c) == "Nd"]
    marks = [c for c in every if unicodedata.category(c) == "Mn"]
    spaces = [c for c in every if c.isspace()]
    assert len(digits) >= 600 and len(marks) >= 1800 and len(spaces) >= 25
    for c in list(PUNCTUATION) + digits + marks + spaces:
        for text in (f"a{c}b", f"{c}{c}.{c}x", f"1,{c}"):
            assert normalise(text) == simplify_text(text), ascii(text)


def test_shingles_are_word_ngrams_of_the_normalised_text() -> None:
    text = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima"
    grams = shingles(text, 5)
    assert len(grams) == 12 - 5 + 1
    assert b"alpha bravo charlie delta echo" in grams and b"hotel india juliet kilo lima" in grams
    assert shingles("Alpha, BRAVO;  charlie -- delta (echo) foxtrot golf hotel india juliet kilo lima!", 5) == grams
    assert shingles("page 12 of 30", 5) == shingles("Page 7 of 1,000", 5) == {b"page 0 of 0"}
    assert shingles("Only three words.", 5) == {b"only three words"}
    assert shingles("one two three four five", 5) == {b"one two three four five"}
    assert shingles("", 5) == set() and shingles(" ... !!! ", 5) == set()
    assert shingles("Crème brûlée", 1) == {b"creme", b"brulee"}


# ----------------------------------------------------------------------------------------------- signatures


def test_signature_is_datasketch_minhash_of_the_shingles() -> None:
    text = WRITTEN[0] * 5
    ref = MinHash(num_perm=P.num_perm, seed=P.seed)  # datasketch's own defaults otherwise
    ref.update_batch(shingles(text, P.shingle))
    assert signature(text, P) == tuple(int(v) for v in ref.hashvalues)
    assert len(signature(text, P) or ()) == P.num_perm
    assert signature("", P) is None and signature(" -- ", P) is None
    other = MinHashParams(seed=7, num_perm=64, bands=16)
    assert signature(text, other) != signature(text, P)[:64]


def test_signature_and_bands_are_the_same_in_another_process() -> None:
    text = "\n".join(WRITTEN)
    here = [list(signature(text, P) or ()), [list(b) for b in band_keys(signature(text, P) or (), P)]]
    code = (
        "import json, sys; from mmcurate.stages.minhash import MinHashParams, signature, band_keys; "
        "p = MinHashParams(); s = signature(sys.stdin.read(), p); "
        "print(json.dumps([list(s), [list(b) for b in band_keys(s, p)]]))"
    )
    for hashseed in ("12345",):
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            encoding="utf-8",
            env={"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"},
        )
        assert json.loads(out.stdout) == here


def test_band_keys_are_the_rows_of_each_band() -> None:
    rng = np.random.default_rng(0)
    a = tuple(int(v) for v in rng.integers(0, 2**32, P.num_perm))
    keys = band_keys(a, P)
    assert [b for b, _ in keys] == list(range(P.bands))
    assert all(0 <= v < 2**64 for _, v in keys)
    assert len({v for _, v in keys}) == P.bands
    for band in range(P.bands):  # change one row of one band: only that band's key changes
        b = list(a)
        b[band * P.rows + P.rows - 1] ^= 1
        changed = [i for i, (x, y) in enumerate(zip(keys, band_keys(b, P), strict=True)) if x != y]
        assert changed == [band]
    with pytest.raises(ValueError, match="num_perm"):
        band_keys(a[:-1], P)


def test_band_candidates_equal_datasketch_lsh() -> None:
    texts, planted = corpus()
    sigs = [signature(t, P) for t in texts]
    lsh = MinHashLSH(num_perm=P.num_perm, params=(P.bands, P.rows))
    for i, t in enumerate(texts):
        m = MinHash(num_perm=P.num_perm, seed=P.seed)
        m.update_batch(shingles(t, P.shingle))
        assert tuple(m.hashvalues.tolist()) == sigs[i]
        lsh.insert(i, m)
    theirs = set()
    for i, t in enumerate(texts):
        m = MinHash(num_perm=P.num_perm, seed=P.seed)
        m.update_batch(shingles(t, P.shingle))
        theirs |= {(min(i, j), max(i, j)) for j in lsh.query(m) if j != i}
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, s in enumerate(sigs):
        for band in band_keys(s or (), P):
            buckets[band].append(i)
    ours = {(a, b) for members in buckets.values() for a in members for b in members if a < b}
    assert ours == theirs
    planted_pairs = {(min(i, j), max(i, j)) for i, j in planted.items()}
    assert len(planted_pairs) > 50 and planted_pairs <= ours  # every planted copy is a candidate


# ----------------------------------------------------------------------------------------------- decisions


def test_edited_documents_are_duplicate_text_of_the_better_ranked_one() -> None:
    texts, planted = corpus(seed=1)
    keys = [key(i, signature(t, P), unit=i // 50) for i, t in enumerate(texts)]  # rank follows the index
    for copy, src in planted.items():
        assert true_jaccard(texts[copy], texts[src]) >= 0.9
    found = run_dedup(keys)
    # a copy's best-ranked near member is its original (copies come later); nothing else is near
    assert len(planted) >= 60
    assert {uid: d.duplicate_of for uid, d in found.items()} == {keys[c].uid: keys[s].id for c, s in planted.items()}
    for copy, src in planted.items():
        d = found[keys[copy].uid]
        assert (d.reason, d.unit, d.of_rank) == ("duplicate_text", keys[copy].unit, keys[src].rank)
        assert jaccard(keys[copy].sig, keys[src].sig) >= P.threshold  # type: ignore[arg-type]


def test_the_better_ranked_copy_is_kept_whichever_came_first() -> None:
    texts, planted = corpus(seed=2)
    copy, src = next(iter(planted.items()))
    keys = [key(copy, signature(texts[copy], P), unit=0), key(src, signature(texts[src], P), unit=1)]
    (d,) = run_dedup(keys).values()
    assert (d.uid, d.duplicate_of) == (keys[1].uid, keys[0].id)  # the later input ranks first (unit 0)


def test_unrelated_and_dissimilar_documents_are_kept() -> None:
    rng = random.Random(5)
    base = words(rng, 300)
    far = edit(rng, base, 60)  # a fifth of the words changed: true Jaccard far below 0.8
    texts = [" ".join(base), " ".join(far)] + [" ".join(words(rng, 300)) for _ in range(50)]
    assert true_jaccard(texts[0], texts[1]) < 0.5
    assert run_dedup([key(i, signature(t, P)) for i, t in enumerate(texts)]) == {}


def test_document_record_key_carries_the_signature() -> None:
    text = " ".join(words(random.Random(2), 300))
    docs = []
    for i, t in enumerate([text, " ".join(edit(random.Random(3), text.split(), 2))]):
        d = DocumentRecord(id=f"doc{i}", source=Source("memory:///d.jsonl", unit=4 - i, index=i), texts=[t])
        d.minhash = list(signature("\n".join(d.texts), P) or ())
        docs.append(d)
    keys = [d.dedup_key() for d in docs]
    assert all(k is not None and k.sig is not None and len(k.sig) == P.num_perm for k in keys)
    (d,) = run_dedup([k for k in keys if k]).values()
    assert (d.uid, d.duplicate_of) == (docs[0].uid, "doc1")  # unit 3 ranks before unit 4


def test_estimated_jaccard_is_within_the_minhash_bound_of_the_true_one() -> None:
    """Hoeffding: for k independent min-wise permutations, P(|estimate - J| >= eps) <= 2 exp(-2 k eps^2),
    so with a union bound over m pairs, eps = sqrt(ln(2 m / delta) / (2 k)) fails with probability <= delta.
    (datasketch's affine permutations are only approximately min-wise: its own benchmarks are empirical.)"""
    rng = random.Random(11)
    pairs = []
    for changes in range(0, 60, 2):
        doc = words(rng, 300)
        pairs.append((" ".join(doc), " ".join(edit(rng, doc, changes))))
    delta = 1e-4
    for params in (P, MinHashParams(num_perm=1024, bands=128)):
        eps = math.sqrt(math.log(2 * len(pairs) / delta) / (2 * params.num_perm))
        errors = []
        for a, b in pairs:
            est = jaccard(signature(a, params), signature(b, params))  # type: ignore[arg-type]
            errors.append(est - true_jaccard(a, b, params.shingle))
        assert max(map(abs, errors)) <= eps, (params.num_perm, eps, errors)
        assert abs(float(np.mean(errors))) <= 3 * 0.5 / math.sqrt(params.num_perm * len(pairs))  # no bias


def test_jaccard_is_the_share_of_equal_positions() -> None:
    assert jaccard((1, 2, 3, 4), (1, 2, 0, 0)) == 0.5
    assert jaccard((5,) * 8, (5,) * 8) == 1.0
    with pytest.raises(ValueError):
        jaccard((1, 2), (1, 2, 3))


def test_contract_best_ranked_member_whatever_the_order() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**32, 100)
    b = a.copy()
    b[:15] += 1  # 0.85 with a
    c = b.copy()
    c[15:30] += 1  # 0.85 with b, 0.70 with a
    d = rng.integers(0, 2**32, 100)  # unrelated
    sigs = [tuple(int(v) for v in s) for s in (a, b, c, d)]
    keys = [key(i, s) for i, s in enumerate(sigs)] + [key(9, None)]
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]):
        got = {x.uid: (x.duplicate_of, x.of_rank) for x in near_text_duplicates([keys[i] for i in order], 0.8)}
        assert got == {keys[1].uid: (keys[0].id, keys[0].rank), keys[2].uid: (keys[1].id, keys[1].rank)}
    got = {x.uid: x.duplicate_of for x in near_text_duplicates(keys, 0.7)}  # c now near a too: points at a
    assert got == {keys[1].uid: keys[0].id, keys[2].uid: keys[0].id}
    assert near_text_duplicates(keys[:1], 0.8) == [] and near_text_duplicates([], 0.8) == []
    with pytest.raises(ValueError, match="lengths"):
        near_text_duplicates([key(0, sigs[0]), key(1, sigs[1][:50])], 0.8)
    with pytest.raises(ValueError, match="threshold"):
        near_text_duplicates(keys, 1.5)


def reference(group: list[DedupKey], threshold: float) -> list[Duplicate]:
    """The contract pair by pair, in plain Python."""
    members = sorted(k for k in group if k.sig)
    out = []
    for j, m in enumerate(members):
        for i in range(j):
            if jaccard(members[i].sig, m.sig) >= threshold:  # type: ignore[arg-type]
                out.append(Duplicate(m.uid, m.unit, "duplicate_text", members[i].id, members[i].rank))
                break
    return out


@pytest.mark.parametrize("block", [mh._BLOCK, 1])
def test_vectorised_decision_equals_pairwise_reference(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups with exact repeats, near variants at several distances, and noise; `block` 1 compares one
    row at a time, the default whole groups at once."""
    monkeypatch.setattr(mh, "_BLOCK", block)
    rng = np.random.default_rng(7)
    for trial in range(30):
        p = int(rng.choice([10, 32, 112]))
        roots = rng.integers(0, 2**32, (rng.integers(1, 6), p))
        sigs = []
        for _ in range(rng.integers(2, 80)):
            s = roots[rng.integers(len(roots))].copy()
            s[rng.random(p) < rng.choice([0.0, 0.1, 0.2, 0.3])] = rng.integers(0, 2**32)
            sigs.append(tuple(int(v) for v in s))
        keys = [
            key(int(i), s, unit=int(u)) for i, (s, u) in enumerate(zip(sigs, rng.permutation(len(sigs)), strict=True))
        ]
        rng.shuffle(keys)
        for threshold in (0.7, 0.75, 0.8, 0.9, 1.0):  # 0.7 * 10 is 7.000000000000001 in floats
            assert near_text_duplicates(keys, threshold) == reference(keys, threshold), (trial, threshold)
