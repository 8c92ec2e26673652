"""Keyframe cuts (`output.cut: keyframe`): clips copied from the source's packets at its keyframes, on a
video made by FFmpeg with a known GOP (a keyframe every 30 frames, B-frames) and known scene cuts."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from mmcurate.cli import main
from mmcurate.stages.video_analysis import AnalysisParams, analyse
from mmcurate.stages.video_clips import (
    ClipOutputParams,
    ClipParams,
    keyframe_plans,
    keyframes,
    plan_clips,
    snap_to_keyframes,
)
from mmcurate.stages.video_probe import probe

FPS, GOP = 30, 30
SEGMENTS = [("testsrc2", 100), ("smptebars", 80), ("mandelbrot", 130), ("rgbtestsrc", 25), ("testsrc", 65)]
CLIPS = {"min_duration": 1.0, "max_duration": 3.0}


def make_gop_video(path: Path, segments: list[tuple[str, int]], extra: tuple[str, ...] = ()) -> list[int]:
    """lavfi sources back to back, H.264 with a fixed GOP and no scene-cut keyframes; the cut frames."""
    inputs, chains = [], []
    for i, (kind, frames) in enumerate(segments):
        inputs += ["-f", "lavfi", "-i", f"{kind}=size=320x240:rate={FPS}"]
        chains.append(f"[{i}:v]trim=end_frame={frames},setpts=PTS-STARTPTS,format=yuv420p[v{i}]")
    graph = ";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(len(segments)))
    graph += f"concat=n={len(segments)}:v=1:a=0[out]"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[out]",
         "-c:v", "libx264", "-preset", "veryfast", "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0",
         "-bf", "2", *extra, str(path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return list(itertools.accumulate(n for _, n in segments))[:-1]


def ffprobe_keyframe_times(path: Path) -> list[float]:
    """Keyframe presentation times from ffprobe's packet list (an independent reader), from the first frame."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0",
         str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rows = [line.split(",") for line in out.split() if line]
    first = min(float(t) for t, _ in rows)
    return sorted(float(t) - first for t, flags in rows if "K" in flags)


