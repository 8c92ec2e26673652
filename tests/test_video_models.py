"""CLIP score and aesthetics on video clips: RunInference over each clip's sampled frames, averaged.

A tiny open_clip model is built and saved here (no hub on these machines); the loading path is the
real one. The expected per-clip scores are recomputed outside the pipeline, from the stored clip.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from tiny_models import build_tiny_clip

from mmcurate.cli import main
from mmcurate.demo.video import Segment, make_video
from mmcurate.stages.clip import ClipParams
from mmcurate.stages.clip_model import ClipModelHandler
from mmcurate.stages.video_clips import sample_frames

pytestmark = pytest.mark.slow


def test_clip_and_aesthetic_scores_average_the_sampled_frames(tmp_path: Path) -> None:
    tiny = build_tiny_clip(tmp_path)
    corpus = tmp_path / "in"
    corpus.mkdir()
    make_video(corpus / "a.mp4", [Segment("pan_left", 70), Segment("zoom_in", 70)], size=(256, 144))
    (corpus / "a.txt").write_text("a camera moving over colourful noise")
    make_video(corpus / "b.mp4", [Segment("tilt_up", 70)], size=(256, 144))
    clip = {"model": "mmcurate-tiny-clip", "pretrained": tiny["ckpt"], "architecture": tiny["arch"], "batch_size": 6}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "clips": {"min_duration": 1.0},
                "filters": {"clip_score": {"min": -1.0}, "aesthetic": {"min": -100.0}},
                "models": {"clip": clip, "aesthetic": {"weights": tiny["head"]}},
            }
        )
    )
    out = tmp_path / "out"
    assert main(["video", "--input", str(corpus), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["accounting_ok"] and m["kinds"]["clip"]["counts"]["kept"] == 3
    rows = [r for f in sorted(out.glob("ledger/clip/*.parquet")) for r in pq.read_table(f).to_pylist()]
    handler = ClipModelHandler(ClipParams(**clip), text=True, aesthetic_weights=tiny["head"])
    model = handler.load_model()
    for shard in m["files"]["shards"]:
        with tarfile.open(out / shard["path"]) as tar:
            for member in (n for n in tar.getnames() if n.endswith(".mp4")):
                key = member[: -len(".mp4")]
                row = next(r for r in rows if r["id"] == key)
                with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
                    f.write(tar.extractfile(member).read())
                    f.flush()
                    frames, _ = sample_frames(f.name, 3, 512)
                preds = handler.run_inference([(fr, row["caption"]) for fr in frames], model)
                scores = dict(row["scores"])
                for name in ("clip_score", "aesthetic"):
                    values = [p[name] for p in preds]
                    assert scores[name] == pytest.approx(sum(values) / 3, abs=1e-4)
                    assert scores[f"{name}_max"] == pytest.approx(max(values), abs=1e-4)
                meta = json.loads(tar.extractfile(key + ".json").read())
                assert meta["scores"]["clip_score"] == pytest.approx(scores["clip_score"])
    metrics = json.loads((out / "metrics.json").read_text())
    # one tower for both scores; RunInference counted clips, the tower saw 3 frames each
    assert metrics["counters"]["mmcurate_clip/num_inferences"] == 3
