"""Real-world videos from other projects (../shared/peer-data) through the video stages and pipeline.

PySceneDetect's own goldens and test videos (VFR, non-square pixels, rotation, delayed start), decord's
rotated and corrupted files and video2dataset's real WebDataset shard (three of whose `.mp4` members
are JPEG stills). Every expectation is either the other project's own golden / metadata or computed
here by an independent reader (PyAV, decord). Skipped cleanly when ../shared/peer-data is absent.
"""

from __future__ import annotations

import collections
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmcurate.cli import main
from mmcurate.stages.video_analysis import AnalysisParams, VideoResult, analyse
from mmcurate.stages.video_clips import ClipParams
from mmcurate.stages.video_probe import VideoBroken, probe
from mmcurate.stages.video_scan import MotionParams, SceneParams, scan

pytestmark = pytest.mark.peerdata

RES = "pyscenedetect/resources"
GOLDEN_VIDEOS = ("counter.mp4", "fades.mp4", "goldeneye-vfr-drop3.mp4", "testvideo.mp4")
DETECTOR_PARAMS = {  # golden name parts -> (our detector, threshold)
    ("ContentDetector", "default"): ("content", None),
    ("ContentDetector", "t30"): ("content", 30.0),
    ("AdaptiveDetector", "default"): ("adaptive", None),
    ("AdaptiveDetector", "t5"): ("adaptive", 5.0),
}
GOLDEN_CASES = [(v, d, p) for v in GOLDEN_VIDEOS for d, p in DETECTOR_PARAMS]


def need(peer_data: Path, rel: str) -> Path:
    path = peer_data / rel
    if not path.exists():
        pytest.skip(f"peer data {rel} not present")
    return path


def gray_frames(path: Path | str, size: tuple[int, int]) -> list[np.ndarray]:
    """Every frame of `path` in decode order (PyAV, no rotation applied), grayscale at `size` (w, h)."""
    import av

    with av.open(str(path)) as container:
        return [
            f.to_ndarray(format="gray", width=size[0], height=size[1]).astype(np.float32)
            for f in container.decode(video=0)
        ]


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def closest_of_neighbours(got: np.ndarray, src: list[np.ndarray], want: int, same: float = 0.5) -> int:
    """Assert `got` is nearer source frame `want` than frames want-1 and want+1; return how many
    neighbours could be told apart (a neighbour within `same` of frame `want` is the same picture)."""
    d = mad(got, src[want])
    told = 0
    for other in (want - 1, want + 1):
        if 0 <= other < len(src) and mad(src[other], src[want]) >= same:
            assert d < mad(got, src[other]), (want, other, d, mad(got, src[other]))
            told += 1
    return told


