"""`mmcurate plan`: what a full run will cost, measured on a sample before it is launched.

A sample of the input (the first `--sample` records, through the corpus's own recipe and finish
path, in one in-process worker) is timed stage by stage with Beam's own execution-time counters
(the state sampler's `ptransform_execution_time` per step: the time a worker thread spent inside
each step's code). Peak memory per stage is the highest resident size of the process seen while
that stage held the worker thread (sampled every 10 ms), bytes out per record are the sample
run's files. The full input is counted cheaply (listing, jsonl line counts, parquet footers, tar
headers), and the per-record figures are scaled to it: core-hours, GPU-hours (the model stages,
where they run on a GPU here), the CPU cores per GPU that keep the GPU stages fed, the output size
and the wall time on a given number of workers. Units that cannot be counted cheaply (tars on object
storage, compressed tars) are estimated from their size at the counted units' (or the sample's)
records per byte.

The stage times are the time a worker thread spent in each stage, I/O waits included (the sampled
run's CPU seconds are reported beside them); a model stage's time includes its preprocessing.

Stages are the recipe's labelled steps (`Read`, `DecodeAndScore`, ..., `Finish`), with each model
call (`RunInference[clip]`, `Rollouts`) its own stage, since it is the one placed on GPU workers.
"""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mmcurate.pipelines.corpus import Corpus
from mmcurate.pipelines.dryrun import records_held
from mmcurate.stages.io import Unit

SAMPLE_RSS_S = 0.01
BEAM_SAMPLING_MS = 5
"""Beam's state sampler attributes time in steps of its sampling period (200 ms by default, no
option changes it): a sample run of a few seconds would be measured in a handful of ticks. The plan
runs it at 5 ms."""
TIME_URN = "beam:metric:ptransform_execution_time:total_msecs:v1"
MODEL_STEPS = ("RunInference[", "Rollouts", "OcrImages")
"""Steps that are a model call (GPU-placeable): the rest is CPU work."""
SAMPLE_OPTIONS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def stage_of(step: str) -> str:
    """The stage a Beam step belongs to: its model call when inside one, else its top-level label."""
    parts = step.split("/")
    for part in parts:
        if part.startswith(MODEL_STEPS):
            return part
    return parts[0]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StageMemory:
    """Samples the resident size and the stage the worker thread is in (Beam's state sampler knows:
    its tracker is recorded when a bundle starts). `peaks`: stage -> highest RSS seen in it."""

    def __init__(self) -> None:
        self.trackers: list[Any] = []
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="plan-rss", daemon=True)

    def __enter__(self) -> StageMemory:
        from apache_beam.runners.worker import statesampler

        self._module, self._original = statesampler, statesampler.set_current_tracker

        def record(tracker: Any) -> None:
            if tracker is not None:
                self.trackers = [tracker]
            self._original(tracker)

        statesampler.set_current_tracker = record
        init = statesampler.StateSampler.__init__
        self._defaults = init.__defaults__
        init.__defaults__ = (BEAM_SAMPLING_MS,)  # (sampling_period_ms,): the one keyword with a default
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._module.set_current_tracker = self._original
        self._module.StateSampler.__init__.__defaults__ = self._defaults

    def _current(self) -> str | None:
        for tracker in self.trackers:
            try:
                name = tracker.current_state().name
            except Exception:  # between bundles
                return None
            step = getattr(name, "step_name", None) or str(name)
            return stage_of(step) if step else None
        return None

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_RSS_S):
            stage = self._current()
            if stage:
                self.peaks[stage] = max(self.peaks.get(stage, 0), _rss_bytes())


def step_seconds(result: Any) -> dict[str, float]:
    """Seconds per Beam step from the finished run's execution-time monitoring infos."""
    from apache_beam.metrics import monitoring_infos as mi

    out: dict[str, float] = {}
    for info in result.monitoring_infos():
        if info.urn == TIME_URN:
            step = info.labels.get(mi.PTRANSFORM_LABEL, "")
            if not step or step.startswith("ref_"):  # the runner's own steps (no label of the recipe)
                continue
            out[step] = out.get(step, 0.0) + mi.extract_counter_value(info) / 1000.0
    return out


def _files_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "_work" not in p.parts)


