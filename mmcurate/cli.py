"""The `mmcurate` command: one sub-command per registered corpus, plus `select`, `overlay`, `demo`,
`summary`, `reasons` and `export`.

Arguments a sub-command does not take must be Beam pipeline options (e.g. `--runner`,
`--direct_num_workers=2 --direct_running_mode=multi_processing`, `--job_endpoint`); anything else is
an error that names the closest option (mmcurate/options.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import fsspec


def _kind_table(kind: str, section: dict[str, Any]) -> Any:
    from rich.table import Table

    counts = section["counts"]
    table = Table(title=f"{kind}: {counts['input']} in")
    table.add_column("fate")
    table.add_column("reason")
    table.add_column(f"{kind} records", justify="right")
    table.add_row("kept", "", str(counts["kept"]), style="green")
    for fate, style in (("dropped", "yellow"), ("quarantined", "red")):
        for reason, n in sorted(section["reasons"][fate].items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(fate, reason, str(n), style=style)
    table.add_section()
    ok = "ok" if section["accounting_ok"] else "MISMATCH"
    table.add_row("total", f"input = kept + dropped + quarantined: {ok}",
                  str(counts["kept"] + counts["dropped"] + counts["quarantined"]))  # fmt: skip
    return table


def _metrics_table(metrics: dict[str, Any]) -> Any:
    from rich.table import Table

    mt = Table(title="Beam metrics (RunInference's included)")
    mt.add_column("metric")
    mt.add_column("value", justify="right")
    for name, value in metrics.get("counters", {}).items():
        mt.add_row(name, f"{value:g}")
    for name, d in metrics.get("distributions", {}).items():
        mt.add_row(name, f"n={d['count']} mean={d['mean']:.4g} max={d['max']:g}")
    return mt


def print_summary(manifest: dict, out: str | None = None) -> None:
    """The kept / dropped / quarantined tables per record kind and reason that end every local run."""
    from rich.console import Console

    from mmcurate.pipelines import corpus as corpora

    console = Console()
    for kind, section in manifest["kinds"].items():
        console.print(_kind_table(kind, section))
    metrics = manifest.get("metrics", {})
    if metrics.get("counters") or metrics.get("distributions"):
        console.print(_metrics_table(metrics))
    where = f" in {out}" if out else ""
    t = manifest["totals"]
    if t["shards"]:
        console.print(f"{t['samples']} samples in {t['shards']} shards ({t['bytes'] / 1e6:.1f} MB){where}")
    name = manifest.get("corpus", "")
    if name in corpora.REGISTRY:
        for line in corpora.get(name).describe(manifest):
            console.print(line)
    lim = manifest.get("limit")
    if lim:
        console.print(
            f"--limit {lim['records_per_input']}: {lim['read']} of the {lim['held']} records in the inputs read, "
            f"{lim['not_read']} not read", style="yellow",
        )  # fmt: skip
    if manifest.get("units_missing"):
        console.print(f"units without a summary: {manifest['units_missing']}", style="red")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PIPELINE_COMMANDS = ("select", "demo")
"""Besides the corpora: the commands that run a Beam pipeline, so take Beam options."""


def _limit(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--output", required=True, help="output folder URI (local, s3://, gs://)")
    sp.add_argument("--config", help="YAML config; default: the embedded defaults of this corpus")
    again = sp.add_mutually_exclusive_group()  # a run is resumed or started again, never both
    again.add_argument(
        "--overwrite", action="store_true", help="delete what an earlier run wrote in --output (only that), start again"
    )
    again.add_argument(
        "--resume", action="store_true", help="go on with the interrupted run in --output: only unfinished units run"
    )
    sp.add_argument("--no-progress", action="store_true", help="no progress bar on local runs")
    sp.add_argument("--no-report", action="store_true", help="write no report (OUTPUT/report/index.html) at the end")


def _trial(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--limit", type=_limit, metavar="N",
        help="read only the first N records of each input file (to try a config); the manifest counts the rest",
    )  # fmt: skip
    sp.add_argument(
        "--dry-run", action="store_true",
        help="check the config, the models and the output, list the units and count the inputs; write nothing",
    )  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"mmcurate {of('mmcurate')} (apache-beam {of('apache-beam')}, pyarrow {of('pyarrow')})"


def _dest(flag: str) -> str:
    return "opt_" + flag.lstrip("-").replace("-", "_")


def _target(spec: str) -> Any:
    import importlib

    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


def with_options(corpus: Any, config: Any, args: argparse.Namespace) -> Any:
    """The config with the corpus's own command-line options set (validated again, naming the key)."""
    from mmcurate.pipelines.config import ConfigError
    from mmcurate.pipelines.corpus import REGISTRY

    entry = REGISTRY[corpus.name]
    data = config.model_dump()
    changed = False
    for opt in entry.options:
        value = getattr(args, _dest(opt.flag), None)
        if value is None:
            continue
        if opt.requires and getattr(args, _dest(opt.requires), None) is None:
            raise ConfigError(f"{opt.flag} applies only with {opt.requires}")
        *path, leaf = opt.key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[leaf], changed = value, True
    if not changed:
        return config
    try:
        return type(config)(**data)
    except ValueError as exc:
        raise ConfigError(f"{', '.join(o.flag for o in entry.options)}: {exc}") from None


