"""Running a pipeline: fail-fast checks, the output folder (new, resumed, overwritten), Beam options, progress."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from mmcurate.schemas import Fields
from mmcurate.stages.io import Unit, is_local
from mmcurate.stages.io.paths import filesystem
from mmcurate.stages.writers import atomic_write, join, json_bytes

from . import layout
from .common import code_version, run_meta, write_units
from .corpus import Corpus
from .finish import Run
from .resume import OutputError, Prepared, prepare, remove_work, run_identity, write_state


def beam_options(beam_args: list[str]) -> PipelineOptions:
    options = PipelineOptions(beam_args)
    std = options.view_as(StandardOptions)
    if std.runner is None:
        std.runner = "DirectRunner"
    return options


_IN_PROCESS_RUNNERS = frozenset({"direct", "switchingdirect", "bundlebaseddirect", "fnapi"})
"""Runners (as Beam spells them, less "Runner") whose workers are this process, threads at most."""


def _worker_processes(beam_args: list[str]) -> str | None:
    """The Beam option that would run the pipeline's workers outside this process, if one does."""
    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    name = str(runner).rsplit(".", 1)[-1].lower().removesuffix("runner")
    if runner is not None and name not in _IN_PROCESS_RUNNERS:
        return f"--runner={runner}"
    if options.view_as(DirectOptions).direct_running_mode == "multi_processing":
        return "--direct_running_mode=multi_processing"
    return None


def check_output_uri(uri: str, beam_args: list[str], in_process: bool = False) -> None:
    """Refuse, before anything is listed or written, an output the run could not write or would lose:
    a protocol whose filesystem package is not installed, or `memory://`, which lives in one process
    (a CLI run's output is gone when it exits; Beam workers in other processes write to their own).
    `in_process`: the caller reads the result in this process (tests, notebooks), so memory:// is
    allowed there as long as the Beam options keep the workers in this process too."""
    fs, _ = filesystem(uri, lambda message: OutputError(f"output {message}"))
    if "memory" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return
    if not in_process:
        raise OutputError(
            f"output {uri}: memory:// lives in this process and is gone when it exits; "
            "write to a local folder or to object storage (s3://, gs://)"
        )
    outside = _worker_processes(beam_args)
    if outside:
        raise OutputError(
            f"output {uri}: {outside} can run Beam's workers in other processes, which do not share this "
            "process's memory:// filesystem (what they write is lost); use the in-process DirectRunner or "
            "write to a folder or object storage"
        )


class Progress:
    """Units scored and committed, records, rate and ETA, from the markers the run leaves on storage
    (any runner, any fsspec URI: `_work/spooled/` and `summaries/`, each carrying its record counts)."""

    def __init__(self, out_root: str, total: int, enabled: bool) -> None:
        self.out_root, self.total, self.enabled = out_root, total, enabled
        fs, _ = fsspec.core.url_to_fs(out_root)
        self.interval = 0.5 if is_local(fs) else 5.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._records: dict[str, int] = {}

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _records_in(self, fs: Any, path: str, key: str) -> int:
        if path not in self._records:
            try:
                with fs.open(path, "rb") as f:
                    doc = json.loads(f.read())
            except (OSError, ValueError):
                return 0  # being written: counted on the next poll
            read = doc.get("report" if key == "spooled" else "read") or {}
            self._records[path] = int(read.get("produced") or 0)  # records of the kind read from the inputs
        return self._records[path]

    def poll(self) -> dict[str, tuple[int, int]]:
        """{phase: (units, records)} found on storage now."""
        fs, root = fsspec.core.url_to_fs(self.out_root)
        out = {}
        for phase, pattern in (("spooled", layout.spooled_glob()), ("committed", layout.summary_glob())):
            try:
                paths = fs.glob(join(root, pattern))
            except OSError:
                paths = []
            out[phase] = (len(paths), sum(self._records_in(fs, p, phase) for p in paths))
        return out

    def _loop(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
        start, first = time.monotonic(), self.poll()  # on --resume, what was done before
        with Progress(*columns, transient=False) as bar:
            tasks = {
                "spooled": bar.add_task("units scored   ", total=self.total, rate=""),
                "committed": bar.add_task("units committed", total=self.total, rate=""),
            }
            while True:
                stop = self._stop.wait(self.interval)
                elapsed = max(time.monotonic() - start, 1e-6)
                for phase, (units, records) in self.poll().items():
                    rate = f"{records} records ({(records - first[phase][1]) / elapsed:.0f}/s)"
                    bar.update(tasks[phase], completed=units, rate=rate)
                if stop:
                    return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def new_run(
    corpus: Corpus,
    config: Any,
    inputs: list[str],
    units: list[Unit],
    out_root: str,
    lineage: dict | None = None,
    fields: dict[str, Fields] | None = None,
    prepared: Prepared | None = None,
    identity: dict[str, str] | None = None,
) -> Run:
    """The run's description for the finish path; writes units.json (what `select` re-reads) and the
    run's identity (what `--resume` checks), or takes both from the interrupted run it resumes."""
    prepared = prepared or Prepared()
    meta = prepared.meta
    if meta is None:
        write_units(out_root, units)
        identity = identity or run_identity(corpus.name, config, units, code_version(), lineage)
        meta = run_meta(corpus.name, inputs, config, units, lineage)
        meta["identity"] = {k: v for k, v in identity.items() if k != "corpus"}  # what a finished run is
        write_state(out_root, identity, meta)
    return Run(
        corpus.name, out_root, len(units), fields or corpus.fields(config), meta,
        groups={u.index: u.group for u in units}, spooled=prepared.spooled, committed=prepared.committed,
    )  # fmt: skip


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
    resume: bool = False,
    allow_memory: bool = False,
    observe: Callable[[Any], None] | None = None,
) -> dict:
    """Build and run one pipeline to completion; return the manifest it wrote (with the run's metrics).

    `build` defaults to the corpus's recipe (`select` passes its own); `fields` to the corpus's
    declaration for this config (`select` passes the parent run's). `resume` goes on with the
    interrupted run in `out_root`; `overwrite` deletes what a run there wrote first. `allow_memory`:
    the caller reads a memory:// output in this process (see `check_output_uri`). `observe` is given
    the finished PipelineResult (`mmcurate plan` reads its per-step execution times)."""
    check_output_uri(out_root, beam_args, in_process=allow_memory)
    options = beam_options(beam_args)
    identity = run_identity(corpus.name, config, units, code_version(), lineage)
    prepared = prepare(out_root, identity, corpus.outputs, overwrite=overwrite, resume=resume)
    if prepared.left:
        more = f" and {len(prepared.left) - 10} more" if len(prepared.left) > 10 else ""
        shown = ", ".join(prepared.left[:10]) + more
        print(f"mmcurate: --overwrite left {len(prepared.left)} files it did not write: {shown}", file=sys.stderr)
    if prepared.finished is not None:
        remove_work(out_root)  # a resumed run that had written its manifest: that manifest stands
        return prepared.finished
    run = new_run(corpus, config, inputs, units, out_root, lineage, fields, prepared, identity)
    with Progress(out_root, len(units), progress):
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
    if observe is not None:
        observe(result)
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


__all__ = ["OutputError", "Progress", "check_output_uri", "execute", "new_run"]
