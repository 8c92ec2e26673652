"""The whole video pipeline (Beam DirectRunner, child-process decoding, real OCR through RunInference)
on the generated demo corpus, whose cuts, camera moves and text are known by construction."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest
import yaml

from mmcurate.cli import main
from mmcurate.demo import video as demo_video

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
    assert m["corpus"] == "video" and m["accounting_ok"]
    assert m["kinds"]["video"]["counts"] == {"input": 5, "kept": 3, "dropped": 1, "quarantined": 1}
    assert m["kinds"]["video"]["reasons"]["dropped"] == {"no_clip_long_enough": 1}
    assert list(m["kinds"]["video"]["reasons"]["quarantined"]) == ["undecodable"]
    clips = m["kinds"]["clip"]["counts"]
    assert clips["input"] == clips["kept"] + clips["dropped"] + clips["quarantined"]
    videos = {Path(r["source"]["uri"]).name: r for r in _table(run, "ledger/video")}
    assert sum(v["clips"] for v in videos.values()) == clips["input"]
    assert videos["cuts.mp4"]["cuts"] == [90, 165]
    assert videos["camera.mp4"]["cuts"] == [75, 150, 225]
    assert videos["short.mp4"]["fate"]["reason"] == "no_clip_long_enough"
    assert videos["not-a-video.mp4"]["fate"]["status"] == "quarantined"
    assert videos["not-a-video.mp4"]["fate"]["error"]  # the decoder's message is kept
    # the quarantine and drop tables name each one
    assert {Path(r["source"]).name for r in _table(run, "quarantined/video")} == {"not-a-video.mp4#not-a-video.mp4"}
    assert m["totals"]["samples"] == clips["kept"] > 0
    assert not (run / "_spool").exists()  # clip files waited there between extraction and shards


def test_recipe_under_test_pipeline(tmp_path: Path) -> None:
    """The video recipe in a TestPipeline: the manifest PCollection carries both identities."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from mmcurate.pipelines.run import new_run
    from mmcurate.pipelines.video import CORPUS

    corpus = tmp_path / "in"
    corpus.mkdir()
    demo_video.make_video(corpus / "pan.mp4", [demo_video.Segment("pan_left", 75)], size=(320, 240))
    demo_video.make_video(corpus / "short.mp4", [demo_video.Segment("testsrc2", 30)], size=(320, 240))
    (corpus / "broken.mp4").write_bytes(b"not a video")
    config = CORPUS.config_class(filters={"flow_speed": {"min": 0.0035}}, limits={"isolate": False})
    units = CORPUS.list_units([str(corpus)], config)
    out = tmp_path / "out"
    with TestPipeline() as p:
        manifest = CORPUS.build(p, units, config, new_run(CORPUS, config, [str(corpus)], units, str(out)))
        got = manifest | beam.Map(lambda m: (m["kinds"]["video"]["counts"], m["kinds"]["clip"]["counts"]))
        want_videos = {"input": 3, "kept": 1, "dropped": 1, "quarantined": 1}
        assert_that(got, equal_to([(want_videos, {"input": 2, "kept": 1, "dropped": 1, "quarantined": 0})]))
    fates = {Path(v["source"]["uri"]).name: v["fate"]["reason"] for v in _table(out, "ledger/video")}
    assert fates == {"pan.mp4": "", "short.mp4": "no_clip_long_enough", "broken.mp4": "undecodable"}


def test_hugging_face_datasets_loads_every_table_and_the_shards(run: Path, tmp_path: Path) -> None:
    from hf_loaders import assert_loads_everything

    seen = assert_loads_everything(run, tmp_path / "hf")
    m = json.loads((run / "manifest.json").read_text())
    assert seen["ledger/video"] == m["kinds"]["video"]["counts"]["input"]
    assert seen["ledger/clip"] == m["kinds"]["clip"]["counts"]["input"]
    assert {"index", "dropped/clip", "dropped/video", "quarantined/video", "shards"} <= set(seen)


