"""The video stages on generated videos whose truth is known by construction (FFmpeg lavfi sources
concatenated at known frames, camera moves over a still texture, drawtext overlays)."""

from __future__ import annotations

import itertools
import math
import os
import resource
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mmcurate.demo.video import CAMERA, Segment, make_video
from mmcurate.stages.video_analysis import AnalysisParams, analyse
from mmcurate.stages.video_clips import ClipParams, plan_clips, sample_frames
from mmcurate.stages.video_filters import FlowSpeed
from mmcurate.stages.video_probe import VideoBroken, display_size, probe, rotation_cw
from mmcurate.stages.video_scan import MotionParams, SceneParams, clip_motion, scan, similarity_fit


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[int]]]:
    root = tmp_path_factory.mktemp("videos")
    out = {}
    segs = [Segment("testsrc2", 60), Segment("smptebars", 45), Segment("mandelbrot", 75), Segment("rgbtestsrc", 40)]
    out["cuts"] = (root / "cuts.mp4", make_video(root / "cuts.mp4", segs, size=(320, 240)))
    camera = [Segment(k, 36, seed=i) for i, k in enumerate(CAMERA)]
    out["camera"] = (root / "camera.mp4", make_video(root / "camera.mp4", camera, size=(320, 180)))
    return out


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_cuts_found_at_the_frames_where_sources_change(videos, detector: str) -> None:
    path, truth = videos["cuts"]
    found = scan(str(path), SceneParams(detector=detector), MotionParams())
    assert truth == [60, 105, 180]
    assert found.cuts == truth
    assert found.cut_frame_numbers == truth  # constant frame rate: PTS numbering = decode order
    assert found.frames == 220
    assert not found.vfr


def _diagonal(path: Path) -> float:
    facts = probe(str(path))
    return math.hypot(facts["display_width"], facts["display_height"])


def test_camera_motion_guess_for_each_move(videos) -> None:
    path, cuts = videos["camera"]
    found = scan(str(path), SceneParams(), MotionParams())
    assert found.cuts == cuts  # a new texture per move: each move is its own scene
    bounds = [0, *cuts, found.frames]
    labels = []
    diagonal = _diagonal(path)
    for start, end in itertools.pairwise(bounds):
        scores, lab = clip_motion(found.pairs, start, end, 0, MotionParams(), diagonal)
        labels.append(lab["camera_motion"])
        if lab["camera_motion"] == "static":  # either side of the flow_speed filter's default minimum
            assert scores["flow_speed"] < FlowSpeed.Params().min / 2
        else:
            assert scores["flow_speed"] > FlowSpeed.Params().min * 5
    assert labels == list(CAMERA)


def test_camera_motion_follows_display_rotation(videos) -> None:
    """Stored frames turned 90 degrees clockwise for display: a stored pan left shows as a tilt."""
    path, cuts = videos["camera"]
    found = scan(str(path), SceneParams(), MotionParams())
    pan_left = (cuts[0], cuts[1])  # CAMERA order: static, pan_left, ...
    d = _diagonal(path)
    assert clip_motion(found.pairs, *pan_left, 0, MotionParams(), d)[1]["camera_motion"] == "pan_left"
    # content sliding right in stored axes slides down once turned clockwise: the camera tilts up
    assert clip_motion(found.pairs, *pan_left, 90, MotionParams(), d)[1]["camera_motion"] == "tilt_up"
    assert clip_motion(found.pairs, *pan_left, 180, MotionParams(), d)[1]["camera_motion"] == "pan_right"


