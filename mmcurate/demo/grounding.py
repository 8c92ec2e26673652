"""The demo grounding corpus: the bundled photographs with shapes drawn at known boxes, and the bad boxes.

`build_corpus(dest)` writes `dest/odvg.jsonl` (ODVG detection and grounding lines, pixel xyxy),
`dest/chat.jsonl` (a grounding conversation with GLM-4.5V's `<|begin_of_box|>` boxes on the 0-1000
grid) and `dest/images/`. Every box the demo draws is exact, so `mmcurate demo --corpus grounding`
doubles as an end-to-end check: `EXPECTED` gives each region's fate under the default config and
`SHAPES` its colour, which the test finds again inside the stored image at the stored box. The
traps: a box reaching far outside the image, a NaN coordinate, a zero-area box, a 0-1 box in a
pixel file, an image whose real size is not the annotated one, an empty expression, the same
region twice, a missing image, and a photo stored sideways with an EXIF orientation tag whose
boxes are given on the file's pixels (they come out turned with the image). Deterministic.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from PIL import Image, ImageDraw

Box = tuple[int, int, int, int]
COLOURS = {"red": (230, 20, 20), "blue": (20, 40, 230), "green": (20, 200, 40), "yellow": (250, 230, 20)}

# (image, phrase) -> (fate, reason) under the default config
EXPECTED: dict[tuple[str, str], tuple[str, str]] = {
    ("astronaut_shapes.jpg", "the red circle"): ("kept", ""),
    ("astronaut_shapes.jpg", "the blue square"): ("kept", ""),
    ("astronaut_shapes.jpg", "the green square"): ("kept", ""),
    ("astronaut_shapes.jpg", "a region far outside the image"): ("dropped", "box_outside"),
    ("astronaut_shapes.jpg", "a box with a NaN corner"): ("dropped", "invalid_box"),
    ("astronaut_shapes.jpg", "a zero-area box"): ("dropped", "invalid_box"),
    ("astronaut_shapes.jpg", ""): ("dropped", "empty_expression"),
    ("coffee_shapes.jpg", "square"): ("kept", ""),
    ("coffee_shapes.jpg", "circle"): ("kept", ""),
    ("coffee_shapes.jpg", "a box given in 0-1 fractions"): ("dropped", "box_too_small"),
    ("coffee_shapes.jpg", "circle#2"): ("dropped", "duplicate_region"),
    ("cat_large.jpg", "the yellow square"): ("kept", ""),
    ("cat_large.jpg", "the blue circle"): ("kept", ""),
    ("rocket_sideways.jpg", "the red square"): ("kept", ""),
    ("rocket_sideways.jpg", "the green circle"): ("kept", ""),
    ("resized_since.jpg", "the red circle"): ("dropped", "sample_dropped"),
    ("missing.jpg", "a thing that is not there"): ("dropped", "sample_dropped"),
    ("chat_horse.jpg", "the red square"): ("kept", ""),
    ("chat_horse.jpg", "the blue circle"): ("kept", ""),
}
"""`circle#2` is the second region named `circle` (the same box again)."""
SAMPLES: dict[str, tuple[str, str]] = {
    "astronaut_shapes.jpg": ("kept", ""),
    "coffee_shapes.jpg": ("kept", ""),
    "cat_large.jpg": ("kept", ""),
    "rocket_sideways.jpg": ("kept", ""),
    "resized_since.jpg": ("dropped", "size_mismatch"),
    "missing.jpg": ("dropped", "image_missing"),
    "chat_horse.jpg": ("kept", ""),
}
SHAPES: dict[tuple[str, str], str] = {}
"""(image, phrase) -> the colour drawn inside the box (filled by `build_corpus`)."""


def _photo(name: str, scale: float = 1.0) -> Image.Image:
    from skimage import data

    arr = getattr(data, name)()
    img = Image.fromarray(arr).convert("RGB")
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    return img


def _shape(img: Image.Image, kind: str, box: Box, colour: str) -> None:
    """A filled shape whose ink is exactly `box` (half-open pixel bounds, as the boxes are)."""
    draw = ImageDraw.Draw(img)
    closed = (box[0], box[1], box[2] - 1, box[3] - 1)
    if kind == "circle":
        draw.ellipse(closed, fill=COLOURS[colour])
    else:
        draw.rectangle(closed, fill=COLOURS[colour])


def _jpeg(img: Image.Image, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, exif=exif if exif is not None else Image.Exif())
    return buf.getvalue()


def _drawn(name: str, img: Image.Image, shapes: list[tuple[str, str, str, Box]]) -> list[dict]:
    """Draw each (phrase, kind, colour, box) and return ODVG regions for them."""
    regions = []
    for phrase, kind, colour, box in shapes:
        _shape(img, kind, box, colour)
        SHAPES[(name, phrase)] = colour
        regions.append({"bbox": list(box), "phrase": phrase})
    return regions


def _astronaut(images: Path) -> dict:
    img = _photo("astronaut")  # 512 x 512
    regions = _drawn("astronaut_shapes.jpg", img, [
        ("the red circle", "circle", "red", (40, 300, 140, 400)),
        ("the blue square", "square", "blue", (380, 40, 470, 130)),
        ("the green square", "square", "green", (300, 420, 380, 500)),
    ])  # fmt: skip
    regions += [
        {"bbox": [450, 450, 700, 640], "phrase": "a region far outside the image"},
        {"bbox": ["nan", 10, 60, 80], "phrase": "a box with a NaN corner"},
        {"bbox": [200, 200, 200, 260], "phrase": "a zero-area box"},
        {"bbox": [10, 10, 90, 90], "phrase": ""},
    ]
    (images / "astronaut_shapes.jpg").write_bytes(_jpeg(img))
    caption = "A red circle, a blue square and a green square drawn over a photograph of an astronaut."
    return {"filename": "astronaut_shapes.jpg", "width": 512, "height": 512,
            "grounding": {"caption": caption, "regions": regions}}  # fmt: skip


def _coffee(images: Path) -> dict:
    img = _photo("coffee")  # 600 x 400
    name = "coffee_shapes.jpg"
    _shape(img, "square", (30, 30, 130, 130), "yellow")
    _shape(img, "circle", (450, 250, 560, 360), "blue")
    SHAPES[(name, "square")], SHAPES[(name, "circle")] = "yellow", "blue"
    (images / name).write_bytes(_jpeg(img))
    instances = [
        {"bbox": [30, 30, 130, 130], "label": 0, "category": "square"},
        {"bbox": [450, 250, 560, 360], "label": 1, "category": "circle"},
        {"bbox": [0.1, 0.2, 0.4, 0.5], "label": 2, "category": "a box given in 0-1 fractions"},
        {"bbox": [450, 251, 560, 360], "label": 1, "category": "circle"},
    ]
    return {"filename": name, "width": 600, "height": 400, "detection": {"instances": instances}}


def _cat(images: Path) -> dict:
    img = _photo("chelsea", 3.0)  # 1353 x 900: stored at 1024 on its long side, the boxes scaled with it
    regions = _drawn("cat_large.jpg", img, [
        ("the yellow square", "square", "yellow", (60, 60, 360, 300)),
        ("the blue circle", "circle", "blue", (900, 500, 1250, 850)),
    ])  # fmt: skip
    (images / "cat_large.jpg").write_bytes(_jpeg(img))
    return {"filename": "cat_large.jpg", "width": img.width, "height": img.height,
            "grounding": {"caption": "Two shapes over a cat.", "regions": regions}}  # fmt: skip


def _rocket(images: Path) -> dict:
    """Shapes drawn upright, then the file stored turned with EXIF orientation 6 (rotate 90 CW to show):
    the boxes are given on the stored file's pixels (read.box_frame raw)."""
    upright = _photo("rocket")  # 640 x 427
    _shape(upright, "square", (40, 60, 160, 180), "red")
    _shape(upright, "circle", (450, 250, 590, 390), "green")
    name = "rocket_sideways.jpg"
    SHAPES[(name, "the red square")], SHAPES[(name, "the green circle")] = "red", "green"
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 427 x 640: orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    (images / name).write_bytes(_jpeg(stored, exif))

    def raw(box: Box) -> list[int]:
        """Turning counter-clockwise takes the upright point (x, y) to (y, W - x) on the stored file."""
        x1, y1, x2, y2 = box
        return [y1, upright.width - x2, y2, upright.width - x1]

    regions = [{"bbox": raw((40, 60, 160, 180)), "phrase": "the red square"},
               {"bbox": raw((450, 250, 590, 390)), "phrase": "the green circle"}]  # fmt: skip
    return {"filename": name, "width": stored.width, "height": stored.height,
            "grounding": {"caption": "A rocket with two shapes.", "regions": regions}}  # fmt: skip


