"""rollout: the pass-rate pipeline's rollout step (tasks_for -> 'Prompt' -> RunInference(KeyedModelHandler(
make_handler(cfg.rollout)), inference_args={"sampling": ...})) vs the transformers handler called directly
on the same prompts, on the tiny random Llama of tests/tiny_models.py (built once into bench/out/models).
Rates are samples/s (prompts x k). Target: (b) >= 0.8x (a); both must produce the same samples.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from common import (
    BENCH_DIR,
    MODELS_DIR,
    VERDICT,
    BeamRun,
    beam_run,
    created,
    environment,
    print_errors,
    print_load,
    short_error,
    table_head,
    write_report,
)

NOUNS = ("cat", "dog", "bird", "box")
COLORS = ("red", "blue", "green", "yellow", "black", "white")
PLACES = ("left", "right", "top", "bottom")
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine")
VARIANTS = {"direct": "(a) transformers handler, direct", "beam": "(b) Beam RunInference, 1 worker"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    rollout = parser.add_argument_group("rollout")
    rollout.add_argument("--prompts", type=int, default=512, help="prompts (default 512)")
    rollout.add_argument("--k", type=int, default=8, help="samples per prompt (default 8)")
    rollout.add_argument("--max-tokens", type=int, default=16, help="new tokens per sample (default 16)")
    rollout.add_argument("--rollout-batch", type=int, default=4, help="prompts per generate call (default 4)")


def bench_question(i: int) -> Any:
    """Question number i: varied, in the tiny Llama's vocabulary, about one image (never read: the text-only
    model gets `image_placeholder` instead)."""
    from mmcurate.schemas import AnswerType, Question, Source

    noun, color = NOUNS[i % len(NOUNS)], COLORS[(i // len(NOUNS)) % len(COLORS)]
    place, number = PLACES[(i // 3) % len(PLACES)], NUMBERS[(i // 5) % len(NUMBERS)]
    choices: list[str] = []
    if i % 3 == 0:
        text, answer, atype = f"how many {noun} are shown in the picture on the {place} ?", "2", "number"
    elif i % 3 == 1:
        text, answer, atype = f"which color is the {noun} on the {place} ?", color, "text"
    else:
        text, answer, atype = f"is the {color} {noun} on the {place} of the image ?", "A", "choice"
        choices = ["yes", "no", f"{number} of them"]
    return Question(
        id=f"bench-{i:06d}",
        source=Source(uri="bench://questions.jsonl", unit=i // 64, index=i % 64),
        question=text,
        answer=answer,
        answer_type=AnswerType(atype),
        choices=choices,
        images=[f"bench://images/{i:06d}.png"],
    )


def _tasks(i: int, cfg: Any) -> list[Any]:
    """The rollout tasks of question i, as the pass-rate pipeline's JoinCacheFn makes them (no cache hit)."""
    from mmcurate.pipelines import rollouts

    return rollouts.tasks_for(bench_question(i), cfg)


def tiny_llama() -> Path:
    """tests/tiny_models.build_tiny_llama (random 2-layer Llama, word-level tokenizer), cached in bench/out."""
    folder = MODELS_DIR / "tiny-llama-h48-l2-seed0"
    if not (folder / "config.json").exists():
        sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
        from tiny_models import build_tiny_llama

        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny_llama(tmp)
        tmp.rename(folder)
    return folder


def _responses_digest(pairs: Iterator[tuple[str, list[str]]]) -> str:
    """Order-independent digest of (question id, k responses) pairs."""
    total = 0
    for qid, responses in pairs:
        total += int(hashlib.sha256(json.dumps([qid, responses]).encode()).hexdigest()[:15], 16)
    return f"{total % 2**64:016x}"


def _rollout_value(element: tuple[Any, list[str]], k: int) -> int:
    task, responses = element
    counter = beam.metrics.Metrics.counter
    counter("bench", "prompts").inc()
    counter("bench", "samples").inc(len(responses))
    if len(responses) != k:
        counter("bench", "short").inc()
    return int(hashlib.sha256(json.dumps([task.question.id, list(responses)]).encode()).hexdigest()[:15], 16)


