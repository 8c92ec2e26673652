"""video_motion: the two `motion.method`s side by side, speed next to agreement, and the measurements
behind `flow_speed`'s default minimum. On the video bench's 60 s synthetic 360p input (each segment
a known camera move, a still title card or a still test pattern: ground truth "moving" or "still")
and on the peer videos under ../shared/peer-data (Data-Juicer's, PySceneDetect's, video2dataset's,
NeMo Curator's test videos; skipped when absent), every clip is scored by both methods: `flow_speed`
(fast: frame diagonals per second, one decode with the cut detection) and Data-Juicer's `motion`
(exactly its op's number, a second decode). Figures: CPU seconds per video second of each method,
the still/moving separation of `flow_speed`, the Spearman rank correlation of the two scores over
clips, and the share of clips on which `flow_speed >= min` agrees with Data-Juicer's own default
`motion >= 0.25`, for the chosen minimum. Then the two `scenes.resize` frame paths of the cut
detection (`exact`: PySceneDetect's own frames; `decoder`: swscale scales while converting) on the
same videos: CPU of probe-free scans and how many videos get the very same cuts.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import resource
from pathlib import Path
from typing import Any

import numpy as np
from common import BENCH_DIR, created, environment, write_report

FLOW_SPEED_MIN = 0.0035  # the shipped default of filters.flow_speed (stages/video_filters.py)
DJ_MIN = 0.25  # Data-Juicer's video_motion_score_filter min_score default
PEER = BENCH_DIR.parent.parent / "shared" / "peer-data"
PEER_GLOBS = (
    "data_juicer/tests_ops_data/video*.mp4",
    "pyscenedetect/resources/*.mp4",
    "video2dataset/tests_test_files/*.mp4",
    "nemo_curator/*.mp4",
    "decord/*.mov",
)
STILL = {"static", "smptebars"}  # segments of the synthetic input with no motion at all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument_group("video_motion")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def score_video(path: Path) -> dict[str, Any]:
    """Both methods' clip scores of one video, and each method's CPU seconds."""
    from mmcurate.stages.video_clips import ClipParams, plan_clips
    from mmcurate.stages.video_motion import datajuicer_scores
    from mmcurate.stages.video_probe import probe
    from mmcurate.stages.video_scan import MotionParams, SceneParams, clip_motion, scan

    facts = probe(str(path))
    motion = MotionParams(method="datajuicer")
    t0 = _cpu()
    found = scan(str(path), SceneParams(), motion)
    t1 = _cpu()
    plans = plan_clips(found.times, found.cuts, facts["fps"], ClipParams(min_duration=0.5))
    dj = datajuicer_scores(str(path), [(p.start, p.end) for p in plans], motion.sample_fps, motion.datajuicer)
    t2 = _cpu()
    diagonal = math.hypot(facts["display_width"], facts["display_height"])
    clips = []
    for plan, pair_scores in zip(plans, dj, strict=True):
        scores, _ = clip_motion(found.pairs, plan.start, plan.end, facts["rotation"], motion, diagonal)
        if "flow_speed" in scores and pair_scores:
            clips.append({"start": plan.start, "end": plan.end, "flow_speed": scores["flow_speed"],
                          "motion": float(np.mean(pair_scores))})  # fmt: skip
    return {"duration": facts["duration"], "fast_cpu_s": t1 - t0, "datajuicer_cpu_s": t2 - t1, "clips": clips}


def compare_resize(paths: list[Path]) -> dict[str, Any]:
    """Cuts and CPU of `scenes.resize: exact` vs `decoder` on each video."""
    from mmcurate.stages.video_scan import MotionParams, SceneParams, scan

    cpu = {"exact": 0.0, "decoder": 0.0}
    differ = {}
    for path in paths:
        cuts = {}
        for mode in cpu:
            t0 = _cpu()
            cuts[mode] = scan(str(path), SceneParams(resize=mode), MotionParams()).cuts
            cpu[mode] += _cpu() - t0
        if cuts["exact"] != cuts["decoder"]:
            differ[path.name] = {"exact": cuts["exact"], "decoder": cuts["decoder"]}
    return {"videos": len(paths), "same_cuts": len(paths) - len(differ), "differ": differ, "cpu_s": cpu,
            "decoder_cpu_ratio": cpu["decoder"] / cpu["exact"] if cpu["exact"] else None}  # fmt: skip


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 else math.nan


def _synthetic_truth(clips: list[dict[str, Any]]) -> list[tuple[float, bool]]:
    """(flow_speed, still?) of the synthetic input's clips, each matched to the segment it lies in."""
    from video import video_segments

    bounds, start = [], 0
    for seg in video_segments():
        bounds.append((start, start + seg.frames, seg.kind))
        start += seg.frames
    out = []
    for c in clips:
        kind = next(k for a, b, k in bounds if a <= c["start"] < b)
        out.append((c["flow_speed"], kind in STILL))
    return out