def parser() -> argparse.ArgumentParser:
    from mmcurate.pipelines.corpus import REGISTRY, TOOLS

    ap = argparse.ArgumentParser(prog="mmcurate", description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--version", action="version", version=_version())
    logs = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    logs.add_argument("--log-level", choices=LOG_LEVELS, default="WARNING", type=str.upper, help="default: WARNING")
    sub = ap.add_subparsers(dest="command", required=True)

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[logs], allow_abbrev=False, **kw)

    for name, entry in REGISTRY.items():
        sp = add(name, help=entry.help)
        sources = sp.add_mutually_exclusive_group(required=True) if entry.input_instead else sp
        sources.add_argument("--input", nargs="+", action="extend", required=not entry.input_instead, help=entry.inputs)
        for opt in entry.options:
            into = sources if opt.flag == entry.input_instead else sp
            into.add_argument(opt.flag, dest=_dest(opt.flag), nargs="+" if opt.many else None, help=opt.help)
        _common(sp)
        _trial(sp)
    for name, tool in TOOLS.items():
        sp = add(name, help=tool.help)
        _target(tool.arguments)(sp)
    sel = add("select", help="re-decide a run from its ledgers and overlays; no score is recomputed")
    sel.add_argument("--run", required=True, help="output folder of an earlier run (holds ledger/ and units.json)")
    _common(sel)
    ov = add("overlay", help="append a table of facts about records (joined by id) to a run")
    ov.add_argument("--run", required=True, help="the run folder")
    ov.add_argument("--name", required=True, help="overlay name (select reads overlays.NAME.COLUMN)")
    ov.add_argument("--kind", required=True, help="record kind the ids belong to (caption, clip, question, ...)")
    ov.add_argument("--table", required=True, help="parquet, jsonl or csv with an `id` column")
    demo = add("demo", help="build a demo corpus and run its pipeline (caption by default)")
    demo.add_argument(
        "--corpus",
        choices=("caption", "video", "interleaved", "ocr", "grounding"),
        default="caption",
        help="which demo",
    )
    demo.add_argument("--workdir", default="demo", help="where the demo corpus and its output go")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--no-report", action="store_true", help="write no report (OUTPUT/report/index.html) at the end")
    rep = add("report", help="write a run's report (RUN/report/index.html), or compare two runs of one corpus")
    rep.add_argument("run", nargs="+", help="a finished run's folder (two: A B, compared side by side)")
    rep.add_argument("--output", help="where the page and its images go (default: RUN/report, A/report-compare)")
    rep.add_argument("--per-reason", type=int, default=6, help="sampled records shown per reason (default: 6)")
    pl = add("plan", help="what a full run will cost: a sample run measured per stage, scaled to the whole input")
    pl.add_argument("corpus", help="the corpus (caption, video, interleaved, ocr, grounding, sft, rl)")
    pl.add_argument("--input", nargs="+", required=True, help="the inputs the run would read")
    pl.add_argument("--config", help="YAML config; default: the embedded defaults of this corpus")
    pl.add_argument("--sample", type=_limit, default=200, help="records of the sample run (default: 200)")
    pl.add_argument("--workers", type=int, default=0, help="CPU worker cores for the wall-time figure (default: here)")
    pl.add_argument("--gpus", type=_limit, default=1, help="GPUs for the wall-time figure (default: 1)")
    pl.add_argument("--json", help="also write the figures to this JSON file")
    summ = add("summary", help="print the kept/dropped/quarantined tables of a manifest")
    summ.add_argument("manifest", help="manifest.json URI, or the run folder holding it")
    add("reasons", help="list every reason code: drop or quarantine, and what it means")
    an = add("annotate", help="video clips to Label Studio and the labels back (server, push, pull)")
    an.add_argument("action", choices=("server", "push", "pull"))
    an.add_argument("--run", help="the video run (push, pull)")
    an.add_argument("--family", nargs="+",
                    help="label families, one project each (default: actions text cinematic), or `combined`: "
                         "one project with every family's controls")  # fmt: skip
    an.add_argument("--root", default="annotate", help="server: data and served media folder (default: annotate)")
    an.add_argument("--port", type=int, default=8080, help="server: port on 127.0.0.1 (default: 8080)")
    an.add_argument(
        "--media",
        help="push: the folder Label Studio serves (default: ROOT/media), or an s3:// / gs:// "
        "prefix the clips are uploaded to",
    )
    an.add_argument("--presign", type=float, default=0.0,
                    help="push to object storage: tasks get presigned URLs valid this many seconds (default: the "
                         "object URI, for the project's cloud storage)")  # fmt: skip
    an.add_argument("--media-url", default="/data/local-files/?d=media", help="push: URL prefix of --media")
    an.add_argument("--batch-size", type=int, default=50, help="push: tasks per import call")
    an.add_argument("--overlap", type=int, default=1, help="push: annotators per task")
    an.add_argument("--gold", help="push, pull: JSON {clip_id: {control: answer}} of gold clips (kept on our side)")
    an.add_argument(
        "--gold-rate",
        type=float,
        default=0.0,
        help="push: share of gold copies mixed into the imported tasks (0.1: one in ten)",
    )
    an.add_argument("--requeue", help="push: a pull summary; its clips below the agreement bound go back to the queue")
    an.add_argument("--requeue-overlap", type=int,
                    help="push --requeue: annotators per requeued task (default: --overlap + 1)")  # fmt: skip
    an.add_argument("--bound", type=float, default=0.5, help="pull: agreement below which a clip is requeued")
    an.add_argument("--summary", help="pull: write the summary JSON here (default: print it)")
    an.add_argument("--sft", help="pull: also write LLaMA-Factory SFT rows (captions, QA) from the labels here")
    an.add_argument("--questions", help="pull: also write video questions for `mmcurate sft|rl` from the labels here")
    ex = add("export", help="write a finished run's kept data as a Hugging Face datasets folder (save_to_disk)")
    ex.add_argument("--run", required=True, help="the run folder (local)")
    ex.add_argument("--output", required=True, help="the datasets folder to write (datasets.load_from_disk reads it)")
    ex.add_argument(
        "--overwrite", action="store_true", help="replace what --output holds (by default it must be empty)"
    )
    ap.set_defaults(commands=sub.choices)
    return ap