def decoded(path: str | Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("kf") / "gop.mp4"
    return path, make_gop_video(path, SEGMENTS)


@pytest.fixture(scope="module")
def keyframe_run(video, tmp_path_factory: pytest.TempPathFactory):
    path, _ = video
    params = AnalysisParams(clips=CLIPS, output={"cut": "keyframe"})
    return analyse(str(path), probe(str(path)), params, str(tmp_path_factory.mktemp("clips")))


def test_keyframes_are_the_frames_ffprobe_flags(video) -> None:
    path, _ = video
    truth = [round(t * FPS) for t in ffprobe_keyframe_times(path)]
    assert truth == list(range(0, 400, GOP))
    assert keyframes(str(path)) == truth  # packet ranks in presentation order
    times = np.arange(400) / FPS  # the scan's times for this constant-rate file
    assert keyframes(str(path), times) == truth


def expected_edges(cuts: list[int], n: int, key_times: list[float]) -> list[tuple[float, float]]:
    """The rule in seconds, from ffprobe's keyframe times: each scene's span moves inward to keyframes
    (the video's end stays), then the exact pieces' inner edges to the nearest keyframe."""
    keys = np.asarray(key_times)
    spans = []
    for s, e in itertools.pairwise([0, *cuts, n]):
        a = keys[keys >= s / FPS - 1e-6].min(initial=n / FPS)
        b = n / FPS if e == n else keys[keys <= e / FPS + 1e-6].max(initial=-1)
        spans.append((float(a), float(b), s / FPS, e / FPS))
    return spans


def test_every_clip_starts_on_a_keyframe_and_its_offsets_are_the_moves(video, keyframe_run) -> None:
    path, cuts = video
    assert keyframe_run.facts["cuts"] == cuts == [100, 180, 310, 335]
    key_times = ffprobe_keyframe_times(path)
    spans = expected_edges(cuts, 400, key_times)
    plans = [c.plan for c in keyframe_run.clips]
    assert [p["clip_index"] for p in plans] == list(range(len(plans)))
    for p in plans:
        assert p["copy"]
        assert any(abs(p["start_time"] - k) < 1e-6 for k in key_times) or p["start"] == p["end"]
        a, b, s, e = spans[p["scene_index"]]
        if p["start"] == p["end"]:  # no whole GOP in the scene
            assert b <= a and p["drop"] == "too_short"
            continue
        assert a - 1e-6 <= p["start_time"] < p["end_time"] <= b + 1e-6
        first = p["start_time"] == pytest.approx(a)
        last = p["end_time"] == pytest.approx(b)
        if first:
            assert p["cut_offset_start"] == pytest.approx(a - s)
        if last:
            assert p["cut_offset_end"] == pytest.approx(b - e)
    by_scene = {k: [p for p in plans if p["scene_index"] == k] for k in range(len(spans))}
    # scene 0 (0-100, 3.3 s): two exact pieces 0-50, 50-100; 50 moves to the nearer keyframe 60 and 100 back to 90
    assert [(p["start"], p["end"]) for p in by_scene[0]] == [(0, 60), (60, 90)]
    assert by_scene[0][0]["cut_offset_end"] == pytest.approx(10 / FPS)
    assert by_scene[0][1]["cut_offset_start"] == pytest.approx(10 / FPS)
    # scene 1 starts at 100, between keyframes 90 and 120: inward to 120; its end 180 is a keyframe
    assert [(p["start"], p["end"], p["cut_offset_start"]) for p in by_scene[1]] == [(120, 180, pytest.approx(20 / FPS))]
    # scene 2 (180-310): pieces 180-245, 245-310 -> 180-240, 240-300
    assert [(p["start"], p["end"]) for p in by_scene[2]] == [(180, 240), (240, 300)]
    assert by_scene[2][1]["cut_offset_start"] == pytest.approx(-5 / FPS)
    assert by_scene[2][1]["cut_offset_end"] == pytest.approx(-10 / FPS)
    # scene 3 (310-335) holds no keyframe-to-keyframe span: an empty too_short clip at its end
    assert [(p["start"], p["end"], p["drop"]) for p in by_scene[3]] == [(335, 335, "too_short")]
    # the last scene ends with the video: no keyframe needed there
    assert [(p["start"], p["end"], p["cut_offset_end"]) for p in by_scene[4]] == [(360, 400, 0.0)]


def test_clip_files_hold_the_source_frames_they_claim(video, keyframe_run) -> None:
    import decord

    path, _ = video
    src = decoded(path)
    kept = [c for c in keyframe_run.clips if not c.plan["drop"]]
    assert len(kept) == 6
    for clip in kept:
        assert not clip.error, clip.error
        start, end = clip.plan["start"], clip.plan["end"]
        frames = decoded(clip.mp4_path)
        assert len(frames) == end - start == clip.out["frames"]
        # a copy, not a re-encode: the very pixels of the source, first and last frame included
        assert np.array_equal(frames[0], src[start]) and np.array_equal(frames[-1], src[end - 1])
        with av.open(clip.mp4_path) as c:
            first = next(c.demux(c.streams.video[0]))
            assert first.is_keyframe and c.streams.video[0].codec_context.name == "h264"
        reader = decord.VideoReader(clip.mp4_path)  # what a trainer reads
        assert len(reader) == end - start
        assert np.array_equal(reader[0].asnumpy(), src[start])


def test_exact_mode_records_zero_offsets_and_no_copy(video, tmp_path: Path) -> None:
    path, _ = video
    params = AnalysisParams(clips=CLIPS)
    result = analyse(str(path), probe(str(path)), params, str(tmp_path))
    assert [(c.plan["start"], c.plan["end"]) for c in result.clips][:2] == [(0, 50), (50, 100)]
    assert all(not c.plan["copy"] and c.plan["cut_offset_start"] == c.plan["cut_offset_end"] == 0 for c in result.clips)


def test_snap_rule_merges_edges_on_one_keyframe_and_drops_short_pieces() -> None:
    times = np.arange(600) / FPS
    params = ClipParams(min_duration=1.0, max_duration=2.0)
    plans = plan_clips(times, [], FPS, params)  # one 20 s scene: ten 2 s pieces
    assert len(plans) == 10
    snapped = snap_to_keyframes(plans, [0, 150, 300, 580], times, FPS, params)
    # edges 60 -> 0, 120 and 180 -> 150, 240-420 -> 300, 480 and 540 -> 580: the pieces merge
    assert [(p.start, p.end) for p in snapped] == [(0, 150), (150, 300), (300, 580), (580, 600)]
    assert [p.clip_index for p in snapped] == [0, 1, 2, 3]
    # offsets from the exact edge each keyframe stands for: the scene's start at 0, else the nearest
    # moved edge (120 of 120 and 180: ties go to the earlier; 300 itself; 540)
    offsets = [x * FPS for p in snapped for x in (p.cut_offset_start, p.cut_offset_end)]
    assert offsets == pytest.approx([0, 30, 30, 0, 0, 40, 40, 0])
    assert [p.drop for p in snapped] == ["", "", "", "too_short"]  # 20 frames < 1 s
    # a keyframe at a cut: the edge stays, offset 0
    cut = plan_clips(times[:90], [45], FPS, ClipParams(min_duration=0.5, max_duration=2.0))
    both = snap_to_keyframes(cut, [0, 45], times[:90], FPS, ClipParams(min_duration=0.5, max_duration=2.0))
    assert [(p.start, p.end, p.cut_offset_start, p.cut_offset_end) for p in both] == [(0, 45, 0, 0), (45, 90, 0, 0)]


@pytest.mark.parametrize("key,value", [("max_side", 256), ("max_fps", 15.0), ("audio", True)])
def test_reencoding_options_fail_fast_in_keyframe_mode(key: str, value) -> None:
    ClipOutputParams(**{key: value})  # fine when cutting exactly
    with pytest.raises(ValidationError, match=f"output.{key}"):
        ClipOutputParams(cut="keyframe", **{key: value})


def test_a_rotated_video_is_cut_exactly_in_keyframe_mode(video, tmp_path: Path) -> None:
    """A copy keeps stored frames and a display matrix; the clip must be upright: re-encoded instead."""
    path, _ = video
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(path), "-c", "copy",
                    "-metadata:s:v", "rotate=90", str(rotated)], check=True, capture_output=True)  # fmt: skip
    facts = probe(str(rotated))
    assert facts["rotation"] != 0
    result = analyse(str(rotated), facts, AnalysisParams(clips=CLIPS, output={"cut": "keyframe"}), str(tmp_path))
    kept = [c for c in result.clips if not c.plan["drop"]]
    assert kept and all(not c.plan["copy"] and not c.error for c in kept)
    assert (kept[0].out["width"], kept[0].out["height"]) == (240, 320)  # upright


