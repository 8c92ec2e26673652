"""The report's sections, each a plain dict for the template, or None where the run has no data for it."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import yaml

from . import plots
from .data import (
    RunData,
    by_fate,
    count_rows,
    present_scores,
    reason_rows,
    run_filters,
    sample,
    score_values,
    sensitivity,
    single_score,
    source_ref,
    thresholds,
)
from .media import Shards, boxed_picture, document_items, kept_picture, reread_clip, reread_images, sample_json

Write = Callable[[str, bytes], str]
"""Writes a file under the report folder, returns its path relative to the page."""
SHOWN_SCORES = 4
"""Scores printed under a thumbnail (the rest are in the ledger)."""
SHOWN_TEXTS = 12
"""Transcripts or expressions listed beside a boxed image."""


def counts_section(data: RunData, write: Write) -> dict[str, Any]:
    rows = count_rows(data)
    reasons = reason_rows(data)
    out: dict[str, Any] = {"rows": rows, "reasons": reasons, "chart": write("img/counts.png", plots.counts_chart(rows))}
    if reasons:
        bars = [(f"{r['kind']}: {r['reason']}", r["n"], r["status"]) for r in reasons]
        out["reasons_chart"] = write("img/reasons.png", plots.reasons_chart(bars))
    return out


def scores_section(data: RunData, write: Write) -> list[dict[str, Any]]:
    """Per kind: every score's histogram (thresholds drawn where a filter decides on that one score)
    and the share each filter keeps at its thresholds -10 %, as run, +10 %."""
    out = []
    for kind, rows in data.ledgers.items():
        values = score_values(rows)
        if not values:
            continue
        present = present_scores(rows)
        filters = run_filters(data, kind)
        lines: dict[str, dict[str, float]] = defaultdict(dict)
        for f in filters:
            score = single_score(f, present)
            if score:
                lines[score].update({f"{f.name}.{k}": v for k, v in thresholds(f).items()})
        plots_ = []
        for name, vals in values.items():
            png = plots.histogram(vals, f"{kind}: {name} (n={len(vals)})", lines.get(name))
            plots_.append({"name": name, "n": len(vals), "img": write(f"img/score-{kind}-{name}.png", png),
                           "lines": lines.get(name, {})})  # fmt: skip
        table = [s for f in filters if (s := sensitivity(rows, f, present))]
        total = int(data.manifest.get("kinds", {}).get(kind, {}).get("counts", {}).get("input", len(rows)))
        out.append({"kind": kind, "plots": plots_, "sensitivity": table, "rows": len(rows), "total": total,
                    "truncated": len(rows) < total})  # fmt: skip
    return out


def _card(row: dict[str, Any], img: str | None, why: str = "", first: tuple[str, ...] = ()) -> dict[str, Any]:
    """One sampled record: its picture, id, scores (those of the filter that decided first), source."""
    scores = row.get("scores") or {}
    names = [*(n for n in first if n in scores), *(n for n in sorted(scores) if n not in first)][:SHOWN_SCORES]
    shown = {k: scores[k] for k in names if isinstance(scores[k], int | float) and math.isfinite(scores[k])}
    text = str(row.get("caption") or "")
    return {"id": row.get("id"), "img": img, "source": source_ref(row), "why": why,
            "scores": ", ".join(f"{k} {v:.3g}" for k, v in shown.items()),
            "text": text[:160] + ("…" if len(text) > 160 else ""),
            "error": (row.get("fate") or {}).get("error", "")}  # fmt: skip


def samples_section(data: RunData, write: Write, per_reason: int) -> list[dict[str, Any]]:
    """For the kind the shards hold: sampled kept records (from the shards) and, per drop reason,
    sampled dropped ones (re-read from their sources where they can be)."""
    if not data.index:
        return []
    kind = data.kinds[0] if data.kinds else ""
    kind = next((k for k in data.kinds if any(r.get("id") == data.index[0].get("id") for r in data.ledgers[k])), kind)
    shards = Shards(data.root)
    groups = []
    kept = sample(data.index, per_reason)
    cards = []
    for row in kept:
        pic = kept_picture(shards, row)
        cards.append(_card(row, write(f"img/kept-{row['id']}.jpg", pic) if pic else None))
    groups.append({"kind": kind, "label": "kept", "n": len(data.index), "cards": cards})
    fates = by_fate(data.ledgers.get(kind, []))
    dropped = {k: v for k, v in fates.items() if k != "kept" and not k.startswith("quarantined:")}
    picked = {reason: sample(rows, per_reason) for reason, rows in sorted(dropped.items())}
    pictures = _reread(data, kind, [r for rows in picked.values() for r in rows])
    deciders = {reason: f.scores for f in run_filters(data, kind) for reason in f.reasons}
    for reason, rows in picked.items():
        cards = []
        for row in rows:
            pic = pictures.get(str(row["id"]))
            why = "" if pic else "no picture: not stored, and not re-read from its source"
            img = write(f"img/dropped-{row['id']}.jpg", pic) if pic else None
            cards.append(_card(row, img, why, deciders.get(reason, ())))
        groups.append({"kind": kind, "label": reason, "n": len(dropped[reason]), "cards": cards})
    return groups


def _reread(data: RunData, kind: str, rows: list[dict[str, Any]]) -> dict[str, bytes]:
    if not rows:
        return {}
    if kind == "clip":
        return {str(r["id"]): pic for r in rows if (pic := reread_clip(r))}
    if data.corpus == "caption":
        return reread_images(data.root, data.manifest, rows)
    return {}


def boxes_section(data: RunData, write: Write, per_reason: int) -> list[dict[str, Any]]:
    """Sampled kept images with what their `KEY.json` locates drawn in (OCR lines, grounding
    regions) and the transcripts or expressions beside them; [] for a run whose samples have none."""
    shards, out = Shards(data.root), []
    for row in sample([r for r in data.index if "key" in r], per_reason):
        meta = sample_json(shards, row)
        drawn = boxed_picture(shards, row, meta) if meta else None
        if drawn:
            pic, texts = drawn
            shown = [t if t else "(no text)" for t in texts[:SHOWN_TEXTS]]
            if len(texts) > SHOWN_TEXTS:
                shown.append(f"... and {len(texts) - SHOWN_TEXTS} more")
            out.append({"id": row["id"], "img": write(f"img/boxes-{row['id']}.jpg", pic), "texts": shown})
    return out


def documents_section(data: RunData, write: Write, n: int = 2) -> list[dict[str, Any]]:
    """Sampled kept interleaved documents rendered in order, each image in place with its alignment
    score (the image ledger's, joined by document id and slot)."""
    if "document" not in data.ledgers:
        return []
    align = {(r.get("doc_id"), r.get("slot")): (r.get("scores") or {}).get("alignment")
             for r in data.ledgers.get("image", [])}  # fmt: skip
    shards, out = Shards(data.root), []
    for row in sample([r for r in data.index if "key" in r], n):
        meta = sample_json(shards, row)
        if not meta or not meta.get("items"):
            continue
        items = []
        for i, item in enumerate(document_items(shards, row, meta)):
            if item["type"] == "image":
                img = write(f"img/doc-{row['id']}-{i}.jpg", item["data"]) if item["data"] else None
                items.append({"type": "image", "img": img, "alignment": align.get((row["id"], item["slot"]))})
            else:
                items.append(item)
        out.append({"id": row["id"], "source": source_ref(row), "parts": items})
    return out


def quarantined_section(data: RunData, limit: int = 200) -> list[dict[str, Any]]:
    out = []
    for kind, rows in data.ledgers.items():
        for row in rows:
            fate = row.get("fate") or {}
            if fate.get("status") == "quarantined":
                out.append({"kind": kind, "id": row.get("id"), "source": source_ref(row),
                            "reason": fate.get("reason"), "error": fate.get("error")})  # fmt: skip
    return out[:limit]


def video_section(data: RunData, write: Write, per_reason: int) -> dict[str, Any] | None:
    clips = data.ledgers.get("clip")
    if not clips:
        return None
    kept = [r for r in clips if (r.get("fate") or {}).get("status") == "kept"]
    durations = [float(r.get("duration") or 0.0) for r in kept]
    out: dict[str, Any] = {"clips": len(kept), "hours": sum(durations) / 3600, "sheets": []}
    if durations:
        out["durations"] = write("img/clip-durations.png", plots.histogram(durations, "kept clip duration (s)"))
    shards = Shards(data.root)
    for row in sample([r for r in data.index if "start_frame" in r], per_reason):
        pic = kept_picture(shards, row)
        scores, labels = row.get("scores") or {}, row.get("labels") or {}
        out["sheets"].append({
            "id": row["id"], "img": write(f"img/sheet-{row['id']}.jpg", pic) if pic else None,
            "duration": row.get("duration"), "flow_speed": scores.get("flow_speed"),
            "camera": labels.get("camera_motion", ""), "text_area": scores.get("ocr_text_area"),
        })  # fmt: skip
    return out


def passrate_section(data: RunData, write: Write) -> dict[str, Any] | None:
    rows = [r for r in data.ledgers.get("question", []) if "pass_rate" in (r.get("scores") or {})]
    if not rows:
        return None
    rates = [float(r["scores"]["pass_rate"]) for r in rows]
    tiers: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        tiers[str(r.get("domain", ""))][str((r.get("labels") or {}).get("tier", ""))] += 1
    names = sorted({t for c in tiers.values() for t in c})
    flags = Counter(
        k for r in rows for k, v in (r.get("labels") or {}).items() if k != "tier" and v in ("1", "true", "True", True)
    )
    return {"n": len(rows), "hist": write("img/pass-rate.png", plots.histogram(rates, "pass rate", bins=20)),
            "tiers": names, "table": [{"domain": d, "cells": [tiers[d][t] for t in names]} for d in sorted(tiers)],
            "flags": dict(sorted(flags.items()))}  # fmt: skip


def annotation_section(data: RunData) -> dict[str, Any] | None:
    summary = data.annotation
    if not summary:
        return None
    fams = []
    for name, fam in sorted((summary.get("families") or {}).items()):
        fams.append({"family": name, "clips": fam.get("clips"), "annotations": fam.get("annotations"),
                     "kappa": fam.get("kappa") or {}, "temporal_iou": fam.get("temporal_iou"),
                     "text_iou": fam.get("text_iou"), "text_cer": fam.get("text_cer"),
                     "gold_accuracy": fam.get("gold_accuracy") or {},
                     "tasks": fam.get("tasks_per_annotator") or {},
                     "requeue": len(fam.get("requeue") or [])})  # fmt: skip
    annotators = sorted({a for f in fams for a in f["tasks"]})
    return {"families": fams, "annotators": annotators, "labelled": summary.get("clips_labelled")}


def lineage_section(data: RunData) -> dict[str, Any]:
    m = data.manifest
    counters = sorted((data.metrics.get("counters") or {}).items())
    dists = sorted((data.metrics.get("distributions") or {}).items())
    return {"inputs": m.get("inputs"), "code_version": m.get("code_version"), "created": m.get("created"),
            "host": m.get("host"), "identity": m.get("identity"), "units": m.get("units"),
            "config": yaml.safe_dump(m.get("config"), sort_keys=True),
            "lineage": json.dumps(m.get("lineage"), indent=1),
            "counters": counters, "distributions": [(k, v) for k, v in dists]}  # fmt: skip


def build_sections(data: RunData, write: Write, per_reason: int) -> dict[str, Any]:
    """The template's context: every section the run has data for."""
    return {
        "run": data.root, "corpus": data.corpus, "manifest_ok": data.manifest.get("accounting_ok"),
        "counts": counts_section(data, write), "scores": scores_section(data, write),
        "samples": samples_section(data, write, per_reason), "quarantined": quarantined_section(data),
        "boxes": boxes_section(data, write, per_reason), "documents": documents_section(data, write),
        "video": video_section(data, write, per_reason), "passrate": passrate_section(data, write),
        "annotation": annotation_section(data), "overlays": data.overlays, "lineage": lineage_section(data),
    }  # fmt: skip


def compare_sections(a: RunData, b: RunData, write: Write) -> dict[str, Any]:
    """Counts side by side, each score's two distributions on one axis, and per kind the ids one
    run keeps and the other does not."""
    names = {"A": a.root, "B": b.root}
    counts = {"A": {r["kind"]: r for r in count_rows(a)}, "B": {r["kind"]: r for r in count_rows(b)}}
    kinds = sorted(set(counts["A"]) | set(counts["B"]))
    plots_, differ = [], []
    for kind in kinds:
        va, vb = score_values(a.ledgers.get(kind, [])), score_values(b.ledgers.get(kind, []))
        for name in sorted(set(va) & set(vb)):
            png = plots.overlaid({"A": va[name], "B": vb[name]}, f"{kind}: {name}")
            plots_.append({"kind": kind, "name": name, "img": write(f"img/{kind}-{name}.png", png)})
        keep_a = {r["id"]: r for r in a.ledgers.get(kind, []) if (r.get("fate") or {}).get("status") == "kept"}
        keep_b = {r["id"]: r for r in b.ledgers.get(kind, []) if (r.get("fate") or {}).get("status") == "kept"}
        fate_b = {r["id"]: (r.get("fate") or {}).get("reason", "") for r in b.ledgers.get(kind, [])}
        fate_a = {r["id"]: (r.get("fate") or {}).get("reason", "") for r in a.ledgers.get(kind, [])}
        only_a = [(i, fate_b.get(i, "not in B")) for i in sorted(set(keep_a) - set(keep_b))]
        only_b = [(i, fate_a.get(i, "not in A")) for i in sorted(set(keep_b) - set(keep_a))]
        differ.append({"kind": kind, "only_a": only_a[:100], "only_b": only_b[:100]})
    return {"corpus": a.corpus, "names": names, "kinds": kinds, "counts": counts, "plots": plots_, "differ": differ}