def clip_stream(path: str) -> dict:
    """What PyAV reads from an extracted clip: size, sample aspect ratio, frame count, first-frame rotation."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "sar": stream.sample_aspect_ratio,
            "frames": len(frames),
            "rotation": frames[0].rotation if frames else None,
        }


def analysed(path: Path, tmp_path: Path, params: AnalysisParams) -> VideoResult:
    return analyse(str(path), probe(str(path)), params, str(tmp_path))


# 1. PySceneDetect's goldens, reproduced exactly.


def test_golden_cases_cover_every_golden_of_a_present_video(peer_data: Path) -> None:
    """The parametrized cases below are all the Content/Adaptive goldens whose video is in resources/."""
    folder = need(peer_data, f"{RES}/goldens")
    found = set()
    for g in folder.glob("*.json"):
        video, detector, params = g.name.removesuffix(".json").rsplit(".", 2)
        if (detector, params) in DETECTOR_PARAMS and (peer_data / RES / video).exists():
            found.add((video, detector, params))
    assert found == set(GOLDEN_CASES)


@pytest.mark.parametrize(("video", "detector", "params"), GOLDEN_CASES, ids=lambda v: str(v))
def test_pyscenedetect_golden(peer_data: Path, video: str, detector: str, params: str) -> None:
    path = need(peer_data, f"{RES}/{video}")
    golden = json.loads(need(peer_data, f"{RES}/goldens/{video}.{detector}.{params}.json").read_text())
    ours, threshold = DETECTOR_PARAMS[(detector, params)]
    result = scan(str(path), SceneParams(detector=ours, threshold=threshold), MotionParams())
    assert result.cut_frame_numbers == golden["cuts"]
    if video == "goldeneye-vfr-drop3.mp4":
        # Goldens number frames by PTS x fps; with frames dropped, the decode-order indices are lower.
        assert result.vfr
        assert result.cuts == [60, 140]
        assert result.frames == 160
    else:  # constant frame rate: PTS numbering and decode order agree
        assert not result.vfr
        assert result.cuts == golden["cuts"]


# 2. Rotation: what decord (which applies the display matrix) returns is the upright frame.


@pytest.mark.parametrize(
    ("rel", "rotation"),
    [
        ("decord/video_0.mov", 0),
        ("decord/video_90.mov", 90),
        ("decord/video_180.mov", 180),
        ("decord/video_270.mov", 270),
        (f"{RES}/issue-134-rotate.mp4", 90),  # display matrix -90 (counter-clockwise) -> turn 90 clockwise
    ],
)
def test_probe_rotation_matches_decord(peer_data: Path, rel: str, rotation: int) -> None:
    import av
    import decord

    path = str(need(peer_data, rel))
    facts = probe(path)
    assert facts["rotation"] == rotation
    reader = decord.VideoReader(path, num_threads=1)
    upright = reader[0].asnumpy()
    assert facts["frames"] == len(reader)
    del reader
    h, w = upright.shape[:2]
    assert (facts["display_width"], facts["display_height"]) == (w, h)
    # Turning the stored frame (PyAV applies no rotation) clockwise by `rotation` gives decord's frame.
    with av.open(path) as container:
        stored = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert (stored.shape[1], stored.shape[0]) == (facts["width"], facts["height"])
    turned = np.rot90(stored, k=-rotation // 90)
    assert turned.shape == upright.shape
    assert mad(turned.astype(np.float32), upright.astype(np.float32)) < 1.0
    for other in {0, (360 - rotation) % 360} - {rotation}:  # no rotation, or the other way round, would not
        wrong = np.rot90(stored, k=-other // 90)
        if wrong.shape == upright.shape:
            assert mad(wrong.astype(np.float32), upright.astype(np.float32)) > 10.0


def test_issue_134_display_size(peer_data: Path) -> None:
    facts = probe(str(need(peer_data, f"{RES}/issue-134-rotate.mp4")))
    assert (facts["width"], facts["height"]) == (1280, 544)
    assert (facts["rotation"], facts["display_width"], facts["display_height"]) == (90, 544, 1280)


def test_rotated_clips_are_upright(peer_data: Path, tmp_path: Path) -> None:
    """issue-134-rotate.mp4's clips are stored upright (544x1280), without rotation metadata."""
    import decord

    path = need(peer_data, f"{RES}/issue-134-rotate.mp4")
    # min_duration 4.5 s only bounds the work (fewer clips to cut).
    result = analysed(path, tmp_path, AnalysisParams(clips=ClipParams(min_duration=4.5)))
    kept = [c for c in result.clips if c.mp4_path]
    assert kept
    reader = decord.VideoReader(str(path), num_threads=1)
    for c in kept:
        assert not c.error
        info = clip_stream(c.mp4_path)
        assert (info["width"], info["height"]) == (544, 1280)
        assert info["rotation"] == 0
        assert info["frames"] == c.plan["end"] - c.plan["start"]
        first = gray_frames(c.mp4_path, (68, 160))[0]
        src = reader[c.plan["start"]].asnumpy()  # upright, as decord shows it
        upright = np.asarray(Image.fromarray(src).convert("L").resize((68, 160), Image.Resampling.BILINEAR), np.float32)
        assert mad(first, upright) < 6.0
        assert mad(first, upright) < mad(first, upright[::-1, ::-1]) / 2  # not upside down
    del reader


