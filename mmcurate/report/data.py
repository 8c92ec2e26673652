"""What a report shows, read from a finished run: its manifest, ledgers, index, overlays and metrics.

Everything is generic over the corpus: a kind's ledger rows carry `scores` and `labels` maps and a
`fate`, the manifest names the filters the run decided with, and each filter's `decide` is pure, so
the share a threshold change would keep is computed from the ledger alone (what `mmcurate select`
would do with that threshold, before anyone runs it).
"""

from __future__ import annotations

import json
import math
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow.parquet as pq

from mmcurate.pipelines import layout
from mmcurate.stages.base import FILTERS, Filter, load_filters
from mmcurate.stages.writers import join

MAX_ROWS = 200_000
"""Ledger rows read per kind: the report of a run of billions is drawn from its first rows, and says so."""


@dataclass
class RunData:
    root: str
    manifest: dict[str, Any]
    ledgers: dict[str, list[dict[str, Any]]]
    """kind -> every ledger row of that kind, in unit order."""
    index: list[dict[str, Any]] = field(default_factory=list)
    """The primary kind's kept rows with their `key` and `shard` (the shard index)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    overlays: dict[str, int] = field(default_factory=dict)
    """overlay name -> rows (latest per id) for the primary kind."""
    annotation: dict[str, Any] | None = None
    """The latest `mmcurate annotate pull` summary kept in the run, if any."""

    @property
    def corpus(self) -> str:
        return str(self.manifest.get("corpus", ""))

    @property
    def kinds(self) -> list[str]:
        return list(self.manifest.get("kinds", {}))


def _files(root: str, pattern: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(join(root, pattern))
    return sorted(fs.unstrip_protocol(p) for p in fs.glob(path))


def _json(uri: str) -> dict[str, Any] | None:
    try:
        with fsspec.open(uri, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def _rows(paths: list[str], limit: int | None = None) -> list[dict[str, Any]]:
    """Parquet rows (at most `limit`, file by file); `scores` and `labels` (structs: every name in
    every row) keep only the names the record has (a struct's missing field reads as None)."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        if limit is not None and len(rows) >= limit:
            break
        with fsspec.open(path, "rb") as f:
            table = pq.read_table(f)
        rows += table.slice(0, None if limit is None else limit - len(rows)).to_pylist()
    for row in rows:
        for col in ("scores", "labels"):
            if isinstance(row.get(col), dict):
                row[col] = {k: v for k, v in row[col].items() if v is not None}
    return rows


def load_run(root: str) -> RunData:
    """A finished run (its manifest must be there: a report of a run in progress would lie)."""
    root = root.rstrip("/")
    manifest = _json(join(root, layout.MANIFEST))
    if manifest is None:
        raise FileNotFoundError(f"{root}: no manifest.json (not a finished run?)")
    kinds = manifest.get("kinds", {})
    ledgers = {kind: _rows(_files(root, f"{layout.LEDGER}/{kind}/part-*.parquet"), MAX_ROWS) for kind in kinds}
    data = RunData(root, manifest, ledgers)
    data.index = _rows(_files(root, f"{layout.INDEX}/part-*.parquet"), MAX_ROWS)
    data.metrics = _json(join(root, layout.METRICS)) or {}
    from mmcurate.pipelines.overlays import overlay_names, read_overlay

    for name in overlay_names(root):
        for kind in manifest.get("kinds", {}):
            rows = read_overlay(root, name, kind)
            if rows:
                data.overlays[f"{name}/{kind}"] = len(rows)
    pulls = _files(root, f"{layout.OVERLAYS}/human/pulls/*.json")
    data.annotation = _json(pulls[-1]) if pulls else None
    return data


def count_rows(data: RunData) -> list[dict[str, Any]]:
    """Per kind: input, kept, dropped, quarantined (the manifest's books)."""
    return [{"kind": kind, **{k: sec["counts"].get(k, 0) for k in ("input", "kept", "dropped", "quarantined")}}
            for kind, sec in data.manifest.get("kinds", {}).items()]  # fmt: skip


def reason_rows(data: RunData) -> list[dict[str, Any]]:
    """Per kind, fate and reason: how many records, most first."""
    out = []
    for kind, sec in data.manifest.get("kinds", {}).items():
        for status in ("dropped", "quarantined"):
            for reason, n in sorted(sec.get("reasons", {}).get(status, {}).items(), key=lambda kv: (-kv[1], kv[0])):
                out.append({"kind": kind, "status": status, "reason": reason, "n": n})
    return out


def score_values(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """score name -> its finite values over the rows (NaN: not measured, left out)."""
    out: dict[str, list[float]] = {}
    for row in rows:
        for name, value in (row.get("scores") or {}).items():
            if isinstance(value, int | float) and math.isfinite(value):
                out.setdefault(name, []).append(float(value))
    return dict(sorted(out.items()))


def run_filters(data: RunData, kind: str) -> list[Filter]:
    """The filters the run decided `kind` with, built from its manifest's config (unknown names skipped)."""
    load_filters()
    out = []
    for name, params in (data.manifest.get("config", {}).get("filters") or {}).items():
        cls = FILTERS.get(name)
        if cls is None or kind not in cls.kinds or not isinstance(params, dict):
            continue
        try:
            out.append(cls(cls.Params(**params)))
        except (ValueError, TypeError):
            continue
    return out


def thresholds(f: Filter) -> dict[str, float]:
    """A filter's thresholds: its numeric `min*` / `max*` parameters that are set (0 and None mean
    off), never its other numbers (a patch size, a window). A filter that keeps a fraction of the run
    (`top_fraction`) decides against a cutoff the run computed: it has none here."""
    dumped = f.params.model_dump()
    if dumped.get("top_fraction") is not None or dumped.get("per"):
        return {}
    numeric = {k: v for k, v in dumped.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {k: float(v) for k, v in numeric.items() if k.startswith(("min", "max")) and v}


def _scaled(f: Filter, stricter: bool) -> Filter | None:
    """The filter with every threshold moved 10 % (a min up and a max down when `stricter`, the
    other way when not; integers to the next whole number), or None when that is no valid config."""
    params = f.params.model_dump()
    changed = {}
    for k, v in thresholds(f).items():
        up = stricter == k.startswith("min")
        x = v * (1.1 if up else 0.9)
        changed[k] = (math.ceil(x) if up else math.floor(x)) if isinstance(params[k], int) else x
    try:
        return type(f)(type(f).Params(**{**params, **changed}))
    except (ValueError, TypeError):
        return None


def present_scores(rows: list[dict[str, Any]]) -> set[str]:
    """Every score name some row of the kind has."""
    return {s for r in rows for s in (r.get("scores") or {})}


def _kept_share(f: Filter | None, judged: list[dict[str, Any]]) -> float | None:
    if f is None:
        return None
    kept = 0
    for row in judged:
        try:
            kept += f.decide(dict(row.get("scores") or {}), dict(row.get("labels") or {})) is None
        except (KeyError, TypeError, ValueError):
            continue
    return kept / len(judged)


def sensitivity(rows: list[dict[str, Any]], f: Filter, present: set[str]) -> dict[str, Any] | None:
    """The share of the rows the filter judged (those with its scores) that it keeps with its
    thresholds 10 % looser, as run, and 10 % stricter (None where that is no valid config); None for
    a filter with no threshold or no judged row."""
    mine = [s for s in f.scores if s in present]
    judged = [r for r in rows if mine and all(s in (r.get("scores") or {}) for s in mine)]
    if not judged or not thresholds(f):
        return None
    shares = [_kept_share(_scaled(f, stricter=False), judged), _kept_share(f, judged),
              _kept_share(_scaled(f, stricter=True), judged)]  # fmt: skip
    return {"filter": f.name, "thresholds": thresholds(f), "judged": len(judged), "shares": shares}


def single_score(f: Filter, present: set[str]) -> str | None:
    """The one ledger score a filter decides on, when it has exactly one (its thresholds are drawn there)."""
    mine = [s for s in f.scores if s in present]
    return mine[0] if len(mine) == 1 else None


def fate_counts(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter((r.get("fate") or {}).get("reason") or (r.get("fate") or {}).get("status", "") for r in rows)


def by_fate(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """'kept', each drop reason, and 'quarantined:REASON' -> rows, in ledger order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        fate = row.get("fate") or {}
        status, reason = fate.get("status", ""), fate.get("reason", "")
        key = "kept" if status == "kept" else (reason if status == "dropped" else f"quarantined:{reason}")
        out.setdefault(key, []).append(row)
    return out


def sample(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """A deterministic sample: the n rows of smallest id (content ids are hashes: an even spread)."""
    return sorted(rows, key=lambda r: str(r.get("id")))[:n]


def source_ref(row: dict[str, Any]) -> str:
    src = row.get("source") or {}
    uri, member = str(src.get("uri", "")), str(src.get("member", ""))
    if member and posixpath.basename(uri) == member:
        return uri
    return f"{uri}#{member}" if member else uri
