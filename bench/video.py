"""video: the video path's decoding work, probe + one-pass scan (stages.video_probe.probe, then
stages.video_scan.scan with default SceneParams / MotionParams and 1 decoder thread: PySceneDetect's
ContentDetector on every frame, Farneback flow at 2 fps), on 60 s H.264 inputs made once by
mmcurate.demo.video.make_video at 640x360 and 1280x720, 30 fps, crf 23 (camera pans / tilts / zooms over
textures between lavfi test sources, 9 known cuts), plus, when --real-videos matches files, the real videos
cropped to 640x360 at 24 fps and concatenated (reported apart; skipped when absent). Next to it, on the same
file: (d) `ffmpeg -threads 1 -i f -f null -` (the decode limit; its CPU from the children's rusage) and
(p) PyAV decoding alone with 1 thread. Figures: frames/s (wall), frames per CPU-second, x real time per core
(video seconds / CPU seconds) and the ratio to (d). Targets: >= 50x real time per core at 360p, and the
known cuts found exactly. --profile adds a cProfile report and a per-step CPU breakdown of scan at 360p.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    OUT_DIR,
    VERDICT,
    Timing,
    created,
    environment,
    print_load,
    profile_to,
    table_head,
    timed,
    write_report,
)

VIDEO_DIR = OUT_DIR / "video"
VIDEO_VERSION = 1  # bump when the segments or encoding below change, so cached inputs are rebuilt
VIDEO_FPS = 30
VIDEO_CRF = 23
VIDEO_TARGET = 50.0  # x real time per core, probe + scan, 360p
REAL_VIDEOS = str(BENCH_DIR.parent.parent / "shared" / "peer-data" / "data_juicer" / "tests_ops_data" / "video*.mp4")
TARGET_CHECK = f"realtime_per_core_360p>={VIDEO_TARGET:.0f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    video = parser.add_argument_group("video")
    video.add_argument(
        "--real-videos",
        default=REAL_VIDEOS,
        help="glob of real videos, transcoded to one 360p input; '' skips it (default: %(default)s)",
    )


def video_segments() -> list[Any]:
    """60 s at 30 fps: camera moves over textures (flow locks onto them) between lavfi sources, 9 cuts."""
    from mmcurate.demo.video import Segment

    return [
        Segment("pan_left", 240, seed=1),
        Segment("testsrc2", 150),
        Segment("zoom_in", 210, seed=2),
        Segment("smptebars", 120),
        Segment("tilt_down", 180, seed=3),
        Segment("mandelbrot", 210),
        Segment("static", 150, text="CHAPTER TWO", seed=4),
        Segment("pan_right", 240, seed=5),
        Segment("zoom_out", 150, seed=6),
        Segment("tilt_up", 150, seed=7),
    ]


@dataclasses.dataclass
class VideoInput:
    key: str
    label: str
    path: Path
    frames: int
    cuts: list[int]
    """Known cuts: exact truth for the synthetic inputs; for real footage the boundaries between the
    concatenated videos (each may hold cuts of its own)."""
    exact: bool


def synthetic_video(size: tuple[int, int]) -> VideoInput:
    """The cached synthetic input at this size (generated with mmcurate.demo.video.make_video on first use)."""
    from mmcurate.demo.video import make_video

    w, h = size
    segments = video_segments()
    path = VIDEO_DIR / f"synthetic-v{VIDEO_VERSION}-{w}x{h}-{VIDEO_FPS}fps-crf{VIDEO_CRF}.mp4"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        VIDEO_DIR.mkdir(parents=True, exist_ok=True)
        frames = sum(s.frames for s in segments)
        print(f"generating {path.relative_to(BENCH_DIR.parent)} ({frames / VIDEO_FPS:.0f} s) ...", flush=True)
        t0 = time.perf_counter()
        tmp = path.with_name(path.stem + ".partial.mp4")
        cuts = make_video(tmp, segments, size=size, fps=VIDEO_FPS, crf=VIDEO_CRF)
        info = {"frames": frames, "cuts": cuts, "segments": [dataclasses.asdict(s) for s in segments]}
        tmp.rename(path)
        meta.write_text(json.dumps(info, indent=2) + "\n")
        print(f"  done in {time.perf_counter() - t0:.1f}s", flush=True)
    info = json.loads(meta.read_text())
    label = f"{h}p synthetic ({w}x{h}, {VIDEO_FPS} fps)"
    return VideoInput(f"{h}p", label, path, info["frames"], info["cuts"], exact=True)


def _ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"ffmpeg failed: {exc.stderr.decode('utf-8', 'replace')[-1500:]}") from None


def _stream_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return int(container.streams.video[0].frames)


def _concatenate(files: list[Path], path: Path, w: int, h: int, fps: int) -> dict[str, Any]:
    """Each file cropped to fill w x h at `fps`, H.264 crf VIDEO_CRF, concatenated into `path`."""
    vf = f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},setsar=1,fps={fps},format=yuv420p"
    with tempfile.TemporaryDirectory(dir=VIDEO_DIR) as tmp:
        parts, counts = [], []
        for i, src in enumerate(files):
            part = Path(tmp, f"{i:03d}.mp4")
            _ffmpeg("-i", str(src), "-an", "-vf", vf, "-c:v", "libx264", "-preset", "veryfast",
                    "-crf", str(VIDEO_CRF), str(part))  # fmt: skip
            parts.append(part)
            counts.append(_stream_frames(part))
        listing = Path(tmp, "parts.txt")
        listing.write_text("".join(f"file '{p}'\n" for p in parts))
        out = Path(tmp, "all.mp4")
        _ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out))
        if _stream_frames(out) != sum(counts):
            raise RuntimeError(f"concatenated {_stream_frames(out)} frames, parts hold {sum(counts)}")
        info = {
            "frames": sum(counts),
            "cuts": list(itertools.accumulate(counts))[:-1],
            "sources": [str(p) for p in files],
            "source_frames": counts,
        }
        out.rename(path)
    return info


def real_video(pattern: str) -> VideoInput | None:
    """Real footage matching `pattern` (duplicates dropped), each cropped to fill 640x360 at 24 fps, H.264
    crf 23, concatenated; cached. None when nothing matches."""
    files: dict[str, Path] = {}
    for name in sorted(glob.glob(pattern)):
        files.setdefault(hashlib.sha256(Path(name).read_bytes()).hexdigest(), Path(name))
    if not files:
        return None
    w, h, fps = 640, 360, 24
    key = hashlib.sha256(json.dumps([VIDEO_VERSION, sorted(files)]).encode()).hexdigest()[:10]
    path = VIDEO_DIR / f"real-v{VIDEO_VERSION}-{w}x{h}-{fps}fps-crf{VIDEO_CRF}-{key}.mp4"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        VIDEO_DIR.mkdir(parents=True, exist_ok=True)
        print(f"transcoding {len(files)} real videos into {path.relative_to(BENCH_DIR.parent)} ...", flush=True)
        info = _concatenate(list(files.values()), path, w, h, fps)
        meta.write_text(json.dumps(info, indent=2) + "\n")
    info = json.loads(meta.read_text())
    label = f"360p real ({len(info['sources'])} videos, {w}x{h}, {fps} fps)"
    return VideoInput("real360p", label, path, info["frames"], info["cuts"], exact=False)


def ffmpeg_decode(path: Path) -> int:
    """(d): `ffmpeg -threads 1 -i path -f null -`; returns the frames it reports."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-threads", "1", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    counted = re.findall(r"frame=\s*(\d+)", out.stderr)
    if not counted:
        raise RuntimeError(f"no frame count in ffmpeg's output: {out.stderr[-500:]}")
    return int(counted[-1])


