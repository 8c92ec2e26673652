"""The `mmcurate` command: one sub-command per corpus, plus `select`, `demo` and `summary`.

Unknown arguments are Beam pipeline options and pass through untouched (e.g. `--runner`,
`--direct_num_workers=2 --direct_running_mode=multi_processing`, `--job_endpoint`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import fsspec


def print_summary(manifest: dict, out: str | None = None) -> None:
    """The kept / dropped / quarantined table, per reason, that ends every local run."""
    from rich.console import Console
    from rich.table import Table

    counts = manifest["counts"]
    table = Table(title=f"{manifest.get('kind', '')} run: {counts['input']} input records")
    table.add_column("fate")
    table.add_column("reason")
    table.add_column("records", justify="right")
    table.add_row("kept", "", str(counts["kept"]), style="green")
    for fate, style in (("dropped", "yellow"), ("quarantined", "red")):
        for reason, n in sorted(manifest["reasons"][fate].items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(fate, reason, str(n), style=style)
    table.add_section()
    ok = "ok" if manifest["accounting_ok"] else "MISMATCH"
    table.add_row(
        "total",
        f"input = kept + dropped + quarantined: {ok}",
        f"{counts['kept'] + counts['dropped'] + counts['quarantined']}",
    )
    console = Console()
    console.print(table)
    metrics = manifest.get("metrics", {})
    if metrics.get("counters") or metrics.get("distributions"):
        mt = Table(title="Beam metrics (RunInference's included)")
        mt.add_column("metric")
        mt.add_column("value", justify="right")
        for name, value in metrics.get("counters", {}).items():
            mt.add_row(name, f"{value:g}")
        for name, d in metrics.get("distributions", {}).items():
            mt.add_row(name, f"n={d['count']} mean={d['mean']:.4g} max={d['max']:g}")
        console.print(mt)
    if "clips" in manifest:
        clips = manifest["clips"]
        ct = Table(title=f"clips: {clips['counts']['input']} cut from the videos")
        ct.add_column("fate")
        ct.add_column("reason")
        ct.add_column("clips", justify="right")
        ct.add_row("kept", "", str(clips["counts"]["kept"]), style="green")
        for fate, style in (("dropped", "yellow"), ("quarantined", "red")):
            for reason, n in sorted(clips["reasons"][fate].items(), key=lambda kv: (-kv[1], kv[0])):
                ct.add_row(fate, reason, str(n), style=style)
        console.print(ct)
    where = f" in {out}" if out else ""
    if "totals" in manifest:
        t = manifest["totals"]
        console.print(f"{t['samples']} samples in {t['shards']} shards ({t['bytes'] / 1e6:.1f} MB){where}")
    if "pass_rate_histogram" in manifest:
        h = manifest["pass_rate_histogram"]
        console.print(
            "pass-rate histogram: " + "  ".join(f"{b} {n}" for b, n in zip(h["buckets"], h["counts"], strict=True))
        )
    if "curriculum" in manifest:
        ct = Table(title="RL curriculum: kept questions per tier x domain")
        domains = sorted({d for row in manifest["curriculum"]["counts"].values() for d in row})
        ct.add_column("tier [low, high)")
        for d in domains:
            ct.add_column(d, justify="right")
        for tier, row in manifest["curriculum"]["counts"].items():
            span = manifest["curriculum"]["tiers"].get(tier, "")
            ct.add_row(f"{tier} {span}", *(str(row.get(d, 0)) for d in domains))
        console.print(ct)
    for f in manifest.get("data", []):
        console.print(f"trainer file: {f['path']}{where}")


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--output", required=True, help="output folder URI (local, s3://, gs://, memory://)")
    sp.add_argument("--config", help="YAML config; default: the embedded defaults of this corpus")
    sp.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar on local runs")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mmcurate", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("caption", help="image-caption pairs: read, score, dedup, select, shard")
    cap.add_argument("--input", nargs="+", required=True, help="URIs: tar shards, parquet, jsonl, image folders")
    _common(cap)
    vid = sub.add_parser("video", help="videos: probe, split at scene cuts, clip, score, shard, queue for annotation")
    vid.add_argument("--input", nargs="+", required=True, help="URIs: video files or folders, video tar shards, jsonl")
    _common(vid)
    for mode, what in (("sft", "SFT data"), ("rl", "RL data in tiers")):
        sp = sub.add_parser(mode, help=f"grade questions by a model's pass rate (k rollouts), emit {what}")
        sp.add_argument("--input", nargs="+", required=True, help="question jsonl / parquet URIs")
        _common(sp)
    sel = sub.add_parser("select", help="re-apply thresholds to a run's score ledger; no score is recomputed")
    sel.add_argument("--run", required=True, help="output folder of an earlier run (holds ledger/ and units.json)")
    _common(sel)
    demo = sub.add_parser("demo", help="build a demo corpus and run its pipeline (caption by default)")
    demo.add_argument("--corpus", choices=("caption", "video"), default="caption", help="which demo")
    demo.add_argument("--workdir", default="demo", help="where the demo corpus and its output go")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    summ = sub.add_parser("summary", help="print the kept/dropped/quarantined table of a manifest")
    summ.add_argument("manifest", help="manifest.json URI, or the run folder holding it")
    return ap


def _caption(args: argparse.Namespace, beam_args: list[str], config: Any = None) -> dict:
    from mmcurate.pipelines import caption
    from mmcurate.pipelines.config import load_config
    from mmcurate.pipelines.models import validate_models
    from mmcurate.pipelines.run import execute
    from mmcurate.stages.readers import list_units

    config = config if config is not None else load_config(args.config)
    validate_models(config)
    units = list_units(args.input, config.read)
    meta = caption.meta_for(args.input, config, units)
    return execute(caption.build, units, config, args.output, meta, beam_args, args.overwrite, not args.no_progress)


def _video(args: argparse.Namespace, beam_args: list[str]) -> dict:
    from mmcurate.pipelines import video
    from mmcurate.pipelines.config import load_config
    from mmcurate.pipelines.run import execute
    from mmcurate.stages.video_io import list_video_units

    config = load_config(args.config, video.VideoConfig, "video.yaml")
    video.validate(config)
    units = list_video_units(args.input, config.read)
    meta = video.meta_for(args.input, config, units)
    return execute(video.build, units, config, args.output, meta, beam_args, args.overwrite, not args.no_progress)


def _passrate(args: argparse.Namespace, beam_args: list[str]) -> dict:
    import functools

    from mmcurate.pipelines import passrate
    from mmcurate.pipelines.config import load_config
    from mmcurate.pipelines.run import execute
    from mmcurate.stages.readers import ReadParams, list_units

    config = load_config(args.config, passrate.PassRateConfig, "passrate.yaml")
    passrate.validate(config)
    read = ReadParams(jsonl_unit_lines=config.read.jsonl_unit_lines)
    units = list_units(args.input, read, media_columns=False)
    meta = passrate.run_meta(args.command, args.input, config, units)
    build = functools.partial(passrate.build, mode=args.command)
    return execute(build, units, config, args.output, meta, beam_args, args.overwrite, not args.no_progress)


def _select(args: argparse.Namespace, beam_args: list[str]) -> dict:
    from mmcurate.pipelines import select

    return select.run(args.run, args.output, args.config, beam_args, args.overwrite, not args.no_progress)


def _demo(args: argparse.Namespace, beam_args: list[str]) -> dict:
    from pathlib import Path

    from mmcurate.pipelines import demo

    work = Path(args.workdir)
    if args.corpus == "video":
        from mmcurate.pipelines import demo_video

        videos = demo_video.build_corpus(work / "videos")
        ns = argparse.Namespace(
            input=[str(videos)], output=str(work / "video-output"), config=None, overwrite=True,
            no_progress=args.no_progress,
        )  # fmt: skip
        manifest = _video(ns, beam_args)
        print(f"demo videos:   {videos}")
        print(f"clip shards:   {work / 'video-output' / 'shards'}")
        print(f"annotation:    {work / 'video-output' / 'annotation'}  (clips queued for Label Studio)")
        print(f"manifest:      {work / 'video-output' / 'manifest.json'}")
        return manifest
    corpus = demo.build_corpus(work / "corpus")
    config, notes = demo.demo_config()
    for note in notes:
        print(f"mmcurate demo: {note}")
    ns = argparse.Namespace(
        input=[str(corpus)], output=str(work / "output"), config=None, overwrite=True, no_progress=args.no_progress
    )
    manifest = _caption(ns, beam_args, config)
    print(f"demo corpus:   {corpus}")
    print(f"shards:        {work / 'output' / 'shards'}")
    print(f"manifest:      {work / 'output' / 'manifest.json'}")
    print(f"dropped:       {work / 'output' / 'dropped'}   quarantined: {work / 'output' / 'quarantined'}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    import warnings

    import imagehash  # noqa: F401 - imports scipy, which resets this warning's filter; ours must come after
    import numpy as np

    from mmcurate.pipelines.config import ConfigError
    from mmcurate.pipelines.run import OutputError
    from mmcurate.stages.base import ModelUnavailable
    from mmcurate.stages.readers import InputError

    # Beam's adaptive batching refits a line per batch; once batches are all full-size the fit is
    # degenerate and numpy warns ("Polyfit may be poorly conditioned") on every batch.
    warnings.filterwarnings("ignore", category=np.exceptions.RankWarning)
    args, beam_args = parser().parse_known_args(argv)
    try:
        if args.command == "summary":
            uri = args.manifest if args.manifest.endswith(".json") else args.manifest.rstrip("/") + "/manifest.json"
            with fsspec.open(uri, "rt") as f:
                manifest: dict[str, Any] = json.load(f)
            print_summary(manifest)
            return 0
        commands = {"caption": _caption, "select": _select, "demo": _demo, "video": _video}
        run = commands.get(args.command, _passrate)
        manifest = run(args, beam_args)
    except (ConfigError, InputError, OutputError, ModelUnavailable) as exc:
        print(f"mmcurate: error: {exc}", file=sys.stderr)
        return 2
    print_summary(manifest, getattr(args, "output", None))
    return 0 if manifest["accounting_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
