"""The grounding corpus's reader: ODVG, RefCOCO refs files, conversations with boxes and native rows,
as `GroundingSample`s carrying their `RegionRecord`s.

Every case checks the books: each unit gives exactly the records its container holds, and each
sample holds exactly the regions its input writes (regions in = the samples' regions). Expected
values are taken from the files here with plain Python (json, the test's own lists), never with
the reader's own parsers."""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import tarfile
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest
from PIL import Image

from mmcurate.schemas import GroundingSample, RegionRecord
from mmcurate.stages.grounding_io import (
    LAYOUTS,
    GroundingReadParams,
    InputError,
    ReadReport,
    grounding_content_id,
    list_grounding_units,
    read_grounding_unit,
    resolved_format,
)

PEER = "grounding"


def image_file(path: Path, size: tuple[int, int] = (32, 24), seed: int = 0) -> bytes:
    """A small real PNG of `size` (distinct per seed), written to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", size, ((seed * 47) % 256, (seed * 91) % 256, 7)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_all(inputs: list[Path | str], **params: Any) -> tuple[list[GroundingSample], list[ReadReport]]:
    """List and read every unit; each unit's records must be exactly what its container holds, and
    every sample's `regions` the regions it carries."""
    p = GroundingReadParams(**params)
    records: list[GroundingSample] = []
    reports = []
    for unit in list_grounding_units([str(i) for i in inputs], p):
        report = ReadReport()
        got = list(read_grounding_unit(unit, p, report))
        assert report.produced == len(got)
        if report.expected is not None:
            assert report.produced + report.not_read == report.expected, unit
        records += got  # type: ignore[arg-type]
        reports.append(report)
    for rec in records:
        assert isinstance(rec, GroundingSample)
        assert rec.items is not None and rec.region_count == len(rec.items)
        assert [r.slot for r in rec.items] == list(range(rec.region_count))
        for r in rec.items:
            assert isinstance(r, RegionRecord)
            assert r.source == rec.source and r.sample_id == rec.id and r.parent_uid == rec.uid
            assert r.frame == "input" and r.box == [] and r.box_format in ("xyxy", "xywh", "norm", "grid")
    return records, reports


def fate(rec: GroundingSample | RegionRecord) -> tuple[str, str]:
    return rec.fate.status.value, rec.fate.reason


# ---------------------------------------------------------------------------------------------- ODVG


def peer_file(peer_data: Path, name: str) -> Path:
    path = peer_data / PEER / name
    if not path.exists():
        pytest.skip(f"peer data {path} not present")
    return path


def test_odvg_peer_lines_without_images(peer_data: Path, tmp_path: Path) -> None:
    path = peer_file(peer_data, "odvg_examples_open_groundingdino_readme.jsonl")
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    per_line = [len(r.get("detection", {}).get("instances", [])) + len(r.get("grounding", {}).get("regions", []))
                for r in lines]  # fmt: skip
    assert per_line == [4, 4, 1, 2]
    records, reports = read_all([path], image_root=str(tmp_path))  # a root without the images
    assert [r.region_count for r in records] == per_line
    assert sum(len(r.items or []) for r in records) == sum(per_line)
    assert reports[0].expected == len(lines) == 4
    for rec, line in zip(records, lines, strict=True):
        assert fate(rec) == ("dropped", "image_missing") and rec.image is None
        assert rec.name == line["filename"] and rec.origin == "odvg"
        assert all(r.pending for r in rec.items or [])  # the regions stay, for the books