def pyav_decode(path: Path) -> int:
    """(p): PyAV, one decoder thread (as scan(threads=1) sets it), frames not converted."""
    import av

    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        stream.thread_type = "SLICE"
        return sum(1 for _ in container.decode(stream))


def our_path(path: Path) -> tuple[dict[str, Any], Any, Timing]:
    """(o): probe(path), then scan(path, SceneParams(), MotionParams(), threads=1), as the pipeline's
    per-video child runs them. Returns (facts, scan, probe's own timing)."""
    from mmcurate.stages.video_probe import probe
    from mmcurate.stages.video_scan import MotionParams, SceneParams, scan

    probe_t, facts = timed(lambda: probe(str(path)))
    found = scan(str(path), SceneParams(), MotionParams(), threads=1)
    return facts, found, probe_t


VARIANTS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "ffmpeg": ("(d) ffmpeg decode alone", ffmpeg_decode),
    "pyav": ("(p) PyAV decode alone", pyav_decode),
    "ours": ("(o) probe + scan (cuts + motion)", our_path),
}


def _video_versions() -> dict[str, str]:
    import av
    import cv2
    import decord
    import scenedetect

    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return {
        "ffmpeg": ffmpeg,
        "av": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
        "opencv": cv2.__version__,
        "opencv_threads": str(cv2.getNumThreads()),
        "scenedetect": scenedetect.__version__,
        "decord": decord.__version__,
    }


