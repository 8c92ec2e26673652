"""video_cut: clip extraction, exact cuts (`output.cut: exact`: accurate seek, H.264 re-encode, libx264
veryfast crf 23, 1 thread) against keyframe cuts (`output.cut: keyframe`: edges moved to keyframes, the
packets copied, no re-encode), on the video bench's 60 s synthetic inputs at 640x360 and 1280x720
(made by mmcurate.demo.video.make_video: libx264 defaults, so keyframes at most 250 frames apart and at
detected scene changes, here every cut) and the same re-encoded with a fixed 2 s GOP and no scene-cut
keyframes (as streaming encoders do; cached next to them). Each video is scanned once (not timed); then
every kept clip of each mode is
extracted with stages.video_clips.extract, one FFmpeg process at a time. Figures: wall and CPU seconds
(FFmpeg's, from the children's rusage) per clip and per second of clip, the ratio exact / keyframe,
the keyframe index's cost (a packet demux), and the mean and largest |offset| of the keyframe edges
from the exact cuts. Targets: every clip holds the frames its plan says, and keyframe cuts are at
least 5x faster per clip.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import VERDICT, created, environment, write_report
from video import synthetic_video

SPEEDUP_TARGET = 5.0
GOP_S = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument_group("video_cut")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fixed_gop(src: Path) -> Path:
    """`src` re-encoded with a keyframe every GOP_S seconds and none at scene changes (cached)."""
    from video import VIDEO_CRF, VIDEO_FPS

    gop = round(GOP_S * VIDEO_FPS)
    path = src.with_name(f"{src.stem}-gop{gop}.mp4")
    if not path.exists():
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial.mp4")
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-c:v", "libx264", "-preset", "veryfast",
             "-crf", str(VIDEO_CRF), "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", str(tmp)],
            check=True, capture_output=True, timeout=1200,
        )  # fmt: skip
        tmp.rename(path)
    return path


def _frames(path: str) -> int:
    import av

    with av.open(path) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def _extract_all(path: Path, plans: list[Any], facts: dict[str, Any], params: Any, check: bool) -> dict[str, Any]:
    """Extract every kept plan; wall and FFmpeg CPU seconds, and whether each clip decodes to its frames."""
    from mmcurate.stages.video_clips import extract

    kept = [p for p in plans if not p.drop]
    exact = True
    with tempfile.TemporaryDirectory() as tmp:
        cpu0, t0 = _children_cpu(), time.perf_counter()
        for p in kept:
            extract(str(path), os.path.join(tmp, f"{p.clip_index}.mp4"), p, facts, params)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
        if check:
            exact = all(_frames(os.path.join(tmp, f"{p.clip_index}.mp4")) == p.end - p.start for p in kept)
    seconds = sum(p.duration for p in kept)
    return {"clips": len(kept), "clip_seconds": seconds, "wall_s": wall, "cpu_s": cpu, "frames_exact": exact}


def measure(path: Path, reps: int) -> dict[str, Any]:
    """One input: the scan (untimed), then each mode's extraction, best of `reps` by wall time."""
    from mmcurate.stages.video_clips import ClipOutputParams, ClipParams, keyframes, plan_clips, snap_to_keyframes
    from mmcurate.stages.video_probe import probe
    from mmcurate.stages.video_scan import MotionParams, SceneParams, scan

    facts = probe(str(path))
    found = scan(str(path), SceneParams(), MotionParams())
    exact_plans = plan_clips(found.times, found.cuts, facts["fps"], ClipParams())
    t0 = time.perf_counter()
    keys = keyframes(str(path), found.times) or []
    index_s = time.perf_counter() - t0
    key_plans = snap_to_keyframes(exact_plans, keys, found.times, facts["fps"], ClipParams())
    out: dict[str, Any] = {"frames": found.frames, "cuts": found.cuts, "keyframes": len(keys), "index_s": index_s}
    for mode, plans in (("exact", exact_plans), ("keyframe", key_plans)):
        params = ClipOutputParams(cut=mode)
        runs = [_extract_all(path, plans, facts, params, check=i == 0) for i in range(reps)]
        best = min(runs, key=lambda r: r["wall_s"])
        best["frames_exact"] = runs[0]["frames_exact"]
        best["s_per_clip"] = best["wall_s"] / max(1, best["clips"])
        best["cpu_s_per_clip_second"] = best["cpu_s"] / max(1e-9, best["clip_seconds"])
        out[mode] = best
    offsets = [abs(x) for p in key_plans if not p.drop for x in (p.cut_offset_start, p.cut_offset_end)]
    out["offset_mean_s"] = sum(offsets) / len(offsets) if offsets else 0.0
    out["offset_max_s"] = max(offsets, default=0.0)
    out["speedup"] = out["exact"]["s_per_clip"] / max(1e-9, out["keyframe"]["s_per_clip"])
    out["cpu_ratio"] = out["exact"]["cpu_s_per_clip_second"] / max(1e-9, out["keyframe"]["cpu_s_per_clip_second"])
    return out


def _print(key: str, res: dict[str, Any]) -> None:
    print(f"  {key}: {res['frames']} frames, {len(res['cuts'])} cuts, {res['keyframes']} keyframes "
          f"(index {1000 * res['index_s']:.0f} ms)")  # fmt: skip
    for mode in ("exact", "keyframe"):
        r = res[mode]
        print(f"    {mode:8s} {r['clips']:3d} clips {r['clip_seconds']:6.1f} s  {r['s_per_clip']:7.3f} s/clip wall  "
              f"{r['cpu_s_per_clip_second']:7.4f} CPU s/clip s  frames exact: {r['frames_exact']}")  # fmt: skip
    print(f"    speedup {res['speedup']:.1f}x per clip (wall), {res['cpu_ratio']:.1f}x CPU per clip second; "
          f"edges off the exact cuts: mean {res['offset_mean_s']:.3f} s, max {res['offset_max_s']:.3f} s")  # fmt: skip


def run(args: argparse.Namespace) -> bool:
    if shutil.which("ffmpeg") is None:
        print("video_cut: no ffmpeg on PATH -- NOT MEASURED")
        return False
    load_before = os.getloadavg()[0]
    print("video_cut: exact (re-encode) vs keyframe (stream copy) clip extraction, one FFmpeg at a time")
    results = {}
    for size in ((640, 360), (1280, 720)):
        inp = synthetic_video(size)
        for key, path in ((inp.key, inp.path), (f"{inp.key} gop {GOP_S:.0f}s", fixed_gop(inp.path))):
            results[key] = measure(path, args.reps)
            _print(key, results[key])
    checks = {
        "frames_exact": all(r[m]["frames_exact"] for r in results.values() for m in ("exact", "keyframe")),
        f"speedup>={SPEEDUP_TARGET:.0f}x": all(r["speedup"] >= SPEEDUP_TARGET for r in results.values()),
    }
    passed = all(checks.values())
    print(f"  {VERDICT[passed]}: {', '.join(f'{k}={v}' for k, v in checks.items())}")
    write_report("video_cut", {
        "benchmark": "video_cut", "created": created(), "reps": args.reps, "results": results, "checks": checks,
        "measured": {f"speedup>={SPEEDUP_TARGET:.0f}x": min((r["speedup"] for r in results.values()), default=None)},
        "passed": passed, "env": environment(os.cpu_count() or 1, load_before, os.getloadavg()[0]),
    })  # fmt: skip
    return passed
