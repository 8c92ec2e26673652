"""grounding: the grounding corpus path (`pipelines.grounding.CORPUS`: ODVG jsonl read -> full-resolution
decode + hashes + image and region filters -> CLIP (`align`, ClipMatrixHandler through RunInference) on
every region's crop against its own expression and its rivals -> thresholds -> re-encode with the boxes
moved onto the stored image -> shards + ledgers + SFT rows, questions, ODVG lines), in one run:
  (nomodel) the whole pipeline without `expression_agreement`, 1 worker (in-memory DirectRunner),
  (clip)    the whole pipeline with it, on stock open_clip ViT-B-32 (random weights, bench/out/models), fp32 CPU,
  (direct)  the same model called directly: a bare loop that decodes each image (PIL, EXIF applied), makes
            each region's crop (`crop_box`) and texts (`rivals`, the template) as the recipe does and calls
            `ClipMatrixHandler.run_inference` (load_model and one warm-up call untimed) on as many images per
            call as the pipeline batches (models.clip.batch_size // RegionViews.per_record).
Corpus: `--grounding-images` photos (default 48, ~640x480) with 4-6 drawn shapes each at known boxes
("the small red circle"), seed 0. Target: regions/s of (clip) >= 0.9x regions/s of (direct), model load
excluded on both sides (the pipeline also decodes, scores, encodes and writes; the load is RunInference's
own metric). Also printed: the CLIP stage's share, (clip - load - nomodel) seconds per region against
direct seconds per region, in wall and CPU seconds. Figures are wall-clock: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from common import (
    OUT_DIR,
    VERDICT,
    cached_corpus,
    created,
    environment,
    photo_sources,
    print_load,
    profile_to,
    runner_args,
    synth_image,
    timed,
    write_report,
)
from PIL import Image, ImageDraw, ImageOps

from mmcurate.pipelines.grounding import CORPUS, RegionViews
from mmcurate.pipelines.run import execute
from mmcurate.schemas import RegionRecord, Source
from mmcurate.stages.clip import ClipParams
from mmcurate.stages.grounding_filters import AgreementParams, crop_box, rivals

TARGET = 0.9
COLOURS = {
    "red": (230, 20, 20), "blue": (20, 40, 230), "green": (20, 200, 40), "yellow": (250, 230, 20),
    "purple": (140, 30, 180), "orange": (250, 140, 10), "white": (250, 250, 250), "black": (10, 10, 10),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "diamond")
NAMESPACE = "mmcurate_clip_matrix"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grounding-images", type=int, default=48, help="grounding: images in the corpus")


# ------------------------------------------------------------------------------------------------ corpus


def _draw(img: Image.Image, kind: str, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = box[0], box[1], box[2] - 1, box[3] - 1  # half-open pixel bounds, as the boxes are
    draw, cx, cy = ImageDraw.Draw(img), (x1 + x2) / 2, (y1 + y2) / 2
    if kind == "circle":
        draw.ellipse((x1, y1, x2, y2), fill=colour)
    elif kind == "square":
        draw.rectangle((x1, y1, x2, y2), fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=colour)
    else:
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=colour)


def _boxes(rng: np.random.Generator, w: int, h: int, n: int) -> list[tuple[int, int, int, int]]:
    """Up to `n` square boxes (48-160 px) that neither touch each other nor the image's edge."""
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(200):
        if len(boxes) == n:
            break
        side = int(rng.integers(48, 161))
        x, y = int(rng.integers(4, w - side - 4)), int(rng.integers(4, h - side - 4))
        box = (x, y, x + side, y + side)
        if all(box[0] > b[2] + 4 or b[0] > box[2] + 4 or box[1] > b[3] + 4 or b[1] > box[3] + 4 for b in boxes):
            boxes.append(box)
    return boxes