def _print_intro(args: argparse.Namespace, versions: dict[str, str], load_before: float, cores: int, real) -> None:
    print(
        f"video: probe + scan (PySceneDetect ContentDetector defaults + Farneback flow at "
        f"2 fps) vs decoding alone, 1 decoder thread, best of {args.reps} by wall time"
    )
    print(
        f"  load average before: {load_before:.2f} on {cores} cores; {versions['ffmpeg']}; PyAV {versions['av']}, "
        f"OpenCV {versions['opencv']} ({versions['opencv_threads']} threads), scenedetect {versions['scenedetect']}"
    )
    print(
        "  (d) = `ffmpeg -threads 1 -i f -map 0:v:0 -f null -` (subprocess; CPU = its user+sys): the decode limit\n"
        "  (p) = PyAV container.decode, thread_count 1, frames not converted\n"
        "  (o) = probe(f) + scan(f, SceneParams(), MotionParams(), threads=1), in process (CPU = process_time)\n"
        "  x RT/core = video seconds / CPU seconds; vs (d), vs (p) = frames/s over (d)'s, (p)'s frames/s"
    )
    if real is None:
        print(f"  real footage: nothing matches {args.real_videos or '(--real-videos empty)'}: skipped")


def _outcome(out: tuple[dict[str, Any], Any, Timing]) -> dict[str, Any]:
    """What (o) found in one input."""
    facts, found, _probe_t = out
    return {
        "duration_s": facts["duration"],
        "fps": facts["fps"],
        "probe_frames": facts["frames"],
        "frames": found.frames,
        "cuts": found.cuts,
        "flow_pairs": len(found.pairs),
        "working_size": list(found.working_size),
    }


def _measure(inputs: list[VideoInput], reps: int) -> tuple[dict[str, dict[str, list[dict]]], dict[str, dict]]:
    """`reps` interleaved repetitions (so drifting load hits every variant alike): (runs, (o)'s outcome) per input."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {inp.key: {k: [] for k in VARIANTS} for inp in inputs}
    outcome: dict[str, dict[str, Any]] = {inp.key: {} for inp in inputs}
    for rep in range(reps):
        for inp, (key, (_label, fn)) in itertools.product(inputs, VARIANTS.items()):
            timing, out = timed(lambda fn=fn, inp=inp: fn(inp.path))
            run = {"wall_s": timing.wall, "cpu_s": timing.cpu}
            if key == "ours":
                outcome[inp.key] = _outcome(out)
                run.update(probe_wall_s=out[2].wall, probe_cpu_s=out[2].cpu)
                frames = out[1].frames
            else:
                frames = out
            run["frames"] = frames
            runs[inp.key][key].append(run)
            print(
                f"  rep {rep + 1}/{reps} {inp.key:8s} {key:6s} {timing.wall:7.2f}s wall {timing.cpu:7.2f}s CPU "
                f"{frames / timing.wall:8.1f} frames/s",
                flush=True,
            )
    return runs, outcome


def _variant_figures(runs: dict[str, list[dict[str, float]]], duration: float) -> dict[str, dict[str, Any]]:
    """Each variant's best run (by wall time) with its rates, and its ratios to (d) and (p)."""
    v: dict[str, dict[str, Any]] = {}
    for key, (label, _fn) in VARIANTS.items():
        best = min(runs[key], key=lambda r: r["wall_s"])
        v[key] = {
            "label": label,
            **{k: round(x, 4) for k, x in best.items()},
            "frames_per_s": round(best["frames"] / best["wall_s"], 1),
            "frames_per_cpu_s": round(best["frames"] / best["cpu_s"], 1),
            "x_realtime_per_core": round(duration / best["cpu_s"], 2),
            "all_wall_s": [round(r["wall_s"], 3) for r in runs[key]],
        }
    for key in VARIANTS:
        v[key]["vs_ffmpeg"] = round(v[key]["frames_per_s"] / v["ffmpeg"]["frames_per_s"], 3)
        v[key]["vs_ffmpeg_cpu"] = round(v[key]["frames_per_cpu_s"] / v["ffmpeg"]["frames_per_cpu_s"], 3)
        v[key]["vs_pyav"] = round(v[key]["frames_per_s"] / v["pyav"]["frames_per_s"], 3)
    return v


