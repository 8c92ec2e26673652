"""Exact and near-duplicate decisions: ranking, the banding pigeonhole, and real photos."""

from __future__ import annotations

import hashlib
import io
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError
from skimage import data as skdata

from mmcurate.schemas import CaptionSample, DedupKey, Source
from mmcurate.stages.dedup import (
    HASH_BITS,
    DedupParams,
    Duplicate,
    band_keys,
    best_duplicate,
    exact_duplicates,
    near_duplicates,
)
from mmcurate.stages.image_decode import DecodeParams, decode, perceptual_hash, pixel_hash


def dedup_key(r: CaptionSample):
    return r.dedup_key()


def rec(
    uid_unit: int,
    index: int,
    width: int = 100,
    height: int = 100,
    file_bytes: int = 1000,
    pixel: str = "p",
    phash: str = "0",
    cid: str | None = None,
) -> CaptionSample:
    return CaptionSample(
        id=cid or f"id-{uid_unit}-{index}",
        source=Source("memory:///x", unit=uid_unit, index=index),
        width=width,
        height=height,
        file_bytes=file_bytes,
        pixel_hash=pixel,
        phash=phash,
    )


def from_image_bytes(raw: bytes, unit: int, index: int) -> CaptionSample:
    """A record as the decode stage leaves it: header size, file size, pixel hash and pHash."""
    d = decode(raw, DecodeParams())
    return CaptionSample(
        id=hashlib.blake2b(raw, digest_size=16).hexdigest(),
        source=Source("memory:///x", unit=unit, index=index),
        width=d.width,
        height=d.height,
        file_bytes=len(raw),
        pixel_hash=pixel_hash(d.image),
        phash=perceptual_hash(d.image),
    )


def dedup_run(records: Iterable[CaptionSample], max_distance: int, near: bool = True) -> dict[str, Duplicate]:
    """The pipeline's dedup, without Beam: exact groups, then bands over the exact representatives."""
    keys = [dedup_key(r) for r in records]
    by_pixels: dict[str, list[DedupKey]] = defaultdict(list)
    for k in keys:
        by_pixels[k.exact].append(k)
    found = [d for group in by_pixels.values() for d in exact_duplicates(group)]
    if near:
        bands: dict[tuple[int, int], list[DedupKey]] = defaultdict(list)
        for group in by_pixels.values():
            survivor = min(group)
            for band in band_keys(survivor.near, max_distance):
                bands[band].append(survivor)
        per_uid: dict[str, list[Duplicate]] = defaultdict(list)
        for group in bands.values():
            for d in near_duplicates(group, max_distance):
                per_uid[d.uid].append(d)
        found += [best_duplicate(c) for c in per_uid.values()]
    out = {d.uid: d for d in found}
    assert len(out) == len(found), "a record was dropped twice"
    return out


def save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format=fmt, **kw)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- exact


def test_dedup_key_rank_and_hash() -> None:
    r = rec(2, 5, width=30, height=20, file_bytes=777, pixel="abc", phash="00000000000000ff")
    k = dedup_key(r)
    assert k.rank == (-600, -777, 2, 5)
    assert (k.uid, k.id, k.unit, k.exact, k.near) == (r.uid, r.id, 2, "abc", 255)
    assert dedup_key(rec(0, 0, phash="")).near == 0


def test_exact_keeps_most_pixels_then_largest_file_then_earliest() -> None:
    group = [
        rec(0, 0, width=100, height=100, file_bytes=5000),  # fewer pixels
        rec(0, 1, width=200, height=100, file_bytes=1000),  # most pixels, small file
        rec(0, 2, width=100, height=200, file_bytes=3000),  # most pixels, larger file: best
        rec(1, 0, width=100, height=200, file_bytes=3000),  # tie with the best, later unit
    ]
    dups = exact_duplicates(dedup_key(r) for r in group)
    best = group[2]
    assert {d.uid for d in dups} == {r.uid for r in group} - {best.uid}
    assert all(d.duplicate_of == best.id and d.reason == "duplicate_exact" for d in dups)
    assert all(d.of_rank == dedup_key(best).rank for d in dups)
    assert {d.uid: d.unit for d in dups} == {r.uid: r.source.unit for r in group if r is not best}