def test_camera_motion_guesses_and_motion_filter(run: Path) -> None:
    clips = [c for c in _table(run, "ledger/clip") if Path(c["source"]["uri"]).name == "camera.mp4"]
    clips.sort(key=lambda c: c["clip_index"])
    labels = [dict(c["labels"])["camera_motion"] for c in clips]
    assert labels == ["pan_left", "tilt_down", "zoom_in", "static"]
    assert [(c["start_frame"], c["end_frame"]) for c in clips] == [(0, 75), (75, 150), (150, 225), (225, 300)]
    static = clips[-1]
    assert static["fate"] == {"status": "dropped", "reason": "low_motion", "error": "", "duplicate_of": ""}
    assert all(c["fate"]["status"] == "kept" for c in clips[:3])


def test_text_ratio_only_where_text_is(run: Path) -> None:
    clips = sorted(
        (c for c in _table(run, "ledger/clip") if Path(c["source"]["uri"]).name == "title.mp4"),
        key=lambda c: c["clip_index"],
    )
    titled, plain = (dict(c["scores"]) for c in clips)
    assert 0 < titled["ocr_text_area"] < 0.3  # a title band: kept by text_area max 0.3
    assert titled["ocr_text_frames"] == 1.0
    assert plain["ocr_text_area"] == 0.0
    assert "CHAPTER ONE" in " ".join(line["text"] for line in clips[0]["ocr"]).upper().replace("  ", " ")


def test_shards_hold_mp4_json_txt_and_the_queue_points_into_them(run: Path) -> None:

    m = json.loads((run / "manifest.json").read_text())
    queue = [json.loads(line) for f in sorted((run / "annotation").glob("*.jsonl")) for line in f.open()]
    assert len(queue) == m["kinds"]["clip"]["counts"]["kept"]
    seen = 0
    for shard in m["files"]["shards"]:
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
                assert meta["scores"]["flow_speed"] >= 0.0035 and "duration" in meta["scores"]
                data = tar.extractfile(f"{key}.mp4").read()
                with av.open(io.BytesIO(data)) as c:
                    n = sum(1 for _ in c.decode(video=0))
                assert n == meta["end_frame"] - meta["start_frame"]
                row = next(q for q in queue if q["clip_id"] == key)
                assert row["shard"] == shard["path"] and row["pre_annotations"]["camera_motion"]
                seen += 1
        index = pq.read_table(run / shard["index"]["path"]).to_pylist()
        assert sorted(r["key"] for r in index) == keys
    assert seen == m["kinds"]["clip"]["counts"]["kept"]


def test_a_fifo_is_never_opened_and_a_slow_analysis_is_killed(tmp_path: Path) -> None:
    """A FIFO nobody writes to blocks whoever opens it: it is refused without being opened
    (`not_a_file`); an analysis that runs over its time limit is killed in its child process."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    demo_video.make_video(corpus / "ok.mp4", [demo_video.Segment("pan_left", 75)], size=(320, 240))
    os.mkfifo(corpus / "stuck.mp4")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"filters": {"flow_speed": {"min": 0.0035}}}))
    assert main(["video", "--input", str(corpus), "--output", str(tmp_path / "out"), "--no-progress", "--config",
                 str(cfg)]) == 0  # fmt: skip
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["kinds"]["video"]["counts"] == {"input": 2, "kept": 1, "dropped": 0, "quarantined": 1}
    assert m["kinds"]["video"]["reasons"]["quarantined"] == {"not_a_file": 1}
    (row,) = _table(tmp_path / "out", "quarantined/video")
    assert row["source"].endswith("stuck.mp4") and "FIFO" in row["error"]

    limits = {"timeout_s": 0.001, "timeout_per_second": 0}  # the analysis (a scan and a cut) takes far longer
    cfg.write_text(yaml.safe_dump({"limits": limits, "filters": {"flow_speed": {"min": 0.0035}}}))
    out = tmp_path / "slow"
    assert main(["video", "--input", str(corpus / "ok.mp4"), "--output", str(out), "--no-progress", "--config",
                 str(cfg)]) == 0  # fmt: skip
    m = json.loads((out / "manifest.json").read_text())
    assert m["kinds"]["video"]["reasons"]["quarantined"] == {"decode_timeout": 1}
    (row,) = _table(out, "quarantined/video")
    assert "killed" in row["error"]


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


def _clip_bytes(out: Path) -> dict[str, bytes]:
    """Clip id -> the mp4 member of the run's shards."""
    got = {}
    for tar_path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".mp4"):
                    got[member.name[: -len(".mp4")]] = tar.extractfile(member).read()
    return got


