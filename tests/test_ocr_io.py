"""The OCR corpus's reader: ICDAR folders, COCO-Text / COCO / mmocr JSON, mmocr recognition labels,
transcript and native jsonl, webdataset shards, as `OcrSample`s.

Every case checks the books: each unit gives exactly the records its container holds (images of
a folder slice, images a JSON file lists, lines of a jsonl or txt, samples of a tar), each one kept
pending, dropped or quarantined with its reason. Expected counts are computed from the files here
with plain Python, never with the reader's own parsers."""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from mmcurate.schemas import OcrSample, Status, TextLine
from mmcurate.stages.ocr_io import (
    InputError,
    OcrReadParams,
    ReadReport,
    list_ocr_units,
    ocr_content_id,
    read_ocr_unit,
)
from mmcurate.stages.ocr_labels import icdar_line, min_area_quad, polygon_quad

MMOCR = "mmocr"


def jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (40, 24)) -> bytes:
    """A small real JPEG (distinct per seed), written to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, ((seed * 47) % 256, (seed * 91) % 256, (seed * 13) % 256))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def read_all(inputs: list[Path | str], **params: Any) -> tuple[list[OcrSample], list[ReadReport]]:
    """List and read every unit; each unit's records must be exactly what its container holds."""
    p = OcrReadParams(**params)
    records: list[OcrSample] = []
    reports = []
    for unit in list_ocr_units([str(i) for i in inputs], p):
        report = ReadReport()
        got = list(read_ocr_unit(unit, p, report))
        assert report.produced == len(got)
        if report.expected is not None:
            assert report.produced + report.not_read == report.expected, unit
        if unit.kind == "folder":
            assert report.expected == len(unit.files)
        records += got  # type: ignore[arg-type]
        reports.append(report)
    assert all(isinstance(r, OcrSample) for r in records)
    return records, reports


def fates(records: list[OcrSample]) -> dict[str, tuple[str, str]]:
    return {r.name: (r.fate.status.value, r.fate.reason) for r in records}


def by_name(records: list[OcrSample]) -> dict[str, OcrSample]:
    return {r.name: r for r in records}


def need(peer_data: Path, *parts: str) -> Path:
    path = peer_data.joinpath(MMOCR, *parts)
    if not path.exists():
        pytest.skip(f"peer data {path} not present")
    return path


# ---------------------------------------------------------------------------------------------- peer data


def gt_file_lines(folder: Path) -> dict[str, list[str]]:
    """Image name -> the non-blank lines of its gt file, by a plain read (BOM stripped)."""
    out = {}
    for gt in sorted(folder.glob("gt_*.txt")):
        with open(gt, encoding="utf-8") as f:
            text = f.read().lstrip("\ufeff")
        out[gt.name[3:-4] + ".jpg"] = [ln for ln in text.splitlines() if ln.strip()]
    return out


def test_icdar_toy_dataset(peer_data: Path) -> None:
    imgs, gts = need(peer_data, "v0.6.3", "toy_dataset", "imgs", "test"), need(peer_data, "v0.6.3", "toy_dataset")
    gts = gts / "annotations" / "test"
    expected = gt_file_lines(gts)
    records, reports = read_all([imgs], gt_root=str(gts))
    assert len(records) == 10 == len(expected)
    assert all(r.pending and r.origin == "icdar" and r.task == "det" and r.frame == "raw" for r in records)
    got = by_name(records)
    assert {n: len(r.lines) for n, r in got.items()} == {n: len(v) for n, v in expected.items()}
    assert sum(len(r.lines) for r in records) == 82 == sum(len(v) for v in expected.values())
    marks = sum(1 for v in expected.values() for ln in v if ln.split(",", 8)[8] == "###")
    assert sum(ln.ignore for r in records for ln in r.lines) == marks
    assert all(ln.text == "" for r in records for ln in r.lines if ln.ignore)
    first = got["img_1.jpg"].lines[0]
    assert (first.text, first.ignore) == ("Genaxis Theatre", False)
    assert first.quad == [[377, 117], [463, 117], [465, 130], [378, 130]]
    assert got["img_1.jpg"].image == (imgs / "img_1.jpg").read_bytes()
    assert got["img_1.jpg"].file_bytes == (imgs / "img_1.jpg").stat().st_size
    assert reports[0].ignored == []  # the gt files are under gt_root, outside the input


