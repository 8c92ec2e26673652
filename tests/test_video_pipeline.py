"""The whole video pipeline (Beam DirectRunner, child-process decoding, real OCR through RunInference)
on the generated demo corpus, whose cuts, camera moves and text are known by construction."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from mmcurate.cli import main
from mmcurate.pipelines import demo_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("video-run")
    corpus = demo_video.build_corpus(root / "corpus")
    assert main(["video", "--input", str(corpus), "--output", str(root / "out"), "--no-progress"]) == 0
    return root / "out"


def _table(out: Path, part: str) -> list[dict]:
    rows: list[dict] = []
    for f in sorted(out.glob(f"{part}/*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def test_every_video_and_clip_is_accounted_for(run: Path) -> None:
    m = json.loads((run / "manifest.json").read_text())
    assert m["kind"] == "video" and m["accounting_ok"]
    assert m["counts"] == {"input": 5, "kept": 3, "dropped": 1, "quarantined": 1}
    assert m["reasons"]["dropped"] == {"no_clip_long_enough": 1}
    assert list(m["reasons"]["quarantined"]) == ["undecodable"]
    clips = m["clips"]["counts"]
    assert clips["input"] == clips["kept"] + clips["dropped"] + clips["quarantined"]
    videos = {Path(r["source"]["uri"]).name: r for r in _table(run, "ledger/videos")}
    assert sum(v["clips"] for v in videos.values()) == clips["input"]
    assert videos["cuts.mp4"]["cuts"] == [90, 165]
    assert videos["camera.mp4"]["cuts"] == [75, 150, 225]
    assert videos["short.mp4"]["fate"]["reason"] == "no_clip_long_enough"
    assert videos["not-a-video.mp4"]["fate"]["status"] == "quarantined"
    assert videos["not-a-video.mp4"]["fate"]["error"]  # the decoder's message is kept
    # the quarantine and drop tables name each one
    assert {Path(r["source"]).name for r in _table(run, "quarantined/videos")} == {"not-a-video.mp4#not-a-video.mp4"}
    assert m["totals"]["samples"] == clips["kept"] > 0
    assert not (run / "_spool").exists()  # clip files waited there between extraction and shards


def test_camera_motion_guesses_and_motion_filter(run: Path) -> None:
    clips = [c for c in _table(run, "ledger/clips") if Path(c["source"]["uri"]).name == "camera.mp4"]
    clips.sort(key=lambda c: c["clip_index"])
    labels = [dict(c["labels"])["camera_motion"] for c in clips]
    assert labels == ["pan_left", "tilt_down", "zoom_in", "static"]
    assert [(c["start_frame"], c["end_frame"]) for c in clips] == [(0, 75), (75, 150), (150, 225), (225, 300)]
    static = clips[-1]
    assert static["fate"] == {"status": "dropped", "reason": "low_motion", "error": "", "duplicate_of": ""}
    assert all(c["fate"]["status"] == "kept" for c in clips[:3])


def test_text_ratio_only_where_text_is(run: Path) -> None:
    clips = sorted(
        (c for c in _table(run, "ledger/clips") if Path(c["source"]["uri"]).name == "title.mp4"),
        key=lambda c: c["clip_index"],
    )
    titled, plain = (dict(c["scores"]) for c in clips)
    assert 0 < titled["ocr_text_area"] < 0.3  # a title band: kept by text_area max 0.3
    assert titled["ocr_text_frames"] == 1.0
    assert plain["ocr_text_area"] == 0.0
    assert "CHAPTER ONE" in " ".join(line["text"] for line in clips[0]["ocr"]).upper().replace("  ", " ")


def test_shards_hold_mp4_json_txt_and_the_queue_points_into_them(run: Path) -> None:
    import av

    m = json.loads((run / "manifest.json").read_text())
    queue = [json.loads(line) for f in sorted((run / "annotation").glob("*.jsonl")) for line in f.open()]
    assert len(queue) == m["clips"]["counts"]["kept"]
    seen = 0
    for shard in m["shards"]:
        with tarfile.open(run / shard["path"]) as tar:
            names = tar.getnames()
            keys = sorted({n.rsplit(".", 1)[0] for n in names})
            assert sorted(names) == sorted(f"{k}.{e}" for k in keys for e in ("json", "mp4", "txt"))
            for key in keys:
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                assert meta["id"] == key and meta["video_id"]
                assert meta["source"]["uri"].endswith(".mp4")
                for field in ("start_time", "end_time", "start_frame", "end_frame", "scores", "labels"):
                    assert field in meta
                assert meta["scores"]["motion"] >= 0.25 and "duration" in meta["scores"]
                data = tar.extractfile(f"{key}.mp4").read()
                with av.open(io.BytesIO(data)) as c:
                    n = sum(1 for _ in c.decode(video=0))
                assert n == meta["end_frame"] - meta["start_frame"]
                row = next(q for q in queue if q["clip_id"] == key)
                assert row["shard"] == shard["path"] and row["pre_annotations"]["camera_motion"]
                seen += 1
        index = pq.read_table(run / shard["index"]["path"]).to_pylist()
        assert sorted(r["key"] for r in index) == keys
    assert seen == m["clips"]["counts"]["kept"]


def test_a_hanging_read_is_killed_and_quarantined(tmp_path: Path) -> None:
    """A FIFO nobody writes to blocks whoever opens it: the child is killed at the probe timeout."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    demo_video.make_video(corpus / "ok.mp4", [demo_video.Segment("pan_left", 75)], size=(320, 240))
    os.mkfifo(corpus / "stuck.mp4")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"limits": {"probe_timeout_s": 3}, "filters": {"motion": {"min": 0.25}}}))
    assert main(["video", "--input", str(corpus), "--output", str(tmp_path / "out"), "--no-progress", "--config",
                 str(cfg)]) == 0  # fmt: skip
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["counts"] == {"input": 2, "kept": 1, "dropped": 0, "quarantined": 1}
    assert m["reasons"]["quarantined"] == {"decode_timeout": 1}
    (row,) = _table(tmp_path / "out", "quarantined/videos")
    assert row["source"].endswith("stuck.mp4") and "killed" in row["error"]


