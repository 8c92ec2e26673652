"""The grounding corpus's trainer files, per unit: SFT rows, pass-rate questions and an ODVG export.

    sft/part-UUUUU.parquet        LLaMA-Factory ShareGPT rows ("where is X" -> box, and the inverse)
    questions/part-UUUUU.jsonl    box questions in the pass-rate corpus's input format (`mmcurate rl`
                                  with read.image_root set to this folder)
    odvg/od/part-UUUUU.jsonl      GroundingDINO's ODVG detection lines (image root: images/)
    odvg/vg/part-UUUUU.jsonl      ODVG grounding lines (Open-GroundingDino reads a file in one mode)
    odvg/label_map.json           the detection labels' names, run-wide ({"0": "person", ...})
    images/<sha256>.<ext>         the stored images they name, each once
    dataset_info.json             LLaMA-Factory's entry for sft/

Every file starts from a kept sample's regions on its stored image (`GroundingSample.kept`).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import pyarrow as pa
from pydantic import Field

from mmcurate.schemas import GroundingSample
from mmcurate.stages.grounding_sft import GroundingSftParams, QuestionParams, odvg_rows, question_rows, sft_rows
from mmcurate.stages.image_decode import EncodeParams
from mmcurate.stages.trainer_formats import SHAREGPT_SCHEMA, media_name
from mmcurate.stages.writers import FileInfo, ShardParams, join, write_bytes, write_json, write_table

from . import layout
from .passrate_outputs import merge_dataset_info, sft_parts


class GroundingOutputParams(EncodeParams):
    max_side: int = Field(1024, ge=0)
    """Longest side of the stored image (never upscaled); every box follows it."""
    quality: int = 95
    shard: ShardParams = ShardParams()
    sft: GroundingSftParams = GroundingSftParams()
    questions: QuestionParams = QuestionParams()
    odvg: bool = True
    """Write `odvg/` (GroundingDINO's training layout: detection and grounding lines apart, a label map)."""


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n" for r in rows)


def write_unit_outputs(
    unit: int, kept: list[GroundingSample], out_root: str, params: GroundingOutputParams
) -> tuple[list[FileInfo], dict[str, Any]]:
    """The unit's trainer files (only those with rows) and their row counts."""
    sft: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    od: list[dict[str, Any]] = []
    vg: list[dict[str, Any]] = []
    images: dict[str, FileInfo] = {}
    for rec in kept:
        data = rec.members()[rec.out_ext]
        name = media_name(data, f"x.{rec.out_ext}", "images")
        mine_sft = sft_rows(rec, name, params.sft) if params.sft.enabled else []
        mine_q = question_rows(rec, name, params.questions) if params.questions.enabled else []
        mine_odvg = odvg_rows(rec, posixpath.basename(name)) if params.odvg else []
        if (mine_sft or mine_q or mine_odvg) and name not in images:
            images[name] = write_bytes(out_root, name, data)
        sft += mine_sft
        questions += mine_q
        _split_modes(mine_odvg, od, vg)
    part = layout.part(unit)
    files = list(images.values())
    if sft:
        files.append(write_table(out_root, f"sft/{part}.parquet", pa.Table.from_pylist(sft, SHAREGPT_SCHEMA)))
    if questions:
        files.append(write_bytes(out_root, f"questions/{part}.jsonl", _jsonl(questions)))
    for mode, lines in (("od", od), ("vg", vg)):
        if lines:
            files.append(write_bytes(out_root, f"odvg/{mode}/{part}.jsonl", _jsonl(lines)))
    labels, clashes = _label_map(od)
    return files, {"sft_rows": len(sft), "questions": len(questions), "odvg_rows": len(od) + len(vg),
                   "odvg_labels": labels, "odvg_label_clashes": clashes}  # fmt: skip


def _split_modes(lines: list[dict[str, Any]], od: list[dict[str, Any]], vg: list[dict[str, Any]]) -> None:
    """A sample's ODVG line as a detection line and / or a grounding line (Open-GroundingDino's two modes)."""
    for line in lines:
        head = {k: line[k] for k in ("filename", "height", "width")}
        if "detection" in line:
            od.append({**head, "detection": line["detection"]})
        if "grounding" in line:
            vg.append({**head, "grounding": line["grounding"]})


def _label_map(od: list[dict[str, Any]]) -> tuple[dict[str, str], int]:
    """Label -> its first category name in these lines, and how many instances name it otherwise."""
    labels: dict[str, str] = {}
    clashes = 0
    for inst in (i for line in od for i in line["detection"]["instances"]):
        clashes += labels.setdefault(str(inst["label"]), inst["category"]) != inst["category"]
    return labels, clashes


def fold_outputs(extras: list[dict[str, Any]]) -> dict[str, Any]:
    """Run-wide counts, and the detection label map (a label the units name differently is an error
    in the input: its first name in unit order is kept, the others counted)."""
    out: dict[str, Any] = {key: sum(e.get(key, 0) for e in extras) for key in ("sft_rows", "questions", "odvg_rows")}
    labels: dict[str, str] = {}
    clashes = sum(e.get("odvg_label_clashes", 0) for e in extras)
    for e in extras:
        for label, name in e.get("odvg_labels", {}).items():
            clashes += labels.setdefault(label, name) != name
    out["odvg_labels"] = dict(sorted(labels.items(), key=lambda kv: int(kv[0])))
    out["odvg_label_clashes"] = clashes
    return out


def merge_run_outputs(out_root: str, params: GroundingOutputParams) -> list[FileInfo]:
    """LLaMA-Factory's dataset_info.json entry for `sft/` (merged into one the folder has), and
    ODVG's label map over every detection line the run wrote (`odvg/od/`, first name of a label wins)."""
    import fsspec

    files = []
    if params.sft.enabled:
        merge_dataset_info(out_root, params.sft.name, bool(sft_parts(out_root)))
    if not params.odvg:
        return files
    fs, root = fsspec.core.url_to_fs(join(out_root, "odvg", "od"))
    labels: dict[int, str] = {}
    for path in sorted(fs.glob(f"{root}/part-*.jsonl")):
        with fs.open(path, "rb") as f:
            for raw in f:
                for inst in json.loads(raw)["detection"]["instances"]:
                    labels.setdefault(int(inst["label"]), inst["category"])
    if labels:
        files.append(write_json(out_root, "odvg/label_map.json", {str(k): labels[k] for k in sorted(labels)}))
    return files
