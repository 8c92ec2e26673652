"""What the benchmarks share: paths, the synthetic caption corpus, timing, Beam runner set-up, result printing."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import json
import logging
import math
import os
import pstats
import resource
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

logging.basicConfig(level=logging.ERROR)  # Beam's import-time chatter (apitools, ...)

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from PIL import Image  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
MODELS_DIR = OUT_DIR / "models"
CORPUS_VERSION = 1  # bump when the generator changes, so cached corpora are rebuilt
VERDICT = {True: "PASS", False: "FAIL"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark reads (repetitions, profiling) and the caption corpus (caption, models' GPU line)."""
    parser.add_argument("--images", type=int, default=2000, help="corpus size (default 2000)")
    parser.add_argument("--shards", type=int, default=8, help="number of input shards (default 8)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions; the best is reported (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--profile", action="store_true", help="also write cProfile reports under bench/out/")


# ---------------------------------------------------------------------------------------------------
# Corpus: ~0.5 MP JPEGs made from the photographs bundled with scikit-image, with captions, as shards.
# ---------------------------------------------------------------------------------------------------

SOURCES = (
    "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png",
    "retina.jpg", "motorcycle_left.png", "camera.png", "moon.png", "brick.png", "grass.png", "gravel.png",
    "coins.png", "cell.png",
)  # fmt: skip
SUBJECTS = {
    "astronaut.png": "an astronaut in a white spacesuit next to a flag",
    "coffee.png": "a cup of coffee on a saucer",
    "chelsea.png": "a ginger cat looking to the side",
    "rocket.jpg": "a rocket on the launch pad",
    "hubble_deep_field.jpg": "distant galaxies in the night sky",
    "ihc.png": "a stained tissue sample under a microscope",
    "retina.jpg": "the retina of a human eye",
    "motorcycle_left.png": "a motorcycle parked in a garage",
    "camera.png": "a man with a camera on a tripod",
    "moon.png": "the surface of the moon",
    "brick.png": "an old brick wall",
    "grass.png": "a patch of grass",
    "gravel.png": "gravel on a path",
    "coins.png": "old coins on a table",
    "cell.png": "a cell seen through a microscope",
}
OPENERS = ("a photo of", "a close-up of", "an image showing", "a picture of", "a blurry photo of", "a bright shot of")
TAILS = (
    "", "in the morning", "with soft light", "on a sunny day", "taken with an old camera", "high resolution",
    "in black and white tones", "stock photo", "from a low angle", "wallpaper",
)  # fmt: skip


def photo_sources() -> list[Image.Image]:
    import skimage.data

    root = Path(skimage.data.__file__).parent
    return [Image.open(root / name).convert("RGB") for name in SOURCES]


def synth_image(i: int, seed: int, size: tuple[int, int], sources: list[Image.Image]) -> tuple[bytes, str, dict]:
    """One deterministic image: a random crop of a source, resampled, flipped, colour-shifted, noisy."""
    rng = np.random.default_rng([seed, i])
    k = int(rng.integers(len(sources)))
    src = sources[k]
    w, h = (size[1], size[0]) if rng.random() < 0.25 else size  # a quarter portrait
    sw, sh = src.size
    scale = min(sw / w, sh / h) * rng.uniform(0.55, 1.0)
    cw, ch = w * scale, h * scale
    x0, y0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    img = src.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.75, 1.25, size=3).astype(np.float32)
    arr += np.float32(rng.uniform(-20, 20))
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(rng.uniform(1.5, 6.0))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(78, 93)))
    opener, tail = OPENERS[int(rng.integers(len(OPENERS)))], TAILS[int(rng.integers(len(TAILS)))]
    text = f"{opener} {SUBJECTS[SOURCES[k]]} {tail}".strip()
    meta = {"url": f"https://example.invalid/img/{seed}/{i:07d}.jpg", "width": w, "height": h}
    return buf.getvalue(), text, meta


def _write_shard(path: str, start: int, stop: int, seed: int, size: tuple[int, int]) -> int:
    from webdataset import TarWriter

    sources = photo_sources()
    total = 0
    with TarWriter(path) as tar:
        for i in range(start, stop):
            jpg, text, meta = synth_image(i, seed, size, sources)
            total += len(jpg)
            tar.write({"__key__": f"{i:09d}", "jpg": jpg, "txt": text.encode(), "json": json.dumps(meta).encode()})
    return total