def test_coco_toy_instances(peer_data: Path) -> None:
    root = need(peer_data, "v0.6.3", "toy_dataset")
    doc = json.loads((root / "instances_test.json").read_text())
    names = {img["id"]: img["file_name"] for img in doc["images"]}
    counts = Counter(names[a["image_id"]] for a in doc["annotations"])
    records, _ = read_all([root / "instances_test.json"], image_root=str(root / "imgs"))
    assert len(records) == len(doc["images"]) == 10
    assert all(r.pending and r.origin == "coco_text" for r in records)
    assert {r.name: len(r.lines) for r in records} == dict(counts)
    # No transcriptions in this file: every box is do-not-care, with no text.
    assert all(ln.ignore and ln.text == "" for r in records for ln in r.lines)
    first = next(a for a in doc["annotations"] if a["image_id"] == doc["images"][0]["id"])
    seg = first["segmentation"][0]
    assert by_name(records)[names[first["image_id"]]].lines[0].quad == [seg[i : i + 2] for i in range(0, 8, 2)]


def test_mmocr_textdet(peer_data: Path) -> None:
    path = need(peer_data, "head", "det_toy_dataset", "textdet_test.json")
    toy = need(peer_data, "v0.6.3", "toy_dataset")
    doc = json.loads(path.read_text())
    # img_path is `imgs/test/img_N.jpg`: it resolves against the toy set's root, not imgs/test.
    wrong, _ = read_all([path], image_root=str(toy / "imgs" / "test"))
    assert Counter(r.fate.reason for r in wrong) == {"missing_image": 10}
    records, _ = read_all([path], image_root=str(toy))
    assert all(r.pending and r.origin == "mmocr" for r in records)
    assert {r.name: len(r.lines) for r in records} == {e["img_path"]: len(e["instances"]) for e in doc["data_list"]}
    expected = gt_file_lines(toy / "annotations" / "test")
    for r in records:  # the same images and boxes as the ICDAR files: do-not-care where they say ###
        marks = [ln.split(",", 8)[8] == "###" for ln in expected[r.name.rsplit("/", 1)[1]]]
        assert [ln.ignore for ln in r.lines] == marks


def test_rec_toy_three_formats_agree(peer_data: Path) -> None:
    root = need(peer_data, "head", "rec_toy_dataset")
    plain = [ln.split(" ", 1) for ln in (root / "old_label.txt").read_text().splitlines() if ln.strip()]
    read = {}
    for name in ("labels.json", "old_label.txt", "old_label.jsonl"):
        records, _ = read_all([root / name], image_root=str(root / "imgs"))
        assert len(records) == 10
        assert all(r.pending and r.task == "rec" and r.origin == "rec" for r in records)
        assert all(len(r.lines) == 1 and r.lines[0].quad == [] for r in records)
        read[name] = [(r.name, r.lines[0].text, r.id) for r in records]
    assert [(n, t) for n, t, _ in read["old_label.txt"]] == [(n, t) for n, t in plain]
    assert read["labels.json"] == read["old_label.txt"] == read["old_label.jsonl"]


# ---------------------------------------------------------------------------------------------- ICDAR


GOOD = (
    "\ufeff377,117,463,117,465,130,378,130,Genaxis Theatre\r\n\r\n"
    "1,2,30,2,30,20,1,20,Hello, world\r\n5,5,9,5,9,9,5,9,###\r\n"
)
"""BOM, CRLF, a blank line, a transcription with a comma, a do-not-care line."""