def run_corpus(name: str, args: argparse.Namespace, beam_args: list[str], config: Any = None) -> dict:
    from mmcurate.pipelines import corpus as corpora
    from mmcurate.pipelines.run import check_output_uri, execute
    from mmcurate.pipelines.select import check_where

    corpus = corpora.get(name)
    check_output_uri(args.output, beam_args)  # before a model is loaded or an input listed
    config = config if config is not None else corpus.load_config(args.config)
    config = with_options(corpus, config, args)
    if getattr(args, "limit", None) is not None:
        config = config.model_copy(update={"read": config.read.model_copy(update={"limit": args.limit})})
    corpus.validate(config)
    check_where(config, corpus, corpus.fields(config), run_root=None)
    units = corpus.list_units(args.input or [], config)
    lineage = corpus.lineage(config)
    if getattr(args, "dry_run", False):  # the same identity and folder check as the run's, read-only
        from mmcurate.pipelines.dryrun import print_plan

        print_plan(corpus, config, units, args.output, lineage, overwrite=args.overwrite, resume=args.resume)
        return {}
    return execute(
        corpus, config, args.input or [], units, args.output, beam_args, args.overwrite, not args.no_progress,
        lineage=lineage, resume=args.resume,
    )  # fmt: skip


def _select(args: argparse.Namespace, beam_args: list[str]) -> dict:
    from mmcurate.pipelines import select

    return select.run(
        args.run, args.output, args.config, beam_args, args.overwrite, not args.no_progress, resume=args.resume
    )


