"""The pass-rate corpus's trainer files, run extras and `select`.

Per unit, the kept questions become verl RL parquet files (`rl/{train,val}/part-UUUUU.parquet`,
optionally one folder per tier) or a LLaMA-Factory ShareGPT table (`sft/part-UUUUU.parquet`, its images
copied into `images/`); the manifest's extras hold the pass-rate histogram and, for
RL, the curriculum table (kept questions per tier x domain). `select` re-decides from the graded
ledger without a single new rollout: the grades are the ledger's, and an SFT response is the first
verified-correct rollout in the cache of the same model and sampling.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from mmcurate.schemas import Question, Record, Status
from mmcurate.stages.io import ReadRefused, ReadReport, Unit, read_bytes
from mmcurate.stages.io.paths import filesystem
from mmcurate.stages.questions import histogram
from mmcurate.stages.trainer_formats import (
    SHAREGPT_SCHEMA,
    data_source_of,
    dataset_info,
    media_name,
    sharegpt_row,
    split_key,
    split_of,
    verify_json,
    verl_row,
    verl_schema,
)
from mmcurate.stages.writers import FileInfo, ShardInfo, atomic_write, join, json_bytes, write_bytes, write_table

from . import layout
from .config import ConfigError
from .corpus import Corpus
from .finish import Finish, Run
from .ledger import read_ledger, reopen
from .overlays import AttachOverlays
from .resume import OutputError
from .rollouts import decide, read_cache, tasks_for
from .spool import UnitEnd
from .thresholds import Thresholds

BUCKETS = [f"[{i / 10:.1f}, {(i + 1) / 10:.1f})" for i in range(10)]


class TrainerOutputs(Corpus):
    """Finish-path hooks of the pass-rate corpora (`mode` is sft or rl)."""

    mode: str

    def fetch_media(self, records: dict[str, list[Record]], run: Run, config: Any) -> dict[str, Any]:
        """What the trainer files hold by value, read once per URI before the unit's tables: SFT
        copies each image and video beside its rows as it reads it (one file in memory at a time;
        uri -> its FileInfo), RL keeps the images it embeds (uri -> bytes). A kept question whose
        media cannot be read now is quarantined, so the ledger and the counts say so."""
        media: dict[str, Any] = {}
        for q in records["question"]:
            if q.fate.status != Status.KEPT:
                continue
            for uri, folder in media_uris(q, self.mode, config.output.embed_images):
                if uri in media:
                    continue
                try:
                    data = read_bytes(uri, config.output.media_timeout_s)
                except Exception as exc:  # any filesystem's error (HTTP, S3 credentials): this question only
                    q.settle(_read_reason(exc), f"{uri}: {type(exc).__name__}: {exc}", stage="output")
                    break
                if self.mode == "rl":
                    media[uri] = data
                else:
                    media[uri] = write_bytes(run.out_root, media_name(data, uri, folder), data)
        return media

    def unit_outputs(
        self, unit: int, records: dict[str, list[Record]], shards: list[ShardInfo], run: Run, config: Any,
        media: dict[str, bytes],
    ) -> tuple[list[FileInfo], dict[str, Any]]:  # fmt: skip
        questions: list[Question] = records["question"]  # type: ignore[assignment]
        kept = [q for q in questions if q.fate.status == Status.KEPT]
        files = (rl_files if self.mode == "rl" else sft_files)(unit, kept, run, config, media) if kept else []
        curriculum: dict[str, dict[str, int]] = collections.defaultdict(dict)
        for q in kept:
            tier = q.labels.get("tier", "")
            curriculum[tier][q.domain] = curriculum[tier].get(q.domain, 0) + 1
        rates = [q.scores["pass_rate"] for q in questions if "pass_rate" in q.scores]
        return files, {"histogram": histogram(rates), "curriculum": dict(curriculum)}

    def fold_extras(self, extras: list[dict[str, Any]], config: Any) -> dict[str, Any]:
        counts = [sum(col) for col in zip(*(e["histogram"] for e in extras), strict=True)] if extras else [0] * 10
        out: dict[str, Any] = {"pass_rate_histogram": {"buckets": BUCKETS, "counts": counts}}
        if self.mode == "rl":
            tiers = config.select.rl.tiers
            table: dict[str, dict[str, int]] = {t: {} for t in tiers}
            for e in extras:
                for tier, row in e["curriculum"].items():
                    into = table.setdefault(tier, {})
                    for domain, n in row.items():
                        into[domain] = into.get(domain, 0) + n
            out["curriculum"] = {
                "tiers": {t: list(v) for t, v in tiers.items()},
                "counts": {t: dict(sorted(r.items())) for t, r in table.items()},
            }
        return out

    def run_outputs(self, run: Run, config: Any) -> list[FileInfo]:
        """LLaMA-Factory's `dataset_info.json`, our entry merged into one the folder already has (it
        registers many datasets; a user's entries stay). Not listed as ours: --overwrite keeps it."""
        if self.mode == "sft":
            merge_dataset_info(run.out_root, config.output.name, bool(sft_parts(run.out_root)))
        return []

    def describe(self, manifest: dict[str, Any]) -> list[Any]:
        from rich.table import Table

        extras = manifest.get("extras", {})
        lines: list[Any] = []
        h = extras.get("pass_rate_histogram")
        if h:
            pairs = zip(h["buckets"], h["counts"], strict=True)
            lines.append("pass-rate histogram: " + "  ".join(f"{b} {n}" for b, n in pairs))
        cur = extras.get("curriculum")
        if cur:
            table = Table(title="RL curriculum: kept questions per tier x domain")
            domains = sorted({d for row in cur["counts"].values() for d in row})
            table.add_column("tier [low, high)")
            for d in domains:
                table.add_column(d, justify="right")
            for tier, row in cur["counts"].items():
                table.add_row(f"{tier} {cur['tiers'].get(tier, '')}", *(str(row.get(d, 0)) for d in domains))
            lines.append(table)
        paths = sorted({f["path"] for f in manifest.get("files", {}).get("outputs", [])})
        media = collections.Counter(p.split("/", 1)[0] for p in paths if p.startswith(("images/", "videos/")))
        lines += [f"trainer file: {p}" for p in paths if not p.startswith(("images/", "videos/"))]
        lines += [f"{folder}/: {n} files the trainer files refer to" for folder, n in sorted(media.items())]
        return lines

    def check_select(self, config: Any, parent_config: Any, parent: dict[str, Any]) -> None:
        for section in ("read", "rollout", "verify", "grade", "leak"):
            if getattr(config, section) != getattr(parent_config, section):
                raise ConfigError(
                    f"select: the `{section}` section must match the parent run's: select re-decides from the "
                    f"grades in the ledger (run `mmcurate {self.mode}` to grade anew)"
                )


