"""caption: the caption path (tar read -> decode + validate with Pillow draft mode -> pixel hash + pHash
-> thumbnail + JPEG re-encode) on the same webdataset shards, measured as
  (ref) bare Pillow draft()+thumbnail() on the JPEG bytes alone (no tar, no hashes): calibrates the
        machine against the ~395 images/s/core reference figure,
  (a)   a bare Python loop over the project's stage functions,
  (b)   Apache Beam (DirectRunner, 1 worker, in-memory): `pipelines.caption.CORPUS.build` itself, every step
        and DoFn up to 'Finish', which is swapped for a counting sink (so nothing is written),
  (b2)  the same on N worker processes (scaling line),
  (c)   the full caption pipeline (`pipelines.caption.CORPUS.build`), dedup + shard/ledger writing included,
  (c2)  the same on N worker processes.
Targets: (b) >= 0.8x (a), (b) >= 300 images/s per core, and no variant loses a record (a Beam run that
does is reported, not timed). Figures are wall-clock: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from common import (
    OUT_DIR,
    VERDICT,
    Timing,
    best_of,
    caption_corpus,
    cell,
    created,
    environment,
    print_errors,
    print_load,
    profile_to,
    runner_args,
    short_error,
    table_head,
    timed,
    worker_logs,
    write_report,
)
from PIL import Image

from mmcurate.pipelines import caption as caption_pipeline
from mmcurate.pipelines.caption import CORPUS, CaptionConfig, OutputParams
from mmcurate.pipelines.run import new_run
from mmcurate.pipelines.spool import UnitEnd
from mmcurate.stages.image_decode import DecodeParams, decode, encode, perceptual_hash, pixel_hash
from mmcurate.stages.readers import ReadParams, Unit, list_units, read_unit

Variants = dict[str, tuple[str, int, Callable[[], int]]]
"""key -> (label, cores used, the run: returns the records it processed)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("caption")
    group.add_argument("--side", type=int, default=256, help="thumbnail / working side in px (default 256)")
    group.add_argument(
        "--workers", type=int, default=2, help="workers for the multi_processing scaling line; 0 skips it (default 2)"
    )
    group.add_argument("--no-full", action="store_true", help="skip the full pipeline line (c)")


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
    """Stands in for pipelines.finish.Finish in (b): counts the records instead of deduplicating and writing."""

    def __init__(self, count_file: str, *_finish_args: Any, **_finish_kwargs: Any) -> None:
        super().__init__()
        self.count_file = count_file

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "Records" >> beam.Filter(lambda r: not isinstance(r, UnitEnd))  # a unit's end marker is no record
            | "Count" >> beam.combiners.Count.Globally()
            | "WriteCount" >> beam.Map(_write_count, self.count_file)
        )


def run_scoring(units: list[Unit], config: CaptionConfig, inputs: list[str], workers: int) -> int:
    """(b): `pipelines.caption.CORPUS.build` itself, every step and DoFn up to 'Finish', which becomes a
    counting sink (so this line follows whatever the recipe does before Finish)."""
    with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as tmp, worker_logs(workers):
        count_file = os.path.join(tmp, "count")
        sink = functools.partial(CountInsteadOfFinish, count_file)
        run = new_run(CORPUS, config, inputs, units, tmp)
        with (
            beam.Pipeline(options=PipelineOptions(runner_args(workers))) as p,
            mock.patch.object(caption_pipeline, "Finish", sink),
        ):
            CORPUS.build(p, units, config, run)
        return int(Path(count_file).read_text())


def run_full(units: list[Unit], config: CaptionConfig, inputs: list[str], workers: int) -> int:
    with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as out, worker_logs(workers):
        run = new_run(CORPUS, config, inputs, units, out)
        with beam.Pipeline(options=PipelineOptions(runner_args(workers))) as p:
            CORPUS.build(p, units, config, run)
        manifest = json.loads(Path(out, "manifest.json").read_text())
        counts = manifest["kinds"]["caption"]["counts"]
        if not manifest["accounting_ok"]:
            raise RuntimeError(f"full pipeline lost records: {counts}")
        return counts["input"]


@dataclasses.dataclass
class Setup:
    """The corpus both sides read and the config both run."""

    corpus: Path
    inputs: list[str]
    config: CaptionConfig
    units: list[Unit]
    blobs: list[bytes]
    cores: int
    workers: int
    """Worker processes of the scaling lines (b2), (c2); 0 or 1: no scaling lines."""

    @property
    def n(self) -> int:
        return len(self.blobs)


