"""Exact and near-duplicate decisions, made over the whole run rather than per worker.

Exact duplicates share a pixel hash. Near duplicates are found by locality-sensitive banding of
the 64-bit pHash: split into `max_distance + 1` bands, any two hashes within that Hamming distance
agree on at least one band (pigeonhole), so grouping by (band, value) finds every candidate pair.
A key may carry probes besides its `near` hash (a video clip's crops): each is banded too, and a
record's `near` within the distance of another's probe makes them near duplicates.
A key may also carry a `semantic` hash (a clip's SimHash of its CLIP image embedding, `simhash`):
it is banded the same way in a pass of its own, with its own distance (`semantic_distance`).
Records of one `group` (a video's clips) are never near duplicates of each other.
Within a group the representative is chosen by a total order (most pixels, then largest file,
then input position), so the choice is the same whatever the worker layout: a record is dropped
when a better-ranked record lies within the distance, and points at the best such record.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
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
    semantic_distance: int | None = None
    """Largest Hamming distance between `semantic` hashes (SimHash of an embedding) that counts as a
    near duplicate; None: no semantic pass (keys without one are never compared)."""

    def model_post_init(self, _context: object) -> None:
        if not 0 <= self.max_distance <= 16:
            raise ValueError(f"dedup.max_distance must be within 0..16, got {self.max_distance}")
        if self.semantic_distance is not None and not 0 <= self.semantic_distance <= 16:
            raise ValueError(f"dedup.semantic_distance must be within 0..16, got {self.semantic_distance}")


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
    every record's key, and a plain tuple of primitives takes about half the bytes and memory of the
    named tuple there."""
    return (k.rank, k.uid, k.id, k.unit, k.near, k.sig, k.near_probes, k.semantic, k.group)


def restore(t: tuple, exact: str = "") -> DedupKey:
    rank, uid, rid, unit, near, sig, probes, semantic, group = t
    sig, probes = (None if x is None else tuple(x) for x in (sig, probes))
    return DedupKey(tuple(rank), uid, rid, unit, exact, near, sig, probes, semantic, group)


def band_keys(phash: int, max_distance: int) -> list[tuple[int, int]]:
    n = max_distance + 1
    edges = [round(i * HASH_BITS / n) for i in range(n + 1)]
    return [(i, (phash >> edges[i]) & ((1 << (edges[i + 1] - edges[i])) - 1)) for i in range(n)]


def _popcount64(x: np.ndarray) -> np.ndarray:
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


def _entries(k: DedupKey) -> list[tuple]:
    """A key's hashes as banding entries (rank, uid, id, unit, hash, is_probe, group): its `near`,
    then each probe that differs from it."""
    head = (k.rank, k.uid, k.id, k.unit)
    probes = dict.fromkeys(p for p in k.near_probes or () if p != k.near)
    return [(*head, k.near, False, k.group), *((*head, p, True, k.group) for p in probes)]


def near_entries(k: DedupKey, max_distance: int) -> list[tuple[int, tuple]]:
    """(band, entry) for every band of every hash of a key (`near` and its probes): two records
    within the distance, near against near or near against a probe, share a band (pigeonhole)."""
    return [((b << 32) | v, e) for e in _entries(k) for b, v in band_keys(e[4], max_distance)]


def semantic_entries(k: DedupKey, max_distance: int) -> list[tuple[int, tuple]]:
    """(band, entry) for every band of a key's `semantic` hash (none without one): the semantic pass's
    `near_entries`, with no probes."""
    if k.semantic is None:
        return []
    entry = (k.rank, k.uid, k.id, k.unit, k.semantic, False, k.group)
    return [((b << 32) | v, entry) for b, v in band_keys(k.semantic, max_distance)]


def _two_best(owners: np.ndarray, groups: np.ndarray) -> tuple[int, int]:
    """The best (smallest) owner, and the best one of another group (or a sentinel past the end)."""
    first = int(owners.min())
    other = owners[groups != groups[owners == first][0]]
    return first, int(other.min()) if other.size else np.iinfo(np.int64).max


def _best_of(pair: tuple[int, int], first_group: int, groups: np.ndarray) -> np.ndarray:
    """For records of `groups`: the best of a pair's two that is of another group than each."""
    return np.where(groups != first_group, pair[0], pair[1])