def sft_parts(out_root: str) -> list[str]:
    fs, root = filesystem(out_root, OSError)
    return fs.glob(join(root, "sft", "part-*.parquet"))


def merge_dataset_info(out_root: str, name: str, has_rows: bool) -> None:
    """Write our entry into `dataset_info.json` (or take it out when the run kept nothing), leaving
    every other entry as it was; a file that is not a JSON object is an error, never overwritten."""
    uri = join(out_root, "dataset_info.json")
    fs, path = filesystem(uri, OSError)
    info: dict[str, Any] = {}
    if fs.exists(path):
        with fs.open(path, "rb") as f:
            try:
                info = json.loads(f.read())
            except ValueError:
                info = None  # type: ignore[assignment]
        if not isinstance(info, dict):
            raise OutputError(f"{uri} is not a JSON object (LLaMA-Factory's dataset_info.json): not overwritten")
    before = dict(info)
    info.pop(name, None)
    if has_rows:
        info.update(dataset_info(name, "sft"))
    if info and info != before:  # unchanged (a rerun): the user's file is not rewritten
        atomic_write(uri, json_bytes(info))
    elif not info and fs.exists(path):
        fs.rm(path)


def media_uris(q: Question, mode: str, embed_images: bool) -> list[tuple[str, str]]:
    """(uri, output folder) of the media a trainer file holds by value: SFT copies images and the
    video, RL embeds images."""
    if mode == "sft":
        return [*((u, "images") for u in q.images), *([(q.video, "videos")] if q.video else [])]
    return [(u, "images") for u in q.images] if embed_images else []


def _read_reason(exc: BaseException) -> str:
    if isinstance(exc, ReadRefused):
        return exc.reason
    return "missing_image" if isinstance(exc, FileNotFoundError) else "read_error"


