"""Running a pipeline: fail-fast checks, output preparation, Beam options, local progress."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from mmcurate.schemas import Fields
from mmcurate.stages.io import Unit
from mmcurate.stages.writers import atomic_write, join, json_bytes

from . import layout
from .common import run_meta, write_units
from .corpus import Corpus
from .finish import Run

LOCAL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "FnApiRunner", None)


class OutputError(ValueError):
    """The output location cannot be used as asked."""


def prepare_output(out_root: str, overwrite: bool, parts: tuple[str, ...] = ()) -> None:
    """Refuse to mix two runs in one folder; with `overwrite`, clear only what a run writes."""
    fs, path = fsspec.core.url_to_fs(out_root)
    existing = [p for p in (*layout.CORE_PARTS, *parts) if fs.exists(join(path, p))]
    if existing and not overwrite:
        raise OutputError(f"output {out_root} already holds a run ({', '.join(existing)}); pass --overwrite")
    for part in existing:
        if part != layout.OVERLAYS:  # facts added later about these records (human labels) outlive a rerun
            fs.rm(join(path, part), recursive=True)
    fs.makedirs(path, exist_ok=True)


def beam_options(beam_args: list[str]) -> PipelineOptions:
    options = PipelineOptions(beam_args)
    std = options.view_as(StandardOptions)
    if std.runner is None:
        std.runner = "DirectRunner"
    return options


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in LOCAL_RUNNERS


class Progress:
    """A progress bar for local runs, fed by marker files the DoFns touch per unit read and written."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.dir = tempfile.mkdtemp(prefix="mmcurate-progress-") if enabled else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        assert self.dir is not None
        with Progress(
            "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
        ) as bar:
            read = bar.add_task("units read+scored", total=self.total)
            written = bar.add_task("units written    ", total=self.total)
            while True:
                names = [p.name for p in Path(self.dir).iterdir()]
                bar.update(read, completed=sum(n.startswith("read-") for n in names))
                bar.update(written, completed=sum(n.startswith("write-") for n in names))
                if self._stop.wait(0.25):
                    names = [p.name for p in Path(self.dir).iterdir()]
                    bar.update(read, completed=sum(n.startswith("read-") for n in names))
                    bar.update(written, completed=sum(n.startswith("write-") for n in names))
                    return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def new_run(
    corpus: Corpus,
    config: Any,
    inputs: list[str],
    units: list[Unit],
    out_root: str,
    lineage: dict | None = None,
    fields: dict[str, Fields] | None = None,
    progress_dir: str | None = None,
) -> Run:
    """The run's description for the finish path; writes units.json (what `select` re-reads)."""
    write_units(out_root, units)
    meta = run_meta(corpus.name, inputs, config, units, lineage)
    return Run(corpus.name, out_root, len(units), fields or corpus.fields(config), meta, progress_dir)


def execute(
    corpus: Corpus,
    config: Any,
    inputs: list[str],
    units: list[Unit],
    out_root: str,
    beam_args: list[str],
    overwrite: bool = False,
    progress: bool = True,
    lineage: dict | None = None,
    fields: dict[str, Fields] | None = None,
    build: Callable[..., Any] | None = None,
) -> dict:
    """Build and run one pipeline to completion; return the manifest it wrote (with the run's metrics).

    `build` defaults to the corpus's recipe (`select` passes its own); `fields` to the corpus's
    declaration for this config (`select` passes the parent run's)."""
    options = beam_options(beam_args)
    prepare_output(out_root, overwrite, corpus.outputs)
    with Progress(len(units), progress and is_local(options)) as bar:
        run = new_run(corpus, config, inputs, units, out_root, lineage, fields, bar.dir)
        p = beam.Pipeline(options=options)
        (build or corpus.build)(p, units, config, run)
        try:
            result = p.run()
            result.wait_until_finish()
        except Exception:
            failed = _failed_accounting(out_root, run.meta["created"])
            if failed is None:
                raise
            return failed  # the manifest says what went missing; the CLI prints it and exits 1
    with fsspec.open(join(out_root, layout.MANIFEST), "rt") as f:
        manifest = json.load(f)
    metrics = collect_metrics(result)
    atomic_write(join(out_root, layout.METRICS), json_bytes(metrics))
    manifest["metrics"] = metrics
    return manifest


def _failed_accounting(out_root: str, created: str) -> dict | None:
    """The manifest this run wrote before failing its accounting check, if that is why it failed."""
    try:
        with fsspec.open(join(out_root, layout.MANIFEST), "rt") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("created") == created and not manifest.get("accounting_ok") else None


def collect_metrics(result: Any) -> dict[str, dict[str, float]]:
    """Beam counters and distributions (ours and RunInference's), summed over steps, for the run summary."""
    out: dict[str, dict[str, float]] = {"counters": {}, "distributions": {}}
    try:
        query = result.metrics().query()
    except (AttributeError, NotImplementedError):  # some runners report no metrics
        return out
    for c in query.get("counters", []):
        name = f"{c.key.metric.namespace}/{c.key.metric.name}"
        out["counters"][name] = out["counters"].get(name, 0) + (c.committed or c.attempted or 0)
    for d in query.get("distributions", []):
        r = d.committed or d.attempted
        if r is not None and r.count:
            name = f"{d.key.metric.namespace}/{d.key.metric.name}"
            out["distributions"][name] = {"count": r.count, "sum": r.sum, "mean": r.sum / r.count, "max": r.max}
    return dict(sorted(out.items()))
