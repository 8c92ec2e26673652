"""Throughput benchmarks (not tests): `make bench`, or `.venv/bin/python bench/run.py --help`.

Each benchmark is a function in BENCHMARKS, selected with `--only NAME[,NAME]`; it prints a table,
writes its figures to bench/out/NAME.json and returns whether it met its targets (exit status 1 if
any did not). Inputs are generated once, deterministically, and cached under bench/out/ (git-ignored).

caption: the caption path (tar read -> decode + validate with Pillow draft mode -> pixel hash + pHash
-> thumbnail + JPEG re-encode) on the same webdataset shards, measured as
  (ref) bare Pillow draft()+thumbnail() on the JPEG bytes alone (no tar, no hashes): calibrates the
        machine against the ~395 images/s/core reference figure,
  (a)   a bare Python loop over the project's stage functions,
  (b)   Apache Beam (DirectRunner, 1 worker, in-memory): `pipelines.caption.build` itself, every step
        and DoFn up to 'Finish', which is swapped for a counting sink (so nothing is written),
  (b2)  the same on N worker processes (scaling line),
  (c)   the full caption pipeline (`pipelines.caption.build`), dedup + shard/ledger writing included,
  (c2)  the same on N worker processes.
Targets: (b) >= 0.8x (a), (b) >= 300 images/s per core, and no variant loses a record (a Beam run that
does is reported, not timed). Figures are wall-clock: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import functools
import io
import json
import logging
import math
import os
import platform
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

logging.basicConfig(level=logging.ERROR)  # Beam's import-time chatter (apitools, ...)

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from PIL import Image  # noqa: E402

from mmcurate.pipelines import caption  # noqa: E402
from mmcurate.pipelines.config import CaptionConfig, OutputParams  # noqa: E402
from mmcurate.stages.image_decode import (  # noqa: E402
    DecodeParams,
    decode,
    encode,
    perceptual_hash,
    pixel_hash,
)
from mmcurate.stages.readers import ReadParams, Unit, list_units, read_unit  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
CORPUS_VERSION = 1  # bump when the generator changes, so cached corpora are rebuilt

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


def _sources() -> list[Image.Image]:
    import skimage.data

    root = Path(skimage.data.__file__).parent
    return [Image.open(root / name).convert("RGB") for name in SOURCES]


def _synth(i: int, seed: int, size: tuple[int, int], sources: list[Image.Image]) -> tuple[bytes, str, dict]:
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

    sources = _sources()
    total = 0
    with TarWriter(path) as tar:
        for i in range(start, stop):
            jpg, text, meta = _synth(i, seed, size, sources)
            total += len(jpg)
            tar.write({"__key__": f"{i:09d}", "jpg": jpg, "txt": text.encode(), "json": json.dumps(meta).encode()})
    return total


def caption_corpus(images: int, shards: int, seed: int = 0, size: tuple[int, int] = (866, 577)) -> Path:
    """The cached shard folder for these parameters, generated (in parallel) on first use."""
    root = OUT_DIR / "corpus" / f"caption-v{CORPUS_VERSION}-n{images}-s{shards}-{size[0]}x{size[1]}-seed{seed}"
    done = root / "corpus.json"
    if done.exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    per = math.ceil(images / shards)
    bounds = [(s, min(s + per, images)) for s in range(0, images, per)]
    print(f"generating {images} JPEGs ({size[0]}x{size[1]}) into {len(bounds)} shards under {root} ...", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sizes = list(
            pool.map(
                _write_shard,
                [str(tmp / f"{n:05d}.tar") for n in range(len(bounds))],
                [a for a, _ in bounds],
                [b for _, b in bounds],
                [seed] * len(bounds),
                [size] * len(bounds),
            )
        )
    info = {"images": images, "shards": len(bounds), "size": list(size), "seed": seed, "jpeg_bytes": sum(sizes)}
    (tmp / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    print(f"  done in {time.perf_counter() - t0:.1f}s, {sum(sizes) / images / 1024:.0f} KiB per image", flush=True)
    return root


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
# caption
# ---------------------------------------------------------------------------------------------------


def caption_config(side: int) -> CaptionConfig:
    """What both sides run: no caption filters, decode and thumbnails at `side` px."""
    return CaptionConfig(filters={}, decode=DecodeParams(working_side=side), output=OutputParams(max_side=side))


def reference_pillow(blobs: list[bytes], side: int) -> int:
    """The reference figure's work: Pillow draft() + thumbnail() + JPEG save, nothing else."""
    for data in blobs:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (side, side))
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        img.save(io.BytesIO(), format="JPEG", quality=90)
    return len(blobs)