def icdar_folder(root: Path) -> dict[str, str]:
    """An image folder with one case per image; returns image name -> what its gt file holds."""
    cases = {
        "ok.jpg": ("gt_ok.txt", GOOD),
        "nan.jpg": ("gt_nan.txt", "1,2,3,4,5,6,7,8,fine\n1,2,nan,4,5,6,7,8,bad\n"),
        "abc.jpg": ("gt_abc.txt", "1,2,abc,4,5,6,7,8,word\n"),
        "few.jpg": ("gt_few.txt", "1,2,3,4,5,6,7,word\n"),
        "inf.jpg": ("gt_inf.txt", "1,2,3,4,5,6,7,inf,word\n"),
        "empty.jpg": ("gt_empty.txt", "\ufeff\r\n\r\n"),
        "y13c.jpg": ("gt_y13c.txt", '38, 43, 920, 215, "Tired, \\"ness\\""\n'),
        "y13s.jpg": ("y13s.txt", '158 128 411 181 "Footpath"\n'),
        "ccw.jpg": ("gt_ccw.txt", "0,0,0,10,10,10,10,0,Turned\n"),
        "nogt.jpg": (None, ""),
    }
    for i, (image, (gt, text)) in enumerate(cases.items()):
        jpeg(root / image, i)
        if gt:
            (root / gt).write_bytes(text.encode("utf-8"))
    (root / "gt_orphan.txt").write_text("1,1,2,1,2,2,1,2,alone\n")
    (root / "README.md").write_text("an ICDAR-style folder\n")
    return {image: text for image, (_, text) in cases.items()}


def test_icdar_cases_fates_and_books(tmp_path: Path) -> None:
    folder = tmp_path / "icdar"
    cases = icdar_folder(folder)
    records, reports = read_all([folder], lang="en")
    assert len(records) == len(cases) == sum(r.expected or 0 for r in reports)
    assert fates(records) == {
        "ok.jpg": ("pending", ""), "y13c.jpg": ("pending", ""), "y13s.jpg": ("pending", ""), "ccw.jpg": ("pending", ""),
        "nan.jpg": ("quarantined", "bad_label"), "abc.jpg": ("quarantined", "bad_label"),
        "few.jpg": ("quarantined", "bad_label"), "inf.jpg": ("quarantined", "bad_label"),
        "empty.jpg": ("dropped", "empty_ground_truth"), "nogt.jpg": ("quarantined", "missing_ground_truth"),
    }  # fmt: skip
    got = by_name(records)
    assert got["nan.jpg"].fate.error.startswith("gt_nan.txt line 2:") and "NaN" in got["nan.jpg"].fate.error
    assert "gt_abc.txt line 1" in got["abc.jpg"].fate.error and "'abc'" in got["abc.jpg"].fate.error
    assert "7 coordinates" in got["few.jpg"].fate.error
    ok = got["ok.jpg"]
    assert [(ln.text, ln.ignore, ln.lang) for ln in ok.lines] == [
        ("Genaxis Theatre", False, "en"),
        ("Hello, world", False, "en"),
        ("", True, "en"),
    ]
    assert ok.lines[1].quad == [[1, 2], [30, 2], [30, 20], [1, 20]]
    assert got["y13c.jpg"].lines[0].text == 'Tired, "ness"'
    assert got["y13c.jpg"].lines[0].quad == [[38, 43], [920, 43], [920, 215], [38, 215]]
    assert got["y13s.jpg"].lines[0].text == "Footpath"
    assert got["ccw.jpg"].lines[0].quad == [[0, 0], [10, 0], [10, 10], [0, 10]]  # made clockwise, start kept
    others = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".jpg"))
    assert sorted(Path(p).name for r in reports for p in r.ignored) == others  # gt files, orphan, README
    assert all(r.image is None for r in records if not r.pending)  # a settled record holds no bytes


def test_icdar_gt_root_mirrors_subfolders(tmp_path: Path) -> None:
    for i, sub in enumerate(("a", "b")):
        jpeg(tmp_path / "imgs" / sub / "img_1.jpg", i)
        (tmp_path / "gt" / sub).mkdir(parents=True)
        (tmp_path / "gt" / sub / "gt_img_1.txt").write_text(f"0,0,4,0,4,4,0,4,word {sub}\n")
    jpeg(tmp_path / "imgs" / "flat.jpg", 5)
    (tmp_path / "gt" / "gt_flat.txt").write_text("0,0,4,0,4,4,0,4,flat\n")
    records, _ = read_all([tmp_path / "imgs"], gt_root=str(tmp_path / "gt"), folder_unit_size=2)
    assert {r.name: r.lines[0].text for r in records} == {"a/img_1.jpg": "word a", "b/img_1.jpg": "word b",
                                                          "flat.jpg": "flat"}  # fmt: skip
    with pytest.raises(InputError, match=r"read\.gt_root"):
        list_ocr_units([str(tmp_path / "imgs")], OcrReadParams(gt_root=str(tmp_path / "nowhere")))


