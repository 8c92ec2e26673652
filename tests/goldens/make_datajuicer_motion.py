"""Goldens from Data-Juicer's real `video_motion_score_filter` op (mmcurate issue 16).

Data-Juicer is not a project dependency, so this runs with a throw-away venv, never the project's:

    python -m venv /tmp/djenv
    /tmp/djenv/bin/pip install py-data-juicer==1.6.1 aiohttp ray scenedetect opencv-python
    /tmp/djenv/bin/python tests/goldens/make_datajuicer_motion.py   # from the repository root

For each setting and video it calls the op's own `compute_stats_single` on a sample dict, as Data-Juicer's
unit tests do (through `compute_stats`), and keeps the score at full precision (also as `float.hex`). A
second, traced pass of the same op records which frames it paired, the frame size Farneback saw and each
pair's score, so a reimplementation can be debugged pair by pair; the traced pass must give the same score.
The json names videos by file name only; the data folder is given relative to the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from data_juicer import __version__ as dj_version
from data_juicer.ops.filter import video_motion_score_filter as vmsf
from data_juicer.utils.constant import Fields, StatsKeys

REPO = Path(__file__).resolve().parents[2]
DATA_REL = "../shared/peer-data/data_juicer/tests_ops_data"
OUT_DEFAULT = REPO / "tests/goldens/datajuicer_motion.json"
VIDEOS = [f"video{i}.mp4" for i in range(1, 7)]
NOTES = [
    "pairs: frames (0, 1), then (1, s), (s, 2s), ... with s = max(min(round(fps / min(sampling_fps, fps)),"
    " frame_count - 1), 1); with s == 1 the pair (1, 1) occurs once (a frame against itself)",
    "size / max_size: Data-Juicer hands its (height, width) to cv2.resize, which reads (width, height), so a"
    " resized frame has its aspect transposed; trace.flow_hw is the (height, width) Farneback saw",
    "score: per pair float32 mean of cv2.cartToPolar magnitudes (over relative: / hypot(h, w) in float64);"
    " per video the float64 mean of the pair scores; -1.0 when no pair (unopenable, 1-frame)",
]
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "size_240": {"size": [240]},
    "max_size_320": {"max_size": 320},
    "relative": {"relative": True},
    "sampling_fps_1": {"sampling_fps": 1},
}


def probe(path: Path) -> dict[str, Any]:
    """What cv2 reports for a file, plus a sequential decode (frame count and a hash per frame)."""
    cap = cv2.VideoCapture(str(path))
    info: dict[str, Any] = {
        "md5": hashlib.md5(path.read_bytes()).hexdigest(),
        "opened": cap.isOpened(),
        "backend": cap.getBackendName() if cap.isOpened() else None,
        "cap_fps": cap.get(cv2.CAP_PROP_FPS),
        "cap_frame_count": cap.get(cv2.CAP_PROP_FRAME_COUNT),
        "cap_width": cap.get(cv2.CAP_PROP_FRAME_WIDTH),
        "cap_height": cap.get(cv2.CAP_PROP_FRAME_HEIGHT),
    }
    hashes = []
    while cap.isOpened():
        ok, frame = cap.read()
        if not ok:
            break
        hashes.append(hashlib.md5(frame.tobytes()).hexdigest())
    cap.release()
    info["decoded_frames"] = len(hashes)
    info["_hashes"] = hashes
    return info


def run_op(kwargs: dict[str, Any], path: Path) -> tuple[list[float], float]:
    """The op's stats on one sample holding one video, and the seconds it took."""
    op = vmsf.VideoMotionScoreFilter(**kwargs)
    sample = {op.video_key: [str(path)], Fields.stats: {}}
    start = time.perf_counter()
    out = op.compute_stats_single(sample)
    seconds = time.perf_counter() - start
    return [float(s) for s in out[Fields.stats][StatsKeys.video_motion_score]], seconds