def cached_corpus(root: Path, what: str, make: Callable[[Path], dict[str, Any]]) -> Path:
    """`root` when an earlier build finished it (its `corpus.json` is there), else built by `make(tmp)`
    in a temporary folder that is renamed into place, so a killed build never passes for a finished
    one; `make` returns the facts for `corpus.json` (with `images` and `jpeg_bytes`)."""
    if (root / "corpus.json").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"generating {what} under {root} ...", flush=True)
    t0 = time.perf_counter()
    info = make(tmp)
    (tmp / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    per_image = info["jpeg_bytes"] / max(1, info["images"]) / 1024
    print(f"  done in {time.perf_counter() - t0:.1f}s, {per_image:.0f} KiB per image", flush=True)
    return root


def in_parallel(fn: Callable[..., Any], *columns: list[Any]) -> list[Any]:
    """`fn` over the rows of `columns` in worker processes (one per core), results in order."""
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(fn, *columns))


def caption_corpus(images: int, shards: int, seed: int = 0, size: tuple[int, int] = (866, 577)) -> Path:
    """The cached shard folder for these parameters, generated (in parallel) on first use."""
    root = OUT_DIR / "corpus" / f"caption-v{CORPUS_VERSION}-n{images}-s{shards}-{size[0]}x{size[1]}-seed{seed}"

    def make(tmp: Path) -> dict[str, Any]:
        per = math.ceil(images / shards)
        bounds = [(s, min(s + per, images)) for s in range(0, images, per)]
        n = len(bounds)
        sizes = in_parallel(
            _write_shard, [str(tmp / f"{i:05d}.tar") for i in range(n)], [a for a, _ in bounds],
            [b for _, b in bounds], [seed] * n, [size] * n,
        )  # fmt: skip
        return {"images": images, "shards": n, "size": list(size), "seed": seed, "jpeg_bytes": sum(sizes)}

    return cached_corpus(root, f"{images} JPEGs ({size[0]}x{size[1]}) in {shards} shards", make)


# ---------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    wall: float
    cpu: float
    """CPU seconds of this process and of child processes that ended during the run (Beam workers)."""