@pytest.mark.parametrize(
    ("line", "quad", "text"),
    [
        ("1,2,3,2,3,4,1,4,a,b,,c", [[1, 2], [3, 2], [3, 4], [1, 4]], "a,b,,c"),
        ("1.5, 2, 3, 2, 3, 4, 1, 4,x", [[1.5, 2], [3, 2], [3, 4], [1, 4]], "x"),
        ('4,6,1,2,"q"', [[1, 2], [4, 2], [4, 6], [1, 6]], "q"),
        ('1 2 3 4 "two words"', [[1, 2], [3, 2], [3, 4], [1, 4]], "two words"),
    ],
)
def test_icdar_line_forms(line: str, quad: list, text: str) -> None:
    assert icdar_line(line) == (quad, text)


@pytest.mark.parametrize(
    ("line", "says"),
    [("1,2,3,4,5,6,7,8", "no transcription"), ("1,2,3,4,5,6,7", "7 coordinates"), ('1,2,3,4,"open', "quote"),
     ("1,2,3,4,5,6,-inf,8,x", "NaN or infinite"), ("x", "0 coordinates")],
)  # fmt: skip
def test_icdar_line_errors(line: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        icdar_line(line)


# ---------------------------------------------------------------------------------------------- geometry


def test_polygon_becomes_min_area_rectangle() -> None:
    """A rotated 40 x 10 rectangle given as 8 points (corners and side midpoints) gives back its corners."""
    a = math.radians(30)
    ux, uy, vx, vy = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
    corners = [(100 + u * ux + v * vx, 50 + u * uy + v * vy) for u, v in ((0, 0), (40, 0), (40, 10), (0, 10))]
    mids = [((p[0] + q[0]) / 2, (p[1] + q[1]) / 2) for p, q in zip(corners, corners[1:] + corners[:1], strict=True)]
    ring = [c for pair in zip(corners, mids, strict=True) for c in pair]
    quad = polygon_quad([v for p in ring for v in p], "poly")
    assert all(math.dist(q, c) < 1e-3 for q, c in zip(quad, corners, strict=True))
    # Started elsewhere and run the other way round: still clockwise, from the corner nearest the first point.
    turned = min_area_quad([ring[4], *reversed(ring[:4]), *reversed(ring[5:])])  # c2, m1, c1, m0, c0, ...
    assert all(math.dist(q, corners[k]) < 1e-3 for q, k in zip(turned, (2, 3, 0, 1), strict=True))


# ---------------------------------------------------------------------------------------------- JSON


def coco_text(tmp_path: Path) -> Path:
    for i, name in enumerate(("a.jpg", "b.jpg")):
        jpeg(tmp_path / "images" / name, i)
    doc = {
        "imgs": {
            "1": {"id": 1, "file_name": "a.jpg", "width": 40, "height": 24, "set": "train"},
            "2": {"id": 2, "file_name": "b.jpg", "width": 40, "height": 24, "set": "val"},
            "3": {"id": 3, "file_name": "gone.jpg", "width": 40, "height": 24, "set": "train"},
        },
        "anns": {
            "10": {"id": 10, "image_id": 1, "bbox": [1, 2, 10, 5], "utf8_string": "STOP", "legibility": "legible",
                   "language": "english", "class": "machine printed"},
            "11": {"id": 11, "image_id": 1, "bbox": [20, 2, 5, 5], "mask": [20, 2, 25, 2, 25, 7, 20, 7],
                   "legibility": "illegible", "language": "na", "class": "handwritten"},
            "12": {"id": 12, "image_id": 3, "bbox": [0, 0, 1, 1], "utf8_string": "x", "legibility": "legible"},
            "13": {"id": 13, "image_id": 99, "bbox": [0, 0, 1, 1], "utf8_string": "lost", "legibility": "legible"},
        },
        "imgToAnns": {"1": [10, 11], "2": [], "3": [12]},
    }  # fmt: skip
    path = tmp_path / "cocotext.v2.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_text_v2(tmp_path: Path) -> None:
    path = coco_text(tmp_path)
    records, reports = read_all([path], image_root=str(tmp_path / "images"), lang="xx")
    assert len(records) == 3 == reports[0].expected  # the images the file lists
    assert fates(records) == {"a.jpg": ("pending", ""), "b.jpg": ("dropped", "empty_ground_truth"),
                              "gone.jpg": ("quarantined", "missing_image")}  # fmt: skip
    a = by_name(records)["a.jpg"]
    assert a.origin == "coco_text" and a.source.uri.endswith("images/a.jpg")
    assert [(ln.text, ln.ignore, ln.lang) for ln in a.lines] == [("STOP", False, "en"), ("", True, "xx")]
    assert a.lines[0].quad == [[1, 2], [11, 2], [11, 7], [1, 7]]
    assert a.lines[1].quad == [[20, 2], [25, 2], [25, 7], [20, 7]]  # the mask, not the bbox
    extra = json.loads(a.extra)
    assert extra["image"]["set"] == "train"
    assert [e["legibility"] for e in extra["lines"]] == ["legible", "illegible"]
    assert [e["class"] for e in extra["lines"]] == ["machine printed", "handwritten"]
    assert reports[0].ignored == [f"{path}#annotation 13"]  # names an image the file does not list


def test_coco_style_transcriptions_and_polygons(tmp_path: Path) -> None:
    jpeg(tmp_path / "p.jpg", 1)
    seg = [[0, 0, 10, 0, 20, 0, 20, 8, 10, 8, 0, 8]]  # six points of an axis-aligned 20 x 8 box
    doc = {
        "images": [{"id": 7, "file_name": "p.jpg"}, {"id": 8, "file_name": "p.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [0, 0, 20, 8], "segmentation": seg, "transcription": "wide", "iscrowd": 0},
            {"id": 2, "image_id": 7, "bbox": [30, 1, 4, 4], "iscrowd": 1, "text": "crowd"},
            {"id": 3, "image_id": 7, "bbox": [40, 1, 4, 4], "iscrowd": 0},
            {"id": 4, "image_id": 8, "bbox": [0, 0, "x", 4], "text": "bad"},
        ],
    }  # fmt: skip
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    records, _ = read_all([path])
    assert [(r.fate.status, r.fate.reason) for r in records] == [(Status.PENDING, ""), (Status.QUARANTINED,
                                                                                      "bad_label")]  # fmt: skip
    assert "annotation 0" in records[1].fate.error
    lines = records[0].lines
    assert [(ln.text, ln.ignore) for ln in lines] == [("wide", False), ("crowd", True), ("", True)]
    assert lines[0].quad == [[0, 0], [20, 0], [20, 8], [0, 8]]


def test_broken_json_is_one_record(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"imgs": {"1": {"file_name": "a.jpg"}')
    records, reports = read_all([tmp_path / "broken.json"])
    assert len(records) == 1 and records[0].fate.reason == "bad_json"
    assert reports[0].expected is None and reports[0].damage[0]["records"] == "unknown"


def test_json_read_limit(tmp_path: Path) -> None:
    path = coco_text(tmp_path)
    records, reports = read_all([path], image_root=str(tmp_path / "images"), limit=2)
    assert len(records) == 2 and reports[0].not_read == 1 and reports[0].expected == 3


# ---------------------------------------------------------------------------------------------- jsonl, txt, tar


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
    return path


def test_transcript_jsonl(tmp_path: Path) -> None:
    jpeg(tmp_path / "page.jpg", 3)
    path = write_lines(tmp_path / "pages.jsonl", [
        {"image": "page.jpg", "text": "Chapter 1\nIt was", "source": "scan"},
        {"image": "page.jpg", "lines": ["first line", "second line"]},
        b'{"image": "page.jpg", "text": ',
        {"image": "missing.jpg", "transcript": "lost"},
        {"image": "page.jpg", "text": "   "},
        {"image": "../outside.jpg", "text": "escape"},
        {"image": "page.jpg", "text": 5},
        {"picture": "page.jpg", "caption": "fits no layout"},
    ])  # fmt: skip
    records, reports = read_all([path])
    assert len(records) == 8 == reports[0].expected == len(path.read_bytes().splitlines())
    assert [r.fate.reason for r in records] == [
        "",
        "",
        "bad_json",
        "missing_image",
        "empty_ground_truth",
        "outside_root",
        "bad_row",
        "bad_row",
    ]
    assert "read.layout" in records[-1].fate.error
    first, second = records[0], records[1]
    assert (first.task, first.origin, first.transcript, first.lines) == ("page", "transcript", "Chapter 1\nIt was", [])
    assert json.loads(first.extra) == {"source": "scan"}
    assert second.transcript == "first line\nsecond line"
    assert first.id != second.id and first.source.member == "line1"


def test_native_jsonl(tmp_path: Path) -> None:
    jpeg(tmp_path / "r.jpg", 4)
    quad = [[1, 1], [9, 1], [9, 5], [1, 5]]
    path = write_lines(tmp_path / "rendered.jsonl", [
        {"image": "r.jpg", "lines": [{"quad": quad, "text": "Hi", "lang": "de"}, {"quad": quad, "text": "?"}],
         "origin": "rendered", "font": "DejaVuSans"},
        {"image": "r.jpg", "lines": [{"quad": [[1, 1], [9, 1], [9, "abc"], [1, 5]], "text": "x"}]},
        {"image": "r.jpg", "lines": [{"quad": [1, 1, 9, 1], "text": "two points"}]},
        b'{"image": "r.jpg", "lines": [{"quad": [[1, 1], [9, 1], [9, NaN], [1, 5]], "text": "nan"}]}',
    ])  # fmt: skip
    records, _ = read_all([path], lang="en", box_frame="oriented")
    assert [r.fate.reason for r in records] == ["", "bad_label", "bad_label", "bad_label"]
    ok = records[0]
    assert (ok.origin, ok.task, ok.frame) == ("rendered", "det", "oriented")
    assert [(ln.text, ln.lang, ln.quad) for ln in ok.lines] == [("Hi", "de", quad), ("?", "en", quad)]
    assert json.loads(ok.extra) == {"font": "DejaVuSans"}
    assert "lines[0].quad" in records[1].fate.error and "not finite" in records[3].fate.error


def test_rec_txt_bad_lines(tmp_path: Path) -> None:
    for i, name in enumerate(("w1.jpg", "w2.jpg")):
        jpeg(tmp_path / name, i)
    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xef\xbb\xbfw1.jpg GRAND HOTEL\r\nw2.jpg\n\nw2.jpg caf\xe9\nw3.jpg lost\nw2.jpg \n")
    records, _ = read_all([path])
    assert len(records) == 6 == len(path.read_bytes().splitlines())
    assert [r.fate.reason for r in records] == [
        "",
        "bad_label",
        "bad_label",
        "bad_label",
        "missing_image",
        "empty_ground_truth",
    ]
    assert records[0].lines[0].text == "GRAND HOTEL" and records[0].name == "w1.jpg"
    assert "not valid UTF-8" in records[3].fate.error


def tar_of(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_webdataset_transcripts_and_native(tmp_path: Path) -> None:
    img = jpeg(tmp_path / "x.jpg", 9)
    native = {"lines": [{"quad": [[0, 0], [4, 0], [4, 4], [0, 4]], "text": "Hi"}], "origin": "rendered"}
    path = tar_of(tmp_path / "shard-000.tar", {
        "a.jpg": img, "a.txt": b"A page\nof text",
        "b.jpg": img, "b.json": json.dumps(native).encode(),
        "c.jpg": img,
        "d.txt": b"no image",
        "e.jpg": img, "e.txt": b"\xff\xfe bad",
    })  # fmt: skip
    records, _ = read_all([path])
    assert len(records) == 5  # the samples the shard holds
    assert fates(records) == {"a": ("pending", ""), "b": ("pending", ""), "c": ("quarantined", "missing_ground_truth"),
                              "d": ("quarantined", "missing_image"), "e": ("quarantined", "bad_label")}  # fmt: skip
    got = by_name(records)
    assert (got["a"].task, got["a"].transcript) == ("page", "A page\nof text")
    assert (got["b"].task, got["b"].origin, got["b"].lines[0].text) == ("det", "rendered", "Hi")


# ---------------------------------------------------------------------------------------------- listing


def test_listing_is_deterministic(tmp_path: Path) -> None:
    folder = tmp_path / "icdar"
    icdar_folder(folder)
    path = write_lines(tmp_path / "pages.jsonl", [{"image": "icdar/ok.jpg", "text": f"t{i}"} for i in range(5)])
    coco_text(tmp_path / "ct")
    inputs = [str(folder), str(path), str(tmp_path / "ct" / "cocotext.v2.json")]
    p = OcrReadParams(folder_unit_size=4, jsonl_unit_lines=2)
    units = list_ocr_units(inputs, p)
    assert units == list_ocr_units(list(reversed(inputs)), p) == list_ocr_units(inputs, p)
    assert [u.index for u in units] == list(range(len(units)))
    assert Counter(u.kind for u in units) == {"folder": 3, "jsonl": 3, "json": 1}
    assert [(u.start, u.stop) for u in units if u.kind == "jsonl"] == [(0, 2), (2, 4), (4, 5)]
    folder_units = [u for u in units if u.kind == "folder"]
    assert sum(len(u.files) for u in folder_units) == 10 and folder_units[0].ignored  # gt files counted once
    assert not any(u.ignored for u in folder_units[1:])


def test_auto_refuses_what_it_cannot_tell(tmp_path: Path) -> None:
    (tmp_path / "ambiguous.json").write_text(json.dumps({"data_list": [{"img_path": "a.jpg", "instances": []}]}))
    (tmp_path / "labelme.json").write_text(json.dumps({"shapes": [], "imagePath": "a.jpg"}))
    write_lines(tmp_path / "both.jsonl", [{"image": "a.jpg", "filename": "a.jpg", "text": "x"}])
    write_lines(tmp_path / "none.jsonl", [{"picture": "a.jpg", "caption": "x"}])
    for name in ("ambiguous.json", "labelme.json", "both.jsonl", "none.jsonl"):
        with pytest.raises(InputError, match=r"read\.layout"):
            list_ocr_units([str(tmp_path / name)], OcrReadParams())
    # Told the layout, the same file reads: its one image has no instance, so nothing to learn from.
    records, _ = read_all([tmp_path / "ambiguous.json"], layout="mmocr")
    assert [(r.origin, r.fate.reason) for r in records] == [("mmocr", "empty_ground_truth")]
    with pytest.raises(InputError, match="no rec label files"):
        jpeg(tmp_path / "imgs" / "a.jpg")
        list_ocr_units([str(tmp_path / "imgs")], OcrReadParams(layout="rec"))


def test_params_name_their_keys() -> None:
    with pytest.raises(ValidationError, match=r"read\.gt_root"):
        OcrReadParams(layout="coco_text", gt_root="/data/gt")
    with pytest.raises(ValidationError, match=r"read\.image_root"):
        OcrReadParams(image_root=" ")
    with pytest.raises(ValidationError):
        OcrReadParams(box_frame="image")
    with pytest.raises(ValidationError):
        OcrReadParams(gt_dir="/data/gt")


def test_content_id_is_stable_and_label_sensitive() -> None:
    line = TextLine([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]], "Hi")
    base = ocr_content_id(b"img", [line], "")
    assert len(base) == 32 and base == ocr_content_id(b"img", [TextLine(line.quad, "Hi", lang="de")], "")
    assert base != ocr_content_id(b"img", [TextLine(line.quad, "Ho")], "")
    assert base != ocr_content_id(b"img", [TextLine(line.quad, "Hi", ignore=True)], "")
    assert base != ocr_content_id(b"img", [line], "Hi")
    assert base != ocr_content_id(b"imh", [line], "")
