"""`mmcurate plan`: a sample run of the demo corpora measured stage by stage (Beam's own execution
times), the full input counted from tar headers and folder listings, the figures scaled to it.
Whether the figures predict a full run is measured in `make bench` (bench/plan.py), not here."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import apache_beam as beam
import pytest
import yaml

from mmcurate.cli import main
from mmcurate.pipelines import corpus as corpora
from mmcurate.pipelines.dryrun import tar_groups
from mmcurate.pipelines.run import new_run
from mmcurate.plan import stage_of


def _recipe_stages(name: str, config, inputs: list[str], tmp: Path) -> set[str]:
    """The stages a recipe has: its top-level labelled steps, each model call on its own."""
    corpus = corpora.get(name)
    units = corpus.list_units(inputs, config)
    p = beam.Pipeline()
    corpus.build(p, units, config, new_run(corpus, config, inputs, units, str(tmp / "built")))
    proto = p.to_runner_api()
    leaves = [t.unique_name for t in proto.components.transforms.values() if not t.subtransforms and t.unique_name]
    return {stage_of(n) for n in leaves}


def test_plan_of_the_caption_demo_measures_every_stage_and_scales_to_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmcurate.demo.caption import build_corpus, demo_config

    folder = build_corpus(tmp_path / "corpus")
    shard = tmp_path / "demo.tar"
    with tarfile.open(shard, "w") as tar:  # the demo's files as one webdataset shard, a sample's members together
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    corpus = shard
    config, _ = demo_config()
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump({"filters": config.model_dump(mode="json")["filters"]}))
    out = tmp_path / "plan.json"
    assert main(["plan", "caption", "--input", str(corpus), "--config", str(cfg), "--sample", "12",
                 "--workers", "8", "--json", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    sample, full = figures["sample"], figures["full"]
    stages = _recipe_stages("caption", corpora.get("caption").load_config(str(cfg)), [str(corpus)], tmp_path)
    assert set(sample["stages"]) == stages and {"Read", "DecodeAndScore", "RunInference[ocr]", "Finish"} <= stages
    for name in stages:
        assert name in printed
    assert sample["records"] == 12 and sample["accounting_ok"]
    ocr = sample["stages"]["RunInference[ocr]"]
    assert ocr["seconds"] > 0 and ocr["peak_rss_mb"] > 0
    assert full["records"] == tar_groups(str(shard)) == 25  # the demo's 25 inputs, counted from its tar headers
    per = full["per_record_s"]
    assert full["core_hours"] == pytest.approx(sum(per.values()) * 25 / 3600, rel=1e-3)
    assert full["output_bytes"] == pytest.approx(sample["bytes_out"] / 12 * 25, rel=1e-6)
    assert full["wall_hours"] == pytest.approx(sum(per.values()) * 25 / 8 / 3600, rel=1e-3)
    assert full["gpu_hours"] == 0 and full["cpu_cores_per_gpu"] is None  # no GPU here: said, not guessed
    assert "no stage on a GPU here" in printed


def test_plan_of_the_video_demo_counts_videos_from_the_listing(tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("FFmpeg is not installed (make ffmpeg)")
    from mmcurate.demo import video as demo_video

    videos = demo_video.build_corpus(tmp_path / "videos")
    out = tmp_path / "plan.json"
    assert main(["plan", "video", "--input", str(videos), "--sample", "2", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["sample"]["records"] == 2
    mp4s = sorted(p.name for p in videos.glob("*.mp4"))  # the captions beside them are sidecars, no records
    assert figures["full"]["records"] == len(mp4s) == 5
    stages = _recipe_stages("video", corpora.get("video").load_config(None), [str(videos)], tmp_path)
    assert set(figures["sample"]["stages"]) == stages
    assert sum(v["seconds"] for v in figures["sample"]["stages"].values()) > 0