def test_exact_tie_breaks_on_input_position() -> None:
    """Same pixels, same size: the earliest (unit, index) is kept, so reruns and layouts agree."""
    group = [rec(u, i, cid=f"c{u}{i}") for u, i in [(3, 1), (0, 9), (0, 2), (1, 0)]]
    dups = exact_duplicates(dedup_key(r) for r in group)
    assert {d.duplicate_of for d in dups} == {"c02"}
    assert "000000:000000002" not in {d.uid for d in dups}


def test_exact_single_member_group_has_no_duplicates() -> None:
    assert exact_duplicates([dedup_key(rec(0, 0))]) == []


def test_exact_result_does_not_depend_on_group_order() -> None:
    group = [
        dedup_key(rec(u, i, width=50 + 10 * ((u + i) % 3), file_bytes=100 * i)) for u in range(2) for i in range(3)
    ]
    expected = sorted(exact_duplicates(group), key=lambda d: d.uid)
    for perm in itertools.permutations(group):
        assert sorted(exact_duplicates(perm), key=lambda d: d.uid) == expected


# ----------------------------------------------------------------------------------------------- banding


def flip(x: int, bits: Iterable[int]) -> int:
    for b in bits:
        x ^= 1 << b
    return x


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=8),
    st.data(),
)
def test_band_keys_pigeonhole(x: int, d: int, data: st.DataObject) -> None:
    """Any two hashes within Hamming distance d share at least one (band, value) key."""
    dist = data.draw(st.integers(min_value=0, max_value=d))
    bits = data.draw(st.sets(st.integers(0, HASH_BITS - 1), min_size=dist, max_size=dist))
    y = flip(x, bits)
    assert bin(x ^ y).count("1") == dist
    assert set(band_keys(x, d)) & set(band_keys(y, d))


@pytest.mark.parametrize("d", range(17))
def test_band_keys_partition_the_bits(d: int) -> None:
    """d+1 bands; every bit belongs to exactly one band (so flipping it changes exactly one key)."""
    base = 0x0123456789ABCDEF
    keys = band_keys(base, d)
    assert [i for i, _ in keys] == list(range(d + 1))
    for b in range(HASH_BITS):
        changed = [i for (i, v), (_, w) in zip(keys, band_keys(flip(base, [b]), d), strict=True) if v != w]
        assert len(changed) == 1, (d, b)
    assert band_keys(0, d) == [(i, 0) for i in range(d + 1)]


def test_band_keys_can_miss_at_distance_d_plus_one() -> None:
    """The guarantee is tight: one flipped bit in every band shares no key (why bands = d + 1)."""
    d = 4
    first_bits = []
    for b in range(HASH_BITS):
        changed = [i for (i, v), (_, w) in zip(band_keys(0, d), band_keys(1 << b, d), strict=True) if v != w]
        if changed[0] not in {band for band, _ in first_bits}:
            first_bits.append((changed[0], b))
    assert len(first_bits) == d + 1
    y = flip(0, [b for _, b in first_bits])
    assert not set(band_keys(0, d)) & set(band_keys(y, d))


# ----------------------------------------------------------------------------------------------- near


def test_near_distance_boundary() -> None:
    """Exactly max_distance apart is a duplicate; one bit more is not."""
    a = rec(0, 0, width=200, height=200, phash=f"{0:016x}")
    at = rec(0, 1, phash=f"{flip(0, [1, 17, 33, 63]):016x}")
    past = rec(0, 2, phash=f"{flip(0, [2, 18, 34, 50, 62]):016x}")
    dups = near_duplicates([dedup_key(r) for r in (past, at, a)], max_distance=4)
    assert [(d.uid, d.duplicate_of, d.reason) for d in dups] == [(at.uid, a.id, "duplicate_near")]


