"""video_memory: peak memory of a whole `mmcurate video` run on a 1-hour input against a 1-minute one.
The 1-minute input is the video bench's 60 s synthetic 360p file (10 scenes); the 1-hour input is
that file 60 times over, joined without re-encoding (FFmpeg's concat demuxer, `-c copy`: 600
scenes, 600 clips). Each run is its own `mmcurate video` process (DirectRunner, defaults, with the
filters that need no model so the hour finishes in minutes; clip dedup off, or the hour, one
minute 60 times over, would keep 8 of its 600 clips); a sampler sums the resident memory of
the process and all its descendants (the analysis child, FFmpeg) every 0.2 s. Target: peak for the
hour <= 1.5x the peak for the minute (memory must not grow with the length of a video).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import BENCH_DIR, created, environment, write_report

TARGET = 1.2
"""Issue 17's growth bound (RSS(10 N) <= 1.2 RSS(N)), here at 60 N; issue 16 asked for 1.5."""
REPEATS = 60  # minutes in the long input
CONFIG = "filters: {clip_size: {min_side: 224}, flow_speed: {min: 0.0035}}\ndedup: {clips: false}\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument_group("video_memory")


def long_input(short: Path, repeats: int) -> Path:
    """`short` `repeats` times over in one file, stream-copied; cached beside it."""
    path = short.with_name(f"{short.stem}-x{repeats}.mp4")
    if path.exists():
        return path
    with tempfile.TemporaryDirectory(dir=short.parent) as tmp:
        listing = Path(tmp, "parts.txt")
        listing.write_text(f"file '{short}'\n" * repeats)
        part = Path(tmp, "long.mp4")
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
               "-i", str(listing), "-c", "copy", str(part)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        part.rename(path)
    return path


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def measure(video: Path, out: Path) -> dict[str, Any]:
    """Run `mmcurate video` on `video`; its wall time and peak summed RSS of the process tree."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text(CONFIG)
    cmd = [sys.executable, "-m", "mmcurate.cli", "video", "--input", str(video), "--output", str(out / "run"),
           "--config", str(cfg), "--no-progress", "--no-report"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=BENCH_DIR.parent)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate(timeout=3600)
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"mmcurate video failed ({proc.returncode}): {err.decode('utf-8', 'replace')[-1500:]}")
    import json

    manifest = json.loads((out / "run" / "manifest.json").read_text())
    clips = manifest["kinds"]["clip"]["counts"]
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": peak[0] / 2**20, "clips": clips,
            "accounting_ok": manifest["accounting_ok"]}  # fmt: skip


def run(args: argparse.Namespace) -> bool:
    from video import synthetic_video

    short = synthetic_video((640, 360)).path
    long = long_input(short, REPEATS)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        minute = measure(short, Path(tmp, "minute"))
        hour = measure(long, Path(tmp, "hour"))
    ratio = hour["peak_rss_mb"] / minute["peak_rss_mb"]
    # wall time per second of input, the long input over the short one (time(60 N) <= 1.05 x 60 time(N))
    per_second = hour["wall_s"] / minute["wall_s"] / REPEATS  # the long input is REPEATS copies of the short
    report = {
        "benchmark": "video_memory",
        "created": created(),
        "minute": minute,
        "hour": hour,
        "ratio": ratio,
        "target": TARGET,
        "time_per_input_second_ratio": per_second,
        "checks": {f"ratio<={TARGET:g}": ratio <= TARGET, "time_per_input_second_ratio<=1.05": per_second <= 1.05},
        "passed": ratio <= TARGET and per_second <= 1.05,
        "env": environment(os.cpu_count() or 1, load_before, os.getloadavg()[0]),
    }
    print(f"video_memory: peak RSS (process tree) 1 min input {minute['peak_rss_mb']:.0f} MiB "
          f"({minute['wall_s']:.0f} s, {minute['clips']['input']} clips), 1 h input {hour['peak_rss_mb']:.0f} MiB "
          f"({hour['wall_s']:.0f} s, {hour['clips']['input']} clips): {ratio:.2f}x (target <= {TARGET}x)")  # fmt: skip
    write_report("video_memory", report)
    return report["passed"]