def test_flow_pairs_never_straddle_a_cut(videos) -> None:
    path, cuts = videos["cuts"]
    found = scan(str(path), SceneParams(), MotionParams())
    bounds = [0, *cuts, found.frames]
    diagonal = _diagonal(path)
    for start, end in itertools.pairwise(bounds):
        scores, _ = clip_motion(found.pairs, start, end, 0, MotionParams(), diagonal)
        inside = found.pairs[(found.pairs[:, 0] >= start) & (found.pairs[:, 1] < end)]
        assert len(inside) >= 2
        per_second = inside[:, 3] / inside[:, 2] / diagonal  # display px per second, in frame diagonals
        assert scores["flow_speed_max"] == pytest.approx(per_second.max())
        assert scores["flow_speed"] == pytest.approx(per_second.mean())
        assert not ((found.pairs[:, 0] < start) & (found.pairs[:, 1] >= start) & (start > 0)).any()
    assert set(found.pairs[:, 1] - found.pairs[:, 0]) == {1.0}  # flow between a sampled frame and the next
    assert set(np.diff(found.pairs[:, 0])) <= {15.0, 30.0}  # sampled at 2 fps (a pair is skipped at a cut)


def test_similarity_fit_recovers_translation_and_zoom() -> None:
    h, w = 40, 60
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x -= x.mean()
    y -= y.mean()
    u = 1.5 + 0.1 * x - 0.02 * y
    v = -0.5 + 0.02 * x + 0.1 * y
    tx, ty, a, b = similarity_fit(u, v)
    assert (tx, ty, a, b) == pytest.approx((1.5, -0.5, 0.1, 0.02), abs=1e-4)


def test_plan_clips_splits_long_scenes_and_marks_short_ones() -> None:
    times = np.arange(0, 900) / 30.0  # 30 s at 30 fps
    plans = plan_clips(times, [30, 330], 30.0, ClipParams(min_duration=2.0, max_duration=4.0))
    spans = [(p.start, p.end, p.drop) for p in plans]
    # scene 0: 1 s -> too short; scene 1: 10 s -> 3 equal pieces; scene 2: 19 s -> 5 pieces
    assert spans[0] == (0, 30, "too_short")
    assert [(s, e) for s, e, _ in spans[1:4]] == [(30, 130), (130, 230), (230, 330)]
    assert len(spans) == 1 + 3 + 5
    assert all(d == "" for _, _, d in spans[1:])
    assert all(p.duration <= 4.0 + 1e-9 for p in plans)
    assert plans[-1].end == 900 and plans[-1].end_time == pytest.approx(30.0)
    assert [p.clip_index for p in plans] == list(range(len(plans)))
    assert sum(p.end - p.start for p in plans) == 900  # every frame in exactly one clip


def test_rotation_and_display_size_conventions() -> None:
    from fractions import Fraction

    assert [rotation_cw(r) for r in (0, -90, 90, 180, -180, 270)] == [0, 90, 270, 180, 180, 90]
    assert display_size(704, 576, Fraction(16, 11), 0) == (1024, 576)
    assert display_size(1280, 544, Fraction(1), 90) == (544, 1280)


def test_analyse_extracts_frame_exact_upright_clips(videos, tmp_path: Path) -> None:
    import av

    path, _cuts = videos["cuts"]
    facts = probe(str(path))
    assert (facts["frames"], facts["fps"], facts["rotation"]) == (220, 30.0, 0)
    params = AnalysisParams(clips=ClipParams(min_duration=1.4, max_duration=10.0))
    result = analyse(str(path), facts, params, str(tmp_path))
    spans = [(c.plan["start"], c.plan["end"], c.plan["drop"]) for c in result.clips]
    assert spans == [(0, 60, ""), (60, 105, ""), (105, 180, ""), (180, 220, "too_short")]
    for clip in result.clips[:3]:
        assert not clip.error
        with av.open(clip.mp4_path) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "h264"
            n = sum(1 for _ in c.decode(s))
        assert n == clip.plan["end"] - clip.plan["start"]
        frames, _ = sample_frames(clip.mp4_path, 3, 512)  # what the model stages get, from the clip file
        assert len(frames) == 3 and frames[0].size == (320, 240)
        assert clip.out["frames"] == n and len(clip.out["phash_crops"]) == 16
        assert clip.scores["duration"] == pytest.approx(n / 30.0)


