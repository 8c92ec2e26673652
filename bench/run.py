"""Throughput benchmarks (not tests): `make bench`, or `.venv/bin/python bench/run.py --help`.

Each benchmark is a module bench/NAME.py (run(args) -> bool, add_arguments(parser) for its options),
selected with `--only NAME[,NAME]`; it prints a table, writes its figures to bench/out/NAME.json and
returns whether it met its targets (exit status 1 if any did not). bench/common.py holds what they
share (timing, Beam runner options, the synthetic caption corpus, result printing). Inputs are
generated once, deterministically, and cached under bench/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

logging.basicConfig(level=logging.ERROR)  # Beam's import-time chatter (apitools, ...)

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
# Beam's worker subprocesses (--direct_running_mode=multi_processing) unpickle the benchmarks' functions
# by module name (`caption._write_count`): they need bench/ on their path too.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)

import caption  # noqa: E402
import common  # noqa: E402
import grounding  # noqa: E402
import interleaved  # noqa: E402
import models  # noqa: E402
import ocr  # noqa: E402
import ocr_render  # noqa: E402
import plan  # noqa: E402
import results  # noqa: E402
import rollout  # noqa: E402
import scale  # noqa: E402
import video  # noqa: E402
import video_cut  # noqa: E402
import video_memory  # noqa: E402
import video_motion  # noqa: E402

BENCHMARKS = {
    "caption": caption, "interleaved": interleaved, "scale": scale, "models": models, "rollout": rollout,
    "video": video, "video_cut": video_cut, "video_motion": video_motion,
    "video_memory": video_memory, "ocr": ocr, "ocr_render": ocr_render,
    "grounding": grounding, "plan": plan,
}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    description = "\n".join([__doc__ or "", *(module.__doc__ or "" for module in BENCHMARKS.values())])
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated, of: {', '.join(BENCHMARKS)}")
    common.add_arguments(p)
    for module in BENCHMARKS.values():
        module.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    common.OUT_DIR.mkdir(parents=True, exist_ok=True)
    passed = [BENCHMARKS[name].run(args) for name in names]
    print(f"results table: {results.write_results()}")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