def test_near_points_at_the_best_close_record() -> None:
    """Of several better-ranked close records, the best-ranked is named."""
    big = rec(0, 0, width=400, height=400, phash=f"{flip(0, [5]):016x}")
    mid = rec(0, 1, width=300, height=300, phash=f"{0:016x}")
    small = rec(0, 2, width=100, height=100, phash=f"{flip(0, [9]):016x}")
    dups = {d.uid: d for d in near_duplicates([dedup_key(r) for r in (small, mid, big)], 4)}
    assert dups[small.uid].duplicate_of == big.id
    assert dups[mid.uid].duplicate_of == big.id
    assert big.uid not in dups


def test_near_chain_drops_against_any_better_close_record() -> None:
    """A is close to B, B close to C, A far from C: B and C are both dropped (each has a better close record)."""
    a = rec(0, 0, width=300, height=300, phash=f"{0:016x}")
    b = rec(0, 1, width=200, height=200, phash=f"{flip(0, [1, 2, 3]):016x}")
    c = rec(0, 2, width=100, height=100, phash=f"{flip(0, [1, 2, 3, 40, 41, 42]):016x}")
    dups = {d.uid: d.duplicate_of for d in near_duplicates([dedup_key(r) for r in (c, b, a)], 4)}
    assert dups == {b.uid: a.id, c.uid: b.id}


def test_near_tiny_groups() -> None:
    assert near_duplicates([], 4) == []
    assert near_duplicates([dedup_key(rec(0, 0))], 4) == []


def test_best_duplicate_prefers_the_best_ranked_representative() -> None:
    """Different bands may name different representatives for one record; the best-ranked wins."""
    cands = [
        Duplicate("u", 0, "duplicate_near", "second", (-100, -5, 0, 1)),
        Duplicate("u", 0, "duplicate_near", "first", (-400, -1, 2, 0)),
        Duplicate("u", 0, "duplicate_near", "third", (-100, -5, 0, 2)),
    ]
    for perm in itertools.permutations(cands):
        assert best_duplicate(perm).duplicate_of == "first"


@pytest.mark.parametrize("bad", [-1, 17])
def test_dedup_params_bounds(bad: int) -> None:
    with pytest.raises(ValidationError):
        DedupParams(max_distance=bad)
    assert DedupParams(max_distance=16).max_distance == 16


# ----------------------------------------------------------------------------------------------- real photos

PHOTOS = {
    "astronaut": skdata.astronaut,
    "camera": skdata.camera,
    "coffee": skdata.coffee,
    "rocket": skdata.rocket,
    "hubble": skdata.hubble_deep_field,
    "immuno": skdata.immunohistochemistry,
}


def test_near_duplicates_on_real_photos() -> None:
    """A resized + recompressed copy and a byte-identical copy are dropped; distinct photos all stay."""
    originals = {name: save(Image.fromarray(f()), "PNG") for name, f in PHOTOS.items()}
    astro = Image.fromarray(skdata.astronaut())
    small_copy = save(astro.resize((300, 300), Image.Resampling.LANCZOS), "JPEG", quality=75)
    # The smaller copy comes first: position alone must not make it the representative. The
    # byte-identical copy comes last: for identical pixels and size, input position decides.
    items = [("astronaut-small", small_copy), *originals.items(), ("coffee-again", originals["coffee"])]
    recs = {name: from_image_bytes(raw, unit=0, index=i) for i, (name, raw) in enumerate(items)}
    dups = dedup_run(recs.values(), DedupParams().max_distance)
    by_name = {name: dups.get(r.uid) for name, r in recs.items()}
    assert {n for n, d in by_name.items() if d} == {"astronaut-small", "coffee-again"}
    assert by_name["astronaut-small"].reason == "duplicate_near"  # type: ignore[union-attr]
    assert by_name["astronaut-small"].duplicate_of == recs["astronaut"].id  # type: ignore[union-attr]
    assert by_name["coffee-again"].reason == "duplicate_exact"  # type: ignore[union-attr]
    assert by_name["coffee-again"].duplicate_of == recs["coffee"].id  # type: ignore[union-attr]
    assert dedup_run(recs.values(), DedupParams().max_distance, near=False).keys() == {recs["coffee-again"].uid}