def test_broken_inputs_raise_with_reason_codes(tmp_path: Path) -> None:
    (tmp_path / "text.mp4").write_text("no video here")
    with pytest.raises(VideoBroken) as exc:
        probe(str(tmp_path / "text.mp4"))
    assert exc.value.reason == "undecodable"
    audio = tmp_path / "tone.m4a"
    import subprocess

    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(audio)], check=True
    )
    with pytest.raises(VideoBroken) as exc:
        probe(str(audio))
    assert exc.value.reason == "no_video_stream"
    still = tmp_path / "still.mp4"
    args = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2", "-frames:v", "1", "-f", "mjpeg", str(still)]
    subprocess.run(args, check=True)
    with pytest.raises(VideoBroken) as exc:
        probe(str(still))
    assert exc.value.reason == "not_a_video"
    import pickle

    assert pickle.loads(pickle.dumps(exc.value)).reason == "not_a_video"  # crosses the child-process boundary


def test_decoder_handles_are_closed_and_memory_stays_flat(tmp_path: Path) -> None:
    """Data-Juicer #369 leaked PyAV containers; here every probe and scan closes what it opened, and
    300 videos later neither file descriptors nor peak memory have grown."""
    path = tmp_path / "small.mp4"
    make_video(path, [Segment("testsrc2", 20), Segment("pan_left", 20)], size=(160, 96))

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    for _ in range(20):  # warm caches, allocator pools and lazy imports
        probe(str(path))
        scan(str(path), SceneParams(), MotionParams())
    before_fds, before_rss = fds(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(300):
        probe(str(path))
        scan(str(path), SceneParams(), MotionParams())
    assert fds() == before_fds
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_rss) / 1024
    assert grown_mb < 20, f"peak RSS grew {grown_mb:.0f} MB over 300 videos"


def test_scene_and_clip_settings_fail_fast_with_the_key() -> None:
    with pytest.raises(ValueError, match="content detector rejects"):
        SceneParams(options={"no_such_option": 1})
    with pytest.raises(ValueError, match="max_duration"):
        ClipParams(min_duration=5, max_duration=2)


def test_analyse_writes_one_clip_file_per_extracted_clip_and_nothing_else(videos) -> None:
    path, _ = videos["cuts"]
    with tempfile.TemporaryDirectory() as work:
        result = analyse(str(path), probe(str(path)), AnalysisParams(), work)
        made = sorted(c.mp4_path for c in result.clips if c.mp4_path)
        assert sorted(str(p) for p in Path(work).iterdir()) == made and made


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_fast_frame_score_equals_pyscenedetects(videos, detector: str) -> None:
    """The detector we build scores every frame exactly as PySceneDetect's own class does."""
    import av
    import cv2
    from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

    path, _ = videos["cuts"]
    ours = SceneParams(detector=detector).make()
    stock = {"content": ContentDetector, "adaptive": AdaptiveDetector}[detector]()
    assert type(ours).__name__.startswith("Fast") and isinstance(ours, type(stock))
    with av.open(str(path)) as c:
        for n, frame in enumerate(c.decode(video=0)):
            img = cv2.resize(frame.to_ndarray(format="bgr24"), (256, 192), interpolation=cv2.INTER_LINEAR)
            tc = FrameTimecode(n, 30.0)
            assert ours._calculate_frame_score(tc, img) == stock._calculate_frame_score(tc, img)
    assert SceneParams(options={"weights": ContentDetector.Components(1, 1, 1, 1)}).make().__class__ is ContentDetector


def test_output_bounds_size_and_rate_and_keeps_or_drops_audio(tmp_path: Path) -> None:
    import subprocess

    import av

    from mmcurate.stages.video_clips import ClipOutputParams

    src = tmp_path / "av.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=50:duration=3",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(src)],
        check=True,
    )  # fmt: skip
    facts = probe(str(src))
    assert facts["has_audio"] and facts["audio_codec"] == "aac" and facts["fps"] == 50.0
    for audio in (False, True):
        out = ClipOutputParams(max_side=320, max_fps=25, audio=audio)
        work = tmp_path / f"w{audio}"
        work.mkdir()
        result = analyse(str(src), facts, AnalysisParams(output=out, clips=ClipParams(min_duration=1.0)), str(work))
        (clip,) = result.clips
        assert not clip.error
        with av.open(clip.mp4_path) as c:
            v = c.streams.video[0]
            assert (v.codec_context.width, v.codec_context.height) == (320, 180)
            assert float(v.guessed_rate) == 25.0
            assert sum(1 for _ in c.decode(v)) == 75  # 3 s at 25 fps
            assert bool(c.streams.audio) is audio
        assert clip.out["width"] == 320 and sample_frames(clip.mp4_path, 1, 512)[0][0].size == (320, 180)