def test_an_open_gop_video_has_no_clean_cut_point(tmp_path: Path) -> None:
    """x264's open GOPs: after each keyframe (but the first) come B-frames shown before it, which need the
    previous GOP; a copy from there would start with broken frames, so the video is cut exactly."""
    path = tmp_path / "open.mp4"
    cuts = make_gop_video(path, SEGMENTS[:2], extra=("-x264-params", "open-gop=1"))
    flagged = ffprobe_keyframe_times(path)
    assert len(flagged) == 6  # the keyframes are there (and flagged)...
    assert keyframes(str(path)) is None  # ...but none but the first is a clean cut point
    times = np.arange(180) / FPS
    plans = plan_clips(times, cuts, FPS, ClipParams(**CLIPS))
    assert keyframe_plans(str(path), plans, times, FPS, ClipParams(**CLIPS)) is plans


def test_recipe_with_keyframe_cuts(video, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, _ = video
    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "gop.mp4").write_bytes(path.read_bytes())
    cfg = tmp_path / "cfg.yaml"
    conf = {"clips": CLIPS, "output": {"cut": "keyframe"}, "filters": {"clip_size": {"min_side": 100}},
            "limits": {"isolate": False}}  # fmt: skip
    cfg.write_text(yaml.safe_dump(conf))
    out = tmp_path / "out"
    assert main(["video", "--input", str(corpus), "--output", str(out), "--no-progress", "--config", str(cfg)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["accounting_ok"]
    counts = m["kinds"]["clip"]["counts"]
    assert counts["input"] == 7 and counts["quarantined"] == 0  # every copied clip held its planned frames
    assert m["kinds"]["clip"]["reasons"]["dropped"]["too_short"] == 1
    rows = sorted(
        (r for f in sorted(out.glob("ledger/clip/*.parquet")) for r in pq.read_table(f).to_pylist()),
        key=lambda r: r["clip_index"],
    )
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [
        (0, 60), (60, 90), (120, 180), (180, 240), (240, 300), (335, 335), (360, 400)
    ]  # fmt: skip
    assert rows[2]["cut_offset_start"] == pytest.approx(20 / FPS) and rows[2]["cut_offset_end"] == 0.0
    assert rows[4]["cut_offset_end"] == pytest.approx(-10 / FPS)
    assert rows[5]["fate"]["reason"] == "too_short"
    # re-encoding options are refused before anything is read
    cfg.write_text(yaml.safe_dump({"output": {"cut": "keyframe", "max_side": 256}}))
    assert main(["video", "--input", str(corpus), "--output", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "output.max_side" in capsys.readouterr().err
