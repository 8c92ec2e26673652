"""Clip fingerprints for run-wide dedup, made in one decode of the clip file right after it is cut.

`frame_hash` (the exact key) is the BLAKE2b-128 of every decoded frame's pixels: extraction is
bit-exact single-threaded x264, so the same source frames give the same clip encode and the same hash.

`phash` (the near key) must survive what a copy of a video goes through: re-encoding at another
bitrate and size, and cropping (up to 10 % per side, possibly on one side only). No hash of a whole
frame survives a 10 % crop (1.25x zoom), so a clip has a hash of its whole frame and one of each of
16 sub-windows (`phash_crops`): every frame edge in or 10 % in, and 5 % in on every side. A cropped
copy's whole frame is close to one of its original's sub-windows; the run-wide dedup compares each
clip's whole-frame hash with the other clip's hashes (`DedupKey.near_probes`).

A hash: in `FRAMES` evenly spaced frames, each of the Y, U and V planes of the window is resized to
16x16 and its 4x4 lowest DCT coefficients kept (what a crop or a re-encode barely moves), weighted
towards the lowest frequencies and colour; the 192 numbers are projected on 64 fixed random +-1
hyperplanes and the signs kept (SimHash: the Hamming distance estimates the angle between vectors).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from typing import Any

import numpy as np

HASH_BITS = 64
FRAMES = 4
"""Frames of a clip its perceptual hash looks at (evenly spaced, as `sample_frames` spaces them)."""
GRID = 16
LOW = 4
CROP = 0.1
"""The largest crop per side a near-duplicate copy may have."""
WINDOWS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.0, 0.0),
    *(m for m in itertools.product((0.0, CROP), repeat=4) if any(m)),
    (CROP / 2,) * 4,
)
"""(left, right, top, bottom) margins, as shares of the frame: the whole frame first, then the crops."""
SEED = b"mmcurate.video_dedup.v1"


@functools.cache
def _projection() -> tuple[np.ndarray, np.ndarray]:
    """The fixed +-1 hyperplanes (from BLAKE2b, the same on every machine and NumPy) and the
    coefficient weights: 1 / (1 + u + v), the DC term 0.25, chroma twice luma."""
    dims = FRAMES * 3 * LOW * LOW
    stream = b"".join(hashlib.blake2b(SEED + i.to_bytes(4, "big")).digest() for i in range(HASH_BITS * dims // 512 + 1))
    bits = np.unpackbits(np.frombuffer(stream, np.uint8))[: HASH_BITS * dims]
    planes = bits.reshape(HASH_BITS, dims).astype(np.float64) * 2 - 1
    u, v = np.meshgrid(np.arange(LOW), np.arange(LOW), indexing="ij")
    coef = 1.0 / (1 + u + v)
    coef[0, 0] = 0.25
    weight = np.concatenate([coef.ravel() * (1.0 if p == 0 else 2.0) for p in range(3)])
    return planes, np.tile(weight, FRAMES)


def _visible(plane: Any) -> np.ndarray:
    """A frame plane's pixels without the decoder's row padding."""
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def _window(a: np.ndarray, m: tuple[float, float, float, float]) -> np.ndarray:
    h, w = a.shape
    left, right, top, bottom = m
    return a[round(top * h) : h - round(bottom * h), round(left * w) : w - round(right * w)]


def frame_features(planes: list[np.ndarray]) -> np.ndarray:
    """(windows, 3 * LOW * LOW): the low DCT coefficients of each window of the Y, U, V planes."""
    import cv2

    out = np.empty((len(WINDOWS), 3, LOW * LOW))
    for p, plane in enumerate(planes):
        f = plane.astype(np.float32) - 128
        for i, m in enumerate(WINDOWS):
            small = cv2.resize(_window(f, m), (GRID, GRID), interpolation=cv2.INTER_AREA)
            out[i, p] = cv2.dct(np.ascontiguousarray(small))[:LOW, :LOW].ravel()
    return out.reshape(len(WINDOWS), -1)


def simhash(features: list[np.ndarray]) -> list[int]:
    """One 64-bit hash per window from the features of the `FRAMES` frames (in time order)."""
    planes, weight = _projection()
    vec = np.concatenate(features, axis=1) * weight  # (windows, FRAMES * 48)
    bits = (vec @ planes.T) > 0
    return [int("".join("1" if b else "0" for b in row), 2) for row in bits]


def frame_indices(total: int, count: int = FRAMES) -> list[int]:
    """`count` evenly spaced frame indices of `total` (the spacing `sample_frames` uses)."""
    return [min(total - 1, round((i + 0.5) * total / count)) for i in range(count)]


def _yuv(frame: Any) -> Any:
    return frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")


def _decode(path: str, total: int | None) -> tuple[str, int, dict[int, np.ndarray], dict[str, Any]]:
    """One pass: the exact hash, the frames decoded, and the features of the frames a key looks at,
    placed by `total` frames (None: as many as the stream's header says)."""
    import av

    digest = hashlib.blake2b(digest_size=16)
    feats: dict[int, np.ndarray] = {}
    n = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        cc = stream.codec_context
        total = stream.frames or 0 if total is None else total
        want = set(frame_indices(total)) if total > 0 else set()
        fps = float(stream.guessed_rate or stream.average_rate or 0)
        facts = {"width": cc.width, "height": cc.height, "fps": fps, "placed_by": total}
        for frame in container.decode(stream):
            frame = _yuv(frame)
            digest.update(f"{frame.width}x{frame.height};".encode())
            planes = [_visible(p) for p in frame.planes]
            for plane in planes:
                digest.update(np.ascontiguousarray(plane).data)
            if n in want:
                feats[n] = frame_features(planes)
            n += 1
    return digest.hexdigest(), n, feats, facts


def fingerprint(path: str) -> dict[str, Any]:
    """A clip file's stream facts (width, height, fps, frames decoded) and its dedup keys:
    `frame_hash` (32 hex digits), `phash` and `phash_crops` (16 hex digits each). Small and
    picklable: it crosses the analysis child's boundary in place of frames. One decode, or two
    when the stream's header miscounts its frames (the frames the key looks at are known then)."""
    frame_hash, n, feats, facts = _decode(path, None)
    if n and facts["placed_by"] != n:
        frame_hash, n, feats, facts = _decode(path, n)
    del facts["placed_by"]
    out: dict[str, Any] = {**facts, "frames": n, "frame_hash": frame_hash, "phash": "", "phash_crops": []}
    if n:
        hashes = simhash([feats[i] for i in frame_indices(n)])
        out["phash"], out["phash_crops"] = f"{hashes[0]:016x}", [f"{h:016x}" for h in hashes[1:]]
    return out


def near_distance(a: dict[str, Any], b: dict[str, Any]) -> int:
    """The distance run-wide dedup sees between two fingerprints (or clip rows): one's whole-frame
    hash against the other's whole-frame hash and crops, both ways (crops never against crops)."""
    pa, pb = int(a["phash"], 16), int(b["phash"], 16)
    pairs = [(pa, pb), *((pa, int(h, 16)) for h in b["phash_crops"]), *((int(h, 16), pb) for h in a["phash_crops"])]
    return min((x ^ y).bit_count() for x, y in pairs)