def _overlay(args: argparse.Namespace) -> int:
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet as pq

    from mmcurate.pipelines.overlays import write_overlay

    readers = {".parquet": pq.read_table, ".jsonl": pyarrow.json.read_json, ".csv": pyarrow.csv.read_csv}
    ext = next((e for e in readers if args.table.endswith(e)), None)
    if ext is None:
        print(f"mmcurate: error: --table {args.table}: a .parquet, .jsonl or .csv file", file=sys.stderr)
        return 2
    kinds = list(_manifest(args.run.rstrip("/") + "/manifest.json").get("kinds", {}))
    if args.kind not in kinds:
        print(f"mmcurate: error: --kind {args.kind}: {args.run} holds {', '.join(kinds)} records", file=sys.stderr)
        return 2
    with fsspec.open(args.table, "rb") as f:
        table = readers[ext](f)
    info = write_overlay(args.run, args.name, args.kind, table)
    print(f"overlay {args.name}: {table.num_rows} {args.kind} rows -> {info.path}")
    return 0


def _annotate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from mmcurate import annotate

    if args.action == "server":
        return annotate.serve(Path(args.root), args.port)
    if not args.run:
        raise annotate.AnnotateError(f"annotate {args.action} needs --run (a video run's output folder)")
    client = annotate.connect()
    gold = annotate.read_gold(args.gold) if args.gold else None
    if args.action == "push":
        media: Path | str = (
            args.media if args.media and "://" in args.media else Path(args.media or Path(args.root) / "media")
        )
        settings = {"batch_size": args.batch_size, "overlap": args.overlap, "gold": gold or {},
                    "gold_rate": args.gold_rate, "presign": args.presign}  # fmt: skip
        if args.requeue:
            out = annotate.requeue(client, args.run, media, args.media_url, Path(args.requeue),
                                   args.requeue_overlap or args.overlap + 1, args.family, **settings)  # fmt: skip
        else:
            out = annotate.push(client, args.run, media, args.media_url, args.family, **settings)
    else:
        projects = annotate.projects_of(client, args.run, args.family)
        out = annotate.pull_overlay(client, args.run, projects, gold=gold, bound=args.bound)
        if args.sft:
            out["sft_rows"] = annotate.write_sft(args.run, out["labels"], Path(args.sft))
        if args.questions:
            out["questions"] = annotate.write_questions(args.run, out["labels"], Path(args.questions))
    text = json.dumps(out, indent=2, sort_keys=True, default=str)
    if getattr(args, "summary", None):
        Path(args.summary).write_text(text + "\n")
    print(text)
    return 0