def _write_digest(total: int, path: str) -> None:
    Path(path).write_text(f"{total % 2**64:016x}")


def direct_rollouts(prompts: int, cfg: Any, handler: Any, model: Any, inference: dict) -> tuple[int, float, str]:
    """(a): tasks of questions 0..prompts-1, then handler.run_inference over consecutive batches of
    cfg.transformers.batch_size prompts. Returns (samples, seconds inside run_inference, digest)."""
    tasks = [t for i in range(prompts) for t in _tasks(i, cfg)]
    batch_size = cfg.transformers.batch_size
    pairs, inside = [], 0.0
    for i in range(0, len(tasks), batch_size):
        chunk = tasks[i : i + batch_size]
        t0 = time.perf_counter()
        preds = handler.run_inference([t.messages for t in chunk], model, inference)
        inside += time.perf_counter() - t0
        pairs += [(t.question.id, list(r)) for t, r in zip(chunk, preds, strict=True)]
    return sum(len(r) for _, r in pairs), inside, _responses_digest(iter(pairs))


def beam_rollouts(prompts: int, cfg: Any, handler: Any, inference: dict) -> tuple[BeamRun, str]:
    """(b): Create(question numbers) -> tasks (as JoinCacheFn makes them) -> the pass-rate pipeline's
    'Prompt' -> 'Rollouts' = RunInference(KeyedModelHandler(make_handler(cfg.rollout)),
    inference_args={'sampling': ...}) -> count. (Not Create(tasks): Create embeds its values in the pipeline
    graph, which Beam pickles and bz2-compresses, ~1 ms per task here; the pipeline's tasks come from a join.)"""
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    with tempfile.TemporaryDirectory(prefix="mmcurate-bench-") as tmp:
        digest_file = os.path.join(tmp, "digest")

        def build(p: beam.Pipeline) -> None:
            _ = (
                p
                | "Questions" >> beam.Create(range(prompts), reshuffle=False)
                | "Tasks" >> beam.FlatMap(_tasks, cfg)
                | "Prompt" >> beam.Map(lambda t: (t, t.messages))
                | "Rollouts" >> RunInference(KeyedModelHandler(handler), inference_args=inference)
                | "Count" >> beam.Map(_rollout_value, cfg.sampling.k)
                | "Digest" >> beam.CombineGlobally(sum)
                | "WriteDigest" >> beam.Map(_write_digest, digest_file)
            )

        run = beam_run(build, handler.get_metrics_namespace(), 1)
        return run, Path(digest_file).read_text()


def _config(args: argparse.Namespace, folder: Path) -> Any:
    from mmcurate.pipelines import passrate

    return passrate.RolloutConfig(
        backend="transformers",
        transformers={"model": str(folder), "batch_size": args.rollout_batch, "device": "cpu"},
        sampling={"k": args.k, "max_tokens": args.max_tokens, "temperature": 1.0, "seed": 0},
        prompt={"image_placeholder": "<|image|>"},
        blind=False,
    )


def _direct_rep(cfg: Any, prompts: int, n: int, inference: dict) -> tuple[dict[str, float], str]:
    from mmcurate.pipelines import rollouts

    handler = rollouts.make_handler(cfg)
    t0 = time.perf_counter()
    model = handler.load_model()
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples, inside, digest = direct_rollouts(prompts, cfg, handler, model, inference)
    loop = time.perf_counter() - t0
    del model
    if samples != n:
        raise RuntimeError(f"{samples} of {n} samples")
    return {"loop_s": loop, "load_s": load, "inside_s": inside}, digest


