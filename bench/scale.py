"""scale: the whole `mmcurate caption` command, start-up included, on 8 tar shards of 1,000 generated
0.5 MP JPEGs (~80 KiB each: a gradient, fine noise, shapes), rule filters only, all in one sitting on
the same bytes:
  (bare)  one Python process doing the same image work in a loop: tar read, draft decode, pixel hash,
          pHash, 256 px re-encode (the project's own stage functions),
  (i2d)   img2dataset's `Resizer` on the same JPEG bytes, one process (its own venv under bench/out/:
          it pins an old webdataset),
  (w1)    `mmcurate caption` with 1 worker (in-process), start-up included,
  (w2)    the same with 2 worker processes (`--direct_running_mode=multi_processing`),
  (mem)   peak RSS of the whole process tree (driver and workers) of (w1) at 800 and at 8,000 images,
  (start) start-up: the same command on a one-image shard, 1 worker and 2 workers.
Targets: w2 >= 1.6x w1 (on 2 cores); w1 >= 0.8x bare; w1 >= 1.5x i2d per core;
mem(8,000) <= 1.2x mem(800); start-up < 1.5 s with 1 worker, < 3 s with 2.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from common import OUT_DIR, VERDICT, created, environment, write_report
from PIL import Image, ImageDraw

from mmcurate.stages.image_decode import DecodeParams, EncodeParams, decode, encode, perceptual_hash, pixel_hash

CORPUS_VERSION = 1
SIZE = (816, 612)  # 0.5 MP
RULES = """filters:
  file_size: {min_bytes: 1024}
  min_side: {min: 64}
  aspect_ratio: {max: 3.0}
  caption_length: {min_words: 2, max_words: 200, min_chars: 5, max_chars: 2000}
  caption_boilerplate: {max_ratio: 0.5}
  caption_repetition: {max_ratio: 0.5}
  language: {allowed: [en], min_prob: 0.5}
decode: {working_side: 256}
output: {max_side: 256}
"""
SHAPES = ("circles", "squares")
COLOURS = ("red", "blue", "green", "orange", "purple", "yellow", "grey", "teal")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale")
    group.add_argument("--scale-per-shard", type=int, default=1000, help="images per shard (default 1000)")
    group.add_argument("--scale-small", type=int, default=100, help="images per shard of the small run (default 100)")


# -------------------------------------------------------------------------------------------- corpus


def _image(seed: int) -> tuple[bytes, str]:
    """A gradient between two colours, fine noise (what makes it ~80 KiB), and a few filled shapes."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.random() * 6.283
    t = x / w * np.cos(angle) + y / h * np.sin(angle)
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    pixels = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None] + rng.normal(0, 5, (h, w, 1))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    n, kind = int(rng.integers(3, 8)), int(rng.integers(0, 2))
    for _ in range(n):
        x0, y0, s = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 50)), int(rng.integers(30, 200))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if kind == 0 else draw.rectangle)((x0, y0, x0 + s, y0 + s), fill=fill)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    colours = [COLOURS[int(i)] for i in rng.integers(0, len(COLOURS), 2)]
    caption = f"a smooth {colours[0]} to {colours[1]} gradient with {n} {SHAPES[kind]} on a grainy background"
    return buf.getvalue(), caption


def _shard(path: str, first: int, count: int) -> str:
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        for i in range(first, first + count):
            data, caption = _image(i)
            for ext, payload in (("jpg", data), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{i:08d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    os.replace(tmp, path)
    return path


def corpus(shards: int, per_shard: int) -> Path:
    """Generated once and cached under bench/out/ (deterministic: image i is seed i)."""
    root = OUT_DIR / f"scale-corpus-v{CORPUS_VERSION}-{shards}x{per_shard}"
    paths = [root / f"shard-{s:02d}.tar" for s in range(shards)]
    if all(p.exists() for p in paths):
        return root
    root.mkdir(parents=True, exist_ok=True)
    print(f"  generating {shards} x {per_shard} images under {root} (once) ...", flush=True)
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_shard, [str(p) for p in paths], [s * 100_000 for s in range(shards)], [per_shard] * shards))
    return root


def subset(source: Path, per_shard: int) -> Path:
    """The first `per_shard` samples of each shard of `source`: the same bytes, fewer of them."""
    root = source.parent / f"{source.name}-first{per_shard}"
    if root.exists():
        return root
    tmp = Path(tempfile.mkdtemp(dir=source.parent))
    for shard in sorted(source.glob("*.tar")):
        with tarfile.open(shard) as src, tarfile.open(tmp / shard.name, "w") as dst:
            for member in src.getmembers()[: 2 * per_shard]:
                dst.addfile(member, src.extractfile(member))
    os.replace(tmp, root)
    return root