def test_dedup_is_independent_of_input_order() -> None:
    raws = [save(Image.fromarray(f()), "JPEG", quality=85) for f in PHOTOS.values()]
    astro = Image.fromarray(skdata.astronaut())
    raws.append(save(astro.resize((256, 256), Image.Resampling.BILINEAR), "JPEG", quality=60))
    base = [from_image_bytes(r, unit=i % 3, index=i) for i, r in enumerate(raws)]
    expected = {(u, d.duplicate_of) for u, d in dedup_run(base, 4).items()}
    assert len(expected) == 1
    for shift in range(1, len(base)):
        assert {(u, d.duplicate_of) for u, d in dedup_run(base[shift:] + base[:shift], 4).items()} == expected


# ----------------------------------------------------------------------------------------------- peer data


def provenance_md5(peer_data: Path, folder: str) -> dict[str, str]:
    """The md5 column of PROVENANCE.md for the files of one folder."""
    table = (peer_data / "PROVENANCE.md").read_text(encoding="utf-8")
    rows = re.findall(rf"^\| {re.escape(folder)}/(\S+) \| .*\| ([0-9a-f]{{32}}) \|$", table, flags=re.MULTILINE)
    return dict(rows)


def test_data_juicer_copies_are_exact_duplicates(peer_data: Path) -> None:
    """Byte-identical files (same md5, per PROVENANCE.md and per the bytes) collapse to one each."""
    folder = peer_data / "data_juicer" / "tests_ops_data"
    files = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    raws = {p.name: p.read_bytes() for p in files}
    md5 = {n: hashlib.md5(b).hexdigest() for n, b in raws.items()}
    listed = provenance_md5(peer_data, "data_juicer/tests_ops_data")
    assert {n: listed[n] for n in md5} == md5
    copies = defaultdict(list)
    for n in sorted(md5):
        copies[md5[n]].append(n)
    groups = sorted(sorted(g) for g in copies.values() if len(g) > 1)
    assert groups == [["img1.png", "img4.png"], ["img2.jpg", "img5.jpg"], ["img3.jpg", "img6.jpg", "img7.jpg"]]

    recs = {n: from_image_bytes(raws[n], unit=0, index=i) for i, n in enumerate(sorted(raws))}
    for g in groups:
        assert len({recs[n].pixel_hash for n in g}) == 1
    assert len({r.pixel_hash for r in recs.values()}) == len(copies)  # distinct files, distinct pixels
    dups = dedup_run(recs.values(), DedupParams().max_distance, near=False)
    dropped = {n for n, r in recs.items() if r.uid in dups}
    assert dropped == {n for g in groups for n in g[1:]}  # the first in input order is kept
    for g in groups:
        for n in g[1:]:
            assert dups[recs[n].uid].duplicate_of == recs[g[0]].id
            assert dups[recs[n].uid].reason == "duplicate_exact"


def test_data_juicer_near_pair_at_its_measured_distance(peer_data: Path) -> None:
    """img_pair_1/2 are near copies: duplicates at their own pHash distance, distinct one bit below it."""
    folder = peer_data / "data_juicer" / "tests_ops_data"
    a = from_image_bytes((folder / "img_pair_1.jpg").read_bytes(), 0, 0)
    b = from_image_bytes((folder / "img_pair_2.jpg").read_bytes(), 0, 1)
    dist = bin(int(a.phash, 16) ^ int(b.phash, 16)).count("1")
    assert 0 < dist <= 16
    assert dedup_key(a).rank[:2] != dedup_key(b).rank[:2]  # size decides here, not input position
    best, other = sorted((a, b), key=lambda r: dedup_key(r).rank)
    dups = dedup_run([a, b], dist)
    assert list(dups) == [other.uid]
    assert dups[other.uid].duplicate_of == best.id
    assert dedup_run([a, b], dist - 1) == {}
