"""`mmcurate ocr-render`: synthetic OCR samples with exact labels, written as an input of `mmcurate ocr`.

The renderer (`stages/ocr_render.py`) draws documents, receipts, scene text on the bundled
photographs and word crops, each sample depending only on (seed, index); this command splits the
indices into parts and renders them on `--workers` processes, each part writing its images and one
`labels-PPPPP.jsonl` (the native layout `mmcurate ocr` reads). The same seed gives the same bytes on
any number of workers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time
from typing import Any

PART = 500
"""Samples per part (one labels file each)."""


def arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--output", required=True, help="folder URI to write images/ and labels-*.jsonl into")
    sp.add_argument("--count", type=int, default=None, help="samples to render (default: render.count of the config)")
    sp.add_argument("--seed", type=int, default=None, help="the seed (default: render.seed of the config)")
    sp.add_argument("--config", help="YAML of render settings (stages/ocr_render.py RenderParams), under `render:`")
    sp.add_argument("--workers", type=int, default=1, help="processes (default 1)")


def load_params(path: str | None, count: int | None, seed: int | None) -> Any:
    """The render settings: the config file's `render:` section, then --count and --seed."""
    import yaml

    from mmcurate.stages.ocr_render import RenderParams

    from .config import ConfigError

    data: dict[str, Any] = {}
    if path:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict) or not isinstance(loaded.get("render", {}), dict):
            raise ConfigError(f"{path}: expected a mapping with a `render:` section")
        data = dict(loaded.get("render") or {})
    if count is not None:
        data["count"] = count
    if seed is not None:
        data["seed"] = seed
    try:
        return RenderParams(**data)
    except ValueError as exc:
        raise ConfigError(f"render: {exc}") from None


def _part(job: tuple[str, dict[str, Any], int, int, int]) -> dict[str, int]:
    from mmcurate.stages.ocr_render import RenderParams, write_rendered

    out, params, start, stop, part = job
    return write_rendered(out, RenderParams(**params), start, stop, part)


def render(out: str, params: Any, workers: int = 1) -> dict[str, int]:
    """Render `params.count` samples into `out`; counts per kind."""
    jobs = [
        (out, params.model_dump(), start, min(start + PART, params.count), n)
        for n, start in enumerate(range(0, params.count, PART))
    ]
    totals: dict[str, int] = {}
    if workers <= 1:
        results = map(_part, jobs)
    else:
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_part, jobs)
    for counts in results:
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
    if workers > 1:
        pool.shutdown()
    return totals


def main(args: argparse.Namespace) -> int:
    from .config import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    params = load_params(args.config, args.count, args.seed)
    started = time.perf_counter()
    totals = render(args.output, params, args.workers)
    took = time.perf_counter() - started
    n = sum(totals.values())
    print(json.dumps({"output": args.output, "samples": n, "by_kind": totals, "seconds": round(took, 2)}))
    print(f"rendered {n} samples in {took:.1f} s -> {args.output} (read it with: mmcurate ocr --input {args.output})")
    return 0
