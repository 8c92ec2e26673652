"""`mmcurate select`: re-decide an earlier run of any corpus from its ledgers and overlays.

No score is recomputed: the parent's ledgers hold every score, label and hash; its overlays add
the facts that arrived later (human labels, contamination marks), joined by record id. The corpus
re-opens the verdicts that follow from scores (`pipelines/ledger.py`), decides again with the new
config's thresholds and `where` rules, fetches the media of what is kept (the caption corpus
re-reads and re-encodes its images; clips come from the parent's shards), and the shared finish
path writes a complete run whose lineage names its parent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import fsspec

from mmcurate.schemas import REASONS, Fields
from mmcurate.schemas.redact import REDACTED
from mmcurate.stages.io.paths import filesystem
from mmcurate.stages.writers import join

from . import corpus as corpora
from . import layout
from .common import load_units
from .config import ConfigError, as_kinds
from .finish import MANIFEST_FORMAT
from .overlays import copy_overlays, overlay_columns, overlay_listing, overlay_names
from .run import execute


def _check_overlay(key: str, name: str, column: str, kind: str, run_root: str | None) -> None:
    have = overlay_names(run_root) if run_root else []
    if name not in have:
        raise ConfigError(
            f"{key}: no overlay {name!r} in this run (overlays: {', '.join(have) or 'none'}); "
            "overlay columns exist only for `mmcurate select` on a run that has them"
        )
    columns = overlay_columns(run_root or "", name, kind)
    if column not in columns:
        raise ConfigError(
            f"{key}: overlay {name!r} has no {kind} column {column!r} (it has: {', '.join(sorted(columns))})"
        )


def _check_column(key: str, column: str, cls: type, fields: Fields, run_root: str | None) -> None:
    head, *rest = column.split(".")
    if head == "overlays":
        _check_overlay(key, rest[0], rest[1], cls.kind, run_root)
    elif head in ("scores", "labels"):
        declared = getattr(fields, head)
        if rest[0] not in declared:
            have = ", ".join(declared) or "none"
            raise ConfigError(f"{key}: {cls.kind} records carry no {head[:-1]} {rest[0]!r} (they have: {have})")
    elif head not in {f.name for f in dataclasses.fields(cls)}:
        raise ConfigError(f"{key}: {cls.kind} records have no column {head!r}")


def _check_reason(key: str, code: str) -> None:
    """A rule's reason is its own: reusing another verdict's code would give one code two meanings."""
    known = REASONS.get(code)
    if known is not None and code != "column_threshold" and not known.doc.startswith("where rule"):
        raise ConfigError(
            f"{key}.reason: {code!r} already means {known.status.value}: {known.doc}; choose another code"
        )


def check_where(config: Any, corpus: corpora.Corpus, fields: dict[str, Fields], run_root: str | None) -> None:
    """Every `where` rule names a column the run has and a reason of its own; fail before the run."""
    kind = as_kinds(getattr(config, "filter_kind", corpus.primary))[0]  # `where` rules decide the first kind
    cls = next(c for c in corpus.kinds if c.kind == kind)
    for i, rule in enumerate(config.where):
        key = f"where[{i}] ({rule.column})"
        _check_column(key, rule.column, cls, fields.get(kind, Fields()), run_root)
        _check_reason(f"where[{i}]", rule.reason)
        rule.register()


def check_scored(config: Any, fields: dict[str, Fields]) -> None:
    """Every filter decides on scores the parent run computed (select recomputes none)."""
    kind = getattr(config, "filter_kind", None)
    if kind is None:
        return
    kinds = as_kinds(kind)
    for f in config.build_filters():
        have = {s for k in kinds if k in f.kinds for s in fields.get(k, Fields()).scores}
        missing = sorted(set(f.scores) - have)
        if missing:
            raise ConfigError(
                f"select: filters.{f.name} decides on {missing}, which were not scored by the parent run; "
                "select only re-thresholds existing scores (rerun the corpus with that filter)"
            )


def check_parent_files(run_root: str, parent: dict[str, Any]) -> None:
    """Every file the parent's manifest lists is there: a select on a damaged run stops before it starts."""
    listed = [f["path"] for key in ("ledger", "outputs") for f in parent["files"].get(key, [])]
    listed += [p for s in parent["files"].get("shards", []) for p in (s["path"], s["index"]["path"])]
    fs, root = fsspec.core.url_to_fs(run_root)
    missing = [p for p in listed if not fs.exists(join(root, p))]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(f"select: {run_root} is incomplete: its manifest lists {shown}, which are not there")


def run(
    run_root: str, out_root: str, config_path: str | None, beam_args: list[str], overwrite: bool = False,
    progress: bool = True, resume: bool = False,
) -> dict:  # fmt: skip
    """Select from `run_root` into `out_root`; thresholds from `config_path`, else the parent's."""
    if run_root.rstrip("/") == out_root.rstrip("/"):
        raise ConfigError("select: --output must differ from --run (a run's ledgers are never rewritten)")
    filesystem(run_root, lambda message: ConfigError(f"select --run {message}"))
    try:
        with fsspec.open(join(run_root, layout.MANIFEST), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"select: {run_root} holds no manifest.json (not a finished run)") from None
    parent = json.loads(raw)
    if parent.get("format") != MANIFEST_FORMAT:
        raise ConfigError(
            f"select: {run_root} has a manifest of format {parent.get('format')!r}, not {MANIFEST_FORMAT}; "
            "rerun its corpus with this version of mmcurate"
        )
    corpus = corpora.get(parent["corpus"])
    parent_config = corpus.config_class(**parent["config"])
    # The select config changes the parent's: what it does not name stays as the parent ran it.
    config = corpus.load_config(config_path, base=parent["config"]) if config_path else parent_config
    corpus.check_select(config, parent_config, parent)
    fields = {kind: Fields.from_dict(sec["fields"]) for kind, sec in parent["kinds"].items()}
    check_scored(config, fields)
    check_where(config, corpus, fields, run_root)
    check_parent_files(run_root, parent)
    units = load_units(run_root)
    if any(REDACTED in u.uri or any(REDACTED in f for f in u.files) for u in units):
        raise ConfigError(f"select: {run_root}/units.json names inputs whose credentials were redacted; "
                          "give storage credentials through the environment instead of the URI")  # fmt: skip
    lineage = {
        "parent_run": run_root,
        "parent_manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "parent_counts": {kind: sec["counts"] for kind, sec in parent["kinds"].items()},
        "parent_overlays": overlay_listing(run_root),
        "step": "select",
        **corpus.lineage(config),
    }
    if parent.get("limit"):  # a select reads the ledger, not the inputs: the parent's --limit carries on
        lineage["parent_limit"] = parent["limit"]
    manifest = execute(
        corpus, config, parent["inputs"], units, out_root, beam_args, overwrite, progress,
        lineage=lineage, fields=fields, build=corpus.select, resume=resume,
    )  # fmt: skip
    copy_overlays(run_root, out_root)
    return manifest


__all__ = ["check_where", "run"]