# 3. A corrupted file: probe passes (its first frame decodes), the full decode fails.


def test_corrupted_is_decode_error(peer_data: Path, tmp_path: Path) -> None:
    path = str(need(peer_data, "decord/corrupted.mp4"))
    facts = probe(path)
    with pytest.raises(VideoBroken) as err:
        analyse(path, facts, AnalysisParams(), str(tmp_path))
    assert err.value.reason == "decode_error"


# 4. Variable frame rate, non-square pixels, delayed start.


def test_vfr_probe(peer_data: Path) -> None:
    facts = probe(str(need(peer_data, f"{RES}/goldeneye-vfr-drop3.mp4")))
    assert facts["vfr"] is True
    assert facts["avg_fps"] < facts["fps"]
    assert facts["frames"] == 160


def test_sar_probe_and_square_pixel_clips(peer_data: Path, tmp_path: Path) -> None:
    """issue-195-aspect-ratio.mp4 is 704x576 at SAR 16:11: shown (and clipped) at 1024x576, square pixels."""
    path = need(peer_data, f"{RES}/issue-195-aspect-ratio.mp4")
    facts = probe(str(path))
    assert (facts["width"], facts["height"], facts["sar"]) == (704, 576, "16:11")
    assert (facts["display_width"], facts["display_height"]) == (1024, 576)
    # min_duration 5.5 s only bounds the work (fewer clips to cut); the scenes' own lengths decide which.
    params = AnalysisParams(clips=ClipParams(min_duration=5.5, max_duration=10.0))
    result = analyse(str(path), facts, params, str(tmp_path))
    kept = [c for c in result.clips if c.mp4_path]
    assert kept
    src = gray_frames(path, (128, 72))  # the stored 704x576 frame squeezed to 16:9, as it is meant to be seen
    for c in kept:
        assert not c.error
        info = clip_stream(c.mp4_path)
        assert info["sar"] in (None, 0, 1)
        assert (info["width"], info["height"]) == (1024, 576)
        assert info["frames"] == c.plan["end"] - c.plan["start"]
        first = gray_frames(c.mp4_path, (128, 72))[0]
        assert mad(first, src[c.plan["start"]]) < 4.0  # the whole picture, stretched, not cropped or padded


def test_delayed_start(peer_data: Path, tmp_path: Path) -> None:
    """delayed_start.mp4's first frame is at 1.075 s; a clip of all of it still starts at its first frame."""
    path = need(peer_data, f"{RES}/delayed_start.mp4")
    facts = probe(str(path))
    assert facts["start_time"] == pytest.approx(1.075, abs=1e-3)
    result = analyse(str(path), facts, AnalysisParams(clips=ClipParams(min_duration=0.5)), str(tmp_path))
    assert len(result.clips) == 1 and result.clips[0].mp4_path
    c = result.clips[0]
    assert (c.plan["start"], c.plan["end"]) == (0, facts["frames"])
    assert c.plan["start_time"] == 0.0  # clip times count from the first frame
    src = gray_frames(path, (96, 64))
    clip = gray_frames(c.mp4_path, (96, 64))
    assert len(clip) == len(src) == facts["frames"]
    # It opens on two black frames (fading in): every frame of the clip is its own source frame.
    told = sum(closest_of_neighbours(got, src, i) for i, got in enumerate(clip))
    assert told >= len(clip)


# 5. Frame accuracy: a clip holds exactly source frames [start, end).