def test_bad_config_fails_before_reading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"filters": {"caption_length": {}}}))
    assert main(["video", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "filters.caption_length: not a clip filter" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump({"output": {"ffmpeg": "/nonexistent/ffmpeg"}}))
    assert main(["video", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "output.ffmpeg" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump({"scenes": {"detector": "histogram"}}))
    assert main(["video", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "scenes.detector" in capsys.readouterr().err


def test_select_refuses_a_video_run(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["select", "--run", str(run), "--output", str(tmp_path / "sel")]) == 2
    assert "is a video run" in capsys.readouterr().err


def test_an_unexpected_failure_quarantines_the_video_without_half_its_clips(tmp_path: Path) -> None:
    """Clips are written to a spool under the output; an output that cannot be written to fails the
    spool write half-way through a video: the video is quarantined (internal_error), no clip escapes."""
    import apache_beam as beam

    from mmcurate.pipelines.video import VIDEOS_TAG, AnalyseVideosFn, VideoConfig
    from mmcurate.schemas import Source, Status, VideoRecord

    path = tmp_path / "v.mp4"
    demo_video.make_video(path, [demo_video.Segment("testsrc2", 75), demo_video.Segment("pan_left", 75)])
    config = VideoConfig(limits={"isolate": False}, clips={"min_duration": 1.0})
    fn = AnalyseVideosFn(config, "/proc/mmcurate-cannot-write-here")
    fn.setup()
    try:
        out = list(fn.process(VideoRecord(id="", source=Source(str(path), 0, "v.mp4"), path=str(path))))
    finally:
        fn.teardown()
    assert len(out) == 1 and isinstance(out[0], beam.pvalue.TaggedOutput) and out[0].tag == VIDEOS_TAG
    video = out[0].value
    assert video.fate.status == Status.QUARANTINED and video.fate.reason == "internal_error"
    assert "analyse_videos: " in video.fate.error and video.id and video.clips == 0


def test_repeated_videos_are_dropped_as_duplicates_and_failed_clips_quarantine_their_video(tmp_path: Path) -> None:
    import shutil

    import webdataset as wds

    corpus = tmp_path / "in"
    corpus.mkdir()
    demo_video.make_video(corpus / "a.mp4", [demo_video.Segment("pan_left", 75)], size=(320, 240))
    shutil.copy(corpus / "a.mp4", corpus / "b-copy.mp4")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"filters": {"motion": {"min": 0.25}}}))
    out = tmp_path / "out"
    assert main(["video", "--input", str(corpus), "--output", str(out), "--no-progress", "--config", str(cfg)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"] == {"input": 2, "kept": 1, "dropped": 1, "quarantined": 0}
    assert m["reasons"]["dropped"] == {"duplicate": 1}
    assert m["clips"]["reasons"]["dropped"] == {"duplicate_video": 1} and m["clips"]["counts"]["kept"] == 1
    (dup,) = _table(out, "dropped/videos")
    assert dup["source"].endswith("b-copy.mp4") and dup["duplicate_of"].endswith("a.mp4")
    keys = [s["__key__"] for s in wds.WebDataset(str(out / m["shards"][0]["path"]), shardshuffle=False)]
    assert len(keys) == len(set(keys)) == 1  # a shard webdataset can read: no repeated keys

    # every clip's ffmpeg run times out: the video is quarantined (clips_failed), not dropped
    cfg.write_text(yaml.safe_dump({"filters": {"motion": {"min": 0.25}}, "output": {"timeout_s": 0.001}}))
    out2 = tmp_path / "out2"
    assert main(["video", "--input", str(corpus / "a.mp4"), "--output", str(out2), "--no-progress",
                 "--config", str(cfg)]) == 0  # fmt: skip
    m = json.loads((out2 / "manifest.json").read_text())
    assert m["counts"]["quarantined"] == 1 and m["reasons"]["quarantined"] == {"clips_failed": 1}
    assert m["clips"]["reasons"]["quarantined"] == {"clip_error": 1}
    (row,) = _table(out2, "quarantined/videos")
    assert "ran over" in row["error"]