def rl_files(unit: int, kept: list[Question], run: Run, config: Any, media: dict[str, bytes]) -> list[FileInfo]:
    """verl parquet per split (and per tier when `output.per_tier`): `rl/{split}[/{tier}]/part-U.parquet`."""
    out = config.output
    verify = verify_json(config.verify.model_dump(mode="json"))
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for q in kept:
        split = split_of(split_key(q), out.val_fraction)
        source = data_source_of(q.domain, out.data_source, out.data_sources)
        images = [media[u] for u in q.images] if out.embed_images else None
        row = verl_row(q, source, config.rollout.prompt.answer_instruction, images, split, verify)
        groups[f"rl/{split}/{q.labels['tier']}" if out.per_tier else f"rl/{split}"].append(row)
    schema = verl_schema(out.embed_images)
    return [
        write_table(run.out_root, f"{folder}/{layout.part(unit)}.parquet", pa.Table.from_pylist(rows, schema))
        for folder, rows in sorted(groups.items())
    ]


def sft_files(unit: int, kept: list[Question], run: Run, config: Any, media: dict[str, Any]) -> list[FileInfo]:
    """ShareGPT rows (`sft/part-U.parquet`, one schema for every part: LLaMA-Factory loads the folder
    as one table) whose images and videos `fetch_media` copied into `images/` and `videos/`
    (content-addressed), named relative to the output folder, LLaMA-Factory's `dataset_dir`."""
    instruction = config.rollout.prompt.answer_instruction
    rows, used = [], {}
    for q in kept:
        images = [media[u].path for u in q.images]
        videos = [media[q.video].path] if q.video else []
        used.update({media[u].path: media[u] for u in (*q.images, *([q.video] if q.video else []))})
        rows.append(sharegpt_row(q, q.labels.get("response", q.answer), instruction, images, videos))
    table = pa.Table.from_pylist(rows, SHAREGPT_SCHEMA)
    return [*used.values(), write_table(run.out_root, f"sft/{layout.part(unit)}.parquet", table)]


class ReadQuestionLedgerFn(beam.DoFn):
    """One unit of the parent's ledger; graded questions re-opened (the rest keep their fates)."""

    def __init__(self, parent: str) -> None:
        self.parent = parent

    def process(self, unit: Unit) -> Iterator[Any]:
        questions = read_ledger(self.parent, Question, unit.index)
        for q in questions:
            yield reopen(q) if "k" in q.scores else q
        yield UnitEnd.of(unit.index, unit.uri, ReadReport(produced=len(questions)).to_dict())


class DecideFn(beam.DoFn):
    """The sft / rl verdict from the ledger's grade; an SFT response from the cached rollouts of
    exactly the prompts the parent sent (same model, prompt and sampling: the task keys)."""

    def __init__(self, config: Any, mode: str) -> None:
        self.config, self.mode = config, mode

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[Question]:
        _, group = element
        for q in group["q"]:
            try:  # the task keys hash the prompt, media bytes included: the media are read again
                keys = {t.key for t in tasks_for(q, self.config.rollout) if not t.blind} if group["r"] else set()
            except OSError as exc:
                yield q.settle(_read_reason(exc), str(exc), stage="select")
                continue
            q.labels.pop("response", None)
            yield decide(q, self.config, self.mode, [r for r in group["r"] if r.key in keys])


def select_questions(corpus: TrainerOutputs, p: beam.Pipeline, units: list[Unit], cfg: Any, run: Run) -> Any:
    parent = run.meta["lineage"]["parent_run"]
    records = (
        p
        | "ListUnits" >> beam.Create(run.to_read(units), reshuffle=True)
        | "ReadLedger" >> beam.ParDo(ReadQuestionLedgerFn(parent))
        | "AttachOverlays" >> AttachOverlays(parent, cfg, "question")
    )
    rollouts: Any = p | "NoRollouts" >> beam.Create([])
    if corpus.mode == "sft" and cfg.select.sft.response == "rollout":
        rollouts = p | "CacheFiles" >> beam.Create([cfg.cache_uri(parent)]) | "ReadCache" >> beam.FlatMap(read_cache)
    decided = (
        {
            "q": records | "Graded" >> beam.Filter(lambda q: q.pending) | "KeyQ" >> beam.Map(lambda q: (q.id, q)),
            "r": rollouts | "KeyRollouts" >> beam.Map(lambda r: (r.question_id, r)),
        }
        | "JoinRollouts" >> beam.CoGroupByKey()
        | "Decide" >> beam.ParDo(DecideFn(cfg, corpus.mode))
    )
    settled = records | "Settled" >> beam.Filter(lambda q: not q.pending)
    out = (
        (decided, settled) | "AllQuestions" >> beam.Flatten() | "ApplyThresholds" >> Thresholds(cfg, units, "question")
    )
    return out | "Finish" >> Finish(corpus.name, run, cfg)


__all__ = ["TrainerOutputs", "select_questions"]