def jpegs(root: Path) -> list[bytes]:
    out = []
    for shard in sorted(root.glob("*.tar")):
        with tarfile.open(shard) as tar:
            out += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]  # type: ignore[union-attr]
    return out


# ------------------------------------------------------------------------------------------- the lines


def bare_loop(root: Path) -> tuple[float, int]:
    """(seconds, images): tar read, draft decode, pixel hash, pHash, 256 px re-encode, in one process."""
    dec, enc = DecodeParams(working_side=256), EncodeParams(max_side=256)
    start, n = time.perf_counter(), 0
    for shard in sorted(root.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                if m.name.endswith(".jpg"):
                    img = decode(tar.extractfile(m).read(), dec)  # type: ignore[union-attr]
                    pixel_hash(img.image), perceptual_hash(img.image)
                    encode(img.image, enc)
                    n += 1
    return time.perf_counter() - start, n


I2D_SCRIPT = textwrap.dedent(
    """
    import io, json, sys, tarfile, time
    from img2dataset.resizer import Resizer
    resizer = Resizer(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True, encode_quality=90)
    blobs = []
    for path in sys.argv[1:]:
        with tarfile.open(path) as tar:
            blobs += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]
    start = time.perf_counter()
    errors = sum(resizer(io.BytesIO(b))[-1] is not None for b in blobs)
    print(json.dumps({"seconds": time.perf_counter() - start, "images": len(blobs), "errors": errors}))
    """
)


def img2dataset_python() -> Path:
    """A venv of its own for img2dataset (cached under bench/out/)."""
    venv = OUT_DIR / "img2dataset-venv"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print("  installing img2dataset into its own venv (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}  # not ours: its own pins
        subprocess.run([str(python), "-m", "pip", "install", "-q", "img2dataset"], check=True, env=env)
        (venv / ".installed").touch()
    return python


def img2dataset_line(root: Path) -> dict[str, Any]:
    python = img2dataset_python()
    shards = [str(p) for p in sorted(root.glob("*.tar"))]
    out = subprocess.run([str(python), "-c", I2D_SCRIPT, *shards], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cli(inputs: Path, out: Path, config: Path, workers: int) -> dict[str, Any]:
    """The whole command in a process of its own; wall time and the process tree's peak RSS."""
    import psutil

    cmd = [sys.executable, "-m", "mmcurate.cli", "caption", "--input", str(inputs), "--output", str(out),
           "--config", str(config), "--no-progress", "--no-report", "--overwrite"]  # fmt: skip
    if workers > 1:
        cmd += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"mmcurate exited {proc.returncode}: {stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    if not manifest["accounting_ok"]:
        raise RuntimeError(f"records went missing: {manifest['kinds']}")
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "records": manifest["kinds"]["caption"]["counts"]["input"]}


def _one_image(tmp: Path) -> Path:
    root = tmp / "one"
    root.mkdir()
    data, caption = _image(7)
    with tarfile.open(root / "one.tar", "w") as tar:
        for ext, payload in (("jpg", data), ("txt", caption.encode())):
            info = tarfile.TarInfo(f"00000000.{ext}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return root


def best(fn: Any, reps: int) -> dict[str, Any]:
    runs = [fn() for _ in range(reps)]
    return min(runs, key=lambda r: r["seconds"])


def run(args: argparse.Namespace) -> bool:
    shards, per_shard = args.shards, args.scale_per_shard
    big = corpus(shards, per_shard)
    small = subset(big, args.scale_small)
    n = shards * per_shard
    load_before = os.getloadavg()[0]
    print(f"\nscale: the whole `mmcurate caption` run on {n} 0.5 MP JPEGs in {shards} tar shards, rule filters only")
    with tempfile.TemporaryDirectory(prefix="mmcurate-scale-") as tmp_dir:
        tmp = Path(tmp_dir)
        config = tmp / "rules.yaml"
        config.write_text(RULES)
        one = _one_image(tmp)
        reps = max(1, args.reps)
        lines: dict[str, dict[str, Any]] = {}
        sec, images = min((bare_loop(big) for _ in range(reps)), key=lambda r: r[0])
        lines["bare"] = {"seconds": sec, "records": images}
        lines["i2d"] = best(lambda: img2dataset_line(big), reps)
        lines["w1"] = best(lambda: run_cli(big, tmp / "out", config, 1), reps)
        lines["w2"] = best(lambda: run_cli(big, tmp / "out", config, 2), reps)
        lines["w1_small"] = best(lambda: run_cli(small, tmp / "out", config, 1), reps)
        lines["w2_small"] = best(lambda: run_cli(small, tmp / "out", config, 2), reps)
        lines["start1"] = best(lambda: run_cli(one, tmp / "out", config, 1), reps)
        lines["start2"] = best(lambda: run_cli(one, tmp / "out", config, 2), reps)
    return report(lines, n, shards * args.scale_small, load_before)


def report(lines: dict[str, dict[str, Any]], n: int, small: int, load_before: float) -> bool:
    rate = {k: v.get("records", v.get("images", 0)) / v["seconds"] for k, v in lines.items()}
    cores = os.cpu_count() or 1
    ratios = {
        "w2_over_w1": rate["w2"] / rate["w1"],
        "w1_over_bare": rate["w1"] / rate["bare"],
        "w1_over_i2d_per_core": rate["w1"] / rate["i2d"],
        "mem_8000_over_800": lines["w1"]["peak_rss_mb"] / lines["w1_small"]["peak_rss_mb"],
        "mem2_8000_over_800": lines["w2"]["peak_rss_mb"] / lines["w2_small"]["peak_rss_mb"],
        # growth of wall time with 10x the input, start-up included (the time(10 N) <= 10.5 time(N))
        "time_8000_over_800": lines["w1"]["seconds"] / lines["w1_small"]["seconds"],
    }
    targets = {
        "w2_over_w1": ratios["w2_over_w1"] >= 1.6,
        "w1_over_bare": ratios["w1_over_bare"] >= 0.8,
        "w1_over_i2d_per_core": ratios["w1_over_i2d_per_core"] >= 1.5,
        "mem_8000_over_800": ratios["mem_8000_over_800"] <= 1.2,
        "mem2_8000_over_800": ratios["mem2_8000_over_800"] <= 1.2,
        "start1_under_1_5s": lines["start1"]["seconds"] < 1.5,
        "start2_under_3s": lines["start2"]["seconds"] < 3.0,
        "time_8000_over_800": ratios["time_8000_over_800"] <= 10.5,
    }
    # the same verdicts named with their targets, for bench/results.py's table
    named = {"w2_over_w1>=1.6": "w2_over_w1", "w1_over_bare>=0.8": "w1_over_bare",
             "w1_over_i2d_per_core>=1.5": "w1_over_i2d_per_core", "mem_8000_over_800<=1.2": "mem_8000_over_800",
             "mem2_8000_over_800<=1.2": "mem2_8000_over_800", "time_8000_over_800<=10.5": "time_8000_over_800",
             "start1_under_1_5s": "start1_under_1_5s", "start2_under_3s": "start2_under_3s"}  # fmt: skip
    checks = {name: targets[key] for name, key in named.items()}
    labels = {
        "bare": "(bare) one-process loop: tar, draft decode, hashes, 256 px encode",
        "i2d": "(i2d) img2dataset Resizer, one process",
        "w1": f"(w1) mmcurate caption, 1 worker, {n} images",
        "w2": f"(w2) mmcurate caption, 2 workers, {n} images",
        "w1_small": f"(mem) mmcurate caption, 1 worker, {small} images",
        "w2_small": f"(mem) mmcurate caption, 2 workers, {small} images",
        "start1": "(start) one image, 1 worker",
        "start2": "(start) one image, 2 workers",
    }
    print(f"  {'line':66s} {'seconds':>8s} {'img/s':>8s} {'peak MB':>8s}")
    for key, label in labels.items():
        peak = lines[key].get("peak_rss_mb")
        peak_cell = f"{peak:8.0f}" if peak is not None else f"{'':8s}"
        print(f"  {label:66s} {lines[key]['seconds']:8.2f} {rate[key]:8.1f} {peak_cell}")
    for key, value in ratios.items():
        print(f"  {key:32s} {value:6.2f}")
    for key, ok in targets.items():
        print(f"  {key:32s} {VERDICT[ok]}")
    write_report(
        "scale",
        {"lines": lines, "images_per_second": rate, "ratios": ratios, "targets": targets, "checks": checks,
         "created": created(), "passed": all(targets.values()),
         "env": environment(cores, load_before, os.getloadavg()[0])},
    )  # fmt: skip
    return all(targets.values())
