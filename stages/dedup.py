"""Exact and near-duplicate decisions, made over the whole run rather than per worker.

Exact duplicates share a pixel hash. Near duplicates are found by locality-sensitive banding of
the 64-bit pHash: split into `max_distance + 1` bands, any two hashes within that Hamming distance
agree on at least one band (pigeonhole), so grouping by (band, value) finds every candidate pair.
Within a group the representative is chosen by a total order (most pixels, then largest file,
then input position), so the choice is the same whatever the worker layout: a record is dropped
when a better-ranked record lies within the distance, and points at the best such record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mmcurate.schemas import DedupKey

from .base import Params

HASH_BITS = 64


class DedupParams(Params):
    near: bool = True
    """Also drop near duplicates (pHash within `max_distance`); exact duplicates are always dropped."""
    max_distance: int = 4
    """Largest Hamming distance (of 64 bits) between pHashes that counts as a near duplicate."""

    def model_post_init(self, _context: object) -> None:
        if not 0 <= self.max_distance <= 16:
            raise ValueError(f"dedup.max_distance must be within 0..16, got {self.max_distance}")


@dataclass(frozen=True)
class Duplicate:
    uid: str
    unit: int
    reason: str
    duplicate_of: str
    """Content id of the representative that is kept instead."""
    of_rank: tuple


EXACT_REASONS = {"url": "duplicate_url"}
"""An exact key namespaced `NAME:...` drops with this reason (a document's URL); others `duplicate_exact`."""


def exact_duplicates(group: Iterable[DedupKey]) -> list[Duplicate]:
    """All but the best-ranked member of a group with the same `exact` key."""
    members = sorted(group)
    best = members[0]
    reason = (
        EXACT_REASONS.get(best.exact.partition(":")[0], "duplicate_exact") if ":" in best.exact else "duplicate_exact"
    )
    return [Duplicate(m.uid, m.unit, reason, best.id, best.rank) for m in members[1:]]


def compact(k: DedupKey) -> tuple:
    """A key as a plain tuple without its exact hash, which the grouping key carries: a shuffle holds
    every record's key (once per band for near duplicates), and a plain tuple of primitives takes
    about half the bytes and memory of the named tuple there."""
    return (k.rank, k.uid, k.id, k.unit, k.near, k.sig)


def restore(t: tuple, exact: str = "") -> DedupKey:
    rank, uid, rid, unit, near, sig = t
    return DedupKey(tuple(rank), uid, rid, unit, exact, near, None if sig is None else tuple(sig))


def band_keys(phash: int, max_distance: int) -> list[tuple[int, int]]:
    n = max_distance + 1
    edges = [round(i * HASH_BITS / n) for i in range(n + 1)]
    return [(i, (phash >> edges[i]) & ((1 << (edges[i + 1] - edges[i])) - 1)) for i in range(n)]


def _popcount64(x: np.ndarray) -> np.ndarray:
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


def near_duplicates(group: Iterable[DedupKey], max_distance: int) -> list[Duplicate]:
    """For each member with a better-ranked member within the distance, the best such member."""
    members = sorted(group)
    if len(members) < 2:
        return []
    hashes = np.array([m.near for m in members], dtype=np.uint64)
    out = []
    for j in range(1, len(members)):
        dist = _popcount64(hashes[:j] ^ hashes[j])
        close = np.nonzero(dist <= max_distance)[0]
        if close.size:
            best = members[int(close[0])]  # sorted: the first close one is the best ranked
            out.append(Duplicate(members[j].uid, members[j].unit, "duplicate_near", best.id, best.rank))
    return out


def best_duplicate(candidates: Iterable[Duplicate]) -> Duplicate:
    """Several bands may name a record: keep the decision pointing at the best representative."""
    return min(candidates, key=lambda d: d.of_rank)