def _demo(args: argparse.Namespace, beam_args: list[str]) -> dict:
    from pathlib import Path

    work = Path(args.workdir)
    if args.corpus == "video":
        from mmcurate.demo import video as demo_video

        videos = demo_video.build_corpus(work / "videos")
        ns = argparse.Namespace(
            input=[str(videos)], output=str(work / "video-output"), config=None, overwrite=True, resume=False,
            no_progress=args.no_progress,
        )  # fmt: skip
        manifest = run_corpus("video", ns, beam_args)
        print(f"demo videos:   {videos}")
        print(f"clip shards:   {work / 'video-output' / 'shards'}")
        print(f"annotation:    {work / 'video-output' / 'annotation'}  (clips queued for Label Studio)")
        print(f"manifest:      {work / 'video-output' / 'manifest.json'}")
        return manifest
    if args.corpus == "interleaved":
        return _demo_interleaved(work, args, beam_args)
    if args.corpus == "ocr":
        return _demo_ocr(work, args, beam_args)
    if args.corpus == "grounding":
        return _demo_grounding(work, args, beam_args)
    from mmcurate.demo import caption as demo

    corpus = demo.build_corpus(work / "corpus")
    config, notes = demo.demo_config()
    for note in notes:
        print(f"mmcurate demo: {note}")
    ns = argparse.Namespace(
        input=[str(corpus)],
        output=str(work / "output"),
        config=None,
        overwrite=True,
        resume=False,
        no_progress=args.no_progress,
    )
    manifest = run_corpus("caption", ns, beam_args, config)
    print(f"demo corpus:   {corpus}")
    print(f"shards:        {work / 'output' / 'shards'}")
    print(f"manifest:      {work / 'output' / 'manifest.json'}")
    print(f"dropped:       {work / 'output' / 'dropped'}   quarantined: {work / 'output' / 'quarantined'}")
    return manifest


def _demo_interleaved(work: Any, args: argparse.Namespace, beam_args: list[str]) -> dict:
    from mmcurate.demo import interleaved as demo

    docs = demo.build_corpus(work / "interleaved")
    config, notes = demo.demo_config(str(work / "interleaved" / "images"))
    for note in notes:
        print(f"mmcurate demo: {note}")
    out = work / "interleaved-output"
    ns = argparse.Namespace(
        input=[str(docs)], output=str(out), config=None, overwrite=True, resume=False, no_progress=args.no_progress
    )
    manifest = run_corpus("interleaved", ns, beam_args, config)
    print(f"demo documents: {docs}")
    print(f"shards:         {out / 'shards'}   (one sample per document: KEY.json + KEY.<slot>.jpg)")
    print(f"manifest:       {out / 'manifest.json'}")
    return manifest


def _demo_ocr(work: Any, args: argparse.Namespace, beam_args: list[str]) -> dict:
    from mmcurate.demo import ocr as demo

    icdar, rendered = demo.build_corpus(work / "ocr")
    out = work / "ocr-output"
    ns = argparse.Namespace(
        input=[str(icdar), str(rendered)], output=str(out), config=None, overwrite=True, resume=False,
        no_progress=args.no_progress,
    )  # fmt: skip
    manifest = run_corpus("ocr", ns, beam_args)
    print(f"demo OCR inputs: {icdar} (ICDAR 2015 gt files)  {rendered} (rendered, exact labels)")
    print(f"shards:          {out / 'shards'}   (KEY.jpg + KEY.json: lines, boxes in stored pixels, scores)")
    print(f"SFT rows:        {out / 'sft'}   (LLaMA-Factory ShareGPT; dataset_info.json)")
    print(f"manifest:        {out / 'manifest.json'}")
    return manifest


def _demo_grounding(work: Any, args: argparse.Namespace, beam_args: list[str]) -> dict:
    from mmcurate.demo import grounding as demo

    odvg, chat = demo.build_corpus(work / "grounding")
    config, notes = demo.demo_config(str(work / "grounding" / "images"))
    for note in notes:
        print(f"mmcurate demo: {note}")
    out = work / "grounding-output"
    ns = argparse.Namespace(
        input=[str(odvg), str(chat)], output=str(out), config=None, overwrite=True, resume=False,
        no_progress=args.no_progress,
    )  # fmt: skip
    manifest = run_corpus("grounding", ns, beam_args, config)
    print(f"demo grounding inputs: {odvg} (ODVG)  {chat} (GLM-4.5V boxes in a conversation)")
    print(f"shards:          {out / 'shards'}   (KEY.jpg + KEY.json: regions, boxes in stored pixels, scores)")
    print(f"SFT rows:        {out / 'sft'}   (LLaMA-Factory ShareGPT, GLM boxes; dataset_info.json)")
    print(f"box questions:   {out / 'questions'}   (mmcurate rl, read.image_root: {out})")
    print(f"manifest:        {out / 'manifest.json'}")
    return manifest


