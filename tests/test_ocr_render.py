"""The OCR renderer: determinism, exact ground truth read back by real PP-OCR, config errors, the native output."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from mmcurate.stages.measure import cer
from mmcurate.stages.ocr_ink import homography, map_points, warp
from mmcurate.stages.ocr_render import (
    CJK_FONTS,
    KINDS,
    LATIN_FONTS,
    RenderParams,
    encode_rendered,
    render_sample,
    resolve_kit,
    write_rendered,
)

FONTS_THERE = all(os.path.isfile(p) for p in LATIN_FONTS + CJK_FONTS)
pytestmark = pytest.mark.skipif(not FONTS_THERE, reason="fonts-dejavu-core / fonts-wqy-zenhei not installed")


def only(kind: str, **kw: object) -> RenderParams:
    return RenderParams(count=50, mix={kind: 1.0}, **kw)


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def rectify(img: Image.Image, quad: list[list[float]], pad: float) -> Image.Image:
    """The quad's content as an upright crop (`pad` of the quad's height added on every side)."""
    q = np.asarray(quad, dtype=float)
    u = (q[1] - q[0]) / np.linalg.norm(q[1] - q[0])
    v = (q[3] - q[0]) / np.linalg.norm(q[3] - q[0])
    w = (np.linalg.norm(q[1] - q[0]) + np.linalg.norm(q[2] - q[3])) / 2
    h = (np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1])) / 2
    p = pad * h
    tl, tr = q[0] - (u + v) * p, q[1] + (u - v) * p
    br, bl = q[2] + (u + v) * p, q[3] - (u - v) * p
    size = (max(1, round(w + 2 * p)), max(1, round(h + 2 * p)))
    return img.transform(size, Image.Transform.QUAD, tuple(np.r_[tl, bl, br, tr]), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def ocr():
    rapidocr = pytest.importorskip("rapidocr")
    engine = rapidocr.RapidOCR(params={"Global.log_level": "error"})

    def read(crop: Image.Image) -> str:
        out = engine(np.asarray(crop), use_det=False, use_cls=False, use_rec=True)
        return out.txts[0] if out.txts else ""

    return read


def read_back(ocr, params: RenderParams, indices: range, pad: float) -> list[tuple[str, str, str, float]]:
    """(lang, text, read, cer) of every line of the samples, read from the encoded file as stored."""
    rows = []
    for i in indices:
        r = render_sample(i, params)
        img = decoded(encode_rendered(r, params, i))
        assert img.size == (r.extra["width"], r.extra["height"])
        for ln in r.lines:
            assert len(ln.quad) == 4
            assert all(0 <= x <= img.width and 0 <= y <= img.height for x, y in ln.quad), (i, ln)
            read = ocr(rectify(img, ln.quad, pad))
            rows.append((ln.lang, ln.text, read, cer(read, ln.text)))
    return rows


# ----------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_and_index_give_the_same_bytes_and_lines():
    params = RenderParams(count=12, seed=7)
    for i in range(8):
        a, b = render_sample(i, params), render_sample(i, params)
        assert encode_rendered(a, params, i) == encode_rendered(b, params, i)
        assert a.lines == b.lines and a.extra == b.extra and a.kind == b.kind
    other = RenderParams(count=12, seed=8)
    assert encode_rendered(render_sample(3, other), other, 3) != encode_rendered(render_sample(3, params), params, 3)


def test_a_sample_alone_equals_it_within_a_batch(tmp_path: Path):
    params = RenderParams(count=10, seed=3, page=(620, 877))
    write_rendered(str(tmp_path / "all"), params, 0, 10)
    write_rendered(str(tmp_path / "five"), params, 5, 6, part=1)
    rows = [json.loads(line) for line in (tmp_path / "all" / "labels-00000.jsonl").read_text().splitlines()]
    (alone,) = [json.loads(line) for line in (tmp_path / "five" / "labels-00001.jsonl").read_text().splitlines()]
    assert rows[5] == alone
    assert (tmp_path / "all" / alone["image"]).read_bytes() == (tmp_path / "five" / alone["image"]).read_bytes()


def test_a_fresh_process_renders_the_same_bytes():
    """No cache state (glyphs, fonts, photos) leaks into the output: a new process, reverse order."""
    params = RenderParams(count=20, seed=11, page=(620, 877))
    here = {i: hashlib.sha256(encode_rendered(render_sample(i, params), params, i)).hexdigest() for i in range(6)}
    code = (
        "import hashlib, json, sys\n"
        "from mmcurate.stages.ocr_render import RenderParams, encode_rendered, render_sample\n"
        "p = RenderParams.model_validate_json(sys.argv[1])\n"
        "print(json.dumps({i: hashlib.sha256(encode_rendered(render_sample(i, p), p, i)).hexdigest()"
        " for i in reversed(range(6))}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, params.model_dump_json()], capture_output=True, text=True, check=True
    )
    there = {int(k): v for k, v in json.loads(out.stdout).items()}
    assert there == here
    assert {render_sample(i, params).kind for i in range(6)} != {"document"}  # not one kind only


# ----------------------------------------------------------------------------------------------
# Exact ground truth


def test_document_lines_read_back_exactly(ocr):
    params = only("document", zh_share=0.5, seed=1)
    rows = read_back(ocr, params, range(2), pad=0.15)
    en = [c for lang, _, _, c in rows if lang == "en"]
    zh = [(text, read, c) for lang, text, read, c in rows if lang == "zh"]
    assert len(en) >= 30 and len(zh) >= 5
    # measured: 0.0 over 182 English and 29 Chinese lines of three pages
    assert float(np.mean(en)) <= 0.02
    assert float(np.mean([c for *_, c in zh])) <= 0.03
    for text, read, _ in zh:
        assert sum(map(is_cjk, read)) >= 0.8 * sum(map(is_cjk, text)), (text, read)


def test_document_boxes_are_tight_to_the_ink():
    """Lossless pages: the 1 px ring around a line's box is plain background, and each of the box's
    four edge rows / columns holds ink."""
    params = only("document", zh_share=0.4, seed=2)
    r = render_sample(0, params)
    page = np.asarray(decoded(encode_rendered(r, params, 0)).convert("L"), dtype=np.int16)
    assert len(r.lines) >= 20
    for ln in r.lines:
        (x0, y0), (x1, y1) = ln.quad[0], ln.quad[2]
        assert ln.quad == [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]  # upright on a page
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        ring = np.concatenate(
            [page[y0 - 1, x0 - 1 : x1 + 1], page[y1, x0 - 1 : x1 + 1], page[y0:y1, x0 - 1], page[y0:y1, x1]]
        )
        assert ring.min() == ring.max(), ln.text
        inside = page[y0:y1, x0:x1] != ring[0]
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), ln.text


def test_receipt_lines_read_back(ocr):
    params = only("receipt", zh_share=0.5, seed=4)
    rows = read_back(ocr, params, range(3), pad=0.15)
    assert len(rows) >= 40
    assert float(np.mean([c for *_, c in rows])) <= 0.05  # measured 0.0006 (English), 0.023 (Chinese)
    zh = [(text, read) for lang, text, read, _ in rows if lang == "zh"]
    assert zh and all(any(map(is_cjk, read)) for _, read in zh)


def test_scene_text_and_word_crops_read_back(ocr):
    scene = read_back(ocr, only("scene", seed=5), range(6), pad=0.15)
    words = read_back(ocr, only("word", seed=6), range(12), pad=0.0)
    assert len(scene) >= 8 and len(words) == 12
    # perspective, blur, noise and JPEG make some misreads fair; measured 0.0 on 23 scene lines, 6 words
    assert float(np.mean([c for *_, c in scene])) <= 0.15
    assert float(np.mean([c for *_, c in words])) <= 0.15


def test_word_crops_are_task_rec_with_the_word_quad_inside():
    params = only("word", seed=9)
    for i in range(10):
        r = render_sample(i, params)
        w, h = r.image.size
        assert r.task == "rec" and len(r.lines) == 1
        assert r.lines[0].quad == [[0.0, 0.0], [float(w), 0.0], [float(w), float(h)], [0.0, float(h)]]
        quad = np.asarray(r.extra["word_quad"])
        assert (quad >= 0).all() and (quad[:, 0] <= w).all() and (quad[:, 1] <= h).all()
        assert r.lines[0].text and r.lines[0].lang in ("en", "zh")


def test_zh_share_sets_the_share_of_chinese_text():
    """A line's lang is its script; no Chinese at zh_share 0, Chinese in every word-bearing kind at 1."""
    none = RenderParams(count=30, zh_share=0.0, seed=12, page=(620, 877))
    assert not any(
        ln.lang == "zh" or any(map(is_cjk, ln.text)) for i in range(12) for ln in render_sample(i, none).lines
    )
    every = RenderParams(count=30, zh_share=1.0, seed=12, page=(620, 877))
    for i in range(12):
        r = render_sample(i, every)
        assert any(ln.lang == "zh" for ln in r.lines), r.kind
        assert all((ln.lang == "zh") == any(map(is_cjk, ln.text)) for ln in r.lines)