def _resized(images: Path) -> dict:
    img = _photo("coffee")
    _shape(img, "circle", (100, 100, 200, 200), "red")
    small = img.resize((300, 200), Image.Resampling.LANCZOS)  # re-encoded at half size since labelled
    (images / "resized_since.jpg").write_bytes(_jpeg(small))
    regions = [{"bbox": [100, 100, 200, 200], "phrase": "the red circle"}]
    return {
        "filename": "resized_since.jpg",
        "width": 600,
        "height": 400,
        "grounding": {"caption": "", "regions": regions},
    }


def _chat(images: Path) -> dict:
    img = Image.new("RGB", (500, 400), (235, 235, 225))
    _drawn("chat_horse.jpg", img, [
        ("the red square", "square", "red", (50, 80, 150, 180)),
        ("the blue circle", "circle", "blue", (300, 200, 450, 350)),
    ])  # fmt: skip
    (images / "chat_horse.jpg").write_bytes(_jpeg(img))

    def grid(box: Box) -> str:
        x1, y1, x2, y2 = box
        return f"[{round(x1 / 500 * 1000)},{round(y1 / 400 * 1000)},{round(x2 / 500 * 1000)},{round(y2 / 400 * 1000)}]"

    return {
        "image": "chat_horse.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhere is the red square in the image?"},
            {"from": "gpt", "value": f"<|begin_of_box|>{grid((50, 80, 150, 180))}<|end_of_box|>"},
            {"from": "human", "value": "Where is the blue circle?"},
            {"from": "gpt", "value": f"<|begin_of_box|>{grid((300, 200, 450, 350))}<|end_of_box|>"},
        ],
    }