def _image(i: int, sources: list[Image.Image], images: Path) -> tuple[dict[str, Any], int]:
    """One photo (common.synth_image, 640x480 or portrait) with 4-6 shapes of distinct phrases: its ODVG line."""
    jpg, caption, _ = synth_image(i, 0, (640, 480), sources)
    img = Image.open(io.BytesIO(jpg)).convert("RGB")
    rng = np.random.default_rng([0, i, 1])
    boxes = _boxes(rng, img.width, img.height, int(rng.integers(4, 7)))
    combos = [(c, k) for c in COLOURS for k in SHAPES]
    regions = []
    for box, pick in zip(boxes, rng.choice(len(combos), size=len(boxes), replace=False), strict=True):
        colour, kind = combos[int(pick)]
        _draw(img, kind, box, COLOURS[colour])
        size = "small" if box[2] - box[0] < 100 else "large"
        regions.append({"bbox": list(box), "phrase": f"the {size} {colour} {kind}"})
    name = f"{i:05d}.jpg"
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    (images / name).write_bytes(buf.getvalue())
    line = {"filename": name, "width": img.width, "height": img.height,
            "grounding": {"caption": f"{caption}, with shapes drawn over it", "regions": regions}}  # fmt: skip
    return line, buf.tell()


def _corpus(n: int) -> Path:
    def make(tmp: Path) -> dict[str, Any]:
        (tmp / "images").mkdir()
        sources = photo_sources()
        made = [_image(i, sources, tmp / "images") for i in range(n)]
        (tmp / "odvg.jsonl").write_text("".join(json.dumps(line) + "\n" for line, _ in made))
        regions = sum(len(line["grounding"]["regions"]) for line, _ in made)
        return {"images": n, "regions": regions, "seed": 0, "jpeg_bytes": sum(size for _, size in made)}

    return cached_corpus(OUT_DIR / "corpus" / f"grounding-v1-n{n}-seed0", f"{n} grounding images (ODVG)", make)


# ------------------------------------------------------------------------------------------------ direct


def _examples(root: Path, line: dict[str, Any], params: AgreementParams) -> list[tuple[Image.Image, list[str]]]:
    """(crop, texts) of each comparable region of one ODVG line, as `RegionViews` makes them."""
    image = ImageOps.exif_transpose(Image.open(root / "images" / line["filename"])).convert("RGB")
    src = Source(uri=str(root / "odvg.jsonl"), unit=0)
    regions = [RegionRecord(id=f"r{k}", source=src, phrase=r["phrase"], box=[float(v) for v in r["bbox"]])
               for k, r in enumerate(line["grounding"]["regions"])]  # fmt: skip
    out = []
    for region in regions:
        texts = rivals(region, regions, [], params)  # >= 4 distinct phrases: the unit's pool is never reached
        crop = crop_box(region.box, image.width, image.height, params)
        if crop is not None and region.phrase.strip() and texts:
            out.append((image.crop(crop), [params.template.format(t) for t in [region.phrase, *texts]]))
    return out


def _direct(root: Path, clip: ClipParams, params: AgreementParams, per_call: int) -> dict[str, Any]:
    """The bare loop: `per_call` images' regions per `run_inference` call (the pipeline's records per batch)."""
    from mmcurate.stages.clip_model import ClipMatrixHandler

    handler = ClipMatrixHandler(clip)
    load, model = timed(handler.load_model)
    lines = [json.loads(s) for s in (root / "odvg.jsonl").read_text().splitlines()]
    handler.run_inference(_examples(root, lines[0], params), model)  # warm-up, untimed: the pipeline runs after
    calls: list[int] = []
    inside = [0.0]

    def loop() -> int:
        crops = 0
        for start in range(0, len(lines), per_call):
            batch = [ex for line in lines[start : start + per_call] for ex in _examples(root, line, params)]
            t0 = time.perf_counter()
            sims = handler.run_inference(batch, model)
            inside[0] += time.perf_counter() - t0
            if len(sims) != len(batch) or any(len(s) != len(t) for s, (_, t) in zip(sims, batch, strict=True)):
                raise RuntimeError("ClipMatrixHandler returned the wrong shape")
            crops += len(batch)
            calls.append(len(batch))
        return crops

    took, crops = timed(loop)
    return {"images": len(lines), "crops": crops, "wall_s": took.wall, "cpu_s": took.cpu, "load_s": load.wall,
            "load_cpu_s": load.cpu, "inside_run_inference_s": inside[0], "images_per_call": per_call,
            "crops_per_call_mean": crops / max(1, len(calls)), "crops_per_s": crops / took.wall,
            "images_per_s": len(lines) / took.wall}  # fmt: skip


# ------------------------------------------------------------------------------------------------ pipeline


