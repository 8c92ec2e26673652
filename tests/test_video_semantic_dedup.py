"""Semantic clip dedup: the SimHash of a clip's mean CLIP image embedding, banded run-wide with its
own distance (`dedup.clip_max_distance`), beside the perceptual-hash pass.

The SimHash is checked against its angle relation on random vectors; the run-wide `Dedup` transform
runs on Beam's DirectRunner; a video run with a tiny open_clip model (built here, loaded the real
way) writes each clip's `clip_simhash` and drops a resized copy only when the semantic pass is on.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from tiny_models import build_tiny_clip

from mmcurate.cli import main
from mmcurate.demo.video import Segment, make_video
from mmcurate.pipelines.finish import Dedup
from mmcurate.pipelines.video import Frames, VideoDedupParams
from mmcurate.schemas import ClipRecord, DedupKey, Source
from mmcurate.stages.dedup import DedupParams, compact, hyperplanes, mean_simhash, restore, simhash

SUGGESTED = 6
"""The distance the docs suggest for `dedup.clip_max_distance` (cosine ~0.95)."""


def _bits(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def _at_angle(rng: np.random.Generator, dim: int, cos: float) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal(dim)
    a /= np.linalg.norm(a)
    b = rng.standard_normal(dim)
    b -= (b @ a) * a
    b /= np.linalg.norm(b)
    return a, cos * a + math.sqrt(1 - cos * cos) * b


def test_simhash_identical_orthogonal_and_the_angle_relation() -> None:
    rng = np.random.default_rng(7)
    v = rng.standard_normal(512)
    assert simhash(v) == simhash(v.copy()) == simhash(3.0 * v)  # a direction: scale does not matter
    assert simhash(v) != simhash(-v) and _bits(simhash(v), simhash(-v)) == 64
    ortho = [_bits(*map(simhash, _at_angle(rng, 512, 0.0))) for _ in range(200)]
    assert abs(np.mean(ortho) - 32) < 1.5 and min(ortho) > 12
    for cos in (0.99, 0.95, 0.8):  # E[Hamming] = 64 * angle / pi
        dists = [_bits(*map(simhash, _at_angle(rng, 512, cos))) for _ in range(300)]
        want = 64 * math.acos(cos) / math.pi
        assert abs(np.mean(dists) - want) < 0.15 * want + 0.5, (cos, np.mean(dists), want)
    # the hyperplanes are fixed: the same on every call (and, from BLAKE2b, on every platform)
    assert np.array_equal(hyperplanes(512), hyperplanes.__wrapped__(512))
    assert hyperplanes(512).shape == (64, 512) and abs(hyperplanes(512).std() - 1) < 0.02


def test_mean_simhash_normalises_each_frame_first() -> None:
    rng = np.random.default_rng(3)
    frames = [rng.standard_normal(64) for _ in range(3)]
    unit = [f / np.linalg.norm(f) for f in frames]
    want = f"{simhash(np.mean(unit, axis=0)):016x}"
    assert mean_simhash(frames) == want == mean_simhash([f * s for f, s in zip(frames, (1, 9, 0.1), strict=True)])
    assert len(want) == 16
    assert mean_simhash([]) == "" and mean_simhash([frames[0], -frames[0]]) == ""


def _key(uid: str, rank: int, semantic: int | None, near: int | None = None) -> DedupKey:
    return DedupKey((rank,), uid, f"id-{uid}", 0, f"x-{uid}", near, None, None, semantic)


def assert_dedup_drops(keys: list[DedupKey], params: DedupParams, want: list[tuple[str, str, str]]) -> None:
    """Assert that the run-wide `Dedup` transform, on the DirectRunner, drops exactly `want`:
    (uid, reason, duplicate_of) of each drop (`assert_that` fails the pipeline on any difference)."""
    with TestPipeline() as p:
        found = (
            p
            | beam.Create(keys)
            | Dedup(params)
            | "Fate" >> beam.MapTuple(lambda _unit, d: (d.uid, d.reason, d.duplicate_of))
        )
        assert_that(found, equal_to(want))


def test_dedup_drops_the_worse_of_two_semantically_close_keys() -> None:
    far = (1 << 40) - 1  # 40 bits from 0
    keys = [
        _key("copy", 1, 0b11111, near=far),  # 5 bits from best's semantic hash, pHash far away
        _key("best", 0, 0, near=0),
        _key("other", 2, far << 20, near=far << 20),  # far on both
        _key("unhashed", 3, None, near=far << 10),  # no semantic hash: never compared by it
    ]
    assert_dedup_drops(keys, DedupParams(max_distance=4, semantic_distance=6), [("copy", "duplicate_near", "id-best")])
    # outside the semantic distance, or no semantic pass (other corpora): nothing drops
    assert_dedup_drops(keys, DedupParams(max_distance=4, semantic_distance=4), [])
    assert_dedup_drops(keys, DedupParams(max_distance=4), [])
    # c is near a by pHash and near b by SimHash: it points at the best of them; b is near no better one
    keys = [_key("a", 0, far, near=0b1), _key("b", 1, 0, near=far), _key("c", 2, 0b1, near=0)]
    assert_dedup_drops(keys, DedupParams(max_distance=4, semantic_distance=6), [("c", "duplicate_near", "id-a")])
    keys[0] = _key("a", 0, far, near=far << 20)  # now c is near b alone
    assert_dedup_drops(keys, DedupParams(max_distance=4, semantic_distance=6), [("c", "duplicate_near", "id-b")])


def test_the_semantic_hash_travels_in_the_key() -> None:
    clip = ClipRecord(id="c", video_id="v", clip_index=0, source=Source("v.mp4", 0, 0), frame_hash="f",
                      phash="00ff", clip_simhash="8000000000000001")  # fmt: skip
    key = clip.dedup_key()
    assert key.semantic == (1 << 63) | 1 and key.near == 0xFF
    assert restore(compact(key), key.exact) == key
    assert ClipRecord(id="c", video_id="v", clip_index=0, source=Source("v.mp4", 0, 0), frame_hash="f").dedup_key(
    ).semantic is None  # fmt: skip


def test_clip_max_distance_config() -> None:
    assert VideoDedupParams().clip_max_distance is None and VideoDedupParams().semantic() is None  # opt-in
    on = {"clip_max_distance": SUGGESTED}
    assert VideoDedupParams(**on).semantic() == SUGGESTED
    assert (
        VideoDedupParams(near=False, **on).semantic() is None and VideoDedupParams(clips=False, **on).semantic() is None
    )
    # the suggested distance stands for cosine 0.95 (64 * acos(0.95) / pi = 6.47 bits)
    assert int(64 * math.acos(0.95) / math.pi) == SUGGESTED
    with pytest.raises(ValueError, match="clip_max_distance"):
        VideoDedupParams(clip_max_distance=17)
    with pytest.raises(ValueError, match=r"dedup\.semantic_distance"):
        VideoDedupParams(semantic_distance=3)
    with pytest.raises(ValueError, match=r"dedup\.semantic_distance"):
        DedupParams(semantic_distance=-1)


def test_frames_reduce_hashes_the_embeddings_and_never_scores_them() -> None:
    from mmcurate.pipelines.models import ModelStage, View, merge_clip
    from mmcurate.stages.clip_model import EMBEDDING

    rng = np.random.default_rng(5)
    embs = [rng.standard_normal(32).astype(np.float32) for _ in range(3)]
    views = [View(None, "") for _ in embs]
    for v, e, s in zip(views, embs, (0.1, 0.2, 0.3), strict=True):
        merge_clip(v, {"clip_score": s, EMBEDDING: e})
    rec = ClipRecord(id="c", video_id="v", clip_index=0, source=Source("v.mp4", 0, 0))
    stage = ModelStage("clip", None, lambda v: v, merge_clip, ("clip_score",))
    Frames(3).reduce(rec, stage, views)
    assert rec.clip_simhash == mean_simhash(embs) != ""
    assert set(rec.scores) == {"clip_score", "clip_score_max"}
    rec2 = ClipRecord(id="c", video_id="v", clip_index=0, source=Source("v.mp4", 0, 0))
    plain = [View(None, "") for _ in embs]
    for v in plain:
        merge_clip(v, {"clip_score": 0.5})
    Frames(3).reduce(rec2, stage, plain)
    assert rec2.clip_simhash == ""


# ------------------------------------------------------------------------------------------------ a run


def _video_run(tmp_path: Path, corpus: Path, tiny: dict[str, str], name: str, clip_max_distance: int | None) -> tuple:
    clip = {"model": "mmcurate-tiny-clip", "pretrained": tiny["ckpt"], "architecture": tiny["arch"], "batch_size": 6}
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "clips": {"min_duration": 1.0},
                "filters": {"clip_score": {"min": -1.0}},
                "models": {"clip": clip},
                "dedup": {"clip_max_distance": clip_max_distance},
                "limits": {"isolate": False},
            }
        )
    )
    out = tmp_path / name
    assert main(["video", "--input", str(corpus), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["accounting_ok"]
    rows = [r for f in sorted(out.glob("ledger/clip/*.parquet")) for r in pq.read_table(f).to_pylist()]
    return m, {Path(r["source"]["uri"]).stem: r for r in rows}


@pytest.mark.slow
def test_a_video_run_writes_clip_simhash_and_drops_a_resized_copy(tmp_path: Path) -> None:
    tiny = build_tiny_clip(tmp_path)
    corpus = tmp_path / "in"
    corpus.mkdir()
    original = corpus / "a_original.mp4"
    make_video(original, [Segment("testsrc2", 50)], size=(320, 240))
    # a mirrored, smaller copy: no perceptual hash (or crop of one) matches it, the embedding does
    args = ("-vf", "hflip,scale=192:144", "-c:v", "libx264", "-crf", "30")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(original), *args, str(corpus / "b_copy.mp4")], check=True)

    _, off = _video_run(tmp_path, corpus, tiny, "off", None)
    a, b = off["a_original"], off["b_copy"]
    assert len(a["clip_simhash"]) == len(b["clip_simhash"]) == 16
    near = [int(h, 16) for h in (a["phash"], *a["phash_crops"])]
    assert min(_bits(h, int(b["phash"], 16)) for h in near) > VideoDedupParams().max_distance  # no pHash match
    assert a["fate"]["status"] == b["fate"]["status"] == "kept"
    distance = _bits(int(a["clip_simhash"], 16), int(b["clip_simhash"], 16))
    assert distance <= SUGGESTED

    m, on = _video_run(tmp_path, corpus, tiny, "on", SUGGESTED)
    a, b = on["a_original"], on["b_copy"]
    assert (a["clip_simhash"], b["clip_simhash"]) == (off["a_original"]["clip_simhash"], off["b_copy"]["clip_simhash"])
    assert a["fate"]["status"] == "kept"  # the larger copy is the representative
    assert (b["fate"]["reason"], b["fate"]["duplicate_of"]) == ("duplicate_near", a["id"])
    assert "clip_simhash" not in dict(a["scores"])  # a key, not a score column
    assert m["kinds"]["clip"]["counts"] == {"input": 2, "kept": 1, "dropped": 1, "quarantined": 0}