def near_in_band(group: Iterable[tuple], max_distance: int) -> list[Duplicate]:
    """Entries sharing a band -> for each record with a better-ranked record of another group within
    the distance (near against near, or near against a probe either way; never probe against probe),
    the best such record.

    Entries with the same hash are taken together, so a band full of one value (black
    clips, one logo) costs a pass per distinct value, not per entry."""
    entries = sorted(((tuple(e[0]), *e[1:]) for e in group), key=lambda e: (e[0], e[1]))
    records: dict[str, int] = {}
    for e in entries:  # rank order: a record's index is its place among the group's records
        records.setdefault(e[1], len(records))
    if len(records) < 2:
        return []
    heads = {records[e[1]]: e for e in reversed(entries)}
    labels: dict[object, int] = {}
    owner = np.array([records[e[1]] for e in entries], dtype=np.int64)
    gid = np.array([labels.setdefault(e[1] if e[6] is None else ("g", e[6]), len(labels)) for e in entries])
    hashes = np.array([e[4] for e in entries], dtype=np.uint64)
    best = np.full(len(records), np.iinfo(np.int64).max, dtype=np.int64)
    queries: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        if not e[5]:
            queries.setdefault(e[4], []).append(i)
    for value, members in queries.items():
        close = _popcount64(hashes ^ np.uint64(value)) <= max_distance
        c_own, c_gid = owner[close], gid[close]
        q_own, q_gid = owner[members], gid[members]
        pair = _two_best(c_own, c_gid)  # the best close record for each query record
        cand = _best_of(pair, int(c_gid[c_own == pair[0]][0]), q_gid)
        np.minimum.at(best, q_own, np.where(cand < q_own, cand, best[q_own]))
        pair = _two_best(q_own, q_gid)  # close records lose to the best query record of another group
        cand = _best_of(pair, int(q_gid[q_own == pair[0]][0]), c_gid)
        np.minimum.at(best, c_own, np.where(cand < c_own, cand, best[c_own]))
    out = []
    for j in np.nonzero(best < np.arange(len(records)))[0]:
        me, rep = heads[int(j)], heads[int(best[j])]
        out.append(Duplicate(me[1], me[3], "duplicate_near", rep[2], rep[0]))
    return out


def near_duplicates(group: Iterable[DedupKey], max_distance: int) -> list[Duplicate]:
    """For each member with a better-ranked member (of another group) within the distance, the best
    such member."""
    return near_in_band((e for k in group for e in _entries(k)), max_distance)


SIMHASH_SEED = b"mmcurate.simhash/1"
"""Seeds the hyperplanes: a fixed seed, so hashes from every run (and worker) compare."""


@functools.lru_cache(maxsize=8)
def hyperplanes(dim: int, bits: int = HASH_BITS) -> np.ndarray:
    """`bits` x `dim` standard normal hyperplane normals, from BLAKE2b in counter mode through
    Box-Muller: the same on every platform and NumPy version (a NumPy Generator's stream is not
    promised to stay the same across versions)."""
    n = bits * dim
    words = -(-n // 8) * 8 * 2  # two uniforms per normal, whole 64-byte digests
    raw = b"".join(
        hashlib.blake2b(i.to_bytes(8, "little"), digest_size=64, key=SIMHASH_SEED).digest() for i in range(words // 8)
    )
    u = ((np.frombuffer(raw, dtype="<u8") >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    u1, u2 = u[0::2][:n], u[1::2][:n]
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).reshape(bits, dim)


def simhash(vector: Sequence[float] | np.ndarray) -> int:
    """The 64-bit SimHash of a vector (bit i: its side of hyperplane i). Two vectors at angle t
    differ in each bit with probability t / pi, so E[Hamming] = 64 t / pi (Charikar 2002)."""
    v = np.asarray(vector, dtype=np.float64).ravel()
    signs = hyperplanes(v.size) @ v >= 0
    return int(sum(1 << i for i in np.nonzero(signs)[0].tolist()))


def mean_simhash(vectors: Iterable[Sequence[float] | np.ndarray]) -> str:
    """16 hex digits: the SimHash of the mean of L2-normalised vectors (a clip's frames' CLIP image
    embeddings), or "" when there are none (or they cancel out)."""
    rows = [np.asarray(v, dtype=np.float64).ravel() for v in vectors]
    if not rows:
        return ""
    m = np.stack(rows)
    m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    mean = m.mean(axis=0)
    if not np.linalg.norm(mean) > 1e-9:
        return ""
    return f"{simhash(mean / np.linalg.norm(mean)):016x}"


def best_duplicate(candidates: Iterable[Duplicate]) -> Duplicate:
    """Several bands may name a record: keep the decision pointing at the best representative."""
    return min(candidates, key=lambda d: d.of_rank)