def _result(inp: VideoInput, runs: dict[str, list[dict[str, float]]], o: dict[str, Any]) -> dict[str, Any]:
    duration = o["duration_s"]
    res: dict[str, Any] = {
        "label": inp.label,
        "file": str(inp.path.relative_to(BENCH_DIR.parent)),
        "bytes": inp.path.stat().st_size,
        "mbit_per_s": round(inp.path.stat().st_size * 8 / duration / 1e6, 2),
        **{k: v for k, v in o.items() if k != "cuts"},
        "known_cuts": inp.cuts,
        "found_cuts": o["cuts"],
        "variants": _variant_figures(runs, duration),
    }
    frame_counts = {r["frames"] for runs_ in runs.values() for r in runs_} | {o["probe_frames"]}
    res["same_frames"] = len(frame_counts) == 1 and o["frames"] == inp.frames
    if inp.exact:
        res["cuts_ok"] = o["cuts"] == inp.cuts
    else:
        found = set(o["cuts"])
        res["boundaries_found"] = sum(1 for c in inp.cuts if {c - 1, c, c + 1} & found)
    return res


def _results(inputs: list[VideoInput], runs: dict, outcome: dict) -> tuple[dict[str, dict[str, Any]], dict[str, bool]]:
    results: dict[str, dict[str, Any]] = {}
    checks: dict[str, bool] = {}
    for inp in inputs:
        res = results[inp.key] = _result(inp, runs[inp.key], outcome[inp.key])
        if inp.exact:
            checks[f"cuts_{inp.key}"] = res["cuts_ok"]
            checks[f"frames_{inp.key}"] = res["same_frames"]
    checks[TARGET_CHECK] = results["360p"]["variants"]["ours"]["x_realtime_per_core"] >= VIDEO_TARGET
    return results, checks


def _print_input(res: dict[str, Any]) -> None:
    """One input's rows of the table, and what (o) found in it."""
    desc = [res["label"], f"{res['frames']} frames, {res['duration_s']:.1f} s, {res['mbit_per_s']:.2f} Mbit/s"]
    for i, r in enumerate(res["variants"].values()):
        print(
            f"{desc[i] if i < len(desc) else '':40s} {r['label']:34s} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} "
            f"{r['frames_per_s']:8.1f} {r['frames_per_cpu_s']:12.1f} {r['x_realtime_per_core']:9.1f} "
            f"{r['vs_ffmpeg']:6.2f} {r['vs_pyav']:6.2f}"
        )
    o = res["variants"]["ours"]
    print(
        f"{'':40s}   of which probe {o['probe_wall_s']:.2f}s wall {o['probe_cpu_s']:.2f}s CPU; "
        f"scan at {res['working_size'][0]}x{res['working_size'][1]}, {res['flow_pairs']} flow pairs"
    )
    if "cuts_ok" in res:
        print(
            f"{'':40s}   cuts {'OK' if res['cuts_ok'] else 'MISMATCH'}: found {res['found_cuts']}"
            + ("" if res["cuts_ok"] else f", known {res['known_cuts']}")
        )
    else:
        print(
            f"{'':40s}   {len(res['found_cuts'])} cuts found; {res['boundaries_found']}/{len(res['known_cuts'])} "
            "boundaries between the source videos among them (+-1 frame; informational)"
        )
    if not res["same_frames"]:
        print(f"{'':40s}   !! frame counts differ between variants / probe / generator")


def _print_table(results: dict[str, dict[str, Any]]) -> None:
    print()
    cols = (
        ("wall s", 7),
        ("CPU s", 7),
        ("frames/s", 8),
        ("frames/CPU-s", 12),
        ("x RT/core", 9),
        ("vs (d)", 6),
        ("vs (p)", 6),
    )
    table_head(f"{'input':40s} {'variant':34s} ", cols)
    for res in results.values():
        _print_input(res)
    print()