def test_homography_moves_pixels_and_points_alike():
    """The primitive under every quad: the pixels `warp` moves land where `map_points` puts the corners."""
    src = Image.new("L", (200, 120), 0)
    ImageDraw.Draw(src).rectangle((40, 30, 159, 89), fill=255)  # pixels 40..159 x 30..89: [40, 160) x [30, 90)
    corners = [[40, 30], [160, 30], [160, 90], [40, 90]]
    dst = [[60.5, 52.0], [230.0, 40.25], [241.0, 150.0], [48.0, 133.5]]
    h = homography(corners, dst)
    assert np.allclose(map_points(h, corners), dst)
    out = np.asarray(warp(src, h, (300, 200)), dtype=np.float64) / 255
    # the warped coverage has the area and centroid of the polygon `dst` (shoelace formulas)
    x, y = np.asarray(dst).T
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    cx, cy = ((x + np.roll(x, -1)) * cross).sum() / (6 * area), ((y + np.roll(y, -1)) * cross).sum() / (6 * area)
    ys, xs = np.mgrid[0:200, 0:300] + 0.5  # pixel centres
    assert abs(out.sum() - area) / area < 0.005
    assert abs((xs * out).sum() / out.sum() - cx) < 0.05
    assert abs((ys * out).sum() / out.sum() - cy) < 0.05