def bare_loop(units: list[Unit], config: CaptionConfig) -> int:
    """The caption path as plain function calls, one unit after another."""
    n = 0
    for unit in units:
        for rec in read_unit(unit, config.read):
            img = decode(rec.image or b"", config.decode)
            rec.pixel_hash, rec.phash = pixel_hash(img.image), perceptual_hash(img.image)
            rec.image, rec.out_width, rec.out_height = encode(img.image, config.output)
            n += 1
    return n


def _write_count(count: int, path: str) -> None:
    Path(path).write_text(str(count))


class CountInsteadOfFinish(beam.PTransform):
    """Stands in for pipelines.common.Finish in (b): counts the records instead of deduplicating and writing."""

    def __init__(self, count_file: str, *_finish_args: Any, **_finish_kwargs: Any) -> None:
        super().__init__()
        self.count_file = count_file

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "Count" >> beam.combiners.Count.Globally()
            | "WriteCount" >> beam.Map(_write_count, self.count_file)
        )


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


def run_scoring(units: list[Unit], config: CaptionConfig, workers: int) -> int:
    """(b): `pipelines.caption.build` itself, every step and DoFn up to 'Finish', which becomes a counting sink
    (so this line follows whatever build() does before Finish)."""
    with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as tmp, worker_logs(workers):
        count_file = os.path.join(tmp, "count")
        sink = functools.partial(CountInsteadOfFinish, count_file)
        with (
            beam.Pipeline(options=PipelineOptions(runner_args(workers))) as p,
            mock.patch.object(caption, "Finish", sink),
        ):
            caption.build(p, units, config, tmp, meta={})
        return int(Path(count_file).read_text())


def run_full(units: list[Unit], config: CaptionConfig, inputs: list[str], workers: int) -> int:
    with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as out, worker_logs(workers):
        meta = caption.meta_for(inputs, config, units)
        with beam.Pipeline(options=PipelineOptions(runner_args(workers))) as p:
            caption.build(p, units, config, out, meta)
        manifest = json.loads(Path(out, "manifest.json").read_text())
        if not manifest["accounting_ok"]:
            raise RuntimeError(f"full pipeline lost records: {manifest['counts']}")
        return manifest["counts"]["input"]


