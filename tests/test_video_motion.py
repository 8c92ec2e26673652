"""`motion.method: datajuicer` against the real Data-Juicer op: goldens made once by Data-Juicer 1.6.1's
`video_motion_score_filter` on its own test videos (`tests/goldens/make_datajuicer_motion.py`, run in a
throw-away environment), reproduced here with our decode-order reading, to 1e-4 (in practice exactly)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mmcurate.demo.video import Segment, make_video
from mmcurate.stages.video_analysis import AnalysisParams, analyse
from mmcurate.stages.video_clips import ClipParams
from mmcurate.stages.video_motion import DataJuicerMotion, datajuicer_motion, datajuicer_scores, resized_dimensions
from mmcurate.stages.video_probe import probe
from mmcurate.stages.video_scan import MotionParams

GOLDENS = json.loads((Path(__file__).parent / "goldens" / "datajuicer_motion.json").read_text())
SETTINGS = {  # golden name -> (sampling_fps, our options)
    "size_240": (2.0, {"size": [240]}),
    "max_size_320": (2.0, {"max_size": 320}),
    "relative": (2.0, {"relative": True}),
    "sampling_fps_1": (1.0, {}),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("video", ["video1.mp4", "video4.mp4", "video5.mp4"])
def test_datajuicer_motion_equals_the_real_op(peer_data: Path, setting: str, video: str) -> None:
    sampling_fps, options = SETTINGS[setting]
    path = peer_data / "data_juicer" / "tests_ops_data" / video
    golden = GOLDENS["goldens"][setting][video]
    got = datajuicer_motion(str(path), sampling_fps, DataJuicerMotion(**options))
    assert got == pytest.approx(golden["score"], abs=1e-4)
    import cv2

    frames = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    (pairs,) = datajuicer_scores(str(path), [(0, frames)], sampling_fps, DataJuicerMotion(**options))
    assert len(pairs) == golden["trace"]["n_pairs"]


def test_the_default_setting_on_one_video(peer_data: Path) -> None:
    """Full-size frames (Data-Juicer's default), the slowest setting: one video."""
    path = peer_data / "data_juicer" / "tests_ops_data" / "video5.mp4"
    assert datajuicer_motion(str(path)) == pytest.approx(GOLDENS["goldens"]["default"]["video5.mp4"]["score"], abs=1e-4)


def test_resized_dimensions_keeps_data_juicers_height_width_order() -> None:
    """Data-Juicer returns (h, w) and hands it to cv2.resize, which reads (w, h): the aspect is swapped;
    the goldens' flow sizes (426 x 240 for a 640 x 360 video at size [240]) say so."""
    assert resized_dimensions(360.0, 640.0, [240], None, 1) == (240, 426)
    assert resized_dimensions(360.0, 640.0, None, 320, 1) == (180, 320)
    assert resized_dimensions(640.0, 362.0, [240], None, 1) == (424, 240)
    assert tuple(GOLDENS["goldens"]["size_240"]["video1.mp4"]["trace"]["flow_hw"][0]) == (426, 240)


def test_clips_are_scored_as_the_op_scores_a_video_of_their_frames(tmp_path: Path) -> None:
    """Per clip, `method: datajuicer` writes the op's mean over the clip's own sampled frames (and
    its max); the camera-motion fields still come from the fast flow."""
    path = tmp_path / "two.mp4"
    make_video(path, [Segment("testsrc2", 50), Segment("pan_left", 60)], size=(320, 192))
    params = AnalysisParams(clips=ClipParams(min_duration=1.0), motion=MotionParams(method="datajuicer"))
    with tempfile.TemporaryDirectory() as work:
        result = analyse(str(path), probe(str(path)), params, work)
        fast = analyse(str(path), probe(str(path)), AnalysisParams(clips=ClipParams(min_duration=1.0)), work)
    ranges = [(c.plan["start"], c.plan["end"]) for c in result.clips]
    pairs = datajuicer_scores(str(path), ranges, 2.0, DataJuicerMotion())
    assert len(ranges) == 2
    for clip, mine, other in zip(result.clips, pairs, fast.clips, strict=True):
        assert clip.scores["motion"] == pytest.approx(float(np.mean(mine)))
        assert clip.scores["motion_max"] == pytest.approx(max(mine))
        assert clip.scores["camera_pan"] == other.scores["camera_pan"]
        assert clip.labels == other.labels
    still, pan = (c.scores["motion"] for c in result.clips)
    assert still < pan


def test_datajuicer_filter_needs_datajuicer_method_and_thresholds_its_score(tmp_path: Path) -> None:
    """`filters.motion` means Data-Juicer's number: refused (naming the key) with the fast method,
    which writes `flow_speed` only; with `method: datajuicer` it decides on Data-Juicer's score."""
    from mmcurate.pipelines.config import ConfigError, load_config
    from mmcurate.pipelines.video import CORPUS
    from mmcurate.stages.video_filters import Motion

    bad = tmp_path / "bad.yaml"
    bad.write_text("filters: {motion: {min: 0.25}}\n")
    with pytest.raises(ConfigError, match=r"filters\.motion: .*motion\.method: datajuicer"):
        load_config(bad, CORPUS.config_class, CORPUS.defaults)
    good = tmp_path / "good.yaml"
    good.write_text("motion: {method: datajuicer}\nfilters: {motion: {min: 0.25}}\n")
    config = load_config(good, CORPUS.config_class, CORPUS.defaults)
    fields = CORPUS.fields(config)["clip"].scores
    assert {"motion", "motion_max", "flow_speed"} <= set(fields)
    assert "motion" not in CORPUS.fields(CORPUS.config_class())["clip"].scores
    motion = Motion(Motion.Params(min=0.25))
    assert motion.decide({"motion": 0.2, "flow_speed": 1.0}, {}) == "low_motion"
    assert motion.decide({"motion": 0.3, "flow_speed": 0.0}, {}) is None
    for name in ("flow_speed", "motion"):  # an empty range fails fast, naming the filter
        bad.write_text(f"motion: {{method: datajuicer}}\nfilters: {{{name}: {{min: 0.5, max: 0.4}}}}\n")
        with pytest.raises(ConfigError, match=rf"filters\.{name}: max \(0\.4\) must lie above min"):
            load_config(bad, CORPUS.config_class, CORPUS.defaults)