def _setup(args: argparse.Namespace) -> Setup:
    corpus = caption_corpus(args.images, args.shards, seed=args.seed)
    inputs = [str(corpus / "*.tar")]
    config = caption_config(args.side)
    units = list_units(inputs, config.read)
    blobs = [rec.image for unit in units for rec in read_unit(unit, ReadParams())]
    if len(blobs) != args.images:
        raise RuntimeError(f"corpus holds {len(blobs)} images, expected {args.images}")
    cores = os.cpu_count() or 1
    workers = min(args.workers, cores) if args.workers else 0
    return Setup(corpus, inputs, config, units, blobs, cores, workers)


def _variants(s: Setup, side: int, full: bool) -> Variants:
    units, config, inputs, workers = s.units, s.config, s.inputs, s.workers
    variants: Variants = {
        "ref": ("(ref) bare Pillow draft+thumbnail, bytes in memory", 1, lambda: reference_pillow(s.blobs, side)),
        "bare": ("(a) bare Python loop (read, decode, hashes, encode)", 1, lambda: bare_loop(units, config)),
        "beam": ("(b) Beam DirectRunner in_memory, 1 worker", 1, lambda: run_scoring(units, config, inputs, 1)),
    }
    if workers > 1:
        variants["beam_mp"] = (
            f"(b2) Beam DirectRunner multi_processing, {workers} workers",
            workers,
            lambda: run_scoring(units, config, inputs, workers),
        )
    if full:
        variants["full"] = (
            "(c) full pipeline incl. dedup + shard writing, 1 worker",
            1,
            lambda: run_full(units, config, inputs, 1),
        )
    if full and workers > 1:
        variants["full_mp"] = (
            f"(c2) full pipeline, multi_processing, {workers} workers",
            workers,
            lambda: run_full(units, config, inputs, workers),
        )
    return variants


def _warm_up(s: Setup, side: int, full: bool) -> None:
    """Imports, scipy's DCT, Beam's pickling and runner start-up, page cache."""
    first = s.units[:1]
    reference_pillow(s.blobs[:50], side)
    bare_loop(first, s.config)
    run_scoring(first, s.config, s.inputs, 1)
    if full:
        run_full(first, s.config, s.inputs, 1)


def _one_run(fn: Callable[[], int], n: int) -> Timing | str:
    """The run's timing, or why it does not count (it raised, or lost records)."""
    try:
        timing, count = timed(fn)
    except Exception as exc:  # e.g. the full pipeline's AccountingError: report it, keep measuring
        return short_error(exc)
    if count != n:
        return f"processed {count} of {n} records: {n - count} lost"
    return timing


def _measure(
    variants: Variants, s: Setup, reps: int
) -> tuple[dict[str, list[Timing]], dict[str, list[str]], list[Timing]]:
    """`reps` interleaved repetitions of every variant (so drifting load hits every variant alike), and (b)'s
    pipeline on no input after each (its fixed cost, which a real corpus amortises)."""
    runs: dict[str, list[Timing]] = {k: [] for k in variants}
    errors: dict[str, list[str]] = {k: [] for k in variants}  # runs that lost records or raised
    startup: list[Timing] = []
    for rep in range(reps):
        for key, (_label, _cores, fn) in variants.items():
            outcome = _one_run(fn, s.n)
            if isinstance(outcome, str):
                errors[key].append(outcome)
                print(f"  rep {rep + 1}/{reps} {key:8s} FAILED: {outcome[:200]}", flush=True)
                continue
            runs[key].append(outcome)
            print(
                f"  rep {rep + 1}/{reps} {key:8s} {outcome.wall:7.2f}s wall  {s.n / outcome.wall:7.1f} img/s",
                flush=True,
            )
        with contextlib.suppress(Exception):  # informational only
            startup.append(timed(lambda: run_scoring([], s.config, s.inputs, 1))[0])
    return runs, errors, startup


def _figures(runs: list[Timing], n: int, used: int, bare_wall: float | None) -> dict[str, Any]:
    t = best_of(runs)
    return {
        "wall_s": round(t.wall, 3),
        "cpu_s": round(t.cpu, 3),
        "images_per_s": round(n / t.wall, 1),
        "images_per_s_per_core": round(n / t.wall / used, 1),
        "images_per_cpu_s": round(n / t.cpu, 1) if t.cpu > 0 else None,
        "vs_bare": round(bare_wall / t.wall, 3) if bare_wall else None,
        "all_wall_s": [round(r.wall, 3) for r in runs],
    }


def _results(
    variants: Variants, runs: dict[str, list[Timing]], errors: dict[str, list[str]], n: int
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict] = {}
    bare_wall = best_of(runs["bare"]).wall if runs["bare"] else None
    for key, (label, used, _fn) in variants.items():
        res: dict[str, Any] = {"label": label, "cores": used, "errors": errors[key]}
        if runs[key]:
            res.update(_figures(runs[key], n, used, bare_wall))
        results[key] = res
    return results


