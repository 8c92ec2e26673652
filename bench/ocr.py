"""ocr: the OCR corpus path (`pipelines.ocr.CORPUS`: native jsonl of rendered samples read -> full-
resolution decode + hashes + image filters -> PP-OCR detection + recognition of every labelled box's
crop (RunInference) -> verification scores -> thresholds -> re-encode with the boxes moved onto the
stored image -> shards + ledgers + reading SFT rows) against the same model called directly:
  (direct) a bare loop over the same files: PIL decode (EXIF applied), the backend's full OCR and the
           recognition of each labelled quad's crop, as the pipeline's model stage does,
  (pipe)   the whole pipeline, 1 worker (in-memory DirectRunner), embedded defaults.
Corpus: `--ocr-samples` rendered samples (default 40, the renderer's default mix at half-size pages),
seed 0. Target: pipeline images/s >= 0.9x direct images/s, in the same run. Figures are wall-clock:
measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import OUT_DIR, VERDICT, created, environment, runner_args, write_report
from PIL import Image, ImageOps

from mmcurate.pipelines.ocr import CORPUS
from mmcurate.pipelines.run import execute
from mmcurate.stages.ocr_model import make_backend
from mmcurate.stages.ocr_render import RenderParams, write_rendered
from mmcurate.stages.ocr_verify import crop_quad

TARGET = 0.9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ocr-samples", type=int, default=40, help="ocr: rendered samples in the corpus")


def _corpus(n: int) -> Path:
    root = OUT_DIR / f"ocr-corpus-{n}"
    if not (root / "labels-00000.jsonl").is_file():
        root.mkdir(parents=True, exist_ok=True)
        write_rendered(str(root), RenderParams(count=n, seed=0, page=(620, 877)))
    return root


def _direct(root: Path, params: Any) -> float:
    backend = make_backend(params)
    rows = [json.loads(line) for line in (root / "labels-00000.jsonl").read_text().splitlines()]
    start = time.perf_counter()
    for row in rows:
        image = ImageOps.exif_transpose(Image.open(root / row["image"])).convert("RGB")
        quads = [ln["quad"] or [[0, 0], [image.width, 0], [image.width, image.height], [0, image.height]]
                 for ln in row["lines"]]  # fmt: skip
        backend([image])
        backend.recognise([c for c in (crop_quad(image, q) for q in quads) if c is not None])
    return len(rows) / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> bool:
    load_before = os.getloadavg()[0]
    root = _corpus(args.ocr_samples)
    config = CORPUS.load_config(None)
    direct = _direct(root, config.models.ocr)
    inputs = [str(root)]
    units = CORPUS.list_units(inputs, config)
    with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as out:
        start = time.perf_counter()
        manifest = execute(CORPUS, config, inputs, units, out, runner_args(1), progress=False)
        took = time.perf_counter() - start
    counts = manifest["kinds"]["ocr"]["counts"]
    pipe = counts["input"] / took
    ratio = pipe / direct
    ok = manifest["accounting_ok"] and ratio >= TARGET
    print(f"ocr: {counts['input']} rendered samples; direct {direct:.2f} images/s, pipeline {pipe:.2f} images/s "
          f"({ratio:.2f}x, target >= {TARGET}x); kept {counts['kept']}  {VERDICT[ok]}")  # fmt: skip
    report = {"samples": counts["input"], "direct_images_per_s": direct, "pipeline_images_per_s": pipe}
    report.update(ratio=ratio, target=TARGET, counts=counts, extras=manifest.get("extras", {}),
                  checks={f"ratio>={TARGET:g}": ratio >= TARGET, "accounting_ok": bool(manifest["accounting_ok"])},
                  passed=ok, created=created(),
                  env=environment(os.cpu_count() or 1, load_before, os.getloadavg()[0]))  # fmt: skip
    write_report("ocr", report)
    return ok
