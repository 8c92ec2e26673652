"""models: CLIP and OCR through Beam's RunInference, as pipelines.models runs them, vs the same handler in a
bare loop, on the same shards (both read and decode the JPEGs: Create'ing decoded images instead would embed
them in the pipeline graph, which Beam pickles and bz2-compresses, ~0.8 s per 512 px image):
  (a)   bare loop: read, decode, `handler.run_inference(batch, model)` over consecutive batches,
  (b)   Beam (DirectRunner, 1 worker, in-memory): Create(shards) -> read -> decode ->
        RunInference(KeyedModelHandler(GuardedHandler(handler))) -> count (each example a record's
        list of views, here one).
CLIP is open_clip ViT-B-32 with random weights saved once under bench/out/models and loaded through
ClipParams(pretrained=<file>); by default with 3 of its 12 blocks per tower (--clip-layers 12 = stock) to
keep the run short on a 2-core machine. OCR is rapidocr (PP-OCR ONNX) on images with their captions printed
on them. Model load is timed apart on both sides (bare: load_model(); Beam: RunInference's
load_model_latency metric); the ratios exclude it, figures with it are printed too. On a CUDA host a GPU
line adds stock ViT-B-32, bf16 autocast, a large batch, on 1 and on all-cores Beam workers.
Targets: (b) >= 0.9x (a) for CLIP and OCR; on a GPU, >= 3000 images/s end to end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apache_beam as beam
from common import (
    BENCH_DIR,
    MODELS_DIR,
    VERDICT,
    BeamRun,
    beam_run,
    caption_corpus,
    cell,
    created,
    environment,
    print_errors,
    print_load,
    short_error,
    table_head,
    write_report,
)
from PIL import Image

from mmcurate.stages.image_decode import DecodeParams, decode
from mmcurate.stages.readers import ReadParams, Unit, list_units, read_unit

GPU_TARGET = 3000.0  # images/s, CLIP ViT-B-32 bf16 on one GPU, end to end
NOT_MEASURED = (f"gpu_beam_end_to_end>={GPU_TARGET:.0f}", "gpu_caption_pipeline_no_records_lost")
"""The GPU lines' checks, listed as not measured on a host without CUDA."""
LABELS = {"clip": "CLIP", "ocr": "OCR", "gpu": "GPU CLIP"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    models = parser.add_argument_group("models (the GPU line reads the --images / --shards / --seed corpus)")
    models.add_argument("--clip-images", type=int, default=256, help="CLIP images, CPU (default 256)")
    models.add_argument("--clip-batch", type=int, default=32, help="CLIP batch size, CPU (default 32)")
    models.add_argument(
        "--clip-layers", type=int, default=3, help="blocks per CLIP tower; 12 = stock ViT-B-32 (default 3)"
    )
    models.add_argument("--ocr-images", type=int, default=24, help="OCR images (default 24)")
    models.add_argument("--gpu-images", type=int, default=16000, help="CLIP images on CUDA (default 16000)")
    models.add_argument("--gpu-batch", type=int, default=256, help="CLIP batch size on CUDA (default 256)")


def clip_weights(layers: int) -> tuple[str, Path, Path | None]:
    """(model name, checkpoint, architecture JSON or None) of a ViT-B-32 with random weights, cached in
    bench/out/models. `layers` < 12 keeps ViT-B-32's widths, patch size and tokenizer but only that many
    transformer blocks in each tower (a custom architecture JSON): the same code path at a fraction of the
    CPU time. 12 is the stock `ViT-B-32` (~600 MB checkpoint)."""
    import open_clip
    import torch

    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    arch = None
    name = "ViT-B-32"
    if layers != 12:
        name = f"mmcurate-bench-ViT-B-32-{layers}L"
        arch = MODELS_DIR / f"{name}.json"
        if not arch.exists():
            cfg = json.loads(json.dumps(open_clip.get_model_config("ViT-B-32")))
            cfg["vision_cfg"]["layers"] = cfg["text_cfg"]["layers"] = layers
            arch.write_text(json.dumps(cfg, indent=2) + "\n")
        open_clip.add_model_config(str(arch))
    ckpt = MODELS_DIR / f"{name}-random-seed0.pt"
    if not ckpt.exists():
        print(f"  writing random {name} weights to {ckpt.relative_to(BENCH_DIR.parent)} ...", flush=True)
        torch.manual_seed(0)
        model, _, _ = open_clip.create_model_and_transforms(name, pretrained=None)
        tmp = ckpt.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.rename(ckpt)
    return name, ckpt, arch


def clip_example(rec: Any) -> tuple[Image.Image, str]:
    """What the caption pipeline hands 'Model[clip]': the decoded pixels (default 512 px working side), caption."""
    return decode(rec.image or b"", DecodeParams()).image, rec.caption


def ocr_example(rec: Any) -> Image.Image:
    """The decoded image with its caption printed on it, so the recogniser has lines to read."""
    from PIL import ImageDraw, ImageFont

    img = decode(rec.image or b"", DecodeParams()).image
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(14, img.width // 24))
    words = rec.caption.split()
    half = (len(words) + 1) // 2
    for row, line in enumerate((" ".join(words[:half]), " ".join(words[half:]))):
        if line:
            y = img.height // 8 + row * font.size * 2
            box = draw.textbbox((img.width // 16, y), line, font=font)
            draw.rectangle((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4), fill=(250, 250, 245))
            draw.text((img.width // 16, y), line, font=font, fill=(20, 20, 30))
    return img


def bare_inference(
    units: list[Unit], example: Callable[[Any], Any], handler: Any, model: Any, batch_size: int
) -> tuple[int, float]:
    """(a): read + example + `handler.run_inference` over consecutive batches of `batch_size`.
    Returns (predictions, seconds spent inside run_inference)."""
    done, inside, batch = 0, 0.0, []

    def flush() -> None:
        nonlocal done, inside
        t0 = time.perf_counter()
        preds = list(handler.run_inference(batch, model))
        inside += time.perf_counter() - t0
        if len(preds) != len(batch):
            raise RuntimeError(f"{len(batch)} examples gave {len(preds)} predictions")
        done += len(preds)
        batch.clear()

    for unit in units:
        for rec in read_unit(unit, ReadParams()):
            batch.append(example(rec))
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    return done, inside


def _keyed_example(rec: Any, example: Callable[[Any], Any]) -> tuple[str, list[Any]]:
    """GuardedHandler's example: the list of a record's view examples (one view per record here)."""
    return rec.source.member, [example(rec)]


def _count_prediction(element: tuple[Any, Any]) -> None:
    from mmcurate.pipelines.inference import ModelFailure

    _, preds = element  # one prediction per view, or None / ModelFailure for the record
    failed = preds is None or isinstance(preds, ModelFailure) or len(preds) != 1 or preds[0] is None
    beam.metrics.Metrics.counter("bench", "failed" if failed else "predicted").inc()


def beam_inference(units: list[Unit], example: Callable[[Any], Any], handler: Any, workers: int = 1) -> BeamRun:
    """(b): shard refs -> read -> example -> RunInference(KeyedModelHandler(GuardedHandler(handler))) -> count,
    as 'Model[...]' runs it in pipelines.models (the records are read and decoded inside the pipeline)."""
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    from mmcurate.pipelines.inference import GuardedHandler

    def build(p: beam.Pipeline) -> None:
        _ = (
            p
            | "Units" >> beam.Create(units, reshuffle=True)
            | "Read" >> beam.FlatMap(read_unit, ReadParams())
            | "Example" >> beam.Map(_keyed_example, example)
            | "RunInference" >> RunInference(KeyedModelHandler(GuardedHandler(handler)))
            | "Count" >> beam.Map(_count_prediction)
        )

    return beam_run(build, handler.get_metrics_namespace(), workers)


def _bare_rep(make_handler: Callable[[], Any], units: list[Unit], example: Callable, n: int, batch: int) -> dict:
    handler = make_handler()
    t0 = time.perf_counter()
    model = handler.load_model()
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    done, inside = bare_inference(units, example, handler, model, batch)
    loop = time.perf_counter() - t0
    del model
    if done != n:
        raise RuntimeError(f"predicted {done} of {n}")
    return {"load_s": load, "loop_s": loop, "inside_s": inside}


def _beam_rep(make_handler: Callable[[], Any], units: list[Unit], example: Callable, n: int, workers: int) -> dict:
    r = beam_inference(units, example, make_handler(), workers)
    predicted, failed = r.counters.get("bench/predicted", 0), r.counters.get("bench/failed", 0)
    if predicted != n:
        raise RuntimeError(f"predicted {predicted} of {n} ({failed} model failures)")
    return {
        "wall_s": r.wall,
        "load_s": r.load_s / workers,  # workers load in parallel
        "loop_s": r.wall - r.load_s / workers,
        "inside_s": r.inside_s,
        "batches": r.batches,
        "batch_mean": r.batch_mean,
        "batch_max": r.batch_max,
    }


def _record(runs: dict[str, list[dict]], errors: dict[str, list[str]], key: str, tag: str, n: int, fn: Callable):
    """One run of variant `key`: its figures into `runs`, or its error into `errors`; one line printed."""
    try:
        r = fn()
    except Exception as exc:
        errors[key].append(short_error(exc))
        print(f"{tag} {key:7s} FAILED: {errors[key][-1][:200]}", flush=True)
        return
    runs[key].append(r)
    batches = f"  ({r['batches']} batches, mean {r['batch_mean']:.1f})" if "batches" in r else ""
    print(
        f"{tag} {key:7s} {r['loop_s']:7.2f}s + load {r['load_s']:5.2f}s  {n / r['loop_s']:7.1f} img/s{batches}",
        flush=True,
    )


def model_line(
    name: str,
    make_handler: Callable[[], Any],
    units: list[Unit],
    example: Callable[[Any], Any],
    n: int,
    batch_size: int,
    reps: int,
    beam_workers: tuple[int, ...] = (1,),
) -> dict[str, Any]:
    """One model both ways, `reps` interleaved repetitions, best of each. Model load is timed apart on both
    sides (bare: handler.load_model(); Beam: RunInference's load metric) so that figures with and without
    it can be given; everything else (read, decode, batching, inference) is inside both."""
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], **{f"beam{w}": [] for w in beam_workers}}
    errors: dict[str, list[str]] = {k: [] for k in runs}
    for rep in range(reps):
        tag = f"  {name} rep {rep + 1}/{reps}"
        _record(runs, errors, "bare", tag, n, lambda: _bare_rep(make_handler, units, example, n, batch_size))
        for w in beam_workers:
            _record(runs, errors, f"beam{w}", tag, n, lambda w=w: _beam_rep(make_handler, units, example, n, w))
    best = {k: min(v, key=lambda x: x["loop_s"]) for k, v in runs.items() if v}
    out: dict[str, Any] = {"images": n, "batch_size": batch_size, "reps": reps, "errors": errors, "runs": runs}
    for k, b in best.items():
        out[k] = {
            **{f: round(v, 3) for f, v in b.items()},
            "images_per_s": round(n / b["loop_s"], 2),
            "images_per_s_end_to_end": round(n / (b["loop_s"] + b["load_s"]), 2),
        }
    return out


def ratio(line: dict[str, Any], key: str, field: str = "images_per_s") -> float | None:
    """Variant `key` over the bare loop, in `field`."""
    a, b = line.get("bare", {}).get(field), line.get(key, {}).get(field)
    return b / a if a and b else None


def _warm_up(clip_handler: Callable[[], Any], ocr_handler: Callable[[], Any], clip_units, ocr_units, batch) -> float:
    """torch/open_clip/onnxruntime imports and kernels, Beam's RunInference, page cache. Returns open_clip's
    preprocess time in ms per image."""
    warm = clip_handler()
    tower = warm.load_model()
    bare_inference(clip_units[:1], clip_example, warm, tower, batch)
    examples = [clip_example(rec) for rec in itertools.islice(read_unit(clip_units[0], ReadParams()), 32)]
    t0 = time.perf_counter()
    for img, _ in examples:
        tower.preprocess(img)
    preprocess_ms = (time.perf_counter() - t0) / len(examples) * 1e3
    del tower
    beam_inference(clip_units[:1], clip_example, clip_handler())
    ocr_warm = ocr_handler()
    ocr_model = ocr_warm.load_model()
    ocr_warm.run_inference(
        [ocr_example(rec) for rec in itertools.islice(read_unit(ocr_units[0], ReadParams()), 2)], ocr_model
    )
    del ocr_model
    return preprocess_ms


def _gpu_line(args: argparse.Namespace, cores: int) -> dict[str, Any]:
    """Stock ViT-B-32 on CUDA, bf16 autocast, a large batch, Beam on 1 and on all-cores workers."""
    import torch

    from mmcurate.stages.clip import ClipParams
    from mmcurate.stages.clip_model import ClipModelHandler

    gpu_name, gpu_ckpt, _ = clip_weights(12)
    gpu_params = ClipParams(model=gpu_name, pretrained=str(gpu_ckpt), device="cuda", batch_size=args.gpu_batch)
    corpus = caption_corpus(args.images, args.shards, seed=args.seed)
    units = list_units([str(corpus / "*.tar")], ReadParams())
    repeat = max(1, math.ceil(args.gpu_images / args.images))
    workers = tuple(sorted({1, cores}))
    print(
        f"  GPU ({torch.cuda.get_device_name(0)}): stock ViT-B-32, bf16 autocast, batch {args.gpu_batch}, "
        f"{len(units)} shards x {repeat} = {args.images * repeat} images, Beam with {workers} workers"
    )
    return model_line(
        "gpu",
        lambda: ClipModelHandler(gpu_params),
        units * repeat,
        clip_example,
        args.images * repeat,
        args.gpu_batch,
        1,  # one repetition: the 1-process variants are CPU-bound and long
        beam_workers=workers,
    )


def pipeline_line(args: argparse.Namespace, cores: int, device: str = "cuda") -> dict[str, Any]:
    """The whole caption pipeline (read, decode, score, CLIP through RunInference, dedup, shards,
    ledger, manifest) with CLIP on `device`, against the same pipeline without CLIP on the same
    images and workers: the slower of the CPU path and the model stage bounds the whole."""
    import caption

    from mmcurate.pipelines.caption import CaptionConfig

    name, ckpt, _ = clip_weights(12)
    images = max(args.images, args.gpu_images)
    corpus = caption_corpus(images, max(1, images // 250), seed=args.seed)
    inputs = [str(corpus / "*.tar")]
    units = list_units(inputs, ReadParams())
    base = caption.caption_config(256)
    clip = {"model": name, "pretrained": str(ckpt), "device": device, "batch_size": args.gpu_batch}
    with_clip = CaptionConfig.model_validate(
        {**base.model_dump(), "filters": {"clip_score": {"min": -1.0}}, "models": {"clip": clip}}
    )
    figures: dict[str, Any] = {"images": images, "workers": cores, "device": device}
    for key, config in (("without_clip", base), ("with_clip", with_clip)):
        t0 = time.perf_counter()
        n = caption.run_full(units, config, inputs, cores)
        wall = time.perf_counter() - t0
        figures[key] = {"images": n, "wall_s": round(wall, 2), "images_per_s": round(n / wall, 1)}
    return figures


def _bound(gpu: dict[str, Any]) -> None:
    """Which stage bounds the whole pipeline with CLIP on: the model stage alone (Beam, end to end) or
    the CPU path (the pipeline without CLIP), whichever is slower."""
    whole = gpu.get("pipeline") or {}
    cpu_path = (whole.get("without_clip") or {}).get("images_per_s") or 0
    model = gpu.get("beam_images_per_s_end_to_end") or 0
    gpu["pipeline_images_per_s"] = (whole.get("with_clip") or {}).get("images_per_s")
    gpu["bound_by"] = "model stage (CLIP on the GPU)" if model < cpu_path else "CPU path (read, decode, hash, encode)"


def _checks(lines: dict[str, dict[str, Any]], gpu: dict[str, Any]) -> dict[str, bool]:
    checks = {
        "clip_beam_vs_bare>=0.9": (ratio(lines["clip"], "beam1") or 0) >= 0.9,
        "ocr_beam_vs_bare>=0.9": (ratio(lines["ocr"], "beam1") or 0) >= 0.9,
        "no_records_lost": not any(e for line in lines.values() for e in line["errors"].values()),
    }
    if "gpu" in lines:
        best_gpu = max(
            (v.get("images_per_s_end_to_end", 0) for k, v in lines["gpu"].items() if k.startswith("beam")), default=0
        )
        gpu["beam_images_per_s_end_to_end"] = best_gpu
        checks[f"gpu_beam_end_to_end>={GPU_TARGET:.0f}"] = best_gpu >= GPU_TARGET
    return checks


def _print_row(line_name: str, line: dict[str, Any], key: str) -> None:
    r = line.get(key)
    workers = key.removeprefix("beam")
    what = "(a) bare loop" if key == "bare" else f"(b) Beam RunInference, {workers} worker{'s' * (workers != '1')}"
    label = f"{LABELS[line_name]} {what}"
    if r is None:
        print(f"{label:50s} {'failed':>12s}")
    else:
        batch = r.get("batch_mean", line["batch_size"])
        print(
            f"{label:50s} {cell(r['loop_s'], 12, '.2f')} {cell(r['images_per_s'], 7)} "
            f"{cell(r['load_s'], 6, '.2f')} {cell(r['images_per_s_end_to_end'], 9)} "
            f"{cell(r['inside_s'], 10, '.2f')} {cell(batch, 5)}  {cell(ratio(line, key), 6, '.2f')}"
        )
    print_errors(line["errors"][key], line["reps"])


def _print_table(lines: dict[str, dict[str, Any]]) -> None:
    print()
    cols = ("excl. load s", 12), ("img/s", 7), ("load s", 6), ("e2e img/s", 9), ("in model s", 10), ("batch", 5)
    table_head(f"{'variant':50s} ", cols, "  vs (a)")
    for line_name, line in lines.items():
        for key in line["runs"]:
            _print_row(line_name, line, key)
    print()


def _print_ratios(lines: dict[str, dict[str, Any]], checks: dict[str, bool]) -> None:
    for line_name, check in (("clip", "clip_beam_vs_bare>=0.9"), ("ocr", "ocr_beam_vs_bare>=0.9")):
        line = lines[line_name]
        r_ex, r_e2e = ratio(line, "beam1"), ratio(line, "beam1", "images_per_s_end_to_end")
        print(
            f"  {LABELS[line_name]}: Beam (b) / bare (a), model load excluded = {cell(r_ex, 0, '.2f')}x "
            f"(target >= 0.90) {VERDICT[checks[check]]}; load included in both = {cell(r_e2e, 0, '.2f')}x"
        )
        a, b = line.get("bare"), line.get("beam1")
        if a and b:
            other_a = a["loop_s"] - a["inside_s"]
            other_b = b["loop_s"] - b["inside_s"]
            print(
                f"    inside run_inference: (a) {a['inside_s']:.2f}s, (b) {b['inside_s']:.2f}s; read + decode + "
                f"everything else: (a) {other_a:.2f}s, (b) {other_b:.2f}s (Beam start-up, batching, keys included)"
            )
    print(f"  every variant processed every record: {VERDICT[checks['no_records_lost']]}")


def _print_gpu(args: argparse.Namespace, gpu: dict[str, Any], checks: dict[str, bool], preprocess_ms: float) -> None:
    print(
        f"  open_clip preprocess on the CPU (resize, crop, tensor, normalise; serial in run_inference): "
        f"{preprocess_ms:.2f} ms/image = at most {1e3 / preprocess_ms:.0f} img/s per worker on any accelerator"
    )
    cuda = gpu["cuda_available"]
    print(f"  torch.cuda.is_available() = {cuda}")
    if cuda:
        print(
            f"  GPU CLIP end to end (model load included), best Beam variant = "
            f"{gpu['beam_images_per_s_end_to_end']:.0f} images/s (target >= {GPU_TARGET:.0f}) "
            f"{VERDICT[checks[f'gpu_beam_end_to_end>={GPU_TARGET:.0f}']]}"
        )
        whole = gpu.get("pipeline") or {}
        print(
            f"  whole caption pipeline, {whole.get('workers')} workers, {whole.get('images')} images: with CLIP "
            f"{gpu.get('pipeline_images_per_s')} images/s, without CLIP "
            f"{(whole.get('without_clip') or {}).get('images_per_s')} images/s; bound by the {gpu.get('bound_by')}"
        )
    else:
        print(
            f"  GPU line NOT MEASURED here (no CUDA device): on a CUDA host this benchmark adds stock ViT-B-32, bf16 "
            f"autocast, batch {args.gpu_batch}, ~{args.gpu_images} images, target >= {GPU_TARGET:.0f} img/s end to end"
        )


def run(args: argparse.Namespace) -> bool:
    import open_clip
    import torch

    from mmcurate.stages.clip import ClipParams
    from mmcurate.stages.clip_model import ClipModelHandler
    from mmcurate.stages.ocr import OcrParams
    from mmcurate.stages.ocr_model import OcrModelHandler

    cores = os.cpu_count() or 1
    reps = args.reps
    cuda = torch.cuda.is_available()
    load_before = os.getloadavg()[0]
    name, ckpt, arch = clip_weights(args.clip_layers)
    clip_params = ClipParams(
        model=name,
        pretrained=str(ckpt),
        architecture=str(arch) if arch else None,
        device="cpu",
        batch_size=args.clip_batch,
    )
    clip_units = list_units(
        [str(caption_corpus(args.clip_images, max(1, args.clip_images // 32)) / "*.tar")], ReadParams()
    )
    ocr_units = list_units(
        [str(caption_corpus(args.ocr_images, max(1, args.ocr_images // 8), seed=1) / "*.tar")], ReadParams()
    )
    arch_note = (
        "stock ViT-B-32"
        if args.clip_layers == 12
        else f"ViT-B-32 widths with {args.clip_layers} of 12 blocks per tower ({name}; --clip-layers 12 = stock)"
    )
    print(
        f"models: CLIP {arch_note}, random weights from {ckpt.name}, fp32 CPU, batch {args.clip_batch}, "
        f"{args.clip_images} images; OCR rapidocr PP-OCR, {args.ocr_images} images; best of {reps}"
    )
    print(f"  load average before: {load_before:.2f} on {cores} cores, torch threads {torch.get_num_threads()}")
    print(
        "  (a) = bare loop: read shard, decode, handler.run_inference(batch, model) over consecutive batches\n"
        "  (b) = Beam DirectRunner in_memory, 1 worker: Create(shards) -> read -> decode -> "
        "RunInference(KeyedModelHandler(GuardedHandler(handler))) -> count"
    )

    def clip_handler() -> Any:
        return ClipModelHandler(clip_params)

    def ocr_handler() -> Any:
        return OcrModelHandler(OcrParams())

    preprocess_ms = _warm_up(clip_handler, ocr_handler, clip_units, ocr_units, args.clip_batch)
    lines: dict[str, dict[str, Any]] = {}
    lines["clip"] = model_line("clip", clip_handler, clip_units, clip_example, args.clip_images, args.clip_batch, reps)
    ocr_batch = OcrParams().batch_size
    lines["ocr"] = model_line("ocr", ocr_handler, ocr_units, ocr_example, args.ocr_images, ocr_batch, reps)
    gpu: dict[str, Any] = {"cuda_available": cuda}
    if cuda:
        lines["gpu"] = _gpu_line(args, cores)
        gpu["device"] = torch.cuda.get_device_name(0)
        gpu["pipeline"] = pipeline_line(args, cores)
    load_after = os.getloadavg()[0]

    checks = _checks(lines, gpu)
    if cuda:
        _bound(gpu)
        whole = gpu["pipeline"]
        checks[NOT_MEASURED[1]] = whole["with_clip"]["images"] == whole["without_clip"]["images"] == whole["images"]
    _print_table(lines)
    _print_ratios(lines, checks)
    _print_gpu(args, gpu, checks, preprocess_ms)
    print_load(load_before, load_after)

    report = {
        "benchmark": "models",
        "created": created(),
        "clip": {"model": name, "architecture": arch_note, "checkpoint": ckpt.name, "batch_size": args.clip_batch},
        "reps": reps,
        "lines": lines,
        "ratios": {
            k: {"excl_load": ratio(v, "beam1"), "end_to_end": ratio(v, "beam1", "images_per_s_end_to_end")}
            for k, v in lines.items()
        },
        "preprocess_ms_per_image": round(preprocess_ms, 3),
        "gpu": gpu,
        "measured": {
            "clip_beam_vs_bare>=0.9": ratio(lines["clip"], "beam1"),
            "ocr_beam_vs_bare>=0.9": ratio(lines["ocr"], "beam1"),
            f"gpu_beam_end_to_end>={GPU_TARGET:.0f}": gpu.get("beam_images_per_s_end_to_end"),
        },
        "checks": checks,
        "not_measured": {} if cuda else dict.fromkeys(NOT_MEASURED, "no CUDA device here"),
        "passed": all(checks.values()),
        "env": environment(
            cores,
            load_before,
            load_after,
            torch_threads=torch.get_num_threads(),
            torch=torch.__version__,
            open_clip=open_clip.__version__,
        ),
    }
    write_report("models", report)
    return report["passed"]