def _print_verdict(results: dict[str, dict[str, Any]], inputs: list[VideoInput], checks: dict[str, bool]) -> None:
    x360 = results["360p"]["variants"]["ours"]["x_realtime_per_core"]
    print(
        f"  probe + scan at 360p = {x360:.1f}x real time per core  (target >= {VIDEO_TARGET:.0f})  "
        f"{VERDICT[checks[TARGET_CHECK]]}"
    )
    for res in results.values():
        v = res["variants"]
        print(
            f"  {res['label']}: (o) = {v['ours']['vs_ffmpeg']:.2f}x the decode limit (d) in frames/s, "
            f"{v['ours']['vs_ffmpeg_cpu']:.2f}x in frames per CPU-second, {v['ours']['vs_pyav']:.2f}x PyAV's "
            f"decode (p) in frames/s; (d) alone = "
            f"{v['ffmpeg']['x_realtime_per_core']:.1f}x real time per core"
        )
    for inp in inputs:
        if inp.exact:
            print(f"  {inp.key}: known cuts found exactly: {VERDICT[checks[f'cuts_{inp.key}']]}")


def _profile(path360: Path, cuts360: list[int]) -> dict[str, Any]:
    """A cProfile report of probe + scan at 360p, and scan's per-step CPU breakdown (printed)."""
    from video_profile import scan_breakdown

    print(f"profiling probe + scan on {path360.name} (cProfile, one run) ...")
    profile_to(OUT_DIR / "profile-video-360p.txt", lambda: our_path(path360))
    bd = scan_breakdown(path360)
    bd["same_cuts_as_scan"] = bd["cuts"] == cuts360
    print(
        f"  scan on {path360.name} with its library calls clocked ({bd['frames']} frames, {bd['flow_pairs']} "
        f"flow pairs, {bd['cpu_s']:.2f}s CPU, {bd['wall_s']:.2f}s wall; same cuts as unpatched scan: "
        f"{VERDICT[bd['same_cuts_as_scan']]}); CPU time, exclusive of the clocked calls inside:"
    )
    for key, sec in bd["cpu_seconds"].items():
        calls = bd["calls"].get(key)
        per_call = f"{sec * 1e3 / calls:7.3f} ms/call x {calls:5d}" if calls else " " * 22
        print(
            f"    {key:58s} {sec:6.2f}s {bd['ms_per_frame'][key]:7.3f} ms/frame {per_call} "
            f"{100 * sec / bd['cpu_s']:5.1f}%"
        )
    return bd


def run(args: argparse.Namespace) -> bool:
    if shutil.which("ffmpeg") is None:
        print("video: no ffmpeg on PATH: run 'make ffmpeg' (Debian/Ubuntu) or install FFmpeg -- NOT MEASURED")
        return False
    cores = os.cpu_count() or 1
    inputs = [synthetic_video((640, 360)), synthetic_video((1280, 720))]
    real = real_video(args.real_videos) if args.real_videos else None
    if real is not None:
        inputs.append(real)
    versions = _video_versions()
    load_before = os.getloadavg()[0]
    _print_intro(args, versions, load_before, cores, real)
    # Warm-up: imports (scenedetect, cv2, decord), page cache.
    for inp in inputs:
        ffmpeg_decode(inp.path)
    our_path(inputs[0].path)

    runs, outcome = _measure(inputs, args.reps)
    load_after = os.getloadavg()[0]
    results, checks = _results(inputs, runs, outcome)
    _print_table(results)
    _print_verdict(results, inputs, checks)
    print_load(load_before, load_after)

    report: dict[str, Any] = {
        "benchmark": "video",
        "created": created(),
        "reps": args.reps,
        "target_x_realtime_per_core_360p": VIDEO_TARGET,
        "results": results,
        "runs": runs,
        "measured": {
            TARGET_CHECK: ((results.get("360p") or {}).get("variants", {}).get("ours") or {}).get("x_realtime_per_core")
        },
        "checks": checks,
        "passed": all(checks.values()),
        "env": environment(cores, load_before, load_after, **versions),
    }
    if args.profile:
        report["breakdown_360p"] = _profile(inputs[0].path, outcome["360p"]["cuts"])
    write_report("video", report)
    return report["passed"]