def build_corpus(dest: str | Path) -> tuple[Path, Path]:
    """Write the demo inputs under `dest` (replacing an earlier demo); returns (odvg.jsonl, chat.jsonl)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    images = dest / "images"
    images.mkdir(parents=True)
    SHAPES.clear()
    lines = [_astronaut(images), _coffee(images), _cat(images), _rocket(images), _resized(images)]
    missing = [{"bbox": [1, 1, 50, 50], "phrase": "a thing that is not there"}]
    lines.append(
        {"filename": "missing.jpg", "width": 100, "height": 100, "grounding": {"caption": "", "regions": missing}}
    )
    odvg = dest / "odvg.jsonl"
    odvg.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    chat = dest / "chat.jsonl"
    chat.write_text(json.dumps(_chat(images)) + "\n", encoding="utf-8")
    return odvg, chat


def demo_config(image_root: str) -> tuple[object, list[str]]:
    """The embedded defaults with the ODVG images under `image_root`, less the model filters whose
    weights this machine cannot have (said in the notes)."""
    from mmcurate.demo.caption import without_unavailable_models
    from mmcurate.pipelines.grounding import CORPUS

    config = CORPUS.load_config(None)
    config = config.model_copy(update={"read": config.read.model_copy(update={"image_root": image_root})})
    return without_unavailable_models(config)