def test_select_rethresholds_a_video_run_from_its_ledgers(run: Path, tmp_path: Path) -> None:
    """A stricter motion bound, decided from the ledger's scores alone: the clips under it are dropped,
    videos left without a clip are dropped, the survivors' files come from the parent's shards."""
    parent = {c["id"]: c for c in _table(run, "ledger/clip")}
    kept = sorted(c["scores"]["flow_speed"] for c in parent.values() if c["fate"]["status"] == "kept")
    bound = (kept[len(kept) // 2 - 1] + kept[len(kept) // 2]) / 2  # between two kept clips
    defaults = yaml.safe_load((run / "manifest.json").read_text())["config"]["filters"]
    cfg = tmp_path / "strict.yaml"
    cfg.write_text(yaml.safe_dump({"filters": {**defaults, "flow_speed": {"min": bound}}}))
    out = tmp_path / "strict"
    assert main(["select", "--run", str(run), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["accounting_ok"] and m["lineage"]["parent_run"] == str(run) and m["lineage"]["step"] == "select"
    clips = {c["id"]: c for c in _table(out, "ledger/clip")}
    assert set(clips) == set(parent)
    for cid, c in clips.items():
        assert c["scores"] == parent[cid]["scores"]  # carried over, never recomputed
        before = parent[cid]["fate"]
        if before["status"] == "kept" and c["scores"]["flow_speed"] < bound:
            assert (c["fate"]["status"], c["fate"]["reason"]) == ("dropped", "low_motion")
        else:
            assert c["fate"] == before, cid
    now_kept = {cid for cid, c in clips.items() if c["fate"]["status"] == "kept"}
    assert 0 < len(now_kept) < sum(c["fate"]["status"] == "kept" for c in parent.values())
    parent_files, files = _clip_bytes(run), _clip_bytes(out)
    assert set(files) == now_kept and all(files[k] == parent_files[k] for k in files)
    videos = {v["id"]: v for v in _table(out, "ledger/video")}
    for vid, v in videos.items():
        mine = [c for c in clips.values() if c["video_id"] == vid]
        if v["fate"]["status"] == "kept":
            assert any(c["fate"]["status"] == "kept" for c in mine)
        elif v["fate"]["reason"] == "all_clips_dropped":
            assert mine and not any(c["fate"]["status"] == "kept" for c in mine)
    assert m["kinds"]["clip"]["counts"]["kept"] == len(now_kept) == m["totals"]["samples"]
    queue = [json.loads(line) for f in sorted((out / "annotation").glob("*.jsonl")) for line in f.open()]
    assert {q["clip_id"] for q in queue} == now_kept


def test_select_cannot_keep_a_dropped_clip_whose_file_was_not_kept(run: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "loose.yaml"
    cfg.write_text(yaml.safe_dump({"filters": {"flow_speed": {"min": 0.0}}}))
    out = tmp_path / "loose"
    assert main(["select", "--run", str(run), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    clips = {c["id"]: c for c in _table(out, "ledger/clip")}
    parent = {c["id"]: c for c in _table(run, "ledger/clip")}
    revived = [cid for cid, c in parent.items() if c["fate"]["reason"] in ("low_motion", "text_heavy")]
    assert revived
    for cid in revived:
        assert clips[cid]["fate"]["reason"] == "media_not_kept"


def test_select_keeps_dropped_clips_when_the_parent_kept_their_files(tmp_path: Path) -> None:
    corpus = tmp_path / "in"
    corpus.mkdir()
    segments = [demo_video.Segment("pan_left", 75), demo_video.Segment("static", 75, seed=1)]
    demo_video.make_video(corpus / "a.mp4", segments, size=(320, 240))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"filters": {"flow_speed": {"min": 0.0035}}, "output": {"keep_dropped_media": True}}))
    out = tmp_path / "out"
    assert main(["video", "--input", str(corpus), "--output", str(out), "--no-progress", "--config", str(cfg)]) == 0
    (static,) = [c for c in _table(out, "ledger/clip") if c["fate"]["reason"] == "low_motion"]
    assert (out / "dropped_media").is_dir()
    loose = tmp_path / "loose.yaml"
    loose.write_text(yaml.safe_dump({"filters": {"flow_speed": {"min": 0.0}}}))
    sel = tmp_path / "sel"
    assert main(["select", "--run", str(out), "--output", str(sel), "--config", str(loose), "--no-progress"]) == 0
    clips = {c["id"]: c for c in _table(sel, "ledger/clip")}
    assert clips[static["id"]]["fate"]["status"] == "kept"
    data = _clip_bytes(sel)[static["id"]]
    with av.open(io.BytesIO(data)) as c:
        assert sum(1 for _ in c.decode(video=0)) == static["end_frame"] - static["start_frame"]


def test_a_select_that_changes_nothing_reproduces_its_parent(tmp_path: Path) -> None:
    """Same config, no new rule: every fate and every shard byte as the parent wrote them, with a
    repeated video in another unit (its clips must come out `duplicate_video` again, not lost for
    want of a file), and with the parent's dropped clips kept over as the parent kept them."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    segments = [demo_video.Segment("pan_left", 75), demo_video.Segment("static", 75, seed=1)]
    demo_video.make_video(corpus / "a.mp4", segments, size=(320, 240))
    shutil.copy(corpus / "a.mp4", corpus / "b.mp4")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"read": {"folder_unit_size": 1}, "filters": {"flow_speed": {"min": 0.0035}},
                                   "output": {"keep_dropped_media": True}}))  # fmt: skip
    out = tmp_path / "out"
    assert main(["video", "--input", str(corpus), "--output", str(out), "--no-progress", "--config", str(cfg)]) == 0
    sel = tmp_path / "sel"
    assert main(["select", "--run", str(out), "--output", str(sel), "--no-progress"]) == 0
    for kind in ("video", "clip"):
        before = {r["uid"]: r["reason"] for r in _table(out, f"dropped/{kind}")}
        assert before == {r["uid"]: r["reason"] for r in _table(sel, f"dropped/{kind}")}, kind
    reasons = {r["reason"] for r in _table(sel, "dropped/clip")}
    assert reasons == {"low_motion", "duplicate_video"}
    for folder in ("shards", "index", "dropped_media"):
        assert {p.name: p.read_bytes() for p in (out / folder).iterdir()} == {
            p.name: p.read_bytes() for p in (sel / folder).iterdir()
        }, folder

    # A select config that only adds a rule keeps everything else the parent had (filters included).
    where = tmp_path / "where.yaml"
    where.write_text(yaml.safe_dump({"where": [{"column": "scores.duration", "min": 1.0}]}))
    sel2 = tmp_path / "sel2"
    assert main(["select", "--run", str(out), "--output", str(sel2), "--no-progress", "--config", str(where)]) == 0
    m = json.loads((sel2 / "manifest.json").read_text())
    assert m["config"]["filters"] == {"flow_speed": {"min": 0.0035}} and m["accounting_ok"]
    assert {r["uid"]: r["reason"] for r in _table(sel2, "dropped/clip")} == {
        r["uid"]: r["reason"] for r in _table(out, "dropped/clip")
    }


def test_select_applies_a_threshold_on_an_overlay_column(run: Path, tmp_path: Path) -> None:
    """Human labels arrive as an overlay (joined by clip id, the ledger untouched); a `where` rule on
    its column drops what people rejected, and clips without a label keep their fate."""
    kept = sorted(c["id"] for c in _table(run, "ledger/clip") if c["fate"]["status"] == "kept")
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"id": kept[0], "ok": False}) + "\n" + json.dumps({"id": kept[1], "ok": True}) + "\n")
    parent = tmp_path / "parent"
    shutil.copytree(run, parent)
    before = {p: p.read_bytes() for p in sorted((parent / "ledger").rglob("*.parquet"))}
    assert main(["overlay", "--run", str(parent), "--name", "human", "--kind", "clip", "--table", str(labels)]) == 0
    assert {p: p.read_bytes() for p in sorted((parent / "ledger").rglob("*.parquet"))} == before
    rule = {"column": "overlays.human.ok", "equals": True, "reason": "human_rejected"}
    cfg = tmp_path / "where.yaml"
    defaults = yaml.safe_load((run / "manifest.json").read_text())["config"]["filters"]
    cfg.write_text(yaml.safe_dump({"filters": defaults, "where": [rule]}))
    out = tmp_path / "sel"
    assert main(["select", "--run", str(parent), "--output", str(out), "--config", str(cfg), "--no-progress"]) == 0
    clips = {c["id"]: c for c in _table(out, "ledger/clip")}
    assert (clips[kept[0]]["fate"]["status"], clips[kept[0]]["fate"]["reason"]) == ("dropped", "human_rejected")
    assert "overlays.human.ok = False" in clips[kept[0]]["fate"]["error"]
    assert all(clips[k]["fate"]["status"] == "kept" for k in kept[1:])
    assert (out / "overlays" / "human" / "clip").is_dir()  # the select run keeps its parent's overlays
    m = json.loads((out / "manifest.json").read_text())
    assert m["kinds"]["clip"]["reasons"]["dropped"].get("human_rejected") == 1
    from hf_loaders import assert_loads_everything

    assert "overlays/human/clip" in assert_loads_everything(out, tmp_path / "hf")
    cfg.write_text(yaml.safe_dump({"where": [{**rule, "column": "overlays.human.okk"}]}))
    assert main(["select", "--run", str(parent), "--output", str(tmp_path / "typo"), "--config", str(cfg)]) == 2


def test_a_where_rule_on_a_missing_overlay_fails_before_the_run(run: Path, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "where.yaml"
    cfg.write_text(yaml.safe_dump({"where": [{"column": "overlays.nope.ok", "equals": True}]}))
    out = tmp_path / "sel"
    assert main(["select", "--run", str(run), "--output", str(out), "--config", str(cfg)]) == 2
    assert "where[0] (overlays.nope.ok): no overlay 'nope'" in capsys.readouterr().err and not out.exists()
    cfg.write_text(yaml.safe_dump({"where": [{"column": "scores.nope", "min": 1}]}))
    assert main(["select", "--run", str(run), "--output", str(out), "--config", str(cfg)]) == 2
    assert "clip records carry no score 'nope'" in capsys.readouterr().err


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
    cfg.write_text(yaml.safe_dump({"filters": {"flow_speed": {"min": 0.0035}}}))
    out = tmp_path / "out"
    assert main(["video", "--input", str(corpus), "--output", str(out), "--no-progress", "--config", str(cfg)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    videos, clips = m["kinds"]["video"], m["kinds"]["clip"]
    assert videos["counts"] == {"input": 2, "kept": 1, "dropped": 1, "quarantined": 0}
    assert videos["reasons"]["dropped"] == {"duplicate_exact": 1}
    assert clips["reasons"]["dropped"] == {"duplicate_video": 1} and clips["counts"]["kept"] == 1
    (dup,) = _table(out, "dropped/video")
    (original,) = [v for v in _table(out, "ledger/video") if v["fate"]["status"] == "kept"]
    assert dup["source"].endswith("b-copy.mp4") and original["source"]["uri"].endswith("a.mp4")
    assert dup["duplicate_of"] == original["id"] == dup["id"]  # the same bytes: the same content id
    keys = [s["__key__"] for s in wds.WebDataset(str(out / m["files"]["shards"][0]["path"]), shardshuffle=False)]
    assert len(keys) == len(set(keys)) == 1  # a shard webdataset can read: no repeated keys

    # every clip's ffmpeg run times out: the video is quarantined (clips_failed), not dropped
    cfg.write_text(yaml.safe_dump({"filters": {"flow_speed": {"min": 0.0035}}, "output": {"timeout_s": 0.001}}))
    out2 = tmp_path / "out2"
    assert main(["video", "--input", str(corpus / "a.mp4"), "--output", str(out2), "--no-progress",
                 "--config", str(cfg)]) == 0  # fmt: skip
    m = json.loads((out2 / "manifest.json").read_text())
    videos = m["kinds"]["video"]
    assert videos["counts"]["quarantined"] == 1 and videos["reasons"]["quarantined"] == {"clips_failed": 1}
    assert m["kinds"]["clip"]["reasons"]["quarantined"] == {"clip_error": 1}
    (row,) = _table(out2, "quarantined/video")
    assert "ran over" in row["error"]