def timed(fn: Callable[[], Any]) -> tuple[Timing, Any]:
    r0, c0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time(), time.perf_counter()
    out = fn()
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c0 + (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return Timing(wall, cpu), out


def short_error(exc: BaseException) -> str:
    """The last `SomeError: message` line of an exception (Beam wraps worker errors in long tracebacks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if line.split(":", 1)[0].rsplit(".", 1)[-1].endswith(("Error", "Exception"))]
    return (named[-1] if named else f"{type(exc).__name__}: {lines[-1] if lines else ''}")[:400]


def best_of(runs: list[Timing]) -> Timing:
    return min(runs, key=lambda t: t.wall)


def profile_to(path: Path, fn: Callable[[], Any]) -> None:
    prof = cProfile.Profile()
    prof.runcall(fn)
    with path.open("w") as f:
        stats = pstats.Stats(prof, stream=f).strip_dirs()
        for key in ("tottime", "cumulative"):
            f.write(f"==== sorted by {key} ====\n")
            stats.sort_stats(key).print_stats(45)
    print(f"  profile written to {path}")


# ---------------------------------------------------------------------------------------------------
# Beam: runner options, worker logs, RunInference's metrics
# ---------------------------------------------------------------------------------------------------


def runner_args(workers: int) -> list[str]:
    mode = "in_memory" if workers == 1 else "multi_processing"
    return [
        "--runner=DirectRunner",
        f"--direct_num_workers={workers}",
        f"--direct_running_mode={mode}",
        "--default_sdk_harness_log_level=WARNING",  # worker subprocesses log every channel at INFO
    ]


@contextlib.contextmanager
def worker_logs(workers: int) -> Iterator[None]:
    """Send the stderr of Beam's worker subprocesses (start-up chatter at INFO) to bench/out/beam-workers.log."""
    if workers == 1:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with (OUT_DIR / "beam-workers.log").open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@dataclasses.dataclass
class BeamRun:
    """What a Beam run reports through its metrics (RunInference's own, and the bench's counters)."""

    wall: float
    counters: dict[str, int]
    load_s: float
    """RunInference's load_model_latency_milli_secs (summed over workers)."""
    inside_s: float
    """RunInference's inference_batch_latency_micro_secs: time inside run_inference."""
    batches: int
    batch_mean: float
    batch_max: int


def _counters(query: dict[str, Any]) -> dict[str, int]:
    counters: dict[str, int] = {}
    for r in query["counters"]:
        key = f"{r.key.metric.namespace}/{r.key.metric.name}"
        counters[key] = counters.get(key, 0) + (r.committed or 0)
    return counters


def _distributions(query: dict[str, Any], namespace: str) -> dict[str, tuple[Any, Any, Any]]:
    """(sum, count, max) per distribution of `namespace`, summed over steps and workers."""
    dists: dict[str, tuple[Any, Any, Any]] = {}
    for r in query["distributions"]:
        if r.key.metric.namespace != namespace or r.committed is None:
            continue
        d, have = r.committed, dists.get(r.key.metric.name)
        dists[r.key.metric.name] = (
            (d.sum, d.count, d.max) if not have else (have[0] + d.sum, have[1] + d.count, max(have[2], d.max))
        )
    return dists


def beam_run(build: Callable[[beam.Pipeline], None], namespace: str, workers: int) -> BeamRun:
    with worker_logs(workers), warnings.catch_warnings():
        # BatchElements fits its batch timings with np.polyfit, which warns at every bundle once the batches
        # all have one size (RankWarning, made "always" by scipy's import, and a division by zero)
        warnings.filterwarnings("ignore", message="Polyfit may be poorly conditioned")
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="apache_beam.transforms.util")
        t0 = time.perf_counter()
        p = beam.Pipeline(options=PipelineOptions(runner_args(workers)))
        build(p)
        result = p.run()
        result.wait_until_finish()
        wall = time.perf_counter() - t0
    query = result.metrics().query()
    dists = _distributions(query, namespace)
    load = dists.get("load_model_latency_milli_secs", (0, 0, 0))[0] / 1e3
    inside = dists.get("inference_batch_latency_micro_secs", (0, 0, 0))[0] / 1e6
    size_sum, batches, size_max = dists.get("inference_request_batch_size", (0, 0, 0))
    return BeamRun(wall, _counters(query), load, inside, batches, size_sum / batches if batches else 0.0, size_max)


# ---------------------------------------------------------------------------------------------------
# Printing and writing results
# ---------------------------------------------------------------------------------------------------


def cell(value: float | None, width: int, fmt: str = ".1f") -> str:
    """A table cell: the value formatted, or 'n/a' when there is none."""
    return f"{value:{width}{fmt}}" if value is not None else f"{'n/a':>{width}s}"


def table_head(prefix: str, cols: tuple[tuple[str, int], ...], suffix: str = "") -> None:
    """Print a table's header line (`prefix`, then each column right-aligned to its width) and its rule."""
    head = prefix + " ".join(f"{name:>{width}s}" for name, width in cols) + suffix
    print(head)
    print("-" * len(head))


def print_errors(errors: list[str], reps: int) -> None:
    """Each distinct error of a variant once, with how many of the runs it ended."""
    for err in dict.fromkeys(errors):
        print(f"    !! {errors.count(err)}/{reps} runs: {err[:300]}")


def print_load(before: float, after: float) -> None:
    print(f"  load average {before:.2f} before, {after:.2f} after (wall-clock figures: a busy machine lowers them)")


def created() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_report(name: str, report: dict[str, Any]) -> Path:
    """bench/out/NAME.json."""
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"  figures written to {path.relative_to(BENCH_DIR.parent)}")
    return path


def environment(cores: int, load_before: float, load_after: float, **versions: str | int) -> dict[str, Any]:
    """The `env` block of every report: cores, load around the run, Python, Beam and library versions."""
    import platform

    return {
        "cpu_count": cores,
        "cpu_model": cpu_model(),
        "gpu": gpu_name(),
        "loadavg_before_after": [round(load_before, 2), round(load_after, 2)],
        "python": platform.python_version(),
        "apache_beam": beam.__version__,
        **versions,
        "host": platform.node(),
    }


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's word for it."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def gpu_name() -> str:
    """The first CUDA device's name, or "" (none here: the GPU lines are "not measured")."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return ""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""