def measure(
    corpus: Corpus, config: Any, inputs: list[str], units: list[Unit], sample: int, warm_up: bool = True
) -> dict[str, Any]:
    """Run the first `sample` records of `units` (the first units that hold them) through the corpus's
    recipe here, one worker in this process; figures per stage and per record read. `warm_up` runs a
    tenth of the sample first, unmeasured: a worker's first records pay its one-off costs (models
    loaded, encoders set up, caches filled), which a worker of a long run pays once."""
    from mmcurate.pipelines.run import execute

    cold = 0.0
    if warm_up:
        t0 = time.perf_counter()
        small = config.model_copy(update={"read": config.read.model_copy(update={"limit": max(1, sample // 10)})})
        with tempfile.TemporaryDirectory(prefix="mmcurate-plan-warm-") as out:
            execute(corpus, small, inputs, units[:1], out, SAMPLE_OPTIONS, progress=False)
        cold = time.perf_counter() - t0

    chosen, seen = [], 0
    for unit in units:
        chosen.append(unit)
        held = records_held(unit, tars=True)
        seen += sample if held is None else held
        if seen >= sample:
            break
    read = config.read.model_copy(update={"limit": sample})
    limited = config.model_copy(update={"read": read})
    results: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="mmcurate-plan-") as out, StageMemory() as memory:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        manifest = execute(corpus, limited, inputs, chosen, out, SAMPLE_OPTIONS, progress=False,
                           observe=results.append)  # fmt: skip
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        bytes_out = _files_bytes(Path(out))
    if not results:  # the sample run failed its accounting: its manifest says what went missing
        raise RuntimeError(f"the sample run lost records: {manifest.get('kinds')}")
    records = _records_read(manifest, corpus)
    stages: dict[str, float] = {}
    for step, seconds in step_seconds(results[0]).items():
        stages[stage_of(step)] = stages.get(stage_of(step), 0.0) + seconds
    return {
        "records": records, "units": len(chosen), "unit_bytes": _sizes(chosen), "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3), "warm_up_s": round(cold, 3),
        "bytes_out": bytes_out, "accounting_ok": manifest.get("accounting_ok"),
        "stages": {name: {"seconds": round(s, 4), "peak_rss_mb": round(memory.peaks.get(name, 0) / 2**20, 1)}
                   for name, s in stages.items()},
    }  # fmt: skip


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _records_read(manifest: dict[str, Any], corpus: Corpus) -> int:
    limit = manifest.get("limit") or {}
    if limit.get("read") is not None:
        return int(limit["read"])
    return int(manifest["kinds"][corpus.primary]["counts"]["input"])


def _sizes(units: list[Unit]) -> int:
    """Bytes of the units' files (a listing's worth of metadata, not their contents)."""
    import fsspec

    total = 0
    for unit in units:
        for uri in unit.files or (unit.uri,):
            try:
                fs, path = fsspec.core.url_to_fs(uri)
                total += int(fs.size(path) or 0)
            except Exception:  # an unreadable file: the run quarantines it; it weighs nothing here
                continue
    return total


def full_count(units: list[Unit]) -> tuple[int, list[Unit]]:
    """(records counted, units that could not be counted cheaply)."""
    known = [(u, records_held(u, tars=True)) for u in units]
    return sum(k for _, k in known if k is not None), [u for u, k in known if k is None]


def estimate(units: list[Unit], counted: int, uncounted: list[Unit], sample: dict[str, Any]) -> int:
    """Records of the uncounted units, from their bytes at the counted units' records per byte, or
    the sample's where nothing could be counted."""
    if not uncounted:
        return 0
    counted_bytes = _sizes([u for u in units if u not in uncounted]) if counted else 0
    per_byte = counted / counted_bytes if counted and counted_bytes else None
    if per_byte is None:
        per_byte = sample["records"] / sample["unit_bytes"] if sample["unit_bytes"] else 0.0
    return round(_sizes(uncounted) * per_byte)


def on_gpu(stage: str, config: Any) -> bool:
    """Whether this stage's model would run on a GPU of this machine as configured."""
    if not stage.startswith(MODEL_STEPS):
        return False
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        return False
    models = getattr(config, "models", None)
    clip = getattr(getattr(models, "clip", None), "device", "auto")
    rollout = getattr(config, "rollout", None)
    if stage.startswith("Rollouts"):
        backend = getattr(rollout, "backend", "")
        device = getattr(getattr(rollout, "transformers", None), "device", "auto")
        return cuda and (backend == "vllm" or (backend == "transformers" and device != "cpu"))
    if "ocr" in stage.lower():  # models.ocr, or the pass-rate corpus's top-level ocr
        ocr = getattr(models, "ocr", None) or getattr(config, "ocr", None)
        return cuda and getattr(ocr, "backend", "") == "paddleocr"
    return cuda and clip != "cpu"


def extrapolate(sample: dict[str, Any], total: int, workers: int, gpus: int, config: Any) -> dict[str, Any]:
    """Per-record figures scaled to `total` records: hours, worker ratio, output size, wall time."""
    n = max(1, sample["records"])
    per = {k: v["seconds"] / n for k, v in sample["stages"].items()}
    gpu_stages = {k for k in per if on_gpu(k, config)}
    cpu_s = sum(v for k, v in per.items() if k not in gpu_stages) * total
    gpu_s = sum(per[k] for k in gpu_stages) * total
    ratio = (cpu_s / gpu_s) if gpu_s else None  # CPU-stage core-seconds per GPU-stage second
    cpu_wall = cpu_s / max(1, workers)
    gpu_wall = gpu_s / max(1, gpus) if gpu_s else 0.0
    return {
        "records": total,
        "per_record_s": {k: round(v, 6) for k, v in per.items()},
        "core_hours": cpu_s / 3600,
        "gpu_hours": gpu_s / 3600,
        "gpu_stages": sorted(gpu_stages),
        "cpu_cores_per_gpu": round(ratio, 2) if ratio is not None else None,
        "output_bytes": int(sample["bytes_out"] / n * total),
        "workers": workers,
        "gpus": gpus,
        "wall_hours": max(cpu_wall, gpu_wall) / 3600,
        "bound_by": "GPU stages" if gpu_wall > cpu_wall else "CPU stages",
    }


def plan(
    corpus: Corpus, config: Any, inputs: list[str], sample: int = 200, workers: int = 0, gpus: int = 1
) -> dict[str, Any]:
    """Measure a sample and scale it to the whole input (`workers` 0 = this machine's cores)."""
    units = corpus.list_units(inputs, config)
    counted, uncounted = full_count(units)
    measured = measure(corpus, config, inputs, units, sample)
    total = counted + estimate(units, counted, uncounted, measured)
    workers = workers or os.cpu_count() or 1
    return {"corpus": corpus.name, "units": len(units), "units_uncounted": len(uncounted),
            "records_counted": counted, "sample": measured,
            "full": extrapolate(measured, total, workers, gpus, config)}  # fmt: skip


def print_plan(p: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console, s, f = Console(), p["sample"], p["full"]
    guess = f" ({p['units_uncounted']} units estimated)" if p["units_uncounted"] else ""
    console.print(f"mmcurate plan: {p['corpus']}, sample of {s['records']} records from {s['units']} of "
                  f"{p['units']} units; full input {f['records']:,} records{guess}")  # fmt: skip
    table = Table("stage", "s / record", "share", "peak RSS MB", "on", "full run, hours")
    busy = sum(v["seconds"] for v in s["stages"].values()) or 1.0
    for name, v in sorted(s["stages"].items(), key=lambda kv: -kv[1]["seconds"]):
        where = "GPU" if name in f["gpu_stages"] else "CPU"
        per = f["per_record_s"].get(name, 0.0)
        table.add_row(escape(name), f"{per:.5f}", f"{v['seconds'] / busy:.0%}", f"{v['peak_rss_mb']:.0f}", where,
                      f"{per * f['records'] / 3600:.3f}")  # fmt: skip
    console.print(table)
    ratio = f["cpu_cores_per_gpu"]
    console.print(f"core-hours {f['core_hours']:,.4g}  GPU-hours {f['gpu_hours']:,.4g}"
                  + (f"  CPU cores per GPU to keep it fed: {ratio}" if ratio is not None
                     else "  (no stage on a GPU here: model stages are counted as CPU work)"))  # fmt: skip
    console.print(f"expected output {f['output_bytes'] / 1e9:,.2f} GB; wall time on {f['workers']} workers"
                  f"{', ' + str(f['gpus']) + ' GPUs' if f['gpu_stages'] else ''}: {f['wall_hours']:,.4g} h "
                  f"(bound by the {f['bound_by']}); sample run {s['wall_s']} s wall, {s['cpu_s']} s CPU")  # fmt: skip


__all__ = ["measure", "plan", "print_plan", "stage_of"]