def bench_caption(args: argparse.Namespace) -> bool:
    side = args.side
    corpus = caption_corpus(args.images, args.shards, seed=args.seed)
    inputs = [str(corpus / "*.tar")]
    config = caption_config(side)
    units = list_units(inputs, config.read)
    blobs = [rec.image for unit in units for rec in read_unit(unit, ReadParams())]
    n = len(blobs)
    if n != args.images:
        raise RuntimeError(f"corpus holds {n} images, expected {args.images}")
    cores = os.cpu_count() or 1
    workers = min(args.workers, cores) if args.workers else 0

    variants: dict[str, tuple[str, int, Callable[[], int]]] = {
        "ref": ("(ref) bare Pillow draft+thumbnail, bytes in memory", 1, lambda: reference_pillow(blobs, side)),
        "bare": ("(a) bare Python loop (read, decode, hashes, encode)", 1, lambda: bare_loop(units, config)),
        "beam": ("(b) Beam DirectRunner in_memory, 1 worker", 1, lambda: run_scoring(units, config, 1)),
    }
    if workers > 1:
        variants["beam_mp"] = (
            f"(b2) Beam DirectRunner multi_processing, {workers} workers",
            workers,
            lambda: run_scoring(units, config, workers),
        )
    if not args.no_full:
        variants["full"] = (
            "(c) full pipeline incl. dedup + shard writing, 1 worker",
            1,
            lambda: run_full(units, config, inputs, 1),
        )
        if workers > 1:
            variants["full_mp"] = (
                f"(c2) full pipeline, multi_processing, {workers} workers",
                workers,
                lambda: run_full(units, config, inputs, workers),
            )

    print(f"caption: {n} images in {len(units)} shards ({corpus.name}), {side}px thumbnails, best of {args.reps}")
    load_before = os.getloadavg()[0]
    print(f"  load average before: {load_before:.2f} on {cores} cores")
    # Warm-up: imports, scipy's DCT, Beam's pickling and runner start-up, page cache.
    first = units[:1]
    reference_pillow(blobs[:50], side)
    bare_loop(first, config)
    run_scoring(first, config, 1)
    if not args.no_full:
        run_full(first, config, inputs, 1)

    runs: dict[str, list[Timing]] = {k: [] for k in variants}
    errors: dict[str, list[str]] = {k: [] for k in variants}  # runs that lost records or raised
    startup: list[Timing] = []  # (b)'s pipeline on no input: its fixed cost, which a real corpus amortises
    for rep in range(args.reps):  # interleaved, so drifting load hits every variant alike
        for key, (_label, _cores, fn) in variants.items():
            try:
                timing, count = timed(fn)
            except Exception as exc:  # e.g. the full pipeline's AccountingError: report it, keep measuring
                errors[key].append(short_error(exc))
                print(f"  rep {rep + 1}/{args.reps} {key:8s} FAILED: {errors[key][-1][:200]}", flush=True)
                continue
            if count != n:
                errors[key].append(f"processed {count} of {n} records: {n - count} lost")
                print(f"  rep {rep + 1}/{args.reps} {key:8s} FAILED: {errors[key][-1]}", flush=True)
                continue
            runs[key].append(timing)
            print(
                f"  rep {rep + 1}/{args.reps} {key:8s} {timing.wall:7.2f}s wall  {n / timing.wall:7.1f} img/s",
                flush=True,
            )
        with contextlib.suppress(Exception):  # informational only
            startup.append(timed(lambda: run_scoring([], config, 1))[0])
    load_after = os.getloadavg()[0]

    results: dict[str, dict] = {}
    bare_wall = best_of(runs["bare"]).wall if runs["bare"] else None
    for key, (label, used, _fn) in variants.items():
        res: dict[str, Any] = {"label": label, "cores": used, "errors": errors[key]}
        if runs[key]:
            t = best_of(runs[key])
            res.update(
                wall_s=round(t.wall, 3),
                cpu_s=round(t.cpu, 3),
                images_per_s=round(n / t.wall, 1),
                images_per_s_per_core=round(n / t.wall / used, 1),
                images_per_cpu_s=round(n / t.cpu, 1) if t.cpu > 0 else None,
                vs_bare=round(bare_wall / t.wall, 3) if bare_wall else None,
                all_wall_s=[round(r.wall, 3) for r in runs[key]],
            )
        results[key] = res
    beam_rate, bare_rate = results["beam"].get("images_per_s"), results["bare"].get("images_per_s")
    ratio = beam_rate / bare_rate if beam_rate and bare_rate else None
    fixed = best_of(startup).wall if startup else 0.0
    steady = n / max(results["beam"]["wall_s"] - fixed, 1e-9) if beam_rate and startup else None
    checks = {
        "beam_vs_bare>=0.8": ratio is not None and ratio >= 0.8,
        "beam_per_core>=300": beam_rate is not None and results["beam"]["images_per_s_per_core"] >= 300,
        "no_records_lost": not any(errors.values()),
    }

    def cell(value: float | None, width: int, fmt: str = ".1f") -> str:
        return f"{value:{width}{fmt}}" if value is not None else f"{'n/a':>{width}s}"

    print()
    cols = ("wall s", 7), ("img/s", 7), ("cores", 5), ("img/s/core", 10), ("img/CPU-s", 9), ("vs (a)", 6)
    head = f"{'variant':58s} " + " ".join(f"{name:>{width}s}" for name, width in cols)
    print(head)
    print("-" * len(head))
    for r in results.values():
        print(
            f"{r['label']:58s} {cell(r.get('wall_s'), 7, '.2f')} {cell(r.get('images_per_s'), 7)} {r['cores']:5d} "
            f"{cell(r.get('images_per_s_per_core'), 10)} {cell(r.get('images_per_cpu_s'), 9)} "
            f"{cell(r.get('vs_bare'), 6, '.2f')}"
        )
        for err in dict.fromkeys(r["errors"]):
            print(f"    !! {len([e for e in r['errors'] if e == err])}/{args.reps} runs: {err[:300]}")
    print()
    verdict = {True: "PASS", False: "FAIL"}
    print(
        f"  Beam (b) / bare loop (a) = {cell(ratio, 0, '.2f')}x  (target >= 0.80)  "
        f"{verdict[checks['beam_vs_bare>=0.8']]}"
    )
    print(
        f"  Beam (b) per core = {cell(results['beam'].get('images_per_s_per_core'), 0)} images/s  (target >= 300)  "
        f"{verdict[checks['beam_per_core>=300']]}"
    )
    print(f"  every variant processed every record: {verdict[checks['no_records_lost']]}")
    if steady is not None and bare_rate:
        print(
            f"  Beam (b) fixed start-up (same pipeline, no input) = {fixed:.2f}s; without it (b) = {steady:.1f} "
            f"images/s = {steady / bare_rate:.2f}x (a)\n    (informational: the checks use end-to-end wall time)"
        )
    print(
        f"  load average {load_before:.2f} before, {load_after:.2f} after "
        "(wall-clock figures: a busy machine lowers them)"
    )
    print("  reference (quiet machine): bare Pillow draft()+thumbnail() ~395 img/s/core; img2dataset Resizer ~185")

    report = {
        "benchmark": "caption",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "images": n,
        "shards": len(units),
        "corpus": json.loads((corpus / "corpus.json").read_text()),
        "side": side,
        "reps": args.reps,
        "results": results,
        "beam_vs_bare": round(ratio, 3) if ratio else None,
        "beam_fixed_startup_s": round(fixed, 3),
        "beam_images_per_s_without_startup": round(steady, 1) if steady else None,
        "checks": checks,
        "passed": all(checks.values()),
        "env": {
            "cpu_count": cores,
            "loadavg_before_after": [round(load_before, 2), round(load_after, 2)],
            "python": platform.python_version(),
            "apache_beam": beam.__version__,
            "pillow": Image.__version__,
            "host": platform.node(),
        },
    }
    path = OUT_DIR / "caption.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"  figures written to {path.relative_to(BENCH_DIR.parent)}")

    if args.profile:
        print("profiling (one run each, cProfile) ...")
        profile_to(OUT_DIR / "profile-caption-bare.txt", lambda: bare_loop(units, config))
        profile_to(OUT_DIR / "profile-caption-beam.txt", lambda: run_scoring(units, config, 1))
    return report["passed"]


BENCHMARKS: dict[str, Callable[[argparse.Namespace], bool]] = {
    "caption": bench_caption,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated, of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--images", type=int, default=2000, help="corpus size (default 2000)")
    parser.add_argument("--shards", type=int, default=8, help="number of input shards (default 8)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions; the best is reported (default 3)")
    parser.add_argument("--side", type=int, default=256, help="thumbnail / working side in px (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument(
        "--workers", type=int, default=2, help="workers for the multi_processing scaling line; 0 skips it (default 2)"
    )
    parser.add_argument("--no-full", action="store_true", help="skip the full pipeline line (c)")
    parser.add_argument("--profile", action="store_true", help="also write cProfile reports under bench/out/")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    passed = [BENCHMARKS[name](args) for name in names]
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