def test_odvg_peer_lines_with_images(peer_data: Path, tmp_path: Path) -> None:
    path = peer_file(peer_data, "odvg_examples_open_groundingdino_readme.jsonl")
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    written = {r["filename"]: image_file(tmp_path / r["filename"], (r["width"], r["height"]), i)
               for i, r in enumerate(lines)}  # fmt: skip
    records, _ = read_all([path], image_root=str(tmp_path))
    assert len(records) == 4
    for rec, line in zip(records, lines, strict=True):
        assert rec.pending and rec.image == written[line["filename"]] and rec.file_bytes == len(rec.image)
        assert (rec.claimed_width, rec.claimed_height) == (line["width"], line["height"])
        assert rec.source.uri == str(tmp_path / line["filename"])  # the image's, as the other corpora
        assert rec.source.member == f"line{lines.index(line) + 1}"
        dets = line.get("detection", {}).get("instances", [])
        grounds = line.get("grounding", {}).get("regions", [])
        assert rec.caption == line.get("grounding", {}).get("caption", "")
        assert [r.task for r in rec.items or []] == ["detection"] * len(dets) + ["grounding"] * len(grounds)
        for r, inst in zip((rec.items or [])[: len(dets)], dets, strict=True):
            assert (r.phrase, r.category, r.input_box, r.box_format) == (inst["category"], inst["category"],
                                                                         inst["bbox"], "xyxy")  # fmt: skip
            assert json.loads(r.extra) == {"label": inst["label"]} and r.ref.startswith("instance:")
        for r, reg in zip((rec.items or [])[len(dets) :], grounds, strict=True):
            assert (r.phrase, r.category, r.input_box) == (reg["phrase"], "", reg["bbox"])
    ids = {r.id for r in records} | {x.id for r in records for x in r.items or []}
    assert len(ids) == 4 + 11  # every sample and region has its own id
    again, _ = read_all([path], image_root=str(tmp_path))
    assert [r.id for r in again] == [r.id for r in records]


def test_odvg_spec_example(peer_data: Path, tmp_path: Path) -> None:
    spec = json.loads(peer_file(peer_data, "odvg_format_spec_example_open_groundingdino.json").read_text())
    path = jsonl(tmp_path / "spec.jsonl", [spec])
    image_file(tmp_path / spec["filename"], (spec["width"], spec["height"]))
    (rec,), _ = read_all([path])
    assert rec.pending and rec.region_count == 5
    tasks = [r.task for r in rec.items or []]
    assert tasks.count("detection") == len(spec["detection"]["instances"]) == 3
    assert tasks.count("grounding") == len(spec["grounding"]["regions"]) == 2
    assert [r.ref for r in rec.items or []] == ["instance:0", "instance:1", "instance:2", "region:0", "region:1"]


def test_odvg_normalised_boxes_refused(tmp_path: Path) -> None:
    rows = [{"filename": f"{i}.png", "detection": {"instances": [{"bbox": [0.1, 0.2, 0.5, 0.6], "category": "cat"}]}}
            for i in range(4)]  # fmt: skip
    path = jsonl(tmp_path / "norm.jsonl", rows)
    with pytest.raises(InputError, match=r"look normalised.*read.box_format: norm"):
        list_grounding_units([str(path)], GroundingReadParams())
    assert len(list_grounding_units([str(path)], GroundingReadParams(box_format="norm"))) == 1
    by_input = GroundingReadParams(box_formats={str(path): "norm"})
    assert resolved_format(by_input, "odvg", str(path)) == "norm"
    assert len(list_grounding_units([str(path)], by_input)) == 1


# ---------------------------------------------------------------------------------------------- RefCOCO

INSTANCES = {
    "images": [{"id": 100, "file_name": "COCO_100.jpg", "width": 64, "height": 48},
               {"id": 200, "file_name": "COCO_200.jpg", "width": 80, "height": 60}],
    "annotations": [{"id": 10, "image_id": 100, "bbox": [1.5, 2.0, 30.0, 20.0], "category_id": 1, "iscrowd": 0},
                    {"id": 11, "image_id": 100, "bbox": [40.0, 5.0, 10.0, 12.0], "category_id": 2, "iscrowd": 0},
                    {"id": 20, "image_id": 200, "bbox": [0.0, 0.0, 79.0, 59.0], "category_id": 2, "iscrowd": 1}],
    "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}],
}  # fmt: skip
REFS = [
    {"ref_id": 1, "ann_id": 10, "image_id": 100, "split": "train", "category_id": 1,
     "sentences": [{"sent_id": 1, "sent": "man on the left", "raw": "Man on the left.", "tokens": ["man"]},
                   {"sent_id": 2, "sent": "left guy", "raw": "left guy", "tokens": ["left", "guy"]}]},
    {"ref_id": 2, "ann_id": 20, "image_id": 200, "split": "testA", "category_id": 2,
     "sentences": [{"sent_id": 3, "sent": "big dog", "raw": "big dog", "tokens": ["big", "dog"]}]},
    {"ref_id": 3, "ann_id": 11, "image_id": 100, "split": "val", "category_id": 2,
     "sentences": [{"sent_id": 4, "sent": "small dog", "raw": "small dog", "tokens": ["small", "dog"]}]},
    {"ref_id": 4, "ann_id": 99, "image_id": 200, "split": "testA", "category_id": 2,
     "sentences": [{"sent_id": 5, "sent": "ghost", "raw": "ghost", "tokens": ["ghost"]}]},
]  # fmt: skip


