"""Scene stitching on generated videos: one continuous shot with a white flash inserted (PySceneDetect
splits it; stitching merges it back), and hard cuts between different sources (they stay cuts)."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from mmcurate.demo.video import Segment, make_video
from mmcurate.stages.video_analysis import AnalysisParams, analyse
from mmcurate.stages.video_probe import probe
from mmcurate.stages.video_scan import MotionParams, SceneParams, scan, working_size
from mmcurate.stages.video_stitch import BoundaryFrames, StitchParams, similarity, thumbnail

FLASH_AT, FLASH_LEN = 75, 3
ON = {"enabled": True}


def _flash(src: Path, dst: Path, start: int, frames: int) -> Path:
    """`src` with frames [start, start + frames) painted white: a camera flash inside one shot."""
    box = f"drawbox=x=0:y=0:w=iw:h=ih:color=white@1:t=fill:enable='between(n,{start},{start + frames - 1})'"
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-vf", box]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", str(dst)]
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    return dst


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stitch")
    make_video(root / "pan.mp4", [Segment("pan_left", 150)], size=(320, 240), speed=2)
    make_video(root / "testsrc.mp4", [Segment("testsrc2", 150)], size=(320, 240))
    # Hard cuts: two textures of the same statistics (only the layout differs), then lavfi sources.
    make_video(root / "hard.mp4", [Segment("pan_left", 75), Segment("pan_left", 75, seed=5)], size=(320, 240), speed=2)
    segs = [Segment("testsrc2", 75), Segment("smptebars", 75), Segment("mandelbrot", 75)]
    make_video(root / "sources.mp4", segs, size=(320, 240))
    return {
        "pan_flash": _flash(root / "pan.mp4", root / "pan_flash.mp4", FLASH_AT, FLASH_LEN),
        "testsrc_flash": _flash(root / "testsrc.mp4", root / "testsrc_flash.mp4", FLASH_AT, FLASH_LEN),
        "hard": root / "hard.mp4",
        "sources": root / "sources.mp4",
    }


@pytest.mark.parametrize("name", ["pan_flash", "testsrc_flash"])
def test_a_flash_splits_the_shot_and_stitching_merges_it_back(videos, name: str) -> None:
    off = scan(str(videos[name]), SceneParams(), MotionParams())
    assert off.cuts == [FLASH_AT]  # PySceneDetect: two scenes, the second starting with the flash
    assert off.stitched == [] and off.cut_similarity == []
    on = scan(str(videos[name]), SceneParams(stitch=ON), MotionParams())
    assert on.cuts == [] and on.stitched == [FLASH_AT]
    assert on.cut_similarity[0] >= StitchParams().threshold
    assert on.cut_frame_numbers == off.cut_frame_numbers == [FLASH_AT]  # still what PySceneDetect reported
    np.testing.assert_array_equal(on.pairs, off.pairs)  # motion is untouched


def test_a_flash_scene_of_its_own_goes_with_both_its_cuts(videos) -> None:
    """With a tiny min_scene_len PySceneDetect makes the flash a scene: both its cuts are stitched."""
    path = str(videos["testsrc_flash"])
    off = scan(path, SceneParams(min_scene_len=2), MotionParams())
    assert off.cuts == [FLASH_AT, FLASH_AT + FLASH_LEN]
    on = scan(path, SceneParams(min_scene_len=2, stitch=ON), MotionParams())
    assert on.cuts == [] and on.stitched == off.cuts


@pytest.mark.parametrize(("name", "cuts"), [("hard", [75]), ("sources", [75, 150])])
def test_hard_cuts_between_different_shots_stay_cuts(videos, name: str, cuts: list[int]) -> None:
    off = scan(str(videos[name]), SceneParams(), MotionParams())
    assert off.cuts == cuts
    for detector in ("content", "adaptive"):
        on = scan(str(videos[name]), SceneParams(detector=detector, stitch=ON), MotionParams())
        assert on.cuts == cuts and on.stitched == []
        assert max(on.cut_similarity) < 0.5  # far below the 0.8 threshold, not just under it


def test_similarity_is_measured_on_the_frames_either_side_of_the_cut(videos) -> None:
    """The thumbnails the scan kept (ring buffer, copied out when the cut is reported) are those of
    frames c-1-j and c+j, j from skip_s to window_s: recomputed here from an independent decode."""
    import av
    import cv2

    path = videos["pan_flash"]
    size = working_size(320, 240)  # PySceneDetect's analysis frame: 256 x 192, linear resize
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    thumbs = [thumbnail(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR), 16) for f in frames]
    params, fps = StitchParams(), 30.0
    window, skip = round(params.window_s * fps), round(params.skip_s * fps)
    want = max(similarity(thumbs[FLASH_AT - 1 - j], thumbs[FLASH_AT + j], params.shift) for j in range(skip, window))
    inside = [similarity(thumbs[FLASH_AT - 1], thumbs[FLASH_AT + j], 1) for j in range(FLASH_LEN)]
    got = scan(str(path), SceneParams(stitch=ON), MotionParams()).cut_similarity
    assert got == [pytest.approx(want, abs=1e-4)]
    assert max(inside) < 0.5  # the flash frames themselves match nothing: they are stepped over


def test_analyse_plans_one_clip_and_puts_the_stitched_cut_in_the_facts(videos, tmp_path: Path) -> None:
    path = str(videos["testsrc_flash"])
    facts = probe(path)
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    off = analyse(path, facts, AnalysisParams(), str(tmp_path / "off"))
    assert [(c.plan["start"], c.plan["end"]) for c in off.clips] == [(0, FLASH_AT), (FLASH_AT, 150)]
    assert off.facts["cuts"] == [FLASH_AT] and off.facts["stitched_cuts"] == []
    on = analyse(path, facts, AnalysisParams(scenes={"stitch": ON}), str(tmp_path / "on"))
    assert [(c.plan["start"], c.plan["end"]) for c in on.clips] == [(0, 150)]
    assert on.facts["cuts"] == [] and on.facts["stitched_cuts"] == [FLASH_AT]
    assert on.facts["cut_frame_numbers"] == [FLASH_AT]
    assert on.facts["cut_similarity"][0] >= 0.8
    assert not on.clips[0].error and on.clips[0].out["frames"] == 150


def test_boundary_frames_keep_only_the_frames_near_cuts() -> None:
    """Memory stays flat: a ring of `lag + window` thumbnails plus 2 x window per reported cut."""
    params, fps, lag = StitchParams(), 30.0, 40
    keep = BoundaryFrames(params, fps, lag)
    rng = np.random.default_rng(0)
    times: list[float] = []
    cut_tcs: list[SimpleNamespace] = []
    frames, every = 6000, 300
    for n in range(frames):
        times.append(n / fps)
        if n % every == every // 2 and n > every:  # reported `lag` frames after the cut it names
            cut_tcs.append(SimpleNamespace(seconds=(n - lag) / fps))
        keep.add(n, rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), times, cut_tcs)
    assert len(keep.ring) == keep.ring.maxlen == lag + keep.window + 2
    assert len(keep.kept) == len(cut_tcs) * 2 * keep.window
    cuts = [round(tc.seconds * fps) for tc in cut_tcs]
    assert all(keep.frame(c + d) is not None for c in cuts for d in (-keep.window, keep.window - 1))
    assert keep.frame(cuts[0] - keep.window - 1) is None
    kept, removed, scores = keep.stitch(cuts, frames)
    assert kept == cuts and removed == [] and all(s < 0.5 for s in scores)  # noise frames: nothing alike


def test_a_cut_without_frames_to_compare_is_kept() -> None:
    keep = BoundaryFrames(StitchParams(), 30.0, 0)
    assert math.isnan(keep.boundary(50, 50, 0, 100))
    assert keep.stitch([50], 100) == ([50], [], [pytest.approx(math.nan, nan_ok=True)])


@pytest.mark.parametrize(
    ("stitch", "key"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"window_s": 0}, "window_s"),
        ({"skip_s": -0.1}, "skip_s"),
        ({"skip_s": 0.5, "window_s": 0.5}, "skip_s"),
        ({"side": 2}, "side"),
        ({"side": 16, "shift": 8}, "shift"),
        ({"enable": True}, "enable"),
    ],
)
def test_bad_stitch_settings_fail_fast_naming_the_key(stitch: dict, key: str) -> None:
    with pytest.raises(ValidationError, match=key) as info:
        AnalysisParams(scenes={"stitch": stitch})
    assert "stitch" in str(info.value)


def test_stitching_is_off_by_default_and_in_the_recipe_config() -> None:
    import yaml

    from mmcurate.pipelines.video import CORPUS

    assert SceneParams().stitch == StitchParams() and not StitchParams().enabled
    shipped = yaml.safe_load((Path(__file__).parents[1] / "pipelines/configs/video.yaml").read_text())
    assert StitchParams(**shipped["scenes"]["stitch"]) == StitchParams()  # the yaml states the defaults
    config = CORPUS.config_class(scenes={"stitch": {"enabled": True, "threshold": 0.9}})
    assert config.scenes.stitch.enabled and config.scenes.stitch.threshold == 0.9


def test_select_refuses_a_stitching_change_and_keeps_the_parents() -> None:
    """Stitching decides where clips are cut: `mmcurate select` copies clips, so it must not change."""
    from mmcurate.pipelines.config import ConfigError
    from mmcurate.pipelines.video import CORPUS

    parent = CORPUS.config_class(scenes={"stitch": ON})
    CORPUS.check_select(CORPUS.config_class(**parent.model_dump()), parent, {})  # inherited as it ran: fine
    with pytest.raises(ConfigError, match="scenes"):
        CORPUS.check_select(CORPUS.config_class(), parent, {})


@pytest.mark.peerdata
def test_real_videos_only_an_over_split_shot_is_stitched(peer_data: Path) -> None:
    """Data-Juicer's video3: one shot, split where a laptop is closed (the only cut) -> stitched.
    PySceneDetect's testvideo: hard cuts and a fade-in from black -> all kept."""
    video3 = peer_data / "data_juicer/tests_ops_data/video3.mp4"
    testvideo = peer_data / "pyscenedetect/resources/testvideo.mp4"
    if not (video3.exists() and testvideo.exists()):
        pytest.skip("peer videos not present")
    over = scan(str(video3), SceneParams(stitch=ON), MotionParams())
    assert len(over.cut_frame_numbers) == 1 and over.stitched == over.cut_frame_numbers and over.cuts == []
    kept = scan(str(testvideo), SceneParams(stitch=ON), MotionParams())
    assert kept.stitched == [] and len(kept.cuts) == 3 and max(kept.cut_similarity) < 0.5


