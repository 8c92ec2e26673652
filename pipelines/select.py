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

from mmcurate.schemas import Fields
from mmcurate.schemas.redact import REDACTED
from mmcurate.stages.writers import join

from . import corpus as corpora
from . import layout
from .common import load_units
from .config import ConfigError
from .finish import MANIFEST_FORMAT
from .overlays import copy_overlays, overlay_names
from .run import execute


def _check_column(key: str, column: str, cls: type, fields: Fields, overlays: tuple[str, ...]) -> None:
    head, *rest = column.split(".")
    if head == "overlays":
        if rest[0] not in overlays:
            raise ConfigError(
                f"{key}: no overlay {rest[0]!r} in this run (overlays: {', '.join(overlays) or 'none'}); "
                "overlay columns exist only for `mmcurate select` on a run that has them"
            )
    elif head in ("scores", "labels"):
        declared = getattr(fields, head)
        if rest[0] not in declared:
            have = ", ".join(declared) or "none"
            raise ConfigError(f"{key}: {cls.kind} records carry no {head[:-1]} {rest[0]!r} (they have: {have})")
    elif head not in {f.name for f in dataclasses.fields(cls)}:
        raise ConfigError(f"{key}: {cls.kind} records have no column {head!r}")


def check_where(config: Any, corpus: corpora.Corpus, fields: dict[str, Fields], overlays: tuple[str, ...]) -> None:
    """Every `where` rule names a column the run has; fail before the run, naming the rule."""
    kinds = {cls.kind: cls for cls in corpus.kinds}
    default = getattr(config, "filter_kind", corpus.primary)
    for i, rule in enumerate(config.where):
        key = f"where[{i}] ({rule.column})"
        kind = rule.kind or default
        if kind not in kinds:
            raise ConfigError(f"{key}: kind {kind!r} is not a {corpus.name} record kind ({', '.join(kinds)})")
        _check_column(key, rule.column, kinds[kind], fields.get(kind, Fields()), overlays)


def run(
    run_root: str, out_root: str, config_path: str | None, beam_args: list[str], overwrite: bool = False,
    progress: bool = True,
) -> dict:  # fmt: skip
    """Select from `run_root` into `out_root`; thresholds from `config_path`, else the parent's."""
    if run_root.rstrip("/") == out_root.rstrip("/"):
        raise ConfigError("select: --output must differ from --run (a run's ledgers are never rewritten)")
    with fsspec.open(join(run_root, layout.MANIFEST), "rb") as f:
        raw = f.read()
    parent = json.loads(raw)
    if parent.get("format") != MANIFEST_FORMAT:
        raise ConfigError(
            f"select: {run_root} has a manifest of format {parent.get('format')!r}, not {MANIFEST_FORMAT}; "
            "rerun its corpus with this version of mmcurate"
        )
    corpus = corpora.get(parent["corpus"])
    parent_config = corpus.config_class(**parent["config"])
    config = corpus.load_config(config_path) if config_path else parent_config
    corpus.check_select(config, parent_config, parent)
    fields = {kind: Fields.from_dict(sec["fields"]) for kind, sec in parent["kinds"].items()}
    check_where(config, corpus, fields, tuple(overlay_names(run_root)))
    units = load_units(run_root)
    if any(REDACTED in u.uri or any(REDACTED in f for f in u.files) for u in units):
        raise ConfigError(f"select: {run_root}/units.json names inputs whose credentials were redacted; "
                          "give storage credentials through the environment instead of the URI")  # fmt: skip
    lineage = {
        "parent_run": run_root,
        "parent_manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "parent_counts": {kind: sec["counts"] for kind, sec in parent["kinds"].items()},
        "step": "select",
        **corpus.lineage(config),
    }
    manifest = execute(
        corpus, config, parent["inputs"], units, out_root, beam_args, overwrite, progress,
        lineage=lineage, fields=fields, build=corpus.select,
    )  # fmt: skip
    copy_overlays(run_root, out_root)
    return manifest


__all__ = ["check_where", "run"]