# ----------------------------------------------------------------------------------------------
# Config errors


def test_a_missing_font_names_the_key_and_the_debian_package(tmp_path: Path):
    missing = str(tmp_path / "wqy-zenhei.ttc")
    with pytest.raises(ValidationError, match=r"render\.fonts\.cjk\[0\].*fonts-wqy-zenhei"):
        RenderParams(count=1, fonts={"latin": LATIN_FONTS, "cjk": [missing]})
    with pytest.raises(ValidationError, match=r"render\.fonts\.latin\[1\].*fonts-dejavu-core"):
        RenderParams(count=1, fonts={"latin": [LATIN_FONTS[0], missing], "cjk": CJK_FONTS})
    with pytest.raises(ValidationError, match=r"render\.fonts\.cjk\[0\].*cannot draw cjk"):
        RenderParams(count=1, fonts={"latin": LATIN_FONTS, "cjk": [LATIN_FONTS[0]]})
    with pytest.raises(ValidationError, match=r"render\.fonts needs exactly"):
        RenderParams(count=1, fonts={"latin": LATIN_FONTS})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mix": {"document": 1.0, "poster": 1.0}}, r"render\.mix: unknown kind.*poster"),
        ({"mix": {"document": -1.0, "word": 2.0}}, r"render\.mix weights"),
        ({"mix": {"document": 0.0}}, r"render\.mix must give"),
        ({"mix": {"word": float("nan")}}, r"render\.mix weights"),
        ({"jpeg_quality": (90, 60)}, r"render\.jpeg_quality is a \[low, high\] range"),
        ({"blur": (0.0, 20.0)}, r"render\.blur values"),
        ({"perspective": 0.3}, r"render\.perspective"),
        ({"zh_share": 1.5}, r"render\.zh_share"),
        ({"page": (100, 1754)}, r"render\.page"),
        ({"words": {"en": "/no/such/list.txt", "zh": None}}, r"render\.words\.en"),
        ({"backgrounds": "/no/such/folder"}, r"render\.backgrounds"),
        ({"shuffle": True}, r"shuffle"),
    ],
)
def test_bad_values_name_their_key(change: dict, message: str):
    with pytest.raises(ValidationError, match=message):
        RenderParams(count=1, **change)