@pytest.mark.slow
def test_the_recipe_writes_stitched_cuts_to_the_video_ledger(videos, tmp_path: Path) -> None:
    import shutil

    import apache_beam as beam
    import pyarrow.parquet as pq
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from mmcurate.pipelines.run import new_run
    from mmcurate.pipelines.video import CORPUS

    corpus = tmp_path / "in"
    corpus.mkdir()
    shutil.copy(videos["testsrc_flash"], corpus / "flash.mp4")
    shutil.copy(videos["sources"], corpus / "sources.mp4")
    config = CORPUS.config_class(scenes={"stitch": ON}, filters={}, limits={"isolate": False})
    units = CORPUS.list_units([str(corpus)], config)
    out = tmp_path / "out"
    with TestPipeline() as p:
        manifest = CORPUS.build(p, units, config, new_run(CORPUS, config, [str(corpus)], units, str(out)))
        assert_that(manifest | beam.Map(lambda m: m["kinds"]["clip"]["counts"]["input"]), equal_to([1 + 3]))
    rows = [r for f in sorted(out.glob("ledger/video/*.parquet")) for r in pq.read_table(f).to_pylist()]
    videos_by_name = {Path(r["source"]["uri"]).name: r for r in rows}
    flash, sources = videos_by_name["flash.mp4"], videos_by_name["sources.mp4"]
    assert (flash["cuts"], flash["stitched_cuts"], flash["clips"]) == ([], [FLASH_AT], 1)
    assert flash["cut_similarity"][0] >= 0.8
    assert (sources["cuts"], sources["stitched_cuts"]) == ([75, 150], [])