def test_clips_are_frame_accurate(peer_data: Path, tmp_path: Path) -> None:
    path = need(peer_data, f"{RES}/testvideo.mp4")
    size = (160, 90)
    src = gray_frames(path, size)
    result = analysed(path, tmp_path, AnalysisParams(clips=ClipParams(min_duration=1.0, max_duration=10.0)))
    kept = [c for c in result.clips if c.mp4_path]
    assert len(kept) >= 3
    checked = 0
    for c in kept:
        start, end = c.plan["start"], c.plan["end"]
        assert not c.error
        clip = gray_frames(c.mp4_path, size)
        assert len(clip) == end - start
        checked += closest_of_neighbours(clip[0], src, start)
        checked += closest_of_neighbours(clip[-1], src, end - 1)
    assert checked >= len(kept)  # most boundaries are distinguishable; a silent all-skip would be a bug


# 6. video2dataset's real shard (and decord's corrupted file) through the whole pipeline.


def test_video2dataset_shard_through_pipeline(peer_data: Path, tmp_path: Path) -> None:
    tar = need(peer_data, "video2dataset/tests_test_files/return_all_test.tar")
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(need(peer_data, "decord/corrupted.mp4"), folder / "corrupted.mp4")
    cfg = tmp_path / "video.yaml"
    cfg.write_text("filters: {clip_size: {min_side: 64}}\nclips: {min_duration: 1.0}\n")
    out = tmp_path / "out"
    args = ["video", "--input", str(tar), str(folder), "--output", str(out), "--no-progress", "--config", str(cfg)]
    assert main(args) == 0

    # What the input shard holds, read independently.
    captions, stills, real = {}, {"000000014.mp4", "000000025.mp4", "000000356.mp4"}, set()
    with tarfile.open(tar) as tf:
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)
            if ext == "txt":
                captions[key] = tf.extractfile(m).read().decode("utf-8").strip()
            elif ext == "mp4" and m.name not in stills:
                real.add(m.name)
    assert len(real) == 3

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["accounting_ok"] is True
    c = manifest["kinds"]["video"]["counts"]
    assert c["input"] == 7  # 6 from the shard + the corrupted file
    assert c["input"] == c["kept"] + c["dropped"] + c["quarantined"]
    assert c["quarantined"] == 4
    assert manifest["kinds"]["video"]["reasons"]["quarantined"] == {"not_a_video": 3, "decode_error": 1}

    ledger = [r for f in sorted((out / "ledger" / "video").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    from_tar = {r["source"]["member"]: r for r in ledger if r["source"]["uri"] == str(tar)}
    assert len(from_tar) == 6  # counts input 6 for the shard
    assert len(ledger) == 7
    for name in real:
        assert from_tar[name]["fate"]["status"] in ("kept", "dropped"), from_tar[name]["fate"]

    quarantined = [
        r for f in sorted((out / "quarantined" / "video").glob("*.parquet")) for r in pq.read_table(f).to_pylist()
    ]
    reasons = {r["source"].rsplit("#", 1)[1]: r["reason"] for r in quarantined}
    assert reasons == {**dict.fromkeys(stills, "not_a_video"), "corrupted.mp4": "decode_error"}
    corrupted = next(r for r in quarantined if r["source"].endswith("#corrupted.mp4"))
    assert corrupted["source"].startswith(str(folder))

    clips = manifest["kinds"]["clip"]["counts"]
    assert clips["input"] == sum(r["clips"] for r in ledger)
    assert clips["input"] == clips["kept"] + clips["dropped"] + clips["quarantined"]
    assert clips["kept"] >= 1

    # The clip shards: mp4 + json + txt per clip, json naming its source video, times, frames and scores.
    samples: dict[str, dict[str, bytes]] = collections.defaultdict(dict)
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                samples[key][ext] = tf.extractfile(m).read()
    assert len(samples) == clips["kept"] == manifest["totals"]["samples"]
    video_ids = {r["id"]: r for r in ledger}
    for key, sample in samples.items():
        assert set(sample) == {"mp4", "json", "txt"}, key
        meta = json.loads(sample["json"])
        assert meta["id"] == key
        assert meta["source"]["uri"] == str(tar)
        assert meta["source"]["member"] in real
        video = video_ids[meta["video_id"]]
        assert video["source"]["member"] == meta["source"]["member"]
        assert video["fate"]["status"] == "kept"
        assert 0 <= meta["start_frame"] < meta["end_frame"] <= video["decoded_frames"]
        assert 0 <= meta["start_time"] < meta["end_time"]
        assert meta["end_time"] - meta["start_time"] >= 1.0
        assert {"duration", "flow_speed", "width", "height"} <= set(meta["scores"])
        assert all(isinstance(v, float) for v in meta["scores"].values())
        stem = meta["source"]["member"].rsplit(".", 1)[0]
        assert sample["txt"].decode("utf-8") == captions[stem] == meta["caption"]
        clip_file = tmp_path / f"{key}.mp4"
        clip_file.write_bytes(sample["mp4"])
        info = clip_stream(str(clip_file))
        assert (info["width"], info["height"]) == (meta["width"], meta["height"])
        assert min(info["width"], info["height"]) >= 64
        assert info["frames"] == meta["end_frame"] - meta["start_frame"]


@pytest.mark.parametrize(("downscale", "frame_skip"), [(2, 0), (4, 1), (3, 2)])
def test_downscale_and_frame_skip_cut_where_pyscenedetect_cuts(
    peer_data: Path, downscale: int, frame_skip: int
) -> None:
    """PySceneDetect's own SceneManager with the same `downscale` and `frame_skip` on its test video
    (frame_skip moves cuts: 212 and 692 appear at skip 1, 213 and 396 at skip 2): our cuts equal its."""
    from scenedetect import ContentDetector, SceneManager, open_video

    path = need(peer_data, f"{RES}/testvideo.mp4")
    manager = SceneManager()
    manager.auto_downscale = False
    manager.downscale = downscale
    manager.add_detector(ContentDetector())
    manager.detect_scenes(open_video(str(path), backend="pyav"), frame_skip=frame_skip)
    theirs = [scene[0].frame_num for scene in manager.get_scene_list()[1:]]
    ours = scan(str(path), SceneParams(downscale=downscale, frame_skip=frame_skip), MotionParams())
    assert theirs and ours.cut_frame_numbers == theirs


@pytest.mark.parametrize("setting", ["cuts_original_fps", "cuts_10"])
def test_video2dataset_cut_settings_cut_where_its_scene_manager_cuts(peer_data: Path, setting: str) -> None:
    """video2dataset's CutDetectionSubsampler, as its code runs PySceneDetect: at the original fps
    with downscale = width // 64 and auto_downscale off; for a `framerates` entry (10) a fresh
    SceneManager at the auto downscale with frame_skip = max(int(fps // 10) - 1, 0). Our
    `downscale_width: 64` / `target_fps: 10` give the same cuts."""
    from scenedetect import ContentDetector, SceneManager, open_video

    path = need(peer_data, f"{RES}/testvideo.mp4")
    video = open_video(str(path), backend="pyav")
    manager = SceneManager()
    manager.add_detector(ContentDetector(threshold=27, min_scene_len=15))
    if setting == "cuts_original_fps":
        manager.auto_downscale = False
        manager.downscale = video.frame_size[0] // 64
        manager.detect_scenes(video=video)
        params = SceneParams(threshold=27, min_scene_len=15, downscale_width=64)
    else:
        manager.detect_scenes(video=video, frame_skip=max(int(video.frame_rate // 10) - 1, 0))
        params = SceneParams(threshold=27, min_scene_len=15, target_fps=10)
    theirs = [scene[0].frame_num for scene in manager.get_scene_list()[1:]]
    assert theirs and scan(str(path), params, MotionParams()).cut_frame_numbers == theirs