class _TracingCapture:
    """Passes every call to a real cv2.VideoCapture, noting the position asked for and the frame got."""

    def __init__(self, cap: Any, log: dict[str, list]) -> None:
        self._cap, self._log = cap, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cap, name)

    def set(self, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_POS_FRAMES:
            self._log["seeks"].append(value)
        return self._cap.set(prop, value)

    def read(self) -> tuple[bool, Any]:
        pos = self._cap.get(cv2.CAP_PROP_POS_FRAMES)
        ok, frame = self._cap.read()
        if ok:
            self._log["reads"].append((pos, hashlib.md5(frame.tobytes()).hexdigest()))
        return ok, frame


class _TracingOp(vmsf.VideoMotionScoreFilter):
    """The real op; compute_flow also notes the frame size and the pair score the op goes on to take."""

    def compute_flow(self, prev_frame: Any, curr_frame: Any) -> tuple[Any, Any]:
        flow, gray = super().compute_flow(prev_frame, curr_frame)
        if flow is not None:
            mag, _ = cv2.cartToPolar(flow[..., 0], flow[..., 1])
            score = np.mean(mag)
            if self.relative:
                score /= np.hypot(*curr_frame.shape[:2])
            self.trace_log["pair_scores"].append(float(score))
            self.trace_log["flow_hw"].append(list(flow.shape[:2]))
        return flow, gray


def frame_index(digest: str, asked: float, hashes: list[str]) -> int | None:
    """Which decoded frame a read returned: the one asked for when it matches, else the first equal one."""
    if 0 <= int(asked) < len(hashes) and hashes[int(asked)] == digest:
        return int(asked)
    return hashes.index(digest) if digest in hashes else None


def trace_op(kwargs: dict[str, Any], path: Path, hashes: list[str]) -> dict[str, Any]:
    """Run the op once more with its capture and flow observed; report the frames it paired."""
    log: dict[str, list] = {"seeks": [], "reads": [], "pair_scores": [], "flow_hw": []}
    real = vmsf.VideoCapture

    @contextlib.contextmanager
    def traced(*args: Any, **kw: Any) -> Any:
        with real(*args, **kw) as cap:
            yield _TracingCapture(cap, log)

    op = _TracingOp(**kwargs)
    op.trace_log = log
    vmsf.VideoCapture = traced
    try:
        sample = {op.video_key: [str(path)], Fields.stats: {}}
        score = float(op.compute_stats_single(sample)[Fields.stats][StatsKeys.video_motion_score][0])
    finally:
        vmsf.VideoCapture = real
    asked = [int(p) for p, _ in log["reads"]]
    got = [frame_index(d, p, hashes) for p, d in log["reads"]]
    sizes = {tuple(hw) for hw in log["flow_hw"]}
    return {
        "score": score,
        "op_size": None if op.size is None else list(op.size),
        "flow_hw": [list(hw) for hw in sorted(sizes)],
        "n_pairs": len(log["pair_scores"]),
        "frames_asked": asked,
        "frames_got": got,
        "seeks": [int(s) for s in log["seeks"]],
        "seek_exact": asked == got,
        "pairs": [[a, b] for a, b in itertools.pairwise(got)],
        "pair_scores": log["pair_scores"],
    }


def golden_for(name: str, kwargs: dict[str, Any], path: Path, hashes: list[str]) -> dict[str, Any]:
    """The plain op's score for one (setting, video), checked against the traced pass."""
    scores, seconds = run_op(kwargs, path)
    trace = trace_op(kwargs, path, hashes)
    score = scores[0]
    same = trace["score"] == score
    print(f"{name:15s} {path.name}: {score!r} ({seconds:.2f}s, {trace['n_pairs']} pairs, traced same: {same})")
    return {
        "score": score,
        "score_hex": score.hex(),
        "stats": scores,
        "seconds": round(seconds, 3),
        "traced_pass_same_score": same,
        "trace": trace,
    }


def dump(obj: Any, depth: int = 0) -> str:
    """JSON with one key per line and every list on one line, so the file stays readable and diffable."""
    if not isinstance(obj, dict) or not obj:
        return json.dumps(obj)
    pad = " " * (depth + 1)
    items = [f"{pad}{json.dumps(k)}: {dump(v, depth + 1)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO / DATA_REL), help="Data-Juicer's tests/ops/data copy")
    parser.add_argument("--out", default=str(OUT_DEFAULT))
    args = parser.parse_args()
    data = Path(args.data_dir)
    probes = {v: probe(data / v) for v in VIDEOS if (data / v).exists()}
    usable = [v for v, p in probes.items() if p["opened"] and p["decoded_frames"] > 0]
    goldens: dict[str, dict[str, Any]] = {}
    total = time.perf_counter()
    for name, kwargs in SETTINGS.items():
        goldens[name] = {v: golden_for(name, kwargs, data / v, probes[v]["_hashes"]) for v in usable}
    result = {
        "about": "Data-Juicer video_motion_score_filter stats (compute_stats_single), one video per sample",
        "command": " ".join(["python", "tests/goldens/make_datajuicer_motion.py", *sys.argv[1:]]),
        "python_env": "venv: pip install py-data-juicer==1.6.1 aiohttp ray scenedetect opencv-python",
        "data_juicer_version": dj_version,
        "opencv_version": cv2.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "opencv_threads": cv2.getNumThreads(),
        "data_dir": DATA_REL,
        "notes": NOTES,
        "total_seconds": round(time.perf_counter() - total, 3),
        "settings": SETTINGS,
        "videos": {v: {k: x for k, x in p.items() if not k.startswith("_")} for v, p in probes.items()},
        "missing_or_undecodable": [v for v in VIDEOS if v not in usable],
        "scores": {s: {v: g["score"] for v, g in per.items()} for s, per in goldens.items()},
        "goldens": goldens,
    }
    Path(args.out).write_text(dump(result) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
