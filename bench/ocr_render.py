"""ocr_render: the synthetic OCR renderer (`stages/ocr_render.py`), samples per second per core:
  (kinds)  per kind (document pages, receipts, scenes, word crops): `--count` samples rendered and
           encoded in this process (one core) after a warm-up of half as many (fonts, glyph cache,
           photographs: a long run's steady state), best of `--reps`; per-core rates from the
           process's CPU time (the wall-clock rate beside it), render and encode milliseconds apart,
  (cold)   informational: the warm-up itself, a new parameter set's first samples (font and word
           checks, cold glyph cache),
  (write)  `write_rendered` of `--count` samples of the default mix into a temporary folder, on one
           process and on `--render-workers` processes (one part each, from a cold start, as a run
           is); both must write the same rows and bytes.
Target (the issue's): >= 20 document pages/s per core OR >= 100 scene-text word crops/s per core.
Figures are wall-clock and CPU time: measure on a quiet machine. Alone: `python bench/ocr_render.py --count 200`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from common import OUT_DIR, VERDICT, cell, created, environment, print_load, profile_to, table_head, write_report
from common import add_arguments as add_common_arguments
from PIL import Image

from mmcurate.stages.ocr_render import (
    KINDS,
    RenderParams,
    encode_rendered,
    render_sample,
    resolve_kit,
    write_rendered,
)

DOCUMENT_TARGET = 20.0
"""Document pages per second per core (1240x1754, PNG)."""
WORD_TARGET = 100.0
"""Scene-text word crops per second per core (JPEG)."""
FIRST = 1_000_000
"""The timed samples start at this index (the warm-up's come before): the same samples in every rep."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ocr_render")
    group.add_argument("--count", type=int, default=200, help="samples per kind and for the write line (default 200)")
    group.add_argument(
        "--render-workers", type=int, default=2, help="processes for the parallel write line; 0 skips it (default 2)"
    )


def _batch(params: RenderParams, start: int, n: int) -> dict[str, float]:
    """Render then encode `n` samples: CPU seconds of each step, wall seconds, bytes written."""
    c0, t0 = time.process_time(), time.perf_counter()
    samples = [render_sample(i, params) for i in range(start, start + n)]
    c1 = time.process_time()
    size = sum(len(encode_rendered(r, params, start + k)) for k, r in enumerate(samples))
    c2, t2 = time.process_time(), time.perf_counter()
    lines = sum(len(r.lines) for r in samples)
    return {
        "render_cpu": c1 - c0,
        "encode_cpu": c2 - c1,
        "cpu": c2 - c0,
        "wall": t2 - t0,
        "bytes": size,
        "lines": lines,
    }


def measure_kind(kind: str, count: int, reps: int, seed: int) -> dict[str, Any]:
    """One kind on one core: the warm-up (cold figures), then the best of `reps` timed batches."""
    params = RenderParams(count=FIRST + count, seed=seed, mix={kind: 1.0})
    c0, t0 = time.process_time(), time.perf_counter()
    resolve_kit(params)
    warm = max(20, count // 2)
    _batch(params, 0, warm)
    cold_wall = time.perf_counter() - t0
    cold_cpu = time.process_time() - c0
    runs = [_batch(params, FIRST, count) for _ in range(reps)]
    best = min(runs, key=lambda r: r["cpu"])
    return {
        "samples": count,
        "per_s_per_core": round(count / best["cpu"], 1),
        "per_s_wall": round(count / best["wall"], 1),
        "render_ms": round(best["render_cpu"] / count * 1e3, 2),
        "encode_ms": round(best["encode_cpu"] / count * 1e3, 2),
        "kib_per_sample": round(best["bytes"] / count / 1024, 1),
        "lines_per_sample": round(best["lines"] / count, 1),
        "cold_samples": warm,
        "cold_per_s_per_core": round(warm / cold_cpu, 1),
        "cold_wall_s": round(cold_wall, 2),
        "all_cpu_s": [round(r["cpu"], 3) for r in runs],
    }


def _write_part(out: str, params_json: str, start: int, stop: int, part: int) -> dict[str, int]:
    return write_rendered(out, RenderParams.model_validate_json(params_json), start, stop, part)


def _digest(root: Path) -> str:
    """The rows (in index order, whatever the parts) and every image's bytes."""
    rows = sorted(
        (json.loads(line) for f in sorted(root.glob("labels-*.jsonl")) for line in f.read_text().splitlines()),
        key=lambda r: r["image"],
    )
    h = hashlib.sha256(json.dumps(rows, sort_keys=True).encode())
    for path in sorted((root / "images").iterdir()):
        h.update(path.read_bytes())
    return h.hexdigest()


def measure_write(count: int, workers: int, seed: int) -> dict[str, Any]:
    """`write_rendered` of the default mix: one process, then `workers` processes from a cold start."""
    params = RenderParams(count=count, seed=seed)
    result: dict[str, Any] = {"samples": count}
    with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as tmp:
        one = Path(tmp) / "one"
        c0, t0 = time.process_time(), time.perf_counter()
        result["counts"] = write_rendered(str(one), params)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        result.update(one_wall_s=round(wall, 2), one_per_s=round(count / wall, 1), one_per_s_cpu=round(count / cpu, 1))
        if workers > 0:
            many = Path(tmp) / "many"
            bounds = np.linspace(0, count, workers + 1).round().astype(int).tolist()
            t0 = time.perf_counter()
            parts = [(str(many), params.model_dump_json(), bounds[k], bounds[k + 1], k) for k in range(workers)]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                list(pool.map(_write_part, *zip(*parts, strict=True)))
            wall = time.perf_counter() - t0
            result.update(workers=workers, many_wall_s=round(wall, 2), many_per_s=round(count / wall, 1),
                          many_per_s_per_core=round(count / wall / workers, 1),
                          same_output=_digest(one) == _digest(many))  # fmt: skip
    return result


def _print(kinds: dict[str, dict[str, Any]], write: dict[str, Any], checks: dict[str, bool]) -> None:
    print()
    cols = (("samples", 7), ("/s/core", 8), ("/s wall", 8), ("render ms", 9), ("encode ms", 9), ("KiB", 6),
            ("lines", 6), ("cold /s", 8))  # fmt: skip
    table_head(f"{'kind':10s} ", cols)
    for kind, r in kinds.items():
        print(
            f"{kind:10s} {r['samples']:7d} {cell(r['per_s_per_core'], 8)} {cell(r['per_s_wall'], 8)} "
            f"{cell(r['render_ms'], 9, '.2f')} {cell(r['encode_ms'], 9, '.2f')} {cell(r['kib_per_sample'], 6)} "
            f"{cell(r['lines_per_sample'], 6)} {cell(r['cold_per_s_per_core'], 8)}"
        )
    print()
    print(f"  write_rendered, default mix {write['counts']}: 1 process {write['one_per_s']:.1f} samples/s")
    if "workers" in write:
        print(
            f"  {write['workers']} processes: {write['many_per_s']:.1f} samples/s, "
            f"{write['many_per_s_per_core']:.1f}/s per core; same rows and bytes: {VERDICT[write['same_output']]}"
        )
    doc, word = kinds["document"]["per_s_per_core"], kinds["word"]["per_s_per_core"]
    print(
        f"  document pages {doc:.1f}/s/core (target >= {DOCUMENT_TARGET:.0f}) "
        f"{VERDICT[checks[f'document_per_s_per_core>={DOCUMENT_TARGET:.0f}']]}; "
        f"word crops {word:.1f}/s/core (target >= {WORD_TARGET:.0f}) "
        f"{VERDICT[checks[f'word_per_s_per_core>={WORD_TARGET:.0f}']]}; either one: {VERDICT[checks['target']]}"
    )


def run(args: argparse.Namespace) -> bool:
    count, reps, seed = args.count, args.reps, args.seed
    cores = os.cpu_count() or 1
    print(f"ocr_render: {count} samples per kind, best of {reps}; write line on 1 and {args.render_workers} processes")
    load_before = os.getloadavg()[0]
    print(f"  load average before: {load_before:.2f} on {cores} cores")
    kinds = {kind: measure_kind(kind, count, reps, seed) for kind in KINDS}
    write = measure_write(count, args.render_workers, seed)
    load_after = os.getloadavg()[0]
    doc_ok = kinds["document"]["per_s_per_core"] >= DOCUMENT_TARGET
    word_ok = kinds["word"]["per_s_per_core"] >= WORD_TARGET
    checks = {
        f"document_per_s_per_core>={DOCUMENT_TARGET:.0f}": doc_ok,
        f"word_per_s_per_core>={WORD_TARGET:.0f}": word_ok,
        "target": doc_ok or word_ok,
        "same_output_in_parallel": write.get("same_output", True),
    }
    _print(kinds, write, checks)
    print_load(load_before, load_after)
    report = {
        "benchmark": "ocr_render",
        "created": created(),
        "count": count,
        "reps": reps,
        "seed": seed,
        "page": list(RenderParams(count=1).page),
        "kinds": kinds,
        "write": write,
        "checks": checks,
        "passed": checks["target"] and checks["same_output_in_parallel"],
        "env": environment(cores, load_before, load_after, pillow=Image.__version__, numpy=np.__version__),
    }
    write_report("ocr_render", report)
    if args.profile:
        print("profiling (document pages and word crops, cProfile) ...")
        for kind, n in (("document", max(10, count // 10)), ("word", count)):
            params = RenderParams(count=FIRST + n, seed=seed, mix={kind: 1.0})
            profile_to(OUT_DIR / f"profile-ocr_render-{kind}.txt", lambda p=params, n=n: _batch(p, FIRST, n))
    return report["passed"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    add_arguments(parser)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    sys.exit(0 if run(parser.parse_args()) else 1)