def _reasons() -> int:
    from rich.console import Console
    from rich.table import Table

    from mmcurate.schemas import REASONS
    from mmcurate.stages.base import load_filters

    load_filters()
    table = Table(title="reason codes")
    for col in ("code", "fate", "select re-decides", "meaning"):
        table.add_column(col)
    for code, r in sorted(REASONS.items()):
        table.add_row(code, r.status.value, "yes" if r.redecide else "", r.doc)
    Console().print(table)
    return 0


def _manifest(uri: str) -> dict[str, Any]:
    """A run's manifest; a missing one, or a filesystem package that is not installed, is a user error."""
    from mmcurate.stages.io.paths import filesystem
    from mmcurate.stages.readers import InputError

    filesystem(uri, InputError)
    try:
        with fsspec.open(uri, "rt") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{uri} does not exist (not a finished run?)") from None


def _summary(uri: str) -> int:
    from mmcurate.pipelines.finish import MANIFEST_FORMAT

    uri = uri if uri.endswith(".json") else uri.rstrip("/") + "/manifest.json"
    manifest = _manifest(uri)
    if manifest.get("format") != MANIFEST_FORMAT:
        print(
            f"mmcurate: error: {uri} is a {manifest.get('format')!r} manifest, not {MANIFEST_FORMAT}", file=sys.stderr
        )
        return 2
    print_summary(manifest)
    return 0


def _dispatch(args: argparse.Namespace, beam_args: list[str]) -> int:
    from mmcurate.pipelines.corpus import REGISTRY

    simple = {"summary": lambda: _summary(args.manifest), "reasons": _reasons, "report": lambda: _report(args),
              "overlay": lambda: _overlay(args), "annotate": lambda: _annotate(args),
              "export": lambda: _export(args), "plan": lambda: _plan(args)}  # fmt: skip
    if args.command in simple:
        return int(simple[args.command]())
    from mmcurate.pipelines.corpus import TOOLS

    if args.command in TOOLS:
        return int(_target(TOOLS[args.command].target)(args))
    if args.command == "select":
        manifest = _select(args, beam_args)
    elif args.command == "demo":
        manifest = _demo(args, beam_args)
    else:
        assert args.command in REGISTRY
        manifest = run_corpus(args.command, args, beam_args)
        if args.dry_run:
            return 0
    print_summary(manifest, getattr(args, "output", None))
    _after_run_report(args)
    return 0 if manifest["accounting_ok"] else 1


DEMO_OUTPUTS = {"caption": "output", "video": "video-output", "interleaved": "interleaved-output",
                "ocr": "ocr-output", "grounding": "grounding-output"}  # fmt: skip


def _after_run_report(args: argparse.Namespace) -> None:
    """The run's report, unless --no-report; a report that cannot be drawn is a warning, never a
    failed run (the run's outputs and manifest are already complete)."""
    import logging
    import os
    from pathlib import Path

    if getattr(args, "no_report", False) or os.environ.get("MMCURATE_REPORT", "1") == "0":
        return
    out = getattr(args, "output", None)
    try:
        if args.command == "demo":
            out = str(Path(args.workdir) / DEMO_OUTPUTS[args.corpus])
        if not out:
            return
        from mmcurate.report import build_report

        print(f"report:        {build_report(out)}")
    except Exception as exc:  # the report is a view of a finished run, not part of it
        logging.getLogger("mmcurate.report").warning("no report for %s: %s: %s", out, type(exc).__name__, exc)