def _beam_rep(cfg: Any, prompts: int, n: int, inference: dict) -> tuple[dict[str, float], str]:
    from mmcurate.pipelines import rollouts

    r, digest = beam_rollouts(prompts, cfg, rollouts.make_handler(cfg), inference)
    if r.counters.get("bench/samples", 0) != n or r.counters.get("bench/short", 0):
        raise RuntimeError(f"{r.counters.get('bench/samples', 0)} of {n} samples")
    run = {
        "loop_s": r.wall - r.load_s,
        "load_s": r.load_s,
        "wall_s": r.wall,
        "inside_s": r.inside_s,
        "batches": r.batches,
        "batch_mean": r.batch_mean,
        "batch_max": r.batch_max,
    }
    return run, digest


class Runs:
    """Each variant's runs, errors and sample digests."""

    def __init__(self) -> None:
        self.runs: dict[str, list[dict[str, float]]] = {k: [] for k in VARIANTS}
        self.errors: dict[str, list[str]] = {k: [] for k in VARIANTS}
        self.digests: dict[str, set[str]] = {k: set() for k in VARIANTS}

    def record(self, key: str, tag: str, n: int, fn: Callable[[], tuple[dict[str, float], str]]) -> None:
        """One run of `key`: its figures and digest, or its error; one line printed."""
        try:
            r, digest = fn()
        except Exception as exc:
            self.errors[key].append(short_error(exc))
            print(f"{tag} {key:6s} FAILED: {self.errors[key][-1][:200]}", flush=True)
            return
        self.digests[key].add(digest)
        self.runs[key].append(r)
        line = f"{tag} {key:6s} {r['loop_s']:7.2f}s + load {r['load_s']:5.2f}s  {n / r['loop_s']:7.1f} samples/s"
        if "batches" in r:
            line += f"  ({r['batches']} batches, mean {r['batch_mean']:.2f} prompts, in model {r['inside_s']:.2f}s)"
        print(line, flush=True)


def _print_table(best: dict[str, dict], rates: dict, e2e: dict, errors: dict, reps: int, batch: int) -> None:
    print()
    cols = ("excl. load s", 12), ("samples/s", 9), ("load s", 6), ("e2e samples/s", 13), ("batch", 5)
    table_head(f"{'variant':50s} ", cols)
    for key, label in VARIANTS.items():
        if key in best:
            b = best[key]
            print(
                f"{label:50s} {b['loop_s']:12.2f} {rates[key]:9.1f} {b['load_s']:6.2f} {e2e[key]:13.1f} "
                f"{b.get('batch_mean', batch):5.2f}"
            )
        else:
            print(f"{label:50s} {'failed':>12s}")
        print_errors(errors[key], reps)
    print()


def _print_verdict(best: dict, ratio: float | None, checks: dict[str, bool], cfg: Any, prompts: int) -> None:
    batch = cfg.transformers.batch_size
    ratio_text = f"{ratio:.2f}" if ratio is not None else "n/a"
    print(
        f"  Beam (b) / direct (a), model load excluded = {ratio_text}x  (target >= 0.80)  "
        f"{VERDICT[checks['beam_vs_direct>=0.8']]}"
    )
    if len(best) == 2:
        a, b = best["direct"], best["beam"]
        print(
            f"    inside run_inference: (a) {a['inside_s']:.2f}s in {math.ceil(prompts / batch)} batches of {batch}, "
            f"(b) {b['inside_s']:.2f}s in {b['batches']:.0f} batches of {b['batch_mean']:.2f} prompts on average "
            f"(BatchElements between min_batch_size {cfg.transformers.min_batch_size or 1} and {batch})\n"
            f"    everything else: (a) {a['loop_s'] - a['inside_s']:.2f}s, (b) {b['loop_s'] - b['inside_s']:.2f}s "
            "(Beam start-up, task building, batching, keys included)"
        )
    print(f"  every prompt got k samples: {VERDICT[checks['no_rollouts_lost']]}")
    print(f"  (a) and (b) produced the same samples (seeded per prompt): {VERDICT[checks['same_samples']]}")