def run(args: argparse.Namespace) -> bool:
    import glob

    from video import synthetic_video

    inputs = [("360p synthetic", synthetic_video((640, 360)).path)]
    seen: set[str] = set()  # Data-Juicer's video6-9 repeat video1-3: each content counted once
    for pattern in PEER_GLOBS:
        for p in sorted(glob.glob(str(PEER / pattern))):
            digest = hashlib.blake2b(Path(p).read_bytes(), digest_size=16).hexdigest()
            if digest not in seen:
                seen.add(digest)
                inputs.append((str(Path(p).relative_to(PEER)), Path(p)))
    load_before = os.getloadavg()[0]
    per_video: dict[str, Any] = {}
    for label, path in inputs:
        try:
            per_video[label] = score_video(path)
        except Exception as exc:  # an unusable peer file is reported, not fatal
            per_video[label] = {"error": f"{type(exc).__name__}: {exc}"}
    synth = _synthetic_truth(per_video["360p synthetic"]["clips"])
    still = [s for s, is_still in synth if is_still]
    moving = [s for s, is_still in synth if not is_still]
    real = [c for k, v in per_video.items() if k != "360p synthetic" for c in v.get("clips", [])]
    both = [c for v in per_video.values() for c in v.get("clips", [])]
    agree = [(c["flow_speed"] >= FLOW_SPEED_MIN) == (c["motion"] >= DJ_MIN) for c in both]
    sweep = {t: sum((c["flow_speed"] >= t) == (c["motion"] >= DJ_MIN) for c in real) / max(1, len(real))
             for t in (0.001, 0.002, 0.0025, 0.003, 0.0035, 0.004, 0.005, 0.006, 0.008)}  # fmt: skip
    dur = sum(v.get("duration", 0.0) for v in per_video.values() if "clips" in v)
    fast_cpu = sum(v.get("fast_cpu_s", 0.0) for v in per_video.values())
    dj_cpu = sum(v.get("datajuicer_cpu_s", 0.0) for v in per_video.values())
    report = {
        "benchmark": "video_motion",
        "created": created(),
        "flow_speed_min": FLOW_SPEED_MIN,
        "datajuicer_min": DJ_MIN,
        "synthetic_still_max": max(still),
        "synthetic_moving_min": min(moving),
        "real_clip_flow_speed_min": min((c["flow_speed"] for c in real), default=None),
        "real_clip_motion_min": min((c["motion"] for c in real), default=None),
        "clips": len(both),
        "spearman_flow_speed_vs_motion": _spearman([c["flow_speed"] for c in both], [c["motion"] for c in both]),
        "agreement_with_datajuicer_default": sum(agree) / len(agree),
        "agreement_on_real_clips_by_min": sweep,
        "video_seconds": dur,
        "fast_x_realtime_per_core": dur / fast_cpu if fast_cpu else None,
        "datajuicer_x_realtime_per_core": dur / dj_cpu if dj_cpu else None,
        "per_video": per_video,
        "env": environment(os.cpu_count() or 1, load_before, os.getloadavg()[0]),
    }
    print(f"video_motion: {len(both)} clips of {len(per_video)} videos ({dur:.0f} s)")
    print(f"  fast (flow_speed, incl. cut detection): {report['fast_x_realtime_per_core']:.1f}x real time per core")
    dj_x = report["datajuicer_x_realtime_per_core"]
    print(f"  datajuicer (motion, its second decode): {dj_x:.1f}x real time per core")
    print(f"  synthetic still clips: flow_speed <= {max(still):.5f}; moving clips >= {min(moving):.5f}")
    print(f"  real clips: flow_speed >= {report['real_clip_flow_speed_min']:.5f}, "
          f"Data-Juicer motion >= {report['real_clip_motion_min']:.3f}")  # fmt: skip
    print(f"  Spearman(flow_speed, motion) over clips: {report['spearman_flow_speed_vs_motion']:.3f}")
    print(f"  flow_speed >= {FLOW_SPEED_MIN} agrees with Data-Juicer's motion >= {DJ_MIN} on "
          f"{100 * report['agreement_with_datajuicer_default']:.1f} % of clips")  # fmt: skip
    by_min = ", ".join(f"{t}: {100 * a:.1f} %" for t, a in sweep.items())
    print(f"  agreement on real clips by flow_speed min: {by_min}")
    for label, v in per_video.items():
        if "error" in v:
            print(f"  {label}: {v['error']}")
            continue
        speeds = " ".join(f"{c['flow_speed']:.4f}/{c['motion']:.2f}" for c in v["clips"])
        print(f"  {label}: flow_speed/motion per clip: {speeds}")
    resize = compare_resize([p for _, p in inputs])
    report["resize"] = resize
    print(f"  scenes.resize decoder vs exact: same cuts on {resize['same_cuts']} of {resize['videos']} videos, "
          f"CPU {resize['cpu_s']['decoder']:.1f} s vs {resize['cpu_s']['exact']:.1f} s "
          f"({resize['decoder_cpu_ratio']:.2f}x); differ: {resize['differ']}")  # fmt: skip
    write_report("video_motion", report)
    separated = max(still) < FLOW_SPEED_MIN <= min(moving)
    return separated