def _ffmpeg(*args: str) -> None:
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _small_gray(path: Path) -> list[np.ndarray]:
    import av
    import cv2

    with av.open(str(path)) as c:
        return [
            cv2.resize(f.to_ndarray(format="gray"), (80, 60), interpolation=cv2.INTER_AREA).astype(np.int16)
            for f in c.decode(video=0)
        ]


def _assert_clips_frame_exact(src: Path, params: AnalysisParams, work: Path) -> tuple[int, int]:
    """Every frame of every clip is its planned source frame: closer to it than to either neighbour."""
    source = _small_gray(src)
    work.mkdir()
    facts = probe(str(src))
    result = analyse(str(src), facts, params, str(work))
    checked = 0
    for clip in result.clips:
        if clip.plan["drop"]:
            continue
        assert not clip.error
        frames = _small_gray(Path(clip.mp4_path))
        start, end = clip.plan["start"], clip.plan["end"]
        assert len(frames) == end - start
        for i, f in enumerate(frames):
            j = start + i
            here = np.abs(f - source[j]).mean()
            for k in (j - 1, j + 1):
                if 0 <= k < len(source):
                    assert here < np.abs(f - source[k]).mean(), (clip.plan, i)
            checked += 1
    return checked, result.facts["decoded_frames"]