def test_word_lists_from_files_keep_only_what_the_fonts_draw(tmp_path: Path):
    words = tmp_path / "en.txt"
    words.write_text("harbor\n\n蛋糕\nharbor\nlantern\n", encoding="utf-8")  # 蛋糕: no DejaVu glyphs
    params = RenderParams(count=5, words={"en": str(words), "zh": None})
    assert resolve_kit(params).words["en"] == ("harbor", "lantern")
    crops = RenderParams(count=20, mix={"word": 1.0}, zh_share=0.0, words={"en": str(words), "zh": None})
    texts = {ln.text.lower() for i in range(20) for ln in render_sample(i, crops).lines}
    assert texts & {"harbor", "lantern"} and not any(map(is_cjk, "".join(texts)))
    undrawable = tmp_path / "zh-only.txt"
    undrawable.write_text("蛋糕\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"render\.words\.en: no word"):
        resolve_kit(RenderParams(count=5, words={"en": str(undrawable), "zh": None}))


def test_backgrounds_from_a_folder(tmp_path: Path):
    Image.new("RGB", (300, 200), (20, 140, 60)).save(tmp_path / "green.jpg")
    (tmp_path / "notes.txt").write_text("not a photo")
    params = RenderParams(count=4, mix={"scene": 1.0}, backgrounds=str(tmp_path))
    assert [Path(p).name for p in resolve_kit(params).backgrounds] == ["green.jpg"]
    r = render_sample(0, params)
    assert r.extra["background"] == "green.jpg" and r.lines
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match=r"render\.backgrounds: .* holds no image"):
        RenderParams(count=1, backgrounds=str(tmp_path / "empty"))


# ----------------------------------------------------------------------------------------------
# The native output


@pytest.mark.parametrize("where", ["local", "memory"])
def test_write_rendered_writes_rows_and_images_that_decode(tmp_path: Path, where: str):
    import fsspec

    out = str(tmp_path / "out") if where == "local" else f"memory://render-test-{os.getpid()}"
    params = RenderParams(count=9, seed=21, page=(620, 877))
    counts = write_rendered(out, params, part=3)
    fs, root = fsspec.core.url_to_fs(out)
    assert sorted(Path(p).name for p in fs.ls(root, detail=False)) == ["images", "labels-00003.jsonl"]
    rows = [json.loads(line) for line in fs.cat(f"{root}/labels-00003.jsonl").decode().splitlines()]
    assert len(rows) == 9 == sum(counts.values())
    assert counts == {k: sum(r["kind"] == k for r in rows) for k in KINDS}
    assert len(fs.ls(f"{root}/images")) == 9  # no temporary file left
    for i, row in enumerate(rows):
        assert row["origin"] == "rendered" and row["task"] == ("rec" if row["kind"] == "word" else "det")
        assert row["image"] == f"images/{row['kind']}-{i:08d}.{'png' if row['kind'] == 'document' else 'jpg'}"
        img = Image.open(io.BytesIO(fs.cat(f"{root}/{row['image']}")))
        assert img.size == (row["extra"]["width"], row["extra"]["height"])
        assert img.format == ("PNG" if row["kind"] == "document" else "JPEG")
        assert row["lines"] and all(set(ln) == {"quad", "text", "lang", "ignore"} for ln in row["lines"])
        assert all(len(ln["quad"]) == 4 and ln["ignore"] is False and ln["text"] for ln in row["lines"])
    if where == "memory":
        fs.rm(root, recursive=True)


def test_write_rendered_refuses_a_range_outside_count(tmp_path: Path):
    with pytest.raises(ValueError, match=r"render\.count"):
        write_rendered(str(tmp_path), RenderParams(count=3), 2, 5)
