"""The demo OCR corpus: rendered samples with exact labels, and an ICDAR-style folder with one of each trap.

`build_corpus(dest)` writes

* `rendered/`: documents, receipts, scene text on the bundled photographs and word crops from
  `mmcurate ocr-render` (native jsonl: `labels-00000.jsonl` + `images/`);
* `icdar/`: signs drawn here with ICDAR 2015 ground truth beside them (`gt_<name>.txt`,
  `x1,y1,...,x4,y4,transcription`, one with a UTF-8 BOM), one of each case a real OCR set holds:
  a Chinese street sign with single characters (`东`, `W`, `309`), a deliberately wrong
  transcription (`gt_mismatch`), a `###` do-not-care box, a box outside the image
  (`box_outside_image`), an image without its ground-truth file (`missing_ground_truth`), and a
  photo stored sideways with an EXIF orientation tag whose boxes are given on the file's pixels
  (they come out turned with the image).

`EXPECTED` says what the default config does with each ICDAR image, so `mmcurate demo --corpus ocr`
doubles as an end-to-end check. Deterministic: fixed fonts, sizes and JPEG quality.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

LATIN = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
CJK = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"
RENDERED = 8
"""Rendered samples in the demo (every kind of the renderer's mix; half-size pages keep it quick)."""
DEMO_PAGE = (620, 877)

# name -> (fate, reason) under the default config
EXPECTED: dict[str, tuple[str, str]] = {
    "sign_zh.jpg": ("kept", ""),
    "exit_dont_care.jpg": ("kept", ""),
    "rotated_exif.jpg": ("kept", ""),
    "wrong_label.jpg": ("dropped", "gt_mismatch"),
    "box_outside.jpg": ("dropped", "box_outside_image"),
    "no_ground_truth.jpg": ("quarantined", "missing_ground_truth"),
}

Quad = list[tuple[int, int]]


def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:
        raise FileNotFoundError(
            f"{path}: font missing; install the Debian packages fonts-dejavu-core and fonts-wqy-zenhei (make fonts)"
        ) from exc


def _draw(
    size: tuple[int, int], bg: str, items: list[tuple[str, str, int, tuple[int, int]]]
) -> tuple[Image.Image, list[tuple[Quad, str]]]:
    """A sign: each (text, font, px, top-left) drawn in white; its quad is the ink's box, padded 3 px."""
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    lines = []
    for text, font, px, xy in items:
        f = _font(font, px)
        draw.text(xy, text, font=f, fill="white")
        x1, y1, x2, y2 = draw.textbbox(xy, text, font=f)
        x1, y1, x2, y2 = x1 - 3, y1 - 3, x2 + 3, y2 + 3
        lines.append(([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], text))
    return img, lines


def _gt(lines: list[tuple[Quad, str]], bom: bool = False) -> bytes:
    rows = [",".join(str(int(v)) for p in quad for v in p) + "," + text for quad, text in lines]
    return ("\ufeff" if bom else "").encode() + ("\n".join(rows) + "\n").encode("utf-8")


def _jpeg(img: Image.Image, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **({"exif": exif.tobytes()} if exif is not None else {}))
    return buf.getvalue()


def _rotated() -> tuple[bytes, list[tuple[Quad, str]]]:
    """A sign displayed upright, stored turned 90 degrees with EXIF orientation 6 (rotate 90 clockwise
    to display, as phone cameras write it); its labels are on the stored (raw) pixels."""
    upright, lines = _draw((560, 240), "#1f4e9c", [("PLATFORM 9", LATIN, 56, (40, 80))])
    raw = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: orientation 6 turns it back
    # rotating counter-clockwise takes a point (x, y) of the upright sign to (y, W - x) of the stored
    # pixels; the corners keep their order (the first is still the text's own top-left)
    raw_lines = [([(y, upright.width - x) for x, y in quad], text) for quad, text in lines]
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(raw, exif), raw_lines


def build_icdar(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sign = [("东", CJK, 48, (60, 90)), ("W", LATIN, 48, (260, 90)), ("309", LATIN, 48, (440, 90))]
    zh, zh_lines = _draw((640, 240), "#0b6b3a", [*sign, ("北京路", CJK, 40, (230, 20))])
    (folder / "sign_zh.jpg").write_bytes(_jpeg(zh))
    (folder / "gt_sign_zh.txt").write_bytes(_gt(zh_lines, bom=True))

    wrong, wrong_lines = _draw((640, 200), "#7a1010", [("OPEN DAILY", LATIN, 60, (60, 60))])
    (folder / "wrong_label.jpg").write_bytes(_jpeg(wrong))
    (folder / "gt_wrong_label.txt").write_bytes(_gt([(wrong_lines[0][0], "CLOSED SUNDAY")]))

    exit_img, exit_lines = _draw((480, 200), "#0a5c2b", [("EXIT", LATIN, 64, (40, 60))])
    scribble = [(330, 90), (420, 90), (420, 120), (330, 120)]
    ImageDraw.Draw(exit_img).line([(335, 105), (350, 95), (365, 112), (380, 96), (400, 110)], fill="white", width=2)
    (folder / "exit_dont_care.jpg").write_bytes(_jpeg(exit_img))
    (folder / "gt_exit_dont_care.txt").write_bytes(_gt([*exit_lines, (scribble, "###")]))

    park, park_lines = _draw((480, 200), "#123a7a", [("PARKING", LATIN, 56, (40, 60))])
    outside = [(900, 40), (1000, 40), (1000, 80), (900, 80)]
    (folder / "box_outside.jpg").write_bytes(_jpeg(park))
    (folder / "gt_box_outside.txt").write_bytes(_gt([*park_lines, (outside, "LEVEL 2")]))

    lonely, _ = _draw((480, 200), "#444444", [("NO LABELS", LATIN, 56, (30, 60))])
    (folder / "no_ground_truth.jpg").write_bytes(_jpeg(lonely))

    data, lines = _rotated()
    (folder / "rotated_exif.jpg").write_bytes(data)
    (folder / "gt_rotated_exif.txt").write_bytes(_gt(lines))


def build_corpus(dest: str | Path) -> tuple[Path, Path]:
    """Write the demo OCR inputs under `dest`; returns (the ICDAR folder, the rendered folder)."""
    from mmcurate.stages.ocr_render import RenderParams, write_rendered

    dest = Path(dest)
    build_icdar(dest / "icdar")
    rendered = dest / "rendered"
    rendered.mkdir(parents=True, exist_ok=True)
    write_rendered(str(rendered), RenderParams(count=RENDERED, seed=7, page=DEMO_PAGE))
    return dest / "icdar", rendered