def refcoco(folder: Path, name: str, data: bytes, instances: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(json.dumps(instances or INSTANCES))
    (folder / name).write_bytes(data)
    return folder / name


@pytest.mark.parametrize("name", ["refs(unc).p", "refs(unc).json"])
def test_refcoco(tmp_path: Path, name: str) -> None:
    data = pickle.dumps(REFS, protocol=2) if name.endswith(".p") else json.dumps(REFS).encode()
    path = refcoco(tmp_path / "refcoco", name, data)
    images = {img["id"]: img for img in INSTANCES["images"]}
    written = {i: image_file(tmp_path / "coco" / img["file_name"], (img["width"], img["height"]), i)
               for i, img in images.items()}  # fmt: skip
    records, reports = read_all([path.parent], image_root=str(tmp_path / "coco"))  # the folder: refs + instances
    assert reports[0].expected == 2 and reports[0].ignored == [str(path.parent / "instances.json")]
    order = list(dict.fromkeys(r["image_id"] for r in REFS))  # images in the order of their first ref
    assert [r.name for r in records] == [images[i]["file_name"] for i in order]
    anns = {a["id"]: a for a in INSTANCES["annotations"]}
    cats = {c["id"]: c["name"] for c in INSTANCES["categories"]}
    for rec, image_id in zip(records, order, strict=True):
        assert rec.pending and rec.origin == "refcoco" and rec.image == written[image_id]
        assert (rec.claimed_width, rec.claimed_height) == (images[image_id]["width"], images[image_id]["height"])
        assert json.loads(rec.extra) == {"image_id": image_id}
        want = [(ref, s) for ref in REFS if ref["image_id"] == image_id for s in ref["sentences"]]
        assert rec.region_count == len(want)
        for r, (ref, s) in zip(rec.items or [], want, strict=True):
            assert (r.task, r.phrase, r.split, r.ref) == ("referring", s["sent"], ref["split"],
                                                          f"ref:{ref['ref_id']}/sent:{s['sent_id']}")  # fmt: skip
            assert r.category == cats[ref["category_id"]] and r.box_format == "xywh"
            assert json.loads(r.extra)["ann_id"] == ref["ann_id"]
            if ref["ann_id"] in anns:
                assert r.pending and r.input_box == anns[ref["ann_id"]]["bbox"]
                assert json.loads(r.extra)["iscrowd"] == anns[ref["ann_id"]]["iscrowd"]
            else:
                assert fate(r) == ("quarantined", "bad_box") and "ann 99 not in instances.json" in r.fate.error


def test_refcoco_py2_str_is_latin1(tmp_path: Path) -> None:
    """A Python 2 cPickle str (SHORT_BINSTRING) reads as latin1, as the refer toolkit's files need."""

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    def i(n: int) -> bytes:
        return b"K" + bytes([n])

    sentence = b"}(" + s(b"sent_id") + i(7) + s(b"sent") + s(b"caf\xe9 table") + b"u"
    ref = b"}(" + s(b"ref_id") + i(1) + s(b"ann_id") + i(10) + s(b"image_id") + i(100) + s(b"split") + s(b"train")
    ref += s(b"sentences") + b"]" + sentence + b"a" + b"u"
    path = refcoco(tmp_path, "refs(google).p", b"\x80\x02]" + ref + b"a.")
    (rec,), _ = read_all([path])
    assert [(r.phrase, r.ref) for r in rec.items or []] == [("caf\u00e9 table", "ref:1/sent:7")]


def test_refcoco_malicious_pickle_is_not_executed(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    opened = tmp_path / "opened"

    class System:
        def __reduce__(self) -> tuple:
            import os

            return os.system, (f"touch {target}",)

    class Open:
        def __reduce__(self) -> tuple:
            import builtins

            return builtins.open, (str(opened), "w")

    for n, payload in enumerate((System(), Open())):
        path = refcoco(tmp_path / f"r{n}", "refs(unc).p", pickle.dumps([payload], protocol=2))
        (rec,), reports = read_all([path])
        assert (
            fate(rec) == ("quarantined", "bad_refs") and rec.region_count == 0 and rec.source.member == "<whole-file>"
        )
        assert "only builtin containers and scalars" in rec.fate.error
        assert reports[0].damage and reports[0].damage[0]["uri"] == str(path)
    assert not target.exists() and not opened.exists()


def test_refcoco_listing_refusals(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    path = refcoco(folder, "refs(unc).p", pickle.dumps(REFS, protocol=2))
    with pytest.raises(InputError, match=r"instances file alone.*refs"):
        list_grounding_units([str(folder / "instances.json")], GroundingReadParams())
    (folder / "instances.json").unlink()
    with pytest.raises(InputError, match=r"read\.instances"):
        list_grounding_units([str(path)], GroundingReadParams())
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps(INSTANCES))
    assert len(list_grounding_units([str(path)], GroundingReadParams(instances=str(other)))) == 1
    bad = json.loads(json.dumps(INSTANCES))
    bad["annotations"][0]["bbox"] = [5.0, 5.0, -3.0, 4.0]  # a negative width contradicts xywh
    path = refcoco(tmp_path / "b", "refs(unc).json", json.dumps(REFS).encode(), bad)
    with pytest.raises(InputError, match=r"ref 1 \(ann 10\).*read.box_format"):
        list_grounding_units([str(path)], GroundingReadParams())


# ---------------------------------------------------------------------------------------------- conversations

LLAVA_REC = {
    "image": "a.png",
    "conversations": [
        {"from": "human", "value": "<image>\nPlease provide the bounding box coordinate of the region this "
                                   "sentence describes: a man in red."},
        {"from": "gpt", "value": "[0.12, 0.30, 0.50, 0.90]"},
        {"from": "human", "value": "Please provide a short description for this region: [0.5, 0.1, 0.7, 0.4]"},
        {"from": "gpt", "value": "A dog on a couch."},
    ],
}  # fmt: skip
QWEN = {
    "images": ["a.png"],
    "messages": [
        {"role": "user", "content": "<image>Where is the dog?"},
        {"role": "assistant", "content": "<ref>the dog</ref><box>(100,200),(300,400)</box>"},
    ],
}
GLM = {
    "image": "a.png",
    "conversations": [
        {"from": "human", "value": "<image>Find the cats."},
        {"from": "gpt", "value": "<|begin_of_box|>[[10,20,500,600],[600,20,900,300]]<|end_of_box|>"},
    ],
}


def test_conversations(tmp_path: Path) -> None:
    image_file(tmp_path / "a.png")
    two = {"image": "a.png", "conversations": [{"from": "human", "value": "Where are they?"}, {"from": "gpt", "value":
           "the dog[0.1,0.2,0.3,0.4] and the cat is located at [0.5,0.5,0.6,0.6]."}]}  # fmt: skip
    plain = jsonl(tmp_path / "llava.jsonl", [LLAVA_REC, two])
    tagged = jsonl(tmp_path / "tagged.jsonl", [QWEN, GLM])
    records, _ = read_all([plain, tagged], box_formats={str(plain): "norm"})
    declared, _ = read_all([tagged], box_format="xyxy")  # a tag's grid is its definition: declaring changes nothing
    assert {r.box_format for rec in declared for r in rec.items or []} == {"grid"}
    llava, both, qwen, glm = records
    assert [(r.phrase, r.box_format) for r in both.items or []] == [("the dog", "norm"), ("the cat", "norm")]
    assert all(r.pending and r.origin == "conversation" for r in records)
    assert [(r.phrase, r.input_box, r.box_format, r.ref) for r in llava.items or []] == [
        ("a man in red", [0.12, 0.30, 0.50, 0.90], "norm", "turn:1/box:0"),
        ("A dog on a couch", [0.5, 0.1, 0.7, 0.4], "norm", "turn:2/box:0"),
    ]
    assert [t["role"] for t in json.loads(llava.extra)["conversation"]] == ["user", "assistant"] * 2
    assert [(r.phrase, r.input_box, r.box_format) for r in qwen.items or []] == [
        ("the dog", [100.0, 200.0, 300.0, 400.0], "grid")
    ]
    assert [(r.phrase, r.input_box, r.ref) for r in glm.items or []] == [
        ("the cats", [10.0, 20.0, 500.0, 600.0], "turn:1/box:0"),
        ("the cats", [600.0, 20.0, 900.0, 300.0], "turn:1/box:1"),
    ]
    assert all(r.task == "conversation" and r.pending for rec in records for r in rec.items or [])


def test_conversation_failures(tmp_path: Path) -> None:
    image_file(tmp_path / "a.png")
    broken = {"image": "a.png", "conversations": [{"from": "human", "value": "where?"},
                                                  {"from": "gpt", "value": "<box>(1,2),(3)</box>"}]}  # fmt: skip
    two = {**QWEN, "images": ["a.png", "b.png"]}
    huge = {**QWEN, "messages": [{"role": "user", "content": "<box>" * 50_000}, *QWEN["messages"]]}
    path = jsonl(tmp_path / "c.jsonl", [broken, two, QWEN, huge])
    (bad, multi, ok, long), _ = read_all([path])
    assert fate(long) == ("quarantined", "bad_conversation") and "MAX_TURN_CHARS" in long.fate.error
    assert fate(bad) == ("quarantined", "bad_conversation") and "(1,2),(3)" in bad.fate.error
    assert fate(multi) == ("quarantined", "bad_row") and "2 images" in multi.fate.error
    assert ok.pending and ok.region_count == 1
    plain = jsonl(tmp_path / "plain.jsonl", [QWEN, LLAVA_REC])
    with pytest.raises(InputError, match=r"plain.jsonl line 2: .*declare read.box_format \(norm for LLaVA-1.5"):
        list_grounding_units([str(plain)], GroundingReadParams())
    with pytest.raises(InputError, match=r"not among the inputs"):
        list_grounding_units([str(plain)], GroundingReadParams(box_formats={"other.jsonl": "norm"}))


# ---------------------------------------------------------------------------------------------- native, contradictions


def native(i: int, regions: list[dict[str, Any]], image: str = "img.png") -> dict[str, Any]:
    return {"image": image, "width": 32, "height": 24, "id": i, "regions": regions}


def test_contradiction_at_listing_and_beyond(tmp_path: Path) -> None:
    image_file(tmp_path / "img.png")
    good = {"box": [0.1, 0.1, 0.5, 0.5], "phrase": "a cup"}
    early = jsonl(tmp_path / "early.jsonl", [native(0, [good]), native(1, [{"box": [0.1, 0.2, 5.0, 0.5]}])])
    with pytest.raises(InputError, match=r"early.jsonl line 2 .*value 5 above 1.*read.box_format"):
        list_grounding_units([str(early)], GroundingReadParams(box_format="norm"))
    rows = [native(i, [good]) for i in range(69)]
    rows.append(native(69, [good, {"box": [0.1, 0.2, 5.0, 0.5], "phrase": "far"}, {"box": [0.2, math.nan, 0.4, 0.6]}]))
    late = tmp_path / "late.jsonl"
    late.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json writes NaN as NaN
    records, _ = read_all([late], box_format="norm")
    assert len(records) == 70 and all(r.pending for r in records)
    last = records[-1].items or []
    assert [fate(r) for r in last] == [("pending", ""), ("quarantined", "bad_box"), ("pending", "")]
    assert "5" in last[1].fate.error and "read.box_format" in last[1].fate.error
    assert last[1].input_box == [0.1, 0.2, 5.0, 0.5]
    assert math.isnan(last[2].input_box[1]) and last[2].input_box[0] == 0.2


def tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_native_rows_and_tar(tmp_path: Path) -> None:
    png = image_file(tmp_path / "img.png")
    rows = [
        native(0, [{"box": [1, 2, 10, 12], "phrase": "a cup", "split": "val", "ref": "obj:7", "score": 0.5},
                   {"box": [3, 3, 9, 9], "category": "dog"}, {"box": [1, 2, 3], "phrase": "short"},
                   {"box": "nope", "phrase": "text"}]),
        native(1, []),
        "not json {",
        [1, 2],
        {"image": "img.png", "regions": "none"},
        {"caption": "a row of no layout"},
        native(6, [{"box": [1, 2, 10, 12], "phrase": "x"}], image="absent.png"),
        native(7, [{"box": [1, 2, 10, 12], "phrase": "x"}], image="../outside.png"),
    ]  # fmt: skip
    path = jsonl(tmp_path / "native.jsonl", rows)
    records, reports = read_all([path])
    assert len(records) == reports[0].expected == len(rows)
    got = [fate(r) for r in records]
    assert got == [("pending", ""), ("dropped", "no_regions"), ("quarantined", "bad_json"),
                   ("quarantined", "bad_json"), ("quarantined", "bad_row"), ("quarantined", "bad_row"),
                   ("dropped", "image_missing"), ("quarantined", "outside_root")]  # fmt: skip
    assert "read.layout" in records[5].fate.error
    assert [r.region_count for r in records] == [4, 0, 0, 0, 0, 0, 1, 1]
    first = records[0].items or []
    assert [(r.task, r.phrase, r.category, r.ref, r.split) for r in first[:2]] == [
        ("grounding", "a cup", "", "obj:7", "val"), ("detection", "dog", "dog", "region:1", "")]  # fmt: skip
    assert json.loads(first[0].extra) == {"score": 0.5}
    assert [fate(r)[1] for r in first] == ["", "", "bad_box", "bad_box"]
    assert "read.box_format: xyxy" in first[2].fate.error and "got nope" in first[3].fate.error
    assert json.loads(records[0].extra) == {"id": 0} and records[0].image == png

    k0_json = {"out_width": 16, "out_height": 12, "regions": [{"box": [0, 0, 8, 6], "phrase": "top left"}]}
    k1_json = {"regions": [{"box": [0, 0, 1, 1], "phrase": "p"}]}
    shard = tar(tmp_path / "shard.tar", [("k0.png", png), ("k0.json", json.dumps(k0_json).encode()),
                                         ("k1.json", json.dumps(k1_json).encode())])  # fmt: skip
    (k0, k1), _ = read_all([shard])
    assert k0.pending and k0.image == png and (k0.claimed_width, k0.claimed_height) == (16, 12)
    assert k0.origin == "native" and [r.input_box for r in k0.items or []] == [[0, 0, 8, 6]]
    assert fate(k1) == ("dropped", "image_missing") and k1.region_count == 1


def test_negatives_pool(tmp_path: Path) -> None:
    image_file(tmp_path / "img.png")
    phrases = [["a", "b"], ["b", "c"], ["d"], ["a"], ["e", "a"]]
    path = jsonl(tmp_path / "pool.jsonl", [native(i, [{"box": [1, 1, 5, 5], "phrase": p} for p in ps])
                                           for i, ps in enumerate(phrases)])  # fmt: skip
    # By hand: pool (most recent last, 3 at most) before each sample, less the sample's own phrases.
    want = [[], ["a"], ["a", "b", "c"], ["b", "c", "d"], ["c", "d"]]
    records, _ = read_all([path], negative_pool=3)
    assert [r.negatives for r in records] == want
    again, _ = read_all([path], negative_pool=3)
    assert [r.negatives for r in again] == want
    split, _ = read_all([path], negative_pool=3, jsonl_unit_lines=2)  # units of lines 1-2, 3-4, 5: a pool each
    assert [r.negatives for r in split] == [[], ["a"], [], ["d"], []]
    none, _ = read_all([path], negative_pool=0)
    assert all(r.negatives == [] for r in none)


def test_limit_and_ids(tmp_path: Path) -> None:
    png = image_file(tmp_path / "img.png")
    path = jsonl(tmp_path / "n.jsonl", [native(i, [{"box": [1, 1, 5, 5], "phrase": "p"}]) for i in range(5)])
    records, reports = read_all([path], limit=2)
    assert len(records) == 2 and reports[0].not_read == 3
    want = grounding_content_id(png, [("p", [1.0, 1.0, 5.0, 5.0], "xyxy", "grounding")])
    assert records[0].id == want == records[1].id  # the same image and regions: the same content
    assert records[0].items and records[0].items[0].id != records[0].id
    assert LAYOUTS[0] == "auto" and resolved_format(GroundingReadParams(), "refcoco", "x") == "xywh"
    with pytest.raises(InputError, match="holds images but no grounding label file"):
        list_grounding_units([str(tmp_path / "img.png")], GroundingReadParams())


# ---------------------------------------------------------------------------------------------- hostile inputs


def test_refcoco_memo_copies_are_one_ref(tmp_path: Path) -> None:
    """A pickle's memo repeats one object at ~2 bytes a copy: 100k copies of one ref (holding one
    sentence three times) are one ref with one region, every copy counted as an ignored member."""
    sentence = {"sent_id": 1, "sent": "man on the left"}
    data = pickle.dumps([{**REFS[0], "sentences": [sentence] * 3}] * 100_000, protocol=2)
    path = refcoco(tmp_path, "refs(unc).p", data)
    assert len(data) < 300_000  # the memo at work
    start = time.perf_counter()
    (rec,), (report,) = read_all([path], image_root=str(tmp_path))
    assert time.perf_counter() - start < 2.0
    assert [r.ref for r in rec.items or []] == ["ref:1/sent:1"] and rec.region_count == 1
    # each repeated object is named once, with how many copies the file held
    assert report.ignored == [f"{path}#ref:1/sent:1(repeat) x2", f"{path}#ref:1(repeat) x99999"]


def test_refcoco_caps(tmp_path: Path) -> None:
    """read.max_regions quarantines an image with more regions (any layout), before a region is
    built; read.max_refs makes a refs file with more refs and sentences one whole-file bad_refs."""
    path = refcoco(tmp_path / "r", "refs(unc).json", json.dumps(REFS).encode())
    (big, small), _ = read_all([path], max_regions=2)  # REFS give image 100 three regions, image 200 two
    assert fate(big) == ("quarantined", "bad_row") and big.region_count == 0 and big.name == "COCO_100.jpg"
    assert "3 regions" in big.fate.error and "read.max_regions (2)" in big.fate.error
    assert small.region_count == 2 and fate(small) == ("dropped", "image_missing")
    entries = len(REFS) + sum(len(r["sentences"]) for r in REFS)
    assert len(read_all([path], max_refs=entries)[0]) == 2
    (whole,), (report,) = read_all([path], max_refs=entries - 1)
    assert fate(whole) == ("quarantined", "bad_refs") and "read.max_refs" in whole.fate.error and report.damage
    rows = jsonl(tmp_path / "n.jsonl", [native(0, [{"box": [1, 1, 5, 5], "phrase": p} for p in "abc"])])
    (row,), _ = read_all([rows], max_regions=2)
    assert fate(row) == ("quarantined", "bad_row") and "read.max_regions (2)" in row.fate.error


def test_listing_never_crashes_on_data(tmp_path: Path) -> None:
    """Sizes too large for a float, ids that cannot key a dict: the listing goes on, the reader
    quarantines the row (or skips the instances entry, counted as ignored)."""
    image_file(tmp_path / "img.png")
    row = {"filename": "img.png", "detection": {"instances": [{"bbox": [1, 1, 5, 5], "category": "cat"}]}}
    path = jsonl(tmp_path / "o.jsonl", [{**row, "width": 10**400}, {**row, "height": math.inf}, row])
    records, _ = read_all([path])
    assert [fate(r) for r in records] == [("quarantined", "bad_row")] * 2 + [("pending", "")]
    assert "`width`" in records[0].fate.error and "`height` is inf" in records[1].fate.error
    inst = json.loads(json.dumps(INSTANCES))
    inst["annotations"] += [{"id": [5], "image_id": 100, "bbox": [0, 0, 1, 1]},
                            {"id": 12, "image_id": 100, "bbox": [0, 0, 2, 2], "category_id": [2]}]  # fmt: skip
    inst["images"].append({"id": {"x": 1}, "file_name": "x.jpg"})
    refs = [*REFS, {"ref_id": 6, "ann_id": 12, "image_id": 100, "sentences": [{"sent_id": 8, "sent": "odd"}]}]
    path = refcoco(tmp_path / "i", "refs(unc).json", json.dumps(refs).encode(), inst)
    records, (report,) = read_all([path])
    assert [r.region_count for r in records] == [4, 2]
    odd = (records[0].items or [])[-1]  # ann 12's category_id [2] names no category
    assert (odd.ref, odd.category, odd.input_box, *fate(odd)) == ("ref:6/sent:8", "", [0, 0, 2, 2], "pending", "")
    instances = path.parent / "instances.json"
    assert report.ignored == [f"{instances}#images[2]", f"{instances}#annotations[3]"]


def test_refcoco_malformed_refs_are_their_regions(tmp_path: Path) -> None:
    """A ref that cannot be read settles its own regions bad_row, naming it; one whose image id is
    unusable is an ignored member with a damage note; the file is whole-file bad_refs only when it
    is no list of dicts."""
    refs = json.loads(json.dumps(REFS))
    refs[2]["category_id"] = [1]  # ref 3, image 100
    del refs[1]["ann_id"]  # ref 2, image 200
    refs.append({"ref_id": 5, "ann_id": 10, "image_id": [100], "sentences": [{"sent_id": 9, "sent": "x"}]})
    path = refcoco(tmp_path, "refs(unc).p", pickle.dumps(refs, protocol=2))
    (first, second), (report,) = read_all([path])
    got = [(r.ref, *fate(r)) for rec in (first, second) for r in rec.items or []]
    assert got == [("ref:1/sent:1", "pending", ""), ("ref:1/sent:2", "pending", ""),
                   ("ref:3/sent:4", "quarantined", "bad_row"), ("ref:2/sent:3", "quarantined", "bad_row"),
                   ("ref:4/sent:5", "quarantined", "bad_box")]  # fmt: skip
    assert "ref:3" in first.items[2].fate.error and "category_id" in first.items[2].fate.error  # type: ignore[index]
    assert "ref:2" in second.items[0].fate.error and "no ann_id" in second.items[0].fate.error  # type: ignore[index]
    assert report.ignored == [f"{path}#ref:5"] and len(report.damage) == 1
    assert "ref:5" in report.damage[0]["error"] and "image_id" in report.damage[0]["error"]
    path = refcoco(tmp_path / "b", "refs(unc).p", pickle.dumps([REFS[0], 7], protocol=2))
    (whole,), _ = read_all([path])
    assert fate(whole) == ("quarantined", "bad_refs") and "ref 1 is a int" in whole.fate.error


def test_image_root_must_exist(tmp_path: Path) -> None:
    """A read.image_root that does not exist fails the listing (locally and on an fsspec store),
    not every sample one by one as image_missing."""
    png = image_file(tmp_path / "img.png")
    path = jsonl(tmp_path / "n.jsonl", [native(0, [{"box": [1, 1, 5, 5], "phrase": "p"}])])
    for root in (str(tmp_path / "absent"), "memory://mmcurate-test-absent"):
        with pytest.raises(InputError, match=re.escape(f"read.image_root {root!r} does not exist")):
            list_grounding_units([str(path)], GroundingReadParams(image_root=root))
    memory = fsspec.filesystem("memory")
    memory.pipe("/mmcurate-test-root/img.png", png)
    try:
        (rec,), _ = read_all([path], image_root="memory://mmcurate-test-root")
    finally:
        memory.rm("/mmcurate-test-root", recursive=True)
    assert rec.pending and rec.image == png


def test_a_long_split_makes_its_ref_unreadable_not_the_output_huge(tmp_path: Path) -> None:
    """A pickle's memo stores one 200 KB `split` once for every ref: the ref's regions are bad_row
    (naming the split's length) instead of 200 KB copied into every region."""
    import pickle

    from mmcurate.stages.grounding_io import GroundingReadParams, list_grounding_units, read_grounding_unit

    root = tmp_path / "refcoco"
    root.mkdir()
    instances = {"images": [{"id": 1, "file_name": "x.jpg", "width": 100, "height": 100}],
                 "annotations": [{"id": 10, "image_id": 1, "bbox": [1, 1, 50, 50], "category_id": 1}],
                 "categories": [{"id": 1, "name": "thing"}]}  # fmt: skip
    (root / "instances.json").write_text(json.dumps(instances))
    huge = "x" * 200_000
    refs = [{"ref_id": 0, "ann_id": 10, "image_id": 1, "split": huge, "category_id": 1,
             "sentences": [{"sent_id": 0, "sent": "a thing"}]}]  # fmt: skip
    path = root / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs, protocol=2))
    params = GroundingReadParams()
    (rec,) = [r for u in list_grounding_units([str(path)], params) for r in read_grounding_unit(u, params)]
    (region,) = rec.items or []
    assert region.fate.reason == "bad_row" and "split of 200,000 characters" in region.fate.error
    assert region.split == ""