@dataclasses.dataclass
class Verdict:
    ratio: float | None
    """(b) / (a) in images/s."""
    fixed: float
    """(b)'s fixed start-up: the same pipeline on no input."""
    steady: float | None
    """(b)'s images/s without its fixed start-up."""
    checks: dict[str, bool]


def _verdict(results: dict[str, dict[str, Any]], startup: list[Timing], n: int) -> Verdict:
    beam_rate, bare_rate = results["beam"].get("images_per_s"), results["bare"].get("images_per_s")
    ratio = beam_rate / bare_rate if beam_rate and bare_rate else None
    fixed = best_of(startup).wall if startup else 0.0
    steady = n / max(results["beam"]["wall_s"] - fixed, 1e-9) if beam_rate and startup else None
    checks = {
        "beam_vs_bare>=0.8": ratio is not None and ratio >= 0.8,
        "beam_per_core>=300": beam_rate is not None and results["beam"]["images_per_s_per_core"] >= 300,
        "no_records_lost": not any(r["errors"] for r in results.values()),
    }
    return Verdict(ratio, fixed, steady, checks)


def _print_table(results: dict[str, dict[str, Any]], reps: int) -> None:
    print()
    cols = ("wall s", 7), ("img/s", 7), ("cores", 5), ("img/s/core", 10), ("img/CPU-s", 9), ("vs (a)", 6)
    table_head(f"{'variant':58s} ", cols)
    for r in results.values():
        print(
            f"{r['label']:58s} {cell(r.get('wall_s'), 7, '.2f')} {cell(r.get('images_per_s'), 7)} {r['cores']:5d} "
            f"{cell(r.get('images_per_s_per_core'), 10)} {cell(r.get('images_per_cpu_s'), 9)} "
            f"{cell(r.get('vs_bare'), 6, '.2f')}"
        )
        print_errors(r["errors"], reps)
    print()


def _print_verdict(results: dict[str, dict[str, Any]], v: Verdict) -> None:
    checks, bare_rate = v.checks, results["bare"].get("images_per_s")
    print(
        f"  Beam (b) / bare loop (a) = {cell(v.ratio, 0, '.2f')}x  (target >= 0.80)  "
        f"{VERDICT[checks['beam_vs_bare>=0.8']]}"
    )
    print(
        f"  Beam (b) per core = {cell(results['beam'].get('images_per_s_per_core'), 0)} images/s  (target >= 300)  "
        f"{VERDICT[checks['beam_per_core>=300']]}"
    )
    print(f"  every variant processed every record: {VERDICT[checks['no_records_lost']]}")
    if v.steady is not None and bare_rate:
        print(
            f"  Beam (b) fixed start-up (same pipeline, no input) = {v.fixed:.2f}s; without it (b) = {v.steady:.1f} "
            f"images/s = {v.steady / bare_rate:.2f}x (a)\n    (informational: the checks use end-to-end wall time)"
        )


def run(args: argparse.Namespace) -> bool:
    side, full = args.side, not args.no_full
    s = _setup(args)
    variants = _variants(s, side, full)
    print(f"caption: {s.n} images in {len(s.units)} shards ({s.corpus.name}), {side}px thumbnails, best of {args.reps}")
    load_before = os.getloadavg()[0]
    print(f"  load average before: {load_before:.2f} on {s.cores} cores")
    _warm_up(s, side, full)
    runs, errors, startup = _measure(variants, s, args.reps)
    load_after = os.getloadavg()[0]

    results = _results(variants, runs, errors, s.n)
    v = _verdict(results, startup, s.n)
    _print_table(results, args.reps)
    _print_verdict(results, v)
    print_load(load_before, load_after)
    print("  reference (quiet machine): bare Pillow draft()+thumbnail() ~395 img/s/core; img2dataset Resizer ~185")

    report = {
        "benchmark": "caption",
        "created": created(),
        "images": s.n,
        "shards": len(s.units),
        "corpus": json.loads((s.corpus / "corpus.json").read_text()),
        "side": side,
        "reps": args.reps,
        "results": results,
        "beam_vs_bare": round(v.ratio, 3) if v.ratio else None,
        "beam_fixed_startup_s": round(v.fixed, 3),
        "beam_images_per_s_without_startup": round(v.steady, 1) if v.steady else None,
        "measured": {"beam_per_core>=300": results.get("beam", {}).get("images_per_s_per_core")},
        "checks": v.checks,
        "passed": all(v.checks.values()),
        "env": environment(s.cores, load_before, load_after, pillow=Image.__version__),
    }
    write_report("caption", report)

    if args.profile:
        print("profiling (one run each, cProfile) ...")
        profile_to(OUT_DIR / "profile-caption-bare.txt", lambda: bare_loop(s.units, s.config))
        profile_to(OUT_DIR / "profile-caption-beam.txt", lambda: run_scoring(s.units, s.config, s.inputs, 1))
    return report["passed"]