def test_clips_are_frame_exact_with_audio_vfr_and_a_late_video_start(tmp_path: Path) -> None:
    """An audio track (it sets the MP4 clock), variable frame rate, and a video stream that starts
    1 s after the container's start all once shifted or duplicated clip frames."""
    clips = AnalysisParams(clips=ClipParams(min_duration=1.0, max_duration=2.0))
    src = "testsrc2=size=320x240:rate=30:duration=6"
    av30 = tmp_path / "av30.mp4"
    _ffmpeg("-f", "lavfi", "-i", src, "-f", "lavfi", "-i", "sine=duration=6", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", "-c:a", "aac", str(av30))  # fmt: skip
    assert _assert_clips_frame_exact(av30, clips, tmp_path / "w1") == (180, 180)
    vfr = tmp_path / "vfr.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-f", "lavfi",
            "-i", "testsrc2=size=320x240:rate=10:duration=4", "-filter_complex",
            "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-fps_mode", "passthrough", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", str(vfr))  # fmt: skip
    facts = probe(str(vfr))
    assert facts["vfr"]
    checked, decoded = _assert_clips_frame_exact(vfr, clips, tmp_path / "w2")
    assert checked == decoded >= 110  # every frame of the 25 fps and the 10 fps halves
    late = tmp_path / "late.mp4"
    _ffmpeg("-f", "lavfi", "-i", src, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(tmp_path / "v.mp4"))
    _ffmpeg("-itsoffset", "1.0", "-i", str(tmp_path / "v.mp4"), "-f", "lavfi", "-i", "sine=duration=7",
            "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(late))  # fmt: skip
    facts = probe(str(late))
    assert facts["start_time"] - facts["container_start"] == pytest.approx(1.0, abs=0.05)
    assert _assert_clips_frame_exact(late, clips, tmp_path / "w3") == (180, 180)


def test_streamed_webm_without_a_header_duration_is_probed(tmp_path: Path) -> None:
    import subprocess

    live = tmp_path / "live.webm"
    data = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2",
         "-c:v", "libvpx", "-deadline", "realtime", "-f", "webm", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    live.write_bytes(data)
    facts = probe(str(live))
    assert facts["frames"] == 50 and facts["duration"] == pytest.approx(2.0)


def test_plan_clips_splits_by_time_and_honours_both_bounds() -> None:
    # 10 s at 50 fps, then 20 s at 5 fps: one scene of 30 s
    times = np.concatenate([np.arange(500) / 50.0, 10.0 + np.arange(100) / 5.0])
    plans = plan_clips(times, [], 50.0, ClipParams(min_duration=2.0, max_duration=10.0))
    assert [round(p.duration, 6) for p in plans] == [10.0, 10.0, 10.0]
    assert [p.start for p in plans] == [0, 500, 550]
    # bounds closer than 2x: a 3.2 s scene gives a 3 s clip and a too-short remainder, not two 1.6 s pieces
    times = np.arange(96) / 30.0
    plans = plan_clips(times, [], 30.0, ClipParams(min_duration=2.0, max_duration=3.0))
    assert [(p.start, p.end, p.drop) for p in plans] == [(0, 90, ""), (90, 96, "too_short")]


def test_ffmpeg_and_preset_are_checked_before_the_run() -> None:
    from pydantic import ValidationError

    from mmcurate.stages.video_clips import ClipOutputParams

    ClipOutputParams().check()
    with pytest.raises(FileNotFoundError, match=r"output\.ffmpeg: '/bin/false' is no FFmpeg"):
        ClipOutputParams(ffmpeg="/bin/false").check()
    with pytest.raises(ValidationError, match="preset"):
        ClipOutputParams(preset="bogus")


def test_probe_states_the_stream_and_the_container_duration_as_ffprobe_does(tmp_path: Path) -> None:
    """Audio 0.6 s longer than the video: the container lasts as long as its longest stream, the video
    stream does not; both are in the facts (the ledger's columns), each equal to ffprobe's own, and
    `duration` (what clip planning uses) is the stream's."""
    import json
    import subprocess

    path = tmp_path / "av.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=2", "-f", "lavfi", "-i", "sine=duration=2.6",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path))  # fmt: skip
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    info = json.loads(out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    facts = probe(str(path))
    assert facts["stream_duration"] == pytest.approx(float(video["duration"]), abs=1e-3)
    assert facts["container_duration"] == pytest.approx(float(info["format"]["duration"]), abs=1e-3)
    assert facts["container_duration"] - facts["stream_duration"] > 0.4
    assert facts["duration"] == facts["stream_duration"]


def test_video_motion_is_its_clips_motion_weighted_by_duration(tmp_path: Path) -> None:
    """Two scenes, one still (2 s) and one panning (4 s): the video's flow speed is the duration-weighted
    mean of the two clips' own `flow_speed`, between the two and nearer the longer panning one; its
    Data-Juicer `motion` is NaN unless that method runs."""
    path = tmp_path / "two.mp4"
    make_video(path, [Segment("testsrc2", 50), Segment("pan_left", 100)], size=(320, 192))
    with tempfile.TemporaryDirectory() as work:
        result = analyse(str(path), probe(str(path)), AnalysisParams(clips=ClipParams(min_duration=1.0)), work)
    clips = [(c.scores["flow_speed"], c.scores["duration"]) for c in result.clips]
    assert len(clips) == 2
    (still, d1), (pan, d2) = clips
    assert still < pan
    assert result.facts["flow_speed"] == pytest.approx((still * d1 + pan * d2) / (d1 + d2))
    assert result.facts["flow_speed"] > (still + pan) / 2
    assert math.isnan(result.facts["motion"]) and "motion" not in result.clips[0].scores


def test_decoder_resize_finds_the_known_cuts(videos) -> None:
    """`scenes.resize: decoder` (swscale scales while converting) is another frame path, not the
    exact one (its flow differs), yet finds the same known cuts on generated scenes."""
    path, cuts = videos["cuts"]
    exact = scan(str(path), SceneParams(), MotionParams())
    fast = scan(str(path), SceneParams(resize="decoder"), MotionParams())
    assert exact.cuts == fast.cuts == cuts
    assert exact.working_size == fast.working_size
    assert not np.array_equal(exact.pairs[:, 3], fast.pairs[:, 3])