def _plan(args: argparse.Namespace) -> int:
    import json

    from mmcurate.pipelines import corpus as corpora
    from mmcurate.plan import plan, print_plan

    corpus = corpora.get(args.corpus)
    config = corpus.load_config(args.config)
    corpus.validate(config)
    figures = plan(corpus, config, args.input, sample=args.sample, workers=args.workers, gpus=args.gpus)
    print_plan(figures)
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    from mmcurate.export import export_hf

    rows = export_hf(args.run, args.output, overwrite=args.overwrite)
    print(f"exported {', '.join(f'{split}: {n} rows' for split, n in rows.items())} -> {args.output}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from mmcurate.report import build_report, compare_report

    if len(args.run) > 2:
        print("mmcurate: error: report takes one run, or two to compare", file=sys.stderr)
        return 2
    try:
        if len(args.run) == 2:
            print(compare_report(args.run[0], args.run[1], args.output))
        else:
            print(build_report(args.run[0], args.output, args.per_reason))
    except (FileNotFoundError, ValueError) as exc:
        print(f"mmcurate: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options strictly; the rest must be Beam options, on the commands that run a pipeline."""
    from mmcurate.options import check_beam_args
    from mmcurate.pipelines.corpus import REGISTRY

    ap = parser()
    args, rest = ap.parse_known_args(argv)
    sp = args.commands[args.command]
    own = [s for action in sp._actions for s in action.option_strings]
    check_beam_args(rest, own, beam=args.command in REGISTRY or args.command in PIPELINE_COMMANDS)
    return args, rest


def _logging(level: str) -> None:
    import logging

    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)


def _setup() -> None:
    """Before anything imports Beam or logs: its import noise dropped, every log record redacted."""
    import warnings

    from mmcurate.options import quiet_beam_imports

    quiet_beam_imports()  # before anything imports Beam
    import imagehash  # noqa: F401 - imports scipy, which resets this warning's filter; ours must come after
    import numpy as np

    from mmcurate.schemas.redact import install_log_redaction

    install_log_redaction()
    # Beam's adaptive batching refits a line per batch; once batches are all full-size the fit is
    # degenerate and numpy warns ("Polyfit may be poorly conditioned") on every batch.
    warnings.filterwarnings("ignore", category=np.exceptions.RankWarning)


def _run(argv: list[str] | None) -> int:
    from mmcurate.export import ExportError
    from mmcurate.options import UsageError
    from mmcurate.pipelines.config import ConfigError
    from mmcurate.pipelines.corpus import SelectUnsupported
    from mmcurate.pipelines.overlays import OverlayError
    from mmcurate.pipelines.run import OutputError
    from mmcurate.schemas.redact import redact_text
    from mmcurate.stages.base import ModelUnavailable
    from mmcurate.stages.readers import InputError

    try:
        args, beam_args = _parse(argv)
    except UsageError as exc:
        command = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), "")
        print(f"{' '.join(['mmcurate', command]).strip()}: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    _logging(args.log_level)
    from mmcurate.annotate import AnnotateError

    user_errors = (
        ConfigError, InputError, OutputError, ModelUnavailable, SelectUnsupported, OverlayError, ExportError,
        AnnotateError,
    )  # fmt: skip
    try:
        return _dispatch(args, beam_args)
    except user_errors as exc:
        print(f"mmcurate: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """The command; a failure we did not foresee prints its traceback with every secret scrubbed
    (the command line's own first: a URI's password may be quoted later without its URI)."""
    import traceback

    from mmcurate.options import secret_flags
    from mmcurate.schemas.redact import redact, redact_text, register_secret

    args = list(argv if argv is not None else sys.argv[1:])
    redact(args)  # registers the secrets it finds, for redact_text
    for _, value in secret_flags(args):  # `--s3_secret_access_key=...`: refused later, never printed
        register_secret(value)
    try:
        _setup()
        return _run(argv)
    except Exception:
        print(
            "mmcurate: internal error (please report it with this traceback; secrets are redacted):\n"
            + redact_text(traceback.format_exc()),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