def _checked(out: str) -> int:
    """Regions of the region ledger the CLIP stage compared (agreement `checked`)."""
    files = sorted((Path(out) / "ledger" / "region").glob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return sum(1 for r in rows if (r.get("labels") or {}).get("agreement") == "checked")


def _pipe(config: Any, root: Path, profile: Path | None = None) -> dict[str, Any]:
    inputs = [str(root / "odvg.jsonl")]
    units = CORPUS.list_units(inputs, config)
    CORPUS.validate(config)
    with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as out:
        took, manifest = timed(lambda: execute(CORPUS, config, inputs, units, out, runner_args(1), progress=False))
        checked = _checked(out)
    if profile is not None:
        with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as out:
            profile_to(profile, lambda: execute(CORPUS, config, inputs, units, out, runner_args(1), progress=False))
    dists = manifest.get("metrics", {}).get("distributions", {})
    load = dists.get(f"{NAMESPACE}/load_model_latency_milli_secs", {}).get("sum", 0) / 1e3
    inside = dists.get(f"{NAMESPACE}/inference_batch_latency_micro_secs", {}).get("sum", 0) / 1e6
    batch = dists.get(f"{NAMESPACE}/inference_request_batch_size", {})
    images, regions = manifest["kinds"]["grounding"]["counts"], manifest["kinds"]["region"]["counts"]
    model_wall = took.wall - load
    return {
        "wall_s": took.wall, "cpu_s": took.cpu, "load_s": load, "inside_run_inference_s": inside,
        "images": images["input"], "regions": regions["input"], "regions_compared": checked,
        "images_per_s": images["input"] / model_wall, "regions_per_s": regions["input"] / model_wall,
        "regions_per_cpu_s": regions["input"] / took.cpu, "batches": batch.get("count", 0),
        "records_per_batch_mean": batch.get("mean", 0.0), "accounting_ok": bool(manifest["accounting_ok"]),
        "image_counts": images, "region_counts": regions,
    }  # fmt: skip


def _steal_s() -> float:
    """CPU seconds the hypervisor took from this VM so far (all cores; /proc/stat), 0 where unknown: a wall
    clock that moves while the CPU seconds stay put is another guest's load, invisible in the load average."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _ratios(lines: dict[str, dict[str, Any]], bare: dict[str, Any]) -> dict[str, float]:
    """Pipeline against direct: regions/s (the verdict), with the load, per CPU second, the CLIP stage alone."""
    pipe, nomodel, n = lines["clip"], lines["nomodel"], max(1, bare["crops"])
    stage = (pipe["wall_s"] - pipe["load_s"] - nomodel["wall_s"]) / max(1, pipe["regions"])
    stage_cpu = (pipe["cpu_s"] - bare["load_cpu_s"] - nomodel["cpu_s"]) / max(1, pipe["regions"])
    return {
        "regions_per_s": pipe["regions_per_s"] / bare["crops_per_s"],
        "regions_per_s_with_load": pipe["regions"] / pipe["wall_s"] / bare["crops_per_s"],
        "clip_stage_ms_per_region": stage * 1e3,
        "direct_ms_per_region": bare["wall_s"] / n * 1e3,
        "clip_stage": bare["wall_s"] / n / stage if stage > 0 else float("inf"),
        "clip_stage_cpu": bare["cpu_s"] / n / stage_cpu if stage_cpu > 0 else float("inf"),
        "inside_run_inference": bare["inside_run_inference_s"] / max(1e-9, pipe["inside_run_inference_s"]),
    }


def _print(lines: dict[str, dict[str, Any]], direct: dict[str, Any], r: dict[str, float], ok: bool) -> None:
    print(f"  {'':8s} {'wall s':>7s} {'load s':>7s} {'images/s':>9s} {'regions/s':>10s} {'regions/cpu-s':>14s}")
    for name, line in lines.items():
        print(f"  {name:8s} {line['wall_s']:7.1f} {line['load_s']:7.1f} {line['images_per_s']:9.2f} "
              f"{line['regions_per_s']:10.2f} {line['regions_per_cpu_s']:14.2f}")  # fmt: skip
    print(f"  {'direct':8s} {direct['wall_s']:7.1f} {direct['load_s']:7.1f} {direct['images_per_s']:9.2f} "
          f"{direct['crops_per_s']:10.2f} {direct['crops'] / direct['cpu_s']:14.2f}")  # fmt: skip
    pipe = lines["clip"]
    same = "" if pipe["regions_compared"] == direct["crops"] else "  MISMATCH"
    print(
        f"  regions compared: pipeline {pipe['regions_compared']}, direct {direct['crops']}{same}; accounting_ok "
        f"{all(line['accounting_ok'] for line in lines.values())}; pipeline batches {pipe['batches']} of "
        f"{pipe['records_per_batch_mean']:.1f} images, direct {direct['crops_per_call_mean']:.1f} crops per call"
    )
    print(
        f"  CLIP stage (clip - nomodel - load) {r['clip_stage_ms_per_region']:.1f} ms/region vs direct "
        f"{r['direct_ms_per_region']:.1f} ms/region ({r['clip_stage']:.2f}x; per CPU second "
        f"{r['clip_stage_cpu']:.2f}x); inside run_inference: pipeline {pipe['inside_run_inference_s']:.1f} s, "
        f"direct {direct['inside_run_inference_s']:.1f} s ({r['inside_run_inference']:.2f}x)"
    )
    print(
        f"grounding: pipeline {pipe['regions_per_s']:.2f} regions/s vs direct {direct['crops_per_s']:.2f} "
        f"({r['regions_per_s']:.2f}x, target >= {TARGET}x; {r['regions_per_s_with_load']:.2f}x with the "
        f"pipeline's model load); the pipeline also decodes, scores, encodes and writes  {VERDICT[ok]}"
    )


def run(args: argparse.Namespace) -> bool:
    import torch
    from models import clip_weights

    load_before, steal_before = os.getloadavg()[0], _steal_s()
    root = _corpus(args.grounding_images)
    name, ckpt, _ = clip_weights(12)
    base = CORPUS.load_config(None)
    base = base.model_copy(update={"read": base.read.model_copy(update={"image_root": str(root / "images")})})
    clip = ClipParams(**{**base.models.clip.model_dump(), "model": name, "pretrained": str(ckpt), "device": "cpu"})
    with_clip = base.model_copy(update={"models": base.models.model_copy(update={"clip": clip})})
    filters = {k: v for k, v in base.filters.items() if k != "expression_agreement"}
    nomodel = base.model_copy(update={"filters": filters})
    per_call = max(1, clip.batch_size // RegionViews.per_record)
    print(f"grounding: {args.grounding_images} images, stock ViT-B-32 (random weights, {ckpt.name}), fp32 CPU, "
          f"batch {clip.batch_size} views = {per_call} images per call, 1 worker, torch threads "
          f"{torch.get_num_threads()}; load average before {load_before:.2f}", flush=True)  # fmt: skip
    lines = {"nomodel": _pipe(nomodel, root)}
    direct = _direct(root, clip, AgreementParams(**with_clip.filters["expression_agreement"]), per_call)
    prof = OUT_DIR / "grounding-pipe_clip.prof.txt" if args.profile else None
    lines["clip"] = _pipe(with_clip, root, prof)
    load_after, steal = os.getloadavg()[0], _steal_s() - steal_before
    ratios = _ratios(lines, direct)
    same = lines["clip"]["regions_compared"] == direct["crops"]
    accounted = all(line["accounting_ok"] for line in lines.values())
    ok = accounted and same and ratios["regions_per_s"] >= TARGET
    _print(lines, direct, ratios, ok)
    print_load(load_before, load_after)
    print(f"  CPU time taken by the hypervisor during the run (steal): {steal:.1f} s")
    report = {"benchmark": "grounding", "created": created(), "model": name, "checkpoint": ckpt.name,
              "batch_size": clip.batch_size, "images_per_call": per_call, "pipe_nomodel": lines["nomodel"],
              "pipe_clip": lines["clip"], "direct_clip": direct, "ratios": ratios, "target": TARGET,
              "regions_compared_equal": same, "accounting_ok": accounted, "passed": ok, "steal_s": steal,
              "checks": {f"regions_per_s_vs_direct>={TARGET:g}": ratios["regions_per_s"] >= TARGET,
                         "regions_compared_equal": same, "accounting_ok": accounted},
              "measured": {f"regions_per_s_vs_direct>={TARGET:g}": ratios["regions_per_s"]},
              "env": environment(os.cpu_count() or 1, load_before, load_after, torch=torch.__version__,
                                 torch_threads=torch.get_num_threads())}  # fmt: skip
    write_report("grounding", report)
    return ok