def _print_intro(args: argparse.Namespace, cfg: Any, folder: Path, load_before: float, cores: int) -> None:
    import torch

    k, batch = cfg.sampling.k, cfg.transformers.batch_size
    print(
        f"rollout: {args.prompts} prompts x k={k} = {args.prompts * k} samples of <= {args.max_tokens} tokens, "
        f"tiny Llama ({folder.name}, tests/tiny_models.py), transformers backend on CPU, batch {batch} prompts; "
        f"best of {args.reps}"
    )
    print(f"  load average before: {load_before:.2f} on {cores} cores, torch threads {torch.get_num_threads()}")
    print(
        "  (a) = rollouts.tasks_for(question), then handler.run_inference(prompts, model, {'sampling': ...}) over "
        "consecutive batches\n"
        "  (b) = Beam DirectRunner in_memory, 1 worker: Create(question numbers) -> tasks_for -> 'Prompt' -> "
        "RunInference(KeyedModelHandler(rollouts.make_handler(cfg)), inference_args) -> count"
    )
    print("  rates are samples/s: prompts x k responses per second")


def _warm_up(cfg: Any, inference: dict) -> None:
    """transformers' generate, Beam's RunInference."""
    from mmcurate.pipelines import rollouts

    batch = cfg.transformers.batch_size
    handler = rollouts.make_handler(cfg)
    model = handler.load_model()
    direct_rollouts(2 * batch, cfg, handler, model, inference)
    beam_rollouts(2 * batch, cfg, rollouts.make_handler(cfg), inference)
    del model


def run(args: argparse.Namespace) -> bool:
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" at every load_model
    cores = os.cpu_count() or 1
    reps, prompts = args.reps, args.prompts
    load_before = os.getloadavg()[0]
    folder = tiny_llama()
    cfg = _config(args, folder)
    inference = {"sampling": cfg.sampling.model_dump()}
    k, n = cfg.sampling.k, prompts * cfg.sampling.k
    batch = cfg.transformers.batch_size
    _print_intro(args, cfg, folder, load_before, cores)
    _warm_up(cfg, inference)

    measured = Runs()
    for rep in range(reps):
        tag = f"  rep {rep + 1}/{reps}"
        measured.record("direct", tag, n, lambda: _direct_rep(cfg, prompts, n, inference))
        measured.record("beam", tag, n, lambda: _beam_rep(cfg, prompts, n, inference))
    load_after = os.getloadavg()[0]
    runs, errors, digests = measured.runs, measured.errors, measured.digests

    best = {key: min(v, key=lambda x: x["loop_s"]) for key, v in runs.items() if v}
    rates = {key: n / b["loop_s"] for key, b in best.items()}
    e2e = {key: n / (b["loop_s"] + b["load_s"]) for key, b in best.items()}
    ratio = rates["beam"] / rates["direct"] if len(rates) == 2 else None
    checks = {
        "beam_vs_direct>=0.8": ratio is not None and ratio >= 0.8,
        "no_rollouts_lost": not any(errors.values()),
        "same_samples": len(digests["direct"] | digests["beam"]) == 1,
    }
    _print_table(best, rates, e2e, errors, reps, batch)
    _print_verdict(best, ratio, checks, cfg, prompts)
    print_load(load_before, load_after)
    report = {
        "benchmark": "rollout",
        "created": created(),
        "prompts": prompts,
        "k": k,
        "max_tokens": args.max_tokens,
        "samples": n,
        "batch_size": batch,
        "model": folder.name,
        "reps": reps,
        "runs": runs,
        "errors": errors,
        "samples_per_s": {key: round(v, 1) for key, v in rates.items()},
        "samples_per_s_end_to_end": {key: round(v, 1) for key, v in e2e.items()},
        "beam_vs_direct": round(ratio, 3) if ratio is not None else None,
        "digests": {key: sorted(v) for key, v in digests.items()},
        "checks": checks,
        "passed": all(checks.values()),
        "env": environment(
            cores,
            load_before,
            load_after,
            torch_threads=torch.get_num_threads(),
            torch=torch.__version__,
            transformers=transformers.__version__,
        ),
    }
    write_report("rollout", report)
    return report["passed"]
